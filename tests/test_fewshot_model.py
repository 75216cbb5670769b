"""The few-shot model folder: SetFit save, safe head.safetensors load, predict and evaluate,
on a tiny random BERT body (fast, offline)."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from helpers import FILLER, TOPIC_WORDS

from automl import cli
from automl.errors import ModelError
from automl.export import evaluate
from automl.fewshot_model import HEAD_FILE, FewShotModel, load_fewshot_dir, save_fewshot_dir
from automl.modelio import META_FILE, ModelMeta, load_model_dir, predict_logits, read_meta
from automl.predict import Predictor, predict_file

setfit = pytest.importorskip("setfit")
sentence_transformers = pytest.importorskip("sentence_transformers")

_WORDS, _FILLER = TOPIC_WORDS, FILLER


def _texts(num_classes: int, per_class: int = 12, seed: int = 0) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    names = list(_WORDS)[:num_classes]
    texts, labels = [], []
    for i in range(per_class * num_classes):
        k = i % num_classes
        words = rng.sample(_FILLER, 3) + rng.sample(_WORDS[names[k]], 2)
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(k)
    return texts, labels


def _meta(num_classes: int, max_length: int = 128) -> ModelMeta:
    return ModelMeta(
        task="classification",
        label_names=list(_WORDS)[:num_classes],
        max_length=max_length,
        backbone="tiny-bert",
        text_columns=["text"],
    )


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture
def body(tiny_backbone: Path) -> Any:
    """A fresh SentenceTransformer (mean pooling) on the tiny random BERT, on the CPU."""
    return sentence_transformers.SentenceTransformer(
        str(tiny_backbone), device="cpu", local_files_only=True, trust_remote_code=False
    )


def _sklearn_model(body: Any, head: Any, num_classes: int, normalize: bool = False) -> Any:
    texts, labels = _texts(num_classes)
    emb = body.encode(texts, normalize_embeddings=normalize, show_progress_bar=False)
    head.fit(emb, labels)
    return setfit.SetFitModel(model_body=body, model_head=head, normalize_embeddings=normalize)


def _logistic() -> Any:
    from sklearn.linear_model import LogisticRegression

    # A large C on random embeddings, so predictions vary and argmax comparisons mean something.
    return LogisticRegression(C=100.0, max_iter=2000)


def _not_constant(preds: Any) -> None:
    assert len(set(np.asarray(preds).tolist())) > 1, "predictions are all one class"


# --- logistic regression: argmax and probabilities ---------------------------------------


@pytest.mark.parametrize(("num_classes", "normalize"), [(2, False), (3, False), (3, True)])
def test_logistic_head_round_trip(
    body: Any, tmp_path: Path, num_classes: int, normalize: bool
) -> None:
    model = _sklearn_model(body, _logistic(), num_classes, normalize)
    texts, _ = _texts(num_classes, seed=1)
    expected = np.asarray(model.predict(texts))
    expected_proba = np.asarray(model.predict_proba(texts, as_numpy=True))
    _not_constant(expected)

    path = save_fewshot_dir(model, _meta(num_classes), tmp_path / "m")
    loaded = load_fewshot_dir(path)
    logits = loaded.logits(texts)

    assert logits.shape == (len(texts), num_classes)
    assert logits.dtype == np.float32
    np.testing.assert_array_equal(logits.argmax(axis=1), expected)
    np.testing.assert_allclose(_softmax(logits.astype(np.float64)), expected_proba, atol=1e-5)

    # The standard SetFit folder: users load it with SetFitModel.from_pretrained, and it
    # maps class ids to the label names.
    reloaded = setfit.SetFitModel.from_pretrained(str(path), local_files_only=True)
    names = _meta(num_classes).label_names
    assert reloaded.predict(texts) == [names[i] for i in expected]
    assert model.labels is None  # the caller's model is left as it was

    meta = read_meta(path)
    assert (meta.format, meta.head, meta.normalize_embeddings) == (
        "setfit",
        "LogisticRegression",
        normalize,
    )
    with np.testing.assert_raises(AssertionError):  # the head really is applied
        np.testing.assert_allclose(logits, loaded.logits(texts[::-1]))


def test_head_file_is_a_dense_linear_map(body: Any, tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    model = _sklearn_model(body, _logistic(), 2)
    path = save_fewshot_dir(model, _meta(2), tmp_path / "m")
    head = load_file(str(path / HEAD_FILE))
    assert head["weight"].shape == (2, 32) and head["bias"].shape == (2,)
    # binary: rows [0, coef], biases [0, intercept]
    np.testing.assert_array_equal(head["weight"][0], 0.0)
    np.testing.assert_allclose(head["weight"][1], model.model_head.coef_[0], rtol=1e-6)
    np.testing.assert_allclose(head["bias"], [0.0, model.model_head.intercept_[0]], rtol=1e-6)


# --- other heads ---------------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [2, 3])
def test_linear_svc_and_ridge_heads_round_trip(
    body: Any, tmp_path: Path, num_classes: int
) -> None:
    from sklearn.linear_model import RidgeClassifier
    from sklearn.svm import LinearSVC

    texts, _ = _texts(num_classes, seed=1)
    for head in (LinearSVC(C=10.0, max_iter=20_000), RidgeClassifier(alpha=1e-3)):
        model = _sklearn_model(body, head, num_classes)
        expected = np.asarray(model.predict(texts))
        _not_constant(expected)
        path = save_fewshot_dir(model, _meta(num_classes), tmp_path / type(head).__name__)
        logits = load_fewshot_dir(path).logits(texts)
        np.testing.assert_array_equal(logits.argmax(axis=1), expected)
        decision = head.decision_function(model.encode(texts))
        # binary heads score the second class: logits [0, decision]
        got = logits[:, 1] - logits[:, 0] if num_classes == 2 else logits
        np.testing.assert_allclose(got, decision, rtol=1e-4, atol=1e-4)


def test_head_fitted_on_label_names(body: Any, tmp_path: Path) -> None:
    texts, labels = _texts(3)
    names = _meta(3).label_names
    head = _logistic().fit(body.encode(texts, show_progress_bar=False), [names[y] for y in labels])
    model = setfit.SetFitModel(model_body=body, model_head=head)
    test_texts, _ = _texts(3, seed=1)
    expected = list(model.predict(test_texts))  # names, in the head's (sorted) class order
    path = save_fewshot_dir(model, _meta(3), tmp_path / "m")
    logits = load_fewshot_dir(path).logits(test_texts)
    assert [names[i] for i in logits.argmax(axis=1)] == expected


def test_class_missing_from_training_is_never_predicted(body: Any, tmp_path: Path) -> None:
    texts, labels = _texts(3)
    keep = [i for i, y in enumerate(labels) if y != 1]
    emb = body.encode([texts[i] for i in keep], show_progress_bar=False)
    head = _logistic().fit(emb, [labels[i] for i in keep])  # classes_ [0, 2]
    model = setfit.SetFitModel(model_body=body, model_head=head)
    test_texts, _ = _texts(3, seed=1)
    path = save_fewshot_dir(model, _meta(3), tmp_path / "m")
    logits = load_fewshot_dir(path).logits(test_texts)
    np.testing.assert_array_equal(logits.argmax(axis=1), model.predict(test_texts))
    probs = _softmax(logits.astype(np.float64))
    np.testing.assert_allclose(probs[:, [0, 2]], model.predict_proba(test_texts), atol=1e-5)
    assert probs[:, 1].max() < 1e-12


@pytest.mark.parametrize("num_classes", [2, 3])
def test_differentiable_setfit_head_round_trip(
    body: Any, tmp_path: Path, num_classes: int
) -> None:
    import torch
    from setfit.modeling import SetFitHead

    # Random weights on a random body predict one class for everything; start the head
    # from a fitted logistic regression instead (rows [-coef/2, coef/2] when binary).
    fitted = _sklearn_model(body, _logistic(), num_classes).model_head
    coef = fitted.coef_ if num_classes > 2 else np.vstack([-fitted.coef_, fitted.coef_]) / 2
    head = SetFitHead(in_features=32, out_features=num_classes, temperature=0.5, device="cpu")
    with torch.no_grad():
        head.linear.weight.copy_(torch.from_numpy(coef))
        head.linear.bias.copy_(torch.linspace(-0.3, 0.3, num_classes))
    model = setfit.SetFitModel(model_body=body, model_head=head)
    texts, _ = _texts(num_classes, seed=1)
    expected = model.predict(texts, as_numpy=True)
    expected_proba = model.predict_proba(texts, as_numpy=True)
    _not_constant(expected)

    path = save_fewshot_dir(model, _meta(num_classes), tmp_path / "m")
    logits = load_fewshot_dir(path).logits(texts)
    np.testing.assert_array_equal(logits.argmax(axis=1), expected)
    np.testing.assert_allclose(_softmax(logits.astype(np.float64)), expected_proba, atol=1e-5)
    assert read_meta(path).head == "SetFitHead"


def test_unsupported_heads_are_refused(body: Any, tmp_path: Path) -> None:
    import torch
    from setfit.modeling import SetFitHead
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    tree = _sklearn_model(body, DecisionTreeClassifier(), 2)
    with pytest.raises(ModelError, match="not a fitted linear classifier"):
        save_fewshot_dir(tree, _meta(2), tmp_path / "tree")
    unfitted = setfit.SetFitModel(model_body=body, model_head=LogisticRegression())
    with pytest.raises(ModelError, match="fit it before saving"):
        save_fewshot_dir(unfitted, _meta(2), tmp_path / "unfitted")
    torch.manual_seed(0)
    multi = SetFitHead(in_features=32, out_features=3, multitarget=True, device="cpu")
    with pytest.raises(ModelError, match="multitarget"):
        save_fewshot_dir(
            setfit.SetFitModel(model_body=body, model_head=multi), _meta(3), tmp_path / "mt"
        )
    wrong_width = SetFitHead(in_features=32, out_features=2, device="cpu")
    with pytest.raises(ModelError, match="out_features=3"):
        save_fewshot_dir(
            setfit.SetFitModel(model_body=body, model_head=wrong_width), _meta(3), tmp_path / "w"
        )
    model = _sklearn_model(body, _logistic(), 2)
    with pytest.raises(ModelError, match="classification-only"):
        save_fewshot_dir(model, replace(_meta(2), task="regression"), tmp_path / "reg")


# --- max_length ----------------------------------------------------------------------------


def test_max_seq_length_is_the_bodys_and_survives_the_round_trip(
    body: Any, tmp_path: Path
) -> None:
    body.max_seq_length = 40
    model = _sklearn_model(body, _logistic(), 2)
    path = save_fewshot_dir(model, _meta(2, max_length=64), tmp_path / "m")
    assert read_meta(path).max_length == 40  # what the model was evaluated with
    assert load_fewshot_dir(path).body.max_seq_length == 40

    # automl.json wins over a body file edited afterwards
    cfg_path = path / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["model_max_length"] = 100
    cfg_path.write_text(json.dumps(cfg))
    assert load_fewshot_dir(path).body.max_seq_length == 40


# --- transparent use by modelio, export and predict ----------------------------------------


@pytest.fixture
def saved(body: Any, tmp_path: Path) -> tuple[Path, Any]:
    model = _sklearn_model(body, _logistic(), 3)
    return save_fewshot_dir(model, _meta(3), tmp_path / "fewshot"), model


def test_load_model_dir_dispatches_on_format(saved: tuple[Path, Any]) -> None:
    path, model = saved
    loaded, tokenizer, meta = load_model_dir(path)
    assert isinstance(loaded, FewShotModel)
    assert meta.format == "setfit" and tokenizer is not None
    texts, _ = _texts(3, seed=1)
    logits = predict_logits(loaded, tokenizer, texts, meta.max_length)
    np.testing.assert_array_equal(logits.argmax(axis=1), model.predict(texts))
    assert predict_logits(loaded, tokenizer, [], meta.max_length).shape == (0, 3)


def test_evaluate_and_predict_work_on_a_setfit_folder(
    saved: tuple[Path, Any], tmp_path: Path
) -> None:
    path, model = saved
    texts, labels = _texts(3, seed=1)
    expected = np.asarray(model.predict(texts))
    metrics = evaluate(path, tuple(texts), tuple(labels))
    assert metrics["accuracy"] == pytest.approx(float(np.mean(expected == np.asarray(labels))))

    names = _meta(3).label_names
    assert Predictor(path).predict(texts) == [names[i] for i in expected]
    csv = tmp_path / "data.csv"
    pd.DataFrame({"text": texts}).to_csv(csv, index=False)
    out = predict_file(path, csv, tmp_path / "pred.csv")
    assert out["prediction"].tolist() == [names[i] for i in expected]
    probs = out[[f"proba_{n}" for n in names]].to_numpy()
    np.testing.assert_allclose(probs, model.predict_proba(texts, as_numpy=True), atol=1e-5)

    result = CliRunner().invoke(cli.main, ["predict", str(path), str(csv)])
    assert result.exit_code == 0, result.output
    assert "prediction" in result.output.splitlines()[0]


# --- safety and errors ---------------------------------------------------------------------


def test_model_head_pkl_is_never_unpickled(saved: tuple[Path, Any]) -> None:
    path, model = saved
    (path / "model_head.pkl").write_bytes(b"not a pickle: loading this would raise")
    texts, _ = _texts(3, seed=1)
    logits = load_fewshot_dir(path).logits(texts)
    np.testing.assert_array_equal(logits.argmax(axis=1), model.predict(texts))


def test_missing_head_file_is_a_model_error(saved: tuple[Path, Any]) -> None:
    path, _ = saved
    (path / HEAD_FILE).unlink()
    with pytest.raises(ModelError, match=r"without its head file head\.safetensors.*again"):
        load_fewshot_dir(path)
    with pytest.raises(ModelError, match="head.safetensors"):
        Predictor(path)


def test_corrupt_head_file_is_a_model_error(saved: tuple[Path, Any]) -> None:
    path, _ = saved
    (path / HEAD_FILE).write_bytes(b"\x00" * 5)
    with pytest.raises(ModelError, match="corrupt"):
        load_fewshot_dir(path)


def test_head_with_wrong_shape_is_a_model_error(saved: tuple[Path, Any]) -> None:
    from safetensors.numpy import save_file

    path, _ = saved
    save_file(
        {"weight": np.zeros((2, 32), np.float32), "bias": np.zeros(2, np.float32)},
        str(path / HEAD_FILE),
    )
    with pytest.raises(ModelError, match=r"expected \(3, dim\)"):
        load_fewshot_dir(path)
    save_file({"w": np.zeros((3, 32), np.float32)}, str(path / HEAD_FILE))
    with pytest.raises(ModelError, match="lacks the tensors"):
        load_fewshot_dir(path)


def test_unknown_format_and_old_meta(saved: tuple[Path, Any]) -> None:
    path, _ = saved
    raw = json.loads((path / META_FILE).read_text())
    (path / META_FILE).write_text(json.dumps({**raw, "format": "onnx"}))
    with pytest.raises(ModelError, match="'onnx'.*upgrade automl"):
        load_model_dir(path)
    # automl.json written before the setfit fields existed still reads, with defaults
    old = {k: v for k, v in raw.items() if k not in ("head", "normalize_embeddings")}
    (path / META_FILE).write_text(json.dumps({**old, "format": "transformers"}))
    meta = read_meta(path)
    assert (meta.head, meta.normalize_embeddings) == ("", False)
