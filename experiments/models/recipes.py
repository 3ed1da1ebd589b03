"""The models a study compares, declared as data: a recipe and its parameters.

A study lists model names in `study.models`. Each name is either one of the six built-in
models of the cats-vs-dogs study (`baseline`, `augmented`, `preprocessed`, `transfer`,
`finetune`, `transfer_extended`) or declared in the config's own `[models.<name>]` table:

    [models.resnet]
    recipe = "transfer"          # small_cnn | transfer | finetune | train_on
    backbone = "resnet50v2"      # mobilenet_v2 | efficientnetv2_b0 | resnet50v2 | convnext_tiny | any
                                 # keras.applications name | your own: "encoders.py:build"
    weights = "imagenet"         # "imagenet" (Keras downloads), "none", or a local .h5 file

    [models.resnet_finetune]
    recipe = "finetune"
    continues = "resnet"         # starts from that model's final weights, same seed
    unfreeze_from_layer = -40    # the last 40 layers of the backbone (BatchNorm stays frozen)

    [models.mine]
    recipe = "keras"
    builder = "models.py:build"  # a file next to the config (or an importable module:function)
    params = { width = 64 }      # passed on: build(input_shape, num_classes, width=64)
    optimizer = "adamw"          # per-model training settings, else [training]'s

No TensorFlow here: the report builder reads recipes too. experiments/models/build.py builds them.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from typing import Any

from experiments.artifacts.run_records import is_own_backbone  # the rule the manifest's record shares
from experiments.errors import ConfigError
from experiments.models.backbones import backbone_named
from experiments.typed import type_problem

#: What each recipe makes, in words (the guide and `unknown recipe` errors quote these).
RECIPES = {
    "small_cnn": "a small convolutional network trained from scratch",
    "transfer": "a dense classifier on a frozen, ImageNet pre-trained backbone",
    "finetune": "a trained model with the top of its backbone unfrozen, trained on at a lower learning rate",
    "train_on": "a trained model trained on as it is, backbone still frozen: the budget-matched control for fine-tuning",
    "keras": "your own Keras model, from a builder function in your code: build(input_shape, num_classes, **params)",
}
#: The recipes that start from another model's final weights (same seed) and continue its epoch numbering.
CONTINUING_RECIPES = ("finetune", "train_on")
#: The recipes whose model has a pre-trained backbone (a continuing model inherits its source's).
BACKBONE_RECIPES = ("transfer", *CONTINUING_RECIPES)
#: The keys a `[models.<name>]` table may set, per recipe (besides recipe, title and description).
#: The training settings a model may set for itself; each left out takes the [training] (or
#: [data], for batch_size) value. A train_on model keeps the optimizer of the model it continues.
TRAINING_KEYS = ("optimizer", "learning_rate", "weight_decay", "label_smoothing", "batch_size", "schedule")
RECIPE_KEYS = {
    "small_cnn": ("augment", "rescale", "dropout", "epochs", *TRAINING_KEYS),
    # backbone_sha256, like builder_sha256, is recorded by load_config for a backbone of the study's own code
    "transfer": ("backbone", "weights", "augment", "pooling", "dropout", "epochs", *TRAINING_KEYS, "backbone_sha256"),
    "finetune": ("continues", "epochs", "unfreeze_from_layer", "learning_rate_factor", *TRAINING_KEYS),
    "train_on": ("continues", "epochs", "batch_size"),
    # builder_sha256 is not written by hand: load_config records the builder file's digest there
    # (so editing the file retrains the model), and the manifest keeps it.
    "keras": ("builder", "params", "outputs", "epochs", *TRAINING_KEYS, "builder_sha256"),
}
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine", "step")
OUTPUT_CHOICES = ("logits", "probabilities")
POOLING_CHOICES = ("max", "average")
#: The smallest square side the small CNN accepts: three 3x3 convolutions and two 2x2 poolings.
SMALL_CNN_MINIMUM_SIDE = 18
#: The Keras dtype policy of each training.mixed_precision setting a model can train in.
POLICIES = {"none": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
# A model's name is a folder name (models/<name>/) and appears in pages: keep it plain.
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class ModelRecipe:
    """One model of a study. Unset numbers (0 or None) take the [training] section's values."""

    name: str
    recipe: str
    title: str = ""
    description: str = ""
    augment: bool = False  # random flips both ways and rotations up to 72 degrees, training only
    rescale: bool = False  # small_cnn: pixels from [0, 255] to [-1, 1] before anything else
    backbone: str = "mobilenet_v2"  # transfer: a keras.applications name, or "FILE.py:function" (the study's own)
    weights: str = ""  # transfer: "" = training.base_weights for MobileNetV2 (else "imagenet", or "none" with it)
    backbone_sha256: str = ""  # transfer, own backbone: digest of its builder's source, recorded by load_config
    backbone_file: str = ""  # transfer, own backbone: the builder's source file, resolved (not hashed)
    pooling: str = "max"  # transfer: global max or average pooling of the backbone's features
    dropout: float = 0.2
    continues: str = ""  # finetune, train_on: the model whose final weights this one starts from
    epochs: int = 0  # 0: training.epochs (small_cnn, transfer) or training.finetune_epochs (finetune, train_on)
    unfreeze_from_layer: int | None = None  # finetune: None = training.finetune_from_layer; negative counts from the top
    learning_rate_factor: float | None = None  # finetune: None = training.finetune_learning_rate_factor
    builder: str = ""  # keras: "FILE.py:function" (relative to the config file) or "module:function"
    params: dict[str, Any] = dataclasses.field(default_factory=dict)  # keras: build(..., **params)
    outputs: str = "logits"  # keras: "logits" or "probabilities" (the model ends in a softmax)
    builder_sha256: str = ""  # keras: sha256 of the builder's source file, recorded by load_config
    builder_file: str = ""  # keras: the builder's source file, resolved (not hashed: moving the project keeps runs)
    # per-model training settings; None or "" takes the [training] / data.batch_size value
    optimizer: str = ""
    learning_rate: float | None = None
    weight_decay: float | None = None
    label_smoothing: float | None = None
    batch_size: int | None = None
    schedule: str = ""
    declared: bool = False  # True when the config's [models.<name>] table declares it (not built in)
    variant_of: str = ""  # the [models.<name>] table with lists of settings this model is one variant of
    variant_settings: tuple[str, ...] = ()  # the keys that table gave as lists: what sets this variant apart (its title says)

    def to_dict(self) -> dict[str, Any]:
        """The declaration as a `[models.<name>]` table would write it, every parameter of its
        recipe spelled out (for the manifest, which parse_model reads back, and for the hash)."""
        values = dataclasses.asdict(self)
        keys = [key for key in ("title", "description") if values[key]] + list(RECIPE_KEYS[self.recipe])
        # unset training settings (and a named backbone's empty digest) are left out, so that a
        # model's hash is what it was before they existed
        unset = {key for key in (*TRAINING_KEYS, "backbone_sha256") if values[key] in (None, "")}
        return {"recipe": self.recipe, **{key: values[key] for key in keys if values[key] is not None and key not in unset}}

    @property
    def continues_model(self) -> str | None:
        return self.continues if self.recipe in CONTINUING_RECIPES else None


