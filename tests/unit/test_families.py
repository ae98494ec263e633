"""Model families on mixed data: fit, fine-tune without touching the champion, skops-safe logging.

Every test of a family runs for every family of the registry (`families.FAMILIES`).
"""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import skops.io as sio
from sklearn.pipeline import Pipeline

from conftest import make_batch
from perennial.adapters.batch_files import iter_chunks, read_batch, split_holdout
from perennial.core import families
from perennial.core.config import PipelineConfig, TrainingConfig
from perennial.core.evaluation import accuracy
from perennial.core.inputs import ModelInputs, with_inputs
from perennial.core.lifelong import ReplayMemory
from perennial.core.sampling import sample_rows
from perennial.core.schema import features_frame, infer_schema, labels
from perennial.core.types import Candidate, Champion, CycleRecord, TrainingRows
from perennial.pipeline.training import earlier_batches, train, training_rows

TRAINING = TrainingConfig()
FAMILIES = list(families.FAMILIES)
# Families that cannot learn incrementally: out of core they learn from a bounded sample.
SAMPLED = [name for name, f in families.FAMILIES.items() if not isinstance(f, families.IncrementalFamily)]


def test_the_registry_holds_each_family_under_its_own_name():
    assert FAMILIES  # a family of each kind, so every test below runs
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
    code = ("import sys; from perennial.core.config import ModelConfig; ModelConfig(family='sgd'); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'pandas', 'scipy')))")
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
def test_fine_tune_adapts_to_a_moved_boundary_and_leaves_the_champion_as_it_was(family):
    # SEA's threshold moves from 10 to 12: a moderate concept drift the champion half-misses.
    old, new, later = make_batch(seed=1), make_batch(seed=2, theta=12), make_batch(seed=3, theta=12)
    schema = infer_schema(old, "label", None)
    champion = families.family(family).build(schema, seed=0)
    champion.fit(features_frame(old, schema), labels(old, "label"))
    before = champion.predict(features_frame(later, schema))
    tuned = families.family(family).fine_tune(champion, features_frame(new, schema), labels(new, "label"),
                                              TRAINING)
    assert np.array_equal(champion.predict(features_frame(later, schema)), before)
    assert accuracy(champion, later, schema) < 0.93
    assert accuracy(tuned, later, schema) > accuracy(champion, later, schema) + 0.03


@pytest.mark.parametrize("family", FAMILIES)
def test_a_champion_is_fine_tuned_by_its_own_family_whatever_the_config_now_says(family):
    old, new = make_batch(seed=1), make_batch(seed=2, theta=12)
    schema = infer_schema(old, "label", None)
    champion = families.family(family).build(schema, seed=0)
    champion.fit(features_frame(old, schema), labels(old, "label"))
    other = next(name for name in FAMILIES if name != family)
    config = PipelineConfig(name="m", data={"source": "in", "target": "label"}, model={"family": other})
    tuned = train(Candidate.FINE_TUNE, TrainingRows(len(new), frame=new), Champion(1, champion, 0.9, old),
                  schema, config)
    expected = families.family(family).fine_tune(champion, features_frame(new, schema), labels(new, "label"),
                                                 config.training)
    assert families.family_of(tuned) is families.family(family)
    assert np.array_equal(tuned.predict_proba(features_frame(new, schema)),
                          expected.predict_proba(features_frame(new, schema)))


@pytest.mark.parametrize("family", FAMILIES)
def test_declared_trusted_types_cover_what_skops_needs_also_with_the_input_conversion(family):
    frame = make_batch(seed=1)
    schema = infer_schema(frame, "label", None)
    model = families.family(family).build(schema, seed=0)
    model.fit(features_frame(frame, schema), labels(frame, "label"))
    served = with_inputs(model, schema.features)  # as registered: it takes the user's raw columns
    for saved in (model, served):
        untrusted = set(sio.get_untrusted_types(data=sio.dumps(saved)))
        assert untrusted <= set(families.family(family).trusted_types)
        assert untrusted <= set(families.ALL_TRUSTED_TYPES)  # what the registry loader trusts
    raw = frame.drop(columns=["label"])
    assert list(served.predict(raw)) == list(model.predict(features_frame(frame, schema)))


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
    in_memory = families.family(family).build(schema, seed=0)
    in_memory.fit(features_frame(window, schema), labels(window, "label"))
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


def test_an_hgb_fine_tune_starts_from_the_champions_own_scores_on_rows_that_moved():
    """scikit-learn's warm start refits the bins on the new rows and scores the champion's trees by
    bin index against them: on moved rows the added trees started from scores that were not the
    champion's (issue 21: 78% of rows, the class on half of them)."""
    from sklearn.ensemble._hist_gradient_boosting.binning import _BinMapper

    old, moved = make_batch(2_000, seed=1), make_batch(2_000, seed=2, shift=4.0, flip=True)
    schema = infer_schema(old, "label", None)
    champion = families.family("hgb").build(schema, seed=0).fit(features_frame(old, schema),
                                                                labels(old, "label"))
    start = champion.named_steps["clf"]
    Xt = champion.named_steps["pre"].transform(features_frame(moved, schema))
    own = start.decision_function(Xt)

    def fit_starts_from(clf) -> np.ndarray:
        """What `fit` scores its training rows with before adding trees: the trees on refitted bins."""
        X, known_categories = clf._preprocess_X(Xt, reset=False), clf._check_categories()
        mapper = _BinMapper(n_bins=clf.max_bins + 1, is_categorical=clf._is_categorical_remapped,
                            known_categories=known_categories).fit(X)
        clf._in_fit = True
        try:
            return clf._raw_predict(mapper.transform(X)).ravel()
        finally:
            del clf._in_fit

    assert np.mean(~np.isclose(fit_starts_from(copy.deepcopy(start)), own)) > 0.5  # scikit-learn alone
    clf = copy.deepcopy(start)
    with families.from_own_scores(clf, Xt):
        assert np.allclose(fit_starts_from(clf), own)
    tuned = families.family("hgb").fine_tune(champion, features_frame(moved, schema), labels(moved, "label"),
                                             TRAINING)
    assert tuned.named_steps["clf"].n_iter_ > start.n_iter_
    assert "_raw_predict" not in vars(tuned.named_steps["clf"])  # nothing of the fine-tune saved with it
    assert accuracy(tuned, moved, schema) > accuracy(champion, moved, schema) + 0.3


def test_an_sgd_fine_tune_continues_from_the_champions_own_weights():
    """`partial_fit` continues from the champion's coefficients and step count: a fine-tune on rows the
    champion already gets right changes its predictions on almost none of them."""
    old = make_batch(2_000, seed=1)
    schema = infer_schema(old, "label", None)
    champion = families.family("sgd").build(schema, seed=0).fit(features_frame(old, schema),
                                                                labels(old, "label"))
    same = make_batch(2_000, seed=2)
    same["label"] = champion.predict(features_frame(same, schema))  # what the champion already says
    tuned = families.family("sgd").fine_tune(champion, features_frame(same, schema), labels(same, "label"),
                                             TRAINING)
    assert tuned.named_steps["clf"].t_ > champion.named_steps["clf"].t_  # continued, not restarted
    X = features_frame(same, schema)
    assert np.mean(tuned.predict(X) == champion.predict(X)) > 0.97
