"""The study's configuration: typed defaults, TOML loading, validation and a content hash.

A config is plain data. `load_config` reads a TOML file over the defaults below, applies
command-line overrides, and validates everything before any data is read or any model
trained, so a typo stops the run with one sentence naming the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from experiments.console import format_size
from experiments.errors import ConfigError  # noqa: F401  (imported from here by callers too)
from experiments.models.local_imports import builder_digest
from experiments.models.recipes import (
    BUILT_IN_NAMES,
    CONTINUING_RECIPES,
    OWN_WEIGHTS,
    PLAN_PREVIOUS,
    ModelRecipe,
    builder_is_file,
    chain_root,
    check_study_models,
    check_training_settings,
    comparison_plan,
    is_own_backbone,
    parse_models,
    recipe_for,
    split_builder,
    variants_of,
    weights_of,
)
from experiments.typed import type_problem

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG_PATH = CONFIG_DIR / "default.toml"

#: The built-in models (experiments/models/recipes.py); a config declares its own in [models.<name>] tables.
MODEL_NAMES = BUILT_IN_NAMES
DATA_SOURCES = ("download", "folder", "synthetic")
MIXED_PRECISION_CHOICES = ("auto", "none", "bf16", "fp16")
VERBOSE_CHOICES = ("auto", "bar", "epoch", "silent")

DATASET_URL = "https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip"


# Seeds feed numpy and TensorFlow; keep every training seed a non-negative 31-bit integer.
SEED_LIMIT = 2**31
#: data.image_size's sanity cap, pixels a side: far above what a classifier of this study uses
#: (160), and the memory a batch needs is checked before any decoding besides (experiments.data.loading)
MAX_IMAGE_SIDE = 4096
MAXIMUM_SEEDS = 1000
# Keys whose string values are used as paths or folder names.
PATH_KEYS = (("study", "run_name"), ("study", "out_dir"), ("data", "data_dir"), ("data", "cache_dir"),
             ("training", "base_weights"))
# The longest file or folder name (one path component) common file systems accept, in bytes.
NAME_MAX_BYTES = 255


@dataclass
class StudySection:
    # The front page's headline and opening question (empty: a generic one naming the models).
    title: str = ""
    question: str = ""
    run_name: str = "cats-vs-dogs"
    out_dir: str = "artifacts"
    models: list[str] = field(default_factory=lambda: list(MODEL_NAMES))
    seed: int = 1337
    seeds: int = 1
    # Which models the report compares: "previous" (each with the one before it), { reference = "<model>" }
    # (every model with that one) or [["<first>", "<second>"], ...] (experiments.models.recipes.comparison_plan).
    compare: Any = "previous"


@dataclass
class DataSection:
    source: str = "download"
    data_dir: str = ""
    url: str = DATASET_URL
    archive_sha256: str = ""
    cache_dir: str = ""
    image_size: list[int] = field(default_factory=lambda: [160, 160])
    batch_size: int = 32
    test_fraction: float = 0.2
    synthetic_train_per_class: int = 200
    synthetic_validation_per_class: int = 100
    synthetic_classes: int = 2  # 2 to 12 classes of shapes (experiments.data.loading.SYNTHETIC_CLASS_NAMES)
    workers: int = 0


@dataclass
class TrainingSection:
    epochs: int = 20
    learning_rate: float = 0.001
    base_weights: str = "imagenet"
    mixed_precision: str = "auto"
    jit_compile: bool = False
    deterministic: bool = False
    validation_feature_cache: bool = True
    finetune_epochs: int = 10
    finetune_from_layer: int = 100
    finetune_learning_rate_factor: float = 0.1
    # The optimizer every model trains with unless its [models.<name>] table sets its own:
    optimizer: str = "adam"  # adam | adamw | sgd (momentum 0.9) | rmsprop
    weight_decay: float = 0.0  # decoupled weight decay of the optimizer (Keras's weight_decay)
    label_smoothing: float = 0.0
    schedule: str = "constant"  # constant | cosine (to 0 over the model's epochs) | step (x0.1 at 50% and 75%)
    verbose: str = "auto"
    # Where the numbers also go (experiments/tracking.py); none of them changes what is learned.
    tensorboard: bool = False  # event files per cell in <run>/tensorboard/<model>/seed-<seed>/
    mlflow: bool = False  # log every cell as an MLflow run, to mlflow_uri
    mlflow_uri: str = ""  # empty: $MLFLOW_TRACKING_URI, else sqlite:///<out_dir>/mlflow.db; non-empty turns MLflow on


@dataclass
class DatasetSection:
    """What the images are, in words for the report: shown on its front and method pages.

    When the command line points the run at other data (--data-dir, --data-source, a data.url)
    than the config file named, these are cleared rather than left describing the wrong data."""

    name: str = ""
    description: str = ""
    source: str = ""
    licence: str = ""


@dataclass
class StudyConfig:
    study: StudySection = field(default_factory=StudySection)
    dataset: DatasetSection = field(default_factory=DatasetSection)
    data: DataSection = field(default_factory=DataSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    #: The models the config declares in [models.<name>] tables (the built-in ones are not listed).
    models: dict[str, ModelRecipe] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        values = {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}
        values["models"] = {name: recipe.to_dict() for name, recipe in self.models.items()}
        return values

    def recipe(self, model_name: str) -> ModelRecipe:
        """The recipe of `model_name`: declared in this config, else built in."""
        return recipe_for(model_name, self.models)

    def source_of(self, model_name: str) -> str | None:
        """The model whose final weights `model_name` starts from, or None."""
        return self.recipe(model_name).continues_model

    def epoch_span(self, model_name: str) -> tuple[int, int]:
        """(first, last) epoch numbers of `model_name`, 0-based start: a continuing model goes on
        from the end of the model it continues (transfer's 20 epochs, then finetune's 21 to 30)."""
        recipe = self.recipe(model_name)
        source = recipe.continues_model
        if source is None:
            return 0, recipe.epochs or self.training.epochs
        start = self.epoch_span(source)[1]
        return start, start + (recipe.epochs or self.training.finetune_epochs)

    def training_settings(self, model_name: str) -> TrainingSettings:
        """How `model_name` trains: its own settings, else the [training] (and data.batch_size)
        values. A finetune model's learning rate is its own, else its chain's, times its factor;
        a train_on model keeps the optimizer of the model it continues (the saved one)."""
        recipe, training = self.recipe(model_name), self.training
        source = recipe
        if recipe.recipe == "train_on":  # the optimizer is the saved model's: that of the model it continues
            while source.recipe == "train_on":
                source = self.recipe(source.continues)
            if source.recipe in CONTINUING_RECIPES:
                settings = self.training_settings(source.name)
                return dataclasses.replace(settings, batch_size=recipe.batch_size or self.data.batch_size,
                                           epochs=self.epoch_span(model_name)[1] - self.epoch_span(model_name)[0])
        learning_rate = source.learning_rate
        if recipe.recipe == "finetune":
            root = chain_root(model_name, self.models)
            base = recipe.learning_rate or root.learning_rate or training.learning_rate
            factor = training.finetune_learning_rate_factor if recipe.learning_rate_factor is None else recipe.learning_rate_factor
            learning_rate = base * factor
        first, last = self.epoch_span(model_name)
        return TrainingSettings(
            optimizer=source.optimizer or training.optimizer,
            learning_rate=learning_rate if learning_rate is not None else training.learning_rate,
            weight_decay=source.weight_decay if source.weight_decay is not None else training.weight_decay,
            label_smoothing=source.label_smoothing if source.label_smoothing is not None else training.label_smoothing,
            batch_size=recipe.batch_size or self.data.batch_size,
            epochs=last - first,
            schedule=source.schedule or training.schedule,
        )

    def weights_of(self, model_name: str) -> str:
        """A transfer model's backbone weights: "imagenet", "none" or a file path."""
        return weights_of(self.recipe(model_name), self.training.base_weights)

    def unfreeze_from(self, model_name: str) -> tuple[int, str]:
        """A finetune model's first backbone layer to unfreeze (negative: from the top), and the
        config key that set it: its own unfreeze_from_layer, else training.finetune_from_layer."""
        own = self.recipe(model_name).unfreeze_from_layer
        if own is not None:
            return own, f"models.{model_name}.unfreeze_from_layer"
        return self.training.finetune_from_layer, "training.finetune_from_layer"

    @property
    def image_size(self) -> tuple[int, int]:
        return (self.data.image_size[0], self.data.image_size[1])

    @property
    def run_dir(self) -> Path:
        return Path(self.study.out_dir) / self.study.run_name

    @property
    def seeds(self) -> list[int]:
        """The training seeds: one run of every model per seed."""
        return [self.study.seed + offset for offset in range(self.study.seeds)]


