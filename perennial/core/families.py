"""Model families: objects that build scikit-learn pipelines, retrain them from scratch, fine-tune them
and train them out of core.

A family is not an estimator: it makes one, `Pipeline([("pre", preprocessing), ("clf", classifier)])`,
and knows how that pipeline keeps learning. `Family` holds what every family shares (the pipeline's
shape, the fine-tune loop with early stopping on held-back rows, training on a bounded sample when
the rows do not fit in memory, the skops types of Perennial's own input conversion);
`IncrementalFamily` adds what every classifier with `partial_fit` shares (fine-tuning one epoch per
pass, training out of core in epochs over the chunks).

Adding a family (a calibrated logistic regression, LightGBM, ...) is: write one class, a subclass of
`Family` (or of `IncrementalFamily` if its classifier has `partial_fit`) with a `name`, its
`skops_types` and its three `preprocessor` / `classifier_type` / `classifier_params` methods
(plus `_fine_tune_pass` for a `Family`); then add the class to `FAMILIES` below. The config
(`model.family`), the trusted types of the registry loader and the tests follow the registry.

Importing this module is cheap (numpy only): the config imports it to check `model.family`, and the
flow module imports it at start-up. scikit-learn classes are imported by the methods that use them.
"""

from __future__ import annotations

import copy
import difflib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from perennial.core.text import bounded, shorten

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.base import BaseEstimator
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    from perennial.core.config import TrainingConfig
    from perennial.core.types import Schema

# Our conversion of raw columns, logged in front of every pipeline (perennial.core.inputs.ModelInputs;
# spelt out so that importing this module does not import scikit-learn; a test checks it).
INPUTS_TYPE = "perennial.core.inputs.ModelInputs"
# Where versions registered before the package had layers name it (`perennial/inputs.py` leads there).
LEGACY_INPUTS_TYPE = "perennial.inputs.ModelInputs"

Chunks = Callable[[], Iterable["pd.DataFrame"]]


