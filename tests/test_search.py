"""The search without a database: Ray Tune + Optuna + ASHA driven by a fake trainer.

One Ray session (one `run_search` call) serves every assertion here: Ray's start-up costs
5-8 s, so the fake trainer is rich enough to show pruning, failures, the deadline, the
test split being withheld and the observer's view all at once.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from helpers import new_study

from automl.config import EpochResult, PreparedData, TrialContext, TrialRecord
from automl.data import prepare
from automl.search import SearchSettings, run_search
from automl.spaces import parse_space

EPOCH_S = 0.2
EPOCHS = 4  # every trial plans 4 epochs; ASHA's rungs are at 1 and 2
FAIL_OPTIMIZER = "sgd"

SPACE = parse_space(
    {
        "track": "finetune",
        "params": {
            # The fake's score grows with the learning rate: low ones lose at ASHA's rungs.
            "learning_rate": {"type": "float", "low": 0.01, "high": 1.0, "log": True, "init": 0.5},
            "optimizer": {
                "type": "choice",
                "values": ["adamw", "lamb", FAIL_OPTIMIZER],
                "init": "adamw",
            },
            "epochs": {"type": "int", "low": EPOCHS, "high": EPOCHS, "init": EPOCHS},
        },
    },
    source="<test space>",
)


class FakeTrainer:
    """Sleeps EPOCH_S per epoch and reports a score that grows with learning_rate and the
    epoch. Raises for FAIL_OPTIMIZER. Records what it saw in the reported metrics (they
    travel back from the Ray worker): the test split's size and the wall time."""

    def fit(
        self, data: PreparedData, params: dict[str, Any], ctx: TrialContext, report: Any
    ) -> list[EpochResult]:
        if params["optimizer"] == FAIL_OPTIMIZER:
            raise ValueError(f"fake failure: {FAIL_OPTIMIZER} is not supported")
        start = time.time()
        results: list[EpochResult] = []
        for epoch in range(1, int(params["epochs"]) + 1):
            if time.time() + EPOCH_S > ctx.deadline:  # a trainer stops at the deadline
                break
            time.sleep(EPOCH_S)
            score = float(params["learning_rate"]) * epoch / EPOCHS
            out = Path(ctx.output_dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / "epoch.txt").write_text(str(epoch))
            result = EpochResult(
                epoch=epoch,
                metrics={
                    "macro_f1": score,
                    "loss": 1.0 - score,
                    "test_rows": float(len(data.test)),
                    "train_rows": float(len(data.train)),
                    "at": time.time(),
                    "deadline": ctx.deadline,
                },
                train_loss=1.0 - score,
                seconds=time.time() - start,
                improved=True,
            )
            results.append(result)
            report(result)  # ASHA may stop the trial here
        return results


@dataclass
class RecordingObserver:
    """Keeps every event in order (it runs in the driver process)."""

    events: list[tuple[str, int, Any]] = field(default_factory=list)

    def trial_started(self, number: int, params: dict[str, Any]) -> None:
        self.events.append(("started", number, dict(params)))

    def epoch_reported(self, number: int, epoch: EpochResult) -> None:
        self.events.append(("epoch", number, epoch))

    def trial_ended(self, record: TrialRecord) -> None:
        self.events.append(("ended", record.number, record))


@dataclass(frozen=True)
class SearchRun:
    records: list[TrialRecord]
    observer: RecordingObserver
    settings: SearchSettings
    data: PreparedData
    returned_at: float


def _data() -> PreparedData:
    """A small prepared dataset with a non-empty test split (the fake ignores the texts)."""
    words = ["alpha", "beta", "gamma"]
    rows = [(f"text {i} about {words[i % 3]}", words[i % 3]) for i in range(60)]
    data = prepare(pd.DataFrame(rows, columns=["text", "label"]), label="label", seed=0)
    assert len(data.test) > 0
    return data


class EmptyTrainer:
    """Returns without an epoch, as a real trainer does when its trial starts too close to
    the deadline (FineTuneTrainer: "deadline already passed; not training")."""

    def fit(
        self, data: PreparedData, params: dict[str, Any], ctx: TrialContext, report: Any
    ) -> list[EpochResult]:
        return []


@contextmanager
def _picklable_by_value() -> Iterator[None]:
    """Ray workers cannot import this test module by name: ship its classes by value."""
    import ray.cloudpickle

    module = sys.modules[__name__]
    ray.cloudpickle.register_pickle_by_value(module)
    try:
        yield
    finally:
        ray.cloudpickle.unregister_pickle_by_value(module)


