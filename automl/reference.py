"""The reference row: a linear model on simple features, trained before the search.

Text: TF-IDF + logistic regression (ridge for regression). Images: logistic regression
on raw pixels (at most 32 x 32, one channel for greyscale data). Every leaderboard shows
it, so a study says honestly how much fine-tuning adds.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from automl.config import PreparedData
from automl.cv import summarize
from automl.metrics import compute_metrics

logger = logging.getLogger(__name__)

REFERENCE_PARAMS = {
    "model": "tfidf+logreg",
    "ngram_range": "1-2",
    "min_df": 1,
    "sublinear_tf": True,
    "max_features": 200_000,
    "solver": "saga",
}


PIXEL_REFERENCE_PARAMS = {"model": "pixels+logreg", "scaler": "standard", "C": 1.0}
PIXEL_SIDE_MAX = 32  # raw pixels at most 32 x 32: enough for a linear model, and quick
_PIXEL_MAX_ITER = 300


@dataclass(frozen=True)
class ReferenceResult:
    """Validation and test metrics of the reference model, and its training time."""

    params: dict[str, object]
    val_metrics: dict[str, float]
    test_metrics: dict[str, float]
    seconds: float


def _fit(
    texts: tuple[str, ...], labels: tuple, task: str, num_labels: int, seed: int
) -> tuple[dict[str, object], Callable[[tuple[str, ...]], np.ndarray]]:
    """Fit TF-IDF + a linear model; return its params and a texts -> outputs function."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression, Ridge

    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=200_000)
    params = dict(REFERENCE_PARAMS)
    try:
        x_train = vec.fit_transform(texts)
    except ValueError:  # no word of 2+ characters in any text ("a", "7", emoji): characters
        vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True)
        x_train = vec.fit_transform(texts)
        params["analyzer"] = "char_wb 1-3"
    if task == "classification":
        # saga: ~0.2 s here where lbfgs took 11 s on the same 60k-feature matrix.
        clf = LogisticRegression(max_iter=1000, C=10.0, solver="saga", random_state=seed)
        clf.fit(x_train, np.asarray(labels))
        params["C"] = 10.0

        def outputs(texts: tuple[str, ...]) -> np.ndarray:
            # Log-probabilities in a column per class id (classes absent from train: -inf).
            proba = np.full((len(texts), num_labels), 1e-12)
            if texts:
                proba[:, clf.classes_] = np.clip(clf.predict_proba(vec.transform(texts)), 1e-12, 1)
            return np.log(proba)

        return params, outputs
    reg = Ridge(alpha=1.0, random_state=seed)
    reg.fit(x_train, np.asarray(labels, dtype=float))
    params["model"] = "tfidf+ridge"

    def predict(texts: tuple[str, ...]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 1))
        return reg.predict(vec.transform(texts)).reshape(-1, 1)

    return params, predict


Fitter = Callable[..., tuple[dict[str, object], Callable[[tuple[str, ...]], np.ndarray]]]


def pixel_features(paths: Sequence[str], side: int, grey: bool) -> np.ndarray:
    """Raw pixels (n, side * side * channels) as float32 in [0, 1] (cached decode)."""
    from automl.images import load_pixels, pixel_cache_dir

    px = np.asarray(load_pixels(paths, side, pixel_cache_dir()))
    if grey:
        px = px[..., :1]
    return px.reshape(len(px), -1).astype(np.float32) / 255.0


