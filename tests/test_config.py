"""Config loading: defaults, overrides, validation errors that name the key, and the hash."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from experiments.config import (
    FINETUNE_KEYS,
    MODEL_NAMES,
    SECTIONS,
    UNHASHED_KEYS,
    ConfigError,
    StudyConfig,
    _apply,
    config_hash,
    load_config,
    parse_config_text,
    validate,
)
from tests.conftest import SMOKE_CONFIG


def test_default_config_is_the_reference_study():
    config = load_config()
    assert config.study.models == ["baseline", "augmented", "preprocessed", "transfer", "finetune", "transfer_extended"]
    assert config.dataset.name == "cats_and_dogs_filtered"
    assert config.seeds == [1337]  # one run per model unless --seeds says otherwise
    assert config.training.mixed_precision == "auto"
    assert config.image_size == (160, 160)
    assert config.data.batch_size == 32
    assert config.training.epochs == 20
    assert config.data.test_fraction == pytest.approx(0.2)
    assert config.training.base_weights == "imagenet"
    assert config.data.source == "download"


def test_pointing_at_other_data_clears_the_dataset_description():
    assert load_config(None, {"data.source": "download"}).dataset.name == "cats_and_dogs_filtered"  # the same data
    for overrides in ({"data.source": "synthetic"}, {"data.source": "folder", "data.data_dir": "photos"},
                      {"data.url": "https://example.org/other.zip"}):
        config = load_config(None, overrides)
        assert config.dataset.name == "" and config.dataset.licence == "", overrides
    named = load_config(None, {"data.source": "synthetic", "dataset.name": "shapes"})
    assert named.dataset.name == "shapes"


def test_another_folder_clears_the_description_of_the_configured_folder(tmp_path):
    """--data-dir on a config that already reads a folder: only data.data_dir changes, and the
    [dataset] description of the configured folder must not be shown for the other one."""
    config_file = tmp_path / "photos.toml"
    config_file.write_text('[dataset]\nname = "my photos"\n\n[data]\nsource = "folder"\ndata_dir = "photos"\n', encoding="utf-8")
    assert load_config(config_file).dataset.name == "my photos"
    assert load_config(config_file, {"data.source": "folder", "data.data_dir": "photos"}).dataset.name == "my photos"  # the same folder
    assert load_config(config_file, {"data.source": "folder", "data.data_dir": "other"}).dataset.name == ""  # what --data-dir other gives


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


# --------------------------------------------------------------------------- the hash covers every setting that changes results

# The settings that change where results go, how they are shown or how fast they come, and not
# what is computed; and the settings only fine-tuning reads. Written out here on purpose: a
# setting moved into either set must be a decision someone makes in this test too.
NOT_CHANGING_RESULTS = {("study", "run_name"), ("study", "out_dir"), ("study", "models"), ("study", "seeds"),
                        ("training", "verbose"), ("training", "validation_feature_cache"),
                        ("data", "workers"), ("data", "cache_dir"),
                        ("dataset", "name"), ("dataset", "description"), ("dataset", "source"), ("dataset", "licence"),
                        ("training", "tensorboard"), ("training", "mlflow"), ("training", "mlflow_uri"),
                        ("study", "title"), ("study", "question"), ("study", "compare")}
FINETUNE_ONLY = {("training", "finetune_epochs"), ("training", "finetune_from_layer"),
                 ("training", "finetune_learning_rate_factor")}
#: The models each of FINETUNE_ONLY retrains: the control reads only how many epochs it trains.
CONTINUING_READERS = {("training", "finetune_epochs"): {"finetune", "transfer_extended"},
                      ("training", "finetune_from_layer"): {"finetune"},
                      ("training", "finetune_learning_rate_factor"): {"finetune"}}


def schema_keys() -> list[tuple[str, str]]:
    """Every (section, key) of the config schema, read from the dataclasses."""
    return [(section, item.name) for section, section_class in SECTIONS.items() for item in dataclasses.fields(section_class)]


def changed(value):
    """Another value of the same type."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 + 0.01
    if isinstance(value, str):
        return value + "-changed"
    if isinstance(value, list) and value and all(isinstance(item, int) for item in value):
        return [item + 16 for item in value]
    if isinstance(value, list):
        return value[:-1] if len(value) > 1 else value + ["baseline"]
    raise AssertionError(f"no way to change a {type(value).__name__} here: teach changed() about it")


