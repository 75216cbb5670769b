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


def _image_rows(data: Path, column: str, text: list[str] | None) -> tuple[pd.DataFrame, str]:
    """The table to predict for an image model: a folder's image files (with a `label`
    column when the folder has class sub-folders), or a table of paths; and the column
    that holds the paths."""
    from automl.images import IMAGE_EXTENSIONS, find_image_column

    if data.is_dir():
        files = sorted(
            p
            for p in data.rglob("*")
            if p.is_file()
            and p.suffix.lower() in IMAGE_EXTENSIONS
            and not any(part.startswith(".") for part in p.relative_to(data).parts)
        )
        if not files:
            raise DataError(
                f"{data}: no image files found (supported: {', '.join(IMAGE_EXTENSIONS)})"
            )
        rel = [p.relative_to(data) for p in files]
        df = pd.DataFrame({"image": [str(r) for r in rel]})
        if all(len(r.parts) > 1 for r in rel):
            df["label"] = [r.parts[0] for r in rel]
        return df, "image"
    df = load_table(data)
    named = text[0] if text else (column if column in df.columns else None)
    col = find_image_column(df, named)
    if col is None:
        raise DataError(f"{data}: no column of image paths found; pass --text COLUMN to name it")
    return df, col


def predict_images(
    predictor: Predictor, data: str | Path, text: list[str] | None = None
) -> pd.DataFrame:
    """Predictions for a folder or table of images: each row keeps its image path beside
    `prediction` and `proba_<class>`. Paths are read relative to the table's folder and
    never outside it; a file that is missing, outside, or not a readable image gets an
    `error` and no prediction (the others are still predicted)."""
    from automl.images import _scan

    data = Path(data)
    df, col = _image_rows(data, (predictor.meta.text_columns or ["image"])[0], text)
    root = (data if data.is_dir() else data.parent).resolve()
    errors: list[str] = []
    ok_paths: list[str] = []
    ok_rows: list[int] = []
    for i, raw in enumerate(df[col].tolist()):
        path = (root / str(raw).strip()).resolve() if isinstance(raw, str) and raw else None
        if path is None:
            errors.append("no image path")
        elif not path.is_relative_to(root):
            errors.append(f"path leads outside {root}")
        elif not path.is_file():
            errors.append("file not found")
        else:
            scan = _scan(path)
            errors.append(f"image {scan.error}" if scan.error else "")
            if not scan.error:
                ok_paths.append(str(path))
                ok_rows.append(i)
    out = df.copy()
    out["prediction"] = None
    names = predictor.meta.label_names
    probs_all = np.full((len(df), len(names)), np.nan)
    if ok_paths:
        preds, probs = predictor.predict_outputs(ok_paths)
        out.loc[ok_rows, "prediction"] = [names[int(k)] for k in preds]
        assert probs is not None
        probs_all[ok_rows] = probs
    for j, name in enumerate(names):
        out[f"proba_{name}"] = probs_all[:, j]
    if any(errors):
        out["error"] = errors
        logger.warning(
            "%d of %d images could not be predicted (see the error column)",
            sum(bool(e) for e in errors),
            len(errors),
        )
    return out


def predict_file(
    model_dir: str | Path,
    data: str | Path,
    out: str | Path | None = None,
    text: list[str] | None = None,
) -> pd.DataFrame:
    """Predict every row of a data file (an image model: a folder or table of images);
    write a CSV when `out` is given."""
    predictor = Predictor(model_dir)
    if predictor.meta.format == "image":
        result = predict_images(predictor, data, text)
    else:
        df = load_table(data)
        result = predictor.predict_frame(df, text, source=str(data))
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        result.to_csv(out, index=False)
        logger.info("wrote %d predictions to %s", len(result), out)
    return result
