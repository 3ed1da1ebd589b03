"""Typed records of the three files at the top of a run folder, manifest.json, dataset.json and
metrics.json, and of the parts they are made of.

The layout is documented in docs/guide/artifacts.md; the runner writes each file through its
record, and the report reads it through experiments.artifacts.loader.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from experiments.artifacts.cell_records import files_digest
from experiments.artifacts.records import OMITTED_WHEN_NONE, REQUIRED, Fields, Part, Record
from experiments.typed import is_integer


def _integers_by_name(fields: Fields, name: str) -> dict[str, int]:
    values = fields.mapping(name)
    for key, value in values.items():
        if not is_integer(value) or value < 0:
            raise fields.fail(f"{name}.{key}", "must be a count (an integer, 0 or more)")
    return {str(key): value for key, value in values.items()}


@dataclass(frozen=True)
class SkippedEntry(Part):
    """A data file the run left out, and why (manifest.skipped_files, dataset.skipped)."""

    file: str
    reason: str


@dataclass(frozen=True)
class DataSource(Part):
    """Where the images came from: kind "download", "folder" or "synthetic", and the URL,
    folder or generator."""

    kind: str
    location: str | None = None


@dataclass(frozen=True)
class BaseWeights(Part):
    """Where the study's backbone weights came from (training.base_weights): kind "imagenet",
    "none" or "file"; for a file, its path, name and sha256."""

    kind: str
    location: str | None = None
    file: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class RunEntry(Part):
    """manifest.models[<model>].runs[<seed>]: one cell as its state.json says."""

    status: str
    wall_seconds: float | None = None
    epochs_completed: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class ModelEntry(Part):
    """manifest.models[<model>]: a model's runs by seed (as text) and their totals."""

    status: str
    wall_seconds: float | None = None
    epochs_completed: int | None = None
    error: str | None = None
    precision: str | None = None
    runs: dict[str, RunEntry] = field(default_factory=dict)


@dataclass(frozen=True)
class StudyModel(Part):
    """manifest.study.models[i]: one model of the study with its recipe as the runner resolved it
    (experiments.study.records.study_record), so that the report reads what the model was
    without reading the config's [models] tables or knowing the built-in models."""

    name: str
    recipe: str  # small_cnn, transfer, finetune, train_on or keras
    title: str = ""  # the recipe's title and description: its own, else built from the recipe
    description: str = ""
    # declared by the config's [models.<name>] table (not a built-in model); each bool is in every file
    declared: bool = field(default=False, metadata=REQUIRED)
    augment: bool = field(default=False, metadata=REQUIRED)  # random flips and rotations in training
    rescale: bool = field(default=False, metadata=REQUIRED)  # small_cnn: pixels scaled to [-1, 1]
    dropout: float = 0.0
    backbone: str = ""  # transfer: the backbone's key ("mobilenet_v2", or "FILE.py:function" for the study's own); "" for other recipes
    backbone_name: str = ""  # its display name ("MobileNetV2"), as the report writes it
    preprocessing: str = ""  # its input scaling, in words
    weights: str = ""  # transfer: its own weights setting ("": the study's base weights)
    continues: str = ""  # finetune, train_on: the model whose final weights it starts from
    epochs: int = 0  # its own epochs (0: the [training] value)
    unfreeze_from_layer: int | None = None  # finetune: its own (None: training.finetune_from_layer)
    learning_rate_factor: float | None = None  # finetune: its own (None: training.finetune_learning_rate_factor)
    builder: str = ""  # keras: "FILE.py:function" or "module:function"
    training: dict[str, Any] = field(default_factory=dict)  # the training settings it sets itself

    #: The recipes that start from another model's final weights (experiments.models.recipes.CONTINUING_RECIPES).
    CONTINUING: ClassVar[tuple[str, ...]] = ("finetune", "train_on")

    @property
    def continues_model(self) -> str | None:
        """The model it continues, for a continuing recipe (None otherwise)."""
        return self.continues if self.recipe in self.CONTINUING else None

    @property
    def own_backbone(self) -> bool:
        """Whether its backbone is the study's own code ("FILE.py:function"), not a pre-trained one of keras.applications."""
        return is_own_backbone(self.backbone)


