"""`automl bench`: scores and ranks on hand-made numbers, suite validation, the committed
splits, the wall budget (a child killed at it), resumable runs and the report files.
Fake systems only (in this process, or tiny child processes): nothing trains here but the
`slow` end-to-end smoke suite."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import automl_command

from automl.bench import scoring
from automl.bench.report import CSV_NAME, MD_NAME, PNG_NAME, write_report
from automl.bench.runner import plan, run_suite
from automl.bench.splits import (
    SPLITS_FILE,
    BenchData,
    Sample,
    bench_data,
    checksum,
    holdout_ids,
    load_splits,
    read_rows,
    train_ids,
)
from automl.bench.suites import list_suites, load_suite
from automl.bench.systems import SYSTEMS, FitTask, Fitted, SystemSpec, run_system
from automl.cli import main
from automl.datasets import bundled_path
from automl.errors import ConfigError, DataError, StoreError
from automl.store import Store

ALL_SYSTEMS = {
    "tfidf-lr",
    "glove-lr",
    "embed-lr",
    "setfit-default",
    "finetune-default",
    "flaml",
    "automl",
}


# -- scores and ranks -------------------------------------------------------------------


def test_metrics_by_hand() -> None:
    m = scoring.classification_metrics(["a", "a", "b", "b"], ["a", "b", "b", "b"])
    assert m["accuracy"] == pytest.approx(0.75)
    # F1(a) = 2·1 / (2·1 + 0 + 1) = 2/3; F1(b) = 2·2 / (2·2 + 1 + 0) = 4/5
    assert m["macro_f1"] == pytest.approx((2 / 3 + 4 / 5) / 2)
    # a predicted class absent from the truth only costs precision of nothing: 0 for "a"
    m = scoring.classification_metrics(["a", "a"], ["z", "a"])
    assert m["macro_f1"] == pytest.approx(2 / 3)
    assert scoring.majority_label(["b", "a", "b", "a"]) == "a"  # tie: the first name
    assert scoring.majority_label(["b", "a", "b"]) == "b"


def test_scaled_score_arithmetic() -> None:
    assert scoring.scaled_score(0.8, 0.5, 0.8) == pytest.approx(1.0)  # the best baseline
    assert scoring.scaled_score(0.5, 0.5, 0.8) == pytest.approx(0.0)  # the majority class
    assert scoring.scaled_score(0.65, 0.5, 0.8) == pytest.approx(0.5)
    assert scoring.scaled_score(0.9, 0.5, 0.8) == pytest.approx(4 / 3)  # beats every baseline
    assert scoring.scaled_score(0.4, 0.5, 0.8) == pytest.approx(-1 / 3)  # worse than majority
    assert scoring.scaled_score(0.7, 0.5, 0.5) is None  # no baseline beat the majority
    assert scoring.scaled_score(0.7, 0.5, 0.4) is None
    assert scoring.scaled_score(None, 0.5, 0.8) is None


def test_rank_ties_share_the_mean_rank() -> None:
    assert scoring.rank({"a": 0.9, "b": 0.8, "c": 0.8, "d": 0.1}) == {
        "a": 1.0,
        "b": 2.5,
        "c": 2.5,
        "d": 4.0,
    }
    assert scoring.rank({"x": 0.5, "y": 0.5, "z": 0.5}) == {"x": 2.0, "y": 2.0, "z": 2.0}
    assert scoring.rank({"x": 3.0, "y": 1.0}, higher_is_better=False) == {"x": 2.0, "y": 1.0}


def _row(dataset: str, seed: int, system: str, f1: float | None, status: str = "ok") -> dict:
    return {
        "dataset": dataset,
        "budget_s": 60.0,
        "seed": seed,
        "system": system,
        "status": status,
        "metrics": None if f1 is None else {"macro_f1": f1, "accuracy": f1},
        "wall_s": 10.0,
        "peak_mem_mb": 100.0,
        "info": {},
    }


# Two groups. d1/seed 0: majority 0.2, tfidf 0.6, embed 0.6, automl 0.8, flaml failed,
# glove unavailable. d2/seed 0: majority 0.5, tfidf 0.9, embed 0.7, automl 0.4 (worse than
# the majority class), flaml over budget.
HAND_MADE = [
    _row("d1", 0, "majority", 0.2),
    _row("d1", 0, "tfidf-lr", 0.6),
    _row("d1", 0, "embed-lr", 0.6),
    _row("d1", 0, "automl", 0.8),
    _row("d1", 0, "flaml", None, "failed"),
    _row("d1", 0, "glove-lr", None, "unavailable"),
    _row("d2", 0, "majority", 0.5),
    _row("d2", 0, "tfidf-lr", 0.9),
    _row("d2", 0, "embed-lr", 0.7),
    _row("d2", 0, "automl", 0.4),
    _row("d2", 0, "flaml", None, "over budget"),
]


def test_score_rows_scaled_scores_imputation_and_ranks() -> None:
    scored = {(r["dataset"], r["system"]): r for r in scoring.score_rows(HAND_MADE, "macro_f1")}
    assert ("d1", "glove-lr") not in scored  # unavailable: not compared
    d1 = {s: scored[("d1", s)] for s in ("majority", "tfidf-lr", "embed-lr", "automl", "flaml")}
    assert d1["tfidf-lr"]["scaled"] == pytest.approx(1.0)  # best baseline (tied with embed)
    assert d1["embed-lr"]["scaled"] == pytest.approx(1.0)
    assert d1["automl"]["scaled"] == pytest.approx((0.8 - 0.2) / (0.6 - 0.2))  # 1.5
    assert d1["majority"]["scaled"] == pytest.approx(0.0)
    # failed: counted as the majority class, flagged
    assert d1["flaml"]["score"] == pytest.approx(0.2) and d1["flaml"]["imputed"]
    assert d1["flaml"]["scaled"] == pytest.approx(0.0)
    # ranks: automl 1, tfidf and embed tied for 2-3 -> 2.5, flaml 4; majority unranked
    assert [d1[s]["rank"] for s in ("automl", "tfidf-lr", "embed-lr", "flaml")] == [
        1.0,
        2.5,
        2.5,
        4.0,
    ]
    assert d1["majority"]["rank"] is None
    d2 = {s: scored[("d2", s)] for s in ("tfidf-lr", "embed-lr", "automl", "flaml")}
    assert d2["embed-lr"]["scaled"] == pytest.approx(0.5)  # (0.7 - 0.5) / (0.9 - 0.5)
    assert d2["automl"]["scaled"] == pytest.approx(-0.25)  # worse than the majority class
    assert d2["flaml"]["scaled"] == pytest.approx(0.0)  # over budget -> majority
    assert [d2[s]["rank"] for s in ("tfidf-lr", "embed-lr", "flaml", "automl")] == [1, 2, 3, 4]

    ranks = {r["system"]: r for r in scoring.average_ranks(scored.values())}
    assert ranks["automl"]["avg_rank"] == pytest.approx((1 + 4) / 2)
    assert ranks["tfidf-lr"]["avg_rank"] == pytest.approx((2.5 + 1) / 2)
    assert ranks["embed-lr"]["avg_rank"] == pytest.approx((2.5 + 2) / 2)
    assert ranks["flaml"]["avg_rank"] == pytest.approx((4 + 3) / 2)
    assert ranks["automl"]["mean_scaled"] == pytest.approx((1.5 - 0.25) / 2)
    assert ranks["automl"]["groups"] == 2 and "majority" not in ranks
    assert [r["system"] for r in scoring.average_ranks(scored.values())][0] == "tfidf-lr"


def test_baselines_choose_what_scales_to_one() -> None:
    scored = scoring.score_rows(HAND_MADE, "macro_f1", baselines=["embed-lr"])
    d2 = {r["system"]: r for r in scored if r["dataset"] == "d2"}
    assert d2["embed-lr"]["scaled"] == pytest.approx(1.0)
    assert d2["tfidf-lr"]["scaled"] == pytest.approx(2.0)  # (0.9 - 0.5) / (0.7 - 0.5)


def test_summarise_means_over_seeds() -> None:
    rows = [
        _row("d", 0, "majority", 0.5),
        _row("d", 0, "tfidf-lr", 0.7),
        _row("d", 1, "majority", 0.5),
        _row("d", 1, "tfidf-lr", 0.9),
    ]
    summary = {r["system"]: r for r in scoring.summarise(scoring.score_rows(rows, "macro_f1"))}
    assert summary["tfidf-lr"]["score"] == pytest.approx(0.8)
    assert summary["tfidf-lr"]["score_std"] == pytest.approx(0.1414, abs=1e-4)
    assert summary["tfidf-lr"]["seeds"] == 2 and summary["tfidf-lr"]["statuses"] == {"ok": 2}


# -- suites -----------------------------------------------------------------------------


def _suite_file(tmp_path: Path, text: str, name: str = "mine") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(text))
    return path


GOOD = """
    description: tiny
    budgets: [2s, 1s]
    seeds: [0, 1]
    systems: [fake-fast, fake-other]
    datasets:
      - {name: fortunes8, max_train: 40, max_test: 30}
