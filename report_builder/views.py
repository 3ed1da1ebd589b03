"""Load one run's artifact folder into the view data the page templates read.

Every value that comes from the artifacts is checked here (a missing or broken file becomes a
problem note on the method page, or one :class:`ReportError` for the manifest), so the
templates receive plain, typed data and never read a file themselves.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from experiments.artifacts import (
    SCHEMA_VERSION,
    ArtifactFormatError,
    History,
    ModelSummary,
    RunState,
    ValidationPredictions,
    files_digest,
    load_json_object,
    parse_seed_folder,
)
from experiments.config import MODEL_NAMES
from experiments.errors import ConfigError, UserError
from experiments.recipes import BUILT_IN, ModelRecipe, check_name, parse_model, recipe_for
from report_builder import analysis
from report_builder import observations as obs
from report_builder import references as refs
from report_builder.formatting import as_int, finite

MODEL_ORDER = MODEL_NAMES
#: From this many classes on, the test confusion matrix is a heatmap figure (experiments.figures draws it).
HEATMAP_FROM_CLASSES = 7
#: Outcomes of a paired comparison of two models' validation accuracy.
BETTER, WORSE, NO_CLEAR_DIFFERENCE, NOT_COMPARABLE = "better", "worse", "no clear difference", "not comparable"
#: Short words for each curve verdict, for table cells (the model pages say them in full).
VERDICT_LABELS = {
    analysis.AT_CHANCE: "near chance",
    analysis.UNDERFITTING: "underfits",
    analysis.STILL_IMPROVING: "still improving",
    analysis.OVERFITTING_LOSS: "val. loss rising",
    analysis.OVERFITTING_GAP: "train-val gap",
    analysis.UNSTABLE_SPREAD: "seeds disagree",
    analysis.LATE_DROP: "late drop",
    analysis.SETTLED: "settled",
}
RERUN_COMMAND = "python -m report_builder train"
SPLIT_ORDER = ("train", "validation", "test")
SPLIT_LABELS = {"train": "Training", "validation": "Validation", "test": "Test"}
FIGURES_SUBDIR = Path("assets") / "figures"

STATUS_COMPLETE = "complete"
STATUS_LABELS = {
    "complete": "complete",
    "partial": "did not finish",
    "running": "did not finish",
    "failed": "did not finish",
    "diverged": "diverged",
    "not_run": "not run",
}


class ReportError(UserError):
    """The artifact folder cannot be turned into a report (the message names the path)."""


# --------------------------------------------------------------------------- loading


@dataclass
class ModelView:
    """Everything the templates need about one model."""

    name: str
    status: str
    status_label: str
    complete: bool
    error: str | None
    recipe: ModelRecipe
    wall_seconds: float | None
    epochs_completed: int | None
    epochs_planned: int | None
    title: str
    description: str | None
    has_summary: bool
    layers: list[dict[str, Any]]
    total_params: int | None
    trainable_params: int | None
    frozen_params: int | None
    summary_text: str | None
    observation_error: str | None  # why the histories could not be read
    curves_figure: str | None
    previous: str | None
    next: str | None
    validation_accuracy: float | None
    selection_score: float | None
    over_seeds: obs.SeedSummary | None = None  # the aggregate over this model's seeds
    seed_rows: list[SeedRow] = field(default_factory=list)
    missing_seeds: list[int] = field(default_factory=list)
    accuracy: obs.Spread | None = None  # each seed's last-epoch validation accuracy: count, mean, std
    precision: str | None = None
    comparison: PairedComparison | None = None  # against the previous model in study order
    lead_in: dict[str, Any] | None = None  # the model whose epochs lead into this one's curve
    correct: np.ndarray | None = field(default=None, repr=False)  # (seeds, validation images): right or wrong
    correct_seeds: list[int] = field(default_factory=list)  # the seeds of the rows of `correct`
    predictions_note: str | None = None  # why there is no interval, when there is none
    interval: analysis.Interval | None = None  # mean final validation accuracy, seeds and images resampled
    verdicts: list[analysis.Verdict] = field(default_factory=list)
    best_epochs: dict[int, int | None] = field(default_factory=dict)  # seed -> analysis.best_epoch
    reference: dict[str, Any] | None = None  # references.summarize for this model
    histories: dict[int, list[Any]] = field(default_factory=dict, repr=False)  # seed -> the history's epochs list

    @property
    def verdict_codes(self) -> list[str]:
        return [verdict.code for verdict in self.verdicts]

    @property
    def verdict_labels(self) -> list[str]:
        """Short words per verdict; near chance by its loss alone (accuracy above the baseline) says so."""
        return ["chance-level loss" if verdict.code == analysis.AT_CHANCE and not verdict.facts.get("by_interval")
                else VERDICT_LABELS[verdict.code] for verdict in self.verdicts]

    @property
    def final_accuracies(self) -> list[tuple[int, float | None]]:
        """Each seed's last-epoch validation accuracy, in seed order."""
        return [(row.result.seed, row.result.last_val_accuracy) for row in self.seed_rows]

    @property
    def seed_count(self) -> int:
        """How many seeds have a history for this model."""
        return self.over_seeds.seed_count if self.over_seeds is not None else 0

    @property
    def epoch_range(self) -> tuple[int, int] | None:
        """First and last epoch number over all seeds (``None`` without epochs)."""
        if self.over_seeds is None or not self.over_seeds.epochs:
            return None
        return self.over_seeds.epochs[0].epoch, self.over_seeds.epochs[-1].epoch


