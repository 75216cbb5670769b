"""The service: jobs in the store, `automl submit/jobs/cancel/worker`, cancel, and a worker
killed with -9 in the middle of a job (the next worker resumes it within its budget)."""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from helpers import FILLER, TOPIC_WORDS, automl_command, new_study

from automl.cli import main
from automl.config import Budget
from automl.errors import ConfigError, DataError, StoreError
from automl.jobs import JobOptions, cancel, data_dir, progress, submit
from automl.store import Store

# --- the job queue in the store ---------------------------------------------------------


def _queue(store: Store, n: int) -> list[str]:
    return [
        store.submit_job(data_path=f"/d/{i}.csv", source_name=f"{i}.csv", options={}, budget_s=60)
        for i in range(n)
    ]


def test_claims_are_atomic_across_connections(tmp_path: Path) -> None:
    """Four workers with their own connections claim 24 jobs at once: each job goes to
    exactly one of them."""
    db = tmp_path / "q.db"
    with Store(db) as store:
        ids = _queue(store, 24)
    claimed: dict[str, list[str]] = {}
    lock = threading.Lock()

    def worker(name: str) -> None:
        with Store(db) as store:
            while (job := store.claim_job(name, lease_s=60)) is not None:
                with lock:
                    claimed.setdefault(job["id"], []).append(name)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(ids)
    assert all(len(names) == 1 for names in claimed.values()), claimed
    with Store(db) as store:
        assert {j["status"] for j in store.list_jobs()} == {"running"}
        assert store.claim_job("late", lease_s=60) is None


def test_an_expired_lease_is_claimed_again_and_the_old_worker_loses_the_job(
    tmp_path: Path,
) -> None:
    with Store(tmp_path / "q.db") as store:
        (job_id,) = _queue(store, 1)
        first = store.claim_job("w1", lease_s=30)
        assert first is not None and first["attempts"] == 1
        assert store.claim_job("w2", lease_s=30) is None  # w1's lease holds
        store.renew_lease(job_id, "w1", lease_s=30, spent_s=12.5)
        later = time.time() + 31
        again = store.claim_job("w2", lease_s=30, now=later)
        assert again is not None and again["worker"] == "w2" and again["attempts"] == 2
        assert again["spent_s"] == 12.5  # the budget used so far travels with the job
        with pytest.raises(StoreError, match="no longer held by worker 'w1'"):
            store.renew_lease(job_id, "w1", lease_s=30)
        assert store.finish_job(job_id, "w1", "succeeded") is False
        assert store.finish_job(job_id, "w2", "succeeded", spent_s=40.0) is True
        done = store.get_job(job_id)
        assert done["status"] == "succeeded" and done["spent_s"] == 40.0
        assert store.claim_job("w3", lease_s=30, now=later + 100) is None  # finished stays


