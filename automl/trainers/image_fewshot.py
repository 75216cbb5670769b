"""Few-shot images: frozen ImageNet features + a logistic-regression head, cross-validated.

With few images per class, fine-tuning a CNN overfits and its validation split is too
small to choose by; a linear head on frozen, pretrained features is the strong baseline
(the image counterpart of the text track's heads on cached sentence embeddings). The
features of every training image are computed once per (backbone, input size) and kept on
disk, so a trial costs a few head fits. Folds take the place of epochs (one report each),
as in automl.trainers.fewshot; `refit` trains the winner on all images and saves it as an
ordinary image model folder: the backbone plus a linear layer holding the head (its
standardisation folded in), so predict and export need nothing new.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from automl._files import file_lock
from automl.config import EpochResult, PreparedData, TrialContext
from automl.cv import cv_folds, summarize
from automl.errors import ConfigError, DataError
from automl.images import load_pixels, pixel_cache_dir, pixel_side
from automl.metrics import compute_metrics, metric_names
from automl.modelio import select_device
from automl.trainers.base import ReportFn
from automl.trainers.image import image_meta, save_image
from automl.vision.model import ImageClassifier, ImageConfig, build_classifier, to_input

logger = logging.getLogger(__name__)

__all__ = ["DEFAULTS", "ImageFewShotTrainer"]

# The `init` values of search_spaces/image_fewshot.yaml.
DEFAULTS: dict[str, Any] = {
    "backbone": "mobilenet_v2",
    "image_size": 96,
    "method": "logreg",
    "C": 0.1,
}
_BATCH = 64
_MAX_ITER = 2000


def _hparams(params: dict[str, Any]) -> dict[str, Any]:
    p = {**DEFAULTS, **{k: v for k, v in params.items() if k in DEFAULTS}}
    if p["method"] != "logreg":
        raise ConfigError(f"method {p['method']!r} is unknown for images: expected logreg")
    return {
        "backbone": str(p["backbone"]),
        "image_size": int(p["image_size"]),
        "method": "logreg",
        "C": float(p["C"]),
    }


def _pooled(data: PreparedData) -> tuple[list[str], np.ndarray]:
    if data.modality != "image" or data.task != "classification":
        raise DataError(f"{data.source}: the image few-shot track needs image classification data")
    paths = list(data.train.texts) + list(data.val.texts)
    y = np.asarray(list(data.train.labels) + list(data.val.labels), dtype=np.int64)
    if len(np.unique(y)) < 2:
        raise DataError(f"{data.source}: the training images hold fewer than 2 classes")
    return paths, y


def _config(data: PreparedData, hp: dict[str, Any], paths: list[str]) -> ImageConfig:
    from automl.vision.backbones import IMAGE_BACKBONES

    info = IMAGE_BACKBONES.get(hp["backbone"])
    if info is None:
        raise ConfigError(
            f"image backbone {hp['backbone']!r} is unknown: expected one of "
            f"{', '.join(IMAGE_BACKBONES)}"
        )
    return ImageConfig(
        backbone=hp["backbone"],
        num_labels=data.num_labels,
        image_size=hp["image_size"],
        pixel_side=pixel_side(paths),
        mean=info.mean,
        std=info.std,
        label_names=data.label_names,
    )


def _features(
    model: ImageClassifier, cfg: ImageConfig, paths: list[str], weights: str
) -> np.ndarray:
    """Frozen backbone features (n, feature_dim) of the images, cached on disk per
    (images, backbone weights, input size)."""
    cache = pixel_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(
        f"{cfg.backbone}\t{weights}\t{cfg.image_size}\t{cfg.pixel_side}\n".encode()
    )
    for p in paths:
        st = os.stat(p)
        key.update(f"{p}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    name = f"features-{cfg.backbone}-{cfg.image_size}-{key.hexdigest()[:20]}"
    target = cache / f"{name}.npy"
    with file_lock(cache, name):
        if target.exists():
            return np.load(target)
        pixels = load_pixels(paths, cfg.pixel_side, cache)
        device = next(model.parameters()).device
        out = []
        model.eval()
        with torch.inference_mode():
            for start in range(0, len(paths), _BATCH):
                x = to_input(
                    pixels[start : start + _BATCH], cfg.image_size, cfg.mean, cfg.std, device
                )
                out.append(model.features(x).float().cpu().numpy())
        feats = np.concatenate(out).astype(np.float32)
        tmp = target.with_name(f"{name}.tmp-{os.getpid()}.npy")
        np.save(tmp, feats)
        os.replace(tmp, target)
        return feats


def _fit_head(x: np.ndarray, y: np.ndarray, c: float) -> Any:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    head = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=_MAX_ITER))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        head.fit(x, y)
    return head


def _head_logits(head: Any, x: np.ndarray, num_labels: int) -> np.ndarray:
    """(n, num_labels) log-probabilities; classes the head never saw get -1e9."""
    out = np.full((len(x), num_labels), -1e9, dtype=np.float64)
    out[:, head.classes_] = head.predict_log_proba(x)
    return out


def _as_linear(head: Any, num_labels: int, feature_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of one linear layer that gives the head's logits on raw features:
    the scaler folded in; two classes as [0, z] (softmax = the head's sigmoid)."""
    scaler, lr = head[0], head[-1]
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    coef = lr.coef_ / scale
    bias = lr.intercept_ - (lr.coef_ * (scaler.mean_ / scale)).sum(axis=1)
    if coef.shape[0] == 1:  # binary: z for classes_[1]
        coef = np.vstack([np.zeros_like(coef), coef])
        bias = np.array([0.0, bias[0]])
    weight = np.zeros((num_labels, feature_dim))
    b = np.full(num_labels, -1e9)
    weight[lr.classes_] = coef
    b[lr.classes_] = bias
    return torch.tensor(weight, dtype=torch.float32), torch.tensor(b, dtype=torch.float32)


