"""The few-shot model folder: a SetFit folder plus head.safetensors and automl.json.

A few-shot model is a sentence-embedding body and a linear head. The folder holds:

- the standard SetFit files (`SetFitModel.save_pretrained`), so users can run
  `setfit.SetFitModel.from_pretrained(folder)`;
- `head.safetensors`: the head as a dense linear map, `weight` (num_classes, dim) and
  `bias` (num_classes,), with logits = embeddings @ weight.T + bias;
- automl.json (`ModelMeta` with format "setfit").

Our own code path never reads SetFit's model_head.pkl: unpickling a file from a folder
a user hands us can run arbitrary code. It reads head.safetensors instead, so any
linear head (logistic regression, linear SVM, ridge, SetFit's differentiable head)
predicts through the same few lines of numpy.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from automl.errors import ModelError
from automl.modelio import (
    ModelMeta,
    quiet_transformers,
    read_meta,
    select_device,
    write_meta,
)
from automl.paths import ensure_offline
from automl.tfidf_head import TFIDF_FILES, TfidfHead, average_logits

logger = logging.getLogger(__name__)

__all__ = ["FORMAT", "HEAD_FILE", "FewShotModel", "load_fewshot_dir", "save_fewshot_dir"]

FORMAT = "setfit"
HEAD_FILE = "head.safetensors"
# Bias of a class the head never saw in training (its sklearn `classes_` lacks it): the
# class can never win the argmax and gets probability exp(-1e4) = 0, as in predict_proba.
_ABSENT_CLASS_BIAS = -1e4


class FewShotModel:
    """A loaded few-shot model: a SentenceTransformer body and a linear head.

    `logits(texts)` returns raw scores (n, num_classes); softmax of them is the class
    probabilities (exactly predict_proba for logistic-regression and SetFit heads).
    """

    def __init__(
        self,
        body: Any,
        weight: np.ndarray,
        bias: np.ndarray,
        meta: ModelMeta,
        tfidf: TfidfHead | None = None,
    ) -> None:
        self.body = body
        self.weight = np.asarray(weight, dtype=np.float64)
        self.bias = np.asarray(bias, dtype=np.float64)
        self.meta = meta
        self.tfidf = tfidf  # logreg_tfidf: probabilities averaged with a TF-IDF classifier

    @property
    def num_classes(self) -> int:
        return int(self.weight.shape[0])

    @property
    def tokenizer(self) -> Any:
        """The body's tokenizer (for callers that expect a (model, tokenizer) pair)."""
        return getattr(self.body, "tokenizer", None)

    def to(self, device: Any) -> FewShotModel:
        """Move the body to `device` (the head runs in numpy); returns self."""
        self.body.to(device)
        return self

    def eval(self) -> FewShotModel:
        self.body.eval()
        return self

    def embed(self, texts: list[str] | tuple[str, ...], batch_size: int = 64) -> np.ndarray:
        """Sentence embeddings (n, dim), normalised when the model was trained so."""
        if not texts:
            return np.zeros((0, self.weight.shape[1]), dtype=np.float32)
        return np.asarray(
            self.body.encode(
                list(texts),
                batch_size=batch_size,
                normalize_embeddings=self.meta.normalize_embeddings,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        )

    def logits(self, texts: list[str] | tuple[str, ...], batch_size: int = 64) -> np.ndarray:
        """Raw head outputs, shape (n, num_classes), in input order."""
        emb = self.embed(texts, batch_size).astype(np.float64)
        out = emb @ self.weight.T + self.bias
        if self.tfidf is not None and len(texts):
            out = average_logits(out, self.tfidf.logits(texts))
        return out.astype(np.float32)


def save_fewshot_dir(
    model: Any, meta: ModelMeta, path: str | Path, tfidf: TfidfHead | None = None
) -> Path:
    """Save a trained `setfit.SetFitModel` as a few-shot model folder.

    The head must be linear: a fitted sklearn classifier with `coef_`/`intercept_`
    (LogisticRegression, LinearSVC, RidgeClassifier, SGDClassifier...) or SetFit's
    differentiable `SetFitHead` (single-label). Its class ids are positions in
    `meta.label_names` (sklearn heads may also be fitted on the names themselves).
    automl.json records format "setfit", the head's class name, whether embeddings are
    normalised, and the body's max_seq_length as max_length. With `tfidf` (the
    logreg_tfidf method) its files are saved too, and predictions average both. Returns
    the folder.
    """
    path = Path(path)
    if meta.task != "classification":
        raise ModelError(
            f"cannot save a {meta.task} model as a few-shot (SetFit) folder: SetFit is "
            "classification-only; train regression targets with the finetune track"
        )
    if getattr(model, "multi_target_strategy", None):
        raise ModelError(
            f"SetFit multi-target strategy {model.multi_target_strategy!r} is not supported: "
            "automl trains single-label classifiers; leave multi_target_strategy unset"
        )
    body = model.model_body
    weight, bias = _linear_head(model.model_head, meta.label_names)
    dim = _embedding_dimension(body)
    if dim is not None and weight.shape[1] != dim:
        raise ModelError(
            f"the head expects {weight.shape[1]}-dimensional embeddings but the body makes "
            f"{dim}: fit the head on this body's embeddings"
        )
    max_length = body.max_seq_length or meta.max_length
    if max_length != meta.max_length:
        logger.warning(
            "max_length %s in the metadata differs from the body's max_seq_length %s; "
            "saving the body's (it is what the model was evaluated with)",
            meta.max_length,
            max_length,
        )
    meta = replace(
        meta,
        format=FORMAT,
        max_length=int(max_length),
        head=type(model.model_head).__name__ + ("+TfidfHead" if tfidf is not None else ""),
        normalize_embeddings=bool(getattr(model, "normalize_embeddings", False)),
    )

    path.mkdir(parents=True, exist_ok=True)
    # SetFit maps predicted class ids to names through `labels`; set them for the saved
    # config_setfit.json without leaving the caller's model changed.
    old_labels = model.labels
    if old_labels is None and meta.label_names:
        model.labels = list(meta.label_names)
    try:
        model.save_pretrained(str(path))
    finally:
        model.labels = old_labels
    _write_head(path / HEAD_FILE, weight, bias, meta.head)
    if tfidf is not None:
        tfidf.save(path)
    write_meta(meta, path)  # last: a folder with automl.json is complete
    return path


def load_fewshot_dir(path: str | Path) -> FewShotModel:
    """Load a few-shot model folder, offline, without remote code and without unpickling."""
    ensure_offline()
    path = Path(path)
    meta = read_meta(path)
    if meta.format != FORMAT:
        raise ModelError(
            f"{path} holds a {meta.format!r} model, not a few-shot ({FORMAT!r}) one: load it "
            "with automl.modelio.load_model_dir, which reads either"
        )
    weight, bias = _read_head(path, meta)
    from sentence_transformers import SentenceTransformer

    quiet_transformers()
    try:
        body = SentenceTransformer(
            str(path),
            device=str(select_device()),
            local_files_only=True,
            trust_remote_code=False,
        )
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(
            f"cannot load the sentence-embedding body in {path}: {exc}; the folder needs "
            "modules.json, the transformer's config, weights and tokenizer: export it again"
        ) from exc
    # automl.json is the record of what the model was evaluated with.
    if body.max_seq_length != meta.max_length:
        logger.warning(
            "%s: the body's max_seq_length %s differs from automl.json's max_length %s; using %s",
            path,
            body.max_seq_length,
            meta.max_length,
            meta.max_length,
        )
        body.max_seq_length = meta.max_length
    dim = _embedding_dimension(body)
    if dim is not None and dim != weight.shape[1]:
        raise ModelError(
            f"{path / HEAD_FILE} expects {weight.shape[1]}-dimensional embeddings but the "
            f"body in {path} makes {dim}: the head and the body come from different "
            "models; export the model again"
        )
    body.eval()
    tfidf = TfidfHead.load(path) if (path / TFIDF_FILES[0]).is_file() else None
    return FewShotModel(body, weight, bias, meta, tfidf)


def _embedding_dimension(body: Any) -> int | None:
    """The body's output width (sentence-transformers 6 renamed the method)."""
    get = getattr(body, "get_embedding_dimension", None)
    if get is None:  # sentence-transformers < 6
        get = body.get_sentence_embedding_dimension
    dim = get()
    return None if dim is None else int(dim)


def _linear_head(head: Any, label_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(weight (num_classes, dim), bias (num_classes,)) reproducing the head's decision."""
    if hasattr(head, "linear") and hasattr(head, "multitarget"):  # setfit.SetFitHead
        return _setfit_head(head, label_names)
    coef = getattr(head, "coef_", None)
    intercept = getattr(head, "intercept_", None)
    classes = getattr(head, "classes_", None)
    if coef is None or classes is None:
        raise ModelError(
            f"head {type(head).__name__} is not a fitted linear classifier (no coef_ and "
            "classes_): use LogisticRegression, LinearSVC, RidgeClassifier or SetFitHead, "
            "and fit it before saving"
        )
    coef = np.asarray(coef, dtype=np.float64)
    if coef.ndim == 1:  # binary RidgeClassifier: coef_ (dim,)
        coef = coef[None, :]
    if coef.ndim != 2:
        raise ModelError(
            f"head {type(head).__name__} has a coef_ of shape {coef.shape}: a dense "
            "(classes, dim) matrix is needed (sparse or multi-output heads are not supported)"
        )
    intercept = (
        np.zeros(coef.shape[0]) if intercept is None else np.atleast_1d(intercept).astype(float)
    )
    ids = _class_ids(list(classes), label_names)
    num_classes = len(label_names) if label_names else len(ids)
    if len(ids) == 2 and coef.shape[0] == 1:
        # Binary sklearn heads score the second class: decision = x @ coef + b. Logits
        # [0, decision] give the same argmax, and their softmax is sigmoid(decision),
        # which is logistic regression's predict_proba.
        coef = np.vstack([np.zeros_like(coef), coef])
        intercept = np.array([0.0, intercept[0]])
    if coef.shape[0] != len(ids) or intercept.shape != (len(ids),):
        raise ModelError(
            f"head {type(head).__name__} has coef_ {coef.shape} and intercept_ "
            f"{intercept.shape} for {len(ids)} classes: expected one row per class"
        )
    weight = np.zeros((num_classes, coef.shape[1]))
    bias = np.full(num_classes, _ABSENT_CLASS_BIAS)
    weight[ids] = coef
    bias[ids] = intercept
    return weight, bias


def _class_ids(classes: list[Any], label_names: list[str]) -> list[int]:
    """Positions in label_names of a head's classes_ (class ids, or the names themselves)."""
    ids: list[int] = []
    for c in classes:
        if isinstance(c, int | np.integer):
            ids.append(int(c))
        elif label_names and str(c) in label_names:
            ids.append(label_names.index(str(c)))
        else:
            raise ModelError(
                f"the head's class {c!r} is neither a class id nor one of the label names "
                f"{label_names}: fit the head on class ids 0..{max(len(label_names), 1) - 1}"
            )
    bound = len(label_names) if label_names else len(classes)
    if any(i < 0 or i >= bound for i in ids) or len(set(ids)) != len(ids):
        raise ModelError(
            f"the head's classes {classes} are not distinct class ids in 0..{bound - 1} "
            f"(label names: {label_names}): fit the head on the ids of the label names"
        )
    return ids


def _setfit_head(head: Any, label_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """SetFitHead: logits = linear(x) / (temperature + eps), then softmax (setfit 1.2.0)."""
    if head.multitarget:
        raise ModelError(
            "SetFitHead with multitarget=True (one sigmoid per class) is not supported: "
            "automl trains single-label classifiers; build the head with multitarget=False"
        )
    linear = head.linear
    weight = linear.weight.detach().cpu().double().numpy()
    if weight.ndim != 2 or weight.size == 0:
        raise ModelError(
            "the SetFitHead's linear layer is not initialised (LazyLinear before any "
            "forward pass): train the head before saving, or give it in_features"
        )
    bias = (
        np.zeros(weight.shape[0])
        if linear.bias is None
        else linear.bias.detach().cpu().double().numpy()
    )
    if label_names and weight.shape[0] != len(label_names):
        raise ModelError(
            f"the SetFitHead has {weight.shape[0]} outputs for {len(label_names)} classes "
            f"{label_names}: build it with out_features={len(label_names)}"
        )
    scale = float(head.temperature) + float(head.eps)
    return weight / scale, bias / scale


def _write_head(file: Path, weight: np.ndarray, bias: np.ndarray, kind: str) -> None:
    from safetensors.numpy import save_file

    save_file(
        {
            "weight": np.ascontiguousarray(weight, dtype=np.float32),
            "bias": np.ascontiguousarray(bias, dtype=np.float32),
        },
        str(file),
        metadata={"format": "automl-linear-head", "head": kind},
    )


def _read_head(path: Path, meta: ModelMeta) -> tuple[np.ndarray, np.ndarray]:
    """weight, bias from head.safetensors, checked; a ModelError that says how to fix it."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    file = path / HEAD_FILE
    if not file.is_file():
        raise ModelError(
            f"{path} is a few-shot (setfit) model folder without its head file {HEAD_FILE}: "
            "export or save the model again with automl (model_head.pkl, if present, is "
            "never loaded: unpickling a file from a folder can run arbitrary code)"
        )
    try:
        tensors = load_file(str(file))
    except (OSError, SafetensorError, ValueError) as exc:
        raise ModelError(f"{file} is corrupt ({exc}): export or save the model again") from exc
    weight, bias = tensors.get("weight"), tensors.get("bias")
    if weight is None or bias is None:
        raise ModelError(
            f"{file} lacks the tensors 'weight' and 'bias' (found {sorted(tensors)}): "
            "export or save the model again"
        )
    n = len(meta.label_names) if meta.label_names else weight.shape[0]
    if weight.ndim != 2 or weight.shape[0] != n or bias.shape != (n,):
        raise ModelError(
            f"{file} has weight {tuple(weight.shape)} and bias {tuple(bias.shape)}, expected "
            f"({n}, dim) and ({n},) for the classes {meta.label_names}: export the model again"
        )
    if not (np.isfinite(weight).all() and np.isfinite(bias).all()):
        raise ModelError(f"{file} holds non-finite values: export the model again")
    return weight.astype(np.float64), bias.astype(np.float64)