@dataclass(frozen=True)
class TrainingSettings:
    """How one model trains (StudyConfig.training_settings): recorded in its summary.json."""

    optimizer: str
    learning_rate: float
    weight_decay: float
    label_smoothing: float
    batch_size: int
    epochs: int
    schedule: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS = {"study": StudySection, "dataset": DatasetSection, "data": DataSection, "training": TrainingSection}
#: The data keys that say which images are read: overriding one of them on the command line
#: clears the config file's [dataset] description (it would describe other images).
DATA_IDENTITY_KEYS = ("data.source", "data.data_dir", "data.url")

# Keys that change where results go, how they are shown or how fast they come, not what is
# computed: they are left out of the hash so that moving a run, adding a model or a seed, or
# caching validation features (same numbers, measured) does not retrain the others.
UNHASHED_KEYS = {("study", "run_name"), ("study", "out_dir"), ("study", "models"), ("study", "seeds"),
                 ("training", "verbose"), ("training", "validation_feature_cache"),
                 ("training", "tensorboard"), ("training", "mlflow"), ("training", "mlflow_uri"),
                 ("data", "workers"), ("data", "cache_dir"),
                 ("study", "title"), ("study", "question"), ("study", "compare")} | {
                 ("dataset", item.name) for item in dataclasses.fields(DatasetSection)}
