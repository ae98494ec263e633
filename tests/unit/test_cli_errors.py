"""The `perennial` command on a bad or missing config: one line and exit code 2, before anything starts.
(The commands at work: tests/flow/test_cli.py.)"""

from __future__ import annotations

from perennial.app.cli import main


def test_bad_config_is_one_clear_line_and_exit_code_2(tmp_path, capsys):
    config = tmp_path / "m.yaml"
    config.write_text("name: m\ndata: {source: in, target: y}\nmodel: {family: xgb}\n")
    assert main(["run", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"perennial: error: {config}: key 'model.family': "
                          "Input should be 'sgd', 'hgb' or 'lgbm'")
    assert "\n" not in err


def test_missing_config_file(tmp_path, capsys):
    assert main(["status", "--config", str(tmp_path / "absent.yaml")]) == 2
    assert "absent.yaml: config file not found" in capsys.readouterr().err