"""


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        (GOOD + "    colour: red\n", "colour", "unknown key"),
        (GOOD.replace("[2s, 1s]", "[2s, 5x]"), "budgets[1]", "'5x' is not a budget"),
        (GOOD.replace("[0, 1]", "[0, -1]"), "seeds[1]", "integer >= 0"),
        (GOOD.replace("[0, 1]", "[0, 0]"), "seeds", "twice"),
        (GOOD.replace("fake-other", "nonesuch"), "systems[1]", "unknown system 'nonesuch'"),
        (GOOD.replace("fake-other", "majority"), "systems[1]", "added to every cell"),
        (GOOD.replace("name: fortunes8", "name: imdb"), "datasets[0]", "unknown dataset"),
        (GOOD.replace("max_train: 40", "max_train: 0"), "datasets[0]", "max_train"),
        (GOOD.replace("max_train: 40", "maxtrain: 40"), "datasets[0]", "unknown key 'maxtrain'"),
        (GOOD.replace("budgets: [2s, 1s]", ""), "budgets", "missing"),
        (GOOD + "    metric: f1\n", "metric", "not one of macro_f1, accuracy"),
        (GOOD + "    baselines: [tfidf-lr]\n", "baselines", "not among the suite's systems"),
        (GOOD + "    shots: [0]\n", "shots[0]", ">= 1"),
    ],
)
def test_suite_errors_name_the_file_and_key(
    fakes: None, tmp_path: Path, text: str, key: str, words: str
) -> None:
    path = _suite_file(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_suite(path)
    assert str(path) in str(err.value) and f"key {key!r}" in str(err.value)
    assert words in str(err.value)


def test_suite_file_shapes(fakes: None, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_suite(_suite_file(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="cannot read the suite"):
        load_suite(_suite_file(tmp_path, "budgets: [1s\n"))
    with pytest.raises(ConfigError, match="no suite 'nope'.*smoke"):
        load_suite("nope")
    suite = load_suite(_suite_file(tmp_path, GOOD))
    assert suite.budgets == (1.0, 2.0) and suite.baselines == ("fake-fast", "fake-other")
    assert [v[0] for v in suite.variants()] == ["fortunes8"]
    assert len(plan(suite)) == 2 * 2 * 1 * 3  # seeds × budgets × dataset × (majority + 2)
    assert suite.with_budget(300).budgets == (300.0,)


def test_committed_suites_load_and_name_every_system() -> None:
    assert {"smoke", "text", "fewshot"} <= set(list_suites())
    smoke, text, fewshot = (load_suite(n) for n in ("smoke", "text", "fewshot"))
    assert set(smoke.systems) == ALL_SYSTEMS and len(plan(smoke)) == 8
    assert max(smoke.budgets) <= 60 and smoke.seeds == (0,)
    assert {e.name for e in text.datasets} == {"spamassassin", "mr", "conll2010", "fortunes8"}
    assert fewshot.shots == (8, 16, 32, 64)
    assert [v[0] for v in fewshot.variants()][:2] == ["spamassassin-8shot", "spamassassin-16shot"]


# -- the committed splits ---------------------------------------------------------------


def test_committed_fortunes8_split_is_reproduced_by_its_rule() -> None:
    entry = load_splits()["datasets"]["fortunes8"]
    rows = read_rows(bundled_path("fortunes8"))
    assert holdout_ids(rows) == entry["test"] and len(entry["test"]) == 1000
    for key, digest in entry["samples"].items():
        if key.startswith("test-"):
            continue
        if key == "full":
            sample, seed = Sample(), 0
        elif "-shot/" in key:
            sample, seed = Sample(shots=int(key.split("-")[0])), int(key.rsplit("seed", 1)[1])
        else:
            n, seed = key[3:].split("/seed")
            sample, seed = Sample(max_train=int(n)), int(seed)
        assert checksum(train_ids(rows, entry["test"], sample, seed)) == digest, key


def test_bench_data_split_properties() -> None:
    full = bench_data("fortunes8", Sample(), 0)
    assert not set(full.train_texts) & set(full.test_texts)
    assert len(full.test_texts) == 1000 and len(full.train_texts) == 3151 - 1000
    eight = bench_data("fortunes8", Sample(shots=8), 0)
    sixteen = bench_data("fortunes8", Sample(shots=16), 0)
    assert set(eight.train_texts) < set(sixteen.train_texts)  # nested samples
    assert eight.name == "fortunes8" and len(eight.train_texts) == 8 * 8
    small = bench_data("fortunes8", Sample(max_train=400, max_test=300), 0, "tiny")
    assert small.name == "tiny" and len(small.train_texts) == 400 and len(small.test_texts) == 300
    assert set(small.test_texts) < set(full.test_texts)
    # the same cell gives the same data, in the same order
    assert bench_data("fortunes8", Sample(max_train=400), 0).train_texts == small.train_texts


def test_changed_csv_or_sample_fails_clearly() -> None:
    splits = json.loads(SPLITS_FILE.read_text())
    splits["datasets"]["fortunes8"]["sha256"] = "0" * 64
    with pytest.raises(DataError, match=r"has sha256 .* was built from 000000000000…"):
        bench_data("fortunes8", Sample(), 0, splits=splits)
    splits = json.loads(SPLITS_FILE.read_text())
    splits["datasets"]["fortunes8"]["samples"]["8-shot/seed0"] = "f" * 64
    with pytest.raises(DataError, match="8-shot/seed0 differs from the one pinned"):
        bench_data("fortunes8", Sample(shots=8), 0, splits=splits)
    with pytest.raises(DataError, match="no committed split"):
        bench_data("fortunes8", Sample(), 0, splits={"datasets": {}})


# -- systems under the budget -----------------------------------------------------------

TINY = BenchData(
    name="tiny",
    dataset="tiny",
    train_texts=("good film", "great film", "bad film", "awful film"),
    train_labels=("pos", "pos", "neg", "neg"),
    test_texts=("good", "bad", "great"),
    test_labels=("pos", "neg", "pos"),
)

FAKE_MODULE = """
import time
from automl.bench.systems.base import BudgetExhausted, Fitted, SystemUnavailable