def is_own_backbone(backbone: Any) -> bool:
    """Whether a transfer model's backbone (`backbone` in a config's [models.<name>] table and in
    this record) is the study's own ("FILE.py:function" or "module:function") rather than a
    keras.applications name: the one rule, for the runner and the report."""
    return isinstance(backbone, str) and ":" in backbone


#: study.compare's kinds: each model against the one before it, every model against one, or listed pairs.
PLAN_KINDS = ("previous", "reference", "pairs")


@dataclass(frozen=True)
class ComparisonPairs(Part):
    """manifest.study.compare: the comparisons the study planned, resolved to pairs of its
    models (first, second: first minus second), in plan order."""

    kind: str  # one of PLAN_KINDS
    pairs: tuple[tuple[str, str], ...] = ()
    reference: str | None = None  # kind "reference": the model every other one is compared with

    @classmethod
    def from_fields(cls, fields: Fields) -> ComparisonPairs:
        kind = fields.text("kind")
        if kind not in PLAN_KINDS:
            raise fields.fail("kind", f"is {kind!r}, not one of {', '.join(PLAN_KINDS)}")
        pairs = fields.items("pairs")
        if not all(isinstance(pair, list) and len(pair) == 2 and all(isinstance(name, str) for name in pair) for pair in pairs):
            raise fields.fail("pairs", "must list [first, second] pairs of model names")
        return cls(kind, tuple((first, second) for first, second in pairs), fields.text("reference", optional=True))

    def to_fields(self) -> dict[str, Any]:
        return {"kind": self.kind, "pairs": [list(pair) for pair in self.pairs], "reference": self.reference}


@dataclass(frozen=True)
class StudyRecord(Part):
    """manifest.study: what the runner resolved from the study's config for the report, written
    with every manifest (experiments.study.records.study_record): the models in study order
    with their recipes, the planned comparisons, the config's settings (dotted keys, see
    flatten_config) that applied to the models that ran, and what in the config could not be
    read back (for a manifest upgraded from an older one; a config that `train` accepted has none)."""

    models: list[StudyModel]
    compare: ComparisonPairs
    settings: list[str] = field(default_factory=list, metadata=REQUIRED)
    problems: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        """The study's models, in study order."""
        return [model.name for model in self.models]


def as_dict(value: object) -> dict[str, Any]:
    """`value` if it is a JSON object (a config section read from a manifest), else an empty one."""
    return value if isinstance(value, dict) else {}


def flatten_config(config: object, prefix: str = "") -> list[tuple[str, str]]:
    """Nested config as sorted ``(dotted.key, json value)`` rows (manifest.study.settings names
    the keys that applied)."""
    if not isinstance(config, dict):
        return [(prefix or "config", json.dumps(config, sort_keys=True, ensure_ascii=False))]
    rows: list[tuple[str, str]] = []
    for key in sorted(config, key=str):
        path = f"{prefix}.{key}" if prefix else str(key)
        value = config[key]
        if isinstance(value, dict) and value:
            rows.extend(flatten_config(value, path))
        else:
            rows.append((path, json.dumps(value, sort_keys=True, ensure_ascii=False)))
    return rows


@dataclass(frozen=True)
class Execution(Part):
    """manifest.execution: how the command that wrote the manifest ran its cells (train
    --workers, --scheduler, --task, --strategy; experiments.scale)."""

    workers: int | None = None  # cells at once in this command
    scheduler: str | None = None  # None (a local pool), "local" (a Dask LocalCluster) or "remote"
    task_index: int | None = None  # a job-array task's index and count, or None
    task_count: int | None = None
    strategy: str = "none"  # "none" or "mirrored"
    host: str | None = None

    @classmethod
    def from_fields(cls, fields: Fields) -> Execution:
        values = cls.read_fields(fields)
        return cls(**{**values, "strategy": values["strategy"] or "none"})