def test_the_schema_is_what_the_hash_rules_talk_about():
    assert set(SECTIONS) | {"models"} == {item.name for item in dataclasses.fields(StudyConfig)}
    keys = set(schema_keys())
    assert ("data", "image_size") in keys
    assert UNHASHED_KEYS == NOT_CHANGING_RESULTS
    assert FINETUNE_KEYS == FINETUNE_ONLY
    assert (UNHASHED_KEYS | FINETUNE_KEYS) <= keys, "a hash rule names a key the config does not have"


@pytest.mark.parametrize("section, key", schema_keys(), ids=[f"{section}.{key}" for section, key in schema_keys()])
def test_every_setting_that_changes_results_changes_the_hash(section, key):
    config = StudyConfig()
    before = {name: config_hash(config, name) for name in MODEL_NAMES}
    value = getattr(getattr(config, section), key)
    setattr(getattr(config, section), key, changed(value))
    assert getattr(getattr(config, section), key) != value
    after = {name: config_hash(config, name) for name in MODEL_NAMES}
    if (section, key) in NOT_CHANGING_RESULTS:
        assert after == before, f"{section}.{key} changes no result, so it must not retrain anything"
    elif (section, key) in FINETUNE_ONLY:
        changed_for = {name for name in MODEL_NAMES if after[name] != before[name]}
        assert changed_for == CONTINUING_READERS[(section, key)], f"{section}.{key} retrains {changed_for}"
    else:
        changed_for = [name for name in MODEL_NAMES if after[name] != before[name]]
        assert changed_for == list(MODEL_NAMES), f"{section}.{key} changes results, but only these models' hashes: {changed_for}"


def test_another_image_size_retrains_every_model():
    small, large = StudyConfig(), StudyConfig()
    small.data.image_size = [96, 96]
    for name in MODEL_NAMES:
        assert config_hash(small, name) != config_hash(large, name)
    small.data.image_size = [160, 96]  # one side is enough
    assert config_hash(small, "baseline") != config_hash(large, "baseline")


# --------------------------------------------------------------------------- boundaries


@pytest.mark.parametrize("fraction", [0, 0.0, -0.0, 1, 1.0, -1e-9, 1.000001])
def test_a_test_fraction_of_zero_or_one_is_rejected(fraction):
    with pytest.raises(ConfigError, match="data.test_fraction"):
        load_config(None, {"data.test_fraction": fraction})


@pytest.mark.parametrize("fraction", [math.nextafter(0.0, 1.0), 1e-9, 0.5, 1 - 1e-9, math.nextafter(1.0, 0.0)])
def test_a_test_fraction_just_inside_zero_and_one_is_accepted(fraction):
    assert load_config(None, {"data.test_fraction": fraction}).data.test_fraction == fraction


# --------------------------------------------------------------------------- any parsed values

# Which keys the generated configs set, with their section; and a few wrong places.
GENERATED_KEYS = [
    ("training", "epochs"), ("data", "batch_size"), ("data", "image_size"), ("study", "models"), ("data", "source"),
    ("study", "seed"), ("data", "test_fraction"), ("training", "learning_rate"), ("training", "base_weights"),
    ("training", "mixed_precision"), ("training", "jit_compile"),
]
MISPLACED_KEYS = [("study", "epochs"), ("training", "bogus"), ("other", "seed")]
INTERESTING_VALUES = st.sampled_from([
    0, 1, -1, 2, 16, 17, 31, 32, 160, 2**31 - 1, 2**31, 0.0, 1.0, 0.5, 0.2, 1e-9, -0.1, 1.5, math.nan, math.inf,
    True, False, "", "folder", "synthetic", "download", "ftp", "none", "imagenet", "bf16", "auto", "fp8", "a\x00b",
    [32, 32], [17, 17], [18, 40], [160], [0, 5], [], ["baseline"], ["transfer", "finetune"], ["finetune", "transfer"],
    ["finetune"], ["baseline", "baseline"], ["resnet"], ["augmented", "preprocessed"],
])
toml_scalars = st.one_of(
    INTERESTING_VALUES, st.integers(-5, 300), st.floats(allow_nan=True), st.booleans(), st.text(max_size=8),
    st.lists(st.integers(-5, 300), max_size=3), st.lists(st.text(max_size=6), max_size=3),
)
# Usable values per key, so that usable configs are generated as often as unusable ones.
USABLE_VALUES = {
    "epochs": [1, 2, 20], "batch_size": [1, 16, 32], "image_size": [[32, 32], [160, 160], [48, 64]],
    "models": [["baseline", "transfer", "finetune"], ["transfer"], list(MODEL_NAMES)], "source": ["download", "synthetic"],
    "seed": [0, 7, 2**31 - 1], "test_fraction": [0.2, 0.5, 0.01, 0.99], "learning_rate": [0.001, 1, 1e-6],
    "base_weights": ["imagenet", "none"], "mixed_precision": ["auto", "none", "bf16", "fp16"], "jit_compile": [True, False],
}