def quick(task):
    first = sorted(set(task.labels))[0]
    return Fitted(lambda texts: [first] * len(texts), {"seen": len(task.texts)})

def sleepy(task):
    time.sleep(60)

def anytime(task):
    while task.left() > 0.3:
        time.sleep(0.05)
    return Fitted(lambda texts: ["pos"] * len(texts), {"stopped_at_budget": True})

def missing(task):
    raise SystemUnavailable("not installed: pip install something==1.0")

def hopeless(task):
    raise BudgetExhausted("nothing fits")

def broken(task):
    raise RuntimeError("boom")
"""


@pytest.fixture
def child_fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Systems that run in real child processes, from a module written here."""
    (tmp_path / "fake_bench_systems.py").write_text(FAKE_MODULE)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    for name in ("quick", "sleepy", "anytime", "missing", "hopeless", "broken"):
        spec = SystemSpec(f"child-{name}", f"fake_bench_systems:{name}", "a test double")
        monkeypatch.setitem(SYSTEMS, spec.name, spec)
    yield tmp_path


def test_child_system_predicts_and_reports_memory(child_fakes: Path) -> None:
    result = run_system(SYSTEMS["child-quick"], TINY, 20.0, 0, child_fakes / "cell")
    assert result.status == "ok", result.error
    assert result.predictions == ("neg", "neg", "neg")
    assert result.info == {"seen": 4} and 0 < result.wall_s < 20
    assert result.peak_mem_mb is not None and result.peak_mem_mb > 5
    assert (child_fakes / "cell" / "result.json").is_file()


