"""Tests for automl.store: schema, migrations, upserts, leaderboard, concurrency."""

from __future__ import annotations

import math
import multiprocessing
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from automl.errors import StoreError
from automl.store import DEFAULT_DB, SCHEMA_VERSION, Store, new_study_id


def _study(store: Store, **over: Any) -> str:
    kwargs: dict[str, Any] = {
        "dataset": "data/fortunes8.csv",
        "task": "classification",
        "track": "finetune",
        "metric": "macro_f1",
        "mode": "max",
        "budget_s": 300.0,
        "seed": 0,
        "data_summary": {"rows": {"train": 80, "val": 10, "test": 10}, "labels": ["a", "b"]},
        "cleaning": {"lines": ["100 rows read, 100 kept"], "counts": {"duplicates": 0}},
        "options": {"max_trials": 4},
    }
    kwargs.update(over)
    return store.create_study(**kwargs)


@pytest.fixture
def store() -> Iterator[Store]:
    with Store.memory() as s:
        yield s


def test_default_path_and_study_id_format() -> None:
    assert DEFAULT_DB == "automl.db"
    sid = new_study_id("some/dir/Fortunes 8.csv")
    assert sid.startswith("fortunes-8-")
    assert len(sid.split("-")) == 5
    assert new_study_id("???").startswith("study-")
    assert new_study_id("x") != new_study_id("x")


def test_create_finish_get_study(store: Store) -> None:
    sid = _study(store)
    assert sid.startswith("fortunes8-")
    s = store.get_study(sid)
    assert s["status"] == "running"
    assert s["created_at"].endswith("+00:00")
    assert s["data_summary"]["rows"]["train"] == 80
    assert s["cleaning"]["lines"] == ["100 rows read, 100 kept"]
    assert s["options"] == {"max_trials": 4}
    assert s["finished_at"] is None

    store.finish_study(
        sid,
        status="succeeded",
        best_trial_id=f"{sid}:0",
        best_model_dir="out/best",
        test_metrics={"macro_f1": 0.9},
        wall_s=12.5,
    )
    s = store.get_study(sid)
    assert s["status"] == "succeeded"
    assert s["finished_at"] is not None
    assert s["best_trial_id"] == f"{sid}:0"
    assert s["best_model_dir"] == "out/best"
    assert s["test_metrics"] == {"macro_f1": 0.9}
    assert s["wall_s"] == 12.5


def test_explicit_study_id_and_duplicates(store: Store) -> None:
    assert _study(store, study_id="mine") == "mine"
    with pytest.raises(StoreError, match="already exists"):
        _study(store, study_id="mine")


def test_bad_status_is_rejected(store: Store) -> None:
    sid = _study(store)
    with pytest.raises(StoreError, match="status 'done'"):
        store.finish_study(sid, status="done")
    with pytest.raises(StoreError, match="status 'ok'"):
        store.upsert_trial(sid, number=0, track="finetune", status="ok", params={})


def test_latest_and_list_studies(store: Store) -> None:
    assert store.latest_study_id() is None
    first = _study(store, study_id="first")
    second = _study(store, study_id="second")
    assert store.latest_study_id() == second
    assert [s["id"] for s in store.list_studies()] == [second, first]
    assert len(store.list_studies(limit=1)) == 1


def test_unknown_study_message(store: Store) -> None:
    with pytest.raises(StoreError, match="no studies yet"):
        store.get_study("nope")
    sid = _study(store)
    with pytest.raises(StoreError) as info:
        store.get_study("nope")
    message = str(info.value)
    assert "'nope'" in message and sid in message
    assert "automl leaderboard" in message
    with pytest.raises(StoreError, match="nope"):
        store.finish_study("nope", status="failed")
    with pytest.raises(StoreError, match="nope"):
        store.leaderboard("nope")


def test_upsert_trial_updates_instead_of_duplicating(store: Store) -> None:
    sid = _study(store)
    tid = store.upsert_trial(sid, number=0, track="finetune", status="running", params={"lr": 1})
    assert tid == f"{sid}:0"
    started = store.trials(sid)[0]["started_at"]
    assert started is not None and store.trials(sid)[0]["finished_at"] is None

    again = store.upsert_trial(
        sid,
        number=0,
        track="finetune",
        status="complete",
        params={"lr": 1},
        metrics={"macro_f1": 0.8},
        epochs_done=3,
        seconds=4.5,
        checkpoint_dir="ckpt/0",
    )
    assert again == tid
    (trial,) = store.trials(sid)
    assert trial["status"] == "complete"
    assert trial["metrics"] == {"macro_f1": 0.8}
    assert trial["params"] == {"lr": 1}
    assert trial["epochs_done"] == 3 and trial["seconds"] == 4.5
    assert trial["checkpoint_dir"] == "ckpt/0"
    assert trial["started_at"] == started
    assert trial["finished_at"] is not None


