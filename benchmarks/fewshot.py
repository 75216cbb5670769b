"""Few-shot benchmark: where does the few-shot track win, and does auto-routing pick it?

For SpamAssassin, MR sentences, CoNLL-2010 uncertainty and Fortunes-8, at 8, 32 and 128
training examples per class, 2 seeds each (fixed sample ids, committed in
benchmarks/fewshot_samples.json), every system is scored on the same test split of the
dataset (up to 1,000 rows) and given the same budget per cell (`--budget`, seconds):

- automl-auto      `automl run train.csv --label label --budget Bs --seed S` (routed by
                   automl/routing.py), then `automl predict` on the test split.
- fewshot-forced   the same with `--track fewshot`;  finetune-forced: `--track finetune`.
                   The auto run IS the run of the track it chose (same command, same seed,
                   the route only names the track), so that track's forced row reuses it
                   (`reused_from: automl-auto`); only the other track is run again.
- setfit-default   what a user would write: SetFitModel.from_pretrained(MiniLM-L6 folder),
                   setfit.Trainer with library-default TrainingArguments (only
                   save_strategy="no", report_to="none" and seed=S set; run in a scratch
                   folder), metric a callable (a name would reach a hub), then
                   model.predict. One addition for fairness: a callback stops the body's
                   training once B seconds have passed since the runner started (the
                   defaults' pair sampling needs thousands of steps at 128 shots, hours on a
                   CPU); the head is then fitted as usual. Planned and done steps are kept.
- embed-lr         frozen MiniLM-L6 sentence embeddings (SentenceTransformer defaults) +
                   LogisticRegression(max_iter=1000).
- tfidf-lr         TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True) +
                   LogisticRegression(C=10, solver="saga", max_iter=1000), as automl/reference.py.

Every system runs in its own process; wall seconds are measured around it (imports, model
loading, training and predicting the test split). Accuracy and macro-F1 (over the test
split's classes) are computed here with scikit-learn from the predicted labels. Each automl
run gets a cold embedding cache (its own AUTOML_CACHE with the prepared backbones linked
in), as a first run on new data would, so the cache measurement below is not flattered by
earlier runs; the bench store is benchmarks/runs/fewshot.db.

Samples (`--make-samples`, run once; its output is committed). Row id = 0-based index of a
data record in the dataset's CSV (header excluded, records as Python's csv module reads
them). Eligible rows: text and label not empty or a token pandas reads as missing (NA,
null, ...), and the first row of each text after Unicode NFC and whitespace collapsing (so
no text is in both train and test, and automl's cleaning drops nothing). Test: stratified,
min(1000, eligible // 2) rows, class quotas by largest remainder, drawn per class (classes
sorted) with numpy default_rng(0). Train: for each (shots, seed), a fresh default_rng(seed)
permutes each class's remaining rows (classes sorted) and takes the first `shots`, so the
8-shot sample of a seed is inside its 32-shot one; a class with fewer takes all (recorded
as `short`). The file records each CSV's sha256: a changed dataset stops the benchmark.
The JSON is authoritative; the rule is only rerun to build a new one.

Resumable: each finished (dataset, shots, seed, system, budget) appends one JSON line to
benchmarks/results/fewshot.jsonl and is skipped on the next start (a failed cell is a row
with its error; --retry-failed reruns those). Cells run seed by seed, so a first sitting
gives a complete one-seed table.

Usage:
  python benchmarks/fewshot.py [--budget 60] [--datasets mr,fortunes8] [--shots 8,32]
         [--seeds 0] [--systems automl-auto,tfidf-lr] [--max-cells N] [--retry-failed]
  python benchmarks/fewshot.py --report        # tables, checks and plot from what is done
  python benchmarks/fewshot.py --make-samples  # rebuild the sample file (--force to change it)
Writes benchmarks/results/fewshot.{jsonl,json,csv,md,png}.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from automl.bench.splits import eligible_ids, quotas  # noqa: E402  (the one sampling rule)
from automl.routing import FEWSHOT_CROSSOVER  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SAMPLES = ROOT / "benchmarks" / "fewshot_samples.json"
RESULTS_JSONL = RESULTS / "fewshot.jsonl"
RUNS = ROOT / "benchmarks" / "runs"
WORK = RUNS / "fewshot"
DB = RUNS / "fewshot.db"

DATASETS = ("spamassassin", "mr", "conll2010", "fortunes8")
SHOTS = (8, 32, 128)
SEEDS = (0, 1)
SYSTEMS = (
    "automl-auto",
    "fewshot-forced",
    "finetune-forced",
    "setfit-default",
    "embed-lr",
    "tfidf-lr",
)
FORCED = {"fewshot-forced": "fewshot", "finetune-forced": "finetune"}
# 24 (dataset, shots, seed) cells, each 2 automl runs and SetFit (B + start-up and test
# prediction) and 2 baselines, must fit 2 hours on 2 cores: 72 B + ~1,760 s by _guess,
# 6,080 s (1.7 h) at 60 s; 75 s would need 7,160 s, no margin left.
DEFAULT_BUDGET = 60
TEST_SIZE = 1000
WITHIN = 0.01  # "within 1 point of macro-F1"
AGREE_SHARE = 0.80  # share of (dataset, shots) cells where the auto choice is within WITHIN
CACHE_SPEEDUP = 10.0  # head-only trials after the first: at least this much faster


# --------------------------------------------------------------------------- samples


def read_rows(path: Path) -> list[tuple[str, str]]:
    """(text, label) of every data record of a CSV with `text` and `label` columns."""
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        if "text" not in header or "label" not in header:
            raise SystemExit(f"{path}: expected columns text,label, found {header}")
        t, lab = header.index("text"), header.index("label")
        return [(r[t], r[lab]) for r in reader]


def build_samples(
    rows: list[tuple[str, str]],
    shots: Iterable[int] = SHOTS,
    seeds: Iterable[int] = SEEDS,
    test_size: int = TEST_SIZE,
) -> dict[str, Any]:
    """The test ids and the per-(shots, seed) train ids of one dataset's rows."""
    ids = eligible_ids(rows)
    by_class: dict[str, list[int]] = {}
    for i in ids:
        by_class.setdefault(rows[i][1], []).append(i)
    classes = sorted(by_class)
    n_test = min(test_size, len(ids) // 2)
    quota = quotas({c: len(by_class[c]) for c in classes}, n_test)
    rng = np.random.default_rng(0)
    test: list[int] = []
    for c in classes:
        test += [int(i) for i in rng.permutation(by_class[c])[: quota[c]]]
    in_test = set(test)
    pool = {c: [i for i in by_class[c] if i not in in_test] for c in classes}
    train: dict[str, dict[str, Any]] = {}
    for k in shots:
        for seed in seeds:
            rng = np.random.default_rng(seed)
            picked: list[int] = []
            counts, short = {}, {}
            for c in classes:
                take = [int(i) for i in rng.permutation(pool[c])[:k]]
                picked += take
                counts[c] = len(take)
                if len(take) < k:
                    short[c] = len(take)
            entry = {"ids": sorted(picked), "counts": counts, "short": short}
            train.setdefault(str(k), {})[str(seed)] = entry
    return {
        "rows": len(rows),
        "eligible": len(ids),
        "classes": {c: len(by_class[c]) for c in classes},
        "test": {"ids": sorted(test), "counts": {c: quota[c] for c in classes}},
        "train": train,
    }


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _dumps_samples(obj: dict[str, Any]) -> str:
    def one_line(m: re.Match[str]) -> str:
        return "[" + ", ".join(v.strip() for v in m[1].split(",")) + "]"

    # one line per id list: a file of ~55 kB and reviewable diffs instead of ~400 kB
    return re.sub(r"\[\s*([-\d,\s]+?)\s*\]", one_line, json.dumps(obj, indent=1, sort_keys=True))


def make_samples(names: Iterable[str], out: Path, force: bool = False) -> dict[str, Any]:
    """Build the sample file for `names`; refuse to change an existing one unless force."""
    from automl.datasets import dataset_path

    doc: dict[str, Any] = {
        "version": 1,
        "rule": "see the docstring of benchmarks/fewshot.py",
        "test_size": TEST_SIZE,
        "shots": list(SHOTS),
        "seeds": list(SEEDS),
        "datasets": {},
    }
    for name in names:
        path = dataset_path(name)
        entry = build_samples(read_rows(path))
        doc["datasets"][name] = {"csv": path.name, "sha256": sha256(path), **entry}
    text = _dumps_samples(doc) + "\n"
    if out.exists() and out.read_text() != text and not force:
        raise SystemExit(
            f"{out} exists and would change: results in {RESULTS_JSONL} refer to its ids. "
            "Pass --force to replace it (and move the old results aside)."
        )
    out.write_text(text)
    return doc


def load_samples(path: Path = SAMPLES) -> dict[str, Any]:
    if not path.exists():
        raise SystemExit(f"{path} not found: build it once with --make-samples")
    return json.loads(path.read_text())


def dataset_rows(name: str, samples: dict[str, Any]) -> list[tuple[str, str]]:
    """The dataset's rows, after checking its CSV is the one the sample ids refer to."""
    from automl.datasets import dataset_path

    if name not in samples["datasets"]:
        raise SystemExit(f"{name} is not in {SAMPLES}: add it with --make-samples --force")
    path = dataset_path(name)
    want, got = samples["datasets"][name]["sha256"], sha256(path)
    if got != want:
        raise SystemExit(
            f"{name}: {path} has sha256 {got[:12]}..., but {SAMPLES.name} was built from "
            f"{want[:12]}...: the sample ids are row positions in that file. Rebuild the "
            f"dataset (automl.datasets.prepare_dataset({name!r}, force=True)) or, to "
            "start over, --make-samples --force and move benchmarks/results/fewshot.jsonl aside"
        )
    return read_rows(path)


def train_median(samples: dict[str, Any], name: str, shots: int, seed: int) -> float:
    """Median examples per class of a cell's training sample (what routing.py compares)."""
    counts = samples["datasets"][name]["train"][str(shots)][str(seed)]["counts"]
    return float(statistics.median(counts.values()))


# --------------------------------------------------------------------------- cells


@dataclass(frozen=True)
class Cell:
    dataset: str
    shots: int
    seed: int
    system: str
    budget_s: int

    @property
    def key(self) -> tuple[str, int, int, str, int]:
        return (self.dataset, self.shots, self.seed, self.system, self.budget_s)


Key = tuple[str, int, int, str, int]
Runner = Callable[[Cell, Mapping[Key, dict[str, Any]]], dict[str, Any]]


def row_key(row: Mapping[str, Any]) -> Key:
    return (row["dataset"], row["shots"], row["seed"], row["system"], row["budget_s"])


def read_results(path: Path) -> dict[Key, dict[str, Any]]:
    """Finished cells by key (a later line for the same key wins)."""
    done: dict[Key, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done[row_key(row)] = row
    return done


def append_result(path: Path, row: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(row, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def plan_cells(
    datasets: Iterable[str],
    shots: Iterable[int],
    seeds: Iterable[int],
    systems: Iterable[str],
    budget_s: int,
) -> list[Cell]:
    """Seed by seed, then shots, dataset and system (automl-auto before the forced ones)."""
    order = [s for s in SYSTEMS if s in set(systems)]
    return [
        Cell(d, k, seed, s, budget_s)
        for seed in seeds
        for k in shots
        for d in datasets
        for s in order
    ]


def run_cells(
    cells: list[Cell],
    runners: Mapping[str, Runner],
    results_path: Path,
    *,
    max_cells: int | None = None,
    retry_failed: bool = False,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run the cells not yet in results_path (one appended line each); returns the new rows.
    A runner that raises gives a row with the error (the benchmark goes on); Ctrl+C leaves
    the current cell unrecorded, to be rerun next time."""
    done = read_results(results_path)
    new: list[dict[str, Any]] = []
    for cell in cells:
        prev = done.get(cell.key)
        if prev is not None and not (retry_failed and prev.get("error")):
            continue
        if max_cells is not None and len(new) >= max_cells:
            log(f"stopped after {max_cells} new cells (--max-cells); run again to go on")
            break
        t0 = time.time()
        try:
            out = runners[cell.system](cell, done)
        except Exception as exc:  # noqa: BLE001 - a failed cell is a row, not a crash
            out = {"error": f"{type(exc).__name__}: {exc}"}
        row = {**asdict(cell), "wall_s": round(time.time() - t0, 1), **out}
        row["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        append_result(results_path, row)
        done[cell.key] = row
        new.append(row)
        log(_cell_line(row))
    return new


def _cell_line(row: dict[str, Any]) -> str:
    head = f"{row['dataset']:<12} {row['shots']:>3} shots seed {row['seed']} {row['system']:<15}"
    if row.get("error"):
        return f"{head} FAILED after {row['wall_s']:.0f}s: {row['error'][:200]}"
    extra = f" track {row['chosen_track']}" if row.get("chosen_track") else ""
    extra += " (reused the auto run)" if row.get("reused_from") else ""
    return (
        f"{head} macro-F1 {row['macro_f1']:.4f} acc {row['accuracy']:.4f} "
        f"wall {row['wall_s']:.0f}s{extra}"
    )


def _guess(kind: str, dataset: str, budget_s: int) -> float:
    """Seconds a run should take before any is measured. SpamAssassin's were measured (32
    shots, 40 s budget, 2 cores): automl ends a few s early, then `automl predict` of 1,000
    e-mails takes ~24 s; SetFit stops training at B, then predicts in ~37 s; embed-lr takes
    50 s, 41 of them encoding the test e-mails at 256 tokens. The other datasets' texts
    are sentences, about a sixth of the tokens: their test predictions are guessed
    proportionally shorter."""
    long = dataset == "spamassassin"
    extra = {"automl": 20.0, "setfit-default": 45.0, "embed-lr": 50.0, "tfidf-lr": 2.0}
    short = {"automl": 10.0, "setfit-default": 15.0, "embed-lr": 15.0, "tfidf-lr": 2.0}
    budgeted = kind in ("automl", "setfit-default")
    return (budget_s if budgeted else 0.0) + (extra if long else short)[kind]


def estimate(
    cells: list[Cell], done: Mapping[Key, dict[str, Any]], budget_s: int
) -> tuple[float, str]:
    """Seconds the pending cells should take, and the arithmetic as text. A run's seconds
    are the mean measured wall of earlier runs of its kind on its dataset at this budget,
    else _guess. The forced run of the track automl-auto chose costs nothing (reused)."""
    walls: dict[tuple[str, str], list[float]] = {}
    for row in done.values():
        if row["budget_s"] == budget_s and not row.get("error") and not row.get("reused_from"):
            walls.setdefault((_kind(row["system"]), row["dataset"]), []).append(row["wall_s"])
    runs: dict[str, list[float]] = {}
    for cell in cells:
        if cell.key in done:
            continue
        if cell.system in FORCED:
            auto_key = replace(cell, system="automl-auto").key
            auto = done.get(auto_key)
            if auto and not auto.get("error"):
                chosen = auto.get("chosen_track")
            elif any(c.key == auto_key for c in cells):
                chosen = "fewshot" if cell.shots < FEWSHOT_CROSSOVER else "finetune"
            else:
                chosen = None
            if chosen == FORCED[cell.system]:
                continue
        kind = _kind(cell.system)
        measured = walls.get((kind, cell.dataset))
        seconds = statistics.mean(measured) if measured else _guess(kind, cell.dataset, budget_s)
        runs.setdefault(kind, []).append(seconds)
    total = sum(sum(v) for v in runs.values())
    terms = " + ".join(f"{len(v)} {k} runs {sum(v):.0f}s" for k, v in runs.items())
    return total, f"{terms or 'nothing'} = {total:.0f}s ({total / 3600:.2f} h)"


def _kind(system: str) -> str:
    return "automl" if system in ("automl-auto", *FORCED) else system


# --------------------------------------------------------------------------- systems


def scores(y_true: list[str], y_pred: list[str]) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    labels = sorted(set(y_true))
    return {
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 4),
        "macro_f1": round(
            float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)), 4
        ),
    }


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["text", "label"])
        w.writerows(rows)


def _tail(path: Path, lines: int = 3) -> str:
    text = path.read_text(errors="replace").strip().splitlines() if path.exists() else []
    errors = [t for t in text if t.startswith("error:")]
    return " | ".join(errors[-1:] or text[-lines:])[:1000]


@dataclass
class Bench:
    """The real systems, as runners for run_cells."""

    samples: dict[str, Any]
    work: Path = WORK
    db: Path = DB
    keep_models: bool = False

    def __post_init__(self) -> None:
        self._rows: dict[str, list[tuple[str, str]]] = {}
        self._backbone: Path | None = None

    @property
    def backbone(self) -> Path:
        if self._backbone is None:
            from automl.backbones import resolve

            self._backbone = resolve("minilm-l6").resolve()
        return self._backbone

    def runners(self) -> dict[str, Runner]:
        out: dict[str, Runner] = {
            "automl-auto": lambda c, d: self.automl(c, d, "auto"),
            "fewshot-forced": lambda c, d: self.automl(c, d, "fewshot"),
            "finetune-forced": lambda c, d: self.automl(c, d, "finetune"),
        }
        for name in ("setfit-default", "embed-lr", "tfidf-lr"):
            out[name] = lambda c, d, name=name: self.baseline(c, name)
        return out

    def files(self, cell: Cell) -> tuple[Path, Path, list[str]]:
        """The cell's train and test CSVs (written from the sample ids) and test labels."""
        name = cell.dataset
        if name not in self._rows:
            self._rows[name] = dataset_rows(name, self.samples)
        rows, entry = self._rows[name], self.samples["datasets"][name]
        folder = self.work / "data" / name
        train = folder / f"{name}-{cell.shots}shot-s{cell.seed}.csv"
        test = folder / f"{name}-test.csv"
        _write_csv(
            train, [rows[i] for i in entry["train"][str(cell.shots)][str(cell.seed)]["ids"]]
        )
        test_rows = [rows[i] for i in entry["test"]["ids"]]
        _write_csv(test, test_rows)
        return train, test, [label for _, label in test_rows]

    def _dir(self, cell: Cell) -> Path:
        d = self.work / "cells" / f"b{cell.budget_s}" / cell.dataset / f"{cell.shots}-s{cell.seed}"
        d = d / cell.system
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        return d

    def automl(self, cell: Cell, done: Mapping[Key, dict[str, Any]], track: str) -> dict[str, Any]:
        if track != "auto":
            auto = done.get(replace(cell, system="automl-auto").key)
            if auto and not auto.get("error") and auto.get("chosen_track") == track:
                keep = ("accuracy", "macro_f1", "wall_s", "run_s", "predict_s", "study")
                return {
                    **{k: auto.get(k) for k in keep},
                    "chosen_track": track,
                    "route": auto.get("route"),
                    "reused_from": "automl-auto",
                }
        train, test, y_true = self.files(cell)
        out = self._dir(cell)
        cache = out / "cache"  # a cold embedding cache; the prepared backbones linked in
        cache.mkdir()
        (cache / "backbones").symlink_to(self.backbone.parent, target_is_directory=True)
        env = {**os.environ, "AUTOML_CACHE": str(cache)}
        exe = ROOT / ".venv" / "bin" / "automl"
        base = [str(exe)] if exe.exists() else [_python(), "-m", "automl.cli"]
        cmd = [
            *base,
            "run",
            str(train),
            "--label",
            "label",
            "--budget",
            f"{cell.budget_s}s",
            "--seed",
            str(cell.seed),
            "--db",
            str(self.db),
            "--out",
            str(self.work / "automl"),
        ]
        if track != "auto":
            cmd += ["--track", track]
        t0 = time.time()
        try:
            with open(out / "run.log", "w") as log:  # a backstop far past the budget
                proc = subprocess.run(
                    cmd,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    timeout=2 * cell.budget_s + 300,
                )
            run_s = time.time() - t0
            study = _find_study(self.db, train, t0)
            row: dict[str, Any] = {"run_s": round(run_s, 1)}
            if study is not None:
                row.update(
                    study=study["id"],
                    chosen_track=study["track"],
                    route=(study.get("options") or {}).get("route"),
                )
            if proc.returncode != 0 or study is None or study["status"] != "succeeded":
                row["error"] = (study or {}).get("error") or _tail(out / "run.log")
                return row
            best = Path(study["best_model_dir"])
            pred = out / "pred.csv"
            t1 = time.time()
            with open(out / "predict.log", "w") as log:
                proc = subprocess.run(
                    [*base, "predict", str(best), str(test), "--out", str(pred)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    timeout=1200,
                )
            predict_s = time.time() - t1
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        if proc.returncode != 0:
            return {**row, "error": "automl predict: " + _tail(out / "predict.log")}
        if not self.keep_models:  # ~90 MB a model; the card and automl.json stay
            for f in best.iterdir():
                if f.is_dir():
                    shutil.rmtree(f)
                elif f.name not in ("README.md", "automl.json"):
                    f.unlink()
        with open(pred, encoding="utf-8", newline="") as fh:
            y_pred = [r["prediction"] for r in csv.DictReader(fh)]
        return {
            **row,
            **scores(y_true, y_pred),
            "predict_s": round(predict_s, 1),
            "wall_s": round(run_s + predict_s, 1),
        }

    def baseline(self, cell: Cell, system: str) -> dict[str, Any]:
        train, test, y_true = self.files(cell)
        out = self._dir(cell)
        t0 = time.time()
        cmd = [
            _python(),
            str(Path(__file__).resolve()),
            "--_baseline",
            system,
            "--_train",
            str(train),
            "--_test",
            str(test),
            "--_out",
            str(out / "out.json"),
            "--_deadline",
            str(t0 + cell.budget_s),
            "--seeds",
            str(cell.seed),
            "--_backbone",
            str(self.backbone),
        ]
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        with open(out / "run.log", "w") as log:
            proc = subprocess.run(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=out,
                timeout=cell.budget_s + 1200,
            )
        wall = time.time() - t0
        if proc.returncode != 0:
            return {"wall_s": round(wall, 1), "error": _tail(out / "run.log")}
        result = json.loads((out / "out.json").read_text())
        y_pred = result.pop("predictions")
        return {**scores(y_true, y_pred), **result, "wall_s": round(wall, 1)}


def _python() -> str:
    """The project's virtualenv Python when there is one (the systems' dependencies)."""
    venv = ROOT / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def _find_study(db: Path, train: Path, since: float) -> dict[str, Any] | None:
    """The newest study of the bench store on this training file created after `since`."""
    if not db.exists():
        return None
    from automl.store import Store

    with Store(db) as store:
        for s in store.list_studies(limit=50):
            created = datetime.fromisoformat(s["created_at"]).timestamp()
            if s["dataset"] == str(train) and created >= since - 1.0:
                return s
    return None


def _baseline_main(args: argparse.Namespace) -> None:
    """A baseline in this (fresh) process: writes predictions and phase timings as JSON."""
    from automl.paths import ensure_offline

    ensure_offline()
    seed = int(args.seeds)
    train, test = read_rows(Path(args._train)), read_rows(Path(args._test))
    x_train, y_train = [t for t, _ in train], [lab for _, lab in train]
    x_test = [t for t, _ in test]
    runner = {"setfit-default": _setfit_default, "embed-lr": _embed_lr, "tfidf-lr": _tfidf_lr}
    out = runner[args._baseline](x_train, y_train, x_test, args, seed)
    Path(args._out).write_text(json.dumps(out))


def _tfidf_lr(x: list[str], y: list[str], xt: list[str], args: Any, seed: int) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    clf = LogisticRegression(C=10.0, solver="saga", max_iter=1000, random_state=seed)
    clf.fit(vec.fit_transform(x), y)
    return {"predictions": [str(p) for p in clf.predict(vec.transform(xt))]}


def _embed_lr(x: list[str], y: list[str], xt: list[str], args: Any, seed: int) -> dict:
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression

    t0 = time.time()
    model = SentenceTransformer(args._backbone)
    t1 = time.time()
    clf = LogisticRegression(max_iter=1000).fit(model.encode(x), y)
    t2 = time.time()
    pred = clf.predict(model.encode(xt))
    return {
        "predictions": [str(p) for p in pred],
        "load_s": round(t1 - t0, 1),
        "fit_s": round(t2 - t1, 1),
        "test_predict_s": round(time.time() - t2, 1),
    }


def _setfit_default(x: list[str], y: list[str], xt: list[str], args: Any, seed: int) -> dict:
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments
    from transformers import TrainerCallback

    deadline = float(args._deadline)

    class StopAtBudget(TrainerCallback):  # the one addition to the defaults (see docstring)
        def __init__(self) -> None:
            self.planned, self.done, self.stopped = 0, 0, False

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.planned = int(state.max_steps)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.done = int(state.global_step)
            if time.time() >= deadline:
                control.should_training_stop = True
                self.stopped = True

    def accuracy(y_pred: Any, y_test: Any) -> dict[str, float]:  # a callable: no hub
        return {"accuracy": float(np.mean(np.asarray(y_pred) == np.asarray(y_test)))}

    classes = sorted(set(y))
    t0 = time.time()
    model = SetFitModel.from_pretrained(args._backbone)
    t1 = time.time()
    stop = StopAtBudget()
    trainer = Trainer(
        model=model,
        args=TrainingArguments(save_strategy="no", report_to="none", seed=seed),
        train_dataset=Dataset.from_dict({"text": x, "label": [classes.index(v) for v in y]}),
        metric=accuracy,
        callbacks=[stop],
    )
    trainer.train()
    t2 = time.time()
    pred = model.predict(xt, as_numpy=True)
    return {
        "predictions": [classes[int(p)] for p in pred],
        "load_s": round(t1 - t0, 1),
        "fit_s": round(t2 - t1, 1),
        "test_predict_s": round(time.time() - t2, 1),
        "steps_planned": stop.planned,
        "steps_done": stop.done,
        "stopped_by_budget": stop.stopped,
    }


# --------------------------------------------------------------------------- report


def aggregate(rows: Iterable[dict[str, Any]]) -> dict[tuple[str, int, str], dict[str, Any]]:
    """Per (dataset, shots, system): seeds done and failed, mean and sample std (ddof 1,
    None with one seed) of accuracy and macro-F1, mean wall seconds, chosen tracks."""
    groups: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["shots"], r["system"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        ok = sorted((r for r in rs if not r.get("error")), key=lambda r: r["seed"])
        entry: dict[str, Any] = {
            "seeds": [r["seed"] for r in ok],
            "failed": {r["seed"]: r["error"] for r in rs if r.get("error")},
            "tracks": [r.get("chosen_track") for r in ok if r.get("chosen_track")],
            "macro_f1_by_seed": {r["seed"]: float(r["macro_f1"]) for r in ok},
        }
        for m in ("accuracy", "macro_f1", "wall_s"):
            values = [float(r[m]) for r in ok if r.get(m) is not None]
            entry[m] = statistics.mean(values) if values else None
            entry[f"{m}_std"] = statistics.stdev(values) if len(values) > 1 else None
        out[key] = entry
    return out


Agg = dict[tuple[str, int, str], dict[str, Any]]


def _value(agg: Agg, d: str, k: int, system: str, seeds: list[int]) -> float | None:
    """Mean macro-F1 over the expected seeds for the checks, or None (missing) unless every
    seed has a row. A failed run counts as 0: it produced no model (e.g. a track that
    cannot train on 8 examples). The tables show it as failed; --retry-failed reruns it."""
    e = agg.get((d, k, system))
    if e is None or any(x not in e["macro_f1_by_seed"] and x not in e["failed"] for x in seeds):
        return None
    return statistics.mean(e["macro_f1_by_seed"].get(x, 0.0) for x in seeds)


def shot_means(
    agg: Agg, datasets: list[str], shots: list[int], systems: list[str], seeds: list[int]
) -> dict[tuple[int, str], float | None]:
    """Mean over datasets of macro-F1 per (shots, system); None unless every dataset is done."""
    out: dict[tuple[int, str], float | None] = {}
    for k in shots:
        for s in systems:
            values = [_value(agg, d, k, s, seeds) for d in datasets]
            out[(k, s)] = None if None in values else statistics.mean(values)  # type: ignore
    return out


def acceptance(
    agg: Agg, datasets: list[str], shots: list[int], seeds: list[int]
) -> list[dict[str, Any]]:
    """The issue's checks on macro-F1, from measured cells only (failed runs count as 0,
    see _value). status: pass, fail, or incomplete, with the missing and failed runs named."""

    def check(
        name: str, ok: bool | None, value: Any, ks: list[int], systems: list[str], final: bool
    ) -> dict[str, Any]:
        """final: a fail on the cells measured so far stands whatever the missing ones give."""
        missing = _missing(agg, datasets, ks, systems, seeds)
        if ok is None or (missing and not (ok is False and final)):
            status = "incomplete"
        else:
            status = "pass" if ok else "fail"
        return {
            "check": name,
            "status": status,
            "value": value,
            "missing": missing,
            "failed_counted_as_0": _failed(agg, datasets, ks, systems, seeds),
        }

    checks = []
    pair = ["automl-auto", "setfit-default"]
    means = shot_means(agg, datasets, shots, pair, seeds)
    for k in shots:
        a, s = means[(k, "automl-auto")], means[(k, "setfit-default")]
        done = a is not None and s is not None
        name = f"automl-auto >= setfit-default, mean over datasets, {k} shots"
        checks.append(
            check(
                name,
                a >= s if done else None,
                f"{a:.4f} vs {s:.4f}" if done else None,
                [k],
                pair,
                final=False,
            )
        )
    if 8 in shots:
        values = {
            d: [_value(agg, d, 8, s, seeds) for s in ("automl-auto", "tfidf-lr")] for d in datasets
        }
        measured = {d: v for d, v in values.items() if None not in v}
        lost = [d for d, (a, t) in measured.items() if a <= t]
        shown = ", ".join(f"{d} {a:.3f} vs {t:.3f}" for d, (a, t) in measured.items())
        checks.append(
            check(
                "automl-auto > tfidf-lr on every dataset at 8 shots",
                False if lost else (True if measured else None),
                shown or None,
                [8],
                ["automl-auto", "tfidf-lr"],
                final=True,  # a dataset where it lost stays lost
            )
        )
    near, cells = 0, 0
    systems = ["automl-auto", "fewshot-forced", "finetune-forced"]
    for d in datasets:
        for k in shots:
            v = [_value(agg, d, k, s, seeds) for s in systems]
            if None not in v:
                cells += 1
                near += v[0] >= max(v[1], v[2]) - WITHIN  # type: ignore[type-var]
    share = near / cells if cells else None
    name = (
        f"auto choice within {WITHIN:.2f} macro-F1 of the better forced track in "
        f">= {AGREE_SHARE:.0%} of (dataset, shots) cells"
    )
    value = f"{near} of {cells} cells" + (f" ({share:.0%})" if share is not None else "")
    checks.append(
        check(name, None if share is None else share >= AGREE_SHARE, value, shots, systems, False)
    )
    return checks


def _missing(
    agg: Agg, datasets: list[str], shots: list[int], systems: list[str], seeds: list[int]
) -> list[str]:
    """Cells without a row (done or failed) for some expected seed, and failed ones."""
    out = []
    for d in datasets:
        for k in shots:
            for s in systems:
                e = agg.get((d, k, s))
                have = set(e["seeds"]) | set(e["failed"]) if e else set()
                lack = [x for x in seeds if x not in have]
                if lack:
                    out.append(f"{d}/{k}/{s} seed {','.join(map(str, lack))}")
    return out


def _failed(
    agg: Agg, datasets: list[str], shots: list[int], systems: list[str], seeds: list[int]
) -> list[str]:
    return [
        f"{d}/{k}/{s} seed {x}"
        for d in datasets
        for k in shots
        for s in systems
        for x in seeds
        if x in (agg.get((d, k, s)) or {"failed": {}})["failed"]
    ]


def crossover(
    agg: Agg,
    datasets: list[str],
    shots: list[int],
    seeds: list[int],
    medians: Mapping[tuple[str, int], float],
) -> dict[str, Any]:
    """Per dataset, the smallest shot count where finetune-forced >= fewshot-forced; and a
    FEWSHOT_CROSSOVER from the grid: routing.py sends a training set to few-shot when its
    median examples per class < the crossover, so on the measured cells only the grid
    thresholds (each shot count, and one above the largest) behave differently. The one
    whose routing loses the least macro-F1 against the better forced track, summed over the
    complete cells, is suggested (ties: the current value if tied, else the smaller)."""
    per: dict[str, str] = {}
    for d in datasets:
        per[d] = f"none up to {max(shots)}"
        for k in sorted(shots):
            fs, ft = (_value(agg, d, k, s, seeds) for s in ("fewshot-forced", "finetune-forced"))
            if fs is None or ft is None:
                per[d] = f"incomplete (missing {k} shots)"
                break
            if ft >= fs:
                per[d] = str(k)
                break
    cells = []
    for d in datasets:
        for k in shots:
            fs, ft = (_value(agg, d, k, s, seeds) for s in ("fewshot-forced", "finetune-forced"))
            if fs is not None and ft is not None:
                cells.append((medians[(d, k)], fs, ft))
    candidates = sorted({*shots, max(shots) + 1})
    loss = {
        c: round(sum(max(fs, ft) - (fs if m < c else ft) for m, fs, ft in cells), 4)
        for c in candidates
    }
    best = min(loss.values()) if cells else None
    tied = [c for c in candidates if loss[c] == best]
    suggested = (FEWSHOT_CROSSOVER if FEWSHOT_CROSSOVER in tied else tied[0]) if cells else None
    return {
        "per_dataset": per,
        "loss_by_threshold": loss,
        "cells": len(cells),
        "expected_cells": len(datasets) * len(shots),
        "suggested": suggested,
        "current": FEWSHOT_CROSSOVER,
    }


def cache_measurement(
    studies: Iterable[str], trials: Iterable[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Embedding-cache speed-up from the bench store. In each few-shot study, head-only
    trials (method logreg/svm/logreg_tfidf) with the same backbone and max_length share one
    embedding matrix: the first such trial computes it (a cold cache), later ones read it;
    the later trials compared are logreg/svm ones (a logreg_tfidf trial also fits TF-IDF
    models, which no cache serves). Per
    backbone: the median over studies of the first trial's seconds vs the median of the
    later trials that ran as many folds as the first (equal work besides the embedding).
    Trial seconds also hold a fresh Ray worker's start-up and imports, so the same ratio is
    given for `fold1_s` when trials carry it (time from fit's start to the first fold's
    report: the embeddings, from the cache or computed, and one head)."""
    wanted = set(studies)
    groups: dict[tuple[str, str, Any], list[dict[str, Any]]] = {}
    for t in trials:
        p = t.get("params") or {}
        if (
            t["study_id"] in wanted
            and p.get("method") in ("logreg", "svm", "logreg_tfidf")
            and t.get("status") != "failed"
            and t.get("seconds")
        ):
            groups.setdefault(
                (t["study_id"], str(p.get("backbone")), p.get("max_length")), []
            ).append(t)
    firsts: dict[str, list[float]] = {}
    laters: dict[str, list[float]] = {}
    fit_firsts: dict[str, list[float]] = {}
    fit_laters: dict[str, list[float]] = {}
    fold_firsts: dict[str, list[float]] = {}
    fold_laters: dict[str, list[float]] = {}
    for (_, backbone, _), ts in groups.items():
        ts.sort(key=lambda t: t["number"])
        firsts.setdefault(backbone, []).append(ts[0]["seconds"])
        # later trials that only read the cache (logreg_tfidf also fits TF-IDF models)
        readers = [t for t in ts[1:] if (t.get("params") or {}).get("method") in ("logreg", "svm")]
        alike = [t for t in readers if t.get("epochs_done") == ts[0].get("epochs_done")]
        laters.setdefault(backbone, []).extend(t["seconds"] for t in alike)
        if ts[0].get("fit_s") is not None:
            fit_firsts.setdefault(backbone, []).append(ts[0]["fit_s"])
            fits = [t["fit_s"] for t in alike if t.get("fit_s") is not None]
            fit_laters.setdefault(backbone, []).extend(fits)
        if ts[0].get("fold1_s") is not None:
            fold_firsts.setdefault(backbone, []).append(ts[0]["fold1_s"])
            later_folds = [t["fold1_s"] for t in readers if t.get("fold1_s") is not None]
            fold_laters.setdefault(backbone, []).extend(later_folds)

    def ratio(first: list[float], later: list[float]) -> tuple[Any, Any, Any]:
        if not first:
            return None, None, None
        a = statistics.median(first)
        b = statistics.median(later) if later else None
        return round(a, 3), None if b is None else round(b, 3), round(a / b, 1) if b else None

    out = []
    for backbone in sorted(firsts):
        first, later, speedup = ratio(firsts[backbone], laters[backbone])
        f_first, f_later, f_speedup = ratio(
            fold_firsts.get(backbone, []), fold_laters.get(backbone, [])
        )
        fit_first, fit_later, fit_speedup = ratio(
            fit_firsts.get(backbone, []), fit_laters.get(backbone, [])
        )
        out.append(
            {
                "backbone": backbone,
                "groups": len(firsts[backbone]),
                "first_s": first,
                "later_trials": len(laters[backbone]),
                "later_median_s": later,
                "speedup": speedup,
                "first_fold1_s": f_first,
                "later_fold1_median_s": f_later,
                "fold1_speedup": f_speedup,
                "fit_first_s": fit_first,
                "fit_later_median_s": fit_later,
                "fit_speedup": fit_speedup,
            }
        )
    return out


def _fmt(mean: float | None, std: float | None, n: int, want: int) -> str:
    if mean is None:
        return "missing"
    text = f"{mean:.3f} ± {std:.3f}" if std is not None else f"{mean:.3f} ± –"
    return text if n == want else f"{text} ({n}/{want} seeds)"


def report(
    rows: list[dict[str, Any]],
    samples: dict[str, Any],
    datasets: list[str],
    shots: list[int],
    seeds: list[int],
    budget_s: int,
    cache: list[dict[str, Any]],
) -> tuple[dict[str, Any], list[dict[str, Any]], str]:
    """(the JSON document, the CSV rows, the markdown) of the benchmark so far."""
    rows = [r for r in rows if r["budget_s"] == budget_s and r["seed"] in seeds]
    agg = aggregate(rows)
    systems = list(SYSTEMS)
    table = []
    for d in datasets:
        for k in shots:
            for s in systems:
                e = agg.get((d, k, s)) or {"seeds": [], "failed": {}, "tracks": []}
                table.append(
                    {
                        "dataset": d,
                        "shots": k,
                        "system": s,
                        "seeds_done": len(e["seeds"]),
                        "seeds_failed": len(e["failed"]),
                        "errors": " | ".join(str(v)[:300] for v in e["failed"].values()),
                        **{
                            m: e.get(m)
                            for m in (
                                "accuracy",
                                "accuracy_std",
                                "macro_f1",
                                "macro_f1_std",
                                "wall_s",
                            )
                        },
                        "chosen_tracks": ",".join(e["tracks"]),
                        "status": "missing"
                        if not e["seeds"] and not e["failed"]
                        else ("failed" if not e["seeds"] else "done"),
                    }
                )
    medians = {
        (d, k): statistics.median(train_median(samples, d, k, x) for x in seeds)
        for d in datasets
        for k in shots
    }
    means = shot_means(agg, datasets, shots, systems, seeds)
    checks = acceptance(agg, datasets, shots, seeds)
    cross = crossover(agg, datasets, shots, seeds, medians)
    # The check compares fit times (all folds, the same work besides the embeddings): a
    # trial's wall seconds also hold Tune's scheduling and the worker's per-trial set-up
    # (about 0.05-0.1 s), the same with or without the cache; both are in the table.
    measured = [c for c in cache if c.get("fit_speedup") is not None]
    unmeasured = [
        f"{c['backbone']}: no later head-only trial with as many folds"
        for c in cache
        if c.get("fit_speedup") is None
    ]
    if any(c["fit_speedup"] < CACHE_SPEEDUP for c in measured):
        speed = "fail"
    else:
        speed = "pass" if measured and not unmeasured else "incomplete"
    checks.append(
        {
            "check": f"head-only trials after the first >= {CACHE_SPEEDUP:.0f}x faster (same "
            "backbone; fit time over all folds)",
            "status": speed,
            "value": "; ".join(
                f"{c['backbone']} {c['fit_speedup']}x (trial wall {c['speedup']}x)"
                for c in measured
            )
            or None,
            "missing": unmeasured or ([] if cache else ["no few-shot head-only trial yet"]),
        }
    )
    mine = [r for r in rows if r["dataset"] in datasets and r["shots"] in shots]
    done = sum(1 for r in mine if not r.get("error"))
    failed = sum(1 for r in mine if r.get("error"))
    expected = len(datasets) * len(shots) * len(seeds) * len(systems)
    doc = {
        "budget_s": budget_s,
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
        "cells_expected": expected,
        "cells_done": done,
        "cells_failed": failed,
        "table": table,
        "mean_over_datasets": [
            {"shots": k, "system": s, "macro_f1": means[(k, s)]} for k in shots for s in systems
        ],
        "checks": checks,
        "crossover": cross,
        "embedding_cache": cache,
    }
    return doc, table, _markdown(doc, agg, datasets, shots, seeds, rows)


def _markdown(
    doc: dict[str, Any],
    agg: Agg,
    datasets: list[str],
    shots: list[int],
    seeds: list[int],
    rows: list[dict[str, Any]],
) -> str:
    systems = list(SYSTEMS)
    want = len(seeds)
    lines = [
        f"# Few-shot benchmark ({doc['budget_s']} s per system and cell, {doc['cpus']} CPUs, "
        f"{doc['date']})",
        "",
        f"Cells done: {doc['cells_done']} of {doc['cells_expected']} "
        f"({doc['cells_failed']} failed); missing cells are shown as missing, never filled "
        f"in. Mean ± sample std over seeds {', '.join(map(str, seeds))}; test split up to "
        f"{TEST_SIZE} rows per dataset, the same for every system.",
    ]
    for metric, title in (
        ("macro_f1", "Test macro-F1"),
        ("accuracy", "Test accuracy"),
        ("wall_s", "Wall seconds per cell (mean)"),
    ):
        lines += [
            "",
            f"## {title}",
            "",
            "| dataset | shots | " + " | ".join(systems) + " |",
            "|---|---|" + "---|" * len(systems),
        ]
        for d in datasets:
            for k in shots:
                cells = []
                for s in systems:
                    e = agg.get((d, k, s))
                    if e is None or (not e["seeds"] and not e["failed"]):
                        cells.append("missing")
                    elif not e["seeds"]:
                        cells.append("failed")
                    elif metric == "wall_s":
                        cells.append(f"{e['wall_s']:.0f}")
                    else:
                        cells.append(_fmt(e[metric], e[f"{metric}_std"], len(e["seeds"]), want))
                    if metric == "macro_f1" and s == "automl-auto" and e and e["tracks"]:
                        cells[-1] += " [" + ",".join(t[:2] for t in e["tracks"]) + "]"
                lines.append(f"| {d} | {k} | " + " | ".join(cells) + " |")
        if metric == "macro_f1":
            means = {(m["shots"], m["system"]): m["macro_f1"] for m in doc["mean_over_datasets"]}
            for k in shots:
                vals = [means[(k, s)] for s in systems]
                lines.append(
                    f"| **mean over datasets** | {k} | "
                    + " | ".join("incomplete" if v is None else f"**{v:.3f}**" for v in vals)
                    + " |"
                )
            lines += [
                "",
                "[fe] / [fi]: the track automl-auto chose, per seed. A forced row of "
                "that track reuses the auto run.",
            ]
    lines += [
        "",
        "## Acceptance checks (macro-F1)",
        "",
        "| check | status | value |",
        "|---|---|---|",
    ]
    for c in doc["checks"]:
        notes = [c["value"] or ""]
        for key, label in (("missing", "missing"), ("failed_counted_as_0", "failed, as 0")):
            items = c.get(key) or []
            if items:
                more = " …" if len(items) > 4 else ""
                notes.append(f"({label} {len(items)}: {'; '.join(items[:4])}{more})")
        lines.append(f"| {c['check']} | {c['status']} | {' '.join(n for n in notes if n)} |")
    lines += [
        "",
        "A failed run counts as macro-F1 0 in the checks and the crossover (it produced no "
        "model); the tables show it as failed, and --retry-failed reruns it.",
    ]
    cross = doc["crossover"]
    lines += [
        "",
        "## Crossover between the tracks",
        "",
        "Smallest shot count at which finetune-forced ≥ fewshot-forced (macro-F1):",
        "",
    ]
    lines += [f"- {d}: {v}" for d, v in cross["per_dataset"].items()]
    loss = ", ".join(f"{c}: {v:.3f}" for c, v in cross["loss_by_threshold"].items())
    grid = sorted(shots)
    ranges = ", ".join(f"({a}, {b}] like {b}" for a, b in zip(grid, grid[1:], strict=False))
    ranges = f"every value in {ranges} routes alike; " if ranges else ""
    suggested = cross["suggested"] if cross["suggested"] is not None else "not measured yet"
    lines += [
        "",
        f"Macro-F1 lost against the better forced track, summed over the "
        f"{cross['cells']} of {cross['expected_cells']} complete (dataset, shots) cells, "
        f"if routing.py used FEWSHOT_CROSSOVER = {loss}. Few-shot is chosen when the "
        f"median examples per class < the crossover, so on this grid {ranges}{grid[0]} means "
        f"always fine-tune, {grid[-1] + 1} always few-shot. Ties keep the current value, else "
        "the smaller.",
        "",
        f"Suggested FEWSHOT_CROSSOVER: {suggested} (now {cross['current']})"
        + (
            ""
            if cross["cells"] == cross["expected_cells"]
            else " — from incomplete data, not yet a measurement"
        )
        + ".",
    ]
    lines += ["", "## Embedding cache (few-shot studies of this benchmark)", ""]
    if doc["embedding_cache"]:
        lines += [
            "| backbone | studies × max_length | first head-only trial s (median) | "
            "later trials | later median s | speed-up | fit s: first trial | later median | "
            "speed-up (the check) | first fold s: first trial | later median | speed-up |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for c in doc["embedding_cache"]:
            cols = [c["backbone"], c["groups"], c["first_s"], c["later_trials"]]
            cols += [c["later_median_s"], c["speedup"]]
            cols += [c.get("fit_first_s"), c.get("fit_later_median_s"), c.get("fit_speedup")]
            cols += [c["first_fold1_s"], c["later_fold1_median_s"], c["fold1_speedup"]]
            shown = ["–" if v is None else str(v) for v in cols]
            for i in (5, 8, 11):
                shown[i] += "x" if cols[i] else ""
            lines.append("| " + " | ".join(shown) + " |")
        lines += [
            "",
            "Each automl run starts with a cold embedding cache, so the first head-only "
            "trial with a backbone and max_length computes the embeddings and later ones read "
            "them. Trials are compared with later ones that ran as many folds. Fit seconds "
            "(the check: fit's start to its last fold's report, the same work besides the "
            "embeddings) leave out what trial seconds also hold: Tune's scheduling and a Ray "
            "worker's per-trial set-up (and, for the first, its start-up and imports), the "
            "same with or without the cache. First-fold seconds: embeddings plus one head.",
        ]
    else:
        lines.append("No few-shot study with head-only trials yet.")
    sf = [
        r
        for r in rows
        if r["system"] == "setfit-default"
        and r["budget_s"] == doc["budget_s"]
        and not r.get("error")
    ]
    if sf:
        lines += [
            "",
            "## SetFit defaults within the budget",
            "",
            "| dataset | shots | seed | body steps planned | done | stopped by budget | fit s |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in sorted(sf, key=lambda r: (r["dataset"], r["shots"], r["seed"])):
            lines.append(
                f"| {r['dataset']} | {r['shots']} | {r['seed']} | "
                f"{r.get('steps_planned')} | {r.get('steps_done')} | "
                f"{'yes' if r.get('stopped_by_budget') else 'no'} | {r.get('fit_s')} |"
            )
    lines += [
        "",
        "Plot: fewshot.png (macro-F1 vs shots per dataset, one line per system, bars ± std).",
    ]
    return "\n".join(lines) + "\n"


def _store_trials(db: Path) -> list[dict[str, Any]]:
    if not db.exists():
        return []
    from automl.store import Store

    with Store(db) as store:
        ids = [s["id"] for s in store.list_studies(limit=100000) if s["track"] == "fewshot"]
        trials = [t for sid in ids for t in store.trials(sid)]
        epochs = [e for sid in ids for e in store.epochs(study_id=sid)]
    fold1 = {e["trial_id"]: e["seconds"] for e in epochs if e["epoch"] == 1}
    fit: dict[str, float] = {}  # fit's start to its last fold's report
    for e in epochs:  # in epoch order per trial
        fit[e["trial_id"]] = e["seconds"]
    return [{**t, "fold1_s": fold1.get(t["id"]), "fit_s": fit.get(t["id"])} for t in trials]


def write_report(
    rows: list[dict[str, Any]],
    samples: dict[str, Any],
    datasets: list[str],
    shots: list[int],
    seeds: list[int],
    budget_s: int,
    out: Path = RESULTS,
    db: Path = DB,
) -> str:
    """Write fewshot.{json,csv,md,png} to `out`; returns the markdown."""
    rows = [r for r in rows if r["budget_s"] == budget_s and r["seed"] in seeds]
    studies = {r["study"] for r in rows if r.get("study")}
    cache = cache_measurement(studies, _store_trials(db))
    doc, table, md = report(rows, samples, datasets, shots, seeds, budget_s, cache)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fewshot.json").write_text(json.dumps(doc, indent=2) + "\n")
    with open(out / "fewshot.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(table[0]))
        w.writeheader()
        w.writerows(table)
    (out / "fewshot.md").write_text(md)
    plot(aggregate(rows), datasets, shots, out / "fewshot.png", budget_s)
    return md


# --------------------------------------------------------------------------- plot (PNG)
# matplotlib is not a dependency: a few lines of numpy, zlib and a 5x7 font draw the plot.

_GLYPHS = {
    item[0]: item[1:]
    for item in (  # a character, then 7 rows of 5 bits in hex
        "A0E11111F111111 B1E11111E11111E C0E11101010110E D1E11111111111E E1F10101E10101F "
        "F1F10101E101010 G0E11101711110F H1111111F111111 I0E04040404040E J0702020202120C "
        "K11121418141211 L1010101010101F M111B1515111111 N11111915131111 O0E11111111110E "
        "P1E11111E101010 Q0E11111115120D R1E11111E141211 S0F10100E01011E T1F040404040404 "
        "U1111111111110E V11111111110A04 W1111111515150A X11110A040A1111 Y1111110A040404 "
        "Z1F01020408101F 00E11131519110E 1040C040404040E 20E11010204081F 31F02040201110E "
        "402060A121F0202 51F101E0101110E 60608101E11110E 71F010204080808 80E11110E11110E "
        "90E11110F01020C -0000001F000000 .00000000000C0C +0004041F040400 (02040808080402 "
        ")08040202020408 /01020204080810 %18190204081303"
    ).split()
}
_COLORS = {
    "automl-auto": (31, 119, 180),
    "fewshot-forced": (44, 160, 44),
    "finetune-forced": (214, 39, 40),
    "setfit-default": (255, 127, 14),
    "embed-lr": (148, 103, 189),
    "tfidf-lr": (127, 127, 127),
}


class _Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.img = np.full((height, width, 3), 255, dtype=np.uint8)

    def dot(self, x: np.ndarray, y: np.ndarray, color: tuple[int, ...], r: int = 0) -> None:
        h, w, _ = self.img.shape
        for dx in range(-r, r + 1):
            for dy in range(-r, r + 1):
                xs, ys = np.round(x).astype(int) + dx, np.round(y).astype(int) + dy
                ok = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
                self.img[ys[ok], xs[ok]] = color

    def line(
        self,
        x0: float,
        y0: float,
        x1: float,
        y1: float,
        color: tuple[int, ...],
        r: int = 0,
        dash: int = 0,
    ) -> None:
        n = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
        t = np.linspace(0.0, 1.0, n)
        keep = (np.arange(n) // dash) % 2 == 0 if dash else np.ones(n, bool)
        self.dot((x0 + (x1 - x0) * t)[keep], (y0 + (y1 - y0) * t)[keep], color, r)

    def text(
        self,
        x: int,
        y: int,
        s: str,
        scale: int = 1,
        color: tuple[int, ...] = (0, 0, 0),
        anchor: str = "left",
    ) -> None:
        s = s.upper()
        if anchor == "center":
            x -= len(s) * 6 * scale // 2
        elif anchor == "right":
            x -= len(s) * 6 * scale
        for i, ch in enumerate(s):
            code = _GLYPHS.get(ch)
            if code is None:
                continue
            for row in range(7):
                bits = int(code[2 * row : 2 * row + 2], 16)
                for col in range(5):
                    if bits & (16 >> col):
                        x0, y0 = x + (i * 6 + col) * scale, y + row * scale
                        self.img[y0 : y0 + scale, x0 : x0 + scale] = color

    def png(self) -> bytes:
        h, w, _ = self.img.shape
        raw = b"".join(b"\x00" + self.img[y].tobytes() for y in range(h))

        def chunk(tag: bytes, data: bytes) -> bytes:
            crc = zlib.crc32(tag + data) & 0xFFFFFFFF
            return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

        head = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", head)
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b"")
        )


def plot(agg: Agg, datasets: list[str], shots: list[int], path: Path, budget_s: int) -> None:
    """Macro-F1 vs shots (log scale), one panel per dataset, one line per system, ± std."""
    pw, ph, cols = 440, 300, 2
    rows_n = (len(datasets) + cols - 1) // cols
    cv = _Canvas(pw * cols + 20, 50 + ph * rows_n + 30 * ((len(SYSTEMS) + 2) // 3) + 10)
    cv.text(
        cv.img.shape[1] // 2,
        14,
        f"test macro-F1 vs examples per class ({budget_s} s budget)",
        2,
        anchor="center",
    )
    xs = np.log2(np.asarray(sorted(shots), float))
    for n, d in enumerate(datasets):
        ox, oy = 10 + (n % cols) * pw, 50 + (n // cols) * ph
        left, right, top, bottom = ox + 50, ox + pw - 20, oy + 24, oy + ph - 34
        values = [
            e["macro_f1"] - (e["macro_f1_std"] or 0)
            for (dd, _, _), e in agg.items()
            if dd == d and e["macro_f1"] is not None
        ]
        lo = max(0.0, min(0.9, np.floor(min(values, default=0.0) * 10) / 10))
        span = xs.max() - xs.min()

        def px(
            v: float, xs: np.ndarray = xs, span: float = span, left: int = left, right: int = right
        ) -> float:
            if not span:
                return (left + right) / 2
            return left + 15 + (v - xs.min()) / span * (right - left - 30)

        def py(v: float, lo: float = lo, top: int = top, bottom: int = bottom) -> float:
            return bottom - (v - lo) / (1.0 - lo) * (bottom - top)

        cv.text((left + right) // 2, oy + 4, d, 2, anchor="center")
        for g in np.arange(lo, 1.0001, 0.1):
            cv.line(left, py(g), right, py(g), (225, 225, 225), dash=4)
            cv.text(left - 6, int(py(g)) - 3, f"{g:.1f}", anchor="right")
        cv.line(left, top, left, bottom, (0, 0, 0))
        cv.line(left, bottom, right, bottom, (0, 0, 0))
        for k, x in zip(sorted(shots), xs, strict=True):
            cv.line(px(x), bottom, px(x), bottom + 4, (0, 0, 0))
            cv.text(int(px(x)), bottom + 8, str(k), anchor="center")
        cv.text((left + right) // 2, bottom + 20, "shots", anchor="center")
        for s in [*SYSTEMS[1:], SYSTEMS[0]]:  # automl-auto on top
            pts = [
                (px(x), agg[(d, k, s)])
                for k, x in zip(sorted(shots), xs, strict=True)
                if agg.get((d, k, s)) and agg[(d, k, s)]["macro_f1"] is not None
            ]
            color, r = _COLORS[s], 2 if s == "automl-auto" else 1
            for (xa, ea), (xb, eb) in zip(pts, pts[1:], strict=False):
                cv.line(xa, py(ea["macro_f1"]), xb, py(eb["macro_f1"]), color, r)
            for x, e in pts:
                sd = e["macro_f1_std"] or 0.0
                cv.line(x, py(e["macro_f1"] - sd), x, py(e["macro_f1"] + sd), color)
                cv.dot(np.array([x]), np.array([py(e["macro_f1"])]), color, 3)
    ly = 50 + ph * rows_n + 6
    for i, s in enumerate(SYSTEMS):
        lx, yy = 30 + (i % 3) * 300, ly + (i // 3) * 30
        cv.line(lx, yy + 7, lx + 30, yy + 7, _COLORS[s], 2)
        cv.text(lx + 40, yy, s, 2)
    path.write_bytes(cv.png())


# --------------------------------------------------------------------------- main


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--budget",
        type=int,
        default=DEFAULT_BUDGET,
        help=f"seconds per system and cell (default {DEFAULT_BUDGET})",
    )
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--shots", default=",".join(map(str, SHOTS)))
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--max-cells", type=int, default=None, help="stop after N new cells")
    ap.add_argument("--retry-failed", action="store_true", help="rerun cells that failed")
    ap.add_argument("--keep-models", action="store_true", help="keep the automl model files")
    ap.add_argument("--report", action="store_true", help="only write the report")
    ap.add_argument("--make-samples", action="store_true", help=f"build {SAMPLES.name}")
    ap.add_argument("--force", action="store_true", help="let --make-samples change the file")
    ap.add_argument(
        "--results-dir",
        type=Path,
        default=RESULTS,
        help="where fewshot.jsonl and the report go (default benchmarks/results)",
    )
    for hidden in ("--_baseline", "--_train", "--_test", "--_out", "--_deadline", "--_backbone"):
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._baseline:
        _baseline_main(args)
        return
    datasets = [d for d in args.datasets.split(",") if d]
    shots, seeds = _ints(args.shots), _ints(args.seeds)
    systems = [s for s in args.systems.split(",") if s]
    unknown = [s for s in systems if s not in SYSTEMS] + [d for d in datasets if d not in DATASETS]
    if unknown:
        raise SystemExit(
            f"unknown system or dataset {unknown}: choose from {SYSTEMS} and {DATASETS}"
        )
    if args.make_samples:
        doc = make_samples(DATASETS, SAMPLES, args.force)
        for name, e in doc["datasets"].items():
            short = {
                k: v["short"] for k, s in e["train"].items() for v in s.values() if v["short"]
            }
            print(
                f"{name}: {e['rows']} rows, {e['eligible']} eligible, test {e['test']['counts']}"
                + (f", short classes {short}" if short else "")
            )
        print(f"wrote {SAMPLES}")
        return
    samples = load_samples()
    results = args.results_dir / RESULTS_JSONL.name
    if not args.report:
        cells = plan_cells(datasets, shots, seeds, systems, args.budget)
        done = read_results(results)
        pending = [
            c
            for c in cells
            if c.key not in done or (args.retry_failed and done[c.key].get("error"))
        ]
        kept = len(cells) - len(pending)
        earlier = {k: v for k, v in done.items() if k not in {c.key for c in pending}}
        _, text = estimate(pending, earlier, args.budget)
        print(
            f"{kept} of {len(cells)} cells kept from earlier runs; {len(pending)} left, "
            f"estimated {text}",
            flush=True,
        )
        if args.max_cells is not None and args.max_cells < len(pending):
            _, text = estimate(pending[: args.max_cells], earlier, args.budget)
            print(f"this sitting: {args.max_cells} cells (--max-cells), estimated {text}")
        RUNS.mkdir(parents=True, exist_ok=True)
        run_cells(
            cells,
            Bench(samples, keep_models=args.keep_models).runners(),
            results,
            max_cells=args.max_cells,
            retry_failed=args.retry_failed,
            log=lambda s: print(s, flush=True),
        )
    rows = list(read_results(results).values())
    budgets = sorted({r["budget_s"] for r in rows})
    if rows and args.budget not in budgets:
        print(f"no results at --budget {args.budget}; results exist for budgets {budgets}")
    print(write_report(rows, samples, datasets, shots, seeds, args.budget, args.results_dir))


if __name__ == "__main__":
    main()