BUILT_IN = {
    "baseline": ModelRecipe(
        "baseline", "small_cnn",
        title="A small convolutional network",
        description="Three 3x3 convolutions (32, 32 and 64 filters, ReLU), the first two each followed by 2x2 "
        "max pooling, then dropout (0.2) and a dense layer: the baseline every later model has to beat."),
    "augmented": ModelRecipe(
        "augmented", "small_cnn", augment=True,
        title="The same network with data augmentation",
        description="Every training image is flipped at random left-right and upside down, and rotated by a random "
        "angle of up to 72 degrees either way (RandomRotation(0.2): 20% of a full turn), so the network "
        "rarely sees the same image twice; none of this happens at evaluation."),
    "preprocessed": ModelRecipe(
        "preprocessed", "small_cnn", augment=True, rescale=True,
        title="Augmentation plus MobileNetV2 input scaling",
        description="Pixel values are scaled from [0, 255] to [-1, 1] (MobileNetV2's preprocess_input) before "
        "augmentation, so the convolutions start from centred, small inputs."),
    "transfer": ModelRecipe(
        "transfer", "transfer", augment=True, backbone="mobilenet_v2",
        title="Transfer learning on a frozen MobileNetV2",
        description="The same scaling and augmentation feed a MobileNetV2 base whose weights stay frozen; on top, "
        "a global max pooling and dropout (no weights) feed a dense classifier, the only layer that trains."),
    "finetune": ModelRecipe(
        "finetune", "finetune", continues="transfer",
        title="Fine-tuning the top of MobileNetV2",
        description="Starting from the trained transfer model, the top layers of the MobileNetV2 base are "
        "unfrozen (their BatchNorm layers stay in inference mode) and trained further with a "
        "learning rate ten times lower, so the ImageNet features adapt to the new classes without "
        "being destroyed."),
    "transfer_extended": ModelRecipe(
        "transfer_extended", "train_on", continues="transfer",
        title="Control: transfer learning, trained as long as fine-tuning",
        description="The trained transfer model, base still frozen, trained on with the same optimizer and learning "
        "rate for as many epochs as fine-tuning gets: whatever fine-tuning gains over this control "
        "comes from unfreezing, not from training longer."),
}
BUILT_IN_NAMES = tuple(BUILT_IN)


