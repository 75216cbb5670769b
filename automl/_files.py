"""Small file helpers shared by the asset caches (backbones, datasets). Stdlib only."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def file_lock(folder: Path, name: str) -> Iterator[bool]:
    """An exclusive lock (`<folder>/.<name>.lock`) so two processes don't both build the same
    asset. Yields True when held; without fcntl (Windows) it yields False and atomic renames
    alone keep the cache consistent."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield False
        return
    with (folder / f".{name}.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def replace_dir(out_dir: Path, write: Callable[[Path], None]) -> None:
    """Fill a temp folder beside out_dir with `write(tmp)`, then swap it in with renames:
    a kill mid-write leaves the previous folder (or a temp folder) behind, never a torn
    one."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
    for leftover in (tmp, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    write(tmp)
    if out_dir.exists() and any(out_dir.iterdir()):
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)  # rename(2) replaces an empty directory too
    shutil.rmtree(old, ignore_errors=True)
