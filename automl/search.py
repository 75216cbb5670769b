"""Ray Tune + OptunaSearch + ASHA within a hard deadline. The only module that imports ray
and optuna.

`run_search` takes data, a search space, a trainer and an observer, and returns frozen
trial records. It never touches the store: the caller's observer does, so the search can
be tested without a database.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from automl.config import EpochResult, PreparedData, Split, TrialContext, TrialRecord
from automl.spaces import SearchSpace
from automl.trainers.base import Trainer

logger = logging.getLogger(__name__)

DONE_FILE = "done.json"
THREADS_FILE = "threads"  # in the work dir: CPU threads each running trial may use now
CANCEL_GRACE_S = 3.0  # after a cancel, running trials get this long to report and end
# Reported alongside the trainer's metrics; everything else in a result is Ray's.
_AUX_KEYS = ("epoch", "train_loss", "trial_seconds", "improved", "metric_names")
# Ray's unix socket paths must stay under ~107 characters.
_MAX_RAY_TMP_LEN = 40


class SearchObserver(Protocol):
    """Receives progress in the driver process as it happens (store writes, progress bar)."""

    def trial_started(self, number: int, params: dict[str, Any]) -> None: ...

    def epoch_reported(self, number: int, epoch: EpochResult) -> None: ...

    def trial_ended(self, record: TrialRecord) -> None: ...


class NullObserver:
    """An observer that ignores everything."""

    def trial_started(self, number: int, params: dict[str, Any]) -> None:
        pass

    def epoch_reported(self, number: int, epoch: EpochResult) -> None:
        pass

    def trial_ended(self, record: TrialRecord) -> None:
        pass


@dataclass(frozen=True)
class SearchSettings:
    """How to search. `deadline` is a time.time() value: no trial runs past it."""

    deadline: float
    work_dir: str  # trial checkpoints go to <work_dir>/trials/<trial_id>/best
    metric: str = "macro_f1"
    mode: str = "max"
    max_trials: int | None = None  # None: as many as the deadline allows
    seed: int = 0
    num_cpus: int | None = None  # local Ray: None = all cores
    cpus_per_trial: int = 1
    ray_address: str | None = None  # connect to an existing cluster instead of starting one
    backbone_paths: dict[str, str] = field(default_factory=dict)
    # Do not start a trial with less than this left: it could not finish one epoch.
    min_trial_seconds: float = 5.0
    # ASHA: rungs at 1, 2, 4, ... epochs; a trial below the top 1/reduction_factor stops.
    reduction_factor: int = 2
    grace_period: int = 1
    # Reports a trial plans to make (ASHA's max_t). None: the space's largest `epochs`.
    # A cross-validating trainer reports once per fold and sets it to the number of folds.
    max_reports: int | None = None
    # How a trial is scored: "best_report" (the best epoch: early stopping keeps that
    # checkpoint) or "last_report" (a running cross-validation mean: the latest is the
    # estimate over the most folds).
    score: str = "best_report"
    # A trial's own deadline from its params (never after `deadline`), e.g. earlier for a
    # model that takes longer to export; picklable (trials call it). None: `deadline`.
    trial_deadline: Callable[[dict[str, Any]], float] | None = None
    # A file whose value (a time.time()) trials re-read and obey when it is earlier than
    # their own deadline: the caller moves it as the best model so far changes.
    deadline_file: str | None = None
    # A file whose existence cancels the search: no trial starts after it appears, and
    # Tune stops the running ones CANCEL_GRACE_S later (the caller also moves the
    # deadline file to now, so trials end at their next step with what they have).
    cancel_file: str | None = None
    # Resuming a study: the number of the first new trial, and the trials already done
    # as (params, score, pruned), told to Optuna so that its sampler goes on from them.
    first_number: int = 1
    previous: tuple[tuple[dict[str, Any], float, bool], ...] = ()
    # (param, values): trials whose param takes one of these values are never stopped by
    # ASHA (their reports still fill its rungs), e.g. few-shot heads on cached embeddings
    # whose every fold costs milliseconds: stopping them saves nothing and loses folds.
    unprunable: tuple[str, tuple[Any, ...]] | None = None


def run_search(
    data: PreparedData,
    space: SearchSpace,
    trainer: Trainer,
    settings: SearchSettings,
    observer: SearchObserver | None = None,
    ray_ready: Callable[[], None] | None = None,
) -> list[TrialRecord]:
    """Search `space` with `trainer` until the deadline or `max_trials`; return all trials.

    The test split is dropped before data reaches the trials. Failed trials come back as
    records with status "failed" and the error text; the search goes on.
    """
    observer = observer or NullObserver()
    data = replace(data, test=Split(texts=(), labels=()))  # the search never sees test
    _quiet_ray()
    import optuna
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started_ray = _init_ray(settings)
    if ray_ready:
        ray_ready()
    try:
        concurrency = _concurrency(settings)
        max_t = _max_reports(space, settings)
        trials_dir = Path(settings.work_dir) / "trials"
        trials_dir.mkdir(parents=True, exist_ok=True)
        collector = _Collector(observer, settings, trials_dir)
        collector.cpus = int(ray.cluster_resources().get("CPU", 1))
        optuna_search = OptunaSearch(
            space=_optuna_space(space),
            metric=settings.metric,
            mode=settings.mode,
            # a resumed study ran its starting point already
            points_to_evaluate=[] if settings.previous else [space.init_config()],
            sampler=optuna.samplers.TPESampler(seed=settings.seed, n_startup_trials=4),
        )
        _tell_previous(optuna_search, space, settings.previous)
        searcher = _DeadlineLimiter(
            optuna_search, max_concurrent=concurrency, cutoff=collector.start_cutoff
        )
        scheduler = _asha_class(ASHAScheduler)(
            time_attr="training_iteration",
            max_t=max_t,
            grace_period=settings.grace_period,
            reduction_factor=settings.reduction_factor,
            unprunable=settings.unprunable,
            spare=collector.spare_from_pruning,
        )
        trainable = tune.with_parameters(
            _run_trial,
            data=data,
            trainer=trainer,
            backbone_paths=dict(settings.backbone_paths),
            deadline=settings.deadline,
            metric=settings.metric,
            mode=settings.mode,
            seed=settings.seed,
            trials_dir=str(trials_dir.resolve()),
            max_reports=settings.max_reports,
            trial_deadline=settings.trial_deadline,
            deadline_file=settings.deadline_file,
        )
        tuner = tune.Tuner(
            tune.with_resources(trainable, _trial_resources(settings, concurrency)),
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=scheduler,
                metric=settings.metric,
                mode=settings.mode,
                num_samples=settings.max_trials or -1,
                # Trainers stop themselves at the deadline and report a last partial
                # epoch; Ray's own stop is a backstop a second later.
                time_budget_s=max(1.0, settings.deadline - time.time() + 1.0),
                reuse_actors=True,
                max_concurrent_trials=concurrency,
            ),
            run_config=tune.RunConfig(
                name="tune",
                stop=_cancel_stopper(settings.cancel_file),
                storage_path=str((Path(settings.work_dir) / "ray_results").resolve()),
                verbose=0,
                callbacks=[collector._tune_callback],
                log_to_file=False,
            ),
        )
        tuner.fit()
        return collector.records()
    finally:
        if started_ray:
            stop_ray(settings)


def _asha_class(base: type) -> type:
    """ASHA that lets `unprunable` trials run on (see SearchSettings.unprunable)."""
    from ray.tune.schedulers import TrialScheduler

    class Asha(base):  # type: ignore[misc, valid-type]
        def __init__(
            self,
            *,
            unprunable: tuple[str, tuple[Any, ...]] | None = None,
            spare: Callable[[Any], bool] | None = None,
            **kw: Any,
        ) -> None:
            super().__init__(**kw)
            self.unprunable = unprunable
            self.spare = spare  # spare(trial): let a trial ASHA would stop run on

        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
            decision = super().on_trial_result(tune_controller, trial, result)
            if (
                decision == TrialScheduler.STOP
                and result.get("training_iteration", 0) < self._max_t
                and (
                    _unprunable(self.unprunable, trial.config)
                    or (self.spare is not None and self.spare(trial))
                )
            ):
                return TrialScheduler.CONTINUE
            return decision

    return Asha


def _unprunable(rule: tuple[str, tuple[Any, ...]] | None, config: dict[str, Any]) -> bool:
    """Whether a trial's config matches SearchSettings.unprunable (param, values)."""
    if rule is None:
        return False
    key, values = rule
    return config.get(key) in values


