"""The fixed, committed benchmark splits: every run of a suite sees the same rows.

`benchmarks/splits.json` holds, per dataset, the sha256 of the CSV it was built from and
the test split's row ids (0-based positions of data records, header excluded, as Python's
csv module reads them), plus a checksum of every training sample the committed suites use.
A CSV whose sha256 differs stops the benchmark with a clear error instead of quietly
measuring other rows.

The rule (the same as benchmarks/fewshot.py's, so both benchmarks share test sets):
eligible rows have a non-empty text and label that pandas would not read as missing, and
are the first row of their text after Unicode NFC and whitespace collapsing (no text is in
both train and test, and automl's cleaning drops nothing). Test: stratified,
min(1000, eligible // 2) rows, class quotas by largest remainder, drawn per class (classes
sorted) with numpy default_rng(0). The training pool is every other eligible row:
- full training data: the whole pool;
- `shots` k: per class (sorted), default_rng(seed) permutes the class's pool and takes the
  first k (so a seed's 8-shot sample lies inside its 16-shot one); a class with fewer gives
  all it has;
- `max_train` n: a stratified sample of n rows, drawn like the test split with
  default_rng(seed). `max_test` n takes a stratified n of the test ids with default_rng(0).
Training rows reach a system in an order shuffled with default_rng(seed).

Rebuild the file (only to change the splits; earlier results then refer to other rows):
`python -m automl.bench.splits [--force]`.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from automl import paths
from automl._files import sha256_file
from automl.errors import DataError

logger = logging.getLogger(__name__)

SPLITS_FILE = paths.REPO_ROOT / "benchmarks" / "splits.json"
TEST_SIZE = 1000  # rows; enough to tell 2 points of accuracy apart, cheap to predict
_NA = {"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND"}
_NA |= {"1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"}


@dataclass(frozen=True)
class Sample:
    """Which training rows a cell uses: all (`shots` and `max_train` None), k per class,
    or a stratified n; `max_test` narrows the test split."""

    shots: int | None = None
    max_train: int | None = None
    max_test: int | None = None

    def key(self, seed: int) -> str:
        """The name its checksum is pinned under in splits.json."""
        if self.shots is not None:
            return f"{self.shots}-shot/seed{seed}"
        if self.max_train is not None:
            return f"max{self.max_train}/seed{seed}"
        return "full"


@dataclass(frozen=True)
class BenchData:
    """One cell's data: training texts and labels (class names), the test split."""

    name: str  # the cell's dataset label, e.g. "mr" or "mr-8shot"
    dataset: str  # the registry name, e.g. "mr"
    train_texts: tuple[str, ...]
    train_labels: tuple[str, ...]
    test_texts: tuple[str, ...]
    test_labels: tuple[str, ...]
    modality: str = "text"  # "image": the texts are absolute image paths


# ------------------------------------------------------------------------------ the rule


def read_rows(path: Path) -> list[tuple[str, str]]:
    """(text, label) of every data record of a CSV with `text` and `label` columns."""
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, [])
        if "text" not in header or "label" not in header:
            raise DataError(f"{path}: expected columns text,label, found {header}")
        t, lab = header.index("text"), header.index("label")
        return [(r[t], r[lab]) for r in reader]


def eligible_ids(rows: Sequence[tuple[str, str]]) -> list[int]:
    """Row ids a split may use (see the module docstring)."""
    seen: set[str] = set()
    ids = []
    for i, (text, label) in enumerate(rows):
        if text.strip() in _NA or label.strip() in _NA:
            continue
        key = " ".join(unicodedata.normalize("NFC", text).split())
        if key not in seen:
            seen.add(key)
            ids.append(i)
    return ids


