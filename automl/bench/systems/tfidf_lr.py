"""TF-IDF word 1-2 grams + logistic regression: the settings of automl's reference row
(automl/reference.py), trained on all the cell's training data."""

from __future__ import annotations

from collections.abc import Sequence

from automl.bench.systems.base import FitTask, Fitted


def fit(task: FitTask) -> Fitted:
    task.require("text", "tfidf-lr")
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=200_000)
    # saga: ~0.2 s where lbfgs took 11 s on a 60k-feature matrix (see automl/reference.py)
    clf = LogisticRegression(C=10.0, solver="saga", max_iter=1000, random_state=task.seed)
    clf.fit(vec.fit_transform(task.texts), list(task.labels))

    def predict(texts: Sequence[str]) -> list[str]:
        return [str(p) for p in clf.predict(vec.transform(list(texts)))]

    return Fitted(predict, {"features": len(vec.vocabulary_)})