def _tell_previous(
    searcher: Any, space: SearchSpace, previous: tuple[tuple[dict[str, Any], float, bool], ...]
) -> None:
    """Give Optuna the trials of an interrupted attempt of this study (not rerun)."""
    names = {p.name for p in space.params}
    for params, value, pruned in previous:
        point = {k: v for k, v in params.items() if k in names}
        if len(point) != len(names) or value != value:
            continue  # from another space, or no score: Optuna cannot use it
        try:
            searcher.add_evaluated_point(point, float(value), pruned=pruned)
        except (ValueError, TypeError, KeyError) as exc:  # e.g. a value outside the space
            logger.debug("previous trial %s not told to Optuna: %s", point, exc)


def cancel_requested(cancel_file: str | None) -> bool:
    """Has the search been cancelled (does its cancel file exist)?"""
    return cancel_file is not None and os.path.exists(cancel_file)


def _cancel_stopper(cancel_file: str | None) -> Any:
    """A Tune stopper that ends the experiment CANCEL_GRACE_S after the cancel file
    appears (trials normally end sooner: their deadline moved to the cancel time)."""
    if cancel_file is None:
        return None
    from ray.tune import Stopper

    class CancelStopper(Stopper):  # type: ignore[misc]
        def __init__(self, path: str) -> None:
            self.path = path
            self.seen: float | None = None

        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            return False

        def stop_all(self) -> bool:
            if self.seen is None:
                if not os.path.exists(self.path):
                    return False
                self.seen = time.time()
            return time.time() - self.seen >= CANCEL_GRACE_S

    return CancelStopper(cancel_file)


