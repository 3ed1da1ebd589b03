"""Keras models built from the study's recipes (experiments/models/recipes.py).

Every model is built with the functional API (Keras 3 cannot nest the write-ups'
`keras.Model(inputs=[i], outputs=[x])` list-output preprocessor inside `Sequential`), takes
float images in [0, 255], and ends in logits with one unit per class. A continuing model
(recipe finetune or train_on) is not built from scratch: it starts from the saved model it
continues, and `make_finetune_model` unfreezes the top of that model's backbone.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import keras
from keras import layers

from experiments.artifacts.cell_records import summary_text_named
from experiments.config import ConfigError
from experiments.errors import UserError, is_disk_full
from experiments.models.backbones import backbone_named, build_backbone, preprocessing_layer
from experiments.models.builders import build_own_backbone, build_user_model, builder_docstring
from experiments.models.recipes import BUILT_IN, POLICIES, ModelRecipe, describe


def _rescaling() -> layers.Layer:
    # keras.applications.mobilenet_v2.preprocess_input computes x / 127.5 - 1; as a Rescaling
    # layer it is the same arithmetic and saves and loads without Lambda deserialisation.
    return layers.Rescaling(scale=1.0 / 127.5, offset=-1.0, name="mobilenet_v2_preprocess")


def _augmentation(inputs, seed: int):
    x = layers.RandomFlip("horizontal_and_vertical", seed=seed, name="random_flip")(inputs)
    return layers.RandomRotation(0.2, seed=seed + 1, name="random_rotation")(x)


def _small_cnn(inputs, class_count: int, dropout: float):
    x = layers.Conv2D(32, 3, activation="relu", name="conv_1")(inputs)
    x = layers.MaxPooling2D(2, name="pool_1")(x)
    x = layers.Conv2D(32, 3, activation="relu", name="conv_2")(x)
    x = layers.MaxPooling2D(2, name="pool_2")(x)
    x = layers.Conv2D(64, 3, activation="relu", name="conv_3")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    return layers.Dense(class_count, dtype="float32", name="logits")(x)


def build_model(recipe: ModelRecipe | str, image_size: tuple[int, int], class_count: int, base_weights: str = "none",
                seed: int = 0) -> keras.Model:
    """Build the model of `recipe` (or of a built-in model's name) for images of `image_size`
    and `class_count` classes; `base_weights` are a transfer model's backbone weights:
    "imagenet", "none" or a file."""
    if isinstance(recipe, str):
        if recipe not in BUILT_IN:
            raise ConfigError(f"unknown model {recipe!r}; known: {', '.join(BUILT_IN)}")
        recipe = BUILT_IN[recipe]
    if recipe.continues_model is not None:
        raise ValueError(f"the {recipe.name} model starts from a trained {recipe.continues} model, it is not built from scratch")
    if class_count < 2:
        raise ValueError(f"a classifier needs two or more classes, got {class_count}")
    if recipe.recipe == "keras":

        return build_user_model(recipe, image_size, class_count)
    inputs = keras.Input(shape=(image_size[0], image_size[1], 3), name="image")
    if recipe.recipe == "small_cnn":
        x = _rescaling()(inputs) if recipe.rescale else inputs
        x = _augmentation(x, seed) if recipe.augment else x
        outputs = _small_cnn(x, class_count, recipe.dropout)
    else:
        backbone = backbone_named(recipe.backbone, f"models.{recipe.name}.backbone")
        preprocess = preprocessing_layer(backbone)
        x = preprocess(inputs) if preprocess is not None else inputs
        x = _augmentation(x, seed) if recipe.augment else x
        base = build_own_backbone(recipe, image_size) if backbone.own else build_backbone(backbone, image_size, base_weights, recipe.name)
        base.trainable = False
        x = base(x, training=False)  # keep BatchNorm statistics frozen as well
        pooling = layers.GlobalMaxPooling2D if recipe.pooling == "max" else layers.GlobalAveragePooling2D
        x = pooling(name=f"global_{recipe.pooling}_pool")(x)
        x = layers.Dropout(recipe.dropout, name="dropout")(x)
        outputs = layers.Dense(class_count, dtype="float32", name="logits")(x)
    return keras.Model(inputs, outputs, name=recipe.name)


def backbone_of(model: keras.Model) -> keras.Model:
    """The nested pre-trained backbone of a transfer model (or of one continuing it)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            return layer
    raise ValueError(f"model {model.name!r} has no nested pre-trained backbone")


def make_finetune_model(trained_model: keras.Model, from_layer: int, name: str = "finetune") -> keras.Model:
    """The trained model with its backbone unfrozen from layer index `from_layer` on (a negative
    index counts from the top: -40 unfreezes the last 40 layers).

    BatchNorm layers stay frozen, which in Keras 3 also keeps them in inference mode: they
    normalise with their ImageNet moving statistics and never update them from the small,
    augmented batches (that would wreck the features). The base's `training=False` call is not
    enough on its own: Keras 3 passes the outer fit's training flag through to nested layers,
    and a test checks that the statistics do not move.
    """
    base = backbone_of(trained_model)
    count = len(base.layers)
    first = from_layer if from_layer >= 0 else count + from_layer
    if not 0 <= first < count:
        raise ConfigError(
            f"the layer to unfreeze from is {from_layer} (training.finetune_from_layer or the model's unfreeze_from_layer), "
            f"but the {base.name} backbone has only {count} layers"
        )
    base.trainable = True
    for index, layer in enumerate(base.layers):
        layer.trainable = index >= first and not isinstance(layer, layers.BatchNormalization)
    return keras.Model(trained_model.inputs, trained_model.outputs, name=name)


@keras.saving.register_keras_serializable(package="experiments")
class SparseCrossEntropy(keras.losses.Loss):
    """Cross-entropy of integer labels, from logits or probabilities, with label smoothing
    (Keras's SparseCategoricalCrossentropy has none). Registered, so saved models load back."""

    def __init__(self, from_logits: bool = True, label_smoothing: float = 0.0, name: str = "sparse_cross_entropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.from_logits = from_logits
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        labels = keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32")
        targets = keras.ops.one_hot(labels, keras.ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(targets, y_pred, from_logits=self.from_logits,
                                                     label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits, "label_smoothing": self.label_smoothing}


def learning_rate_schedule(schedule: str, learning_rate: float, total_steps: int) -> Any:
    """The learning rate of `schedule` over `total_steps` optimizer steps: "constant" (a float),
    "cosine" (down to 0 at the last step) or "step" (x0.1 after half the steps, x0.01 after three quarters)."""
    if schedule == "constant" or total_steps <= 0:
        return learning_rate
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=total_steps)
    if schedule == "step":
        boundaries = [max(1, total_steps // 2), max(2, (3 * total_steps) // 4)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, [learning_rate, learning_rate * 0.1, learning_rate * 0.01])
    raise ConfigError(f"unknown learning-rate schedule {schedule!r}")


def make_optimizer(name: str, learning_rate: Any, weight_decay: float = 0.0) -> keras.optimizers.Optimizer:
    """adam, adamw, sgd (momentum 0.9) or rmsprop, with decoupled `weight_decay` (0: none)."""
    decay = weight_decay or None
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate, weight_decay=decay)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9, weight_decay=decay)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=learning_rate, weight_decay=decay)
    raise ConfigError(f"unknown optimizer {name!r}")


def compile_model(model: keras.Model, learning_rate: float, jit_compile: bool = False, settings: Any = None,
                  steps_per_epoch: int = 0, from_logits: bool = True) -> keras.Model:
    """Compile for integer labels. Without `settings` (experiments.config.TrainingSettings): Adam
    at `learning_rate`, as every model trained before per-model settings existed. With them: their
    optimizer, weight decay, label smoothing and schedule (over settings.epochs x `steps_per_epoch`
    steps), at `learning_rate`. `from_logits` is False for a model that outputs probabilities."""
    if settings is None:
        optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
        smoothing = 0.0
    else:
        rate = learning_rate_schedule(settings.schedule, learning_rate, settings.epochs * steps_per_epoch)
        optimizer = make_optimizer(settings.optimizer, rate, settings.weight_decay)
        smoothing = settings.label_smoothing
    if smoothing:
        loss = SparseCrossEntropy(from_logits=from_logits, label_smoothing=smoothing)
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    # Built here, not inside the first traced train step: an accuracy metric given by name and an
    # optimizer whose slots are made on its first update create their variables while that step is
    # traced, and TensorFlow then traces the whole step a second time (a second or more per model,
    # more for a large backbone). The instance is the one Keras picks for "accuracy" here (integer
    # labels against one score per class), under the same name.
    model.compile(optimizer=optimizer, loss=loss, metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
                  jit_compile=jit_compile)
    model.optimizer.build(model.trainable_variables)
    return model


def set_precision(mode: str) -> str:
    """Set Keras's global dtype policy from "none" (float32), "bf16" or "fp16"; return its name."""
    policy = POLICIES[mode]
    keras.mixed_precision.set_global_policy(policy)
    return policy


def describe_model(model: keras.Model, recipe: ModelRecipe | None = None, settings: Any = None) -> dict[str, Any]:
    """Architecture and parameter counts for summary.json, of the study's model `recipe` (default:
    the built-in model of the Keras model's name; a train_on model trains the saved model object
    it continues on, under that model's name)."""
    recipe = recipe if recipe is not None else BUILT_IN[model.name]
    name = recipe.name
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
                # a backbone unfrozen from one of its layers on trains only part of its parameters
                "trainable_params": layer_trainable if layer.trainable else 0,
            }
        )
    if recipe.recipe == "keras" and not recipe.description:

        recipe = dataclasses.replace(recipe, description=builder_docstring(recipe))
    title, description = describe(recipe)
    extra = {"training": settings.to_dict()} if settings is not None else {}
    return {
        "model": name,
        "title": title,
        "description": description,
        "layers": layer_rows,
        "total_params": trainable + frozen,
        "trainable_params": trainable,
        "non_trainable_params": frozen,
        "summary_text": summary_text_named("\n".join(lines), name),
        **extra,
    }


