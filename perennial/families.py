"""Model families: scikit-learn pipelines that can be retrained from scratch or fine-tuned."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from perennial.config import ModelConfig, TrainingConfig
from perennial.types import Schema

# Types skops must be told to trust when MLflow saves each family (checked with
# skops.io.get_untrusted_types on fitted pipelines); everything else is trusted by default.
TRUSTED_TYPES: dict[str, list[str]] = {
    "sgd": ["numpy.dtype"],
    "hgb": [
        "functools.partial",
        "numpy.dtype",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.utils.validation.check_array",
    ],
}


def build(model: ModelConfig, schema: Schema, seed: int) -> Pipeline:
    """A fresh, unfitted pipeline of the configured family."""
    numeric = schema.columns("numeric") + schema.columns("boolean")
    categorical = schema.columns("categorical")
    if model.family == "sgd":
        pre = ColumnTransformer(
            [
                ("num", Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                                  ("scale", StandardScaler())]), numeric),
                ("cat", Pipeline([("impute", SimpleImputer(strategy="constant", fill_value="(missing)")),
                                  ("onehot", OneHotEncoder(handle_unknown="ignore"))]), categorical),
            ]
        )
        params = {"loss": "log_loss", "random_state": seed, **model.params}
        return Pipeline([("pre", pre), ("clf", SGDClassifier(**params))])
    pre = ColumnTransformer(
        [
            # Unknown and missing categories become NaN, which the trees route on their own.
            ("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan,
                                   encoded_missing_value=np.nan, max_categories=250), categorical),
            ("num", "passthrough", numeric),
        ]
    )
    params = {"random_state": seed, "early_stopping": False, **model.params}
    params["categorical_features"] = list(range(len(categorical)))
    return Pipeline([("pre", pre), ("clf", HistGradientBoostingClassifier(**params))])


def fine_tune(
    champion: Pipeline, X: pd.DataFrame, y: pd.Series, training: TrainingConfig
) -> Pipeline:
    """A copy of the champion that has also learnt from (X, y); the champion is left as it was.

    The preprocessing stays frozen so the learnt weights or trees keep meaning the same inputs.
    """
    model = copy.deepcopy(champion)
    Xt = model.named_steps["pre"].transform(X)
    clf = model.named_steps["clf"]
    if isinstance(clf, SGDClassifier):
        rng = np.random.default_rng(training.seed)
        for _ in range(training.fine_tune_epochs):
            order = rng.permutation(len(y))
            clf.partial_fit(Xt[order], y.to_numpy()[order], classes=clf.classes_)
    else:
        # Added trees start from the champion's confident scores, where hessians are tiny; without
        # L2 their Newton steps overshoot (measured: a fine-tune that lost 8 points instead of
        # gaining 12 on a moved SEA boundary).
        clf.set_params(warm_start=True, max_iter=clf.n_iter_ + training.fine_tune_trees,
                       l2_regularization=max(clf.l2_regularization, training.fine_tune_l2))
        clf.fit(Xt, y.to_numpy())
    return model
