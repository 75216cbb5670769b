"""Image data intake: a folder with one sub-folder per class, or a table (CSV, TSV, JSON
lines, Parquet) with an image-path column and a label column.

`check_images` returns the same `CheckedData` as text intake, with `modality="image"` and
the absolute image paths in the frame's "text" column, so splitting, routing, the search
and the store treat both alike. Every image is opened and fully decoded once here:
unreadable or truncated files, unsupported formats, tiny images and paths that leave the
data folder are skipped and counted in the cleaning report (never a crash); greyscale,
palette and RGBA images are converted to RGB when loaded (counted). A dataset with no
readable image is a DataError.

`load_pixels` turns paths into one uint8 array (N, side, side, 3), cached on disk so the
trials of a study decode every image once between them.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from automl.config import CleaningReport
from automl.data import CheckedData, load_table, validate
from automl.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

__all__ = [
    "IMAGE_EXTENSIONS",
    "MIN_SIDE",
    "check_images",
    "extract_zip",
    "unpacked_root",
    "find_image_column",
    "list_images",
    "load_pixels",
    "native_side",
    "pixel_cache_dir",
    "pixel_side",
    "read_image",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
IMAGE_COLUMN_NAMES = ("image", "image_path", "img", "path", "file", "filename", "filepath")
LABEL_COLUMN_NAMES = ("label", "labels", "target", "class", "category", "y")
MIN_SIDE = 8  # smaller images (either side) carry too little to classify: skipped
# Images are decoded once to at most this side (the largest input size the image spaces
# search on a CPU); each trial resizes the cached pixels to its own input size.
PIXEL_SIDE_MAX = 128
_SKIP_DIRS = {"__MACOSX"}
_EXAMPLES = 3  # file names quoted per kind of problem in the report


@dataclass(frozen=True)
class _Scan:
    """One image file opened and decoded (or why it could not be)."""

    digest: str = ""
    mode: str = ""
    size: tuple[int, int] = (0, 0)
    error: str = ""


def _scan(path: Path) -> _Scan:
    from PIL import Image, UnidentifiedImageError

    try:
        data = path.read_bytes()
    except OSError as exc:
        return _Scan(error=f"cannot be read ({exc.strerror or exc})")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # a full decode: a truncated file fails here, not in a trial
            mode, size = im.mode, im.size
    except UnidentifiedImageError:
        return _Scan(error="is not an image Pillow can read")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return _Scan(error=f"is damaged or truncated ({exc})")
    return _Scan(hashlib.sha1(data).hexdigest(), mode, size)


def read_image(path: str | Path) -> object:
    """The image at path as an RGB PIL image (greyscale, palette and RGBA converted)."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return im if im.mode == "RGB" else im.convert("RGB")


def list_images(folder: str | Path) -> tuple[list[tuple[Path, str]], list[Path]]:
    """(image files with their class, other files) of a folder with one sub-folder per
    class. A folder without class sub-folders is a DataError saying the expected layout."""
    root = Path(folder)
    classes = sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and not _hidden(p.name) and p.name not in _SKIP_DIRS
    )
    if not classes:
        raise DataError(
            f"{root}: no class sub-folders found; put each class's images in a sub-folder "
            f"named after the class (e.g. {root}/cat/001.png, {root}/dog/002.jpg), or pass a "
            "CSV with an image-path column and a label column"
        )
    images: list[tuple[Path, str]] = []
    others: list[Path] = [p for p in root.iterdir() if p.is_file() and not _hidden(p.name)]
    for cls in classes:
        for path in sorted(cls.rglob("*")):
            if not path.is_file() or any(_hidden(part) for part in path.relative_to(cls).parts):
                continue
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                images.append((path, cls.name))
            else:
                others.append(path)
    return images, others


def _hidden(name: str) -> bool:
    return name.startswith(".")


