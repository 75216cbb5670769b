"""Data intake: load a table, find the columns, clean it, split it.

The entry point is `prepare`, which returns a frozen `PreparedData`. Every problem with the
input raises `DataError` naming the file, column or row and how to fix it.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from automl.config import CleaningReport, PreparedData, Split, Task
from automl.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

__all__ = ["clean", "detect_columns", "detect_task", "load_table", "prepare", "split", "validate"]

FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",  # JSON lines, or one JSON array of records
    ".parquet": "parquet",
    ".pq": "parquet",
}
LABEL_NAMES = ("label", "labels", "target", "class", "category", "y", "sentiment", "topic")
LABEL_NAMES_LATE = ("intent", "tag", "emotion", "outcome", "score", "rating")
TEXT_NAMES = ("text", "sentence", "review", "content", "body", "document", "comment", "message")
TEXT_JOIN = " \n "  # kept between joined text columns so a model sees the boundary
_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"%PDF": "a PDF document",
    b"PK\x03\x04": "a zip archive (an .xlsx workbook is one: export it as CSV UTF-8)",
    b"\x1f\x8b": "a gzip archive (decompress it first)",
    b"PAR1": "a Parquet file (name it .parquet)",
}
# UTF-8 read as cp1252 or latin-1: "Ã©" for "é", "â€™" for "’" (possibly twice over)
_MOJIBAKE = r"[ÃÂ][\x80-\xbf]|â[€\x80-\x9f]"


def _supported() -> str:
    return ", ".join(FORMATS)


def load_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV, TSV, JSON lines or Parquet file (chosen by extension) into a DataFrame."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "not found"
        raise DataError(f"{path}: {what}; check the path (supported: {_supported()})")
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            f"{path}: unknown file type {path.suffix or '(no extension)'!r}; "
            f"save it as one of {_supported()}"
        )
    data = path.read_bytes()
    if not data.strip():
        raise DataError(f"{path}: the file is empty; add a header line and data rows")
    if kind == "parquet":
        df = _read_parquet(path, data)
    else:
        df = _read_text(path, kind, _decode(path, data))
    if len(df.columns) == 0 or len(df) == 0:
        raise DataError(f"{path}: the file has no data rows; add rows below the header")
    df.columns = [str(c).strip() for c in df.columns]
    logger.info("read %s: %d rows, columns %s", path, len(df), list(df.columns))
    return df


def _decode(path: Path, data: bytes) -> str:
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise DataError(f"{path}: the file is UTF-16 encoded; save the file as UTF-8")
    for magic, what in _MAGIC.items():
        if data.startswith(magic):
            raise DataError(f"{path}: this is {what}, not a text table; save it as CSV UTF-8")
    nul = data.find(b"\x00")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise DataError(
            f"{path}: binary data (a NUL byte at offset {nul}, line {line}); "
            "this is not a text table: save it as CSV UTF-8"
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(
            f"{path}: not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}, "
            f"line {line}); save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`, "
            "or 'CSV UTF-8' in Excel)"
        ) from None


def _read_text(path: Path, kind: str, text: str) -> pd.DataFrame:
    try:
        if kind == "jsonl":
            return _read_json(path, text)
        return pd.read_csv(io.StringIO(text), sep="\t" if kind == "tsv" else ",")
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file has no columns; add a header line") from None
    except (pd.errors.ParserError, ValueError) as e:
        msg = str(e).strip().splitlines()[0]
        raise DataError(
            f"{path}: cannot parse it as {kind.upper()} ({msg}); fix that line"
        ) from None


def _read_json(path: Path, text: str) -> pd.DataFrame:
    if text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from None
    else:
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{path}: line {number} is not valid JSON ({e.msg}); "
                    "write one JSON object per line"
                ) from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise DataError(f"{path}: expected JSON objects such as {{'text': ..., 'label': ...}}")
    return pd.DataFrame.from_records(records)


def _read_parquet(path: Path, data: bytes) -> pd.DataFrame:
    if not data.startswith(b"PAR1"):
        raise DataError(f"{path}: not a Parquet file (no PAR1 header); check the file type")
    try:
        return pd.read_parquet(io.BytesIO(data))
    except Exception as e:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{path}: cannot read it as Parquet ({e}); re-export the file") from e


def _missing_column(name: str, flag: str, df: pd.DataFrame, source: str) -> DataError:
    cols = ", ".join(map(str, df.columns))
    return DataError(
        f"column {name!r} not found in {source}; available columns: {cols}; "
        f"pass {flag} with one of them"
    )


def _label_like(s: pd.Series) -> bool:
    """Few distinct values: looks like class labels (or an id-free category)."""
    n = s.nunique(dropna=True)
    return 2 <= n <= max(2, min(100, len(s) // 2))


def _stringy(s: pd.Series) -> bool:
    return not pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)


def detect_columns(
    df: pd.DataFrame,
    label: str | None = None,
    text: str | list[str] | None = None,
    *,
    source: str = "the data",
) -> tuple[list[str], str]:
    """Return (text_columns, label_column), guessing whichever is not given.

    The label is a column named like `label`/`target`/`class`..., else the last column with
    few distinct values. Text columns are string columns of prose (long, with spaces). `text`
    may name several columns, as a list or comma-separated.
    """
    columns = [str(c) for c in df.columns]
    by_lower = {c.lower(): c for c in reversed(columns)}
    texts: list[str] | None = None
    if text is not None:
        texts = [text] if isinstance(text, str) else list(text)
        if len(texts) == 1 and texts[0] not in columns and "," in texts[0]:
            texts = [t.strip() for t in texts[0].split(",") if t.strip()]
        for t in texts:
            if t not in columns:
                raise _missing_column(t, "--text", df, source)
    if label is not None and label not in columns:
        raise _missing_column(label, "--label", df, source)
    if label is None:
        named = [by_lower[n] for n in LABEL_NAMES + LABEL_NAMES_LATE if n in by_lower]
        label = next((c for c in named if c not in (texts or [])), None)
    if texts is None:
        texts = _detect_text(df, [c for c in columns if c != label], source)
    if label is None:
        rest = [c for c in columns if c not in texts]
        candidates = [c for c in rest if _label_like(df[c])] or (rest if len(rest) == 1 else [])
        if not candidates:
            raise DataError(
                f"cannot tell which column of {source} is the label; columns: "
                f"{', '.join(columns)}; pass --label NAME"
            )
        label = candidates[-1]
        logger.info("guessed label column %r (choose another with --label)", label)
    if label in texts:
        raise DataError(
            f"column {label!r} is both the label and a text column; pass --label and --text "
            "with different columns"
        )
    return texts, label


def _detect_text(df: pd.DataFrame, columns: list[str], source: str) -> list[str]:
    for name in TEXT_NAMES:
        match = [c for c in columns if c.lower() == name]
        if match:
            return match[:1]
    stats = {}
    for c in columns:
        s = df[c].dropna()
        if _stringy(df[c]) and len(s):
            s = s.astype(str)
            stats[c] = (s.str.len().mean(), s.str.contains(" ", regex=False).mean())
    prose = [c for c, (length, spaced) in stats.items() if length >= 20 and spaced >= 0.5]
    prose = [c for c in prose if not _label_like(df[c])] or prose
    if not prose and stats:
        prose = [max(stats, key=lambda c: stats[c][0])]
    if not prose:
        raise DataError(
            f"no text column found in {source}; columns: {', '.join(map(str, df.columns))}; "
            "pass --text NAME"
        )
    logger.info("guessed text column(s) %s (choose others with --text)", prose)
    return prose


def detect_task(series: pd.Series, task: str | None = None) -> Task:
    """Return "regression" for a numeric target with many distinct values, else classification."""
    if task is not None:
        value = task.strip().lower()
        if value not in ("classification", "regression"):
            raise ConfigError(f"--task {task!r} is not known: use classification or regression")
        return "regression" if value == "regression" else "classification"
    s = series.dropna()
    if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s) or s.empty:
        return "classification"
    distinct = s.nunique()
    integral = bool((s == np.floor(s)).all())
    # Integer codes are often classes: ask for more distinct values before calling them a target.
    many = distinct > (50 if integral else 20) and distinct > 0.05 * len(s)
    return "regression" if many else "classification"


def _labels_as_str(s: pd.Series) -> pd.Series:
    """Class labels as strings, so 1, 1.0 and "1" are one class."""
    if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
        present = s.dropna()
        if (present == np.floor(present)).all():
            s = s.astype("Int64")
    out = s.astype(str).str.strip()
    return out.where(s.notna() & (out != ""), None)


def _fix_mojibake(text: str) -> str:
    for _ in range(3):  # text can be double-encoded; undo one layer per pass
        for codec in ("cp1252", "latin-1"):
            try:
                text = text.encode(codec).decode("utf-8")
                break
            except UnicodeError:
                continue
        else:
            return text
    return text


def _text_part(s: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """One text column normalised: (text, rows repaired, rows whose whitespace changed)."""
    s = s.astype(str).where(s.notna(), "")
    suspect = s.str.contains(_MOJIBAKE, regex=True)
    repaired = pd.Series(False, index=s.index)
    if suspect.any():
        fixed = s[suspect].map(_fix_mojibake)
        repaired[suspect] = fixed != s[suspect]
        s = s.copy()
        s[suspect] = fixed
    s = s.str.normalize("NFC")
    out = s.str.replace(r"\s+", " ", regex=True).str.strip()
    return out, repaired, (out != s) & (out != "")


def _join_texts(
    df: pd.DataFrame, text_columns: list[str]
) -> tuple[pd.Series, pd.Series, pd.Series]:
    parts = [_text_part(df[c]) for c in text_columns]
    text, repaired, spaced = parts[0]
    for part, fixed, changed in parts[1:]:
        text = text.where((text == "") | (part == ""), text + TEXT_JOIN) + part
        repaired, spaced = repaired | fixed, spaced | changed
    return text, repaired, spaced


def model_inputs(df: pd.DataFrame, text_columns: list[str], source: str = "the data") -> list[str]:
    """The texts a model sees for each row: the same joining and normalisation as
    training (used by `automl predict`). Rows are kept, empty texts stay empty."""
    missing = [c for c in text_columns if c not in df.columns]
    if missing:
        raise _missing_column(missing[0], "--text", df, source)
    return _join_texts(df, text_columns)[0].tolist()


def clean(
    df: pd.DataFrame,
    text_columns: list[str],
    label_column: str,
    task: Task,
    *,
    source: str = "the data",
) -> tuple[pd.DataFrame, CleaningReport]:
    """Return a frame with columns "text" and "label" and a report of what was changed.

    Joins and normalises the text (mojibake, NFC, whitespace), drops rows with no text or no
    label, removes exact duplicates and resolves texts seen with several labels (majority
    wins; ties drop the text).
    """
    text, repaired, spaced = _join_texts(df, text_columns)
    if task == "regression":
        raw = df[label_column]
        label = pd.to_numeric(raw, errors="coerce").astype(float)
        bad = (raw.notna() & ~np.isfinite(label.fillna(0))) | (raw.notna() & label.isna())
        if bad.any():
            pos = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(
                f"{source}: row {pos + 1}, column {label_column!r}: {raw.iloc[pos]!r} is not a "
                "number, but regression needs numeric labels; fix the value or pass "
                "--task classification"
            )
    else:
        label = _labels_as_str(df[label_column])
    out = pd.DataFrame({"text": text.to_numpy(), "label": label.to_numpy()})
    no_text = out["text"] == ""
    no_label = ~no_text & out["label"].isna()
    out = out[~no_text & ~no_label]
    dup = out.duplicated(["text", "label"])
    notes: list[str] = []
    conflicting = dropped = 0
    if task == "classification":
        pairs = out.groupby(["text", "label"], sort=False).size().rename("n").reset_index()
        by_text = pairs.groupby("text", sort=False)["n"]
        top = pairs["n"] == by_text.transform("max")
        n_top = top.groupby(pairs["text"], sort=False).transform("sum")
        n_labels = by_text.transform("size")
        keep_pairs = pairs[(n_labels == 1) | (top & (n_top == 1))]
        conflicting = int(pairs.loc[n_labels > 1, "text"].nunique())
        out = out[~dup]
        keep = pd.MultiIndex.from_frame(out[["text", "label"]]).isin(
            pd.MultiIndex.from_frame(keep_pairs[["text", "label"]])
        )
        dropped = int((~keep).sum())
        out = out[keep]
    else:
        out = out[~dup]
        mean = out.groupby("text", sort=False)["label"].transform("mean")
        merged = out["text"].duplicated()
        if merged.any():
            notes.append(
                f"{out.loc[merged, 'text'].nunique()} texts had several target values: kept "
                f"one row each with the mean value ({int(merged.sum())} rows merged)"
            )
        out = out.assign(label=mean)[~merged]
    out = out.reset_index(drop=True)
    report = CleaningReport(
        rows_in=len(df),
        rows_out=len(out),
        missing_text=int(no_text.sum()),
        missing_label=int(no_label.sum()),
        duplicates=int(dup.sum()),
        conflicting_texts=conflicting,
        conflict_rows_dropped=dropped,
        whitespace_normalised=int(spaced.sum()),
        encoding_repaired=int(repaired.sum()),
        notes=tuple(notes),
    )
    return out, report


def validate(
    df: pd.DataFrame, task: Task, label_column: str = "label", source: str = "the data"
) -> None:
    """Raise DataError if cleaned data cannot be trained and evaluated on."""
    if df.empty:
        raise DataError(
            f"no usable rows in {source}: every row had empty text or a missing "
            f"{label_column!r}; check that --text and --label name the right columns"
        )
    if task == "regression":
        if len(df) < 3:
            raise DataError(
                f"{source} has {len(df)} usable rows; at least 3 are needed (train, "
                "validation, test): add rows"
            )
        return
    counts = df["label"].value_counts()
    if len(counts) < 2:
        raise DataError(
            f"{source}: column {label_column!r} has only one class ({counts.index[0]!r}); "
            "a classifier needs at least 2: add examples of other classes, or pick another "
            "column with --label"
        )
    rare = counts[counts < 2]
    if len(rare):
        listed = ", ".join(f"{k!r} ({v} example)" for k, v in rare.head(5).items())
        more = f" and {len(rare) - 5} more" if len(rare) > 5 else ""
        hint = (
            "; if the label is a number to predict, pass --task regression"
            if len(rare) > len(counts) / 2
            else ""
        )
        raise DataError(
            f"{source}: column {label_column!r} has classes with fewer than 2 examples: "
            f"{listed}{more}; add examples of them or remove those rows{hint}"
        )


def _sizes(n: int, pool: int, val_size: float, test_size: float) -> tuple[int, int]:
    """Row counts for (val, test): rounded fractions of n, at least 1 each while rows allow."""
    n_test = max(1, round(test_size * n)) if test_size > 0 else 0
    n_val = max(1, round(val_size * n)) if val_size > 0 else 0
    n_test = min(n_test, max(pool - (1 if n_val else 0), 0))
    return min(n_val, pool - n_test), n_test


def _take(
    df: pd.DataFrame, size: int, strata: pd.Series | None, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame, bool]:
    """Split `size` rows off `df`: stratified if possible; returns (rest, taken, stratified)."""
    if size == 0:
        return df, df.iloc[:0], True
    if size >= len(df):
        return df.iloc[:0], df, True
    from sklearn.model_selection import train_test_split  # ~0.9 s: only when splitting

    try:
        rest, taken = train_test_split(df, test_size=size, random_state=seed, stratify=strata)
        return rest, taken, strata is not None
    except ValueError:  # a class too small for the requested sizes
        rest, taken = train_test_split(df, test_size=size, random_state=seed)
        return rest, taken, False


def _check_sizes(val_size: float, test_size: float) -> None:
    if val_size < 0 or test_size < 0 or val_size + test_size >= 1:
        raise ConfigError(
            f"val_size={val_size} and test_size={test_size} must be >= 0 and sum below 1"
        )


def _split(
    df: pd.DataFrame, task: Task, seed: int, val_size: float, test_size: float
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, list[str]]:
    _check_sizes(val_size, test_size)
    notes: list[str] = []
    shuffled = df.sample(frac=1.0, random_state=seed)
    if task == "classification":
        # One row per class always goes to train; classes with < 3 rows stay wholly in train
        # unless that would leave nothing to validate or test on.
        anchor = ~shuffled["label"].duplicated()
        tiny = shuffled["label"].map(shuffled["label"].value_counts()) < 3
        pool = shuffled[~anchor & ~tiny]
        if len(pool) < 2:
            pool = shuffled[~anchor]
        elif tiny.any():
            n_tiny = shuffled.loc[tiny, "label"].nunique()
            notes.append(f"classes with fewer than 3 examples ({n_tiny}) are only in train")
        fixed = shuffled.drop(pool.index)
    else:
        pool, fixed = shuffled, shuffled.iloc[:0]
    n_val, n_test = _sizes(len(df), len(pool), val_size, test_size)

    def strata(rows: pd.DataFrame) -> pd.Series | None:
        if task == "classification":
            return rows["label"]
        bins = min(10, len(rows) // 10)
        return (
            pd.qcut(rows["label"], q=bins, labels=False, duplicates="drop") if bins >= 2 else None
        )

    rest, test, ok_test = _take(pool, n_test, strata(pool), seed)
    rest, val, ok_val = _take(rest, n_val, strata(rest), seed + 1)
    if task == "classification" and not (ok_test and ok_val):
        notes.append("too few rows to stratify by class: val/test drawn at random")
    train = pd.concat([fixed, rest])
    return train, val, test, notes


def split(
    df: pd.DataFrame, task: Task, seed: int, val_size: float = 0.15, test_size: float = 0.15
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Split cleaned data into (train, val, test), stratified by class; deterministic per seed.

    Every class keeps at least one training row; val and test are non-empty whenever there
    are at least 3 rows (classification: at least 2 rows beyond one per class).
    """
    train, val, test, _ = _split(df, task, seed, val_size, test_size)
    return train, val, test


