"""dataset + budget → clean splits → reference row → searched fine-tuning → best model.

The budget is a hard wall-clock limit for the whole run, counted from `started_at`
(the CLI passes the moment the command started, imports included).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from automl import backbones
from automl.config import Budget, EpochResult, PreparedData, TrialRecord
from automl.data import prepare
from automl.errors import BudgetError, ConfigError
from automl.export import (
    CardInfo,
    copy_checkpoint,
    estimate_export_seconds,
    evaluate,
    write_model_card,
)
from automl.metrics import METRIC_MODES
from automl.paths import ensure_offline
from automl.reference import ReferenceResult, fit_reference
from automl.search import NullObserver, SearchSettings, run_search, start_ray, stop_ray
from automl.spaces import SearchSpace, load_space
from automl.store import DEFAULT_DB, Store, new_study_id
from automl.trainers.base import Trainer

logger = logging.getLogger(__name__)

# Fixed costs measured on 2 CPU cores: Ray start-up and first trial ≈ 8 s, shutdown ≈ 2 s.
RAY_STARTUP_S = 8.0
RAY_SHUTDOWN_S = 2.0
MIN_SEARCH_S = 10.0  # less than this cannot train one useful epoch


@dataclass(frozen=True)
class RunOptions:
    """Everything `automl run` takes."""

    data: Any  # a path or a pandas DataFrame
    label: str | None = None
    text: tuple[str, ...] | None = None
    task: str | None = None
    budget: Budget = field(default_factory=lambda: Budget(300.0))
    max_trials: int | None = None
    space: str | None = None
    backbones: tuple[str, ...] | None = None  # narrow the backbone choice
    seed: int = 0
    db: str = DEFAULT_DB
    out: str = "runs"
    ray_address: str | None = None
    num_cpus: int | None = None
    started_at: float | None = None  # time.time() when the command started


@dataclass(frozen=True)
class RunResult:
    """What a run produced."""

    study_id: str
    best_model_dir: str
    best_trial: TrialRecord
    val_metrics: dict[str, float]
    test_metrics: dict[str, float]
    reference: ReferenceResult
    trials: tuple[TrialRecord, ...]
    leaderboard: list[dict[str, Any]]
    wall_s: float
    data: PreparedData


class RunListener(NullObserver):
    """Progress hooks for a person watching (the CLI's rich display overrides these)."""

    def stage(self, text: str) -> None:
        logger.info(text)

    def search_started(self, deadline: float, budget_s: float, started_at: float) -> None:
        pass


class _StoreObserver:
    """Writes every search event to the store, then tells the listener."""

    def __init__(self, store: Store, study_id: str, listener: RunListener) -> None:
        self.store, self.study_id, self.listener = store, study_id, listener

    def trial_started(self, number: int, params: dict[str, Any]) -> None:
        self.store.upsert_trial(
            self.study_id, number=number, track="finetune", status="running", params=params
        )
        self.listener.trial_started(number, params)

    def epoch_reported(self, number: int, epoch: EpochResult) -> None:
        self.store.add_epoch(
            f"{self.study_id}:{number}",
            epoch.epoch,
            epoch.metrics,
            epoch.train_loss,
            epoch.seconds,
        )
        self.listener.epoch_reported(number, epoch)

    def trial_ended(self, r: TrialRecord) -> None:
        self.store.upsert_trial(
            self.study_id,
            number=r.number,
            track="finetune",
            status=r.status,
            params=r.params,
            metrics=r.best_metrics,
            epochs_done=len(r.epochs),
            seconds=r.seconds,
            error=r.error,
            checkpoint_dir=r.checkpoint_dir,
        )
        self.listener.trial_ended(r)


def run(options: RunOptions, listener: RunListener | None = None) -> RunResult:
    """Run one study end to end and return its result. Bad input raises a typed error
    before anything is written to the store."""
    listener = listener or RunListener()
    t0 = options.started_at or time.time()
    end = t0 + options.budget.seconds
    ensure_offline()

    data = prepare(
        options.data,
        options.label,
        list(options.text or []) or None,
        options.task,
        seed=options.seed,
    )
    space = _space(options)
    metric = "macro_f1" if data.task == "classification" else "rmse"
    mode = METRIC_MODES[metric]
    bb_spec, len_spec = space.get("backbone"), space.get("max_length")
    names = [str(v) for v in bb_spec.values] if bb_spec else []
    layers = max(
        (backbones.BACKBONES[n].num_layers for n in names if n in backbones.BACKBONES), default=6
    )
    max_len = int(max(len_spec.values)) if len_spec and len_spec.values else 128
    export_s = estimate_export_seconds(len(data.test), max_len, layers)
    search_deadline = end - export_s - RAY_SHUTDOWN_S
    if search_deadline - time.time() < RAY_STARTUP_S + MIN_SEARCH_S:
        need = (time.time() - t0) + RAY_STARTUP_S + MIN_SEARCH_S + export_s + RAY_SHUTDOWN_S
        raise BudgetError(
            f"a budget of {options.budget} is too small for this dataset: start-up, one "
            f"short trial and export need about {need:.0f} s; use --budget {int(need) + 30}s "
            "or more"
        )
    paths = {n: str(backbones.resolve(n)) for n in names}  # unknown name: a clear error now
    listener.stage(f"data ready: {', '.join(data.report.lines())}")  # only once input is valid

    store = Store(options.db)
    study_id = new_study_id(
        Path(str(data.source)).stem if data.source != "<dataframe>" else "dataframe"
    )
    work_dir = Path(options.out) / study_id
    work_dir.mkdir(parents=True, exist_ok=True)
    store.create_study(
        study_id=study_id,
        dataset=data.source,
        task=data.task,
        track="finetune",
        metric=metric,
        mode=mode,
        budget_s=options.budget.seconds,
        seed=options.seed,
        data_summary=_summary(data),
        cleaning={"lines": data.report.lines()},
        options={
            "space": space.source,
            "max_trials": options.max_trials,
            "backbones": names,
            "ray_address": options.ray_address,
        },
    )
    try:
        settings = SearchSettings(
            deadline=search_deadline,
            work_dir=str(work_dir),
            metric=metric,
            mode=mode,
            max_trials=options.max_trials,
            seed=options.seed,
            num_cpus=options.num_cpus,
            ray_address=options.ray_address,
            backbone_paths=paths,
        )
        listener.stage("starting Ray and fitting the TF-IDF reference")
        # Overlap Ray's start-up with the reference fit and the trainer's torch import.
        with ThreadPoolExecutor(2) as pool:
            ref_future = pool.submit(fit_reference, data, options.seed)
            trainer_future = pool.submit(_trainer)
            started = start_ray(settings)
            reference = ref_future.result()
            trainer = trainer_future.result()
        store.upsert_trial(
            study_id,
            number=0,
            track="reference",
            status="complete",
            params=reference.params,
            # validation metrics rank it; its test metrics ride along for the model card
            metrics={
                **reference.val_metrics,
                **{f"test_{k}": v for k, v in reference.test_metrics.items()},
            },
            seconds=reference.seconds,
        )
        try:
            listener.search_started(search_deadline, options.budget.seconds, t0)
            records = run_search(
                data, space, trainer, settings, _StoreObserver(store, study_id, listener)
            )
        finally:
            if started:
                stop_ray(settings)
        best = _pick_best(records, metric, mode)
        listener.stage(f"exporting trial {best.number} and scoring the test split")
        assert best.checkpoint_dir is not None
        best_dir = copy_checkpoint(best.checkpoint_dir, work_dir / "best")
        test_metrics = (
            evaluate(best_dir, data.test.texts, data.test.labels) if len(data.test) else {}
        )
        wall = time.time() - t0
        write_model_card(
            best_dir,
            CardInfo(
                study_id=study_id,
                data=data,
                params=best.params,
                val_metrics=best.best_metrics,
                test_metrics=test_metrics,
                metric=metric,
                budget_s=options.budget.seconds,
                wall_s=wall,
                trials_by_status=dict(Counter(r.status for r in records)),
                reference_val=reference.val_metrics,
                reference_test=reference.test_metrics,
            ),
        )
        shutil.rmtree(work_dir / "trials", ignore_errors=True)  # the best one was copied
        store.add_artifact(study_id, "model", str(best_dir), trial_id=f"{study_id}:{best.number}")
        store.add_artifact(study_id, "model_card", str(best_dir / "README.md"))
        wall = time.time() - t0
        store.finish_study(
            study_id,
            status="succeeded",
            best_trial_id=f"{study_id}:{best.number}",
            best_model_dir=str(best_dir),
            test_metrics=test_metrics,
            wall_s=wall,
        )
        logger.info(
            "study %s done in %.1fs (budget %.0fs)", study_id, wall, options.budget.seconds
        )
        return RunResult(
            study_id=study_id,
            best_model_dir=str(best_dir),
            best_trial=best,
            val_metrics=best.best_metrics,
            test_metrics=test_metrics,
            reference=reference,
            trials=tuple(records),
            leaderboard=store.leaderboard(study_id),
            wall_s=wall,
            data=data,
        )
    except BaseException as exc:
        store.finish_study(
            study_id,
            status="failed",
            error=str(exc) or type(exc).__name__,
            wall_s=time.time() - t0,
        )
        raise
    finally:
        store.close()


def _trainer() -> Trainer:
    """The fine-tuning trainer; importing it loads torch and transformers (~1-2 s)."""
    from automl.trainers.finetune import FineTuneTrainer

    return FineTuneTrainer()


def _space(options: RunOptions) -> SearchSpace:
    space = load_space(options.space)
    if options.backbones:
        space = space.with_choices("backbone", list(options.backbones))
    return space


def _pick_best(records: list[TrialRecord], metric: str, mode: str) -> TrialRecord:
    usable = [r for r in records if r.checkpoint_dir and metric in r.best_metrics]
    if not usable:
        errors = sorted({r.error for r in records if r.error})
        detail = f" (trial errors: {'; '.join(errors)[:300]})" if errors else ""
        raise BudgetError(f"no trial finished an epoch within the budget{detail}: raise --budget")
    sign = 1.0 if mode == "max" else -1.0
    return max(usable, key=lambda r: (sign * r.best_metrics[metric], -r.number))


def _summary(data: PreparedData) -> dict[str, Any]:
    return {
        "rows": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
        "task": data.task,
        "label_names": list(data.label_names),
        "text_columns": list(data.text_columns),
        "label_column": data.label_column,
    }


__all__ = ["ConfigError", "RunListener", "RunOptions", "RunResult", "run"]
