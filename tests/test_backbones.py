"""The pre-trained backbones: metadata without TensorFlow, builds at small sizes, preprocessing as
keras.applications expects it, the download addresses, and the errors for a wrong file or no network."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from experiments.errors import ConfigError, UserError
from experiments.models.backbones import (
    APPLICATIONS,
    BACKBONES,
    backbone_named,
    build_backbone,
    check_backbone_weights,
    preprocessing_layer,
)
from tests.conftest import PROJECT_ROOT, SHARED

REAL_WEIGHTS = SHARED / "weights" / "mobilenet_v2_1.0_imagenet_notop.weights.h5"

# keras.applications without the top: parameters and feature channels (Keras 3.15)
EXPECTED = {
    "mobilenet_v2": (2_257_984, 1280),
    "efficientnetv2_b0": (5_919_312, 1280),
    "resnet50v2": (23_564_800, 2048),
    "convnext_tiny": (27_820_128, 768),
}


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    yield
    import keras

    keras.backend.clear_session(free_memory=False)  # its full gc.collect() took 0.45 s per test; Python's own collector frees the models


@pytest.fixture
def offline(monkeypatch):
    """keras.applications' downloads fail as they do without a network; records what was asked for."""
    from keras.src.utils import file_utils

    asked = []

    def refuse(fname=None, origin=None, *args, **kwargs):
        asked.append((fname, origin))
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -2] Name or service not known")

    monkeypatch.setattr(file_utils, "get_file", refuse)
    return asked


def test_the_metadata_imports_without_tensorflow():
    code = (
        "import sys; from experiments.models.backbones import BACKBONES; "
        "BACKBONES['resnet50v2'].weights_url((160, 160)); "
        "assert not {'keras', 'tensorflow'} & set(sys.modules), sorted(m for m in sys.modules if 'keras' in m or 'tensorflow' in m)"
    )
    subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, check=True)


def test_the_known_backbones():
    assert list(BACKBONES) == ["mobilenet_v2", "efficientnetv2_b0", "resnet50v2", "convnext_tiny"]
    assert [backbone.display_name for backbone in BACKBONES.values()] == ["MobileNetV2", "EfficientNetV2B0", "ResNet50V2", "ConvNeXtTiny"]
    for name, backbone in BACKBONES.items():
        assert backbone.name == name
        assert backbone.preprocessing and "\n" not in backbone.preprocessing


def test_an_unknown_backbone_names_its_key_and_the_known_ones():
    assert backbone_named("resnet50v2", "models.resnet.backbone") is BACKBONES["resnet50v2"]
    with pytest.raises(ConfigError) as caught:
        backbone_named("resnet18", "models.resnet.backbone")
    assert str(caught.value).startswith(
        "models.resnet.backbone: unknown backbone 'resnet18'; known: mobilenet_v2, efficientnetv2_b0, resnet50v2, convnext_tiny, "
        "a keras.applications name (Xception, VGG16, VGG19, ResNet50, "
    )
    assert str(caught.value).endswith("ConvNeXtXLarge), or your own as \"FILE.py:function\"") and "\n" not in str(caught.value)
    assert isinstance(caught.value, UserError)


@pytest.mark.keras
@pytest.mark.parametrize("name", list(BACKBONES))
def test_each_backbone_builds_at_its_minimum_side_and_a_small_non_square_size(name):
    import keras

    backbone = BACKBONES[name]
    params, channels = EXPECTED[name]
    for size in [(backbone.minimum_side, backbone.minimum_side), (64, 48)]:
        base = build_backbone(backbone, size, "none", "m")
        assert len(base.output_shape) == 4 and base.output_shape[0] is None
        assert base.output_shape[-1] == channels
        assert base.input_shape == (None, *size, 3)
        assert base.count_params() == params > 0
        # what fine-tuning has to know: BatchNorm keeps moving statistics, LayerNorm has none
        kinds = {type(layer).__name__ for layer in base._flatten_layers(include_self=False)}
        assert backbone.normalisation in kinds
        assert not ({"BatchNormalization", "LayerNormalization"} - {backbone.normalisation}) & kinds
        keras.backend.clear_session()


