"""Models: the preset families, the user's own factory (`model.estimator`), and how a model keeps learning.

A family is not an estimator: it makes one, `Pipeline([("pre", preprocessing), ("clf", estimator)])`,
a classifier or a regressor for the schema's task, and knows how it trains out of core. `Family`
holds what every family shares (the pipeline's shape, its parameters checked when the config loads,
training on a bounded sample when the rows do not fit in memory, the skops types of Perennial's own
input conversion); `IncrementalFamily` adds what every estimator with `partial_fit` shares (training
out of core in epochs over the chunks).

Adding a family (a calibrated logistic regression, CatBoost, ...) is: write one class, a subclass of
`Family` (or of `IncrementalFamily` if its estimators have `partial_fit`) with a `name`, its
`skops_types` and its three `preprocessor` / `estimator_type` / `estimator_params` methods; then
add the class to `FAMILIES` below. The config (`model.family`), the trusted types of the registry
loader and the tests follow the registry.

A user's own model (`model.estimator: "package.module:function"`) is built by their function and used
as it returns it (`build_model`). Whatever built it, a champion is fine-tuned by what its last step
offers (`continuation`, `fine_tune`: see perennial.core.continuation), never by its family.

Importing this module is cheap (numpy only): the config imports it to check `model.family`, and the
flow module imports it at start-up. scikit-learn, LightGBM and the user's module are imported by the
functions that use them.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import re
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from perennial.core.continuation import continuation, fine_tune, last_step  # noqa: F401 (the model API)
from perennial.core.text import bounded, shorten

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.base import BaseEstimator
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    from perennial.core.config import ModelConfig, TrainingConfig
    from perennial.core.types import Schema

# Our conversion of raw columns, logged in front of every pipeline (perennial.core.inputs.ModelInputs;
# spelt out so that importing this module does not import scikit-learn; a test checks it).
INPUTS_TYPE = "perennial.core.inputs.ModelInputs"
# Where versions registered before the package had layers name it (`perennial/inputs.py` leads there).
LEGACY_INPUTS_TYPE = "perennial.inputs.ModelInputs"
# What a model predicts, as its estimator is chosen (`model.task` binary and multiclass are classification).
TASKS = ("classification", "regression")

Chunks = Callable[[], Iterable["pd.DataFrame"]]


class ParamError(ValueError):
    """A configured parameter (`model.params.<key>`) the family's estimator does not take or refuses."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key


def task_of(task: str | None) -> str | None:
    """The task an estimator is built for: `model.task` binary and multiclass are classification."""
    return None if task is None else "regression" if task == "regression" else "classification"


