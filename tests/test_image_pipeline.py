"""Images end to end on sklearn's digits (the tiny CI image set, real MobileNetV2 weights):
`automl run FOLDER` fine-tunes, exports an image model folder, and `automl predict`
reproduces the stored test metric from the image files; few images per class take the
few-shot track (frozen features + a cross-validated linear head); bad images in predict
get an error column, never a crash."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import automl_command

from automl.metrics import compute_metrics
from automl.modelio import read_meta
from automl.predict import Predictor, predict_file
from automl.store import Store

BUDGET_S = 75
FEWSHOT_BUDGET_S = 45


@dataclass
class Run:
    proc: subprocess.CompletedProcess
    root: Path
    db: Path

    def ok(self) -> None:
        assert self.proc.returncode == 0, f"{self.proc.stdout}\n{self.proc.stderr[-3000:]}"

    @property
    def study(self) -> dict:
        with Store(self.db) as store:
            (study,) = store.list_studies()
        return study


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("image_cache")
    old = os.environ.get("AUTOML_CACHE")
    os.environ["AUTOML_CACHE"] = str(path)
    try:
        yield path
    finally:
        if old is None:
            del os.environ["AUTOML_CACHE"]
        else:
            os.environ["AUTOML_CACHE"] = old


@pytest.fixture(scope="module")
def digits(cache: Path) -> Path:
    from automl.datasets.images import prepare_image_dataset

    return prepare_image_dataset("digits")


def _run(root: Path, data: Path, budget: int, *extra: str) -> Run:
    db = root / "store.db"
    args = [*automl_command(), "run", str(data), "--budget", f"{budget}s", *extra]
    args += ["--db", str(db), "--out", str(root / "runs")]
    env = {**os.environ, "COLUMNS": "250"}
    proc = subprocess.run(
        args, capture_output=True, text=True, env=env, cwd=root, timeout=budget + 120
    )
    return Run(proc, root, db)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory, digits: Path) -> Run:
    return _run(tmp_path_factory.mktemp("digits_run"), digits, BUDGET_S, "--trials", "2")


def test_digits_fine_tune_exports_an_image_model(digits_run: Run) -> None:
    digits_run.ok()
    study = digits_run.study
    assert study["status"] == "succeeded" and study["track"] == "finetune"
    best = Path(study["best_model_dir"])
    assert {"model.safetensors", "config.json", "automl.json", "README.md"} <= {
        p.name for p in best.iterdir()
    }
    meta = read_meta(best)
    assert meta.format == "image" and meta.label_names == [str(i) for i in range(10)]
    card = (best / "README.md").read_text()
    assert "pipeline_tag: image-classification" in card and "raw pixels" in card
    assert "pixels+LR reference" in digits_run.proc.stdout
    test = (
        json.loads(study["test_metrics"])
        if isinstance(study["test_metrics"], str)
        else (study["test_metrics"])
    )
    assert test["macro_f1"] > 0.8  # MobileNetV2 on 8x8 digits; a broken model scores ~0.1
    with Store(digits_run.db) as store:
        rows = store.leaderboard(study["id"])
    assert any(r["track"] == "reference" for r in rows)
    assert any(r.get("params", {}).get("backbone") == "mobilenet_v2" for r in rows)


def test_predict_reproduces_the_test_metric_from_the_files(digits_run: Run, digits: Path) -> None:
    from automl.data import check, split_checked

    study = digits_run.study
    data = split_checked(check(digits), seed=0)
    predictor = Predictor(study["best_model_dir"])
    preds, probs = predictor.predict_outputs(list(data.test.texts))
    logits = np.log(np.clip(probs, 1e-12, 1.0))
    metrics = compute_metrics("classification", np.asarray(data.test.labels), logits)
    stored = study["test_metrics"]
    stored = json.loads(stored) if isinstance(stored, str) else stored
    assert metrics["macro_f1"] == pytest.approx(stored["macro_f1"], abs=1e-9)
    assert metrics["accuracy"] == pytest.approx(stored["accuracy"], abs=1e-9)


def test_cli_predict_on_a_folder_keeps_paths_and_flags_bad_images(
    digits_run: Run, tmp_path: Path, digits: Path
) -> None:
    folder = tmp_path / "new"
    for cls in ("3", "7"):
        (folder / cls).mkdir(parents=True)
        for src in sorted((digits / cls).glob("test-*.png"))[:3]:
            (folder / cls / src.name).write_bytes(src.read_bytes())
    (folder / "7" / "broken.png").write_text("not an image")
    out = tmp_path / "pred.csv"
    proc = subprocess.run(
        [*automl_command(), "predict", digits_run.study["best_model_dir"], str(folder)]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    df = pd.read_csv(out, dtype=str)
    assert len(df) == 7 and {"image", "label", "prediction", "error"} <= set(df.columns)
    bad = df[df["image"].str.endswith("broken.png")]
    assert bad["prediction"].isna().all() and "not an image" in bad["error"].iloc[0]
    good = df[~df["image"].str.endswith("broken.png")]
    assert good["prediction"].notna().all() and good["error"].isna().all()
    assert (good["prediction"] == good["label"]).mean() >= 0.5


def test_predict_table_refuses_paths_outside_its_folder(digits_run: Run, tmp_path: Path) -> None:
    digits = Path(digits_run.study["dataset"])
    inside = tmp_path / "data"
    inside.mkdir()
    src = sorted((digits / "1").glob("*.png"))[0]
    (inside / "one.png").write_bytes(src.read_bytes())
    table = inside / "images.csv"
    pd.DataFrame({"image": ["one.png", str(src), "../x.png"]}).to_csv(table, index=False)
    df = predict_file(digits_run.study["best_model_dir"], table)
    assert df["prediction"].notna().tolist() == [True, False, False]
    assert df["error"].iloc[1].startswith("path leads outside")


def test_few_images_per_class_take_the_fewshot_track(
    tmp_path_factory: pytest.TempPathFactory, digits: Path
) -> None:
    root = tmp_path_factory.mktemp("fewshot_images")
    index = pd.read_csv(digits / "index.csv")
    rows = index[index["label"].astype(str).isin(["0", "1", "2"])].groupby("label").head(12)
    for rel in rows["image"]:
        target = root / "data" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((digits / rel).read_bytes())
    table = root / "data" / "few.csv"
    rows[["image", "label"]].to_csv(table, index=False)
    run = _run(root, table, FEWSHOT_BUDGET_S, "--trials", "3")
    run.ok()
    study = run.study
    assert study["track"] == "fewshot"
    assert "fewshot: 12 examples per class" in run.proc.stdout
    best = Path(study["best_model_dir"])
    assert read_meta(best).format == "image"
    with Store(run.db) as store:
        rows_lb = [r for r in store.leaderboard(study["id"]) if r["track"] == "fewshot"]
    assert rows_lb and all("macro_f1_std" in (r.get("metrics") or {}) for r in rows_lb)
    df = predict_file(best, table)
    assert (df["prediction"].astype(str) == df["label"].astype(str)).mean() >= 0.8


def test_python_api_takes_a_frame_of_absolute_image_paths(tmp_path: Path, digits: Path) -> None:
    """What `automl bench`'s automl system does: a DataFrame of absolute paths (no file to
    be relative to) is an image dataset; predict takes paths."""
    from automl import AutoML

    index = pd.read_csv(digits / "index.csv")
    rows = index[index["label"].astype(str).isin(["0", "1"])].groupby("label").head(40)
    df = pd.DataFrame(
        {"image": [str(digits / p) for p in rows["image"]], "label": rows["label"].astype(str)}
    )
    model = AutoML(budget="50s", max_trials=2, db=str(tmp_path / "s.db"), out=str(tmp_path))
    model.fit(df, label="label")
    assert read_meta(model.best_model_dir_).format == "image"
    preds = model.predict(df["image"].tolist()[:10])
    assert set(preds) <= {"0", "1"}
