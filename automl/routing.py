"""Routing: few-shot (SetFit / frozen-body heads) or fine-tuning, and why.

A pure function of the training labels and the task, so the decision can be tested
and shown to the user (the reason is one sentence for the CLI and the model card).
"""

from __future__ import annotations

import logging
import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from automl.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

__all__ = [
    "CLOSE_FACTOR",
    "FEWSHOT_CROSSOVER",
    "HOLDOUT_MIN_PER_CLASS",
    "IMAGE_FEWSHOT_CROSSOVER",
    "TRACKS",
    "RouteDecision",
    "holdout_test",
    "route",
]

Track = Literal["fewshot", "finetune"]
TRACKS: tuple[str, ...] = ("fewshot", "finetune")
_REQUESTS = ("auto", *TRACKS)

# Median examples per class below which few-shot is chosen. From benchmarks/fewshot.py
# (60 s per cell, 2 CPU cores; benchmarks/results/fewshot.md): the few-shot track beat the
# fine-tune track on all four datasets at 8, 32 and 128 examples per class (mean test
# macro-F1 0.647 vs 0.451, 0.727 vs 0.601, 0.771 vs 0.698), so the crossover lies above
# 128; 129 is the benchmark's suggestion (the smallest value that routes every measured
# grid point to its better track). Nothing above 128 is measured yet.
FEWSHOT_CROSSOVER = 129
# Within this factor of the crossover (about 86 to 192 per class at 128) the two tracks
# are close enough that running both is worth the budget.
CLOSE_FACTOR = 1.5
# A held-out test split is kept for few-shot data only when every class has at least
# this many examples: the 15 % test split of 40 holds 6 per class. With fewer, the test
# score rests on a handful of texts per class (noise, not a measurement: the
# cross-validated estimate is the better one), while the held-out texts are 15 % of the
# training data. Seen in benchmarks/fewshot.py: on MR at 32 examples per class the same
# configuration (MiniLM-L6 embeddings + logistic regression) scored 0.667 test macro-F1
# trained without its hold-out, 0.692 trained on all 64 texts.
HOLDOUT_MIN_PER_CLASS = 40
# Images: median examples per class below which the few-shot track (a linear head on
# frozen ImageNet features, cross-validated) is chosen. Not measured yet: fine-tuning a
# CNN on fewer than a few dozen images per class overfits and leaves a validation split
# too small to choose by, while a linear probe of ImageNet features is a strong baseline.
IMAGE_FEWSHOT_CROSSOVER = 32


@dataclass(frozen=True)
class RouteDecision:
    """Which track to run and why. examples_per_class and min_per_class are 0 for
    regression (no classes)."""

    track: Track
    reason: str  # one sentence, e.g. "fewshot: 8 examples per class (median), ..."
    examples_per_class: int  # median over classes, rounded down
    min_per_class: int
    close: bool  # near the crossover: the other track may do as well (not run by itself)


def route(
    labels: Sequence[Any],
    task: str,
    budget_s: float,
    requested: str = "auto",
    modality: str = "text",
) -> RouteDecision:
    """Choose the few-shot or the fine-tuning track for training `labels`.

    requested "fewshot" or "finetune" (--track) overrides the choice; "auto" picks
    few-shot for classification when the median class has fewer than
    FEWSHOT_CROSSOVER examples, fine-tuning otherwise and always for regression.
    budget_s is accepted for the planner's interface; no rule uses it yet.
    """
    if requested not in _REQUESTS:
        raise ConfigError(
            f"--track {requested!r} is unknown: expected one of {', '.join(_REQUESTS)}"
        )
    if task not in ("classification", "regression"):
        raise ConfigError(f"task {task!r} is unknown: expected classification or regression")
    if task == "regression":
        return _route_regression(requested)

    counts = Counter(labels)
    if not counts:
        raise DataError("no labelled training rows to route: the training split is empty")
    median = statistics.median(counts.values())
    # floor(median) < crossover exactly when median < crossover (the crossover is an int)
    per_class = math.floor(median)
    least = min(counts.values())
    crossover = IMAGE_FEWSHOT_CROSSOVER if modality == "image" else FEWSHOT_CROSSOVER
    close = crossover / CLOSE_FACTOR <= median <= crossover * CLOSE_FACTOR
    auto: Track = "fewshot" if median < crossover else "finetune"
    if requested != "auto":
        track: Track = "fewshot" if requested == "fewshot" else "finetune"
        reason = (
            f"{track}: forced by --track {track} ({per_class} examples per class (median); "
            f"auto would choose {auto})"
        )
    else:
        track = auto
        side = "below" if track == "fewshot" else "at or above"
        reason = (
            f"{track}: {per_class} examples per class (median), {side} the crossover of "
            f"{crossover}" + (" for images" if modality == "image" else "")
        )
        if close:
            reason += " (close to it: --track can force the other one)"
    decision = RouteDecision(track, reason, per_class, least, close)
    logger.info("route: %s", reason)
    return decision


def _route_regression(requested: str) -> RouteDecision:
    if requested == "fewshot":
        raise ConfigError(
            "--track fewshot needs a classification task: SetFit trains a classifier on "
            "sentence embeddings and cannot predict numbers; use --track finetune or auto "
            "for regression targets"
        )
    if requested == "finetune":
        reason = "finetune: forced by --track finetune"
    else:
        reason = "finetune: regression targets (SetFit is classification-only)"
    logger.info("route: %s", reason)
    return RouteDecision("finetune", reason, 0, 0, False)


def holdout_test(labels: Sequence[Any]) -> bool:
    """Whether few-shot data can spare a held-out test split: every class has at least
    HOLDOUT_MIN_PER_CLASS examples (see the constant for why). False for no labels."""
    counts = Counter(labels)
    return bool(counts) and min(counts.values()) >= HOLDOUT_MIN_PER_CLASS