def test_cancel_a_queued_a_running_and_a_finished_job(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    with Store(db) as store:
        queued, running, finished = _queue(store, 3)
        # claims take the oldest first
        assert store.claim_job("w", 60)["id"] == queued  # type: ignore[index]
        store.finish_job(queued, "w", "succeeded")
        finished, queued = queued, finished
        assert store.claim_job("w", 60)["id"] == running  # type: ignore[index]
    assert cancel(queued, db)["status"] == "cancelled"
    row = cancel(running, db)
    assert row["status"] == "running" and row["cancel_requested"] == 1
    with Store(db) as store:
        assert (
            store.renew_lease(running, "w", 60)["cancel_requested"] == 1
        )  # the heartbeat sees it
    with pytest.raises(StoreError, match="has already succeeded"):
        cancel(finished, db)
    with pytest.raises(StoreError, match="no job 'job-nope'.*see `automl jobs`"):
        cancel("job-nope", db)


def test_progress_of_a_running_job_and_of_one_whose_worker_died(tmp_path: Path) -> None:
    with Store(tmp_path / "q.db") as store:
        (job_id,) = _queue(store, 1)
        store.claim_job("w", lease_s=30)
        store.renew_lease(job_id, "w", lease_s=30, spent_s=20.0)
        job = store.get_job(job_id)
        alive = progress(job, store, now=time.time() + 5)
        assert 24.0 < alive.used_s < 26.0 and 34.0 < alive.left_s < 36.0
        dead = progress(job, store, now=time.time() + 100)  # lease long gone
        assert dead.used_s == 20.0  # a dead worker's job spends nothing until resumed


# --- submit --------------------------------------------------------------------------


def _write_csv(path: Path, per_class: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        for i in range(per_class * len(TOPIC_WORDS)):
            label = list(TOPIC_WORDS)[i % len(TOPIC_WORDS)]
            words = rng.sample(FILLER, 3) + rng.sample(TOPIC_WORDS[label], 2)
            rng.shuffle(words)
            writer.writerow([f"{' '.join(words)} {i}", label])
    return path


def test_submit_validates_copies_the_file_and_queues(tmp_path: Path) -> None:
    data = _write_csv(tmp_path / "mine.csv", 20)
    db = tmp_path / "svc" / "s.db"
    job_id, checked = submit(data, JobOptions(label="label"), Budget.parse("2m"), db)
    assert checked.report.rows_out == 60
    with Store(db) as store:
        job = store.get_job(job_id)
    copied = Path(job["data_path"])
    assert copied.parent == data_dir(db) and copied.name == f"{job_id}.csv"
    assert copied.read_bytes() == data.read_bytes()
    assert job["status"] == "queued" and job["budget_s"] == 120.0
    assert job["source_name"] == "mine.csv" and job["options"]["label"] == "label"
    assert JobOptions.from_json(job["options"]) == JobOptions(label="label")


@pytest.mark.parametrize(
    ("options", "budget", "error", "message"),
    [
        (JobOptions(label="nope"), "2m", DataError, "nope"),
        (JobOptions(label="label"), "10s", ConfigError, "too small for a job"),
        (JobOptions(label="label", track="other"), "2m", ConfigError, "track 'other'"),
    ],
)
def test_submit_rejects_bad_input_and_queues_nothing(
    tmp_path: Path, options: JobOptions, budget: str, error: type, message: str
) -> None:
    data = _write_csv(tmp_path / "mine.csv", 20)
    db = tmp_path / "s.db"
    with pytest.raises(error, match=message):
        submit(data, options, Budget.parse(budget), db)
    with Store(db) as store:
        assert store.list_jobs() == []
    assert not data_dir(db).exists() or not any(data_dir(db).iterdir())


def test_cli_submit_jobs_and_cancel(tmp_path: Path) -> None:
    data = _write_csv(tmp_path / "mine.csv", 20)
    db = str(tmp_path / "s.db")
    runner = CliRunner()
    bad = runner.invoke(main, ["submit", str(data), "--label", "nope", "--db", db])
    assert bad.exit_code == 2 and "error:" in bad.output and "Traceback" not in bad.output
    ok = runner.invoke(
        main, ["submit", str(data), "--label", "label", "--budget", "1m", "--db", db]
    )
    assert ok.exit_code == 0, ok.output
    job_id = ok.stdout.strip().splitlines()[-1]
    assert job_id.startswith("job-")
    listed = runner.invoke(main, ["jobs", "--format", "json", "--db", db])
    rows = json.loads(listed.stdout)
    assert [(r["id"], r["status"], r["budget_s"]) for r in rows] == [(job_id, "queued", 60.0)]
    table = runner.invoke(main, ["jobs", "--db", db])
    assert job_id in table.stdout and "queued" in table.stdout
    cancelled = runner.invoke(main, ["cancel", job_id, "--db", db])
    assert cancelled.exit_code == 0 and f"{job_id} cancelled" in cancelled.stdout
    again = runner.invoke(main, ["cancel", job_id, "--db", db])
    assert again.exit_code == 2 and "already cancelled" in again.output


# --- workers running real jobs (tiny backbone) --------------------------------------


@pytest.fixture
def service(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A store, an output folder and the processes started by a test (killed after)."""
    procs: list[subprocess.Popen[bytes]] = []
    yield {"db": str(tmp_path / "svc.db"), "out": str(tmp_path / "runs"), "procs": procs}
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def _start_worker(service: dict[str, Any], *args: str, log: str = "worker.log") -> Any:
    out = Path(service["out"]).parent / log
    proc = subprocess.Popen(
        [*automl_command(), "worker", "--db", service["db"], "--out", service["out"], *args],
        stdout=out.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own group: kill -9 takes Ray's children along
    )
    service["procs"].append(proc)
    return proc


def _job(db: str, job_id: str) -> dict[str, Any]:
    with Store(db) as store:
        return store.get_job(job_id)


def _wait(what: str, check: Any, timeout: float) -> Any:
    end = time.time() + timeout
    while time.time() < end:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def _finished_trials(db: str, study_id: str | None) -> list[dict[str, Any]]:
    if not study_id:
        return []
    with Store(db) as store:
        return [
            t
            for t in store.trials(study_id)
            if t["track"] != "reference" and t["status"] in ("complete", "pruned", "stopped")
        ]


def _submit_tiny(
    tmp_path: Path, service: dict[str, Any], backbone: Path, budget: str, **kw: Any
) -> str:
    data = _write_csv(tmp_path / "topics.csv", 30)
    options = JobOptions(label="label", backbones=(str(backbone),), track="finetune", **kw)
    job_id, _ = submit(data, options, Budget.parse(budget), service["db"])
    return job_id


def test_a_worker_killed_with_9_is_resumed_by_the_next_worker(
    tmp_path: Path, service: dict[str, Any], tiny_backbone: Path
) -> None:
    budget_s = 50.0
    job_id = _submit_tiny(tmp_path, service, tiny_backbone, f"{budget_s:g}s")
    first = _start_worker(service, "--once", "--lease", "4", log="w1.log")
    _wait(
        "two finished trials",
        lambda: len(_finished_trials(service["db"], _job(service["db"], job_id)["study_id"])) >= 2,
        timeout=60,
    )
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    before = _job(service["db"], job_id)
    study_id = before["study_id"]
    kept = {t["id"]: t for t in _finished_trials(service["db"], study_id)}
    assert before["status"] == "running" and before["spent_s"] < budget_s

    second = _start_worker(service, "--max-jobs", "1", "--lease", "4", log="w2.log")
    assert second.wait(timeout=budget_s + 60) == 0
    job = _job(service["db"], job_id)
    log = (tmp_path / "w2.log").read_text(errors="replace")
    assert job["status"] == "succeeded", (job, log[-2000:])
    assert job["attempts"] == 2 and job["study_id"] == study_id
    assert f"resuming study {study_id}" in log
    with Store(service["db"]) as store:
        trials = [t for t in store.trials(study_id) if t["track"] != "reference"]
        study = store.get_study(study_id)
    # no finished trial lost or changed, none duplicated
    by_id = {t["id"]: t for t in trials}
    for tid, t in kept.items():
        assert by_id[tid]["status"] == t["status"] and by_id[tid]["metrics"] == t["metrics"]
    numbers = [t["number"] for t in trials]
    assert len(numbers) == len(set(numbers))
    assert any(t["number"] > max(int(k.rsplit(":", 1)[1]) for k in kept) for t in trials)
    # the trial running at the kill is a failed row with the reason
    interrupted = [t for t in trials if t["error"] and "interrupted" in t["error"]]
    assert all(t["status"] == "failed" for t in interrupted)
    # budget: the attempts together stay within the original budget (+ one trial)
    assert job["spent_s"] <= budget_s + 1.0
    # Trials run side by side, one per CPU (two here): their seconds add up per slot.
    slots = max(1, os.cpu_count() or 1)
    spent_in_trials = sum(t["seconds"] or 0.0 for t in trials)
    longest = max(t["seconds"] or 0.0 for t in trials)
    assert spent_in_trials / slots <= budget_s + longest
    assert study["status"] == "succeeded" and Path(study["best_model_dir"]).is_dir()
    with sqlite3.connect(service["db"]) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_cancel_from_the_cli_stops_a_running_job_within_10s_and_keeps_its_model(
    tmp_path: Path, service: dict[str, Any], tiny_backbone: Path
) -> None:
    job_id = _submit_tiny(tmp_path, service, tiny_backbone, "2m")
    worker = _start_worker(service, "--once")
    _wait(
        "a finished trial",
        lambda: _finished_trials(service["db"], _job(service["db"], job_id)["study_id"]),
        timeout=60,
    )
    asked = time.time()
    done = subprocess.run(
        [*automl_command(), "cancel", job_id, "--db", service["db"]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "cancel requested" in done.stdout
    _wait("the cancel", lambda: _job(service["db"], job_id)["status"] != "running", timeout=30)
    took = time.time() - asked
    job = _job(service["db"], job_id)
    assert job["status"] == "cancelled" and took <= 10.0, (job, took)
    assert worker.wait(timeout=30) == 0
    with Store(service["db"]) as store:
        study = store.get_study(job["study_id"])
    assert study["status"] == "cancelled"
    assert Path(study["best_model_dir"]).is_dir()  # the best model so far is kept
    assert _finished_trials(service["db"], job["study_id"])


def test_a_resumed_study_with_no_time_left_exports_the_best_of_its_kept_trials(
    tmp_path: Path, tiny_backbone: Path
) -> None:
    """The worker died near the end of the budget: the next attempt does not search (it
    could not train anything in what is left) but still delivers the best model."""
    from automl.pipeline import RunOptions, run

    data = _write_csv(tmp_path / "topics.csv", 30)
    common = {
        "data": str(data),
        "label": "label",
        "backbones": (str(tiny_backbone),),
        "db": str(tmp_path / "s.db"),
        "out": str(tmp_path / "runs"),
        "track": "finetune",
    }
    first = run(RunOptions(budget=Budget(25.0), max_trials=2, **common))
    study_id = first.study_id
    with Store(common["db"]) as store:  # as if its worker had died mid-trial ...
        store.upsert_trial(study_id, number=9, track="finetune", status="running", params={"x": 1})
        before = {t["id"]: t for t in store.trials(study_id)}
    # ... before the end of its run removed the trials' checkpoints
    best_row = before[f"{study_id}:{first.best_trial.number}"]
    shutil.copytree(first.best_model_dir, best_row["checkpoint_dir"])
    second = run(RunOptions(budget=Budget(4.0), resume_study=study_id, **common))
    assert second.study_id == study_id and second.resumed_trials >= 1
    assert second.best_trial.number == first.best_trial.number
    assert second.test_metrics == pytest.approx(first.test_metrics)
    with Store(common["db"]) as store:
        after = {t["id"]: t for t in store.trials(study_id)}
        study = store.get_study(study_id)
    assert set(after) == set(before)  # no new trial
    assert after[f"{study_id}:9"]["status"] == "failed"
    assert "interrupted" in after[f"{study_id}:9"]["error"]
    assert study["status"] == "succeeded" and Path(study["best_model_dir"]).is_dir()


def test_progress_counts_trials_and_the_best_without_the_reference_or_failed_ones(
    tmp_path: Path,
) -> None:
    with Store(tmp_path / "q.db") as store:
        (job_id,) = _queue(store, 1)
        sid = new_study(store, study_id="s-1")
        store.set_job_study(job_id, sid)
        for number, (track, status, f1) in enumerate(
            [
                ("reference", "complete", 0.95),
                ("finetune", "complete", 0.8),
                ("finetune", "pruned", 0.6),
                ("finetune", "failed", 0.99),
                ("finetune", "running", None),
            ]
        ):
            metrics = {"macro_f1": f1} if f1 is not None else None
            store.upsert_trial(
                sid, number=number, track=track, status=status, params={}, metrics=metrics
            )
        p = progress(store.get_job(job_id), store)
    assert (p.trials_done, p.trials_running, p.best, p.metric) == (3, 1, 0.8, "macro_f1")