@pytest.mark.keras
@pytest.mark.parametrize("name", list(BACKBONES))
def test_below_the_minimum_side_keras_refuses_and_the_model_is_named(name):
    import keras

    backbone = BACKBONES[name]
    side = backbone.minimum_side - 1
    with pytest.raises(ValueError, match=f"at least {backbone.minimum_side}x{backbone.minimum_side}"):
        getattr(keras.applications, backbone.application)(input_shape=(side, side, 3), include_top=False, weights=None)
    with pytest.raises(ConfigError, match=rf"model 'small': the {backbone.display_name} backbone needs images of at least 32x32 pixels, got 64x31"):
        build_backbone(backbone, (64, side), "none", "small")
    with pytest.raises(ConfigError, match="model 'small'"):
        check_backbone_weights(backbone, (side, side), "none", "small")


def _pixels(shape=(2, 32, 32, 3)):
    return np.random.default_rng(0).uniform(0, 255, size=shape).astype("float32")


@pytest.mark.keras
@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet50v2"])
def test_the_preprocessing_layer_matches_preprocess_input(name):
    import keras

    backbone = BACKBONES[name]
    layer = preprocessing_layer(backbone)
    assert isinstance(layer, keras.layers.Rescaling) and layer.name == f"{name}_preprocess"
    images = _pixels()
    expected = getattr(keras.applications, backbone.module).preprocess_input(images.copy())
    np.testing.assert_allclose(np.asarray(layer(images)), expected, atol=1e-6)
    assert float(np.min(expected)) >= -1 and float(np.max(expected)) <= 1
    # serialisable as a plain layer (no Lambda), so a saved model loads without safe_mode=False
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    np.testing.assert_allclose(np.asarray(restored(images)), expected, atol=1e-6)


@pytest.mark.keras
@pytest.mark.parametrize("name", ["efficientnetv2_b0", "convnext_tiny"])
def test_the_backbones_that_normalise_inside_get_raw_pixels(name):
    """preprocess_input is a pass-through for these; the application's first layers normalise with
    ImageNet's mean and standard deviation, which is preprocess_input's "torch" mode."""
    import keras
    from keras.src.applications import imagenet_utils

    backbone = BACKBONES[name]
    assert preprocessing_layer(backbone) is None
    images = _pixels()
    np.testing.assert_array_equal(getattr(keras.applications, backbone.module).preprocess_input(images.copy()), images)
    base = build_backbone(backbone, (32, 32), "none", "m")
    first_trained = next(index for index, layer in enumerate(base.layers) if layer.trainable_weights)
    normalised = keras.Model(base.input, base.layers[first_trained - 1].output)(images)
    expected = imagenet_utils.preprocess_input(images.copy(), mode="torch")
    np.testing.assert_allclose(np.asarray(normalised), expected, atol=1e-4)


def test_the_weights_addresses():
    base = "https://storage.googleapis.com/tensorflow/keras-applications/"
    expected = {
        "mobilenet_v2": "mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
        "efficientnetv2_b0": "efficientnet_v2/efficientnetv2-b0_notop.h5",
        "resnet50v2": "resnet/resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "convnext_tiny": "convnext/convnext_tiny_notop.h5",
    }
    for name, path in expected.items():
        backbone = BACKBONES[name]
        for size in [(224, 224), (32, 32), (300, 200)]:
            assert backbone.weights_url(size) == base + path
            assert backbone.weights_file(size) == path.split("/")[-1]
    mobilenet = BACKBONES["mobilenet_v2"]
    assert mobilenet.weights_file((160, 160)) == "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_160_no_top.h5"
    assert mobilenet.weights_file((96, 96)).endswith("_1.0_96_no_top.h5")
    assert mobilenet.weights_file((160, 128)).endswith("_1.0_224_no_top.h5")  # not square: 224's
    assert mobilenet.weights_file((150, 150)).endswith("_1.0_224_no_top.h5")  # no file of its own


