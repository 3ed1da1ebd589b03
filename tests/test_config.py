"""Config loading: defaults, overrides, validation errors that name the key, and the hash."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from experiments.config import (
    ConfigError,
    StudyConfig,
    config_hash,
    load_config,
    parse_config_text,
    validate,
    _apply,
)
from tests.conftest import SMOKE_CONFIG


def test_default_config_is_the_reference_study():
    config = load_config()
    assert config.study.models == ["baseline", "augmented", "preprocessed", "transfer", "finetune"]
    assert config.seeds == [1337]  # one run per model unless --seeds says otherwise
    assert config.training.mixed_precision == "auto"
    assert config.image_size == (160, 160)
    assert config.data.batch_size == 32
    assert config.training.epochs == 20
    assert config.data.test_fraction == pytest.approx(0.2)
    assert config.training.base_weights == "imagenet"
    assert config.data.source == "download"


def test_command_line_overrides_file_values():
    config = load_config(SMOKE_CONFIG, {"training.epochs": 5, "study.models": ["baseline"]})
    assert config.training.epochs == 5
    assert config.study.models == ["baseline"]
    assert config.data.source == "synthetic"


@pytest.mark.parametrize(
    "text, named",
    [
        ("[training]\nepoch = 3\n", "training.epoch"),
        ("[trainig]\nepochs = 3\n", "[trainig]"),
        ("[training]\nepochs = 0\n", "training.epochs"),
        ("[training]\nepochs = -2\n", "training.epochs"),
        ("[training]\nepochs = 'ten'\n", "training.epochs"),
        ("[training]\nepochs = 2.5\n", "training.epochs"),
        ("[data]\nbatch_size = 0\n", "data.batch_size"),
        ("[data]\nbatch_size = true\n", "data.batch_size"),
        ("[data]\nimage_size = [16, 16]\n", "too small for model"),
        ("[data]\nimage_size = [160]\n", "data.image_size"),
        ("[data]\ntest_fraction = 1.5\n", "data.test_fraction"),
        ("[data]\nsource = 'ftp'\n", "data.source"),
        ("[data]\nsource = 'folder'\n", "data.data_dir"),
        ("[study]\nmodels = ['baseline', 'resnet']\n", "resnet"),
        ("[study]\nmodels = []\n", "study.models"),
        ("[training]\nbase_weights = 'missing.weights.h5'\n", "missing.weights.h5"),
        ("[training]\nmixed_precision = 'fp8'\n", "training.mixed_precision"),
        ("[training]\nlearning_rate = -0.1\n", "training.learning_rate"),
        ("[training\n", "not valid TOML"),
        ("[study]\nseeds = 0\n", "study.seeds"),
        ("[study]\nmodels = ['finetune', 'transfer']\n", "transfer must be listed before it"),
        ("[study]\nmodels = ['baseline', 'finetune']\n", "transfer must be listed before it"),
        ("[training]\nfinetune_epochs = 0\n", "training.finetune_epochs"),
        ("[training]\nfinetune_from_layer = -1\n", "training.finetune_from_layer"),
        ("[training]\nfinetune_learning_rate_factor = 2.0\n", "training.finetune_learning_rate_factor"),
        ("[training]\ndeterministic = 'yes'\n", "training.deterministic"),
    ],
)
def test_bad_values_stop_with_the_key_named(write_config, text, named):
    with pytest.raises(ConfigError, match=None) as caught:
        load_config(write_config(text))
    assert named in str(caught.value)


def test_image_size_minimum_depends_on_the_models(write_config):
    path = write_config("[study]\nmodels = ['baseline']\n[data]\nimage_size = [24, 24]\n[training]\nbase_weights = 'none'\n")
    assert load_config(path).image_size == (24, 24)
    with pytest.raises(ConfigError, match="transfer"):
        load_config(path, {"study.models": ["transfer"]})


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nowhere.toml"):
        load_config(tmp_path / "nowhere.toml")


def test_hash_ignores_output_location_but_not_training_values():
    first, second = StudyConfig(), StudyConfig()
    second.study.out_dir = "elsewhere"
    second.study.models = ["baseline"]
    assert config_hash(first) == config_hash(second)
    second.training.epochs = 3
    assert config_hash(first) != config_hash(second)


def test_more_seeds_or_other_finetune_settings_do_not_retrain_the_other_models():
    first, second = StudyConfig(), StudyConfig()
    second.study.seeds = 5
    second.training.validation_feature_cache = False  # a speed lever with the same numbers
    assert config_hash(first) == config_hash(second)
    second.training.finetune_epochs = 3
    for name in ("baseline", "augmented", "preprocessed", "transfer"):
        assert config_hash(first, name) == config_hash(second, name)
    assert config_hash(first, "finetune") != config_hash(second, "finetune")
    second.training.mixed_precision = "none"
    assert config_hash(first, "baseline") != config_hash(second, "baseline")


toml_scalars = st.one_of(
    st.integers(-5, 300), st.floats(allow_nan=True), st.booleans(), st.text(max_size=8),
    st.lists(st.integers(-5, 300), max_size=3), st.lists(st.text(max_size=6), max_size=3),
)
keys = st.sampled_from(["epochs", "batch_size", "image_size", "models", "source", "seed", "test_fraction",
                        "learning_rate", "base_weights", "mixed_precision", "jit_compile", "bogus"])


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["study", "data", "training", "other"]), st.dictionaries(keys, toml_scalars, max_size=4), max_size=3))
def test_any_parsed_values_give_a_config_or_a_config_error(values):
    config = StudyConfig()
    try:
        _apply(config, values, "generated")
        validate(config)
    except ConfigError as error:
        assert str(error)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_any_text_parses_or_raises_config_error(text):
    try:
        parse_config_text(text, "generated.toml")
    except ConfigError as error:
        assert "generated.toml" in str(error)
