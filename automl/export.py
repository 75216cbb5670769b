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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from automl.config import PreparedData
from automl.errors import ModelError
from automl.metrics import compute_metrics
from automl.modelio import load_model_dir, predict_logits, read_meta, select_device

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
    # Few-shot studies: how the estimate was made, e.g. "4-fold cross-validation x 2 on
    # the 64 training examples"; empty for a validation split.
    cv: str = ""
    no_test_reason: str = ""  # why there is no held-out test split, when there is none
    model_format: str = "transformers"  # or "setfit"


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
    if not names or meta.get("format") == "image":  # an image config holds its names
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


_LAYER_TOKENS_PER_S = 27_000.0  # inference on 2 CPU threads, see _export_seconds


def _tokens(texts: Sequence[str], max_length: int) -> float:
    return sum(min(max_length, len(t) / 4.0 + 2.0) for t in texts)


def _export_seconds(tokens: float, layers: int) -> float:
    """A conservative estimate of export time for `tokens` test-split tokens through
    `layers` layers (load, predict the test split, copy, card),
    used to reserve time before the deadline. Tokens are estimated as characters / 4 + 2
    (within 1 % of MiniLM's tokenizer on Fortunes-8), capped at max_length. Inference on 2
    CPU threads ran 28,000-30,000 layer-tokens per second with dynamic padding (Fortunes-8's
    472 test texts, MiniLM-L3 at 64 tokens: 1.6 s; SpamAssassin's 884, MiniLM-L6 at 128
    tokens: 21 s), plus 0.25 s to load (its code is imported while the trials run:
    modelio.warm_up) and write. 27,000 keeps a margin: Fortunes-8's whole export at L3/64
    took 2.0 s beside Ray's shutdown, against 2.35 s estimated."""
    return 0.25 + tokens * layers / _LAYER_TOKENS_PER_S


# Image export on 2 CPU threads: decode + MobileNetV2 inference. At 224 x 224 about 12 ms
# an image (0.3 GFLOPs), scaling with the pixel count; decoding a small PNG ~0.2 ms.
_IMAGE_S_AT_224 = 0.012
_IMAGE_DECODE_S = 0.0002


def _image_export_seconds(n_test: int, side: int) -> float:
    return 1.0 + n_test * (_IMAGE_DECODE_S + _IMAGE_S_AT_224 * (side / 224.0) ** 2)


@dataclass(frozen=True)
class TrialDeadline:
    """Each trial's own deadline: the run's end minus what exporting that trial's model
    would take (a deeper backbone or longer inputs score the test split slower), so a
    cheap model trains closer to the end of the budget. Picklable: trials evaluate it."""

    end: float  # time.time() at which the whole run must be over
    tokens: dict[int, float]  # estimated test-split tokens by max_length
    layers: dict[str, int]  # depth by backbone name
    floor: float = 0.0  # work that runs beside the export (Ray's shutdown): at least this
    after: float = 0.0  # seconds after the export (leaving the process, a refit)

    @classmethod
    def plan_images(
        cls,
        end: float,
        n_test: int,
        image_sizes: Sequence[int],
        backbones: Sequence[str],
        floor: float = 0.0,
        after: float = 0.0,
    ) -> TrialDeadline:
        """The plan for image models: export time grows with the test images and the
        square of the input side (expressed in the text plan's layer-token units)."""
        tokens = {
            int(s): _image_export_seconds(n_test, int(s)) * _LAYER_TOKENS_PER_S
            for s in image_sizes
        }
        return cls(end, tokens, dict.fromkeys(backbones or [""], 1), floor, after)

    @classmethod
    def plan(
        cls,
        end: float,
        test_texts: Sequence[str],
        max_lengths: Sequence[int],
        layers: dict[str, int],
        floor: float = 0.0,
        after: float = 0.0,
    ) -> TrialDeadline:
        tokens = {int(m): _tokens(test_texts, int(m)) for m in max_lengths}
        return cls(end, tokens, dict(layers) or {"": 6}, floor, after)

    def reserve(self, params: dict[str, Any]) -> float:
        """Seconds kept back at the end for a model with these params."""
        length = int(params.get("max_length") or params.get("image_size") or 0)
        tokens = self.tokens.get(length, max(self.tokens.values(), default=0.0))
        depth = self.layers.get(str(params.get("backbone")), max(self.layers.values()))
        return max(_export_seconds(tokens, depth), self.floor) + self.after

    def __call__(self, params: dict[str, Any]) -> float:
        return self.end - self.reserve(params)

    def latest(self) -> float:
        """The deadline of the cheapest model to export: no trial runs past it."""
        cheapest = min(self.tokens.values(), default=0.0) * min(self.layers.values())
        return self.end - max(_export_seconds(cheapest, 1), self.floor) - self.after

    def earliest(self) -> float:
        """The deadline of the costliest model to export."""
        costliest = max(self.tokens.values(), default=0.0) * max(self.layers.values())
        return self.end - max(_export_seconds(costliest, 1), self.floor) - self.after


def _train_precision(model_dir: str | Path) -> str:
    """The training arithmetic recorded in the folder's automl.json ("" if unknown)."""
    try:
        return read_meta(model_dir).train_precision
    except ModelError:
        return ""


