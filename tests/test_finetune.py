"""Fine-tuning trainer, augmentation and metrics, on a tiny random BERT (fast)."""

from __future__ import annotations

import math
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import finetune_params as _params

from automl.config import EpochResult, PreparedData, Split, TrialContext
from automl.errors import ConfigError, TrainingDiverged
from automl.metrics import compute_metrics
from automl.modelio import load_model_dir, predict_logits, select_device
from automl.trainers import _prefix_cache
from automl.trainers import finetune as ft
from automl.trainers.augment import augment_batch, random_delete_swap, span_mask
from automl.trainers.finetune import FineTuneTrainer, freeze_bottom_layers

CLASSIFICATION_KEYS = {"accuracy", "macro_f1", "precision", "recall", "loss"}
REGRESSION_KEYS = {"rmse", "mae", "r2", "loss"}
TEXT = "the quick brown fox jumps over the lazy dog near the river bank"


def _ctx(tmp_path: Path, seconds: float = 60.0, **kw: Any) -> TrialContext:
    return TrialContext(output_dir=str(tmp_path / "best"), deadline=time.time() + seconds, **kw)


def _load(model_dir: str) -> tuple[Any, Any, Any]:
    """A saved model on the device the trainer used (and `automl predict` uses): scores
    from another device differ in the last bits, so they would not reproduce exactly."""
    model, tokenizer, meta = load_model_dir(model_dir)
    return model.to(select_device()), tokenizer, meta


def _fit(data: PreparedData, params: dict[str, Any], ctx: TrialContext) -> tuple[list, list]:
    reported: list[EpochResult] = []
    results = FineTuneTrainer().fit(data, params, ctx, reported.append)
    return results, reported


# --- augmentation ----------------------------------------------------------------------


def test_delete_swap_is_deterministic_and_keeps_a_word() -> None:
    a = random_delete_swap(TEXT, 0.3, random.Random(7))
    assert a == random_delete_swap(TEXT, 0.3, random.Random(7))
    assert a != TEXT
    assert random_delete_swap(TEXT, 0.0, random.Random(7)) == TEXT
    assert set(a.split()) <= set(TEXT.split())
    for seed in range(50):
        assert random_delete_swap("two words", 1.0, random.Random(seed)).strip()
    # numpy Generators work too, and are deterministic as well.
    b = random_delete_swap(TEXT, 0.3, np.random.default_rng(3))
    assert b == random_delete_swap(TEXT, 0.3, np.random.default_rng(3))


def test_span_mask_hides_about_strength_of_the_words() -> None:
    out = span_mask(TEXT, 0.3, random.Random(1), "[MASK]")
    assert out == span_mask(TEXT, 0.3, random.Random(1), "[MASK]")
    words, masked = TEXT.split(), out.split()
    assert len(masked) == len(words)
    hidden = sum(w == "[MASK]" for w in masked)
    assert hidden == round(0.3 * len(words)) or hidden == int(0.3 * len(words))
    assert all(m in ("[MASK]", w) for w, m in zip(words, masked, strict=True))
    assert span_mask(TEXT, 0.0, random.Random(1), "[MASK]") == TEXT
    assert span_mask("single", 0.9, random.Random(1), "[MASK]") == "single"
    for seed in range(20):  # at least one word always stays visible
        assert span_mask("two words", 0.9, random.Random(seed), "[MASK]").count("[MASK]") == 1


def test_augment_batch_methods() -> None:
    texts = [TEXT, "short one", "x"]
    assert augment_batch(texts, "none", 0.3, random.Random(0)) == texts
    assert augment_batch(texts, "mask", 0.0, random.Random(0), "[MASK]") == texts
    assert all(augment_batch(texts, "delete_swap", 0.3, random.Random(0)))
    assert "[MASK]" in augment_batch(texts, "mask", 0.3, random.Random(0), "[MASK]")[0]
    with pytest.raises(ConfigError, match=r"'shuffle'.*none, delete_swap, mask"):
        augment_batch(texts, "shuffle", 0.3, random.Random(0))


# --- metrics and helpers ---------------------------------------------------------------


