"""Typed records of the three files at the top of a run folder, manifest.json, dataset.json and
metrics.json, and of the parts they are made of.

The layout is documented in docs/guide/artifacts.md; the runner writes each file through its
record, and the report reads it through experiments.artifacts.loader.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from experiments.artifacts.cell_records import files_digest
from experiments.artifacts.records import Fields, Record
from experiments.typed import is_integer


def _optional_record(fields: Fields, name: str, parse: Callable[[Fields], Any]) -> Any:
    """A nested object parsed by `parse`, or None when the field is absent or null."""
    return None if fields.data.get(name) is None else parse(fields.child(name))


def _texts_by_name(fields: Fields, name: str) -> dict[str, str | None]:
    """An object of strings (or nulls) by name, such as package versions."""
    values = fields.mapping(name, optional=True)
    for key, value in values.items():
        if value is not None and not isinstance(value, str):
            raise fields.fail(f"{name}.{key}", "must be a string or null")
    return {str(key): value for key, value in values.items()}


def _integers_by_name(fields: Fields, name: str) -> dict[str, int]:
    values = fields.mapping(name)
    for key, value in values.items():
        if not is_integer(value) or value < 0:
            raise fields.fail(f"{name}.{key}", "must be a count (an integer, 0 or more)")
    return {str(key): value for key, value in values.items()}


@dataclass(frozen=True)
class SkippedEntry:
    """A data file the run left out, and why (manifest.skipped_files, dataset.skipped)."""

    file: str
    reason: str

    @classmethod
    def from_fields(cls, fields: Fields) -> SkippedEntry:
        return cls(fields.text("file"), fields.text("reason"))

    def to_fields(self) -> dict[str, Any]:
        return {"file": self.file, "reason": self.reason}


def _skipped(fields: Fields, name: str) -> list[SkippedEntry]:
    if fields.data.get(name) is None:
        return []
    return [SkippedEntry.from_fields(item) for item in fields.children(name)]


@dataclass(frozen=True)
class DataSource:
    """Where the images came from: kind "download", "folder" or "synthetic", and the URL,
    folder or generator."""

    kind: str
    location: str | None = None

    @classmethod
    def from_fields(cls, fields: Fields) -> DataSource:
        return cls(fields.text("kind"), fields.text("location", optional=True))

    def to_fields(self) -> dict[str, Any]:
        return {"kind": self.kind, "location": self.location}


@dataclass(frozen=True)
class BaseWeights:
    """Where the study's backbone weights came from (training.base_weights): kind "imagenet",
    "none" or "file"; for a file, its path, name and sha256."""

    kind: str
    location: str | None = None
    file: str | None = None
    sha256: str | None = None

    @classmethod
    def from_fields(cls, fields: Fields) -> BaseWeights:
        return cls(fields.text("kind"), fields.text("location", optional=True), fields.text("file", optional=True),
                   fields.text("sha256", optional=True))

    def to_fields(self) -> dict[str, Any]:
        return {"kind": self.kind, "location": self.location, "file": self.file, "sha256": self.sha256}


@dataclass(frozen=True)
class RunEntry:
    """manifest.models[<model>].runs[<seed>]: one cell as its state.json says."""

    status: str
    wall_seconds: float | None = None
    epochs_completed: int | None = None
    error: str | None = None

    @classmethod
    def from_fields(cls, fields: Fields) -> RunEntry:
        return cls(fields.text("status"), fields.number("wall_seconds", optional=True),
                   fields.integer("epochs_completed", optional=True), fields.text("error", optional=True))

    def to_fields(self) -> dict[str, Any]:
        return {"status": self.status, "wall_seconds": self.wall_seconds, "epochs_completed": self.epochs_completed,
                "error": self.error}


@dataclass(frozen=True)
class ModelEntry:
    """manifest.models[<model>]: a model's runs by seed (as text) and their totals."""

    status: str
    wall_seconds: float | None = None
    epochs_completed: int | None = None
    error: str | None = None
    precision: str | None = None
    runs: dict[str, RunEntry] = field(default_factory=dict)

    @classmethod
    def from_fields(cls, fields: Fields) -> ModelEntry:
        runs = fields.child("runs", optional=True)
        return cls(fields.text("status"), fields.number("wall_seconds", optional=True),
                   fields.integer("epochs_completed", optional=True), fields.text("error", optional=True),
                   fields.text("precision", optional=True),
                   {str(seed): RunEntry.from_fields(runs.child(seed)) for seed in runs.data})

    def to_fields(self) -> dict[str, Any]:
        return {"status": self.status, "wall_seconds": self.wall_seconds, "epochs_completed": self.epochs_completed,
                "error": self.error, "precision": self.precision,
                "runs": {seed: entry.to_fields() for seed, entry in self.runs.items()}}


