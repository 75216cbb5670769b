"""Benchmark suites: YAML files in benchmarks/suites/ read into a frozen `Suite`.

```yaml
description: the four datasets, full training data
metric: macro_f1            # or accuracy
budgets: [1m, 5m, 15m]      # every system gets the same wall budget per cell
seeds: [0]
shots: [8, 16]              # optional: k training examples per class (few-shot)
systems: [tfidf-lr, embed-lr, automl]
baselines: [tfidf-lr, embed-lr]   # optional: whose best scales to 1 (default: all but automl)
datasets:
  - mr                      # a name from automl.datasets
  - {name: fortunes8, max_train: 400, max_test: 300, label: fortunes8-small}
```

Unknown keys and bad values are errors naming the file and the key. Only
`yaml.safe_load` reads these files.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import yaml

from automl import paths
from automl.bench.scoring import MAJORITY, METRICS
from automl.bench.splits import Sample
from automl.config import Budget
from automl.errors import AutoMLError, ConfigError

logger = logging.getLogger(__name__)

__all__ = ["SUITES_DIR", "DatasetEntry", "Suite", "list_suites", "load_suite"]

SUITES_DIR = paths.REPO_ROOT / "benchmarks" / "suites"
_KEYS = {"description", "metric", "budgets", "seeds", "shots", "systems", "baselines", "datasets"}
_REQUIRED = ("budgets", "seeds", "systems", "datasets")
_DATASET_KEYS = {"name", "label", "max_train", "max_test"}
T = TypeVar("T")


@dataclass(frozen=True)
class DatasetEntry:
    """A dataset of a suite; `label` names it in results (default: its name)."""

    name: str
    label: str
    max_train: int | None = None
    max_test: int | None = None


@dataclass(frozen=True)
class Suite:
    """A validated suite. Budgets are seconds; `shots` empty means full training data."""

    name: str
    path: str
    description: str
    metric: str
    budgets: tuple[float, ...]
    seeds: tuple[int, ...]
    systems: tuple[str, ...]
    baselines: tuple[str, ...]
    datasets: tuple[DatasetEntry, ...]
    shots: tuple[int, ...] = ()

    def samples(self, entry: DatasetEntry) -> list[Sample]:
        """The training samples of a dataset: one per shot count, or the full data."""
        if self.shots:
            return [Sample(shots=k, max_test=entry.max_test) for k in self.shots]
        return [Sample(max_train=entry.max_train, max_test=entry.max_test)]

    def variants(self) -> list[tuple[str, DatasetEntry, Sample]]:
        """(result label, dataset, sample) for every dataset × sample, e.g. "mr-8shot"."""
        return [
            (f"{e.label}-{s.shots}shot" if s.shots is not None else e.label, e, s)
            for e in self.datasets
            for s in self.samples(e)
        ]

    def with_budget(self, seconds: float) -> Suite:
        """This suite with one budget instead of its own (`bench run --budget`)."""
        return replace(self, budgets=(float(seconds),))

    def config(self) -> dict[str, Any]:
        """The suite as plain JSON-able data (stored with each run)."""
        return json.loads(json.dumps(asdict(self)))  # type: ignore[no-any-return]


def list_suites(folder: Path = SUITES_DIR) -> list[str]:
    """Names of the suites in `folder` (file stems of *.yaml)."""
    return sorted(p.stem for p in Path(folder).glob("*.yaml"))


def load_suite(name_or_path: str | Path, folder: Path = SUITES_DIR) -> Suite:
    """A suite by name (benchmarks/suites/NAME.yaml) or by path, validated."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = Path(folder) / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(list_suites(folder)) or "none"
        raise ConfigError(
            f"no suite {str(name_or_path)!r}: {path} does not exist (suites in {folder}: "
            f"{known}); pass a name or a path to a YAML file"
        )
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the suite: {exc}") from exc
    return _parse(doc, path)


