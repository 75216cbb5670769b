"""A service worker: claims queued jobs from the store and runs them, one at a time.

Several workers (on one machine or several sharing the store's file system) never run
the same job: a claim is one write transaction. A worker holds its job by a lease that a
heartbeat thread renews every `heartbeat_s`; the heartbeat also records the budget spent
and notices a cancel request. When a worker dies (kill -9, a lost machine), its lease
runs out and the next worker to look takes the job up again: the study goes on from its
finished trials with the budget that is left (`automl.pipeline.RunOptions.resume_study`).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from automl.config import Budget
from automl.errors import AutoMLError, StoreError
from automl.jobs import JobOptions
from automl.store import DEFAULT_DB, Store

logger = logging.getLogger(__name__)

__all__ = ["Worker", "WorkerSettings"]

# A resumed job needs at least this much budget left to search again; with less it still
# exports the best model of its earlier attempt (the pipeline's budget check decides).
MIN_RESUME_S = 20.0


@dataclass(frozen=True)
class WorkerSettings:
    db: str = DEFAULT_DB
    out: str = "runs"
    lease_s: float = 15.0  # a job whose worker was silent this long is taken up again
    heartbeat_s: float = 2.0
    poll_s: float = 1.0  # idle: look for a job this often
    num_cpus: int | None = None  # local Ray CPUs per job (None: all)
    name: str | None = None


class _Heartbeat:
    """Renews the lease, records spent budget, and turns a cancel request (or a lost
    lease) into the run's cancel file."""

    def __init__(
        self,
        settings: WorkerSettings,
        worker: str,
        job: dict[str, Any],
        attempt_start: float,
        cancel_file: Path,
    ) -> None:
        self.settings, self.worker, self.job = settings, worker, job
        self.attempt_start = attempt_start
        self.prior_spent = float(job.get("spent_s") or 0.0)
        self.cancel_file = cancel_file
        self.lost = False
        self.cancelled = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="automl-heartbeat", daemon=True)

    def spent(self) -> float:
        return self.prior_spent + (time.time() - self.attempt_start)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        store = Store(self.settings.db)
        try:
            while not self._stop.wait(self.settings.heartbeat_s):
                try:
                    job = store.renew_lease(
                        self.job["id"], self.worker, self.settings.lease_s, self.spent()
                    )
                except StoreError as exc:
                    logger.warning("job %s: %s; stopping it here", self.job["id"], exc)
                    self.lost = True
                    self._cancel()
                    return
                if job.get("cancel_requested") and not self.cancelled:
                    logger.info("job %s: cancel requested", self.job["id"])
                    self.cancelled = True
                    self._cancel()
        finally:
            store.close()

    def _cancel(self) -> None:
        self.cancel_file.parent.mkdir(parents=True, exist_ok=True)
        self.cancel_file.touch()


class Worker:
    """Runs jobs from the store. `run()` loops until stopped (or `once` / `max_jobs`)."""

    def __init__(self, settings: WorkerSettings | None = None) -> None:
        self.settings = settings or WorkerSettings()
        self.name = self.settings.name or (
            f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"
        )
        self._stop = threading.Event()

    def stop(self) -> None:
        """Finish the current job, then leave the loop."""
        self._stop.set()

    def run(self, once: bool = False, max_jobs: int | None = None) -> int:
        """Claim and run jobs. `once`: run at most one job and return (also when there is
        none). `max_jobs`: return after that many. Returns the number of jobs run."""
        done = 0
        logger.info("worker %s on %s", self.name, self.settings.db)
        while not self._stop.is_set():
            with Store(self.settings.db) as store:
                job = store.claim_job(self.name, self.settings.lease_s)
            if job is not None:
                self.run_job(job)
                done += 1
            if once or (max_jobs is not None and done >= max_jobs):
                break
            if job is None:
                self._stop.wait(self.settings.poll_s)
        return done

    def run_job(self, job: dict[str, Any]) -> str:
        """Run one claimed job to its end; returns its final status."""
        from automl.pipeline import RunListener, RunOptions, run

        job_id = job["id"]
        attempt_start = time.time()
        budget_s = float(job["budget_s"])
        left = budget_s - float(job.get("spent_s") or 0.0)
        resume = job.get("study_id") if int(job.get("attempts") or 1) > 1 else None
        cancel_file = Path(self.settings.out) / ".cancel" / f"{job_id}"
        cancel_file.unlink(missing_ok=True)
        beat = _Heartbeat(self.settings, self.name, job, attempt_start, cancel_file)
        store = Store(self.settings.db)

        class Listener(RunListener):
            def study_ready(self, study_id: str) -> None:
                store.set_job_study(job_id, study_id)

            def stage(self, text: str) -> None:
                logger.info("job %s: %s", job_id, text)

        logger.info(
            "job %s: %s, %.0f s of budget left%s",
            job_id,
            job.get("source_name"),
            left,
            f", resuming study {resume}" if resume else "",
        )
        status, error = "failed", None
        beat.start()
        try:
            if job.get("cancel_requested"):
                beat.cancelled = True
                raise _Cancelled("cancelled before it started")
            if left < MIN_RESUME_S and not resume:
                raise AutoMLError(f"only {left:.0f} s of the job's budget is left: nothing run")
            opts = JobOptions.from_json(job.get("options") or {})
            result = run(
                RunOptions(
                    data=job["data_path"],
                    label=opts.label,
                    text=opts.text,
                    task=opts.task,
                    budget=Budget(max(left, 1.0)),
                    max_trials=opts.max_trials,
                    space=opts.space,
                    backbones=opts.backbones,
                    seed=opts.seed,
                    db=self.settings.db,
                    out=self.settings.out,
                    num_cpus=opts.num_cpus or self.settings.num_cpus,
                    started_at=attempt_start,
                    track=opts.track,
                    cancel_file=str(cancel_file),
                    resume_study=resume,
                    name=Path(str(job.get("source_name") or "job")).stem,
                ),
                Listener(),
            )
            status = "cancelled" if result.cancelled else "succeeded"
            if result.cancelled:
                error = "cancelled: the best model found before the cancel was kept"
        except _Cancelled as exc:
            status, error = "cancelled", str(exc)
        except AutoMLError as exc:
            status = "cancelled" if beat.cancelled else "failed"
            error = str(exc)
        except Exception as exc:  # a bug: keep the worker alive, say what happened
            logger.exception("job %s failed", job_id)
            status, error = "failed", f"internal error: {type(exc).__name__}: {exc}"
        finally:
            beat.stop()
            cancel_file.unlink(missing_ok=True)
        try:
            if beat.lost or not store.finish_job(job_id, self.name, status, error, beat.spent()):
                logger.warning("job %s was taken over by another worker: not marking it", job_id)
                status = "lost"
        finally:
            store.close()
        logger.info("job %s: %s%s", job_id, status, f" ({error})" if error else "")
        return status


class _Cancelled(Exception):
    pass