@dataclass(frozen=True)
class Manifest(Record):
    """`manifest.json`: what ran, where and with what, and the run's status. `models` is derived
    from the cells' state.json files each time it is written (experiments.study.manifest.write_manifest)."""

    run_name: str
    config: dict[str, Any]  # the resolved config (experiments.config.StudyConfig.to_dict)
    config_hash: str
    status: str  # "running", "complete", "failed", "interrupted" (or "healing"'s carry-over of those)
    seeds: list[int]
    models: dict[str, ModelEntry] = field(default_factory=dict)
    data_fingerprint: str | None = None
    data_source: DataSource | None = None
    skipped_files: list[SkippedEntry] = field(default_factory=list)
    base_weights: BaseWeights | None = None
    versions: dict[str, str | None] = field(default_factory=dict)
    devices: list[str] = field(default_factory=list)
    hardware: dict[str, Any] = field(default_factory=dict)  # platform, processor, cpu_count, gpus, cpu_kernels
    git_commit: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    execution: Execution | None = field(default=None, metadata=OMITTED_WHEN_NONE)
    wall_seconds: float | None = field(default=None, metadata=OMITTED_WHEN_NONE)
    # None in a manifest written before it was recorded (scripts/upgrade_manifest.py)
    study: StudyRecord | None = field(default=None, metadata=OMITTED_WHEN_NONE)

    WRITE_ORDER: ClassVar[tuple[str, ...]] = (
        "run_name", "config", "config_hash", "data_fingerprint", "data_source", "skipped_files", "base_weights",
        "versions", "devices", "hardware", "git_commit", "started_at", "finished_at", "status", "seeds", "models",
        "execution", "wall_seconds", "study")

    @classmethod
    def from_fields(cls, fields: Fields) -> Manifest:
        seeds = fields.items("seeds", optional=True)
        if not all(is_integer(seed) for seed in seeds):
            raise fields.fail("seeds", "must list integers")
        return cls(**cls.read_fields(fields, seeds=list(seeds)))



@dataclass(frozen=True)
class SplitFiles(Part):
    """dataset.splits[<split>]: how many images, how many of each class, and which files."""

    count: int
    label_counts: dict[str, int]
    files: list[str] = field(default_factory=list)

    @classmethod
    def from_fields(cls, fields: Fields) -> SplitFiles:
        files = fields.texts("files", optional=True)
        return cls(fields.integer("count"), _integers_by_name(fields, "label_counts"), files)


@dataclass(frozen=True)
class MajorityBaseline(Part):
    """Always predicting the training split's most common class (ties: the first by name), and
    its accuracy on each split (None for an empty split)."""

    class_name: str
    rule: str
    accuracy: dict[str, float | None]

    @classmethod
    def from_fields(cls, fields: Fields) -> MajorityBaseline:
        accuracy = fields.numbers("accuracy")
        for split, value in accuracy.items():
            if value is not None and not 0.0 <= value <= 1.0:
                raise fields.fail(f"accuracy.{split}", f"is {value!r}, not an accuracy between 0 and 1")
        return cls(**cls.read_fields(fields, accuracy={key: None if value is None else float(value)
                                                       for key, value in accuracy.items()}))


