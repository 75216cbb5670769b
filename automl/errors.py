"""Typed errors. The library raises these; only cli.py and app.py format them for people.

Every message says what was found, what was expected, and how to fix it.
"""

from __future__ import annotations


class AutoMLError(Exception):
    """Base class of every error a user can cause (bad input, missing assets, bad config)."""


class DataError(AutoMLError):
    """The dataset cannot be read or is unusable (file, column, row named in the message)."""


class ConfigError(AutoMLError):
    """A search space, budget or option is invalid (the key or flag is named)."""


class BudgetError(AutoMLError):
    """The budget is too small to train anything useful."""


class AssetError(AutoMLError):
    """A pretrained backbone is unknown, missing or corrupt."""


class StoreError(AutoMLError):
    """The SQLite store cannot be used (unknown study, newer schema, ...)."""


class ModelError(AutoMLError):
    """An exported model folder cannot be loaded or used."""


class TrainingDiverged(AutoMLError):
    """A trial's training loss became NaN or infinite (the trial is stored as failed)."""
