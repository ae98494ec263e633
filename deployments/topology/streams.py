"""The two models' example streams: what arrives, batch by batch, in the walkthrough and the test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from perennial.app import streams
from perennial.app.demo import write_stream

ROWS = 1000
# sensor-alarm, per batch: the temperature sensor's offset. Recalibrated wrong at batch 4 (it reads
# 5 degrees high: what the model learnt no longer holds), fixed again at batch 7.
SENSOR_OFFSETS = (0.0, 0.0, 0.0, 5.0, 5.0, 5.0, 0.0, 0.0)


def sensor_batch(offset: float, rows: int, rng: np.random.Generator) -> pd.DataFrame:
    """SEA concept 0: the alarm is on when temperature + pressure <= 8 (10% of labels noisy)."""
    raw = streams.sea(rows, 0, rng)
    return pd.DataFrame({"temperature": (raw["f1"] + offset).round(3), "pressure": raw["f2"].round(3),
                         "humidity": raw["f3"].round(3), "alarm": np.where(raw["label"] == 1, "on", "off")})


def write_streams(folder: Path, rows: int = ROWS) -> None:
    """<folder>/loan-approval/batch-NNN.csv (the demo's stream: a concept change at batch 4) and
    <folder>/sensor-alarm/batch-NNN.csv (the sensor misreads from batch 4 to 6)."""
    write_stream(folder / "loan-approval", rows)
    sensor = folder / "sensor-alarm"
    sensor.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    for index, offset in enumerate(SENSOR_OFFSETS, start=1):
        sensor_batch(offset, rows, rng).to_csv(sensor / f"batch-{index:03d}.csv", index=False)