class Family(ABC):
    """How to build, check and train out of core the pipelines of one model family."""

    #: The name `model.family` selects this family by.
    name: ClassVar[str]
    #: Types skops must be told to trust when MLflow saves this family's fitted pipelines (checked
    #: with skops.io.get_untrusted_types); everything else is trusted by default.
    skops_types: ClassVar[tuple[str, ...]] = ()
    #: The package of its estimators: a model is one of theirs only once that package is imported.
    package: ClassVar[str] = "sklearn"

    @property
    def trusted_types(self) -> list[str]:
        """The skops types to trust for this family's pipelines, served behind our input conversion."""
        return [*self.skops_types, INPUTS_TYPE]

    @abstractmethod
    def preprocessor(self, numeric: list[str], categorical: list[str]) -> ColumnTransformer:
        """The unfitted preprocessing of the model inputs (numeric and boolean columns, categories)."""

    @abstractmethod
    def estimator_type(self, task: str) -> type[BaseEstimator]:
        """The estimator's class for `task` (`classification` or `regression`), imported here."""

    @abstractmethod
    def estimator_params(self, task: str, seed: int, params: Mapping[str, Any],
                         categorical: list[str]) -> dict[str, Any]:
        """The estimator's parameters: the family's defaults, overridden by the configured `params`."""

    def build(self, schema: Schema, seed: int, params: Mapping[str, Any] | None = None) -> Pipeline:
        """A fresh, unfitted `Pipeline([("pre", ...), ("clf", ...)])` of this family for the schema's task."""
        from sklearn.pipeline import Pipeline

        numeric = schema.columns("numeric") + schema.columns("boolean")
        categorical = schema.columns("categorical")
        task = task_of(schema.task) or "classification"
        pre = self.preprocessor(numeric, categorical)
        est = self.estimator_type(task)(**self.estimator_params(task, seed, params or {}, categorical))
        return Pipeline([("pre", pre), ("clf", est)])

    def check_params(self, params: Mapping[str, Any], task: str | None = None) -> None:
        """Raises ParamError for the first configured parameter the estimator of `task` does not take,
        the family sets itself, or the estimator's own constraints refuse; nothing is fitted. With no
        task (inferred from the first batch), the parameters must suit the classifier or the regressor;
        the classifier's problem is reported."""
        problems = []
        for each in [task_of(task)] if task else TASKS:
            try:
                self._check_params_for(each, params)
                return
            except ParamError as exc:
                problems.append(exc)
        raise problems[0]

    def _check_params_for(self, task: str, params: Mapping[str, Any]) -> None:
        cls = self.estimator_type(task)
        known = self.known_params(cls)
        for key, value in params.items():
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ParamError(key, f"not a parameter of {cls.__name__}{hint}")
            given = self.estimator_params(task, 0, {key: value}, [])
            if given.get(key) is not value:
                raise ParamError(key, f"set by the '{self.name}' family itself; remove it")
            _validate(cls(**given), key, value)
        self._check_together(cls(**self.estimator_params(task, 0, params, [])), params)

    def known_params(self, cls: type[BaseEstimator]) -> list[str]:
        """The parameters the estimator class takes."""
        return list(cls().get_params(deep=False))

    def _check_together(self, clf: BaseEstimator, params: Mapping[str, Any]) -> None:  # noqa: B027
        """Raises ParamError for parameters valid one by one but not together (nothing by default)."""

    def owns(self, model: Any) -> bool:
        """Whether `model` is a pipeline of this family, of either task (judged by its estimator)."""
        est = getattr(model, "named_steps", {}).get("clf")
        if est is None or self.package not in sys.modules:
            return False
        return isinstance(est, tuple(self.estimator_type(task) for task in TASKS))

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

        sample = sample_rows(chunks(), training.max_rows_in_memory, seed)
        return fit_model(self.build(schema, seed, params), sample, schema)


class IncrementalFamily(Family):
    """A family whose estimators learn with `partial_fit`: out of core, they learn from every row of
    the window, in epochs over the chunks (and a fine-tune continues with `partial_fit`)."""

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

    def fit_out_of_core(self, schema: Schema, seed: int, chunks: Chunks, training: TrainingConfig,
                        params: Mapping[str, Any] | None = None) -> Pipeline:
        """A pipeline of this family trained on rows read chunk by chunk, never all at once.

        A first pass draws a uniform sample of `training.preprocess_sample_rows` rows, fits the
        preprocessing on it (medians, scales, categories: one too rare to be sampled is ignored like
        an unknown one) and collects the labels (classification); then `training.out_of_core_epochs`
        passes of `partial_fit` over the transformed chunks, rows shuffled within each chunk, chunks
        in order.

        Args:
            chunks: called once per pass; yields the raw training rows (features and target) as frames.

        Returns:
            An ordinary fitted `Pipeline([("pre", ...), ("clf", ...)])`, as `build(...).fit(...)` gives.
        """
        from perennial.core.sampling import sample_rows
        from perennial.core.schema import labels

        pipeline = self.build(schema, seed, params)
        seen: set[str] = set()

        def observed() -> Iterator[pd.DataFrame]:
            for chunk in chunks():
                if not schema.regression:
                    seen.update(labels(chunk, schema.target).unique())
                yield chunk

        sample = sample_rows(observed(), training.preprocess_sample_rows, seed)
        pre, clf = pipeline.named_steps["pre"], pipeline.named_steps["clf"]
        pre.fit(training_data(sample, schema)[0])
        del sample
        given = {} if schema.regression else {"classes": np.array(sorted(seen), dtype=object)}
        rng = np.random.default_rng(seed)
        for _ in range(training.out_of_core_epochs):
            for chunk in chunks():
                X, y = training_data(chunk, schema)
                if not len(y):
                    continue
                # Fixed-width strings: partial_fit's np.unique on Python str objects was 15% of an epoch.
                Xt, y = pre.transform(X), y.to_numpy(float if schema.regression else str)
                order = rng.permutation(len(y))
                clf.partial_fit(Xt[order], y[order], **given)
        return pipeline