def quotas(counts: dict[str, int], n: int) -> dict[str, int]:
    """Stratified quotas summing to n: floors, then the largest remainders (ties by class
    name). Integer arithmetic, so equal remainders tie exactly."""
    total = sum(counts.values())
    quota = {c: counts[c] * n // total for c in counts}
    order = sorted(counts, key=lambda c: (-(counts[c] * n % total), c))
    for c in order[: n - sum(quota.values())]:
        quota[c] += 1
    return quota


def _by_class(ids: Iterable[int], rows: Sequence[tuple[str, str]]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i in ids:
        out.setdefault(rows[i][1], []).append(i)
    return dict(sorted(out.items()))


def _stratified(by_class: dict[str, list[int]], n: int, seed: int) -> list[int]:
    """n ids, stratified by quotas, drawn per class (classes sorted) with default_rng(seed)."""
    quota = quotas({c: len(v) for c, v in by_class.items()}, n)
    rng = np.random.default_rng(seed)
    picked: list[int] = []
    for c, ids in by_class.items():
        picked += [int(i) for i in rng.permutation(ids)[: quota[c]]]
    return sorted(picked)


def holdout_ids(rows: Sequence[tuple[str, str]]) -> list[int]:
    """The test split's row ids under the rule."""
    ids = eligible_ids(rows)
    return _stratified(_by_class(ids, rows), min(TEST_SIZE, len(ids) // 2), 0)


def train_ids(
    rows: Sequence[tuple[str, str]], test: Sequence[int], sample: Sample, seed: int
) -> list[int]:
    """A cell's training row ids (sorted) under the rule."""
    in_test = set(test)
    pool = _by_class((i for i in eligible_ids(rows) if i not in in_test), rows)
    if sample.shots is not None:
        rng = np.random.default_rng(seed)
        return sorted(
            int(i) for ids in pool.values() for i in rng.permutation(ids)[: sample.shots]
        )
    if sample.max_train is not None:
        size = sum(len(v) for v in pool.values())
        return _stratified(pool, min(sample.max_train, size), seed)
    return sorted(i for ids in pool.values() for i in ids)


def checksum(ids: Iterable[int]) -> str:
    """sha256 of a sorted id list as text (the pinned fingerprint of a sample)."""
    text = ",".join(str(i) for i in sorted(ids))
    return hashlib.sha256(text.encode("ascii")).hexdigest()


# ------------------------------------------------------------------------- the split file


def load_splits(path: Path = SPLITS_FILE) -> dict[str, Any]:
    """The committed split file (DataError when missing or unreadable)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(
            f"cannot read the benchmark splits {path} ({exc}): restore it from git, or build "
            "it with `python -m automl.bench.splits`"
        ) from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("datasets"), dict):
        raise DataError(f"{path} has no `datasets` mapping: restore it from git")
    return doc


def _checked_rows(name: str, splits: dict[str, Any], path: Path) -> list[tuple[str, str]]:
    from automl.datasets import dataset_path

    entry = splits["datasets"].get(name)
    if entry is None:
        raise DataError(
            f"dataset {name!r} has no committed split in {path} (it has "
            f"{', '.join(sorted(splits['datasets']))}): add it with "
            "`python -m automl.bench.splits --force`"
        )
    csv_path = dataset_path(name)
    got, want = sha256_file(csv_path), entry["sha256"]
    if got != want:
        raise DataError(
            f"{csv_path} has sha256 {got[:12]}…, but {path.name} was built from {want[:12]}…: "
            "its test ids are row positions in that file. Rebuild the dataset "
            f"(automl.datasets.prepare_dataset({name!r}, force=True)), or to start over "
            "rebuild the splits with `python -m automl.bench.splits --force`"
        )
    return read_rows(csv_path)


def bench_data(
    name: str,
    sample: Sample,
    seed: int,
    label: str | None = None,
    splits: dict[str, Any] | None = None,
    path: Path = SPLITS_FILE,
) -> BenchData:
    """The data of one (dataset, sample, seed) cell, checked against the committed split."""
    splits = load_splits(path) if splits is None else splits
    from automl.datasets.images import IMAGE_DATASETS

    if name in IMAGE_DATASETS:
        return _image_bench_data(name, sample, seed, label, splits, path)
    rows = _checked_rows(name, splits, path)
    entry = splits["datasets"][name]
    test = list(entry["test"])
    if sample.max_test is not None and sample.max_test < len(test):
        test = _stratified(_by_class(test, rows), sample.max_test, 0)
    train = train_ids(rows, entry["test"], sample, seed)
    pinned = entry.get("samples", {})
    for key, ids in ((sample.key(seed), train), (f"test-max{sample.max_test}", test)):
        if key == "test-maxNone":
            continue
        if key not in pinned:
            logger.warning("%s: sample %s is not pinned in %s", name, key, path.name)
        elif pinned[key] != checksum(ids):
            raise DataError(
                f"{name}: sample {key} differs from the one pinned in {path.name} (the "
                "sampling rule or numpy's generator changed): results would not compare "
                "with earlier runs; rebuild with `python -m automl.bench.splits --force`"
            )
    return _cell(label or name, name, rows, train, test, seed)


def _cell(
    label: str,
    name: str,
    rows: Sequence[tuple[str, str]],
    train: list[int],
    test: list[int],
    seed: int,
    modality: str = "text",
) -> BenchData:
    """The cell's data: training rows in an order shuffled with default_rng(seed)."""
    order = np.random.default_rng(seed).permutation(len(train))
    train = [train[i] for i in order]
    return BenchData(
        name=label,
        dataset=name,
        train_texts=tuple(rows[i][0] for i in train),
        train_labels=tuple(rows[i][1] for i in train),
        test_texts=tuple(rows[i][0] for i in test),
        test_labels=tuple(rows[i][1] for i in test),
        modality=modality,
    )


def _image_bench_data(
    name: str, sample: Sample, seed: int, label: str | None, splits: dict[str, Any], path: Path
) -> BenchData:
    """An image dataset's cell: its own published train/test split (index.csv's `split`
    column), the index file's sha256 pinned in splits.json; `max_train` / `max_test`
    take stratified samples as for text. Paths are absolute."""
    from automl.datasets.images import image_dataset_path

    folder = image_dataset_path(name)
    index = folder / "index.csv"
    entry = splits["datasets"].get(name)
    got = sha256_file(index)
    if entry is None or entry.get("sha256") != got:
        raise DataError(
            f"{index} has sha256 {got[:12]}…, but {path.name} pins "
            f"{(entry or {}).get('sha256', 'nothing')[:12]}… for {name!r}: rebuild the "
            f"dataset (automl.datasets.images.prepare_image_dataset({name!r}, force=True))"
        )
    with open(index, encoding="utf-8", newline="") as fh:
        records = list(csv.DictReader(fh))
    rows = [(str(folder / r["image"]), r["label"]) for r in records]
    train = [i for i, r in enumerate(records) if r["split"] == "train"]
    test = [i for i, r in enumerate(records) if r["split"] == "test"]
    if sample.shots is not None:
        by_class = _by_class(train, rows)
        rng = np.random.default_rng(seed)
        train = sorted(
            i for c in sorted(by_class) for i in rng.permutation(by_class[c])[: sample.shots]
        )
    elif sample.max_train is not None and sample.max_train < len(train):
        train = _stratified(_by_class(train, rows), sample.max_train, seed)
    if sample.max_test is not None and sample.max_test < len(test):
        test = _stratified(_by_class(test, rows), sample.max_test, 0)
    return _cell(label or name, name, rows, train, test, seed, "image")


def make_splits(
    names: Iterable[str],
    pins: dict[str, set[tuple[Sample, int]]],
    path: Path = SPLITS_FILE,
    force: bool = False,
) -> dict[str, Any]:
    """Build the split file for `names`, pinning the (sample, seed) checksums in `pins`;
    refuse to change an existing file unless `force`."""
    from automl.datasets import dataset_path
    from automl.datasets.images import IMAGE_DATASETS, image_dataset_path

    doc: dict[str, Any] = {"version": 1, "rule": "see automl/bench/splits.py", "datasets": {}}
    for name in names:
        if name in IMAGE_DATASETS:  # its published split; the index file is pinned
            index = image_dataset_path(name) / "index.csv"
            doc["datasets"][name] = {
                "csv": index.name,
                "sha256": sha256_file(index),
                "test": "published (index.csv split column)",
            }
            continue
        csv_path = dataset_path(name)
        rows = read_rows(csv_path)
        test = holdout_ids(rows)
        samples = {}
        for sample, seed in sorted(pins.get(name, set()), key=repr):
            samples[sample.key(seed)] = checksum(train_ids(rows, test, sample, seed))
            if sample.max_test is not None and sample.max_test < len(test):
                small = _stratified(_by_class(test, rows), sample.max_test, 0)
                samples[f"test-max{sample.max_test}"] = checksum(small)
        doc["datasets"][name] = {
            "csv": csv_path.name,
            "sha256": sha256_file(csv_path),
            "rows": len(rows),
            "eligible": len(eligible_ids(rows)),
            "test": test,
            "samples": dict(sorted(samples.items())),
        }
    # one line per id list keeps the file small and its diffs reviewable
    text = re.sub(
        r"\[\s*([-\d,\s]+?)\s*\]",
        lambda m: "[" + ", ".join(v.strip() for v in m[1].split(",")) + "]",
        json.dumps(doc, indent=1, sort_keys=True),
    )
    if path.exists() and path.read_text(encoding="utf-8") != text + "\n" and not force:
        raise DataError(
            f"{path} exists and would change: results of earlier runs refer to its ids. "
            "Pass --force to replace it"
        )
    path.write_text(text + "\n", encoding="utf-8")
    return doc


def _main() -> None:  # pragma: no cover - a maintenance command
    from automl.bench.suites import list_suites, load_suite

    parser = argparse.ArgumentParser(description="Rebuild benchmarks/splits.json.")
    parser.add_argument("--force", action="store_true", help="Replace a different file.")
    args = parser.parse_args()
    pins: dict[str, set[tuple[Sample, int]]] = {}
    for suite in map(load_suite, list_suites()):
        for entry in suite.datasets:
            for sample in suite.samples(entry):
                pins.setdefault(entry.name, set()).update((sample, s) for s in suite.seeds)
    names = sorted(pins)
    make_splits(names, pins, force=args.force)
    logger.warning("wrote %s for %s", SPLITS_FILE, ", ".join(names))


if __name__ == "__main__":  # pragma: no cover
    logging.basicConfig(level=logging.INFO)
    _main()