# --------------------------------------------------------------------------- reading a config's [models]


def _typed(owner: str, key: str, value: Any, expected: type) -> Any:
    problem = type_problem(value, expected, finite=True)
    if problem:
        raise ConfigError(f"{owner}.{key} {problem}, got {value!r}")
    if expected is float:
        return float(value)
    if expected is dict:
        try:  # it is hashed and recorded in the manifest: plain JSON values only (no TOML dates)
            return json.loads(json.dumps(value, allow_nan=False))
        except (TypeError, ValueError):
            raise ConfigError(f"{owner}.{key} may hold only strings, numbers, booleans, lists and tables, got {value!r}") from None
    return value


_KEY_TYPES = {"augment": bool, "rescale": bool, "backbone": str, "weights": str, "pooling": str, "dropout": float,
              "continues": str, "epochs": int, "unfreeze_from_layer": int, "learning_rate_factor": float,
              "title": str, "description": str, "builder": str, "params": dict, "outputs": str, "builder_sha256": str,
              "backbone_sha256": str,
              "optimizer": str, "learning_rate": float, "weight_decay": float, "label_smoothing": float,
              "batch_size": int, "schedule": str}


def check_name(name: str, owner: str) -> None:
    if not isinstance(name, str) or not _NAME_PATTERN.match(name):
        raise ConfigError(
            f"{owner}: model name {name!r} must be 1 to 64 letters, digits, '_', '-' or '.', starting with a letter or digit "
            "(it names the model's folder)"
        )


def parse_model(name: str, table: Any, origin: str) -> ModelRecipe:
    """One `[models.<name>]` table as a recipe; ConfigError naming the model and key otherwise."""
    owner = f"models.{name}"
    check_name(name, f"[{owner}] in {origin}")
    if not isinstance(table, dict):
        raise ConfigError(f"[{owner}] in {origin} must be a table of keys (recipe = \"...\" and its parameters)")
    recipe = table.get("recipe")
    if recipe not in RECIPES:
        known = "; ".join(f"{key} ({text})" for key, text in RECIPES.items())
        raise ConfigError(f"{owner}.recipe in {origin} must be one of: {known}; got {recipe!r}")
    allowed = ("title", "description", *RECIPE_KEYS[recipe])
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key == "recipe":
            continue
        if key not in allowed:
            written = [name for name in allowed if not name.endswith("_sha256")]  # recorded by load_config, not written by hand
            raise ConfigError(f"{owner}.{key} in {origin} is not a parameter of the {recipe} recipe; it takes: {', '.join(written)}")
        values[key] = _typed(owner, key, value, _KEY_TYPES[key])
    if recipe in CONTINUING_RECIPES and not values.get("continues"):
        raise ConfigError(f"{owner} in {origin}: a {recipe} model needs continues = \"<the model it starts from>\"")
    if recipe == "keras":
        split_builder(values.get("builder"), f"{owner}.builder in {origin}")
    if recipe == "transfer" and is_own_backbone(values.get("backbone")):
        split_builder(values["backbone"], f"{owner}.backbone in {origin}")
        if values.get("weights"):
            raise ConfigError(f"{owner}.weights in {origin}: a backbone of your own ({values['backbone']}) has the weights its "
                              "builder gives it (load a file there with model.load_weights); leave weights out")
    return ModelRecipe(name=name, recipe=recipe, declared=True, **values)


