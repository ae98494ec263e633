"""A user's own model, as `model.estimator: "bench.user_model:build"` names it (the imbalanced-ap scenario).

What a user writes: a function of (schema, seed) returning an unfitted scikit-learn Pipeline, here a
derived feature (a `FunctionTransformer` of a module-level function, so the saved model refers to
it by name) before LightGBM. The benchmark runs from the repository root, so `bench.user_model` is
importable; MLflow ships the `bench` folder with every registered version.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

# The types the saved model holds beyond what Perennial trusts (its families' types, LightGBM's among
# them, and scikit-learn's own such as FunctionTransformer), which loading it must trust (skops): the
# config's `model.trusted_types`. Without it a run refuses to register the model and names exactly this.
TRUSTED_TYPES: tuple[str, ...] = ("bench.user_model.loan_to_income",)

INCOME, LOAN = ("salary", "commission"), "loan"


def loan_to_income(X: pd.DataFrame) -> pd.DataFrame:
    """The rows with one more column: the loan over the yearly income (salary + commission), missing
    where there is no income; the rows as they are when they lack those columns."""
    if LOAN not in X or not all(c in X for c in INCOME):
        return X
    income = X[list(INCOME)].fillna(0).sum(axis=1)
    return X.assign(loan_to_income=X[LOAN] / income.where(income > 0, np.nan))


def build(schema: Any, seed: int) -> Any:
    """LightGBM (a classifier or a regressor, as the schema's task) after the loan-to-income feature."""
    from lightgbm import LGBMClassifier, LGBMRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    estimator = LGBMRegressor if schema.regression else LGBMClassifier
    return Pipeline([
        ("derive", FunctionTransformer(loan_to_income)),
        ("model", estimator(n_estimators=100, random_state=seed, n_jobs=1, verbose=-1)),
    ])
