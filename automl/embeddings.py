"""Sentence-embedding cache for the few-shot track's head-only trials.

A frozen body gives every trial on the same backbone, texts and max_length the same
embeddings, so they are computed once. Two levels:

- in-process (a dict, least recently used entries evicted): a reused Ray actor never
  touches the disk twice for the same key; the loaded SentenceTransformer is kept too;
- on disk, `cache_dir()/embeddings/<key>.npy`, shared by the Ray worker processes: written
  to a temporary file and renamed in under a per-key file lock, so two processes never
  compute the same key at once and a reader never sees a torn file.

The key covers the backbone folder's identity (resolved path, and the names, sizes and
modification times of its files), the texts (sha256 of them joined with NUL, and their
count) and max_length.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import Counter, OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from automl._files import file_lock
from automl.errors import AssetError
from automl.modelio import quiet_transformers, select_device
from automl.paths import cache_dir, ensure_offline

logger = logging.getLogger(__name__)

__all__ = [
    "backbone_fingerprint",
    "cache_key",
    "cache_stats",
    "clear_memory_cache",
    "embed",
    "embeddings_dir",
    "load_body",
]

_FORMAT = 1  # bump when the way embeddings are computed changes: old files stop matching
# Arrays kept in-process: a study uses a few (backbone, max_length) pairs on one dataset,
# and 1,000 texts x 384 floats is 1.5 MB.
_MEMORY_ENTRIES = 32

_lock = threading.RLock()
_arrays: OrderedDict[str, np.ndarray] = OrderedDict()
_models: dict[str, Any] = {}  # resolved backbone path -> SentenceTransformer
_fingerprints: dict[str, str] = {}  # resolved backbone path -> folder identity
_stats: Counter[str] = Counter()


def embeddings_dir() -> Path:
    """Where the disk level lives: `automl.paths.cache_dir()/embeddings`."""
    return cache_dir() / "embeddings"


def cache_stats() -> dict[str, int]:
    """Counters since the process started: memory_hits, disk_hits, misses (embeddings
    computed) and model_loads (SentenceTransformer folders loaded)."""
    with _lock:
        return {k: _stats[k] for k in ("memory_hits", "disk_hits", "misses", "model_loads")}


def clear_memory_cache() -> None:
    """Forget the in-process level (arrays, loaded models, fingerprints); the counters and
    the disk level stay. Like starting a fresh worker process."""
    with _lock:
        _arrays.clear()
        _models.clear()
        _fingerprints.clear()


def backbone_fingerprint(backbone_path: str | Path) -> str:
    """The identity of a backbone folder: sha256 over its resolved path and each file's
    relative name, size and modification time (no file is read). Memoised per process,
    like the loaded model it describes."""
    resolved = str(Path(backbone_path).resolve())
    with _lock:
        cached = _fingerprints.get(resolved)
        if cached is not None:
            return cached
        root = Path(resolved)
        if not root.is_dir():
            raise AssetError(
                f"backbone folder {backbone_path} not found: run `automl assets` to prepare it"
            )
        h = hashlib.sha256(resolved.encode())
        for file in sorted(root.rglob("*")):
            rel = file.relative_to(root)
            if not file.is_file() or any(part.startswith(".") for part in rel.parts):
                continue  # lock files, temporary folders
            st = file.stat()
            h.update(f"\x00{rel.as_posix()}\x00{st.st_size}\x00{st.st_mtime_ns}".encode())
        _fingerprints[resolved] = h.hexdigest()
        return _fingerprints[resolved]


def cache_key(backbone_path: str | Path, texts: Sequence[str], max_length: int) -> str:
    """The hex key of (backbone folder identity, texts, max_length)."""
    text_sha = hashlib.sha256("\x00".join(texts).encode("utf-8", "surrogatepass")).hexdigest()
    parts = [_FORMAT, backbone_fingerprint(backbone_path), text_sha, len(texts), int(max_length)]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def load_body(backbone_path: str | Path) -> Any:
    """The SentenceTransformer of a local backbone folder (mean pooling is added to a plain
    Hugging Face folder), loaded once per process, offline, without remote code. Shared:
    set `max_seq_length` before use and deep-copy it before training it."""
    resolved = str(Path(backbone_path).resolve())
    with _lock:
        model = _models.get(resolved)
        if model is not None:
            return model
        ensure_offline()
        quiet_transformers()
        from sentence_transformers import SentenceTransformer

        try:
            model = SentenceTransformer(
                resolved,
                device=str(select_device()),
                local_files_only=True,
                trust_remote_code=False,
            )
        except (OSError, ValueError) as exc:
            raise AssetError(
                f"cannot load the backbone in {backbone_path} as a sentence encoder: {exc}. "
                "Run `automl assets` to check or re-fetch the backbones"
            ) from exc
        _stats["model_loads"] += 1
        _models[resolved] = model
        return model


def embed(
    backbone_path: str, texts: Sequence[str], max_length: int, batch_size: int = 64
) -> np.ndarray:
    """Sentence embeddings (len(texts), dim), float32, read-only, in the order of texts:
    from memory, else from disk, else computed (and stored in both)."""
    texts = list(texts)
    key = cache_key(backbone_path, texts, max_length)
    with _lock:
        hit = _arrays.get(key)
        if hit is not None:
            _arrays.move_to_end(key)
            _stats["memory_hits"] += 1
            return hit
        folder = embeddings_dir()
        path = folder / f"{key}.npy"
        array = _read(path, len(texts))
        if array is not None:
            _stats["disk_hits"] += 1
        else:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                with file_lock(folder, key):
                    array = _read(path, len(texts))  # another process may have just made it
                    if array is not None:
                        _stats["disk_hits"] += 1
                    else:
                        array = _compute(backbone_path, texts, max_length, batch_size)
                        _write(path, array)
            except OSError as exc:  # a read-only or full cache: still give the answer
                logger.warning("embedding cache %s not writable (%s); not caching", folder, exc)
                if array is None:
                    array = _compute(backbone_path, texts, max_length, batch_size)
        array.flags.writeable = False
        _arrays[key] = array
        while len(_arrays) > _MEMORY_ENTRIES:
            _arrays.popitem(last=False)
        return array


def _compute(backbone_path: str, texts: list[str], max_length: int, batch_size: int) -> np.ndarray:
    model = load_body(backbone_path)
    model.max_seq_length = int(max_length)
    _stats["misses"] += 1
    if not texts:
        return np.zeros((0, model.get_embedding_dimension()), dtype=np.float32)
    out = model.encode(
        texts, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True
    )
    return np.ascontiguousarray(out, dtype=np.float32)


def _read(path: Path, n: int) -> np.ndarray | None:
    """The cached array at path, or None when absent or unusable (then it is recomputed)."""
    if not path.is_file():
        return None
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable embedding cache file %s: %s", path, exc)
        return None
    if array.ndim != 2 or array.shape[0] != n:
        logger.warning("ignoring embedding cache file %s of shape %s", path, array.shape)
        return None
    return array


def _write(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.npy")
    try:
        np.save(tmp, array, allow_pickle=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