def test_child_past_its_budget_is_stopped_and_reported_over_budget(child_fakes: Path) -> None:
    t0 = time.time()
    result = run_system(SYSTEMS["child-sleepy"], TINY, 1.5, 0, child_fakes / "cell")
    took = time.time() - t0
    assert result.status == "over budget" and result.predictions is None
    assert "stopped at the budget" in (result.error or "")
    assert 1.5 <= result.wall_s <= 2.5 and took < 5  # killed at 1.5 s + 0.5 s grace
    assert result.info.get("killed") is True


def test_child_that_stops_itself_keeps_its_best_so_far(child_fakes: Path) -> None:
    result = run_system(SYSTEMS["child-anytime"], TINY, 1.5, 0, child_fakes / "cell")
    assert result.status == "ok" and result.info["stopped_at_budget"] is True
    assert result.wall_s <= 1.5 + 0.5


def test_killing_the_runner_kills_the_system(child_fakes: Path) -> None:
    """kill -9 of a bench run leaves no system training in the background."""
    import psutil

    code = f"""
from pathlib import Path
from automl.bench.splits import BenchData
from automl.bench.systems import SystemSpec, run_system
data = BenchData("t", "t", ("a b", "c d"), ("x", "y"), ("a",), ("x",))
spec = SystemSpec("s", "fake_bench_systems:sleepy", "a test double")
run_system(spec, data, 60.0, 0, Path({str(child_fakes / "cell")!r}))
"""
    runner = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.time() + 30
        while not psutil.Process(runner.pid).children() and time.time() < deadline:
            time.sleep(0.1)
        (system,) = psutil.Process(runner.pid).children()
        runner.kill()
        runner.wait()
        deadline = time.time() + 10  # its watchdog notices the runner is gone within ~1 s
        while _alive(system) and time.time() < deadline:
            time.sleep(0.1)
    finally:
        runner.kill()
    assert not _alive(system)


