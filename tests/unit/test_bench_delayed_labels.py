"""Part F of the benchmark (delayed labels): its streams and how estimates are scored against labels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.delayed_labels import (
    CONCEPT,
    COVARIATE,
    INITIAL,
    ROW_ID,
    STABLE,
    TARGET,
    Served,
    StreamResult,
    _short,
    bananas,
    labelled_ids,
    synthetic,
)


def test_the_synthetic_stream_shifts_its_features_then_changes_its_concept():
    stream = synthetic(2000, (2, 3, 2), np.random.default_rng(0))
    assert stream.phases == ["initial"] * INITIAL + [STABLE] * 2 + [COVARIATE] * 3 + [CONCEPT] * 2
    assert stream.change == 7
    ids = pd.concat(stream.batches)[ROW_ID]
    assert ids.is_unique
    spread = [b["x0"].std() for b in stream.batches]
    assert spread[0] == pytest.approx(1, abs=0.1) and spread[6] == pytest.approx(0.4, abs=0.05)
    assert stream.batches[6]["x3"].mean() == pytest.approx(1.5, abs=0.1)
    # The concept change keeps the features where the shift left them, and turns x1's relation around.
    last, changed = stream.batches[6], stream.batches[7]
    assert changed["x3"].mean() == pytest.approx(last["x3"].mean(), abs=0.1)
    assert np.corrcoef(last["x1"], last[TARGET])[0, 1] < 0 < np.corrcoef(changed["x1"], changed[TARGET])[0, 1]


def test_bananas_draws_real_rows_once_and_relabels_only_in_the_concept_change():
    from river import datasets

    stream = bananas(200, (1, 2, 2), np.random.default_rng(0))
    rows = pd.concat(stream.batches)
    assert not rows.duplicated(subset=["1", "2"]).any()  # without replacement
    truth = pd.DataFrame([{**x, "truth": int(y)} for x, y in datasets.Bananas()])
    for phase, batch in zip(stream.phases, stream.batches, strict=True):
        joined = batch.merge(truth, on=["1", "2"])
        assert len(joined) == len(batch)
        swapped = joined[TARGET] != joined["truth"]
        assert (swapped == (joined["2"] > 0.8)).all() if phase == CONCEPT else not swapped.any()
    assert len(labelled_ids(stream, 0)) == 200  # the first model's batches come labelled
    late = labelled_ids(stream, INITIAL)
    assert len(late) == 190 and np.array_equal(late, labelled_ids(stream, INITIAL))


def _result(estimates: list[tuple[float, float, float]], realised: list[float],
            phases: list[str]) -> StreamResult:
    from perennial.core.metrics import metric_named

    metric = metric_named("accuracy", "classification", ("0", "1"))
    served = [Served(i, p, 1, {"value": v, "low": lo, "high": hi, "alarm": False}, r)
              for i, ((v, lo, hi), r, p) in enumerate(zip(estimates, realised, phases, strict=True))]
    stream = synthetic(10, (1, 1, 1), np.random.default_rng(0))
    return StreamResult(stream, metric, served, accuracy={}, train_cpu={}, delays={}, gap_told="",
                        first_gap=None, first_alarm=None, alarm_standing=False, labels_only_first=None)


def test_estimate_errors_are_points_of_the_realised_metric_and_the_band_is_inclusive():
    result = _result([(0.80, 0.75, 0.85), (0.70, 0.66, 0.74), (0.72, 0.70, 0.75)], [0.78, 0.74, 0.60],
                     [STABLE, COVARIATE, CONCEPT])
    assert [round(result.error(s), 6) for s in result.served] == [2.0, -4.0, 12.0]
    assert [s.inside for s in result.served] == [True, True, False]
    assert result.phase_error(COVARIATE) == pytest.approx(4.0)
    assert result.inside_share() == (2, 3)


def test_a_reason_is_cut_to_its_kind():
    assert _short("concept change: realised accuracy 60%, estimated ...") == "concept change"
    assert _short("stable; realised 80%") == "stable"
    assert _short(None) == "-"
