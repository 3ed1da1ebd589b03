"""Fit one model, checkpointing every epoch so that an interrupted run resumes.

After each epoch the model (weights and optimizer state) is saved as
`checkpoint/epoch-NNNN.keras`, then `checkpoint/progress.json`, which names that file and
holds the history so far, is renamed into place. That rename is the commit point: a kill at
any moment leaves either the previous epoch's state or the new one, never a mix, and the
resumed history has every epoch exactly once.

An epoch whose training loss is NaN or infinite stops the fit at once and is not committed
(the checkpoint keeps the last finite epoch); `fit` then raises :class:`TrainingDiverged`.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np

from experiments.artifacts.cell_records import CheckpointProgress, Epoch, History, RunState
from experiments.artifacts.files import ArtifactError, ArtifactFormatError, write_atomic
from experiments.artifacts.folders import CHECKPOINT_NAME, CellFolder
from experiments.artifacts.ledger import LEDGER_NAME, describe_left_files, record_written, remove_written_files, written_names
from experiments.data.loading import make_image_batches
from experiments.errors import is_disk_full
from experiments.interrupts import raise_if_interrupted
from experiments.models.build import keras_file_problem

HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


@dataclass
class TrainingResult:
    model: keras.Model
    epochs: list[dict[str, Any]]
    resumed_epochs: int
    wall_seconds: float


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; `epoch` is its number (1-based, as in the history)."""

    def __init__(self, epoch: int, loss: float):
        self.epoch = epoch
        self.loss = loss
        kind = "NaN" if math.isnan(loss) else "infinite"
        super().__init__(f"loss became {kind} in epoch {epoch}")


def _finite_or_none(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


class EpochCheckpoint(keras.callbacks.Callback):
    """Record each finished epoch and commit a resumable checkpoint; stop, committing nothing,
    at the first epoch whose training loss is not finite (`diverged` then holds (epoch, loss))."""

    def __init__(self, seed_run: CellFolder, epochs: list[dict[str, Any]], state: RunState, precision: str):
        super().__init__()
        self.seed_run = seed_run
        self.epochs = epochs
        self.state = state
        self.precision = precision
        self.epoch_started = 0.0
        self.diverged: tuple[int, float] | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.diverged = (epoch + 1, float(loss))
            self.model.stop_training = True  # weights are garbage now: keep the last finite checkpoint
            raise_if_interrupted()
            return
        record = {"epoch": epoch + 1}
        record.update({key: _finite_or_none(logs[key]) if key in logs else None for key in HISTORY_KEYS})
        record["seconds"] = round(time.perf_counter() - self.epoch_started, 3)
        self.epochs.append(record)
        checkpoint_dir = self.seed_run.checkpoint_dir
        checkpoint_name = f"epoch-{epoch + 1:04d}.keras"
        ours = written_names(checkpoint_dir)
        for name in (checkpoint_name, "progress.json"):
            if (checkpoint_dir / name).exists() and name not in ours:
                raise ArtifactError(f"{checkpoint_dir / name} holds a file this program did not write, where the "
                                    f"checkpoint of {self.seed_run.label} goes; move it away and run the same command again.")
        record_written(checkpoint_dir, [checkpoint_name, "progress.json"])  # listed before written: ours to replace
        write_atomic(checkpoint_dir / checkpoint_name, lambda path: self.model.save(path))
        CheckpointProgress(checkpoint_name, as_epochs(self.epochs)).write(checkpoint_dir / "progress.json")
        for old in checkpoint_dir.glob("epoch-*.keras"):
            if (old.name != checkpoint_name and old.name in ours and CHECKPOINT_NAME.fullmatch(old.name)
                    and old.is_file() and not old.is_symlink()):
                old.unlink(missing_ok=True)
        write_history(self.seed_run, self.epochs, self.precision)
        self.state = replace(self.state, status="partial", epochs_completed=len(self.epochs))
        self.state.write(self.seed_run.state)
        raise_if_interrupted()  # a stop whose KeyboardInterrupt TensorFlow swallowed still stops here


class CachedFeatureValidation(keras.callbacks.Callback):
    """Validate a frozen-base model from base features computed once.

    At evaluation the augmentation layers are the identity and the frozen base runs with
    training=False, so the pooled features of the validation images are the same every epoch;
    only the head (dropout, inactive, then the dense logits) changes. The features are computed
    at the end of the first epoch this callback sees; every epoch's `val_loss` and
    `val_accuracy` then come from the head alone. It must run before EpochCheckpoint, which
    records those logs.
    """

    def __init__(self, images, labels, batch_size: int, feature_layer: str = "global_max_pool", head_layers=("dropout", "logits"),
                 label_smoothing: float = 0.0):
        super().__init__()
        self.images = images
        self.labels = np.asarray(labels)
        self.batch_size = batch_size
        self.label_smoothing = label_smoothing  # the compiled loss's: val_loss is the loss model.evaluate reports
        self.feature_layer = feature_layer
        self.head_layers = head_layers
        self.features = None

    def _compute_features(self):

        feature_model = keras.Model(self.model.inputs, self.model.get_layer(self.feature_layer).output)
        return feature_model.predict(make_image_batches(self.images, self.batch_size), verbose=0)

    def on_epoch_end(self, epoch, logs=None):
        if self.features is None:
            self.features = self._compute_features()
        outputs = self.features
        for name in self.head_layers:
            outputs = self.model.get_layer(name)(outputs, training=False)
        logits = np.asarray(keras.ops.convert_to_numpy(outputs), dtype=np.float64)
        if logs is not None:
            loss, accuracy = softmax_cross_entropy(logits, self.labels, self.label_smoothing)
            logs["val_loss"], logs["val_accuracy"] = loss, accuracy


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """keras.callbacks.TensorBoard whose epoch scalars (epoch_loss, epoch_accuracy, ...) are
    written at step = the epoch's number in history.json: 1-based, and continuing the source
    model's numbering for finetune and transfer_extended. Keras itself uses the 0-based index."""

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch + 1, logs)


