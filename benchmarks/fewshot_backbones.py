"""Which sentence-embedding body should the few-shot search offer, and can cross-validation
on a few examples tell the bodies apart?

For every cell of the few-shot benchmark (SpamAssassin, MR, CoNLL-2010, Fortunes-8; 8, 32
and 128 examples per class; seeds 0 and 1; the committed sample ids of
benchmarks/fewshot_samples.json and the same test split), this fits the search's cheapest
head, LogisticRegression on frozen sentence embeddings, for each body (MiniLM-L3, MiniLM-L6),
max length (128, 256) and C (0.1, 1, 10, 100), and records:

- cv: the mean macro-F1 over the folds the search itself uses (automl.cv.cv_folds: 4-fold
  stratified, 2 repeats, the cell's seed) — what the search sees;
- test: macro-F1 of the head refitted on all training examples, on the test split — what
  the user gets.

Per cell it reports the body with the best CV score, the body with the best test score, and
the test score of each body's CV-best configuration. Embeddings come from automl's cache
(automl.embeddings.embed), so a second run takes seconds.

Usage: python benchmarks/fewshot_backbones.py [--shots 8,32,128] [--datasets mr,conll2010]
Writes benchmarks/results/fewshot_backbones.{json,md}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import fewshot as bench  # noqa: E402
import numpy as np  # noqa: E402

from automl.backbones import resolve  # noqa: E402
from automl.cv import cv_folds  # noqa: E402
from automl.embeddings import embed  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
BODIES = ("minilm-l3", "minilm-l6")
LENGTHS = (128, 256)
CS = (0.1, 1.0, 10.0, 100.0)


def _macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(y_true, y_pred, average="macro"))


def score_cell(dataset: str, shots: int, seed: int, samples: dict[str, Any], rows: list) -> list:
    """CV and test macro-F1 of every (body, max length, C) on one cell."""
    from sklearn.linear_model import LogisticRegression

    entry = samples["datasets"][dataset]
    train = [rows[i] for i in entry["train"][str(shots)][str(seed)]["ids"]]
    test = [rows[i] for i in entry["test"]["ids"]]
    x, y = [t for t, _ in train], np.array([lab for _, lab in train])
    xt, yt = [t for t, _ in test], np.array([lab for _, lab in test])
    folds = cv_folds(list(y), 4, 2, seed)
    out = []
    for body, length in itertools.product(BODIES, LENGTHS):
        path = str(resolve(body))
        e, et = embed(path, x, length), embed(path, xt, length)
        for c in CS:
            cv = []
            for tr, va in folds:
                head = LogisticRegression(C=c, max_iter=1000).fit(e[tr], y[tr])
                cv.append(_macro_f1(y[va], head.predict(e[va])))
            head = LogisticRegression(C=c, max_iter=1000).fit(e, y)
            out.append(
                {
                    "dataset": dataset,
                    "shots": shots,
                    "seed": seed,
                    "body": body,
                    "max_length": length,
                    "C": c,
                    "cv": float(np.mean(cv)),
                    "test": _macro_f1(yt, head.predict(et)),
                }
            )
    return out


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per cell: each body's CV-best configuration (cv and test), and for MiniLM-L6 the
    CV-best configuration at each max length."""
    cells: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault((r["dataset"], r["shots"], r["seed"]), []).append(r)
    summary = []
    for (dataset, shots, seed), rs in cells.items():
        best = {b: max((r for r in rs if r["body"] == b), key=lambda r: r["cv"]) for b in BODIES}
        l6 = [r for r in rs if r["body"] == "minilm-l6"]
        by_len = {
            n: max((r for r in l6 if r["max_length"] == n), key=lambda r: r["cv"]) for n in LENGTHS
        }
        summary.append(
            {
                "dataset": dataset,
                "shots": shots,
                "seed": seed,
                "cv_picks": max(BODIES, key=lambda b: best[b]["cv"]),
                "test_best": max(BODIES, key=lambda b: best[b]["test"]),
                **{f"{b}_cv": best[b]["cv"] for b in BODIES},
                **{f"{b}_test": best[b]["test"] for b in BODIES},
                **{f"l6_{n}_cv": by_len[n]["cv"] for n in LENGTHS},
                **{f"l6_{n}_test": by_len[n]["test"] for n in LENGTHS},
            }
        )
    return summary


