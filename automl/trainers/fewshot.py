"""The few-shot track: a frozen sentence encoder with a linear head, or SetFit.

A trial is scored by stratified k-fold cross-validation on train + val (few-shot data is
too small for a fixed validation split). Folds play the part of epochs: after each one
the trainer reports the running mean (and population std) of every metric over the folds
so far, so ASHA can stop a poor configuration after its first fold.

Methods (`params["method"]`):
- "logreg" / "svm": head-only. The body is frozen, so the embeddings of all texts come
  from automl.embeddings (computed once per backbone, texts and max_length, shared across
  trials and worker processes) and each fold fits a scikit-learn head on its rows.
- "setfit": contrastive fine-tuning of the body on pairs, then a head (SetFit 1.2).

`fit` saves nothing (a trial is a score); `refit` trains the chosen configuration on all
of train + val and saves it with automl.fewshot_model.save_fewshot_dir.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from automl.config import EpochResult, PreparedData, TrialContext
from automl.cv import cv_folds, summarize
from automl.embeddings import embed, load_body
from automl.errors import ConfigError, DataError
from automl.metrics import compute_metrics, metric_names
from automl.tfidf_head import TfidfHead, average_logits
from automl.trainers.base import ReportFn, use_threads

logger = logging.getLogger(__name__)

__all__ = ["DEFAULTS", "METHODS", "FewShotTrainer"]

# logreg_tfidf: the logreg head's probabilities averaged with a TF-IDF + logistic
# regression classifier's (automl.tfidf_head), both head-only and cheap.
METHODS = ("logreg", "svm", "logreg_tfidf", "setfit")
HEADS = ("logreg", "differentiable")
SAMPLING_STRATEGIES = ("oversampling", "undersampling", "unique")  # setfit 1.2's names

# Defaults for keys a caller leaves out: the `init` values of search_spaces/fewshot.yaml,
# plus knobs that are not searched by default.
DEFAULTS: dict[str, Any] = {
    "method": "logreg",
    "C": 1.0,
    "max_length": 256,
    "head": "logreg",
    "body_learning_rate": 5e-5,
    "head_learning_rate": 1e-2,
    "num_iterations": 2,
    "sampling_strategy": "oversampling",
    "epochs": 1,
    "batch_size": 16,
    "warmup_proportion": 0.1,
    # Epochs of the differentiable head (SetFit's default, 16): with the body's 1-2 epochs
    # the head would take a handful of steps and stay near its random start.
    "head_epochs": 16,
    "max_steps": 24,  # cap on the body's training steps per fit (-1: none)
}
_EMBED_BATCH = 64
# SetFit folds: time kept back from the body's training for the head and the predictions
_SETFIT_RESERVE_MIN_S = 3.0
_SETFIT_RESERVE_SHARE = 0.3
_LOGREG_MAX_ITER = 2000  # lbfgs on unscaled embeddings with C up to 100 needs more than 100
_SVM_MAX_ITER = 10000
_ABSENT = -1e9  # logit of a class the head never saw (no rows of it in the fold)


@dataclass(frozen=True)
class _Hparams:
    method: str
    C: float
    max_length: int
    head: str
    body_learning_rate: float
    head_learning_rate: float
    num_iterations: int
    sampling_strategy: str
    epochs: int
    batch_size: int
    warmup_proportion: float
    head_epochs: int
    max_steps: int

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> _Hparams:
        p = {**DEFAULTS, **{k: v for k, v in params.items() if k in DEFAULTS}}
        hp = cls(
            method=str(p["method"]).lower(),
            C=float(p["C"]),
            max_length=int(p["max_length"]),
            head=str(p["head"]).lower(),
            body_learning_rate=float(p["body_learning_rate"]),
            head_learning_rate=float(p["head_learning_rate"]),
            num_iterations=int(p["num_iterations"]),
            sampling_strategy=str(p["sampling_strategy"]).lower(),
            epochs=int(p["epochs"]),
            batch_size=int(p["batch_size"]),
            warmup_proportion=float(p["warmup_proportion"]),
            head_epochs=int(p["head_epochs"]),
            max_steps=int(p["max_steps"]),
        )
        for name, value, allowed in (
            ("method", hp.method, METHODS),
            ("head", hp.head, HEADS),
            ("sampling_strategy", hp.sampling_strategy, SAMPLING_STRATEGIES),
        ):
            if value not in allowed:
                raise ConfigError(f"{name} {value!r} is unknown: expected one of {list(allowed)}")
        for name in ("max_length", "epochs", "batch_size", "head_epochs"):
            if getattr(hp, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(hp, name)}")
        if not hp.C > 0:
            raise ConfigError(f"C must be positive, got {hp.C}")
        if not 0.0 <= hp.warmup_proportion <= 1.0:
            raise ConfigError(f"warmup_proportion must be in [0, 1], got {hp.warmup_proportion}")
        if hp.max_steps == 0 or hp.max_steps < -1:
            raise ConfigError(f"max_steps must be -1 (no cap) or positive, got {hp.max_steps}")
        return hp

    @property
    def head_only(self) -> bool:
        return self.method != "setfit"


class FewShotTrainer:
    """Scores a few-shot configuration by cross-validation on train + val.

    Implements `automl.trainers.base.Trainer`, with folds in the place of epochs: the
    n_splits * n_repeats folds of automl.cv.cv_folds (n_splits lowered to the smallest
    class count) run one by one, each followed by a report. Search parameters are those of
    search_spaces/fewshot.yaml; missing ones take their `init` values (DEFAULTS);
    `params["backbone_path"]` is the local backbone folder; unknown keys are ignored.
    """

    def __init__(self, n_splits: int = 4, n_repeats: int = 1) -> None:
        self.n_splits = n_splits
        self.n_repeats = n_repeats

    def fit(
        self, data: PreparedData, params: dict[str, Any], ctx: TrialContext, report: ReportFn
    ) -> list[EpochResult]:
        """Run the folds, reporting the running summary after each; returns the reports."""
        start = time.time()
        if start >= ctx.current_deadline():
            logger.debug("deadline already passed; not training")
            return []
        hp = _Hparams.from_params(params)
        path = _backbone_path(params)
        texts, y = _pooled(data)
        if ctx.metric not in metric_names(data.task):
            raise ConfigError(
                f"metric {ctx.metric!r} is not computed for {data.task}: expected one of "
                f"{', '.join(metric_names(data.task))}"
            )
        folds = cv_folds(y.tolist(), self.n_splits, self.n_repeats, ctx.seed)
        _seed_everything(ctx.seed)
        features = embed(path, texts, hp.max_length, _EMBED_BATCH) if hp.head_only else None

        results: list[EpochResult] = []
        scores: list[dict[str, float]] = []
        fold_seconds: list[float] = []
        with tempfile.TemporaryDirectory(prefix="automl-setfit-") as scratch:
            for number, (train_idx, val_idx) in enumerate(folds, start=1):
                # A fold that would not finish before the deadline is not started: the
                # folds so far tell how long one takes (the first always runs). Their own
                # time only: the embeddings computed before the first fold are not repeated.
                per_fold = max(fold_seconds) if fold_seconds else 0.0
                deadline = ctx.current_deadline()
                use_threads(ctx)
                if results and time.time() + per_fold >= deadline:
                    logger.debug("deadline reached after %d of %d folds", len(results), len(folds))
                    break
                fold_start = time.time()
                if features is not None:
                    head = _fit_head(hp, features[train_idx], y[train_idx], ctx.seed)
                    logits = _head_logits(head, features[val_idx], data.num_labels)
                    if hp.method == "logreg_tfidf":
                        words = TfidfHead.fit(
                            [texts[i] for i in train_idx], y[train_idx], data.num_labels, ctx.seed
                        )
                        logits = average_logits(logits, words.logits([texts[i] for i in val_idx]))
                    train_loss = math.nan
                else:
                    # The body's training stops early enough for the head's fit and the
                    # fold's predictions (both encode every text of the fold) to end
                    # before the deadline: a fold cut at the deadline reports nothing.
                    body_deadline = deadline - max(
                        _SETFIT_RESERVE_MIN_S, _SETFIT_RESERVE_SHARE * (deadline - time.time())
                    )
                    model, train_loss = _train_setfit(
                        path,
                        hp,
                        [texts[i] for i in train_idx],
                        y[train_idx],
                        data.num_labels,
                        ctx.seed,
                        body_deadline,
                        scratch,
                    )
                    logits = _setfit_logits(model, [texts[i] for i in val_idx], data.num_labels)
                scores.append(compute_metrics(data.task, y[val_idx], logits))
                fold_seconds.append(time.time() - fold_start)
                result = EpochResult(
                    number, summarize(scores), train_loss, time.time() - start, True
                )
                results.append(result)
                logger.debug(
                    "fold %d/%d: %s %.4f (running mean %.4f)",
                    number,
                    len(folds),
                    ctx.metric,
                    scores[-1][ctx.metric],
                    result.metrics[ctx.metric],
                )
                report(result)  # may not return: the search can stop the trial here
        return results

    def refit(
        self,
        data: PreparedData,
        params: dict[str, Any],
        output_dir: str,
        deadline: float | None = None,
        seed: int | None = None,
    ) -> Path:
        """Train the configuration on all of train + val and save it as a SetFit model folder
        (automl.fewshot_model.save_fewshot_dir); returns the folder. `deadline` (a
        time.time() value) cuts SetFit's body training short; head-only methods are quick.
        `seed` defaults to data.seed (pass the trial's ctx.seed to repeat it exactly)."""
        from automl.fewshot_model import save_fewshot_dir
        from automl.modelio import ModelMeta

        hp = _Hparams.from_params(params)
        path = _backbone_path(params)
        texts, y = _pooled(data)
        seed = data.seed if seed is None else seed
        _seed_everything(seed)
        words = (
            TfidfHead.fit(texts, y, data.num_labels, seed) if hp.method == "logreg_tfidf" else None
        )
        if hp.head_only:
            from setfit import SetFitModel

            features = embed(path, texts, hp.max_length, _EMBED_BATCH)
            head = _fit_head(hp, features, y, seed)
            body = copy.deepcopy(load_body(path))
            body.max_seq_length = hp.max_length
            model = SetFitModel(model_body=body, model_head=head)
        else:
            with tempfile.TemporaryDirectory(prefix="automl-setfit-") as scratch:
                model, _ = _train_setfit(
                    path,
                    hp,
                    texts,
                    y,
                    data.num_labels,
                    seed,
                    math.inf if deadline is None else deadline,
                    scratch,
                )
        meta = ModelMeta(
            task="classification",
            label_names=list(data.label_names),
            max_length=hp.max_length,
            backbone=str(params.get("backbone", path)),
            text_columns=list(data.text_columns),
            format="setfit",
        )
        return Path(save_fewshot_dir(model, meta, output_dir, tfidf=words))


def _backbone_path(params: dict[str, Any]) -> str:
    if "backbone_path" not in params:
        raise ConfigError("params need 'backbone_path': the local folder of the backbone")
    return str(params["backbone_path"])


def _pooled(data: PreparedData) -> tuple[list[str], np.ndarray]:
    """train + val texts and class ids (val may be empty for few-shot data)."""
    if data.task != "classification":
        raise DataError(
            f"{data.source}: the few-shot track does classification, got a {data.task} "
            "dataset: use the fine-tune track for regression"
        )
    texts = list(data.train.texts) + list(data.val.texts)
    y = np.asarray(list(data.train.labels) + list(data.val.labels), dtype=np.int64)
    _check_classes(y, data)
    return texts, y


def _check_classes(y: np.ndarray, data: PreparedData) -> None:
    if len(np.unique(y)) < 2:
        raise DataError(
            f"{data.source}: the training rows hold {len(np.unique(y))} class(es); a "
            "classifier needs at least 2: add examples of another class"
        )


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _fit_head(hp: _Hparams, x: np.ndarray, y: np.ndarray, seed: int) -> Any:
    """A fitted scikit-learn head: LogisticRegression for logreg (and SetFit's logreg head),
    LinearSVC for svm."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    if hp.method == "svm":
        head: Any = LinearSVC(C=hp.C, max_iter=_SVM_MAX_ITER, random_state=seed)
    else:
        head = LogisticRegression(C=hp.C, max_iter=_LOGREG_MAX_ITER)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        head.fit(x, y)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        logger.debug("%s head (C=%g) did not fully converge", hp.method, hp.C)
    return head


def _head_logits(head: Any, x: np.ndarray, num_labels: int) -> np.ndarray:
    """(n, num_labels) logits whose softmax/argmax compute_metrics uses: log-probabilities
    of a LogisticRegression, decision values of a LinearSVC ([-z/2, z/2] for two classes,
    whose softmax is sigmoid(z)). Classes the head never saw get a very low logit."""
    if hasattr(head, "predict_log_proba"):
        cols = head.predict_log_proba(x)
    else:
        z = head.decision_function(x)
        cols = np.stack([-z / 2, z / 2], axis=1) if z.ndim == 1 else z
    out = np.full((len(x), num_labels), _ABSENT, dtype=np.float64)
    out[:, np.asarray(head.classes_, dtype=np.int64)] = cols
    return out


def _train_setfit(
    path: str,
    hp: _Hparams,
    texts: list[str],
    y: np.ndarray,
    num_labels: int,
    seed: int,
    deadline: float,
    scratch: str,
) -> tuple[Any, float]:
    """A SetFit model trained on (texts, y): (model, mean embedding-phase loss or nan).
    The body is a copy of the cached encoder, so every fold starts from the pretrained one."""
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments
    from setfit import logging as setfit_logging
    from transformers import PrinterCallback, ProgressCallback

    setfit_logging.set_verbosity_warning()  # setfit.trainer sets INFO when imported
    _seed_everything(seed)
    body = copy.deepcopy(load_body(path))
    body.max_seq_length = hp.max_length
    if hp.head == "differentiable":
        from setfit.modeling import SetFitHead

        head: Any = SetFitHead(
            in_features=body.get_embedding_dimension(),
            out_features=num_labels,
            device=body.device,
        )
    else:
        from sklearn.linear_model import LogisticRegression

        head = LogisticRegression(C=hp.C, max_iter=_LOGREG_MAX_ITER)
    model = SetFitModel(model_body=body, model_head=head)
    args = TrainingArguments(
        output_dir=scratch,
        batch_size=(hp.batch_size, hp.batch_size),
        num_epochs=(hp.epochs, hp.head_epochs),
        max_steps=hp.max_steps,
        # setfit uses sampling_strategy only when num_iterations is unset (or 0).
        num_iterations=hp.num_iterations if hp.num_iterations > 0 else None,
        sampling_strategy=hp.sampling_strategy,
        body_learning_rate=(hp.body_learning_rate, hp.body_learning_rate),
        head_learning_rate=hp.head_learning_rate,
        max_length=hp.max_length,
        warmup_proportion=hp.warmup_proportion,
        seed=seed,
        report_to="none",
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        logging_first_step=False,
        show_progress_bar=False,
    )
    stopper = _deadline_callback(deadline)
    with _quiet_datasets(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*pin_memory.*")
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_dict({"text": texts, "label": y.tolist()}),
            # Never a metric name: setfit would load it from a hub. Unused: no evaluate().
            metric=lambda y_pred, y_test: {},
            callbacks=[stopper],
        )
        for noisy in (PrinterCallback, ProgressCallback):
            trainer.st_trainer.remove_callback(noisy)
        if body.device.type != "cuda":
            trainer.st_trainer.args.dataloader_pin_memory = False
        trainer.train()
    if stopper.stopped:
        logger.debug("setfit body training stopped at the deadline")
    return model, stopper.train_loss


def _setfit_logits(model: Any, texts: list[str], num_labels: int) -> np.ndarray:
    """(n, num_labels) log-probabilities of a SetFit model."""
    probs = np.asarray(
        model.predict_proba(
            texts, batch_size=_EMBED_BATCH, as_numpy=True, show_progress_bar=False
        ),
        dtype=np.float64,
    )
    cols = np.log(np.clip(probs, 1e-12, None))
    if model.has_differentiable_head:
        return cols
    out = np.full((len(texts), num_labels), _ABSENT, dtype=np.float64)
    out[:, np.asarray(model.model_head.classes_, dtype=np.int64)] = cols
    return out


def _deadline_callback(deadline: float) -> Any:
    """A transformers TrainerCallback that stops the body's training before a step that
    would end past deadline (judged by the slowest step so far) and keeps the mean
    training loss that the trainer logs at the end."""
    from transformers import TrainerCallback

    class _Deadline(TrainerCallback):
        def __init__(self) -> None:
            self.stopped = False
            self.train_loss = math.nan
            self.step_start = time.time()
            self.slowest = 0.0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            self.step_start = time.time()
            return control

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            now = time.time()
            self.slowest = max(self.slowest, now - self.step_start)
            if now + self.slowest >= deadline:
                control.should_training_stop = True
                self.stopped = True
            logger.debug("setfit step %d: %.2f s", state.global_step, now - self.step_start)
            return control

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> Any:
            if logs and "train_loss" in logs:
                self.train_loss = float(logs["train_loss"])
            return control

    return _Deadline()


@contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No `datasets` progress bars while SetFit builds its pair datasets."""
    from datasets.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()