@dataclass(frozen=True)
class StudyModel:
    """manifest.study.models[i]: one model of the study with its recipe as the runner resolved it
    (experiments.study.records.study_record), so that the report reads what the model was
    without reading the config's [models] tables or knowing the built-in models."""

    name: str
    recipe: str  # small_cnn, transfer, finetune, train_on or keras
    title: str = ""  # the recipe's title and description: its own, else built from the recipe
    description: str = ""
    declared: bool = False  # declared by the config's [models.<name>] table (not a built-in model)
    augment: bool = False  # random flips and rotations in training
    rescale: bool = False  # small_cnn: pixels scaled to [-1, 1]
    dropout: float = 0.0
    backbone: str = ""  # transfer: the backbone's key ("mobilenet_v2"); "" for other recipes
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

    @classmethod
    def from_fields(cls, fields: Fields) -> StudyModel:
        return cls(
            name=fields.text("name"), recipe=fields.text("recipe"), title=fields.text("title", optional=True) or "",
            description=fields.text("description", optional=True) or "", declared=fields.boolean("declared"),
            augment=fields.boolean("augment"), rescale=fields.boolean("rescale"),
            dropout=fields.number("dropout", optional=True) or 0.0, backbone=fields.text("backbone", optional=True) or "",
            backbone_name=fields.text("backbone_name", optional=True) or "",
            preprocessing=fields.text("preprocessing", optional=True) or "",
            weights=fields.text("weights", optional=True) or "", continues=fields.text("continues", optional=True) or "",
            epochs=fields.integer("epochs", optional=True) or 0,
            unfreeze_from_layer=fields.integer("unfreeze_from_layer", optional=True),
            learning_rate_factor=fields.number("learning_rate_factor", optional=True),
            builder=fields.text("builder", optional=True) or "", training=fields.mapping("training", optional=True))

    def to_fields(self) -> dict[str, Any]:
        return {"name": self.name, "recipe": self.recipe, "title": self.title, "description": self.description,
                "declared": self.declared, "augment": self.augment, "rescale": self.rescale, "dropout": self.dropout,
                "backbone": self.backbone, "backbone_name": self.backbone_name, "preprocessing": self.preprocessing,
                "weights": self.weights, "continues": self.continues, "epochs": self.epochs,
                "unfreeze_from_layer": self.unfreeze_from_layer, "learning_rate_factor": self.learning_rate_factor,
                "builder": self.builder, "training": self.training}


#: study.compare's kinds: each model against the one before it, every model against one, or listed pairs.
PLAN_KINDS = ("previous", "reference", "pairs")


