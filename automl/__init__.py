"""automl: fine-tune pretrained text models on labeled data within a wall-clock budget."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["AutoML", "__version__"]


def __getattr__(name: str) -> object:
    # Lazy: `import automl` stays cheap (the CLI's budget clock starts before torch loads).
    if name == "AutoML":
        from automl.api import AutoML

        return AutoML
    raise AttributeError(name)
