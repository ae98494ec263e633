"""Config files: documented example loads; every mistake names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from perennial.core.config import ConfigError, Settings, load_config
from perennial.core.families import FAMILIES

EXAMPLE = Path(__file__).parents[2] / "examples" / "perennial.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "model.yaml"
    path.write_text(text)
    return path


def test_committed_example_config_loads():
    config = load_config(EXAMPLE)
    assert config.name == "credit-default"
    assert config.data.target == "default"
    assert config.source_pattern() == str((EXAMPLE.parent / "batches").resolve())


def test_minimal_config_gets_documented_defaults(tmp_path):
    config = load_config(write(tmp_path, "name: m\ndata: {source: in, target: y}\n"))
    assert config.model.family == "sgd"
    assert config.policy.drift_share_moderate == 0.25
    assert config.training.window_batches == 3
    assert config.source_pattern() == str(tmp_path / "in")


def test_unknown_key_names_the_key_and_the_file(tmp_path):
    path = write(tmp_path, "name: m\ndata: {source: in, target: y}\npolicy: {drift_shares: 0.3}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: unknown key 'policy.drift_shares'"


def test_wrong_type_names_the_key_and_the_value(tmp_path):
    path = write(tmp_path, "name: m\ndata: {source: in, target: y}\ntraining: {window_batches: many}\n")
    with pytest.raises(ConfigError, match=r"key 'training.window_batches': .*got 'many'"):
        load_config(path)


def test_missing_required_key(tmp_path):
    path = write(tmp_path, "name: m\ndata: {source: in}\n")
    with pytest.raises(ConfigError, match=r"missing key 'data.target'"):
        load_config(path)


def test_inconsistent_thresholds_are_refused(tmp_path):
    path = write(tmp_path, "name: m\ndata: {source: in, target: y}\n"
                 "policy: {drift_share_moderate: 0.8, drift_share_severe: 0.5}\n")
    with pytest.raises(ConfigError, match="drift_share_moderate must not exceed drift_share_severe"):
        load_config(path)


def test_every_registered_model_family_is_accepted(tmp_path):
    for name in FAMILIES:
        path = write(tmp_path, f"name: m\ndata: {{source: in, target: y}}\nmodel: {{family: {name}}}\n")
        assert load_config(path).model.family == name


def test_an_unknown_model_family_names_the_known_ones(tmp_path):
    path = write(tmp_path, "name: m\ndata: {source: in, target: y}\nmodel: {family: xgb}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    *others, last = (repr(name) for name in FAMILIES)
    known = f"{', '.join(others)} or {last}" if others else last
    assert str(err.value) == f"{path}: key 'model.family': Input should be {known} (got 'xgb')"


def test_declared_column_rules_are_checked(tmp_path):
    base = "name: m\ndata: {source: in, target: y}\n"
    config = load_config(write(tmp_path, base + "validation: {strict: true, columns: {region: "
                               "{categories: [1, north]}, age: {min: 18, max: 120, strict: false}}}\n"))
    assert config.validation.strict is True
    assert config.validation.columns["region"].categories == ["1", "north"]  # compared as text
    assert config.validation.columns["age"].strict is False
    path = write(tmp_path, base + "validation: {columns: {age: {min: 120, max: 18}}}\n")
    with pytest.raises(ConfigError, match=r"'validation.columns.age': .*min \(120\) must not exceed max"):
        load_config(path)
    path = write(tmp_path, base + "validation: {columns: {age: {minimum: 18}}}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: unknown key 'validation.columns.age.minimum'"
    path = write(tmp_path, base + "validation: {columns: {age: {max_null_rate: 1.5}}}\n")
    with pytest.raises(ConfigError, match=r"key 'validation.columns.age.max_null_rate'"):
        load_config(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_malformed_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "name: m\ndata: {source: in, target: y\n")
    with pytest.raises(ConfigError, match=r"model.yaml: not valid YAML at line \d+"):
        load_config(path)


def test_settings_default_to_a_local_state_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("PERENNIAL_STATE_DIR", raising=False)
    monkeypatch.delenv("PERENNIAL_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.tracking_uri() == f"sqlite:///{tmp_path / '.perennial' / 'mlflow.db'}"
    assert settings.artifact_location() == (tmp_path / ".perennial" / "mlartifacts").as_uri()


def test_settings_honour_mlflow_tracking_uri(monkeypatch):
    monkeypatch.delenv("PERENNIAL_MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    settings = Settings()
    assert settings.tracking_uri() == "http://127.0.0.1:5000"
    assert settings.artifact_location() is None
