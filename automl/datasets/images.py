"""Real labeled image datasets, prepared once into the cache as folders of PNGs.

`image_dataset_path(name)` returns `datasets_dir()/<name>/`, laid out the way `automl run
FOLDER` reads an image dataset: one sub-folder per class holding `<split>-<index>.png`
files, plus `index.csv` (`image`, `label`, `split`: the fixed train/test split) and
`manifest.json` (format version, source package and version, counts, sha256 of index.csv).

- digits: scikit-learn's bundled 8x8 handwritten digits (no download).
- fashion-mnist: Debian's `dataset-fashion-mnist` (IDX files), read from a folder or .deb
  you pass, else the installed package, else `apt-get download` (no root needed).

Builds go into a temporary folder beside the target that is renamed in, under a
per-dataset lock, so a crash never leaves half a folder and two processes never mix one.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from automl._files import file_lock, sha256_file
from automl.datasets import _fetch, datasets_dir
from automl.errors import AssetError, DataError

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_DATASETS",
    "ImageDatasetInfo",
    "describe",
    "fetch_image_datasets",
    "image_dataset_path",
    "prepare_image_dataset",
    "read_idx",
]

# Bump when the layout or pixel conversion changes: older cached folders are rebuilt.
FORMAT_VERSION = 1
SPLITS = ("train", "test")
_PROGRESS_EVERY = 10_000
FASHION_PACKAGE = "dataset-fashion-mnist"
FASHION_INSTALLED = Path("/usr/share/datasets/fashion-mnist")
# split -> (images file, labels file), as named in the Debian package (and upstream).
FASHION_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_INSTALL_HINT = (
    f"Install the package (`sudo apt-get install {FASHION_PACKAGE}`, which puts the files "
    f"in {FASHION_INSTALLED}), or pass the folder holding the four .gz files (or the .deb): "
    "prepare_image_dataset('fashion-mnist', source=FOLDER)."
)


@dataclass(frozen=True)
class ImageDatasetInfo:
    """One image dataset: what it is, where it comes from, and what a correct build holds."""

    name: str
    description: str
    source: str  # the Python or Debian package the pixels come from
    license: str
    classes: tuple[str, ...]  # class folder names, in label order (label i -> classes[i])
    expected: dict[str, tuple[int, ...]]  # split -> images per class, in label order
    size: tuple[int, int]  # (height, width) in pixels; all images are 8-bit grayscale

    @property
    def images(self) -> int:
        return sum(sum(counts) for counts in self.expected.values())

    @property
    def fetch_command(self) -> str:
        """What provides the source (for listings and error messages)."""
        if self.name == "digits":
            return "none: bundled with scikit-learn"
        return f"apt-get download {self.source}"


IMAGE_DATASETS: dict[str, ImageDatasetInfo] = {
    info.name: info
    for info in (
        ImageDatasetInfo(
            name="digits",
            description="UCI handwritten digits (scikit-learn): 8x8 grayscale, 10 classes",
            source="scikit-learn",
            license="CC BY 4.0 (UCI Optical Recognition of Handwritten Digits)",
            classes=tuple(str(d) for d in range(10)),
            # train_test_split(test_size=0.2, random_state=0, stratify=labels) of 1,797.
            expected={
                "train": (142, 146, 142, 146, 145, 145, 145, 143, 139, 144),
                "test": (36, 36, 35, 37, 36, 37, 36, 36, 35, 36),
            },
            size=(8, 8),
        ),
        ImageDatasetInfo(
            name="fashion-mnist",
            description="Zalando Fashion-MNIST: 28x28 grayscale clothing, 10 classes",
            source=FASHION_PACKAGE,
            license="MIT (Expat), Zalando SE",
            classes=(
                "t-shirt_top",
                "trouser",
                "pullover",
                "dress",
                "coat",
                "sandal",
                "shirt",
                "sneaker",
                "bag",
                "ankle_boot",
            ),
            expected={"train": (6000,) * 10, "test": (1000,) * 10},
            size=(28, 28),
        ),
    )
}


def _info(name: str) -> ImageDatasetInfo:
    try:
        return IMAGE_DATASETS[name]
    except KeyError:
        raise DataError(
            f"unknown image dataset {name!r}: choose one of {', '.join(sorted(IMAGE_DATASETS))}"
        ) from None


# ------------------------------------------------------------------------------------ IDX


def read_idx(data: bytes, source: str = "IDX data") -> np.ndarray:
    """Parse IDX (the MNIST file format) bytes into a uint8 array of the stored shape.

    Layout: two zero bytes, a dtype code (only 0x08, unsigned byte, is supported), the
    number of dimensions, one big-endian uint32 per dimension, then the values in C order.
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(
            f"{source} is not an IDX file: it starts with {data[:4].hex() or 'nothing'}, "
            "expected 00 00 <dtype> <ndim> (check that the file is the decompressed .gz)"
        )
    dtype_code, ndim = data[2], data[3]
    if dtype_code != 0x08:
        raise DataError(
            f"{source} has IDX dtype code 0x{dtype_code:02x}; only 0x08 (unsigned byte) "
            "is supported, as in MNIST and Fashion-MNIST"
        )
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(
            f"{source} is truncated: its IDX header declares {ndim} dimensions, which need "
            f"{header} bytes, but the data holds {len(data)} (re-download the file)"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    count = int(np.prod(dims, dtype=np.int64))
    body = len(data) - header
    if body != count:
        problem = "truncated" if body < count else "longer than its header says"
        raise DataError(
            f"{source} is {problem}: shape {dims} needs {count} bytes after the header, "
            f"found {body} (re-download the file)"
        )
    return np.frombuffer(data, dtype=np.uint8, count=count, offset=header).reshape(dims)


def _read_idx_gz(path: Path) -> np.ndarray:
    try:
        data = gzip.decompress(path.read_bytes())
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise AssetError(f"{path} is not a readable .gz file ({exc}). {_INSTALL_HINT}") from exc
    return read_idx(data, source=str(path))


# -------------------------------------------------------------------------------- sources


def _find_idx_folder(root: Path) -> Path | None:
    """The folder at or under `root` holding all four Fashion-MNIST .gz files, if any."""
    wanted = [f for pair in FASHION_FILES.values() for f in pair]
    if all((root / f).is_file() for f in wanted):
        return root
    for hit in sorted(root.rglob(wanted[0])):
        if all((hit.parent / f).is_file() for f in wanted):
            return hit.parent
    return None


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise AssetError(
            f"{name} is not on PATH, so {FASHION_PACKAGE} cannot be fetched. " + _INSTALL_HINT
        )
    return path


def _extract_deb(deb: Path, dest: Path) -> tuple[Path, str]:
    """`dpkg-deb -x` a .deb into `dest`; return the IDX folder inside and the version."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [_tool("dpkg-deb"), "-x", str(deb.resolve()), str(dest.resolve())]
    _fetch._run(cmd, dest, deb.name, _INSTALL_HINT)
    folder = _find_idx_folder(dest)
    if folder is None:
        raise AssetError(
            f"{deb} holds no {FASHION_FILES['train'][0]} and siblings. " + _INSTALL_HINT
        )
    version = deb.name.split("_")[1].replace("%3a", ":") if deb.name.count("_") >= 2 else "?"
    return folder, version


def _installed_version() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", FASHION_PACKAGE],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.strip()
    return "unknown"


def _fashion_source(source: Path | None, tmp: Path) -> tuple[Path, dict[str, str]]:
    """The folder holding the four IDX files, and where they came from (for the manifest)."""
    if source is not None:
        source = Path(source)
        if source.is_file() and source.suffix == ".deb":
            folder, version = _extract_deb(source, tmp)
            return folder, {"origin": str(source), "version": version}
        found = _find_idx_folder(source) if source.is_dir() else None
        if found is None:
            raise AssetError(
                f"{source} is neither a .deb nor a folder holding "
                f"{', '.join(f for pair in FASHION_FILES.values() for f in pair)}. "
                + _INSTALL_HINT
            )
        return found, {"origin": str(found), "version": "unknown"}
    if _find_idx_folder(FASHION_INSTALLED) == FASHION_INSTALLED:
        return FASHION_INSTALLED, {
            "origin": str(FASHION_INSTALLED),
            "version": _installed_version(),
        }
    logger.info("%s is not installed: downloading it with apt-get", FASHION_PACKAGE)
    apt = _tool("apt-get")
    _fetch._run([apt, "download", FASHION_PACKAGE], tmp, FASHION_PACKAGE, _INSTALL_HINT)
    deb = _fetch._single(tmp, "*.deb", FASHION_PACKAGE)
    folder, version = _extract_deb(deb, tmp / "extracted")
    return folder, {
        "origin": f"apt-get download {FASHION_PACKAGE}",
        "deb": deb.name,
        "version": version,
    }


# ------------------------------------------------------------------------------- building

# A build yields (split, index, label, pixels); the index names the file.
Sample = tuple[str, int, int, np.ndarray]


def _digits_samples(info: ImageDatasetInfo) -> tuple[Iterator[Sample], dict[str, Any]]:
    import sklearn
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    labels = digits.target.astype(np.int64)
    # 0..16 counts of set pixels in 4x4 blocks, scaled to the full 8-bit range.
    pixels = np.rint(digits.images * 255 / 16).astype(np.uint8)
    train, test = train_test_split(
        np.arange(len(labels)), test_size=0.2, random_state=0, stratify=labels
    )
    splits = {"train": np.sort(train), "test": np.sort(test)}
    _check_counts(info, {s: labels[ids] for s, ids in splits.items()}, "scikit-learn")
    samples = ((s, int(i), int(labels[i]), pixels[i]) for s, ids in splits.items() for i in ids)
    source = {
        "package": "scikit-learn",
        "version": sklearn.__version__,
        "origin": "sklearn.datasets.load_digits()",
    }
    return samples, source


def _fashion_samples(
    info: ImageDatasetInfo, source: Path | None, tmp: Path
) -> tuple[Iterator[Sample], dict[str, Any]]:
    folder, where = _fashion_source(source, tmp)
    arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split, (images_file, labels_file) in FASHION_FILES.items():
        images = _read_idx_gz(folder / images_file)
        labels = _read_idx_gz(folder / labels_file)
        if images.shape[1:] != info.size or labels.shape != images.shape[:1]:
            raise AssetError(
                f"{folder}: {images_file} has shape {images.shape} and {labels_file} "
                f"{labels.shape}; expected (N, {info.size[0]}, {info.size[1]}) and (N,). "
                + _INSTALL_HINT
            )
        arrays[split] = (images, labels)
    _check_counts(info, {s: arrays[s][1] for s in SPLITS}, str(folder))
    files = {f: sha256_file(folder / f) for pair in FASHION_FILES.values() for f in pair}
    samples = (
        (split, i, int(label), images[i])
        for split, (images, labels) in arrays.items()
        for i, label in enumerate(labels)
    )
    return samples, {"package": FASHION_PACKAGE, **where, "files_sha256": files}


def _check_counts(info: ImageDatasetInfo, labels: dict[str, np.ndarray], where: str) -> None:
    """Raise AssetError unless every split has exactly the expected images per class."""
    for split, expected in info.expected.items():
        found = labels[split]
        counts = tuple(int(c) for c in np.bincount(found, minlength=len(info.classes)))
        if counts != tuple(expected):
            fix = _INSTALL_HINT if info.name == "fashion-mnist" else "Reinstall scikit-learn."
            raise AssetError(
                f"{info.name} from {where}: the {split} split has {counts} images per label "
                f"0..{len(counts) - 1}, expected {tuple(expected)}: the source is a different "
                f"or damaged version. {fix}"
            )


def _write_folder(info: ImageDatasetInfo, samples: Iterator[Sample], out: Path) -> Counter[str]:
    """Write the PNGs and index.csv into `out`; return images per `split/class`."""
    from PIL import Image

    for cls in info.classes:
        (out / cls).mkdir()
    counts: Counter[str] = Counter()
    with (out / "index.csv").open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["image", "label", "split"])
        for n, (split, index, label, pixels) in enumerate(samples, start=1):
            cls = info.classes[label]
            rel = f"{cls}/{split}-{index:05d}.png"
            Image.fromarray(np.ascontiguousarray(pixels)).save(out / rel, format="PNG")
            writer.writerow([rel, cls, split])
            counts[f"{split}/{cls}"] += 1
            if n % _PROGRESS_EVERY == 0:
                logger.info("%s: %d of %d images written", info.name, n, info.images)
    return counts


def _manifest_path(target: Path) -> Path:
    return target / "manifest.json"


def _is_prepared(target: Path) -> bool:
    """A quick check: a manifest of the current format whose index.csv size matches."""
    try:
        meta = json.loads(_manifest_path(target).read_text(encoding="utf-8"))
        return (
            isinstance(meta, dict)
            and meta.get("format_version") == FORMAT_VERSION
            and (target / "index.csv").stat().st_size == meta.get("index_bytes")
        )
    except (OSError, ValueError):
        return False


def _build(info: ImageDatasetInfo, target: Path, source: Path | None) -> None:
    start = time.perf_counter()
    root = target.parent
    for stale in root.glob(f".{info.name}.*.tmp"):  # left by a crashed build (we hold the lock)
        shutil.rmtree(stale, ignore_errors=True)
    out = Path(tempfile.mkdtemp(prefix=f".{info.name}.", suffix=".tmp", dir=root))
    try:
        with tempfile.TemporaryDirectory(prefix=f"automl-{info.name}-") as tmp:
            if info.name == "digits":
                samples, where = _digits_samples(info)
            else:
                samples, where = _fashion_samples(info, source, Path(tmp))
            logger.info("writing %d %s images into %s", info.images, info.name, target)
            counts = _write_folder(info, samples, out)
        index = out / "index.csv"
        manifest = {
            "format_version": FORMAT_VERSION,
            "name": info.name,
            "description": info.description,
            "task": "image-classification",
            "license": info.license,
            "classes": list(info.classes),
            "size": list(info.size),
            "mode": "L",
            "images": sum(counts.values()),
            "counts": {s: {c: counts[f"{s}/{c}"] for c in info.classes} for s in SPLITS},
            "index_bytes": index.stat().st_size,
            "index_sha256": sha256_file(index),
            "source": where,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "build_seconds": round(time.perf_counter() - start, 1),
        }
        _manifest_path(out).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        os.chmod(out, 0o755)  # mkdtemp creates 0700
        old = root / f".{info.name}.old.tmp"
        if target.exists():  # a forced or stale build: move the old folder aside first
            os.replace(target, old)
        os.replace(out, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    logger.info(
        "image dataset %s ready in %.1fs: %d images at %s",
        info.name,
        manifest["build_seconds"],
        manifest["images"],
        target,
    )


# ------------------------------------------------------------------------------ public API


def prepare_image_dataset(name: str, force: bool = False, source: Path | None = None) -> Path:
    """Build `datasets_dir()/<name>/` (unless already built) and return its path.

    `source` (fashion-mnist only) is a folder holding the four IDX .gz files, or the
    `dataset-fashion-mnist` .deb; without it the installed package is used, else the .deb
    is downloaded with `apt-get download`. `force` rebuilds.
    """
    info = _info(name)
    if source is not None and name == "digits":
        raise DataError("digits is bundled with scikit-learn: it takes no source")
    target = datasets_dir() / name
    if not force and _is_prepared(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(target.parent, name):
        if not force and _is_prepared(target):  # another process built it while we waited
            return target
        _build(info, target, source)
    return target


def image_dataset_path(name: str, fetch: bool = True) -> Path:
    """The prepared folder of an image dataset, building it on first use.

    With `fetch=False` a dataset that is not prepared raises AssetError with the command.
    """
    info = _info(name)
    target = datasets_dir() / name
    if _is_prepared(target):
        return target
    if not fetch:
        raise AssetError(
            f"image dataset {name} is not prepared at {target}: prepare it with "
            f"`automl assets fetch --datasets` (source: {info.fetch_command})"
        )
    return prepare_image_dataset(name)


def fetch_image_datasets(names: list[str] | None = None) -> list[tuple[str, Path]]:
    """Prepare the named image datasets (default: all); return (name, folder) pairs."""
    infos = [_info(n) for n in (list(IMAGE_DATASETS) if names is None else names)]
    done = []
    for n, info in enumerate(infos, start=1):
        logger.info("[%d/%d] image dataset %s", n, len(infos), info.name)
        done.append((info.name, prepare_image_dataset(info.name)))
    return done


def describe() -> list[dict[str, Any]]:
    """One row per image dataset (for listings): name, images, classes, size, state, ..."""
    return [
        {
            "name": info.name,
            "task": "image-classification",
            "images": info.images,
            "classes": len(info.classes),
            "size": f"{info.size[0]}x{info.size[1]}",
            "description": info.description,
            "source": info.source,
            "license": info.license,
            "prepared": _is_prepared(datasets_dir() / info.name),
            "path": str(datasets_dir() / info.name),
            "command": info.fetch_command,
        }
        for info in IMAGE_DATASETS.values()
    ]
