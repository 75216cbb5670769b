"""dataset + budget → clean splits → route → reference row → search → best model.

Two tracks share this flow: `finetune` (a validation split, one report per epoch, the best
trial's checkpoint is exported) and `fewshot` (cross-validation on all training data, one
report per fold, the winning configuration is refitted on all of it).

The budget is a hard wall-clock limit for the whole run, counted from `started_at`
(the CLI passes the moment the command started, imports included).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from automl import backbones
from automl.config import Budget, EpochResult, PreparedData, Split, TrialRecord
from automl.data import CheckedData, check, split_checked
from automl.errors import BudgetError, ConfigError
from automl.export import (
    CardInfo,
    TrialDeadline,
    copy_checkpoint,
    evaluate,
    write_model_card,
)
from automl.metrics import METRIC_MODES
from automl.paths import ensure_offline
from automl.reference import ReferenceResult, fit_reference, fit_reference_cv
from automl.routing import RouteDecision, holdout_test, route
from automl.search import (
    NullObserver,
    SearchSettings,
    cancel_requested,
    run_search,
    start_ray,
    stop_ray,
    warm_imports,
)
from automl.spaces import SearchSpace, default_space_path, load_space
from automl.store import DEFAULT_DB, Store, new_study_id
from automl.trainers.base import Trainer, TrainerRef

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Fixed costs measured on 2 CPU cores: Ray start-up and first trial ≈ 4-5 s; shutdown
# ≈ 1.5 s, overlapped with the export; from the study's end to the process's exit 0.05-0.1 s
# (benchmarks/budget.py: the command's wall against the study's).
RAY_STARTUP_S = 5.0
RAY_SHUTDOWN_S = 1.5
EXIT_S = 0.25
SAFETY_SHARE = 0.005
MIN_SEARCH_S = 10.0  # less than this cannot train one useful epoch
# Few-shot cross-validation: folds x repeats; every fold is one report (ASHA's rungs).
CV_SPLITS = 4
CV_REPEATS = 2
# Few-shot: time kept back for refitting the winner on all data, as a share of the search.
REFIT_SHARE = 0.12
# Fine-tuning in a budget under this: the starting trial may train up to the space's most
# epochs (see _fill_short_budget).
SHORT_BUDGET_S = 120.0
# Few-shot without a GPU: SetFit is searched only in budgets of at least this.
SETFIT_MIN_BUDGET_S = 180.0
# heads on cached embeddings (logreg_tfidf: with a TF-IDF classifier): a refit takes a second
HEAD_ONLY_METHODS = ("logreg", "svm", "logreg_tfidf")
TFIDF_MIN_PER_CLASS = 16  # logreg_tfidf is searched from this many examples per class


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
    track: str = "auto"  # auto | fewshot | finetune
    # The service: a file whose appearance cancels the run (the trials stop within
    # seconds, the best model so far is exported and the study marked cancelled) ...
    cancel_file: str | None = None
    # ... and the study of an interrupted attempt to go on with: its finished trials are
    # kept (not rerun), its unfinished ones stored as failed; `budget` is what is left.
    resume_study: str | None = None
    name: str | None = None  # the study id's prefix (default: the data file's name)


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
    route: RouteDecision | None = None
    cancelled: bool = False
    resumed_trials: int = 0  # finished trials kept from an interrupted attempt


class RunListener(NullObserver):
    """Progress hooks for a person watching (the CLI's rich display overrides these)."""

    def stage(self, text: str) -> None:
        logger.info(text)

    def search_started(self, deadline: float, budget_s: float, started_at: float) -> None:
        pass

    def study_ready(self, study_id: str) -> None:
        """The study is in the store (the service links its job to it)."""


class _BestDeadline:
    """Keeps the trials' shared deadline file: the run's end minus the export time of the
    best model so far. Each trial also has its own deadline (its own export time), so the
    model exported at the end, whichever it is, has the time its export needs."""

    def __init__(self, path: Path, plan: TrialDeadline, metric: str, mode: str) -> None:
        self.path, self.plan, self.metric, self.mode = path, plan, metric, mode
        self.params: dict[int, dict[str, Any]] = {}
        self.best: float | None = None
        self.written: float | None = None
        self.frozen = False  # cancelled: the file holds the cancel time from then on

    def reported(self, number: int, epoch: EpochResult) -> None:
        if self.frozen:
            return
        value = epoch.metrics.get(self.metric)
        if value is None or value != value or number not in self.params:
            return
        best = self.best
        if best is not None and (value <= best if self.mode == "max" else value >= best):
            return
        self.best = value
        deadline = self.plan(self.params[number])
        if deadline != self.written:  # a better model: the earlier best cannot win anymore
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(f"{deadline:.3f}", encoding="ascii")
            os.replace(tmp, self.path)
            self.written = deadline


class _StoreObserver:
    """Writes every search event to the store, then tells the listener. The reference
    row (fitted in a thread while the trials run) is written at the first event after it
    is ready: the store's connection belongs to this (the main) thread."""

    def __init__(
        self,
        store: Store,
        study_id: str,
        listener: RunListener,
        track: str,
        started: threading.Event | None = None,
        deadlines: _BestDeadline | None = None,
        reference: Future[ReferenceResult] | None = None,
    ) -> None:
        self.store, self.study_id, self.listener = store, study_id, listener
        self.track, self.started, self.deadlines = track, started, deadlines
        self.reference, self.reference_stored = reference, False

    def store_reference(self, wait: bool = False) -> ReferenceResult | None:
        """Write the reference row once it is ready (wait=True: wait for it; its error,
        if any, is raised)."""
        ref_future = self.reference
        if ref_future is None:
            return None
        if not wait and (not ref_future.done() or ref_future.exception() is not None):
            return None  # not ready, or failed: the wait=True call after the search raises
        ref = ref_future.result()
        if not self.reference_stored:
            self.reference_stored = True
            self.store.upsert_trial(
                self.study_id,
                number=0,
                track="reference",
                status="complete",
                params=ref.params,
                # validation metrics rank it; its test metrics ride along for the card
                metrics={
                    **ref.val_metrics,
                    **{f"test_{k}": v for k, v in ref.test_metrics.items()},
                },
                seconds=ref.seconds,
            )
        return ref

    def trial_started(self, number: int, params: dict[str, Any]) -> None:
        self.store_reference()
        if self.started is not None:
            self.started.set()
        if self.deadlines is not None:
            self.deadlines.params[number] = params
        self.store.upsert_trial(
            self.study_id, number=number, track=self.track, status="running", params=params
        )
        self.listener.trial_started(number, params)

    def epoch_reported(self, number: int, epoch: EpochResult) -> None:
        self.store_reference()
        if self.deadlines is not None:
            self.deadlines.reported(number, epoch)
        self.store.add_epoch(
            f"{self.study_id}:{number}",
            epoch.epoch,
            epoch.metrics,
            epoch.train_loss,
            epoch.seconds,
        )
        self.listener.epoch_reported(number, epoch)

    def trial_ended(self, r: TrialRecord) -> None:
        self.store_reference()
        self.store.upsert_trial(
            self.study_id,
            number=r.number,
            track=self.track,
            status=r.status,
            params=r.params,
            metrics=r.best_metrics,
            epochs_done=len(r.epochs),
            seconds=r.seconds,
            error=r.error,
            checkpoint_dir=r.checkpoint_dir,
        )
        self.listener.trial_ended(r)


@dataclass(frozen=True)
class _Plan:
    """Everything decided from the data before the search."""

    data: PreparedData
    decision: RouteDecision
    space: SearchSpace
    no_test_reason: str
    metric: str
    mode: str
    paths: dict[str, str]  # backbone name -> local folder
    trial_deadline: TrialDeadline
    export_s: float  # the costliest model's export
    folds: list[tuple[Any, Any]]  # few-shot cross-validation folds (train + val indices)
    # False: too little budget left to search (a resumed study then exports the best of
    # its earlier trials; BudgetError says so when there is none)
    search: bool = True

    @property
    def fewshot(self) -> bool:
        return self.decision.track == "fewshot"


def run(options: RunOptions, listener: RunListener | None = None) -> RunResult:
    """Run one study end to end and return its result. Bad input raises a typed error
    before anything is written to the store."""
    listener = listener or RunListener()
    t0 = options.started_at or time.time()
    end = t0 + options.budget.seconds
    ensure_offline()

    # Every bad-input error comes from these three, before Ray starts.
    checked = check(options.data, options.label, list(options.text or []) or None, options.task)
    user_space = load_space(options.space) if options.space else None
    store = Store(options.db)
    study_id = options.resume_study or new_study_id(
        options.name
        or (Path(checked.source).stem if checked.source != "<dataframe>" else "dataframe")
    )
    work_dir = Path(options.out) / study_id
    ray_settings = SearchSettings(
        deadline=end,
        work_dir=str(work_dir),
        num_cpus=options.num_cpus,
        ray_address=options.ray_address,
    )
    # Ray's start-up (ray.init must run in the main thread) is the critical path to the
    # first trial: the split, routing and Tune's imports run beside it (at normal priority:
    # a niced thread holding the GIL slowed ray.init more than it saved). The TF-IDF
    # reference waits for the first trial: beside Ray's start-up it competed for the two
    # cores and delayed the first trial by about a second. The driver never imports torch
    # before the trials run (they get a TrainerRef); the export's dependencies are
    # imported while they train.
    background = ThreadPoolExecutor(3, thread_name_prefix="automl-bg")
    first_trial = threading.Event()  # set when a trial starts: Tune's start holds the GIL
    started = False
    created = False
    watch: _CancelWatch | None = None
    try:
        planned = background.submit(_plan, options, checked, user_space, t0, end)
        warm = background.submit(warm_imports)
        started = start_ray(ray_settings)
        logger.debug("timeline: Ray up at +%.2f s", time.time() - t0)
        plan = planned.result()
        warm.result()
        logger.debug("timeline: plan ready at +%.2f s", time.time() - t0)
        referenced = background.submit(_after(first_trial, _fit_reference), plan, options.seed)
        data, decision, metric = plan.data, plan.decision, plan.metric
        listener.stage(f"data ready: {', '.join(data.report.lines())}")
        listener.stage(f"track {decision.reason}")
        previous: list[TrialRecord] = []
        first_number = 1
        if options.resume_study:
            previous, first_number = _reopen(store, study_id, plan)
            created = True
            listener.stage(
                f"resuming study {study_id}: {len(previous)} finished trials kept, "
                f"{options.budget} of budget left"
            )
        else:
            _create_study(store, study_id, options, plan)
            created = True
        listener.study_ready(study_id)
        deadline_file = work_dir / "deadline"
        settings = replace(
            ray_settings,
            deadline=plan.trial_deadline.latest(),
            metric=metric,
            mode=plan.mode,
            max_trials=_trials_left(options.max_trials, previous),
            seed=options.seed,
            backbone_paths=plan.paths,
            max_reports=len(plan.folds) if plan.fewshot else None,
            score="last_report" if plan.fewshot else "best_report",
            unprunable=("method", HEAD_ONLY_METHODS) if plan.fewshot else None,
            trial_deadline=plan.trial_deadline,
            # trials re-read it: moved to the best model's export time (fine-tuning: its
            # checkpoint is exported as is; few-shot refits) and to now on a cancel
            deadline_file=str(deadline_file.resolve()),
            cancel_file=options.cancel_file,
            first_number=first_number,
            previous=tuple(
                (r.params, r.best_metrics.get(metric, float("nan")), r.status == "pruned")
                for r in previous
            ),
        )
        best_deadline = (
            None
            if plan.fewshot
            else _BestDeadline(deadline_file, plan.trial_deadline, metric, plan.mode)
        )
        if options.cancel_file:
            watch = _CancelWatch(options.cancel_file, deadline_file, best_deadline)
        trainer = _trainer(decision.track, data.modality)
        observer = _StoreObserver(
            store, study_id, listener, decision.track, first_trial, best_deadline, referenced
        )
        export_ready = background.submit(
            _low_priority, _after(first_trial, _warm_export), trainer, list(plan.paths.values())
        )
        try:
            listener.search_started(settings.deadline, options.budget.seconds, t0)
            if plan.search:
                records = previous + run_search(
                    data,
                    plan.space,
                    trainer,
                    settings,
                    observer,
                )
            elif previous:
                listener.stage(
                    f"{options.budget} left: too little to search again; exporting the best "
                    f"of the {len(previous)} trials kept"
                )
                records = list(previous)
            else:
                raise BudgetError(
                    f"{options.budget} of budget left when the job resumed, too little to "
                    "train, and no earlier trial finished: submit it again with more budget"
                )
        finally:
            first_trial.set()
            if watch is not None:
                watch.stop()
        cancelled = cancel_requested(options.cancel_file)
        reference = observer.store_reference(wait=True)
        assert reference is not None
        export_ready.result()
        background.shutdown(wait=True)
        # The best model is exported in a thread while this (main) thread shuts Ray down
        # (about 1.5 s): ray.shutdown from another thread left Ray's state half torn down.
        best_dir = work_dir / "best"
        exporter = ThreadPoolExecutor(1, thread_name_prefix="automl-export")
        exported = exporter.submit(_export_best, plan, records, trainer, best_dir, end, listener)
        exporter.shutdown(wait=False)
        if started:
            started = False
            stop_ray(settings)
        best, test_metrics = exported.result()
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
                route_reason=decision.reason,
                cv=_cv_text(plan.folds, data) if plan.fewshot else "",
                no_test_reason=plan.no_test_reason,
                model_format=(
                    "image"
                    if data.modality == "image"
                    else "setfit"
                    if plan.fewshot
                    else "transformers"
                ),
            ),
        )
        shutil.rmtree(work_dir / "trials", ignore_errors=True)  # the best one was copied
        store.add_artifact(study_id, "model", str(best_dir), trial_id=f"{study_id}:{best.number}")
        store.add_artifact(study_id, "model_card", str(best_dir / "README.md"))
        wall = time.time() - t0
        store.finish_study(
            study_id,
            status="cancelled" if cancelled else "succeeded",
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
            route=decision,
            cancelled=cancelled,
            resumed_trials=len(previous),
        )
    except BaseException as exc:
        first_trial.set()  # a thread waiting for the first trial goes on (and ends)
        if watch is not None:
            watch.stop()
        if started:
            stop_ray(ray_settings)
        background.shutdown(wait=True, cancel_futures=True)
        if created:
            store.finish_study(
                study_id,
                status="cancelled" if cancel_requested(options.cancel_file) else "failed",
                error=str(exc) or type(exc).__name__,
                wall_s=time.time() - t0,
            )
        else:  # invalid input found beside Ray's start: leave nothing behind
            shutil.rmtree(work_dir, ignore_errors=True)
        raise
    finally:
        store.close()