@dataclass(frozen=True)
class Dataset(Record):
    """`dataset.json`: the classes, the splits with their files, the majority baseline and the
    files left out. File paths are relative to the data root."""

    class_names: list[str]
    image_size: list[int]  # height, width
    seed: int  # the seed of the validation/test split
    splits: dict[str, SplitFiles]  # "train", "validation", "test"
    test_fraction: float | None = None
    majority_baseline: MajorityBaseline | None = None
    skipped: list[SkippedEntry] = field(default_factory=list)
    source: DataSource | None = field(default=None, metadata=OMITTED_WHEN_NONE)
    fingerprint: str | None = field(default=None, metadata=OMITTED_WHEN_NONE)

    WRITE_ORDER: ClassVar[tuple[str, ...]] = (
        "class_names", "image_size", "seed", "source", "fingerprint", "splits", "test_fraction", "majority_baseline",
        "skipped")

    @classmethod
    def from_fields(cls, fields: Fields) -> Dataset:
        class_names = fields.texts("class_names")
        if len(class_names) < 2:
            raise fields.fail("class_names", "must list two or more class names")
        image_size = fields.items("image_size")
        if len(image_size) != 2 or not all(is_integer(side) and side > 0 for side in image_size):
            raise fields.fail("image_size", "must be [height, width] in pixels")
        return cls(**cls.read_fields(fields, class_names=class_names, image_size=list(image_size)))

    def validation_files_sha256(self) -> str | None:
        """files_digest of the validation file list, as validation_predictions.json's files_sha256
        records it (None when this file does not list the validation files)."""
        validation = self.splits.get("validation")
        return files_digest(validation.files) if validation is not None and validation.files else None


@dataclass(frozen=True)
class Selection(Part):
    """metrics.selection: the rule, and the validation scores it chose by."""

    metric: str
    rule: str
    candidates: dict[str, float | None]  # model -> mean over seeds of the last epoch's val_accuracy
    # the chosen model's seed (as text) -> its last val_accuracy
    seed_candidates: dict[str, float | None] = field(default_factory=dict)


@dataclass(frozen=True)
class TestPrediction(Part):
    """What the chosen model predicted for one test file (class names), with the probability."""

    __test__ = False  # not a pytest test class, despite the name

    file: str
    label: str
    predicted: str
    probability: float


@dataclass(frozen=True)
class TestEvaluation(Part):
    """metrics.test: the one evaluation of the chosen model and seed on the test split."""

    __test__ = False  # not a pytest test class, despite the name

    model: str
    seed: int
    loss: float | None
    accuracy: float | None
    correct: int
    total: int
    class_names: list[str]
    confusion_matrix: list[list[int]]  # [true class][predicted class]
    predictions: list[TestPrediction]

    @classmethod
    def from_fields(cls, fields: Fields) -> TestEvaluation:
        class_names = fields.texts("class_names")
        matrix = fields.items("confusion_matrix")
        if (len(matrix) != len(class_names) or not all(isinstance(row, list) and len(row) == len(class_names) for row in matrix)
                or not all(is_integer(cell) and cell >= 0 for row in matrix for cell in row)):
            raise fields.fail("confusion_matrix", f"must be {len(class_names)} rows of {len(class_names)} counts, one per class")
        correct, total = fields.integer("correct"), fields.integer("total")
        if not 0 <= correct <= total:
            raise fields.fail("correct", f"is {correct}, not between 0 and total ({total})")
        return cls(**cls.read_fields(fields, correct=correct, total=total, class_names=class_names,
                                     confusion_matrix=[list(row) for row in matrix]))


@dataclass(frozen=True)
class ModelScore(Part):
    """metrics.validation[<model>]: means over seeds of the last epoch's validation loss and accuracy."""

    loss: float | None
    accuracy: float | None


@dataclass(frozen=True)
class Metrics(Record):
    """`metrics.json`: the choice on validation and the one test evaluation of the choice."""

    config_hash: str
    data_fingerprint: str
    selection: Selection
    chosen_model: str | None
    chosen_seed: int | None
    validation: dict[str, ModelScore] = field(default_factory=dict)
    test: TestEvaluation | None = field(default=None, metadata=OMITTED_WHEN_NONE)
    # the test score is reused only for this training
    chosen_history_sha256: str | None = field(default=None, metadata=OMITTED_WHEN_NONE)

    WRITE_ORDER: ClassVar[tuple[str, ...]] = (
        "config_hash", "data_fingerprint", "selection", "chosen_model", "chosen_seed", "chosen_history_sha256", "test",
        "validation")

