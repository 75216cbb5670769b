"""A TF-IDF + logistic-regression text classifier that saves without pickle.

The few-shot track's `logreg_tfidf` method averages its probabilities with those of a
head on sentence embeddings: with a few dozen texts per class, word features and
sentence embeddings err on different texts (e-mails whose telling words a 256-token
embedding never reads; hedges spelled out in words). Its settings are the reference row's
(automl/reference.py: word 1-2 grams, sublinear tf, C=10, saga).

Saved as `tfidf.json` (vocabulary and settings) and `tfidf.safetensors` (idf, weight,
bias); loading rebuilds scikit-learn's vectorizer from them, never from a pickle.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from automl.errors import ModelError

__all__ = ["TFIDF_FILES", "TfidfHead"]

TFIDF_JSON = "tfidf.json"
TFIDF_WEIGHTS = "tfidf.safetensors"
TFIDF_FILES = (TFIDF_JSON, TFIDF_WEIGHTS)
NGRAMS = (1, 2)
C = 10.0
MAX_FEATURES = 200_000
_ABSENT = -1e4  # logit of a class the fold's training texts lack


class TfidfHead:
    """Fitted TF-IDF vectorizer + linear classifier over class ids 0..num_classes-1."""

    def __init__(self, vectorizer: Any, weight: np.ndarray, bias: np.ndarray) -> None:
        self.vectorizer = vectorizer
        self.weight = np.asarray(weight, dtype=np.float64)  # (num_classes, vocabulary)
        self.bias = np.asarray(bias, dtype=np.float64)

    @classmethod
    def fit(
        cls, texts: Sequence[str], y: Sequence[int] | np.ndarray, num_classes: int, seed: int = 0
    ) -> TfidfHead:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        vec = TfidfVectorizer(ngram_range=NGRAMS, sublinear_tf=True, max_features=MAX_FEATURES)
        x = vec.fit_transform(list(texts))
        clf = LogisticRegression(C=C, solver="saga", max_iter=1000, random_state=seed)
        clf.fit(x, np.asarray(y))
        coef = np.asarray(clf.coef_, dtype=np.float64)
        intercept = np.asarray(clf.intercept_, dtype=np.float64)
        if coef.shape[0] == 1:  # binary: logits [0, z] give sigmoid(z), as predict_proba
            coef = np.vstack([np.zeros_like(coef), coef])
            intercept = np.array([0.0, intercept[0]])
        weight = np.zeros((num_classes, coef.shape[1]))
        bias = np.full(num_classes, _ABSENT)
        ids = [int(c) for c in clf.classes_]
        weight[ids] = coef
        bias[ids] = intercept
        return cls(vec, weight, bias)

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """(n, num_classes) scores whose softmax is the classifier's probabilities."""
        x = self.vectorizer.transform(list(texts))
        return np.asarray(x @ self.weight.T + self.bias, dtype=np.float64)

    def save(self, folder: str | Path) -> None:
        from safetensors.numpy import save_file

        folder = Path(folder)
        vocab = {str(k): int(v) for k, v in self.vectorizer.vocabulary_.items()}
        doc = {"ngram_range": list(NGRAMS), "sublinear_tf": True, "vocabulary": vocab}
        (folder / TFIDF_JSON).write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
        save_file(
            {
                "idf": np.ascontiguousarray(self.vectorizer.idf_, dtype=np.float64),
                "weight": np.ascontiguousarray(self.weight, dtype=np.float32),
                "bias": np.ascontiguousarray(self.bias, dtype=np.float32),
            },
            str(folder / TFIDF_WEIGHTS),
            metadata={"format": "automl-tfidf-head"},
        )

    @classmethod
    def load(cls, folder: str | Path) -> TfidfHead:
        from safetensors.numpy import load_file
        from sklearn.feature_extraction.text import TfidfVectorizer

        folder = Path(folder)
        try:
            doc = json.loads((folder / TFIDF_JSON).read_text(encoding="utf-8"))
            tensors = load_file(str(folder / TFIDF_WEIGHTS))
            vec = TfidfVectorizer(
                ngram_range=tuple(doc["ngram_range"]),
                sublinear_tf=bool(doc["sublinear_tf"]),
                vocabulary=doc["vocabulary"],
            )
            vec.idf_ = tensors["idf"]
            weight, bias = tensors["weight"], tensors["bias"]
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(
                f"{folder}: the TF-IDF part of the model ({', '.join(TFIDF_FILES)}) cannot "
                f"be read ({exc}): export the model again"
            ) from exc
        if weight.shape != (len(bias), len(vec.vocabulary)):
            raise ModelError(
                f"{folder / TFIDF_WEIGHTS}: weight {weight.shape} does not fit "
                f"{len(bias)} classes x {len(vec.vocabulary)} terms: export the model again"
            )
        return cls(vec, weight, bias)


def average_logits(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log of the mean of softmax(a) and softmax(b): logits of the averaged probabilities."""

    def softmax(z: np.ndarray) -> np.ndarray:
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    return np.log(np.clip((softmax(a) + softmax(b)) / 2.0, 1e-300, 1.0))
