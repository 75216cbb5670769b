"""End to end on a tiny random BERT: `automl run` as a real command, the store it fills,
`leaderboard`, the exported folder, `predict` reproducing the reported test metric, and
the Python API for classification and regression.

Three real runs (each starts a local Ray): the CLI run is shared by most tests here.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import random
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from helpers import FILLER, TOPIC_WORDS, automl_command
from sklearn.metrics import accuracy_score, f1_score

from automl import cli
from automl.api import AutoML
from automl.data import prepare
from automl.errors import ModelError
from automl.store import Store

BUDGET_S = 40
TRIALS = 3
SEED = 0
CLASSES = ("food", "sports", "tech")  # sorted: class ids follow this order
_WORDS, _FILLER = TOPIC_WORDS, FILLER
# Small and fast: a random 2-layer BERT needs a large learning rate to learn anything.
SPACE_YAML = """\
track: finetune
params:
  backbone:      {type: choice, values: [minilm-l3], init: minilm-l3}
  learning_rate: {type: float, low: 5.0e-3, high: 2.0e-2, log: true, init: 1.0e-2}
  epochs:        {type: int, low: 2, high: 6, init: 4}
  batch_size:    {type: choice, values: [16], init: 16}
  max_length:    {type: choice, values: [32], init: 32}
  freeze_layers: {type: int, low: 0, high: 1, init: 0}
  patience:      {type: int, low: 3, high: 3, init: 3}
"""


def topic_frame(per_class: int = 40, seed: int = 0) -> pd.DataFrame:
    """3 topics; each text is 4 filler words plus 2 words of its class."""
    rng = random.Random(seed)
    rows = []
    for i in range(per_class * len(_WORDS)):
        name = list(_WORDS)[i % len(_WORDS)]
        words = rng.sample(_FILLER, 4) + rng.sample(_WORDS[name], 2)
        rng.shuffle(words)
        rows.append((" ".join(words), name))
    return pd.DataFrame(rows, columns=["text", "label"])


def regression_frame(n: int = 120, seed: int = 1) -> pd.DataFrame:
    """y = 3 * (number of "good" words) + 10 + noise: many distinct floats."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        k = rng.randint(0, 3)
        words = rng.sample(_FILLER, 4) + ["good"] * k
        rng.shuffle(words)
        rows.append((" ".join(words), round(10.0 + 3.0 * k + rng.gauss(0, 0.5), 3)))
    return pd.DataFrame(rows, columns=["text", "y"])


@dataclass(frozen=True)
class CliRun:
    proc: subprocess.CompletedProcess[str]
    wall_s: float
    root: Path
    csv: Path
    db: Path
    env: dict[str, str]

    @property
    def study(self) -> dict:
        with Store(self.db) as store:
            studies = store.list_studies()
        assert len(studies) == 1
        return studies[0]

    @property
    def best_dir(self) -> Path:
        return Path(self.study["best_model_dir"])


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory, tiny_backbone: Path) -> CliRun:
    """`automl run` on a 120-row CSV with the tiny backbone, as a real process."""
    root = tmp_path_factory.mktemp("cli_run")
    data = root / "topics.csv"
    topic_frame().to_csv(data, index=False)
    (root / "space.yaml").write_text(SPACE_YAML)
    env = {
        **os.environ,
        "AUTOML_CACHE": str(root / "cache"),
        "COLUMNS": "250",  # a wide leaderboard table, so names are not truncated
    }
    args = [
        *automl_command(),
        "run",
        str(data),
        "--label",
        "label",
        "--backbone",
        str(tiny_backbone),
        "--space",
        str(root / "space.yaml"),
        "--budget",
        f"{BUDGET_S}s",
        "--trials",
        str(TRIALS),
        "--seed",
        str(SEED),
        "--db",
        str(root / "store.db"),
        "--out",
        str(root / "runs"),
    ]
    t0 = time.time()
    proc = subprocess.run(
        args, capture_output=True, text=True, env=env, cwd=root, timeout=BUDGET_S + 90
    )
    return CliRun(proc, time.time() - t0, root, data, root / "store.db", env)


def _ok(run: CliRun) -> None:
    assert run.proc.returncode == 0, f"stdout:\n{run.proc.stdout}\nstderr:\n{run.proc.stderr}"


# -- the run ------------------------------------------------------------------------------


def test_run_exits_0_within_its_budget_and_prints_the_leaderboard(cli_run: CliRun) -> None:
    _ok(cli_run)
    out, err = cli_run.proc.stdout, cli_run.proc.stderr
    assert "Traceback" not in out + err
    study = cli_run.study
    assert f"study {study['id']}" in out
    assert "reference" in out and "finetune" in out
    assert f"best model: {cli_run.best_dir}" in out
    assert "test macro_f1:" in out and "TF-IDF reference" in out
    assert f"of a {BUDGET_S}s budget" in out
    assert cli_run.wall_s <= BUDGET_S + 20, f"took {cli_run.wall_s:.1f}s"
    assert study["wall_s"] <= BUDGET_S + 10


