"""Model families on mixed data, for both tasks: fit, fine-tune without touching the champion, skops-safe
logging, parameters checked when the config loads; and a user's own model (`model.estimator`).

Every test of a family runs for every family of the registry (`families.FAMILIES`).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from pydantic import ValidationError
from sklearn.pipeline import Pipeline

from conftest import make_batch
from perennial.adapters.batch_files import iter_chunks, read_batch, split_holdout
from perennial.core import families
from perennial.core.config import ConfigError, ModelConfig, PipelineConfig, TrainingConfig
from perennial.core.inputs import ModelInputs, with_inputs
from perennial.core.lifelong import ReplayMemory
from perennial.core.metrics import METRICS
from perennial.core.sampling import sample_rows
from perennial.core.schema import features_frame, infer_schema, labels, metric_for
from perennial.core.types import Candidate, Champion, CycleRecord, Schema, TrainingRows
from perennial.pipeline.training import earlier_batches, train, training_rows

TRAINING = TrainingConfig()
FAMILIES = list(families.FAMILIES)
# Families that cannot learn incrementally: out of core they learn from a bounded sample.
SAMPLED = [name for name, f in families.FAMILIES.items() if not isinstance(f, families.IncrementalFamily)]


def accuracy(model, frame: pd.DataFrame, schema: Schema) -> float:
    X, y = families.training_data(frame, schema)
    return METRICS["accuracy"].score(model, X, y.to_numpy())


def regression_batch(rows: int = 1000, *, seed: int, slope: float = 1.0, shift: float = 0.0) -> pd.DataFrame:
    """`make_batch`'s columns (mixed kinds, nulls, odd names) with a continuous target of them."""
    frame = make_batch(rows, seed=seed, shift=shift).drop(columns=["label"])
    noise = np.random.default_rng(seed + 100).normal(0, 0.3, rows)
    frame["price"] = (slope * frame["x one"] + np.sin(frame["x-two"]) * 3 + 2 * (frame["colour"] == "red")
                      + frame["is member"] + noise)
    return frame


def mae(model, frame: pd.DataFrame, schema: Schema) -> float:
    X, y = families.training_data(frame, schema)
    return METRICS["mae"].score(model, X, y.to_numpy())


def fitted(family: str, frame: pd.DataFrame, schema: Schema, **params) -> Pipeline:
    return families.fit_model(families.family(family).build(schema, 0, params), frame, schema)


def test_the_registry_holds_each_family_under_its_own_name():
    assert FAMILIES == ["sgd", "hgb", "lgbm"]
    assert SAMPLED and len(SAMPLED) < len(FAMILIES)
    for name, family in families.FAMILIES.items():
        assert family.name == name and families.family(name) is family
        assert family.trusted_types[-1] == families.INPUTS_TYPE
        assert families.TRUSTED_TYPES[name] == family.trusted_types
    every = {t for f in families.FAMILIES.values() for t in f.trusted_types}
    # Loading also trusts the name versions registered before the layers give the input conversion.
    assert sorted(every | {families.LEGACY_INPUTS_TYPE}) == families.ALL_TRUSTED_TYPES
    # Spelt out in the module (importing it imports no scikit-learn); it must name the class.
    inputs = f"{ModelInputs.__module__}.{ModelInputs.__qualname__}"
    assert inputs == families.INPUTS_TYPE


def test_an_unknown_family_is_named_with_the_known_ones():
    known = ", ".join(repr(name) for name in FAMILIES)
    with pytest.raises(ValueError) as err:
        families.family("xgb")
    assert str(err.value) == f"unknown model family 'xgb' (known families: {known})"
    with pytest.raises(ValueError) as err:
        families.family_of(Pipeline([("pre", "passthrough"), ("clf", ModelInputs({}))]))
    assert str(err.value) == f"a pipeline with a ModelInputs classifier belongs to no model family " \
                             f"(known families: {known})"


