"""Model families on mixed data: fit, fine-tune without touching the champion, skops-safe logging."""

from __future__ import annotations

import numpy as np
import pytest
import skops.io as sio

from conftest import make_batch
from perennial import families
from perennial.config import ModelConfig, TrainingConfig
from perennial.schema import features_frame, infer_schema, labels
from tasks.evaluate import accuracy

TRAINING = TrainingConfig()


@pytest.mark.parametrize("family", ["sgd", "hgb"])
@pytest.mark.parametrize("classes", [2, 3])
def test_family_learns_mixed_types_with_nulls_and_odd_names(family, classes):
    train, test = make_batch(seed=1, classes=classes), make_batch(seed=2, classes=classes)
    schema = infer_schema(train, "label", None)
    assert schema.features == {"x one": "numeric", "x-two": "numeric", "noise": "numeric",
                               "colour": "categorical", "is member": "boolean"}
    model = families.build(ModelConfig(family=family), schema, seed=0)
    model.fit(features_frame(train, schema), labels(train, "label"))
    assert accuracy(model, test, schema) > (0.9 if classes == 2 else 0.8)


@pytest.mark.parametrize("family", ["sgd", "hgb"])
def test_fine_tune_adapts_to_a_moved_boundary_and_leaves_the_champion_as_it_was(family):
    # SEA's threshold moves from 10 to 12: a moderate concept drift the champion half-misses.
    old, new, later = make_batch(seed=1), make_batch(seed=2, theta=12), make_batch(seed=3, theta=12)
    schema = infer_schema(old, "label", None)
    champion = families.build(ModelConfig(family=family), schema, seed=0)
    champion.fit(features_frame(old, schema), labels(old, "label"))
    before = champion.predict(features_frame(later, schema))
    tuned = families.fine_tune(champion, features_frame(new, schema), labels(new, "label"), TRAINING)
    assert np.array_equal(champion.predict(features_frame(later, schema)), before)
    assert accuracy(champion, later, schema) < 0.93
    assert accuracy(tuned, later, schema) > accuracy(champion, later, schema) + 0.03


@pytest.mark.parametrize("family", ["sgd", "hgb"])
def test_declared_trusted_types_cover_what_skops_needs(family):
    frame = make_batch(seed=1)
    schema = infer_schema(frame, "label", None)
    model = families.build(ModelConfig(family=family), schema, seed=0)
    model.fit(features_frame(frame, schema), labels(frame, "label"))
    untrusted = set(sio.get_untrusted_types(data=sio.dumps(model)))
    assert untrusted <= set(families.TRUSTED_TYPES[family])
