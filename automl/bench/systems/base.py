"""The one interface every benchmarked system implements, and the records around it.

A system is a function `fit(task: FitTask) -> Fitted`: it trains on `task.texts` /
`task.labels` (class names) and must return before `task.deadline`, the cell's start plus
its budget (process start, imports and model loading count). `Fitted.predict(texts)` then
labels the test split; prediction is timed separately and is not part of the budget.
A system that can stop early returns its best model so far and says so in
`info["stopped_at_budget"]`; one that cannot is stopped at the budget by the runner and
reported "over budget". Raise `SystemUnavailable` when a dependency is missing (the
message says how to install it) and `BudgetExhausted` when nothing useful fits the budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from automl.errors import AssetError, BudgetError

__all__ = [
    "BudgetExhausted",
    "FitTask",
    "Fitted",
    "SystemResult",
    "SystemUnavailable",
    "stratified_order",
]

STATUSES = ("ok", "over budget", "failed", "unavailable")
# The default backbone of the neural baselines (all-MiniLM-L6-v2, prepared offline).
BACKBONE = "minilm-l6"


class SystemUnavailable(AssetError):
    """A system's dependency is missing; the message names the install command."""


class BudgetExhausted(BudgetError):
    """Nothing useful fits in the budget (the cell is reported "over budget")."""


@dataclass(frozen=True)
class FitTask:
    """What a system is given: training data, its clock and a scratch folder."""

    texts: tuple[str, ...]
    labels: tuple[str, ...]  # class names
    budget_s: float
    started_at: float  # time.time() when the cell's clock started (before the process)
    seed: int = 0
    workdir: str = "."
    metric: str = "macro_f1"  # what the suite compares ("macro_f1" or "accuracy")
    name: str = "data"  # the cell's dataset label, for naming files and studies
    db: str | None = None  # the bench store: the automl system records its study there
    modality: str = "text"  # "image": texts are absolute image paths

    def require(self, modality: str, system: str) -> None:
        """Raise SystemUnavailable when this system cannot take the task's modality."""
        if self.modality != modality:
            raise SystemUnavailable(
                f"{system} takes {modality} data; {self.name} is {self.modality} data: "
                "leave it out of this suite's systems"
            )

    @property
    def deadline(self) -> float:
        return self.started_at + self.budget_s

    def left(self) -> float:
        """Seconds of budget left now."""
        return self.deadline - time.time()

    def elapsed(self) -> float:
        return time.time() - self.started_at


@dataclass
class Fitted:
    """A trained system: `predict(texts)` gives class names; `info` says how it went
    (e.g. stopped_at_budget, steps done); `close()` frees disk (called after predict)."""

    predict: Callable[[Sequence[str]], Sequence[str]]
    info: dict[str, Any] = field(default_factory=dict)
    close: Callable[[], None] | None = None


@dataclass(frozen=True)
class SystemResult:
    """One cell's outcome as the runner records it. `wall_s` is the fit's wall time on the
    budget's clock; predictions are None unless status is "ok"."""

    status: str
    predictions: tuple[str, ...] | None = None
    wall_s: float = 0.0
    predict_s: float | None = None
    peak_mem_mb: float | None = None
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def stratified_order(labels: Sequence[str], seed: int) -> list[int]:
    """Indices in an order where every prefix keeps the class proportions (each class
    shuffled with default_rng(seed), then interleaved by position / class size), so a
    system that stops early has trained on a stratified subset."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    keyed: list[tuple[float, str, int]] = []
    for label, ids in sorted(by_class.items()):
        for pos, i in enumerate(rng.permutation(ids)):
            keyed.append(((pos + 0.5) / len(ids), label, int(i)))
    return [i for _, _, i in sorted(keyed)]


def label_ids(labels: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(sorted class names, each label's index into them)."""
    classes = sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    return classes, np.asarray([index[v] for v in labels], dtype=np.int64)
