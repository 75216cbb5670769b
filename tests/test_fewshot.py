"""Few-shot track: fold bookkeeping, the embedding cache and FewShotTrainer (tiny BERT)."""

from __future__ import annotations

import importlib.util
import math
import pickle
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from automl import embeddings
from automl.config import EpochResult, PreparedData, Split, TrialContext
from automl.cv import cv_folds, effective_splits, summarize
from automl.errors import ConfigError, DataError
from automl.spaces import load_space, parse_space
from automl.trainers import fewshot as fs
from automl.trainers.fewshot import FewShotTrainer

TEXTS = ["the cat sat on the mat", "a dog barked", "stocks fell sharply today"]


@pytest.fixture(autouse=True)
def _fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own empty disk cache and a cold in-process cache."""
    root = tmp_path / "cache"
    monkeypatch.setenv("AUTOML_CACHE", str(root))
    embeddings.clear_memory_cache()
    yield root
    embeddings.clear_memory_cache()


def _params(backbone: Path, **overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "backbone": "tiny-bert",
        "backbone_path": str(backbone),
        "method": "logreg",
        "C": 1.0,
        "max_length": 32,
        "not_a_fewshot_key": "ignored",  # unknown extra keys are ignored
    }
    params.update(overrides)
    return params


def _ctx(tmp_path: Path, seconds: float = 120.0, seed: int = 0) -> TrialContext:
    return TrialContext(
        output_dir=str(tmp_path / "trial"), deadline=time.time() + seconds, seed=seed
    )


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _stats_delta(before: dict[str, int]) -> dict[str, int]:
    after = embeddings.cache_stats()
    return {k: after[k] - before[k] for k in after}


# --- cross-validation folds -----------------------------------------------------------


def test_cv_folds_partition_each_repeat_and_stratify() -> None:
    labels = [0] * 8 + [1] * 8 + [2] * 12
    folds = cv_folds(labels, n_splits=4, n_repeats=2, seed=3)
    assert len(folds) == 8
    y = np.asarray(labels)
    for repeat in range(2):
        block = folds[repeat * 4 : (repeat + 1) * 4]
        val = np.concatenate([v for _, v in block])
        assert sorted(val.tolist()) == list(range(len(labels)))  # each index exactly once
        for train, v in block:
            assert set(train).isdisjoint(v)
            assert len(train) + len(v) == len(labels)
            assert np.bincount(y[v]).tolist() == [2, 2, 3]  # stratified
    # repeats reshuffle; the same seed repeats the folds exactly
    assert [v.tolist() for _, v in folds[:4]] != [v.tolist() for _, v in folds[4:]]
    again = cv_folds(labels, n_splits=4, n_repeats=2, seed=3)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again, strict=True))


def test_cv_folds_lower_n_splits_to_the_smallest_class() -> None:
    labels = ["a"] * 10 + ["b"] * 3
    assert effective_splits(labels, 5) == 3
    folds = cv_folds(labels, n_splits=5, n_repeats=2, seed=0)
    assert len(folds) == 6
    for _, val in folds:
        assert sum(labels[i] == "b" for i in val) == 1


def test_cv_folds_single_example_class_is_a_data_error() -> None:
    with pytest.raises(DataError, match="'rare'.*add examples"):
        cv_folds(["common"] * 5 + ["rare"], n_splits=4, n_repeats=1, seed=0)
    with pytest.raises(ConfigError):
        cv_folds([0, 0, 1, 1], n_splits=1, n_repeats=1, seed=0)


def test_summarize_mean_and_population_std() -> None:
    out = summarize([{"macro_f1": 0.5, "loss": 1.0}, {"macro_f1": 1.0, "loss": 3.0}])
    assert out == pytest.approx(
        {"macro_f1": 0.75, "macro_f1_std": 0.25, "loss": 2.0, "loss_std": 1.0}
    )
    assert summarize([{"accuracy": 0.9}]) == {"accuracy": 0.9, "accuracy_std": 0.0}


# --- embedding cache ------------------------------------------------------------------


def test_embedding_cache_memory_then_disk(tiny_backbone: Path, _fresh_cache: Path) -> None:
    before = embeddings.cache_stats()
    first = embeddings.embed(str(tiny_backbone), TEXTS, max_length=16)
    assert first.shape == (3, 32) and first.dtype == np.float32
    assert _stats_delta(before) == {
        "memory_hits": 0,
        "disk_hits": 0,
        "misses": 1,
        "model_loads": 1,
    }
    files = list((_fresh_cache / "embeddings").glob("*.npy"))
    assert [f.name for f in files] == [f"{embeddings.cache_key(tiny_backbone, TEXTS, 16)}.npy"]

    before = embeddings.cache_stats()
    second = embeddings.embed(str(tiny_backbone), TEXTS, max_length=16)
    assert second is first  # the in-process level: no disk read at all
    assert not second.flags.writeable
    assert _stats_delta(before)["memory_hits"] == 1

    embeddings.clear_memory_cache()  # like a fresh Ray worker process
    before = embeddings.cache_stats()
    third = embeddings.embed(str(tiny_backbone), TEXTS, max_length=16)
    np.testing.assert_array_equal(third, first)
    assert _stats_delta(before) == {
        "memory_hits": 0,
        "disk_hits": 1,
        "misses": 0,
        "model_loads": 0,
    }


def test_embedding_cache_key_changes_with_max_length_and_texts(tiny_backbone: Path) -> None:
    key = embeddings.cache_key(tiny_backbone, TEXTS, 16)
    assert embeddings.cache_key(tiny_backbone, TEXTS, 32) != key
    assert embeddings.cache_key(tiny_backbone, TEXTS[:2], 16) != key
    assert embeddings.cache_key(tiny_backbone, [*TEXTS[:2], "another text"], 16) != key
    assert embeddings.cache_key(tiny_backbone, list(TEXTS), 16) == key

    embeddings.embed(str(tiny_backbone), TEXTS, max_length=16)
    before = embeddings.cache_stats()
    short = embeddings.embed(str(tiny_backbone), TEXTS, max_length=2)
    other = embeddings.embed(str(tiny_backbone), TEXTS[::-1], max_length=16)
    assert _stats_delta(before)["misses"] == 2
    # max_length=2 keeps only [CLS] [SEP]: different vectors than 16 tokens
    assert not np.allclose(short, embeddings.embed(str(tiny_backbone), TEXTS, max_length=16))
    np.testing.assert_allclose(other, embeddings.embed(str(tiny_backbone), TEXTS, 16)[::-1])


def test_embedding_cache_ignores_a_corrupt_file(tiny_backbone: Path, _fresh_cache: Path) -> None:
    key = embeddings.cache_key(tiny_backbone, TEXTS, 16)
    folder = _fresh_cache / "embeddings"
    folder.mkdir(parents=True)
    (folder / f"{key}.npy").write_bytes(b"not a numpy file")
    before = embeddings.cache_stats()
    out = embeddings.embed(str(tiny_backbone), TEXTS, max_length=16)
    assert out.shape == (3, 32)
    assert _stats_delta(before)["misses"] == 1
    np.testing.assert_array_equal(np.load(folder / f"{key}.npy"), out)  # rewritten


# --- FewShotTrainer -------------------------------------------------------------------


def _fit(
    data: PreparedData, params: dict[str, Any], ctx: TrialContext, n_splits: int = 4
) -> tuple[list[EpochResult], list[EpochResult]]:
    reported: list[EpochResult] = []
    results = FewShotTrainer(n_splits=n_splits).fit(data, params, ctx, reported.append)
    return results, reported


@pytest.mark.parametrize("method", ["logreg", "svm", "logreg_tfidf"])
def test_head_only_reports_one_result_per_fold(
    method: str, tiny_backbone: Path, tiny_data: PreparedData, tmp_path: Path
) -> None:
    results, reported = _fit(tiny_data, _params(tiny_backbone, method=method), _ctx(tmp_path))
    assert results == reported
    assert [r.epoch for r in reported] == [1, 2, 3, 4]
    for r in reported:
        assert {"accuracy", "macro_f1", "loss", "macro_f1_std", "loss_std"} <= set(r.metrics)
        assert r.improved and math.isnan(r.train_loss)
    assert [r.seconds for r in reported] == sorted(r.seconds for r in reported)
    assert reported[0].metrics["macro_f1_std"] == 0.0  # one fold so far
    assert reported[-1].metrics["macro_f1"] > 0.7  # the topics are linearly separable
    assert not (tmp_path / "trial").exists()  # a trial saves no model


def test_refit_logreg_tfidf_saves_both_heads_and_predicts_their_average(
    tiny_backbone: Path, tiny_data: PreparedData, tmp_path: Path
) -> None:
    from automl.fewshot_model import load_fewshot_dir
    from automl.tfidf_head import TFIDF_FILES, TfidfHead, average_logits

    params = _params(tiny_backbone, method="logreg_tfidf", C=0.5)
    out = FewShotTrainer().refit(tiny_data, params, str(tmp_path / "best"), seed=0)
    assert all((out / name).is_file() for name in TFIDF_FILES)
    loaded = load_fewshot_dir(out)
    assert loaded.tfidf is not None and loaded.meta.head == "LogisticRegression+TfidfHead"
    texts, y = fs._pooled(tiny_data)
    features = embeddings.embed(str(tiny_backbone), texts, max_length=32)
    head = fs._fit_head(fs._Hparams.from_params(params), features, y, seed=0)
    words = TfidfHead.fit(texts, y, 3, seed=0)
    expected = average_logits(fs._head_logits(head, features, 3), words.logits(texts))
    got = loaded.logits(texts).astype(np.float64)
    np.testing.assert_allclose(_softmax(got), _softmax(expected), atol=1e-4)
    # the TF-IDF part alone survives the round trip exactly
    again = TfidfHead.load(out)
    np.testing.assert_allclose(again.logits(texts), words.logits(texts), atol=1e-4)


def test_fit_is_deterministic_for_a_seed(
    tiny_backbone: Path, tiny_data: PreparedData, tmp_path: Path
) -> None:
    params = _params(tiny_backbone, method="svm")
    a, _ = _fit(tiny_data, params, _ctx(tmp_path, seed=1))
    b, _ = _fit(tiny_data, params, _ctx(tmp_path, seed=1))
    c, _ = _fit(tiny_data, params, _ctx(tmp_path, seed=2), n_splits=3)
    assert [r.metrics for r in a] == [r.metrics for r in b]
    assert len(c) == 3


def test_second_head_only_trial_reuses_the_embeddings(
    tiny_backbone: Path, tiny_data: PreparedData, tmp_path: Path
) -> None:
    t0 = time.perf_counter()
    _fit(tiny_data, _params(tiny_backbone, C=1.0), _ctx(tmp_path))
    first = time.perf_counter() - t0
    before = embeddings.cache_stats()
    t0 = time.perf_counter()
    _fit(tiny_data, _params(tiny_backbone, method="svm", C=0.1), _ctx(tmp_path))
    second = time.perf_counter() - t0
    delta = _stats_delta(before)
    assert delta == {"memory_hits": 1, "disk_hits": 0, "misses": 0, "model_loads": 0}
    assert second < first / 2, (first, second)


def test_setfit_trial_reports_and_leaves_the_cached_body_alone(
    tiny_backbone: Path, tiny_data: PreparedData, tmp_path: Path
) -> None:
    before = embeddings.embed(str(tiny_backbone), TEXTS, max_length=32).copy()
    params = _params(
        tiny_backbone,
        method="setfit",
        num_iterations=1,
        batch_size=32,
        body_learning_rate=1e-3,
    )
    results, reported = _fit(tiny_data, params, _ctx(tmp_path), n_splits=2)
    assert [r.epoch for r in reported] == [1, 2]
    assert all(math.isfinite(r.train_loss) and r.train_loss > 0 for r in reported)
    assert {"macro_f1", "macro_f1_std"} <= set(reported[-1].metrics)
    # every fold trains a copy: the shared, cached encoder still gives the same vectors
    model = embeddings.load_body(tiny_backbone)
    model.max_seq_length = 32
    np.testing.assert_allclose(model.encode(TEXTS, show_progress_bar=False), before, atol=1e-6)


def test_setfit_differentiable_head_trains_the_body(
    tiny_backbone: Path, tiny_data: PreparedData
) -> None:
    hp = fs._Hparams.from_params(
        {
            "method": "setfit",
            "head": "differentiable",
            "num_iterations": 1,
            "batch_size": 32,
            "body_learning_rate": 1e-3,
            "head_epochs": 2,
            "max_length": 32,
        }
    )
    texts, y = fs._pooled(tiny_data)
    with tempfile.TemporaryDirectory() as scratch:
        model, loss = fs._train_setfit(
            str(tiny_backbone), hp, texts[:40], y[:40], 3, 0, time.time() + 120, scratch
        )
    assert math.isfinite(loss)
    logits = fs._setfit_logits(model, texts[40:], 3)
    assert logits.shape == (len(texts) - 40, 3)
    np.testing.assert_allclose(np.exp(logits).sum(axis=1), 1.0, atol=1e-5)
    cached = embeddings.embed(str(tiny_backbone), TEXTS, max_length=32)
    assert not np.allclose(model.model_body.encode(TEXTS, show_progress_bar=False), cached)


def test_deadline_stops_between_folds(
    tiny_backbone: Path, tiny_data: PreparedData, tmp_path: Path
) -> None:
    ctx = _ctx(tmp_path, seconds=1.0)
    reported: list[EpochResult] = []

    def report(result: EpochResult) -> None:
        reported.append(result)
        while time.time() < ctx.deadline:  # the fold took us past the deadline
            time.sleep(0.01)

    results = FewShotTrainer().fit(tiny_data, _params(tiny_backbone), ctx, report)
    assert [r.epoch for r in results] == [1]
    assert reported == results
    late = replace(ctx, deadline=time.time() - 1)
    assert FewShotTrainer().fit(tiny_data, _params(tiny_backbone), late, report) == []


def test_embedding_time_is_not_taken_for_a_folds_time(
    tiny_backbone: Path, tiny_data: PreparedData, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slow embeddings (long e-mails, one core) come once before the first fold; the
    head-only folds after them take milliseconds and must all run. Counting the embedding
    time as the first fold's stopped a 60 s study after one fold of each trial."""
    real_embed = fs.embed

    def slow_embed(*args: Any, **kwargs: Any) -> np.ndarray:
        time.sleep(1.5)
        return real_embed(*args, **kwargs)

    monkeypatch.setattr(fs, "embed", slow_embed)
    ctx = _ctx(tmp_path, seconds=2.5)
    results = FewShotTrainer().fit(tiny_data, _params(tiny_backbone), ctx, lambda r: None)
    assert len(results) == len(cv_folds(fs._pooled(tiny_data)[1].tolist(), 4, 1, 0))