@dataclass(frozen=True)
class ComparisonPairs:
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
class StudyRecord:
    """manifest.study: what the runner resolved from the study's config for the report, written
    with every manifest (experiments.study.records.study_record): the models in study order
    with their recipes, the planned comparisons, the config's settings (dotted keys, see
    flatten_config) that applied to the models that ran, and what in the config could not be
    read back (for a manifest upgraded from an older one; a config that `train` accepted has none)."""

    models: list[StudyModel]
    compare: ComparisonPairs
    settings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @classmethod
    def from_fields(cls, fields: Fields) -> StudyRecord:
        return cls([StudyModel.from_fields(item) for item in fields.children("models")],
                   ComparisonPairs.from_fields(fields.child("compare")), fields.texts("settings"),
                   fields.texts("problems", optional=True))

    def to_fields(self) -> dict[str, Any]:
        return {"models": [model.to_fields() for model in self.models], "compare": self.compare.to_fields(),
                "settings": list(self.settings), "problems": list(self.problems)}

    @property
    def names(self) -> list[str]:
        """The study's models, in study order."""
        return [model.name for model in self.models]


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
class Execution:
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
        return cls(fields.integer("workers", optional=True), fields.text("scheduler", optional=True),
                   fields.integer("task_index", optional=True), fields.integer("task_count", optional=True),
                   fields.text("strategy", optional=True) or "none", fields.text("host", optional=True))

    def to_fields(self) -> dict[str, Any]:
        return {"workers": self.workers, "scheduler": self.scheduler, "task_index": self.task_index,
                "task_count": self.task_count, "strategy": self.strategy, "host": self.host}


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
    execution: Execution | None = None
    wall_seconds: float | None = None
    study: StudyRecord | None = None  # None in a manifest written before it was recorded (scripts/upgrade_manifest.py)

    @classmethod
    def from_fields(cls, fields: Fields) -> Manifest:
        seeds = fields.items("seeds", optional=True)
        if not all(is_integer(seed) for seed in seeds):
            raise fields.fail("seeds", "must list integers")
        models = fields.child("models", optional=True)
        return cls(
            run_name=fields.text("run_name"), config=fields.mapping("config"), config_hash=fields.text("config_hash"),
            status=fields.text("status"), seeds=list(seeds),
            models={str(name): ModelEntry.from_fields(models.child(name)) for name in models.data},
            data_fingerprint=fields.text("data_fingerprint", optional=True),
            data_source=_optional_record(fields, "data_source", DataSource.from_fields),
            skipped_files=_skipped(fields, "skipped_files"),
            base_weights=_optional_record(fields, "base_weights", BaseWeights.from_fields),
            versions=_texts_by_name(fields, "versions"), devices=fields.texts("devices", optional=True),
            hardware=fields.mapping("hardware", optional=True), git_commit=fields.text("git_commit", optional=True),
            started_at=fields.text("started_at", optional=True), finished_at=fields.text("finished_at", optional=True),
            execution=_optional_record(fields, "execution", Execution.from_fields),
            wall_seconds=fields.number("wall_seconds", optional=True),
            study=_optional_record(fields, "study", StudyRecord.from_fields),
        )

    def to_fields(self) -> dict[str, Any]:
        data = {
            "run_name": self.run_name, "config": self.config, "config_hash": self.config_hash,
            "data_fingerprint": self.data_fingerprint,
            "data_source": self.data_source.to_fields() if self.data_source else None,
            "skipped_files": [item.to_fields() for item in self.skipped_files],
            "base_weights": self.base_weights.to_fields() if self.base_weights else None,
            "versions": self.versions, "devices": self.devices, "hardware": self.hardware, "git_commit": self.git_commit,
            "started_at": self.started_at, "finished_at": self.finished_at, "status": self.status, "seeds": self.seeds,
            "models": {name: entry.to_fields() for name, entry in self.models.items()},
        }
        if self.execution is not None:
            data["execution"] = self.execution.to_fields()
        if self.wall_seconds is not None:
            data["wall_seconds"] = self.wall_seconds
        if self.study is not None:
            data["study"] = self.study.to_fields()
        return data


@dataclass(frozen=True)
class SplitFiles:
    """dataset.splits[<split>]: how many images, how many of each class, and which files."""

    count: int
    label_counts: dict[str, int]
    files: list[str]

    @classmethod
    def from_fields(cls, fields: Fields) -> SplitFiles:
        files = fields.texts("files", optional=True)
        return cls(fields.integer("count"), _integers_by_name(fields, "label_counts"), files)

    def to_fields(self) -> dict[str, Any]:
        return {"count": self.count, "label_counts": self.label_counts, "files": self.files}


@dataclass(frozen=True)
class MajorityBaseline:
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
        return cls(fields.text("class_name"), fields.text("rule"), {key: None if value is None else float(value)
                                                                     for key, value in accuracy.items()})

    def to_fields(self) -> dict[str, Any]:
        return {"class_name": self.class_name, "rule": self.rule, "accuracy": self.accuracy}


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
    source: DataSource | None = None
    fingerprint: str | None = None

    @classmethod
    def from_fields(cls, fields: Fields) -> Dataset:
        class_names = fields.texts("class_names")
        if len(class_names) < 2:
            raise fields.fail("class_names", "must list two or more class names")
        image_size = fields.items("image_size")
        if len(image_size) != 2 or not all(is_integer(side) and side > 0 for side in image_size):
            raise fields.fail("image_size", "must be [height, width] in pixels")
        splits = fields.child("splits")
        return cls(class_names, list(image_size), fields.integer("seed"),
                   {str(name): SplitFiles.from_fields(splits.child(name)) for name in splits.data},
                   fields.number("test_fraction", optional=True),
                   _optional_record(fields, "majority_baseline", MajorityBaseline.from_fields), _skipped(fields, "skipped"),
                   _optional_record(fields, "source", DataSource.from_fields), fields.text("fingerprint", optional=True))

    def to_fields(self) -> dict[str, Any]:
        data: dict[str, Any] = {"class_names": self.class_names, "image_size": self.image_size, "seed": self.seed}
        if self.source is not None:
            data["source"] = self.source.to_fields()
        if self.fingerprint is not None:
            data["fingerprint"] = self.fingerprint
        return {**data, "splits": {name: split.to_fields() for name, split in self.splits.items()},
                "test_fraction": self.test_fraction,
                "majority_baseline": self.majority_baseline.to_fields() if self.majority_baseline else None,
                "skipped": [item.to_fields() for item in self.skipped]}

    def validation_files_sha256(self) -> str | None:
        """files_digest of the validation file list, as validation_predictions.json's files_sha256
        records it (None when this file does not list the validation files)."""
        validation = self.splits.get("validation")
        return files_digest(validation.files) if validation is not None and validation.files else None


