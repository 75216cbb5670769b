"""Scores of benchmark results: metrics, AMLB-style scaled scores and average ranks.

Pure functions of plain rows (dicts with dataset, budget_s, seed, system, status and
metrics, as `Store.bench_results` returns them), stdlib only, so the app can use them.

- A cell group is one (dataset, budget_s, seed): the systems that ran on the same data
  with the same budget.
- Scaled score (as the AutoML Benchmark): (score − majority) / (best baseline − majority),
  so 0 is the majority-class predictor and 1 the best baseline of that group; above 1
  beats every baseline, below 0 is worse than always answering the most common class.
  None when the best baseline is no better than the majority class.
- A failed or over-budget cell counts as the majority-class predictor (AMLB imputes
  failures with its constant predictor); an "unavailable" one (a missing package) is
  left out of the comparison.
- Ranks: 1 is the best score of a group; tied systems share the mean of their ranks.
  The majority-class row is a reference, never ranked.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

MAJORITY = "majority"  # the built-in reference system: always the training set's top class
METRICS = ("macro_f1", "accuracy")

Row = Mapping[str, Any]
GroupKey = tuple[str, float, int]


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str]) -> dict[str, float]:
    """Accuracy and macro-F1, the F1 averaged over the classes of `y_true` (a predicted
    class that never occurs counts only as a false positive)."""
    if len(y_true) != len(y_pred) or not y_true:
        raise ValueError(f"{len(y_true)} labels and {len(y_pred)} predictions")
    pairs = list(zip(y_true, y_pred, strict=True))
    f1s = []
    for c in sorted(set(y_true)):
        tp = sum(t == c and p == c for t, p in pairs)
        fp = sum(t != c and p == c for t, p in pairs)
        fn = sum(t == c and p != c for t, p in pairs)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return {
        "accuracy": sum(t == p for t, p in pairs) / len(pairs),
        "macro_f1": sum(f1s) / len(f1s),
    }


def majority_label(labels: Iterable[str]) -> str:
    """The most common label (ties: the first in sorted order)."""
    counts = Counter(labels)
    if not counts:
        raise ValueError("no labels")
    return min(counts, key=lambda c: (-counts[c], c))


def scaled_score(score: float | None, majority: float | None, best: float | None) -> float | None:
    """(score − majority) / (best − majority); None when undefined."""
    if score is None or majority is None or best is None or not best > majority:
        return None
    return (score - majority) / (best - majority)


def rank(values: Mapping[str, float], higher_is_better: bool = True) -> dict[str, float]:
    """Rank 1 for the best value; ties share the mean of the ranks they span."""
    order = sorted(values, key=lambda k: -values[k] if higher_is_better else values[k])
    ranks: dict[str, float] = {}
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in order[i : j + 1]:
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _value(row: Row, metric: str) -> float | None:
    value = (row.get("metrics") or {}).get(metric)
    if not isinstance(value, int | float) or row.get("status") != "ok":
        return None
    return float(value) if math.isfinite(value) else None


def score_rows(
    rows: Iterable[Row], metric: str, baselines: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Each row with `score` (the metric; the majority's when it failed or ran over
    budget), `imputed`, `scaled` and `rank` added. Unavailable rows are dropped.
    `baselines`: the systems whose best defines 1 (default: all but "automl")."""
    groups: dict[GroupKey, list[Row]] = {}
    for r in rows:
        if r.get("status") != "unavailable":
            groups.setdefault((r["dataset"], float(r["budget_s"]), int(r["seed"])), []).append(r)
    out: list[dict[str, Any]] = []
    for members in groups.values():
        majority = next((_value(r, metric) for r in members if r["system"] == MAJORITY), None)
        scored = []
        for r in members:
            value = _value(r, metric)
            imputed = value is None and r["system"] != MAJORITY and majority is not None
            scored.append({**r, "score": majority if imputed else value, "imputed": imputed})
        base = [
            s["score"]
            for s in scored
            if s["system"] != MAJORITY
            and s["score"] is not None
            and (s["system"] in baselines if baselines is not None else s["system"] != "automl")
        ]
        best = max(base) if base else None
        ranks = rank(
            {
                s["system"]: s["score"]
                for s in scored
                if s["system"] != MAJORITY and s["score"] is not None
            }
        )
        for s in scored:
            s["scaled"] = scaled_score(s["score"], majority, best)
            s["rank"] = ranks.get(s["system"])
        out += scored
    return out


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.mean(kept) if kept else None


def summarise(scored: Iterable[Row]) -> list[dict[str, Any]]:
    """One row per (dataset, budget_s, system): means over seeds of score, scaled score,
    rank and wall seconds; the score's sample std (None for one seed); statuses, imputed
    scores and best-so-far models (stopped at the budget) counted; the largest peak memory."""
    groups: dict[tuple[str, float, str], list[Row]] = {}
    for r in scored:
        groups.setdefault((r["dataset"], float(r["budget_s"]), r["system"]), []).append(r)
    out = []
    for (dataset, budget_s, system), rs in groups.items():
        scores = [r["score"] for r in rs if r.get("score") is not None]
        out.append(
            {
                "dataset": dataset,
                "budget_s": budget_s,
                "system": system,
                "seeds": len(rs),
                "score": _mean(scores),
                "score_std": statistics.stdev(scores) if len(scores) > 1 else None,
                "scaled": _mean(r.get("scaled") for r in rs),
                "rank": _mean(r.get("rank") for r in rs),
                "wall_s": _mean(r.get("wall_s") for r in rs),
                "peak_mem_mb": max((r.get("peak_mem_mb") or 0.0 for r in rs), default=None)
                or None,
                "statuses": dict(Counter(str(r["status"]) for r in rs)),
                "imputed": sum(bool(r.get("imputed")) for r in rs),
                "stopped": sum(bool((r.get("info") or {}).get("stopped_at_budget")) for r in rs),
            }
        )
    return sorted(out, key=lambda r: (r["dataset"], r["budget_s"], r["system"]))


def average_ranks(scored: Iterable[Row]) -> list[dict[str, Any]]:
    """Per (budget_s, system): the mean rank and mean scaled score over every
    (dataset, seed) group, and how many groups it was ranked in. Best mean rank first
    within each budget. The majority-class reference is left out."""
    groups: dict[tuple[float, str], list[Row]] = {}
    for r in scored:
        if r["system"] != MAJORITY and r.get("rank") is not None:
            groups.setdefault((float(r["budget_s"]), r["system"]), []).append(r)
    out = [
        {
            "budget_s": budget_s,
            "system": system,
            "avg_rank": statistics.mean(r["rank"] for r in rs),
            "mean_scaled": _mean(r.get("scaled") for r in rs),
            "groups": len(rs),
        }
        for (budget_s, system), rs in groups.items()
    ]
    return sorted(out, key=lambda r: (r["budget_s"], r["avg_rank"], r["system"]))