def markdown(summary: list[dict[str, Any]]) -> str:
    lines = [
        f"# Few-shot bodies: CV choice vs test ({time.strftime('%Y-%m-%d')})",
        "",
        "LogisticRegression on frozen embeddings; for each body its configuration (max length "
        "128/256, C 0.1-100) with the best CV score. cv: mean macro-F1 over the search's "
        "folds; test: macro-F1 on the benchmark's test split after a refit on all examples.",
        "",
        "| dataset | shots | seed | L3 cv | L3 test | L6 cv | L6 test | CV picks | best on test |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in sorted(summary, key=lambda s: (s["shots"], s["dataset"], s["seed"])):
        lines.append(
            f"| {s['dataset']} | {s['shots']} | {s['seed']} | {s['minilm-l3_cv']:.3f} | "
            f"{s['minilm-l3_test']:.3f} | {s['minilm-l6_cv']:.3f} | {s['minilm-l6_test']:.3f} | "
            f"{s['cv_picks']} | {s['test_best']} |"
        )
    n = len(summary)
    l6_test = sum(s["minilm-l6_test"] >= s["minilm-l3_test"] for s in summary)
    wrong = sum(s["cv_picks"] != s["test_best"] for s in summary)
    l3_picked = [s for s in summary if s["cv_picks"] == "minilm-l3"]
    lost = sum(s["minilm-l3_test"] < s["minilm-l6_test"] for s in l3_picked)
    lines += [
        "",
        f"- Cells: {n}. The L6 configuration chosen by CV scored at least as well on the "
        f"test split as the L3 one in {l6_test} of {n}.",
        f"- CV picked the body that was worse on the test split in {wrong} of {n}; it picked "
        f"L3 in {len(l3_picked)}, and L3 then scored below L6 on the test split in {lost}.",
        "",
        "## MiniLM-L6: 128 vs 256 tokens",
        "",
        "The CV-best configuration at each max length. Cells whose texts all fit in 128 "
        "tokens give the same embeddings at both lengths and are left out.",
        "",
        "| dataset | shots | seed | 128 cv | 128 test | 256 cv | 256 test |",
        "|---|---|---|---|---|---|---|",
    ]
    differ = [
        s
        for s in sorted(summary, key=lambda s: (s["shots"], s["dataset"], s["seed"]))
        if (s["l6_128_cv"], s["l6_128_test"]) != (s["l6_256_cv"], s["l6_256_test"])
    ]
    for s in differ:
        lines.append(
            f"| {s['dataset']} | {s['shots']} | {s['seed']} | {s['l6_128_cv']:.3f} | "
            f"{s['l6_128_test']:.3f} | {s['l6_256_cv']:.3f} | {s['l6_256_test']:.3f} |"
        )
    short_pick = [s for s in differ if s["l6_128_cv"] > s["l6_256_cv"]]
    short_lost = sum(s["l6_128_test"] < s["l6_256_test"] for s in short_pick)
    longer = sum(s["l6_256_test"] >= s["l6_128_test"] for s in differ)
    lines += [
        "",
        f"- Cells where the length matters: {len(differ)}. 256 tokens scored at least as well "
        f"on the test split in {longer} of them.",
        f"- CV preferred 128 tokens in {len(short_pick)}; 128 then scored below 256 on the "
        f"test split in {short_lost}.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shots", default="8,32,128")
    ap.add_argument("--datasets", default="spamassassin,mr,conll2010,fortunes8")
    ap.add_argument("--seeds", default="0,1")
    args = ap.parse_args()
    samples = bench.load_samples()
    rows: list[dict[str, Any]] = []
    for dataset in args.datasets.split(","):
        data_rows = bench.dataset_rows(dataset, samples)
        for shots, seed in itertools.product(
            [int(s) for s in args.shots.split(",")], [int(s) for s in args.seeds.split(",")]
        ):
            cell = score_cell(dataset, shots, seed, samples, data_rows)
            rows += cell
            top = max(cell, key=lambda r: r["cv"])
            print(f"{dataset} {shots} shots seed {seed}: CV picks {top['body']}", flush=True)
    summary = summarize(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fewshot_backbones.json").write_text(
        json.dumps({"rows": rows, "summary": summary}, indent=1)
    )
    text = markdown(summary)
    (RESULTS / "fewshot_backbones.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