def write_model_card(model_dir: str | Path, info: CardInfo) -> Path:
    """Write README.md (a Hugging Face model card) into the model folder."""
    d = info.data
    path = Path(model_dir) / "README.md"
    m = info.metric
    setfit = info.model_format == "setfit"
    image = info.model_format == "image"
    backbone = info.params.get("backbone", "?")
    if setfit:
        what = (
            f"Few-shot `{info.params.get('method', 'setfit')}` on a `{backbone}` "
            "sentence-embedding body"
        )
    elif image and info.cv:
        what = f"A logistic-regression head on frozen ImageNet `{backbone}` features"
    else:
        what = f"Fine-tuned `{backbone}`"
    reference = (
        "raw pixels + logistic regression on at most 5,000 training images"
        if image
        else "TF-IDF + linear model"
    )
    val_name = "cross-validation (mean)" if info.cv else "validation"
    keys = sorted(k for k in (info.test_metrics or info.val_metrics) if not k.endswith("_std"))
    lines = [
        "---",
        "library_name: " + ("setfit" if setfit else "pytorch" if image else "transformers"),
        "pipeline_tag: "
        + (
            "image-classification"
            if image
            else "text-classification"
            if d.task == "classification"
            else "text-regression"
        ),
        "tags: [automl]",
        "---",
        "",
        f"# automl model `{info.study_id}`",
        "",
        f"{what} for {d.task} of "
        f"`{', '.join(d.text_columns)}` → `{d.label_column}` from `{d.source}`.",
        "",
        "## Results",
        "",
        "| split | " + " | ".join(keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    lines.append(
        f"| {val_name} | " + " | ".join(_fmt(info.val_metrics.get(k)) for k in keys) + " |"
    )
    if info.cv and any(f"{k}_std" in info.val_metrics for k in keys):
        lines.append(
            "| cross-validation (std) | "
            + " | ".join(_fmt(info.val_metrics.get(f"{k}_std")) for k in keys)
            + " |"
        )
    if info.test_metrics:
        lines.append("| test | " + " | ".join(_fmt(info.test_metrics.get(k)) for k in keys) + " |")
    lines.append("")
    if info.reference_test and m in info.reference_test and m in info.test_metrics:
        margin = info.test_metrics[m] - info.reference_test[m]
        lines.append(
            f"Reference ({reference}, same split): test {m} "
            f"{_fmt(info.reference_test[m])}; this model's margin: {margin:+.4f}."
        )
    elif info.reference_val and m in info.reference_val and m in info.val_metrics:
        margin = info.val_metrics[m] - info.reference_val[m]
        lines.append(
            f"Reference ({reference}): {val_name} {m} "
            f"{_fmt(info.reference_val[m])}; this model's margin: {margin:+.4f}."
        )
    if info.cv:
        lines += ["", f"Estimate: {info.cv}."]
    if info.no_test_reason:
        lines += [
            "",
            f"No held-out test split: {info.no_test_reason}. The scores above are "
            "cross-validated on the training data (the search chose among them, so they "
            "lean optimistic); check the model on labelled data of your own.",
        ]
    lines += [
        "",
        "## Data",
        "",
        f"- rows: train {len(d.train)}, validation {len(d.val)}, test {len(d.test)} "
        f"(seed {d.seed}"
        + ("; the test split was never seen by the search)" if len(d.test) else ")"),
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
    if _train_precision(model_dir) == "bf16":
        lines.append(
            "- training steps ran in bf16 autocast; validation, test and predict run in fp32"
        )
    lines += ["", "Chosen parameters:", "", "```json"]
    shown = {k: v for k, v in info.params.items() if k != "backbone_path"}
    lines += [json.dumps(shown, indent=2, sort_keys=True, default=str), "```", ""]
    lines += [
        "## Use",
        "",
        "```bash",
        f"automl predict {Path(model_dir)} "
        + ("images/" if image else "data.csv")
        + " --out predictions.csv",
        "```",
        "",
        "```python",
    ]
    if image:
        lines += [
            "from automl.predict import Predictor",
            f'model = Predictor("{Path(model_dir)}")',
            'model.predict(["photo.png"])  # image paths',
        ]
    elif setfit:
        lines += [
            "from setfit import SetFitModel",
            f'model = SetFitModel.from_pretrained("{Path(model_dir)}")',
            'model.predict(["some text"])',
        ]
    else:
        lines += [
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
            f'model = AutoModelForSequenceClassification.from_pretrained("{Path(model_dir)}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{Path(model_dir)}")',
        ]
    lines += [
        "```",
        "",
        "## Limitations",
        "",
        (
            f"- Images are resized to {info.params.get('image_size', '?')} x "
            f"{info.params.get('image_size', '?')} pixels (aspect ratio not kept): fine "
            "detail in large photos is lost."
            if image
            else f"- Texts longer than {info.params.get('max_length', '?')} tokens are "
            "truncated: on long documents a linear model on all words can do better."
        ),
        "- Scores come from "
        + ("cross-validation folds" if info.cv else "one split of the data")
        + "; expect some variance on new data.",
        f"- Generated by automl on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.4f}"
