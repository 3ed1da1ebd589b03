"""Models from the study's own code (recipe = "keras", a builder function) and per-model
training settings: declared, hashed, checked before training, trained and reported."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from experiments.config import ConfigError, config_hash, load_config
from experiments.models.recipes import parse_model
from tests.conftest import PROJECT_ROOT, cli_environment, run_cli_command

SMOKE = (PROJECT_ROOT / "experiments" / "configs" / "smoke.toml").read_text(encoding="utf-8")

GOOD_BUILDER = '''
import keras
from keras import layers


def build(input_shape, num_classes, width=4):
    """A tiny network of our own: one 3x3 convolution, global average pooling and a dense layer."""
    inputs = keras.Input(shape=input_shape)
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.Conv2D(width, 3, activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(num_classes)(x))


def build_softmax(input_shape, num_classes):
    inputs = keras.Input(shape=input_shape)
    x = layers.GlobalAveragePooling2D()(layers.Rescaling(1 / 255)(inputs))
    return keras.Model(inputs, layers.Dense(num_classes, activation="softmax")(x))
'''


def _study(folder: Path, table: str, models: str = '["mine"]', builder: str = GOOD_BUILDER, run_name: str = "own") -> Path:
    """A smoke-preset config in `folder` with `table` appended and models.py holding `builder`."""
    (folder / "models.py").write_text(textwrap.dedent(builder), encoding="utf-8")
    text = SMOKE.replace('run_name = "smoke"', f'run_name = "{run_name}"\nmodels = {models}')
    path = folder / "study.toml"
    path.write_text(text + "\n" + textwrap.dedent(table), encoding="utf-8")
    return path


MINE = '[models.mine]\nrecipe = "keras"\nbuilder = "models.py:build"\nparams = { width = 4 }\n'


# --------------------------------------------------------------------------- declaring and hashing


def test_a_builder_model_table_parses_without_importing_the_builder():
    from experiments.study.records import study_models

    manifest_config = {"study": {"models": ["mine", "baseline"]},
                       "models": {"mine": {"recipe": "keras", "builder": "no_such_package.nowhere:build", "params": {"width": 8},
                                           "outputs": "logits", "epochs": 0, "builder_sha256": "ab" * 32}}}
    problems: list[str] = []
    recipes = study_models(manifest_config, problems)
    assert problems == []
    assert [recipe.name for recipe in recipes] == ["mine", "baseline"]
    assert recipes[0].recipe == "keras" and recipes[0].params == {"width": 8}


@pytest.mark.parametrize(("table", "message"), [
    ('recipe = "keras"', "models.mine.builder in x must be \"FILE.py:function\""),
    ('recipe = "keras"\nbuilder = "models.py"', "models.mine.builder in x must be"),
    ('recipe = "keras"\nbuilder = "models.py:build"\nparams = 3', "models.mine.params must be a table"),
    ('recipe = "small_cnn"\nbuilder = "models.py:build"', "models.mine.builder in x is not a parameter of the small_cnn recipe"),
])
def test_a_bad_builder_declaration_is_one_sentence_naming_the_key(table, message):
    import tomllib

    with pytest.raises(ConfigError) as caught:
        parse_model("mine", tomllib.loads(table), "x")
    assert message in str(caught.value)


def test_editing_the_builder_file_changes_the_model_hash(tmp_path):
    path = _study(tmp_path, MINE, models='["mine", "baseline"]')
    before = load_config(path)
    assert before.recipe("mine").builder_file == str((tmp_path / "models.py").resolve())
    (tmp_path / "models.py").write_text(GOOD_BUILDER.replace("width=4", "width=5"), encoding="utf-8")
    after = load_config(path)
    assert config_hash(before, "mine") != config_hash(after, "mine")
    assert config_hash(before, "baseline") == config_hash(after, "baseline")  # the others are not retrained


def test_the_builder_params_are_part_of_the_model_hash(tmp_path):
    first = load_config(_study(tmp_path, MINE))
    second = load_config(_study(tmp_path, MINE.replace("width = 4", "width = 6")))
    assert config_hash(first, "mine") != config_hash(second, "mine")


def test_moving_the_study_folder_keeps_the_model_hash(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert config_hash(load_config(_study(tmp_path / "a", MINE)), "mine") == config_hash(load_config(_study(tmp_path / "b", MINE)), "mine")


def test_a_module_builder_is_found_on_the_path_and_hashed_without_importing_it(tmp_path, monkeypatch):
    package = tmp_path / "lib" / "mypackage"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('imported')\n", encoding="utf-8")  # never run by load_config
    (package / "nets.py").write_text(GOOD_BUILDER, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    config = load_config(_study(tmp_path, '[models.mine]\nrecipe = "keras"\nbuilder = "mypackage.nets:build"\n'))
    recipe = config.recipe("mine")
    assert recipe.builder_file == str(package / "nets.py")
    assert len(recipe.builder_sha256) == 64


# A builder that imports helpers of its own: blocks.py beside it, a local package with a relative
# import inside, the standard library and Keras.
HELPED_BUILDER = '''
import os
import keras
from blocks import stem
import nets.heads


def build(input_shape, num_classes, width=4):
    return stem(width) + nets.heads.head(num_classes)
'''


def _helped_study(folder: Path) -> Path:
    """A study whose builder imports blocks.py and the nets package (nets/heads.py importing .layers)."""
    (folder / "nets").mkdir(parents=True)
    (folder / "blocks.py").write_text("def stem(width):\n    return width\n", encoding="utf-8")
    (folder / "nets" / "__init__.py").write_text("", encoding="utf-8")
    (folder / "nets" / "heads.py").write_text("from .layers import dense\n\ndef head(n):\n    return dense(n)\n", encoding="utf-8")
    (folder / "nets" / "layers.py").write_text("def dense(n):\n    return 100 * n\n", encoding="utf-8")
    (folder / "unused.py").write_text("X = 1\n", encoding="utf-8")
    return _study(folder, MINE, builder=HELPED_BUILDER)


@pytest.mark.parametrize("edited", ["blocks.py", "nets/heads.py", "nets/layers.py", "nets/__init__.py"])
def test_editing_a_file_the_builder_imports_from_its_folder_changes_the_model_hash(tmp_path, edited):
    path = _helped_study(tmp_path)
    before = load_config(path)
    with (tmp_path / edited).open("a", encoding="utf-8") as handle:
        handle.write("# edited\n")
    assert config_hash(before, "mine") != config_hash(load_config(path), "mine")


def test_a_file_of_the_folder_the_builder_does_not_import_is_not_hashed(tmp_path):
    from experiments.models.local_imports import local_imports

    path = _helped_study(tmp_path)
    before = load_config(path)
    (tmp_path / "unused.py").write_text("X = 2\n", encoding="utf-8")
    assert config_hash(before, "mine") == config_hash(load_config(path), "mine")
    found = [file.relative_to(tmp_path.resolve()).as_posix() for file in local_imports(tmp_path / "models.py")]
    assert found == ["blocks.py", "nets/__init__.py", "nets/heads.py", "nets/layers.py"]  # not os, not keras


def test_moving_a_study_folder_with_helper_files_keeps_the_model_hash(tmp_path):
    assert config_hash(load_config(_helped_study(tmp_path / "a")), "mine") == config_hash(load_config(_helped_study(tmp_path / "b")), "mine")


def test_a_builder_importing_only_installed_modules_keeps_the_digest_of_its_file(tmp_path):
    # runs made before imports were hashed keep their hashes: the digest is the file's own
    from experiments.artifacts import file_sha256

    config = load_config(_study(tmp_path, MINE, builder=GOOD_BUILDER + "\nimport json\nfrom os import path\n"))
    assert config.recipe("mine").builder_sha256 == file_sha256(tmp_path / "models.py")


def test_a_missing_local_module_or_a_cycle_of_imports_is_no_error_when_hashing(tmp_path):
    from experiments.models.local_imports import local_imports

    (tmp_path / "a.py").write_text("import b\n", encoding="utf-8")
    (tmp_path / "b.py").write_text("from a import thing\nfrom . import nothing\n", encoding="utf-8")
    (tmp_path / "broken.py").write_text("def (:\n", encoding="utf-8")
    builder = GOOD_BUILDER + "\nimport a\nimport broken\nfrom no_such_local_module import helper\n"
    config = load_config(_study(tmp_path, MINE, builder=builder))
    assert len(config.recipe("mine").builder_sha256) == 64
    assert [file.name for file in local_imports(tmp_path / "models.py")] == ["a.py", "b.py", "broken.py"]


def test_a_builder_file_imports_its_helpers_from_its_folder_afresh_after_an_edit(tmp_path, monkeypatch):
    import sys

    from experiments.models.builders import load_builder

    monkeypatch.setattr(sys, "path", list(sys.path))  # the builder's folder goes on it
    path = _helped_study(tmp_path)
    (tmp_path / "models.py").write_text(HELPED_BUILDER.replace("import keras\n", ""), encoding="utf-8")  # no TensorFlow here
    try:
        assert load_builder(load_config(path).recipe("mine"))(input_shape=(8, 8, 3), num_classes=2, width=4) == 204
        (tmp_path / "nets" / "layers.py").write_text("def dense(n):\n    return 1000 * n\n", encoding="utf-8")
        assert load_builder(load_config(path).recipe("mine"))(input_shape=(8, 8, 3), num_classes=2, width=4) == 2004
    finally:
        for name in ("blocks", "nets", "nets.heads", "nets.layers"):
            sys.modules.pop(name, None)


def test_a_module_builder_hashes_the_files_of_its_package_it_imports(tmp_path, monkeypatch):
    package = tmp_path / "lib" / "mypackage"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('imported')\n", encoding="utf-8")  # never run by load_config
    (package / "nets.py").write_text(GOOD_BUILDER + "\nfrom .blocks import stem\nimport blocks\n", encoding="utf-8")
    (package / "blocks.py").write_text("def stem():\n    pass\n", encoding="utf-8")
    (tmp_path / "lib" / "blocks.py").write_text("X = 1\n", encoding="utf-8")  # outside the module's folder: not hashed
    monkeypatch.syspath_prepend(str(tmp_path / "lib"))
    path = _study(tmp_path, '[models.mine]\nrecipe = "keras"\nbuilder = "mypackage.nets:build"\n')
    before = load_config(path)
    (tmp_path / "lib" / "blocks.py").write_text("X = 2\n", encoding="utf-8")
    assert config_hash(before, "mine") == config_hash(load_config(path), "mine")
    (package / "blocks.py").write_text("def stem():\n    return 1\n", encoding="utf-8")
    assert config_hash(before, "mine") != config_hash(load_config(path), "mine")


# --------------------------------------------------------------------------- checked before training


BROKEN = {
    "missing_file": ("[models.mine]\nrecipe = \"keras\"\nbuilder = \"nowhere.py:build\"\n", GOOD_BUILDER, "the file does not exist"),
    "import_error": (MINE, "import no_such_module_here\n", "importing it failed with ModuleNotFoundError"),
    "syntax_error": (MINE, "def build(:\n", "importing it failed with SyntaxError"),
    "no_function": (MINE.replace(":build", ":make"), GOOD_BUILDER, "it defines no function make"),
    "raises": (MINE, "def build(input_shape, num_classes, width):\n    raise ValueError('too narrow')\n",
               "raised ValueError: too narrow"),
    "not_a_model": (MINE, "def build(input_shape, num_classes, width):\n    return 42\n", "it returned a int, not a keras.Model"),
    "wrong_output": (MINE, GOOD_BUILDER.replace("layers.Dense(num_classes)", "layers.Dense(num_classes + 1)"),
                     "must output one vector of 2 logits per image (shape (batch, 2)), but it outputs (3,)"),
    "wrong_input": (MINE, GOOD_BUILDER.replace("keras.Input(shape=input_shape)", "keras.Input(shape=(32, 32, 3))"),
                    "takes inputs of shape (32, 32, 3), but the images are (48, 48, 3)"),
    "unsaveable": (MINE, '''
import keras


class Net(keras.Model):
    def __init__(self, classes):
        super().__init__()
        self.dense = keras.layers.Dense(classes)

    def call(self, x):
        return self.dense(keras.ops.mean(x, axis=(1, 2)))


def build(input_shape, num_classes, width):
    inputs = keras.Input(shape=input_shape)
    return keras.Model(inputs, Net(num_classes)(inputs))
''', "cannot be saved and loaded back"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_builder_is_one_sentence_naming_the_key_and_the_file(tmp_path, case):
    from experiments.models.builders import check_builders

    table, builder, message = BROKEN[case]
    config = load_config(_study(tmp_path, table, builder=builder))
    with pytest.raises(ConfigError) as caught:
        check_builders(config, (48, 48), 2)
    text = str(caught.value)
    assert text.startswith("models.mine.builder = ") and str(tmp_path) in text, text
    assert message in text, text
    assert "\n" not in text and "Traceback" not in text


@pytest.mark.keras
def test_a_builder_returning_a_wrong_output_shape_stops_before_training(tmp_path):
    path = _study(tmp_path, MINE, models='["baseline", "mine"]',
                  builder=GOOD_BUILDER.replace("layers.Dense(num_classes)", "layers.Dense(5)"))
    result = subprocess.run(run_cli_command("train", "--config", str(path), "--out", str(tmp_path / "out")),
                            cwd=tmp_path, env=cli_environment(), capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "models.mine.builder = 'models.py:build'" in result.stderr and "outputs (5,)" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list((tmp_path / "out").rglob("history.json"))  # not even the baseline, listed first, trained


# --------------------------------------------------------------------------- a backbone of your own

BACKBONE = '''
import keras
from keras import layers


def encoder(input_shape):
    """Two strided convolutions: feature maps for the transfer model to pool."""
    inputs = keras.Input(shape=input_shape)
    x = layers.Conv2D(4, 3, strides=2, name="first")(layers.Rescaling(1 / 255)(inputs))
    return keras.Model(inputs, layers.Conv2D(8, 3, strides=2, name="second")(x), name="encoder")


def pooled(input_shape):
    inputs = keras.Input(shape=input_shape)
    return keras.Model(inputs, layers.GlobalAveragePooling2D()(layers.Conv2D(4, 3)(inputs)))
'''
OWN = '[models.mine]\nrecipe = "transfer"\nbackbone = "models.py:encoder"\n'
OWN_CHAIN = OWN + '[models.tuned]\nrecipe = "finetune"\ncontinues = "mine"\nunfreeze_from_layer = -1\n'


def test_a_backbone_of_your_own_is_located_and_hashed_and_its_file_retrains_only_its_models(tmp_path):
    path = _study(tmp_path, OWN_CHAIN, models='["baseline", "mine", "tuned"]', builder=BACKBONE)
    before = load_config(path)
    recipe = before.recipe("mine")
    assert recipe.backbone_file == str((tmp_path / "models.py").resolve()) and len(recipe.backbone_sha256) == 64
    assert before.weights_of("mine") == "builder"  # --base-weights is for the keras.applications backbones
    (tmp_path / "models.py").write_text(BACKBONE.replace("Conv2D(8", "Conv2D(9"), encoding="utf-8")
    after = load_config(path)
    assert config_hash(before, "mine") != config_hash(after, "mine")
    assert config_hash(before, "baseline") == config_hash(after, "baseline")


def test_a_named_backbone_keeps_the_hash_it_had_before_backbones_of_your_own():
    from experiments.models.recipes import BUILT_IN

    assert "backbone_sha256" not in BUILT_IN["transfer"].to_dict()  # empty: left out, so old runs are not retrained


@pytest.mark.parametrize(("table", "message"), [
    ('recipe = "transfer"\nbackbone = "models.py:encoder"\nweights = "imagenet"',
     "models.mine.weights in x: a backbone of your own (models.py:encoder) has the weights its builder gives it"),
    ('recipe = "transfer"\nbackbone = "models.py:"', "models.mine.backbone in x must be \"FILE.py:function\""),
])
def test_a_bad_backbone_of_your_own_is_one_sentence_naming_the_key(table, message):
    import tomllib

    with pytest.raises(ConfigError) as caught:
        parse_model("mine", tomllib.loads(table), "x")
    assert message in str(caught.value)


def test_the_report_words_say_the_backbone_is_the_studys_own():
    from experiments.models.recipes import describe, parse_model

    title, description = describe(parse_model("mine", {"recipe": "transfer", "backbone": "nets/models.py:encoder"}, "x"))
    assert title == "Transfer learning on a frozen models.py:encoder"
    assert "the study's own backbone models.py:encoder" in description and "ImageNet" not in description


@pytest.mark.keras
@pytest.mark.parametrize(("table", "builder", "message"), [
    (OWN.replace(":encoder", ":pooled"), BACKBONE, "a backbone must output one feature map per image, of shape "
                                                   "(batch, rows, columns, channels), which the transfer model pools; it outputs (4,)"),
    (OWN.replace(":encoder", ":decoder"), BACKBONE, "it defines no function decoder"),
    (OWN, "def encoder(input_shape):\n    raise ValueError('no')\n", "calling it with input_shape=(48, 48, 3) raised ValueError: no"),
    (OWN_CHAIN.replace("-1", "9"), BACKBONE,
     "models.tuned.unfreeze_from_layer is 9, but the models.py:encoder backbone has 4 layers (use 0 to 3, or -1 to -4"),
], ids=["pooled-output", "no-function", "raises", "unfreeze-layer"])
def test_a_broken_backbone_of_your_own_stops_before_training_in_one_sentence(tmp_path, table, builder, message):
    from experiments.models.builders import check_builders

    config = load_config(_study(tmp_path, table, models='["mine", "tuned"]' if "tuned" in table else '["mine"]', builder=builder))
    with pytest.raises(ConfigError) as caught:
        check_builders(config, (48, 48), 2)
    text = str(caught.value)
    assert message in text and "\n" not in text, text


@pytest.mark.keras
def test_a_transfer_model_on_a_backbone_of_your_own_builds_frozen_and_finetunes_its_top(tmp_path):
    import keras

    from experiments.models.build import backbone_of, build_model, make_finetune_model

    config = load_config(_study(tmp_path, OWN_CHAIN, models='["mine", "tuned"]', builder=BACKBONE))
    model = build_model(config.recipe("mine"), (48, 48), 2, config.weights_of("mine"))
    base = backbone_of(model)
    assert base.name == "encoder" and not base.trainable
    assert [layer.name for layer in model.layers if layer.trainable_weights] == ["logits"]
    tuned = make_finetune_model(model, -1, "tuned")
    assert [layer.name for layer in backbone_of(tuned).layers if layer.trainable_weights] == ["second"]
    keras.backend.clear_session()


# --------------------------------------------------------------------------- built, compiled, trained


def test_a_probabilities_model_is_compiled_for_probabilities_and_read_back_as_logits(tmp_path):
    import keras
    import numpy as np

    from experiments.models.build import build_model, compile_model
    from experiments.study.train_cell import as_logits
    from experiments.training.fit import softmax

    config = load_config(_study(tmp_path, '[models.mine]\nrecipe = "keras"\nbuilder = "models.py:build_softmax"\n'
                                          'outputs = "probabilities"\n'))
    model = build_model(config.recipe("mine"), (48, 48), 2)
    compile_model(model, 1e-3, settings=config.training_settings("mine"), steps_per_epoch=4, from_logits=False)
    assert model.loss.get_config()["from_logits"] is False
    probabilities = np.array([[0.2, 0.8], [0.9, 0.1]])
    assert np.allclose(softmax(as_logits(config, "mine", probabilities)), probabilities)
    keras.backend.clear_session()


@pytest.mark.parametrize(("table", "optimizer", "weight_decay"), [
    ('optimizer = "adamw"\nweight_decay = 0.05\nlearning_rate = 0.003', "AdamW", 0.05),
    ('optimizer = "sgd"\nlearning_rate = 0.003', "SGD", None),
    ('optimizer = "rmsprop"\nweight_decay = 0.001\nlearning_rate = 0.003', "RMSprop", 0.001),
])
def test_per_model_training_settings_reach_the_optimizer(tmp_path, table, optimizer, weight_decay):
    import keras

    from experiments.models.build import build_model, compile_model

    config = load_config(_study(tmp_path, MINE + table + "\nlabel_smoothing = 0.1\n"))
    settings = config.training_settings("mine")
    model = compile_model(build_model(config.recipe("mine"), (48, 48), 2), settings.learning_rate, settings=settings,
                          steps_per_epoch=4)
    assert type(model.optimizer).__name__ == optimizer
    assert float(model.optimizer.learning_rate) == pytest.approx(0.003)
    assert model.optimizer.weight_decay == pytest.approx(weight_decay) if weight_decay else not model.optimizer.weight_decay
    if optimizer == "SGD":
        assert model.optimizer.momentum == pytest.approx(0.9)
    assert model.loss.label_smoothing == pytest.approx(0.1)
    keras.backend.clear_session()


@pytest.mark.parametrize(("schedule", "kind"), [("cosine", "CosineDecay"), ("step", "PiecewiseConstantDecay")])
def test_a_learning_rate_schedule_spans_the_models_own_epochs(tmp_path, schedule, kind):
    import keras

    from experiments.models.build import build_model, compile_model

    config = load_config(_study(tmp_path, MINE + f'schedule = "{schedule}"\nepochs = 3\nbatch_size = 8\n'))
    settings = config.training_settings("mine")
    assert (settings.epochs, settings.batch_size) == (3, 8)
    model = compile_model(build_model(config.recipe("mine"), (48, 48), 2), settings.learning_rate, settings=settings,
                          steps_per_epoch=16)
    rate = model.optimizer._learning_rate
    assert type(rate).__name__ == kind
    assert float(rate(0)) == pytest.approx(1e-3)
    assert float(rate(48)) < 1e-4  # by the last of 3 x 16 steps
    keras.backend.clear_session()


def test_training_settings_default_to_the_training_section_and_are_hashed_per_model(tmp_path):
    base = load_config(_study(tmp_path, MINE, models='["mine", "baseline"]'))
    assert base.training_settings("mine").to_dict() == {
        "optimizer": "adam", "learning_rate": 0.001, "weight_decay": 0.0, "label_smoothing": 0.0, "batch_size": 16,
        "epochs": 2, "schedule": "constant"}
    tuned = load_config(_study(tmp_path, MINE + 'optimizer = "sgd"\n', models='["mine", "baseline"]'))
    assert config_hash(base, "mine") != config_hash(tuned, "mine")
    assert config_hash(base, "baseline") == config_hash(tuned, "baseline")
    study_wide = load_config(_study(tmp_path, MINE, models='["mine", "baseline"]'), {"training.optimizer": "sgd"})
    assert study_wide.training_settings("baseline").optimizer == "sgd"
    assert config_hash(base, "baseline") != config_hash(study_wide, "baseline")


def test_runs_made_before_per_model_settings_keep_their_hashes():
    # the hashes these configs had before builders and per-model settings existed: the new
    # [training] keys at their defaults, and unset model settings, are not hashed
    configs = PROJECT_ROOT / "experiments" / "configs"
    default = load_config()
    assert config_hash(default).startswith("4ca1cca3d053")
    assert config_hash(default, "baseline").startswith("21522d43e0")
    # the data folder is hashed; one that holds no checkout (a clone may live anywhere, /tmp included)
    backbones = load_config(configs / "compare-backbones.toml", {"data.data_dir": "/srv/no-such-data"})
    assert [config_hash(backbones, name)[:10] for name in ("cnn", "resnet", "mobilenet_finetune")] == [
        "91dd6abe03", "b2407c17da", "39c9b12a79"]
    assert "optimizer" not in json.dumps(backbones.to_dict()["models"])


@pytest.mark.parametrize(("setting", "message"), [
    ('optimizer = "lbfgs"', "models.mine.optimizer must be one of adam, adamw, sgd, rmsprop"),
    ('schedule = "linear"', "models.mine.schedule must be one of constant, cosine, step"),
    ("learning_rate = 0", "models.mine.learning_rate must be a positive number"),
    ("label_smoothing = 1.0", "models.mine.label_smoothing must be at least 0 and below 1"),
    ("batch_size = 0", "models.mine.batch_size must be a positive integer"),
    ('outputs = "scores"', "models.mine.outputs must be one of logits, probabilities"),
])
def test_a_bad_training_setting_is_refused_naming_it(tmp_path, setting, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_study(tmp_path, MINE + setting + "\n"))


# --------------------------------------------------------------------------- end to end


@pytest.mark.training
def test_a_builder_model_trains_resumes_its_hash_and_renders_on_the_smoke_preset(tmp_path):
    path = _study(tmp_path, MINE + 'optimizer = "adamw"\nweight_decay = 0.01\n')
    out = tmp_path / "out"
    train = run_cli_command("train", "--config", str(path), "--out", str(out))
    first = subprocess.run(train, cwd=tmp_path, env=cli_environment(), capture_output=True, text=True, timeout=600, check=False)
    assert first.returncode == 0, first.stderr[-3000:]
    run = out / "own"
    summary = json.loads((run / "models" / "mine" / "summary.json").read_text(encoding="utf-8"))
    assert summary["description"].startswith("A tiny network of our own")  # the builder's docstring
    assert [layer["type"] for layer in summary["layers"]] == ["Rescaling", "Conv2D", "GlobalAveragePooling2D", "Dense"]
    assert summary["training"]["optimizer"] == "adamw" and summary["training"]["weight_decay"] == 0.01
    history = (run / "models" / "mine" / "seed-7" / "history.json").read_bytes()

    again = subprocess.run(train, cwd=tmp_path, env=cli_environment(), capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (run / "models" / "mine" / "seed-7" / "history.json").read_bytes() == history  # same code: reused

    (tmp_path / "models.py").write_text(GOOD_BUILDER.replace("width=4", "width=3") + "\n# edited\n", encoding="utf-8")
    edited = subprocess.run(train, cwd=tmp_path, env=cli_environment(), capture_output=True, text=True, timeout=600, check=False)
    assert edited.returncode == 0, edited.stderr[-3000:]
    assert "Epoch 1/2" in edited.stdout + edited.stderr  # the edited builder is trained again, never a stale run reused

    rendered = subprocess.run(run_cli_command("render", "--artifacts", str(run), "--docs", str(tmp_path / "docs")),
                              cwd=tmp_path, env=cli_environment(), capture_output=True, text=True, timeout=300, check=False)
    assert rendered.returncode == 0, rendered.stderr[-3000:]
    page = (tmp_path / "docs" / "models" / "mine.md").read_text(encoding="utf-8")
    assert "A tiny network of our own" in page and "Conv2D" in page


@pytest.mark.training
def test_a_checkpoint_of_a_builder_model_with_custom_layers_loads_back_with_its_optimizer_and_loss(tmp_path):
    import keras
    import numpy as np

    from experiments.models.build import build_model, compile_model

    custom = GOOD_BUILDER + '''

@keras.saving.register_keras_serializable(package="own_models_test")
class Doubled(layers.Layer):
    def call(self, x):
        return 2.0 * x


def build_custom(input_shape, num_classes):
    inputs = keras.Input(shape=input_shape)
    x = layers.GlobalAveragePooling2D()(Doubled()(layers.Rescaling(1 / 255)(inputs)))
    return keras.Model(inputs, layers.Dense(num_classes)(x))
'''
    config = load_config(_study(tmp_path, '[models.mine]\nrecipe = "keras"\nbuilder = "models.py:build_custom"\n'
                                          'optimizer = "adamw"\nlabel_smoothing = 0.2\n', builder=custom))
    settings = config.training_settings("mine")
    model = compile_model(build_model(config.recipe("mine"), (48, 48), 2), settings.learning_rate, settings=settings, steps_per_epoch=2)
    images, labels = np.random.default_rng(0).uniform(0, 255, (4, 48, 48, 3)).astype("float32"), np.array([0, 1, 0, 1])
    model.fit(images, labels, epochs=1, verbose=0)
    model.save(tmp_path / "epoch-0001.keras")  # as the runner's checkpoint, which a resumed run loads
    loaded = keras.models.load_model(tmp_path / "epoch-0001.keras")
    assert type(loaded.optimizer).__name__ == "AdamW" and int(loaded.optimizer.iterations) == 1
    assert loaded.loss.label_smoothing == pytest.approx(0.2)
    assert np.allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0))
    keras.backend.clear_session()


def test_comparisons_name_differing_training_settings_and_a_builder_models_own_start():
    from experiments.models.recipes import ModelRecipe
    from experiments.study.records import study_model
    from report_builder.views import _recipe_traits, training_phrase

    assert training_phrase({"optimizer": "adamw", "learning_rate": 0.0003}, ["optimizer", "learning_rate"]) == \
        "AdamW optimizer, learning rate 0.0003"

    class View:
        name = "mine"
        recipe = study_model(ModelRecipe("mine", "keras", builder="models.py:build", declared=True))

    traits = _recipe_traits(View(), "none", {"mine": View()})
    assert traits["start"] == "is built by the study's own models.py:build"
    assert "random flips" not in traits["augment"]


# --------------------------------------------------------------------------- variants


def test_a_list_of_settings_expands_into_readably_named_variants_each_with_its_own_hash(tmp_path):
    from experiments.models.recipes import describe
    from experiments.study.records import study_models

    table = MINE + 'title = "Mine"\nlearning_rate = [1e-3, 3e-4]\noptimizer = ["adam", "sgd"]\n'
    config = load_config(_study(tmp_path, table, models='["baseline", "mine"]'))
    names = ["mine-lr0.001-adam", "mine-lr0.001-sgd", "mine-lr0.0003-adam", "mine-lr0.0003-sgd"]
    assert config.study.models == ["baseline", *names]
    assert describe(config.recipe("mine-lr0.0003-sgd"))[0] == "Mine (SGD with momentum, learning rate 0.0003)"
    assert describe(config.recipe("mine-lr0.001-adam"))[0] == "Mine (Adam, learning rate 0.001)"
    assert (config.training_settings("mine-lr0.0003-sgd").optimizer, config.training_settings("mine-lr0.0003-sgd").learning_rate) == (
        "sgd", 0.0003)
    assert len({config_hash(config, name) for name in names}) == 4
    problems: list[str] = []  # the manifest's config reads back without the builder
    assert [recipe.name for recipe in study_models(json.loads(json.dumps(config.to_dict())), problems)] == ["baseline", *names]
    assert problems == []


def test_a_variants_title_reads_like_a_built_in_models_title_and_its_name_stays_an_identifier(tmp_path):
    from experiments.models.recipes import BUILT_IN, describe

    table = ('[models.adam_lr]\nrecipe = "keras"\nbuilder = "models.py:build"\nlearning_rate = [1e-3, 3e-4]\n'
             '[models.t]\nrecipe = "transfer"\nbackbone = ["ResNet50V2", "mobilenet_v2"]\npooling = ["max", "average"]\n'
             '[models.cnn]\nrecipe = "small_cnn"\naugment = [true, false]\nschedule = ["cosine"]\n')
    config = load_config(_study(tmp_path, table, models='["adam_lr", "t", "cnn"]'))
    titles = {name: describe(config.recipe(name))[0] for name in config.study.models}
    assert titles == {
        "adam_lr-lr0.001": "Adam lr (learning rate 0.001)",
        "adam_lr-lr0.0003": "Adam lr (learning rate 0.0003)",
        # the generated title names the backbone (and the augmentation) already: not said twice
        "t-resnet50v2-max": "Transfer learning on a frozen ResNet50V2 (global max pooling)",
        "t-resnet50v2-average": "Transfer learning on a frozen ResNet50V2 (global average pooling)",
        "t-mobilenet_v2-max": "Transfer learning on a frozen MobileNetV2 (global max pooling)",
        "t-mobilenet_v2-average": "Transfer learning on a frozen MobileNetV2 (global average pooling)",
        "cnn-cosine-augment": "A small convolutional network with data augmentation (cosine learning-rate schedule)",
        "cnn-cosine-no-augment": "A small convolutional network (cosine learning-rate schedule, no data augmentation)",
    }
    assert all(title[:1].isupper() for title in [*titles.values(), *(recipe.title for recipe in BUILT_IN.values())])
    assert describe(parse_model("mine", {"recipe": "keras", "builder": "m.py:build"}, "x"))[0] == "Mine"
    # the title the report shows is the one summary.json records at training
    import keras

    from experiments.models.build import describe_model

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert describe_model(model, config.recipe("adam_lr-lr0.0003"))["title"] == "Adam lr (learning rate 0.0003)"
    keras.backend.clear_session()


def test_a_variant_list_with_repeated_values_or_a_continued_table_with_variants_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="a list of variants needs distinct values"):
        load_config(_study(tmp_path, MINE + "learning_rate = [1e-3, 1e-3]\n"))
    table = ('[models.t]\nrecipe = "transfer"\ndropout = [0.1, 0.3]\n'
             '[models.ft]\nrecipe = "finetune"\ncontinues = "t"\n')
    with pytest.raises(ConfigError, match=r"models.ft.continues: t has variants \(t-drop0.1, t-drop0.3\); name the one it continues"):
        load_config(_study(tmp_path, table, models='["t", "ft"]'))


@pytest.mark.training
@pytest.mark.parametrize("stop_signal", ["SIGINT", pytest.param("SIGKILL", marks=pytest.mark.slow)])
def test_a_stopped_builder_model_with_custom_layers_resumes_with_every_epoch_once(tmp_path, stop_signal):
    """Stop a real run of a builder model (a custom layer, AdamW, cosine schedule, label smoothing)
    after its second epoch, run the same command again: it resumes from the checkpoint. Ctrl-C
    (SIGINT) ends the command in one sentence with the run marked interrupted; SIGKILL (slow lane;
    the fast lane kills a pool worker in tests/test_scale.py) leaves whatever it left."""
    import signal
    import time

    custom = GOOD_BUILDER + '''

@keras.saving.register_keras_serializable(package="own_models_kill")
class Halved(layers.Layer):
    def call(self, x):
        return 0.5 * x


def build_custom(input_shape, num_classes):
    inputs = keras.Input(shape=input_shape)
    x = layers.Conv2D(16, 3, activation="relu")(Halved()(layers.Rescaling(1 / 255)(inputs)))
    return keras.Model(inputs, layers.Dense(num_classes)(layers.GlobalAveragePooling2D()(x)))
'''
    path = _study(tmp_path, '[models.mine]\nrecipe = "keras"\nbuilder = "models.py:build_custom"\noptimizer = "adamw"\n'
                            'schedule = "cosine"\nlabel_smoothing = 0.1\nepochs = 5\n', builder=custom)
    path.write_text(path.read_text(encoding="utf-8").replace("synthetic_train_per_class = 64", "synthetic_train_per_class = 320")
                    .replace("image_size = [48, 48]", "image_size = [64, 64]"), encoding="utf-8")
    command = run_cli_command("train", "--config", str(path), "--out", str(tmp_path / "out"))
    run_folder = tmp_path / "out" / "own" / "models" / "mine" / "seed-7"
    progress = run_folder / "checkpoint" / "progress.json"
    process = subprocess.Popen(command, cwd=tmp_path, env=cli_environment(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            try:
                if len(json.loads(progress.read_text())["epochs"]) >= 2:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        time.sleep(0.2)  # into the third epoch
        process.send_signal(getattr(signal, stop_signal))
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    if stop_signal == "SIGINT":
        assert process.returncode == 130, stderr[-3000:]
        assert "run the same command again to resume" in stderr and "Traceback" not in stderr
        assert json.loads((tmp_path / "out" / "own" / "manifest.json").read_text())["status"] == "interrupted"
    else:
        assert process.returncode == -signal.SIGKILL
    done_before = len(json.loads(progress.read_text())["epochs"])
    assert 2 <= done_before < 5
    history_before = json.loads((run_folder / "history.json").read_text())["epochs"]
    resumed = subprocess.run(command, cwd=tmp_path, env=cli_environment(), capture_output=True, text=True, timeout=300, check=False)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming mine (seed 7) after epoch {done_before} of 5" in resumed.stderr
    history = json.loads((run_folder / "history.json").read_text())["epochs"]
    assert [record["epoch"] for record in history] == [1, 2, 3, 4, 5]
    assert history[:done_before] == history_before, "the committed epochs are kept as they were"
    assert json.loads((tmp_path / "out" / "own" / "manifest.json").read_text())["status"] == "complete"


# --------------------------------------------------------------------------- the worked example


def test_the_worked_example_loads_and_its_builder_passes_the_check():
    """experiments/configs/your-own-models.toml (docs/guide/your-own-study.md walks through it):
    it loads, expands its optimizer variants, compares every model with its reference, runs offline,
    and its builder's residual network passes the check the runner makes before training (the
    ResNet50V2 model is not built here: the example's own run trains it)."""
    from experiments.models.builders import builder_docstring, check_builders

    config = load_config(PROJECT_ROOT / "experiments" / "configs" / "your-own-models.toml")
    assert config.study.models == ["cnn", "residual-adam", "residual-sgd", "resnet50v2"]
    assert config.study.compare == {"reference": "residual-adam"}
    assert config.data.source == "synthetic" and config.study.seeds == 2
    assert config.weights_of("resnet50v2") == "none" and config.recipe("resnet50v2").backbone == "ResNet50V2"
    assert [config.training_settings(name).optimizer for name in ("residual-adam", "residual-sgd")] == ["adam", "sgd"]
    assert builder_docstring(config.recipe("residual-adam")).startswith("A small residual network of our own")
    check_builders(config, config.image_size, config.data.synthetic_classes)