def setting_and_value(pair: tuple[str, str]):
    usable = USABLE_VALUES.get(pair[1], [])
    values = st.one_of(st.sampled_from(usable), st.sampled_from(usable), toml_scalars) if usable else toml_scalars
    return st.tuples(st.just(pair), values)


generated_configs = st.tuples(
    st.lists(st.sampled_from(GENERATED_KEYS).flatmap(setting_and_value), max_size=4),
    st.lists(st.sampled_from(MISPLACED_KEYS).flatmap(setting_and_value), max_size=1) | st.just([]) | st.just([]),
).map(lambda lists: dict(lists[0] + lists[1]))


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def expected_problem(values: dict) -> str | None:
    """An independent statement of the config rules for the generated keys: why these values
    (over the defaults) make an unusable config, or None when they make a usable one."""
    settings = {(section, key): value for section, keys in values.items() for key, value in keys.items()}
    for section, key in settings:
        if section not in SECTIONS or key not in {item.name for item in dataclasses.fields(SECTIONS[section])}:
            return f"unknown {section}.{key}"
    default = StudyConfig()
    setting = {key: settings.get((section, key), getattr(getattr(default, section), key))
               for section, key in [("training", "epochs"), ("data", "batch_size"), ("data", "image_size"),
                                    ("study", "models"), ("data", "source"), ("study", "seed"), ("data", "test_fraction"),
                                    ("training", "learning_rate"), ("training", "base_weights"),
                                    ("training", "mixed_precision"), ("training", "jit_compile")]}
    # types
    for key in ("epochs", "batch_size", "seed"):
        if not is_int(setting[key]):
            return f"{key} is not an integer"
    for key in ("test_fraction", "learning_rate"):
        if not is_number(setting[key]) or not math.isfinite(setting[key]):
            return f"{key} is not a finite number"
    for key in ("source", "base_weights", "mixed_precision"):
        if not isinstance(setting[key], str):
            return f"{key} is not a string"
    if not isinstance(setting["jit_compile"], bool):
        return "jit_compile is not a boolean"
    if not isinstance(setting["image_size"], list) or not all(is_int(side) for side in setting["image_size"]):
        return "image_size is not a list of integers"
    models = setting["models"]
    if not isinstance(models, list) or not all(isinstance(name, str) for name in models):
        return "models is not a list of strings"
    # values
    if "\x00" in setting["base_weights"]:
        return "base_weights cannot be a path"
    if not models or any(name not in MODEL_NAMES for name in models) or len(set(models)) != len(models):
        return "models"
    if "finetune" in models and ("transfer" not in models or models.index("transfer") > models.index("finetune")):
        return "finetune without transfer before it"
    if setting["seed"] < 0 or setting["seed"] >= 2**31:
        return "seed"
    if setting["source"] not in ("download", "folder", "synthetic"):
        return "source"
    if setting["source"] == "folder":
        return "folder source without a data_dir"
    image_size = setting["image_size"]
    smallest_needed = 32 if {"transfer", "finetune"} & set(models) else 18
    if len(image_size) != 2 or min(image_size) < smallest_needed:
        return "image_size"
    if setting["batch_size"] < 1 or setting["epochs"] < 1:
        return "batch_size or epochs"
    fraction = float(setting["test_fraction"])
    if not 0 < fraction < 1:
        return "test_fraction"
    if setting["source"] == "synthetic":  # 100 validation images per class must leave a test and a validation image
        test_count = round(100 * fraction)
        if test_count < 1 or test_count > 99:
            return "synthetic split"
    if setting["learning_rate"] <= 0:
        return "learning_rate"
    if setting["mixed_precision"] not in ("auto", "none", "bf16", "fp16"):
        return "mixed_precision"
    if setting["base_weights"] == "":
        return "base_weights empty"
    if setting["base_weights"] not in ("imagenet", "none") and "transfer" in models:
        return "base_weights file missing"  # no generated name is an existing .h5 file
    return None


