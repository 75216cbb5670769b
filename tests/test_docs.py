"""The README is part of the product: its Quick start and commands must stay true."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from automl.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_quick_start_is_exactly_make_demo_and_make_test() -> None:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```(?:bash)?\n(.*?)```", section, re.S)
    assert blocks, "Quick start has no code block"
    commands = [ln.strip() for ln in blocks[0].splitlines() if ln.strip()]
    assert commands == ["make demo", "make test"]
    # It is the first section of the README.
    assert "## " not in README[: README.index("## Quick start")]


def test_makefile_has_the_quick_start_targets_and_ci_calls_make_test() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "torch==2.13.0" in makefile
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def test_every_cli_command_in_the_readme_exists() -> None:
    runner = CliRunner()
    code = "\n".join(re.findall(r"```(?:bash)?\n(.*?)```", README, re.S))
    used = set(re.findall(r"^automl ([a-z]+)(?: ([a-z]+))?", code, re.M))
    assert used, "README shows no automl command"
    for cmd, sub in used:
        args = [cmd, sub, "--help"] if sub and cmd == "assets" else [cmd, "--help"]
        result = runner.invoke(main, args)
        assert result.exit_code == 0, f"`automl {' '.join(args)}` failed: {result.output}"


def test_every_cli_command_is_documented_in_the_readme() -> None:
    for name in main.commands:
        assert f"automl {name}" in README, f"`automl {name}` is not in README.md"


def test_readme_links_point_to_files_that_exist_or_benchmark_outputs() -> None:
    for link in re.findall(r"\]\(([^)#]+)\)", README):
        if link.startswith("http"):
            continue
        path = ROOT / link
        assert path.exists() or link.startswith("benchmarks/results/"), link