def _alive(process: Any) -> bool:
    import psutil

    try:
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


@pytest.mark.parametrize(
    ("name", "status", "words"),
    [
        ("missing", "unavailable", "pip install something==1.0"),
        ("hopeless", "over budget", "nothing fits"),
        ("broken", "failed", "RuntimeError: boom"),
    ],
)
def test_child_errors_become_statuses(
    child_fakes: Path, name: str, status: str, words: str
) -> None:
    result = run_system(SYSTEMS[f"child-{name}"], TINY, 20.0, 0, child_fakes / "cell")
    assert result.status == status and words in (result.error or "")


def test_in_process_system_past_its_budget_is_over_budget(tmp_path: Path) -> None:
    def slow(task: FitTask) -> Fitted:
        time.sleep(task.budget_s + 0.6)
        return Fitted(lambda texts: ["pos"] * len(texts))

    spec = SystemSpec("slow", slow, "a test double", isolated=False)
    result = run_system(spec, TINY, 0.2, 0, tmp_path / "cell")
    assert result.status == "over budget" and result.predictions is None
    assert "budget" in (result.error or "")


# -- resumable runs ---------------------------------------------------------------------

CALLS: list[tuple[str, float, int]] = []


def _fake(name: str, interrupt_at: int | None = None) -> SystemSpec:
    def fit(task: FitTask) -> Fitted:
        CALLS.append((name, task.budget_s, task.seed))
        if interrupt_at is not None and len(CALLS) == interrupt_at:
            raise KeyboardInterrupt  # as Ctrl+C (or a kill) in the middle of a cell
        top = scoring.majority_label(task.labels)
        best = "computers" if name == "fake-fast" else top
        return Fitted(lambda texts: [best] * len(texts))

    return SystemSpec(name, fit, "a test double", isolated=False)


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    CALLS.clear()
    monkeypatch.setitem(SYSTEMS, "fake-fast", _fake("fake-fast"))
    monkeypatch.setitem(SYSTEMS, "fake-other", _fake("fake-other"))
    yield
    CALLS.clear()