class ImageFewShotTrainer:
    """Cross-validates a logistic-regression head on frozen backbone features (one report
    per fold); `refit` saves the winner as an image model folder."""

    def __init__(self, n_splits: int = 4, n_repeats: int = 1) -> None:
        self.n_splits, self.n_repeats = n_splits, n_repeats

    def fit(
        self, data: PreparedData, params: dict[str, Any], ctx: TrialContext, report: ReportFn
    ) -> list[EpochResult]:
        start = time.time()
        if start >= ctx.current_deadline():
            return []
        if ctx.metric not in metric_names(data.task):
            raise ConfigError(f"metric {ctx.metric!r} is not computed for {data.task}")
        hp = _hparams(params)
        paths, y = _pooled(data)
        cfg = _config(data, hp, paths)
        weights = str(params.get("backbone_path", ""))
        model = build_classifier(cfg, pretrained=True, weights=weights or None)
        model.to(select_device())
        x = _features(model, cfg, paths, weights)
        folds = cv_folds(y.tolist(), self.n_splits, self.n_repeats, ctx.seed)
        results: list[EpochResult] = []
        scores: list[dict[str, float]] = []
        per_fold = 0.0
        for number, (tr, va) in enumerate(folds, start=1):
            if results and time.time() + per_fold >= ctx.current_deadline():
                break
            t0 = time.time()
            head = _fit_head(x[tr], y[tr], hp["C"])
            scores.append(
                compute_metrics(
                    "classification", y[va], _head_logits(head, x[va], data.num_labels)
                )
            )
            per_fold = max(per_fold, time.time() - t0)
            result = EpochResult(number, summarize(scores), math.nan, time.time() - start, True)
            results.append(result)
            report(result)  # may not return: the search can stop the trial here
        return results

    def refit(
        self,
        data: PreparedData,
        params: dict[str, Any],
        output_dir: str,
        deadline: float | None = None,
        seed: int | None = None,
    ) -> Path:
        """Fit the head on all training images and save backbone + head as an image model
        folder (the same format the fine-tuned track exports)."""
        hp = _hparams(params)
        paths, y = _pooled(data)
        cfg = _config(data, hp, paths)
        weights = str(params.get("backbone_path", ""))
        model = build_classifier(cfg, pretrained=True, weights=weights or None)
        x = _features(model, cfg, paths, weights)
        head = _fit_head(x, y, hp["C"])
        weight, bias = _as_linear(head, data.num_labels, x.shape[1])
        with torch.no_grad():
            model.head.weight.copy_(weight)
            model.head.bias.copy_(bias)
        out = Path(output_dir)
        save_image(model.cpu(), cfg, image_meta(data, hp["backbone"], hp["image_size"]), out)
        return out