def test_importing_the_registry_imports_no_scikit_learn():
    # The config imports it to check `model.family`, before the flow's libraries load.
    code = ("import sys; from perennial.core.config import ModelConfig; ModelConfig(family='lgbm'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('sklearn', 'pandas', 'scipy', 'lightgbm', 'xgboost')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("classes", [2, 3])
def test_family_learns_mixed_types_with_nulls_and_odd_names(family, classes):
    train, test = make_batch(seed=1, classes=classes), make_batch(seed=2, classes=classes)
    schema = infer_schema(train, "label", None)
    assert schema.features == {"x one": "numeric", "x-two": "numeric", "noise": "numeric",
                               "colour": "categorical", "is member": "boolean"}
    model = families.family(family).build(schema, seed=0)
    assert [name for name, _ in model.steps] == ["pre", "clf"]
    model.fit(features_frame(train, schema), labels(train, "label"))
    assert families.family_of(model) is families.family(family)
    assert accuracy(model, test, schema) > (0.9 if classes == 2 else 0.8)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_learns_a_regression_target_from_mixed_types_with_nulls(family):
    train, test = regression_batch(seed=1), regression_batch(seed=2)
    schema = infer_schema(train, "price", None, "regression")
    model = families.family(family).build(schema, seed=0)
    assert [name for name, _ in model.steps] == ["pre", "clf"]
    assert type(model.named_steps["clf"]).__name__.endswith("Regressor")
    families.fit_model(model, train, schema)
    assert families.family_of(model) is families.family(family)
    baseline = float(np.mean(np.abs(test["price"] - train["price"].mean())))
    assert mae(model, test, schema) < 0.7 * baseline
    # A row without a target value is not learnt from (a regression cannot), the others are.
    gaps = train.assign(price=train["price"].where(train.index % 10 > 0))
    assert len(families.training_data(gaps, schema)[1]) == 900
    families.fit_model(families.family(family).build(schema, seed=0), gaps, schema)


@pytest.mark.parametrize("family", FAMILIES)
def test_fine_tune_adapts_to_a_moved_boundary_and_leaves_the_champion_as_it_was(family):
    # SEA's threshold moves from 10 to 12: a moderate concept drift the champion half-misses.
    old, new, later = make_batch(seed=1), make_batch(seed=2, theta=12), make_batch(seed=3, theta=12)
    schema = infer_schema(old, "label", None)
    champion = fitted(family, old, schema)
    before = champion.predict(features_frame(later, schema))
    tuned = families.fine_tune(champion, features_frame(new, schema), labels(new, "label"), TRAINING,
                               METRICS["accuracy"])
    assert np.array_equal(champion.predict(features_frame(later, schema)), before)
    assert accuracy(champion, later, schema) < 0.93
    assert accuracy(tuned, later, schema) > accuracy(champion, later, schema) + 0.03


@pytest.mark.parametrize("family", FAMILIES)
def test_a_regression_fine_tune_adapts_to_a_steeper_slope(family):
    old, new, later = regression_batch(seed=1), regression_batch(seed=2, slope=1.6), regression_batch(seed=3,
                                                                                                      slope=1.6)
    schema = infer_schema(old, "price", None, "regression")
    champion = fitted(family, old, schema)
    X, y = families.training_data(new, schema)
    tuned = families.fine_tune(champion, X, y, TRAINING, METRICS["mae"])
    assert mae(tuned, later, schema) < 0.8 * mae(champion, later, schema)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_champion_is_fine_tuned_by_what_it_offers_whatever_the_config_now_says(family):
    old, new = make_batch(seed=1), make_batch(seed=2, theta=12)
    schema = infer_schema(old, "label", None)
    champion = fitted(family, old, schema)
    other = next(name for name in FAMILIES if name != family)
    config = PipelineConfig(name="m", data={"source": "in", "target": "label"},
                            model={"family": other, "estimator": "nowhere.to_be:found"},
                            policy={"metric": "log_loss"})
    metric = metric_for(config, schema)
    tuned = train(Candidate.FINE_TUNE, TrainingRows(len(new), frame=new), Champion(1, champion, 0.9, old),
                  schema, config, metric)
    expected = families.fine_tune(champion, features_frame(new, schema), labels(new, "label"),
                                  config.training, metric)
    assert families.family_of(tuned) is families.family(family)
    assert np.array_equal(tuned.predict_proba(features_frame(new, schema)),
                          expected.predict_proba(features_frame(new, schema)))


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("family", FAMILIES)
def test_declared_trusted_types_cover_what_skops_needs_also_with_the_input_conversion(family, task):
    frame = make_batch(seed=1) if task == "classification" else regression_batch(seed=1)
    schema = infer_schema(frame, "label" if task == "classification" else "price", None, task)
    model = fitted(family, frame, schema)
    X, y = families.training_data(make_batch(seed=2, shift=1) if task == "classification"
                                  else regression_batch(seed=2, shift=1), schema)
    metric = METRICS["accuracy" if task == "classification" else "mae"]
    tuned = families.fine_tune(model, X, y, TRAINING, metric)
    for saved in (model, tuned):
        served = with_inputs(saved, schema.features)  # as registered: it takes the user's raw columns
        for each in (saved, served):
            untrusted = set(sio.get_untrusted_types(data=sio.dumps(each)))
            assert untrusted <= set(families.family(family).trusted_types)
            assert untrusted <= set(families.ALL_TRUSTED_TYPES)  # what the registry loader trusts
        loaded = sio.loads(sio.dumps(served), trusted=families.family(family).trusted_types)
        raw = frame.drop(columns=[schema.target])
        assert list(loaded.predict(raw)) == list(saved.predict(features_frame(frame, schema)))


def test_a_sample_drawn_chunk_by_chunk_is_uniform_whatever_the_chunk_sizes():
    frame = pd.DataFrame({"i": range(10_000)})

    def chunks():
        return (frame.iloc[a:b] for a, b in [(0, 100), (100, 9_000), (9_000, 10_000)])

    sample = sample_rows(chunks(), 2_000, seed=0)
    assert len(sample) == 2_000 and sample["i"].is_unique
    assert 150 <= (sample["i"] >= 9_000).sum() <= 250  # the last tenth of the rows: about 200
    assert len(sample_rows(chunks(), 20_000, seed=0)) == 10_000


@pytest.mark.parametrize("family", FAMILIES)
def test_out_of_core_fit_matches_the_in_memory_fit_and_stays_skops_safe(tmp_path, family):
    window, test = make_batch(30_000, seed=5), make_batch(5_000, seed=6)
    window.to_parquet(tmp_path / "window.parquet", index=False)
    schema = infer_schema(window, "label", None)
    in_memory = fitted(family, window, schema)
    seen = []

    def chunks():
        for chunk in iter_chunks(tmp_path / "window.parquet", "auto", 5_000):
            seen.append(len(chunk))
            yield chunk

    model = families.family(family).fit_out_of_core(schema, 0, chunks,
                                                    TrainingConfig(preprocess_sample_rows=10_000))
    # An incremental family samples the preprocessing's rows, then learns in epochs; another, one sample.
    passes = 1 + TRAINING.out_of_core_epochs if family not in SAMPLED else 1
    assert max(seen) == 5_000 and sum(seen) == 30_000 * passes
    assert [name for name, _ in model.steps] == ["pre", "clf"]
    assert accuracy(model, test, schema) >= accuracy(in_memory, test, schema) - 0.02
    assert set(sio.get_untrusted_types(data=sio.dumps(model))) <= set(families.family(family).trusted_types)


@pytest.mark.parametrize("family", SAMPLED)
def test_out_of_core_without_partial_fit_learns_from_a_bounded_sample(tmp_path, family):
    window = make_batch(20_000, seed=5)
    schema = infer_schema(window, "label", None)
    model = families.family(family).fit_out_of_core(
        schema, 0, lambda: (window.iloc[i:i + 5_000] for i in range(0, 20_000, 5_000)),
        TrainingConfig(max_rows_in_memory=4_000))
    assert accuracy(model, make_batch(seed=6), schema) > 0.9


def test_an_sgd_regression_out_of_core_learns_every_chunk_without_classes():
    window, test = regression_batch(12_000, seed=5), regression_batch(2_000, seed=6)
    schema = infer_schema(window, "price", None, "regression")
    window.loc[window.index % 50 == 0, "price"] = np.nan  # rows without a value are skipped
    model = families.family("sgd").fit_out_of_core(
        schema, 0, lambda: (window.iloc[i:i + 3_000] for i in range(0, 12_000, 3_000)),
        TrainingConfig(preprocess_sample_rows=4_000))
    assert mae(model, test, schema) < 1.1 * mae(fitted("sgd", window, schema), test, schema)


def test_a_retrain_on_a_window_larger_than_memory_reads_it_in_chunks(tmp_path):
    config = PipelineConfig(name="m", data={"source": str(tmp_path), "target": "label"},
                            training={"max_rows_in_memory": 10_000, "chunk_rows": 2_000})
    paths = [tmp_path / name for name in ("b0.csv", "b1.parquet", "b2.parquet")]
    make_batch(6_000, seed=10).to_csv(paths[0], index=False)
    for i, path in enumerate(paths[1:], start=11):
        make_batch(6_000, seed=i).to_parquet(path, index=False)
    history = [CycleRecord(batch=p.name, rows=6_000, validation="passed", drift_share=0.0,
                           champion_accuracy_before=None, decision="noop", reason="",
                           champion_version_after=None, path=str(p)) for p in paths[:2]]
    batch = read_batch(paths[2], "auto", "label")
    train_idx, holdout_idx = split_holdout(batch.id, batch.rows, 0.25, 0)
    kind = Candidate.RETRAIN_WINDOW
    earlier = earlier_batches(kind, history, config, None)

    memory = ReplayMemory.empty(5000, "label")  # a retrain does not replay
    kept = {"b0.csv", "b1.parquet"}  # their windows still measure forgetting
    rows, sources = training_rows(kind, batch, train_idx, earlier, kept, config, memory)
    # Each earlier batch gives its 4,500 training rows and the 500 of its 1,500 holdout rows that are
    # not in its 1,000-row window; the new batch its training rows only.
    assert rows.out_of_core and rows.rows == 2 * (4_500 + 500) + 4_500
    assert sources == ["b0.csv", "b1.parquet", "b2.parquet"]
    # The same training rows as the in-memory path, in the same order.
    roomy = config.model_copy(update={"training": TrainingConfig()})
    in_memory, _ = training_rows(kind, batch, train_idx, earlier, kept, roomy, memory)
    assert not in_memory.out_of_core
    pd.testing.assert_frame_equal(pd.concat(rows.chunks(), ignore_index=True), in_memory.frame)
    assert len(rows.sample(1_000)) == 1_000

    schema = infer_schema(batch.frame, "label", None)
    model = train(kind, rows, None, schema, config)
    assert accuracy(model, batch.frame.iloc[holdout_idx], schema) > 0.95




# -- The user's own model (`model.estimator`) -------------------------------------------------------

FACTORY = '''
import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OrdinalEncoder

calls = []


def build(schema, seed):
    calls.append((schema.task, seed))
    pre = ColumnTransformer([
        ("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                               encoded_missing_value=-1), schema.columns("categorical")),
        ("num", SimpleImputer(), schema.columns("numeric") + schema.columns("boolean")),
    ])
    forest = RandomForestRegressor if schema.regression else RandomForestClassifier
    return Pipeline([("pre", pre), ("forest", forest(n_estimators=20, random_state=seed, n_jobs=1))])


def not_a_model(schema, seed):
    return {"n_estimators": 10}


def fitted_already(schema, seed):
    from sklearn.dummy import DummyClassifier
    return DummyClassifier().fit([[0], [1]], ["a", "b"])


def a_classifier(schema, seed):
    return RandomForestClassifier()


def broken(schema, seed):
    raise KeyError("colour")
'''


@pytest.fixture
def project(tmp_path):
    """The user's project beside their config file: a package `shop` holding `shop/models.py`."""
    package = tmp_path / "shop"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(textwrap.dedent(FACTORY))
    yield tmp_path
    for name in [m for m in sys.modules if m == "shop" or m.startswith("shop.")]:
        del sys.modules[name]  # another test's project is another package of the same name


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_a_factory_beside_the_config_builds_the_model_used_as_it_returns_it(project, task):
    frame = make_batch(seed=1) if task == "classification" else regression_batch(seed=1)
    schema = infer_schema(frame, "label" if task == "classification" else "price", None, task)
    config = ModelConfig(estimator="shop.models:build", params={"not": "checked"})
    model = families.build_model(config, schema, 7, project)
    assert str(project) not in sys.path  # on the path for the import only
    assert sys.modules["shop.models"].calls == [(task, 7)]
    assert [name for name, _ in model.steps] == ["pre", "forest"] and not hasattr(model, "classes_")
    families.fit_model(model, frame, schema)
    if task == "classification":  # fitted on labels as strings, values as floats
        assert list(model.classes_) == ["high", "low"]
    else:
        assert model.predict(features_frame(frame, schema)).dtype == float
    assert families.preset_of(model) is None
    assert families.factory_code_path(config, project) == project / "shop"


def test_a_user_model_is_trained_by_train_and_out_of_core_on_a_bounded_sample(project):
    frame = make_batch(3_000, seed=1)
    schema = infer_schema(frame, "label", None)
    config = PipelineConfig(name="m", data={"source": "in", "target": "label"}, base_dir=project,
                            model={"estimator": "shop.models:build"}, training={"max_rows_in_memory": 1_000})
    model = train(Candidate.RETRAIN_BATCH, TrainingRows(len(frame), frame=frame), None, schema, config)
    assert accuracy(model, make_batch(seed=2), schema) > 0.85
    chunks = TrainingRows(len(frame), chunks=lambda: (frame.iloc[i:i + 500] for i in range(0, 3_000, 500)))
    model = train(Candidate.RETRAIN_WINDOW, chunks, None, schema, config)
    assert model.named_steps["forest"].estimators_[0].tree_.n_node_samples[0] <= 1_000  # the sample's rows


@pytest.mark.parametrize(("spec", "problem"), [
    ("shop.nothing:build", "cannot import module 'shop.nothing' (ModuleNotFoundError: No module named "
                           "'shop.nothing')"),
    ("nowhere:build", "cannot import module 'nowhere' (ModuleNotFoundError: No module named 'nowhere')"),
    ("shop.models:missing", "module 'shop.models' ({models}) has no function 'missing'"),
    ("shop.models:calls", "module 'shop.models' ({models}) has no function 'calls'"),
    ("shop.models:not_a_model", "shop.models:not_a_model returned dict {{'n_estimators': 10}}, which has "
                                "no fit nor predict: expected an unfitted scikit-learn estimator or "
                                "Pipeline"),
    ("shop.models:fitted_already", "shop.models:fitted_already returned a fitted DummyClassifier; return a "
                                   "new one (Perennial fits it on each training's rows)"),
    ("shop.models:a_classifier", "shop.models:a_classifier returned a classifier (RandomForestClassifier) "
                                 "and the target is a regression target: return a regressor (or set "
                                 "model.task)"),
    ("shop.models:broken", "shop.models:broken(schema, seed) raised KeyError: 'colour'"),
], ids=["no-module", "no-package", "no-function", "not-callable", "not-an-estimator", "fitted", "wrong-task",
        "raises"])
def test_a_factory_that_cannot_build_a_model_is_a_one_line_config_error(project, spec, problem):
    schema = Schema({"x": "numeric"}, "y", (), "regression")
    with pytest.raises(ConfigError) as err:
        families.build_model(ModelConfig(estimator=spec), schema, 0, project, where="conf.yaml: ")
    models = project / "shop" / "models.py"
    assert str(err.value) == f"conf.yaml: key 'model.estimator': {problem.format(models=models)}"
    assert "\n" not in str(err.value)


def test_a_factory_of_a_single_module_ships_that_module(tmp_path):
    (tmp_path / "solo_factory.py").write_text("def build(schema, seed):\n    pass\n")
    config = ModelConfig(estimator="solo_factory:build")
    assert families.factory_code_path(config, tmp_path) == tmp_path / "solo_factory.py"
    assert families.factory_code_path(ModelConfig(), tmp_path) is None  # a preset ships nothing


# -- Parameters checked when the config loads --------------------------------------------------------

def refusal(**model) -> str:
    with pytest.raises(ValidationError) as err:
        ModelConfig(**model)
    return err.value.errors()[0]["ctx"]["param"] + ": " + err.value.errors()[0]["msg"]


def test_params_are_checked_against_the_estimator_of_the_task():
    quantile = {"loss": "quantile", "quantile": 0.9}  # HistGradientBoostingRegressor's own
    assert ModelConfig(family="hgb", params=quantile, task="regression").params == quantile
    assert ModelConfig(family="hgb", params=quantile).params == quantile  # task not known yet: either
    assert refusal(family="hgb", params=quantile, task="binary") == \
        "params.loss: HistGradientBoostingClassifier expects a str among {'log_loss'} or an instance of " \
        "'sklearn._loss.loss.BaseLoss' (got 'quantile')"
    assert refusal(family="sgd", params={"loss": "log_loss"}, task="regression").startswith(
        "params.loss: SGDRegressor expects a str among")
    assert refusal(family="sgd", params={"max_iters": 5}) == \
        "params.max_iters: not a parameter of SGDClassifier (did you mean 'max_iter'?)"


def test_lgbm_params_take_booster_parameters_by_any_alias_and_not_the_categories():
    params = {"num_leaves": 15, "feature_fraction": 0.8, "min_data_in_leaf": 5}
    assert ModelConfig(family="lgbm", params=params, task="multiclass").params == params
    assert refusal(family="lgbm", params={"learning_rat": 0.1}) == \
        "params.learning_rat: not a parameter of LGBMClassifier (did you mean 'learning_rate'?)"
    for key in ("categorical_column", "categorical_feature"):
        assert refusal(family="lgbm", params={key: [0]}) == \
            f"params.{key}: set by the 'lgbm' family itself; remove it"


def test_params_of_a_users_own_estimator_are_left_to_it():
    model = ModelConfig(estimator="shop.models:build", params={"whatever": 1})
    assert model.params == {"whatever": 1}