def test_a_killed_run_resumes_and_skips_finished_cells(
    fakes: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite = load_suite(_suite_file(tmp_path, GOOD))
    db, work = tmp_path / "bench.db", tmp_path / "work"
    monkeypatch.setitem(SYSTEMS, "fake-fast", _fake("fake-fast", interrupt_at=3))
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, db, work_dir=work)
    assert len(CALLS) == 3  # fake-fast, fake-other (1 s), then fake-fast (2 s) is killed
    with Store(db) as store:
        (run,) = store.list_bench_runs()
        assert run["status"] == "running" and run["done"] == 4 and run["cells"] == 12
    monkeypatch.setitem(SYSTEMS, "fake-fast", _fake("fake-fast"))
    result = run_suite(suite, db, work_dir=work)
    assert result.run_id == run["id"] and result.ran == 8 and result.done == 12
    # every fake cell ran once, and the interrupted one (never recorded) again: 8 + 1
    assert len(CALLS) == 9 and len(set(CALLS)) == 8
    assert CALLS.count(("fake-fast", 2.0, 0)) == 2
    with Store(db) as store:
        rows = store.bench_results(run["id"])
        assert len(rows) == 12 and store.get_bench_run(run["id"])["status"] == "finished"
    assert {r["system"] for r in rows} == {"majority", "fake-fast", "fake-other"}
    assert all(r["status"] == "ok" and r["metrics"]["macro_f1"] >= 0 for r in rows)
    # started again with the run's id: nothing to do, no call
    again = run_suite(suite, db, work_dir=work, run_id=run["id"])
    assert again.ran == 0 and len(CALLS) == 9
    assert (work / run["id"] / "report" / MD_NAME).is_file()
    # without an id, a finished run is not resumed: a new measurement starts
    fresh = run_suite(suite, db, work_dir=work, max_cells=2)
    assert fresh.run_id != run["id"] and fresh.ran == 2


def test_resuming_with_other_settings_is_refused(fakes: None, tmp_path: Path) -> None:
    suite = load_suite(_suite_file(tmp_path, GOOD))
    db = tmp_path / "bench.db"
    first = run_suite(suite, db, work_dir=tmp_path / "w", max_cells=1)
    with pytest.raises(ConfigError, match="started with other settings"):
        run_suite(suite.with_budget(5), db, work_dir=tmp_path / "w", run_id=first.run_id)
    # the same settings resume it without an id; another budget starts a new run
    assert run_suite(suite, db, work_dir=tmp_path / "w", max_cells=1).run_id == first.run_id
    other = run_suite(suite.with_budget(5), db, budget="5s", work_dir=tmp_path / "w", max_cells=1)
    assert other.run_id != first.run_id


