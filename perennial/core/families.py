"""Model families: scikit-learn pipelines that can be retrained from scratch or fine-tuned."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from perennial.core.config import ModelConfig, TrainingConfig
from perennial.core.inputs import ModelInputs
from perennial.core.sampling import sample_rows
from perennial.core.schema import features_frame, labels
from perennial.core.types import Schema

# Our conversion of raw columns, logged in front of every pipeline (perennial.core.inputs).
INPUTS_TYPE = f"{ModelInputs.__module__}.{ModelInputs.__qualname__}"
# Types skops must be told to trust when MLflow saves each family (checked with
# skops.io.get_untrusted_types on fitted pipelines); everything else is trusted by default.
TRUSTED_TYPES: dict[str, list[str]] = {
    "sgd": ["numpy.dtype", INPUTS_TYPE],
    "hgb": [
        "functools.partial",
        "numpy.dtype",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.utils.validation.check_array",
        INPUTS_TYPE,
    ],
}
# What Perennial trusts when it loads a registered version, whatever its MLmodel file lists.
ALL_TRUSTED_TYPES: list[str] = sorted({t for types in TRUSTED_TYPES.values() for t in types})


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


def fit_out_of_core(model: ModelConfig, schema: Schema, seed: int,
                    chunks: Callable[[], Iterable[pd.DataFrame]], training: TrainingConfig) -> Pipeline:
    """A pipeline of the configured family trained on rows read chunk by chunk, never all at once.

    `sgd`: a first pass draws a uniform sample of `training.preprocess_sample_rows` rows, fits the
    preprocessing on it (medians, scales, categories: one too rare to be sampled is ignored like
    an unknown one) and collects the labels; then `training.out_of_core_epochs` passes of
    `partial_fit` over the transformed chunks, rows shuffled within each chunk, chunks in order.
    `hgb` cannot learn incrementally: it is fitted on a uniform sample of at most
    `training.max_rows_in_memory` rows, so the rest of the window is not learnt from.

    Args:
        chunks: called once per pass; yields the raw training rows (features and target) as frames.

    Returns:
        An ordinary fitted `Pipeline([("pre", ...), ("clf", ...)])`, as `build(...).fit(...)` gives.
    """
    pipeline = build(model, schema, seed)
    if model.family != "sgd":
        sample = sample_rows(chunks(), training.max_rows_in_memory, seed)
        return pipeline.fit(features_frame(sample, schema), labels(sample, schema.target))
    seen: set[str] = set()

    def observed() -> Iterator[pd.DataFrame]:
        for chunk in chunks():
            seen.update(labels(chunk, schema.target).unique())
            yield chunk

    sample = sample_rows(observed(), training.preprocess_sample_rows, seed)
    pre, clf = pipeline.named_steps["pre"], pipeline.named_steps["clf"]
    pre.fit(features_frame(sample, schema))
    del sample
    classes = np.array(sorted(seen), dtype=object)
    rng = np.random.default_rng(seed)
    for _ in range(training.out_of_core_epochs):
        for chunk in chunks():
            if chunk.empty:
                continue
            # Fixed-width strings: partial_fit's np.unique on Python str objects was 15% of an epoch.
            Xt, y = pre.transform(features_frame(chunk, schema)), labels(chunk, schema.target).to_numpy(str)
            order = rng.permutation(len(y))
            clf.partial_fit(Xt[order], y[order], classes=classes)
    return pipeline


def fine_tune(
    champion: Pipeline, X: pd.DataFrame, y: pd.Series, training: TrainingConfig
) -> Pipeline:
    """A copy of the champion that has also learnt from (X, y); the champion is left as it was.

    It learns in passes (`sgd`: one epoch; `hgb`: `fine_tune_trees` more trees) on all but a
    `fine_tune_validation` share of the rows, and keeps the model after the best pass: it stops at
    the first pass that does not improve accuracy on those held-back rows. The preprocessing stays
    frozen so the learnt weights or trees keep meaning the same inputs.
    """
    model = copy.deepcopy(champion)
    Xt, y_all = model.named_steps["pre"].transform(X), y.to_numpy()
    rng = np.random.default_rng(training.seed)
    order = rng.permutation(len(y_all))
    held = int(len(order) * training.fine_tune_validation) if len(order) >= 20 else 0
    val, fit = order[:held], order[held:]
    clf = model.named_steps["clf"]
    if not isinstance(clf, SGDClassifier):
        # Added trees start from the champion's confident scores, where hessians are tiny; without
        # L2 their Newton steps overshoot (measured: a fine-tune that lost 8 points instead of
        # gaining 12 on a moved SEA boundary).
        clf.set_params(warm_start=True, l2_regularization=max(clf.l2_regularization, training.fine_tune_l2))
    best, best_score = clf, -1.0
    for _ in range(training.fine_tune_passes):
        if isinstance(clf, SGDClassifier):
            shuffled = rng.permutation(fit)
            clf.partial_fit(Xt[shuffled], y_all[shuffled], classes=clf.classes_)
        else:
            clf.set_params(max_iter=clf.n_iter_ + training.fine_tune_trees)
            clf.fit(Xt[fit], y_all[fit])
        if not held:
            best = clf
            continue
        score = float(np.mean(clf.predict(Xt[val]) == y_all[val]))
        if score <= best_score:
            break
        best, best_score = copy.deepcopy(clf), score
    model.steps[-1] = ("clf", best)
    return model
