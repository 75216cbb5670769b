"""Export: the best trial's checkpoint becomes `<out>/<study>/best/` with a model card.

The exported folder is a plain Hugging Face model folder (safetensors, config,
tokenizer, label names in config.id2label) plus automl.json and README.md (the card).
The test metric is computed here with the same code `automl predict` runs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from automl.config import PreparedData
from automl.metrics import compute_metrics
from automl.modelio import load_model_dir, predict_logits, select_device

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CardInfo:
    """Everything the model card states."""

    study_id: str
    data: PreparedData
    params: dict[str, Any]
    val_metrics: dict[str, float]
    test_metrics: dict[str, float]
    metric: str
    budget_s: float
    wall_s: float
    trials_by_status: dict[str, int]
    reference_val: dict[str, float] = field(default_factory=dict)
    reference_test: dict[str, float] = field(default_factory=dict)
    route_reason: str = ""


def copy_checkpoint(checkpoint_dir: str | Path, dest: str | Path) -> Path:
    """Copy a trial checkpoint to `dest` atomically (temp folder, then rename)."""
    dest = Path(dest)
    tmp = dest.with_name(dest.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(checkpoint_dir, tmp)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    _set_label_names(dest)
    return dest


def _set_label_names(model_dir: Path) -> None:
    """Write class names into config.json's id2label so plain transformers shows them."""
    meta = json.loads((model_dir / "automl.json").read_text())
    names = meta.get("label_names") or []
    if not names:
        return
    cfg_path = model_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["id2label"] = {str(i): n for i, n in enumerate(names)}
    cfg["label2id"] = {n: i for i, n in enumerate(names)}
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True))


def evaluate(model_dir: str | Path, texts: tuple[str, ...], labels: tuple[Any, ...]) -> dict:
    """Metrics of an exported model on labelled texts (the code path of `automl predict`)."""
    model, tokenizer, meta = load_model_dir(model_dir)
    model.to(select_device())
    logits = predict_logits(model, tokenizer, list(texts), meta.max_length)
    return compute_metrics(meta.task, np.asarray(labels), logits)


def estimate_export_seconds(n_test: int, max_length: int = 128, layers: int = 6) -> float:
    """A conservative estimate of export time (load, predict the test split, copy, card),
    used to reserve time before the deadline. Inference on 2 CPU threads runs about
    60,000 layer-tokens per second for MiniLM-sized models (measured here: Fortunes-8's
    472 test texts, MiniLM-L3 at 64 tokens, exported and scored in 2.5 s)."""
    tokens = n_test * max_length * 0.6  # dynamic padding: about 60 % of max on real data
    return 2.5 + tokens * layers / 50_000.0


def write_model_card(model_dir: str | Path, info: CardInfo) -> Path:
    """Write README.md (a Hugging Face model card) into the model folder."""
    d = info.data
    path = Path(model_dir) / "README.md"
    m = info.metric
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: "
        + ("text-classification" if d.task == "classification" else "text-regression"),
        "tags: [automl]",
        "---",
        "",
        f"# automl model `{info.study_id}`",
        "",
        f"Fine-tuned `{info.params.get('backbone', '?')}` for {d.task} of "
        f"`{', '.join(d.text_columns)}` → `{d.label_column}` from `{d.source}`.",
        "",
        "## Results",
        "",
        "| split | " + " | ".join(sorted(info.test_metrics or info.val_metrics)) + " |",
        "|---|" + "---|" * len(info.test_metrics or info.val_metrics),
    ]
    keys = sorted(info.test_metrics or info.val_metrics)
    lines.append(
        "| validation | " + " | ".join(_fmt(info.val_metrics.get(k)) for k in keys) + " |"
    )
    if info.test_metrics:
        lines.append("| test | " + " | ".join(_fmt(info.test_metrics.get(k)) for k in keys) + " |")
    lines.append("")
    if info.reference_test and m in info.reference_test and m in info.test_metrics:
        margin = info.test_metrics[m] - info.reference_test[m]
        lines.append(
            f"Reference (TF-IDF + linear model, same split): test {m} "
            f"{_fmt(info.reference_test[m])}; this model's margin: {margin:+.4f}."
        )
    elif info.reference_val and m in info.reference_val and m in info.val_metrics:
        margin = info.val_metrics[m] - info.reference_val[m]
        lines.append(
            f"Reference (TF-IDF + linear model): validation {m} "
            f"{_fmt(info.reference_val[m])}; this model's margin: {margin:+.4f}."
        )
    lines += [
        "",
        "## Data",
        "",
        f"- rows: train {len(d.train)}, validation {len(d.val)}, test {len(d.test)} "
        f"(seed {d.seed}; the test split was never seen by the search)",
    ]
    if d.task == "classification":
        lines.append(f"- classes ({len(d.label_names)}): {', '.join(d.label_names)}")
    lines += [f"- cleaning: {line}" for line in d.report.lines()]
    lines += [
        "",
        "## Search",
        "",
        f"- budget {info.budget_s:.0f} s, wall time {info.wall_s:.0f} s",
        "- trials: " + ", ".join(f"{n} {s}" for s, n in sorted(info.trials_by_status.items())),
    ]
    if info.route_reason:
        lines.append(f"- route: {info.route_reason}")
    lines += ["", "Chosen parameters:", "", "```json"]
    shown = {k: v for k, v in info.params.items() if k != "backbone_path"}
    lines += [json.dumps(shown, indent=2, sort_keys=True, default=str), "```", ""]
    lines += [
        "## Use",
        "",
        "```bash",
        f"automl predict {Path(model_dir)} data.csv --out predictions.csv",
        "```",
        "",
        "```python",
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
        f'model = AutoModelForSequenceClassification.from_pretrained("{Path(model_dir)}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{Path(model_dir)}")',
        "```",
        "",
        "## Limitations",
        "",
        f"- Texts longer than {info.params.get('max_length', '?')} tokens are truncated: "
        "on long documents a linear model on all words can do better.",
        "- Scores come from one split of the data; expect some variance on new data.",
        f"- Generated by automl on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.4f}"
