"""The Streamlit app, headless, against a store built in the test."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from automl.store import Store

APP = str(Path(__file__).resolve().parent.parent / "app.py")


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "s.db"
    with Store(path) as store:
        sid = store.create_study(
            study_id="demo-1",
            dataset="d.csv",
            task="classification",
            track="finetune",
            metric="macro_f1",
            mode="max",
            budget_s=60,
            seed=0,
            data_summary={},
            cleaning={},
            options={},
        )
        store.upsert_trial(
            sid,
            number=0,
            track="reference",
            status="complete",
            params={"model": "tfidf+logreg"},
            metrics={"macro_f1": 0.5},
        )
        for n, (status, f1) in enumerate([("complete", 0.8), ("pruned", 0.3)], start=1):
            tid = store.upsert_trial(
                sid,
                number=n,
                track="finetune",
                status=status,
                params={"backbone": "minilm-l3", "learning_rate": 1e-4},
                metrics={"macro_f1": f1},
                epochs_done=3 if n == 1 else 1,
            )
            for e in range(1, (3 if n == 1 else 1) + 1):
                store.add_epoch(tid, e, {"macro_f1": f1 * e / 3}, 0.5, float(e))
        store.finish_study(
            sid,
            status="succeeded",
            best_trial_id=f"{sid}:1",
            test_metrics={"macro_f1": 0.77},
            wall_s=58,
        )
    monkeypatch.setenv("AUTOML_DB", str(path))
    return path


def test_app_shows_leaderboard_best_first_and_curves(db: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    frame = at.dataframe[0].value
    assert list(frame["trial"]) == [1, 0, 2]  # best first, reference among them
    assert frame.iloc[0]["best"] == "★"
    assert at.metric[1].value == "0.7700"
    assert at.get("vega_lite_chart") or at.get("arrow_line_chart")


def test_app_status_filter(db: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.multiselect[0].set_value(["pruned"]).run()
    assert list(at.dataframe[0].value["status"]) == ["pruned"]


def test_app_without_store_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTOML_DB", str(tmp_path / "none.db"))
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    assert "automl run" in at.info[0].value
