"""How much of a long text each model reads: why TF-IDF keeps up on SpamAssassin.

The fine-tuned models read the first `max_length` tokens (64 or 128 in the default
space) of e-mails that run to ~500; TF-IDF + logistic regression reads every word. This
script measures what that costs, on the same splits as `automl run --seed S`:

1. TF-IDF + logistic regression (the reference row's own code, automl.reference) on the
   full texts and on the first 64 / 128 / 256 MiniLM tokens of each text (seconds).
2. With --finetune: one fixed fine-tuning configuration (automl's FineTuneTrainer,
   MiniLM-L3, lr 1e-4, batch 32, no augmentation; bf16 where the CPU has it), reading
   the head or the tail of each text, and 128 or 256 tokens (minutes per row; two rows
   run at a time, one CPU thread each). The trainer has no truncation-side option: this
   script sets the tokenizer's `truncation_side`, which the saved tokenizer keeps.

Usage: python benchmarks/long_texts.py [--dataset spamassassin] [--seeds 0,1,2]
                                       [--finetune] [--finetune-seed 1]
Writes benchmarks/results/long_texts.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from automl import backbones  # noqa: E402
from automl.config import PreparedData, Split  # noqa: E402
from automl.data import check, split_checked  # noqa: E402
from automl.datasets import dataset_path  # noqa: E402
from automl.reference import fit_reference  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "benchmarks" / "runs"
TOKENIZER = "minilm-l6"  # MiniLM-L3 and L6 share the same uncased WordPiece vocabulary
LENGTHS = (64, 128, 256)
# (name, truncation side, max_length, freeze_layers, epochs): head vs tail at 64 tokens
# with the whole body training; 128 vs 256 tokens with the bottom two layers frozen (their
# outputs are cached after the first epoch, which is what makes 256 tokens affordable).
FINETUNE_ROWS = (
    ("head-64", "right", 64, 0, 4),
    ("tail-64", "left", 64, 0, 4),
    ("head-128-f2", "right", 128, 2, 5),
    ("head-256-f2", "right", 256, 2, 5),
)


def _splits(dataset: str, seed: int) -> PreparedData:
    return split_checked(check(str(dataset_path(dataset)), "label", None, None), seed=seed)


def _token_ends(texts: tuple[str, ...], tokenizer: Any) -> list[list[int]]:
    """Each text's token end offsets (characters), no special tokens, no truncation."""
    enc = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    return [[end for _, end in offsets] for offsets in enc["offset_mapping"]]


def _head(texts: tuple[str, ...], ends: list[list[int]], n: int) -> tuple[str, ...]:
    """Each text cut after its first n tokens (at the original characters)."""
    return tuple(t[: e[min(n, len(e)) - 1]] if e else "" for t, e in zip(texts, ends, strict=True))


