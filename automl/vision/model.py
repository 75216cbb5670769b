"""The image classifier (a pretrained CNN body + a new linear head) and its model folder.

A folder holds `model.safetensors` (the whole network), `config.json` (backbone, classes,
input size, normalisation, the side images are decoded to) and automl.json (format
"image"). Trial checkpoints and exported models share it, and the trials' validation
scores, the export's test score and `automl predict` all turn pixels into inputs with the
same `to_input`, so predict reproduces the reported metric.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from automl.errors import ModelError

logger = logging.getLogger(__name__)

__all__ = [
    "ImageClassifier",
    "ImageConfig",
    "load_image_model",
    "pixel_logits",
    "normalize",
    "path_logits",
    "save_image_model",
    "to_input",
    "to_unit",
]

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
KIND = "automl-image-classifier"


@dataclass(frozen=True)
class ImageConfig:
    """What rebuilds the network and feeds it: written to config.json."""

    backbone: str
    num_labels: int
    image_size: int  # the network's input side
    pixel_side: int  # images are decoded and resized to this side first (automl.images)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    dropout: float = 0.0
    label_names: tuple[str, ...] = ()
    kind: str = KIND


class ImageClassifier(nn.Module):
    """backbone.forward_features (global-pooled) -> dropout -> linear head."""

    def __init__(self, backbone: nn.Module, feature_dim: int, num_labels: int, dropout: float):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, num_labels)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_features(x)  # type: ignore[operator]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))


def build_classifier(
    cfg: ImageConfig, pretrained: bool = True, weights: str | Path | None = None
) -> ImageClassifier:
    """A classifier for cfg: the backbone with its ImageNet weights (pretrained; from the
    prepared folder `weights` when given) or bare (a saved model's weights are loaded over
    it), and a fresh head."""
    from automl.vision import backbones

    info = backbones.IMAGE_BACKBONES.get(cfg.backbone)
    if info is None:
        raise ModelError(
            f"unknown image backbone {cfg.backbone!r}: known ones are "
            f"{', '.join(backbones.IMAGE_BACKBONES)}"
        )
    body = backbones.build(cfg.backbone, weights=weights, pretrained=pretrained)
    return ImageClassifier(body, info.feature_dim, cfg.num_labels, cfg.dropout)


def to_unit(
    pixels: np.ndarray | torch.Tensor, image_size: int, device: Any = None
) -> torch.Tensor:
    """uint8 (B, side, side, 3) pixels -> float (B, 3, image_size, image_size) in [0, 1]."""
    x = pixels if isinstance(pixels, torch.Tensor) else torch.from_numpy(np.array(pixels))
    if device is not None:
        x = x.to(device)
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = F.interpolate(
            x,
            size=(image_size, image_size),
            mode="bilinear",
            align_corners=False,
            antialias=x.shape[-1] > image_size,
        )
    return x


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x - mean) / std per channel: the backbone's ImageNet normalisation."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def to_input(
    pixels: np.ndarray | torch.Tensor,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: Any = None,
) -> torch.Tensor:
    """uint8 (B, side, side, 3) pixels -> normalised float (B, 3, image_size, image_size)."""
    return normalize(to_unit(pixels, image_size, device), mean, std)


def pixel_logits(
    model: ImageClassifier, cfg: ImageConfig, pixels: np.ndarray, batch_size: int = 128
) -> np.ndarray:
    """Logits (n, num_labels) for uint8 pixels (n, side, side, 3), in order."""
    device = next(model.parameters()).device
    out = np.zeros((len(pixels), cfg.num_labels), dtype=np.float32)
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(pixels), batch_size):
            batch = pixels[start : start + batch_size]
            x = to_input(batch, cfg.image_size, cfg.mean, cfg.std, device)
            out[start : start + len(x)] = model(x).float().cpu().numpy()
    return out


def path_logits(
    model: ImageClassifier, cfg: ImageConfig, paths: Sequence[str], chunk: int = 2048
) -> np.ndarray:
    """Logits (n, num_labels) for image files: decoded and resized to cfg.pixel_side as
    in training (automl.images.load_pixels), a chunk of files at a time."""
    from automl.images import load_pixels

    parts = [
        pixel_logits(model, cfg, load_pixels(paths[i : i + chunk], cfg.pixel_side))
        for i in range(0, len(paths), chunk)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, cfg.num_labels), np.float32)


def save_image_model(model: ImageClassifier, cfg: ImageConfig, path: str | Path) -> Path:
    """Write model.safetensors and config.json into path (automl.json is the caller's)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path / WEIGHTS_FILE), metadata={"format": "pt"})
    raw = asdict(cfg)
    raw["id2label"] = {str(i): n for i, n in enumerate(cfg.label_names)}
    (path / CONFIG_FILE).write_text(json.dumps(raw, indent=2))
    return path


def read_image_config(path: str | Path) -> ImageConfig:
    cfg_path = Path(path) / CONFIG_FILE
    try:
        raw = json.loads(cfg_path.read_text())
        raw.pop("id2label", None)
        raw.pop("label2id", None)
        if raw.get("kind") != KIND:
            raise ValueError(f"kind {raw.get('kind')!r} is not {KIND!r}")
        for key in ("mean", "std", "label_names"):
            raw[key] = tuple(raw.get(key, ()))
        return ImageConfig(**raw)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelError(f"{cfg_path} is not an image model config ({exc})") from exc


def load_image_model(path: str | Path) -> tuple[ImageClassifier, ImageConfig]:
    """(model in eval mode on CPU, config) from an image model folder; strict load."""
    from safetensors.torch import load_file

    cfg = read_image_config(path)
    model = build_classifier(cfg, pretrained=False)
    try:
        model.load_state_dict(load_file(str(Path(path) / WEIGHTS_FILE)), strict=True)
    except (OSError, RuntimeError) as exc:
        raise ModelError(f"cannot load the image model in {path}: {exc}") from exc
    model.eval()
    return model, cfg
