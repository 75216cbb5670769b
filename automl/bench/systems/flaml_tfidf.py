"""FLAML (an outside AutoML library) with its defaults on TF-IDF features.

The texts become TF-IDF word 1-2 grams (the same features as tfidf-lr); FLAML then
searches its default estimators with `time_budget` = what is left of the cell's budget
after imports and featurisation, less a margin for its own overrun (it kept to its budget
within about 2 % on TF-IDF features), and retrains the best model on all the data only if
the budget allows (`retrain_full="budget"`). Labels are integer-encoded (xgboost rejects
string classes).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from automl.bench.systems.base import (
    BudgetExhausted,
    FitTask,
    Fitted,
    SystemUnavailable,
    label_ids,
)

PACKAGES = "flaml==2.7.0 lightgbm==4.7.0 xgboost-cpu==3.2.0"


def fit(task: FitTask) -> Fitted:
    task.require("text", "flaml")
    try:
        from flaml.automl import AutoML  # needs xgboost and lightgbm too
    except ImportError as exc:
        raise SystemUnavailable(
            f"FLAML cannot be imported ({exc}): pip install {PACKAGES}"
        ) from None
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=200_000)
    x = vec.fit_transform(task.texts)
    classes, y = label_ids(task.labels)
    time_budget = task.left() - (2.0 + 0.03 * task.budget_s)  # its overrun: ~1 s + ~2 %
    if time_budget < 1.0:
        raise BudgetExhausted(
            f"imports and TF-IDF took {task.elapsed():.1f}s of a {task.budget_s:g}s budget: "
            "no time left for FLAML"
        )
    scratch = Path(task.workdir) / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    automl = AutoML()
    automl.fit(
        X_train=x,
        y_train=y,
        task="classification",
        metric=task.metric,
        time_budget=time_budget,
        retrain_full="budget",
        seed=task.seed,
        n_jobs=os.cpu_count() or 1,
        verbose=0,
        log_file_name=str(scratch / "flaml.log"),
    )
    if automl.model is None:
        raise BudgetExhausted(f"FLAML found no model within {time_budget:.1f}s")

    def predict(texts: Sequence[str]) -> list[str]:
        return [classes[int(p)] for p in automl.predict(vec.transform(list(texts)))]

    info = {
        "best_estimator": automl.best_estimator,
        "time_budget": round(time_budget, 1),
        "best_config": automl.best_config,
    }
    return Fitted(predict, info)
