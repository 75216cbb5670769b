"""Cross-validation bookkeeping for the few-shot track: stratified folds and their summary.

Few-shot data is too small for a fixed validation split, so a trial is scored by
repeated stratified k-fold cross-validation on all of its labelled rows.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from automl.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

__all__ = ["cv_folds", "effective_splits", "summarize"]


def effective_splits(labels: Sequence[Any], n_splits: int) -> int:
    """The number of folds cv_folds will use: n_splits, lowered to the smallest class count
    so that every class appears in every validation fold (never below 2).

    Raises DataError when a class has a single example (it cannot be both trained on and
    validated), ConfigError when n_splits < 2.
    """
    if n_splits < 2:
        raise ConfigError(f"n_splits must be at least 2, got {n_splits}")
    counts = Counter(labels)
    if not counts:
        raise DataError("cross-validation needs labelled rows, got none: add examples")
    single = sorted((str(label) for label, n in counts.items() if n < 2))
    if single:
        raise DataError(
            f"class {single[0]!r} has a single example; cross-validation needs at least 2 per "
            f"class (classes with one example: {', '.join(single)}): add examples of it"
        )
    smallest = min(counts.values())
    if smallest < n_splits:
        logger.info(
            "lowering cross-validation from %d to %d folds: the smallest class has %d examples",
            n_splits,
            smallest,
            smallest,
        )
    return min(n_splits, smallest)


def cv_folds(
    labels: Sequence[Any], n_splits: int, n_repeats: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train_indices, val_indices) pairs of repeated stratified k-fold cross-validation.

    n_splits * n_repeats folds in order (all folds of repeat 1, then of repeat 2, ...);
    within a repeat every index is in exactly one validation fold. n_splits is lowered
    to the smallest class count (see effective_splits); the same seed gives the same folds.
    """
    from sklearn.model_selection import RepeatedStratifiedKFold

    if n_repeats < 1:
        raise ConfigError(f"n_repeats must be at least 1, got {n_repeats}")
    k = effective_splits(labels, n_splits)
    y = np.asarray(labels)
    splitter = RepeatedStratifiedKFold(n_splits=k, n_repeats=n_repeats, random_state=seed)
    dummy = np.zeros((len(y), 1))
    return [(train, val) for train, val in splitter.split(dummy, y)]


def summarize(scores: list[dict[str, float]]) -> dict[str, float]:
    """Mean of every metric over the folds, plus `<name>_std`: the POPULATION standard
    deviation (ddof=0), so a single fold has std 0.0 rather than nan. A metric missing
    from some folds is averaged over the folds that have it; nan values propagate."""
    out: dict[str, float] = {}
    names: list[str] = []
    for fold in scores:
        names.extend(name for name in fold if name not in names)
    for name in names:
        values = np.array([fold[name] for fold in scores if name in fold], dtype=np.float64)
        out[name] = float(values.mean())
        out[f"{name}_std"] = float(values.std())
    return out