class ParamError(ValueError):
    """A configured parameter (`model.params.<key>`) the family's classifier does not take or refuses."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key


class Family(ABC):
    """How to build, fine-tune and train out of core the pipelines of one model family."""

    #: The name `model.family` selects this family by.
    name: ClassVar[str]
    #: Types skops must be told to trust when MLflow saves this family's fitted pipelines (checked
    #: with skops.io.get_untrusted_types); everything else is trusted by default.
    skops_types: ClassVar[tuple[str, ...]] = ()

    @property
    def trusted_types(self) -> list[str]:
        """The skops types to trust for this family's pipelines, served behind our input conversion."""
        return [*self.skops_types, INPUTS_TYPE]

    @abstractmethod
    def preprocessor(self, numeric: list[str], categorical: list[str]) -> ColumnTransformer:
        """The unfitted preprocessing of the model inputs (numeric and boolean columns, categories)."""

    @abstractmethod
    def classifier_type(self) -> type[BaseEstimator]:
        """The classifier's class (imported here, not at module level)."""

    @abstractmethod
    def classifier_params(self, seed: int, params: Mapping[str, Any],
                          categorical: list[str]) -> dict[str, Any]:
        """The classifier's parameters: the family's defaults, overridden by the configured `params`."""

    def build(self, schema: Schema, seed: int, params: Mapping[str, Any] | None = None) -> Pipeline:
        """A fresh, unfitted `Pipeline([("pre", ...), ("clf", ...)])` of this family."""
        from sklearn.pipeline import Pipeline

        numeric = schema.columns("numeric") + schema.columns("boolean")
        categorical = schema.columns("categorical")
        pre = self.preprocessor(numeric, categorical)
        clf = self.classifier_type()(**self.classifier_params(seed, params or {}, categorical))
        return Pipeline([("pre", pre), ("clf", clf)])

    def check_params(self, params: Mapping[str, Any]) -> None:
        """Raises ParamError for the first configured parameter the classifier does not take, the
        family sets itself, or scikit-learn's own constraints refuse; nothing is fitted."""
        cls = self.classifier_type()
        known = cls().get_params(deep=False)
        for key, value in params.items():
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ParamError(key, f"not a parameter of {cls.__name__}{hint}")
            given = self.classifier_params(0, {key: value}, [])
            if given.get(key) is not value:
                raise ParamError(key, f"set by the '{self.name}' family itself; remove it")
            _validate(cls(**given), key, value)
        self._check_together(cls(**self.classifier_params(0, params, [])), params)

    def _check_together(self, clf: BaseEstimator, params: Mapping[str, Any]) -> None:  # noqa: B027
        """Raises ParamError for parameters valid one by one but not together (nothing by default)."""

    def owns(self, model: Pipeline) -> bool:
        """Whether `model` is a pipeline of this family (judged by its classifier)."""
        return isinstance(model.named_steps.get("clf"), self.classifier_type())

    def fit_out_of_core(self, schema: Schema, seed: int, chunks: Chunks, training: TrainingConfig,
                        params: Mapping[str, Any] | None = None) -> Pipeline:
        """A pipeline of this family trained on rows read chunk by chunk, never all at once.

        A family that cannot learn incrementally is fitted on a uniform sample of at most
        `training.max_rows_in_memory` rows, so the rest of the window is not learnt from.

        Args:
            chunks: called once per pass; yields the raw training rows (features and target) as frames.

        Returns:
            An ordinary fitted `Pipeline([("pre", ...), ("clf", ...)])`, as `build(...).fit(...)` gives.
        """
        from perennial.core.sampling import sample_rows
        from perennial.core.schema import features_frame, labels

        pipeline = self.build(schema, seed, params)
        sample = sample_rows(chunks(), training.max_rows_in_memory, seed)
        return pipeline.fit(features_frame(sample, schema), labels(sample, schema.target))

    def fine_tune(self, model: Pipeline, X: pd.DataFrame, y: pd.Series, training: TrainingConfig) -> Pipeline:
        """A copy of `model` (the champion) that has also learnt from (X, y); `model` is left as it was.

        It learns in passes (`_fine_tune_pass`) on all but a `fine_tune_validation` share of the rows,
        and keeps the model after the best pass: it stops at the first pass that does not improve
        accuracy on those held-back rows. The preprocessing stays frozen so the learnt weights or
        trees keep meaning the same inputs.
        """
        model = copy.deepcopy(model)
        Xt, y_all = model.named_steps["pre"].transform(X), y.to_numpy()
        rng = np.random.default_rng(training.seed)
        order = rng.permutation(len(y_all))
        held = int(len(order) * training.fine_tune_validation) if len(order) >= 20 else 0
        val, fit = order[:held], order[held:]
        clf = model.named_steps["clf"]
        self._before_fine_tune(clf, training)
        best, best_score = clf, -1.0
        for _ in range(training.fine_tune_passes):
            self._fine_tune_pass(clf, Xt, y_all, fit, rng, training)
            if not held:
                best = clf
                continue
            score = float(np.mean(clf.predict(Xt[val]) == y_all[val]))
            if score <= best_score:
                break
            best, best_score = copy.deepcopy(clf), score
        model.steps[-1] = ("clf", best)
        return model

    def _before_fine_tune(self, clf: BaseEstimator, training: TrainingConfig) -> None:  # noqa: B027
        """Prepares the copied classifier for its fine-tune passes (nothing by default)."""

    @abstractmethod
    def _fine_tune_pass(self, clf: BaseEstimator, Xt: Any, y: np.ndarray, rows: np.ndarray,
                        rng: np.random.Generator, training: TrainingConfig) -> None:
        """One pass of a fine-tune: `clf` learns more from the preprocessed rows `Xt[rows]`, `y[rows]`."""


