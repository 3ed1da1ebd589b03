"""Fit one model, checkpointing every epoch so that an interrupted run resumes.

After each epoch the model (weights and optimizer state) is saved as
`checkpoint/epoch-NNNN.keras`, then `checkpoint/progress.json`, which names that file and
holds the history so far, is renamed into place. That rename is the commit point: a kill at
any moment leaves either the previous epoch's state or the new one, never a mix, and the
resumed history has every epoch exactly once.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from experiments.artifacts import SCHEMA_VERSION, RunFolder, read_json, write_atomic, write_json

HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


@dataclass
class TrainingResult:
    model: keras.Model
    epochs: list[dict[str, Any]]
    resumed_from_epoch: int
    wall_seconds: float


def _finite_or_none(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


class EpochCheckpoint(keras.callbacks.Callback):
    """Record each finished epoch and commit a resumable checkpoint."""

    def __init__(self, run: RunFolder, model_name: str, epochs: list[dict[str, Any]], state: dict[str, Any]):
        super().__init__()
        self.run = run
        self.model_name = model_name
        self.epochs = epochs
        self.state = state
        self.epoch_started = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        record = {"epoch": epoch + 1}
        record.update({key: _finite_or_none(logs[key]) if key in logs else None for key in HISTORY_KEYS})
        record["seconds"] = round(time.perf_counter() - self.epoch_started, 3)
        self.epochs.append(record)
        checkpoint_dir = self.run.checkpoint_dir(self.model_name)
        checkpoint_name = f"epoch-{epoch + 1:04d}.keras"
        write_atomic(checkpoint_dir / checkpoint_name, lambda path: self.model.save(path))
        write_json(checkpoint_dir / "progress.json", {"schema_version": SCHEMA_VERSION, "checkpoint": checkpoint_name, "epochs": self.epochs})
        for old in checkpoint_dir.glob("epoch-*.keras"):
            if old.name != checkpoint_name:
                old.unlink(missing_ok=True)
        write_history(self.run, self.model_name, self.epochs)
        self.state.update(status="partial", epochs_completed=len(self.epochs))
        write_json(self.run.state(self.model_name), self.state)


def write_history(run: RunFolder, model_name: str, epochs: list[dict[str, Any]]) -> None:
    write_json(run.history(model_name), {"schema_version": SCHEMA_VERSION, "model": model_name, "epochs": epochs})


def load_progress(run: RunFolder, model_name: str) -> tuple[list[dict[str, Any]], Path | None]:
    """The committed history and checkpoint file of an interrupted fit, if there is one."""
    progress = read_json(run.checkpoint_dir(model_name) / "progress.json")
    if not progress or not isinstance(progress.get("epochs"), list):
        return [], None
    checkpoint = run.checkpoint_dir(model_name) / str(progress.get("checkpoint", ""))
    if not checkpoint.is_file():
        return [], None
    return progress["epochs"], checkpoint


def clear_checkpoint(run: RunFolder, model_name: str) -> None:
    shutil.rmtree(run.checkpoint_dir(model_name), ignore_errors=True)


def keras_verbosity(setting: str) -> int:
    """"auto": a progress bar on a terminal, one line per epoch in logs and CI."""
    if setting == "auto":
        return 1 if sys.stdout.isatty() else 2
    return {"bar": 1, "epoch": 2, "silent": 0}[setting]


def fit(
    model: keras.Model,
    run: RunFolder,
    model_name: str,
    train_dataset,
    validation_dataset,
    total_epochs: int,
    state: dict[str, Any],
    verbose: int = 2,
) -> TrainingResult:
    """Train `model` (already compiled) up to `total_epochs`, resuming a committed checkpoint.

    `state` is the model's state.json content (config hash, data fingerprint, ...); it is
    updated and written after every epoch.
    """
    epochs, checkpoint = load_progress(run, model_name)
    resumed_from = 0
    if checkpoint is not None and 0 < len(epochs) <= total_epochs:
        model = keras.models.load_model(checkpoint)
        resumed_from = len(epochs)
        print(f"  resuming {model_name} after epoch {resumed_from} of {total_epochs}", file=sys.stderr, flush=True)
    else:
        epochs = []
        clear_checkpoint(run, model_name)
    started = time.perf_counter()
    if resumed_from < total_epochs:
        model.fit(
            train_dataset,
            validation_data=validation_dataset,
            epochs=total_epochs,
            initial_epoch=resumed_from,
            callbacks=[EpochCheckpoint(run, model_name, epochs, state)],
            verbose=verbose,
            shuffle=False,  # the tf.data pipeline already reshuffles every epoch
        )
    return TrainingResult(model, epochs, resumed_from, time.perf_counter() - started)