@pytest.mark.keras
@pytest.mark.filterwarnings("ignore:`input_shape` is undefined or non-square:UserWarning")
@pytest.mark.parametrize(
    "name, size",
    [("mobilenet_v2", (32, 32)), ("mobilenet_v2", (160, 160)), ("mobilenet_v2", (96, 128)),
     ("efficientnetv2_b0", (32, 32)), ("resnet50v2", (32, 32)), ("convnext_tiny", (32, 32))],
)
def test_offline_the_error_names_the_file_keras_asked_for_and_the_ways_out(offline, name, size):
    from experiments.errors import DataError

    backbone = BACKBONES[name]
    with pytest.raises(DataError) as caught:
        build_backbone(backbone, size, "imagenet", "pets")
    assert offline == [(backbone.weights_file(size), backbone.weights_url(size))]  # what Keras itself downloads
    message = str(caught.value)
    assert backbone.weights_url(size) in message and backbone.weights_file(size) in message
    assert f"ImageNet weights of {backbone.display_name} for model 'pets'" in message
    assert "Name or service not known" in message and "URL fetch failure" not in message
    assert 'weights = "PATH" in its [models.pets] table' in message and 'weights = "none"' in message
    assert ("--base-weights PATH" in message and "--base-weights none" in message) == (name == "mobilenet_v2")
    assert "\n" not in message


@pytest.mark.keras
def test_the_preflight_check_stops_offline_and_skips_random_weights(offline):
    from experiments.errors import DataError

    with pytest.raises(DataError, match="resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"):
        check_backbone_weights(BACKBONES["resnet50v2"], (32, 32), "imagenet", "resnet")
    check_backbone_weights(BACKBONES["resnet50v2"], (32, 32), "none", "resnet")
    assert len(offline) == 1


@pytest.mark.keras
def test_a_weights_file_of_another_model_is_named(tmp_path):
    import keras

    other = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3), keras.layers.BatchNormalization(), keras.layers.Flatten()])
    wrong = tmp_path / "other.weights.h5"
    other.save_weights(wrong)
    keras.backend.clear_session()
    with pytest.raises(ConfigError) as caught:
        build_backbone(BACKBONES["resnet50v2"], (32, 32), str(wrong), "resnet")
    assert str(caught.value).startswith(f"model 'resnet': {wrong} does not hold ResNet50V2 (no top) weights: ")
    with pytest.raises(ConfigError, match=r"model 'mobile': .*other\.weights\.h5 does not hold MobileNetV2"):
        check_backbone_weights(BACKBONES["mobilenet_v2"], (32, 32), str(wrong), "mobile")


@pytest.mark.keras
def test_a_file_with_part_of_the_backbone_is_refused(tmp_path):
    """Keras loads what it can from a file that lacks layers; the backbone must have all of them."""
    import keras

    whole = build_backbone(BACKBONES["mobilenet_v2"], (32, 32), "none", "m")
    part = tmp_path / "part.weights.h5"
    keras.Model(whole.input, whole.get_layer("block_3_project_BN").output).save_weights(part)
    with pytest.raises(ConfigError, match=r"model 'm': .*part\.weights\.h5 does not hold MobileNetV2"):
        build_backbone(BACKBONES["mobilenet_v2"], (32, 32), str(part), "m")


@pytest.mark.keras
def test_files_that_are_not_weights_are_named(tmp_path):
    import h5py

    junk = tmp_path / "junk.h5"
    junk.write_text("not an HDF5 file")
    with h5py.File(tmp_path / "empty.h5", "w") as handle:
        handle.attrs["layer_names"] = [b"dense"]
    for path in (junk, tmp_path / "empty.h5"):
        with pytest.raises(ConfigError, match=rf"model 'm': {path} does not hold MobileNetV2 \(no top\) weights: \S"):
            build_backbone(BACKBONES["mobilenet_v2"], (32, 32), str(path), "m")
    with pytest.raises(ConfigError, match=r"model 'm': the weights file .*missing.weights.h5 does not exist"):
        build_backbone(BACKBONES["mobilenet_v2"], (32, 32), str(tmp_path / "missing.weights.h5"), "m")