def _max_reports(space: SearchSpace, settings: SearchSettings) -> int:
    if settings.max_reports:
        return int(settings.max_reports)
    epochs_spec = space.get("epochs")
    return int(epochs_spec.high) if epochs_spec and epochs_spec.high else 10


def warm_imports() -> None:
    """Import Ray Tune, Optuna and their search classes now (about 1 s on 2 cores), so a
    caller can overlap it with Ray's start-up instead of paying it when the search starts."""
    _quiet_ray()
    import optuna
    from ray import tune  # noqa: F401
    from ray.tune.schedulers import ASHAScheduler  # noqa: F401
    from ray.tune.search.optuna import OptunaSearch  # noqa: F401

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:  # pydantic, which Ray's serializer imports at the first put (0.2 s on 2 cores)
        import ray._common.pydantic_compat  # noqa: F401
    except ImportError:  # another Ray layout: it is imported when needed
        pass


def _quiet_ray() -> None:
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", "1")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "1e9")
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "0")
    # Tune's default loggers (CSV, JSON, TensorBoard) are not read here: trial events reach
    # the store through our callback. The TensorBoard one imports torch in the driver,
    # which delayed the first trial by about 1.5 s on 2 cores.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # A trial that reports no epoch (it started too close to the deadline) is a record, not
    # a TuneError that ends the whole search.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    # Trial errors become failed rows in the leaderboard; Ray's tracebacks stay off the
    # console (they are kept in the run folder's ray_results).
    for name in ("ray", "ray.tune", "ray.train", "ray.data", "ray.air"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def ray_temp_dir(work_dir: str | Path) -> str:
    """Ray's session files live in `<work_dir>/ray`. Ray's unix socket paths must stay
    under 107 bytes, so when that folder's path is long, Ray is given a short symlink to
    it under the system temp folder (the files still land in the run folder)."""
    target = Path(work_dir).resolve() / "ray"
    target.mkdir(parents=True, exist_ok=True)
    if len(str(target)) <= _MAX_RAY_TMP_LEN:
        return str(target)
    link = Path(tempfile.mkdtemp(prefix="aml-", dir="/tmp" if os.path.isdir("/tmp") else None))
    link.rmdir()
    link.symlink_to(target, target_is_directory=True)
    return str(link)


def start_ray(settings: SearchSettings) -> bool:
    """Start a local Ray (or connect to `ray_address`) ahead of the search, so its start-up
    overlaps other work. Returns True when this call started it (then call stop_ray)."""
    _quiet_ray()
    return _init_ray(settings)


def stop_ray(settings: SearchSettings | None = None) -> None:
    """Shut down the Ray session started by start_ray (and remove a short symlink)."""
    import gc

    import ray

    if ray.is_initialized():
        # Tune leaves reference cycles holding ObjectRefs; were they collected after the
        # shutdown (in a later Ray session of this process), Ray would end the process.
        gc.collect()
        ray.shutdown()
    if settings is not None:
        _remove_link(settings)


def _remove_link(settings: SearchSettings) -> None:
    target = (Path(settings.work_dir).resolve() / "ray").resolve()
    tmp = Path("/tmp")
    for link in tmp.glob("aml-*") if tmp.is_dir() else []:
        if link.is_symlink() and link.resolve() == target:
            link.unlink()


def _init_ray(settings: SearchSettings) -> bool:
    """Start (or connect to) Ray. Returns True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    common: dict[str, Any] = {
        "logging_level": logging.ERROR,
        "log_to_driver": False,
        "include_dashboard": False,
        "configure_logging": True,
    }
    if settings.ray_address:
        ray.init(address=settings.ray_address, **common)
    else:
        with _lean_local_ray():
            ray.init(
                num_cpus=settings.num_cpus or os.cpu_count() or 1,
                _temp_dir=ray_temp_dir(settings.work_dir),
                **common,
            )
    return True


@contextmanager
def _lean_local_ray() -> Iterator[None]:
    """Start a local Ray without three helper processes a local Tune search never uses.
    Each is a Python process that imports Ray while ray.init runs, on cores the driver,
    the raylet and the first trial's worker are waiting for:

    - the dashboard/API server (started even with include_dashboard=False, then with only
      its usage-stats module, and usage stats are off; ray.init waits for it before it
      starts the raylet): Ray treats it as one that failed to start, which
      include_dashboard=False tolerates;
    - the autoscaler monitor: a local cluster has a fixed size, nothing to scale;
    - the log monitor: it forwards workers' output to the driver, and log_to_driver is off
      (workers still write their logs to the session folder).

    Where Ray's layout differs, Ray starts them as usual. Set AUTOML_RAY_FULL=1 to keep
    them (e.g. to use `ray list` or `ray status` on the run's cluster)."""
    try:
        import ray._private.services as services
        from ray._private.node import Node
    except ImportError:  # another Ray layout
        yield
        return
    if os.environ.get("AUTOML_RAY_FULL") == "1":
        yield
        return
    patches: list[tuple[Any, str, Any]] = []
    original_api = getattr(services, "start_api_server", None)
    if original_api is not None:

        def start_api_server(include_dashboard: bool | None, *args: Any, **kwargs: Any) -> Any:
            if include_dashboard is False:
                logger.debug("local Ray: its dashboard/API server process is not started")
                return "", None
            return original_api(include_dashboard, *args, **kwargs)

        patches.append((services, "start_api_server", start_api_server))
    for name in ("start_monitor", "start_log_monitor"):
        if callable(vars(Node).get(name)):  # defined on Node itself: restorable as is

            def skip(self: Any, _name: str = name) -> None:
                logger.debug("local Ray: %s skipped", _name)

            patches.append((Node, name, skip))
    saved = [(owner, name, owner.__dict__[name]) for owner, name, _ in patches]
    for owner, name, fn in patches:
        setattr(owner, name, fn)
    try:
        yield
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


def _concurrency(settings: SearchSettings) -> int:
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 1))
    n = max(1, cpus // max(1, settings.cpus_per_trial))
    return min(n, settings.max_trials) if settings.max_trials else n


def _trial_resources(settings: SearchSettings, concurrency: int) -> dict[str, float]:
    import ray

    res: dict[str, float] = {"cpu": settings.cpus_per_trial}
    gpus = float(ray.cluster_resources().get("GPU", 0))
    if gpus > 0:  # share the GPU(s) between the concurrent trials
        res["gpu"] = min(1.0, gpus / concurrency)
    return res


def _optuna_space(space: SearchSpace) -> dict[str, Any]:
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    out: dict[str, Any] = {}
    for p in space.params:
        if p.type == "choice":
            out[p.name] = CategoricalDistribution(list(p.values))
        elif p.type == "int":
            assert p.low is not None and p.high is not None
            out[p.name] = IntDistribution(int(p.low), int(p.high), log=p.log)
        else:
            assert p.low is not None and p.high is not None
            out[p.name] = FloatDistribution(float(p.low), float(p.high), log=p.log)
    return out


def _make_limiter_class() -> type:
    from ray.tune.search import ConcurrencyLimiter, Searcher

    class DeadlineLimiter(ConcurrencyLimiter):  # type: ignore[misc]
        """Limits concurrency and suggests nothing once too little time is left."""

        def __init__(
            self, searcher: Any, max_concurrent: int, cutoff: Callable[[], float]
        ) -> None:
            super().__init__(searcher, max_concurrent=max_concurrent)
            self.cutoff = cutoff

        def suggest(self, trial_id: str) -> Any:
            if time.time() >= self.cutoff():
                # A running trial's next report may move the cutoff later (a head-only
                # trial's second fold shows what a new one costs): wait for it. Finished
                # only once no trial runs.
                return None if self.live_trials else Searcher.FINISHED
            return super().suggest(trial_id)

    return DeadlineLimiter


def _DeadlineLimiter(  # noqa: N802
    searcher: Any, max_concurrent: int, cutoff: Callable[[], float]
) -> Any:
    return _make_limiter_class()(searcher, max_concurrent, cutoff)


def _run_trial(
    config: dict[str, Any],
    *,
    data: PreparedData,
    trainer: Trainer,
    backbone_paths: dict[str, str],
    deadline: float,
    metric: str,
    mode: str,
    seed: int,
    trials_dir: str,
    max_reports: int | None = None,
    trial_deadline: Callable[[dict[str, Any]], float] | None = None,
    deadline_file: str | None = None,
) -> None:
    """Runs inside a Ray worker: one configuration, one report per epoch (or fold)."""
    import torch
    from ray import tune

    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    trial_id = tune.get_context().get_trial_id()
    out = Path(trials_dir) / trial_id
    out.mkdir(parents=True, exist_ok=True)
    params = dict(config)
    name = str(params.get("backbone", ""))
    params["backbone_path"] = backbone_paths.get(name, name)
    if trial_deadline is not None:
        deadline = min(deadline, trial_deadline(params))
    threads_file = str(Path(trials_dir).parent / THREADS_FILE)
    ctx = TrialContext(
        output_dir=str(out / "best"),
        deadline=deadline,
        seed=seed,
        metric=metric,
        mode="min" if mode == "min" else "max",
        deadline_file=deadline_file,
        threads_file=threads_file,
    )

    def report(ep: EpochResult) -> None:
        tune.report(
            {
                **ep.metrics,
                "epoch": ep.epoch,
                "train_loss": ep.train_loss,
                "trial_seconds": ep.seconds,
                "improved": ep.improved,
                "metric_names": ",".join(ep.metrics),
            }
        )

    epochs = trainer.fit(data, params, ctx, report)
    cut = len(epochs) < max_reports if max_reports else _cut_short(epochs, params)
    (out / DONE_FILE).write_text(json.dumps({"epochs": len(epochs), "cut_by_deadline": cut}))


def _cut_short(epochs: list[EpochResult], params: dict[str, Any]) -> bool:
    """Did the trial end before its planned epochs without early stopping (the deadline)?"""
    if not epochs:
        return True
    if len(epochs) >= int(params.get("epochs", 0) or 0):
        return False
    last_improved = max((i for i, e in enumerate(epochs) if e.improved), default=-1)
    return len(epochs) - 1 - last_improved < int(params.get("patience", 1) or 1)


class _Collector:
    """A Ray Tune callback (duck-typed) that turns Tune's events into frozen records."""

    def __init__(self, observer: SearchObserver, settings: SearchSettings, trials_dir: Path):
        self.observer = observer
        self.settings = settings
        self.trials_dir = trials_dir
        self.numbers: dict[str, int] = {}
        self.params: dict[str, dict[str, Any]] = {}
        self.epochs: dict[str, list[EpochResult]] = {}
        self.started: dict[str, float] = {}
        self.done: dict[str, TrialRecord] = {}
        self.cpus = 1  # set by run_search from the cluster's CPUs
        self.threads = 0  # last value written to the threads file
        self._tune_callback = self._as_tune_callback()

    # Ray checks isinstance(cb, Callback): build a real subclass that forwards here.
    def _as_tune_callback(self) -> Any:
        from ray.tune import Callback

        outer = self

        class _Forward(Callback):  # type: ignore[misc]
            # Tune pickles its callbacks into the experiment state; this one holds the
            # observer (a store connection), so it pickles to a no-op callback.
            def __reduce__(self) -> Any:
                return (Callback, ())

            def on_trial_start(self, iteration: int, trials: Any, trial: Any, **info: Any) -> None:
                outer.on_start(trial)

            def on_trial_result(
                self, iteration: int, trials: Any, trial: Any, result: dict, **info: Any
            ) -> None:
                outer.on_result(trial, result)

            def on_trial_complete(
                self, iteration: int, trials: Any, trial: Any, **info: Any
            ) -> None:
                outer.on_end(trial, error=None)

            def on_trial_error(self, iteration: int, trials: Any, trial: Any, **info: Any) -> None:
                outer.on_end(trial, error=_trial_error_text(trial))

            def on_experiment_end(self, trials: Any, **info: Any) -> None:
                for t in trials:  # trials stopped by the time budget end without an event
                    if t.trial_id in outer.numbers and t.trial_id not in outer.done:
                        outer.on_end(t, error=None)

        return _Forward()

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its search algorithm, whose cutoff is a method of this collector,
        # into the experiment state: leave the observer (a store connection) behind.
        return {**self.__dict__, "observer": NullObserver(), "_tune_callback": None}

    def start_cutoff(self) -> float:
        """No new trial after this time: it could not report a first epoch before the
        deadline (judged by the fastest first epoch seen so far)."""
        if cancel_requested(self.settings.cancel_file):
            return 0.0
        firsts = [eps[0].seconds for eps in self.epochs.values() if eps]
        # A head-only trial (settings.unprunable) pays for its embeddings before its first
        # report, once: a new one on the same cached embeddings needs a fold's time. (Two
        # such trials that started together, both computing the embeddings, ended a 60 s
        # study at 26 s: no third trial could "report in time".)
        firsts += [
            eps[1].seconds - eps[0].seconds
            for tid, eps in self.epochs.items()
            if len(eps) > 1 and _unprunable(self.settings.unprunable, self.params.get(tid, {}))
        ]
        need = max(self.settings.min_trial_seconds, min(firsts) if firsts else 0.0)
        return self.settings.deadline - need

    def on_start(self, trial: Any) -> None:
        tid = trial.trial_id
        if tid in self.numbers:  # a reused actor can restart the same trial id: ignore
            return
        self.numbers[tid] = self.settings.first_number + len(self.numbers)
        self.params[tid] = dict(trial.config)
        self.epochs[tid] = []
        self.started[tid] = time.time()
        self.observer.trial_started(self.numbers[tid], self.params[tid])

    def on_result(self, trial: Any, result: dict[str, Any]) -> None:
        tid = trial.trial_id
        if tid not in self.numbers:
            self.on_start(trial)
        names = [n for n in str(result.get("metric_names", "")).split(",") if n]
        ep = EpochResult(
            epoch=int(result.get("epoch", len(self.epochs[tid]) + 1)),
            metrics={n: float(result[n]) for n in names if n in result},
            train_loss=float(result.get("train_loss", float("nan"))),
            seconds=float(result.get("trial_seconds", 0.0)),
            improved=bool(result.get("improved", False)),
        )
        self.epochs[tid].append(ep)
        self.observer.epoch_reported(self.numbers[tid], ep)

    def on_end(self, trial: Any, error: str | None) -> None:
        tid = trial.trial_id
        if tid in self.done:
            return
        if tid not in self.numbers:
            self.on_start(trial)
        epochs = tuple(self.epochs[tid])
        out = self.trials_dir / tid
        done_path = out / DONE_FILE
        ckpt = out / "best"
        if error is not None:
            status = "failed"
        elif done_path.is_file():
            info = json.loads(done_path.read_text())
            status = "stopped" if info.get("cut_by_deadline") else "complete"
        elif epochs and len(epochs) >= self._planned(tid) > 0:
            status = "complete"  # ASHA stops every trial at max_t: at its last report
        else:
            # Ended without finishing fit(): ASHA stopped it, or the deadline did.
            past_deadline = time.time() >= self.settings.deadline - 1.0
            status = "stopped" if past_deadline else "pruned"
        if not epochs and status != "failed":
            error = error or "stopped at the deadline before its first epoch"
        record = TrialRecord(
            trial_id=tid,
            number=self.numbers[tid],
            status=status,  # type: ignore[arg-type]
            params=self.params[tid],
            epochs=epochs,
            best_metrics=(
                dict(epochs[-1].metrics)
                if self.settings.score == "last_report" and epochs
                else _best(epochs, self.settings.metric, self.settings.mode)
            ),
            seconds=time.time() - self.started[tid],
            error=error,
            checkpoint_dir=str(ckpt) if ckpt.is_dir() and epochs else None,
        )
        self.done[tid] = record
        self._share_idle_cores()
        self.observer.trial_ended(record)

    def _planned(self, tid: str) -> int:
        if self.settings.max_reports:
            return int(self.settings.max_reports)
        return int(self.params[tid].get("epochs", 0) or 0)

    def _no_new_trials(self) -> bool:
        """Past the start cut-off, or every allowed trial started."""
        max_trials = self.settings.max_trials
        return time.time() >= self.start_cutoff() or (
            max_trials is not None and len(self.numbers) >= max_trials
        )

    def spare_from_pruning(self, trial: Any) -> bool:
        """Should a trial ASHA would stop run on? ASHA stops a weak trial to give its slot
        to a new configuration. Once no new trial will start, the freed cores can only go
        to the running trials (`_share_idle_cores`), which helps one that would not finish
        its planned epochs before the deadline. When no running trial would gain, the stop
        would leave the cores idle: the trial runs on to its planned epochs or the
        deadline (a last partial epoch), and may still improve."""
        if not self._no_new_trials():
            return False
        deadline = self.settings.deadline
        for tid in self.numbers:
            if tid in self.done or tid == trial.trial_id:
                continue
            epochs = self.epochs.get(tid) or []
            if not epochs:
                return False  # its pace is unknown: it may need the cores
            left = self._planned(tid) - len(epochs)
            if left <= 0:
                continue
            pace = (
                (epochs[-1].seconds - epochs[0].seconds) / (len(epochs) - 1)
                if len(epochs) > 1
                else epochs[0].seconds
            )
            if self.started[tid] + epochs[-1].seconds + left * pace > deadline:
                return False  # it would be cut short: it gets the cores
        logger.debug("trial %s runs on: no new trial will start", trial.trial_id)
        return True

    def _share_idle_cores(self) -> None:
        """Once no new trial will start (past the start cut-off, or all trials started),
        the cores of finished trials go to those still running: each may use
        cpus // running threads (a trial reads the threads file between batches)."""
        running = len(self.numbers) - len(self.done)
        if running < 1 or not self._no_new_trials() or self.settings.cpus_per_trial < 1:
            return
        threads = max(1, self.cpus // running) * self.settings.cpus_per_trial
        threads = min(threads, self.cpus)
        if threads != self.threads:
            path = self.trials_dir.parent / THREADS_FILE
            tmp = path.with_name(THREADS_FILE + ".tmp")
            tmp.write_text(str(threads), encoding="ascii")
            os.replace(tmp, path)
            self.threads = threads
            logger.debug("%d trial(s) still running: %d threads each", running, threads)

    def records(self) -> list[TrialRecord]:
        return sorted(self.done.values(), key=lambda r: r.number)


def _best(epochs: tuple[EpochResult, ...], metric: str, mode: str) -> dict[str, float]:
    scored = [e for e in epochs if metric in e.metrics and e.metrics[metric] == e.metrics[metric]]
    if not scored:
        return {}
    pick = max if mode == "max" else min
    return dict(pick(scored, key=lambda e: e.metrics[metric]).metrics)


def _trial_error_text(trial: Any) -> str:
    try:
        err = trial.get_error()
        text = str(err) if err is not None else ""
    except Exception:  # noqa: BLE001 - best effort: the record must still be written
        text = ""
    if not text and getattr(trial, "error_file", None) and os.path.isfile(trial.error_file):
        text = Path(trial.error_file).read_text()[-2000:]
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:500] if lines else "trial failed (no error text)"


def cleanup_checkpoints(records: list[TrialRecord], keep: set[str]) -> None:
    """Delete trial checkpoints except those whose trial ids are in `keep`."""
    for r in records:
        if r.checkpoint_dir and r.trial_id not in keep:
            shutil.rmtree(Path(r.checkpoint_dir).parent, ignore_errors=True)


__all__ = [
    "NullObserver",
    "SearchObserver",
    "SearchSettings",
    "cancel_requested",
    "cleanup_checkpoints",
    "ray_temp_dir",
    "run_search",
    "start_ray",
    "stop_ray",
    "warm_imports",
]
