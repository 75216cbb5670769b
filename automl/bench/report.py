"""A benchmark run's report folder: results.csv, summary.md and scores_vs_budget.png.

results.csv has one row per cell (the majority-class reference included) with its score,
scaled score and rank; summary.md has a table per budget with a row per system per
dataset, the average ranks and scaled scores, and where automl wins and where it does
not; the plot shows the metric against the budget for each dataset (matplotlib, Agg).
"""

from __future__ import annotations

import csv
import math
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from automl.bench.scoring import MAJORITY, average_ranks, score_rows, summarise
from automl.config import Budget

__all__ = ["CSV_NAME", "MD_NAME", "PNG_NAME", "write_report"]

CSV_NAME, MD_NAME, PNG_NAME = "results.csv", "summary.md", "scores_vs_budget.png"
_CSV_COLUMNS = (
    "dataset budget_s seed system status score imputed scaled rank accuracy macro_f1 "
    "wall_s predict_s peak_mem_mb stopped_at_budget train_rows test_rows error"
).split()


def write_report(run: dict[str, Any], rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """Write the report of `run` (a bench_runs row) from its result rows into `out`."""
    config = run.get("config") or {}
    metric = config.get("metric", "macro_f1")
    scored = score_rows(rows, metric, config.get("baselines"))
    summary = summarise(scored)
    ranks = average_ranks(scored)
    systems = [MAJORITY, *config.get("systems", [])]
    systems += sorted({r["system"] for r in rows} - set(systems))
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / CSV_NAME, out / MD_NAME, out / PNG_NAME]
    _write_csv(paths[0], scored)
    paths[1].write_text(markdown(run, summary, ranks, systems, metric), encoding="utf-8")
    plot(summary, systems, metric, paths[2])
    return paths


