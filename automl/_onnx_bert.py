"""Convert a BERT encoder exported to ONNX back into a transformers `BertModel` folder.

Private helper of `automl.backbones` (the S rung ships as ONNX only). The torch exporter
keeps the parameter names of embeddings, biases and LayerNorms, but turns every Linear
weight into an anonymous, transposed `MatMul` initializer (`onnx::MatMul_470`); those are
named here by the bias that the graph adds right after the product. Everything the
config needs is read from tensor shapes and graph attributes, and the result is checked
against onnxruntime before it is accepted.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from automl.errors import AssetError

logger = logging.getLogger(__name__)

_ROOTS = ("embeddings.", "encoder.", "pooler.")
_LAYER_RE = re.compile(r"^encoder\.layer\.(\d+)\.")
# Sentences for the onnxruntime check: mixed lengths so padding is exercised.
CHECK_TEXTS = (
    "A quick check that the converted encoder matches the original.",
    "Short one.",
    "Tokenizers split unbelievably long words like antidisestablishmentarianism.",
    "Numbers 123, punctuation!? and UPPER case survive lower-casing.",
)


def _bert_key(name: str) -> str | None:
    """`model.0.auto_model.encoder.layer.0.output.dense.bias` -> `encoder.layer.0...`."""
    for root in _ROOTS:
        i = name.find(root)
        if i == 0 or (i > 0 and name[i - 1] == "."):
            return name[i:]
    return None


def _tensors(graph: Any) -> dict[str, np.ndarray]:
    """Every constant tensor of the graph: initializers and Constant-node outputs."""
    from onnx import numpy_helper

    out = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    out[node.output[0]] = numpy_helper.to_array(attr.t)
    return out


def _collect_weights(graph: Any, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """BERT state-dict keys -> arrays, with Linear weights as (out, in) like torch."""
    weights: dict[str, np.ndarray] = {}
    for name, arr in tensors.items():
        key = _bert_key(name)
        if key is not None and arr.dtype.kind == "f":
            weights[key] = arr.astype(np.float32)
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for inp in node.input:
            consumers.setdefault(inp, []).append(node)
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm") or len(node.input) < 2:
            continue
        w_name = node.input[1]
        w = tensors.get(w_name)
        if w is None or w.ndim != 2 or _bert_key(w_name) is not None:
            continue
        if node.op_type == "Gemm":
            trans_b = any(a.name == "transB" and a.i == 1 for a in node.attribute)
            bias_name = node.input[2] if len(node.input) > 2 else ""
        else:
            trans_b = False  # x @ W: W is stored (in, out)
            adds = [n for n in consumers.get(node.output[0], []) if n.op_type == "Add"]
            bias_name = next(
                (i for a in adds for i in a.input if _bert_key(i) and i.endswith(".bias")), ""
            )
        key = _bert_key(bias_name) if bias_name else None
        if key is None or not key.endswith(".bias"):
            raise AssetError(
                f"ONNX {node.op_type} weight {w_name!r} is not followed by a named bias, so "
                "it cannot be mapped to a BERT parameter: the file is not a BERT encoder "
                "exported by torch; reinstall the backbone package"
            )
        weights[key[: -len(".bias")] + ".weight"] = np.ascontiguousarray(
            w if trans_b else w.T, dtype=np.float32
        )
    return weights


def _num_heads(graph: Any, tensors: dict[str, np.ndarray], hidden: int) -> int:
    """Read the head count from the attention scale: scores / sqrt(head_dim)."""
    producer = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.op_type not in ("Div", "Mul") or len(node.input) != 2:
            continue
        src = producer.get(node.input[0])
        scale = tensors.get(node.input[1])
        # Q @ K^T is the only MatMul between two activations (no weight input).
        if src is None or src.op_type != "MatMul" or scale is None or scale.size != 1:
            continue
        if any(i in tensors for i in src.input):
            continue
        c = float(scale.reshape(()))
        head_dim = round(c * c) if node.op_type == "Div" else round(1.0 / (c * c))
        if head_dim > 0 and hidden % head_dim == 0:
            return hidden // head_dim
    raise AssetError(
        "cannot find the attention scale in the ONNX graph to infer the number of heads: "
        "the file is not a standard BERT export; reinstall the backbone package"
    )


def _infer_config(graph: Any, tensors: dict[str, np.ndarray], w: dict[str, np.ndarray]) -> Any:
    from transformers import BertConfig

    try:
        vocab, hidden = w["embeddings.word_embeddings.weight"].shape
        max_pos = w["embeddings.position_embeddings.weight"].shape[0]
        type_vocab = w["embeddings.token_type_embeddings.weight"].shape[0]
        intermediate = w["encoder.layer.0.intermediate.dense.weight"].shape[0]
    except KeyError as exc:
        raise AssetError(
            f"the ONNX graph has no {exc.args[0]!r}: it is not a BERT encoder; reinstall the "
            "backbone package"
        ) from exc
    layers = 1 + max(int(m.group(1)) for k in w if (m := _LAYER_RE.match(k)))
    eps = 1e-12
    for node in graph.node:
        if node.op_type == "LayerNormalization":
            eps = next((a.f for a in node.attribute if a.name == "epsilon"), eps)
            break
    ops = {n.op_type for n in graph.node}
    return BertConfig(
        vocab_size=int(vocab),
        hidden_size=int(hidden),
        num_hidden_layers=layers,
        num_attention_heads=_num_heads(graph, tensors, int(hidden)),
        intermediate_size=int(intermediate),
        hidden_act="gelu" if "Erf" in ops else "gelu_new",  # exact erf GELU vs tanh form
        max_position_embeddings=int(max_pos),
        type_vocab_size=int(type_vocab),
        layer_norm_eps=float(f"{eps:.3g}"),  # float32 attr 9.99999996e-13 -> 1e-12
        pad_token_id=0,
        architectures=["BertModel"],
    )


def convert(onnx_path: Path, out_dir: Path) -> dict[str, Any]:
    """Write config.json and model.safetensors of a `BertModel` into out_dir.

    Returns facts for the manifest (config summary, whether a pooler was synthesised).
    """
    import onnx
    import torch
    from transformers import BertModel

    graph = onnx.load(str(onnx_path)).graph
    tensors = _tensors(graph)
    weights = _collect_weights(graph, tensors)
    config = _infer_config(graph, tensors, weights)
    pooler_added = "pooler.dense.weight" not in weights
    if pooler_added:
        # The sentence-transformers export has no pooler; identity keeps the [CLS] vector
        # (up to tanh) so AutoModelForSequenceClassification starts from something sane.
        weights["pooler.dense.weight"] = np.eye(config.hidden_size, dtype=np.float32)
        weights["pooler.dense.bias"] = np.zeros(config.hidden_size, dtype=np.float32)
    model = BertModel(config, add_pooling_layer=True)
    expected = model.state_dict()
    state = {k: torch.from_numpy(v) for k, v in weights.items() if k in expected}
    missing = sorted(set(expected) - set(state) - {"embeddings.position_ids"})
    extra = sorted(set(weights) - set(expected))
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise AssetError(
                f"ONNX tensor for {key} has shape {tuple(value.shape)}, BERT expects "
                f"{tuple(expected[key].shape)}: the file is not a standard BERT export"
            )
    if missing or extra:
        raise AssetError(
            f"ONNX to BERT mapping incomplete: missing {missing[:5]}, unexpected {extra[:5]}"
        )
    model.load_state_dict(state, strict=False)
    model.save_pretrained(out_dir, safe_serialization=True)
    logger.debug("converted %s: %s", onnx_path.name, config.to_diff_dict())
    return {
        "onnx_file": onnx_path.name,
        "num_hidden_layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "num_attention_heads": config.num_attention_heads,
        "intermediate_size": config.intermediate_size,
        "params": int(sum(p.numel() for p in model.parameters())),
        "pooler": "identity-initialised (not in the ONNX graph)" if pooler_added else "onnx",
    }


def max_abs_diff(onnx_path: Path, model_dir: Path, texts: tuple[str, ...] = CHECK_TEXTS) -> float:
    """Largest |onnxruntime - BertModel| over the last hidden states of real (unpadded) tokens."""
    import onnxruntime as ort
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(
        str(model_dir), local_files_only=True, trust_remote_code=False
    )
    model = AutoModel.from_pretrained(
        str(model_dir), local_files_only=True, trust_remote_code=False
    ).eval()
    enc = tok(list(texts), padding=True, return_tensors="np")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    feed = {i.name: enc[i.name].astype(np.int64) for i in sess.get_inputs() if i.name in enc}
    hidden = model.config.hidden_size
    outs = sess.run(None, feed)
    ref = next((o for o in outs if getattr(o, "ndim", 0) == 3 and o.shape[-1] == hidden), None)
    if ref is None:
        raise AssetError(f"{onnx_path} has no (batch, tokens, {hidden}) output to compare")
    with torch.inference_mode():
        ours = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).last_hidden_state
    mask = enc["attention_mask"].astype(bool)
    return float(np.abs(ours.numpy() - ref)[mask].max())