def test_compute_metrics_classification_and_regression() -> None:
    logits = np.array([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 2.0]])
    m = compute_metrics("classification", [0, 1, 1, 1], logits)
    assert set(m) == CLASSIFICATION_KEYS
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["recall"] == pytest.approx((1.0 + 2 / 3) / 2)
    log_p = 2.0 - math.log(1 + math.exp(2.0))
    assert m["loss"] == pytest.approx(-(3 * log_p + (log_p - 2.0)) / 4)
    r = compute_metrics("regression", [1.0, 2.0, 3.0], np.array([[1.0], [2.0], [5.0]]))
    assert set(r) == REGRESSION_KEYS
    assert r["loss"] == pytest.approx(4 / 3)
    assert r["rmse"] == pytest.approx(math.sqrt(4 / 3))
    assert r["mae"] == pytest.approx(2 / 3)
    assert r["r2"] == pytest.approx(1 - 4 / 2)


def test_bucket_batches_cover_every_row_once() -> None:
    lengths = [random.Random(i).randint(3, 60) for i in range(103)]
    batches = ft._bucket_batches(lengths, 16, random.Random(0))
    assert sorted(i for b in batches for i in b) == list(range(103))
    assert all(1 <= len(b) <= 16 for b in batches)


def test_freezing_freezes_embeddings_and_bottom_layers(tiny_backbone: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    def load() -> Any:
        return AutoModelForSequenceClassification.from_pretrained(
            str(tiny_backbone), num_labels=3, local_files_only=True
        )

    def grads(module: Any) -> set[bool]:
        return {p.requires_grad for p in module.parameters()}

    model = load()
    frozen = freeze_bottom_layers(model, 1)
    assert frozen[0] is model.bert.embeddings and len(frozen) == 2
    assert grads(model.bert.embeddings) == {False}
    assert grads(model.bert.encoder.layer[0]) == {False}
    assert grads(model.bert.encoder.layer[1]) == {True}
    assert grads(model.bert.pooler) == grads(model.classifier) == {True}

    model = load()
    assert freeze_bottom_layers(model, 0) == []
    assert grads(model) == {True}

    model = load()
    assert len(freeze_bottom_layers(model, 99)) == 3  # clipped to the 2 layers
    assert grads(model.bert.encoder) == {False}
    assert grads(model.classifier) == {True}


# --- fit -------------------------------------------------------------------------------


def test_fit_reports_epochs_and_saves_a_model_that_reproduces_them(
    tiny_backbone: Path, tiny_data: PreparedData, tmp_path: Path
) -> None:
    ctx = _ctx(tmp_path)
    results, reported = _fit(tiny_data, _params(tiny_backbone, freeze_layers=1), ctx)
    assert results == reported
    assert [r.epoch for r in results] == [1, 2]
    assert all(set(r.metrics) == CLASSIFICATION_KEYS for r in results)
    assert results[0].improved
    assert all(math.isfinite(r.train_loss) and r.seconds > 0 for r in results)

    best = [r for r in results if r.improved][-1]
    model, tokenizer, meta = _load(ctx.output_dir)
    assert meta.task == "classification" and meta.backbone == "tiny-bert"
    assert meta.label_names == list(tiny_data.label_names) and meta.max_length == 64
    assert meta.text_columns == ["text"]
    logits = predict_logits(model, tokenizer, tiny_data.val.texts, meta.max_length)
    assert compute_metrics("classification", tiny_data.val.labels, logits) == best.metrics
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temp leftovers


def test_early_stopping_after_patience_epochs(
    tiny_backbone: Path, tiny_data: PreparedData, tmp_path: Path
) -> None:
    # learning_rate 0: the model never changes, so only the first epoch improves.
    params = _params(tiny_backbone, learning_rate=0.0, epochs=8, patience=2)
    results, _ = _fit(tiny_data, params, _ctx(tmp_path))
    assert [r.improved for r in results] == [True, False, False]


def test_a_loss_that_becomes_nan_fails_the_trial_with_its_reason(
    tiny_backbone: Path, tiny_data: PreparedData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A diverged configuration raises TrainingDiverged (the search stores the trial as
    failed with this text) instead of reporting NaN epochs as if they were results."""
    real_step = ft._Run._step
    calls = {"n": 0}

    def step(self: Any, ids: Any, batch: Any) -> float:
        calls["n"] += 1
        real_step(self, ids, batch)
        return math.nan if calls["n"] >= 3 else 0.5

    monkeypatch.setattr(ft._Run, "_step", step)
    with pytest.raises(
        TrainingDiverged,
        match=r"training loss became nan at epoch 1 after \d+ texts \(learning rate 0.001\)",
    ):
        _fit(tiny_data, _params(tiny_backbone), _ctx(tmp_path))


def test_regression_fit(
    tiny_backbone: Path, tiny_regression_data: PreparedData, tmp_path: Path
) -> None:
    ctx = _ctx(tmp_path, metric="rmse", mode="min")
    results, _ = _fit(tiny_regression_data, _params(tiny_backbone, epochs=3), ctx)
    assert len(results) == 3
    for r in results:
        assert set(r.metrics) == REGRESSION_KEYS
        assert r.metrics["loss"] == pytest.approx(r.metrics["rmse"] ** 2)
    best = [r for r in results if r.improved][-1]
    model, tokenizer, meta = _load(ctx.output_dir)
    assert meta.task == "regression" and meta.label_names == []
    logits = predict_logits(model, tokenizer, tiny_regression_data.val.texts, meta.max_length)
    assert compute_metrics("regression", tiny_regression_data.val.labels, logits) == best.metrics
    # Targets are standardised for training and the scale is folded back into the head,
    # so the saved model predicts in the targets' own units (around 10-25 here).
    y = np.asarray(tiny_regression_data.val.labels)
    assert abs(float(logits.mean()) - y.mean()) < y.std()


def test_deadline_is_respected(
    tiny_backbone: Path, tiny_data: PreparedData, tmp_path: Path
) -> None:
    params = _params(tiny_backbone, epochs=10_000, patience=10_000)
    t0 = time.time()
    results, reported = _fit(tiny_data, params, _ctx(tmp_path, seconds=1.5))
    assert time.time() - t0 < 2.5
    # On a busy machine loading alone can eat the 1.5 s: then nothing is reported, and
    # that is right too. test_partial_epoch_... checks the reporting with more time.
    assert results == reported
    assert [r.epoch for r in results] == list(range(1, len(results) + 1))


def test_partial_epoch_is_evaluated_at_the_deadline(
    tiny_backbone: Path, tiny_data: PreparedData, tmp_path: Path
) -> None:
    # 24,000 rows at batch 8: an epoch takes far longer than the 3 s allowed.
    many = Split(tiny_data.train.texts * 400, tiny_data.train.labels * 400)
    data = replace(tiny_data, train=many)
    t0 = time.time()
    results, _ = _fit(data, _params(tiny_backbone, batch_size=8), _ctx(tmp_path, seconds=3))
    assert time.time() - t0 < 4.0
    assert [r.epoch for r in results] == [1]  # cut short, evaluated, reported
    assert set(results[0].metrics) == CLASSIFICATION_KEYS and results[0].improved
    assert (tmp_path / "best" / "automl.json").is_file()


def test_past_deadline_returns_at_once(
    tiny_backbone: Path, tiny_data: PreparedData, tmp_path: Path
) -> None:
    results, reported = _fit(tiny_data, _params(tiny_backbone), _ctx(tmp_path, seconds=-1))
    assert results == reported == []
    assert not (tmp_path / "best").exists()


@pytest.mark.parametrize(
    "overrides",
    [
        {"optimizer": "sgd", "learning_rate": 1e-2},
        {"label_smoothing": 0.2},
        {"dropout": 0.0, "weight_decay": 0.0, "warmup_ratio": 0.0, "max_length": 16},
    ],
    ids=["sgd", "label_smoothing", "no_regularisation"],
)
def test_fit_variants_run(
    tiny_backbone: Path, tiny_data: PreparedData, tmp_path: Path, overrides: dict[str, Any]
) -> None:
    results, _ = _fit(tiny_data, _params(tiny_backbone, epochs=1, **overrides), _ctx(tmp_path))
    assert len(results) == 1 and math.isfinite(results[0].metrics["loss"])


def test_augmentation_touches_only_training_texts_each_epoch(
    tiny_backbone: Path, tiny_data: PreparedData, tmp_path: Path, monkeypatch: Any
) -> None:
    calls: list[tuple[str, ...]] = []

    def spy(texts: Any, method: str, strength: float, rng: Any, mask_token: Any) -> list[str]:
        calls.append(tuple(texts))
        return augment_batch(texts, method, strength, rng, mask_token)

    monkeypatch.setattr(ft, "augment_batch", spy)
    params = _params(tiny_backbone, augment="mask", augment_strength=0.3)
    results, _ = _fit(tiny_data, params, _ctx(tmp_path))
    assert len(results) == 2
    assert calls == [tiny_data.train.texts] * 2


def test_bad_params_are_config_errors(
    tiny_backbone: Path, tiny_data: PreparedData, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="optimizer 'lion'"):
        _fit(tiny_data, _params(tiny_backbone, optimizer="lion"), _ctx(tmp_path))
    with pytest.raises(ConfigError, match="metric 'rmse'"):
        _fit(tiny_data, _params(tiny_backbone), _ctx(tmp_path, metric="rmse"))


# --- frozen-prefix cache ---------------------------------------------------------------


def _spy_steps(monkeypatch: Any) -> list[tuple[bool, float]]:
    """Record (cached path on, loss) for every training step."""
    steps: list[tuple[bool, float]] = []
    step = ft._Run._step

    def spy(self: Any, ids: Any, batch: Any) -> float:
        loss = step(self, ids, batch)
        steps.append((self.prefix is not None, loss))
        return loss

    monkeypatch.setattr(ft._Run, "_step", spy)
    return steps


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_cached_path_reports_what_the_saved_model_predicts(
    tiny_backbone: Path,
    tiny_data: PreparedData,
    tiny_regression_data: PreparedData,
    tmp_path: Path,
    monkeypatch: Any,
    task: str,
) -> None:
    data = tiny_data if task == "classification" else tiny_regression_data
    metric, mode = ("macro_f1", "max") if task == "classification" else ("rmse", "min")
    ctx = _ctx(tmp_path, metric=metric, mode=mode)
    steps = _spy_steps(monkeypatch)
    checked: list[int] = []

    def report(result: EpochResult) -> None:
        # At each report the folder holds the best epoch so far: this one when improved.
        if result.improved:
            model, tokenizer, meta = _load(ctx.output_dir)
            logits = predict_logits(model, tokenizer, data.val.texts, meta.max_length)
            assert compute_metrics(task, data.val.labels, logits) == result.metrics
            checked.append(result.epoch)

    params = _params(tiny_backbone, freeze_layers=1, epochs=3, learning_rate=3e-3)
    results = FineTuneTrainer().fit(data, params, ctx, report)
    assert len(results) == 3 and checked and checked[0] == 1
    assert steps and all(cached for cached, _ in steps)


def test_cached_and_uncached_training_give_the_same_losses(
    tiny_backbone: Path, tiny_data: PreparedData, tmp_path: Path, monkeypatch: Any
) -> None:
    steps = _spy_steps(monkeypatch)
    params = _params(tiny_backbone, freeze_layers=1, epochs=2, dropout=0.0)
    cached, _ = _fit(tiny_data, params, _ctx(tmp_path / "a"))
    n = len(steps)
    monkeypatch.setattr(_prefix_cache, "MAX_CACHE_BYTES", 0)  # "too big": falls back
    plain, _ = _fit(tiny_data, params, _ctx(tmp_path / "b"))
    assert [c for c, _ in steps[:n]] == [True] * n and [c for c, _ in steps[n:]] == [False] * n
    # Epoch 1 fills the cache running the same ops; epoch 2 runs the top from the cache,
    # whose states were computed with other batches' padding: equal to float noise.
    a, b = np.array([loss for _, loss in steps[:n]]), np.array([loss for _, loss in steps[n:]])
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    for x, y in zip(cached, plain, strict=True):
        assert x.metrics["loss"] == pytest.approx(y.metrics["loss"], abs=1e-5)
        assert x.metrics["accuracy"] == y.metrics["accuracy"]


@pytest.mark.parametrize(
    "overrides",
    [{"freeze_layers": 0}, {"freeze_layers": 1, "augment": "mask", "augment_strength": 0.3}],
    ids=["nothing_frozen", "augmenting"],
)
def test_cache_is_off_when_not_eligible(
    tiny_backbone: Path,
    tiny_data: PreparedData,
    tmp_path: Path,
    monkeypatch: Any,
    overrides: dict[str, Any],
) -> None:
    steps = _spy_steps(monkeypatch)
    results, _ = _fit(tiny_data, _params(tiny_backbone, epochs=1, **overrides), _ctx(tmp_path))
    assert len(results) == 1 and steps and not any(cached for cached, _ in steps)


def test_the_top_layer_trains_however_many_layers_are_asked_frozen(
    tiny_backbone: Path, tiny_data: PreparedData, tmp_path: Path, monkeypatch: Any
) -> None:
    # The tiny BERT has 2 layers: freezing "99" freezes the embeddings and layer 0 only.
    steps = _spy_steps(monkeypatch)
    trainable: list[set[str]] = []
    step = ft._Run._step

    def spy(self: Any, ids: Any, batch: Any) -> float:
        names = {n for n, p in self.model.named_parameters() if p.requires_grad}
        trainable.append({n.split(".")[3] for n in names if ".encoder.layer." in n})
        return step(self, ids, batch)

    monkeypatch.setattr(ft._Run, "_step", spy)
    ctx = _ctx(tmp_path)
    results, _ = _fit(tiny_data, _params(tiny_backbone, freeze_layers=99, epochs=2), ctx)
    assert trainable and all(t == {"1"} for t in trainable)
    assert len(results) == 2 and all(cached for cached, _ in steps)
    best = [r for r in results if r.improved][-1]
    model, tokenizer, meta = _load(ctx.output_dir)
    logits = predict_logits(model, tokenizer, tiny_data.val.texts, meta.max_length)
    assert compute_metrics("classification", tiny_data.val.labels, logits) == best.metrics


def test_cache_only_for_bert_with_frozen_layers(tiny_backbone: Path) -> None:
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        MPNetConfig,
        MPNetForSequenceClassification,
    )

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_backbone), local_files_only=True)
    bert = AutoModelForSequenceClassification.from_pretrained(
        str(tiny_backbone), num_labels=3, local_files_only=True
    )
    create = _prefix_cache.PrefixCache.create
    assert create(bert, tokenizer, 1, [10, 12], 2) is not None
    assert create(bert, tokenizer, 0, [10, 12], 2) is None
    # MPNet's relative position bias is shared by every layer and trains: not cacheable.
    config = MPNetConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
    )
    assert create(MPNetForSequenceClassification(config), tokenizer, 1, [10, 12], 2) is None


# --- training precision ----------------------------------------------------------------


def test_train_autocast_follows_the_hardware_and_the_switch(monkeypatch: Any) -> None:
    import torch

    from automl import modelio

    cpu = torch.device("cpu")
    a, b = torch.ones(4, 4), torch.ones(4, 4)
    monkeypatch.delenv(modelio.MIXED_PRECISION_ENV, raising=False)
    monkeypatch.setattr(modelio, "_cpu_has_bf16", lambda: True)
    ctx, name = modelio.train_autocast(cpu)
    assert name == "bf16"
    with ctx:
        assert (a @ b).dtype == torch.bfloat16
    assert (a @ b).dtype == torch.float32  # only inside the context
    monkeypatch.setenv(modelio.MIXED_PRECISION_ENV, "0")
    ctx, name = modelio.train_autocast(cpu)
    assert name == "fp32"
    with ctx:
        assert (a @ b).dtype == torch.float32
    monkeypatch.delenv(modelio.MIXED_PRECISION_ENV)
    monkeypatch.setattr(modelio, "_cpu_has_bf16", lambda: False)  # slower than fp32 there
    assert modelio.train_autocast(cpu)[1] == "fp32"


@pytest.mark.parametrize("bf16", [True, False])
def test_bf16_training_saves_an_fp32_model_that_reproduces_its_metrics(
    tiny_backbone: Path, tiny_data: PreparedData, tmp_path: Path, monkeypatch: Any, bf16: bool
) -> None:
    import torch

    from automl import modelio

    if torch.cuda.is_available():
        pytest.skip("CPU bf16 detection; on a GPU, tests/test_gpu.py checks the trainer")
    monkeypatch.delenv(modelio.MIXED_PRECISION_ENV, raising=False)
    monkeypatch.setattr(modelio, "_cpu_has_bf16", lambda: bf16)
    ctx = _ctx(tmp_path)
    seen: list[torch.dtype] = []
    step = ft._Run._step

    def spy(self: Any, ids: Any, batch: Any) -> float:  # the head's output dtype per step
        hook = self.model.classifier.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
        try:
            return step(self, ids, batch)
        finally:
            hook.remove()

    monkeypatch.setattr(ft._Run, "_step", spy)
    results, _ = _fit(tiny_data, _params(tiny_backbone, freeze_layers=1), ctx)
    assert results and seen and set(seen) == {torch.bfloat16 if bf16 else torch.float32}
    model, tokenizer, meta = _load(ctx.output_dir)
    assert meta.train_precision == ("bf16" if bf16 else "fp32")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    best = max(results, key=lambda r: r.metrics["macro_f1"])
    logits = predict_logits(model, tokenizer, tiny_data.val.texts, meta.max_length)
    assert compute_metrics("classification", tiny_data.val.labels, logits) == best.metrics