@pytest.mark.keras
def test_a_local_file_loads_at_another_input_size(tmp_path):
    """Keras 3's .weights.h5, and the legacy layer-by-layer .h5 that keras.applications downloads."""
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    backbone = BACKBONES["mobilenet_v2"]
    saved = build_backbone(backbone, (32, 32), "none", "m")
    values = [np.asarray(weight) for weight in saved.weights]
    native = tmp_path / "mine.weights.h5"
    saved.save_weights(native)
    downloaded = tmp_path / backbone.weights_file((32, 32))
    with h5py.File(downloaded, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, saved)
    keras.backend.clear_session()
    for path, size in [(native, (64, 64)), (str(downloaded), (96, 80))]:
        loaded = build_backbone(backbone, size, path, "m")
        assert len(loaded.weights) == len(values)
        for weight, value in zip(loaded.weights, values):
            np.testing.assert_array_equal(np.asarray(weight), value)
        keras.backend.clear_session()
    with pytest.raises(ConfigError, match=r"model 'effnet': .* does not hold EfficientNetV2B0 \(no top\) weights: Layer count mismatch"):
        build_backbone(BACKBONES["efficientnetv2_b0"], (32, 32), str(downloaded), "effnet")


@pytest.mark.slow
@pytest.mark.skipif(not REAL_WEIGHTS.is_file(), reason="../shared/weights is not here")
def test_the_real_mobilenet_weights_load_and_fit_no_other_backbone():
    import keras

    base = build_backbone(BACKBONES["mobilenet_v2"], (160, 160), str(REAL_WEIGHTS), "transfer")
    assert base.count_params() == EXPECTED["mobilenet_v2"][0]
    keras.backend.clear_session()
    for name in ["efficientnetv2_b0", "resnet50v2", "convnext_tiny"]:
        with pytest.raises(ConfigError) as caught:
            build_backbone(BACKBONES[name], (32, 32), str(REAL_WEIGHTS), "other")
        assert str(caught.value).startswith(f"model 'other': {REAL_WEIGHTS} does not hold {BACKBONES[name].display_name} (no top) weights: ")
        keras.backend.clear_session()


# --------------------------------------------------------------------------- any keras.applications backbone by name

#: Small enough to build on two CPU cores in seconds; the others are in the slow test below.
SMALL_APPLICATIONS = ["MobileNetV3Small", "ResNet50", "Xception"]


def test_every_named_backbone_is_a_keras_application_and_the_short_names_keep_working():
    import keras

    for name, backbone in APPLICATIONS.items():
        assert backbone_named(name, "models.m.backbone") is backbone
        assert callable(getattr(keras.applications, backbone.application)), name
        assert hasattr(getattr(keras.applications, backbone.module), "preprocess_input"), name
        assert backbone.preprocessing and backbone.default_side >= 224 and backbone.minimum_side >= 32
    for name in BACKBONES:
        assert backbone_named(name, "models.m.backbone") is BACKBONES[name]
    assert (APPLICATIONS["EfficientNetV2S"].default_side, APPLICATIONS["Xception"].minimum_side) == (384, 71)


def _small_side(backbone):
    return max(backbone.minimum_side, 32)


@pytest.mark.keras
@pytest.mark.parametrize("name", SMALL_APPLICATIONS)
def test_named_backbones_build_as_transfer_models_with_random_weights_at_a_small_size(name):
    from experiments.models.build import build_model, make_finetune_model
    from experiments.models.recipes import ModelRecipe

    side = _small_side(APPLICATIONS[name])
    model = build_model(ModelRecipe("m", "transfer", backbone=name, declared=True), (side, side), 3, "none", seed=1)
    assert model.output_shape == (None, 3)
    trainable = sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)
    assert 0 < trainable < 20_000  # only the dense head trains
    assert model.predict(_pixels((2, side, side, 3)), verbose=0).shape == (2, 3)
    finetuned = make_finetune_model(model, -5, "m_finetune")
    assert sum(int(np.prod(weight.shape)) for weight in finetuned.trainable_weights) > trainable


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(APPLICATIONS) - set(SMALL_APPLICATIONS)))
def test_every_other_named_backbone_builds_with_random_weights(name):
    backbone = APPLICATIONS[name]
    side = _small_side(backbone)
    base = build_backbone(backbone, (side, side), "none", "m")
    assert base.input_shape == (None, side, side, 3) and len(base.output_shape) == 4


