"""Running a system on one cell under its wall budget.

An isolated system runs in a fresh child process (`python -m automl.bench.systems._child`)
in its own session. The clock starts just before the child does, so interpreter start-up,
imports and model loading count. The child writes `fit.json` when its model is ready and
`result.json` (predictions, timings) at the end. A child with no model by the budget
(plus a grace of max(0.5 s, 1 %) for the clock check) is killed with all its descendants
(Ray's too) and the cell is "over budget"; a fit that ends within the grace but after the
budget is "over budget" as well: extra time never earns a score. Predicting the test
split is timed on its own clock and capped at PREDICT_LIMIT_S. Peak memory is the largest
resident set of the child's process tree, sampled every POLL_S, or the child's own
getrusage maximum when that is larger.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from automl.bench.splits import BenchData
from automl.bench.systems.base import (
    FitTask,
    Fitted,
    SystemResult,
    SystemUnavailable,
)
from automl.errors import BudgetError

if TYPE_CHECKING:
    from automl.bench.systems import SystemSpec

logger = logging.getLogger(__name__)

__all__ = ["child_main", "fit_and_predict", "grace_s", "load_target", "run_system"]

POLL_S = 0.2
PREDICT_LIMIT_S = 600.0  # predicting up to 1,000 test texts takes well under a minute
FIT_FILE, RESULT_FILE, TASK_FILE, DATA_FILE = "fit.json", "result.json", "task.json", "data.json"
LOG_FILE = "log.txt"


def grace_s(budget_s: float) -> float:
    """How far past the budget a fit may end and still count (clock checks, not work)."""
    return max(0.5, 0.01 * budget_s)


def load_target(target: str | Callable[[FitTask], Fitted]) -> Callable[[FitTask], Fitted]:
    """The `fit` function a "module:function" string names."""
    if callable(target):
        return target
    module, _, attr = target.partition(":")
    fn = getattr(importlib.import_module(module), attr or "fit")
    return fn  # type: ignore[no-any-return]


def fit_and_predict(
    fit: Callable[[FitTask], Fitted],
    task: FitTask,
    test_texts: Sequence[str],
    on_fit: Callable[[float], None] = lambda _: None,
) -> dict[str, Any]:
    """Fit, then predict; a dict with status, predictions, fit_s, predict_s, info, error.
    A system's own errors become a status, never an exception."""
    try:
        fitted = fit(task)
    except SystemUnavailable as exc:
        return {"status": "unavailable", "fit_s": task.elapsed(), "error": str(exc)}
    except BudgetError as exc:  # BudgetExhausted, or automl's "budget too small"
        return {"status": "over budget", "fit_s": task.elapsed(), "error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - a failed system is a row, not a crash
        logger.debug("fit failed:\n%s", traceback.format_exc())
        return {"status": "failed", "fit_s": task.elapsed(), "error": _describe(exc)}
    fit_s = task.elapsed()
    on_fit(fit_s)
    t0 = time.time()
    try:
        predictions = [str(p) for p in fitted.predict(list(test_texts))]
    except Exception as exc:  # noqa: BLE001
        logger.debug("predict failed:\n%s", traceback.format_exc())
        return {"status": "failed", "fit_s": fit_s, "error": f"predict: {_describe(exc)}"}
    finally:
        if fitted.close is not None:
            with contextlib.suppress(Exception):
                fitted.close()
    if len(predictions) != len(test_texts):
        error = f"predict returned {len(predictions)} labels for {len(test_texts)} texts"
        return {"status": "failed", "fit_s": fit_s, "error": error}
    return {
        "status": "ok",
        "predictions": predictions,
        "fit_s": fit_s,
        "predict_s": time.time() - t0,
        "info": fitted.info,
    }


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:2000]


def run_system(
    spec: SystemSpec,
    data: BenchData,
    budget_s: float,
    seed: int,
    workdir: Path,
    *,
    metric: str = "macro_f1",
    db: str | None = None,
) -> SystemResult:
    """Run `spec` on one cell's data within `budget_s` seconds of wall time."""
    # absolute: the child runs inside workdir, where a relative path would point elsewhere
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    for name in (FIT_FILE, RESULT_FILE):
        (workdir / name).unlink(missing_ok=True)
    fields: dict[str, Any] = {
        "budget_s": float(budget_s),
        "seed": int(seed),
        "workdir": str(workdir.resolve()),
        "metric": metric,
        "name": data.name,
        "db": None if db is None else str(Path(db).resolve()),
        "modality": data.modality,
    }
    if not spec.isolated:
        task = FitTask(data.train_texts, data.train_labels, started_at=time.time(), **fields)
        return _result(fit_and_predict(load_target(spec.target), task, data.test_texts), task)
    if not isinstance(spec.target, str):
        raise TypeError(f"system {spec.name}: an isolated system's target is 'module:function'")
    (workdir / DATA_FILE).write_text(
        json.dumps(
            {"texts": data.train_texts, "labels": data.train_labels, "test": data.test_texts}
        ),
        encoding="utf-8",
    )
    started = time.time()
    doc = {"target": spec.target, "data": str(workdir / DATA_FILE), **fields}
    (workdir / TASK_FILE).write_text(json.dumps({**doc, "started_at": started}))
    return _supervise(workdir, started, float(budget_s))


