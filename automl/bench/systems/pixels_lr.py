"""Raw pixels + logistic regression: the image reference (automl/reference.py's row for
image studies), trained on all the cell's training images."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from automl.bench.systems.base import FitTask, Fitted


def fit(task: FitTask) -> Fitted:
    from automl.reference import fit_pixels

    task.require("image", "pixels-lr")
    names = sorted(set(task.labels))
    ids = tuple(names.index(y) for y in task.labels)
    params, outputs = fit_pixels(task.texts, ids, "classification", len(names), task.seed)

    def predict(paths: Sequence[str]) -> list[str]:
        return [names[int(i)] for i in np.argmax(outputs(tuple(paths)), axis=1)]

    return Fitted(predict, {k: v for k, v in params.items() if k != "model"})
