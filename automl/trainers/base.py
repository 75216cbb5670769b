"""The seam between the search and a track: one method, `fit`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from automl.config import EpochResult, PreparedData, TrialContext

ReportFn = Callable[[EpochResult], None]


class Trainer(Protocol):
    """Trains one configuration, reporting validation metrics after every epoch.

    `report` may not return (the search can stop a trial at a report: ASHA pruning or
    the deadline). The trainer saves its best epoch's model with
    `automl.modelio.save_model_dir` into `ctx.output_dir` whenever it improves, so a
    trial stopped at any point leaves its best model behind.
    """

    def fit(
        self, data: PreparedData, params: dict[str, Any], ctx: TrialContext, report: ReportFn
    ) -> list[EpochResult]: ...


def use_threads(ctx: TrialContext) -> None:
    """Follow the search's thread allowance (more cores once this trial runs alone)."""
    threads = ctx.current_threads()
    if threads is None:
        return
    import torch  # here, not at import: the driver loads this module without torch

    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)


class TrainerRef:
    """A trainer named by module and class, built on first use.

    The driver hands this to the search instead of a trainer instance, so it never has to
    import the trainer's heavy dependencies (torch, transformers) before the first trial
    starts; each Ray worker imports them once, where they are needed anyway.
    """

    def __init__(self, module: str, name: str, **kwargs: Any) -> None:
        self.module, self.name, self.kwargs = module, name, kwargs
        self._trainer: Trainer | None = None

    def load(self) -> Trainer:
        """The trainer instance (imported and constructed once per process)."""
        if self._trainer is None:
            import importlib

            cls = getattr(importlib.import_module(self.module), self.name)
            self._trainer = cls(**self.kwargs)
        return self._trainer

    def fit(
        self, data: PreparedData, params: dict[str, Any], ctx: TrialContext, report: ReportFn
    ) -> list[EpochResult]:
        return self.load().fit(data, params, ctx, report)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_trainer": None}  # send the name, not a loaded trainer

    def __repr__(self) -> str:
        return f"TrainerRef({self.module}:{self.name})"