def split_builder(builder: Any, owner: str) -> tuple[str, str]:
    """("models.py", "build") or ("package.module", "build") from a builder = "...:function"
    value; ConfigError naming `owner` otherwise. Nothing is imported."""
    where, _, function = builder.rpartition(":") if isinstance(builder, str) else ("", "", "")
    if not where or not function.isidentifier():
        raise ConfigError(f'{owner} must be "FILE.py:function" (a file relative to the config file) or '
                          f'"module:function" (an importable module), got {builder!r}')
    return where, function


def builder_is_file(where: str) -> bool:
    """Whether a builder's place is a file path rather than a dotted module name."""
    return where.endswith(".py") or "/" in where or "\\" in where


def parse_models(tables: Any, origin: str) -> dict[str, ModelRecipe]:
    """Every [models.<name>] table, a table with variants (a list for a setting) giving one model per variant."""
    if not isinstance(tables, dict):
        raise ConfigError(f"[models] in {origin} must hold one [models.<name>] table per model")
    models: dict[str, ModelRecipe] = {}
    for name, table in tables.items():
        variants = expand_variants(name, table, origin)
        for variant_name, variant_table in variants.items():
            recipe = parse_model(variant_name, variant_table, origin)
            if variant_name != name:
                recipe = dataclasses.replace(recipe, variant_of=name, variant_settings=tuple(_listed(table)))
            models[variant_name] = recipe
    return models


#: The settings a model table may give as a list, one model per value (or per combination):
#: `learning_rate = [1e-3, 3e-4]` makes models <name>-lr0.001 and <name>-lr0.0003.
VARIANT_KEYS = {"learning_rate": "lr", "weight_decay": "wd", "label_smoothing": "ls", "batch_size": "bs", "epochs": "e",
                "dropout": "drop", "optimizer": "", "schedule": "", "backbone": "", "pooling": "", "augment": "augment"}


def _listed(table: Any) -> list[str]:
    """The keys among VARIANT_KEYS that a model table gives as lists of values."""
    return [key for key in VARIANT_KEYS if isinstance(table.get(key), list)] if isinstance(table, dict) else []


def expand_variants(name: str, table: Any, origin: str) -> dict[str, Any]:
    """{name: table} for a table without lists among VARIANT_KEYS; else one table per combination
    of their values, named <name>-<short key><value>... (lr0.0003, wd0.01, sgd, cosine, ...).
    Each keeps the table's title: describe() adds what sets the variant apart."""
    listed = _listed(table)
    if not listed:
        return {name: table}
    for key in listed:
        if not table[key] or len(set(map(repr, table[key]))) != len(table[key]):
            raise ConfigError(f"models.{name}.{key} in {origin}: a list of variants needs distinct values, got {table[key]!r}")
    variants: dict[str, Any] = {name: None}
    for key in listed:
        expanded: dict[str, Any] = {}
        for base_name, base in variants.items():
            for value in table[key]:
                shown = f"{value:g}" if isinstance(value, float) else str(value).lower()
                label = "no-augment" if key == "augment" and value is False else VARIANT_KEYS[key] + ("" if key == "augment" else shown)
                expanded[f"{base_name}-{label}"] = {**(base or table), key: value}
        variants = expanded
    return variants


