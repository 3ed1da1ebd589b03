"""Model shapes and parameter counts, and the base-weights checks."""

from __future__ import annotations

import pytest

from experiments.config import ConfigError
from experiments.models.build import build_model, describe_model


@pytest.mark.parametrize("name", ["baseline", "augmented", "preprocessed"])
def test_small_cnn_parameter_counts_at_160(name):
    model = build_model(name, (160, 160), class_count=2)
    # conv 3x3x3x32+32, conv 3x3x32x32+32, conv 3x3x32x64+64, dense 36*36*64*2+2
    assert model.count_params() == 896 + 9248 + 18496 + 165890
    assert model.output_shape == (None, 2)
    summary = describe_model(model)
    assert summary["trainable_params"] == 194530 and summary["non_trainable_params"] == 0


def test_class_count_comes_from_the_data():
    assert build_model("baseline", (32, 32), class_count=5).output_shape == (None, 5)


@pytest.mark.keras
def test_transfer_model_freezes_the_base():
    model = build_model("transfer", (96, 96), class_count=2, base_weights="none")
    summary = describe_model(model)
    assert summary["trainable_params"] == 1280 * 2 + 2
    assert summary["non_trainable_params"] == 2257984
    assert summary["total_params"] == 2257984 + 2562
    layer_types = [layer["type"] for layer in summary["layers"]]
    assert layer_types[:3] == ["Rescaling", "RandomFlip", "RandomRotation"]
    assert "GlobalMaxPooling2D" in layer_types


@pytest.mark.keras
def test_preprocessing_matches_mobilenet_preprocess_input():
    import keras
    import numpy as np

    model = build_model("preprocessed", (32, 32), class_count=2)
    images = np.random.default_rng(0).uniform(0, 255, size=(2, 32, 32, 3)).astype("float32")
    scaled = model.get_layer("mobilenet_v2_preprocess")(images)
    expected = keras.applications.mobilenet_v2.preprocess_input(images.copy())
    np.testing.assert_allclose(np.asarray(scaled), expected, atol=1e-6)


@pytest.mark.keras
def test_a_weights_file_for_another_architecture_is_named(tmp_path):
    other = build_model("baseline", (32, 32), class_count=2)
    wrong = tmp_path / "other.weights.h5"
    other.save_weights(wrong)
    with pytest.raises(ConfigError, match="other.weights.h5"):
        build_model("transfer", (32, 32), class_count=2, base_weights=str(wrong))


@pytest.mark.keras
def test_unreachable_imagenet_weights_stop_before_training(monkeypatch):
    """Offline, the preflight names both alternatives; no data is read, nothing trains."""
    from keras.src.applications import mobilenet_v2

    from experiments.config import load_config
    from experiments.errors import DataError
    from experiments.study.environment import preflight

    def refuse(*args, **kwargs):
        raise Exception("URL fetch failure: no network")

    monkeypatch.setattr(mobilenet_v2.file_utils, "get_file", refuse)
    config = load_config(None, {"study.models": ["transfer"], "data.source": "folder", "data.data_dir": "/nonexistent"})
    with pytest.raises(DataError) as caught:
        preflight(config)
    assert "--base-weights PATH" in str(caught.value) and "--base-weights none" in str(caught.value)


def test_summary_text_keeps_the_parameter_column():
    summary = describe_model(build_model("baseline", (32, 32), class_count=2))
    header = next(line for line in summary["summary_text"].splitlines() if "Layer (type)" in line)
    assert "Param #" in header
    assert "Total params: " in summary["summary_text"]


@pytest.mark.parametrize(
    ("model_name", "setting", "gpu", "bf16_cpu", "expected"),
    [
        ("baseline", "auto", False, True, "bf16"),  # measured ~2x faster on AVX-512 BF16 CPUs
        ("preprocessed", "auto", False, True, "bf16"),
        ("transfer", "auto", False, True, "none"),  # measured slower in bfloat16
        ("finetune", "auto", False, True, "none"),
        ("baseline", "auto", False, False, "none"),  # no native bfloat16: emulated, slow
        ("baseline", "auto", True, True, "none"),  # GPUs: float16 not measured by us, stay float32
        ("transfer", "bf16", False, False, "bf16"),  # an explicit setting is obeyed
        ("baseline", "none", False, True, "none"),
    ],
)
def test_auto_precision_only_where_it_was_measured_to_pay(model_name, setting, gpu, bf16_cpu, expected):
    from experiments.models.recipes import precision_for

    assert precision_for(model_name, setting, gpu, bf16_cpu) == expected


