"""The Streamlit app, headless (AppTest), against a store built in the test: every page,
its empty state, and the actions that write (submit, cancel)."""

from __future__ import annotations

import importlib.util
import io
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from automl.store import Store

APP = str(Path(__file__).resolve().parent.parent / "app.py")
PAGES = ("Submit", "Jobs", "Leaderboard", "Compare", "Model")
# trial number -> (status, backbone, learning rate, freeze layers, macro_f1, epochs)
TRIALS = {
    1: ("complete", "minilm-l6", 1e-4, 0, 0.90, 3),
    2: ("pruned", "minilm-l3", 3e-5, 2, 0.40, 1),
    3: ("complete", "minilm-l3", 2e-4, 4, 0.60, 3),
    4: ("stopped", "minilm-l6", 5e-5, 1, 0.85, 2),
    5: ("failed", "minilm-l3", 1e-3, 6, None, 0),
}


def _app(page: str = "Leaderboard", **query: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params["page"] = page
    for key, value in query.items():
        at.query_params[key] = value
    return at.run()


def _texts(elements: Iterable[Any]) -> str:
    """The text of a page's elements of one kind (captions, infos, ...), joined."""
    return "\n".join(str(e.value) for e in elements)


def _charts(at: AppTest) -> list[str]:
    """The Vega-Lite specs of the page's charts (line, bar and scatter charts)."""
    return [e.proto.spec for e in at.get("vega_lite_chart")]


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two studies (demo-2 failed, demo-1 succeeded with a model folder and 5 trials plus
    the reference), and two jobs: one running demo-1, one queued."""
    path = tmp_path / "s.db"
    model_dir = tmp_path / "demo-1" / "best"
    model_dir.mkdir(parents=True)
    (model_dir / "README.md").write_text("# Model card for demo-1\n\nIt reads reviews.\n")
    (model_dir / "meta.json").write_text("{}")
    common = dict(
        task="classification",
        metric="macro_f1",
        mode="max",
        seed=0,
        data_summary={},
        cleaning={},
    )
    with Store(path) as store:
        store.create_study(
            study_id="demo-2",
            dataset="other.csv",
            track="fewshot",
            budget_s=120,
            options={},
            **common,
        )
        store.finish_study("demo-2", status="failed", error="ran out of budget before a trial")
        sid = store.create_study(
            study_id="demo-1",
            dataset="/data/d.csv",
            track="finetune",
            budget_s=60,
            options={"route": "finetune: 200 examples per class, above the crossover of 32"},
            **common,
        )
        store.upsert_trial(
            sid,
            number=0,
            track="reference",
            status="complete",
            params={"model": "tfidf+logreg"},
            metrics={"macro_f1": 0.5},
        )
        for n, (status, backbone, lr, freeze, f1, epochs) in TRIALS.items():
            tid = store.upsert_trial(
                sid,
                number=n,
                track="finetune",
                status=status,
                params={"backbone": backbone, "learning_rate": lr, "freeze_layers": freeze},
                metrics=None if f1 is None else {"macro_f1": f1},
                epochs_done=epochs,
                seconds=10.0 * n,
                error="out of memory" if status == "failed" else None,
            )
            for e in range(1, epochs + 1):
                store.add_epoch(tid, e, {"macro_f1": f1 * e / epochs}, 0.5, float(e))
        store.finish_study(
            sid,
            status="succeeded",
            best_trial_id=f"{sid}:1",
            best_model_dir=str(model_dir),
            test_metrics={"macro_f1": 0.77},
            wall_s=58,
        )
        running = store.submit_job(
            job_id="job-running", data_path="d.csv", source_name="d.csv", options={}, budget_s=60
        )
        store.claim_job("w1", lease_s=60)
        store.set_job_study(running, sid)
        store.renew_lease(running, "w1", lease_s=60, spent_s=12)
        store.submit_job(
            job_id="job-queued", data_path="e.csv", source_name="e.csv", options={}, budget_s=120
        )
    monkeypatch.setenv("AUTOML_DB", str(path))
    return path


@pytest.fixture
def app_module() -> ModuleType:
    """app.py imported as a module (its page only renders under `streamlit run`)."""
    spec = importlib.util.spec_from_file_location("automl_app", APP)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- Leaderboard ----------------------------------------------------------------------------


def test_leaderboard_best_first_metrics_route_and_params(db: Path) -> None:
    at = _app()
    assert not at.exception
    assert at.selectbox(key="lb_study").value == "demo-1"  # the latest study
    frame = at.dataframe[0].value
    assert list(frame["trial"]) == [1, 4, 3, 0, 2, 5]  # best first, failed last
    assert frame.iloc[0]["best"] == "★"
    assert at.metric[1].value == "0.7700"
    assert at.metric[2].value == "5"  # trials, the reference not counted
    assert "crossover of 32" in _texts(at.caption)
    assert at.json[0].value and '"minilm-l6"' in at.json[0].value  # trial 1's params
    at.selectbox(key="lb_trial:demo-1").set_value(3).run()
    assert '"freeze_layers": 4' in at.json[0].value


def test_leaderboard_filters_reduce_rows(db: Path) -> None:
    at = _app()
    at.multiselect(key="lb_status:demo-1").set_value(["pruned"]).run()
    assert list(at.dataframe[0].value["status"]) == ["pruned"]
    at.multiselect(key="lb_status:demo-1").set_value(["complete", "pruned"]).run()
    at.multiselect(key="lb_backbone:demo-1").set_value(["minilm-l3"]).run()
    assert sorted(at.dataframe[0].value["trial"]) == [2, 3]
    at.multiselect(key="lb_track:demo-1").set_value(["reference"]).run()
    assert len(at.dataframe[0].value) == 0
    assert "needs 3 or more finished trials" in _texts(at.info)


def test_leaderboard_learning_curves_scatter_and_importance(db: Path) -> None:
    at = _app()
    subheaders = _texts(at.subheader)
    assert "Learning curves (validation macro_f1 per epoch)" in subheaders
    assert "Validation macro_f1 vs trial wall time" in subheaders
    assert "Parameter importance" in subheaders
    captions = _texts(at.caption)
    assert "Pruned and early-stopped trials end sooner" in captions
    assert "Spearman" in captions and "4 complete, pruned or stopped trials" in captions
    specs = _charts(at)
    assert len(specs) == 3  # curves, scatter, importance
    assert any('"importance"' in s for s in specs)


def test_leaderboard_study_from_query_shows_its_error(db: Path) -> None:
    at = _app(study="demo-2")
    assert at.selectbox(key="lb_study").value == "demo-2"
    assert "ran out of budget before a trial" in _texts(at.error)
    assert "no trial yet" in _texts(at.info)


def test_leaderboard_filters_are_kept_per_study(db: Path) -> None:
    with Store(db) as store:
        store.upsert_trial(
            "demo-2",
            number=1,
            track="fewshot",
            status="failed",
            params={"method": "svm", "backbone": "minilm-l3"},
            error="boom",
        )
    at = _app()
    at.multiselect(key="lb_backbone:demo-1").set_value(["minilm-l6"]).run()
    assert sorted(at.dataframe[0].value["trial"]) == [1, 4]
    at.selectbox(key="lb_study").set_value("demo-2").run()
    assert list(at.dataframe[0].value["trial"]) == [1]  # demo-1's filter does not apply
    assert at.query_params["study"] == "demo-2"


def test_importance_ranks_the_deciding_parameter_first(app_module: ModuleType) -> None:
    params = pd.DataFrame(
        {
            "learning_rate": [1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 3e-4],
            "backbone": ["a", "b", "a", "b", "a", "b"],
            "batch_size": [16] * 6,  # not searched: left out
            "noise": [3, 1, 2, 3, 1, 2],
        }
    )
    value = pd.Series([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    scores = app_module.importance(params, value)
    assert list(scores.index) == ["learning_rate", "backbone", "noise"]
    assert scores["learning_rate"] == pytest.approx(1.0)
    assert 0 < scores["backbone"] < 0.5
    assert "batch_size" not in scores


# -- Jobs -----------------------------------------------------------------------------------


def test_jobs_table_and_progress(db: Path) -> None:
    at = _app("Jobs")
    assert not at.exception
    frame = at.dataframe[0].value
    assert set(frame["id"]) == {"job-running", "job-queued"}
    running = frame[frame["id"] == "job-running"].iloc[0]
    assert running["status"] == "running" and running["worker"] == "w1"
    assert running["trials done"] == 5 and running["best so far"] == "macro_f1 0.9000"
    assert len(at.get("progress")) == 1  # the running job only
    text = at.get("progress")[0].text
    assert re.fullmatch(r"d\.csv · 1[23] s of 60 s · 5 trials done · best macro_f1 0\.90", text)
    assert "queued (job-queued)" in _texts(at.markdown)


def test_jobs_cancel_buttons(db: Path) -> None:
    at = _app("Jobs")
    at.button(key="cancel-job-queued").click().run()
    assert "Job job-queued cancelled before it started" in _texts(at.success)
    at.button(key="cancel-job-running").click().run()
    assert "Cancel requested for job job-running" in _texts(at.success)
    assert at.button(key="cancel-job-running").disabled  # once is enough
    with Store(db) as store:
        assert store.get_job("job-queued")["status"] == "cancelled"
        running = store.get_job("job-running")
        assert running["status"] == "running" and running["cancel_requested"] == 1


def test_jobs_empty_store_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Store(tmp_path / "empty.db").close()
    monkeypatch.setenv("AUTOML_DB", str(tmp_path / "empty.db"))
    at = _app("Jobs")
    assert "No jobs yet" in at.info[0].value


# -- Submit ---------------------------------------------------------------------------------


@pytest.fixture
def small_csv() -> bytes:
    rows = [
        ("a great fun movie, loved it", "pos") if i % 2 == 0 else ("a dull film, hated it", "neg")
        for i in range(12)
    ]
    rows = [(f"{text} ({i})", label) for i, (text, label) in enumerate(rows)]
    return pd.DataFrame(rows, columns=["text", "label"]).to_csv(index=False).encode()


def test_submit_upload_check_and_queue(db: Path, small_csv: bytes) -> None:
    """Drives the real file uploader (AppTest in Streamlit 1.67 can set an upload)."""
    at = _app("Submit")
    assert "200 MB" in _texts(at.caption)
    at.file_uploader(key="upload").set_value(("small.csv", small_csv, "text/csv")).run()
    assert not at.exception
    assert list(at.dataframe[0].value.columns) == ["text", "label"]
    assert "auto picks label `label`, text `text`" in _texts(at.caption)
    assert at.selectbox(key="label").options == ["auto", "text", "label"]
    at.button(key="check").click().run()
    assert "12 rows read, 12 kept" in _texts(at.markdown)
    at.button(key="submit").click().run()
    assert not at.error
    queued = re.search(r"Job (job-\S+) queued", at.success[0].value)
    assert queued, at.success[0].value
    job_id = queued.group(1)
    with Store(db) as store:
        job = store.get_job(job_id)
    assert job["status"] == "queued" and job["source_name"] == "small.csv"
    assert job["budget_s"] == 120 and Path(job["data_path"]).read_bytes() == small_csv


def test_submit_errors_are_one_line_messages(db: Path, small_csv: bytes) -> None:
    at = _app("Submit")
    at.file_uploader(key="upload").set_value(("small.csv", small_csv, "text/csv")).run()
    at.text_input(key="budget").set_value("10s")
    at.button(key="submit").click().run()
    assert not at.exception
    assert "too small for a job" in at.error[0].value
    at.text_input(key="budget").set_value("2m")
    at.multiselect(key="text").set_value(["label"])
    at.selectbox(key="label").set_value("label")
    at.button(key="check").click().run()
    assert "both the label and a text column" in at.error[0].value
    with Store(db) as store:
        assert len(store.list_jobs()) == 2  # the fixture's only


def test_submit_a_zip_of_an_image_folder(db: Path, tmp_path: Path) -> None:
    """A zip of class folders: the classes are listed, Check data reports the images
    (a broken one skipped and counted), Submit queues a job on a copy of the folder."""
    import io
    import zipfile

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for cls, value in (("cat", 40), ("dog", 200)):
            for i in range(3):
                png = io.BytesIO()
                pixels = np.full((12, 12, 3), value + i, dtype=np.uint8)
                Image.fromarray(pixels).save(png, format="PNG")
                zf.writestr(f"pets/{cls}/{i}.png", png.getvalue())
        zf.writestr("pets/dog/broken.png", b"not an image")
    at = _app("Submit")
    at.file_uploader(key="upload").set_value(("pets.zip", buf.getvalue(), "application/zip"))
    at.run()
    assert not at.exception and not at.error
    assert "7 image files in 2 class folders of pets.zip" in _texts(at.caption)
    at.button(key="check").click().run()
    assert "1 unreadable images skipped" in _texts(at.markdown)
    at.button(key="submit").click().run()
    assert not at.error
    job_id = re.search(r"Job (job-\S+) queued", at.success[0].value).group(1)  # type: ignore[union-attr]
    with Store(db) as store:
        job = store.get_job(job_id)
    folder = Path(job["data_path"])
    assert folder.is_dir() and sorted(p.name for p in folder.iterdir()) == ["cat", "dog"]


def test_submit_without_upload_says_what_to_do(db: Path) -> None:
    at = _app("Submit")
    assert "Upload a dataset" in at.info[0].value


# -- Compare --------------------------------------------------------------------------------


def test_compare_two_studies(db: Path) -> None:
    at = _app("Compare")
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table.columns) == ["demo-1", "demo-2"]
    assert table.loc["test metric", "demo-1"] == "0.7700"
    assert table.loc["status", "demo-2"] == "failed"
    assert table.loc["trials", "demo-1"] == "5"
    assert '"backbone": "minilm-l6"' in table.loc["chosen config", "demo-1"]
    assert len(_charts(at)) == 1  # test metric per study
    at.multiselect(key="cmp_studies").set_value(["demo-1"]).run()
    assert "two or more" in at.info[0].value


# -- Model ----------------------------------------------------------------------------------


def test_model_card_and_download(db: Path) -> None:
    at = _app("Model")
    assert not at.exception
    assert at.selectbox(key="model_study").options == ["demo-1"]  # demo-2 has no model
    assert "Model card for demo-1" in _texts(at.markdown)
    assert [b.label for b in at.get("download_button")] == ["Download the model (zip)"]
    predict = [b for b in at.button if b.label == "Predict"]
    assert predict and predict[0].disabled  # until a file is uploaded


def test_model_zip_holds_the_folder(app_module: ModuleType, tmp_path: Path) -> None:
    folder = tmp_path / "best"
    (folder / "sub").mkdir(parents=True)
    (folder / "README.md").write_text("card")
    (folder / "sub" / "w.bin").write_bytes(b"\0" * 10)
    data = app_module._zip_folder.__wrapped__(str(folder), 0.0)
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert sorted(names) == ["best/README.md", "best/sub/w.bin"]


# -- empty states ---------------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_without_store_every_page_says_what_to_do(
    page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "none.db"
    monkeypatch.setenv("AUTOML_DB", str(missing))
    at = _app(page)
    assert not at.exception
    assert at.info and ("Submit page" in at.info[0].value or "Upload" in at.info[0].value)
    assert not missing.exists()  # looking does not create a store


@pytest.mark.parametrize("page", ["Leaderboard", "Compare", "Model"])
def test_store_without_studies_says_what_to_do(
    page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Store(tmp_path / "empty.db").close()
    monkeypatch.setenv("AUTOML_DB", str(tmp_path / "empty.db"))
    at = _app(page)
    assert not at.exception
    assert len(at.info) == 1


def test_sidebar_switches_pages(db: Path) -> None:
    at = _app()
    at.sidebar.radio(key="page").set_value("Compare").run()
    assert at.header[0].value == "Compare studies"
    assert at.query_params["page"] == "Compare"


def test_app_never_imports_training_code(db: Path) -> None:
    """Every page renders in a fresh interpreter without loading torch, Ray or the
    trainers (the Model page's Predict button, not clicked here, is the one exception)."""
    code = f"""
import sys
from streamlit.testing.v1 import AppTest
for page in {PAGES!r}:
    at = AppTest.from_file({APP!r}, default_timeout=30)
    at.query_params["page"] = page
    at.run()
    assert not at.exception, (page, at.exception)
heavy = ("torch", "ray", "transformers", "setfit", "optuna")
own = ("automl.trainers", "automl.search", "automl.pipeline", "automl.predict")
print(sorted(k for k in sys.modules if k.split(".")[0] in heavy or k.startswith(own)))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


# -- Benchmarks -----------------------------------------------------------------------------


@pytest.fixture
def bench_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Two runs of one suite on Fortunes-8: automl 0.6 in the older, 0.8 in the newer;
    the majority class 0.2 and TF-IDF 0.6 in both."""
    path = tmp_path / "bench.db"
    config = {"metric": "macro_f1", "systems": ["tfidf-lr", "automl"], "baselines": ["tfidf-lr"]}
    with Store(path) as store:
        for run_id, automl_f1 in (("bench-old", 0.6), ("bench-new", 0.8)):
            store.create_bench_run("smoke", config, cells=3, run_id=run_id)
            for system, f1 in (("majority", 0.2), ("tfidf-lr", 0.6), ("automl", automl_f1)):
                store.add_bench_result(
                    run_id,
                    dataset="fortunes8",
                    budget_s=30,
                    seed=0,
                    system=system,
                    status="ok",
                    metrics={"macro_f1": f1, "accuracy": f1},
                    wall_s=1.0,
                )
    monkeypatch.setenv("AUTOML_DB", str(path))
    return path


def test_benchmarks_lists_runs_and_compares_two(bench_db: Path) -> None:
    at = _app("Benchmarks")
    assert not at.exception
    runs = at.dataframe[0].value
    assert list(runs["run"]) == ["bench-new", "bench-old"]
    assert runs.iloc[0]["cells"] == "3 / 3" and runs.iloc[0]["suite"] == "smoke"
    assert at.selectbox(key="bench_a").value == "bench-new"
    assert at.selectbox(key="bench_b").value == "bench-old"
    table = at.dataframe[1].value.set_index("system")
    assert table.loc["automl", "A scaled"] == pytest.approx(1.5)  # (0.8 - 0.2) / (0.6 - 0.2)
    assert table.loc["automl", "B scaled"] == pytest.approx(1.0)
    assert table.loc["automl", "Δ scaled"] == pytest.approx(-0.5)
    assert table.loc["tfidf-lr", "A rank"] == 2.0 and table.loc["automl", "A rank"] == 1.0
    assert table.loc["majority", "A scaled"] == pytest.approx(0.0)
    assert len(at.dataframe) == 4  # the runs, side by side, the two runs' average ranks
    at.selectbox(key="bench_b").set_value("–").run()
    assert "Pick a run B to compare" in _texts(at.caption)
    assert len(at.dataframe) == 3
    assert "B scaled" not in at.dataframe[1].value.columns


def test_benchmarks_without_runs_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Store(tmp_path / "empty.db").close()
    monkeypatch.setenv("AUTOML_DB", str(tmp_path / "empty.db"))
    at = _app("Benchmarks")
    assert not at.exception
    assert "automl bench run --suite smoke" in at.info[0].value
    missing = tmp_path / "none.db"
    monkeypatch.setenv("AUTOML_DB", str(missing))
    at = _app("Benchmarks")
    assert "No store at" in at.info[0].value and not missing.exists()


def test_benchmarks_page_never_imports_training_code(bench_db: Path) -> None:
    code = f"""
import sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({APP!r}, default_timeout=30)
at.query_params["page"] = "Benchmarks"
at.run()
assert not at.exception, at.exception
assert len(at.dataframe) == 4
heavy = ("torch", "ray", "transformers", "setfit", "optuna", "flaml", "matplotlib")
own = ("automl.trainers", "automl.search", "automl.pipeline", "automl.bench.systems")
print(sorted(k for k in sys.modules if k.split(".")[0] in heavy or k.startswith(own)))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
