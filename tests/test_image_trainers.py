"""The image trainers on tiny synthetic images (real MobileNetV2 weights, small inputs):
fine-tuning reports epochs and leaves a loadable checkpoint whose predictions from the
files equal the validation scores; the few-shot head, folded into the saved linear layer,
gives exactly the scikit-learn head's probabilities; augmentation keeps shapes and range."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from automl.config import CleaningReport, EpochResult, PreparedData, Split, TrialContext
from automl.errors import ConfigError
from automl.metrics import compute_metrics
from automl.modelio import load_model_dir, predict_logits, read_meta
from automl.vision.augment import build_augment

COLOURS = {"red": (200, 40, 40), "green": (40, 190, 40), "blue": (40, 40, 210)}


def _images(root: Path, per_class: int, seed: int = 0) -> list[tuple[str, int]]:
    rng = np.random.default_rng(seed)
    rows = []
    for k, (name, colour) in enumerate(COLOURS.items()):
        for i in range(per_class):
            arr = np.clip(np.array(colour) + rng.integers(-40, 40, (20, 20, 3)), 0, 255)
            path = root / name / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr.astype(np.uint8)).save(path)
            rows.append((str(path), k))
    rng.shuffle(rows)
    return rows


def _data(rows: list[tuple[str, int]], val: int, test: int) -> PreparedData:
    def split(part: list[tuple[str, int]]) -> Split:
        return Split(tuple(p for p, _ in part), tuple(y for _, y in part))

    n = len(rows) - val - test
    return PreparedData(
        train=split(rows[:n]),
        val=split(rows[n : n + val]),
        test=split(rows[n + val :]),
        task="classification",
        label_names=tuple(COLOURS),
        text_columns=("image",),
        label_column="label",
        source="synthetic",
        report=CleaningReport(len(rows), len(rows)),
        modality="image",
    )


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOML_CACHE", str(tmp_path / "cache"))


def test_fine_tune_reports_epochs_and_saves_a_checkpoint_predict_reproduces(
    tmp_path: Path,
) -> None:
    from automl.trainers.image import ImageTrainer

    data = _data(_images(tmp_path / "img", 14), val=9, test=6)
    ctx = TrialContext(output_dir=str(tmp_path / "trial"), deadline=time.time() + 120)
    reports: list[EpochResult] = []
    params = {"image_size": 32, "epochs": 2, "batch_size": 8, "freeze_blocks": 12}
    results = ImageTrainer().fit(data, {**params, "learning_rate": 3e-3}, ctx, reports.append)
    assert [r.epoch for r in results] == [1, 2] and reports == results
    assert all(0.0 <= r.metrics["macro_f1"] <= 1.0 for r in results)
    best = max(results, key=lambda r: r.metrics["macro_f1"])
    meta = read_meta(ctx.output_dir)
    assert meta.format == "image" and meta.max_length == 32
    model, cfg, _ = load_model_dir(ctx.output_dir)
    logits = predict_logits(model, cfg, list(data.val.texts), meta.max_length)
    again = compute_metrics("classification", np.asarray(data.val.labels), logits)
    assert again["macro_f1"] == pytest.approx(best.metrics["macro_f1"], abs=1e-9)


def test_fine_tune_stops_at_its_deadline(tmp_path: Path) -> None:
    from automl.trainers.image import ImageTrainer

    data = _data(_images(tmp_path / "img", 14), val=9, test=6)
    ctx = TrialContext(output_dir=str(tmp_path / "t"), deadline=time.time() - 1)
    assert ImageTrainer().fit(data, {"image_size": 32}, ctx, lambda r: None) == []
    with pytest.raises(ConfigError, match="flip"):
        later = dataclasses.replace(ctx, deadline=time.time() + 60)
        ImageTrainer().fit(data, {"flip": "diagonal"}, later, lambda r: None)


def test_fewshot_head_is_folded_into_the_saved_linear_layer(tmp_path: Path) -> None:
    from automl.trainers.image_fewshot import ImageFewShotTrainer

    rows = _images(tmp_path / "img", 8, seed=1)
    data = _data(rows, val=0, test=6)
    trainer = ImageFewShotTrainer(n_splits=3, n_repeats=1)
    ctx = TrialContext(output_dir=str(tmp_path / "unused"), deadline=time.time() + 120)
    reports: list[EpochResult] = []
    params = {"image_size": 32, "C": 0.5}
    trainer.fit(data, params, ctx, reports.append)
    assert [r.epoch for r in reports] == [1, 2, 3]
    assert "macro_f1_std" in reports[-1].metrics
    out = trainer.refit(data, params, str(tmp_path / "best"))
    model, cfg, meta = load_model_dir(out)
    assert meta.format == "image"
    logits = predict_logits(model, cfg, list(data.test.texts), 32)
    # the same features and head, straight from scikit-learn
    from automl.trainers.image_fewshot import _features, _fit_head, _pooled

    paths, y = _pooled(data)
    x = _features(model, cfg, paths, "")
    head = _fit_head(x, y, 0.5)
    want = head.predict_proba(_features(model, cfg, list(data.test.texts), ""))
    got = torch.softmax(torch.tensor(logits), dim=1).numpy()
    assert np.allclose(got, want, atol=1e-4)


def test_augmentation_keeps_shape_and_range() -> None:
    assert build_augment(0.0, "none", 32) is None
    aug = build_augment(1.0, "hv", 32)
    assert aug is not None
    x = torch.rand(4, 3, 32, 32)
    y = aug(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    with pytest.raises(ValueError, match="flip"):
        build_augment(0.5, "sideways", 32)
