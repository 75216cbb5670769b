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
