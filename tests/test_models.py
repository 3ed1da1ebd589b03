"""Model shapes and parameter counts, and the base-weights checks."""

from __future__ import annotations

import pytest

from experiments.config import ConfigError
from experiments.models import build_model, describe_model


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


def test_transfer_model_freezes_the_base():
    model = build_model("transfer", (96, 96), class_count=2, base_weights="none")
    summary = describe_model(model)
    assert summary["trainable_params"] == 1280 * 2 + 2
    assert summary["non_trainable_params"] == 2257984
    assert summary["total_params"] == 2257984 + 2562
    layer_types = [layer["type"] for layer in summary["layers"]]
    assert layer_types[:3] == ["Rescaling", "RandomFlip", "RandomRotation"]
    assert "GlobalMaxPooling2D" in layer_types


def test_preprocessing_matches_mobilenet_preprocess_input():
    import keras
    import numpy as np

    model = build_model("preprocessed", (32, 32), class_count=2)
    images = np.random.default_rng(0).uniform(0, 255, size=(2, 32, 32, 3)).astype("float32")
    scaled = model.get_layer("mobilenet_v2_preprocess")(images)
    expected = keras.applications.mobilenet_v2.preprocess_input(images.copy())
    np.testing.assert_allclose(np.asarray(scaled), expected, atol=1e-6)


def test_a_weights_file_for_another_architecture_is_named(tmp_path):
    other = build_model("baseline", (32, 32), class_count=2)
    wrong = tmp_path / "other.weights.h5"
    other.save_weights(wrong)
    with pytest.raises(ConfigError, match="other.weights.h5"):
        build_model("transfer", (32, 32), class_count=2, base_weights=str(wrong))


def test_unreachable_imagenet_weights_stop_before_training(monkeypatch):
    """Offline, the preflight names both alternatives; no data is read, nothing trains."""
    from experiments.config import load_config
    from experiments.images import DataError
    from experiments import study
    from keras.src.applications import mobilenet_v2

    def refuse(*args, **kwargs):
        raise Exception("URL fetch failure: no network")

    monkeypatch.setattr(mobilenet_v2.file_utils, "get_file", refuse)
    config = load_config(None, {"study.models": ["transfer"], "data.source": "folder", "data.data_dir": "/nonexistent"})
    with pytest.raises(DataError) as caught:
        study.preflight(config)
    assert "--base-weights PATH" in str(caught.value) and "--base-weights none" in str(caught.value)


def test_summary_text_keeps_the_parameter_column():
    summary = describe_model(build_model("baseline", (32, 32), class_count=2))
    header = next(line for line in summary["summary_text"].splitlines() if "Layer (type)" in line)
    assert "Param #" in header
    assert "Total params: " in summary["summary_text"]