# Keys added after runs were made: hashed only when set away from the value every earlier run had,
# so adding them did not make finished runs look stale.
ADDED_LATER = {("data", "synthetic_classes"): 2, ("training", "optimizer"): "adam", ("training", "weight_decay"): 0.0,
               ("training", "label_smoothing"): 0.0, ("training", "schedule"): "constant"}
# Keys only the models that continue transfer read; changing them leaves the other models' hash alone.
FINETUNE_KEYS = {("training", "finetune_epochs"), ("training", "finetune_from_layer"),
                 ("training", "finetune_learning_rate_factor")}
# Which of FINETUNE_KEYS a model of each continuing recipe reads (the control trains as many epochs, nothing else).
CONTINUATION_KEYS = {"finetune": FINETUNE_KEYS, "train_on": {("training", "finetune_epochs")}}


def config_hash(config: StudyConfig, model_name: str | None = None) -> str:
    """A sha256 over every key that changes what `model_name` learns (the seed is recorded per
    run, not hashed; a continuing model's starting point is checked apart, by its source's
    history). A model declared in a [models.<name>] table adds its declaration. Without a model
    name: every key and every declaration, the whole study's hash."""
    if model_name is None:
        read_keys = FINETUNE_KEYS
        declarations = config.to_dict()["models"]
    else:
        recipe = config.recipe(model_name)
        read_keys = CONTINUATION_KEYS.get(recipe.recipe, set())
        declarations = {model_name: recipe.to_dict()} if recipe.declared else {}
    return hashlib.sha256(json.dumps(_hashed_sections(config, read_keys, declarations), sort_keys=True).encode()).hexdigest()


def _hashed_sections(config: StudyConfig, read_keys: set[tuple[str, str]], declarations: dict[str, Any]) -> dict[str, Any]:
    ignored = UNHASHED_KEYS | (FINETUNE_KEYS - read_keys)
    relevant = {
        section: {key: value for key, value in values.items() if _hashed((section, key), value, ignored)}
        for section, values in config.to_dict().items() if section != "models"
    }
    if declarations:  # absent for the built-in models, so their hashes stay what they were
        relevant["models"] = declarations
    return relevant


def hashed_settings(config: StudyConfig) -> dict[str, Any]:
    """Every setting the whole study's hash (`config_hash(config)`) covers, by "section.key"
    (a declared model as "models.<name>"), for naming what differs between two configs."""
    sections = _hashed_sections(config, FINETUNE_KEYS, config.to_dict()["models"])
    return {f"{section}.{key}": value for section, values in sections.items() for key, value in values.items()}


def _hashed(key: tuple[str, str], value: Any, ignored: set[tuple[str, str]]) -> bool:
    if key in ignored:
        return False
    return value != ADDED_LATER[key] if key in ADDED_LATER else True


