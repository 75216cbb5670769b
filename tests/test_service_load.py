"""Load: `automl app --workers 2` running while 30 small jobs are submitted from three
threads and the Jobs page is rendered over and over: every job finishes, no "database
is locked" anywhere, every job's leaderboard is complete. Slow (3-5 minutes on 2 cores):
`pytest -m slow tests/test_service_load.py`."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import automl_command
from streamlit.testing.v1 import AppTest
from test_service import _write_csv

from automl.config import Budget
from automl.jobs import JobOptions, submit
from automl.store import Store

APP = str(Path(__file__).resolve().parent.parent / "app.py")
JOBS = 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_two_workers_and_the_app_finish_30_jobs_without_a_locked_database(
    tmp_path: Path, tiny_backbone: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, out, port = str(tmp_path / "svc.db"), str(tmp_path / "runs"), _free_port()
    Store(db).close()
    log_path = tmp_path / "app.log"
    app = subprocess.Popen(
        [*automl_command(), "app", "--db", db, "--out", out, "--workers", "2"]
        + ["--port", str(port)],
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    errors: list[str] = []
    try:
        deadline = time.time() + 60
        while True:  # the app answers
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health") as r:
                    if r.read().decode() == "ok":
                        break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)

        ids: list[str] = []
        lock = threading.Lock()

        def submitter(k: int) -> None:
            for i in range(JOBS // 3):
                data = _write_csv(tmp_path / f"d{k}-{i}.csv", 12, seed=k * 100 + i)
                options = JobOptions(
                    label="label", backbones=(str(tiny_backbone),), track="finetune", max_trials=1
                )
                try:
                    job_id, _ = submit(data, options, Budget.parse("60s"), db)
                except Exception as exc:  # noqa: BLE001 - collected and asserted below
                    errors.append(f"submit: {exc}")
                    continue
                with lock:
                    ids.append(job_id)
                time.sleep(0.3)

        stop = threading.Event()
        pages = {"n": 0}

        def reader() -> None:  # what the Jobs page does every 2 s, as fast as it can
            monkeypatch.setenv("AUTOML_DB", db)
            while not stop.is_set():
                at = AppTest.from_file(APP, default_timeout=60)
                at.session_state["page"] = "Jobs"
                at.run()
                if at.exception:
                    errors.append(f"jobs page: {at.exception[0].message}")
                pages["n"] += 1

        threads = [threading.Thread(target=submitter, args=(k,)) for k in range(3)]
        page_thread = threading.Thread(target=reader)
        for t in [*threads, page_thread]:
            t.start()
        for t in threads:
            t.join()
        assert len(ids) == JOBS, errors

        def unfinished() -> list[str]:
            with Store(db) as store:
                return [
                    j["id"]
                    for j in store.list_jobs(limit=100)
                    if j["status"] in ("queued", "running")
                ]

        end = time.time() + 600
        while unfinished() and time.time() < end and app.poll() is None:
            time.sleep(2)
        stop.set()
        page_thread.join(timeout=120)
        assert not unfinished(), f"jobs left: {unfinished()}"
        with Store(db) as store:
            jobs = {j["id"]: j for j in store.list_jobs(limit=100)}
            assert {jobs[i]["status"] for i in ids} == {"succeeded"}, [
                (i, jobs[i]["status"], jobs[i]["error"]) for i in ids
            ]
            assert len({jobs[i]["worker"] for i in ids}) == 2  # both workers took jobs
            for i in ids:
                board = store.leaderboard(jobs[i]["study_id"])
                tracks = [r["track"] for r in board]
                assert "reference" in tracks and "finetune" in tracks, board
                assert all(r["status"] != "running" for r in board)
                assert store.get_study(jobs[i]["study_id"])["status"] == "succeeded"
        assert pages["n"] >= 3
    finally:
        os.killpg(app.pid, signal.SIGTERM)
        try:
            app.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(app.pid, signal.SIGKILL)
    log = log_path.read_text(errors="replace")
    assert "database is locked" not in log and "locked by another process" not in log
    assert not errors, errors