def nested(pairs: dict) -> dict:
    values: dict = {}
    for (section, key), value in pairs.items():
        values.setdefault(section, {})[key] = value
    return values


@settings(max_examples=300, deadline=None)
@given(generated_configs.map(nested))
@example({})
@example({"data": {"test_fraction": 0.0}})
@example({"data": {"test_fraction": 1e-9}})
@example({"data": {"image_size": [31, 31]}})
@example({"study": {"models": ["baseline"]}, "data": {"image_size": [18, 40]}})
@example({"data": {"source": "synthetic", "test_fraction": 0.004}})
@example({"data": {"source": "synthetic", "test_fraction": 0.006}})
def test_any_parsed_values_give_a_config_or_a_config_error(values):
    problem = expected_problem(values)
    config = StudyConfig()
    try:
        _apply(config, values, "generated")
        validate(config)
    except ConfigError as error:
        assert str(error)
        assert problem is not None, f"{values} is a usable config, but it was rejected: {error}"
    else:
        assert problem is None, f"{values} was accepted, but {problem}"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_any_text_parses_or_raises_config_error(text):
    try:
        parse_config_text(text, "generated.toml")
    except ConfigError as error:
        assert "generated.toml" in str(error)


@pytest.mark.parametrize("size", [[100000, 100000], [4097, 16], [16, 50000]])
def test_an_image_size_beyond_the_cap_is_one_config_error_naming_the_key_and_the_memory_it_needs(size):
    from experiments.config import MAX_IMAGE_SIDE

    with pytest.raises(ConfigError) as caught:
        load_config(SMOKE_CONFIG, {"data.image_size": size})
    message = str(caught.value)
    assert message.startswith(f"data.image_size must be at most {MAX_IMAGE_SIDE} pixels a side, got {size[0]}x{size[1]}")
    assert "of memory as float32" in message and message.count(". ") == 0
    if size == [100000, 100000]:
        assert "1.7 TiB" in message  # 16 x 100000 x 100000 x 3 x 4 bytes


def test_an_image_size_at_the_cap_is_accepted():
    from experiments.config import MAX_IMAGE_SIDE

    assert load_config(SMOKE_CONFIG, {"data.image_size": [MAX_IMAGE_SIDE, 48]}).image_size == (MAX_IMAGE_SIDE, 48)


@pytest.mark.parametrize("name", ["a\nb", "tab\there", "bell\a"])
def test_a_run_name_with_a_line_break_or_other_control_character_is_refused(name):
    with pytest.raises(ConfigError, match="study.run_name must be a plain folder name"):
        load_config(None, {"study.run_name": name})


def test_the_session_study_is_the_smoke_preset_with_its_chain_on_the_tests_backbone():
    """tests/session_study.toml, the study the test session trains once, says it is smoke.toml with
    the transfer chain on tests/tiny_backbone.py: it is, setting for setting."""
    import tomllib

    from tests.conftest import STUDY_CONFIG, TINY_BACKBONE

    smoke = tomllib.loads(SMOKE_CONFIG.read_text(encoding="utf-8"))
    session = tomllib.loads(STUDY_CONFIG.read_text(encoding="utf-8"))
    assert session["training"].pop("finetune_from_layer") == 4
    assert {key: value for key, value in session.items() if key != "models"} == smoke
    config = load_config(STUDY_CONFIG)
    assert config.recipe("transfer").backbone_file == TINY_BACKBONE.rpartition(":")[0]
    assert [config.recipe(name).recipe for name in config.study.models] == ["small_cnn"] * 3 + ["transfer", "finetune", "train_on"]