def _check_type(dotted_key: str, value: Any, expected: Any) -> Any:
    """Return `value` if it has the annotated type (ints are accepted for floats, and become floats)."""
    problem = type_problem(value, expected)
    if problem:
        raise ConfigError(f"{dotted_key} {problem}, got {value!r}")
    return float(value) if expected in (float, "float") else value


def _apply(config: StudyConfig, values: dict[str, Any], origin: str) -> None:
    """Write nested `values` ({section: {key: value}}) into `config`, checking names and types."""
    for section_name, section_values in values.items():
        if section_name == "models":
            config.models.update(parse_models(section_values, origin))
            continue
        if section_name not in SECTIONS:
            raise ConfigError(
                f"unknown section [{section_name}] in {origin}; expected one of {', '.join([*SECTIONS, 'models'])}"
            )
        if not isinstance(section_values, dict):
            raise ConfigError(f"[{section_name}] in {origin} must be a table of keys")
        section = getattr(config, section_name)
        known = {item.name: item.type for item in dataclasses.fields(section)}
        for key, value in section_values.items():
            dotted_key = f"{section_name}.{key}"
            if key not in known:
                raise ConfigError(
                    f"unknown key {dotted_key} in {origin}; known keys: {', '.join(sorted(known))}"
                )
            setattr(section, key, _check_type(dotted_key, value, known[key]))


def validate(config: StudyConfig) -> StudyConfig:
    """Check values that are well typed but unusable. Returns the config."""
    study, data, training = config.study, config.data, config.training
    _check_finite_numbers(config)
    _check_path_strings(config)
    if (not study.run_name or "/" in study.run_name or (os.altsep and os.altsep in study.run_name)
            or study.run_name in (".", "..") or not study.run_name.isprintable()):
        raise ConfigError(f"study.run_name must be a plain folder name (printable, without '/'), got {study.run_name!r}")
    _check_seeds(study)
    if data.source not in DATA_SOURCES:
        raise ConfigError(f"data.source must be one of {', '.join(DATA_SOURCES)}, got {data.source!r}")
    if data.source == "folder" and not data.data_dir:
        raise ConfigError("data.source is 'folder' but data.data_dir is empty (use --data-dir DIR)")
    if len(data.image_size) != 2 or min(data.image_size) <= 0:
        raise ConfigError(f"data.image_size must be [height, width] of positive integers, got {data.image_size}")
    if max(data.image_size) > MAX_IMAGE_SIDE:

        height, width = data.image_size
        raise ConfigError(f"data.image_size must be at most {MAX_IMAGE_SIDE} pixels a side, got {height}x{width} (one batch "
                          f"of {data.batch_size} such images alone would need {format_size(data.batch_size * height * width * 3 * 4)} "
                          "of memory as float32)")
    check_study_models(study.models, config.models, data.image_size)
    study.compare = _settled_plan(study.compare, study.models, config.models)
    if data.batch_size <= 0:
        raise ConfigError(f"data.batch_size must be a positive integer, got {data.batch_size}")
    if not 0.0 < data.test_fraction < 1.0:
        raise ConfigError(f"data.test_fraction must be between 0 and 1 (exclusive), got {data.test_fraction}")
    for key in ("synthetic_train_per_class", "synthetic_validation_per_class"):
        if getattr(data, key) <= 0:
            raise ConfigError(f"data.{key} must be a positive integer, got {getattr(data, key)}")
    if not 2 <= data.synthetic_classes <= 12:
        raise ConfigError(f"data.synthetic_classes must be 2 to 12 (classes of generated shapes), got {data.synthetic_classes}")
    if data.source == "synthetic":
        check_synthetic_test_split(data.synthetic_validation_per_class, data.test_fraction)
    if data.workers < 0:
        raise ConfigError(f"data.workers must be 0 (automatic) or a positive integer, got {data.workers}")
    if data.archive_sha256 and (
        len(data.archive_sha256) != 64 or any(c not in "0123456789abcdef" for c in data.archive_sha256.lower())
    ):
        raise ConfigError("data.archive_sha256 must be empty or a 64-character sha256 hex digest")
    if training.epochs <= 0:
        raise ConfigError(f"training.epochs must be a positive integer, got {training.epochs}")
    if not training.learning_rate > 0 or training.learning_rate != training.learning_rate:
        raise ConfigError(f"training.learning_rate must be a positive number, got {training.learning_rate}")
    if training.finetune_epochs <= 0:
        raise ConfigError(f"training.finetune_epochs must be a positive integer, got {training.finetune_epochs}")
    if training.finetune_from_layer < 0:
        raise ConfigError(
            f"training.finetune_from_layer must be 0 or more (the first base layer to unfreeze), got {training.finetune_from_layer}"
        )
    if not 0.0 < training.finetune_learning_rate_factor <= 1.0:
        raise ConfigError(
            f"training.finetune_learning_rate_factor must be in (0, 1], got {training.finetune_learning_rate_factor}"
        )
    if training.mixed_precision not in MIXED_PRECISION_CHOICES:
        raise ConfigError(
            f"training.mixed_precision must be one of {', '.join(MIXED_PRECISION_CHOICES)}, "
            f"got {training.mixed_precision!r}"
        )
    check_training_settings(training, "training")
    if training.verbose not in VERBOSE_CHOICES:
        raise ConfigError(f"training.verbose must be one of {', '.join(VERBOSE_CHOICES)}, got {training.verbose!r}")
    if not training.base_weights:
        raise ConfigError("training.base_weights must be 'imagenet', 'none' or the path of a .weights.h5 file")
    for name in study.models:
        recipe = config.recipe(name)
        weights = config.weights_of(name)
        if recipe.recipe != "transfer" or weights in ("imagenet", "none", OWN_WEIGHTS):
            continue
        key = f"models.{name}.weights" if recipe.weights else "training.base_weights"
        problem = _path_problem(weights)
        if problem is not None:
            raise ConfigError(f"{key} {problem}, so it cannot be used as a path: {weights!r}")
        weights_path = Path(weights)
        if not weights_path.is_file():
            raise ConfigError(f"{key}: no such weights file: {weights_path} (or use \"imagenet\" or \"none\")")
        if not weights_path.name.endswith(".h5"):
            raise ConfigError(f"{key}: {weights_path} is not a Keras .h5 or .weights.h5 file")
    check_output_outside_data(config)
    return config