def fit_pixels(
    paths: tuple[str, ...],
    labels: tuple,
    task: str,
    num_labels: int,
    seed: int,
    max_rows: int | None = None,
    max_iter: int = _PIXEL_MAX_ITER,
) -> tuple[dict[str, object], Callable[[tuple[str, ...]], np.ndarray]]:
    """Fit standardised raw pixels + logistic regression; a paths -> outputs function.
    With max_rows, on a random max_rows of the images (the study's reference row: lbfgs
    on 50,000 Fashion-MNIST images takes minutes on 2 cores, 10,000 took 53 s)."""
    rows_in = len(paths)
    if max_rows is not None and len(paths) > max_rows:
        keep = np.sort(np.random.default_rng(seed).permutation(len(paths))[:max_rows])
        paths = tuple(paths[i] for i in keep)
        labels = tuple(labels[i] for i in keep)
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from automl.images import pixel_side

    side = min(PIXEL_SIDE_MAX, pixel_side(paths))
    sample = np.asarray(pixel_features(paths[:200], side, grey=False)).reshape(-1, 3)
    grey = bool(np.all(sample[:, 0] == sample[:, 1]) and np.all(sample[:, 1] == sample[:, 2]))
    clf = make_pipeline(
        StandardScaler(),
        LogisticRegression(C=1.0, max_iter=max_iter, random_state=seed),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(pixel_features(paths, side, grey), np.asarray(labels))
    params: dict[str, object] = {
        **PIXEL_REFERENCE_PARAMS,
        "side": side,
        "channels": 1 if grey else 3,
        "max_iter": max_iter,
        "train_images": f"{len(paths)} of {rows_in}",
    }

    def outputs(paths: tuple[str, ...]) -> np.ndarray:
        proba = np.full((len(paths), num_labels), 1e-12)
        if paths:
            p = clf.predict_proba(pixel_features(paths, side, grey))
            proba[:, clf.classes_] = np.clip(p, 1e-12, 1)
        return np.log(proba)

    return params, outputs


# A study's image reference trains on at most this many images, with fewer iterations, so
# it is ready in seconds beside Ray's start-up (the search waits for the plan it is part
# of); `automl bench`'s pixels-lr system fits all training images to convergence.
REFERENCE_MAX_IMAGES = 5000
REFERENCE_MAX_ITER = 100


def _fitter(data: PreparedData) -> Fitter:
    if data.modality == "image":
        return functools.partial(
            fit_pixels, max_rows=REFERENCE_MAX_IMAGES, max_iter=REFERENCE_MAX_ITER
        )
    return _fit


def fit_reference(data: PreparedData, seed: int = 0) -> ReferenceResult:
    """Fit TF-IDF (word 1-2 grams) + logistic regression (ridge for regression), or raw
    pixels + logistic regression for images, on the training split; score validation and
    test with the same metric code as every trial."""
    t0 = time.perf_counter()
    fit = _fitter(data)
    params, outputs = fit(data.train.texts, data.train.labels, data.task, data.num_labels, seed)
    val = compute_metrics(data.task, np.asarray(data.val.labels), outputs(data.val.texts))
    test = (
        compute_metrics(data.task, np.asarray(data.test.labels), outputs(data.test.texts))
        if len(data.test)
        else {}
    )
    seconds = time.perf_counter() - t0
    logger.info("reference %s: val %s in %.1fs", params["model"], val, seconds)
    return ReferenceResult(params=params, val_metrics=val, test_metrics=test, seconds=seconds)


def fit_reference_cv(
    data: PreparedData, folds: Sequence[tuple[Sequence[int], Sequence[int]]], seed: int = 0
) -> ReferenceResult:
    """The reference scored like a few-shot trial: cross-validated on train + val with the
    given folds (index pairs into train + val), mean and `<metric>_std` per metric; then
    fitted on all of it to score the test split."""
    t0 = time.perf_counter()
    texts = data.train.texts + data.val.texts
    labels = data.train.labels + data.val.labels
    scores = []
    fit = _fitter(data)
    for train_idx, val_idx in folds:
        _, outputs = fit(
            tuple(texts[i] for i in train_idx),
            tuple(labels[i] for i in train_idx),
            data.task,
            data.num_labels,
            seed,
        )
        y = np.asarray([labels[i] for i in val_idx])
        scores.append(compute_metrics(data.task, y, outputs(tuple(texts[i] for i in val_idx))))
    val = summarize(scores) if scores else {}  # mean and population std, as the trials
    params, outputs = fit(texts, labels, data.task, data.num_labels, seed)
    params["cv_folds"] = len(folds)
    test = (
        compute_metrics(data.task, np.asarray(data.test.labels), outputs(data.test.texts))
        if len(data.test)
        else {}
    )
    seconds = time.perf_counter() - t0
    logger.info("reference %s: cross-validated %s in %.1fs", params["model"], val, seconds)
    return ReferenceResult(params=params, val_metrics=val, test_metrics=test, seconds=seconds)
