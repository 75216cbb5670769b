"""Small datasets shipped with the package (for demos and smoke tests)."""

from __future__ import annotations

from pathlib import Path

from automl.errors import DataError
from automl.paths import BUNDLED_DATA_DIR

BUNDLED = {"fortunes8": "fortunes8.csv"}  # 8-way topic, 3,154 Debian fortunes (BSD)

__all__ = ["BUNDLED", "bundled_path"]


def bundled_path(name: str) -> Path:
    """The path of a bundled dataset by name, e.g. bundled_path("fortunes8")."""
    if name not in BUNDLED:
        raise DataError(
            f"unknown bundled dataset {name!r}: choose one of {', '.join(sorted(BUNDLED))}"
        )
    return BUNDLED_DATA_DIR / BUNDLED[name]