def keras_file_problem(path: Path) -> str | None:
    """Why `path` is not a whole .keras file (a zip archive whose every member passes its CRC), or
    None. Keras itself calls a truncated file "File not found"."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            bad_member = archive.testzip()
    except OSError as error:
        return f"it cannot be read: {error.strerror or error}"
    except (zipfile.BadZipFile, EOFError, ValueError, RuntimeError, NotImplementedError) as error:
        return f"it is truncated or damaged: {error}"
    if bad_member is not None:
        return f"it is damaged: its member {bad_member} fails its CRC check"
    return None


def load_trained_model(path: Path) -> keras.Model:
    """The saved model at `path`; UserError, one sentence naming the file and what to do, when it is
    truncated, damaged or cannot be loaded (never Keras's traceback)."""

    problem = keras_file_problem(path)
    if problem is None:
        try:
            return keras.models.load_model(path)
        except Exception as error:  # a whole zip that Keras still cannot load (another version's file, ...)
            if is_disk_full(error):
                raise
            problem = f"Keras cannot load it: {type(error).__name__}: {(str(error).splitlines() or [''])[0].split('. ')[0][:200]}"
    raise UserError(f"The saved model {path} cannot be used ({problem}); delete it (or pass --force) and run train "
                    "again, and that model is trained again.")