@dataclass(frozen=True)
class Selection:
    """metrics.selection: the rule, and the validation scores it chose by."""

    metric: str
    rule: str
    candidates: dict[str, float | None]  # model -> mean over seeds of the last epoch's val_accuracy
    seed_candidates: dict[str, float | None]  # the chosen model's seed (as text) -> its last val_accuracy

    @classmethod
    def from_fields(cls, fields: Fields) -> Selection:
        return cls(fields.text("metric"), fields.text("rule"), fields.numbers("candidates"),
                   fields.numbers("seed_candidates", optional=True))

    def to_fields(self) -> dict[str, Any]:
        return {"metric": self.metric, "rule": self.rule, "candidates": self.candidates,
                "seed_candidates": self.seed_candidates}


@dataclass(frozen=True)
class TestPrediction:
    """What the chosen model predicted for one test file (class names), with the probability."""

    __test__ = False  # not a pytest test class, despite the name

    file: str
    label: str
    predicted: str
    probability: float

    @classmethod
    def from_fields(cls, fields: Fields) -> TestPrediction:
        return cls(fields.text("file"), fields.text("label"), fields.text("predicted"), fields.number("probability"))

    def to_fields(self) -> dict[str, Any]:
        return {"file": self.file, "label": self.label, "predicted": self.predicted, "probability": self.probability}


@dataclass(frozen=True)
class TestEvaluation:
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
        return cls(fields.text("model"), fields.integer("seed"), fields.number("loss", optional=True),
                   fields.number("accuracy", optional=True), correct, total, class_names,
                   [list(row) for row in matrix], [TestPrediction.from_fields(item) for item in fields.children("predictions")])

    def to_fields(self) -> dict[str, Any]:
        return {"model": self.model, "seed": self.seed, "loss": self.loss, "accuracy": self.accuracy,
                "correct": self.correct, "total": self.total, "class_names": self.class_names,
                "confusion_matrix": self.confusion_matrix, "predictions": [item.to_fields() for item in self.predictions]}


@dataclass(frozen=True)
class ModelScore:
    """metrics.validation[<model>]: means over seeds of the last epoch's validation loss and accuracy."""

    loss: float | None
    accuracy: float | None

    @classmethod
    def from_fields(cls, fields: Fields) -> ModelScore:
        return cls(fields.number("loss", optional=True), fields.number("accuracy", optional=True))

    def to_fields(self) -> dict[str, Any]:
        return {"loss": self.loss, "accuracy": self.accuracy}


@dataclass(frozen=True)
class Metrics(Record):
    """`metrics.json`: the choice on validation and the one test evaluation of the choice."""

    config_hash: str
    data_fingerprint: str
    selection: Selection
    chosen_model: str | None
    chosen_seed: int | None
    validation: dict[str, ModelScore]
    test: TestEvaluation | None = None
    chosen_history_sha256: str | None = None  # the test score is reused only for this training

    @classmethod
    def from_fields(cls, fields: Fields) -> Metrics:
        validation = fields.child("validation", optional=True)
        return cls(fields.text("config_hash"), fields.text("data_fingerprint"), Selection.from_fields(fields.child("selection")),
                   fields.text("chosen_model", optional=True), fields.integer("chosen_seed", optional=True),
                   {str(name): ModelScore.from_fields(validation.child(name)) for name in validation.data},
                   _optional_record(fields, "test", TestEvaluation.from_fields),
                   fields.text("chosen_history_sha256", optional=True))

    def to_fields(self) -> dict[str, Any]:
        data = {"config_hash": self.config_hash, "data_fingerprint": self.data_fingerprint,
                "selection": self.selection.to_fields(), "chosen_model": self.chosen_model, "chosen_seed": self.chosen_seed}
        if self.chosen_history_sha256 is not None:
            data["chosen_history_sha256"] = self.chosen_history_sha256
        if self.test is not None:
            data["test"] = self.test.to_fields()
        return {**data, "validation": {name: score.to_fields() for name, score in self.validation.items()}}