@dataclass
class PairedComparison:
    """Model `first` against model `second` on the same validation images (first minus second)."""

    first: str
    second: str
    difference: analysis.Interval | None
    outcome: str  # BETTER / WORSE (first than second), NO_CLEAR_DIFFERENCE or NOT_COMPARABLE
    reason: str | None = None  # why NOT_COMPARABLE
    confounds: list[str] = field(default_factory=list)
    seed_counts: tuple[int, int] = (0, 0)

    @property
    def winner(self) -> str | None:
        return {BETTER: self.first, WORSE: self.second}.get(self.outcome)

    @property
    def loser(self) -> str | None:
        return {BETTER: self.second, WORSE: self.first}.get(self.outcome)


@dataclass
class SeedRow:
    """One seed's run of a model, for the per-seed table."""

    result: obs.SeedResult
    precision: str | None
    wall_seconds: float | None
    status_label: str
    complete: bool


@dataclass
class SeedRun:
    """What one ``seed-<seed>/`` folder of a model holds."""

    seed: int
    epochs: list[dict[str, Any]] | None  # the history's epochs, as JSON objects; None with `error`
    precision: str | None
    epochs_planned: int | None
    predictions: ValidationPredictions | None = None
    error: str | None = None  # why the history cannot be used


@dataclass
class RunView:
    """The whole run, loaded and cleaned for the templates."""

    artifacts_dir: Path
    manifest: dict[str, Any]
    dataset: dict[str, Any] | None
    metrics: dict[str, Any] | None
    models: list[ModelView]
    figures: list[str]
    seeds: list[int]
    problems: list[str] = field(default_factory=list)


def read_json(path: Path, problems: list[str], required: bool = False) -> dict[str, Any] | None:
    """Read a JSON object of the current schema. Missing or broken optional files become a problem note."""
    try:
        data = load_json_object(path)
    except ArtifactFormatError as error:
        if required:
            message = f"is {error.detail}" if error.detail.startswith("not ") else f"{error.detail}"
            raise ReportError(f"artifact file {path} {message}") from None
        problems.append(f"{_relative_name(path)}: {error.detail}")
        return None
    if data is None:
        if required:
            raise ReportError(f"required artifact file is missing: {path}")
        return None
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        message = f"schema_version is {version!r}, expected {SCHEMA_VERSION}"
        if required and _is_older_schema(version):
            raise older_schema_error(path.parent, f"{path.name} has schema_version {version}")
        if required:
            raise ReportError(f"artifact file {path}: {message}")
        problems.append(f"{_relative_name(path)}: {message}")
        return None
    return data


def read_record(record_type: type, path: Path, problems: list[str]) -> Any:
    """The record at `path` (experiments.artifacts), or None when it is missing or unusable; an
    unusable one becomes a problem note naming the file and the field."""
    data = read_json(path, problems)
    if data is None:
        return None
    try:
        return record_type.from_json(data, path)
    except ArtifactFormatError as error:
        problems.append(f"{_relative_name(path)}: {error.detail}")
        return None


def _is_older_schema(version: object) -> bool:
    return isinstance(version, int) and not isinstance(version, bool) and 0 < version < SCHEMA_VERSION


def older_schema_error(artifacts_dir: Path, detail: str) -> ReportError:
    """The one error for a run folder written by an older version of the study."""
    return ReportError(
        f"the run in {artifacts_dir} was written by an older version of the study ({detail}); "
        f"this report needs artifact schema {SCHEMA_VERSION}, with one training run per seed. "
        f"Rerun `{RERUN_COMMAND}` to regenerate it."
    )


def reject_seedless_models(artifacts_dir: Path) -> None:
    """Raise :func:`older_schema_error` for a schema-1 model folder (history.json, no seed folders)."""
    for name in MODEL_ORDER:
        model_dir = artifacts_dir / "models" / name
        if (model_dir / "history.json").is_file() and not seed_folders(model_dir):
            raise older_schema_error(artifacts_dir, f"models/{name}/history.json and no seed-<seed>/ folders")


def seed_folders(model_dir: Path) -> list[tuple[int, Path]]:
    """A model's ``seed-<seed>/`` folders as ``(seed, path)``, seeds in numeric order."""
    if not model_dir.is_dir():
        return []
    found = []
    for path in model_dir.iterdir():
        seed = parse_seed_folder(path.name)
        if seed is not None and path.is_dir():
            found.append((seed, path))
    return sorted(found)


