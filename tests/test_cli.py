"""The CLI on bad input: exit code 2, one `error:` line naming the problem and a fix, no
traceback, and nothing written to the store. Also every command's --help."""

from __future__ import annotations

import random
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from helpers import FILLER, TOPIC_WORDS, automl_command

from automl import cli
from automl.store import Store

_WORDS, _FILLER = TOPIC_WORDS, FILLER


def write_topic_csv(path: Path, per_class: int = 30, seed: int = 0) -> Path:
    """A learnable 3-class CSV (text,label): 4 filler words plus 2 words of the class."""
    rng = random.Random(seed)
    lines = ["text,label"]
    for i in range(per_class * len(_WORDS)):
        name = list(_WORDS)[i % len(_WORDS)]
        words = rng.sample(_FILLER, 4) + rng.sample(_WORDS[name], 2)
        rng.shuffle(words)
        lines.append(f"{' '.join(words)},{name}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def assert_clean_failure(output: str, stderr: str, code: int, db: Path) -> str:
    """Exit 2, stderr is exactly one `error:` line, no traceback, no study in the store."""
    assert code == 2, f"exit code {code}; stderr: {stderr!r}"
    assert "Traceback" not in output + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got: {stderr!r}"
    assert lines[0].startswith("error: "), lines[0]
    if db.exists():
        with Store(db) as store:
            assert store.list_studies() == []
    return lines[0]


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOML_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def invoke(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """Run the CLI in-process. `run` counts its budget from the process start, which in a
    test session is long ago: count from the call instead."""
    monkeypatch.setattr(cli, "_process_start", time.time)

    def go(*args: str) -> Result:
        return CliRunner().invoke(cli.main, [str(a) for a in args])

    return go


# -- bad input to `automl run` ------------------------------------------------------------


def _good(tmp_path: Path) -> Path:
    return write_topic_csv(tmp_path / "data.csv")


def _bytes(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(tmp_path: Path) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    return make


def _rows(rows: list[tuple[str, str]]) -> Callable[[Path], Path]:
    def make(tmp_path: Path) -> Path:
        path = tmp_path / "data.csv"
        path.write_text("text,label\n" + "".join(f'"{t}",{y}\n' for t, y in rows))
        return path

    return make


def _one_class(tmp_path: Path) -> Path:
    return _rows([(f"sample text number {i}", "sports") for i in range(40)])(tmp_path)


def _singleton_class(tmp_path: Path) -> Path:
    path = _good(tmp_path)
    with path.open("a", encoding="utf-8") as f:
        f.write("a lonely text about astronomy,space\n")
    return path


def _bad_space(tmp_path: Path) -> Path:
    space = tmp_path / "space.yaml"
    space.write_text(
        "track: finetune\nparams:\n"
        "  learning_rate: {type: float, low: 1.0e-5, high: 1.0e-3, init: 1.0e-4, step: 2}\n"
    )
    return space


PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02"

# (id, make the data file, extra arguments, fragments the error line must contain)
BAD_RUNS: list[tuple[str, Callable[[Path], Path], list[str], list[str]]] = [
    ("missing-label-column", _good, ["--label", "nope"], ["'nope'", "available", "--label"]),
    ("unknown-text-column", _good, ["--text", "nope"], ["'nope'", "available", "--text"]),
    ("empty-file", _bytes("data.csv", b""), [], ["empty", "add"]),
    ("one-class", _one_class, ["--label", "label"], ["only one class", "at least 2"]),
    ("singleton-class", _singleton_class, ["--label", "label"], ["'space'", "fewer than 2"]),
    (
        "not-utf8",
        _bytes("data.csv", b"text,label\ncaf\xe9 au lait,food\nnice match,sports\n" * 20),
        [],
        ["not valid UTF-8", "line 2", "save the file as UTF-8"],
    ),
    ("png-named-csv", _bytes("data.csv", PNG + bytes(range(256))), [], ["PNG", "CSV"]),
    ("all-empty-texts", _rows([("", "a"), ("  ", "b")] * 20), [], ["no usable rows", "--text"]),
    ("budget-too-small", _good, ["--budget", "5s"], ["too small", "--budget"]),
    ("unknown-backbone", _good, ["--backbone", "nosuch"], ["'nosuch'", "choose one of"]),
    ("bad-budget-string", _good, ["--budget", "5 parsecs"], ["'5 parsecs'", "e.g. 90s"]),
    ("missing-data-file", lambda p: p / "nowhere.csv", [], ["nowhere.csv", "not found", "path"]),
]


@pytest.mark.parametrize(
    ("make", "args", "fragments"),
    [pytest.param(m, a, f, id=i) for i, m, a, f in BAD_RUNS],
)
def test_run_rejects_bad_input_with_one_clear_line(
    invoke: Callable[..., Result],
    tmp_path: Path,
    make: Callable[[Path], Path],
    args: list[str],
    fragments: list[str],
) -> None:
    db = tmp_path / "store.db"
    data = make(tmp_path)
    result = invoke("run", data, *args, "--db", db, "--out", tmp_path / "runs")
    line = assert_clean_failure(result.output, result.stderr, result.exit_code, db)
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert isinstance(result.exception, SystemExit)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_run_rejects_a_bad_search_space_file(
    invoke: Callable[..., Result], tmp_path: Path
) -> None:
    db = tmp_path / "store.db"
    space = _bad_space(tmp_path)
    result = invoke("run", _good(tmp_path), "--space", space, "--db", db, "--out", tmp_path)
    line = assert_clean_failure(result.output, result.stderr, result.exit_code, db)
    assert str(space) in line and "'step'" in line and "allowed" in line


def test_run_rejects_a_missing_search_space_file(
    invoke: Callable[..., Result], tmp_path: Path
) -> None:
    db = tmp_path / "store.db"
    result = invoke("run", _good(tmp_path), "--space", tmp_path / "no.yaml", "--db", db)
    line = assert_clean_failure(result.output, result.stderr, result.exit_code, db)
    assert "no.yaml" in line and "--space" in line


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--label", "nope"], id="missing-column"),
        pytest.param(["--backbone", "nosuch", "--budget", "2m"], id="unknown-backbone"),
    ],
)
def test_console_script_exit_code_and_stderr_are_real(tmp_path: Path, args: list[str]) -> None:
    """The installed `automl` command, in its own process: real logging, real exit code."""
    db = tmp_path / "store.db"
    data = _good(tmp_path)
    proc = subprocess.run(
        [*automl_command(), "run", str(data), *args, "--db", str(db), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = assert_clean_failure(proc.stdout, proc.stderr, proc.returncode, db)
    assert "nope" in line or "nosuch" in line


# -- other commands -----------------------------------------------------------------------


def test_leaderboard_on_an_empty_store(invoke: Callable[..., Result], tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    result = invoke("leaderboard", "--db", db)
    line = assert_clean_failure(result.output, result.stderr, result.exit_code, db)
    assert "no study" in line and "automl run" in line


def test_leaderboard_of_an_unknown_study(invoke: Callable[..., Result], tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    result = invoke("leaderboard", "nosuch-study", "--db", db)
    line = assert_clean_failure(result.output, result.stderr, result.exit_code, db)
    assert "'nosuch-study'" in line


def test_predict_on_a_folder_that_is_not_a_model(
    invoke: Callable[..., Result], tmp_path: Path
) -> None:
    folder = tmp_path / "not_a_model"
    folder.mkdir()
    db = tmp_path / "store.db"
    result = invoke("predict", folder, _good(tmp_path), "--db", db)
    line = assert_clean_failure(result.output, result.stderr, result.exit_code, db)
    assert str(folder) in line and "not an automl model folder" in line and "runs/" in line


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        out.append(path)
        if isinstance(command, click.Group):
            out.extend(_commands(command, path))
    return out


def _is_group(path: tuple[str, ...]) -> bool:
    command: click.Command = cli.main
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return isinstance(command, click.Group)


ALL_COMMANDS = _commands(cli.main)


def test_every_command_is_listed() -> None:
    assert {"run", "leaderboard", "predict", "studies", "assets"} <= {c[0] for c in ALL_COMMANDS}


@pytest.mark.parametrize("path", [(), *ALL_COMMANDS], ids=lambda p: " ".join(p) or "automl")
def test_help_works_and_every_command_takes_db(
    invoke: Callable[..., Result], path: tuple[str, ...]
) -> None:
    result = invoke(*path, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and "Traceback" not in result.output
    if path and not _is_group(path):
        assert "--db" in result.output


def test_short_help_flag(invoke: Callable[..., Result]) -> None:
    result = invoke("-h")
    assert result.exit_code == 0 and "run" in result.output and "leaderboard" in result.output
