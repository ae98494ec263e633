"""The one conversion from a user's raw columns to model inputs, as a scikit-learn transformer.

Logged with every model (MLflow `code_paths`) so a served model accepts rows as users have them:
this module imports nothing but numpy, pandas and scikit-learn, nor anything else of Perennial.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import Pipeline

# "1.0" / "0.0": a 0/1 column with gaps is read as floats (and converting twice changes nothing).
_TRUE = {"true", "1", "1.0", "yes", "t", "y"}
_FALSE = {"false", "0", "0.0", "no", "f", "n"}


def as_boolean(series: pd.Series) -> pd.Series:
    """True/False, 1/0, yes/no (any case, bool or text) as 1.0/0.0; anything else as NaN."""

    def convert(value: object) -> float:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return np.nan
        text = str(value).strip().lower()
        return 1.0 if text in _TRUE else 0.0 if text in _FALSE else np.nan

    return series.map(convert).astype("float64")


def as_input(column: pd.Series, kind: str) -> pd.Series:
    """One raw column as a model input of its kind: numbers as float, booleans as 0/1, else strings."""
    if kind == "numeric":
        return pd.to_numeric(column, errors="coerce").astype("float64")
    if kind == "boolean":
        return as_boolean(column)
    return column.astype(str).astype("object").where(column.notna(), np.nan)


class ModelInputs(TransformerMixin, BaseEstimator):
    """Raw feature columns -> model inputs in `features` order; stateless.

    Args:
        features: column name -> kind (`numeric`, `boolean` or `categorical`).
    """

    def __init__(self, features: Mapping[str, str] | None = None):
        self.features = features

    def fit(self, X: pd.DataFrame, y: object = None) -> ModelInputs:
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        # A column left out counts as missing everywhere: MLflow drops an optional (nullable)
        # column a caller did not send before the model sees the rows.
        missing = pd.Series(np.nan, index=X.index, dtype="object")
        return pd.DataFrame({name: as_input(X[name] if name in X.columns else missing, kind)
                             for name, kind in (self.features or {}).items()}, index=X.index)

    def __sklearn_is_fitted__(self) -> bool:
        return True


def with_inputs(model: Pipeline, features: Mapping[str, str]) -> Pipeline:
    """The pipeline as it is logged: taking raw columns, converting them itself."""
    return Pipeline([("inputs", ModelInputs(dict(features))), ("model", model)])


def without_inputs(model: Pipeline) -> Pipeline:
    """The pipeline Perennial calls with converted inputs; a version logged without the conversion
    (before it was logged with it) is that pipeline already."""
    first = model.steps[0][1] if model.steps else None
    return model.named_steps["model"] if isinstance(first, ModelInputs) else model