@pytest.fixture(scope="module")
def search_run(tmp_path_factory: pytest.TempPathFactory) -> SearchRun:
    """One real search (local Ray, 4 concurrent trial slots) with the fake trainer."""
    with _picklable_by_value(), pytest.MonkeyPatch.context() as mp:
        # A trial that starts too late to report an epoch crashes Ray Tune's strict metric
        # check (see test_a_trial_without_epochs_does_not_crash_the_search); keep that
        # bug from hiding everything else tested here.
        mp.setenv("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
        data = _data()
        settings = SearchSettings(
            deadline=time.time() + 24.0,  # Ray's start-up takes 5-8 s of this
            work_dir=str(tmp_path_factory.mktemp("search")),
            num_cpus=4,  # the fake trainer sleeps: more slots than cores is fine
            min_trial_seconds=2.0,
            seed=0,
        )
        observer = RecordingObserver()
        records = run_search(data, SPACE, FakeTrainer(), settings, observer)
        return SearchRun(records, observer, settings, data, time.time())


def _by_status(run: SearchRun, status: str) -> list[TrialRecord]:
    return [r for r in run.records if r.status == status]


def _describe(run: SearchRun) -> str:
    return "; ".join(
        f"#{r.number} {r.status} {len(r.epochs)} ep lr={r.params['learning_rate']:.3f} "
        f"{r.params['optimizer']}"
        for r in run.records
    )


def test_search_runs_several_trials_and_asha_stops_the_weak_early(search_run: SearchRun) -> None:
    records = search_run.records
    assert len(records) >= 5, _describe(search_run)
    assert [r.number for r in records] == list(range(1, len(records) + 1))
    assert records[0].params == SPACE.init_config()  # the cheap starting point goes first
    full = [r for r in records if len(r.epochs) == EPOCHS]
    cut = [r for r in _by_status(search_run, "pruned") if 1 <= len(r.epochs) < EPOCHS]
    assert full and cut, _describe(search_run)
    # ASHA keeps the better half at each rung: every trial it cut short scored below the
    # best trial that ran all its epochs.
    best = max(r.best_metrics["macro_f1"] for r in full)
    assert best == pytest.approx(max(r.params["learning_rate"] for r in full))
    assert all(r.best_metrics["macro_f1"] < best for r in cut)


def test_a_trial_that_ran_all_its_epochs_is_complete(search_run: SearchRun) -> None:
    """ASHA stops every trial at max_t, i.e. at its last report, before fit() returns and
    writes done.json: such a trial must still count as complete, not pruned."""
    full = [r for r in search_run.records if len(r.epochs) == EPOCHS]
    assert full
    assert [r.status for r in full] == ["complete"] * len(full), _describe(search_run)


def test_a_failing_config_is_a_failed_record_and_the_search_goes_on(
    search_run: SearchRun,
) -> None:
    failed = _by_status(search_run, "failed")
    assert failed, f"no trial drew the failing optimizer: {_describe(search_run)}"
    for r in failed:
        assert r.params["optimizer"] == FAIL_OPTIMIZER
        assert r.error is not None and f"fake failure: {FAIL_OPTIMIZER}" in r.error
        assert "\n" not in r.error and len(r.error) <= 500
        assert r.epochs == () and r.checkpoint_dir is None and r.best_metrics == {}
    first_failure = min(r.number for r in failed)
    later = [r for r in search_run.records if r.number > first_failure and r.epochs]
    assert later, f"no trial trained after the first failure: {_describe(search_run)}"
    assert all(r.params["optimizer"] != FAIL_OPTIMIZER for r in search_run.records if r.epochs)


def test_no_epoch_after_the_deadline_and_the_search_returns_soon(search_run: SearchRun) -> None:
    deadline = search_run.settings.deadline
    epochs = [e for r in search_run.records for e in r.epochs]
    assert epochs
    assert all(e.metrics["deadline"] == deadline for e in epochs)  # ctx.deadline is the search's
    assert max(e.metrics["at"] for e in epochs) <= deadline
    # Ray's own stop is a backstop 3 s after the deadline; then it shuts down.
    assert search_run.returned_at <= deadline + 15.0
    assert all(r.status != "running" for r in search_run.records)


def test_the_trainer_never_sees_the_test_split(search_run: SearchRun) -> None:
    epochs = [e for r in search_run.records for e in r.epochs]
    assert epochs and all(e.metrics["test_rows"] == 0.0 for e in epochs)
    assert all(e.metrics["train_rows"] == len(search_run.data.train) for e in epochs)
    assert len(search_run.data.test) > 0  # the caller's data is untouched


def test_checkpoints_are_where_the_records_say(search_run: SearchRun) -> None:
    trials_dir = Path(search_run.settings.work_dir) / "trials"
    for r in search_run.records:
        if r.epochs:
            assert r.checkpoint_dir is not None
            ckpt = Path(r.checkpoint_dir)
            assert ckpt == trials_dir / r.trial_id / "best"
            # the fake saves at every epoch, so its folder holds the last one
            assert (ckpt / "epoch.txt").read_text() == str(len(r.epochs))
        else:
            assert r.checkpoint_dir is None
    # Ray's short temp-dir symlink (the work dir's path is long) is removed afterwards.
    target = (Path(search_run.settings.work_dir) / "ray").resolve()
    assert not [p for p in Path("/tmp").glob("aml-*") if p.resolve() == target]


def test_observer_events_match_the_records(search_run: SearchRun) -> None:
    events = search_run.observer.events
    records = {r.number: r for r in search_run.records}
    started = [n for kind, n, _ in events if kind == "started"]
    ended = [n for kind, n, _ in events if kind == "ended"]
    assert sorted(started) == sorted(ended) == sorted(records)  # each exactly once
    for number, record in records.items():
        mine = [(kind, payload) for kind, n, payload in events if n == number]
        kinds = [kind for kind, _ in mine]
        assert kinds[0] == "started" and kinds[-1] == "ended"
        assert kinds.count("started") == kinds.count("ended") == 1
        assert mine[0][1] == record.params
        assert mine[-1][1] == record
        assert tuple(p for kind, p in mine if kind == "epoch") == record.epochs
        assert [e.epoch for e in record.epochs] == list(range(1, len(record.epochs) + 1))


class LockedObserver(RecordingObserver):
    """Holds a lock, as the pipeline's observer does through its store connection: it
    cannot be pickled, and the search must never need to."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.RLock()

    def trial_ended(self, record: TrialRecord) -> None:
        with self.lock:
            super().trial_ended(record)


def test_a_trial_without_epochs_does_not_crash_the_search(tmp_path: Path) -> None:
    """A trainer may return no epoch at all (its trial started too close to the deadline).
    That trial is a record stopped by the deadline, and the search goes on: Ray Tune's
    strict metric check must not turn it into a TuneError that ends the whole study.
    The observer here holds a lock (like a store connection): it is not picklable."""
    settings = SearchSettings(
        deadline=time.time() + 25.0,
        work_dir=str(tmp_path),
        num_cpus=2,
        max_trials=2,
        min_trial_seconds=1.0,
    )
    observer = LockedObserver()
    with _picklable_by_value():
        records = run_search(_data(), SPACE, EmptyTrainer(), settings, observer)
    assert len(records) == 2
    for r in records:
        assert r.epochs == () and r.checkpoint_dir is None
        assert r.error == "stopped at the deadline before its first epoch"
        assert r.status == "stopped"
    assert [kind for kind, _, _ in observer.events].count("ended") == 2


def test_a_trial_obeys_a_deadline_file_only_when_it_is_earlier(tmp_path: Path) -> None:
    from automl.config import TrialContext

    path = tmp_path / "deadline"
    ctx = TrialContext(output_dir=str(tmp_path), deadline=100.0, deadline_file=str(path))
    assert ctx.current_deadline() == 100.0  # no file yet
    path.write_text("90.5")
    assert ctx.current_deadline() == 90.5
    path.write_text("120")
    assert ctx.current_deadline() == 100.0  # never later than the trial's own
    path.write_text("garbage")
    assert ctx.current_deadline() == 100.0


def test_the_deadline_file_follows_the_best_models_export_time(tmp_path: Path) -> None:
    from automl.export import TrialDeadline
    from automl.pipeline import _BestDeadline

    plan = TrialDeadline(
        end=1000.0, tokens={64: 15_000.0, 128: 30_000.0}, layers={"s": 3, "m": 6}, after=0.5
    )
    path = tmp_path / "deadline"
    best = _BestDeadline(path, plan, "macro_f1", "max")
    best.params.update(
        {1: {"backbone": "s", "max_length": 64}, 2: {"backbone": "m", "max_length": 128}}
    )

    def epoch(value: float) -> EpochResult:
        return EpochResult(1, {"macro_f1": value}, 0.1, 1.0, True)

    best.reported(1, epoch(0.5))
    cheap = float(path.read_text())
    assert cheap == pytest.approx(plan({"backbone": "s", "max_length": 64}))
    best.reported(2, epoch(0.6))  # a slower-to-export model is now the best: earlier
    costly = float(path.read_text())
    assert costly == pytest.approx(plan({"backbone": "m", "max_length": 128})) and costly < cheap
    best.reported(1, epoch(0.55))  # not better than 0.6: unchanged
    assert float(path.read_text()) == costly
    best.reported(1, epoch(0.7))  # the cheap model wins again: later again
    assert float(path.read_text()) == pytest.approx(cheap)


def test_no_new_trial_once_the_fastest_first_report_would_miss_the_deadline(
    tmp_path: Path,
) -> None:
    """The start cutoff is the deadline minus the quickest first report; a head-only trial
    (unprunable) counts a later fold's time instead, since its embeddings are cached."""
    from automl.search import NullObserver, _Collector

    settings = SearchSettings(
        deadline=1000.0,
        work_dir=str(tmp_path),
        min_trial_seconds=1.0,
        unprunable=("method", ("logreg",)),
    )
    collector = _Collector(NullObserver(), settings, tmp_path)

    def reports(tid: str, method: str, seconds: list[float]) -> None:
        collector.params[tid] = {"method": method}
        collector.epochs[tid] = [
            EpochResult(i + 1, {}, 0.0, s, True) for i, s in enumerate(seconds)
        ]

    assert collector.start_cutoff() == 999.0  # nothing reported: min_trial_seconds
    reports("a", "setfit", [30.0, 55.0])  # a fold of SetFit training: 25 s
    assert collector.start_cutoff() == 970.0
    reports("b", "logreg", [20.0])  # embeddings computed, one fold: not yet known cheap
    assert collector.start_cutoff() == 980.0
    reports("b", "logreg", [20.0, 20.02])  # its second fold: 0.02 s
    assert collector.start_cutoff() == 999.0


def test_past_the_cutoff_the_searcher_waits_for_running_trials_then_finishes() -> None:
    """A running trial's next report may move the cutoff later: no suggestion meanwhile,
    and the search ends only once no trial runs."""
    from ray.tune.search import Searcher

    from automl.search import _DeadlineLimiter

    class Fixed(Searcher):  # type: ignore[misc]
        def suggest(self, trial_id: str) -> dict[str, Any]:
            return {"x": 1}

        def on_trial_complete(self, trial_id: str, result: Any = None, error: bool = False):
            pass

    cutoff = [time.time() + 100.0]
    limiter = _DeadlineLimiter(Fixed(metric="m", mode="max"), 2, lambda: cutoff[0])
    assert limiter.suggest("a") == {"x": 1}
    cutoff[0] = time.time() - 1.0  # past the cutoff, trial a still running
    assert limiter.suggest("b") is None
    cutoff[0] = time.time() + 100.0  # a's second report moved it later
    assert limiter.suggest("c") == {"x": 1}
    cutoff[0] = time.time() - 1.0
    limiter.on_trial_complete("a", result={"m": 1.0})
    limiter.on_trial_complete("c", result={"m": 1.0})
    assert limiter.suggest("d") == Searcher.FINISHED


def test_the_reference_row_is_written_once_whenever_it_is_ready(tmp_path: Path) -> None:
    """The TF-IDF reference is fitted beside the trials: its row is written at the first
    search event after it is ready (or after the search), once; its error is raised."""
    from concurrent.futures import Future

    from automl.pipeline import RunListener, _StoreObserver
    from automl.reference import ReferenceResult
    from automl.store import Store

    store = Store(tmp_path / "s.db")
    study = new_study(store)
    pending: Future[ReferenceResult] = Future()
    observer = _StoreObserver(store, study, RunListener(), "finetune", reference=pending)
    observer.trial_started(1, {"lr": 0.1})
    assert [t["track"] for t in store.trials(study)] == ["finetune"]  # not ready: no row
    ref = ReferenceResult({"model": "tfidf"}, {"macro_f1": 0.5}, {"macro_f1": 0.4}, 1.2)
    pending.set_result(ref)
    observer.epoch_reported(1, EpochResult(1, {"macro_f1": 0.6}, 0.1, 1.0, True))
    observer.epoch_reported(1, EpochResult(2, {"macro_f1": 0.7}, 0.1, 1.0, True))
    assert observer.store_reference(wait=True) is ref
    rows = [t for t in store.trials(study) if t["track"] == "reference"]
    assert len(rows) == 1 and rows[0]["number"] == 0
    assert rows[0]["metrics"] == {"macro_f1": 0.5, "test_macro_f1": 0.4}

    failed: Future[ReferenceResult] = Future()
    failed.set_exception(ValueError("no vocabulary"))
    observer = _StoreObserver(store, study, RunListener(), "finetune", reference=failed)
    observer.trial_started(2, {"lr": 0.2})  # a failed reference does not stop the search
    with pytest.raises(ValueError, match="no vocabulary"):
        observer.store_reference(wait=True)
    store.close()


def test_idle_cores_go_to_the_trials_still_running_once_no_new_trial_starts(
    tmp_path: Path,
) -> None:
    from automl.config import TrialContext
    from automl.search import THREADS_FILE, NullObserver, _Collector

    settings = SearchSettings(deadline=time.time() + 100, work_dir=str(tmp_path), max_trials=3)
    trials_dir = tmp_path / "trials"
    trials_dir.mkdir()
    collector = _Collector(NullObserver(), settings, trials_dir)
    collector.cpus = 2
    path = tmp_path / THREADS_FILE
    collector.numbers = {"a": 1, "b": 2}
    collector.done = {"a": None}  # type: ignore[dict-item]
    collector._share_idle_cores()
    assert not path.exists()  # a third trial may still start: nothing changes
    collector.numbers["c"] = 3  # all max_trials started; b and c run
    collector._share_idle_cores()
    assert path.read_text() == "1"
    collector.done["b"] = None  # type: ignore[assignment]
    collector._share_idle_cores()  # c runs alone: both cores
    assert path.read_text() == "2"
    ctx = TrialContext(output_dir=str(tmp_path), deadline=0.0, threads_file=str(path))
    assert ctx.current_threads() == 2
    assert TrialContext(output_dir="x", deadline=0.0).current_threads() is None


def _asha(**kw: Any) -> Any:
    """automl's ASHA over `training_iteration` up to 8 reports, maximising `m`."""
    from ray.tune.schedulers import ASHAScheduler

    from automl.search import _asha_class

    return _asha_class(ASHAScheduler)(
        time_attr="training_iteration",
        max_t=8,
        grace_period=1,
        reduction_factor=2,
        metric="m",
        mode="max",
        **kw,
    )


def test_asha_never_stops_an_unprunable_trial_before_its_last_report() -> None:
    """Few-shot heads on cached embeddings: every fold costs milliseconds, so ASHA lets
    them finish (their reports still set the bar for the costly SetFit trials)."""
    from types import SimpleNamespace

    asha = _asha(unprunable=("method", ("logreg", "svm")))
    good, weak_head, weak_setfit = (
        SimpleNamespace(config={"method": m}, trial_id=m + str(i))
        for i, m in enumerate(["setfit", "logreg", "setfit"])
    )
    for t in (good, weak_head, weak_setfit):
        asha.on_trial_add(None, t)
    assert asha.on_trial_result(None, good, {"training_iteration": 1, "m": 0.9}) == "CONTINUE"
    assert asha.on_trial_result(None, weak_head, {"training_iteration": 1, "m": 0.1}) == "CONTINUE"
    assert asha.on_trial_result(None, weak_setfit, {"training_iteration": 1, "m": 0.1}) == "STOP"
    assert asha.on_trial_result(None, weak_head, {"training_iteration": 8, "m": 0.1}) == "STOP"


def test_a_local_ray_starts_without_its_helper_processes_and_runs_tasks(
    tmp_path: Path,
) -> None:
    """include_dashboard=False still starts Ray's API-server process and waits for it
    before the raylet, and a local Ray starts its autoscaler and log monitors; automl's
    local Ray skips all three (Tune needs none of them), and the cluster still runs work
    and shuts down cleanly."""
    import ray
    import ray._private.services as services
    import ray._private.worker as ray_worker

    from automl.search import start_ray, stop_ray

    original = services.start_api_server
    settings = SearchSettings(deadline=time.time() + 60, work_dir=str(tmp_path), num_cpus=1)
    assert start_ray(settings)
    try:
        assert services.start_api_server is original  # patched only during ray.init
        node = ray_worker._global_node
        assert node is not None
        # ray_constants.PROCESS_TYPE_DASHBOARD, _MONITOR, _LOG_MONITOR
        for skipped in ("dashboard", "monitor", "log_monitor"):
            assert skipped not in node.all_processes
        assert "raylet" in node.all_processes

        @ray.remote
        def double(x: int) -> int:
            return 2 * x

        assert ray.get(double.remote(21)) == 42
    finally:
        stop_ray(settings)
    assert not ray.is_initialized()


def test_the_lean_start_leaves_other_calls_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray._private.services as services
    from ray._private.node import Node

    from automl.search import _lean_local_ray

    calls: list[Any] = []
    monkeypatch.setattr(services, "start_api_server", lambda inc, *a, **k: calls.append(inc))
    monkeypatch.setattr(Node, "start_monitor", lambda self: calls.append("monitor"))
    monkeypatch.setattr(Node, "start_log_monitor", lambda self: calls.append("log_monitor"))
    with _lean_local_ray():
        assert services.start_api_server(False, True, "h") == ("", None)
        services.start_api_server(None, True, "h")  # dashboard default: Ray's own call
        services.start_api_server(True, True, "h")
        Node.start_monitor(object())
        Node.start_log_monitor(object())
    assert calls == [None, True]
    services.start_api_server(False, True, "h")  # restored after the block
    Node.start_monitor(object())
    Node.start_log_monitor(object())
    assert calls == [None, True, False, "monitor", "log_monitor"]
    monkeypatch.setenv("AUTOML_RAY_FULL", "1")
    with _lean_local_ray():
        services.start_api_server(False, True, "h")
        Node.start_monitor(object())
    assert calls == [None, True, False, "monitor", "log_monitor", False, "monitor"]


def test_once_no_new_trial_starts_asha_spares_a_weak_trial_unless_another_needs_its_core(
    tmp_path: Path,
) -> None:
    """ASHA frees a weak trial's slot for a new configuration. Past the start cut-off no
    new one comes: the weak trial runs on, unless a running trial would be cut short by
    the deadline (then the freed core goes to it)."""
    from types import SimpleNamespace

    from automl.search import NullObserver, _Collector

    now = time.time()
    settings = SearchSettings(deadline=now + 30, work_dir=str(tmp_path), min_trial_seconds=5)
    collector = _Collector(NullObserver(), settings, tmp_path)
    asha = _asha(spare=collector.spare_from_pruning)

    def weak_result(name: str) -> str:
        """A weak trial's first report, below every one before it on ASHA's rung 1."""
        trial = SimpleNamespace(config={"epochs": 8}, trial_id=name)
        asha.on_trial_add(None, trial)
        m = 0.1 / 2 ** int(name[1:])
        return str(asha.on_trial_result(None, trial, {"training_iteration": 1, "m": m}))

    good = SimpleNamespace(config={"epochs": 5}, trial_id="good")
    asha.on_trial_add(None, good)
    assert asha.on_trial_result(None, good, {"training_iteration": 1, "m": 0.8}) == "CONTINUE"
    collector.numbers = {"good": 1}
    collector.params = {"good": {"epochs": 5}}
    collector.started = {"good": now - 60}
    # good: 4 epochs, the first after 32 s, then one per 8 s; its 5th ends 4 s from now
    collector.epochs = {
        "good": [EpochResult(i, {"m": 0.8}, 0.1, 32.0 + 8 * (i - 1), True) for i in (1, 2, 3, 4)]
    }
    # Past the cut-off (the deadline minus the fastest first epoch, 32 s) good finishes
    # its epochs in time, so a stop would leave a core idle: the weak trial runs on.
    assert collector._no_new_trials()
    assert weak_result("w1") == "CONTINUE"
    # good planned 9 epochs: 5 more of 8 s end past the deadline, the core goes to it.
    collector.params["good"] = {"epochs": 9}
    assert weak_result("w2") == "STOP"
    # Before the cut-off ASHA prunes as usual: a new trial can take the slot.
    collector.params["good"] = {"epochs": 5}
    collector.settings = replace(settings, deadline=now + 300)
    assert not collector._no_new_trials()
    assert weak_result("w3") == "STOP"
    # A running trial with no epoch yet has an unknown pace: ASHA's stop stands.
    collector.settings = settings
    collector.numbers["other"] = 3
    collector.epochs["other"] = []
    assert weak_result("w4") == "STOP"
    del collector.numbers["other"]
    assert weak_result("w5") == "CONTINUE"
