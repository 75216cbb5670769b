"""SetFit as a user would run it: `SetFitModel.from_pretrained(MiniLM-L6)` and
`setfit.Trainer` with library-default TrainingArguments (only save_strategy="no",
report_to="none" and the seed set), then `model.predict`.

One addition, for the budget: a callback ends the contrastive training of the body early
enough to fit the head after it (the head encodes every training text, timed on a sample
of 32 first). The defaults' pair sampling is quadratic in the training set (it enumerates
every pair): with thousands of texts it alone can exceed the budget, and the cell is then
reported over budget; this is a few-shot method.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from automl.bench.systems.base import BACKBONE, FitTask, Fitted, label_ids


def _accuracy(y_pred: Any, y_test: Any) -> dict[str, float]:  # a callable: no hub lookup
    return {"accuracy": float(np.mean(np.asarray(y_pred) == np.asarray(y_test)))}


def fit(task: FitTask) -> Fitted:
    task.require("text", "setfit-default")
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    from automl.backbones import resolve
    from automl.bench.systems._hf import StopAtDeadline

    classes, y = label_ids(task.labels)
    model = SetFitModel.from_pretrained(str(resolve(BACKBONE)))
    model.model_body.encode(list(task.texts[:1]), show_progress_bar=False)  # warm up
    t0 = time.time()
    sample = list(task.texts[:32])
    model.model_body.encode(sample, show_progress_bar=False)
    head_s = 1.5 * (time.time() - t0) / len(sample) * len(task.texts) + 2.0
    stop = StopAtDeadline(task.deadline - head_s)
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(Path(task.workdir) / "scratch" / "setfit"),
            save_strategy="no",
            report_to="none",
            seed=task.seed,
        ),
        train_dataset=Dataset.from_dict({"text": list(task.texts), "label": y.tolist()}),
        metric=_accuracy,
        callbacks=[stop],
    )
    trainer.train()

    def predict(texts: Sequence[str]) -> list[str]:
        return [classes[int(p)] for p in model.predict(list(texts), as_numpy=True)]

    return Fitted(predict, {**stop.info(), "head_reserve_s": round(head_s, 1)})