def _settled_plan(plan: Any, models: list[str], declared: dict[str, ModelRecipe]) -> Any:
    """study.compare checked against the study's models, and written as the pairs it stands for
    (a table with variants spelled out, pairs of models this run leaves out dropped), for the manifest."""
    settled = comparison_plan(plan, models, declared)
    if settled.kind == PLAN_PREVIOUS:
        return PLAN_PREVIOUS
    if settled.kind == "reference" and settled.reference in models:
        return {"reference": settled.reference}
    return [list(pair) for pair in settled.pairs]  # a reference this run leaves out: no pairs


def _check_finite_numbers(config: StudyConfig) -> None:
    """Every float key must be a finite number (TOML allows inf and nan)."""
    for section_name in SECTIONS:
        section = getattr(config, section_name)
        for item in dataclasses.fields(section):
            value = getattr(section, item.name)
            if item.type in ("float", float) and isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{section_name}.{item.name} must be a finite number, got {value}")


def _path_problem(value: str) -> str | None:
    """Why `value` cannot be used as a path, or None."""
    if "\0" in value:
        return "contains a NUL byte"
    try:
        encoded = os.fsencode(value)
    except UnicodeError:
        return "contains characters that cannot be encoded in a file name"
    if any(len(part) > NAME_MAX_BYTES for part in encoded.split(b"/")):
        return f"has a file or folder name longer than {NAME_MAX_BYTES} bytes"
    return None


def _check_path_strings(config: StudyConfig) -> None:
    """Strings used as paths or names must be ones the file system can hold."""
    for section_name, key in PATH_KEYS:
        value = getattr(getattr(config, section_name), key)
        problem = _path_problem(value) if isinstance(value, str) else None
        if problem is not None:
            raise ConfigError(f"{section_name}.{key} {problem}, so it cannot be used as a path: {value!r}")