def _create_study(store: Store, study_id: str, options: RunOptions, plan: _Plan) -> None:
    data, decision = plan.data, plan.decision
    store.create_study(
        study_id=study_id,
        dataset=data.source,
        task=data.task,
        track=decision.track,
        metric=plan.metric,
        mode=plan.mode,
        budget_s=options.budget.seconds,
        seed=options.seed,
        data_summary=_summary(data),
        cleaning={"lines": data.report.lines()},
        options={
            "space": plan.space.source,
            "max_trials": options.max_trials,
            "backbones": list(plan.paths),
            "ray_address": options.ray_address,
            "track_requested": options.track,
            "route": decision.reason,
            "cv": _cv_text(plan.folds, data) if plan.fewshot else "",
        },
    )


RESUME_REASON = "interrupted: its worker stopped before the trial ended (the job resumed)"


def _reopen(store: Store, study_id: str, plan: _Plan) -> tuple[list[TrialRecord], int]:
    """An interrupted study's finished trials as records (its unfinished ones are stored
    as failed), and the number for the next trial. A fine-tuned trial whose checkpoint is
    gone stays on the leaderboard but cannot be exported, so it is not among the records."""
    rows = store.reopen_study(study_id, RESUME_REASON)
    next_number = 1 + max((int(t["number"]) for t in store.trials(study_id)), default=0)
    study = store.get_study(study_id)
    if study.get("track") != plan.decision.track:
        raise ConfigError(
            f"study {study_id} ran the {study.get('track')} track, this attempt routed to "
            f"{plan.decision.track}: resume it with --track {study.get('track')}"
        )
    records = []
    for row in rows:
        if row["track"] == "reference":
            continue
        ckpt = row.get("checkpoint_dir")
        if not plan.fewshot and not (ckpt and Path(ckpt).is_dir()):
            continue
        epochs = tuple(
            EpochResult(
                epoch=int(e["epoch"]),
                metrics=dict(e.get("metrics") or {}),
                train_loss=float(e["train_loss"]) if e.get("train_loss") is not None else 0.0,
                seconds=float(e.get("seconds") or 0.0),
                improved=False,
            )
            for e in store.epochs(row["id"])
        )
        records.append(
            TrialRecord(
                trial_id=Path(ckpt).parent.name if ckpt else row["id"],
                number=int(row["number"]),
                status=row["status"],
                params=dict(row.get("params") or {}),
                epochs=epochs,
                best_metrics=dict(row.get("metrics") or {}),
                seconds=float(row.get("seconds") or 0.0),
                error=row.get("error"),
                checkpoint_dir=ckpt,
            )
        )
    return records, next_number