def read_seed_runs(model_dir: Path, problems: list[str]) -> list[SeedRun]:
    """Every seed folder of a model that has a readable history, in numeric seed order."""
    runs = []
    for seed, folder in seed_folders(model_dir):
        data = read_json(folder / "history.json", problems)
        if data is None:
            continue
        state = read_record(RunState, folder / "state.json", problems)
        epochs_planned = state.epochs_planned if state is not None else None
        predictions = read_record(ValidationPredictions, folder / "validation_predictions.json", problems)
        try:
            history = History.from_json(data, folder / "history.json")
        except ArtifactFormatError as error:
            error_text = f"history of {model_dir.name} (seed {seed}): {error.detail}"
            runs.append(SeedRun(seed, None, None, epochs_planned, predictions, error_text))
            continue
        epochs = [epoch.to_fields() for epoch in history.epochs]
        runs.append(SeedRun(seed, epochs, history.precision or None, epochs_planned, predictions))
    return runs


def run_seeds(manifest: dict[str, Any]) -> list[int]:
    """The run's training seeds from the manifest, in numeric order (empty when not recorded)."""
    seeds = manifest.get("seeds")
    if not isinstance(seeds, list):
        return []
    return sorted({seed for seed in seeds if isinstance(seed, int) and not isinstance(seed, bool)})


def _relative_name(path: Path) -> str:
    """A short, stable name for a problem note (no absolute paths in the report)."""
    parts = path.parts
    if "models" in parts:
        return "/".join(parts[parts.index("models") :])
    return path.name


def as_dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def is_regular_file_of(artifacts_dir: Path, relative: Path) -> bool:
    """True for a regular file inside the run folder: not a link, not a special file, and not
    reached through a linked folder (only the run's own files are published)."""
    path = artifacts_dir / relative
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        return path.resolve().is_relative_to(artifacts_dir.resolve()) and not any(
            (artifacts_dir / parent).is_symlink() for parent in relative.parents if parent != Path(".")
        )
    except OSError:
        return False


def load_run(artifacts_dir: Path) -> RunView:
    """Load a run's artifact folder. Raises :class:`ReportError` without a usable manifest."""
    artifacts_dir = Path(artifacts_dir)
    if not artifacts_dir.is_dir():
        raise ReportError(f"artifact folder does not exist: {artifacts_dir}")
    problems: list[str] = []
    manifest = read_json(artifacts_dir / "manifest.json", problems, required=True) or {}
    reject_seedless_models(artifacts_dir)
    dataset = read_json(artifacts_dir / "dataset.json", problems)
    metrics = read_json(artifacts_dir / "metrics.json", problems)
    order = study_models(manifest, problems)
    figures = sorted(name for name in _figure_names(order) if is_regular_file_of(artifacts_dir, Path("figures") / name))
    models = load_models(artifacts_dir, manifest, dataset, metrics, figures, problems, order)
    seeds = run_seeds(manifest) or sorted({row.result.seed for model in models for row in model.seed_rows})
    return RunView(artifacts_dir, manifest, dataset, metrics, models, figures, seeds, problems)


def study_models(manifest: dict[str, Any], problems: list[str]) -> list[ModelRecipe]:
    """The study's models in study order, with their recipes, from the config the manifest
    records (study.models and its [models.<name>] tables); a run from before models were
    declared lists the built-in ones. A declaration that no longer reads is a problem, and the
    model is shown with the built-in recipe of its name, or as a small CNN."""
    config = as_dict(manifest.get("config"))
    listed = as_dict(config.get("study")).get("models")
    names = [name for name in listed if isinstance(name, str)] if isinstance(listed, list) else list(MODEL_ORDER)
    declared: dict[str, ModelRecipe] = {}
    for name, table in as_dict(config.get("models")).items():
        try:
            declared[name] = parse_model(name, table, "the manifest's config")
        except ConfigError as error:
            problems.append(f"manifest.json: {error}")
    recipes = []
    for name in names:
        try:
            check_name(name, "manifest.json: study.models")
            recipes.append(recipe_for(name, declared))
        except ConfigError as error:
            problems.append(f"manifest.json: {error}")
    return recipes


def _figure_names(order: list[ModelRecipe]) -> list[str]:
    """Every figure a run may have, each in its light and dark variant."""
    names = ["data_grid", "augmentation_flip", "augmentation_rotation", "comparison", "misclassified_test", "confusion_test"]
    names += [f"curves_{recipe.name}" for recipe in order]
    return [f"{name}{variant}.png" for name in names for variant in ("", "-dark")]


def _baseline_validation_accuracy(dataset: dict[str, Any] | None) -> float | None:
    baseline = as_dict(as_dict(dataset).get("majority_baseline"))
    value = finite(as_dict(baseline.get("accuracy")).get("validation"))
    return value if value is not None and 0.0 <= value <= 1.0 else None


def _validation_count(dataset: dict[str, Any] | None) -> int | None:
    """Images in the validation split (the n of every validation interval), ``None`` when unknown."""
    splits = as_dict(as_dict(dataset).get("splits"))
    count = as_int(as_dict(splits.get("validation")).get("count"))
    return count if count is not None and count > 0 else None