def _ordinal_categories(numeric: list[str], categorical: list[str]) -> ColumnTransformer:
    """Categories as ordinal codes, first, then the numbers as they are: for trees with native categories."""
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


class SGDFamily(IncrementalFamily):
    """`sgd`: median imputation and scaling of numbers, one-hot categories, `SGDClassifier(log_loss)`
    or `SGDRegressor`; fine-tuned one `partial_fit` epoch per pass."""

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

    def estimator_type(self, task: str) -> type[BaseEstimator]:
        from sklearn.linear_model import SGDClassifier, SGDRegressor

        return SGDRegressor if task == "regression" else SGDClassifier

    def estimator_params(self, task: str, seed: int, params: Mapping[str, Any],
                         categorical: list[str]) -> dict[str, Any]:
        defaults = {} if task == "regression" else {"loss": "log_loss"}
        return {**defaults, "random_state": seed, **params}


class HGBFamily(Family):
    """`hgb`: `HistGradientBoostingClassifier` / `Regressor` with native categories; fine-tuned by
    adding `training.fine_tune_trees` trees per pass (`warm_start`)."""

    name = "hgb"
    skops_types = (
        "functools.partial",
        "numpy.dtype",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.utils.validation.check_array",
    )

    def preprocessor(self, numeric: list[str], categorical: list[str]) -> ColumnTransformer:
        return _ordinal_categories(numeric, categorical)

    def estimator_type(self, task: str) -> type[BaseEstimator]:
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        return HistGradientBoostingRegressor if task == "regression" else HistGradientBoostingClassifier

    def estimator_params(self, task: str, seed: int, params: Mapping[str, Any],
                         categorical: list[str]) -> dict[str, Any]:
        # The categorical columns come first out of the preprocessing.
        return {"random_state": seed, "early_stopping": False, **params,
                "categorical_features": list(range(len(categorical)))}


class LGBMFamily(Family):
    """`lgbm`: LightGBM's `LGBMClassifier` / `LGBMRegressor` on ordinal-coded categories, which it splits
    as categories; fine-tuned by adding `training.fine_tune_trees` rounds per pass (`init_model`)."""

    name = "lgbm"
    package = "lightgbm"
    skops_types = (
        "collections.OrderedDict",
        "lightgbm.basic.Booster",
        "lightgbm.basic._InnerPredictor",  # a fine-tuned booster's link to where it continued from
        "lightgbm.sklearn.LGBMClassifier",
        "lightgbm.sklearn.LGBMRegressor",
        "numpy.dtype",
    )

    def preprocessor(self, numeric: list[str], categorical: list[str]) -> ColumnTransformer:
        return _ordinal_categories(numeric, categorical)

    def estimator_type(self, task: str) -> type[BaseEstimator]:
        from lightgbm import LGBMClassifier, LGBMRegressor

        return LGBMRegressor if task == "regression" else LGBMClassifier

    def estimator_params(self, task: str, seed: int, params: Mapping[str, Any],
                         categorical: list[str]) -> dict[str, Any]:
        # One thread: a cycle trains beside its monitoring on small machines. The categories come first
        # out of the preprocessing; `categorical_column` (an alias of `categorical_feature`) reaches the
        # booster as a parameter, which that name would only with a warning that it is ignored (it is not).
        return {"random_state": seed, "n_jobs": 1, "verbose": -1, **params,
                "categorical_column": list(range(len(categorical)))}

    def known_params(self, cls: type[BaseEstimator]) -> list[str]:
        # LightGBM's estimators also take any booster parameter, under any of its aliases (listed by
        # LightGBM's own private table: without it, only the estimator's named parameters).
        try:
            from lightgbm.basic import _ConfigAliases

            booster = {name for names in _ConfigAliases._get_all_param_aliases().values() for name in names}
        except (ImportError, AttributeError):
            booster = set()
        return sorted({*super().known_params(cls), *booster})

    def _check_together(self, clf: BaseEstimator, params: Mapping[str, Any]) -> None:
        aliases = {"categorical_feature", "cat_feature", "categorical_column", "cat_column",
                   "categorical_features"}  # LightGBM's names of it
        for key in params:
            if key in aliases:
                raise ParamError(key, f"set by the '{self.name}' family itself; remove it")


