"""Image datasets: the IDX parser, and folder builds in a temporary cache (no apt, no network).

The real Fashion-MNIST build (apt-get download, 70,000 PNGs) is marked slow.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import shutil
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from automl._files import sha256_file
from automl.datasets import images
from automl.errors import AssetError, DataError


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AUTOML_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "datasets"


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _index(folder: Path) -> list[dict[str, str]]:
    with (folder / "index.csv").open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------------ IDX


def test_read_idx_round_trips_a_3d_uint8_array() -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    parsed = images.read_idx(_idx(array))
    assert parsed.dtype == np.uint8 and parsed.shape == (2, 3, 4)
    np.testing.assert_array_equal(parsed, array)
    np.testing.assert_array_equal(images.read_idx(_idx(np.array([7, 0, 9]))), [7, 0, 9])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x01\x00\x08\x01" + b"\x00\x00\x00\x01" + b"\x05", "not an IDX file"),
        (b"", "not an IDX file"),
        (b"\x00\x00\x0d\x01" + b"\x00\x00\x00\x01" + b"\x00" * 4, "dtype code 0x0d"),
        (b"\x00\x00\x08\x03" + b"\x00\x00\x00\x02", "truncated: its IDX header"),
        (_idx(np.zeros((2, 3, 3)))[:-1], "truncated: shape (2, 3, 3) needs 18 bytes"),
        (_idx(np.zeros((2, 2))) + b"\x00", "longer than its header says"),
    ],
)
def test_read_idx_rejects_bad_data(data: bytes, message: str) -> None:
    with pytest.raises(DataError, match="re-download|IDX|dtype") as exc:
        images.read_idx(data, source="x.idx")
    assert message in str(exc.value) and "x.idx" in str(exc.value)


# --------------------------------------------------------------------------------- digits


def test_digits_builds_a_class_folder_dataset_and_reuses_it(cache: Path) -> None:
    with pytest.raises(AssetError, match="automl assets fetch --datasets"):
        images.image_dataset_path("digits", fetch=False)
    folder = images.image_dataset_path("digits")
    assert folder == cache / "digits"
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == [str(d) for d in range(10)]
    pngs = sorted(folder.glob("*/*.png"))
    assert len(pngs) == 1797
    rows = _index(folder)
    assert len(rows) == 1797 and {r["image"] for r in rows} == {
        p.relative_to(folder).as_posix() for p in pngs
    }
    assert Counter(r["split"] for r in rows) == {"train": 1437, "test": 360}
    info = images.IMAGE_DATASETS["digits"]
    for split, expected in info.expected.items():
        found = Counter(r["label"] for r in rows if r["split"] == split)
        assert tuple(found[c] for c in info.classes) == expected
    assert all(r["image"].startswith(f"{r['label']}/{r['split']}-") for r in rows)

    # Pixels: 0..16 scaled to 0..255, 8x8 grayscale, the sample index in the file name.
    from sklearn.datasets import load_digits

    digits = load_digits()
    first = next(r for r in rows if r["image"].endswith("-00000.png"))
    with Image.open(folder / first["image"]) as img:
        assert img.mode == "L" and img.size == (8, 8)
        np.testing.assert_array_equal(
            np.asarray(img), np.rint(digits.images[0] * 255 / 16).astype(np.uint8)
        )
    assert first["label"] == str(digits.target[0])

    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format_version"] == images.FORMAT_VERSION
    assert manifest["index_sha256"] == sha256_file(folder / "index.csv")
    assert manifest["source"]["package"] == "scikit-learn" and manifest["images"] == 1797

    # A later call only reads the manifest; force rebuilds; a format bump rebuilds.
    stamp = (folder / "manifest.json").stat().st_mtime_ns
    assert images.prepare_image_dataset("digits") == folder
    assert (folder / "manifest.json").stat().st_mtime_ns == stamp
    manifest["format_version"] = 0
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(AssetError, match="not prepared"):
        images.image_dataset_path("digits", fetch=False)
    images.prepare_image_dataset("digits", force=True)
    assert json.loads((folder / "manifest.json").read_text())["format_version"] == 1
    assert not list(cache.glob(".digits.*.tmp"))  # no temp or old folder left behind
    assert images.describe()[0]["prepared"] is True


def test_unknown_and_misused_names(cache: Path) -> None:
    with pytest.raises(DataError, match="unknown image dataset 'mnist': choose one of digits"):
        images.prepare_image_dataset("mnist")
    with pytest.raises(DataError, match="takes no source"):
        images.prepare_image_dataset("digits", source=Path("x"))
    assert not (cache / "digits").exists() and not list(cache.glob(".digits.*.tmp"))


# -------------------------------------------------------------------------- fashion-mnist


def _fake_fashion(folder: Path, per_class: dict[str, int]) -> dict[str, np.ndarray]:
    """Four IDX .gz files under the real names; image i of a split is filled with i."""
    folder.mkdir(parents=True)
    labels_by_split = {}
    for split, (images_file, labels_file) in images.FASHION_FILES.items():
        labels = np.tile(np.arange(10, dtype=np.uint8), per_class[split])
        pixels = np.stack([np.full((28, 28), i % 256, dtype=np.uint8) for i in range(len(labels))])
        (folder / images_file).write_bytes(gzip.compress(_idx(pixels)))
        (folder / labels_file).write_bytes(gzip.compress(_idx(labels)))
        labels_by_split[split] = labels
    return labels_by_split


@pytest.fixture
def tiny_fashion(monkeypatch: pytest.MonkeyPatch) -> images.ImageDatasetInfo:
    info = dataclasses.replace(
        images.IMAGE_DATASETS["fashion-mnist"], expected={"train": (2,) * 10, "test": (1,) * 10}
    )
    monkeypatch.setitem(images.IMAGE_DATASETS, "fashion-mnist", info)
    return info


def test_fashion_builds_from_a_source_folder(
    cache: Path, tmp_path: Path, tiny_fashion: images.ImageDatasetInfo
) -> None:
    src = tmp_path / "src" / "usr" / "share" / "datasets" / "fashion-mnist"
    labels = _fake_fashion(src, {"train": 2, "test": 1})
    folder = images.prepare_image_dataset("fashion-mnist", source=tmp_path / "src")  # found below
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == sorted(tiny_fashion.classes)
    rows = _index(folder)
    assert len(rows) == 30 and len(list(folder.glob("*/*.png"))) == 30
    assert rows[0] == {
        "image": "t-shirt_top/train-00000.png",
        "label": "t-shirt_top",
        "split": "train",
    }
    assert rows[-1] == {
        "image": "ankle_boot/test-00009.png",
        "label": "ankle_boot",
        "split": "test",
    }
    with Image.open(folder / "trouser/train-00011.png") as img:
        assert img.mode == "L" and img.size == (28, 28) and np.asarray(img).max() == 11
    assert tiny_fashion.classes[labels["train"][11]] == "trouser"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["counts"]["test"] == dict.fromkeys(tiny_fashion.classes, 1)
    assert manifest["source"]["origin"] == str(src)
    assert set(manifest["source"]["files_sha256"]) == {
        f for pair in images.FASHION_FILES.values() for f in pair
    }
    assert images.image_dataset_path("fashion-mnist", fetch=False) == folder


def test_fashion_count_mismatch_is_an_asset_error(
    cache: Path, tmp_path: Path, tiny_fashion: images.ImageDatasetInfo
) -> None:
    _fake_fashion(tmp_path / "src", {"train": 3, "test": 1})
    with pytest.raises(AssetError, match=r"train split has \(3, 3.*expected \(2, 2.*apt-get"):
        images.prepare_image_dataset("fashion-mnist", source=tmp_path / "src")
    assert not (cache / "fashion-mnist").exists() and not list(cache.glob(".fashion-mnist.*.tmp"))


def test_fashion_bad_sources_say_how_to_fix(
    cache: Path, tmp_path: Path, tiny_fashion: images.ImageDatasetInfo
) -> None:
    with pytest.raises(AssetError, match="sudo apt-get install dataset-fashion-mnist"):
        images.prepare_image_dataset("fashion-mnist", source=tmp_path)  # empty folder
    _fake_fashion(tmp_path / "src", {"train": 2, "test": 1})
    (tmp_path / "src" / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip")
    with pytest.raises(AssetError, match="not a readable .gz"):
        images.prepare_image_dataset("fashion-mnist", source=tmp_path / "src")


def test_fashion_without_apt_tools(
    cache: Path, monkeypatch: pytest.MonkeyPatch, tiny_fashion: images.ImageDatasetInfo
) -> None:
    monkeypatch.setattr(images, "FASHION_INSTALLED", Path("/nonexistent/fashion-mnist"))
    monkeypatch.setattr(images.shutil, "which", lambda name: None)
    with pytest.raises(AssetError, match="apt-get is not on PATH.*sudo apt-get install"):
        images.fetch_image_datasets(["fashion-mnist"])


def test_fashion_from_a_deb(
    cache: Path, tmp_path: Path, tiny_fashion: images.ImageDatasetInfo
) -> None:
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    import subprocess

    root = tmp_path / "pkg"
    _fake_fashion(root / "usr/share/datasets/fashion-mnist", {"train": 2, "test": 1})
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN/control").write_text(
        "Package: dataset-fashion-mnist\nVersion: 9.9-1\nArchitecture: all\n"
        "Maintainer: test <t@example.org>\nDescription: fake\n"
    )
    deb = tmp_path / "dataset-fashion-mnist_9.9-1_all.deb"
    subprocess.run(
        ["dpkg-deb", "-Zgzip", "--build", str(root), str(deb)], check=True, capture_output=True
    )
    folder = images.prepare_image_dataset("fashion-mnist", source=deb)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["source"]["version"] == "9.9-1" and manifest["images"] == 30


@pytest.mark.slow
def test_real_fashion_mnist_build(cache: Path) -> None:
    """apt-get download + dpkg-deb -x + 70,000 PNGs (about a minute or two)."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("apt-get/dpkg-deb not available")
    folder = images.prepare_image_dataset("fashion-mnist")
    rows = _index(folder)
    assert len(rows) == 70_000
    assert Counter(r["split"] for r in rows) == {"train": 60_000, "test": 10_000}
    assert Counter(r["label"] for r in rows) == dict.fromkeys(
        images.IMAGE_DATASETS["fashion-mnist"].classes, 7000
    )
    with Image.open(folder / rows[0]["image"]) as img:
        assert img.mode == "L" and img.size == (28, 28)