def test_deadline_callback_stops_setfit_training() -> None:
    class Control:
        should_training_stop = False

    state = SimpleNamespace(global_step=1)
    cb = fs._deadline_callback(time.time() + 60)
    cb.on_step_begin(None, state, Control())
    assert not cb.on_step_end(None, state, Control()).should_training_stop
    cb = fs._deadline_callback(time.time() - 1)
    assert cb.on_step_end(None, state, Control()).should_training_stop and cb.stopped
    # a step that would end past the deadline is not started: 1 s steps, 0.5 s left
    cb = fs._deadline_callback(time.time() + 1.5)
    cb.on_step_begin(None, state, Control())
    time.sleep(1.0)
    assert cb.on_step_end(None, state, Control()).should_training_stop
    cb.on_log(None, None, Control(), logs={"train_loss": 0.25})
    assert cb.train_loss == 0.25


def test_report_raising_propagates(
    tiny_backbone: Path, tiny_data: PreparedData, tmp_path: Path
) -> None:
    class Stop(Exception):
        pass

    calls: list[int] = []

    def report(result: EpochResult) -> None:
        calls.append(result.epoch)
        raise Stop  # like ASHA stopping the trial

    with pytest.raises(Stop):
        FewShotTrainer().fit(tiny_data, _params(tiny_backbone), _ctx(tmp_path), report)
    assert calls == [1]


