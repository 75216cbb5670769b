"""Helpers shared by test modules (pytest puts tests/ on sys.path: `from helpers import ...`)."""

from __future__ import annotations

import sys
from pathlib import Path

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
