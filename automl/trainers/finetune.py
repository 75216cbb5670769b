"""Fine-tune a pretrained encoder with a classification or regression head.

A plain torch loop (as fast as transformers.Trainer here, and simpler to stop on a
deadline): dynamic padding with length-bucketed batches, AdamW or SGD, linear warmup and
decay, gradient clipping, freezing of the bottom layers, dropout, label smoothing and
text augmentation. Evaluates on the validation split after every epoch, saves the best
epoch's model folder, then reports. With frozen layers and no augmentation, the frozen
bottom's outputs are cached after the first epoch (automl.trainers._prefix_cache).
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from automl._files import replace_dir
from automl.config import EpochResult, PreparedData, TrialContext
from automl.errors import AssetError, ConfigError, DataError, TrainingDiverged
from automl.metrics import compute_metrics, metric_names
from automl.modelio import (
    ModelMeta,
    predict_logits,
    quiet_transformers,
    save_model_dir,
    select_device,
    train_autocast,
)
from automl.paths import ensure_offline
from automl.trainers._prefix_cache import PrefixCache
from automl.trainers.augment import AUGMENT_METHODS, augment_batch
from automl.trainers.base import ReportFn, use_threads

logger = logging.getLogger(__name__)

__all__ = ["FineTuneTrainer", "encoder_layers", "freeze_bottom_layers"]

# Defaults for keys a caller leaves out: the `init` values of search_spaces/finetune.yaml.
DEFAULTS: dict[str, Any] = {
    "freeze_layers": 2,
    "learning_rate": 1e-4,
    "weight_decay": 0.01,
    "dropout": 0.1,
    "label_smoothing": 0.0,
    "optimizer": "adamw",
    "warmup_ratio": 0.06,
    "epochs": 5,
    "batch_size": 32,
    "max_length": 64,
    "augment": "none",
    "augment_strength": 0.1,
    "patience": 2,
}

# Dropout knobs under the names various architectures use (BERT/RoBERTa/MPNet/ELECTRA:
# hidden/attention probs; DistilBERT: dropout, attention_dropout, seq_classif_dropout;
# DeBERTa: pooler_dropout). Only those a config already has are set.
_DROPOUT_ATTRS = (
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "classifier_dropout",
    "dropout",
    "attention_dropout",
    "seq_classif_dropout",
    "pooler_dropout",
)
_EVAL_BATCH = 64  # predict_logits' batch size; export uses the same default
_BUCKET_BATCHES = 50  # sort by length within windows of 50 batches, then shuffle batches
_SAFETY_S = 0.1  # slack kept before the deadline on top of the estimated finishing time
_GRACE_S = 0.5  # overrun allowed to evaluate a first, partial epoch (else nothing is reported)


@dataclass(frozen=True)
class _Hparams:
    freeze_layers: int
    learning_rate: float
    weight_decay: float
    dropout: float
    label_smoothing: float
    optimizer: str
    warmup_ratio: float
    epochs: int
    batch_size: int
    max_length: int
    augment: str
    augment_strength: float
    patience: int

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> _Hparams:
        p = {**DEFAULTS, **{k: v for k, v in params.items() if k in DEFAULTS}}
        hp = cls(
            freeze_layers=int(p["freeze_layers"]),
            learning_rate=float(p["learning_rate"]),
            weight_decay=float(p["weight_decay"]),
            dropout=float(p["dropout"]),
            label_smoothing=float(p["label_smoothing"]),
            optimizer=str(p["optimizer"]).lower(),
            warmup_ratio=float(p["warmup_ratio"]),
            epochs=int(p["epochs"]),
            batch_size=int(p["batch_size"]),
            max_length=int(p["max_length"]),
            augment=str(p["augment"]),
            augment_strength=float(p["augment_strength"]),
            patience=int(p["patience"]),
        )
        if hp.optimizer not in ("adamw", "sgd"):
            raise ConfigError(f"optimizer {hp.optimizer!r} is unknown: expected adamw or sgd")
        if hp.augment not in AUGMENT_METHODS:
            raise ConfigError(
                f"augment {hp.augment!r} is unknown: expected one of {', '.join(AUGMENT_METHODS)}"
            )
        for name in ("epochs", "batch_size", "max_length", "patience"):
            if getattr(hp, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(hp, name)}")
        return hp


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a model's base encoder, bottom first (BERT, RoBERTa,
    MPNet: `encoder.layer`; DistilBERT: `transformer.layer`; else the longest ModuleList)."""
    base = getattr(model, "base_model", model)
    for path in ("encoder.layer", "encoder.layers", "transformer.layer", "layers", "layer"):
        obj: Any = base
        for part in path.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, nn.ModuleList) and len(obj) > 0:
            return obj
    lists = [m for m in base.modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise ConfigError(f"cannot find the encoder layers of {type(model).__name__}")
    return max(lists, key=len)


def freeze_bottom_layers(model: nn.Module, k: int) -> list[nn.Module]:
    """Freeze the embeddings and the bottom k encoder layers (k clipped to the depth;
    nothing frozen when k <= 0). Returns the frozen modules (to keep in eval mode)."""
    layers = encoder_layers(model)
    k = max(0, min(int(k), len(layers)))
    if k == 0:
        return []
    base: Any = getattr(model, "base_model", model)
    embeddings = getattr(base, "embeddings", None)
    if embeddings is None:
        embeddings = base.get_input_embeddings()
    frozen = [embeddings, *layers[:k]]
    for module in frozen:
        module.requires_grad_(False)
    return frozen


class _Costs:
    """Running estimates of how long a batch, an evaluation and a save take."""

    def __init__(self, n_params: int) -> None:
        self.recent: deque[tuple[float, int]] = deque(maxlen=10)  # (seconds, texts)
        self.eval_per_text: float | None = None
        # Before the first save: ~200 MB/s for fp32 weights plus tokenizer files.
        self.save_s = 0.1 + n_params * 4 / 200e6

    def batch(self, seconds: float, n: int) -> None:
        self.recent.append((seconds, n))

    def next_batch_s(self) -> float:
        # The slowest recent batch: lengths vary between buckets, and CPUs are shared.
        return max((s for s, _ in list(self.recent)[-5:]), default=0.0)

    def eval_s(self, n_val: int) -> float:
        if self.eval_per_text is not None:
            return 0.05 + self.eval_per_text * n_val
        # Before the first evaluation: a forward pass costs about a third of a training
        # step when every layer trains, but nearly a whole one when most are frozen (only
        # the top layers run backward), and evaluation batches pad more: assume a whole.
        seconds = sum(s for s, _ in self.recent)
        texts = sum(n for _, n in self.recent)
        return 0.05 + seconds / max(texts, 1) * n_val


class FineTuneTrainer:
    """Fine-tunes `params["backbone_path"]` (a local HF folder) on PreparedData.

    Implements `automl.trainers.base.Trainer`. Search parameters are those of
    search_spaces/finetune.yaml; missing ones take its `init` values (DEFAULTS).
    """

    def fit(
        self, data: PreparedData, params: dict[str, Any], ctx: TrialContext, report: ReportFn
    ) -> list[EpochResult]:
        """Train, evaluating on data.val after every epoch; returns the EpochResults."""
        start = time.time()
        if start >= ctx.current_deadline():
            logger.debug("deadline already passed; not training")
            return []
        hp = _Hparams.from_params(params)
        if ctx.metric not in metric_names(data.task):
            raise ConfigError(
                f"metric {ctx.metric!r} is not computed for {data.task}: expected one of "
                f"{', '.join(metric_names(data.task))}"
            )
        if len(data.train) == 0 or len(data.val) == 0:
            raise DataError(
                f"{data.source}: fine-tuning needs training and validation rows, got "
                f"{len(data.train)} and {len(data.val)}: add rows to the dataset"
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
            if math.isnan(train_loss):  # no batch fitted before the deadline
                break
            # A trial with nothing reported yet may overrun a little rather than waste its work.
            grace = 0.0 if results else _GRACE_S
            deadline = ctx.current_deadline()
            if partial and time.time() + run.costs.eval_s(len(data.val)) > deadline + grace:
                logger.debug("epoch %d: no time left to evaluate a partial epoch", epoch)
                break
            metrics, improved = run.evaluate(best)
            if improved:
                best = metrics[ctx.metric]
            stale = 0 if improved else stale + 1
            result = EpochResult(epoch, metrics, train_loss, time.time() - start, improved)
            results.append(result)
            logger.debug(
                "epoch %d%s: train_loss %.4f, %s %.4f%s",
                epoch,
                " (partial)" if partial else "",
                train_loss,
                ctx.metric,
                metrics[ctx.metric],
                " (best)" if improved else "",
            )
            report(result)  # may not return: the search can stop the trial here
            if partial or not math.isfinite(train_loss) or stale >= hp.patience:
                break
        return results


class _Run:
    """The live state of one fit: model, optimizer, encoded texts, cost estimates."""

    def __init__(
        self, data: PreparedData, params: dict[str, Any], hp: _Hparams, ctx: TrialContext
    ) -> None:
        self.data, self.hp, self.ctx = data, hp, ctx
        self.rng = random.Random(ctx.seed)
        self.device = select_device()
        # bf16 autocast for training steps where the hardware has it (1.5x faster epochs
        # on an AVX512-BF16 CPU core); evaluation and the saved model stay fp32.
        self.autocast, precision = train_autocast(self.device)
        self.model, self.tokenizer = _load(data, params, hp)
        self.model.to(self.device)
        # The top layer always trains. In the quality benchmark's studies none of the 32
        # trials with a wholly frozen body (a new pooler and head only) came within 0.04 of
        # its study's best (benchmarks/results/quality.md): a head on a frozen body is the
        # few-shot track's job.
        depth = len(encoder_layers(self.model))
        self.frozen = freeze_bottom_layers(self.model, min(hp.freeze_layers, depth - 1))
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.costs = _Costs(sum(p.numel() for p in self.model.parameters()))
        self.regression = data.task == "regression"

        y: np.ndarray = np.asarray(
            data.train.labels, dtype=np.float64 if self.regression else np.int64
        )
        # Regression trains on standardised targets; the scale is folded into the output
        # layer whenever the model is evaluated or saved, so saved outputs are raw values.
        self.y_mean, self.y_std = 0.0, 1.0
        self.out_layer: nn.Linear | None = None
        if self.regression:
            self.y_mean, self.y_std = float(y.mean()), float(y.std()) or 1.0
            y = (y - self.y_mean) / self.y_std
            self.out_layer = _output_linear(self.model, data.num_labels)
        self.targets = torch.tensor(y)

        steps_per_epoch = math.ceil(len(data.train) / hp.batch_size)
        self.optimizer = _optimizer(self.model, hp)
        self.scheduler = _linear_schedule(
            self.optimizer, hp.warmup_ratio, hp.epochs * steps_per_epoch
        )
        self.meta = ModelMeta(
            task=data.task,
            label_names=list(data.label_names),
            max_length=hp.max_length,
            backbone=str(params.get("backbone", params["backbone_path"])),
            text_columns=list(data.text_columns),
            train_precision=precision,
        )
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else 0
        self.base_ids = _encode(self.tokenizer, data.train.texts, hp.max_length)
        # Frozen bottom + fixed texts: its outputs are cached (None: the whole model runs).
        self.prefix: PrefixCache | None = None
        if self.frozen and not self.augmenting:
            self.prefix = PrefixCache.create(
                self.model,
                self.tokenizer,
                len(self.frozen) - 1,
                [len(x) for x in self.base_ids],
                len(data.val),
            )

    @property
    def augmenting(self) -> bool:
        return self.hp.augment != "none" and self.hp.augment_strength > 0

    def epoch_ids(self) -> list[list[int]]:
        """Token ids of this epoch's training texts, freshly augmented when augmenting."""
        hp = self.hp
        if not self.augmenting:
            return self.base_ids
        texts = augment_batch(
            self.data.train.texts,
            hp.augment,
            hp.augment_strength,
            self.rng,
            self.tokenizer.mask_token,
        )
        return _encode(self.tokenizer, texts, hp.max_length)

    def train_epoch(self, epoch: int) -> tuple[float, bool]:
        """One pass over the training texts, stopped early when the time left would not
        cover another batch, an evaluation and a save. Returns (mean train loss in the
        targets' units, or nan when no batch ran; whether the epoch was cut short)."""
        ids = self.epoch_ids()
        self.model.train()
        for module in self.frozen:
            module.eval()  # no dropout in frozen layers: they act as a fixed encoder
        n_val = len(self.data.val)
        loss_sum, seen = 0.0, 0
        for batch in _bucket_batches([len(x) for x in ids], self.hp.batch_size, self.rng):
            now = time.time()
            finish = self.costs.next_batch_s() + self.costs.eval_s(n_val) + self.costs.save_s
            deadline = self.ctx.current_deadline()
            if now + finish + _SAFETY_S > deadline:
                logger.debug(
                    "epoch %d: stopping after %d texts, %.2f s left, %.2f s needed to finish",
                    epoch,
                    seen,
                    deadline - now,
                    finish,
                )
                return (loss_sum / seen * self.y_std**2 if seen else math.nan), True
            use_threads(self.ctx)
            loss = self._step(ids, batch)
            if not math.isfinite(loss):
                raise TrainingDiverged(
                    f"training loss became {loss} at epoch {epoch} after {seen} texts "
                    f"(learning rate {self.hp.learning_rate:g}): this configuration diverged"
                )
            loss_sum += loss * len(batch)
            seen += len(batch)
            self.costs.batch(time.time() - now, len(batch))
        return loss_sum / seen * self.y_std**2, False

    def _step(self, ids: list[list[int]], batch: list[int]) -> float:
        input_ids, mask = _pad([ids[i] for i in batch], self.pad_id, self.tokenizer.padding_side)
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        with self.autocast:
            if self.prefix is not None:
                logits = self.prefix.train_logits(batch, input_ids, mask).float()
            else:
                logits = self.model(input_ids=input_ids, attention_mask=mask).logits.float()
        y = self.targets[batch].to(self.device)
        if self.regression:
            loss = nn.functional.mse_loss(logits[:, 0], y.float())
        else:
            loss = nn.functional.cross_entropy(logits, y, label_smoothing=self.hp.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.trainable, 1.0)
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())

    def evaluate(self, best: float | None) -> tuple[dict[str, float], bool]:
        """Validation metrics; saves the model folder when ctx.metric improves on best.
        Returns (metrics, improved)."""
        t0 = time.time()
        val = self.data.val
        # The cache's stand-in gives bit-identical logits (predict_logits does the batching).
        model = self.model if self.prefix is None else self.prefix.eval_model
        with _folded(self.out_layer, self.y_mean, self.y_std):
            logits = predict_logits(
                model, self.tokenizer, val.texts, self.hp.max_length, _EVAL_BATCH, self.device
            )
            metrics = compute_metrics(self.data.task, val.labels, logits)
            self.costs.eval_per_text = (time.time() - t0) / len(val)
            improved = _better(metrics[self.ctx.metric], best, self.ctx.mode)
            if improved:
                t_save = time.time()
                _save_atomic(self.model, self.tokenizer, self.meta, Path(self.ctx.output_dir))
                self.costs.save_s = time.time() - t_save
        return metrics, improved


def _load(data: PreparedData, params: dict[str, Any], hp: _Hparams) -> tuple[Any, Any]:
    """(model, tokenizer) from the local backbone folder, with dropout and head set."""
    if "backbone_path" not in params:
        raise ConfigError("params need 'backbone_path': the local folder of the backbone")
    path = str(params["backbone_path"])
    ensure_offline()
    quiet_transformers()
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    kwargs: dict[str, Any] = {"num_labels": data.num_labels}
    if data.task == "regression":
        kwargs["problem_type"] = "regression"
    else:
        kwargs["problem_type"] = "single_label_classification"
        kwargs["id2label"] = dict(enumerate(data.label_names))
        kwargs["label2id"] = {name: i for i, name in enumerate(data.label_names)}
    try:
        config = AutoConfig.from_pretrained(
            path, local_files_only=True, trust_remote_code=False, **kwargs
        )
        for attr in _DROPOUT_ATTRS:
            if hasattr(config, attr):
                setattr(config, attr, hp.dropout)
        tokenizer = AutoTokenizer.from_pretrained(
            path, local_files_only=True, trust_remote_code=False
        )
        model = AutoModelForSequenceClassification.from_pretrained(
            path, config=config, local_files_only=True, trust_remote_code=False
        )
    except (OSError, ValueError) as exc:
        raise AssetError(
            f"cannot load the backbone {params.get('backbone', path)!r} from {path}: {exc}. "
            "Run `automl assets` to check or re-fetch the backbones"
        ) from exc
    return model, tokenizer


def _encode(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids per text, truncated, unpadded (padding happens per batch)."""
    return tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]


def _pad(ids: list[list[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad a batch to its longest sequence: (input_ids, attention_mask)."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        cols = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        input_ids[row, cols] = torch.tensor(seq, dtype=torch.long)
        mask[row, cols] = 1
    return input_ids, mask


def _bucket_batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar lengths: shuffle, sort within windows of
    _BUCKET_BATCHES batches (less padding), then shuffle the order of the batches."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * _BUCKET_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


# A freshly initialised head needs a larger step than pretrained layers: with one shared lr
# in 1e-5..3e-4, head-only or mostly-frozen trials barely moved in an epoch (Fortunes-8,
# 3-minute study: macro-F1 0.10-0.27 after an epoch at lr <= 3e-5).
HEAD_LR_MULT = 10.0
_HEAD_NAMES = frozenset({"classifier", "score"})
# The searched learning rate is on AdamW's scale; plain SGD (momentum 0.9) needs far larger
# steps. Unscaled, every SGD trial stayed at the majority class (SpamAssassin, 10-minute
# study: 3 of 8 trials, macro-F1 0.41 after 1-2 epochs).
SGD_LR_SCALE = 30.0


def _optimizer(model: nn.Module, hp: _Hparams) -> torch.optim.Optimizer:
    """AdamW or SGD (momentum 0.9); no weight decay on biases and normalisation weights.
    The new classification head learns HEAD_LR_MULT times faster than the pretrained body."""
    scale = SGD_LR_SCALE if hp.optimizer == "sgd" else 1.0
    buckets: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_head = name.split(".", 1)[0] in _HEAD_NAMES
        no_decay = param.ndim < 2 or "norm" in name.lower()
        buckets.setdefault((is_head, no_decay), []).append(param)
    groups = [
        {
            "params": params,
            "weight_decay": 0.0 if no_decay else hp.weight_decay,
            "lr": hp.learning_rate * (HEAD_LR_MULT if is_head else 1.0) * scale,
        }
        for (is_head, no_decay), params in sorted(buckets.items())
    ]
    # Fused kernels: one pass over each tensor. On a CPU the AdamW step of MiniLM-L6 took
    # 0.105 s unfused vs 0.015 s fused (a sixth of a whole training step unfused).
    try:
        if hp.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=hp.learning_rate * scale, momentum=0.9, fused=True)
        return torch.optim.AdamW(groups, lr=hp.learning_rate, fused=True)
    except (RuntimeError, ValueError):  # a device or dtype without fused kernels
        if hp.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=hp.learning_rate * scale, momentum=0.9)
        return torch.optim.AdamW(groups, lr=hp.learning_rate)


def _linear_schedule(
    optimizer: torch.optim.Optimizer, warmup_ratio: float, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup over warmup_ratio of the planned steps, then linear decay to 0."""
    warmup = int(warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _output_linear(model: nn.Module, num_labels: int) -> nn.Linear:
    """The head's last Linear layer (BERT: classifier; RoBERTa/MPNet: classifier.out_proj)."""
    head = next(
        (m for m in (getattr(model, n, None) for n in ("classifier", "score")) if m is not None),
        model,
    )
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if not linears or linears[-1].out_features != num_labels or linears[-1].bias is None:
        raise ConfigError(f"cannot find the output layer of {type(model).__name__}")
    return linears[-1]


@contextmanager
def _folded(layer: nn.Linear | None, mean: float, std: float) -> Iterator[None]:
    """Temporarily make `layer` output mean + std * output (raw regression targets)."""
    if layer is None:
        yield
        return
    weight, bias = layer.weight.detach().clone(), layer.bias.detach().clone()
    with torch.no_grad():
        layer.weight.mul_(std)
        layer.bias.mul_(std).add_(mean)
    try:
        yield
    finally:
        with torch.no_grad():
            layer.weight.copy_(weight)
            layer.bias.copy_(bias)


def _better(value: float, best: float | None, mode: str) -> bool:
    """Whether value improves on best (the first evaluation always does; nan never does,
    except over a nan best)."""
    if best is None or math.isnan(best):
        return best is None or not math.isnan(value)
    if math.isnan(value):
        return False
    return value > best if mode == "max" else value < best


def _save_atomic(model: Any, tokenizer: Any, meta: ModelMeta, out_dir: Path) -> None:
    """Write the model folder beside out_dir, then swap it in (automl._files.replace_dir)."""

    def write(tmp: Path) -> None:
        save_model_dir(model, tokenizer, meta, tmp)

    replace_dir(out_dir, write)
