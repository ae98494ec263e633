"""`perennial report`'s page as a user opens it: headless Chromium (Debian's package), no network.

A short stream goes through the installed `perennial run` (a first model, a rejected batch, a concept
change the loop retrains for), then `perennial report` writes the page; docs/screenshots.py opens it,
refusing every http(s) request, and reports the charts drawn, the summary, and any error.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import make_batch, new_workspace
from docs.screenshots import NoChromium, check_page, chromium, perennial
from perennial.app.local_server import quiet_env


def need_chromium() -> None:
    """Debian's chromium; missing, the test fails (`.ci/run` installs it), it is never skipped."""
    try:
        chromium()
    except NoChromium as exc:
        missing = str(exc)
    else:
        return
    pytest.fail(missing, pytrace=False)


def test_the_report_opens_offline_with_its_charts_drawn_and_its_summary(tmp_path, monkeypatch):
    need_chromium()
    ws = new_workspace(tmp_path / "stream", monkeypatch)
    ws.add("a.csv", make_batch(seed=1))  # the first model
    ws.add("b.csv", make_batch(seed=2).drop(columns=["label"]))  # rejected: no label column
    ws.add("c.csv", make_batch(seed=3, flip=True))  # an abrupt concept change: retrained, promoted
    ws.add("d.csv", make_batch(seed=4, flip=True))
    env = {**quiet_env(), "PREFECT_HOME": str(tmp_path / "prefect"), "OMP_NUM_THREADS": "1",
           **{k: os.environ[k] for k in ("PERENNIAL_STATE_DIR", "PERENNIAL_MLFLOW_TRACKING_URI")}}
    perennial("run", "--config", str(ws.config_path), env=env)
    decisions = [r.decision for r in ws.store.records()]
    assert decisions[:3] == ["retrain", "reject", "retrain"] and len(decisions) == 4, decisions
    champion = ws.champion()
    assert champion == 2  # the concept change's model
    assert ws.store.matrix().steps, "accepted batches keep an accuracy matrix: the page's second chart"

    html = tmp_path / "report.html"
    perennial("report", "--config", str(ws.config_path), "--out", str(html), env=env)
    png = tmp_path / "report.png"
    check = check_page(html, png)
    print(f"screenshot: {png} ({png.stat().st_size:,} bytes)")

    assert check.drawn and check.charts == 2  # the stream's figure and the accuracy matrix
    assert check.traces > 0
    assert "4 batches:" in check.summary and "reject 1" in check.summary, check.summary
    assert f"Champion now: v{champion} " in check.summary, check.summary
    assert "Rejected: b.csv" in check.summary, check.summary
    assert check.errors == []
    assert check.blocked == []  # opens offline: plotly.js is in the page
    assert png.stat().st_size > 5_000


def test_a_script_error_and_a_network_request_are_reported(tmp_path):
    """What makes the test above fail: an exception thrown on the page, a script from the network."""
    need_chromium()
    thrown = tmp_path / "thrown.html"
    thrown.write_text('<!DOCTYPE html><p>summary</p><script>throw new Error("boom")</script>')
    check = check_page(thrown, tmp_path / "thrown.png")
    assert check.page_errors == ["Error: boom"] and check.summary == "summary"
    assert check.charts == check.traces == 0 and check.blocked == []

    remote = tmp_path / "remote.html"
    remote.write_text('<!DOCTYPE html><p>summary</p><script src="https://cdn.example.com/x.js"></script>')
    check = check_page(remote, tmp_path / "remote.png", full_page=False)
    assert check.blocked == ["https://cdn.example.com/x.js"]
    assert any("ERR_BLOCKED_BY_CLIENT" in e for e in check.console_errors), check.console_errors
    assert Path(check.screenshot).stat().st_size > 0