def _trials_left(max_trials: int | None, previous: list[TrialRecord]) -> int | None:
    if max_trials is None:
        return None
    return max(1, max_trials - len(previous))


class _CancelWatch:
    """Watches the cancel file; when it appears, moves the trials' shared deadline to now
    (they stop at their next step and report what they have) and freezes it there."""

    POLL_S = 0.25

    def __init__(
        self, cancel_file: str, deadline_file: Path, best_deadline: _BestDeadline | None
    ) -> None:
        self.cancel_file, self.deadline_file = cancel_file, deadline_file
        self.best_deadline = best_deadline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="automl-cancel", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.POLL_S):
            if cancel_requested(self.cancel_file):
                if self.best_deadline is not None:
                    self.best_deadline.frozen = True
                self.deadline_file.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.deadline_file.with_name(self.deadline_file.name + ".cancel")
                tmp.write_text(f"{time.time():.3f}", encoding="ascii")
                os.replace(tmp, self.deadline_file)
                logger.info("cancel requested: stopping the trials")
                return

    def stop(self) -> None:
        self._stop.set()


def _export_best(
    plan: _Plan,
    records: list[TrialRecord],
    trainer: Trainer,
    best_dir: Path,
    end: float,
    listener: RunListener,
) -> tuple[TrialRecord, dict[str, float]]:
    """Pick the best trial and write its model to best_dir (fine-tuning: copy its
    checkpoint; few-shot: refit its configuration on all training data); score the test
    split with the exported folder, through the code path of `automl predict`."""
    data = plan.data
    if plan.fewshot:
        best = _pick_best_cv(
            records,
            plan.metric,
            plan.mode,
            len(plan.folds),
            end - time.time(),
            n_texts=len(data.train) + len(data.val),
        )
        listener.stage(
            f"refitting trial {best.number} on all {len(data.train) + len(data.val)} "
            "training examples" + (" and scoring the test split" if len(data.test) else "")
        )
        bb = str(best.params.get("backbone"))
        params = {**best.params, "backbone_path": plan.paths.get(bb, bb)}
        assert isinstance(trainer, TrainerRef)
        refit = trainer.load().refit  # type: ignore[attr-defined]
        refit(data, params, str(best_dir), deadline=end - plan.export_s - EXIT_S)
    else:
        best = _pick_best(records, plan.metric, plan.mode)
        listener.stage(f"exporting trial {best.number} and scoring the test split")
        assert best.checkpoint_dir is not None
        copy_checkpoint(best.checkpoint_dir, best_dir)
    test_metrics = evaluate(best_dir, data.test.texts, data.test.labels) if len(data.test) else {}
    return best, test_metrics


