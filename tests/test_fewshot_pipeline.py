"""The few-shot track end to end: `automl run` on 8 labelled examples per class picks it
by itself, says why, cross-validates every trial (mean ± std on the leaderboard), refits
the winner on all data and exports a SetFit folder that `automl predict` loads.

One real run (a local Ray) with the tiny random BERT, shared by the tests here.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from helpers import FILLER, TOPIC_WORDS, automl_command

from automl import cli
from automl.modelio import read_meta
from automl.routing import FEWSHOT_CROSSOVER
from automl.store import Store

BUDGET_S = 45
TRIALS = 4
PER_CLASS = 8
_WORDS, _FILLER = TOPIC_WORDS, FILLER


def fewshot_frame(per_class: int = PER_CLASS, seed: int = 0) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for name, words in _WORDS.items():
        for _ in range(per_class):
            text = rng.sample(_FILLER, 3) + rng.sample(words, 2)
            rng.shuffle(text)
            rows.append((" ".join(text), name))
    return pd.DataFrame(rows, columns=["text", "label"])


@dataclass
class Run:
    proc: subprocess.CompletedProcess
    wall_s: float
    root: Path
    data: Path
    db: Path

    @property
    def study(self) -> dict:
        with Store(self.db) as store:
            (study,) = store.list_studies()
        return study


@pytest.fixture(scope="module")
def fewshot_run(tmp_path_factory: pytest.TempPathFactory, tiny_backbone: Path) -> Run:
    root = tmp_path_factory.mktemp("fewshot_run")
    data = root / "eight_shot.csv"
    fewshot_frame().to_csv(data, index=False)
    env = {**os.environ, "AUTOML_CACHE": str(root / "cache"), "COLUMNS": "250"}
    args = [
        *automl_command(),
        "run",
        str(data),
        "--label",
        "label",
        "--backbone",
        str(tiny_backbone),
        "--budget",
        f"{BUDGET_S}s",
        "--trials",
        str(TRIALS),
        "--db",
        str(root / "store.db"),
        "--out",
        str(root / "runs"),
    ]
    t0 = time.time()
    proc = subprocess.run(
        args, capture_output=True, text=True, env=env, cwd=root, timeout=BUDGET_S + 90
    )
    return Run(proc, time.time() - t0, root, data, root / "store.db")


def _ok(run: Run) -> None:
    assert run.proc.returncode == 0, f"stdout:\n{run.proc.stdout}\nstderr:\n{run.proc.stderr}"


def test_eight_shots_pick_the_fewshot_track_unprompted_and_say_why(fewshot_run: Run) -> None:
    _ok(fewshot_run)
    reason = (
        f"fewshot: {PER_CLASS} examples per class (median), below the crossover of "
        f"{FEWSHOT_CROSSOVER}"
    )
    assert reason in fewshot_run.proc.stderr  # the progress lines
    assert reason in fewshot_run.proc.stdout  # the leaderboard's title
    study = fewshot_run.study
    assert study["track"] == "fewshot" and study["status"] == "succeeded"
    assert study["options"]["route"].startswith(reason)
    assert fewshot_run.wall_s <= BUDGET_S + 20


def test_leaderboard_shows_cv_mean_and_std_per_trial(fewshot_run: Run) -> None:
    _ok(fewshot_run)
    assert "±" in fewshot_run.proc.stdout and "folds" in fewshot_run.proc.stdout
    out = CliRunner().invoke(
        cli.main, ["leaderboard", "--db", str(fewshot_run.db), "--format", "json"]
    )
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    trials = [r for r in rows if r["track"] == "fewshot"]
    assert trials, rows
    scored = [r for r in trials if r["metrics"]]
    assert scored and all("macro_f1_std" in r["metrics"] for r in scored)
    assert all(r["params"]["method"] in ("logreg", "svm", "setfit") for r in trials)
    # every fold is one report: folds never exceed 4 splits x 2 repeats
    assert all(1 <= (r["epochs_done"] or 0) <= 8 for r in scored)
    (reference,) = [r for r in rows if r["track"] == "reference"]
    assert "macro_f1_std" in reference["metrics"]  # cross-validated on the same folds


def test_winner_is_refitted_and_exported_as_a_setfit_folder(fewshot_run: Run) -> None:
    _ok(fewshot_run)
    best = Path(fewshot_run.study["best_model_dir"])
    meta = read_meta(best)
    assert meta.format == "setfit" and meta.label_names == sorted(_WORDS)
    assert (best / "head.safetensors").is_file() and (best / "config_setfit.json").is_file()
    card = (best / "README.md").read_text()
    assert "cross-validation" in card and "No held-out test split" in card
    assert "SetFitModel.from_pretrained" in card


def test_predict_loads_the_fewshot_folder(fewshot_run: Run, tmp_path: Path) -> None:
    _ok(fewshot_run)
    best = fewshot_run.study["best_model_dir"]
    out = tmp_path / "pred.csv"
    result = CliRunner().invoke(
        cli.main, ["predict", best, str(fewshot_run.data), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    pred = pd.read_csv(out)
    assert len(pred) == PER_CLASS * len(_WORDS)
    assert set(pred["prediction"]) <= set(_WORDS)
    assert {f"proba_{c}" for c in _WORDS} <= set(pred.columns)


def test_the_cv_winner_is_the_earliest_trial_within_one_standard_error_of_the_best() -> None:
    from automl.config import EpochResult, TrialRecord
    from automl.pipeline import _pick_best_cv

    def trial(number: int, mean: float, std: float, folds: int = 8) -> TrialRecord:
        epochs = tuple(
            EpochResult(i, {"macro_f1": mean, "macro_f1_std": std}, 0.0, 0.01 * i, True)
            for i in range(1, folds + 1)
        )
        return TrialRecord(
            f"t{number}", number, "complete", {}, epochs, dict(epochs[-1].metrics), 1.0
        )

    # best 0.92 +- 0.04 over 4 folds x 2 repeats: one standard error is 0.04 / sqrt(4)
    records = [trial(1, 0.905, 0.05), trial(2, 0.80, 0.02), trial(7, 0.92, 0.04)]
    assert _pick_best_cv(records, "macro_f1", "max", 8, 60.0).number == 1
    records = [trial(1, 0.89, 0.05), trial(2, 0.80, 0.02), trial(7, 0.92, 0.04)]
    assert _pick_best_cv(records, "macro_f1", "max", 8, 60.0).number == 7  # beyond 1 SE
    # ... unless the texts are few: on 64 texts a score of 0.92 has a standard error of
    # sqrt(0.92 * 0.08 / 64) = 0.034, so 0.89 is within it
    assert _pick_best_cv(records, "macro_f1", "max", 8, 60.0, n_texts=64).number == 1
    assert _pick_best_cv(records, "macro_f1", "max", 8, 60.0, n_texts=1000).number == 7
    # a lucky trial with fewer than half the folds is not considered
    records = [trial(1, 0.80, 0.05), trial(3, 0.99, 0.0, folds=2)]
    assert _pick_best_cv(records, "macro_f1", "max", 8, 60.0).number == 1


def test_setfit_is_searched_only_in_budgets_where_it_can_finish_a_fold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from automl import pipeline
    from automl.spaces import load_space

    space = load_space(None, track="fewshot")
    monkeypatch.setattr(pipeline, "_has_gpu", lambda: False)
    short = pipeline._fewshot_methods(space, 60.0, 32)
    assert "setfit" not in short.get("method").values
    assert set(short.get("method").values) == {"logreg", "svm", "logreg_tfidf"}
    assert short.init_config()["method"] == space.init_config()["method"]
    long = pipeline._fewshot_methods(space, pipeline.SETFIT_MIN_BUDGET_S, 32)
    assert "setfit" in long.get("method").values
    monkeypatch.setattr(pipeline, "_has_gpu", lambda: True)
    assert "setfit" in pipeline._fewshot_methods(space, 60.0, 32).get("method").values


def test_tfidf_averaging_is_searched_from_sixteen_examples_per_class() -> None:
    from automl import pipeline
    from automl.spaces import load_space

    space = load_space(None, track="fewshot")
    few = pipeline._fewshot_methods(space, 600.0, pipeline.TFIDF_MIN_PER_CLASS - 1)
    assert "logreg_tfidf" not in few.get("method").values
    enough = pipeline._fewshot_methods(space, 600.0, pipeline.TFIDF_MIN_PER_CLASS)
    assert "logreg_tfidf" in enough.get("method").values


def test_a_head_only_winner_is_refitted_even_with_little_time_left() -> None:
    """Its embeddings are cached: the refit fits a linear head, whatever the trial took."""
    from automl.config import EpochResult, TrialRecord
    from automl.pipeline import _pick_best_cv

    def trial(number: int, method: str, mean: float, seconds: float) -> TrialRecord:
        epochs = tuple(
            EpochResult(i, {"macro_f1": mean, "macro_f1_std": 0.0}, 0.0, seconds, True)
            for i in range(1, 9)
        )
        params = {"method": method}
        return TrialRecord(f"t{number}", number, "complete", params, epochs, epochs[-1].metrics)

    records = [trial(1, "logreg", 0.9, 40.0), trial(2, "setfit", 0.95, 40.0)]
    # the setfit winner would need 40 / 8 * 1.5 = 7.5 s to refit: only 2 s are left
    assert _pick_best_cv(records, "macro_f1", "max", 8, 2.0).number == 1
    assert _pick_best_cv(records, "macro_f1", "max", 8, 60.0).number == 2
