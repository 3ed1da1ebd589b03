"""One run folder read for the report: every file the report uses, read and checked once into typed
records, with what is missing or unusable as problem notes.

load_run_folder is the one reader of a finished (or unfinished) run for the report: whatever is
missing or unusable becomes a problem note (or, without a usable manifest, one RunFolderError).
The report's views take these records and never read a file.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.artifacts.cell_records import Epoch, History, ModelSummary, RunState, ValidationPredictions
from experiments.artifacts.files import ArtifactFormatError, load_json_object
from experiments.artifacts.folders import seed_folders
from experiments.artifacts.records import SCHEMA_VERSION
from experiments.artifacts.run_records import Dataset, Manifest, Metrics, ModelEntry, StudyRecord
from experiments.errors import UserError
from experiments.typed import is_integer, is_number

#: The command that writes a run again; the loader's sentences quote it.
RERUN_COMMAND = "python -m report_builder train"


class RunFolderError(UserError):
    """The run folder cannot be read at all (its manifest is missing, unusable or from an older
    version): one sentence naming the path."""


def check_epochs(epochs: object, what: str = "model") -> list[Epoch]:
    """The one check of a history's epochs (History.epochs, or a list of JSON objects): each epoch
    number once and in increasing order (a history lists each finished epoch once, so a repeated
    one would be counted twice), accuracies between 0 and 1, every metric a number or null. A
    metric that is not finite (a NaN loss) becomes None. ValueError naming `what` ("baseline
    (seed 1337)") and the epoch otherwise. An object without "epoch" counts from 1 by position."""
    if epochs is None:
        return []
    if isinstance(epochs, (str, bytes)) or not isinstance(epochs, Sequence):
        raise ValueError(f"history of {what}: 'epochs' must be a list, got {type(epochs).__name__}")
    checked: list[Epoch] = []
    for index, raw in enumerate(epochs):
        if not isinstance(raw, (Epoch, Mapping)):
            raise ValueError(f"history of {what}: epoch entry {index + 1} must be an object, got {raw!r}")
        number = raw.get("epoch", index + 1)
        if not is_integer(number):
            raise ValueError(f"history of {what}: epoch entry {index + 1} has a non-integer epoch {number!r}")
        if checked and number <= checked[-1].epoch:
            where = "appears twice" if any(epoch.epoch == number for epoch in checked) else f"comes after epoch {checked[-1].epoch}"
            raise ValueError(f"history of {what}: epoch {number} {where} (entry {index + 1}); a history lists "
                             "each finished epoch once, in order")
        where = f"history of {what}, epoch {number}"
        values = {name: _checked_metric(raw.get(name), f"{where}: {name}", name.endswith("accuracy"))
                  for name in ("accuracy", "val_accuracy", "loss", "val_loss", "seconds")}
        checked.append(Epoch(number, **values))
    return checked


def _checked_metric(value: object, what: str, accuracy: bool) -> float | None:
    """A finite float, or None for null, NaN or infinity; ValueError for anything else (and, for
    an accuracy, for a value outside 0..1)."""
    if value is None:
        return None
    if not is_number(value):
        raise ValueError(f"{what} must be a number or null, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        return None
    if accuracy and not 0.0 <= number <= 1.0:
        raise ValueError(f"{what} must lie between 0 and 1, got {number!r}")
    return number


@dataclass
class SeedRun:
    """What one ``models/<model>/seed-<seed>/`` folder holds, read and checked."""

    seed: int
    epochs: list[Epoch] | None  # the checked history (check_epochs); None with `error`
    precision: str | None
    epochs_planned: int | None  # state.json's plan for this run
    predictions: ValidationPredictions | None = None
    error: str | None = None  # why the history cannot be used
    started_at: str | None = None  # state.json: when the cell's last training call started and finished
    finished_at: str | None = None


@dataclass
class ModelFiles:
    """One model's folder: its summary and the runs of it the manifest lists, in seed order."""

    name: str
    summary: ModelSummary | None
    runs: list[SeedRun]


@dataclass
class RunRecords:
    """One run folder as the report uses it: typed, checked records, and the problems found in
    reading them (each names its file; none stops the report)."""

    folder: Path
    manifest: Manifest
    study: StudyRecord
    dataset: Dataset | None
    metrics: Metrics | None
    models: dict[str, ModelFiles]  # every model of the study, in study order
    figures: list[str]  # the names of the regular files in figures/ (links and special files left out)
    problems: list[str] = field(default_factory=list)


def load_run_folder(path: Path | str) -> RunRecords:
    """Read a run folder for the report: RunFolderError, one sentence naming the path, when it has
    no usable manifest (or was written by an older version); every other missing or unusable file
    is a problem note in RunRecords.problems and its record is None."""
    folder = Path(path)
    if not folder.is_dir():
        raise RunFolderError(f"artifact folder does not exist: {folder}")
    problems: list[str] = []
    manifest = _read_manifest(folder / "manifest.json", problems)
    study = _manifest_study(folder / "manifest.json", manifest)
    _reject_seedless_models(folder, study.names)
    dataset = _read_record(Dataset, folder / "dataset.json", problems)
    metrics = _read_record(Metrics, folder / "metrics.json", problems)
    problems += study.problems  # what of the config no longer read, when the manifest was upgraded
    models = {}
    for name in study.names:
        model_dir = folder / "models" / name
        runs = _listed_runs(name, manifest.models.get(name), _read_seed_runs(model_dir, problems), problems)
        models[name] = ModelFiles(name, _read_record(ModelSummary, model_dir / "summary.json", problems), runs)
    return RunRecords(folder, manifest, study, dataset, metrics, models, _regular_figures(folder), problems)


def older_schema_error(folder: Path, detail: str) -> RunFolderError:
    """The one error for a run folder written by an older version of the study."""
    return RunFolderError(
        f"the run in {folder} was written by an older version of the study ({detail}); "
        f"this report needs artifact schema {SCHEMA_VERSION}, with one training run per seed. "
        f"Rerun `{RERUN_COMMAND}` to regenerate it."
    )


def _read_object(path: Path, problems: list[str], required: bool = False) -> dict[str, Any] | None:
    """A JSON object of the current schema. A missing or broken optional file is a problem note
    (or nothing, when missing); a required one is a RunFolderError."""
    try:
        data = load_json_object(path)
    except ArtifactFormatError as error:
        if required:
            message = f"is {error.detail}" if error.detail.startswith("not ") else f"{error.detail}"
            raise RunFolderError(f"artifact file {path} {message}") from None
        problems.append(f"{_relative_name(path)}: {error.detail}")
        return None
    if data is None:
        if required:
            raise RunFolderError(f"required artifact file is missing: {path}")
        return None
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        message = f"schema_version is {version!r}, expected {SCHEMA_VERSION}"
        if required and is_integer(version) and 0 < version < SCHEMA_VERSION:
            raise older_schema_error(path.parent, f"{path.name} has schema_version {version}")
        if required:
            raise RunFolderError(f"artifact file {path}: {message}")
        problems.append(f"{_relative_name(path)}: {message}")
        return None
    return data


def _read_record(record_type: type, path: Path, problems: list[str]) -> Any:
    """The record at `path`, or None when it is missing or unusable; an unusable one becomes a
    problem note naming the file and the field."""
    data = _read_object(path, problems)
    if data is None:
        return None
    try:
        return record_type.from_json(data, path)
    except ArtifactFormatError as error:
        problems.append(f"{_relative_name(path)}: {error.detail}")
        return None


def _read_manifest(path: Path, problems: list[str]) -> Manifest:
    """The run's manifest.json; RunFolderError naming the file (and field) when it is missing or
    unusable: without it there is no report."""
    data = _read_object(path, problems, required=True)
    try:
        return Manifest.from_json(data, path)
    except ArtifactFormatError as error:
        raise RunFolderError(f"artifact file {path}: {error.detail}") from None


def _manifest_study(path: Path, manifest: Manifest) -> StudyRecord:
    """The manifest's study record; RunFolderError for a manifest written before it recorded one."""
    if manifest.study is None:
        raise RunFolderError(
            f"artifact file {path} was written before manifests recorded the study's models and plan "
            f"(its \"study\" field); run `{RERUN_COMMAND}` with the run's config (it trains nothing that is done and "
            f"rewrites the manifest), or `python scripts/upgrade_manifest.py {path}`, which adds the field from the "
            "manifest's own config and changes nothing else.")
    return manifest.study


def _reject_seedless_models(folder: Path, names: Iterable[str]) -> None:
    """older_schema_error for a schema-1 folder of one of the models `names` (history.json, no seed folders)."""
    for name in names:
        model_dir = folder / "models" / name
        if (model_dir / "history.json").is_file() and not seed_folders(model_dir):
            raise older_schema_error(folder, f"models/{name}/history.json and no seed-<seed>/ folders")


def _read_seed_runs(model_dir: Path, problems: list[str]) -> list[SeedRun]:
    """Every seed folder of a model that has a readable history, in numeric seed order; its
    history checked once (check_epochs)."""
    runs = []
    for seed, folder in seed_folders(model_dir):
        data = _read_object(folder / "history.json", problems)
        if data is None:
            continue
        state = _read_record(RunState, folder / "state.json", problems)
        epochs_planned = state.epochs_planned if state is not None else None
        times = {"started_at": state.started_at, "finished_at": state.finished_at} if state is not None else {}
        predictions = _read_record(ValidationPredictions, folder / "validation_predictions.json", problems)
        what = f"{model_dir.name} (seed {seed})"
        try:
            history = History.from_json(data, folder / "history.json")
            epochs = check_epochs(history.epochs, what)  # values in range, each epoch once, in order
        except ArtifactFormatError as error:
            detail, error_text = error.detail, f"history of {what}: {error.detail}"
        except ValueError as error:
            detail = error_text = str(error)
        else:
            runs.append(SeedRun(seed, epochs, history.precision or None, epochs_planned, predictions, **times))
            continue
        # the model page says why its curves are missing; the method page (and render's warning) name the file
        problems.append(f"{_relative_name(folder / 'history.json')}: {detail}")
        runs.append(SeedRun(seed, None, None, epochs_planned, predictions, error_text, **times))
    return runs


def _listed_runs(name: str, entry: ModelEntry | None, runs: list[SeedRun], problems: list[str]) -> list[SeedRun]:
    """The runs manifest.json lists for a model: a seed folder it does not list (trained under other
    settings, which the manifest, derived from the cells that match the run's config, leaves out)
    is named as a problem and left out, so the report and the manifest agree on which runs exist."""
    listed = None if entry is None else set(entry.runs)
    if listed is not None and not listed:
        return runs  # a manifest that records no runs per seed (older runs): every seed folder counts
    kept = [run for run in runs if listed is not None and str(run.seed) in listed]
    left_out = sorted(run.seed for run in runs if run not in kept)
    if left_out:
        seeds = ", ".join(str(seed) for seed in left_out)
        problems.append(f"models/{name}/: seed folder(s) {seeds} are not runs of this study in manifest.json "
                        "(trained under other settings, or not yet counted); the report leaves them out")
    return kept


def _relative_name(path: Path) -> str:
    """A short, stable name for a problem note (no absolute paths in the report)."""
    parts = path.parts
    if "models" in parts:
        return "/".join(parts[parts.index("models") :])
    return path.name


def is_regular_file_of(folder: Path, relative: Path) -> bool:
    """True for a regular file inside the run folder: not a link, not a special file, and not
    reached through a linked folder (only the run's own files are published)."""
    path = folder / relative
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        return path.resolve().is_relative_to(folder.resolve()) and not any(
            (folder / parent).is_symlink() for parent in relative.parents if parent != Path(".")
        )
    except OSError:
        return False


def _regular_figures(folder: Path) -> list[str]:
    """The names of the regular files directly in the run's figures/ folder (is_regular_file_of), sorted."""
    try:
        names = [entry.name for entry in os.scandir(folder / "figures")]
    except OSError:
        return []
    return sorted(name for name in names if is_regular_file_of(folder, Path("figures") / name))
