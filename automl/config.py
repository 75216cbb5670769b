"""Frozen records and configs shared by every layer (stdlib only)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from automl.errors import ConfigError

Task = Literal["classification", "regression"]
TrialStatus = Literal["running", "complete", "pruned", "failed", "stopped"]

_BUDGET_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|secs|m|min|mins|h|hr|hrs)?\s*$", re.I)


@dataclass(frozen=True)
class Budget:
    """A hard wall-clock limit for a whole command, in seconds."""

    seconds: float

    @classmethod
    def parse(cls, text: str | float | int) -> Budget:
        """Parse "90s", "5m", "1.5h" or a plain number of seconds."""
        if isinstance(text, int | float):
            value = float(text)
        else:
            m = _BUDGET_RE.match(str(text))
            if not m:
                raise ConfigError(
                    f"budget {text!r} is not understood: use a number with a unit, "
                    "e.g. 90s, 5m or 1h"
                )
            unit = (m.group(2) or "s").lower()
            mult = 3600.0 if unit.startswith("h") else 60.0 if unit.startswith("m") else 1.0
            value = float(m.group(1)) * mult
        if value <= 0:
            raise ConfigError(f"budget must be positive, got {text!r}: e.g. --budget 5m")
        return cls(seconds=value)

    def __str__(self) -> str:
        s = self.seconds
        return f"{s / 60:g}m" if s >= 60 and s % 60 == 0 else f"{s:g}s"


@dataclass(frozen=True)
class CleaningReport:
    """What cleaning did to the data; shown to the user and stored with the study."""

    rows_in: int
    rows_out: int
    missing_text: int = 0
    missing_label: int = 0
    duplicates: int = 0
    conflicting_texts: int = 0  # distinct texts seen with more than one label
    conflict_rows_dropped: int = 0
    whitespace_normalised: int = 0
    encoding_repaired: int = 0
    notes: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        """Human-readable summary, one fact a line."""
        out = [f"{self.rows_in} rows read, {self.rows_out} kept"]
        if self.missing_text:
            out.append(f"{self.missing_text} rows with empty or missing text dropped")
        if self.missing_label:
            out.append(f"{self.missing_label} rows with a missing label dropped")
        if self.duplicates:
            out.append(f"{self.duplicates} exact duplicate rows removed")
        if self.conflicting_texts:
            out.append(
                f"{self.conflicting_texts} texts had conflicting labels: kept the majority "
                f"label, dropped {self.conflict_rows_dropped} rows"
            )
        if self.whitespace_normalised:
            out.append(f"{self.whitespace_normalised} texts had whitespace normalised")
        if self.encoding_repaired:
            out.append(f"{self.encoding_repaired} texts had encoding artefacts repaired")
        out.extend(self.notes)
        return out


@dataclass(frozen=True)
class Split:
    """One split: parallel lists of texts and targets (class ids or floats)."""

    texts: tuple[str, ...]
    labels: tuple[Any, ...]  # int class ids (classification) or float (regression)

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class PreparedData:
    """Clean, split data ready for training. The test split is never given to the search."""

    train: Split
    val: Split
    test: Split
    task: Task
    label_names: tuple[str, ...]  # class names by id; empty for regression
    text_columns: tuple[str, ...]
    label_column: str
    source: str  # file path or "<dataframe>"
    report: CleaningReport
    seed: int = 0
    # "text": Split.texts hold texts; "image": they hold absolute image file paths
    # (automl.images), and text_columns names the image-path column.
    modality: str = "text"

    @property
    def num_labels(self) -> int:
        return len(self.label_names) if self.task == "classification" else 1


@dataclass(frozen=True)
class EpochResult:
    """What a trainer reports after each epoch (metrics are on the validation split)."""

    epoch: int
    metrics: dict[str, float]  # e.g. accuracy, macro_f1, precision, recall, loss; rmse ...
    train_loss: float
    seconds: float  # wall seconds since the trial started
    improved: bool  # the trial's best checkpoint was updated at this epoch


@dataclass(frozen=True)
class TrialContext:
    """Where and until when a trial may work."""

    output_dir: str  # the trial saves its best checkpoint here (HF model folder)
    deadline: float  # time.time() after which the trial must stop promptly
    seed: int = 0
    metric: str = "macro_f1"  # the validation metric to maximise (or minimise, see mode)
    mode: Literal["max", "min"] = "max"
    # A file holding a time.time() value that the driver may move earlier while the trial
    # runs (e.g. when a model that is slower to export becomes the best so far).
    deadline_file: str | None = None
    # A file holding how many CPU threads the trial may use now: the search raises it when
    # no new trial will start and cores fall idle (a lone last trial gets them all).
    threads_file: str | None = None

    def current_deadline(self) -> float:
        """The deadline now: `deadline`, or the deadline file's value when earlier."""
        if self.deadline_file is None:
            return self.deadline
        try:
            with open(self.deadline_file, encoding="ascii") as fh:
                return min(self.deadline, float(fh.read()))
        except (OSError, ValueError):  # not written yet, or being replaced
            return self.deadline

    def current_threads(self) -> int | None:
        """The CPU threads the search allows this trial now; None: unchanged."""
        if self.threads_file is None:
            return None
        try:
            with open(self.threads_file, encoding="ascii") as fh:
                return max(1, int(fh.read()))
        except (OSError, ValueError):
            return None


@dataclass(frozen=True)
class TrialRecord:
    """A finished (or failed) trial as the search returns it: a frozen record."""

    trial_id: str
    number: int
    status: TrialStatus
    params: dict[str, Any]
    epochs: tuple[EpochResult, ...] = ()
    best_metrics: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None
    checkpoint_dir: str | None = None