def variants_of(name: str, declared: dict[str, ModelRecipe]) -> list[str]:
    """The models a table with variants made of `name` (in declaration order), or [] if none."""
    return [other for other, recipe in declared.items() if recipe.variant_of == name]


# --------------------------------------------------------------------------- a study's models


def recipe_for(name: str, declared: dict[str, ModelRecipe]) -> ModelRecipe:
    """The declared recipe of `name`, else the built-in one."""
    if name in declared:
        return declared[name]
    if name in BUILT_IN:
        return BUILT_IN[name]
    raise ConfigError(
        f"study.models: unknown model {name!r}; declare it in a [models.{name}] table "
        f"(recipes: {', '.join(RECIPES)}) or use a built-in one: {', '.join(BUILT_IN_NAMES)}"
    )


def chain_root(name: str, declared: dict[str, ModelRecipe]) -> ModelRecipe:
    """The model a chain of continuing models starts from (its backbone is theirs)."""
    recipe = recipe_for(name, declared)
    seen = {name}
    while recipe.continues_model is not None:
        if recipe.continues_model in seen:
            raise ConfigError(f"models.{name}.continues forms a loop: {' -> '.join([*seen, recipe.continues_model])}")
        seen.add(recipe.continues_model)
        recipe = recipe_for(recipe.continues_model, declared)
    return recipe


def check_study_models(models: list[str], declared: dict[str, ModelRecipe], image_size: list[int]) -> None:
    """Every listed model is known, listed once, continues a model listed before it that has a
    backbone, and accepts the images' size."""
    if not models:
        raise ConfigError("study.models must name at least one model")
    if len(set(models)) != len(models):
        raise ConfigError(f"study.models lists a model twice: {models}")
    for position, name in enumerate(models):
        recipe = recipe_for(name, declared)
        if recipe.recipe == "transfer":
            backbone_named(recipe.backbone, f"models.{name}.backbone")
            if recipe.pooling not in POOLING_CHOICES:
                raise ConfigError(f"models.{name}.pooling must be one of {', '.join(POOLING_CHOICES)}, got {recipe.pooling!r}")
        if not 0.0 <= recipe.dropout < 1.0:
            raise ConfigError(f"models.{name}.dropout must be at least 0 and below 1, got {recipe.dropout}")
        if recipe.epochs < 0:
            raise ConfigError(f"models.{name}.epochs must be a positive integer (0: the [training] value), got {recipe.epochs}")
        if recipe.learning_rate_factor is not None and not 0.0 < recipe.learning_rate_factor <= 1.0:
            raise ConfigError(f"models.{name}.learning_rate_factor must be in (0, 1], got {recipe.learning_rate_factor}")
        check_training_settings(recipe, f"models.{name}")
        if recipe.recipe == "keras" and recipe.outputs not in OUTPUT_CHOICES:
            raise ConfigError(f"models.{name}.outputs must be one of {', '.join(OUTPUT_CHOICES)}, got {recipe.outputs!r}")
        source = recipe.continues_model
        if source is not None:
            if source not in models[:position]:
                raise ConfigError(f"study.models: {name} continues the {source} model, so {source} must be listed before it")
            if recipe_for(source, declared).recipe not in BACKBONE_RECIPES:
                raise ConfigError(f"models.{name}.continues: {source} is a {recipe_for(source, declared).recipe} model; "
                                  f"a {recipe.recipe} model continues a model with a pre-trained backbone (recipe transfer, finetune or train_on)")
        side = minimum_side(name, declared)
        if min(image_size) < side:
            raise ConfigError(f"data.image_size {image_size} is too small for model {name!r}, which needs at least {side}x{side}")