def _class_order(names: list[str]) -> list[str]:
    """Sorted class names; integer-like names in numeric order ("2" before "10")."""
    try:
        return sorted(names, key=int)
    except ValueError:
        return sorted(names)


@dataclasses.dataclass(frozen=True)
class CheckedData:
    """A loaded, cleaned and validated table, not yet split (see `split_checked`)."""

    frame: pd.DataFrame  # columns "text" and "label"
    task: Task
    text_columns: tuple[str, ...]
    label_column: str
    source: str
    report: CleaningReport
    modality: str = "text"  # "image": frame["text"] holds absolute image paths


def check(
    source: str | Path | pd.DataFrame,
    label: str | None = None,
    text: str | list[str] | None = None,
    task: str | None = None,
) -> CheckedData:
    """Load, detect columns and task, clean and validate: every bad-input error is raised
    here, before anything expensive starts."""
    if isinstance(source, pd.DataFrame):
        df, name = source.rename(columns=str), "<dataframe>"
    elif Path(source).is_dir():  # a folder with one sub-folder per class
        from automl.images import check_images

        return check_images(source, label, task=task)
    else:
        df, name = load_table(source), str(source)
    if text is None:  # a table of image paths (and labels) is an image dataset
        from automl.images import check_images, find_image_column

        if find_image_column(df) is not None:
            return check_images(name, label, task=task, frame=df)
    text_columns, label_column = detect_columns(df, label, text, source=name)
    kind = detect_task(df[label_column], task)
    cleaned, report = clean(df, text_columns, label_column, kind, source=name)
    validate(cleaned, kind, label_column, name)
    return CheckedData(cleaned, kind, tuple(text_columns), label_column, name, report)


