"""A study of one's own: models declared in the config, other backbones, many classes, and a
write-up that speaks only of what the study has."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from experiments.config import ConfigError, load_config
from experiments.models.recipes import BUILT_IN, ModelRecipe
from report_builder.formatting import breakable_name
from tests.conftest import PROJECT_ROOT, TINY_BACKBONE, cli_environment, run_cli_command

CONFIGS = PROJECT_ROOT / "experiments" / "configs"
SHAPES_CONFIG = CONFIGS / "shapes-8-classes.toml"


# --------------------------------------------------------------------------- declaring models


def test_the_example_configs_load_and_declare_their_models():
    shapes = load_config(SHAPES_CONFIG)
    assert shapes.study.models == ["cnn", "cnn_augmented", "mobilenet", "mobilenet_finetune"]
    assert shapes.recipe("mobilenet_finetune").continues_model == "mobilenet"
    assert shapes.epoch_span("mobilenet_finetune") == (6, 9)  # it goes on from mobilenet's six epochs
    backbones = load_config(CONFIGS / "compare-backbones.toml", {"data.data_dir": str(PROJECT_ROOT / "tests")})
    assert {backbones.recipe(name).backbone for name in backbones.study.models if backbones.recipe(name).recipe == "transfer"} == {
        "mobilenet_v2", "efficientnetv2_b0", "resnet50v2", "convnext_tiny"}
    assert backbones.recipe("mobilenet_longer").recipe == "train_on"


def test_the_default_study_keeps_its_built_in_models():
    config = load_config()
    assert config.models == {}
    assert [config.recipe(name) for name in config.study.models] == [BUILT_IN[name] for name in config.study.models]


@pytest.mark.parametrize(("table", "message"), [
    ('[models.m]\nrecipe = "resnet"', "models.m.recipe in"),
    ('[models.m]\nrecipe = "transfer"\nbackbone = "vgg16"', "models.m.backbone: unknown backbone 'vgg16'"),
    ('[models.m]\nrecipe = "small_cnn"\nbackbone = "resnet50v2"', "models.m.backbone in"),
    ('[models.m]\nrecipe = "finetune"', "a finetune model needs continues"),
    ('[models.m]\nrecipe = "finetune"\ncontinues = "nothing"', "m continues the nothing model"),
    ('[models.m]\nrecipe = "finetune"\ncontinues = "baseline"', "models.m.continues: baseline is a small_cnn model"),
    ('[models.m]\nrecipe = "small_cnn"\naugment = "yes"', "models.m.augment must be true or false"),
    ('[models.m]\nrecipe = "small_cnn"\ndropout = 1.5', "models.m.dropout must be at least 0 and below 1"),
    ('[models."../x"]\nrecipe = "small_cnn"', "model name '../x'"),
    ('[models.m]\nrecipe = "transfer"\nweights = "/no/such/file.h5"', "models.m.weights: no such weights file"),
])
def test_a_bad_model_entry_gets_one_sentence_naming_it(write_config, table, message):
    models = '["baseline", "m"]' if "continues" not in table or "nothing" in table else '["baseline", "transfer", "m"]'
    if "../x" in table:
        models = '["../x"]'
    path = write_config(f'[study]\nmodels = {models}\n[data]\nsource = "synthetic"\n[training]\nbase_weights = "none"\n{table}\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_model_listed_before_the_one_it_continues_is_refused(write_config):
    path = write_config('[study]\nmodels = ["m", "t"]\n[data]\nsource = "synthetic"\n[training]\nbase_weights = "none"\n'
                        '[models.t]\nrecipe = "transfer"\n[models.m]\nrecipe = "finetune"\ncontinues = "t"\n')
    with pytest.raises(ConfigError, match="m continues the t model, so t must be listed before it"):
        load_config(path)


def test_the_built_in_finetune_of_a_replaced_transfer_model_is_described_from_its_recipe():
    """[models.transfer] on another backbone, the built-in finetune and transfer_extended after it:
    their built-in words (MobileNetV2) would be wrong, so the manifest describes them from their
    recipes; a study that keeps the built-in transfer keeps the built-in words."""
    from experiments.study.records import study_record

    replaced = {"study": {"models": ["transfer", "finetune", "transfer_extended"]},
                "models": {"transfer": {"recipe": "transfer", "backbone": "ResNet50V2"}}}
    models = {model.name: model for model in study_record(replaced, ["transfer", "finetune"]).models}
    assert models["transfer"].title == "Transfer learning on a frozen ResNet50V2"
    assert models["finetune"].title == "Fine-tuning transfer" and "MobileNetV2" not in models["finetune"].description
    assert models["transfer_extended"].title == "Control: transfer trained on"
    built_in = {model.name: model for model in study_record({"study": {"models": ["transfer", "finetune"]}}, []).models}
    assert built_in["finetune"].title == BUILT_IN["finetune"].title == "Fine-tuning the top of MobileNetV2"


def test_a_declared_model_has_its_own_hash_and_the_built_in_ones_keep_theirs(write_config):
    from experiments.config import config_hash

    plain = load_config(write_config('[study]\nmodels = ["baseline"]\n[data]\nsource = "synthetic"\n', "plain.toml"))
    declared = load_config(write_config('[study]\nmodels = ["baseline", "wide"]\n[data]\nsource = "synthetic"\n'
                                        '[models.wide]\nrecipe = "small_cnn"\ndropout = 0.5\n', "declared.toml"))
    assert config_hash(plain, "baseline") == config_hash(declared, "baseline")
    changed = load_config(write_config('[study]\nmodels = ["baseline", "wide"]\n[data]\nsource = "synthetic"\n'
                                       '[models.wide]\nrecipe = "small_cnn"\ndropout = 0.4\n', "changed.toml"))
    assert config_hash(declared, "wide") != config_hash(changed, "wide")
    assert config_hash(declared, "baseline") == config_hash(changed, "baseline")


# --------------------------------------------------------------------------- building them


@pytest.mark.keras
@pytest.mark.parametrize("backbone", ["efficientnetv2_b0", "resnet50v2", "convnext_tiny", "mobilenet_v2"])
def test_each_backbone_builds_from_config(backbone):
    import keras
    import numpy as np

    from experiments.models.build import build_model, make_finetune_model

    recipe = ModelRecipe("m", "transfer", backbone=backbone, declared=True)
    model = build_model(recipe, (32, 32), 3, "none", seed=1)
    assert model.output_shape == (None, 3)
    trainable = sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)
    assert 0 < trainable < 10_000  # only the dense head trains: the backbone is frozen
    finetuned = make_finetune_model(model, -5, "m_finetune")
    assert sum(int(np.prod(weight.shape)) for weight in finetuned.trainable_weights) > trainable
    keras.backend.clear_session()


# --------------------------------------------------------------------------- a multi-class study, end to end


def _small(text: str) -> str:
    """The shapes example, shrunk to run in a test: fewer and smaller images, one seed, few epochs,
    and its transfer chain on the tests' own eight-layer backbone (tests/tiny_backbone.py) instead of
    MobileNetV2: this test is about a write-up of eight classes, not about the backbone."""
    for old, new in (("seeds = 2", "seeds = 1"), ("synthetic_train_per_class = 80", "synthetic_train_per_class = 20"),
                     ("synthetic_validation_per_class = 40", "synthetic_validation_per_class = 10"),
                     ("image_size = [64, 64]", "image_size = [32, 32]"), ("epochs = 6", "epochs = 2"), ("epochs = 3", "epochs = 1"),
                     ('backbone = "mobilenet_v2"', f'backbone = "{TINY_BACKBONE}"'),
                     ("unfreeze_from_layer = -30", "unfreeze_from_layer = -4")):
        assert old in text, old
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def shapes_site(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    config = root / "shapes.toml"
    config.write_text(_small(SHAPES_CONFIG.read_text(encoding="utf-8")), encoding="utf-8")
    result = subprocess.run(
        run_cli_command("all", "--config", str(config), "--out", str(root / "out"), "--docs", str(root / "docs"),
                        "--site-dir", str(root / "site")),
        cwd=root, env=cli_environment(), capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root


def _pages(folder) -> dict[str, str]:
    return {path.relative_to(folder).as_posix(): path.read_text(encoding="utf-8") for path in folder.rglob("*.md")}


@pytest.mark.training
def test_the_write_up_speaks_of_its_own_study(shapes_site):
    config = load_config(SHAPES_CONFIG)
    pages = _pages(shapes_site / "docs")
    assert set(pages) == {"index.md", "method.md", *(f"models/{name}.md" for name in config.study.models)}
    index = pages["index.md"]
    assert index.startswith("# Eight shapes: is a big backbone worth anything without pre-training?")
    assert "does a small network trained from scratch beat a MobileNetV2" in index
    for name in ("blobs", "stripes", "rings", "checks", "green blobs", "green stripes", "green rings", "green checks"):
        assert f"**{name}**" in index, name
    everything = "\n".join(pages.values()).replace("<wbr>", "")  # names break after "_" in tables: cnn_<wbr>augmented
    for word in ("cat", "cats", "dog", "dogs", "violet", "transfer_extended", "preprocessed", "augmented", "cats_and_dogs_filtered"):
        assert not re.search(rf"\b{word}\b", everything, re.IGNORECASE), word
    for name in config.study.models:
        assert f"**{name}**" in index


@pytest.mark.training
def test_many_classes_get_a_heatmap_and_per_class_scores(shapes_site):
    index = (shapes_site / "docs" / "index.md").read_text(encoding="utf-8")
    assert "assets/figures/confusion_test.png" in index
    assert "| True \\ predicted |" not in index  # eight classes: no table
    assert index.count(f"| {breakable_name('green rings')} |") == 4  # three split tables, then precision and recall
    assert (shapes_site / "docs" / "assets" / "figures" / "confusion_test.png").is_file()
    classes = (shapes_site / "docs" / "assets" / "data" / "test-classes.csv").read_text(encoding="utf-8").splitlines()
    assert len(classes) == 1 + 8


@pytest.mark.training
def test_the_site_is_named_after_the_study_and_lists_its_models(shapes_site):
    site = shapes_site / "site"
    html = (site / "index.html").read_text(encoding="utf-8")
    assert "<title>Eight shapes: is a big backbone worth anything without pre-training?</title>" in html
    for name in ("cnn", "cnn_augmented", "mobilenet", "mobilenet_finetune"):
        assert f'href="models/{name}/"' in html
    assert not (site / "models" / "baseline").exists()
    nav = json.loads((shapes_site / "docs" / ".report-builder-nav.json").read_text(encoding="utf-8"))
    assert nav["models"] == [f"models/{name}.md" for name in ("cnn", "cnn_augmented", "mobilenet", "mobilenet_finetune")]


def test_a_title_with_markup_cannot_reach_the_site_as_markup():
    from report_builder.render import plain_site_name

    assert plain_site_name('<script>alert(1)</script> Cats & "dogs"\n\x1b x') == "scriptalert(1)/script Cats and 'dogs' x"
    assert plain_site_name("Eight shapes: a study") == "Eight shapes: a study"
