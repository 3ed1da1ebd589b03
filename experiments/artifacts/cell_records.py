"""Typed records of the files one cell (a model and a seed) writes: its history, state, checkpoint
progress and validation predictions, and its model's summary.

The layout is documented in docs/guide/artifacts.md; the runner writes each file through its
record, and the report reads it through experiments.artifacts.loader.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from experiments.artifacts.records import OMITTED_WHEN_NONE, Fields, Part, Record
from experiments.typed import is_integer, is_number


@dataclass(frozen=True)
class Epoch(Part):
    """One finished epoch of a history. A metric is None when it was not finite (a NaN loss)."""

    epoch: int  # counts from 1; a continuing model goes on from its source's last epoch
    loss: float | None = None
    accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    seconds: float | None = None  # wall time of the epoch

    METRICS: ClassVar[tuple[str, ...]] = ("loss", "accuracy", "val_loss", "val_accuracy")
    FIELDS: ClassVar[tuple[str, ...]] = ("epoch", *METRICS, "seconds")

    def get(self, name: str, default: Any = None) -> Any:
        """A field by its JSON name, like a dict's get (the report's analysis reads epochs so)."""
        return getattr(self, name, default)

    def __getitem__(self, name: str) -> Any:
        """A field by its JSON name, like a dict's (the report's analysis reads epochs so)."""
        if name not in self.FIELDS:
            raise KeyError(name)
        return getattr(self, name)


@dataclass(frozen=True)
class History(Record):
    """`models/<model>/seed-<seed>/history.json`: one record per finished epoch, in order."""

    model: str
    seed: int
    precision: str | None  # the Keras dtype policy the run trained under
    epochs: list[Epoch]


@dataclass(frozen=True)
class CheckpointProgress(Record):
    """`models/<model>/seed-<seed>/checkpoint/progress.json`: the epochs committed with the
    resume checkpoint `checkpoint` (a file name in the same folder)."""

    checkpoint: str
    epochs: list[Epoch]


@dataclass(frozen=True)
class RunState(Record):
    """`models/<model>/seed-<seed>/state.json`: one run's status and what it was trained from."""

    model: str
    seed: int
    config_hash: str
    data_fingerprint: str
    status: str  # "partial", "complete", "failed" or "diverged"
    epochs_completed: int
    epochs_planned: int | None = None
    wall_seconds: float | None = None
    error: str | None = None
    precision: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    # finetune, transfer_extended: sha256 of the source run's history.json (written with the inputs, when known)
    starting_point: str | None = field(default=None, metadata=OMITTED_WHEN_NONE)

    WRITE_ORDER: ClassVar[tuple[str, ...]] = (
        "model", "seed", "config_hash", "data_fingerprint", "starting_point", "status", "epochs_completed",
        "epochs_planned", "wall_seconds", "error", "precision", "started_at", "finished_at")


@dataclass(frozen=True)
class Layer(Part):
    """One layer of a model summary. `trainable` says whether training updates any of its
    parameters; `trainable_params` how many (a nested backbone unfrozen from one of its layers
    on trains only part of its parameters). Files written before `trainable_params` existed
    read it as None: not recorded."""

    name: str
    type: str
    output_shape: str
    params: int
    trainable: bool
    trainable_params: int | None = field(default=None, metadata=OMITTED_WHEN_NONE)

    @classmethod
    def from_fields(cls, fields: Fields) -> Layer:
        params, trainable_params = fields.integer("params"), fields.integer("trainable_params", optional=True)
        if trainable_params is not None and not 0 <= trainable_params <= params:
            raise fields.fail("trainable_params", f"must be a count from 0 to the layer's params ({params})")
        return cls(**cls.read_fields(fields, params=params, trainable_params=trainable_params))


_SUMMARY_HEADER = re.compile(r'^(\s*Model: )"[^"\n]*"', re.MULTILINE)


def summary_text_named(text: str, name: str) -> str:
    """Keras's summary text headed with the study's model `name`. A train_on model trains the
    saved model object it continues, so Keras heads its summary with that model's name
    (transfer_extended's said Model: "transfer"); only the first header is renamed."""
    return _SUMMARY_HEADER.sub(lambda match: f'{match.group(1)}"{name}"', text, count=1)


@dataclass(frozen=True)
class ModelSummary(Record):
    """`models/<model>/summary.json`: the architecture, its parameter counts and Keras's summary text."""

    model: str
    title: str
    description: str
    layers: list[Layer]
    total_params: int
    trainable_params: int
    non_trainable_params: int
    summary_text: str
    # how the model trains (optimizer, learning_rate, weight_decay, label_smoothing, batch_size,
    # epochs, schedule: experiments.config.TrainingSettings); absent in summaries written before
    training: dict[str, Any] | None = field(default=None, metadata=OMITTED_WHEN_NONE)

    @classmethod
    def from_fields(cls, fields: Fields) -> ModelSummary:
        values = cls.read_fields(fields)
        return cls(**{**values, "training": values["training"] or None})  # an empty table is none recorded


@dataclass(frozen=True)
class ValidationPredictions(Record):
    """`models/<model>/seed-<seed>/validation_predictions.json`: what one finished run's final
    model (the weights that are scored, saved and may be tested) predicts for every validation
    image, in the order of dataset.json's validation files. Paired comparisons of two models
    score them on the same images from these."""

    model: str
    seed: int
    epoch: int  # the epoch whose weights made these predictions (the run's last)
    files_sha256: str  # files_digest of the validation file list they follow
    class_names: list[str]
    labels: list[int]  # true class index per image
    predicted: list[int]  # predicted class index per image
    probability: list[float]  # softmax probability of the predicted class, 4 decimals

    #: accuracy is derived from labels and predicted, written for readers of the file
    WRITE_ORDER: ClassVar[tuple[str, ...]] = (
        "model", "seed", "epoch", "files_sha256", "class_names", "accuracy", "labels", "predicted", "probability")

    @property
    def correct(self) -> list[bool]:
        return [label == guess for label, guess in zip(self.labels, self.predicted)]

    @property
    def accuracy(self) -> float | None:
        return sum(self.correct) / len(self.labels) if self.labels else None

    @classmethod
    def from_fields(cls, fields: Fields) -> ValidationPredictions:
        class_names = fields.texts("class_names")
        if len(class_names) < 2:
            raise fields.fail("class_names", "must list two or more class names")
        count = None
        for name in ("labels", "predicted", "probability"):
            values = fields.items(name)
            if count is not None and len(values) != count:
                raise fields.fail(name, f"has {len(values)} entries, but labels has {count}")
            count = len(values)
            for value in values:
                if name == "probability":
                    if not is_number(value) or not 0.0 <= value <= 1.0:
                        raise fields.fail(name, f"holds {value!r}, not a probability")
                elif not is_integer(value) or not 0 <= value < len(class_names):
                    raise fields.fail(name, f"holds {value!r}, not a class index below {len(class_names)}")
        return cls(**cls.read_fields(fields, class_names=class_names, labels=list(fields.data["labels"]),
                                     predicted=list(fields.data["predicted"]),
                                     probability=[float(value) for value in fields.data["probability"]]))


def files_digest(files: Sequence[str]) -> str:
    """sha256 of a split's file list (one name per line, in order): ties per-image records to it."""
    return hashlib.sha256("\n".join(files).encode("utf-8", "surrogateescape")).hexdigest()
