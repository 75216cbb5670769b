"""Data intake: loading, column and task detection, cleaning, splitting, and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from automl import data
from automl.datasets import bundled_path
from automl.errors import ConfigError, DataError

TEXTS = [f"sample sentence number {i} about topic {i % 3}" for i in range(30)]
LABELS = ["pos", "neg", "neutral"] * 10


@pytest.fixture
def frame() -> pd.DataFrame:
    return pd.DataFrame({"text": TEXTS, "label": LABELS})


def write(path: Path, df: pd.DataFrame) -> Path:
    suffix = path.suffix
    if suffix == ".csv":
        df.to_csv(path, index=False)
    elif suffix == ".tsv":
        df.to_csv(path, sep="\t", index=False)
    elif suffix == ".jsonl":
        df.to_json(path, orient="records", lines=True)
    elif suffix == ".parquet":
        df.to_parquet(path)
    return path


# --- loading ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["d.csv", "d.tsv", "d.jsonl", "d.parquet"])
def test_each_format_loads(tmp_path: Path, frame: pd.DataFrame, name: str) -> None:
    df = data.load_table(write(tmp_path / name, frame))
    assert list(df.columns) == ["text", "label"]
    assert df["text"].tolist() == TEXTS


def test_json_array_and_bom_csv_load(tmp_path: Path, frame: pd.DataFrame) -> None:
    (tmp_path / "d.json").write_text(json.dumps(frame.to_dict("records")))
    assert len(data.load_table(tmp_path / "d.json")) == 30
    (tmp_path / "b.csv").write_bytes(b"\xef\xbb\xbftext,label\nhello there,a\n")
    assert list(data.load_table(tmp_path / "b.csv").columns) == ["text", "label"]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("empty.csv", b"", "empty"),
        ("blank.csv", b"\n  \n", "empty"),
        ("header.csv", b"text,label\n", "no data rows"),
        ("latin1.csv", b"text,label\nok,a\ncaf\xe9 au lait,b\n", "line 3"),
        ("nul.csv", b"text,label\nab\x00c,a\n", "binary"),
        ("image.csv", b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "PNG"),
        ("utf16.csv", "text,label\n".encode("utf-16"), "UTF-16"),
        ("data.xlsx", b"PK\x03\x04", "unknown file type '.xlsx'"),
        ("noext", b"text,label\n", "no extension"),
        ("bad.jsonl", b'{"text": "a", "label": 1}\n{"text": oops}\n', "line 2"),
        ("bad.parquet", b"text,label\n", "not a Parquet file"),
        ("ragged.csv", b"text,label\na,b\nc,d,e,f\n", "cannot parse"),
    ],
)
def test_bad_files_raise_data_error(tmp_path: Path, name: str, content: bytes, expected: str):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=expected) as info:
        data.load_table(path)
    assert str(path) in str(info.value)


def test_non_utf8_message_says_how_to_fix(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"text,label\ncaf\xe9,a\n")
    with pytest.raises(DataError, match="save the file as UTF-8") as info:
        data.load_table(path)
    assert "offset 14" in str(info.value)


def test_unknown_extension_lists_supported(tmp_path: Path) -> None:
    (tmp_path / "d.txt").write_text("text,label\n")
    with pytest.raises(DataError, match=r"\.csv.*\.tsv.*\.jsonl.*\.parquet"):
        data.load_table(tmp_path / "d.txt")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        data.prepare(tmp_path / "nope.csv")


# --- columns and task ------------------------------------------------------------------------


def test_detect_columns_by_name_and_by_shape() -> None:
    df = pd.DataFrame({"id": range(30), "review": TEXTS, "sentiment": LABELS})
    assert data.detect_columns(df) == (["review"], "sentiment")
    df = pd.DataFrame({"uid": [f"u{i}" for i in range(30)], "words": TEXTS, "grp": LABELS})
    assert data.detect_columns(df) == (["words"], "grp")


def test_detect_columns_overrides(frame: pd.DataFrame) -> None:
    df = frame.assign(title=[t[:10] for t in TEXTS], other=LABELS)
    assert data.detect_columns(df, label="other") == (["text"], "other")
    assert data.detect_columns(df, text=["title", "text"]) == (["title", "text"], "label")
    assert data.detect_columns(df, text="title,text") == (["title", "text"], "label")


@pytest.mark.parametrize(
    ("kwargs", "flag"), [({"label": "tag"}, "--label"), ({"text": "x"}, "--text")]
)
def test_missing_column_lists_columns(frame: pd.DataFrame, kwargs: dict, flag: str) -> None:
    with pytest.raises(DataError, match=flag) as info:
        data.prepare(frame, **kwargs)
    assert "available columns: text, label" in str(info.value)


def test_label_also_text_is_rejected(frame: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="both the label and a text column"):
        data.detect_columns(frame, label="text", text="text")


def test_multiple_text_columns_are_joined() -> None:
    df = pd.DataFrame({"title": ["T1", "T2", None], "body": ["b  one", "", "b3"], "y": [0, 1, 0]})
    out, _ = data.clean(df, ["title", "body"], "y", "classification")
    assert out["text"].tolist() == ["T1" + data.TEXT_JOIN + "b one", "T2", "b3"]


def test_detect_task() -> None:
    floats = pd.Series([i * 0.37 for i in range(100)])
    assert data.detect_task(floats) == "regression"
    assert data.detect_task(pd.Series([0, 1, 2, 3, 4] * 20)) == "classification"
    assert data.detect_task(pd.Series(LABELS)) == "classification"
    assert data.detect_task(pd.Series([0, 1] * 50), task="Regression") == "regression"
    assert data.detect_task(floats, task="classification") == "classification"
    with pytest.raises(ConfigError, match="--task"):
        data.detect_task(floats, task="ranking")


# --- cleaning --------------------------------------------------------------------------------


def test_cleaning_counts() -> None:
    rows = [
        ("keep  me\tplease ", "a"),
        ("keep me please", "a"),  # duplicate after whitespace normalisation
        ("", "a"),  # missing text
        (None, "b"),  # missing text
        ("no label here", None),  # missing label
        ("majority", "a"),
        ("majority", "a"),
        ("majority", "b"),  # conflict: a wins, this row dropped
        ("tie", "a"),
        ("tie", "b"),  # conflict tie: both dropped
        ("other text", "b"),
        ("more text", "b"),
    ]
    df = pd.DataFrame(rows, columns=["text", "label"])
    out, report = data.clean(df, ["text"], "label", "classification")
    assert sorted(zip(out["text"], out["label"], strict=True)) == [
        ("keep me please", "a"),
        ("majority", "a"),
        ("more text", "b"),
        ("other text", "b"),
    ]
    assert (report.missing_text, report.missing_label) == (2, 1)
    assert (report.duplicates, report.conflicting_texts, report.conflict_rows_dropped) == (2, 2, 3)
    assert report.whitespace_normalised == 1
    assert report.rows_in == 12 and report.rows_out == 4
    dropped = report.missing_text + report.missing_label + report.duplicates
    assert report.rows_in == report.rows_out + dropped + report.conflict_rows_dropped


def test_labels_become_strings_and_unicode_is_normalised() -> None:
    df = pd.DataFrame(
        {
            "text": ["cafe\u0301 one", "same", "same", "x y", "cafÃ© two"],
            "label": [1, "1", 1, "pos", 2],
        }
    )
    out, report = data.clean(df, ["text"], "label", "classification")
    assert out["label"].tolist() == ["1", "1", "pos", "2"]
    assert out["text"].tolist()[0] == "caf\u00e9 one" and out["text"].tolist()[3] == "café two"
    assert report.duplicates == 1 and report.encoding_repaired == 1


def test_float_labels_with_missing_values_stay_integral() -> None:
    df = pd.DataFrame({"text": ["a b", "c d", "e f"], "label": [1.0, None, 0.0]})
    out, _ = data.clean(df, ["text"], "label", "classification")
    assert out["label"].tolist() == ["1", "0"]


def test_regression_label_must_be_numeric() -> None:
    df = pd.DataFrame({"text": ["a", "b", "c"], "score": ["1.5", "2", "high"]})
    with pytest.raises(DataError, match=r"row 3, column 'score'.*'high'"):
        data.clean(df, ["text"], "score", "regression")


def test_regression_prepare_keeps_floats() -> None:
    df = pd.DataFrame({"text": TEXTS, "y": [i / 7 for i in range(30)]})
    prepared = data.prepare(df, task="regression")
    assert prepared.task == "regression" and prepared.label_names == ()
    assert all(isinstance(v, float) for v in prepared.train.labels)
    assert len(prepared.train) + len(prepared.val) + len(prepared.test) == 30


# --- checks after cleaning -------------------------------------------------------------------


def test_one_class_only(frame: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="only one class \\('pos'\\)"):
        data.prepare(frame.assign(label="pos"))


def test_class_with_single_example(frame: pd.DataFrame) -> None:
    df = pd.concat([frame, pd.DataFrame({"text": ["lonely one"], "label": ["rare"]})])
    with pytest.raises(DataError, match="'rare' \\(1 example\\).*add examples"):
        data.prepare(df)


def test_all_texts_empty(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('text,label\n"",a\n"   ",b\n,a\n')
    with pytest.raises(DataError, match="no usable rows") as info:
        data.prepare(path)
    assert str(path) in str(info.value)


# --- splitting -------------------------------------------------------------------------------


def test_split_stratified_deterministic_disjoint(frame: pd.DataFrame) -> None:
    df = pd.concat([frame, pd.DataFrame({"text": ["r1 x", "r2 x"], "label": ["rare"] * 2})])
    cleaned, _ = data.clean(df, ["text"], "label", "classification")
    train, val, test = data.split(cleaned, "classification", seed=3)
    assert set(train["label"]) == set(cleaned["label"])
    assert len(val) and len(test) and len(train) + len(val) + len(test) == len(cleaned)
    assert not set(train.index) & set(test.index) and not set(val.index) & set(test.index)
    again = data.split(cleaned, "classification", seed=3)
    assert [list(p.index) for p in again] == [list(p.index) for p in (train, val, test)]
    other = data.split(cleaned, "classification", seed=4)
    assert list(other[2].index) != list(test.index)


def test_tiny_data_still_gets_val_and_test() -> None:
    df = pd.DataFrame({"text": ["a1", "a2", "b1", "b2"], "label": ["a", "a", "b", "b"]})
    prepared = data.prepare(df)
    assert (len(prepared.train), len(prepared.val), len(prepared.test)) == (2, 1, 1)
    assert sorted(prepared.train.labels) == [0, 1]


def test_prepare_label_ids_and_source(tmp_path: Path, frame: pd.DataFrame) -> None:
    prepared = data.prepare(write(tmp_path / "d.csv", frame), seed=1)
    assert prepared.label_names == ("neg", "neutral", "pos")
    assert set(prepared.train.labels) == {0, 1, 2}
    assert prepared.source.endswith("d.csv") and prepared.label_column == "label"
    numeric = data.prepare(frame.assign(label=[2, 10, 1] * 10))
    assert numeric.label_names == ("1", "2", "10")


def test_bundled_fortunes8() -> None:
    prepared = data.prepare(bundled_path("fortunes8"))
    assert len(prepared.label_names) == 8 and "science" in prepared.label_names
    assert len(prepared.train) > 2000 and len(prepared.val) > 400 and len(prepared.test) > 400
    with pytest.raises(DataError, match="fortunes8"):
        bundled_path("nope")