def load_models(
    artifacts_dir: Path,
    manifest: dict[str, Any],
    dataset: dict[str, Any] | None,
    metrics: dict[str, Any] | None,
    figures: list[str],
    problems: list[str],
    order: list[ModelRecipe] | None = None,
) -> list[ModelView]:
    """Load every model of the study, in study order, run or not."""
    order = order if order is not None else [BUILT_IN[name] for name in MODEL_ORDER]
    manifest_models = as_dict(manifest.get("models"))
    baseline = _baseline_validation_accuracy(dataset)
    validation = as_dict(as_dict(metrics).get("validation"))
    candidates = as_dict(as_dict(as_dict(metrics).get("selection")).get("candidates"))
    all_seeds = run_seeds(manifest)
    views: list[ModelView] = []
    names = [recipe.name for recipe in order]
    for recipe in order:
        name = recipe.name
        model_dir = artifacts_dir / "models" / name
        entry = as_dict(manifest_models.get(name))
        status = str(entry.get("status", "not_run")) if entry else "not_run"
        runs = read_seed_runs(model_dir, problems)
        summary = read_record(ModelSummary, model_dir / "summary.json", problems)
        seeds, observation_error = None, next((run.error for run in runs if run.error), None)
        if runs and observation_error is None:
            try:
                seeds = obs.summarise_seeds(name, {run.seed: run.epochs for run in runs})
            except ValueError as error:
                seeds, observation_error = None, str(error)
        view = _model_view(recipe, names, status, entry, summary, runs, observation_error,
                           figures, as_dict(validation.get(name)), candidates.get(name))
        _add_seeds(view, seeds, runs, entry, all_seeds)
        _add_reading(view, runs, dataset, baseline)
        views.append(view)
    _add_comparisons(views)
    return views


def validation_labels(dataset: dict[str, Any] | None) -> tuple[str | None, list[int] | None]:
    """The digest of the validation file list (None when dataset.json does not list them) and
    the validation label counts in class order (None when not recorded)."""
    dataset = as_dict(dataset)
    validation = as_dict(as_dict(dataset.get("splits")).get("validation"))
    files = validation.get("files")
    digest = files_digest([str(name) for name in files]) if isinstance(files, list) and files else None
    counts = as_dict(validation.get("label_counts"))
    class_names = dataset.get("class_names") if isinstance(dataset.get("class_names"), list) else []
    values = [as_int(counts.get(name)) for name in class_names]
    label_counts = values if values and all(value is not None and value >= 0 for value in values) and sum(values) > 0 else None
    return digest, label_counts


def correctness_matrix(runs: list[SeedRun], files_sha256: str | None) -> tuple[np.ndarray | None, list[int], str | None]:
    """Stack the seeds' per-image right/wrong rows; say why not when they cannot be used.

    A seed's predictions count only when they follow this run's validation file list and come
    from the epoch that is scored (its history's last)."""
    rows, seeds, problems = [], [], []
    for run in runs:
        record = run.predictions
        epochs = run.epochs if isinstance(run.epochs, list) else []
        last_epoch = as_int(as_dict(epochs[-1]).get("epoch")) if epochs else None
        if record is None:
            problems.append(f"seed {run.seed} has no recorded validation predictions")
        elif files_sha256 is not None and record.files_sha256 != files_sha256:
            problems.append(f"seed {run.seed}'s predictions are for another validation file list")
        elif record.epoch != last_epoch:
            problems.append(f"seed {run.seed}'s predictions are from epoch {record.epoch}, not its last epoch {last_epoch}")
        else:
            rows.append(record.correct)
            seeds.append(run.seed)
    if problems:
        return None, [], "; ".join(problems)
    if not rows or len({len(row) for row in rows}) != 1 or not rows[0]:
        return None, [], "the seeds' predictions do not cover the same validation images"
    return np.array(rows, dtype=bool), seeds, None


def _add_reading(view: ModelView, runs: list[SeedRun], dataset: dict[str, Any] | None, baseline: float | None) -> None:
    """The expert reading of one model: its interval, verdicts and best epochs (report_builder.analysis)."""
    if view.over_seeds is None:
        return
    histories = {run.seed: run.epochs for run in runs if isinstance(run.epochs, list)}
    view.histories = histories
    digest, label_counts = validation_labels(dataset)
    view.correct, view.correct_seeds, view.predictions_note = correctness_matrix(runs, digest)
    if view.correct is not None:
        view.interval = analysis.accuracy_interval(view.correct)
    view.best_epochs = {seed: analysis.best_epoch(history) for seed, history in histories.items()}
    if baseline is not None and label_counts:
        view.verdicts = analysis.curve_verdicts(histories, majority_accuracy=baseline,
                                                chance_loss=analysis.chance_loss(label_counts), interval=view.interval)
    if view.name in refs.STUDY_MODELS and not view.recipe.declared and _classes_of_the_write_ups(dataset):
        try:
            view.reference = refs.summarize(refs.load_references(), view.name)
        except ValueError:
            view.reference = None


def _classes_of_the_write_ups(dataset: dict[str, Any] | None) -> bool:
    """Whether the run classifies the reference write-ups' two classes, cats and dogs: only then
    do their figures for the built-in models mean anything next to this run's."""
    names = as_dict(dataset).get("class_names")
    if not isinstance(names, list):
        return False
    return sorted(str(name).lower().rstrip("s") for name in names) == ["cat", "dog"]


