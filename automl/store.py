"""SQLite store of studies, trials, epochs and artifacts (the only module that writes SQL).

One file (``./automl.db`` by default) in WAL mode, so two training workers and a reader
(the app, ``automl leaderboard``) can use it at once. Every write is one short
``BEGIN IMMEDIATE`` transaction: taking the write lock up front lets the busy timeout
do the waiting instead of failing with "database is locked".

The schema is built by numbered migrations kept in ``PRAGMA user_version``. To change it,
append a function to ``MIGRATIONS``; never edit one that has shipped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import sqlite_utils
from sqlite_utils.db import NotFoundError

from automl.errors import StoreError

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_DB", "MIGRATIONS", "SCHEMA_VERSION", "Store", "new_study_id"]

DEFAULT_DB = "automl.db"
BUSY_TIMEOUT_S = 30  # a writer waits this long for another's commit (commits take ms)
STUDY_STATUSES = ("running", "succeeded", "failed", "cancelled")
JOB_STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
JOB_FINAL = ("succeeded", "failed", "cancelled")
TRIAL_STATUSES = ("running", "complete", "pruned", "failed", "stopped")
_BOARD_COLUMNS = "number status track params metrics epochs_done seconds error".split()
_JSON_COLUMNS = {"data_summary", "cleaning", "options", "test_metrics", "params", "metrics"}
_JSON_COLUMNS |= {"config", "info"}  # bench_runs.config, bench_results.info
BENCH_RUN_STATUSES = ("running", "finished")
BENCH_STATUSES = ("ok", "over budget", "failed", "unavailable")
JobRow = dict[str, Any]


# -- migrations ---------------------------------------------------------------------------


_TYPES = {"text": str, "int": int, "real": float}


def _columns(spec: str) -> dict[str, type]:
    """``"id seed:int wall_s:real"`` -> ``{"id": str, "seed": int, "wall_s": float}``."""
    pairs = (column.partition(":") for column in spec.split())
    return {name: _TYPES[kind or "text"] for name, _, kind in pairs}


def _m1_core(db: sqlite_utils.Database) -> None:
    """Version 1: studies, trials, epochs, artifacts. JSON columns are text."""
    db.table("studies").create(
        _columns(
            "id created_at finished_at status dataset task track metric mode budget_s:real "
            "seed:int data_summary cleaning options best_trial_id best_model_dir "
            "test_metrics wall_s:real error"
        ),
        pk="id",
        not_null={"created_at", "status"},
        if_not_exists=True,
    )
    db.table("trials").create(
        _columns(
            "id study_id number:int track status params metrics epochs_done:int "
            "seconds:real error checkpoint_dir started_at finished_at"
        ),
        pk="id",
        foreign_keys=[("study_id", "studies", "id")],
        not_null={"study_id", "number", "status"},
        if_not_exists=True,
    )
    db.table("epochs").create(
        _columns("trial_id epoch:int metrics train_loss:real seconds:real"),
        pk=("trial_id", "epoch"),
        foreign_keys=[("trial_id", "trials", "id")],
        if_not_exists=True,
    )
    db.table("artifacts").create(
        _columns("id:int study_id trial_id kind path bytes:int sha256 created_at"),
        pk="id",
        foreign_keys=[("study_id", "studies", "id"), ("trial_id", "trials", "id")],
        not_null={"study_id", "kind", "path"},
        if_not_exists=True,
    )
    for table, column in [
        ("studies", "created_at"),
        ("trials", "study_id"),
        ("epochs", "trial_id"),
        ("artifacts", "study_id"),
    ]:
        db.table(table).create_index([column], if_not_exists=True)


def _m2_jobs(db: sqlite_utils.Database) -> None:
    """Version 2: the service's job queue. A running job's worker holds a lease
    (`lease_until`, a time.time() value) that it renews by heartbeat; a job whose lease
    ran out is claimed again and resumes its study. `spent_s` is the budget used by the
    attempts so far."""
    db.table("jobs").create(
        _columns(
            "id created_at started_at finished_at status data_path source_name options "
            "budget_s:real spent_s:real attempts:int worker lease_until:real heartbeat_at "
            "cancel_requested:int study_id error"
        ),
        pk="id",
        not_null={"created_at", "status", "data_path"},
        if_not_exists=True,
    )
    db.table("jobs").create_index(["status", "created_at"], if_not_exists=True)


def _m3_bench(db: sqlite_utils.Database) -> None:
    """Version 3: benchmark runs (`automl bench`) and one result row per cell. A cell is
    (dataset, budget_s, seed, system); a run resumes by skipping the cells it has rows for.
    `config` is the resolved suite (JSON); `metrics` and `info` are JSON."""
    db.table("bench_runs").create(
        _columns("id suite created_at finished_at budget status report_dir config cells:int"),
        pk="id",
        not_null={"suite", "created_at", "status"},
        if_not_exists=True,
    )
    db.table("bench_results").create(
        _columns(
            "id:int run_id dataset budget_s:real seed:int system status metrics wall_s:real "
            "peak_mem_mb:real error info finished_at"
        ),
        pk="id",
        foreign_keys=[("run_id", "bench_runs", "id")],
        not_null={"run_id", "dataset", "budget_s", "seed", "system", "status"},
        if_not_exists=True,
    )
    db.table("bench_results").create_index(
        ["run_id", "dataset", "budget_s", "seed", "system"], unique=True, if_not_exists=True
    )


# Applied in order; MIGRATIONS[i] brings the schema from version i to i + 1.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_m1_core, _m2_jobs, _m3_bench]
SCHEMA_VERSION = len(MIGRATIONS)


# -- helpers ------------------------------------------------------------------------------


def new_job_id() -> str:
    """A sortable unique job id, e.g. ``job-20261126-054512-a1b2c3``."""
    return f"job-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def new_bench_run_id(suite: str) -> str:
    """A sortable unique benchmark run id, e.g. ``bench-smoke-20261126-054512-a1b2``."""
    slug = re.sub(r"[^a-z0-9]+", "-", suite.lower()).strip("-")[:24] or "suite"
    return f"bench-{slug}-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def new_study_id(dataset_name: str) -> str:
    """A readable unique id, e.g. ``fortunes8-20261126-054512-a1b2`` for ``fortunes8.csv``."""
    stem = Path(str(dataset_name)).stem.lower()
    slug = re.sub(r"[^a-z0-9]+", "-", stem).strip("-")[:32].strip("-") or "study"
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{slug}-{stamp}-{secrets.token_hex(2)}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _clean(value: Any) -> Any:
    """Make a value JSON-safe: NaN/inf become None, numpy scalars and dataclasses plain."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _clean(dataclasses.asdict(value))
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        try:  # numpy / torch scalars
            return _clean(value.item())
        except (TypeError, ValueError):
            return value
    return value