def _trainer(track: str, modality: str = "text") -> Trainer:
    """The track's trainer, by name: each trial worker imports it (torch, transformers:
    1-2 s), the driver does not until it refits or exports."""
    if modality == "image":
        if track == "fewshot":
            return TrainerRef(
                "automl.trainers.image_fewshot",
                "ImageFewShotTrainer",
                n_splits=CV_SPLITS,
                n_repeats=CV_REPEATS,
            )
        return TrainerRef("automl.trainers.image", "ImageTrainer")
    if track == "fewshot":
        return TrainerRef(
            "automl.trainers.fewshot", "FewShotTrainer", n_splits=CV_SPLITS, n_repeats=CV_REPEATS
        )
    return TrainerRef("automl.trainers.finetune", "FineTuneTrainer")


def _plan(
    options: RunOptions,
    checked: CheckedData,
    user_space: SearchSpace | None,
    t0: float,
    end: float,
) -> _Plan:
    """Split, route, choose the space and plan the deadlines (raising BudgetError when the
    budget cannot fit a trial)."""
    data = split_checked(checked, seed=options.seed)
    decision, space = _route(options, data, user_space)
    fewshot = decision.track == "fewshot"
    no_test_reason = ""
    if fewshot:
        data, no_test_reason = _fewshot_splits(data)
    metric = "macro_f1" if data.task == "classification" else "rmse"
    image = data.modality == "image"
    bb_spec = space.get("backbone")
    len_spec = space.get("image_size" if image else "max_length")
    names = [str(v) for v in bb_spec.values] if bb_spec else []
    depth = {n: backbones.BACKBONES[n].num_layers for n in names if n in backbones.BACKBONES}
    lengths = [int(v) for v in len_spec.values] if len_spec and len_spec.values else [128]
    # Estimates err by a few percent (a trial's last evaluation, the export on a busy
    # machine): keep 0.5 % of the budget back (3 s of 10 minutes, 0.3 s of one).
    after = EXIT_S + SAFETY_SHARE * options.budget.seconds
    if fewshot:  # the winner is refitted on all data after the search
        after += REFIT_SHARE * max(0.0, end - time.time() - RAY_STARTUP_S)
    # Each trial stops in time for its own model's export; none runs past `latest`.
    if image:
        trial_deadline = TrialDeadline.plan_images(
            end, len(data.test), lengths, names, floor=RAY_SHUTDOWN_S, after=after
        )
    else:
        trial_deadline = TrialDeadline.plan(
            end, data.test.texts, lengths, depth or {"": 6}, floor=RAY_SHUTDOWN_S, after=after
        )
    export_s = end - after - trial_deadline.earliest()
    search = True
    if trial_deadline.earliest() - time.time() < RAY_STARTUP_S + MIN_SEARCH_S:
        need = (time.time() - t0) + RAY_STARTUP_S + MIN_SEARCH_S + export_s + after
        if not options.resume_study:
            raise BudgetError(
                f"a budget of {options.budget} is too small for this dataset: start-up, one "
                f"short trial and export need about {need:.0f} s; use --budget "
                f"{int(need) + 30}s or more"
            )
        search = False
    # an unknown name is a clear error now
    if image:
        from automl.vision import backbones as image_backbones

        paths = {n: str(image_backbones.resolve(n)) for n in names}
    else:
        paths = {n: str(backbones.resolve(n)) for n in names}
    folds: list[tuple[Any, Any]] = []
    if fewshot:
        from automl.cv import cv_folds

        labels = list(data.train.labels) + list(data.val.labels)
        folds = cv_folds(labels, CV_SPLITS, CV_REPEATS, options.seed)
    plan = _Plan(
        data=data,
        decision=decision,
        space=space,
        no_test_reason=no_test_reason,
        metric=metric,
        mode=METRIC_MODES[metric],
        paths=paths,
        trial_deadline=trial_deadline,
        export_s=export_s,
        folds=folds,
        search=search,
    )
    return plan