def _result(out: dict[str, Any], task: FitTask, peak_mb: float | None = None) -> SystemResult:
    """The runner's record of a child's (or in-process) outcome, with the budget rule."""
    fit_s = float(out.get("fit_s") or task.elapsed())
    status, error = out["status"], out.get("error")
    if status == "ok" and fit_s > task.budget_s + grace_s(task.budget_s):
        status = "over budget"
        error = f"the fit took {fit_s:.1f}s of a {task.budget_s:g}s budget"
    ok = status == "ok"
    return SystemResult(
        status=status,
        predictions=tuple(out["predictions"]) if ok else None,
        wall_s=round(fit_s, 2),
        predict_s=round(out["predict_s"], 2) if ok else None,
        peak_mem_mb=None if peak_mb is None else round(peak_mb, 1),
        info=dict(out.get("info") or {}),
        error=error,
    )


def _supervise(workdir: Path, started: float, budget_s: float) -> SystemResult:
    task = FitTask((), (), budget_s=budget_s, started_at=started)
    with open(workdir / LOG_FILE, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "automl.bench.systems._child",
                str(workdir / TASK_FILE),
                str(os.getpid()),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            start_new_session=True,  # its own process group: killed whole, Ctrl+C spared
        )
    tree = _Tree(proc.pid)
    fit_done: float | None = None
    outcome: dict[str, Any] | None = None
    try:
        while proc.poll() is None:
            now = time.time()
            tree.sample()
            if fit_done is None and (workdir / FIT_FILE).exists():
                fit_done = now
            if fit_done is None and now > task.deadline + grace_s(budget_s):
                outcome = {
                    "status": "over budget",
                    "fit_s": now - started,
                    "error": f"stopped at the budget: no model after {budget_s:g}s",
                    "info": {"killed": True},
                }
                break
            if fit_done is not None and now > fit_done + PREDICT_LIMIT_S:
                error = f"predicting the test split took over {PREDICT_LIMIT_S:g}s"
                outcome = {"status": "failed", "error": error}
                break
            time.sleep(POLL_S)
    finally:
        tree.kill(proc)
    if outcome is None:
        outcome = _read_outcome(workdir, proc.returncode)
    peak = max(tree.peak_mb, float(outcome.get("maxrss_mb") or 0.0)) or None
    return _result(outcome, task, peak)


def _read_outcome(workdir: Path, returncode: int) -> dict[str, Any]:
    try:
        return json.loads((workdir / RESULT_FILE).read_text(encoding="utf-8"))  # type: ignore[no-any-return]
    except (OSError, ValueError):
        lines = (workdir / LOG_FILE).read_text(errors="replace").strip().splitlines()
        tail = " | ".join(lines[-3:])[-1000:] or "no output"
        return {"status": "failed", "error": f"the system's process exited {returncode}: {tail}"}


class _Tree:
    """Peak resident memory of a process and its descendants; kills them all."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_mb = 0.0
        self._known: dict[int, Any] = {}

    def sample(self) -> None:
        try:
            import psutil

            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except Exception:  # noqa: BLE001 - gone, or psutil missing: keep the last sample
            return
        total = 0
        for p in procs:
            with contextlib.suppress(Exception):
                total += p.memory_info().rss
                self._known[p.pid] = p
        self.peak_mb = max(self.peak_mb, total / 2**20)

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            self.sample()
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
        for p in self._known.values():  # descendants that left the group (Ray's daemons)
            with contextlib.suppress(Exception):
                if p.is_running():
                    p.kill()
        proc.wait()


def _exit_with_parent(parent: int) -> None:
    """Kill this process group when the runner (`parent`) goes away, even by kill -9, so
    a stopped bench run never leaves a system training in the background."""
    import threading

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.killpg(os.getpgrp(), signal.SIGKILL)

    threading.Thread(target=watch, name="bench-parent-watch", daemon=True).start()


def child_main(task_file: str, parent: int | None = None) -> None:
    """The child process: fit and predict one cell, writing fit.json and result.json.
    With `parent` (the runner's pid) it dies with the runner."""
    from automl.paths import ensure_offline

    ensure_offline()
    if parent is not None:
        _exit_with_parent(parent)
    doc = json.loads(Path(task_file).read_text(encoding="utf-8"))
    workdir = Path(doc["workdir"])
    data = json.loads(Path(doc.pop("data")).read_text(encoding="utf-8"))
    target = doc.pop("target")
    task = FitTask(tuple(data["texts"]), tuple(data["labels"]), **doc)

    def write(name: str, value: dict[str, Any]) -> None:
        tmp = workdir / f".{name}.tmp"
        tmp.write_text(json.dumps(value, default=str), encoding="utf-8")
        os.replace(tmp, workdir / name)

    try:
        fit = load_target(target)
    except Exception as exc:  # noqa: BLE001
        out: dict[str, Any] = {"status": "failed", "error": f"cannot load {target}: {exc}"}
    else:
        out = fit_and_predict(fit, task, data["test"], lambda s: write(FIT_FILE, {"fit_s": s}))
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out["maxrss_mb"] = max(own, kids) / 1024  # kilobytes on Linux
    write(RESULT_FILE, out)
