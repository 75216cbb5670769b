"""Fine-tune a pretrained CNN (MobileNetV2, ...) with a new head on an image dataset.

Implements `automl.trainers.base.Trainer` for image data (PreparedData.modality "image":
its split "texts" are image paths). Images are decoded once per study into a cached
uint8 array (automl.images.load_pixels); each batch is resized to the trial's input size,
augmented with kornia (training only), normalised with the backbone's mean and std, and
fed to the network. The bottom `freeze_blocks` blocks are frozen (their BatchNorm
statistics too). After every epoch the validation split is scored and the best epoch's
model folder saved (automl.vision.model). Deadline-aware like the text trainer: a batch
is not started when it, an evaluation and a save would not end before the deadline.

An "epoch" is a pass over the training images, or over EPOCH_MAX_IMAGES of them when
there are more, so a large dataset still reports (ASHA's rungs, checkpoints) every minute
or two on a CPU; validation scores at most VAL_MAX_IMAGES of the validation images.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from automl._files import replace_dir
from automl.config import EpochResult, PreparedData, TrialContext
from automl.errors import ConfigError, DataError, TrainingDiverged
from automl.images import load_pixels, pixel_cache_dir, pixel_side
from automl.metrics import compute_metrics, metric_names
from automl.modelio import ModelMeta, select_device, write_meta
from automl.trainers.base import ReportFn, use_threads
from automl.vision.augment import FLIPS, build_augment
from automl.vision.model import (
    ImageClassifier,
    ImageConfig,
    build_classifier,
    normalize,
    pixel_logits,
    save_image_model,
    to_unit,
)

logger = logging.getLogger(__name__)

__all__ = ["DEFAULTS", "EPOCH_MAX_IMAGES", "VAL_MAX_IMAGES", "ImageTrainer", "image_meta"]

# Defaults for keys a caller leaves out: the `init` values of search_spaces/image.yaml.
DEFAULTS: dict[str, Any] = {
    "backbone": "mobilenet_v2",
    "freeze_blocks": 8,
    "learning_rate": 1e-3,
    "weight_decay": 0.01,
    "dropout": 0.2,
    "label_smoothing": 0.1,
    "epochs": 3,
    "batch_size": 64,
    "image_size": 64,
    "augment_strength": 0.2,
    "flip": "h",
    "patience": 2,
}
EPOCH_MAX_IMAGES = 6_000
# Validation after every epoch scores at most this many validation images (a fixed random
# subset: +-0.8 points of accuracy at worst), so on a large dataset evaluating does not
# cost as much as training; the exported model is scored on the whole test split.
VAL_MAX_IMAGES = 3_000
_WARMUP_SHARE = 0.05
_EVAL_BATCH = 128
_SAFETY_S = 0.1
_GRACE_S = 0.5


@dataclass(frozen=True)
class _Hparams:
    backbone: str
    freeze_blocks: int
    learning_rate: float
    weight_decay: float
    dropout: float
    label_smoothing: float
    epochs: int
    batch_size: int
    image_size: int
    augment_strength: float
    flip: str
    patience: int

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> _Hparams:
        p = {**DEFAULTS, **{k: v for k, v in params.items() if k in DEFAULTS}}
        hp = cls(
            backbone=str(p["backbone"]),
            freeze_blocks=int(p["freeze_blocks"]),
            learning_rate=float(p["learning_rate"]),
            weight_decay=float(p["weight_decay"]),
            dropout=float(p["dropout"]),
            label_smoothing=float(p["label_smoothing"]),
            epochs=int(p["epochs"]),
            batch_size=int(p["batch_size"]),
            image_size=int(p["image_size"]),
            augment_strength=float(p["augment_strength"]),
            flip=str(p["flip"]),
            patience=int(p["patience"]),
        )
        if hp.flip not in FLIPS:
            raise ConfigError(f"flip {hp.flip!r} is unknown: expected one of {', '.join(FLIPS)}")
        for name in ("epochs", "batch_size", "patience"):
            if getattr(hp, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(hp, name)}")
        if hp.image_size < 16:
            raise ConfigError(f"image_size must be at least 16, got {hp.image_size}")
        return hp


def image_meta(data: PreparedData, backbone: str, image_size: int) -> ModelMeta:
    """automl.json of an image model folder."""
    return ModelMeta(
        task="classification",
        label_names=list(data.label_names),
        max_length=image_size,
        backbone=backbone,
        text_columns=list(data.text_columns),
        format="image",
    )


class _Costs:
    """Running estimates of how long a batch, an evaluation and a save take."""

    def __init__(self) -> None:
        self.recent: deque[float] = deque(maxlen=5)
        self.eval_per_image: float | None = None
        self.per_image_train: float | None = None
        self.save_s = 0.5

    def next_batch_s(self) -> float:
        return max(self.recent, default=0.0)

    def eval_s(self, n: int) -> float:
        if self.eval_per_image is not None:
            return 0.05 + self.eval_per_image * n
        # Before the first evaluation: a forward pass is about a third of a training step.
        return 0.05 + (self.per_image_train or 0.0) * n / 2.0


class ImageTrainer:
    """Fine-tunes an ImageNet backbone (`params["backbone"]`, weights in
    `params["backbone_path"]`) on image data; parameters of search_spaces/image.yaml."""

    def fit(
        self, data: PreparedData, params: dict[str, Any], ctx: TrialContext, report: ReportFn
    ) -> list[EpochResult]:
        start = time.time()
        if start >= ctx.current_deadline():
            return []
        hp = _Hparams.from_params(params)
        if ctx.metric not in metric_names(data.task):
            raise ConfigError(f"metric {ctx.metric!r} is not computed for {data.task}")
        if data.modality != "image" or data.task != "classification":
            raise DataError(f"{data.source}: the image trainer needs image classification data")
        if len(data.train) == 0 or len(data.val) == 0:
            raise DataError(
                f"{data.source}: fine-tuning needs training and validation images, got "
                f"{len(data.train)} and {len(data.val)}: add images to the dataset"
            )
        random.seed(ctx.seed)
        np.random.seed(ctx.seed)
        torch.manual_seed(ctx.seed)
        run = _Run(data, params, hp, ctx)
        results: list[EpochResult] = []
        best: float | None = None
        stale = 0
        for epoch in range(1, hp.epochs + 1):
            train_loss, partial = run.train_epoch(epoch)
            if math.isnan(train_loss):
                break
            grace = 0.0 if results else _GRACE_S
            if partial and time.time() + run.costs.eval_s(len(run.val_y)) > (
                ctx.current_deadline() + grace
            ):
                break
            metrics, improved = run.evaluate(best)
            if improved:
                best = metrics[ctx.metric]
            stale = 0 if improved else stale + 1
            result = EpochResult(epoch, metrics, train_loss, time.time() - start, improved)
            results.append(result)
            logger.debug(
                "epoch %d%s: loss %.4f, %s %.4f",
                epoch,
                " (partial)" if partial else "",
                train_loss,
                ctx.metric,
                metrics[ctx.metric],
            )
            report(result)  # may not return: the search can stop the trial here
            if partial or stale >= hp.patience:
                break
        return results


class _Run:
    """The live state of one fit."""

    def __init__(
        self, data: PreparedData, params: dict[str, Any], hp: _Hparams, ctx: TrialContext
    ) -> None:
        from automl.vision.backbones import IMAGE_BACKBONES, freeze_blocks

        self.data, self.hp, self.ctx = data, hp, ctx
        self.device = select_device()
        self.rng = np.random.default_rng(ctx.seed)
        info = IMAGE_BACKBONES.get(hp.backbone)
        if info is None:
            raise ConfigError(
                f"image backbone {hp.backbone!r} is unknown: expected one of "
                f"{', '.join(IMAGE_BACKBONES)}"
            )
        side = pixel_side(data.train.texts)
        self.cfg = ImageConfig(
            backbone=hp.backbone,
            num_labels=data.num_labels,
            image_size=hp.image_size,
            pixel_side=side,
            mean=info.mean,
            std=info.std,
            dropout=hp.dropout,
            label_names=data.label_names,
        )
        self.model: ImageClassifier = build_classifier(
            self.cfg, pretrained=True, weights=params.get("backbone_path")
        )
        self.model.to(self.device)
        self.frozen_blocks = freeze_blocks(self.model.backbone, hp.freeze_blocks)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        cache = pixel_cache_dir()
        self.train_px = load_pixels(data.train.texts, side, cache)
        val_idx = np.arange(len(data.val))
        if len(val_idx) > VAL_MAX_IMAGES:
            val_idx = np.sort(np.random.default_rng(0).permutation(len(val_idx))[:VAL_MAX_IMAGES])
        self.val_px = np.asarray(load_pixels(data.val.texts, side, cache))[val_idx]
        self.val_y = np.asarray(data.val.labels)[val_idx]
        self.y = torch.tensor(np.asarray(data.train.labels, dtype=np.int64))
        self.augment = build_augment(hp.augment_strength, hp.flip, hp.image_size)
        if self.augment is not None:
            self.augment.to(self.device)
        self.per_epoch = min(len(data.train), EPOCH_MAX_IMAGES)
        self.order: list[int] = []
        steps = hp.epochs * math.ceil(self.per_epoch / hp.batch_size)
        self.optimizer = torch.optim.AdamW(
            self.trainable, lr=hp.learning_rate, weight_decay=hp.weight_decay
        )
        warmup = max(1, int(_WARMUP_SHARE * steps))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps))))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.costs = _Costs()
        self.meta = image_meta(data, hp.backbone, hp.image_size)

    def _next_indices(self) -> np.ndarray:
        """This epoch's training images: the next EPOCH_MAX_IMAGES of a reshuffled stream."""
        while len(self.order) < self.per_epoch:
            self.order.extend(self.rng.permutation(len(self.data.train)).tolist())
        take, self.order = self.order[: self.per_epoch], self.order[self.per_epoch :]
        return np.asarray(take)

    def train_epoch(self, epoch: int) -> tuple[float, bool]:
        from automl.vision.backbones import set_frozen_eval

        idx = self._next_indices()
        self.model.train()
        set_frozen_eval(self.model.backbone, self.frozen_blocks)
        n_val = len(self.val_y)
        loss_sum, seen = 0.0, 0
        for b in range(0, len(idx), self.hp.batch_size):
            batch = np.sort(idx[b : b + self.hp.batch_size])  # sorted reads from the memmap
            now = time.time()
            finish = self.costs.next_batch_s() + self.costs.eval_s(n_val) + self.costs.save_s
            if now + finish + _SAFETY_S > self.ctx.current_deadline():
                return (loss_sum / seen if seen else math.nan), True
            use_threads(self.ctx)
            loss = self._step(batch)
            if not math.isfinite(loss):
                raise TrainingDiverged(
                    f"training loss became {loss} at epoch {epoch} after {seen} images "
                    f"(learning rate {self.hp.learning_rate:g}): this configuration diverged"
                )
            loss_sum += loss * len(batch)
            seen += len(batch)
            spent = time.time() - now
            self.costs.recent.append(spent)
            self.costs.per_image_train = spent / len(batch)
        return loss_sum / max(seen, 1), False

    def _step(self, batch: np.ndarray) -> float:
        x = to_unit(self.train_px[batch], self.hp.image_size, self.device)
        if self.augment is not None:
            x = self.augment(x).clamp_(0.0, 1.0)
        x = normalize(x, self.cfg.mean, self.cfg.std)
        y = self.y[batch].to(self.device)
        logits = self.model(x)
        loss = nn.functional.cross_entropy(logits, y, label_smoothing=self.hp.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.trainable, 2.0)
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())

    def evaluate(self, best: float | None) -> tuple[dict[str, float], bool]:
        t0 = time.time()
        logits = pixel_logits(self.model, self.cfg, self.val_px, _EVAL_BATCH)
        metrics = compute_metrics("classification", self.val_y, logits)
        self.costs.eval_per_image = (time.time() - t0) / max(1, len(self.val_y))
        value = metrics[self.ctx.metric]
        improved = (
            best is None
            or (value > best if self.ctx.mode == "max" else value < best)
            or (math.isnan(best) and not math.isnan(value))
        )
        if improved and not math.isnan(value):
            t_save = time.time()
            save_image(self.model, self.cfg, self.meta, Path(self.ctx.output_dir))
            self.costs.save_s = time.time() - t_save
        return metrics, bool(improved and not math.isnan(value))


def save_image(model: ImageClassifier, cfg: ImageConfig, meta: ModelMeta, out_dir: Path) -> None:
    """Write an image model folder atomically (a kill mid-save leaves the previous one)."""

    def write(tmp: Path) -> None:
        save_image_model(model, cfg, tmp)
        write_meta(meta, tmp)

    replace_dir(out_dir, write)