def find_image_column(df: pd.DataFrame, image: str | None = None) -> str | None:
    """The column holding image paths: `image` when given (a DataError when absent), a
    column with a usual name, or one whose values mostly end in an image extension."""
    if image is not None:
        if image not in df.columns:
            raise DataError(
                f"image column {image!r} not found; available columns: {list(df.columns)}"
            )
        return image
    for name in df.columns:
        column = df[name]
        if not (pd.api.types.is_object_dtype(column) or pd.api.types.is_string_dtype(column)):
            continue
        values = column.dropna().astype(str).head(200)
        if values.empty:
            continue
        share = values.str.lower().str.endswith(IMAGE_EXTENSIONS).mean()
        if share >= 0.8 or (str(name).lower() in IMAGE_COLUMN_NAMES and share >= 0.5):
            return str(name)
    return None


def _label_column(df: pd.DataFrame, image_column: str, label: str | None, source: str) -> str:
    if label is not None:
        if label not in df.columns:
            raise DataError(
                f"{source}: label column {label!r} not found; available columns: "
                f"{list(df.columns)}; pass --label COLUMN"
            )
        return label
    for name in df.columns:
        if str(name).lower() in LABEL_COLUMN_NAMES:
            return str(name)
    rest = [str(c) for c in df.columns if c != image_column]
    if len(rest) == 1:
        return rest[0]
    raise DataError(
        f"{source}: cannot tell which column holds the labels among {rest}; pass --label COLUMN"
    )


def check_images(
    source: str | Path,
    label: str | None = None,
    image: str | None = None,
    task: str | None = None,
    frame: pd.DataFrame | None = None,
) -> CheckedData:
    """Load and check an image dataset (a class-folder tree or a table of paths); every
    bad-input error is raised here. `frame` is the already loaded table, if any."""
    if task not in (None, "classification"):
        raise ConfigError(
            f"--task {task} is not supported for images: the image track trains classifiers; "
            "drop --task or pass --task classification"
        )
    in_memory = frame is not None and str(source) == "<dataframe>"
    src = Path(source)
    name = str(source)
    escaped: list[str] = []
    missing_files: list[str] = []
    no_label = 0
    if not in_memory and src.is_dir():
        pairs, others = list_images(src)
        root = src.resolve()
        rows = [(p, lbl) for p, lbl in pairs]
        label_column, image_column = "class folder", "image"
        rows_in = len(rows) + len(others)
    else:
        df = frame if frame is not None else load_table(src)
        image_column = find_image_column(df, image) or ""
        if not image_column:
            raise DataError(
                f"{name}: no column of image paths found (values ending in "
                f"{', '.join(IMAGE_EXTENSIONS)}); pass --image COLUMN"
            )
        label_column = _label_column(df, image_column, label, name)
        # A file's paths are read relative to its folder and may not leave it; a data
        # frame's (the Python API) are absolute or relative to the working directory.
        root = Path.cwd().resolve() if in_memory else src.resolve().parent
        rows = []
        others = []
        rows_in = len(df)
        for i, (raw, lbl) in enumerate(zip(df[image_column], df[label_column], strict=True)):
            where = f"row {i + 1}"
            if raw is None or (isinstance(raw, float) and np.isnan(raw)) or not str(raw).strip():
                missing_files.append(f"{where} (no path)")
                continue
            if lbl is None or (isinstance(lbl, float) and np.isnan(lbl)) or not str(lbl).strip():
                no_label += 1
                continue
            path = (root / str(raw).strip()).resolve()
            if not in_memory and not path.is_relative_to(root):
                escaped.append(f"{where} {str(raw)!r}")
                continue
            if not path.is_file():
                missing_files.append(f"{where} {str(raw)!r}")
                continue
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                others.append(path)
                continue
            rows.append((path, str(lbl).strip()))
    kept, notes, duplicates = _scan_rows(rows, root, name)
    if escaped:
        notes.insert(
            0,
            f"{len(escaped)} paths lead outside the data folder {root} and were skipped "
            f"(e.g. {', '.join(escaped[:_EXAMPLES])})",
        )
    if missing_files:
        notes.insert(
            0,
            f"{len(missing_files)} rows name no existing file and were skipped "
            f"(e.g. {', '.join(missing_files[:_EXAMPLES])})",
        )
    if no_label:
        notes.insert(0, f"{no_label} rows with a missing label dropped")
    if others:
        shown = ", ".join(_rel(p, root) for p in others[:_EXAMPLES])
        notes.insert(
            0,
            f"{len(others)} files of unsupported formats skipped (e.g. {shown}); "
            f"supported: {', '.join(IMAGE_EXTENSIONS)}",
        )
    if not kept:
        detail = "; ".join(notes) if notes else "no image files found"
        raise DataError(
            f"{name}: no readable image: {detail}. Supported formats: "
            f"{', '.join(IMAGE_EXTENSIONS)}"
        )
    out = pd.DataFrame({"text": [str(p) for p, _ in kept], "label": [lbl for _, lbl in kept]})
    report = CleaningReport(
        rows_in=rows_in,
        rows_out=len(out),
        missing_label=no_label,
        duplicates=duplicates,
        notes=tuple(notes),
    )
    validate(out, "classification", label_column, name)
    return CheckedData(
        frame=out,
        task="classification",
        text_columns=(image_column,),
        label_column=label_column,
        source=name,
        report=report,
        modality="image",
    )


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


