"""The Python API: an estimator in the scikit-learn style.

from automl import AutoML
model = AutoML(budget="5m").fit(df, label="label")
model.predict(["a new text"])
"""

from __future__ import annotations

import logging
import time
from typing import Any

from automl.config import Budget

logger = logging.getLogger(__name__)


class AutoML:
    """Search fine-tuning configurations within a wall-clock budget.

    Constructor arguments are stored; `fit` does the work and sets the fitted attributes
    `study_id_`, `best_model_dir_`, `leaderboard_` (a pandas DataFrame), `val_metrics_`,
    `test_metrics_` and `result_`.
    """

    def __init__(
        self,
        budget: str | float = "5m",
        *,
        max_trials: int | None = None,
        space: str | None = None,
        backbones: tuple[str, ...] | None = None,
        seed: int = 0,
        db: str = "automl.db",
        out: str = "runs",
        ray_address: str | None = None,
        num_cpus: int | None = None,
        track: str = "auto",
    ) -> None:
        self.budget = budget
        self.track = track
        self.max_trials = max_trials
        self.space = space
        self.backbones = backbones
        self.seed = seed
        self.db = db
        self.out = out
        self.ray_address = ray_address
        self.num_cpus = num_cpus

    def fit(
        self,
        data: Any,
        label: str | None = None,
        text: str | list[str] | None = None,
        task: str | None = None,
    ) -> AutoML:
        """Clean and split `data` (a DataFrame or a file path), search, export the best."""
        from automl.pipeline import RunOptions, run

        started = time.time()
        texts = (text,) if isinstance(text, str) else tuple(text) if text else None
        result = run(
            RunOptions(
                data=data,
                label=label,
                text=texts,
                task=task,
                budget=Budget.parse(self.budget),
                max_trials=self.max_trials,
                space=self.space,
                backbones=self.backbones,
                seed=self.seed,
                db=self.db,
                out=self.out,
                ray_address=self.ray_address,
                num_cpus=self.num_cpus,
                started_at=started,
                track=self.track,
            )
        )
        import pandas as pd

        self.result_ = result
        self.study_id_ = result.study_id
        self.best_model_dir_ = result.best_model_dir
        self.val_metrics_ = result.val_metrics
        self.test_metrics_ = result.test_metrics
        self.route_ = result.route
        self.leaderboard_ = pd.DataFrame(result.leaderboard)
        self._predictor: Any = None
        return self

    def _loaded(self) -> Any:
        if not hasattr(self, "best_model_dir_"):
            from automl.errors import ModelError

            raise ModelError("this AutoML is not fitted yet: call .fit(data, label=...) first")
        if self._predictor is None:
            from automl.predict import Predictor

            self._predictor = Predictor(self.best_model_dir_)
        return self._predictor

    def predict(self, texts: list[str]) -> list[Any]:
        """Class names (or values for regression), one per text."""
        return self._loaded().predict(list(texts))  # type: ignore[no-any-return]

    def predict_proba(self, texts: list[str]) -> Any:
        """Class probabilities, shape (n, classes), columns in `classes_` order."""
        _, probs = self._loaded().predict_outputs(list(texts))
        return probs

    @property
    def classes_(self) -> list[str]:
        return list(self._loaded().meta.label_names)


__all__ = ["AutoML", "Budget"]
