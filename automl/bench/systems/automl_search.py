"""This package as a user runs it: `automl.pipeline.run` on the cell's training data with
the cell's budget, on the cell's clock (the child's start-up counts, as `automl run`
counts its own). The pipeline splits the training data itself (train / validation /
test); its study is recorded in the bench store. The exported model is loaded to predict
the benchmark's test split, which is timed as prediction, as `automl predict` would be."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from automl.bench.systems.base import FitTask, Fitted


def fit(task: FitTask) -> Fitted:
    import pandas as pd

    from automl.config import Budget
    from automl.pipeline import RunOptions, run

    scratch = Path(task.workdir) / "scratch"
    image = task.modality == "image"
    column = "image" if image else "text"
    result = run(
        RunOptions(
            data=pd.DataFrame({column: task.texts, "label": task.labels}),
            label="label",
            text=None if image else ("text",),  # images: the path column is detected
            task="classification",
            budget=Budget(task.budget_s),
            seed=task.seed,
            db=task.db or str(scratch / "automl.db"),
            out=str(scratch / "runs"),
            started_at=task.started_at,
            name=f"bench-{task.name}",
        )
    )
    model: dict[str, Any] = {}

    def predict(texts: Sequence[str]) -> list[str]:
        if "predictor" not in model:
            from automl.predict import Predictor

            model["predictor"] = Predictor(result.best_model_dir)
        return [str(p) for p in model["predictor"].predict(list(texts))]

    best = result.best_trial
    info = {
        "study": result.study_id,
        "track": result.route.track if result.route else None,
        "trials": len(result.trials),
        "best_params": {k: v for k, v in best.params.items() if not k.endswith("_path")},
        "pipeline_wall_s": round(result.wall_s, 1),
    }
    return Fitted(predict, info)
