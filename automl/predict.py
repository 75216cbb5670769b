"""Predictions from an exported model folder: `automl predict MODEL_DIR DATA`."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from automl.data import load_table, model_inputs
from automl.errors import DataError
from automl.modelio import (
    load_model_dir,
    logits_to_predictions,
    predict_logits,
    read_meta,
    select_device,
)

logger = logging.getLogger(__name__)


class Predictor:
    """A loaded model: `Predictor(dir).predict(texts)` returns labels (or values)."""

    def __init__(self, model_dir: str | Path) -> None:
        self.model_dir = Path(model_dir)
        self.meta = read_meta(self.model_dir)
        self.model, self.tokenizer, _ = load_model_dir(self.model_dir)
        self.model.to(select_device())

    def predict_outputs(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """(class ids or values, class probabilities or None)."""
        logits = predict_logits(self.model, self.tokenizer, texts, self.meta.max_length)
        return logits_to_predictions(logits, self.meta.task)

    def predict(self, texts: list[str]) -> list[object]:
        """Class names (classification) or floats (regression), one per text."""
        preds, _ = self.predict_outputs(list(texts))
        if self.meta.task == "regression":
            return [float(v) for v in preds]
        return [self.meta.label_names[int(i)] for i in preds]

    def predict_frame(
        self, df: pd.DataFrame, text: list[str] | None = None, source: str = "the data"
    ) -> pd.DataFrame:
        """A copy of df with a `prediction` column and one `proba_<class>` column per class.
        Text columns: `text` if given, else those the model was trained on."""
        columns = text or [c for c in self.meta.text_columns if c in df.columns]
        if not columns:
            raise DataError(
                f"{source} has none of the model's text columns "
                f"{self.meta.text_columns}; available: {list(df.columns)}; pass --text COLUMN"
            )
        texts = model_inputs(df, columns, source)
        preds, probs = self.predict_outputs(texts)
        out = df.copy()
        if self.meta.task == "regression":
            out["prediction"] = preds
        else:
            out["prediction"] = [self.meta.label_names[int(i)] for i in preds]
            assert probs is not None
            for j, name in enumerate(self.meta.label_names):
                out[f"proba_{name}"] = probs[:, j]
        return out


def predict_file(
    model_dir: str | Path,
    data: str | Path,
    out: str | Path | None = None,
    text: list[str] | None = None,
) -> pd.DataFrame:
    """Predict every row of a data file; write a CSV when `out` is given."""
    df = load_table(data)
    result = Predictor(model_dir).predict_frame(df, text, source=str(data))
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        result.to_csv(out, index=False)
        logger.info("wrote %d predictions to %s", len(result), out)
    return result