def _check_seeds(study: StudySection) -> None:
    """study.seed .. study.seed + study.seeds - 1 must all be valid numpy/TensorFlow seeds."""
    if study.seeds <= 0:
        raise ConfigError(f"study.seeds must be a positive integer (runs per model), got {study.seeds}")
    if study.seeds > MAXIMUM_SEEDS:
        raise ConfigError(f"study.seeds must be at most {MAXIMUM_SEEDS} (runs per model), got {study.seeds}")
    if study.seed < 0:
        raise ConfigError(f"study.seed must be 0 or more, got {study.seed}")
    if study.seed + study.seeds - 1 >= SEED_LIMIT:
        raise ConfigError(
            f"study.seed {study.seed} with study.seeds {study.seeds} uses seeds up to "
            f"{study.seed + study.seeds - 1}, but every seed must be below 2**31 ({SEED_LIMIT})"
        )


def held_out_count(count: int, test_fraction: float) -> int:
    """How many of a class's `count` validation images go to the test split (as
    experiments.data.loading.split_validation draws them: Python's round, half to even)."""
    return int(round(count * test_fraction))


def minimum_images_per_class(test_fraction: float) -> int:
    """The fewest validation images a class needs so that `test_fraction` of them leaves at
    least one test image and at least one validation image (round half to even included)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}")
    # round(n * f) >= 1 and n - round(n * f) >= 1 each hold from some n on (both sides grow with
    # n): start just below the exact estimates 1 / (2f) and 1 / (2(1 - f)), then step up to the
    # first n that passes with the very float arithmetic split_validation uses.
    fraction = Fraction(test_fraction)
    count = max(1, int(max(Fraction(1, 2) / fraction, Fraction(1, 2) / (1 - fraction))) - 2)
    if count > 2**53:  # beyond any real data set, and beyond exact float products
        return count + 2
    while not (held_out_count(count, test_fraction) >= 1 and count - held_out_count(count, test_fraction) >= 1):
        count += 1
    return count


def split_size_problem(count: int, test_fraction: float) -> str | None:
    """Why a class of `count` validation images cannot give both a test and a validation
    image at `test_fraction` (the end of a sentence), or None when it can."""
    test_count = held_out_count(count, test_fraction)
    if test_count >= 1 and count - test_count >= 1:
        return None
    noun = "image" if count == 1 else "images"
    return (
        f"has {count} {noun}; data.test_fraction {test_fraction} needs at least "
        f"{minimum_images_per_class(test_fraction)} per class to leave both a test and a validation image"
    )


def check_synthetic_test_split(validation_per_class: int, test_fraction: float) -> None:
    """ConfigError when the synthetic source's validation classes are too small to split."""
    problem = split_size_problem(validation_per_class, test_fraction)
    if problem is not None:
        raise ConfigError(
            f"data.synthetic_validation_per_class is too small: each synthetic validation class {problem}"
        )


def _resolved(path: str, expand_user: bool) -> Path:
    """`path` made absolute with symbolic links resolved (as far as it exists)."""
    candidate = Path(path)
    try:
        if expand_user:
            candidate = candidate.expanduser()
        return candidate.resolve()
    except (OSError, RuntimeError):  # no home folder, or a symlink loop: the absolute path
        return Path(os.path.abspath(candidate))


def check_output_outside_data(config: StudyConfig) -> None:
    """The run folder must not lie inside the data folder (the next run would read its figures
    as images), nor the data folder inside the run folder. Paths are compared resolved."""
    if config.data.source != "folder" or not config.data.data_dir:
        return
    data_dir = _resolved(config.data.data_dir, expand_user=True)  # as experiments.data.loading reads it
    out_dir = _resolved(config.study.out_dir or ".", expand_user=False)
    run_dir = _resolved(str(out_dir / config.study.run_name), expand_user=False)  # it may be a link
    for key, folder in (("study.out_dir", out_dir), ("the run folder (study.out_dir/study.run_name)", run_dir)):
        if folder.is_relative_to(data_dir):
            place = "is the data folder" if folder == data_dir else "is inside the data folder"
            raise ConfigError(
                f"{key} {folder} {place} data.data_dir {data_dir}, so the next run would read this "
                "run's figures as images; choose an --out outside the data folder"
            )
    if data_dir.is_relative_to(run_dir):
        raise ConfigError(
            f"data.data_dir {data_dir} is inside the run folder {run_dir} (study.out_dir/study.run_name), "
            "which the study writes into; choose an --out or --run-name that does not contain the data"
        )