def _parse(doc: Any, path: Path) -> Suite:
    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{path}: key {key!r}: {problem}")

    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping of suite keys, found {type(doc).__name__}")
    unknown = sorted(set(map(str, doc)) - _KEYS)
    if unknown:
        raise fail(unknown[0], f"unknown key; allowed keys are {', '.join(sorted(_KEYS))}")
    for key in _REQUIRED:
        if not doc.get(key):
            raise fail(
                key, "missing or empty; every suite names its budgets, seeds, systems and datasets"
            )
    metric = doc.get("metric", "macro_f1")
    if metric not in METRICS:
        raise fail("metric", f"{metric!r} is not one of {', '.join(METRICS)}")

    def items(key: str, convert: Callable[[Any], T], what: str) -> tuple[T, ...]:
        values = doc.get(key)
        if not isinstance(values, list):
            raise fail(key, f"expected a list of {what}, found {values!r}")
        out = []
        for i, v in enumerate(values):
            try:
                out.append(convert(v))
            except (AutoMLError, TypeError, ValueError) as exc:
                raise fail(f"{key}[{i}]", f"{v!r} is not {what} ({exc})") from None
        if len(set(out)) != len(out):
            raise fail(key, f"lists a value twice: {values}")
        return tuple(out)

    budgets = items("budgets", lambda v: Budget.parse(v).seconds, "a budget such as 90s or 5m")
    seeds = items("seeds", _natural(0), "a seed (an integer >= 0)")
    shots = items("shots", _natural(1), "a count per class (>= 1)") if "shots" in doc else ()
    systems = items("systems", _system, "a known system")
    baselines = items("baselines", str, "a system name") if "baselines" in doc else None
    if baselines is not None and not set(baselines) <= set(systems):
        extra = sorted(set(baselines) - set(systems))
        raise fail("baselines", f"{', '.join(extra)} not among the suite's systems")
    datasets = items("datasets", _dataset, "a dataset name or mapping")
    labels = [e.label for e in datasets]
    if len(set(labels)) != len(labels):
        raise fail("datasets", f"two datasets share a label: {labels}; set `label:`")
    return Suite(
        name=path.stem,
        path=str(path),
        description=str(doc.get("description") or ""),
        metric=metric,
        budgets=tuple(sorted(budgets)),
        seeds=seeds,
        systems=systems,
        baselines=baselines
        if baselines is not None
        else tuple(s for s in systems if s != "automl"),
        datasets=datasets,
        shots=tuple(sorted(shots)),
    )


def _natural(low: int) -> Callable[[Any], int]:
    def convert(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise ValueError(f"expected an integer >= {low}")
        return v

    return convert


def _system(v: Any) -> str:
    from automl.bench.systems import get_system

    if v == MAJORITY:
        raise ValueError("the majority-class reference is added to every cell by itself")
    return get_system(str(v)).name


def _dataset(v: Any) -> DatasetEntry:
    from automl.datasets import DATASETS

    spec = {"name": v} if isinstance(v, str) else v
    if not isinstance(spec, dict):
        raise ValueError("expected a name or a mapping with `name:`")
    unknown = sorted(set(map(str, spec)) - _DATASET_KEYS)
    if unknown:
        raise ValueError(
            f"unknown key {unknown[0]!r}; allowed: {', '.join(sorted(_DATASET_KEYS))}"
        )
    name = spec.get("name")
    from automl.datasets.images import IMAGE_DATASETS

    known = {*DATASETS, *IMAGE_DATASETS}
    if name not in known:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(known))}")
    limits = {k: spec.get(k) for k in ("max_train", "max_test")}
    for key, value in limits.items():
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 2
        ):
            raise ValueError(f"{key}: expected an integer >= 2, found {value!r}")
    return DatasetEntry(
        name=str(name),
        label=str(spec.get("label") or name),
        **limits,  # type: ignore[arg-type]
    )