class IncrementalFamily(Family):
    """A family whose classifier learns with `partial_fit`: a fine-tune pass is one epoch over the
    rows; out of core, it learns from every row of the window, in epochs over the chunks."""

    def _check_together(self, clf: BaseEstimator, params: Mapping[str, Any]) -> None:
        # Fine-tunes and out-of-core training call partial_fit, which refuses some of what fit takes:
        # found at the first fine-tune, the mistake would fail a cycle long after the config loaded.
        if params.get("class_weight") == "balanced":
            raise ParamError("class_weight", f"'balanced' is refused by partial_fit, which the '{self.name}' "
                             "family fine-tunes with; give a weight per class")
        more = getattr(clf, "_more_validate_params", None)  # SGD's checks of parameters together
        if more is None:
            return
        try:
            more(for_partial_fit=True)
        except ValueError as exc:
            named = [key for key in params if key in str(exc)]
            raise ParamError(named[0] if named else "",
                             f"{exc} (the '{self.name}' family fine-tunes with partial_fit)") from None

    def _fine_tune_pass(self, clf: BaseEstimator, Xt: Any, y: np.ndarray, rows: np.ndarray,
                        rng: np.random.Generator, training: TrainingConfig) -> None:
        shuffled = rng.permutation(rows)
        clf.partial_fit(Xt[shuffled], y[shuffled], classes=clf.classes_)

    def fit_out_of_core(self, schema: Schema, seed: int, chunks: Chunks, training: TrainingConfig,
                        params: Mapping[str, Any] | None = None) -> Pipeline:
        """A pipeline of this family trained on rows read chunk by chunk, never all at once.

        A first pass draws a uniform sample of `training.preprocess_sample_rows` rows, fits the
        preprocessing on it (medians, scales, categories: one too rare to be sampled is ignored like
        an unknown one) and collects the labels; then `training.out_of_core_epochs` passes of
        `partial_fit` over the transformed chunks, rows shuffled within each chunk, chunks in order.

        Args:
            chunks: called once per pass; yields the raw training rows (features and target) as frames.

        Returns:
            An ordinary fitted `Pipeline([("pre", ...), ("clf", ...)])`, as `build(...).fit(...)` gives.
        """
        from perennial.core.sampling import sample_rows
        from perennial.core.schema import features_frame, labels

        pipeline = self.build(schema, seed, params)
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
                Xt = pre.transform(features_frame(chunk, schema))
                y = labels(chunk, schema.target).to_numpy(str)
                order = rng.permutation(len(y))
                clf.partial_fit(Xt[order], y[order], classes=classes)
        return pipeline


class SGDFamily(IncrementalFamily):
    """`sgd`: median imputation and scaling of numbers, one-hot categories, `SGDClassifier(log_loss)`;
    fine-tuned one `partial_fit` epoch per pass."""

    name = "sgd"
    skops_types = ("numpy.dtype",)

    def preprocessor(self, numeric: list[str], categorical: list[str]) -> ColumnTransformer:
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        return ColumnTransformer(
            [
                ("num", Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                                  ("scale", StandardScaler())]), numeric),
                ("cat", Pipeline([("impute", SimpleImputer(strategy="constant", fill_value="(missing)")),
                                  ("onehot", OneHotEncoder(handle_unknown="ignore"))]), categorical),
            ]
        )

    def classifier_type(self) -> type[BaseEstimator]:
        from sklearn.linear_model import SGDClassifier

        return SGDClassifier

    def classifier_params(self, seed: int, params: Mapping[str, Any],
                          categorical: list[str]) -> dict[str, Any]:
        return {"loss": "log_loss", "random_state": seed, **params}


class HGBFamily(Family):
    """`hgb`: `HistGradientBoostingClassifier` with native categories; fine-tuned by adding
    `training.fine_tune_trees` trees per pass (`warm_start`)."""

    name = "hgb"
    skops_types = (
        "functools.partial",
        "numpy.dtype",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.utils.validation.check_array",
    )

    def preprocessor(self, numeric: list[str], categorical: list[str]) -> ColumnTransformer:
        from sklearn.compose import ColumnTransformer
        from sklearn.preprocessing import OrdinalEncoder

        return ColumnTransformer(
            [
                # Unknown and missing categories become NaN, which the trees route on their own.
                ("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan,
                                       encoded_missing_value=np.nan, max_categories=250), categorical),
                ("num", "passthrough", numeric),
            ]
        )

    def classifier_type(self) -> type[BaseEstimator]:
        from sklearn.ensemble import HistGradientBoostingClassifier

        return HistGradientBoostingClassifier

    def classifier_params(self, seed: int, params: Mapping[str, Any],
                          categorical: list[str]) -> dict[str, Any]:
        # The categorical columns come first out of the preprocessing.
        return {"random_state": seed, "early_stopping": False, **params,
                "categorical_features": list(range(len(categorical)))}

    def _before_fine_tune(self, clf: BaseEstimator, training: TrainingConfig) -> None:
        # Added trees start from the champion's confident scores, where hessians are tiny; without
        # L2 their Newton steps overshoot (measured: a fine-tune that lost 8 points instead of
        # gaining 12 on a moved SEA boundary).
        # No validation split inside `fit` (the fine-tune stops early on rows of its own): the added
        # trees' starting scores are computed for exactly the rows it is given (`from_own_scores`).
        clf.set_params(warm_start=True, early_stopping=False,
                       l2_regularization=max(clf.l2_regularization, training.fine_tune_l2))

    def _fine_tune_pass(self, clf: BaseEstimator, Xt: Any, y: np.ndarray, rows: np.ndarray,
                        rng: np.random.Generator, training: TrainingConfig) -> None:
        clf.set_params(max_iter=clf.n_iter_ + training.fine_tune_trees)
        with from_own_scores(clf, Xt[rows]):
            clf.fit(Xt[rows], y[rows])


