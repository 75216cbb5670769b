"""Does bf16 training (automl.modelio.train_autocast) buy epochs without costing quality?

Trains one fixed fine-tuning configuration twice, side by side (two processes, one CPU
thread each, the same deadline): once in fp32 (AUTOML_MIXED_PRECISION=0) and once with the
default, bf16 autocast where the CPU has native bf16. Both use the automl split of the
dataset (seed 0), FineTuneTrainer itself and the same deadline. Per epoch it records the
seconds and the validation macro-F1; at the end, the saved best epoch's test macro-F1
(scored in fp32 by automl's predict code, as an exported model is) and the ratio of epoch
times.

The configuration is the best one of the SpamAssassin 10-minute quality study
(MiniLM-L6, 128 tokens, 4 of 6 layers frozen).

Usage: python benchmarks/precision.py [--dataset spamassassin] [--seconds 540]
Writes benchmarks/results/precision.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
RUNS = ROOT / "benchmarks" / "runs" / "precision"

PARAMS: dict[str, Any] = {
    "backbone": "minilm-l6",
    "freeze_layers": 4,
    "learning_rate": 6.38e-5,
    "weight_decay": 0.042,
    "dropout": 0.19,
    "label_smoothing": 0.0875,
    "warmup_ratio": 0.178,
    "epochs": 8,
    "batch_size": 32,
    "max_length": 128,
    "augment": "none",
    "augment_strength": 0.0,
    "patience": 3,
}


def one(dataset: str, seconds: float, out: Path) -> dict[str, Any]:
    """Train PARAMS once in this process (precision from the environment)."""
    import torch

    from automl import backbones
    from automl.config import EpochResult, TrialContext
    from automl.data import check, split_checked
    from automl.datasets import dataset_path
    from automl.metrics import compute_metrics
    from automl.modelio import load_model_dir, predict_logits, quiet_transformers
    from automl.trainers.finetune import FineTuneTrainer

    quiet_transformers()
    torch.set_num_threads(1)
    data = split_checked(check(str(dataset_path(dataset)), "label", None, None), seed=0)
    params = {**PARAMS, "backbone_path": str(backbones.resolve(PARAMS["backbone"]))}
    ctx = TrialContext(output_dir=str(out), deadline=time.time() + seconds, seed=0)
    epochs: list[dict[str, float]] = []

    def report(r: EpochResult) -> None:
        epochs.append(
            {"epoch": r.epoch, "seconds": r.seconds, "val_macro_f1": r.metrics["macro_f1"]}
        )
        print(
            f"  epoch {r.epoch}: {r.seconds:.1f} s, val macro-F1 {r.metrics['macro_f1']:.4f}",
            flush=True,
        )

    FineTuneTrainer().fit(data, params, ctx, report)
    model, tokenizer, meta = load_model_dir(out)
    logits = predict_logits(model, tokenizer, data.test.texts, meta.max_length)
    test = compute_metrics("classification", data.test.labels, logits)
    return {
        "precision": meta.train_precision,
        "epochs": epochs,
        "best_val_macro_f1": max(e["val_macro_f1"] for e in epochs),
        "test_macro_f1": test["macro_f1"],
        "test_rows": len(data.test),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="spamassassin")
    ap.add_argument("--seconds", type=float, default=540.0)
    ap.add_argument("--one", choices=["fp32", "bf16"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        result = one(args.dataset, args.seconds, RUNS / args.one)
        print("RESULT " + json.dumps(result), flush=True)
        return

    from automl.modelio import _cpu_has_bf16

    if not _cpu_has_bf16():
        raise SystemExit(
            "this CPU has no native bf16: automl trains in fp32 here, nothing to compare"
        )
    procs = {}
    for name in ("fp32", "bf16"):
        env = {**os.environ, "AUTOML_MIXED_PRECISION": "0" if name == "fp32" else "1"}
        cmd = [sys.executable, __file__, "--one", name, "--dataset", args.dataset]
        cmd += ["--seconds", str(args.seconds)]
        procs[name] = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    results: dict[str, Any] = {}
    for name, proc in procs.items():
        out, _ = proc.communicate()
        line = next((x for x in out.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            raise SystemExit(f"{name} run failed ({proc.returncode}):\n{out[-2000:]}")
        results[name] = json.loads(line[len("RESULT ") :])
        print(f"{name}:\n" + "\n".join(x for x in out.splitlines() if x.startswith("  ")))
    assert results["fp32"]["precision"] == "fp32" and results["bf16"]["precision"] == "bf16"

    def epoch_s(r: dict[str, Any]) -> list[float]:
        t = [e["seconds"] for e in r["epochs"]]
        return [b - a for a, b in zip([0.0, *t], t, strict=False)]

    f, b = epoch_s(results["fp32"]), epoch_s(results["bf16"])
    n = min(len(f), len(b))
    # The last epoch of either run may be cut short by the deadline: compare full ones.
    full = max(1, n - 1)
    ratios = [f[i] / b[i] for i in range(full)]
    summary = {
        "dataset": args.dataset,
        "seconds": args.seconds,
        "params": PARAMS,
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
        "fp32": results["fp32"],
        "bf16": results["bf16"],
        "epoch_time_ratio_fp32_over_bf16": ratios,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "precision.json").write_text(json.dumps(summary, indent=2))
    lines = [
        f"# bf16 vs fp32 training ({args.dataset}, {args.seconds:.0f} s each, side by side, "
        f"1 thread each, {summary['date']})",
        "",
        "Fixed configuration: " + ", ".join(f"{k} {v}" for k, v in PARAMS.items()) + ".",
        "",
        "| precision | epochs reported | seconds per epoch | val macro-F1 per epoch "
        "| best val macro-F1 | test macro-F1 (fp32 predict) |",
        "|---|---|---|---|---|---|",
    ]
    for name, times in (("fp32", f), ("bf16", b)):
        r = results[name]
        vals = [e["val_macro_f1"] for e in r["epochs"]]
        lines.append(
            f"| {name} | {len(r['epochs'])} | {', '.join(f'{t:.0f}' for t in times)} "
            f"| {', '.join(f'{v:.4f}' for v in vals)} "
            f"| {r['best_val_macro_f1']:.4f} | {r['test_macro_f1']:.4f} |"
        )
    lines += [
        "",
        "Epoch time ratio fp32 ÷ bf16 (full epochs): "
        + ", ".join(f"{x:.2f}" for x in ratios)
        + ".",
        "Epoch 1 runs the whole model; later epochs run the unfrozen top layers from the "
        "frozen-prefix cache. One seed and one split: on a test split of "
        f"{results['bf16']['test_rows']} rows, one error moves macro-F1 by about "
        f"{1 / results['bf16']['test_rows']:.4f}.",
    ]
    (RESULTS / "precision.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
