"""The one type check (experiments.typed) the config, the recipes and the artifact records share."""

from __future__ import annotations

import math

import pytest

from experiments.artifacts import ArtifactFormatError, Fields
from experiments.config import ConfigError, load_config
from experiments.models.recipes import parse_model
from experiments.typed import type_problem


@pytest.mark.parametrize(("value", "expected", "problem"), [
    (3, int, None), (True, int, "must be an integer"), (3.0, int, "must be an integer"),
    (3, float, None), (2.5, "float", None), (False, float, "must be a number"), ("1e-3", float, "must be a number"),
    (True, bool, None), (1, bool, "must be true or false"),
    ("adam", str, None), (None, str, "must be a string"),
    (["a", "b"], "list[str]", None), (["a", 1], "list[str]", "must be a list of strings"),
    ([1, 2], "list[int]", None), ([1, True], "list[int]", "must be a list of integers"),
    ({"width": 4}, dict, None), ([], dict, "must be a table of keys and values"),
    (object(), "Any", None),  # a type it does not know passes
])
def test_each_type_and_what_a_wrong_value_must_be(value, expected, problem):
    assert type_problem(value, expected) == problem


def test_finite_numbers_when_asked():
    assert type_problem(math.inf, float) is None
    assert type_problem(math.inf, float, finite=True) == "must be a finite number"
    assert type_problem(math.nan, "float", finite=True) == "must be a finite number"
    assert type_problem(1, float, finite=True) is None


def test_the_config_the_recipes_and_the_records_say_the_same_thing(write_config, tmp_path):
    with pytest.raises(ConfigError, match=r"^training.epochs must be an integer, got True$"):
        load_config(write_config("[training]\nepochs = true\n"))
    with pytest.raises(ConfigError, match=r"^models.mine.epochs must be an integer, got True$"):
        parse_model("mine", {"recipe": "small_cnn", "epochs": True}, "study.toml")
    with pytest.raises(ArtifactFormatError, match=r"state.json: field 'epochs' must be an integer or null"):
        Fields({"epochs": True}, tmp_path / "state.json").integer("epochs", optional=True)
    assert load_config(write_config("[training]\nlearning_rate = 1\n")).training.learning_rate == 1.0
    assert isinstance(load_config(write_config("[training]\nlearning_rate = 1\n")).training.learning_rate, float)
