"""Routing: the few-shot / fine-tune decision at its boundaries."""

from __future__ import annotations

import math

import pytest

from automl.errors import ConfigError, DataError
from automl.routing import CLOSE_FACTOR, FEWSHOT_CROSSOVER, RouteDecision, holdout_test, route


def _labels(per_class: list[int]) -> list[str]:
    return [f"c{k}" for k, n in enumerate(per_class) for _ in range(n)]


C = FEWSHOT_CROSSOVER  # the boundary tests below are written against it


def test_crossover_is_the_measured_one() -> None:
    # benchmarks/fewshot.py: few-shot wins at 8, 32 and 128 per class; the suggestion is 129
    assert FEWSHOT_CROSSOVER == 129


def test_one_below_the_crossover_goes_fewshot() -> None:
    d = route(_labels([C - 1] * 3), "classification", 300)
    assert d.track == "fewshot"
    assert d.examples_per_class == C - 1
    assert d.reason.startswith(
        f"fewshot: {C - 1} examples per class (median), below the crossover"
    )


def test_at_the_crossover_goes_finetune() -> None:
    d = route(_labels([C] * 3), "classification", 300)
    assert d.track == "finetune"
    assert d.examples_per_class == C
    assert f"at or above the crossover of {C}" in d.reason


def test_median_not_mean_nor_min_decides() -> None:
    # min 5, a huge class, median 10: the median class is few-shot sized.
    d = route(_labels([5, 10, 10 * C]), "classification", 300)
    assert d.track == "fewshot"
    assert (d.examples_per_class, d.min_per_class) == (10, 5)


def test_even_class_count_median_just_below_the_crossover_is_fewshot() -> None:
    d = route(_labels([C - 1, C]), "classification", 300)  # median C - 0.5
    assert d.track == "fewshot"
    assert d.examples_per_class == C - 1


def test_labels_may_be_class_ids() -> None:
    d = route([0, 1, 2] * 8, "classification", 60)
    assert (d.track, d.examples_per_class, d.min_per_class) == ("fewshot", 8, 8)
    assert d.reason == f"fewshot: 8 examples per class (median), below the crossover of {C}"


_LOW = math.ceil(C / CLOSE_FACTOR)  # the first count close to the crossover
_HIGH = math.floor(C * CLOSE_FACTOR)  # the last


@pytest.mark.parametrize(
    ("per_class", "close"),
    [(_LOW - 1, False), (_LOW, True), (C - 1, True), (_HIGH, True), (_HIGH + 1, False)]
    + [(400, False)],
)
def test_close_flag_within_factor_of_crossover(per_class: int, close: bool) -> None:
    d = route(_labels([per_class, per_class]), "classification", 300)
    assert d.close is close
    assert ("close to it" in d.reason) is close


@pytest.mark.parametrize("track", ["fewshot", "finetune"])
def test_forced_track_overrides(track: str) -> None:
    # 8 per class would go fewshot and 100 finetune: force the other one each time.
    per_class = 100 if track == "fewshot" else 8
    d = route(_labels([per_class] * 2), "classification", 300, requested=track)
    assert d.track == track
    assert "forced by --track" in d.reason
    assert "auto would choose" in d.reason


def test_regression_auto_goes_finetune() -> None:
    d = route([0.5, 1.5, 2.0], "regression", 300)
    assert d == RouteDecision(
        "finetune", "finetune: regression targets (SetFit is classification-only)", 0, 0, False
    )


def test_regression_forced_finetune() -> None:
    d = route([0.5, 1.5], "regression", 300, requested="finetune")
    assert d.track == "finetune" and "forced by --track" in d.reason


def test_fewshot_for_regression_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="classification"):
        route([0.5, 1.5], "regression", 300, requested="fewshot")


@pytest.mark.parametrize("bad", ["few-shot", "", "AUTO", "setfit"])
def test_unknown_track_names_the_allowed_values(bad: str) -> None:
    with pytest.raises(ConfigError, match="auto, fewshot, finetune"):
        route(_labels([5, 5]), "classification", 300, requested=bad)


def test_unknown_task_and_empty_labels() -> None:
    with pytest.raises(ConfigError, match="task"):
        route(_labels([5, 5]), "ranking", 300)
    with pytest.raises(DataError, match="empty"):
        route([], "classification", 300)


def test_decision_is_frozen() -> None:
    d = route(_labels([5, 5]), "classification", 300)
    with pytest.raises(AttributeError):
        d.track = "finetune"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("per_class", "expected"),
    [
        ([40, 40], True),
        ([39, 40], False),
        ([40, 39, 50], False),
        ([40, 41, 50], True),
        ([], False),
    ],
)
def test_holdout_test_needs_40_in_every_class(per_class: list[int], expected: bool) -> None:
    assert holdout_test(_labels(per_class)) is expected