def tfidf_rows(dataset: str, seeds: list[int]) -> list[dict[str, Any]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        str(backbones.resolve(TOKENIZER)), local_files_only=True, trust_remote_code=False
    )
    rows = []
    for seed in seeds:
        data = _splits(dataset, seed)
        splits = {"train": data.train, "val": data.val, "test": data.test}
        ends = {k: _token_ends(s.texts, tokenizer) for k, s in splits.items()}
        counts = [len(e) for e in ends["train"]]
        longer = {n: sum(c > n for c in counts) / len(counts) for n in LENGTHS}
        for n in (*LENGTHS, None):
            cut = {
                k: s if n is None else replace(s, texts=_head(s.texts, ends[k], n))
                for k, s in splits.items()
            }
            ref = fit_reference(
                replace(data, train=cut["train"], val=cut["val"], test=cut["test"]), seed
            )
            rows.append(
                {
                    "seed": seed,
                    "reads": "all words" if n is None else f"first {n} tokens",
                    "train_texts_longer": None if n is None else round(longer[n], 3),
                    "val_macro_f1": round(ref.val_metrics["macro_f1"], 4),
                    "test_macro_f1": round(ref.test_metrics["macro_f1"], 4),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def finetune_one(dataset: str, seed: int, row: tuple[str, str, int, int, int]) -> dict[str, Any]:
    """One fixed configuration, trained in this process (called in a subprocess)."""
    import numpy as np
    import torch

    import automl.trainers.finetune as finetune
    from automl.config import TrialContext
    from automl.metrics import compute_metrics
    from automl.modelio import load_model_dir, predict_logits

    name, side, max_length, freeze, epochs = row
    torch.set_num_threads(1)
    encode = finetune._encode

    def encode_on_side(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
        tokenizer.truncation_side = side
        return encode(tokenizer, texts, max_length)

    finetune._encode = encode_on_side
    data = _splits(dataset, seed)
    params = dict(finetune.DEFAULTS)
    params.update(
        backbone="minilm-l3",
        backbone_path=str(backbones.resolve("minilm-l3")),
        max_length=max_length,
        freeze_layers=freeze,
        epochs=epochs,
        learning_rate=1e-4,
        batch_size=32,
        patience=3,
        augment="none",
    )
    out = RUNS / "long_texts" / f"{dataset}-{seed}-{name}"
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    test_data = data.test
    epochs_done = finetune.FineTuneTrainer().fit(
        replace(data, test=Split((), ())),
        params,
        TrialContext(output_dir=str(out), deadline=time.time() + 7200, seed=seed),
        lambda _: None,
    )
    seconds = time.time() - t0
    model, tokenizer, meta = load_model_dir(out)
    assert tokenizer.truncation_side == side  # the saved tokenizer keeps the side
    logits = predict_logits(model, tokenizer, list(test_data.texts), meta.max_length)
    test = compute_metrics(data.task, np.asarray(test_data.labels), logits)
    return {
        "seed": seed,
        "config": name,
        "reads": f"{'first' if side == 'right' else 'last'} {max_length} tokens",
        "freeze_layers": freeze,
        "epochs": len(epochs_done),
        "val_macro_f1_by_epoch": [round(e.metrics["macro_f1"], 4) for e in epochs_done],
        "val_macro_f1": round(max(e.metrics["macro_f1"] for e in epochs_done), 4),
        "test_macro_f1": round(test["macro_f1"], 4),
        "train_seconds": round(seconds),
    }


def finetune_rows(dataset: str, seed: int) -> list[dict[str, Any]]:
    def run(row: tuple[str, str, int, int, int]) -> dict[str, Any]:
        cmd = [sys.executable, __file__, "--one", json.dumps([dataset, seed, list(row)])]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{row[0]} failed:\n{proc.stderr[-3000:]}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        print(json.dumps(result), flush=True)
        return result

    with ThreadPoolExecutor(2) as pool:  # two rows at a time: one per core
        return list(pool.map(run, FINETUNE_ROWS))


def write(dataset: str, tfidf: list[dict], finetune: list[dict]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "long_texts.json").write_text(
        json.dumps({"dataset": dataset, "tfidf": tfidf, "finetune": finetune}, indent=2)
    )
    lines = [
        f"# How much of each text the models read ({dataset}, 2 CPUs, "
        f"{time.strftime('%Y-%m-%d')})",
        "",
        "TF-IDF + logistic regression (the reference row's code) on the same splits as "
        "`automl run --seed S`, reading all words or only the first N MiniLM tokens.",
        "",
        "| seed | reads | train texts longer | val macro-F1 | test macro-F1 |",
        "|---|---|---|---|---|",
    ]
    for r in tfidf:
        longer = "" if r["train_texts_longer"] is None else f"{r['train_texts_longer']:.0%}"
        lines.append(
            f"| {r['seed']} | {r['reads']} | {longer} | {r['val_macro_f1']:.4f} "
            f"| {r['test_macro_f1']:.4f} |"
        )
    if finetune:
        lines += [
            "",
            "One fixed fine-tuning configuration (MiniLM-L3, lr 1e-4, batch 32, one CPU "
            "thread), reading the head or the tail of each text:",
            "",
            "| seed | config | reads | frozen layers | epochs | val macro-F1 | test macro-F1 "
            "| train s |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in finetune:
            lines.append(
                f"| {r['seed']} | {r['config']} | {r['reads']} | {r['freeze_layers']} "
                f"| {r['epochs']} | {r['val_macro_f1']:.4f} | {r['test_macro_f1']:.4f} "
                f"| {r['train_seconds']} |"
            )
    (RESULTS / "long_texts.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="spamassassin")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--finetune", action="store_true")
    ap.add_argument("--finetune-seed", type=int, default=1)
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        dataset, seed, row = json.loads(args.one)
        print(json.dumps(finetune_one(dataset, int(seed), tuple(row))))  # type: ignore[arg-type]
        return
    tfidf = tfidf_rows(args.dataset, [int(s) for s in args.seeds.split(",")])
    finetune = finetune_rows(args.dataset, args.finetune_seed) if args.finetune else []
    write(args.dataset, tfidf, finetune)


if __name__ == "__main__":
    main()
