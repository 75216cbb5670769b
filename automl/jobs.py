"""The service's front door: validate a dataset, copy it into the service's data folder
and queue a job; cancel jobs; describe a job's progress for people.

Used by `automl submit`, `automl cancel`, `automl jobs` and the app. It imports the data
checks and the store only (never trainers, torch or Ray): `automl.worker` runs the jobs.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from automl.config import Budget
from automl.data import FORMATS, CheckedData, check
from automl.errors import ConfigError, DataError
from automl.store import JOB_FINAL, Store, new_job_id

logger = logging.getLogger(__name__)

__all__ = ["JobOptions", "JobProgress", "cancel", "data_dir", "progress", "submit"]

# Below this a job cannot start Ray, train one short trial and export (the worker's run
# checks the exact need for the data; this catches the obvious mistake at submit time).
MIN_JOB_BUDGET_S = 30.0
SUFFIXES = tuple(FORMATS)  # the file kinds a job accepts (automl.data reads them)


@dataclass(frozen=True)
class JobOptions:
    """What a job runs with: `automl run`'s options, stored with the job as JSON."""

    label: str | None = None
    text: tuple[str, ...] | None = None
    task: str | None = None
    track: str = "auto"
    max_trials: int | None = None
    seed: int = 0
    space: str | None = None
    backbones: tuple[str, ...] | None = None
    num_cpus: int | None = None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["text"] = list(self.text) if self.text else None
        d["backbones"] = list(self.backbones) if self.backbones else None
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> JobOptions:
        known = {k: v for k, v in (d or {}).items() if k in cls.__dataclass_fields__}
        for key in ("text", "backbones"):
            if known.get(key):
                known[key] = tuple(known[key])
        return cls(**known)


def data_dir(db: str | Path) -> Path:
    """Where submitted files are kept: `automl_data/` beside the store file."""
    return Path(db).expanduser().resolve().parent / "automl_data"


def submit(
    data: str | Path,
    options: JobOptions,
    budget: Budget,
    db: str | Path,
    source_name: str | None = None,
) -> tuple[str, CheckedData]:
    """Validate `data` exactly as `automl run` does (the same errors), copy it into the
    service's data folder under a generated name, and queue a job. Returns the job id and
    the checked data (its cleaning report is what the user sees before the job runs)."""
    path = Path(data)
    if not path.exists():
        raise DataError(
            f"{data}: no such file: pass the path of a CSV, TSV, JSONL or Parquet file, or "
            "a folder of images with one sub-folder per class"
        )
    if budget.seconds < MIN_JOB_BUDGET_S:
        raise ConfigError(
            f"a budget of {budget} is too small for a job: start-up, one short trial and "
            f"the export need at least {MIN_JOB_BUDGET_S:.0f}s; use --budget 1m or more"
        )
    if options.track not in ("auto", "fewshot", "finetune"):
        raise ConfigError(f"track {options.track!r} is unknown: use auto, fewshot or finetune")
    if options.space:
        from automl.spaces import load_space

        load_space(options.space)  # a bad space file fails now, not in the worker
    checked = check(path, options.label, list(options.text or []) or None, options.task)
    job_id = new_job_id()
    folder = data_dir(db)
    folder.mkdir(parents=True, exist_ok=True)
    if path.is_dir():  # a folder of images: copied whole (its class sub-folders)
        target = folder / job_id
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(path, tmp)
        tmp.replace(target)
    elif checked.modality == "image":
        # A table of image paths is read where it is: its paths are relative to its own
        # folder, which a copy elsewhere would break.
        target = path.resolve()
        logger.info("job %s reads the image table %s in place", job_id, target)
    else:
        suffix = path.suffix.lower()  # check() above accepted it: it tells the format
        target = folder / f"{job_id}{suffix}"
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(path, tmp)
        tmp.replace(target)
    with Store(db) as store:
        store.submit_job(
            job_id=job_id,
            data_path=str(target),
            source_name=source_name or path.name,
            options=options.to_json(),
            budget_s=budget.seconds,
        )
    logger.info("job %s queued: %s, budget %s", job_id, source_name or path.name, budget)
    return job_id, checked


def cancel(job_id: str, db: str | Path) -> dict[str, Any]:
    """Ask for a job to stop: a queued job is cancelled at once; a running job's worker
    stops its trials within seconds, keeps them and exports the best model so far."""
    with Store(db) as store:
        return store.request_cancel(job_id)


@dataclass(frozen=True)
class JobProgress:
    """A job's progress as a person reads it."""

    status: str
    used_s: float  # budget used so far (all attempts)
    budget_s: float
    trials_done: int
    trials_running: int
    best: float | None  # best validation value so far (the study's metric)
    metric: str | None

    @property
    def fraction(self) -> float:
        return 1.0 if self.status in JOB_FINAL else min(1.0, self.used_s / self.budget_s)

    @property
    def left_s(self) -> float:
        return 0.0 if self.status in JOB_FINAL else max(0.0, self.budget_s - self.used_s)


def progress(job: dict[str, Any], store: Store, now: float | None = None) -> JobProgress:
    """Time used and left, trials done and best so far of a job (read from the store)."""
    now = time.time() if now is None else now
    budget = float(job.get("budget_s") or 0.0) or 1.0
    used = float(job.get("spent_s") or 0.0)
    if job.get("status") == "running" and job.get("heartbeat_at") and job.get("lease_until"):
        # spent_s is written at each heartbeat: add the time since the last one, while
        # the worker holds its lease (a dead worker's job spends nothing until resumed)
        beat = datetime.fromisoformat(job["heartbeat_at"]).timestamp()
        if now < float(job["lease_until"]):
            used += max(0.0, now - beat)
    done = running = 0
    best: float | None = None
    metric: str | None = None
    if job.get("study_id"):
        study = store.get_study(job["study_id"])
        metric = study.get("metric") or "macro_f1"
        done, running, value = store.trial_summary(
            job["study_id"], metric, study.get("mode") or "max"
        )
        if isinstance(value, int | float) and math.isfinite(value):
            best = float(value)
    return JobProgress(
        status=str(job.get("status")),
        used_s=min(used, budget),
        budget_s=budget,
        trials_done=done,
        trials_running=running,
        best=best,
        metric=metric,
    )
