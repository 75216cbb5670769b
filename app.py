"""Streamlit app of the automl service: submit datasets, follow jobs, browse studies.

Run: `.venv/bin/streamlit run app.py -- --db automl.db` (or `automl app`, which also
starts workers). Six pages, picked in the sidebar: Submit, Jobs, Leaderboard, Compare,
Model and Benchmarks. The app reads and writes the store only through `automl.store.Store` and
`automl.jobs`; it never imports trainers, torch or Ray (the Model page imports
`automl.predict` when its Predict button is clicked).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from automl import jobs
from automl.bench import scoring
from automl.config import Budget
from automl.data import CheckedData, check, detect_columns, load_table
from automl.errors import AutoMLError
from automl.store import DEFAULT_DB, Store

PAGES = ("Submit", "Jobs", "Leaderboard", "Compare", "Model", "Benchmarks")
MAX_UPLOAD_MB = 200  # per file; Streamlit's own default limit, stated on the page
# the suffixes a job keeps as they are, and zip archives of image folders
UPLOAD_TYPES = [s.lstrip(".") for s in jobs.SUFFIXES] + ["zip"]
CURVE_TRIALS = 20  # learning curves of the N best trials: more lines are unreadable
IMPORTANCE_STATUSES = ("complete", "pruned", "stopped")  # trials whose value is comparable
NO_STORE = "submit a dataset on the Submit page (or run `automl run DATA --label COL`)"


def _db_path() -> str:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--db", default=os.environ.get("AUTOML_DB", DEFAULT_DB))
    args, _ = parser.parse_known_args()
    return str(args.db)


def _store(db: str) -> Store | None:
    """The store, or None (and a line saying what to do) when there is none yet; opening
    a missing path would create an empty store."""
    if not Path(db).exists():
        st.info(f"No store at {db} yet: {NO_STORE}.")
        return None
    return Store(db)


def _fmt(value: Any, digits: int = 4) -> str:
    ok = isinstance(value, int | float) and math.isfinite(value)
    return f"{value:.{digits}f}" if ok else "–"


# -- Submit ---------------------------------------------------------------------------------


def _save_upload(upload: Any) -> Path:
    """Write an uploaded file to a temp file with its suffix (once per upload)."""
    folder = Path(tempfile.gettempdir()) / "automl-uploads"
    folder.mkdir(exist_ok=True)
    path = folder / f"{upload.file_id}{Path(upload.name).suffix.lower()}"
    if not path.exists():
        part = path.with_name(path.name + ".part")
        part.write_bytes(upload.getbuffer())
        part.replace(path)
    return path


@st.cache_data(max_entries=4, show_spinner=False)
def _preview(path: str, mtime: float) -> tuple[pd.DataFrame, list[str], str]:
    """First rows, column names, and what automatic column detection picks."""
    df = load_table(path)
    try:
        text, label = detect_columns(df, source=Path(path).name)
        auto = f"auto picks label `{label}`, text {', '.join(f'`{t}`' for t in text)}"
    except AutoMLError as exc:
        auto = f"auto cannot pick the columns: {exc}"
    return df.head(20), [str(c) for c in df.columns], auto


def _show_checked(checked: CheckedData) -> None:
    text = ", ".join(f"`{c}`" for c in checked.text_columns)
    st.markdown(
        f"**{checked.task}** · label `{checked.label_column}` · text {text}\n\n"
        + "\n".join(f"- {line}" for line in checked.report.lines())
    )


def submit_form(path: Path, name: str, db: str) -> None:
    """Everything after the upload: preview, options, Check data and Submit."""
    try:
        head, columns, auto = _preview(str(path), path.stat().st_mtime)
    except AutoMLError as exc:
        st.error(str(exc))
        return
    st.dataframe(head, hide_index=True)
    st.caption(f"First {len(head)} rows of {name}; {auto}.")
    left, mid, right = st.columns(3)
    label = left.selectbox("Label column", ["auto", *columns], key="label")
    text = mid.multiselect("Text columns (none: auto)", columns, key="text")
    task = right.selectbox("Task", ["auto", "classification", "regression"], key="task")
    budget = left.text_input("Budget", "2m", key="budget", help="e.g. 90s, 5m or 1h")
    track = mid.selectbox("Track", ["auto", "fewshot", "finetune"], key="track")
    options = jobs.JobOptions(
        label=None if label == "auto" else label,
        text=tuple(text) or None,
        task=None if task == "auto" else task,
        track=track,
    )
    check_clicked = left.button("Check data", key="check")
    submit_clicked = mid.button("Submit", type="primary", key="submit")
    try:
        if check_clicked:
            checked = check(path, options.label, list(text) or None, options.task)
            st.success("The data is fine: a job can train on it.")
            _show_checked(checked)
        if submit_clicked:
            job_id, checked = jobs.submit(
                path, options, Budget.parse(budget), db, source_name=name
            )
            st.success(f"Job {job_id} queued: follow it on the Jobs page.")
            _show_checked(checked)
    except AutoMLError as exc:
        st.error(str(exc))


def image_form(folder: Path, name: str, db: str) -> None:
    """An unpacked image folder: its classes and a few images, options, Check and Submit."""
    from automl.images import list_images, read_image

    try:
        images, _ = list_images(folder)
    except AutoMLError as exc:
        st.error(str(exc))
        return
    counts = pd.Series([c for _, c in images], dtype="object").value_counts().sort_index()
    st.dataframe(
        counts.rename_axis("class").reset_index(name="images"), hide_index=True, height=200
    )
    st.caption(f"{len(images)} image files in {len(counts)} class folders of {name}.")
    shown, captions = [], []
    for path, cls in images[:: max(1, len(images) // 8)][:8]:
        try:
            shown.append(read_image(path))
        except Exception:  # unreadable: counted by Check data, not shown
            continue
        captions.append(cls)
    if shown:
        st.image(shown, width=64, caption=captions)
    left, mid, _ = st.columns(3)
    budget = left.text_input("Budget", "2m", key="budget", help="e.g. 90s, 5m or 1h")
    track = mid.selectbox("Track", ["auto", "fewshot", "finetune"], key="track")
    options = jobs.JobOptions(track=track)
    check_clicked = left.button("Check data", key="check")
    submit_clicked = mid.button("Submit", type="primary", key="submit")
    try:
        if check_clicked:
            checked = check(folder)
            st.success("The images are fine: a job can train on them.")
            _show_checked(checked)
        if submit_clicked:
            job_id, checked = jobs.submit(folder, options, Budget.parse(budget), db, name)
            st.success(f"Job {job_id} queued: follow it on the Jobs page.")
            _show_checked(checked)
    except AutoMLError as exc:
        st.error(str(exc))


def page_submit(db: str) -> None:
    st.header("Submit a dataset")
    st.caption(
        f"A CSV, TSV, JSON lines or Parquet file of up to {MAX_UPLOAD_MB} MB: one row per "
        "text, with a label column; or a zip of an image folder with one sub-folder per "
        "class (e.g. pets/cat/1.jpg, pets/dog/2.png). A worker trains on it within the "
        "budget."
    )
    upload = st.file_uploader(
        f"Dataset (up to {MAX_UPLOAD_MB} MB)",
        type=UPLOAD_TYPES,
        max_upload_size=MAX_UPLOAD_MB,
        key="upload",
    )
    if upload is None:
        st.info("Upload a dataset to preview it, check it and queue a job.")
        return
    path = _save_upload(upload)
    if path.suffix == ".zip":
        from automl.images import extract_zip, unpacked_root

        dest = path.with_suffix("")  # unpacked once per upload, not on every rerun
        try:
            folder = unpacked_root(dest) if dest.is_dir() else extract_zip(path, dest)
        except AutoMLError as exc:
            st.error(str(exc))
            return
        image_form(folder, upload.name, db)
        return
    submit_form(path, upload.name, db)


# -- Jobs -----------------------------------------------------------------------------------


def _cancel(job_id: str, db: str) -> None:
    try:
        job = jobs.cancel(job_id, db)
    except AutoMLError as exc:
        st.session_state["jobs_msg"] = ("error", str(exc))
        return
    if job["status"] == "cancelled":
        text = f"Job {job_id} cancelled before it started."
    else:
        text = (
            f"Cancel requested for job {job_id}: its worker stops the trials within "
            "seconds and keeps the best model so far."
        )
    st.session_state["jobs_msg"] = ("success", text)


def _progress_text(job: dict[str, Any], p: jobs.JobProgress) -> str:
    text = f"{p.used_s:.0f} s of {p.budget_s:.0f} s · {p.trials_done} trials done"
    if p.best is not None:
        text += f" · best {p.metric} {p.best:.2f}"
    return f"{job.get('source_name') or job['id']} · {text}"


def _jobs_live(db: str) -> None:
    kind, text = st.session_state.pop("jobs_msg", (None, None))
    if kind:
        (st.success if kind == "success" else st.error)(text)
    store = _store(db)
    if store is None:
        return
    with store:
        rows = store.list_jobs(limit=100)
        if not rows:
            st.info("No jobs yet: submit a dataset on the Submit page.")
            return
        progress: dict[str, jobs.JobProgress | None] = {}
        for job in rows:
            try:
                progress[job["id"]] = jobs.progress(job, store)
            except AutoMLError:  # e.g. its study was deleted
                progress[job["id"]] = None
    records = []
    for job in rows:
        p = progress[job["id"]]
        status = job["status"]
        if job.get("cancel_requested") and status == "running":
            status += " (cancelling)"
        records.append(
            {
                "id": job["id"],
                "file": job.get("source_name"),
                "status": status,
                "budget": str(Budget(job.get("budget_s") or 0.0)),
                "used / left": f"{p.used_s:.0f} s / {p.left_s:.0f} s" if p else "–",
                "trials done": p.trials_done if p else None,
                "best so far": f"{p.metric} {p.best:.4f}" if p and p.best is not None else "",
                "study": job.get("study_id"),
                "worker": job.get("worker"),
                "attempts": job.get("attempts"),
                "error": job.get("error") or "",
            }
        )
    st.dataframe(pd.DataFrame(records), hide_index=True)
    for job in rows:
        if job["status"] not in ("queued", "running"):
            continue
        bar, button = st.columns([6, 1], vertical_alignment="bottom")
        p = progress[job["id"]]
        if job["status"] == "running" and p is not None:
            bar.progress(p.fraction, text=_progress_text(job, p))
        else:
            bar.markdown(f"{job.get('source_name') or job['id']} · queued ({job['id']})")
        button.button(
            "Cancel",
            key=f"cancel-{job['id']}",
            on_click=_cancel,
            args=(job["id"], db),
            disabled=bool(job.get("cancel_requested")),
        )


def page_jobs(db: str) -> None:
    st.header("Jobs")
    st.button("Refresh")  # a click reruns the page
    active = False
    if Path(db).exists():
        with Store(db) as store:
            active = any(j["status"] in ("queued", "running") for j in store.list_jobs(50))
    # While a job is queued or running the table refreshes itself every 2 seconds.
    st.fragment(_jobs_live, run_every=2 if active else None)(db)


# -- Leaderboard ----------------------------------------------------------------------------


def _leaderboard_frame(rows: list[dict]) -> pd.DataFrame:
    """One row a trial, best first; built column by column (10,000 trials in ~0.05 s)."""
    params = [r.get("params") or {} for r in rows]
    metrics = [r.get("metrics") or {} for r in rows]
    names = dict.fromkeys(k for m in metrics for k in m if not k.startswith("test_"))
    return pd.DataFrame(
        {
            "rank": [r.get("rank") for r in rows],
            "trial": [r.get("number") for r in rows],
            "best": ["★" if r.get("is_best") else "" for r in rows],
            "status": [r.get("status") for r in rows],
            "track": [r.get("track") for r in rows],
            "method": [p.get("method") for p in params],  # few-shot: logreg, svm or setfit
            "backbone": [p.get("backbone", p.get("model")) for p in params],
            "freeze": [p.get("freeze_layers", p.get("freeze_blocks")) for p in params],
            "lr": [p.get("learning_rate") for p in params],
            "epochs": [r.get("epochs_done") for r in rows],
            **{name: [m.get(name) for m in metrics] for name in names},
            "seconds": [r.get("seconds") for r in rows],
            "error": [r.get("error") for r in rows],
        }
    )


def importance(params: pd.DataFrame, value: pd.Series) -> pd.Series:
    """How strongly each searched parameter goes with the metric, from 0 to 1: the
    absolute Spearman correlation for a numeric parameter, the correlation ratio (eta:
    the share of the metric's spread explained by the category means) for a categorical
    one. Parameters with one value only are left out."""
    scores: dict[str, float] = {}
    for name in params.columns:
        col = params[name]
        known = col.notna()
        x, y = col[known], value[known].astype(float)
        if len(x) < 3 or x.astype(str).nunique() < 2:
            continue
        numbers = pd.to_numeric(x, errors="coerce")
        if numbers.notna().all() and not pd.api.types.is_bool_dtype(x):
            score = abs(numbers.rank().corr(y.rank()))
        else:
            groups = y.groupby(x.astype(str))
            between = (groups.count() * (groups.mean() - y.mean()) ** 2).sum()
            total = ((y - y.mean()) ** 2).sum()
            score = math.sqrt(between / total) if total > 0 else math.nan
        if math.isfinite(score):
            scores[name] = float(score)
    return pd.Series(scores, dtype=float).sort_values(ascending=False)


def _pick_study(studies: list[dict[str, Any]], key: str) -> str:
    """A study selectbox, the latest first; `?study=ID` picks the default."""
    ids = [s["id"] for s in studies]
    wanted = st.query_params.get("study")
    return str(
        st.selectbox("Study", ids, index=ids.index(wanted) if wanted in ids else 0, key=key)
    )


def _study_header(study: dict[str, Any], trials: int) -> None:
    metric = study.get("metric") or "macro_f1"
    test = study.get("test_metrics") or {}
    cols = st.columns(4)
    cols[0].metric("status", study.get("status") or "?")
    cols[1].metric(f"test {metric}", _fmt(test.get(metric)))
    cols[2].metric("trials", trials)
    cols[3].metric(
        "wall s / budget s", f"{study.get('wall_s') or 0:.0f} / {study['budget_s']:.0f}"
    )
    route = (study.get("options") or {}).get("route")
    if route:
        st.caption(f"track {route}")
    if study.get("error"):
        st.error(study["error"])


def _filters(frame: pd.DataFrame, study_id: str) -> pd.DataFrame:
    """Status, track and backbone multiselects, all values at first (kept per study)."""
    keep = pd.Series(True, index=frame.index)
    cols = st.columns(3)
    for col, name in zip(cols, ("status", "track", "backbone"), strict=True):
        values = sorted(frame[name].dropna().astype(str).unique().tolist())
        chosen = col.multiselect(
            name.capitalize(), values, default=values, key=f"lb_{name}:{study_id}"
        )
        keep &= frame[name].astype(str).isin(chosen)
    return frame[keep]


def _curves(store: Store, view: pd.DataFrame, metric: str) -> None:
    with_epochs = view[view["epochs"].fillna(0) > 0].head(CURVE_TRIALS)
    points = [
        {"trial": f"trial {n}", "epoch": e["epoch"], metric: (e.get("metrics") or {}).get(metric)}
        for n, tid in zip(with_epochs["trial"], with_epochs["trial_id"], strict=True)
        for e in store.epochs(tid)
    ]
    if not points:
        return
    st.subheader(f"Learning curves (validation {metric} per epoch)")
    curves = pd.DataFrame(points)
    st.line_chart(curves.pivot_table(index="epoch", columns="trial", values=metric))
    st.caption(
        f"The {curves['trial'].nunique()} best trials of the selection that ran epochs (at most "
        f"{CURVE_TRIALS}). Pruned and early-stopped trials end sooner: their lines are shorter."
    )


def _importance_section(view: pd.DataFrame, params: pd.DataFrame, metric: str) -> None:
    st.subheader("Parameter importance")
    used = view[view["status"].isin(IMPORTANCE_STATUSES) & (view["track"] != "reference")]
    used = used[used["value"].notna()]
    if len(used) < 3:
        st.info(
            "Parameter importance needs 3 or more finished trials; "
            f"this selection has {len(used)}."
        )
        return
    scores = importance(params.loc[used.index], used["value"])
    if scores.empty:
        st.info("No searched parameter took more than one value in these trials.")
        return
    st.bar_chart(scores.rename("importance"), horizontal=True)
    st.caption(
        f"Over the {len(used)} complete, pruned or stopped trials shown: |Spearman ρ| between "
        f"a numeric parameter and validation {metric}; for a categorical one the correlation "
        "ratio η (how much of the metric's spread the category means explain). 0 = no "
        "relation, 1 = it decides the metric. A hint, not a causal measure."
    )


def _board(db: str, study_id: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The leaderboard frame (plus the hidden columns `value`, `trial_id` and `params`)
    and a frame of the trials' parameters, one column a parameter."""
    with Store(db) as store:
        rows = store.leaderboard(study_id)
    frame = _leaderboard_frame(rows)
    if frame.empty:
        return frame, pd.DataFrame()
    frame["value"] = [r["value"] for r in rows]
    frame["trial_id"] = [r["trial_id"] for r in rows]
    frame["params"] = [r.get("params") or {} for r in rows]
    return frame, pd.DataFrame(frame["params"].tolist(), index=frame.index)


@st.cache_data(max_entries=4, show_spinner=False)
def _finished_board(db: str, study_id: str, finished_at: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`_board` of a finished study: it no longer changes, so filter changes and reruns
    skip the store (`finished_at` changes if the study is resumed and finished again)."""
    return _board(db, study_id)


def page_leaderboard(db: str) -> None:
    st.header("Leaderboard")
    store = _store(db)
    if store is None:
        return
    with store:
        studies = store.list_studies(100)
        if not studies:
            st.info(f"{db} holds no study yet: {NO_STORE}.")
            return
        study_id = _pick_study(studies, "lb_study")
        st.query_params["study"] = study_id
        study = store.get_study(study_id)
    metric = study.get("metric") or "macro_f1"
    done = study.get("status") != "running" and study.get("finished_at")
    frame, params = _finished_board(db, study_id, done) if done else _board(db, study_id)
    if frame.empty:
        _study_header(study, 0)
        st.info("This study has no trial yet: come back when the first trial has run.")
        return
    _study_header(study, int((frame["track"] != "reference").sum()))
    view = _filters(frame, study_id)
    st.dataframe(view.drop(columns=["value", "trial_id", "params"]), hide_index=True)
    best = frame[frame["best"] == "★"]
    if len(best):
        st.caption(f"★ trial {best['trial'].iloc[0]}: the study's best trial.")
    if not view.empty:
        trial = st.selectbox(
            "Parameters of trial", view["trial"].tolist(), key=f"lb_trial:{study_id}"
        )
        st.json(view.loc[view["trial"] == trial, "params"].iloc[0])
    with Store(db) as store:
        _curves(store, view, metric)
    timed = view[view["value"].notna() & view["seconds"].notna()]
    if len(timed):
        st.subheader(f"Validation {metric} vs trial wall time")
        points = pd.DataFrame(
            {"seconds": timed["seconds"], metric: timed["value"], "status": timed["status"]}
        )
        st.scatter_chart(points, x="seconds", y=metric, color="status")
    _importance_section(view, params, metric)


# -- Compare --------------------------------------------------------------------------------


def _summary(store: Store, study: dict[str, Any]) -> dict[str, str]:
    rows = store.leaderboard(study["id"])
    metric = study.get("metric") or "macro_f1"
    best = next((r for r in rows if r["is_best"]), None)
    return {
        "dataset": Path(study.get("dataset") or "").name,
        "track": str(study.get("track")),
        "status": str(study.get("status")),
        "budget": str(Budget(study.get("budget_s") or 0.0)),
        "wall s": _fmt(study.get("wall_s"), 0),
        "metric": metric,
        "test metric": _fmt((study.get("test_metrics") or {}).get(metric)),
        "best validation": _fmt(best["value"] if best else None),
        "trials": str(sum(r["track"] != "reference" for r in rows)),
        "chosen config": json.dumps(best["params"], sort_keys=True) if best else "–",
    }


def page_compare(db: str) -> None:
    st.header("Compare studies")
    store = _store(db)
    if store is None:
        return
    with store:
        ids = [s["id"] for s in store.list_studies(100)]
        if len(ids) < 2:
            st.info(f"Comparing needs two studies; {db} holds {len(ids)}: {NO_STORE}.")
            return
        chosen = st.multiselect("Studies", ids, default=ids[:2], key="cmp_studies")
        if len(chosen) < 2:
            st.info("Pick two or more studies to compare.")
            return
        table = pd.DataFrame({sid: _summary(store, store.get_study(sid)) for sid in chosen})
    st.dataframe(table)
    scores = pd.to_numeric(table.loc["test metric"].replace("–", None), errors="coerce")
    if scores.notna().any():
        st.subheader("Test metric per study")
        st.bar_chart(scores.rename("test metric"))
        st.caption("Each study's own metric on its held-out test split.")


# -- Model ----------------------------------------------------------------------------------


def _mtime(folder: Path) -> float:
    return max((p.stat().st_mtime for p in folder.rglob("*") if p.is_file()), default=0.0)


@st.cache_data(max_entries=2, show_spinner=False)
def _zip_folder(path: str, mtime: float) -> bytes:
    """The folder as a zip, in memory (`mtime` keys the cache). Weights barely compress:
    stored, not deflated, so the zip is quick to build."""
    folder = Path(path)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, Path(folder.name) / p.relative_to(folder))
    return buf.getvalue()


def _predict_section(study_id: str, model_dir: Path) -> None:
    st.subheader("Predict")
    upload = st.file_uploader(
        f"Data to predict (up to {MAX_UPLOAD_MB} MB)",
        type=UPLOAD_TYPES,
        max_upload_size=MAX_UPLOAD_MB,
        key="predict_upload",
    )
    if st.button("Predict", disabled=upload is None) and upload is not None:
        try:
            from automl.predict import predict_file  # loads torch: only when asked

            with st.spinner("Predicting…"):
                result = predict_file(model_dir, _save_upload(upload))
            st.session_state["predictions"] = (study_id, upload.name, result)
        except AutoMLError as exc:
            st.error(str(exc))
    kept = st.session_state.get("predictions")
    if kept and kept[0] == study_id:
        _, name, result = kept
        st.dataframe(result, hide_index=True)
        st.download_button(
            "Download predictions (CSV)",
            result.to_csv(index=False),
            file_name=f"{Path(name).stem}-predictions.csv",
            mime="text/csv",
            on_click="ignore",
        )


def page_model(db: str) -> None:
    st.header("Model")
    store = _store(db)
    if store is None:
        return
    with store:
        studies = [
            s
            for s in store.list_studies(100)
            if s.get("best_model_dir") and Path(s["best_model_dir"]).is_dir()
        ]
    if not studies:
        st.info("No study has an exported model yet: a job that succeeds exports its best one.")
        return
    study_id = _pick_study(studies, "model_study")
    study = next(s for s in studies if s["id"] == study_id)
    model_dir = Path(study["best_model_dir"])
    st.caption(f"Model folder: {model_dir}")
    st.download_button(
        "Download the model (zip)",
        lambda: _zip_folder(str(model_dir), _mtime(model_dir)),
        file_name=f"{study_id}.zip",
        mime="application/zip",
        on_click="ignore",
    )
    card = model_dir / "README.md"
    if card.is_file():
        st.markdown(card.read_text(encoding="utf-8"))
    else:
        st.info(f"{model_dir} has no model card (README.md).")
    _predict_section(study_id, model_dir)


# -- Benchmarks -----------------------------------------------------------------------------


def _bench_summary(store: Store, run: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A run's results, one row per (dataset, budget, system): mean score over seeds,
    scaled score (0 = majority class, 1 = best baseline), mean rank and status; and the
    average rank and scaled score per (budget, system)."""
    config = run.get("config") or {}
    scored = scoring.score_rows(
        store.bench_results(run["id"]), config.get("metric", "macro_f1"), config.get("baselines")
    )
    rows = [
        {
            "dataset": r["dataset"],
            "budget": str(Budget(r["budget_s"])),
            "system": r["system"],
            "score": r["score"],
            "scaled": r["scaled"],
            "rank": r["rank"],
            "status": ", ".join(sorted(r["statuses"])),
        }
        for r in scoring.summarise(scored)
    ]
    columns = ["dataset", "budget", "system", "score", "scaled", "rank", "status"]
    ranks = [
        {
            "budget": str(Budget(r["budget_s"])),
            "system": r["system"],
            "average rank": r["avg_rank"],
            "mean scaled": r["mean_scaled"],
        }
        for r in scoring.average_ranks(scored)
    ]
    return pd.DataFrame(rows, columns=columns), pd.DataFrame(ranks)


def _bench_runs_table(runs: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "run": r["id"],
                "suite": r["suite"],
                "status": r["status"],
                "cells": f"{r['done']} / {r['cells']}",
                "budget": r["budget"] or "the suite's",
                "metric": (r.get("config") or {}).get("metric", "macro_f1"),
                "started": str(r["created_at"])[:16],
                "report": r["report_dir"] or "",
            }
            for r in runs
        ]
    )


