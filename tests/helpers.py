"""Helpers shared by test modules (pytest puts tests/ on sys.path: `from helpers import ...`)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

# Three topics of tiny synthetic texts: 3 filler words + 2 words of the class.
TOPIC_WORDS = {
    "sports": ["football", "goal", "team", "match", "coach"],
    "food": ["pizza", "recipe", "bread", "cheese", "dinner"],
    "tech": ["computer", "software", "laptop", "code", "chip"],
}
FILLER = ["the", "a", "today", "really", "we", "talked", "about", "new", "my"]


def automl_command() -> list[str]:
    """The installed console script next to this interpreter, else `python -m automl.cli`."""
    script = Path(sys.executable).with_name("automl")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "automl.cli"]


def new_study(store: Any, **over: Any) -> str:
    """A running classification study with empty summaries (for tests that need one to
    hang trials on); keyword arguments override the defaults. Returns its id."""
    kwargs: dict[str, Any] = {
        "dataset": "d.csv",
        "task": "classification",
        "track": "finetune",
        "metric": "macro_f1",
        "mode": "max",
        "budget_s": 60.0,
        "seed": 0,
        "data_summary": {},
        "cleaning": {},
        "options": {},
    }
    return str(store.create_study(**{**kwargs, **over}))


def finetune_params(backbone: Path, **overrides: Any) -> dict[str, Any]:
    """Fine-tuning params for the tiny random BERT fixture (it needs a larger learning
    rate than a pretrained model)."""
    params = {
        "backbone": "tiny-bert",
        "backbone_path": str(backbone),
        "learning_rate": 1e-3,
        "epochs": 2,
        "batch_size": 16,
        "freeze_layers": 0,
        "patience": 5,
    }
    params.update(overrides)
    return params