def _fit_reference(plan: _Plan, seed: int) -> ReferenceResult:
    """The TF-IDF (or raw-pixel) reference on the plan's split: cross-validated on the
    few-shot track's folds, else trained on train and scored on validation and test."""
    if plan.fewshot:
        return fit_reference_cv(plan.data, plan.folds, seed)
    return fit_reference(plan.data, seed)


def _after(
    event: threading.Event, fn: Callable[..., T], timeout: float = 10.0
) -> Callable[..., T]:
    """fn, run once `event` is set (or `timeout` seconds have passed)."""

    def wait_then_run(*args: Any) -> T:
        event.wait(timeout=timeout)
        return fn(*args)

    return wait_then_run


def _route(
    options: RunOptions, data: PreparedData, user_space: SearchSpace | None
) -> tuple[RouteDecision, SearchSpace]:
    """Pick the track (from the data, or --track, or the track of a --space file) and its
    search space."""
    labels = list(data.train.labels) + list(data.val.labels) + list(data.test.labels)
    requested = options.track
    if user_space is not None and requested == "auto":
        requested = user_space.track  # the user's space file names its track
    if user_space is not None and user_space.modality != data.modality:
        raise ConfigError(
            f"--space {options.space} is a space for {user_space.modality} data but "
            f"{data.source} holds {data.modality} data: pass a {data.modality} space "
            f"(e.g. {default_space_path(user_space.track, data.modality)})"
        )
    decision = route(labels, data.task, options.budget.seconds, requested, data.modality)
    if user_space is not None and user_space.track != decision.track:
        raise ConfigError(
            f"--space {options.space} is a {user_space.track!r} space but the track is "
            f"{decision.track!r}: pass a {decision.track} space or --track {user_space.track}"
        )
    space = user_space or load_space(None, track=decision.track, modality=data.modality)
    if options.backbones:
        space = space.with_choices("backbone", list(options.backbones))
    if user_space is None and decision.track == "fewshot" and data.modality == "text":
        space = _fewshot_methods(space, options.budget.seconds, decision.min_per_class)
    if user_space is None and decision.track == "finetune" and data.modality == "text":
        space = _fill_short_budget(space, options.budget.seconds)  # measured on text only
    return decision, space


