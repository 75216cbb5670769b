"""The one model-folder format: a Hugging Face folder plus automl.json.

Trial checkpoints and exported models share it, so export is a copy and
`automl predict` uses exactly the code that computed the reported test metric.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from automl.errors import ModelError
from automl.paths import ensure_offline

logger = logging.getLogger(__name__)

META_FILE = "automl.json"


@dataclass(frozen=True)
class ModelMeta:
    """What predict needs besides the weights."""

    task: str  # "classification" | "regression"
    label_names: list[str]
    max_length: int
    backbone: str
    text_columns: list[str]
    # "transformers" | "setfit" (automl.fewshot_model) | "image" (automl.vision.model;
    # max_length is then the input side, text_columns the image-path column)
    format: str = "transformers"
    version: int = 1
    # setfit folders only (defaults keep older automl.json files loadable):
    head: str = ""  # the head's class name, e.g. "LogisticRegression", "SetFitHead"
    normalize_embeddings: bool = False  # SetFit's normalize_embeddings at training time
    # Arithmetic of the training steps ("bf16": autocast, see train_autocast; "" unknown).
    # Outputs never depend on it: evaluation and predict run in fp32.
    train_precision: str = ""


def select_device() -> Any:
    """cuda when present, else mps, else cpu. Never hard-coded."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


MIXED_PRECISION_ENV = "AUTOML_MIXED_PRECISION"  # "0" turns bf16 training off


def train_autocast(device: Any) -> tuple[Any, str]:
    """(context manager, precision name) for training steps on `device`: bf16 autocast
    where the hardware computes bf16 natively (CPUs with AVX512-BF16 or AMX, CUDA GPUs
    that support it), else fp32. Only training uses it: evaluation, export and predict
    run in fp32, so a saved model's outputs do not depend on the machine that trained it.
    Setting AUTOML_MIXED_PRECISION=0 keeps training in fp32."""
    import contextlib

    import torch

    off = os.environ.get(MIXED_PRECISION_ENV, "1").strip().lower() in ("0", "false", "no", "off")
    if not off:
        # Native only: before Ampere, bf16 is emulated (slower than fp32).
        if device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False):
            return torch.autocast("cuda", dtype=torch.bfloat16), "bf16"
        # On a CPU without native bf16 instructions autocast is slower than fp32.
        if device.type == "cpu" and _cpu_has_bf16():
            return torch.autocast("cpu", dtype=torch.bfloat16), "bf16"
    return contextlib.nullcontext(), "fp32"


def _cpu_has_bf16() -> bool:
    """The CPU has bf16 instructions (oneDNN's own check; False if torch lacks it)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def quiet_transformers() -> None:
    """Silence transformers' load reports ("newly initialized classifier" is expected)."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def save_model_dir(model: Any, tokenizer: Any, meta: ModelMeta, path: str | Path) -> Path:
    """Save a model folder (safetensors weights, config, tokenizer, automl.json)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    write_meta(meta, path)
    return path


def write_meta(meta: ModelMeta, path: str | Path) -> Path:
    """Write automl.json into a model folder; returns its path."""
    meta_path = Path(path) / META_FILE
    meta_path.write_text(json.dumps(asdict(meta), indent=2))
    return meta_path


def read_meta(path: str | Path) -> ModelMeta:
    """Read automl.json of a model folder, with a clear error when it is not one."""
    path = Path(path)
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise ModelError(
            f"{path} is not an automl model folder (no {META_FILE}): pass the folder that "
            "`automl run` printed, e.g. runs/<study>/best"
        )
    try:
        raw = json.loads(meta_path.read_text())
        return ModelMeta(**raw)
    except (ValueError, TypeError) as exc:
        raise ModelError(f"{meta_path} is corrupt ({exc}): export the model again") from exc


def load_model_dir(path: str | Path) -> tuple[Any, Any, ModelMeta]:
    """Load (model, tokenizer, meta) from a model folder, offline, no remote code.

    Dispatches on automl.json's format: "transformers" gives a transformers model;
    "setfit" gives an `automl.fewshot_model.FewShotModel` and its body's tokenizer;
    "image" gives an `automl.vision.model.ImageClassifier` and its ImageConfig in the
    tokenizer's place. Either way `predict_logits(model, tokenizer, texts,
    meta.max_length)` scores texts (image paths for an image model).
    """
    ensure_offline()
    meta = read_meta(path)
    if meta.format == "setfit":
        from automl.fewshot_model import load_fewshot_dir

        fewshot = load_fewshot_dir(path)
        return fewshot, fewshot.tokenizer, meta
    if meta.format == "image":
        from automl.vision.model import load_image_model

        image_model, image_config = load_image_model(path)
        return image_model, image_config, meta
    if meta.format != "transformers":
        raise ModelError(
            f"{Path(path) / META_FILE} names the model format {meta.format!r}, which this "
            "version of automl cannot load (it knows 'transformers', 'setfit' and 'image'): "
            "upgrade automl or export the model again"
        )
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    quiet_transformers()
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=False
        )
        model = AutoModelForSequenceClassification.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=False
        )
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the model in {path}: {exc}") from exc
    model.eval()
    return model, tokenizer, meta


def predict_logits(
    model: Any,
    tokenizer: Any,
    texts: list[str] | tuple[str, ...],
    max_length: int,
    batch_size: int = 64,
    device: Any = None,
) -> np.ndarray:
    """Raw model outputs for texts, shape (n, num_labels). Sorted by length for speed
    (dynamic padding), returned in input order.

    A few-shot model (`load_model_dir` of a "setfit" folder) embeds and applies its
    linear head instead; it ignores tokenizer, max_length (its body keeps the saved
    one) and device (it runs where its body is)."""
    import torch

    from automl.fewshot_model import FewShotModel

    if isinstance(model, FewShotModel):
        return model.logits(texts, batch_size=batch_size)
    from automl.vision.model import ImageClassifier, path_logits

    if isinstance(model, ImageClassifier):  # texts are image paths
        return path_logits(model, tokenizer, texts)
    device = device or next(model.parameters()).device
    n = len(texts)
    order = sorted(range(n), key=lambda i: len(texts[i]))
    out: np.ndarray | None = None
    model.eval()
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            enc = tokenizer(
                [texts[i] for i in idx],
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            ).to(device)
            logits = model(**enc).logits.float().cpu().numpy()
            if out is None:
                out = np.zeros((n, logits.shape[1]), dtype=np.float32)
            out[idx] = logits
    if out is None:
        num = int(getattr(model.config, "num_labels", 1))
        return np.zeros((0, num), dtype=np.float32)
    return out


def logits_to_predictions(logits: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(predictions, probabilities): class ids and softmax for classification; values for
    regression (probabilities None)."""
    if task == "regression":
        return logits[:, 0].astype(np.float64), None
    z = logits - logits.max(axis=1, keepdims=True)
    probs = np.exp(z)
    probs /= probs.sum(axis=1, keepdims=True)
    return logits.argmax(axis=1), probs


def warm_up(backbone_paths: list[str]) -> None:
    """Import what loading and running a model of these backbones needs (torch,
    transformers, each architecture's modelling module: ~2 s on 2 cores, most of a
    small model's load time), so a later load_model_dir is fast. Builds nothing real:
    the models are instantiated on torch's meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    quiet_transformers()
    for path in backbone_paths:
        try:
            config = AutoConfig.from_pretrained(path, local_files_only=True)
            AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=False)
            with torch.device("meta"):
                AutoModelForSequenceClassification.from_config(config)
        except (OSError, ValueError) as exc:  # the real load reports it properly
            logger.debug("warm-up of %s skipped: %s", path, exc)