def test_store_holds_the_study_the_reference_the_trials_and_their_epochs(
    cli_run: CliRun,
) -> None:
    _ok(cli_run)
    study = cli_run.study
    assert study["status"] == "succeeded" and study["error"] is None
    assert study["task"] == "classification" and study["metric"] == "macro_f1"
    assert study["budget_s"] == BUDGET_S and study["seed"] == SEED
    assert study["data_summary"]["label_names"] == list(CLASSES)
    assert set(study["test_metrics"]) >= {"macro_f1", "accuracy", "loss"}
    with Store(cli_run.db) as store:
        trials = store.trials(study["id"])
        epochs = store.epochs(study_id=study["id"])
        artifacts = store.artifacts(study["id"])
    reference = [t for t in trials if t["track"] == "reference"]
    finetune = [t for t in trials if t["track"] == "finetune"]
    assert len(reference) == 1 and reference[0]["number"] == 0
    assert reference[0]["status"] == "complete" and "macro_f1" in reference[0]["metrics"]
    assert len(finetune) == TRIALS  # --trials stops the search early
    assert [t["number"] for t in finetune] == list(range(1, TRIALS + 1))
    assert {t["status"] for t in finetune} <= {"complete", "pruned", "stopped", "failed"}
    assert finetune[0]["params"]["learning_rate"] == 1.0e-2  # the space's init goes first
    best = study["best_trial_id"]
    assert best in {t["id"] for t in finetune}
    for t in finetune:
        if t["epochs_done"] == t["params"]["epochs"]:  # ran all it planned: not pruned
            assert t["status"] == "complete", t
        mine = [e for e in epochs if e["trial_id"] == t["id"]]
        assert [e["epoch"] for e in mine] == list(range(1, t["epochs_done"] + 1))
        assert all("macro_f1" in e["metrics"] for e in mine)
        if t["epochs_done"]:
            assert t["metrics"]["macro_f1"] == max(e["metrics"]["macro_f1"] for e in mine)
    assert any(t["epochs_done"] > 0 for t in finetune)
    kinds = {a["kind"]: a for a in artifacts}
    assert Path(kinds["model"]["path"]) == cli_run.best_dir
    assert kinds["model"]["trial_id"] == best
    assert Path(kinds["model_card"]["path"]) == cli_run.best_dir / "README.md"


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(cli.main, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_leaderboard_as_json_csv_and_table(cli_run: CliRun) -> None:
    _ok(cli_run)
    db = str(cli_run.db)
    rows = json.loads(_invoke("leaderboard", "--format", "json", "--db", db))
    assert isinstance(rows, list) and len(rows) == TRIALS + 1
    for row in rows:
        assert {"id", "trial_id", "status", "track", "params", "metrics", "seconds"} <= set(row)
        assert row["id"] == row["trial_id"]
    assert [r["track"] for r in rows].count("reference") == 1
    assert sum(r["is_best"] for r in rows) == 1
    best = next(r for r in rows if r["is_best"])
    assert best["trial_id"] == cli_run.study["best_trial_id"] and best["track"] == "finetune"

    table = list(
        csv.DictReader(io.StringIO(_invoke("leaderboard", "--format", "csv", "--db", db)))
    )
    assert len(table) == TRIALS + 1
    assert {"rank", "trial", "status", "track", "macro_f1", "params"} <= set(table[0])
    assert sorted(r["trial"] for r in table) == [str(n) for n in range(TRIALS + 1)]

    study_id = cli_run.study["id"]
    assert study_id in _invoke("leaderboard", study_id, "--db", db)
    assert study_id in _invoke("studies", "--db", db)


# -- the exported model -------------------------------------------------------------------


def test_exported_folder_is_a_plain_hf_model_with_a_card(cli_run: CliRun) -> None:
    _ok(cli_run)
    best = cli_run.best_dir
    assert best == cli_run.root / "runs" / cli_run.study["id"] / "best"
    for name in ("model.safetensors", "config.json", "tokenizer_config.json", "automl.json"):
        assert (best / name).is_file(), name
    assert (best / "tokenizer.json").is_file() or (best / "vocab.txt").is_file()
    config = json.loads((best / "config.json").read_text())
    assert config["id2label"] == {str(i): n for i, n in enumerate(CLASSES)}
    assert config["label2id"] == {n: i for i, n in enumerate(CLASSES)}
    meta = json.loads((best / "automl.json").read_text())
    assert meta["task"] == "classification" and meta["label_names"] == list(CLASSES)
    assert meta["max_length"] == 32 and meta["text_columns"] == ["text"]
    card = (best / "README.md").read_text()
    assert cli_run.study["id"] in card
    assert "margin" in card and "TF-IDF" in card
    assert f"budget {BUDGET_S} s" in card
    assert meta["train_precision"] in ("bf16", "fp32")
    assert ("bf16 autocast" in card) == (meta["train_precision"] == "bf16")
    assert not (best.parent / "trials").exists()  # the best was copied; the rest removed


def _test_split_csv(run: CliRun) -> tuple[Path, list[str]]:
    """The run's test split rebuilt from the same file and seed, as a CSV."""
    data = prepare(run.csv, label="label", seed=SEED)
    assert len(data.test) == run.study["data_summary"]["rows"]["test"]
    truth = [data.label_names[i] for i in data.test.labels]
    path = run.root / "test_split.csv"
    pd.DataFrame({"text": data.test.texts, "label": truth}).to_csv(path, index=False)
    return path, truth


def test_predict_reproduces_the_reported_test_metric_exactly(cli_run: CliRun) -> None:
    _ok(cli_run)
    test_csv, truth = _test_split_csv(cli_run)
    preds_csv = cli_run.root / "preds.csv"
    proc = subprocess.run(
        [*automl_command(), "predict", str(cli_run.best_dir), str(test_csv)]
        + ["--out", str(preds_csv)],
        capture_output=True,
        text=True,
        env=cli_run.env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    preds = pd.read_csv(preds_csv)
    assert list(preds["text"]) == list(pd.read_csv(test_csv)["text"])
    assert set(preds["prediction"]) <= set(CLASSES)
    assert [f"proba_{c}" for c in CLASSES] == [c for c in preds.columns if c.startswith("proba_")]
    proba = preds[[f"proba_{c}" for c in CLASSES]].to_numpy()
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    stored = cli_run.study["test_metrics"]
    macro_f1 = f1_score(truth, preds["prediction"], average="macro", zero_division=0)
    assert abs(macro_f1 - stored["macro_f1"]) < 1e-12, (macro_f1, stored)
    assert abs(accuracy_score(truth, preds["prediction"]) - stored["accuracy"]) < 1e-12


def test_plain_transformers_gives_the_same_predictions(cli_run: CliRun) -> None:
    _ok(cli_run)
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    test_csv, _ = _test_split_csv(cli_run)
    texts = list(pd.read_csv(test_csv)["text"])
    ours = _invoke("predict", str(cli_run.best_dir), str(test_csv), "--db", str(cli_run.db))
    ours_df = pd.read_csv(io.StringIO(ours))
    best = str(cli_run.best_dir)
    max_length = json.loads((cli_run.best_dir / "automl.json").read_text())["max_length"]
    model = AutoModelForSequenceClassification.from_pretrained(best).eval()
    tokenizer = AutoTokenizer.from_pretrained(best)
    with torch.inference_mode():
        enc = tokenizer(
            texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt"
        )
        logits = model(**enc).logits
    theirs = [model.config.id2label[int(i)] for i in logits.argmax(dim=-1)]
    assert theirs == list(ours_df["prediction"])
    proba = torch.softmax(logits, dim=-1).numpy()
    assert np.allclose(proba, ours_df[[f"proba_{c}" for c in CLASSES]].to_numpy(), atol=1e-5)


# -- the Python API -----------------------------------------------------------------------


@pytest.fixture
def api_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("AUTOML_CACHE", str(tmp_path / "cache"))
    (tmp_path / "space.yaml").write_text(SPACE_YAML)
    return {
        "db": str(tmp_path / "store.db"),
        "out": str(tmp_path / "runs"),
        "space": str(tmp_path / "space.yaml"),
    }


def test_api_classification_fit_predict(tiny_backbone: Path, api_dirs: dict[str, str]) -> None:
    model = AutoML(budget="35s", max_trials=1, backbones=(str(tiny_backbone),), **api_dirs)
    t0 = time.time()
    assert model.fit(topic_frame(per_class=30), label="label") is model
    assert time.time() - t0 <= 35 + 10
    assert Path(model.best_model_dir_).is_dir()
    assert Path(model.best_model_dir_).parent.parent == Path(api_dirs["out"])
    assert model.classes_ == list(CLASSES)
    texts = ["we talked about the football match", "a new pizza recipe", "my laptop code"]
    predicted = model.predict(texts)
    assert len(predicted) == 3 and set(predicted) <= set(CLASSES)
    proba = model.predict_proba(texts)
    assert proba.shape == (3, len(CLASSES)) and np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert [CLASSES[i] for i in proba.argmax(axis=1)] == predicted
    assert "macro_f1" in model.test_metrics_ and "macro_f1" in model.val_metrics_
    board = model.leaderboard_
    assert isinstance(board, pd.DataFrame) and "reference" in set(board["track"])
    with Store(api_dirs["db"]) as store:
        assert store.get_study(model.study_id_)["status"] == "succeeded"


def test_api_regression_fit_predict(tiny_backbone: Path, api_dirs: dict[str, str]) -> None:
    model = AutoML(budget=40, max_trials=2, backbones=(str(tiny_backbone),), **api_dirs)
    model.fit(regression_frame(), label="y")
    assert model.result_.data.task == "regression"
    for metrics in (model.test_metrics_, model.val_metrics_):
        assert {"rmse", "mae", "r2", "loss"} <= set(metrics)
        assert metrics["rmse"] >= 0 and metrics["mae"] >= 0
    predicted = model.predict(["we talked about good good things", "the new day"])
    assert len(predicted) == 2 and all(isinstance(v, float) for v in predicted)
    board = model.leaderboard_
    assert isinstance(board, pd.DataFrame)
    assert list(board["track"]).count("reference") == 1
    assert {"trial_id", "status", "metrics", "params"} <= set(board.columns)
    reference = board[board["track"] == "reference"].iloc[0]
    assert {"rmse", "mae", "r2"} <= set(reference["metrics"])
    meta = json.loads((Path(model.best_model_dir_) / "automl.json").read_text())
    assert meta["task"] == "regression" and meta["label_names"] == []
    with Store(api_dirs["db"]) as store:
        study = store.get_study(model.study_id_)
    assert study["metric"] == "rmse" and study["mode"] == "min"


def test_api_predict_before_fit_is_a_clear_error() -> None:
    with pytest.raises(ModelError, match=r"not fitted yet.*\.fit\("):
        AutoML().predict(["text"])


def test_the_reference_reads_characters_when_no_text_has_a_word() -> None:
    """Texts of single characters leave TF-IDF's word vocabulary empty: the reference falls
    back to character n-grams instead of failing (it runs beside the trials)."""
    from automl.data import check, split_checked
    from automl.reference import fit_reference

    df = pd.DataFrame(
        {"text": [c + d for c in "abcdefgh" for d in " !?."], "label": ["x", "y"] * 16}
    )
    ref = fit_reference(split_checked(check(df, "label", None, None), seed=0), 0)
    assert ref.params.get("analyzer") == "char_wb 1-3"
    assert 0.0 <= ref.val_metrics["macro_f1"] <= 1.0


def test_in_a_short_budget_the_starting_trial_may_train_up_to_the_most_epochs() -> None:
    """Under SHORT_BUDGET_S each trial slot fits one trial: the default fine-tuning space's
    starting configuration trains up to the space's most epochs (early stopping and the
    deadline still end it) instead of finishing with time nobody can use. Longer budgets,
    other tracks, images and a user's own space keep their starting point."""
    from automl import pipeline
    from automl.config import Budget
    from automl.errors import ConfigError
    from automl.pipeline import RunOptions
    from automl.spaces import load_space

    space = load_space(None, track="finetune")
    epochs = space.get("epochs")
    assert epochs is not None and epochs.high is not None and epochs.init < epochs.high
    short = pipeline._fill_short_budget(space, pipeline.SHORT_BUDGET_S - 1)
    assert short.init_config() == {**space.init_config(), "epochs": int(epochs.high)}
    assert pipeline._fill_short_budget(space, pipeline.SHORT_BUDGET_S) is space
    with pytest.raises(ConfigError, match="outside its range"):
        space.with_init("epochs", int(epochs.high) + 1)

    data = prepare(topic_frame(), label="label")

    def starting_epochs(budget_s: float, space_file: str | None = None) -> object:
        options = RunOptions(
            data="x.csv", budget=Budget(budget_s), track="finetune", space=space_file
        )
        user = load_space(space_file) if space_file else None
        return pipeline._route(options, data, user)[1].init_config().get("epochs")

    assert starting_epochs(60) == epochs.high
    assert starting_epochs(600) == epochs.init
    assert starting_epochs(60, space_file=str(pipeline.default_space_path())) == epochs.init
    images = dataclasses.replace(data, modality="image")  # measured on text only
    options = RunOptions(data="x", budget=Budget(60), track="finetune")
    image_space = load_space(None, track="finetune", modality="image")
    routed = pipeline._route(options, images, None)[1]
    assert routed.init_config()["epochs"] == image_space.init_config()["epochs"]