class AfterEpoch(keras.callbacks.Callback):
    """Call `action()` at every epoch's end (placed after EpochCheckpoint: the epoch is committed)."""

    def __init__(self, action):
        super().__init__()
        self.action = action

    def on_epoch_end(self, epoch, logs=None):
        self.action()


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log(softmax(`logits`)) along the last axis, computed stably (the largest logit subtracted first)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities from the models' logits (the models end in a Dense layer without activation)."""
    return np.exp(log_softmax(logits))


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0) -> tuple[float, float]:
    """Mean cross-entropy of integer `labels` under softmax(`logits`), and the accuracy. With
    `label_smoothing` ε the target is Keras's: 1 - ε + ε/K for the label, ε/K for each of the other
    K - 1 classes (the loss a model compiled with that smoothing reports, at validation too)."""
    log_probabilities = log_softmax(logits)
    targets = np.full_like(log_probabilities, label_smoothing / log_probabilities.shape[-1])
    targets[np.arange(len(labels)), labels] += 1.0 - label_smoothing
    loss = float(-(targets * log_probabilities).sum(axis=-1).mean())
    return loss, float((logits.argmax(axis=1) == labels).mean())


def as_epochs(epochs: list[dict[str, Any]]) -> list[Epoch]:
    """The epoch records of the dicts the callbacks build (and TensorBoard and MLflow read)."""
    return [Epoch(**record) for record in epochs]


def write_history(seed_run: CellFolder, epochs: list[dict[str, Any]], precision: str) -> None:
    History(seed_run.model_name, seed_run.seed, precision, as_epochs(epochs)).write(seed_run.history)


def load_progress(seed_run: CellFolder) -> tuple[list[dict[str, Any]], Path | None]:
    """The committed history and checkpoint file of an interrupted fit, if there is one (an
    unreadable progress file counts as none: the run starts again)."""
    try:
        progress = CheckpointProgress.read(seed_run.checkpoint_dir / "progress.json")
    except ArtifactFormatError:
        return [], None
    if progress is None or not (seed_run.checkpoint_dir / progress.checkpoint).is_file():
        return [], None
    return [epoch.to_fields() for epoch in progress.epochs], seed_run.checkpoint_dir / progress.checkpoint


def resumable_progress(seed_run: CellFolder, first_epoch: int, planned: int) -> tuple[list[dict[str, Any]], Path | None, str | None]:
    """What `fit` resumes from: (the committed epochs, the checkpoint file, a note or None).

    Every checkpoint is checked whole (each member's CRC) before it is used: a truncated one is
    never loaded. When the committed checkpoint is damaged or missing but an earlier one of this
    fit is whole (a kill can leave the previous epoch's file beside the new one), the fit resumes
    from that one, its epochs cut to it, and the note says so. With nothing to resume from it is
    ([], None, why), `why` None when nothing was committed, else naming what is missing or damaged."""

    try:
        progress = CheckpointProgress.read(seed_run.checkpoint_dir / "progress.json")
    except ArtifactFormatError as error:
        return [], None, f"its progress file cannot be read ({error.detail})"
    if progress is None:
        return [], None, None
    checkpoint = seed_run.checkpoint_dir / progress.checkpoint
    epochs = [epoch.to_fields() for epoch in progress.epochs]
    if not (0 < len(epochs) <= planned and epochs[0].get("epoch") == first_epoch + 1):
        return [], None, f"its checkpoint {checkpoint} belongs to other epochs than this run's"
    if not checkpoint.is_file() or checkpoint.is_symlink():
        problem = f"its checkpoint {checkpoint} is missing"
    else:
        problem = keras_file_problem(checkpoint)
        if problem is None:
            return epochs, checkpoint, None
        problem = f"its checkpoint {checkpoint} cannot be used ({problem})"
    earlier = sorted((int(path.name[6:-6]), path) for path in seed_run.checkpoint_dir.glob("epoch-*.keras")
                     if CHECKPOINT_NAME.fullmatch(path.name) and path.is_file() and not path.is_symlink())
    for number, path in reversed(earlier):
        if first_epoch < number < first_epoch + len(epochs) and keras_file_problem(path) is None:
            return epochs[: number - first_epoch], path, f"{problem}, so it resumes from the earlier {path.name}"
    return [], None, problem