def confounds(first: ModelView, second: ModelView) -> list[str]:
    """Differences between two models other than the idea being compared, in words."""
    notes = []
    if first.precision and second.precision and first.precision != second.precision:
        notes.append(f"{first.name} trained in {first.precision}, {second.name} in {second.precision}")
    first_range, second_range = first.epoch_range, second.epoch_range
    if first_range and second_range and first_range[1] != second_range[1]:
        notes.append(f"{first.name} had {first_range[1]} epochs of training in all, {second.name} {second_range[1]}")
    return notes


def compare(first: ModelView, second: ModelView) -> PairedComparison:
    """First minus second, paired over validation images, seeds and images resampled."""
    counts = (len(first.correct_seeds), len(second.correct_seeds))
    if first.correct is None or second.correct is None:
        missing = first if first.correct is None else second
        reason = f"{missing.name} has no usable validation predictions" + (f" ({missing.predictions_note})" if missing.predictions_note else "")
        return PairedComparison(first.name, second.name, None, NOT_COMPARABLE, reason, confounds(first, second), counts)
    if first.correct.shape[1] != second.correct.shape[1]:
        return PairedComparison(first.name, second.name, None, NOT_COMPARABLE,
                                "their predictions cover different numbers of validation images", confounds(first, second), counts)
    difference = analysis.paired_difference(first.correct, second.correct)
    outcome = BETTER if difference.low > 0 else WORSE if difference.high < 0 else NO_CLEAR_DIFFERENCE
    return PairedComparison(first.name, second.name, difference, outcome, None, confounds(first, second), counts)


def _add_seeds(
    view: ModelView,
    seeds: obs.SeedSummary | None,
    runs: list[SeedRun],
    entry: dict[str, Any],
    all_seeds: list[int],
) -> None:
    """Fill in the per-seed facts of a model view: rows, missing seeds, the accuracy estimate."""
    precisions = sorted({run.precision for run in runs if run.precision})
    view.precision = artifact_text(entry.get("precision")) or (", ".join(precisions) if precisions else None)
    if seeds is None:
        return
    view.over_seeds = seeds
    run_entries = as_dict(entry.get("runs"))
    by_seed = {run.seed: run for run in runs}
    view.seed_rows = [_seed_row(result, by_seed[result.seed], as_dict(run_entries.get(str(result.seed))))
                      for result in seeds.seeds]
    found = {result.seed for result in seeds.seeds}
    view.missing_seeds = [seed for seed in all_seeds if seed not in found] if view.status != "not_run" else []
    view.accuracy = seeds.last_val


def _seed_row(result: obs.SeedResult, run: SeedRun, entry: dict[str, Any]) -> SeedRow:
    status = str(entry.get("status", STATUS_COMPLETE)) if entry else STATUS_COMPLETE
    return SeedRow(
        result=result,
        precision=run.precision,
        wall_seconds=finite(entry.get("wall_seconds")),
        status_label=STATUS_LABELS.get(status, "did not finish"),
        complete=status == STATUS_COMPLETE,
    )


def _add_comparisons(views: list[ModelView]) -> None:
    """Compare each model with the previous one, and note whose epochs lead into a continued curve."""
    by_name = {view.name: view for view in views}
    for view, previous in zip(views[1:], views[:-1]):
        if view.over_seeds is not None and previous.over_seeds is not None:
            view.comparison = compare(view, previous)
        source = by_name.get(view.recipe.continues_model or "")
        if source is not None and source.epoch_range is not None:
            view.lead_in = {"model": source.name, "first_epoch": source.epoch_range[0], "last_epoch": source.epoch_range[1]}


def _model_view(
    recipe: ModelRecipe,
    names: list[str],
    status: str,
    entry: dict[str, Any],
    summary: ModelSummary | None,
    runs: list[SeedRun],
    observation_error: str | None,
    figures: list[str],
    validation: dict[str, Any],
    selection_score: object,
) -> ModelView:
    name = recipe.name
    index = names.index(name)
    layers = [{"name": layer.name or None, "type": layer.type or None, "output_shape": layer.output_shape or None,
               "params": layer.params, "trainable": layer.trainable} for layer in (summary.layers if summary else [])]
    summary_text = summary.summary_text if summary else None
    error = entry.get("error")
    curves = f"curves_{name}.png"
    return ModelView(
        name=name,
        status=status,
        status_label=STATUS_LABELS.get(status, "did not finish"),
        complete=status == STATUS_COMPLETE,
        error=None if error is None else str(error),
        recipe=recipe,
        wall_seconds=finite(entry.get("wall_seconds")),
        epochs_completed=_epochs_completed(runs, entry),
        epochs_planned=_epochs_planned(runs, entry),
        title=(summary.title if summary else None) or f"The {name} model",
        description=(summary.description if summary else None) or None,
        has_summary=summary is not None,
        layers=layers,
        total_params=summary.total_params if summary else None,
        trainable_params=summary.trainable_params if summary else None,
        frozen_params=summary.non_trainable_params if summary else None,
        summary_text=summary_text if summary_text and summary_text.strip() else None,
        observation_error=observation_error,
        curves_figure=curves if curves in figures else None,
        previous=names[index - 1] if index > 0 else None,
        next=names[index + 1] if index + 1 < len(names) else None,
        validation_accuracy=finite(validation.get("accuracy")),
        selection_score=finite(selection_score),
    )