# The registry: `model.family` names one of these.
FAMILIES: dict[str, Family] = {cls.name: cls() for cls in (SGDFamily, HGBFamily, LGBMFamily)}
# What Perennial trusts when it loads a registered version, whatever its MLmodel file lists.
ALL_TRUSTED_TYPES: list[str] = sorted({LEGACY_INPUTS_TYPE,
                                       *(t for f in FAMILIES.values() for t in f.trusted_types)})
# The trusted types of each family by name.
TRUSTED_TYPES: dict[str, list[str]] = {name: f.trusted_types for name, f in FAMILIES.items()}


def _validate(clf: BaseEstimator, key: str, value: Any) -> None:
    """Raises ParamError when scikit-learn's constraints refuse `clf`'s parameter `key` (set to `value`)."""
    from sklearn.utils._param_validation import InvalidParameterError

    if not hasattr(clf, "_parameter_constraints"):  # LightGBM's: its booster checks them at fit
        return
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


def preset_of(model: Any) -> Family | None:
    """The family a fitted model is a pipeline of, or None (a user's own model)."""
    return next((candidate for candidate in FAMILIES.values() if candidate.owns(model)), None)


def family_of(model: Any) -> Family:
    """The family a fitted pipeline belongs to, or ValueError naming its estimator."""
    found = preset_of(model)
    if found is not None:
        return found
    clf = type(getattr(model, "named_steps", {}).get("clf", model)).__name__
    known = ", ".join(repr(n) for n in FAMILIES)
    raise ValueError(f"a pipeline with a {clf} classifier belongs to no model family "
                     f"(known families: {known})")


# -- Building and fitting a model -------------------------------------------------------------------

def build_model(model: ModelConfig, schema: Schema, seed: int, base_dir: str | Path = ".",
                where: str = "") -> Any:
    """A fresh, unfitted model for the config: the user's own when `model.estimator` is set, else the
    preset of `model.family` for the schema's task.

    The user's function is called as `function(schema, seed)` and its estimator used as it returns it
    (Perennial's input conversion happens outside it): fitted on `features_frame` inputs and on labels
    as strings (classification) or values as floats (regression).

    Args:
        base_dir: the config file's folder, where the user's module may also be found.
        where: what errors start with (the config file, "path: ").

    Raises:
        ConfigError: naming `model.estimator`, when its module or function cannot be loaded, the
            function fails, or it returns no unfitted estimator of the task.
    """
    if model.estimator is None:
        return family(model.family).build(schema, seed, model.params)
    factory = load_factory(model.estimator, base_dir, where)
    try:
        estimator = factory(schema, seed)
    except Exception as exc:
        raise _estimator_error(where, f"{model.estimator}(schema, seed) raised {type(exc).__name__}: "
                                      f"{shorten(str(exc), 120)}") from exc
    _check_built(estimator, model.estimator, schema, where)
    return estimator


def load_factory(spec: str, base_dir: str | Path = ".", where: str = "") -> Callable[..., Any]:
    """The function `spec` ("package.module:function") names, its module imported from the Python path
    or from `base_dir`; ConfigError naming `model.estimator` when it cannot be."""
    module_name, _, name = spec.partition(":")
    try:
        with _importable_from(base_dir):
            module = importlib.import_module(module_name)
    except Exception as exc:  # the user's module may fail in any way while it loads
        raise _estimator_error(where, f"cannot import module '{module_name}' ({type(exc).__name__}: "
                                      f"{shorten(str(exc), 120)})") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise _estimator_error(where, f"module '{module_name}' ({_origin(module)}) has no function '{name}'")
    return function