def _dumps(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(_clean(value), sort_keys=True, default=str)


def _num(value: float | None) -> float | None:
    """A float for a REAL column, None when missing or not finite."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    return {
        k: json.loads(v) if k in _JSON_COLUMNS and isinstance(v, str) else v
        for k, v in row.items()
    }


def _size(path: Path) -> int | None:
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return None


def _rank_value(trial: dict[str, Any], metric: str) -> float | None:
    """The trial's value of ``metric`` for ranking; None for failed trials or no value."""
    value = (trial["metrics"] or {}).get(metric)
    if trial["status"] == "failed" or isinstance(value, bool):
        return None
    if not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _check(status: str, allowed: tuple[str, ...], what: str) -> None:
    if status not in allowed:
        raise StoreError(f"{what} status {status!r} is not one of {', '.join(allowed)}")


# -- the store ----------------------------------------------------------------------------


class Store:
    """Studies, trials, epochs and artifacts in one SQLite file.

    ``Store()`` opens (and creates or upgrades) ``./automl.db``; ``Store.memory()`` gives
    a private in-memory store for tests. Use it as a context manager or call ``close()``.
    """

    def __init__(self, path: str | Path = DEFAULT_DB) -> None:
        self.path = str(path)
        self._lock = threading.RLock()  # one connection may be shared by threads
        try:
            if self.path != ":memory:":
                Path(self.path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        except (OSError, sqlite3.DatabaseError) as e:
            raise self._cannot_open(e) from e
        self.db = sqlite_utils.Database(conn)
        try:
            if self.path != ":memory:":
                self.db.enable_wal()
                # Safe with WAL (no corruption on crash), and avoids an fsync per commit.
                self.db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except (StoreError, sqlite3.DatabaseError) as e:
            self.close()
            if isinstance(e, StoreError):
                raise
            raise self._cannot_open(e) from e

    def _cannot_open(self, e: Exception) -> StoreError:
        return StoreError(
            f"cannot open the automl store {self.path!r}: {e}. "
            "Check that the path is a writable SQLite file, or pass another with --db"
        )

    @classmethod
    def memory(cls) -> Store:
        """A fresh in-memory store (for tests)."""
        return cls(":memory:")

    def close(self) -> None:
        """Close the connection."""
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.path!r})"

    @contextmanager
    def _write(self) -> Iterator[sqlite_utils.Database]:
        """One short transaction holding the write lock from its start."""
        with self._lock:
            try:
                self.db.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as e:
                raise StoreError(
                    f"the automl store {self.path!r} stayed locked by another process for "
                    f"over {BUSY_TIMEOUT_S}s ({e}); retry when the other run has finished"
                ) from e
            try:
                yield self.db
            except BaseException:
                self.db.rollback()
                raise
            self.db.conn.execute("COMMIT")

    def _version(self) -> int:
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        if self._version() > SCHEMA_VERSION:
            raise StoreError(
                f"the automl store {self.path!r} has schema version {self._version()}, "
                f"newer than this automl understands ({SCHEMA_VERSION}): upgrade automl "
                "(pip install -U automl) or use another --db file"
            )
        for target in range(self._version() + 1, SCHEMA_VERSION + 1):
            with self._write() as db:
                if self._version() >= target:  # another process got here first
                    continue
                logger.info("store %s: migrating schema to version %d", self.path, target)
                MIGRATIONS[target - 1](db)
                db.execute(f"PRAGMA user_version = {target}")

    # -- studies --------------------------------------------------------------------------

    def create_study(
        self,
        *,
        dataset: str,
        task: str,
        track: str,
        metric: str,
        mode: str,
        budget_s: float,
        seed: int,
        data_summary: dict[str, Any],
        cleaning: dict[str, Any],
        options: dict[str, Any],
        study_id: str | None = None,
    ) -> str:
        """Record a new running study and return its id."""
        study_id = study_id or new_study_id(dataset)
        row = {
            "id": study_id,
            "created_at": _now(),
            "status": "running",
            "dataset": str(dataset),
            "task": task,
            "track": track,
            "metric": metric,
            "mode": mode,
            "budget_s": _num(budget_s),
            "seed": seed,
            "data_summary": _dumps(data_summary),
            "cleaning": _dumps(cleaning),
            "options": _dumps(options),
        }
        with self._write() as db:
            if db.table("studies").count_where("id = ?", [study_id]):
                raise StoreError(f"study {study_id!r} already exists: choose another id")
            db.table("studies").insert(row)
        logger.debug("study %s created", study_id)
        return study_id

    def finish_study(
        self,
        study_id: str,
        *,
        status: str,
        best_trial_id: str | None = None,
        best_model_dir: str | None = None,
        test_metrics: dict[str, Any] | None = None,
        wall_s: float | None = None,
        error: str | None = None,
    ) -> None:
        """Mark a study finished (succeeded, failed or cancelled) with its results."""
        _check(status, STUDY_STATUSES, "study")
        updates = {
            "status": status,
            "finished_at": _now(),
            "best_trial_id": best_trial_id,
            "best_model_dir": None if best_model_dir is None else str(best_model_dir),
            "test_metrics": _dumps(test_metrics),
            "wall_s": _num(wall_s),
            "error": error,
        }
        with self._write() as db:
            if not db.table("studies").count_where("id = ?", [study_id]):
                raise self._unknown(study_id)
            db.table("studies").update(
                study_id, {k: v for k, v in updates.items() if v is not None}
            )

    def delete_study(self, study_id: str) -> None:
        """Remove a study with its trials, epochs and artifacts (no-op if it is unknown)."""
        with self._write() as db:
            db.execute(
                "DELETE FROM epochs WHERE trial_id IN (SELECT id FROM trials WHERE study_id = ?)",
                [study_id],
            )
            for table in ("artifacts", "trials"):
                db.execute(f"DELETE FROM {table} WHERE study_id = ?", [study_id])
            db.execute("DELETE FROM studies WHERE id = ?", [study_id])
        logger.debug("study %s deleted", study_id)

    def get_study(self, study_id: str) -> dict[str, Any]:
        """One study as a dict, JSON columns decoded."""
        with self._lock:
            try:
                return _decode(self.db.table("studies").get(study_id))
            except NotFoundError:
                raise self._unknown(study_id) from None

    def latest_study_id(self) -> str | None:
        """The most recently created study's id, or None when there is none."""
        studies = self.list_studies(limit=1)
        return studies[0]["id"] if studies else None

    def list_studies(self, limit: int = 50) -> list[dict[str, Any]]:
        """Studies, newest first, JSON columns decoded."""
        with self._lock:
            rows = self.db.table("studies").rows_where(
                order_by="created_at DESC, rowid DESC", limit=limit
            )
            return [_decode(r) for r in rows]

    def _unknown(self, study_id: str) -> StoreError:
        recent = [s["id"] for s in self.list_studies(limit=5)]
        known = f"recent studies: {', '.join(recent)}" if recent else "it has no studies yet"
        return StoreError(
            f"no study {study_id!r} in {self.path} ({known}). "
            "Run `automl leaderboard` with no argument to see the latest study"
        )

    # -- trials and epochs ----------------------------------------------------------------

    def upsert_trial(
        self,
        study_id: str,
        *,
        number: int,
        track: str,
        status: str,
        params: dict[str, Any],
        metrics: dict[str, Any] | None = None,
        epochs_done: int = 0,
        seconds: float = 0.0,
        error: str | None = None,
        checkpoint_dir: str | None = None,
    ) -> str:
        """Insert or update trial ``number`` of a study; returns the trial id."""
        _check(status, TRIAL_STATUSES, "trial")
        trial_id = f"{study_id}:{number}"
        row = {
            "study_id": study_id,
            "number": number,
            "track": track,
            "status": status,
            "params": _dumps(params),
            "metrics": _dumps(metrics),
            "epochs_done": epochs_done,
            "seconds": _num(seconds),
            "error": error,
            "checkpoint_dir": None if checkpoint_dir is None else str(checkpoint_dir),
        }
        with self._write() as db:
            try:
                old: dict[str, Any] | None = db.table("trials").get(trial_id)
            except NotFoundError:
                old = None
            finished = old["finished_at"] if old else None
            row["finished_at"] = None if status == "running" else finished or _now()
            if old:
                db.table("trials").update(trial_id, row)
            else:
                db.table("trials").insert({"id": trial_id, "started_at": _now(), **row})
        return trial_id

    def add_epoch(
        self, trial_id: str, epoch: int, metrics: dict[str, Any], train_loss: float, seconds: float
    ) -> None:
        """Record (or re-record) one epoch's validation metrics for a trial."""
        row = {
            "trial_id": trial_id,
            "epoch": epoch,
            "metrics": _dumps(metrics),
            "train_loss": _num(train_loss),
            "seconds": _num(seconds),
        }
        with self._write() as db:
            db.table("epochs").upsert(row, pk=("trial_id", "epoch"))

    def trials(self, study_id: str) -> list[dict[str, Any]]:
        """A study's trials by number, JSON columns decoded."""
        with self._lock:
            rows = self.db.table("trials").rows_where(
                "study_id = ?", [study_id], order_by="number"
            )
            return [_decode(r) for r in rows]

    def epochs(
        self, trial_id: str | None = None, *, study_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Epochs of one trial, or of every trial of ``study_id``, in order."""
        if (trial_id is None) == (study_id is None):
            raise TypeError("epochs() takes a trial_id or a study_id=, exactly one of them")
        with self._lock:
            if trial_id is not None:
                rows = self.db.table("epochs").rows_where(
                    "trial_id = ?", [trial_id], order_by="epoch"
                )
            else:
                rows = self.db.query(
                    "SELECT e.* FROM epochs e JOIN trials t ON t.id = e.trial_id "
                    "WHERE t.study_id = ? ORDER BY t.number, e.epoch",
                    [study_id],
                )
            return [_decode(r) for r in rows]

    # -- artifacts ------------------------------------------------------------------------

    def add_artifact(
        self,
        study_id: str,
        kind: str,
        path: str | Path,
        trial_id: str | None = None,
        sha256: str | None = None,
    ) -> int:
        """Record a file or folder a study produced; returns the artifact's row id."""
        size = _size(Path(path))
        if size is None:
            logger.warning("artifact %s of study %s does not exist (yet)", path, study_id)
        row = {
            "study_id": study_id,
            "trial_id": trial_id,
            "kind": kind,
            "path": str(path),
            "bytes": size,
            "sha256": sha256,
            "created_at": _now(),
        }
        with self._write() as db:
            return cast(int, db.table("artifacts").insert(row).last_pk)

    def artifacts(self, study_id: str) -> list[dict[str, Any]]:
        """A study's artifacts in the order they were added."""
        with self._lock:
            return list(
                self.db.table("artifacts").rows_where("study_id = ?", [study_id], order_by="id")
            )

    # -- leaderboard ----------------------------------------------------------------------

    def leaderboard(
        self, study_id: str, metric: str | None = None, mode: str | None = None
    ) -> list[dict[str, Any]]:
        """A study's trials ranked best first by ``metric`` (default: the study's own).

        Failed trials and trials without a finite value of the metric come last with
        rank None. ``value`` is the metric value used for ranking.
        """
        study = self.get_study(study_id)
        metric = metric or study["metric"]
        mode = mode or study["mode"] or "max"
        if mode not in ("max", "min"):
            raise StoreError(f"mode {mode!r} is not 'max' or 'min'")
        rows = [(t, _rank_value(t, metric)) for t in self.trials(study_id)]
        sign = -1.0 if mode == "max" else 1.0
        rows.sort(key=lambda r: (r[1] is None, sign * (r[1] or 0.0), r[0]["number"]))
        best = study["best_trial_id"]
        if best not in {t["id"] for t, _ in rows}:
            best = rows[0][0]["id"] if rows and rows[0][1] is not None else None
        return [
            {
                "rank": i if value is not None else None,
                "trial_id": t["id"],
                **{k: t[k] for k in _BOARD_COLUMNS},
                "value": value,
                "is_best": t["id"] == best,
            }
            for i, (t, value) in enumerate(rows, start=1)
        ]

    def trial_summary(self, study_id: str, metric: str, mode: str) -> tuple[int, int, Any]:
        """(trials finished, trials running, best `metric` among the finished) of a study,
        the reference row left out: one SQL query, for pages that refresh often."""
        agg = "MAX" if mode == "max" else "MIN"
        if not re.fullmatch(r"[A-Za-z0-9_]+", metric):
            raise StoreError(f"metric name {metric!r} is not a plain identifier")
        with self._lock:
            row = self.db.execute(
                "SELECT COALESCE(SUM(status != 'running'), 0), "
                "COALESCE(SUM(status = 'running'), 0), "
                f"{agg}(CASE WHEN status NOT IN ('running', 'failed') "
                f"THEN json_extract(metrics, '$.{metric}') END) "
                "FROM trials WHERE study_id = ? AND track != 'reference'",
                [study_id],
            ).fetchone()
        return int(row[0]), int(row[1]), row[2]

    # -- resuming a study -----------------------------------------------------------------

    def reopen_study(self, study_id: str, reason: str) -> list[dict[str, Any]]:
        """Take up a study again after its worker died: mark it running, store its
        unfinished trials as failed with `reason`, and return its finished trials (with
        their epochs, JSON decoded) so the search can go on from them."""
        with self._write() as db:
            if not db.table("studies").count_where("id = ?", [study_id]):
                raise self._unknown(study_id)
            db.execute(
                "UPDATE studies SET status = 'running', finished_at = NULL, error = NULL "
                "WHERE id = ?",
                [study_id],
            )
            db.execute(
                "UPDATE trials SET status = 'failed', error = ?, finished_at = ? "
                "WHERE study_id = ? AND status = 'running'",
                [reason, _now(), study_id],
            )
        return [t for t in self.trials(study_id) if t["status"] != "failed"]

    # -- jobs -----------------------------------------------------------------------------

    def submit_job(
        self,
        *,
        data_path: str,
        source_name: str,
        options: dict[str, Any],
        budget_s: float,
        job_id: str | None = None,
    ) -> str:
        """Queue a job (its data already copied to `data_path`) and return its id."""
        job_id = job_id or new_job_id()
        row = {
            "id": job_id,
            "created_at": _now(),
            "status": "queued",
            "data_path": str(data_path),
            "source_name": source_name,
            "options": _dumps(options),
            "budget_s": _num(budget_s),
            "spent_s": 0.0,
            "attempts": 0,
            "cancel_requested": 0,
        }
        with self._write() as db:
            db.table("jobs").insert(row)
        logger.debug("job %s queued", job_id)
        return job_id

    def claim_job(self, worker: str, lease_s: float, now: float | None = None) -> JobRow | None:
        """Atomically take the oldest queued job, or a running one whose worker's lease ran
        out (it died): the job becomes this worker's for `lease_s` seconds. None when
        there is nothing to do. Two workers never get the same job: the select and the
        update run in one write transaction."""
        import time

        now = time.time() if now is None else now
        with self._write() as db:
            row = db.execute(
                "SELECT id FROM jobs WHERE status = 'queued' "
                "OR (status = 'running' AND lease_until < ?) "
                "ORDER BY status = 'running' DESC, created_at, rowid LIMIT 1",
                [now],
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET status = 'running', worker = ?, lease_until = ?, "
                "heartbeat_at = ?, attempts = attempts + 1, "
                "started_at = COALESCE(started_at, ?) WHERE id = ?",
                [worker, now + lease_s, _now(), _now(), row[0]],
            )
        return self.get_job(row[0])

    def renew_lease(
        self, job_id: str, worker: str, lease_s: float, spent_s: float | None = None
    ) -> JobRow:
        """Heartbeat: extend this worker's lease and record the budget spent so far.
        Returns the job (look at `cancel_requested`). Raises StoreError when the job is no
        longer this worker's (its lease ran out and another worker took it)."""
        import time

        sets = "lease_until = ?, heartbeat_at = ?"
        args: list[Any] = [time.time() + lease_s, _now()]
        if spent_s is not None:
            sets += ", spent_s = MAX(COALESCE(spent_s, 0), ?)"
            args.append(float(spent_s))
        with self._write() as db:
            cur = db.execute(
                f"UPDATE jobs SET {sets} WHERE id = ? AND worker = ? AND status = 'running'",
                [*args, job_id, worker],
            )
            if cur.rowcount != 1:
                raise StoreError(
                    f"job {job_id!r} is no longer held by worker {worker!r}: its lease "
                    "ran out or it was finished elsewhere"
                )
        return self.get_job(job_id)

    def set_job_study(self, job_id: str, study_id: str) -> None:
        """Link a job to the study it runs (set once the study exists)."""
        with self._write() as db:
            db.execute("UPDATE jobs SET study_id = ? WHERE id = ?", [study_id, job_id])

    def finish_job(
        self,
        job_id: str,
        worker: str,
        status: str,
        error: str | None = None,
        spent_s: float | None = None,
    ) -> bool:
        """Mark this worker's job finished. False (and no change) when another worker
        holds it by now."""
        _check(status, JOB_FINAL, "job")
        with self._write() as db:
            cur = db.execute(
                "UPDATE jobs SET status = ?, error = ?, finished_at = ?, lease_until = NULL, "
                "spent_s = COALESCE(?, spent_s) "
                "WHERE id = ? AND worker = ? AND status = 'running'",
                [status, error, _now(), _num(spent_s), job_id, worker],
            )
            return cur.rowcount == 1

    def request_cancel(self, job_id: str) -> JobRow:
        """Cancel a job: a queued one at once, a running one by its worker (it sees the
        request at its next heartbeat, stops the trials and keeps the best model so far).
        Returns the job; raises StoreError for an unknown or already finished job."""
        with self._write() as db:
            row = db.execute("SELECT status FROM jobs WHERE id = ?", [job_id]).fetchone()
            if row is None:
                raise self._unknown_job(job_id)
            if row[0] in JOB_FINAL:
                raise StoreError(f"job {job_id!r} has already {row[0]}: nothing to cancel")
            if row[0] == "queued":
                db.execute(
                    "UPDATE jobs SET status = 'cancelled', cancel_requested = 1, "
                    "finished_at = ?, error = 'cancelled before it started' WHERE id = ?",
                    [_now(), job_id],
                )
            else:
                db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", [job_id])
        return self.get_job(job_id)

    def get_job(self, job_id: str) -> JobRow:
        """One job as a dict (options decoded)."""
        with self._lock:
            try:
                return _decode(self.db.table("jobs").get(job_id))
            except NotFoundError:
                raise self._unknown_job(job_id) from None

    def list_jobs(self, limit: int = 100, status: str | None = None) -> list[JobRow]:
        """Jobs, newest first; only those with `status` when given."""
        where, args = ("status = ?", [status]) if status else (None, [])
        with self._lock:
            rows = self.db.table("jobs").rows_where(
                where, args, order_by="created_at DESC, rowid DESC", limit=limit
            )
            return [_decode(r) for r in rows]

    def _unknown_job(self, job_id: str) -> StoreError:
        recent = [j["id"] for j in self.list_jobs(limit=5)]
        known = f"recent jobs: {', '.join(recent)}" if recent else "it has no jobs yet"
        return StoreError(f"no job {job_id!r} in {self.path} ({known}); see `automl jobs`")

    # -- benchmarks -----------------------------------------------------------------------

    def create_bench_run(
        self,
        suite: str,
        config: dict[str, Any],
        cells: int,
        budget: str | None = None,
        run_id: str | None = None,
    ) -> str:
        """Record a new benchmark run of `suite` (its resolved `config`, `cells` planned;
        `budget` is the --budget override, if any) and return its id."""
        run_id = run_id or new_bench_run_id(suite)
        row = {
            "id": run_id,
            "suite": suite,
            "created_at": _now(),
            "budget": budget,
            "status": "running",
            "config": _dumps(config),
            "cells": cells,
        }
        with self._write() as db:
            if db.table("bench_runs").count_where("id = ?", [run_id]):
                raise StoreError(f"benchmark run {run_id!r} already exists in {self.path}")
            db.table("bench_runs").insert(row)
        return run_id

    def get_bench_run(self, run_id: str) -> dict[str, Any]:
        """One benchmark run, config decoded, with `done`: how many cells have a row."""
        with self._lock:
            try:
                row = _decode(self.db.table("bench_runs").get(run_id))
            except NotFoundError:
                recent = [r["id"] for r in self.list_bench_runs(limit=5)]
                known = f"recent runs: {', '.join(recent)}" if recent else "it has no runs yet"
                raise StoreError(
                    f"no benchmark run {run_id!r} in {self.path} ({known}); "
                    "see `automl bench list`"
                ) from None
            row["done"] = self.db.table("bench_results").count_where("run_id = ?", [run_id])
            return row

    def list_bench_runs(
        self, limit: int = 50, suite: str | None = None, status: str | None = None
    ) -> list[dict[str, Any]]:
        """Benchmark runs, newest first (config decoded, `done` cells counted); only those
        of `suite` and with `status` when given."""
        where = " AND ".join(
            c for c, v in (("r.suite = ?", suite), ("r.status = ?", status)) if v is not None
        )
        args = [v for v in (suite, status) if v is not None]
        with self._lock:
            rows = self.db.query(
                "SELECT r.*, (SELECT COUNT(*) FROM bench_results b WHERE b.run_id = r.id) "
                f"AS done FROM bench_runs r {'WHERE ' + where if where else ''} "
                "ORDER BY r.created_at DESC, r.rowid DESC LIMIT ?",
                [*args, limit],
            )
            return [_decode(r) for r in rows]

    def finish_bench_run(
        self, run_id: str, status: str = "finished", report_dir: str | None = None
    ) -> None:
        """Set a run's status (`running` again when resumed) and, when given, its report
        folder."""
        _check(status, BENCH_RUN_STATUSES, "benchmark run")
        finished = None if status == "running" else _now()
        with self._write() as db:
            cur = db.execute(
                "UPDATE bench_runs SET status = ?, finished_at = ?, "
                "report_dir = COALESCE(?, report_dir) WHERE id = ?",
                [status, finished, report_dir, run_id],
            )
            if cur.rowcount != 1:
                raise StoreError(f"no benchmark run {run_id!r} in {self.path}")

    def add_bench_result(
        self,
        run_id: str,
        *,
        dataset: str,
        budget_s: float,
        seed: int,
        system: str,
        status: str,
        metrics: dict[str, Any] | None = None,
        wall_s: float | None = None,
        peak_mem_mb: float | None = None,
        error: str | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        """Record (or replace) one cell's result."""
        _check(status, BENCH_STATUSES, "benchmark result")
        row = {
            "run_id": run_id,
            "dataset": dataset,
            "budget_s": float(budget_s),
            "seed": int(seed),
            "system": system,
            "status": status,
            "metrics": _dumps(metrics),
            "wall_s": _num(wall_s),
            "peak_mem_mb": _num(peak_mem_mb),
            "error": error,
            "info": _dumps(info),
            "finished_at": _now(),
        }
        with self._write() as db:
            if not db.table("bench_runs").count_where("id = ?", [run_id]):
                raise StoreError(f"no benchmark run {run_id!r} in {self.path}")
            db.execute(
                "DELETE FROM bench_results WHERE run_id = ? AND dataset = ? AND budget_s = ? "
                "AND seed = ? AND system = ?",
                [run_id, dataset, row["budget_s"], row["seed"], system],
            )
            db.table("bench_results").insert(row)

    def bench_results(self, run_id: str) -> list[dict[str, Any]]:
        """A run's results in the order they finished, JSON columns decoded."""
        with self._lock:
            rows = self.db.table("bench_results").rows_where("run_id = ?", [run_id], order_by="id")
            return [_decode(r) for r in rows]