def _trained_finetune_model(tmp_path):
    import numpy as np

    from experiments.models.build import compile_model, make_finetune_model

    transfer = build_model("transfer", (32, 32), class_count=2, base_weights="none", seed=1)
    model = compile_model(make_finetune_model(transfer, from_layer=100), 1e-3)
    images = np.random.default_rng(0).uniform(0, 255, size=(8, 32, 32, 3)).astype("float32")
    return model, images, np.array([0, 1] * 4)


@pytest.mark.training
def test_finetune_unfreezes_the_top_but_keeps_batchnorm_statistics(tmp_path):
    import keras
    import numpy as np

    from experiments.models.build import backbone_of

    model, images, labels = _trained_finetune_model(tmp_path)
    base = backbone_of(model)
    assert not any(layer.trainable_weights for layer in base.layers[:100])
    batch_norms = [layer for layer in base.layers[100:] if isinstance(layer, keras.layers.BatchNormalization)]
    assert batch_norms and not any(layer.trainable for layer in batch_norms)
    assert all(layer.trainable for layer in base.layers[100:] if layer not in batch_norms)
    statistics_before = [np.array(layer.moving_mean) for layer in batch_norms]
    kernel_before = np.array(base.layers[-3].weights[0]) if base.layers[-3].weights else None
    model.fit(images, labels, epochs=1, batch_size=4, verbose=0)
    assert all(np.array_equal(before, np.array(layer.moving_mean)) for before, layer in zip(statistics_before, batch_norms)), \
        "BatchNorm moving statistics changed: the base must run in inference mode"
    if kernel_before is not None:
        assert not np.array_equal(kernel_before, np.array(base.layers[-3].weights[0])), "the unfrozen top did not train"


@pytest.mark.keras
def test_finetune_model_keeps_its_frozen_layers_through_save_and_load(tmp_path):
    import keras

    model, _, _ = _trained_finetune_model(tmp_path)
    model.save(tmp_path / "finetune.keras")
    loaded = keras.models.load_model(tmp_path / "finetune.keras")
    assert loaded.name == "finetune"
    assert describe_model(loaded)["trainable_params"] == describe_model(model)["trainable_params"]


@pytest.mark.keras
def test_finetune_from_layer_beyond_the_base_is_named():
    from experiments.models.build import make_finetune_model

    transfer = build_model("transfer", (32, 32), class_count=2, base_weights="none")
    with pytest.raises(ConfigError, match="finetune_from_layer"):
        make_finetune_model(transfer, from_layer=500)


@pytest.mark.training
def test_frozen_transfer_model_keeps_batchnorm_statistics():
    import keras
    import numpy as np

    from experiments.models.build import backbone_of, compile_model

    model = compile_model(build_model("transfer", (32, 32), class_count=2, base_weights="none", seed=1), 1e-3)
    batch_norms = [layer for layer in backbone_of(model).layers if isinstance(layer, keras.layers.BatchNormalization)]
    before = [np.array(layer.moving_variance) for layer in batch_norms]
    images = np.random.default_rng(1).uniform(0, 255, size=(8, 32, 32, 3)).astype("float32")
    model.fit(images, np.array([0, 1] * 4), epochs=1, batch_size=4, verbose=0)
    assert all(np.array_equal(old, np.array(layer.moving_variance)) for old, layer in zip(before, batch_norms))


@pytest.mark.keras
def test_a_partly_unfrozen_backbone_records_how_many_of_its_parameters_train():
    from experiments.models.build import make_finetune_model
    from experiments.models.recipes import BUILT_IN

    transfer = build_model("transfer", (32, 32), class_count=2, base_weights="none")
    frozen = describe_model(transfer)
    assert [layer["trainable_params"] for layer in frozen["layers"] if layer["params"]] == [0, 2562]
    summary = describe_model(make_finetune_model(transfer, from_layer=100), BUILT_IN["finetune"])
    base = next(layer for layer in summary["layers"] if layer["type"] == "Functional (nested model)")
    assert base["trainable"] and 0 < base["trainable_params"] < base["params"]
    assert base["trainable_params"] + 2562 == summary["trainable_params"]


@pytest.mark.keras
def test_a_model_that_trains_on_another_is_headed_with_its_own_name_in_its_summary():
    from experiments.models.recipes import BUILT_IN

    transfer = build_model("transfer", (32, 32), class_count=2, base_weights="none")
    summary = describe_model(transfer, BUILT_IN["transfer_extended"])  # train_on: the saved transfer model itself
    assert summary["summary_text"].lstrip().startswith('Model: "transfer_extended"')