def test_few_shot_data_with_empty_val_and_bad_input(
    tiny_backbone: Path, tiny_data: PreparedData, tmp_path: Path
) -> None:
    few = replace(tiny_data, train=Split(tiny_data.train.texts[:9], tiny_data.train.labels[:9]))
    few = replace(few, val=Split((), ()))
    results, _ = _fit(few, _params(tiny_backbone), _ctx(tmp_path))
    assert len(results) == min(4, *np.bincount(few.train.labels))  # folds lowered
    with pytest.raises(ConfigError, match="method"):
        _fit(tiny_data, _params(tiny_backbone, method="knn"), _ctx(tmp_path))
    with pytest.raises(ConfigError, match="backbone_path"):
        _fit(tiny_data, {"method": "logreg"}, _ctx(tmp_path))
    regression = replace(tiny_data, task="regression", label_names=())
    with pytest.raises(DataError, match="classification"):
        _fit(regression, _params(tiny_backbone), _ctx(tmp_path))


# --- refit ----------------------------------------------------------------------------

_HAS_SAVER = importlib.util.find_spec("automl.fewshot_model") is not None


@pytest.mark.skipif(not _HAS_SAVER, reason="automl/fewshot_model.py (save_fewshot_dir) missing")
@pytest.mark.parametrize("method", ["logreg", "svm"])
def test_refit_head_only_saves_what_the_trials_scored(
    method: str, tiny_backbone: Path, tiny_data: PreparedData, tmp_path: Path
) -> None:
    from automl.fewshot_model import load_fewshot_dir

    params = _params(tiny_backbone, method=method, C=0.5)
    out = FewShotTrainer().refit(tiny_data, params, str(tmp_path / "best"), seed=0)
    assert out == tmp_path / "best"
    loaded = load_fewshot_dir(out)
    meta = loaded.meta
    assert meta.format == "setfit" and meta.label_names == list(tiny_data.label_names)
    assert meta.max_length == 32 and meta.backbone == "tiny-bert"
    assert meta.text_columns == ["text"]
    # the saved model scores texts exactly as a trial's head fitted on all rows does
    texts, y = fs._pooled(tiny_data)
    features = embeddings.embed(str(tiny_backbone), texts, max_length=32)
    head = fs._fit_head(fs._Hparams.from_params(params), features, y, seed=0)
    expected = fs._head_logits(head, features, 3)
    got = loaded.logits(texts).astype(np.float64)
    np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))
    np.testing.assert_allclose(_softmax(got), _softmax(expected), atol=1e-4)


