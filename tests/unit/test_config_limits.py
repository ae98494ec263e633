"""Hostile or mistaken configs (issue 20, cases 3 and 6): a YAML alias bomb and an oversized file are
refused in one line before anything is built; every quoted value is bounded; estimator parameters are
checked by scikit-learn when the config loads, and one it refuses only at training is a ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import make_batch
from perennial.app.cli import main
from perennial.core.config import MAX_ALIAS_VALUES, MAX_CONFIG_BYTES, ConfigError, load_config
from perennial.core.schema import infer_schema
from perennial.core.text import bounded, shorten
from perennial.core.types import Candidate, TrainingRows
from perennial.pipeline.training import train

BASE = "name: m\ndata: {source: in, target: y}\n"
# "Billion laughs": ten anchors of ten aliases each stand for 10^10 values in under 500 bytes.
ANCHORS = ["a0: &a0 [" + ", ".join(["x"] * 10) + "]"] + [
    f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]
BOMB_UNDER_PARAMS = BASE + "model:\n  params:\n" + "".join(f"    {line}\n" for line in ANCHORS)
BOMB_AS_NAME = ("x:\n" + "".join(f"  {line}\n" for line in ANCHORS)
                + "name: *a9\ndata: {source: in, target: y}\n")
REFUSED = f"uses YAML aliases that expand to more than {MAX_ALIAS_VALUES:,} values"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "model.yaml"
    path.write_text(text)
    return path


def refusal(path: Path) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(path)
    return str(err.value)


@pytest.mark.parametrize("text", [BOMB_UNDER_PARAMS, BOMB_AS_NAME], ids=["under-model.params", "as-name"])
def test_an_alias_bomb_is_refused_in_one_line(tmp_path, text):
    path = write(tmp_path, text)
    assert len(text) < 1000
    assert refusal(path) == f"{path}: {REFUSED}"


def test_a_recursive_alias_is_refused(tmp_path):
    path = write(tmp_path, BASE + "model: {params: {class_weight: &w [1, *w]}}\n")
    assert refusal(path) == f"{path}: {REFUSED}"


def test_small_anchors_and_aliases_still_work(tmp_path):
    path = write(tmp_path, "name: m\ndata: &d {source: in, target: y}\n"
                 "model: {params: &p {alpha: 0.001, max_iter: 50}}\n"
                 "validation: {columns: {a: &rule {min: 0, max: 9}, b: *rule, c: {<<: *rule, max: 5}}}\n")
    config = load_config(path)
    assert config.model.params == {"alpha": 0.001, "max_iter": 50}
    rules = config.validation.columns
    assert (rules["b"].min, rules["b"].max, rules["c"].min, rules["c"].max) == (0, 9, 0, 5)


def test_aliases_may_add_values_up_to_the_limit(tmp_path):
    # A list of 99 values (the list and its 98 items), named 100 times: aliases add 9,900 values.
    items = ", ".join(str(i) for i in range(98))
    text = BASE + f"x:\n  l: &l [{items}]\n  m: [{', '.join(['*l'] * 100)}]\n"
    # Counted first, then checked: `x` is no key of a config.
    assert refusal(write(tmp_path, text)) == f"{tmp_path / 'model.yaml'}: unknown key 'x'"
    assert refusal(write(tmp_path, text + "  n: [*l, *l]\n")).endswith(REFUSED)  # 10,098


def test_a_config_over_the_size_limit_is_refused_naming_the_limit(tmp_path):
    path = write(tmp_path, BASE + "# " + "x" * (2 * MAX_CONFIG_BYTES) + "\n")
    assert refusal(path) == f"{path}: config file larger than the limit of 1 MB (1,048,576 bytes)"


def test_an_endless_file_is_read_only_up_to_the_limit():
    assert refusal(Path("/dev/zero")).startswith("/dev/zero: config file larger than the limit of 1 MB")


def test_a_long_wrong_value_is_shown_truncated(tmp_path):
    path = write(tmp_path, BASE + "training: {window_batches: " + "x" * 5000 + "}\n")
    message = refusal(path)
    assert message.startswith(f"{path}: key 'training.window_batches': Input should be a valid integer")
    got = message[message.index("(got ") + 5:-1]
    assert len(got) == 80 and "..." in got and got.startswith("'xxx")


def test_an_integer_too_long_to_convert_is_one_line(tmp_path):
    path = write(tmp_path, BASE + "training: {seed: " + "1" * 5000 + "}\n")
    assert refusal(path).startswith(f"{path}: not valid YAML (Exceeds the limit (4300 digits)")


def test_only_the_first_problems_are_listed(tmp_path):
    path = write(tmp_path, BASE + "training: {" + ", ".join(f"k{i}: 1" for i in range(20)) + "}\n")
    assert refusal(path).endswith("unknown key 'training.k4'; and 15 more problem(s)")


@pytest.mark.parametrize("command", ["run", "status", "serve"])
def test_run_status_and_serve_refuse_a_bomb_in_one_line_with_exit_code_2(tmp_path, capsys, command):
    path = write(tmp_path, BOMB_AS_NAME)
    assert main([command, "--config", str(path)]) == 2
    assert capsys.readouterr().err == f"perennial: error: {path}: {REFUSED}\n"


def test_bounded_quotes_a_huge_value_without_building_it():
    nested: list = ["x"] * 10
    for _ in range(9):
        nested = [nested] * 10  # 10^10 values by reference: a plain repr would never end
    assert bounded(nested).startswith("[[[[...], [...],") and len(bounded(nested)) == 80
    assert bounded("y" * 10_000_000, 20) == "'yyyyyyy...yyyyyyyy'"
    assert bounded(10**100_000) == "<int of about 100,001 digits>"
    assert bounded(dict.fromkeys(range(1_000_000))) == \
        "{0: None, 1: None, 2: None, 3: None, 4: None, 5: None, ...}"
    assert bounded("many") == "'many'" and bounded(12) == "12"
    assert shorten("\n  first line\nsecond", 8) == "first..."


# -- case 6: estimator parameters --------------------------------------------------------------------

@pytest.mark.parametrize(("model", "message"), [
    ("{family: sgd, params: {max_iter: -1}}",
     "key 'model.params.max_iter': SGDClassifier expects an int in the range [1, inf) (got -1)"),
    ("{family: hgb, params: {learning_rate: 0}}",
     "key 'model.params.learning_rate': HistGradientBoostingClassifier expects a float in the range "
     "(0.0, inf) (got 0)"),
    ("{family: sgd, params: {max_iters: 5}}",
     "key 'model.params.max_iters': not a parameter of SGDClassifier (did you mean 'max_iter'?)"),
    ("{family: hgb, params: {categorical_features: [0]}}",
     "key 'model.params.categorical_features': set by the 'hgb' family itself; remove it"),
    ("{family: sgd, params: {class_weight: balanced}}",
     "key 'model.params.class_weight': 'balanced' is refused by partial_fit, which the 'sgd' family "
     "fine-tunes with; give a weight per class"),
    ("{family: sgd, params: {early_stopping: true}}",
     "key 'model.params.early_stopping': early_stopping should be False with partial_fit (the 'sgd' "
     "family fine-tunes with partial_fit)"),
], ids=["sgd-max_iter", "hgb-learning_rate", "unknown-name", "set-by-family", "sgd-balanced",
        "sgd-early_stopping"])
def test_model_params_are_checked_when_the_config_loads(tmp_path, model, message):
    path = write(tmp_path, BASE + f"model: {model}\n")
    assert refusal(path) == f"{path}: {message}"


def test_valid_model_params_load(tmp_path):
    config = load_config(write(tmp_path, BASE + "model: {family: hgb, params: {max_iter: 50, "
                                              "learning_rate: 0.05, class_weight: balanced}}\n"))
    assert config.model.params == {"max_iter": 50, "learning_rate": 0.05, "class_weight": "balanced"}


@pytest.mark.parametrize(("params", "refused"), [({"max_iter": -1}, "max_iter"),
                                                 ({"max_iters": 5}, "max_iters")])
def test_a_parameter_refused_only_at_training_is_a_config_error(tmp_path, params, refused):
    path = write(tmp_path, BASE)
    config = load_config(path)
    config = config.model_copy(update={"model": config.model.model_copy(update={"params": params})})
    frame = make_batch(200, seed=1)
    schema = infer_schema(frame, "label", None)
    with pytest.raises(ConfigError) as err:
        train(Candidate.RETRAIN_BATCH, TrainingRows(len(frame), frame=frame), None, schema, config)
    assert str(err.value).startswith(f"{path}: key 'model.params.{refused}': refused by scikit-learn at "
                                     "training (")


def test_a_training_error_not_about_a_configured_parameter_stays_what_it_was(tmp_path):
    config = load_config(write(tmp_path, BASE + "model: {params: {alpha: 0.001}}\n"))
    frame = make_batch(200, seed=1)
    schema = infer_schema(frame, "label", None)
    one_class = frame[frame["label"] == "low"]
    with pytest.raises(ValueError) as err:
        train(Candidate.RETRAIN_BATCH, TrainingRows(len(one_class), frame=one_class), None, schema, config)
    assert not isinstance(err.value, ConfigError)