def _fill_short_budget(space: SearchSpace, budget_s: float) -> SearchSpace:
    """In a budget under SHORT_BUDGET_S each trial slot fits one trial (on 2 CPU cores the
    starting configuration's first epoch alone takes a third of a minute), so the starting
    trial is the model the run delivers: it may train up to the space's most epochs rather
    than finish a few seconds early with nothing left to start. Early stopping still ends
    it when validation stops improving, and the deadline cuts it with a last partial epoch.
    (With 5 epochs a 1-minute Fortunes-8 study's first trial ended 1-2 s before its
    deadline, and the other slot's trial could not report again: benchmarks/budget.py.)"""
    epochs = space.get("epochs")
    if budget_s >= SHORT_BUDGET_S or epochs is None or epochs.high is None:
        return space
    return space.with_init("epochs", int(epochs.high))


def _fewshot_methods(space: SearchSpace, budget_s: float, min_per_class: int = 0) -> SearchSpace:
    """The few-shot methods worth searching here:

    - Without a GPU, SetFit only from SETFIT_MIN_BUDGET_S on: one of its folds takes
      20-50 s on a CPU core (a step of 16 sentence pairs at 256 tokens takes seconds), so
      in a shorter budget its trials take both cores and finish nothing while heads on
      cached embeddings would have run hundreds of folds.
    - logreg_tfidf only when the smallest class has TFIDF_MIN_PER_CLASS examples: on the
      few-shot benchmark's samples (MiniLM-L6 + logistic regression, alone or averaged
      with TF-IDF + logistic regression, chosen by 4-fold CV) choosing by CV gained at 32
      per class (0.726 vs 0.712 test macro-F1, mean of 4 datasets x 2 seeds) and lost at
      8 (0.636 vs 0.647): folds of 16 texts cannot tell the two apart."""
    spec = space.get("method")
    if spec is None:
        return space
    values = list(spec.values or ())
    keep = list(values)
    if budget_s < SETFIT_MIN_BUDGET_S and not _has_gpu() and "setfit" in keep:
        logger.info(
            "few-shot: SetFit not searched within a %.0f s budget on CPU (from %.0f s on)",
            budget_s,
            SETFIT_MIN_BUDGET_S,
        )
        keep.remove("setfit")
    if min_per_class < TFIDF_MIN_PER_CLASS and "logreg_tfidf" in keep:
        logger.info(
            "few-shot: logreg_tfidf not searched with %d examples in the smallest class "
            "(from %d on)",
            min_per_class,
            TFIDF_MIN_PER_CLASS,
        )
        keep.remove("logreg_tfidf")
    if not keep or keep == values:
        return space
    return space.with_choices("method", keep)