def _epochs_completed(runs: list[SeedRun], entry: dict[str, Any]) -> int | None:
    """Epochs finished over all of a model's runs: the manifest's sum, else the histories' lengths."""
    recorded = as_int(entry.get("epochs_completed"))
    if recorded is not None or not runs:
        return recorded
    return sum(len(run.epochs) for run in runs if isinstance(run.epochs, list))


def _epochs_planned(runs: list[SeedRun], entry: dict[str, Any]) -> int | None:
    """Epochs planned over all of a model's runs: per-run plan (state.json) times the runs."""
    planned = [run.epochs_planned for run in runs if run.epochs_planned is not None]
    run_count = len(as_dict(entry.get("runs"))) or len(runs)
    return max(planned) * run_count if planned else None


# --------------------------------------------------------------------------- view helpers


def flatten_config(config: object, prefix: str = "") -> list[tuple[str, str]]:
    """Nested config as sorted ``(dotted.key, json value)`` rows."""
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


#: Config keys that apply only when ... (section.key -> predicate on the config and the models run).
def _applies(key: str, config: dict[str, Any], models: list[ModelRecipe]) -> bool:
    data = as_dict(config.get("data"))
    source = data.get("source")
    recipes = {recipe.recipe for recipe in models}
    # the continuing models that take these keys from [training] (not set in their own table)
    finetune_defaults = [recipe for recipe in models if recipe.recipe == "finetune"]
    epochs_defaults = [recipe for recipe in models if recipe.recipe in ("finetune", "train_on") and not recipe.epochs]
    if key in ("data.url", "data.archive_sha256"):
        return source == "download"
    if key == "data.cache_dir":  # the downloaded archive and the decoded-image cache
        return source in ("download", "folder")
    if key == "data.data_dir":
        return source == "folder"
    if key.startswith("data.synthetic_"):
        return source == "synthetic"
    if key == "training.base_weights":
        return any(recipe.recipe == "transfer" and not recipe.weights for recipe in models)
    if key == "training.validation_feature_cache":
        return "transfer" in recipes
    if key == "training.finetune_epochs":
        return bool(epochs_defaults)
    if key == "training.finetune_from_layer":
        return any(recipe.unfreeze_from_layer is None for recipe in finetune_defaults)
    if key == "training.finetune_learning_rate_factor":
        return any(recipe.learning_rate_factor is None for recipe in finetune_defaults)
    if key in ("study.title", "study.question"):
        return False  # the front page says them
    if key == "models":
        return False  # no [models] tables: every model is a built-in one
    if key.startswith("dataset."):
        return False  # shown in its own table
    return True


def applicable_config_rows(config: object, models: list[ModelRecipe | str]) -> list[tuple[str, str]]:
    """The settings that applied to the models that ran (a folder run does not list the download
    URL, ...); `models` as recipes, or names the config declares or that are built in."""
    config = as_dict(config)
    if any(isinstance(model, str) for model in models):
        recipes = {recipe.name: recipe for recipe in study_models({"config": config}, [])}
        models = [recipes.get(model) or BUILT_IN.get(model) if isinstance(model, str) else model for model in models]
        models = [model for model in models if model is not None]
    return [(key, value) for key, value in flatten_config(config) if _applies(key, config, models)]


def study_text(manifest: dict[str, Any]) -> dict[str, str | None]:
    """The config's study.title and study.question (None when not given)."""
    return _pick_text(as_dict(manifest.get("config")).get("study"), ("title", "question"))


def about_data(manifest: dict[str, Any]) -> dict[str, str | None]:
    """The config's [dataset] description (name, description, source, licence): None values when not given."""
    return _pick_text(as_dict(manifest.get("config")).get("dataset"), ("name", "description", "source", "licence"))


def reading_rules() -> dict[str, Any]:
    """The thresholds of report_builder.analysis, for the method page to quote."""
    return {name.lower(): getattr(analysis, name) for name in (
        "RESAMPLES", "GENERATOR_SEED", "LEVEL", "FINAL_WINDOW", "LATE_EPOCHS", "TREND_WINDOW", "CHANCE_LOSS_FRACTION",
        "UNDERFIT_FRACTION", "RISING_SLOPE", "LOSS_RISE_FRACTION", "GAP_THRESHOLD", "SPREAD_THRESHOLD", "DROP_THRESHOLD")}


def sorted_items(mapping: object) -> list[tuple[str, Any]]:
    """Items of a mapping sorted by key (empty for non-mappings)."""
    if not isinstance(mapping, dict):
        return []
    return sorted(mapping.items(), key=lambda item: str(item[0]))


