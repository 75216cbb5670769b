"""The benchmarked systems: a registry of names to `fit(task) -> Fitted` functions.

Each system is a small module of this package with that one function (see base.py).
`run_system` runs one on a cell's data under the cell's wall budget: in a child process
that is killed at the budget (`isolated`, the default, so nothing gets more time and
peak memory is the system's own), or in this process for test doubles. Importing this
package is cheap: systems are named by "module:function" and loaded only to run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from automl.bench.systems._exec import run_system
from automl.bench.systems.base import (
    BudgetExhausted,
    FitTask,
    Fitted,
    SystemResult,
    SystemUnavailable,
)
from automl.errors import ConfigError

__all__ = [
    "SYSTEMS",
    "BudgetExhausted",
    "FitTask",
    "Fitted",
    "SystemResult",
    "SystemSpec",
    "SystemUnavailable",
    "get_system",
    "register",
    "run_system",
]


@dataclass(frozen=True)
class SystemSpec:
    """A registered system. `target` is "module:function" (or, for in-process test
    doubles, the function itself); `uses_budget` marks systems that train until the
    budget runs out (for estimates of a suite's duration)."""

    name: str
    target: str | Callable[[FitTask], Fitted]
    description: str
    isolated: bool = True
    uses_budget: bool = False


_PKG = "automl.bench.systems"
SYSTEMS: dict[str, SystemSpec] = {
    s.name: s
    for s in (
        SystemSpec(
            "tfidf-lr",
            f"{_PKG}.tfidf_lr:fit",
            "TF-IDF word 1-2 grams + logistic regression (the leaderboard's reference row)",
        ),
        SystemSpec(
            "pixels-lr",
            f"{_PKG}.pixels_lr:fit",
            "raw pixels (at most 32 x 32) + logistic regression (image studies' reference row)",
        ),
        SystemSpec(
            "glove-lr",
            f"{_PKG}.glove_lr:fit",
            "mean GloVe 6B 50-d word vector + logistic regression",
        ),
        SystemSpec(
            "embed-lr",
            f"{_PKG}.embed_lr:fit",
            "frozen MiniLM-L6 sentence embeddings + logistic regression",
        ),
        SystemSpec(
            "setfit-default",
            f"{_PKG}.setfit_default:fit",
            "SetFit with library defaults on MiniLM-L6 (body stopped in time for the head)",
            uses_budget=True,
        ),
        SystemSpec(
            "finetune-default",
            f"{_PKG}.finetune_default:fit",
            "fine-tuning MiniLM-L6 with transformers.Trainer defaults: lr 5e-5, 3 epochs",
            uses_budget=True,
        ),
        SystemSpec(
            "flaml",
            f"{_PKG}.flaml_tfidf:fit",
            "FLAML AutoML (defaults) on TF-IDF features, time_budget = what is left",
            uses_budget=True,
        ),
        SystemSpec(
            "automl",
            f"{_PKG}.automl_search:fit",
            "this package: automl.pipeline.run with the cell's budget",
            uses_budget=True,
        ),
    )
}


def register(spec: SystemSpec) -> None:
    """Add (or replace) a system, e.g. a test double or a plug-in."""
    SYSTEMS[spec.name] = spec


def get_system(name: str) -> SystemSpec:
    """A registered system by name (ConfigError naming the known ones)."""
    try:
        return SYSTEMS[name]
    except KeyError:
        raise ConfigError(f"unknown system {name!r}: choose from {', '.join(SYSTEMS)}") from None