def parse_config_text(text: str, origin: str = "<string>") -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{origin} is not valid TOML: {error}") from None


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """Defaults, then the TOML file at `path` (default.toml if None), then `overrides`.

    `overrides` maps dotted keys ("training.epochs") to values, as the command line gives them.
    """
    config_path = Path(path) if path is not None else DEFAULT_CONFIG_PATH
    if not config_path.is_file():
        raise ConfigError(f"config file not found: {config_path}")
    try:
        text = config_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config file {config_path}: {error}") from None
    config = StudyConfig()
    _apply(config, parse_config_text(text, str(config_path)), str(config_path))
    nested: dict[str, dict[str, Any]] = {}
    for dotted_key, value in (overrides or {}).items():
        section_name, _, key = dotted_key.partition(".")
        nested.setdefault(section_name, {})[key] = value
    data_keys_overridden = any(dotted_key in DATA_IDENTITY_KEYS and value != _dotted(config, dotted_key)
                               for dotted_key, value in (overrides or {}).items())
    if data_keys_overridden and "dataset" not in nested:
        config.dataset = DatasetSection()
    _apply(config, nested, "the command line")
    expand_study_variants(config)
    locate_builders(config, config_path.parent)
    return validate(config)


def expand_study_variants(config: StudyConfig) -> None:
    """A name in study.models whose table has variants (a list of learning rates, ...) stands for
    all of them, in order; a continuing model must name one variant, not the table."""
    expanded: list[str] = []
    for name in config.study.models:
        variants = variants_of(name, config.models) if name not in config.models else []
        expanded.extend(variants or [name])
    config.study.models = expanded
    for name, recipe in config.models.items():
        if recipe.continues_model and variants_of(recipe.continues_model, config.models):
            raise ConfigError(f"models.{name}.continues: {recipe.continues_model} has variants "
                              f"({', '.join(variants_of(recipe.continues_model, config.models))}); name the one it continues")


def locate_builders(config: StudyConfig, config_dir: Path) -> None:
    """Record where each `keras` model's builder (and each transfer model's backbone of the
    study's own code) lives and a digest of its source file, without
    importing it (the report builder loads configs too): a file path is relative to the config
    file's folder, a module is looked up on sys.path. The digest covers the file and the files of
    its folder it imports (experiments.models.local_imports) and is part of the model's hash, so
    editing either retrains the model. A file that cannot be read gets no digest here; the runner
    stops on it before any training (experiments.models.builders.check_builders)."""
    for name, recipe in list(config.models.items()):
        if recipe.recipe == "keras":
            path, digest = _locate(recipe.builder, f"models.{name}.builder", config_dir)
            config.models[name] = dataclasses.replace(recipe, builder_file=path, builder_sha256=digest)
        elif recipe.recipe == "transfer" and is_own_backbone(recipe.backbone):
            path, digest = _locate(recipe.backbone, f"models.{name}.backbone", config_dir)
            config.models[name] = dataclasses.replace(recipe, backbone_file=path, backbone_sha256=digest)


def _locate(builder: str, key: str, config_dir: Path) -> tuple[str, str]:
    """(the source file, its digest) of a "FILE.py:function" or "module:function" value; "" for
    either that cannot be found or read."""
    where, _ = split_builder(builder, key)
    path = (config_dir / where).resolve() if builder_is_file(where) else _module_file(where)
    if path is None:
        return "", ""
    try:
        return str(path), builder_digest(path, None if builder_is_file(where) else _module_root(where, path))
    except OSError:
        return str(path), ""


def _module_file(module: str) -> Path | None:
    """The source file of an importable module, found without importing it (or its packages)."""
    from importlib.machinery import PathFinder

    search: list[str] | None = None
    spec = None
    parts = module.split(".")
    for depth in range(len(parts)):
        spec = PathFinder.find_spec(".".join(parts[: depth + 1]), search)
        if spec is None:
            return None
        search = list(spec.submodule_search_locations or [])
    origin = spec.origin if spec is not None else None
    return Path(origin) if origin and origin not in ("built-in", "frozen") else None


def _module_root(module: str, path: Path) -> Path:
    """The sys.path folder an importable module's source file was found under (where its own
    absolute imports are looked up): lib for lib/package/module.py or lib/package/module/__init__.py."""
    depth = len(module.split(".")) - (0 if path.name == "__init__.py" else 1)
    return path.parents[depth]


def _dotted(config: StudyConfig, dotted_key: str) -> Any:
    section_name, _, key = dotted_key.partition(".")
    return getattr(getattr(config, section_name), key)