def _scan_rows(
    rows: list[tuple[Path, str]], root: Path, source: str
) -> tuple[list[tuple[Path, str]], list[str], int]:
    """Open every image: (kept rows, report notes, exact duplicates removed). Identical
    files with different labels keep the majority label (a tie drops the image)."""
    bad: list[str] = []
    tiny: list[str] = []
    modes: Counter[str] = Counter()
    scanned: list[tuple[Path, str, str]] = []
    start = last = time.time()
    for i, (path, lbl) in enumerate(rows):
        scan = _scan(path)
        if time.time() - last > 5.0:
            last = time.time()
            logger.info("%s: checked %d of %d images", source, i + 1, len(rows))
        if scan.error:
            bad.append(f"{_rel(path, root)} {scan.error}")
            continue
        if min(scan.size) < MIN_SIDE:
            tiny.append(f"{_rel(path, root)} ({scan.size[0]}x{scan.size[1]})")
            continue
        if scan.mode != "RGB":
            modes[scan.mode] += 1
        scanned.append((path, lbl, scan.digest))
    logger.debug("%s: %d images checked in %.1fs", source, len(rows), time.time() - start)
    notes: list[str] = []
    if bad:
        notes.append(f"{len(bad)} unreadable images skipped (e.g. {'; '.join(bad[:_EXAMPLES])})")
    if tiny:
        notes.append(
            f"{len(tiny)} images smaller than {MIN_SIDE}x{MIN_SIDE} skipped "
            f"(e.g. {', '.join(tiny[:_EXAMPLES])})"
        )
    if modes:
        kinds = ", ".join(f"{n} {m}" for m, n in sorted(modes.items()))
        notes.append(f"{sum(modes.values())} images converted to RGB when loaded ({kinds})")
    by_digest: dict[str, Counter[str]] = {}
    for _, lbl, digest in scanned:
        by_digest.setdefault(digest, Counter())[lbl] += 1
    keep_label: dict[str, str | None] = {}
    conflicts = dropped = 0
    for digest, counts in by_digest.items():
        (top, n), *rest = counts.most_common()
        if rest:
            conflicts += 1
            tie = rest[0][1] == n
            dropped += sum(counts.values()) - (0 if tie else n)
            keep_label[digest] = None if tie else top
        else:
            keep_label[digest] = top
    kept: list[tuple[Path, str]] = []
    seen: set[str] = set()
    duplicates = 0
    for path, lbl, digest in scanned:
        if keep_label[digest] != lbl:
            continue
        if digest in seen:
            duplicates += 1
            continue
        seen.add(digest)
        kept.append((path, lbl))
    if conflicts:
        notes.append(
            f"{conflicts} identical images had conflicting labels: kept the majority label, "
            f"dropped {dropped} rows"
        )
    return kept, notes, duplicates


MAX_ZIP_BYTES = 4 << 30  # uncompressed: more is refused (a zip bomb, or the wrong file)


