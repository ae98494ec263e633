"""The model-input conversion a served model carries. (Serving itself: tests/deployed/test_serving.py.)"""

from __future__ import annotations

import numpy as np
import pandas as pd


def test_booleans_are_read_however_a_file_spells_them_and_converting_twice_changes_nothing():
    from perennial.core.inputs import ModelInputs

    raw = pd.DataFrame({"flag": pd.Series([True, "false", 1.0, 0.0, " Yes", "n", None, np.nan, "maybe"],
                                          dtype=object)})
    converted = ModelInputs({"flag": "boolean"}).transform(raw)
    expected = [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, np.nan, np.nan, np.nan]
    np.testing.assert_array_equal(converted["flag"].to_numpy(), expected)
    pd.testing.assert_frame_equal(ModelInputs({"flag": "boolean"}).transform(converted), converted)