@pytest.mark.keras
@pytest.mark.parametrize("name", ["ResNet50", "VGG16", "DenseNet121", "Xception", "NASNetMobile"])
def test_a_named_backbones_preprocessing_layer_matches_its_preprocess_input(name):
    import keras

    backbone = APPLICATIONS[name]
    layer = preprocessing_layer(backbone)
    images = _pixels()
    expected = getattr(keras.applications, backbone.module).preprocess_input(images.copy())
    np.testing.assert_allclose(np.asarray(layer(images)), expected, rtol=1e-5, atol=1e-3)
    # a plain layer (no Lambda; its constants in its config): a saved model loads back without safe_mode=False
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert not restored.trainable_weights
    np.testing.assert_allclose(np.asarray(restored(images)), expected, rtol=1e-5, atol=1e-3)


@pytest.mark.keras
@pytest.mark.parametrize("name", ["EfficientNetB0", "MobileNetV3Small"])
def test_named_backbones_that_normalise_inside_get_raw_pixels(name):
    assert APPLICATIONS[name].preprocessing_inside and preprocessing_layer(APPLICATIONS[name]) is None


@pytest.mark.keras
@pytest.mark.filterwarnings("ignore:`input_shape` is undefined or non-square:UserWarning")
@pytest.mark.parametrize("name", ["DenseNet121", "ResNet50", "EfficientNetB0", "MobileNetV3Small", "MobileNet"])
def test_offline_a_named_backbone_names_the_file_keras_asked_for(offline, name):
    from experiments.errors import DataError

    backbone = APPLICATIONS[name]
    with pytest.raises(DataError) as caught:
        build_backbone(backbone, (32, 32) if name != "MobileNet" else (160, 160), "imagenet", "pets")
    size = (32, 32) if name != "MobileNet" else (160, 160)
    assert offline == [(backbone.weights_file(size), backbone.weights_url(size))]  # what Keras itself downloads
    assert backbone.weights_url(size) in str(caught.value)


@pytest.mark.keras
def test_a_named_backbone_loads_local_weights(tmp_path):
    import keras

    backbone = APPLICATIONS["MobileNetV3Small"]
    saved = build_backbone(backbone, (32, 32), "none", "m")
    path = tmp_path / "small.weights.h5"
    saved.save_weights(path)
    values = [np.asarray(weight) for weight in saved.weights]
    keras.backend.clear_session()
    loaded = build_backbone(backbone, (32, 32), str(path), "m")
    assert all(np.array_equal(np.asarray(weight), value) for weight, value in zip(loaded.weights, values))
    with pytest.raises(ConfigError, match="does not hold MobileNet \\(no top\\) weights"):
        build_backbone(APPLICATIONS["MobileNet"], (32, 32), str(path), "m")


@pytest.mark.keras
def test_the_known_layer_counts_are_the_built_backbones_and_others_are_counted(monkeypatch):
    from experiments.models import backbones

    monkeypatch.setattr(backbones, "_LAYER_COUNTS", {})
    assert backbones.layer_count(BACKBONES["mobilenet_v2"]) == 154  # the guide's table, and the seeded count
    assert backbones.layer_count(APPLICATIONS["MobileNetV3Small"]) > 100


@pytest.mark.keras
def test_an_unfreeze_layer_beyond_the_backbone_stops_the_run_before_training(write_config):
    from experiments.config import load_config
    from experiments.study.environment import preflight

    path = write_config('[study]\nmodels = ["m", "m_ft"]\n[data]\nsource = "synthetic"\nimage_size = [32, 32]\n'
                        '[training]\nbase_weights = "none"\n'
                        '[models.m]\nrecipe = "transfer"\nbackbone = "ResNet50V2"\n'
                        '[models.m_ft]\nrecipe = "finetune"\ncontinues = "m"\nunfreeze_from_layer = -500\n')
    config = load_config(path)
    assert config.recipe("m").backbone == "ResNet50V2"
    with pytest.raises(ConfigError, match=r"^models.m_ft.unfreeze_from_layer is -500, but the ResNet50V2 backbone has 190 layers"):
        preflight(config)