# -- store and report -------------------------------------------------------------------


def _stored_run(db: Path) -> str:
    config = {
        "metric": "macro_f1",
        "systems": ["tfidf-lr", "embed-lr", "flaml", "automl", "glove-lr"],
        "baselines": ["tfidf-lr", "embed-lr", "flaml", "glove-lr"],
        "seeds": [0],
        "description": "hand-made",
    }
    with Store(db) as store:
        run_id = store.create_bench_run("hand", config, cells=len(HAND_MADE) + 1)
        for r in HAND_MADE:
            keep = ("dataset", "budget_s", "seed", "system", "status", "metrics", "wall_s")
            store.add_bench_result(run_id, **{k: r[k] for k in keep}, peak_mem_mb=r["peak_mem_mb"])
        store.add_bench_result(  # a 5-minute budget for d1, so the plot has a line
            run_id, dataset="d1", budget_s=300, seed=0, system="tfidf-lr", status="ok",
            metrics={"macro_f1": 0.7, "accuracy": 0.7}, wall_s=3.0,
            info={"stopped_at_budget": True},
        )  # fmt: skip
    return run_id


def test_store_bench_rows(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    run_id = _stored_run(db)
    with Store(db) as store:
        run = store.get_bench_run(run_id)
        assert run["done"] == len(HAND_MADE) + 1 and run["config"]["metric"] == "macro_f1"
        assert run_id.startswith("bench-hand-") and run["status"] == "running"
        store.add_bench_result(  # the same cell again replaces its row
            run_id, dataset="d1", budget_s=60, seed=0, system="flaml", status="ok",
            metrics={"macro_f1": 0.5}, wall_s=59.0,
        )  # fmt: skip
        rows = [r for r in store.bench_results(run_id) if r["system"] == "flaml"]
        assert [(r["dataset"], r["status"]) for r in rows] == [("d2", "over budget"), ("d1", "ok")]
        with pytest.raises(StoreError, match="benchmark result status 'done'"):
            store.add_bench_result(
                run_id, dataset="d", budget_s=1, seed=0, system="x", status="done"
            )
        with pytest.raises(StoreError, match="no benchmark run 'nope'.*automl bench list"):
            store.get_bench_run("nope")
        store.finish_bench_run(run_id, "finished", "out/dir")
        assert store.list_bench_runs(status="finished")[0]["report_dir"] == "out/dir"
        assert store.list_bench_runs(suite="other") == []


def test_report_files_have_a_row_per_system_per_dataset(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    run_id = _stored_run(db)
    with Store(db) as store:
        paths = write_report(store.get_bench_run(run_id), store.bench_results(run_id), tmp_path)
    assert [p.name for p in paths] == [CSV_NAME, MD_NAME, PNG_NAME]
    assert (tmp_path / PNG_NAME).read_bytes()[:4] == b"\x89PNG"
    with open(tmp_path / CSV_NAME, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == len(HAND_MADE) - 1 + 1  # glove unavailable: left out; + the 5m row
    md = (tmp_path / MD_NAME).read_text()
    for dataset in ("d1", "d2"):
        for system in ("majority", "tfidf-lr", "embed-lr", "flaml", "automl"):
            assert f"| {dataset} | {system} |" in md, (dataset, system)
    assert "| d1 | automl | 0.800 | 1.50 | 1.0 |" in md
    assert "| d2 | flaml | 0.500 * | 0.00 | 3.0 |" in md and "over budget" in md
    assert "## Budget 1m" in md and "## Budget 5m" in md
    assert "stopped at the budget" in md
    assert "automl is best or tied on 1 of 2 datasets: d1 (+0.200 vs embed-lr)" in md
    assert "behind on d2 (-0.500 vs tfidf-lr)" in md


def test_cli_report_list_and_dry_run(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    run_id = _stored_run(db)
    runner = CliRunner()
    out = runner.invoke(main, ["bench", "report", "--db", str(db), "--out", str(tmp_path / "r")])
    assert out.exit_code == 0, out.output
    assert run_id in out.output and (tmp_path / "r" / MD_NAME).is_file()
    out = runner.invoke(main, ["bench", "list", "--db", str(db)])
    assert out.exit_code == 0 and "smoke" in out.output and run_id in out.output
    out = runner.invoke(main, ["bench", "run", "--suite", "smoke", "--dry-run", "--db", str(db)])
    assert out.exit_code == 0 and out.output.count("fortunes8") == 8
    out = runner.invoke(main, ["bench", "run", "--suite", "smoke", "--budget", "5x"])
    assert out.exit_code == 2 and "budget '5x' is not understood" in out.output
    empty = tmp_path / "empty.db"
    out = runner.invoke(main, ["bench", "report", "--db", str(empty)])
    assert out.exit_code == 2 and "no benchmark run yet" in out.output


# -- end to end -------------------------------------------------------------------------


@pytest.mark.slow
def test_smoke_suite_end_to_end_under_five_minutes(tmp_path: Path) -> None:
    """The real command on the real smoke suite (needs the prepared backbones)."""
    cmd = [*automl_command(), "bench", "run", "--suite", "smoke", "--db", str(tmp_path / "b.db")]
    cmd += ["--work", str(tmp_path / "work"), "--out", str(tmp_path / "report")]
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    took = time.time() - t0
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert took < 300, f"the smoke suite took {took:.0f}s"
    md = (tmp_path / "report" / MD_NAME).read_text()
    for system in ["majority", *sorted(ALL_SYSTEMS)]:
        assert f"| fortunes8 | {system} |" in md, system
    with open(tmp_path / "report" / CSV_NAME, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8
    statuses = {r["system"]: r["status"] for r in rows}
    print(json.dumps(statuses), f"{took:.0f}s", file=sys.stderr)
    assert statuses["tfidf-lr"] == "ok" and statuses["automl"] == "ok"


def test_an_isolated_system_runs_from_a_relative_workdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`automl bench run` passes workdirs under a relative --out (default ./runs); the
    child runs inside its workdir, so the task file's path must not be relative."""
    monkeypatch.chdir(tmp_path)
    result = run_system(SYSTEMS["tfidf-lr"], TINY, 60.0, 0, Path("runs/cell"))
    assert result.status == "ok", result.error
    assert len(result.predictions) == len(TINY.test_texts)


# -- images -----------------------------------------------------------------------------


def test_image_suite_and_digits_cells_use_the_published_split(tmp_path: Path) -> None:
    """Image datasets keep their published train/test split (index.csv, pinned by
    sha256 in splits.json); pixels-lr learns digits; text systems refuse images."""
    image = load_suite("image")
    assert set(image.systems) == {"pixels-lr", "automl"} and image.budgets == (600.0,)
    data = bench_data("digits", Sample(), 0)
    assert data.modality == "image"
    assert (len(data.train_texts), len(data.test_texts)) == (1437, 360)
    assert not set(data.train_texts) & set(data.test_texts)
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in data.test_texts[:20])
    small = bench_data("digits", Sample(max_train=200, max_test=100), 1)
    assert (len(small.train_texts), len(small.test_texts)) == (200, 100)
    assert set(small.train_texts) <= set(data.train_texts)
    pixels = SystemSpec("pixels-lr-here", SYSTEMS["pixels-lr"].target, "", isolated=False)
    result = run_system(pixels, data, 120.0, 0, tmp_path / "pixels")
    assert result.status == "ok", result.error
    right = sum(p == y for p, y in zip(result.predictions, data.test_labels, strict=True))
    assert right / len(data.test_labels) > 0.9
    tfidf = SystemSpec("tfidf-here", SYSTEMS["tfidf-lr"].target, "", isolated=False)
    refused = run_system(tfidf, data, 60.0, 0, tmp_path / "tfidf")
    assert refused.status == "unavailable" and "takes text data" in (refused.error or "")
