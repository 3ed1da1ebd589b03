"""The models of the study, one builder each, by name (transfer_extended trains the saved transfer model on).

Every model is built with the functional API (Keras 3 cannot nest the write-ups'
`keras.Model(inputs=[i], outputs=[x])` list-output preprocessor inside `Sequential`), takes
float images in [0, 255], and ends in logits with one unit per class. The fifth, `finetune`,
is not built from scratch: `make_finetune_model` unfreezes the top of a trained `transfer`
model's base.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
from keras import layers

from experiments.config import CONTINUES, ConfigError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    title: str
    description: str


SPECS = {
    "baseline": ModelSpec(
        "baseline",
        "A small convolutional network",
        "Three 3x3 convolutions (32, 32 and 64 filters, ReLU), the first two each followed by 2x2 "
        "max pooling, then dropout (0.2) and a dense layer: the baseline every later model has to beat.",
    ),
    "augmented": ModelSpec(
        "augmented",
        "The same network with data augmentation",
        "Every training image is flipped at random left-right and upside down, and rotated by a random "
        "angle of up to 72 degrees either way (RandomRotation(0.2): 20% of a full turn), so the network "
        "rarely sees the same image twice; none of this happens at evaluation.",
    ),
    "preprocessed": ModelSpec(
        "preprocessed",
        "Augmentation plus MobileNetV2 input scaling",
        "Pixel values are scaled from [0, 255] to [-1, 1] (MobileNetV2's preprocess_input) before "
        "augmentation, so the convolutions start from centred, small inputs.",
    ),
    "transfer": ModelSpec(
        "transfer",
        "Transfer learning on a frozen MobileNetV2",
        "The same scaling and augmentation feed a MobileNetV2 base whose weights stay frozen; on top, "
        "a global max pooling and dropout (no weights) feed a dense classifier, the only layer that trains.",
    ),
    "finetune": ModelSpec(
        "finetune",
        "Fine-tuning the top of MobileNetV2",
        "Starting from the trained transfer model, the top layers of the MobileNetV2 base are "
        "unfrozen (their BatchNorm layers stay in inference mode) and trained further with a "
        "learning rate ten times lower, so the ImageNet features adapt to cats and dogs without "
        "being destroyed.",
    ),
    "transfer_extended": ModelSpec(
        "transfer_extended",
        "Control: transfer learning, trained as long as fine-tuning",
        "The trained transfer model, base still frozen, trained on with the same optimizer and learning "
        "rate for as many epochs as fine-tuning gets: whatever fine-tuning gains over this control "
        "comes from unfreezing, not from training longer.",
    ),
}

SMALL_CNNS = ("baseline", "augmented", "preprocessed")
POLICIES = {"none": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def _mobilenet_preprocessing() -> layers.Layer:
    # keras.applications.mobilenet_v2.preprocess_input computes x / 127.5 - 1; as a Rescaling
    # layer it is the same arithmetic and saves and loads without Lambda deserialisation.
    return layers.Rescaling(scale=1.0 / 127.5, offset=-1.0, name="mobilenet_v2_preprocess")


def _augmentation(inputs, seed: int):
    x = layers.RandomFlip("horizontal_and_vertical", seed=seed, name="random_flip")(inputs)
    return layers.RandomRotation(0.2, seed=seed + 1, name="random_rotation")(x)


def _small_cnn(inputs, class_count: int):
    x = layers.Conv2D(32, 3, activation="relu", name="conv_1")(inputs)
    x = layers.MaxPooling2D(2, name="pool_1")(x)
    x = layers.Conv2D(32, 3, activation="relu", name="conv_2")(x)
    x = layers.MaxPooling2D(2, name="pool_2")(x)
    x = layers.Conv2D(64, 3, activation="relu", name="conv_3")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    return layers.Dense(class_count, dtype="float32", name="logits")(x)


def build_mobilenet_base(image_size: tuple[int, int], base_weights: str) -> keras.Model:
    """MobileNetV2 without its top, with `base_weights` = "imagenet", "none" or a file path."""
    input_shape = (image_size[0], image_size[1], 3)
    if base_weights == "imagenet":
        return keras.applications.MobileNetV2(input_shape=input_shape, include_top=False, weights="imagenet")
    base = keras.applications.MobileNetV2(input_shape=input_shape, include_top=False, weights=None)
    if base_weights != "none":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                base.load_weights(base_weights)
                problem = next((str(item.message) for item in caught if "Skipping" in str(item.message)), None)
            except Exception as error:  # h5py and Keras raise several types for a wrong file
                problem = str(error).splitlines()[0] if str(error) else type(error).__name__
        if problem:
            # Keras loads a mismatched file partially with only a warning; that must not pass.
            raise ConfigError(
                f"training.base_weights: {base_weights} does not hold MobileNetV2 (alpha 1.0, no top) weights: {problem}"
            )
    return base


def build_model(name: str, image_size: tuple[int, int], class_count: int, base_weights: str = "none", seed: int = 0) -> keras.Model:
    """Build the study model `name` for images of `image_size` and `class_count` classes."""
    if name not in SPECS:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(SPECS)}")
    if name in CONTINUES:
        raise ValueError(f"the {name} model starts from a trained {CONTINUES[name]} model, it is not built from scratch")
    if class_count < 2:
        raise ValueError(f"a classifier needs two or more classes, got {class_count}")
    inputs = keras.Input(shape=(image_size[0], image_size[1], 3), name="image")
    if name == "baseline":
        outputs = _small_cnn(inputs, class_count)
    elif name == "augmented":
        outputs = _small_cnn(_augmentation(inputs, seed), class_count)
    elif name == "preprocessed":
        outputs = _small_cnn(_augmentation(_mobilenet_preprocessing()(inputs), seed), class_count)
    else:
        x = _augmentation(_mobilenet_preprocessing()(inputs), seed)
        base = build_mobilenet_base(image_size, base_weights)
        base.trainable = False
        x = base(x, training=False)  # keep BatchNorm statistics frozen as well
        x = layers.GlobalMaxPooling2D(name="global_max_pool")(x)
        x = layers.Dropout(0.2, name="dropout")(x)
        outputs = layers.Dense(class_count, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name=name)


def mobilenet_base_of(model: keras.Model) -> keras.Model:
    """The nested MobileNetV2 of a transfer or finetune model."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            return layer
    raise ValueError(f"model {model.name!r} has no nested MobileNetV2 base")


