"""Frozen MiniLM-L6 sentence embeddings (sentence-transformers defaults) + logistic
regression. Training texts are encoded in a stratified order, a chunk at a time: when the
budget would run out, the classifier is fitted on the texts encoded so far."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from automl.bench.systems.base import (
    BACKBONE,
    BudgetExhausted,
    FitTask,
    Fitted,
    stratified_order,
)

CHUNK = 64  # texts encoded between two looks at the clock


def fit(task: FitTask) -> Fitted:
    task.require("text", "embed-lr")
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression

    from automl.backbones import resolve

    model = SentenceTransformer(str(resolve(BACKBONE)), device="cpu")
    order = stratified_order(task.labels, task.seed)
    reserve = 2.0 + 0.05 * task.budget_s  # the logistic regression's fit
    parts: list[np.ndarray] = []
    chunk_s = 0.0
    for start in range(0, len(order), CHUNK):
        if parts and task.left() < reserve + 1.5 * chunk_s:
            break
        t0 = time.time()
        texts = [task.texts[i] for i in order[start : start + CHUNK]]
        parts.append(model.encode(texts, show_progress_bar=False))
        chunk_s = time.time() - t0
    x = np.concatenate(parts)
    y = [task.labels[i] for i in order[: len(x)]]
    if len(set(y)) < 2:
        raise BudgetExhausted(f"only {len(x)} texts encoded within the budget: one class")
    clf = LogisticRegression(max_iter=1000, random_state=task.seed).fit(x, y)

    def predict(texts: Sequence[str]) -> list[str]:
        return [str(p) for p in clf.predict(model.encode(list(texts), show_progress_bar=False))]

    info = {"train_used": len(x), "stopped_at_budget": len(x) < len(order)}
    return Fitted(predict, info)