def split_checked(
    checked: CheckedData, seed: int = 0, val_size: float = 0.15, test_size: float = 0.15
) -> PreparedData:
    """Split checked data into train/validation/test (stratified, deterministic per seed)."""
    _check_sizes(val_size, test_size)
    cleaned, kind, name = checked.frame, checked.task, checked.source
    train, val, test, notes = _split(cleaned, kind, seed, val_size, test_size)
    report = dataclasses.replace(checked.report, notes=checked.report.notes + tuple(notes))
    label_names: tuple[str, ...] = ()
    if kind == "classification":
        label_names = tuple(_class_order(cleaned["label"].unique().tolist()))

    def to_split(rows: pd.DataFrame) -> Split:
        if kind == "classification":
            ids = pd.Categorical(rows["label"], categories=label_names).codes.tolist()
            return Split(texts=tuple(rows["text"].tolist()), labels=tuple(ids))
        values = [float(v) for v in rows["label"].tolist()]
        return Split(texts=tuple(rows["text"].tolist()), labels=tuple(values))

    for line in report.lines():
        logger.info("%s: %s", name, line)
    logger.info(
        "%s: %s, %d classes, split %d/%d/%d",
        name,
        kind,
        len(label_names),
        len(train),
        len(val),
        len(test),
    )
    return PreparedData(
        train=to_split(train),
        val=to_split(val),
        test=to_split(test),
        task=kind,
        label_names=label_names,
        text_columns=checked.text_columns,
        label_column=checked.label_column,
        source=name,
        report=report,
        seed=seed,
        modality=checked.modality,
    )


def prepare(
    source: str | Path | pd.DataFrame,
    label: str | None = None,
    text: str | list[str] | None = None,
    task: str | None = None,
    seed: int = 0,
    val_size: float = 0.15,
    test_size: float = 0.15,
) -> PreparedData:
    """Load, check, clean and split a dataset: the one-call entry point of this module."""
    _check_sizes(val_size, test_size)
    return split_checked(check(source, label, text, task), seed, val_size, test_size)