def split_rows(dataset: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Per split: label, count and per-class counts in class order (extra labels sorted after)."""
    dataset = as_dict(dataset)
    class_names = [str(name) for name in (dataset.get("class_names") or [])]
    splits = as_dict(dataset.get("splits"))
    rows = []
    for split in SPLIT_ORDER:
        info = as_dict(splits.get(split))
        if not info:
            continue
        counts = as_dict(info.get("label_counts"))
        labels = class_names + sorted(str(label) for label in counts if str(label) not in class_names)
        total = finite(info.get("count"))
        if total is None:
            total = float(sum(finite(value) or 0 for value in counts.values()))
        classes = []
        for label in labels:
            count = finite(counts.get(label))
            share = count / total if count is not None and total else None
            classes.append({"name": label, "count": count, "share": share})
        rows.append({"key": split, "label": SPLIT_LABELS[split], "count": total, "classes": classes})
    return rows


def total_wall_seconds(models: Iterable[ModelView]) -> float | None:
    """Sum of the known per-model wall times (None when none is known)."""
    values = [model.wall_seconds for model in models if model.wall_seconds is not None]
    return math.fsum(values) if values else None


def artifact_text(value: object) -> str | None:
    """Artifact text as a string (numbers and lists written as JSON), ``None`` when absent."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _pick_text(mapping: object, keys: Iterable[str]) -> dict[str, str | None]:
    source = as_dict(mapping)
    return {key: artifact_text(source.get(key)) for key in keys}


def baseline_view(dataset: dict[str, Any] | None) -> dict[str, Any] | None:
    """The majority baseline: class name and accuracy per split (None when not recorded)."""
    baseline = as_dict(as_dict(dataset).get("majority_baseline"))
    if not baseline:
        return None
    accuracy = as_dict(baseline.get("accuracy"))
    return {
        "class_name": artifact_text(baseline.get("class_name")) or "unknown",
        "accuracy": {split: finite(accuracy.get(split)) for split in SPLIT_ORDER},
    }


def test_view(metrics: dict[str, Any] | None) -> dict[str, Any] | None:
    """The single test evaluation, or None when the run has none."""
    test = as_dict(as_dict(metrics).get("test"))
    if not test or finite(test.get("accuracy")) is None:
        return None
    view = {
        "model": artifact_text(test.get("model")),
        "seed": artifact_text(test.get("seed")),
        "accuracy": finite(test.get("accuracy")),
        "correct": finite(test.get("correct")),
        "total": finite(test.get("total")),
        "interval": None,
        "confusion": None,
        "per_class": None,
    }
    correct, total = as_int(test.get("correct")), as_int(test.get("total"))
    if correct is not None and total is not None:
        view["interval"] = obs.wilson_interval(correct, total)
    class_names = test.get("class_names")
    confusion = test.get("confusion_matrix")
    if (
        isinstance(class_names, list)
        and isinstance(confusion, list)
        and len(confusion) == len(class_names)
        and all(isinstance(row, list) and len(row) == len(class_names) for row in confusion)
        and all(as_int(cell) is not None and as_int(cell) >= 0 for row in confusion for cell in row)
    ):
        names = [artifact_text(name) or "?" for name in class_names]
        matrix = [[as_int(cell) for cell in row] for row in confusion]
        view["confusion"] = list(zip(names, matrix))
        view["confusion_names"] = names
        view["per_class"] = obs.per_class_scores(names, matrix)
    return view


def selection_view(metrics: dict[str, Any] | None, order: Iterable[str] = MODEL_ORDER) -> dict[str, Any] | None:
    """How the model was chosen: the rule and each candidate's validation score, in study order."""
    order = list(order)
    selection = as_dict(as_dict(metrics).get("selection"))
    if not selection:
        return None
    scores = as_dict(selection.get("candidates"))
    names = [name for name in order if name in scores]
    names += sorted(str(name) for name in scores if name not in order)
    candidates = [(name, finite(scores[name])) for name in names]
    return {
        "rule": artifact_text(selection.get("rule")) or "not recorded",
        "metric": artifact_text(selection.get("metric")) or "not recorded",
        "candidates": candidates,
        "seed_candidates": seed_candidates(selection.get("seed_candidates")),
        "chosen_seed": artifact_text(as_dict(metrics).get("chosen_seed")),
    }


def seed_candidates(scores: object) -> list[tuple[str, float | None]]:
    """The chosen model's per-seed validation scores as (seed, score), numeric seeds first in order."""
    def order(seed: str) -> tuple[int, int, str]:
        return (0, int(seed), "") if seed.isdigit() else (1, 0, seed)

    scores = as_dict(scores)
    return [(str(seed), finite(scores[seed])) for seed in sorted(scores, key=lambda key: order(str(key)))]


def runner_up(models: Iterable[ModelView], chosen: str | None) -> ModelView | None:
    """The model with the highest mean last-epoch validation accuracy other than ``chosen``."""
    others = [model for model in models if model.name != chosen and model.accuracy is not None
              and model.accuracy.mean is not None]
    return max(others, key=lambda model: model.accuracy.mean, default=None)


def chosen_comparison(models: list[ModelView], chosen: str | None) -> PairedComparison | None:
    """The chosen model against the runner-up, paired (:func:`compare`)."""
    by_name = {model.name: model for model in models}
    winner, second = by_name.get(chosen or ""), runner_up(models, chosen)
    if winner is None or winner.over_seeds is None or second is None:
        return None
    return compare(winner, second)


def control_comparison(models: list[ModelView]) -> PairedComparison | None:
    """A fine-tuned model against its budget-matched control (recipe train_on: the same model
    it continues, trained on for as many epochs with nothing unfrozen), when both ran: the
    first such pair in study order."""
    for finetune in models:
        if finetune.recipe.recipe != "finetune" or finetune.over_seeds is None:
            continue
        for control in models:
            if (control.recipe.recipe == "train_on" and control.recipe.continues == finetune.recipe.continues
                    and control.over_seeds is not None and control.epoch_range == finetune.epoch_range):
                return compare(finetune, control)
    return None


def dataset_view(dataset: dict[str, Any] | None) -> dict[str, Any] | None:
    """Dataset facts for the method page (all as text, except the test fraction)."""
    if dataset is None:
        return None
    class_names = dataset.get("class_names")
    image_size = dataset.get("image_size")
    return {
        "class_names": [str(name) for name in class_names] if isinstance(class_names, list) else [],
        "image_size": " x ".join(str(side) for side in image_size) if isinstance(image_size, list) else artifact_text(image_size),
        "seed": artifact_text(dataset.get("seed")),
        "test_fraction": finite(dataset.get("test_fraction")),
    }


def skipped_view(dataset: dict[str, Any] | None) -> list[dict[str, str | None]]:
    """Skipped files with their reasons, in the recorded order."""
    skipped = as_dict(dataset).get("skipped")
    if not isinstance(skipped, list):
        return []
    return [_pick_text(item, ("file", "reason")) for item in skipped if isinstance(item, dict)]


def page_context(run: RunView) -> dict[str, Any]:
    """The variables every template sees; every value is present (templates use StrictUndefined)."""
    manifest = run.manifest
    metrics = as_dict(run.metrics)
    models_by_name = {model.name: model for model in run.models}
    chosen_name = artifact_text(metrics.get("chosen_model"))
    devices = manifest.get("devices")
    dataset = dataset_view(run.dataset)
    return {
        "run_status": artifact_text(manifest.get("status")) or "unknown",
        "run_info": _pick_text(
            manifest,
            ("config_hash", "data_fingerprint", "git_commit", "started_at", "finished_at", "status", "run_name"),
        ),
        "data_source": _pick_text(manifest.get("data_source"), ("kind", "location")),
        "base_weights": _pick_text(manifest.get("base_weights"), ("kind", "location", "sha256")),
        "versions": [(str(name), artifact_text(value)) for name, value in sorted_items(manifest.get("versions"))],
        "hardware": [(str(name), artifact_text(value)) for name, value in sorted_items(manifest.get("hardware"))],
        "devices": [str(device) for device in devices] if isinstance(devices, list) else [],
        "has_dataset": run.dataset is not None,
        "has_metrics": run.metrics is not None,
        "dataset_info": dataset,
        "class_names": dataset["class_names"] if dataset else [],
        "models": run.models,
        "models_by_name": models_by_name,
        "figures": run.figures,
        "problems": run.problems,
        "split_rows": split_rows(run.dataset),
        "baseline": baseline_view(run.dataset),
        "skipped": skipped_view(run.dataset),
        "chosen_name": chosen_name,
        "chosen_comparison": chosen_comparison(run.models, chosen_name),
        "seeds": run.seeds,
        "validation_count": _validation_count(run.dataset),
        "control_comparison": control_comparison(run.models),
        "about_data": about_data(manifest),
        "rules": reading_rules(),
        "outcomes": {"better": BETTER, "worse": WORSE, "none": NO_CLEAR_DIFFERENCE, "unknown": NOT_COMPARABLE},
        "selection": selection_view(run.metrics, [model.name for model in run.models]),
        "test": test_view(run.metrics),
        "config_rows": applicable_config_rows(manifest.get("config", {}), [model.recipe for model in run.models if model.status != "not_run"]),
        "study": study_text(manifest),
        "heatmap_from_classes": HEATMAP_FROM_CLASSES,
        # the study's --base-weights reached a model: a transfer model without weights of its own ran
        "uses_base_weights": any(model.recipe.recipe == "transfer" and not model.recipe.weights
                                 for model in run.models if model.status != "not_run"),
        "augmentation_model": next((model.name for model in run.models if model.recipe.augment), None),
        "total_wall_seconds": total_wall_seconds(run.models),
    }


# --------------------------------------------------------------------------- per-seed histories (charts, CSV downloads)


def seed_histories(run: RunView) -> dict[str, dict[int, list[obs.EpochRecord]]]:
    """Each reported model's cleaned history per seed (model -> seed -> epochs, seeds in numeric
    order), as load_run read them: the seeds of every model with an aggregate over seeds."""
    histories: dict[str, dict[int, list[obs.EpochRecord]]] = {}
    for model in run.models:
        if model.over_seeds is None:
            continue
        runs: dict[int, list[obs.EpochRecord]] = {}
        for seed, epochs in sorted(model.histories.items()):
            try:
                runs[seed] = obs.clean_history(epochs, f"{model.name} (seed {seed})")
            except ValueError:
                continue
        histories[model.name] = runs
    return histories