def make_finetune_model(transfer_model: keras.Model, from_layer: int) -> keras.Model:
    """The transfer model with its base unfrozen from layer index `from_layer` on.

    BatchNorm layers stay frozen, which in Keras 3 also keeps them in inference mode: they
    normalise with their ImageNet moving statistics and never update them from the small,
    augmented batches (that would wreck the features). The base's `training=False` call is not
    enough on its own: Keras 3 passes the outer fit's training flag through to nested layers,
    and a test checks that the statistics do not move.
    """
    base = mobilenet_base_of(transfer_model)
    if from_layer >= len(base.layers):
        raise ConfigError(
            f"training.finetune_from_layer is {from_layer}, but the MobileNetV2 base has only {len(base.layers)} layers"
        )
    base.trainable = True
    for index, layer in enumerate(base.layers):
        layer.trainable = index >= from_layer and not isinstance(layer, layers.BatchNormalization)
    return keras.Model(transfer_model.inputs, transfer_model.outputs, name="finetune")


def compile_model(model: keras.Model, learning_rate: float, jit_compile: bool = False) -> keras.Model:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    return model


def precision_for(model_name: str, setting: str, gpu_available: bool, bf16_cpu: bool) -> str:
    """The precision ("none", "bf16" or "fp16") to train `model_name` in.

    "auto" picks bfloat16 only where it was measured to pay (benchmarks/README.md): the three
    small CNNs on a CPU with native bfloat16 and no GPU. The MobileNetV2 models ran slower in
    bfloat16 there, and float16 on GPUs has not been measured by this project, so both stay
    float32 under "auto".
    """
    if setting != "auto":
        return setting
    return "bf16" if model_name in SMALL_CNNS and bf16_cpu and not gpu_available else "none"


def set_precision(mode: str) -> str:
    """Set Keras's global dtype policy from "none" (float32), "bf16" or "fp16"; return its name."""
    policy = POLICIES[mode]
    keras.mixed_precision.set_global_policy(policy)
    return policy


def describe_model(model: keras.Model, name: str | None = None) -> dict[str, Any]:
    """Architecture and parameter counts for summary.json, of study model `name` (default: the
    Keras model's own name; transfer_extended trains the transfer model object on)."""
    name = name or model.name
    lines: list[str] = []
    # Keras renders the table with rich, which cuts it at the console width (80 columns when
    # output is not a terminal, dropping the parameter column); give it room for the full table.
    saved_columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "160"
    try:
        model.summary(print_fn=lambda line, *args, **kwargs: lines.append(line), line_length=100)
    finally:
        if saved_columns is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved_columns
    trainable = sum(int(keras.ops.size(weight)) for weight in model.trainable_weights)
    frozen = sum(int(keras.ops.size(weight)) for weight in model.non_trainable_weights)
    layer_rows = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        layer_trainable = sum(int(keras.ops.size(weight)) for weight in layer.trainable_weights)
        layer_rows.append(
            {
                "name": layer.name,
                "type": type(layer).__name__ if not isinstance(layer, keras.Model) else "Functional (nested model)",
                "output_shape": str(tuple(layer.output.shape)),
                "params": int(layer.count_params()),
                "trainable": bool(layer.trainable and layer_trainable > 0),
            }
        )
    spec = SPECS[name]
    return {
        "model": name,
        "title": spec.title,
        "description": spec.description,
        "layers": layer_rows,
        "total_params": trainable + frozen,
        "trainable_params": trainable,
        "non_trainable_params": frozen,
        "summary_text": "\n".join(lines),
    }


def check_base_weights(image_size: tuple[int, int], base_weights: str, on_unavailable: Callable[[str], Exception]) -> None:
    """Build the MobileNetV2 base once before any training, so a missing download or a wrong
    weights file stops the run before hours of work rather than after."""
    try:
        build_mobilenet_base(image_size, base_weights)
    except ConfigError:
        raise
    except Exception as error:
        raise on_unavailable(str(error).strip() or type(error).__name__) from None
    finally:
        keras.backend.clear_session()


def load_trained_model(path: Path) -> keras.Model:
    return keras.models.load_model(path)