def _has_gpu() -> bool:
    """A CUDA device is present (checked without importing torch in the driver)."""
    return bool(shutil.which("nvidia-smi")) or Path("/dev/nvidia0").exists()


def _fewshot_splits(data: PreparedData) -> tuple[PreparedData, str]:
    """Few-shot data: validation rows join train (cross-validation replaces them); the
    test split stays only when every class can spare examples for it."""
    labels = list(data.train.labels) + list(data.val.labels) + list(data.test.labels)
    empty = Split(texts=(), labels=())
    if holdout_test(labels):
        train = Split(data.train.texts + data.val.texts, data.train.labels + data.val.labels)
        return replace(data, train=train, val=empty), ""
    train = Split(
        data.train.texts + data.val.texts + data.test.texts,
        data.train.labels + data.val.labels + data.test.labels,
    )
    smallest = min(Counter(labels).values())
    reason = (
        f"the smallest class has {smallest} examples, too few to hold any out without "
        "weakening the model"
    )
    return replace(data, train=train, val=empty, test=empty), reason


def _cv_text(folds: list[tuple[Any, Any]], data: PreparedData) -> str:
    return (
        f"{CV_SPLITS}-fold stratified cross-validation x {CV_REPEATS} repeats "
        f"({len(folds)} folds) on the {len(data.train) + len(data.val)} training examples"
    )


def _warm_export(trainer: Trainer, backbone_paths: list[str]) -> None:
    """While the trials run: import what the export needs (torch, transformers, the
    backbones' modelling code; the few-shot trainer, which refits in this process)."""
    from automl import modelio

    if isinstance(trainer, TrainerRef) and trainer.module.startswith("automl.trainers.image"):
        trainer.load()  # torch, the vision modules (and the few-shot refit's sklearn)
        return
    modelio.warm_up(backbone_paths)
    if isinstance(trainer, TrainerRef) and trainer.module == "automl.trainers.fewshot":
        trainer.load()
        import setfit  # noqa: F401  - the refit builds a SetFitModel (~3 s to import)

        from automl.embeddings import load_body

        for path in backbone_paths:  # the refit's body; its embeddings are cached on disk
            load_body(path)


