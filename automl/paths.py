"""Where things live on disk, and the offline switches every model load runs under."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# Default search spaces live at the repo's top level (search_spaces/); the package is
# installed in editable mode by the Makefile, so this path holds for installed use too.
SPACES_DIR = REPO_ROOT / "search_spaces"
BUNDLED_DATA_DIR = Path(__file__).resolve().parent / "datasets"


def cache_dir() -> Path:
    """Asset cache: $AUTOML_CACHE, else $XDG_CACHE_HOME/automl, else ~/.cache/automl."""
    env = os.environ.get("AUTOML_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "automl"


def ensure_offline() -> None:
    """Never reach a model hub: set the offline switches before transformers is used."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