def test_epochs_upsert(store: Store) -> None:
    sid = _study(store)
    t0 = store.upsert_trial(sid, number=0, track="finetune", status="running", params={})
    t1 = store.upsert_trial(sid, number=1, track="finetune", status="running", params={})
    store.add_epoch(t0, 1, {"macro_f1": 0.5}, train_loss=0.9, seconds=1.0)
    store.add_epoch(t0, 2, {"macro_f1": 0.6}, train_loss=0.7, seconds=2.0)
    store.add_epoch(t0, 2, {"macro_f1": 0.65}, train_loss=0.6, seconds=2.1)  # re-report
    store.add_epoch(t1, 1, {"macro_f1": 0.4}, train_loss=1.0, seconds=1.0)
    rows = store.epochs(t0)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[1]["metrics"] == {"macro_f1": 0.65} and rows[1]["train_loss"] == 0.6
    both = store.epochs(study_id=sid)
    assert [(r["trial_id"], r["epoch"]) for r in both] == [(t0, 1), (t0, 2), (t1, 1)]
    with pytest.raises(TypeError):
        store.epochs()


def test_nan_and_inf_round_trip_as_none(store: Store) -> None:
    sid = _study(store, data_summary={"ratio": float("nan")})
    tid = store.upsert_trial(
        sid,
        number=0,
        track="finetune",
        status="complete",
        params={"wd": float("inf")},
        metrics={"macro_f1": float("nan"), "loss": 0.3, "nested": [float("-inf")]},
        seconds=float("nan"),
    )
    store.add_epoch(tid, 1, {"loss": float("nan")}, train_loss=float("nan"), seconds=1.0)
    (trial,) = store.trials(sid)
    assert trial["metrics"] == {"macro_f1": None, "loss": 0.3, "nested": [None]}
    assert trial["params"] == {"wd": None}
    assert trial["seconds"] is None
    (epoch,) = store.epochs(tid)
    assert epoch["metrics"] == {"loss": None} and epoch["train_loss"] is None
    assert store.get_study(sid)["data_summary"] == {"ratio": None}
    board = store.leaderboard(sid)
    assert board[0]["rank"] is None


def _trial(store: Store, sid: str, n: int, status: str, value: float | None, **kw: Any) -> None:
    metrics = {} if value is None else {"score": value}
    store.upsert_trial(sid, number=n, status=status, params={"n": n}, metrics=metrics, **kw)


@pytest.mark.parametrize(
    ("mode", "order"),
    [("max", [2, 4, 0, 1, 3]), ("min", [0, 4, 2, 1, 3])],
)
def test_leaderboard_order(store: Store, mode: str, order: list[int]) -> None:
    sid = _study(store, metric="score", mode=mode)
    _trial(store, sid, 0, "complete", 0.2, track="finetune")
    _trial(store, sid, 1, "failed", 0.99, track="finetune", error="CUDA OOM")  # failed: last
    _trial(store, sid, 2, "pruned", 0.9, track="finetune")
    _trial(store, sid, 3, "complete", None, track="finetune")  # no metric: last
    _trial(store, sid, 4, "complete", 0.5, track="reference")
    board = store.leaderboard(sid)
    assert [r["number"] for r in board] == order
    assert [r["rank"] for r in board] == [1, 2, 3, None, None]
    assert [r["is_best"] for r in board] == [True, False, False, False, False]
    failed = next(r for r in board if r["number"] == 1)
    assert failed["error"] == "CUDA OOM" and failed["status"] == "failed"
    reference = next(r for r in board if r["number"] == 4)
    assert reference["track"] == "reference" and reference["rank"] == 2
    expected = {
        "rank",
        "trial_id",
        "number",
        "status",
        "track",
        "params",
        "metrics",
        "value",
        "epochs_done",
        "seconds",
        "error",
        "is_best",
    }
    assert set(board[0]) == expected


