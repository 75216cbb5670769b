"""Validation and test metrics: THE definition, shared by the trainers and export."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from automl.errors import ConfigError
from automl.modelio import logits_to_predictions

logger = logging.getLogger(__name__)

__all__ = ["METRIC_MODES", "compute_metrics", "metric_names"]

# Whether a larger value of each metric is better ("max") or worse ("min").
METRIC_MODES: dict[str, str] = {
    "accuracy": "max",
    "macro_f1": "max",
    "precision": "max",
    "recall": "max",
    "loss": "min",
    "rmse": "min",
    "mae": "min",
    "r2": "max",
}

_NAMES = {
    "classification": ("accuracy", "macro_f1", "precision", "recall", "loss"),
    "regression": ("rmse", "mae", "r2", "loss"),
}


def metric_names(task: str) -> tuple[str, ...]:
    """The metric keys `compute_metrics` returns for a task."""
    if task not in _NAMES:
        raise ConfigError(f"task {task!r} is unknown: expected classification or regression")
    return _NAMES[task]


def compute_metrics(task: str, y_true: Any, logits: Any) -> dict[str, float]:
    """Metrics of raw model outputs `logits` (n, num_labels) against `y_true`.

    classification: accuracy, macro_f1, precision and recall (macro averages over the
    classes present in y_true or the predictions, zero_division=0), and loss (mean
    cross-entropy, without label smoothing). regression: rmse, mae, r2 (nan for fewer
    than two rows) and loss (mean squared error).
    """
    from sklearn.metrics import (
        accuracy_score,
        f1_score,
        mean_absolute_error,
        mean_squared_error,
        precision_score,
        r2_score,
        recall_score,
    )

    metric_names(task)
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim == 1:
        z = z[:, None]
    if task == "regression":
        y = np.asarray(y_true, dtype=np.float64)
        pred, _ = logits_to_predictions(z, task)
        mse = float(mean_squared_error(y, pred))
        return {
            "rmse": math.sqrt(mse),
            "mae": float(mean_absolute_error(y, pred)),
            "r2": float(r2_score(y, pred)) if len(y) >= 2 else math.nan,
            "loss": mse,
        }
    y = np.asarray(y_true, dtype=np.int64)
    pred, _ = logits_to_predictions(z, task)
    shifted = z - z.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = float(-log_probs[np.arange(len(y)), y].mean()) if len(y) else math.nan
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0)),
        "precision": float(precision_score(y, pred, average="macro", zero_division=0)),
        "recall": float(recall_score(y, pred, average="macro", zero_division=0)),
        "loss": loss,
    }