def page_benchmarks(db: str) -> None:
    st.header("Benchmarks")
    store = _store(db)
    if store is None:
        return
    with store:
        runs = store.list_bench_runs(100)
        if not runs:
            st.info(
                f"No benchmark run in {db} yet: run `automl bench run --suite smoke` "
                "(`automl bench list` shows the suites)."
            )
            return
        st.dataframe(_bench_runs_table(runs), hide_index=True)
        ids = [r["id"] for r in runs]
        left, right = st.columns(2)
        first = left.selectbox("Run A", ids, index=0, key="bench_a")
        others = [i for i in ids if i != first]
        second = right.selectbox("Run B", ["–", *others], index=min(1, len(others)), key="bench_b")
        chosen = [i for i in (first, second) if i in ids]
        tables = {i: _bench_summary(store, store.get_bench_run(i)) for i in chosen}
    keys = ["dataset", "budget", "system"]
    a_table, b_table = tables[first][0], tables[chosen[-1]][0]
    merged = a_table.rename(columns={c: f"A {c}" for c in a_table if c not in keys})
    if len(chosen) == 2:
        b = b_table.rename(columns={c: f"B {c}" for c in b_table if c not in keys})
        merged = merged.merge(b, on=keys, how="outer")
        merged["Δ scaled"] = merged["B scaled"] - merged["A scaled"]
    st.subheader("Side by side" if len(chosen) == 2 else f"Run {first}")
    st.dataframe(merged.sort_values(keys, kind="stable"), hide_index=True)
    st.caption(
        "score: the suite's test metric, mean over seeds; scaled: 0 = majority class, 1 = the "
        "best baseline of the same dataset, budget and seed (failed and over-budget cells "
        "count as the majority class); rank 1 = best. A: "
        + first
        + (f"; B: {second}." if len(chosen) == 2 else ". Pick a run B to compare.")
    )
    st.subheader("Average rank and scaled score")
    for col, name, run_id in zip(st.columns(len(chosen)), "AB", chosen, strict=False):
        col.caption(f"{name}: {run_id}")
        col.dataframe(tables[run_id][1], hide_index=True)


# -- the app --------------------------------------------------------------------------------


def main() -> None:
    st.set_page_config(page_title="automl", layout="wide")
    db = _db_path()
    wanted = st.query_params.get("page", "Leaderboard")
    page = st.sidebar.radio(
        "Page", PAGES, index=PAGES.index(wanted if wanted in PAGES else "Leaderboard"), key="page"
    )
    st.query_params["page"] = page
    st.sidebar.caption(f"store: {db}")
    {
        "Submit": page_submit,
        "Jobs": page_jobs,
        "Leaderboard": page_leaderboard,
        "Compare": page_compare,
        "Model": page_model,
        "Benchmarks": page_benchmarks,
    }[page](db)


if __name__ == "__main__":
    main()