def extract_zip(archive: str | Path, dest: str | Path) -> Path:
    """Unpack a zip of an image folder into dest and return the dataset folder: the one
    folder the archive holds, or dest itself. Members that would land outside dest
    (absolute paths, ..), links and archives over MAX_ZIP_BYTES unpacked are refused
    with a DataError; nothing is written then."""
    import shutil
    import stat
    import zipfile

    archive, dest = Path(archive), Path(dest)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{archive.name}: not a readable zip archive ({exc})") from exc
    with zf:
        members = [m for m in zf.infolist() if not m.filename.startswith("__MACOSX/")]
        total = sum(m.file_size for m in members)
        if total > MAX_ZIP_BYTES:
            raise DataError(
                f"{archive.name} unpacks to {total / 2**30:.1f} GiB, over the "
                f"{MAX_ZIP_BYTES / 2**30:.0f} GiB limit: upload a smaller dataset"
            )
        root = dest.resolve()
        for m in members:
            target = (root / m.filename).resolve()
            if not target.is_relative_to(root) or Path(m.filename).is_absolute():
                raise DataError(
                    f"{archive.name}: member {m.filename!r} would be written outside the "
                    "dataset folder: zip the folder itself (e.g. `zip -r data.zip data/`)"
                )
            if stat.S_ISLNK(m.external_attr >> 16):
                raise DataError(f"{archive.name}: member {m.filename!r} is a link: not allowed")
        tmp = dest.with_name(dest.name + ".part")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for m in members:
            zf.extract(m, tmp)
        shutil.rmtree(dest, ignore_errors=True)
        tmp.replace(dest)
    return unpacked_root(dest)


def unpacked_root(dest: Path) -> Path:
    """The dataset folder inside an unpacked zip: its one folder (when that holds the
    class folders), else the unpacked folder itself."""
    entries = [p for p in dest.iterdir() if not _hidden(p.name) and p.name not in _SKIP_DIRS]
    if len(entries) == 1 and entries[0].is_dir():
        inner = entries[0]
        if any(p.is_dir() for p in inner.iterdir()):
            return inner
    return dest


def native_side(paths: Sequence[str], sample: int = 256) -> int:
    """The largest side among (a sample of) the images: pixels are cached no larger."""
    from PIL import Image

    step = max(1, len(paths) // sample)
    side = 0
    for p in paths[::step][:sample]:
        with Image.open(p) as im:
            side = max(side, *im.size)
    return side


def pixel_side(paths: Sequence[str]) -> int:
    """The side a dataset's images are decoded to: their own (largest) side, at most
    PIXEL_SIDE_MAX. Fashion-MNIST stays 28 x 28; trials upsample per batch."""
    return max(MIN_SIDE, min(PIXEL_SIDE_MAX, native_side(paths)))


def pixel_cache_dir() -> Path:
    """Where decoded pixel arrays are kept between trials and runs."""
    from automl.paths import cache_dir

    return cache_dir() / "pixels"


def load_pixels(paths: Sequence[str], side: int, cache: str | Path | None = None) -> np.ndarray:
    """uint8 array (N, side, side, 3) of the images resized to side x side (RGB).

    With `cache` (a folder) the array is kept there as .npy, keyed by the paths, their
    sizes and modification times and the side, and memory-mapped on later calls: the
    trials of a study decode every image once between them (a file lock keeps two
    processes from building it twice)."""
    if cache is None:
        return _decode_all(paths, side)
    from automl._files import file_lock

    folder = Path(cache)
    folder.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(f"{side}\n".encode())
    for p in paths:
        st = os.stat(p)
        key.update(f"{p}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    target = folder / f"pixels-{side}-{key.hexdigest()[:20]}.npy"
    with file_lock(folder, target.stem):
        if not target.exists():
            arr = _decode_all(paths, side)
            tmp = target.with_name(target.name + f".tmp-{os.getpid()}.npy")
            np.save(tmp, arr)
            os.replace(tmp, target)
    return np.load(target, mmap_mode="r")


def _decode_all(paths: Sequence[str], side: int) -> np.ndarray:
    from PIL import Image

    out = np.empty((len(paths), side, side, 3), dtype=np.uint8)
    for i, p in enumerate(paths):
        im = read_image(p)
        assert isinstance(im, Image.Image)
        if im.size != (side, side):
            im = im.resize((side, side), Image.Resampling.BILINEAR, reducing_gap=3.0)
        out[i] = np.asarray(im, dtype=np.uint8)
    return out
