"""Shared by the transformers-based systems: a callback that ends training in time."""

from __future__ import annotations

import time
from typing import Any

from transformers import TrainerCallback

# A step may take longer than the last one (longer texts): stop when 1.5 steps would not fit.
STEP_MARGIN = 1.5


class StopAtDeadline(TrainerCallback):  # type: ignore[misc]
    """Ends training (after the current step) when another step would end past
    `deadline` (a time.time() value); records the steps planned and done."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.planned = 0
        self.done = 0
        self.stopped = False
        self._last = time.time()
        self._step_s = 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.planned = int(state.max_steps)
        self._last = time.time()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        now = time.time()
        self._step_s, self._last = now - self._last, now
        self.done = int(state.global_step)
        if now + STEP_MARGIN * self._step_s > self.deadline and self.done < self.planned:
            control.should_training_stop = True
            self.stopped = True

    def info(self) -> dict[str, Any]:
        return {
            "steps_planned": self.planned,
            "steps_done": self.done,
            "stopped_at_budget": self.stopped,
        }