def _write_csv(path: Path, scored: Iterable[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=_CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for r in sorted(
            scored, key=lambda r: (r["dataset"], r["budget_s"], r["seed"], r["system"])
        ):
            metrics, info = r.get("metrics") or {}, r.get("info") or {}
            writer.writerow(
                {
                    **{k: r.get(k) for k in _CSV_COLUMNS if k in r},
                    **{k: _round(r.get(k)) for k in ("score", "scaled", "rank")},
                    "accuracy": metrics.get("accuracy"),
                    "macro_f1": metrics.get("macro_f1"),
                    "predict_s": info.get("predict_s"),
                    "stopped_at_budget": bool(info.get("stopped_at_budget")),
                    "train_rows": info.get("train"),
                    "test_rows": info.get("test"),
                }
            )


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def _f(value: Any, digits: int = 3) -> str:
    ok = isinstance(value, int | float) and math.isfinite(value)
    return f"{value:.{digits}f}" if ok else "–"


def _score(row: dict[str, Any]) -> str:
    text = _f(row["score"])
    if row.get("score_std") is not None:
        text += f" ± {row['score_std']:.3f}"
    return text + (" *" if row.get("imputed") else "")


def _status(row: dict[str, Any]) -> str:
    counts = row["statuses"]
    text = ", ".join(f"{s} ×{n}" if n > 1 else s for s, n in sorted(counts.items()))
    stopped = row.get("stopped") or 0
    if stopped:
        text += " (stopped at the budget" + (f" ×{stopped})" if stopped > 1 else ")")
    return text


def markdown(
    run: dict[str, Any],
    summary: list[dict[str, Any]],
    ranks: list[dict[str, Any]],
    systems: Sequence[str],
    metric: str,
) -> str:
    """The summary page (a table per budget with a row per system per dataset)."""
    config = run.get("config") or {}
    order = {s: i for i, s in enumerate(systems)}
    budgets = sorted({r["budget_s"] for r in summary})
    lines = [
        f"# Benchmark `{run.get('suite')}`: run {run.get('id')}",
        "",
        (config.get("description") or "").strip(),
        "",
        f"Test {metric} on the committed splits (benchmarks/splits.json); "
        f"{run.get('done', '?')} of {run.get('cells', '?')} cells done; seeds "
        f"{', '.join(map(str, config.get('seeds', [])))}; {os.cpu_count()} CPUs; "
        f"started {run.get('created_at', '?')[:16]}, report {time.strftime('%Y-%m-%d %H:%M')}.",
        "",
    ]
    for budget in budgets:
        lines += [
            f"## Budget {Budget(budget)}",
            "",
            f"| dataset | system | {metric} | scaled | rank | fit s | peak MB | status |",
            "|---|---|---|---|---|---|---|---|",
        ]
        rows = [r for r in summary if r["budget_s"] == budget]
        rows.sort(key=lambda r: (r["dataset"], order.get(r["system"], len(order))))
        for r in rows:
            lines.append(
                f"| {r['dataset']} | {r['system']} | {_score(r)} | {_f(r['scaled'], 2)} "
                f"| {_f(r['rank'], 1)} | {_f(r['wall_s'], 1)} | {_f(r['peak_mem_mb'], 0)} "
                f"| {_status(r)} |"
            )
        lines.append("")
    lines += [
        "## Average rank and scaled score",
        "",
        "| budget | system | average rank | mean scaled score | groups |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {Budget(r['budget_s'])} | {r['system']} | {r['avg_rank']:.2f} "
        f"| {_f(r['mean_scaled'], 2)} | {r['groups']} |"
        for r in ranks
    ]
    lines += ["", *_standing(summary, budgets, metric), *_notes(config)]
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


def _standing(summary: list[dict[str, Any]], budgets: list[float], metric: str) -> list[str]:
    """Where automl is best and where it is not, per budget, from the mean scores."""
    if not any(r["system"] == "automl" for r in summary):
        return []
    out = ["## Where automl stands", ""]
    for budget in budgets:
        wins: list[str] = []
        losses: list[str] = []
        for dataset in sorted({r["dataset"] for r in summary if r["budget_s"] == budget}):
            rows = [
                r
                for r in summary
                if r["budget_s"] == budget and r["dataset"] == dataset and r["system"] != MAJORITY
            ]
            mine = next((r for r in rows if r["system"] == "automl"), None)
            others = [r for r in rows if r["system"] != "automl" and r["score"] is not None]
            if mine is None or mine["score"] is None or not others:
                continue
            best = max(others, key=lambda r: r["score"])
            margin = mine["score"] - best["score"]
            text = f"{dataset} ({margin:+.3f} vs {best['system']})"
            (wins if margin >= 0 else losses).append(text)
        if not wins and not losses:
            continue
        out.append(
            f"- {Budget(budget)}: automl is best or tied on {len(wins)} of "
            f"{len(wins) + len(losses)} datasets"
            + (f": {', '.join(wins)}" if wins else "")
            + (f"; behind on {', '.join(losses)}" if losses else "")
            + "."
        )
    return [*out, f"  (margins in test {metric}, means over seeds)", ""]


def _notes(config: dict[str, Any]) -> list[str]:
    baselines = ", ".join(config.get("baselines") or []) or "all systems but automl"
    return [
        "## How to read this",
        "",
        "- Every system gets the same wall budget per cell, counted from the start of its "
        "process (imports and model loading included); predicting the test split is timed "
        "apart and not budgeted. A system still training at the budget is stopped: "
        "*over budget* (no score). Systems that can stop early return their best model so "
        "far (`stopped_at_budget` in results.csv).",
        "- Scaled score (AMLB style): 0 = the majority-class predictor, 1 = the best "
        f"baseline of that dataset, budget and seed (baselines: {baselines}); negative is "
        "worse than always answering the most common class.",
        "- Failed and over-budget cells count as the majority-class predictor in scores "
        "and ranks (as AMLB imputes failures), marked *; unavailable ones are left out.",
        "- Rank 1 is best within a (dataset, budget, seed); ties share their mean rank.",
        "",
    ]


def plot(summary: list[dict[str, Any]], systems: Sequence[str], metric: str, path: Path) -> None:
    """The metric against the budget (minutes), one panel per dataset, a line per system
    (a colour each), the majority class as a dashed line. Failed and over-budget cells
    are not drawn."""
    from matplotlib.figure import Figure

    datasets = sorted({r["dataset"] for r in summary}) or ["(no results)"]
    cols = min(3, len(datasets))
    nrows = math.ceil(len(datasets) / cols)
    fig = Figure(figsize=(4.4 * cols, 3.3 * nrows + 0.8), layout="constrained")
    axes = fig.subplots(nrows, cols, squeeze=False).ravel()
    budgets = sorted({r["budget_s"] for r in summary})
    colours = {s: f"C{i % 10}" for i, s in enumerate(x for x in systems if x != MAJORITY)}
    legend: dict[str, Any] = {}
    for ax, dataset in zip(axes, datasets, strict=False):
        for system in systems:
            points = sorted(
                (r["budget_s"] / 60, r["score"])
                for r in summary
                if r["dataset"] == dataset
                and r["system"] == system
                and r["score"] is not None
                and r["imputed"] < r["seeds"]
            )
            if not points:
                continue
            if system == MAJORITY:
                line = ax.axhline(points[0][1], color="grey", linestyle="--", linewidth=1)
            else:
                xs, ys = zip(*points, strict=True)
                (line,) = ax.plot(xs, ys, marker="o", color=colours[system])
            legend.setdefault(system, line)
        ax.set_title(dataset)
        ax.set_xlabel("budget (minutes)")
        ax.set_ylabel(f"test {metric}")
        if len(budgets) > 1:
            ax.set_xscale("log")
            ax.minorticks_off()
        ax.set_xticks([b / 60 for b in budgets], [f"{b / 60:g}" for b in budgets])
        ax.grid(alpha=0.3)
    for ax in axes[len(datasets) :]:
        ax.set_visible(False)
    if legend:
        ordered = [s for s in systems if s in legend]
        fig.legend(
            [legend[s] for s in ordered],
            ordered,
            loc="outside lower center",
            ncol=min(4, len(ordered)),
        )
    fig.savefig(path, dpi=100)
