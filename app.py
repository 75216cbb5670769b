"""Streamlit app: browse studies, leaderboards, learning curves and model cards.

Run: `.venv/bin/streamlit run app.py -- --db automl.db` (reads the store; never imports
trainers or Ray). Submitting jobs from the browser comes with the service (issue 5).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pandas as pd
import streamlit as st

from automl.errors import StoreError
from automl.store import DEFAULT_DB, Store


def _db_path() -> str:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--db", default=os.environ.get("AUTOML_DB", DEFAULT_DB))
    args, _ = parser.parse_known_args()
    return str(args.db)


def _leaderboard_frame(rows: list[dict]) -> pd.DataFrame:
    records = []
    for r in rows:
        p, m = r.get("params") or {}, r.get("metrics") or {}
        records.append(
            {
                "rank": r.get("rank"),
                "trial": r.get("number"),
                "best": "★" if r.get("is_best") else "",
                "status": r.get("status"),
                "track": r.get("track"),
                "method": p.get("method"),  # few-shot: logreg, svm or setfit
                "backbone": p.get("backbone", p.get("model")),
                "freeze": p.get("freeze_layers"),
                "lr": p.get("learning_rate"),
                "epochs": r.get("epochs_done"),
                **{k: v for k, v in m.items() if not k.startswith("test_")},
                "seconds": r.get("seconds"),
                "error": r.get("error"),
            }
        )
    return pd.DataFrame(records)


def main() -> None:
    st.set_page_config(page_title="automl", layout="wide")
    st.title("automl studies")
    db = _db_path()
    if not Path(db).exists():
        st.info(f"No store at {db} yet: run `automl run DATA --label COL` first.")
        return
    with Store(db) as store:
        studies = store.list_studies(100)
        if not studies:
            st.info(f"{db} holds no study yet: run `automl run DATA --label COL` first.")
            return
        ids = [s["id"] for s in studies]
        study_id = st.selectbox("Study", ids)
        try:
            study = store.get_study(study_id)
        except StoreError as exc:
            st.error(str(exc))
            return
        rows = store.leaderboard(study_id)
        epochs = store.epochs(study_id=study_id)
    metric = study.get("metric") or "macro_f1"
    test = study.get("test_metrics") or {}
    cols = st.columns(4)
    cols[0].metric("status", study.get("status") or "?")
    cols[1].metric(f"test {metric}", f"{test[metric]:.4f}" if metric in test else "–")
    cols[2].metric("trials", len([r for r in rows if r.get("track") != "reference"]))
    cols[3].metric(
        "wall s / budget s", f"{study.get('wall_s') or 0:.0f} / {study['budget_s']:.0f}"
    )
    route = (study.get("options") or {}).get("route")
    if route:
        st.caption(f"track {route}")
    st.subheader("Leaderboard")
    frame = _leaderboard_frame(rows)
    statuses = sorted(frame["status"].dropna().unique().tolist()) if len(frame) else []
    chosen = st.multiselect("Status", statuses, default=statuses)
    st.dataframe(frame[frame["status"].isin(chosen)], width="stretch", hide_index=True)
    if epochs:
        st.subheader(f"Learning curves (validation {metric} per epoch)")
        curves = pd.DataFrame(
            [
                {
                    "trial": e["trial_id"].rsplit(":", 1)[-1],
                    "epoch": e["epoch"],
                    metric: (e.get("metrics") or {}).get(metric),
                }
                for e in epochs
            ]
        )
        wide = curves.pivot_table(index="epoch", columns="trial", values=metric)
        st.line_chart(wide)
    if study.get("error"):
        st.error(study["error"])
    card = Path(study.get("best_model_dir") or "") / "README.md"
    if study.get("best_model_dir") and card.is_file():
        with st.expander("Model card", expanded=False):
            st.markdown(card.read_text(encoding="utf-8"))


main()
