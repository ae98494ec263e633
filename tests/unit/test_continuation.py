"""Continued training by capability: every kind of model a champion can be keeps learning from its own
predictions on the new rows, never from scratch nor from scores it does not make.

Each kind is trained on rows drawn from N(0, 1) and fine-tuned on a batch that moved, N(1.5, 0.5).
"""

from __future__ import annotations

import contextlib
import copy
import textwrap

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import SGDRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from perennial.core import continuation as cont
from perennial.core import families
from perennial.core.config import ModelConfig, TrainingConfig
from perennial.core.inputs import with_inputs
from perennial.core.metrics import METRICS, Metric
from perennial.core.schema import infer_schema
from perennial.core.types import Schema

TRAINING = TrainingConfig()
# One pass learning from every row in order (none held back from 400 rows): a reference can learn the same.
ONE_PASS = TrainingConfig(fine_tune_passes=1, fine_tune_validation=0.001, fine_tune_trees=8)
ACCURACY, MAE = METRICS["accuracy"].bound(("high", "low"), None), METRICS["mae"]


def rows(n: int, seed: int, loc: float = 0.0, scale: float = 1.0,
         task: str = "classification") -> pd.DataFrame:
    """Three numbers from N(loc, scale) (one with gaps), a category, and a target of them."""
    rng = np.random.default_rng(seed)
    x = rng.normal(loc, scale, (n, 3))
    colour = rng.choice(["red", "green", "blue"], n)
    value = x[:, 0] + 0.5 * x[:, 1] ** 2 + (colour == "red") + rng.normal(0, 0.1, n)
    frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "c": x[:, 2], "colour": colour})
    frame.loc[rng.random(n) < 0.05, "c"] = np.nan
    frame["y"] = value if task == "regression" else np.where(value > 1.5, "high", "low")
    return frame


def moved(task: str, n: int = 400) -> tuple[pd.DataFrame, pd.DataFrame, Schema]:
    old, new = rows(800, 1, task=task), rows(n, 2, 1.5, 0.5, task=task)
    return old, new, infer_schema(old, "y", None, task)


def preset(name: str, task: str, **params) -> tuple[Pipeline, pd.DataFrame, pd.Series, Schema]:
    """A fitted preset of `name` (trained on N(0, 1) rows) and the moved rows' inputs and target."""
    old, new, schema = moved(task)
    champion = families.fit_model(families.family(name).build(schema, 0, params), old, schema)
    X, y = families.training_data(new, schema)
    return champion, X, y, schema


