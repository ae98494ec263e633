"""A configured estimator parameter scikit-learn refuses only at training (issue 20, case 6): the run
fails with a ConfigError naming the key, and the batch is never blamed: not quarantined, not in the
ledger, the champion untouched; once the config is fixed, the next run processes it."""

from __future__ import annotations

import pytest

from conftest import make_batch
from perennial.core.config import ConfigError, load_config
from perennial.pipeline.context import Cycle
from perennial.pipeline.flows.continuous_training import guarded_cycle


def test_a_parameter_refused_at_training_fails_the_run_and_never_quarantines_the_batch(workspace):
    ws = workspace
    ws.add("b1.csv", make_batch(seed=1))
    ws.run()
    assert ws.champion() == 1
    ws.add("b2.csv", make_batch(seed=2, flip=True))  # a concept change: b2 asks for a retrain
    # Loading refuses max_iter -1 (tests/unit/test_config_limits.py); a parameter only training
    # refuses is made by building the config past that check.
    good = load_config(ws.config_path)
    bad = good.model_copy(update={"model": good.model.model_copy(update={"params": {"max_iter": -1}})})
    model = Cycle.open(bad, ws.settings)
    for _ in range(2):  # twice the same failure: a batch's own fault would be quarantined now
        with pytest.raises(ConfigError) as err:
            guarded_cycle(model, ws.batches / "b2.csv", "embedded")
        assert str(err.value) == (
            f"{ws.config_path}: key 'model.params.max_iter': refused by scikit-learn at training (The "
            "'max_iter' parameter of SGDClassifier must be an int in the range [1, inf). Got -1 instead.)")
    assert not (ws.store.quarantine_dir / "b2.csv").exists()
    assert ws.store.record("b2.csv") is None and "b2.csv" not in ws.store.processed()
    assert ws.champion() == 1 and [v["version"] for v in ws.versions()] == [1]
    # The config fixed (the file never held the mistake): the batch that waited is processed.
    [b2] = ws.run()
    assert (b2.batch, b2.decision, b2.promoted) == ("b2.csv", "retrain", True)
    assert ws.champion() == 2
