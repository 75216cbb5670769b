"""A real browser against `automl app`: upload a CSV, submit a job, watch it finish and
read its leaderboard rows.

Drives Debian's /usr/bin/chromium (headless) through the Playwright client; no browser is
downloaded. `.ci/run` installs both (`make test-browser` runs this module). Screenshots and
the app's log go to artifacts/browser/ at the repository root.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from helpers import automl_command

try:  # without the client the test skips, saying so (see _require_browser)
    from playwright.sync_api import expect, sync_playwright
except ImportError:
    expect = sync_playwright = None

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "artifacts" / "browser"
DATASET = REPO / "automl" / "datasets" / "fortunes8.csv"
# Everything but --headless (Playwright's headless=True) and --user-data-dir (its
# user_data_dir): no sandbox (containers, root), no GPU, no network of its own.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
CLASSES = ("computers", "food", "sports")
ROWS_PER_CLASS = 20
BUDGET = "1m"
APP_START_S = 120.0  # the app's health URL answers "ok"
JOB_TIMEOUT_S = 240.0  # queued -> final: a 1 minute budget plus the worker's start-up
UI_TIMEOUT_MS = 30_000  # one page's script run, an upload, a navigation


def _require_browser() -> None:
    """Skip, saying why, where the browser or its client is missing; fail instead where
    AUTOML_BROWSER_REQUIRED=1 (`.ci/run` installs both and sets it, so CI never skips)."""
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} is missing (apt-get install chromium, or run .ci/run)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright client is missing (pip install playwright==1.63.0)")
    if missing:
        reason = "; ".join(missing)
        if os.environ.get("AUTOML_BROWSER_REQUIRED") == "1":
            pytest.fail(f"AUTOML_BROWSER_REQUIRED=1 but {reason}")
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, n: int = 60) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def _automl_json(*args: str, cwd: Path) -> Any:
    out = subprocess.run(
        [*automl_command(), *args, "--format", "json"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout)


@pytest.fixture
def small_csv(tmp_path: Path) -> Path:
    """60 short fortunes, 20 of each of 3 classes: a job of about a minute."""
    frame = pd.read_csv(DATASET)
    frame = frame[frame["label"].isin(CLASSES) & (frame["text"].str.len() <= 200)]
    parts = [g.sample(ROWS_PER_CLASS, random_state=0) for _, g in frame.groupby("label")]
    small = pd.concat(parts).sample(frac=1.0, random_state=0)
    assert sorted(small["label"].unique()) == sorted(CLASSES)
    path = tmp_path / "fortunes_small.csv"
    small[["text", "label"]].to_csv(path, index=False)
    return path


@pytest.fixture
def app(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """`automl app` with one worker on a free port, its own store and output folder;
    the whole process group is killed at the end."""
    _require_browser()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in [*ARTIFACTS.glob("*.png"), ARTIFACTS / "app.log"]:  # no stale screenshot
        old.unlink(missing_ok=True)
    port = _free_port()
    db, out, log = tmp_path / "store.db", tmp_path / "out", tmp_path / "app.log"
    cmd = [
        *automl_command(),
        "app",
        "--db",
        str(db),
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--workers",
        "1",
        "--out",
        str(out),
    ]
    # No file watcher: the app does not change under the test, and watching the checkout
    # (with .venv) overflows inotify and costs CPU the job needs.
    env = {**os.environ, "STREAMLIT_SERVER_FILE_WATCHER_TYPE": "none"}
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            cmd,
            cwd=tmp_path,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + APP_START_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"automl app exited with {proc.returncode}:\n{_tail(log)}")
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as resp:
                    if resp.read().decode().strip() == "ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"automl app not healthy after {APP_START_S:.0f} s:\n{_tail(log)}")
            time.sleep(0.5)
        yield {"url": base, "db": db, "out": out, "log": log, "cwd": tmp_path}
    finally:
        for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        if log.exists():
            (ARTIFACTS / "app.log").write_bytes(log.read_bytes())


@pytest.fixture
def page(tmp_path: Path) -> Iterator[Any]:
    """A page of a headless /usr/bin/chromium with a fresh profile."""
    _require_browser()
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            user_data_dir=str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1400},
        )
        try:
            context.set_default_timeout(UI_TIMEOUT_MS)
            expect.set_options(timeout=UI_TIMEOUT_MS)
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def _settled(page: Any) -> None:
    """Wait until the app is connected and its script has finished this run."""
    page.locator("[data-testid=stApp][data-test-connection-state=CONNECTED]").wait_for()
    page.locator("[data-testid=stApp][data-test-script-state=notRunning]").wait_for()


def _open(page: Any, name: str, heading: str) -> None:
    """Go to page NAME through the sidebar (a navigation link or a radio option, as the
    app has it) and wait for its HEADING."""
    sidebar = page.get_by_test_id("stSidebar")
    link = sidebar.get_by_role("link", name=name, exact=True)
    if link.count():
        link.click()
    else:
        sidebar.get_by_test_id("stRadio").get_by_text(name, exact=True).click()
    page.get_by_role("heading", name=heading, exact=True).wait_for()
    _settled(page)


def _shot(page: Any, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def _grid(page: Any, column: str) -> dict[str, Any]:
    """The accessible table of the first dataframe with COLUMN: its headers, its total
    row count (aria-rowcount, header excluded) and the rows it has rendered."""
    grids = page.locator("[data-testid=stDataFrame] table[role=grid]")
    deadline = time.monotonic() + UI_TIMEOUT_MS / 1000
    while True:  # the grid renders its table a moment after the page's run
        for i in range(grids.count()):
            table = grids.nth(i).evaluate(
                """g => ({
                    heads: [...g.querySelectorAll('thead th')].map(t => t.textContent.trim()),
                    total: Number(g.getAttribute('aria-rowcount')) - 1,
                    rows: [...g.querySelectorAll('tbody tr')].map(
                        r => [...r.querySelectorAll('td')].map(c => c.textContent.trim())),
                })"""
            )
            if column in table["heads"] and table["rows"]:
                table["records"] = [
                    dict(zip(table["heads"], r, strict=False)) for r in table["rows"]
                ]
                return table
        if time.monotonic() > deadline:
            raise AssertionError(f"no dataframe with a {column!r} column and rows on the page")
        time.sleep(0.25)


def _metric(page: Any, label: str) -> str:
    """The value shown by the st.metric labelled LABEL."""
    metric = page.get_by_test_id("stMetric").filter(
        has=page.get_by_test_id("stMetricLabel").get_by_text(label, exact=True)
    )
    return str(metric.get_by_test_id("stMetricValue").inner_text()).strip()


def _submit(page: Any, csv: Path) -> str:
    """On the Submit page: upload CSV, pick its label column, set the budget, submit.
    Returns the job id the page reports."""
    page.locator("input[type=file]").first.set_input_files(str(csv))
    picker = page.get_by_test_id("stSelectbox").filter(
        has=page.get_by_test_id("stWidgetLabel").get_by_text("Label column")
    )
    picker.wait_for()  # the form appears once the upload is read
    _settled(page)
    picker.click()
    page.get_by_role("option", name="label", exact=True).click()
    expect(picker.get_by_role("combobox")).to_have_value("label")
    _settled(page)
    budget = (
        page.get_by_test_id("stTextInput")
        .filter(has=page.get_by_test_id("stWidgetLabel").get_by_text("Budget"))
        .locator("input")
    )
    budget.fill(BUDGET)
    budget.press("Tab")  # a text input sends its value when it loses focus
    _settled(page)
    expect(budget).to_have_value(BUDGET)
    _shot(page, "submit")
    page.get_by_role("button", name="Submit", exact=True).click()
    queued = page.get_by_text(re.compile(r"Job (\S+) queued"))
    queued.wait_for()
    _settled(page)
    queued.scroll_into_view_if_needed()
    _shot(page, "submitted")
    match = re.search(r"Job (\S+) queued", queued.inner_text())
    assert match, queued.inner_text()
    return match.group(1)


def _wait_for_job(app: dict[str, Any]) -> dict[str, Any]:
    """The one job in the store, once final (the store is the truth; the page is checked
    against it)."""
    deadline = time.monotonic() + JOB_TIMEOUT_S
    job: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        jobs = _automl_json("jobs", "--db", str(app["db"]), cwd=app["cwd"])
        assert len(jobs) <= 1, jobs
        job = jobs[0] if jobs else None
        if job and job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(3)
    state = f"job {job['id']} still {job['status']}" if job else "no job was queued"
    raise AssertionError(f"{state} after {JOB_TIMEOUT_S:.0f} s:\n{_tail(app['log'])}")


def test_submit_a_csv_and_read_its_leaderboard(
    app: dict[str, Any], page: Any, small_csv: Path
) -> None:
    page.goto(app["url"])
    _settled(page)
    try:
        _open(page, "Submit", "Submit a dataset")
        job_id = _submit(page, small_csv)

        job = _wait_for_job(app)
        assert job["id"] == job_id, (job, job_id)
        assert job["status"] == "succeeded", f"{job}\n{_tail(app['log'])}"
        assert job["study_id"], job

        # The Jobs page lists the job as succeeded, with its study.
        _open(page, "Jobs", "Jobs")
        jobs = _grid(page, "id")
        _shot(page, "jobs")
        row = next((r for r in jobs["records"] if r["id"] == job_id), None)
        assert row is not None, jobs
        assert row["status"] == "succeeded", row
        assert row["study"] == job["study_id"], row

        # The Leaderboard page shows the study's rows, as the store has them.
        board = _automl_json(
            "leaderboard", job["study_id"], "--db", str(app["db"]), cwd=app["cwd"]
        )
        assert board, "the finished study has no trial"
        _open(page, "Leaderboard", "Leaderboard")
        study_box = page.get_by_test_id("stSelectbox").filter(
            has=page.get_by_test_id("stWidgetLabel").get_by_text("Study", exact=True)
        )
        expect(study_box.get_by_role("combobox")).to_have_value(job["study_id"])
        table = _grid(page, "trial")
        _shot(page, "leaderboard")
        assert table["total"] == len(board), (table, board)
        assert table["records"], table
        first = table["records"][0]
        assert first["trial"] == str(board[0]["number"]), (first, board[0])
        assert first["status"] == board[0]["status"], (first, board[0])
        assert first["best"] == "★", first
        shown = {r["status"] for r in table["records"]}
        assert shown <= {r["status"] for r in board}, (shown, board)
        trials = [r for r in board if r.get("track") != "reference"]
        assert trials, board
        assert _metric(page, "trials") == str(len(trials))
        assert _metric(page, "status") == "succeeded"
    except BaseException:
        try:
            _shot(page, "failure")
        except Exception as exc:  # the page may be gone: keep the original error
            print(f"no failure screenshot: {exc}")
        raise