def numbers(frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The numeric inputs and a 0/1 class (XGBoost learns class positions) or the value."""
    y = frame["y"].to_numpy()
    return frame[["a", "b", "c"]], (y == "high").astype(int) if y.dtype == object else y


def unchanged(champion, tuned, before: np.ndarray, X) -> None:
    """The champion predicts as it did; the fine-tune gave a copy of the same shape."""
    assert np.array_equal(champion.predict(X), before)
    assert type(tuned) is type(champion) and tuned is not champion
    if isinstance(champion, Pipeline):
        assert [name for name, _ in tuned.steps] == [name for name, _ in champion.steps]


# -- Which continuation -------------------------------------------------------------------------------

def test_continuation_is_judged_by_what_the_last_step_offers():
    import xgboost

    kinds = {}
    for name in families.FAMILIES:
        champion = preset(name, "regression")[0]
        kinds[name] = cont.continuation(champion)
        assert cont.continuation(with_inputs(champion, {})) == kinds[name]  # as registered: nested
        assert cont.last_step(with_inputs(champion, {})) is champion.named_steps["clf"]
    assert kinds == {"sgd": "partial_fit", "hgb": "hgb", "lgbm": "lightgbm"}
    X, y = numbers(rows(100, 1, task="regression"))
    user = Pipeline([("impute", SimpleImputer()), ("reg", SGDRegressor())]).fit(X, y)
    assert cont.continuation(user) == "partial_fit"
    booster = xgboost.XGBRegressor(n_estimators=3, n_jobs=1).fit(X, y)
    assert cont.continuation(booster) == cont.continuation(Pipeline([("m", booster)])) == "xgboost"
    forest = Pipeline([("impute", SimpleImputer()), ("m", RandomForestClassifier(n_estimators=3))])
    assert cont.continuation(forest.fit(X, y > 1)) is None


def test_a_model_without_continuation_from_a_factory_is_refused_a_fine_tune(tmp_path):
    (tmp_path / "forest_factory.py").write_text(textwrap.dedent('''
        from sklearn.compose import ColumnTransformer
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.impute import SimpleImputer
        from sklearn.pipeline import Pipeline, make_pipeline

        def build(schema, seed):
            numbers = ColumnTransformer([("num", SimpleImputer(), schema.columns("numeric"))])
            return Pipeline([("pre", numbers), ("forest", RandomForestClassifier(10, random_state=seed))])
    '''))
    old, new, schema = moved("classification")
    model = families.build_model(ModelConfig(estimator="forest_factory:build"), schema, 0, tmp_path)
    champion = families.fit_model(model, old, schema)
    assert cont.continuation(champion) is None
    X, y = families.training_data(new, schema)
    with pytest.raises(ValueError, match="a model ending in RandomForestClassifier cannot be fine-tuned: it "
                                         "offers no partial_fit, no LightGBM or XGBoost booster"):
        cont.fine_tune(champion, X, y, TRAINING, ACCURACY)


# -- Starting from the champion's own predictions ------------------------------------------------------

@pytest.mark.parametrize("kind", ["sgd-classifier", "user-sgd-regressor"])
def test_a_partial_fit_fine_tune_starts_from_the_champions_own_weights(kind):
    """With a step size of ~0 the fine-tuned model predicts as the champion does: its weights are the
    champion's, on inputs the frozen preprocessing transforms as before. A restart (weights from 0) or
    preprocessing refitted on the moved rows would predict otherwise."""
    if kind == "sgd-classifier":
        champion, X, y, _ = preset("sgd", "classification")
        metric = ACCURACY
    else:
        old, new, schema = moved("regression")
        numbers_only = ColumnTransformer([("num", make_pipeline(SimpleImputer(), StandardScaler()),
                                           ["a", "b", "c"])])
        user = Pipeline([("pre", numbers_only), ("reg", SGDRegressor(random_state=0))])
        champion = families.fit_model(user, old, schema)
        X, y = families.training_data(new, schema)
        metric = MAE
    last = champion.steps[-1][0]
    champion.set_params(**{f"{last}__learning_rate": "constant", f"{last}__eta0": 1e-12})
    scores = "decision_function" if kind == "sgd-classifier" else "predict"
    before, start = champion.predict(X), getattr(champion, scores)(X)
    tuned = cont.fine_tune(champion, X, y, ONE_PASS, metric)
    unchanged(champion, tuned, before, X)
    assert np.array_equal(tuned[:-1].transform(X), champion[:-1].transform(X))  # frozen, not refitted
    old_est, new_est = champion.steps[-1][1], tuned.steps[-1][1]
    assert new_est.t_ == old_est.t_ + len(y)  # one epoch over every row, continued
    assert not np.array_equal(new_est.coef_, old_est.coef_)  # it did learn, by ~0
    assert np.allclose(getattr(tuned, scores)(X), start, atol=1e-6)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_a_lightgbm_fine_tune_starts_from_the_champions_own_scores(task):
    """The champion's rounds are kept as they were, and the added rounds are exactly those LightGBM
    grows from the champion's raw scores on the moved rows (given as `init_score`)."""
    champion, X, y, _ = preset("lgbm", task, n_estimators=20)
    before = champion.predict(X)
    tuned = cont.fine_tune(champion, X, y, ONE_PASS, MAE if task == "regression" else ACCURACY)
    unchanged(champion, tuned, before, X)
    Xt = champion.named_steps["pre"].transform(X)
    old, new = champion.named_steps["clf"], tuned.named_steps["clf"]
    own = old.predict(Xt, raw_score=True)
    assert new.booster_.current_iteration() == 20 + ONE_PASS.fine_tune_trees
    assert np.allclose(new.predict(Xt, raw_score=True, num_iteration=20), own)
    reference = clone(new).set_params(n_estimators=ONE_PASS.fine_tune_trees).fit(Xt, y, init_score=own)
    assert np.allclose(new.predict(Xt, raw_score=True), own + reference.predict(Xt, raw_score=True))
    assert new.reg_lambda == ONE_PASS.fine_tune_l2  # the added rounds' L2


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_an_xgboost_fine_tune_starts_from_the_champions_own_scores(task):
    """The champion's rounds are kept, and the added rounds are those XGBoost grows from the champion's
    margins on the moved rows (given as `base_margin`). XGBoost's own `fit(xgb_model=...)` scores the
    rows binned (a QuantileDMatrix) and fails this: its added rounds differ by up to ~0.3."""
    import xgboost

    X_old, y_old = numbers(rows(800, 1, task=task))
    X, y = numbers(rows(400, 2, 1.5, 0.5, task=task))
    kind = xgboost.XGBRegressor if task == "regression" else xgboost.XGBClassifier
    champion = kind(n_estimators=20, max_depth=3, n_jobs=1, random_state=0).fit(X_old, y_old)
    before = champion.predict(X)
    metric = MAE if task == "regression" else METRICS["accuracy"].bound(("0", "1"), None)
    tuned = cont.fine_tune(champion, X, y, ONE_PASS, metric)
    unchanged(champion, tuned, before, X)
    own = champion.predict(X, output_margin=True)
    assert tuned.get_booster().num_boosted_rounds() == 20 + ONE_PASS.fine_tune_trees
    assert np.allclose(tuned.predict(X, output_margin=True, iteration_range=(0, 20)), own)
    reference = clone(champion).set_params(n_estimators=ONE_PASS.fine_tune_trees).fit(X, y, base_margin=own)
    assert np.allclose(tuned.predict(X, output_margin=True),
                       reference.predict(X, output_margin=True, base_margin=own), atol=1e-5)
    naive = clone(champion).set_params(n_estimators=ONE_PASS.fine_tune_trees).fit(
        X, y, xgb_model=champion.get_booster())
    assert not np.allclose(naive.predict(X, output_margin=True), tuned.predict(X, output_margin=True),
                           atol=1e-3)


def test_an_xgboost_model_stopped_early_continues_from_the_rounds_it_predicts_with():
    import xgboost

    X_old, y_old = numbers(rows(800, 1, task="regression"))
    X, y = numbers(rows(400, 2, 1.5, 0.5, task="regression"))
    champion = xgboost.XGBRegressor(n_estimators=200, early_stopping_rounds=3, n_jobs=1, random_state=0)
    champion.fit(X_old[:600], y_old[:600], eval_set=[(X_old[600:], y_old[600:])], verbose=False)
    best = champion.best_iteration + 1
    assert champion.get_booster().num_boosted_rounds() > best  # the rounds after the best are kept, unused
    tuned = cont.fine_tune(champion, X, y, ONE_PASS, MAE)
    assert tuned.get_booster().num_boosted_rounds() == best + ONE_PASS.fine_tune_trees
    assert np.allclose(tuned.predict(X, output_margin=True, iteration_range=(0, best)),
                       champion.predict(X, output_margin=True))


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_an_hgb_fine_tune_starts_from_the_champions_own_scores_on_rows_that_moved(task):
    """scikit-learn's warm start refits the bins on the new rows and scores the champion's trees by
    bin index against them: on moved rows the added trees started from scores that were not the
    champion's (issue 21: 78% of rows, the class on half of them)."""
    from sklearn.ensemble._hist_gradient_boosting.binning import _BinMapper

    champion, X, y, _ = preset("hgb", task, max_iter=20)
    start = champion.named_steps["clf"]
    Xt = champion.named_steps["pre"].transform(X)
    own = start._raw_predict(Xt).ravel()

    def fit_starts_from(clf) -> np.ndarray:
        """What `fit` scores its training rows with before adding trees: the trees on refitted bins."""
        X_, known_categories = clf._preprocess_X(Xt, reset=False), clf._check_categories()
        mapper = _BinMapper(n_bins=clf.max_bins + 1, is_categorical=clf._is_categorical_remapped,
                            known_categories=known_categories).fit(X_)
        clf._in_fit = True
        try:
            return clf._raw_predict(mapper.transform(X_)).ravel()
        finally:
            del clf._in_fit

    assert np.mean(~np.isclose(fit_starts_from(copy.deepcopy(start)), own)) > 0.3  # scikit-learn alone
    clf = copy.deepcopy(start)
    with cont.from_own_scores(clf, Xt):
        assert np.allclose(fit_starts_from(clf), own)
    before = champion.predict(X)
    tuned = cont.fine_tune(champion, X, y, ONE_PASS, MAE if task == "regression" else ACCURACY)
    unchanged(champion, tuned, before, X)
    new = tuned.named_steps["clf"]
    assert new.n_iter_ == 20 + ONE_PASS.fine_tune_trees
    assert "_raw_predict" not in vars(new)  # nothing of the fine-tune saved with it
    staged = new.staged_predict(Xt) if task == "regression" else new.staged_decision_function(Xt)
    assert np.allclose(np.ravel(list(staged)[19]), own)  # the champion's trees, as they were
    # The added trees are those grown from the champion's own scores, not scikit-learn's warm start's.
    grown = {}
    for own_scores in (True, False):
        clf = copy.deepcopy(start).set_params(warm_start=True, max_iter=20 + ONE_PASS.fine_tune_trees,
                                              l2_regularization=ONE_PASS.fine_tune_l2)
        with cont.from_own_scores(clf, Xt) if own_scores else contextlib.nullcontext():
            clf.fit(Xt, y)
        grown[own_scores] = clf._raw_predict(Xt)
    assert np.allclose(new._raw_predict(Xt), grown[True])
    assert not np.allclose(new._raw_predict(Xt), grown[False])


# -- The fine-tune loop -------------------------------------------------------------------------------

def scripted(values: list[float]) -> Metric:
    """A metric (higher is better) that gives `values`, one per scoring, whatever the model predicts."""
    given = iter(values)
    return Metric("scripted", "regression", "value", "share", lambda m, y, out: next(given))


def test_a_fine_tune_keeps_the_best_pass_and_stops_at_the_first_that_does_not_improve():
    champion, X, y, _ = preset("lgbm", "regression", n_estimators=20)
    training = TrainingConfig(fine_tune_passes=5, fine_tune_trees=4)
    tuned = cont.fine_tune(champion, X, y, training, scripted([0.5, 0.6, 0.55, 0.9, 1.0]))
    assert tuned.named_steps["clf"].booster_.current_iteration() == 20 + 2 * 4  # pass 2; pass 3 stopped it
    # With no rows to judge on (none held back), every pass is kept.
    training = training.model_copy(update={"fine_tune_validation": 0.001})
    tuned = cont.fine_tune(champion, X, y, training, scripted([]))
    assert tuned.named_steps["clf"].booster_.current_iteration() == 20 + 5 * 4


def test_a_fine_tune_learns_no_new_class():
    champion, X, y, _ = preset("sgd", "classification")
    y = y.where(np.arange(len(y)) % 10 > 0, "unheard-of")
    with pytest.raises(ValueError, match=r"cannot learn a new class: the rows hold \['unheard-of'\]"):
        cont.fine_tune(champion, X, y, TRAINING, ACCURACY)


@pytest.mark.parametrize("family", ["hgb", "lgbm"])
def test_a_booster_fine_tuned_on_rows_lacking_a_class_keeps_every_class(family):
    old, new, noise = rows(800, 1), rows(300, 2), np.random.default_rng(3).normal(0, 0.5, 1100)
    a = old["a"] + noise[:800]
    old["y"] = np.select([a < -0.5, a < 0.5], ["low", "mid"], "high")
    schema = infer_schema(old, "y", None)
    champion = families.fit_model(families.family(family).build(schema, 0), old, schema)
    new["y"] = np.where(new["a"] + noise[800:] < 0, "low", "mid")  # no "high" row
    X, y = families.training_data(new, schema)
    log_loss = METRICS["log_loss"].bound(schema.classes, None)
    tuned = cont.fine_tune(champion, X, y, TRAINING, log_loss)
    assert list(tuned.classes_) == list(champion.classes_) == ["high", "low", "mid"]
    assert tuned.predict_proba(X).shape == (len(X), 3)
    # It learnt the rows' classes as they are numbered: a renumbering would have raised the loss.
    assert log_loss.score(tuned, X, y.to_numpy()) < 0.8 * log_loss.score(champion, X, y.to_numpy())