@contextmanager
def from_own_scores(clf: BaseEstimator, X: Any) -> Iterator[None]:
    """While a fitted `HistGradientBoosting*` warm-starts on the rows `X`, the added trees start from
    its own scores on them. scikit-learn's `warm_start` is meant for the same data: `fit` refits the
    bins on the new rows and scores the existing trees by bin index against them, so on rows that
    moved the starting scores were not the champion's (measured: 85% of 4,000 rows, the class on half
    of them). Here the scores come from the raw values, as at prediction time, and the new bins still
    let the added trees split where the rows moved to (freezing the old bins instead lost 9-12
    points on the `regions` benchmark, whose rows move beyond the old range)."""
    own = clf._raw_predict(X)  # outside `fit`: raw thresholds

    def raw_predict(binned: np.ndarray, n_threads: int | None = None) -> np.ndarray:
        if len(binned) != len(own):  # only the training rows are scored (no validation split)
            raise RuntimeError("a warm start scored rows other than its training rows")
        return own.copy(order="F")

    clf._raw_predict = raw_predict  # shadows the method for this fit only (never saved with the model)
    try:
        yield
    finally:
        del clf.__dict__["_raw_predict"]


# The registry: `model.family` names one of these.
FAMILIES: dict[str, Family] = {cls.name: cls() for cls in (SGDFamily, HGBFamily)}
# What Perennial trusts when it loads a registered version, whatever its MLmodel file lists.
ALL_TRUSTED_TYPES: list[str] = sorted({LEGACY_INPUTS_TYPE,
                                       *(t for f in FAMILIES.values() for t in f.trusted_types)})
# The trusted types of each family by name.
TRUSTED_TYPES: dict[str, list[str]] = {name: f.trusted_types for name, f in FAMILIES.items()}


def _validate(clf: BaseEstimator, key: str, value: Any) -> None:
    """Raises ParamError when scikit-learn's constraints refuse `clf`'s parameter `key` (set to `value`)."""
    from sklearn.utils._param_validation import InvalidParameterError

    try:
        clf._validate_params()
    except InvalidParameterError as exc:
        # "The 'max_iter' parameter of SGDClassifier must be <constraints>. Got <repr> instead."
        found = re.search(r" must be (.*?)\. Got ", str(exc), re.S)
        expected = found.group(1) if found else "a valid value"
        raise ParamError(key, f"{type(clf).__name__} expects {shorten(expected)} "
                         f"(got {bounded(value)})") from None


def refused_param(exc: BaseException, params: Mapping[str, Any]) -> str | None:
    """The configured parameter a scikit-learn error at training is about (an InvalidParameterError
    naming it, or a TypeError of a constructor that does not take it), or None."""
    from sklearn.utils._param_validation import InvalidParameterError

    head = str(exc)[:300]
    if isinstance(exc, InvalidParameterError):
        found = re.match(r"The '(\w+)' parameter of ", head)
    elif isinstance(exc, TypeError):
        found = re.search(r"unexpected keyword argument '(\w+)'", head)
    else:
        return None
    return found.group(1) if found and found.group(1) in params else None


def family(name: str) -> Family:
    """The family registered under `name`, or ValueError naming it and the known ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        known = ", ".join(repr(n) for n in FAMILIES)
        raise ValueError(f"unknown model family {name!r} (known families: {known})") from None


def family_of(model: Pipeline) -> Family:
    """The family a fitted pipeline belongs to (a champion keeps its family when the config changes)."""
    for candidate in FAMILIES.values():
        if candidate.owns(model):
            return candidate
    clf = type(model.named_steps.get("clf")).__name__
    known = ", ".join(repr(n) for n in FAMILIES)
    raise ValueError(f"a pipeline with a {clf} classifier belongs to no model family "
                     f"(known families: {known})")