def check_training_settings(settings: Any, owner: str) -> None:
    """The training settings of a model (or of the [training] section): known optimizer and
    schedule, a positive learning rate and batch size, weight decay of 0 or more, label
    smoothing in [0, 1). Unset ones (None, "") are not checked."""
    optimizer, schedule = getattr(settings, "optimizer", ""), getattr(settings, "schedule", "")
    if optimizer and optimizer not in OPTIMIZERS:
        raise ConfigError(f"{owner}.optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    if schedule and schedule not in SCHEDULES:
        raise ConfigError(f"{owner}.schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    learning_rate = getattr(settings, "learning_rate", None)
    if learning_rate is not None and not learning_rate > 0:
        raise ConfigError(f"{owner}.learning_rate must be a positive number, got {learning_rate}")
    weight_decay = getattr(settings, "weight_decay", None)
    if weight_decay is not None and not weight_decay >= 0:
        raise ConfigError(f"{owner}.weight_decay must be 0 or more, got {weight_decay}")
    label_smoothing = getattr(settings, "label_smoothing", None)
    if label_smoothing is not None and not 0.0 <= label_smoothing < 1.0:
        raise ConfigError(f"{owner}.label_smoothing must be at least 0 and below 1, got {label_smoothing}")
    batch_size = getattr(settings, "batch_size", None)
    if batch_size is not None and batch_size <= 0:
        raise ConfigError(f"{owner}.batch_size must be a positive integer, got {batch_size}")


def minimum_side(name: str, declared: dict[str, ModelRecipe]) -> int:
    root = chain_root(name, declared)
    if root.recipe == "keras":
        return 1  # the builder's model says what it accepts; the runner checks it before training
    if root.recipe == "small_cnn":
        return SMALL_CNN_MINIMUM_SIDE
    return backbone_named(root.backbone, f"models.{root.name}.backbone").minimum_side


def backbone_of(name: str, declared: dict[str, ModelRecipe]) -> str | None:
    """The backbone name of a model with a pre-trained backbone (a chain's root's), else None."""
    root = chain_root(name, declared)
    return root.backbone if root.recipe == "transfer" else None


#: weights_of's answer for a backbone of the study's own: the weights its builder gives it.
OWN_WEIGHTS = "builder"


def weights_of(recipe: ModelRecipe, base_weights: str) -> str:
    """A transfer model's weights: its own `weights`, else the study's --base-weights for
    MobileNetV2 (the file it names holds MobileNetV2's), else "imagenet" ("none" stays "none");
    OWN_WEIGHTS for a backbone of the study's own code (its builder loads what it wants)."""
    if is_own_backbone(recipe.backbone):
        return OWN_WEIGHTS
    if recipe.weights:
        return recipe.weights
    if recipe.backbone == "mobilenet_v2" or base_weights == "none":
        return base_weights
    return "imagenet"


def precision_for(recipe: ModelRecipe | str, setting: str, gpu_available: bool, bf16_cpu: bool) -> str:
    """The precision ("none", "bf16" or "fp16") to train a model of `recipe` (or a built-in
    model's name) in.

    "auto" picks bfloat16 only where it was measured to pay (benchmarks/README.md): the small
    CNNs on a CPU with native bfloat16 and no GPU. The MobileNetV2 models ran slower in
    bfloat16 there, and float16 on GPUs has not been measured by this project, so models with a
    pre-trained backbone stay float32 under "auto".
    """
    if isinstance(recipe, str):
        recipe = BUILT_IN[recipe]
    if setting != "auto":
        return setting
    return "bf16" if recipe.recipe == "small_cnn" and bf16_cpu and not gpu_available else "none"


def describe(recipe: ModelRecipe) -> tuple[str, str]:
    """(title, description) of a model for the report: its own, else built from its recipe; a
    variant's title adds the settings that set it apart: "Our residual network (SGD with momentum)",
    "Adam lr (learning rate 0.0003)"."""
    title, description = recipe.title, recipe.description
    if not (title and description):
        generated_title, generated = _describe_generated(recipe)
        title, description = title or generated_title, description or generated
    return _variant_title(title, recipe), description


#: How a variant's title names the settings that set it apart, as the built-in titles name things.
_VARIANT_PHRASES = {
    "learning_rate": "learning rate {:g}", "weight_decay": "weight decay {:g}", "label_smoothing": "label smoothing {:g}",
    "batch_size": "batches of {}", "epochs": "{} epochs", "dropout": "dropout {:g}", "schedule": "{} learning-rate schedule",
    "pooling": "global {} pooling",
}
_OPTIMIZER_TITLES = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD with momentum", "rmsprop": "RMSprop"}


def _variant_title(title: str, recipe: ModelRecipe) -> str:
    """`title`, with the variant's own settings in brackets (those it does not already name)."""
    phrases = []
    named_first = sorted(recipe.variant_settings, key=lambda key: key not in ("optimizer", "backbone"))  # "AdamW, learning rate 0.001"
    for key in named_first:
        value = getattr(recipe, key, None)
        if key == "optimizer":
            phrase = _OPTIMIZER_TITLES.get(value, str(value))
        elif key == "backbone":
            phrase = backbone_named(value, f"models.{recipe.name}.backbone").display_name
        elif key == "augment":
            phrase = "data augmentation" if value else "no data augmentation"
        else:
            try:
                phrase = _VARIANT_PHRASES[key].format(value)
            except (KeyError, TypeError, ValueError):
                phrase = f"{key.replace('_', ' ')} {value}"
        if phrase.lower() not in title.lower():
            phrases.append(phrase)
    return f"{title} ({', '.join(phrases)})" if phrases else title


def _humanized(name: str) -> str:
    """A model or table name as the start of a title: "adam_lr" reads "Adam lr"."""
    words = " ".join(name.replace("_", " ").replace("-", " ").split())
    return words[:1].upper() + words[1:]


def _describe_generated(recipe: ModelRecipe) -> tuple[str, str]:
    augmentation = ("every training image is flipped at random left-right and upside down and rotated by up to 72 degrees "
                    "either way (none of this at evaluation)")
    if recipe.recipe == "small_cnn":
        extras = [part for part, on in (("data augmentation", recipe.augment), ("inputs scaled to [-1, 1]", recipe.rescale)) if on]
        title = "A small convolutional network" + (f" with {' and '.join(extras)}" if extras else "")
        steps = []
        if recipe.rescale:
            steps.append("pixel values are scaled from [0, 255] to [-1, 1]")
        if recipe.augment:
            steps.append(augmentation)
        lead = (_sentence("; ".join(steps)) + " ") if steps else ""
        return title, (lead + "Three 3x3 convolutions (32, 32 and 64 filters, ReLU), the first two each followed by 2x2 max pooling, "
                       f"then dropout ({recipe.dropout:g}) and a dense layer, trained from scratch.")
    if recipe.recipe == "transfer":
        backbone = backbone_named(recipe.backbone, f"models.{recipe.name}.backbone")
        lead = f"{_sentence(augmentation)} " if recipe.augment else ""
        start = (f"the study's own backbone {backbone.display_name} (the weights its builder gives it, frozen)"
                 if backbone.own else f"a {backbone.display_name} pre-trained on ImageNet, its weights frozen,")
        return (f"Transfer learning on a frozen {backbone.display_name}",
                f"{lead}The pixels are {backbone.preprocessing}; {start} turns each image into features; a global "
                f"{recipe.pooling} pooling and dropout ({recipe.dropout:g}) feed a dense classifier, the only layer that trains.")
    if recipe.recipe == "keras":
        arguments = "".join(f", {key}={value!r}" for key, value in recipe.params.items())
        ending = "probabilities (a softmax)" if recipe.outputs == "probabilities" else "logits"
        return (_humanized(recipe.variant_of or recipe.name),
                f"A Keras model built by {recipe.builder}(input_shape, num_classes{arguments}) from the study's own code; "
                f"it takes pixel values from 0 to 255 and outputs {ending}.")
    if recipe.recipe == "finetune":
        return (f"Fine-tuning {recipe.continues}",
                f"Starting from the trained {recipe.continues} model, the top layers of its backbone are unfrozen "
                "(BatchNorm layers stay in inference mode) and trained further at a lower learning rate, so that the "
                "backbone's features adapt to these classes rather than being overwritten.")
    return (f"Control: {recipe.continues} trained on",
            f"The trained {recipe.continues} model, backbone still frozen, trained on with the same optimizer and learning rate "
            "for as many epochs as its fine-tuned sibling gets: what fine-tuning gains over this control comes from "
            "unfreezing, not from training longer.")


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + "."


# --------------------------------------------------------------------------- the comparison plan

#: study.compare: which pairs of models the report compares (besides the chosen model against the
#: runner-up and a fine-tuned model against its budget-matched control, which it always makes).
PLAN_PREVIOUS = "previous"


@dataclass(frozen=True)
class ComparisonPlan:
    """The pairs the report compares, each (first, second): first minus second.

    kind is "previous" (each model against the one before it in study order), "reference"
    (every other model against `reference`) or "pairs" (the pairs the study lists)."""

    kind: str
    pairs: tuple[tuple[str, str], ...]
    reference: str | None = None


def comparison_plan(plan: Any, models: list[str], declared: dict[str, ModelRecipe] | None = None,
                    owner: str = "study.compare") -> ComparisonPlan:
    """Read study.compare against the study's `models` (in study order): "previous", a table
    {reference = "<model>"} or a list of [first, second] pairs. A table name with variants stands
    for each of its variants (a pair naming it becomes one pair per variant). A model that is
    declared (or built in) but not in this study, as `--models` may leave one out, drops the pairs
    naming it; a name that is no model at all, a pair of a model with itself, a pair listed twice or
    any other shape is a ConfigError naming `owner`."""
    declared = declared or {}
    if plan == PLAN_PREVIOUS:
        return ComparisonPlan(PLAN_PREVIOUS, tuple(zip(models[1:], models[:-1])))
    if isinstance(plan, dict):
        if set(plan) != {"reference"} or not isinstance(plan["reference"], str):
            raise ConfigError(f"{owner} as a table must be {{ reference = \"<model>\" }} (every model against that one), "
                              f"got {plan!r}")
        reference = plan["reference"]
        names = _plan_names(reference, models, declared, owner)
        if len(names) > 1:
            raise ConfigError(f"{owner}.reference: {reference} has variants ({', '.join(names)}); name the one to compare against")
        if not names:
            return ComparisonPlan("reference", (), reference)
        return ComparisonPlan("reference", tuple((name, names[0]) for name in models if name != names[0]), names[0])
    if isinstance(plan, list) and all(isinstance(pair, list) and len(pair) == 2 and all(isinstance(name, str) for name in pair)
                                      for pair in plan):
        pairs: list[tuple[str, str]] = []
        for first_name, second_name in plan:
            if first_name == second_name:
                raise ConfigError(f"{owner}: the pair [{first_name!r}, {second_name!r}] compares a model with itself")
            for first in _plan_names(first_name, models, declared, owner):
                for second in _plan_names(second_name, models, declared, owner):
                    if first == second:
                        continue
                    if {first, second} in [set(pair) for pair in pairs]:
                        raise ConfigError(f"{owner} lists the pair of {first} and {second} twice")
                    pairs.append((first, second))
        return ComparisonPlan("pairs", tuple(pairs))
    raise ConfigError(f"{owner} must be \"previous\" (each model against the one before it), {{ reference = \"<model>\" }} "
                      f"or a list of pairs such as [[\"mine\", \"baseline\"]], got {plan!r}")


def _plan_names(name: str, models: list[str], declared: dict[str, ModelRecipe], owner: str) -> list[str]:
    """The study models `name` stands for in a plan: itself, or its variants; [] for a known model
    this study does not run."""
    variants = [variant for variant in variants_of(name, declared) if variant in models]
    if name in models:
        return [name]
    if variants:
        return variants
    if name in declared or name in BUILT_IN or variants_of(name, declared):
        return []
    raise ConfigError(f"{owner} names {name!r}, which is not a model of this study ({', '.join(models)})")