def _low_priority(fn: Callable[..., T], *args: Any) -> T:
    """Run fn in this thread at a lower CPU priority (Linux threads have their own nice
    value), so Ray's start-up and the trials get the cores first."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # not Linux, or not permitted: run as is
        pass
    return fn(*args)


def _pick_best(records: list[TrialRecord], metric: str, mode: str) -> TrialRecord:
    usable = [r for r in records if r.checkpoint_dir and metric in r.best_metrics]
    if not usable:
        errors = sorted({r.error for r in records if r.error})
        detail = f" (trial errors: {'; '.join(errors)[:300]})" if errors else ""
        raise BudgetError(f"no trial finished an epoch within the budget{detail}: raise --budget")
    sign = 1.0 if mode == "max" else -1.0
    return max(usable, key=lambda r: (sign * r.best_metrics[metric], -r.number))


def _pick_best_cv(
    records: list[TrialRecord],
    metric: str,
    mode: str,
    folds: int,
    seconds_left: float,
    n_texts: int | None = None,
) -> TrialRecord:
    """The cross-validated winner: among the trials that reported at least half the folds
    (a lucky first fold is not an estimate), the EARLIEST whose mean score is within one
    standard error of the best mean (the one-standard-error rule). Hundreds of cheap
    head-only trials make the top mean an optimistic pick among ties; the earliest tied
    trial is the space's starting point (the library default) or the first configuration
    found that clearly beat it. The standard error is the larger of the folds' (their
    std over sqrt(folds per repeat): repeats reuse the same texts) and that of a score
    measured on `n_texts` texts, sqrt(m(1-m)/n): every fold scores the same few texts, and
    with 64 of them a configuration that reads them well may still do worse on new ones
    (MR, 32 per class: MiniLM-L3 heads led the CV by 0.05 and trailed on the test split by
    0.09). A configuration whose refit would not fit in the time left gives way to the
    next one."""
    scored = [r for r in records if metric in r.best_metrics and r.epochs]
    if not scored:
        errors = sorted({r.error for r in records if r.error})
        detail = f" (trial errors: {'; '.join(errors)[:300]})" if errors else ""
        raise BudgetError(f"no trial finished a fold within the budget{detail}: raise --budget")
    most = max(len(r.epochs) for r in scored)
    pool = [r for r in scored if len(r.epochs) >= min(most, max(1, folds // 2))]
    sign = 1.0 if mode == "max" else -1.0
    top = max(pool, key=lambda r: (sign * r.best_metrics[metric], -r.number))
    per_repeat = max(1, min(len(top.epochs), folds // CV_REPEATS or 1))
    se = top.best_metrics.get(f"{metric}_std", 0.0) / math.sqrt(per_repeat)
    if n_texts:
        m = min(1.0, max(0.0, top.best_metrics[metric]))
        se = max(se, math.sqrt(m * (1.0 - m) / n_texts))
    floor = sign * top.best_metrics[metric] - (se if math.isfinite(se) else 0.0)
    tied = sorted(
        (r for r in pool if sign * r.best_metrics[metric] >= floor), key=lambda r: r.number
    )
    rest = sorted(
        (r for r in pool if r not in tied),
        key=lambda r: (-sign * r.best_metrics[metric], r.number),
    )
    ranked = tied + rest
    for r in ranked:
        if r.params.get("method") in HEAD_ONLY_METHODS:
            return r  # its embeddings are cached: the refit fits a linear head
        per_fold = r.epochs[-1].seconds / len(r.epochs)
        if per_fold * 1.5 <= seconds_left:  # all data is ~1.3x a fold's training data
            return r
    return min(ranked, key=lambda r: r.epochs[-1].seconds / len(r.epochs))


def _summary(data: PreparedData) -> dict[str, Any]:
    return {
        "rows": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
        "task": data.task,
        "label_names": list(data.label_names),
        "text_columns": list(data.text_columns),
        "label_column": data.label_column,
        "modality": data.modality,
    }


__all__ = ["ConfigError", "RunListener", "RunOptions", "RunResult", "run"]
