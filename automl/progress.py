"""What a person sees while a run goes: a live rich display on a terminal, log lines
elsewhere. Also the leaderboard table renderer shared by `run` and `leaderboard`."""

from __future__ import annotations

import logging
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from automl.config import EpochResult, TrialRecord
from automl.pipeline import RunListener

logger = logging.getLogger(__name__)


class RichListener(RunListener):
    """A progress bar of the budget with trials done, running, pruned and best so far."""

    def __init__(self, console: Console, metric: str = "macro_f1", mode: str = "max") -> None:
        self.console = console
        self.metric, self.mode = metric, mode
        self.done: dict[str, int] = {}
        self.running = 0
        self.best: float | None = None
        self.best_trial: int | None = None
        self.budget_s = 0.0
        self.started_at = time.time()
        self.progress: Progress | None = None
        self.task: Any = None

    def stage(self, text: str) -> None:
        logger.info(text)
        if self.progress is None:
            self.console.print(f"[dim]·[/dim] {text}")

    def search_started(self, deadline: float, budget_s: float, started_at: float) -> None:
        self.budget_s, self.started_at = budget_s, started_at
        if not self.console.is_terminal:
            self.console.print(
                f"· searching until {time.strftime('%H:%M:%S', time.localtime(deadline))}"
            )
            return
        self.progress = Progress(
            TextColumn("[bold]search"),
            BarColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task("search", total=budget_s, status="starting")
        self._refresh()

    def trial_started(self, number: int, params: dict[str, Any]) -> None:
        self.running += 1
        self._refresh()

    def epoch_reported(self, number: int, epoch: EpochResult) -> None:
        value = epoch.metrics.get(self.metric)
        if value is not None and (
            self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        ):
            self.best, self.best_trial = value, number
        self._refresh()

    def trial_ended(self, record: TrialRecord) -> None:
        self.running = max(0, self.running - 1)
        self.done[record.status] = self.done.get(record.status, 0) + 1
        if not self.console.is_terminal:
            value = record.best_metrics.get(self.metric)
            shown = f"{value:.4f}" if value is not None else "–"
            self.console.print(
                f"· trial {record.number} {record.status} after {len(record.epochs)} epoch(s), "
                f"{self.metric} {shown}"
            )
        self._refresh()

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def _refresh(self) -> None:
        if self.progress is None:
            return
        elapsed = time.time() - self.started_at
        left = max(0.0, self.budget_s - elapsed)
        done = sum(self.done.values())
        pruned = self.done.get("pruned", 0)
        best = f"{self.best:.4f} (trial {self.best_trial})" if self.best is not None else "–"
        status = (
            f"trials {done} done ({pruned} pruned), {self.running} running · best "
            f"{self.metric} {best} · {left:.0f}s left"
        )
        self.progress.update(self.task, completed=min(elapsed, self.budget_s), status=status)


def leaderboard_table(rows: list[dict[str, Any]], metric: str, title: str = "") -> Table:
    """A rich table of leaderboard rows (as returned by Store.leaderboard)."""
    table = Table(title=title or None, show_lines=False)
    # A few-shot trial reports once per cross-validation fold, a fine-tuning one per epoch.
    steps = "folds" if any(r.get("track") == "fewshot" for r in rows) else "epochs"
    for col in ("#", "trial", "status", "track", "backbone", "freeze", "lr", steps):
        table.add_column(col, justify="right" if col in ("#", "trial", steps) else "left")
    for col in (metric, "accuracy" if metric != "accuracy" else "loss", "seconds"):
        table.add_column(col, justify="right")
    for r in rows:
        p, m = r.get("params") or {}, r.get("metrics") or {}
        second = "accuracy" if metric != "accuracy" else "loss"
        style = "bold green" if r.get("is_best") else None
        track = str(r.get("track"))
        if p.get("method"):  # few-shot: the method (logreg, svm, setfit) matters most
            track += f"/{p['method']}"
        lr = p.get(
            "learning_rate", p.get("body_learning_rate") if p.get("method") == "setfit" else None
        )
        table.add_row(
            str(r.get("rank") or "–"),
            str(r.get("number")),
            str(r.get("status")),
            track,
            str(p.get("backbone", p.get("model", ""))),
            str(p.get("freeze_layers", p.get("freeze_blocks", ""))),
            f"{lr:.1e}" if isinstance(lr, int | float) else "",
            str(r.get("epochs_done") or ""),
            _fmt(m.get(metric), m.get(f"{metric}_std")),
            _fmt(m.get(second), m.get(f"{second}_std")),
            f"{r.get('seconds') or 0:.1f}",
            style=style,
        )
    return table


def _fmt(v: Any, std: Any = None) -> str:
    """A score, with ± its standard deviation over cross-validation folds when known."""
    if not isinstance(v, int | float):
        return "–"
    return f"{v:.4f} ± {std:.4f}" if isinstance(std, int | float) else f"{v:.4f}"