_NAMED_LEFT: set[tuple[Path, tuple[Path, ...]]] = set()


def adopt_unlisted_checkpoints(seed_run: CellFolder) -> None:
    """A checkpoint folder written before its files were listed (no ledger) whose progress.json
    reads as this program's record: its checkpoint files are this program's, so list them."""
    folder = seed_run.checkpoint_dir
    if not folder.is_dir() or (folder / LEDGER_NAME).exists():
        return
    try:
        record = CheckpointProgress.read(folder / "progress.json")
    except (OSError, ArtifactFormatError):
        record = None
    if record is None:
        return  # no record of ours: nothing there is taken for ours
    record_written(folder, [path.name for path in folder.iterdir()
                            if CHECKPOINT_NAME.fullmatch(path.name) and path.is_file() and not path.is_symlink()])


def clear_checkpoint(seed_run: CellFolder, say: Callable[[str], None] | None = None) -> None:
    """Remove the checkpoint files this program wrote (those its ledger lists: `epoch-NNNN.keras`,
    `progress.json`, their temporaries) and the folder if that empties it; any other file there is
    left alone and named in one line on stderr."""
    adopt_unlisted_checkpoints(seed_run)
    left = remove_written_files(seed_run.checkpoint_dir, CHECKPOINT_NAME)
    if left and (seed_run.checkpoint_dir, tuple(left)) not in _NAMED_LEFT:  # once per process, not at every clearing
        _NAMED_LEFT.add((seed_run.checkpoint_dir, tuple(left)))
        message = describe_left_files(seed_run.checkpoint_dir, left)
        if say is None:
            print(message, file=sys.stderr, flush=True)
        else:
            say(message)


def keras_verbosity(setting: str) -> int:
    """"auto": a progress bar on a terminal, one line per epoch in logs and CI."""
    if setting == "auto":
        return 1 if sys.stdout.isatty() else 2
    return {"bar": 1, "epoch": 2, "silent": 0}[setting]


def fit(
    model: keras.Model,
    seed_run: CellFolder,
    train_dataset,
    validation_dataset,
    state: RunState,
    first_epoch: int = 0,
    last_epoch: int = 1,
    precision: str = "float32",
    cached_validation: CachedFeatureValidation | None = None,
    verbose: int = 2,
    tracking=None,
) -> TrainingResult:
    """Train `model` (already compiled) for epochs `first_epoch + 1` .. `last_epoch`, resuming
    a committed checkpoint. (`first_epoch` is above 0 when a model continues another's training.)

    `state` is the run's state.json record (config hash, data fingerprint, ...); it is written,
    updated, after every epoch. With `cached_validation`, validation comes from that callback
    and `validation_dataset` is not used. `tracking` (experiments.training.tracking.StudyTracking) adds
    the TensorBoard and MLflow callbacks. Raises :class:`TrainingDiverged` when an epoch's
    training loss is not finite (the epochs before it stay committed).
    """
    planned = last_epoch - first_epoch
    adopt_unlisted_checkpoints(seed_run)  # a run checkpointed before the ledger resumes as before
    epochs, checkpoint, problem = resumable_progress(seed_run, first_epoch, planned)
    resumed = 0
    if checkpoint is not None:
        try:
            model = keras.models.load_model(checkpoint)
        except Exception as error:  # a whole zip Keras still cannot load: start again, saying why
            if is_disk_full(error):
                raise
            problem = f"its checkpoint {checkpoint} cannot be loaded ({type(error).__name__})"
            epochs, checkpoint = [], None
    if checkpoint is not None:
        resumed = len(epochs)
        if problem is not None:  # resuming from an earlier checkpoint than the committed one
            print(f"  {seed_run.label}: {problem}", file=sys.stderr, flush=True)
        print(f"  resuming {seed_run.label} after epoch {first_epoch + resumed} of {last_epoch}", file=sys.stderr, flush=True)
    else:
        if problem is not None:
            print(f"  {seed_run.label} cannot resume: {problem}; training starts again from epoch {first_epoch + 1} "
                  "(the checkpoint's files are removed)", file=sys.stderr, flush=True)
        epochs = []
        clear_checkpoint(seed_run)
    started = time.perf_counter()
    if resumed < planned:
        checkpoint_callback = EpochCheckpoint(seed_run, epochs, state, precision)
        # order: validation logs filled in, then TensorBoard reads them, then the commit, then MLflow
        before, after = tracking.callbacks(seed_run, epochs, resumed, state.to_json()) if tracking is not None else ([], [])
        callbacks = [*before, checkpoint_callback, *after]
        if cached_validation is not None:
            callbacks.insert(0, cached_validation)
        model.fit(
            train_dataset,
            validation_data=None if cached_validation is not None else validation_dataset,
            epochs=last_epoch,
            initial_epoch=first_epoch + resumed,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,  # the tf.data pipeline already reshuffles every epoch
        )
        if checkpoint_callback.diverged is not None:
            raise TrainingDiverged(*checkpoint_callback.diverged)
    return TrainingResult(model, epochs, resumed, time.perf_counter() - started)
