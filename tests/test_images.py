"""Image intake (automl.images): folder and table layouts, bad files skipped and counted,
clear errors; the pixel cache; routing and spaces for images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from automl.data import check, split_checked
from automl.errors import ConfigError, DataError
from automl.images import check_images, load_pixels, pixel_side
from automl.routing import IMAGE_FEWSHOT_CROSSOVER, route
from automl.spaces import load_space


def _png(path: Path, colour: tuple[int, int, int], size: int = 16, mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    arr = np.clip(np.array(colour) + rng.integers(-20, 20, (size, size, 3)), 0, 255)
    im = Image.fromarray(arr.astype(np.uint8), "RGB")
    if mode != "RGB":
        im = im.convert(mode)
    im.save(path)
    return path


def _folder(root: Path, per_class: int = 6) -> Path:
    for cls, colour in (("red", (200, 30, 30)), ("blue", (30, 30, 200))):
        for i in range(per_class):
            _png(root / cls / f"{i}.png", colour)
    return root


def test_folder_layout_gives_image_data(tmp_path: Path) -> None:
    root = _folder(tmp_path / "data")
    checked = check(root)  # data.check dispatches folders to image intake
    assert checked.modality == "image"
    assert sorted(set(checked.frame["label"])) == ["blue", "red"]
    assert len(checked.frame) == 12
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in checked.frame["text"])
    data = split_checked(checked)
    assert data.modality == "image" and data.label_names == ("blue", "red")
    assert len(data.train) + len(data.val) + len(data.test) == 12


def test_bad_files_are_skipped_and_counted(tmp_path: Path) -> None:
    root = _folder(tmp_path / "data")
    good = (root / "red" / "0.png").read_bytes()
    (root / "red" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "blue" / "notes.png").write_text("this is a text file named .png")
    (root / "blue" / "readme.txt").write_text("not an image")
    _png(root / "red" / "tiny.png", (200, 30, 30), size=4)
    _png(root / "red" / "grey.png", (120, 120, 120), mode="L")
    _png(root / "blue" / "alpha.png", (30, 30, 220), mode="RGBA")
    (root / "blue" / "copy.png").write_bytes((root / "blue" / "0.png").read_bytes())
    checked = check_images(root)
    lines = "\n".join(checked.report.lines())
    assert "2 unreadable images skipped" in lines
    assert "truncated.png" in lines and "notes.png" in lines
    assert "1 files of unsupported formats skipped" in lines and "readme.txt" in lines
    assert "1 images smaller than 8x8 skipped" in lines
    assert "2 images converted to RGB" in lines and "1 L" in lines and "1 RGBA" in lines
    assert checked.report.duplicates == 1
    kept = {Path(p).name for p in checked.frame["text"]}
    assert {"truncated.png", "notes.png", "tiny.png"}.isdisjoint(kept)
    assert {"grey.png", "alpha.png"} <= kept
    assert len(checked.frame) == 12 + 2  # the grey and RGBA ones join; the copy does not


def test_table_of_paths_resolves_relative_and_refuses_escapes(tmp_path: Path) -> None:
    root = _folder(tmp_path / "data" / "imgs")
    outside = _png(tmp_path / "secret.png", (1, 2, 3))
    rows = [(f"imgs/{c}/{i}.png", c) for c in ("red", "blue") for i in range(6)]
    rows += [("../secret.png", "red"), (str(outside), "blue"), ("imgs/red/missing.png", "red")]
    csv = tmp_path / "data" / "train.csv"
    pd.DataFrame(rows, columns=["image", "label"]).to_csv(csv, index=False)
    checked = check(csv)
    assert checked.modality == "image"
    assert len(checked.frame) == 12
    lines = "\n".join(checked.report.lines())
    assert "2 paths lead outside the data folder" in lines and "'../secret.png'" in lines
    assert "1 rows name no existing file" in lines and "row 15" in lines
    assert all(Path(p).is_relative_to(root.parent) for p in checked.frame["text"])


def test_no_readable_image_is_a_clear_error(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "x.png").write_text("not really a png")
    with pytest.raises(DataError, match="no readable image.*2 unreadable images"):
        check_images(tmp_path)


def test_folder_without_class_folders_says_the_layout(tmp_path: Path) -> None:
    _png(tmp_path / "x.png", (0, 0, 0))
    with pytest.raises(DataError, match="no class sub-folders"):
        check_images(tmp_path)


def test_regression_on_images_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not supported for images"):
        check_images(_folder(tmp_path / "d"), task="regression")


def test_pixels_are_cached_and_identical(tmp_path: Path) -> None:
    root = _folder(tmp_path / "data", per_class=3)
    paths = sorted(str(p) for p in root.rglob("*.png"))
    assert pixel_side(paths) == 16
    direct = load_pixels(paths, 12)
    cached = load_pixels(paths, 12, tmp_path / "cache")
    again = load_pixels(paths, 12, tmp_path / "cache")
    assert direct.shape == (6, 12, 12, 3) and direct.dtype == np.uint8
    assert np.array_equal(direct, cached) and np.array_equal(cached, again)
    assert len(list((tmp_path / "cache").glob("pixels-*.npy"))) == 1


def test_image_routing_and_spaces() -> None:
    few = ["a"] * 10 + ["b"] * 10
    assert route(few, "classification", 60, modality="image").track == "fewshot"
    many = ["a"] * IMAGE_FEWSHOT_CROSSOVER + ["b"] * IMAGE_FEWSHOT_CROSSOVER
    decision = route(many, "classification", 60, modality="image")
    assert decision.track == "finetune" and "for images" in decision.reason
    space = load_space(None, track="finetune", modality="image")
    assert space.modality == "image" and space.get("freeze_blocks") is not None
    assert {"augment_strength", "flip", "image_size"} <= {p.name for p in space.params}
    fewshot = load_space(None, track="fewshot", modality="image")
    assert fewshot.track == "fewshot" and fewshot.get("C") is not None


def test_zip_upload_unpacks_safely(tmp_path: Path) -> None:
    import zipfile

    from automl.images import extract_zip

    root = _folder(tmp_path / "pets", per_class=2)
    good = tmp_path / "pets.zip"
    with zipfile.ZipFile(good, "w") as zf:
        for p in root.rglob("*.png"):
            zf.write(p, str(p.relative_to(tmp_path)))
    folder = extract_zip(good, tmp_path / "out")
    assert folder.name == "pets" and sorted(p.name for p in folder.iterdir()) == ["blue", "red"]
    assert check_images(folder).frame.shape[0] == 4
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../../escape.png", b"x")
    with pytest.raises(DataError, match="outside the dataset folder"):
        extract_zip(evil, tmp_path / "evil-out")
    assert not (tmp_path / "escape.png").exists() and not (tmp_path / "evil-out").exists()
    (tmp_path / "junk.zip").write_text("not a zip")
    with pytest.raises(DataError, match="not a readable zip"):
        extract_zip(tmp_path / "junk.zip", tmp_path / "junk-out")