def factory_code_path(model: ModelConfig, base_dir: str | Path = ".") -> Path | None:
    """What to ship with a registered version of the user's own model (MLflow `code_paths`): the
    top-level package folder of `model.estimator`'s module, or the module's file when it is a single
    module; None for a preset, or a module with no file."""
    if model.estimator is None:
        return None
    top = model.estimator.partition(":")[0].split(".")[0]
    with _importable_from(base_dir):
        spec = importlib.util.find_spec(top)
    if spec is None:
        return None
    if spec.submodule_search_locations:  # a package (a namespace package may span several folders)
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(spec.origin) if spec.has_location and spec.origin else None


def training_data(frame: pd.DataFrame, schema: Schema) -> tuple[pd.DataFrame, pd.Series]:
    """A frame's model inputs and target as models learn them (labels as strings, or values as floats);
    a regression learns only from rows with a target value."""
    from perennial.core.schema import features_frame, target_values

    y = target_values(frame, schema)
    if schema.regression and y.isna().any():
        frame, y = frame[y.notna().to_numpy()], y[y.notna()]
    return features_frame(frame, schema), y


def fit_model(model: Any, frame: pd.DataFrame, schema: Schema) -> Any:
    """`model` fitted on the raw rows of `frame` (features and target)."""
    X, y = training_data(frame, schema)
    return model.fit(X, y)


def fit_out_of_core(model: ModelConfig, schema: Schema, seed: int, chunks: Chunks, training: TrainingConfig,
                    base_dir: str | Path = ".", where: str = "") -> Any:
    """A model for the config trained on rows read chunk by chunk: a preset as its family trains out of
    core, the user's own on a uniform sample of at most `training.max_rows_in_memory` rows."""
    if model.estimator is None:
        return family(model.family).fit_out_of_core(schema, seed, chunks, training, model.params)
    from perennial.core.sampling import sample_rows

    estimator = build_model(model, schema, seed, base_dir, where)
    return fit_model(estimator, sample_rows(chunks(), training.max_rows_in_memory, seed), schema)


@contextlib.contextmanager
def _importable_from(folder: str | Path) -> Iterator[None]:
    """Modules in `folder` importable, for the time of an import (then the Python path is as it was)."""
    path = str(Path(folder).resolve())
    added = path not in sys.path
    if added:
        sys.path.insert(0, path)
        importlib.invalidate_caches()  # a module written since the folder was last looked at
    try:
        yield
    finally:
        if added and path in sys.path:
            sys.path.remove(path)


def _origin(module: Any) -> str:
    return getattr(module, "__file__", None) or "built in"


def _estimator_error(where: str, problem: str) -> ValueError:
    from perennial.core.config import ConfigError

    return ConfigError(f"{where}key 'model.estimator': {problem}")


def _check_built(estimator: Any, spec: str, schema: Schema, where: str) -> None:
    """Raises ConfigError unless the factory returned an unfitted estimator of the schema's task."""
    got = type(estimator).__name__
    lacks = [method for method in ("fit", "predict") if not callable(getattr(estimator, method, None))]
    if lacks:
        raise _estimator_error(where, f"{spec} returned {got} {bounded(estimator, 60)}, which has no "
                                      f"{' nor '.join(lacks)}: expected an unfitted scikit-learn estimator "
                                      "or Pipeline")
    if _fitted(estimator):
        raise _estimator_error(where, f"{spec} returned a fitted {got}; return a new one (Perennial fits it "
                                      "on each training's rows)")
    kind = _kind(estimator)
    expected = "regressor" if schema.regression else "classifier"
    if kind is not None and kind != expected:
        raise _estimator_error(where, f"{spec} returned a {kind} ({got}) and the target is a {schema.task} "
                                      f"target: return a {expected} (or set model.task)")


def _fitted(estimator: Any) -> bool:
    """Whether scikit-learn sees the estimator as fitted (False when it cannot tell)."""
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(estimator)
    except NotFittedError:
        return False
    except Exception:  # not scikit-learn-compatible enough to tell: fitting it will show
        return False
    return True


def _kind(estimator: Any) -> str | None:
    """"classifier" or "regressor" as the estimator's tags say (a Pipeline's: its last step's), or None."""
    from sklearn.base import is_classifier, is_regressor

    try:
        return "classifier" if is_classifier(estimator) else "regressor" if is_regressor(estimator) else None
    except Exception:  # tags of an estimator that is not scikit-learn's: fitting it will show
        return None