def test_leaderboard_best_trial_and_override(store: Store) -> None:
    sid = _study(store, metric="score", mode="max")
    _trial(store, sid, 0, "complete", 0.2, track="finetune")
    _trial(store, sid, 1, "complete", 0.8, track="finetune")
    store.finish_study(sid, status="succeeded", best_trial_id=f"{sid}:0")
    board = store.leaderboard(sid)
    assert [r["number"] for r in board] == [1, 0]
    assert [r["is_best"] for r in board] == [False, True]  # the study's choice wins
    assert [r["number"] for r in store.leaderboard(sid, mode="min")] == [0, 1]
    assert store.leaderboard(sid, metric="missing")[0]["rank"] is None
    assert store.leaderboard(_study(store)) == []


def test_delete_study_removes_everything(store: Store, tmp_path: Path) -> None:
    keep = _study(store, study_id="keep")
    sid = _study(store, study_id="gone")
    for s in (keep, sid):
        tid = store.upsert_trial(s, number=0, track="finetune", status="running", params={})
        store.add_epoch(tid, 1, {"a": 1.0}, train_loss=0.1, seconds=1.0)
        store.add_artifact(s, "model", tmp_path, trial_id=tid)
    store.delete_study(sid)
    store.delete_study("never-existed")  # no-op
    with pytest.raises(StoreError):
        store.get_study(sid)
    assert store.trials(sid) == [] and store.epochs(study_id=sid) == []
    assert store.artifacts(sid) == []
    for table in ("studies", "trials", "epochs", "artifacts"):
        assert store.db[table].count == 1
    assert len(store.epochs(study_id=keep)) == 1


def test_artifacts_sizes(store: Store, tmp_path: Path) -> None:
    sid = _study(store)
    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.bin").write_bytes(b"x" * 10)
    (folder / "sub" / "b.bin").write_bytes(b"y" * 5)
    card = tmp_path / "README.md"
    card.write_text("hello")
    assert isinstance(store.add_artifact(sid, "model", folder), int)
    store.add_artifact(sid, "model_card", card, sha256="abc")
    store.add_artifact(sid, "predictions", tmp_path / "missing.csv")
    arts = store.artifacts(sid)
    assert [a["kind"] for a in arts] == ["model", "model_card", "predictions"]
    assert [a["bytes"] for a in arts] == [15, 5, None]
    assert arts[1]["sha256"] == "abc" and arts[0]["trial_id"] is None
    assert arts[0]["path"] == str(folder) and arts[0]["created_at"]


def test_file_db_wal_migrations_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "automl.db"
    with Store(path) as store:
        assert store.path == str(path)
        assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert {"studies", "trials", "epochs", "artifacts"} <= set(store.db.table_names())
        sid = _study(store)
        schema = store.db.schema
    with Store(path) as again:  # re-opening is a no-op
        assert again.db.schema == schema
        assert again.get_study(sid)["id"] == sid
        indexes = {tuple(i.columns) for t in ("trials", "epochs") for i in again.db[t].indexes}
        assert ("study_id",) in indexes and ("trial_id",) in indexes


def test_migrations_are_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "automl.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 0")  # pretend the last migration never finished
    conn.commit()
    conn.close()
    with Store(path) as store:
        assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_newer_schema_raises(tmp_path: Path) -> None:
    path = tmp_path / "automl.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="upgrade automl"):
        Store(path)


def test_not_a_database_raises(tmp_path: Path) -> None:
    path = tmp_path / "automl.db"
    path.write_bytes(b"this is not sqlite, just some bytes" * 100)
    with pytest.raises(StoreError, match="cannot open"):
        Store(path)


def _writer(path: str, worker: int, n: int) -> None:
    with Store(path) as store:
        for i in range(n):
            store.upsert_trial(
                "shared",
                number=worker * n + i,
                track="finetune",
                status="complete",
                params={"worker": worker},
                metrics={"score": i / n},
            )


def test_two_processes_write_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "automl.db")
    with Store(path) as store:
        _study(store, study_id="shared")
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 500)) for w in (0, 1)]
    for p in procs:
        p.start()
    with Store(path) as reader:  # a reader alongside the two writers
        while any(p.is_alive() for p in procs):
            reader.leaderboard("shared")
        for p in procs:
            p.join(timeout=120)
        assert [p.exitcode for p in procs] == [0, 0]
        trials = reader.trials("shared")
    assert len(trials) == 1000
    assert len({t["id"] for t in trials}) == 1000
    assert not any(math.isnan(t["metrics"]["score"]) for t in trials)