@pytest.mark.skipif(not _HAS_SAVER, reason="automl/fewshot_model.py (save_fewshot_dir) missing")
def test_refit_setfit_saves_a_loadable_folder(
    tiny_backbone: Path, tiny_data: PreparedData, tmp_path: Path
) -> None:
    from automl.fewshot_model import load_fewshot_dir

    params = _params(
        tiny_backbone,
        method="setfit",
        head="differentiable",
        num_iterations=1,
        batch_size=32,
        head_epochs=1,
    )
    out = FewShotTrainer().refit(tiny_data, params, str(tmp_path / "best"))
    loaded = load_fewshot_dir(out)
    assert loaded.meta.head == "SetFitHead"
    assert loaded.logits(list(tiny_data.test.texts)).shape == (len(tiny_data.test), 3)


def test_trainer_is_picklable() -> None:
    trainer = pickle.loads(pickle.dumps(FewShotTrainer(n_splits=3, n_repeats=2)))
    assert (trainer.n_splits, trainer.n_repeats) == (3, 2)


# --- the search space -----------------------------------------------------------------


def test_fewshot_space_loads_and_its_init_matches_the_defaults() -> None:
    space = load_space(track="fewshot")
    assert space.track == "fewshot"
    init = space.init_config()
    assert init["method"] == "logreg" and init["backbone"] == "minilm-l6"
    for name, value in init.items():
        if name != "backbone":
            assert fs.DEFAULTS[name] == value, name
    assert set(space.get("method").values) == set(fs.METHODS)  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="unknown parameter 'learning_rate'"):
        parse_space(
            {
                "track": "fewshot",
                "params": {
                    "learning_rate": {"type": "float", "low": 0.1, "high": 1.0, "init": 0.5}
                },
            }
        )
