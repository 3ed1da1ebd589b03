"""Turn one run's loaded records into the view data the page templates read.

The run folder is read, once, by :func:`experiments.artifacts.loader.load_run_folder`: every file
checked into a typed record, a missing or broken one a problem note on the method page, and a
missing or unusable manifest one :class:`ReportError`. This module reads no file: it makes the
comparisons, intervals and verdicts from those records, so the templates receive plain, typed data.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from experiments.artifacts.cell_records import Epoch, ModelSummary, summary_text_named
from experiments.artifacts.loader import RERUN_COMMAND, ModelFiles, RunFolderError, RunRecords, SeedRun, load_run_folder
from experiments.artifacts.run_records import (
    BaseWeights,
    ComparisonPairs,
    Dataset,
    DataSource,
    Manifest,
    Metrics,
    ModelEntry,
    ModelScore,
    RunEntry,
    StudyModel,
    as_dict,
    flatten_config,
)
from experiments.errors import UserError
from report_builder import analysis
from report_builder import observations as obs
from report_builder import references as refs
from report_builder.formatting import finite, parse_time

#: study.compare's default: each model against the one before it in study order.
PLAN_PREVIOUS = "previous"
#: From this many classes on, the test confusion matrix is a heatmap figure (experiments.study.figures draws it).
HEATMAP_FROM_CLASSES = 7
#: Outcomes of a paired comparison of two models' validation accuracy.
BETTER, WORSE, NO_CLEAR_DIFFERENCE, NOT_COMPARABLE = "better", "worse", "no clear difference", "not comparable"
#: Short words for each curve verdict, for table cells (the model pages say them in full).
VERDICT_LABELS = {
    analysis.AT_CHANCE: "near chance",
    analysis.OVERCONFIDENT: "over-confident",
    analysis.UNDERFITTING: "underfits",
    analysis.STILL_IMPROVING: "still improving",
    analysis.OVERFITTING_LOSS: "val. loss rising",
    analysis.OVERFITTING_GAP: "train-val gap",
    analysis.UNSTABLE_SPREAD: "seeds disagree",
    analysis.LATE_DROP: "late drop",
    analysis.SETTLED: "settled",
}
#: A model whose wrong answers get at least this mean probability is sure of them (over-confident).
CONFIDENT_WRONG = 0.75
#: A comparison notes its last-epochs mean difference when it moves the result by at least this much.
WINDOW_MOVE_POINTS = 0.01
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
    recipe: StudyModel  # manifest.study's record of its resolved recipe
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
    training: dict[str, Any] | None = None  # summary.json's optimizer, learning rate, ... (absent before they were recorded)
    comparison: PairedComparison | None = None  # its first planned comparison (study.compare) in which it comes first
    planned: list[tuple[str, PairedComparison | None]] = field(default_factory=list)  # those in which it comes first
    # the planned comparisons its page shows, (the other model, the comparison or None when one of the two has no history):
    # those in which it comes first, and with a plan other than "previous" those in which it comes second too
    page_comparisons: list[tuple[str, PairedComparison | None]] = field(default_factory=list)
    lead_in: dict[str, Any] | None = None  # the model whose epochs lead into this one's curve
    correct: np.ndarray | None = field(default=None, repr=False)  # (seeds, validation images): right or wrong
    correct_seeds: list[int] = field(default_factory=list)  # the seeds of the rows of `correct`
    predictions_note: str | None = None  # why there is no interval, when there is none
    interval: analysis.Interval | None = None  # mean final validation accuracy, seeds and images resampled
    verdicts: list[analysis.Verdict] = field(default_factory=list)
    best_epochs: dict[int, int | None] = field(default_factory=dict)  # seed -> analysis.best_epoch
    reference: dict[str, Any] | None = None  # references.summarize for this model
    histories: dict[int, list[Epoch]] = field(default_factory=dict, repr=False)  # seed -> the history's checked epochs
    train_below_validation: dict[str, Any] | None = None  # training accuracy below validation, and why (augmentation, dropout)
    cell_times: list[tuple[str | None, str | None]] = field(default_factory=list)  # per seed: state.json's start, finish

    @property
    def verdict_labels(self) -> list[str]:
        """Short words per verdict (the model pages say them in full); a chance-level loss whose
        runs are not sure of their wrong answers is not called over-confident."""
        return ["chance-level loss" if verdict.code == analysis.OVERCONFIDENT and verdict.facts.get("confident") is False
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
    paired_by_seed: bool = False  # both descend from the same runs: rows paired by seed
    shared_lineage: bool = False  # one continues the other, or both continue one model
    identical: bool = False  # bit-identical predictions and histories: the same runs under two names
    window_difference: float | None = None  # the difference on the mean of each seed's last FINAL_WINDOW epochs
    improving: list[str] = field(default_factory=list)  # which of the two were still improving when training stopped
    cost: dict[str, tuple[int | None, float | None]] = field(default_factory=dict)  # first/second: (epochs, wall seconds)
    seeds_needed: int | None = None  # seeds per model that would settle a close call (analysis.seeds_to_settle)
    family_size: int = 1  # comparisons in the report's family (Holm)
    holm_failed: bool = False  # the interval excludes zero, but not after Holm's correction over the family

    @property
    def window_changes_conclusion(self) -> bool:
        """Whether the same interval, centred on the last-epochs mean difference, would say otherwise."""
        if self.difference is None or self.window_difference is None or self.difference.identical:
            return False
        shift = self.window_difference - self.difference.estimate
        low, high = self.difference.low + shift, self.difference.high + shift
        return (low > 0) != (self.difference.low > 0) or (high < 0) != (self.difference.high < 0)

    @property
    def window_moves(self) -> bool:
        """Whether the last-epochs mean difference differs from the last epoch's by a point or
        more, and by a third of the interval's half-width: the last epoch moves the result."""
        if self.difference is None or self.window_difference is None or self.difference.identical:
            return False
        half_width = (self.difference.high - self.difference.low) / 2
        return abs(self.window_difference - self.difference.estimate) >= max(WINDOW_MOVE_POINTS, half_width / 3)

    @property
    def cost_ratio(self) -> float | None:
        """First's wall time over second's, when both are known and positive."""
        first, second = self.cost.get("first", (None, None))[1], self.cost.get("second", (None, None))[1]
        return first / second if first and second else None

    @property
    def winner(self) -> str | None:
        return {BETTER: self.first, WORSE: self.second}.get(self.outcome)


@dataclass
class SeedRow:
    """One seed's run of a model, for the per-seed table."""

    result: obs.SeedResult
    precision: str | None
    wall_seconds: float | None
    status_label: str
    complete: bool


@dataclass
class RunView:
    """The whole run, loaded and cleaned for the templates."""

    artifacts_dir: Path
    manifest: Manifest
    dataset: Dataset | None
    metrics: Metrics | None
    models: list[ModelView]
    figures: list[str]
    seeds: list[int]
    problems: list[str] = field(default_factory=list)
    plan: ComparisonPairs = field(default_factory=lambda: ComparisonPairs(PLAN_PREVIOUS))
    # study.compare's pairs in plan order: (first, second, the comparison or None when one of the two has no history)
    planned: list[tuple[str, str, PairedComparison | None]] = field(default_factory=list)


def run_seeds(manifest: Manifest) -> list[int]:
    """The run's training seeds from the manifest, in numeric order (empty when not recorded)."""
    return sorted(set(manifest.seeds))


def load_run(artifacts_dir: Path) -> RunView:
    """Load a run's artifact folder (experiments.artifacts.loader.load_run_folder) into view data.
    Raises :class:`ReportError` without a usable manifest."""
    try:
        records = load_run_folder(artifacts_dir)
    except RunFolderError as error:
        raise ReportError(str(error)) from None
    return run_view(records)


def run_view(records: RunRecords) -> RunView:
    """The view data of a loaded run: every model of the study, its comparisons and readings.
    Raises :class:`ReportError` when metrics.json names a model the study does not have."""
    manifest, study, metrics = records.manifest, records.study, records.metrics
    check_chosen_model(records.folder / "metrics.json", metrics, study.names)
    present = set(records.figures)
    figures = [name for name in sorted(_figure_names(study.models)) if name in present]
    models = load_models(records, figures, study.compare)
    seeds = run_seeds(manifest) or sorted({row.result.seed for model in models for row in model.seed_rows})
    planned = [(first, second, comparison) for model in models for first, second, comparison in _planned_of(model)]
    order_of = {pair: index for index, pair in enumerate(study.compare.pairs)}
    planned.sort(key=lambda item: order_of[(item[0], item[1])])
    return RunView(records.folder, manifest, records.dataset, metrics, models, figures, seeds, list(records.problems),
                   study.compare, planned)


def check_chosen_model(path: Path, metrics: Metrics | None, names: list[str]) -> None:
    """:class:`ReportError` naming metrics.json and the model when it names a chosen model (or a
    tested one) that is not one of the run's models `names`: the report would headline a model
    that does not exist."""
    if metrics is None:
        return
    shown = ", ".join(names) or "none"
    if metrics.chosen_model is not None and metrics.chosen_model not in names:
        raise ReportError(f"artifact file {path} names {metrics.chosen_model!r} as the chosen model, but the run has no "
                          f"such model (its models: {shown}); rerun `{RERUN_COMMAND}` to choose and test again.")
    tested = metrics.test.model if metrics.test is not None else None
    if tested is not None and tested != metrics.chosen_model:
        raise ReportError(f"artifact file {path} holds the test score of {tested!r}, not of the chosen model "
                          f"{metrics.chosen_model!r}; rerun `{RERUN_COMMAND}` to choose and test again.")


def _planned_of(model: ModelView) -> list[tuple[str, str, PairedComparison | None]]:
    """The planned comparisons in which `model` comes first."""
    return [(model.name, other, comparison) for other, comparison in model.planned]


def _figure_names(order: list[StudyModel]) -> list[str]:
    """Every figure a run may have, each in its light and dark variant."""
    names = ["data_grid", "augmentation_flip", "augmentation_rotation", "comparison", "misclassified_test", "confusion_test"]
    names += [f"curves_{recipe.name}" for recipe in order]
    return [f"{name}{variant}.png" for name in names for variant in ("", "-dark")]


def _baseline_validation_accuracy(dataset: Dataset | None) -> float | None:
    baseline = dataset.majority_baseline if dataset else None
    return baseline.accuracy.get("validation") if baseline else None


def _validation_count(dataset: Dataset | None) -> int | None:
    """Images in the validation split (the n of every validation interval), ``None`` when unknown."""
    validation = dataset.splits.get("validation") if dataset else None
    return validation.count if validation is not None and validation.count > 0 else None


def load_models(records: RunRecords, figures: list[str], plan: ComparisonPairs | None = None) -> list[ModelView]:
    """A view of every model of the study (manifest.study's), in study order, run or not, and
    the comparisons `plan` names (default: each model with the one before it)."""
    manifest, dataset, metrics = records.manifest, records.dataset, records.metrics
    order = records.study.models
    baseline = _baseline_validation_accuracy(dataset)
    validation = metrics.validation if metrics else {}
    candidates = metrics.selection.candidates if metrics else {}
    all_seeds = run_seeds(manifest)
    views: list[ModelView] = []
    names = [recipe.name for recipe in order]
    for recipe in order:
        name = recipe.name
        files = records.models.get(name) or ModelFiles(name, None, [])
        entry = manifest.models.get(name)
        status = entry.status if entry else "not_run"
        runs, summary = files.runs, files.summary
        seeds, observation_error = None, next((run.error for run in runs if run.error), None)
        if runs and observation_error is None:  # every history was checked when it was loaded
            seeds = obs.summarise_checked(name, {run.seed: run.epochs for run in runs})
        view = _model_view(recipe, names, status, entry, summary, runs, observation_error,
                           figures, validation.get(name), candidates.get(name))
        _add_seeds(view, seeds, runs, entry, all_seeds)
        view.cell_times = [(run.started_at, run.finished_at) for run in runs]
        _add_reading(view, runs, dataset, baseline)
        views.append(view)
    _add_comparisons(views, manifest.base_weights.kind if manifest.base_weights else None, plan)
    return views


def validation_labels(dataset: Dataset | None) -> tuple[str | None, list[int] | None]:
    """The digest of the validation file list (None when dataset.json does not list them) and
    the validation label counts in class order (None when not recorded)."""
    validation = dataset.splits.get("validation") if dataset else None
    if validation is None:
        return None, None
    digest = dataset.validation_files_sha256()
    values = [validation.label_counts.get(name) for name in dataset.class_names]
    label_counts = values if all(value is not None for value in values) and sum(values) > 0 else None
    return digest, label_counts


def correctness_matrix(runs: list[SeedRun], files_sha256: str | None) -> tuple[np.ndarray | None, list[int], str | None]:
    """Stack the seeds' per-image right/wrong rows; say why not when they cannot be used.

    A seed's predictions count only when they follow this run's validation file list and come
    from the epoch that is scored (its history's last)."""
    rows, seeds, problems = [], [], []
    for run in runs:
        record = run.predictions
        last_epoch = run.epochs[-1].epoch if run.epochs else None
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


def _add_reading(view: ModelView, runs: list[SeedRun], dataset: Dataset | None, baseline: float | None) -> None:
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
        view.verdicts = analysis.curve_verdicts(histories, majority_accuracy=baseline, chance_loss=analysis.chance_loss(label_counts),
                                                interval=view.interval, validation_count=_validation_count(dataset))
        view.verdicts = [_with_confidence(verdict, runs) for verdict in view.verdicts]
    if view.name in refs.STUDY_MODELS and not view.recipe.declared and _classes_of_the_write_ups(dataset):
        try:
            view.reference = refs.summarize(refs.load_references(), view.name)
        except ValueError:
            view.reference = None


def _train_below_validation(view: ModelView, by_name: dict[str, ModelView]) -> dict[str, Any] | None:
    """Final training accuracy below validation accuracy in a model trained with augmentation or
    dropout, which are on while training accuracy is measured and off for validation. A model
    that continues another's runs trains that model, its augmentation and dropout included."""
    train = analysis.window_mean(view.histories, "accuracy")
    validation = analysis.window_mean(view.histories, "val_accuracy")
    recipes = [view.recipe] + [by_name[name].recipe for name in _ancestors(view, by_name)]
    causes = (["augmentation"] if any(recipe.augment for recipe in recipes) else []) + (["dropout"] if any(recipe.dropout for recipe in recipes) else [])
    if train is None or validation is None or train >= validation or not causes:
        return None
    return {"train": train, "validation": validation, "causes": causes}


def _with_confidence(verdict: analysis.Verdict, runs: list[SeedRun]) -> analysis.Verdict:
    """A chance-level loss above chance accuracy has two stories, told apart by the probabilities
    the runs gave their answers: sure of its wrong answers (over-confident), or unsure of all of
    them (hesitant, its probabilities near the class shares). Adds the mean probability of the
    predicted class on the wrong answers and on all, and ``confident`` (the wrong answers' mean
    at least CONFIDENT_WRONG)."""
    if verdict.code != analysis.OVERCONFIDENT:
        return verdict
    every, wrong = [], []
    for run in runs:
        record = run.predictions
        if record is None:
            continue
        for label, predicted, probability in zip(record.labels, record.predicted, record.probability):
            every.append(probability)
            if label != predicted:
                wrong.append(probability)
    if not every:
        return verdict
    wrong_mean = statistics.fmean(wrong) if wrong else None
    facts = {**verdict.facts, "mean_confidence": statistics.fmean(every), "wrong_confidence": wrong_mean,
             "confident": wrong_mean is not None and wrong_mean >= CONFIDENT_WRONG}
    return analysis.Verdict(verdict.code, facts)


def _classes_of_the_write_ups(dataset: Dataset | None) -> bool:
    """Whether the run classifies the reference write-ups' two classes, cats and dogs: only then
    do their figures for the built-in models mean anything next to this run's."""
    return dataset is not None and sorted(name.lower().rstrip("s") for name in dataset.class_names) == ["cat", "dog"]


def lineage_root(view: ModelView, by_name: dict[str, ModelView]) -> str:
    """The model whose fresh runs a model's runs descend from (itself unless it continues one)."""
    ancestors = _ancestors(view, by_name)
    return ancestors[-1] if ancestors else view.name


def _ancestors(view: ModelView, by_name: dict[str, ModelView]) -> list[str]:
    """The models a model continues, nearest first (empty for a model trained from its start)."""
    found, name = [], view.recipe.continues_model
    while name and name in by_name and name not in found and name != view.name:
        found.append(name)
        name = by_name[name].recipe.continues_model
    return found


def _recipe_traits(view: ModelView, base_weights: str | None, by_name: dict[str, ModelView]) -> dict[str, str]:
    """What a model's recipe says of its start, input and augmentation, in words, for confounds.
    A model that continues another's runs inherits that model's start, input and augmentation
    (the continued model, augmentation layers included, is what it trains on)."""
    root = lineage_root(view, by_name)
    recipe = by_name[root].recipe if root in by_name else view.recipe
    traits: dict[str, str] = {}
    if recipe.recipe == "transfer":
        backbone = recipe.backbone_name or recipe.backbone
        weights = recipe.weights or base_weights or ""
        if recipe.own_backbone:
            traits["start"] = f"starts from the study's own backbone {backbone}"
            traits["input"] = "raw pixels, scaled as its backbone's builder chooses"
        else:
            traits["start"] = (f"starts from a {backbone} with random weights" if weights == "none"
                               else f"starts from a {backbone} pre-trained on ImageNet")
            traits["input"] = f"{backbone}'s own input scaling"
    elif recipe.recipe == "keras":  # the study's own code: the report knows only its declaration
        traits["start"] = f"is built by the study's own {recipe.builder}"
        traits["input"] = "raw pixels, scaled as its builder chooses"
        traits["augment"] = "whatever augmentation its builder adds"
        return traits
    elif recipe.continues_model:
        traits["start"] = f"continues {recipe.continues_model}'s runs"
        traits["input"] = f"{recipe.continues_model}'s input"
    else:
        traits["start"] = "learns from random weights"
        traits["input"] = "pixels scaled to [-1, 1]" if recipe.rescale else "raw pixel values from 0 to 255"
    traits["augment"] = "random flips and rotations in training" if recipe.augment else "no augmentation"
    return traits


def confounds(first: ModelView, second: ModelView, base_weights: str | None = None,
              by_name: dict[str, ModelView] | None = None) -> list[str]:
    """How two models differ besides chance, in words, most telling first: where they start
    (pre-trained weights or not), their input scaling, augmentation, the epochs they trained,
    and last their numeric precision."""
    notes = []
    by_name = by_name if by_name is not None else {first.name: first, second.name: second}
    first_traits, second_traits = _recipe_traits(first, base_weights, by_name), _recipe_traits(second, base_weights, by_name)
    for key in ("start", "input", "augment"):
        if first_traits[key] != second_traits[key]:
            notes.append(f"{first.name} {_trait_phrase(key, first_traits[key])}, {second.name} {_trait_phrase(key, second_traits[key])}")
    first_range, second_range = first.epoch_range, second.epoch_range
    if first_range and second_range and first_range[1] != second_range[1]:
        notes.append(f"{first.name} had {first_range[1]} epochs of training in all, {second.name} {second_range[1]}")
    if first.precision and second.precision and first.precision != second.precision:
        notes.append(f"{first.name} trained in {first.precision}, {second.name} in {second.precision}")
    if first.training and second.training:
        differing = [key for key in TRAINING_PHRASES if first.training.get(key) != second.training.get(key)]
        if differing:
            notes.append(f"{first.name} trained with {training_phrase(first.training, differing)}, "
                         f"{second.name} with {training_phrase(second.training, differing)}")
    return notes


#: How summary.json's training settings read in a sentence (those that differ between two models).
TRAINING_PHRASES = {"optimizer": "{} optimizer", "learning_rate": "learning rate {:g}", "schedule": "{} schedule",
                    "weight_decay": "weight decay {:g}", "label_smoothing": "label smoothing {:g}", "batch_size": "batches of {}"}


def training_phrase(training: dict[str, Any], keys: list[str]) -> str:
    """`keys` of a model's training settings in words: "AdamW optimizer, learning rate 0.0003"."""
    names = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD (momentum 0.9)", "rmsprop": "RMSprop"}
    parts = []
    for key in keys:
        value = training.get(key)
        value = names.get(value, value) if key == "optimizer" else value
        try:
            parts.append(TRAINING_PHRASES[key].format(value))
        except (TypeError, ValueError):
            parts.append(f"{key.replace('_', ' ')} {value}")
    return ", ".join(parts)


#: The recorded training settings a settings table shows, in this order, with their labels.
SETTING_LABELS = {"optimizer": "Optimizer", "learning_rate": "Learning rate", "schedule": "Schedule",
                  "weight_decay": "Weight decay", "label_smoothing": "Label smoothing", "batch_size": "Batch size",
                  "epochs": "Epochs"}
OPTIMIZER_NAMES = {"adam": "Adam", "adamw": "AdamW", "sgd": "SGD (momentum 0.9)", "rmsprop": "RMSprop"}


def setting_text(key: str, value: Any) -> str:
    """One recorded training setting as a table cell shows it."""
    if value is None:
        return "not recorded"
    if key == "optimizer":
        return OPTIMIZER_NAMES.get(value, str(value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def training_differences(models: Iterable[ModelView]) -> dict[str, Any] | None:
    """The training settings that differ between the study's models (summary.json's "training"):
    {"keys": [(key, label)], "rows": [(model, {key: text})], "values": {model: {key: text}},
    "others": {model: {key: [(text, [the other models with it])]}}};
    None when fewer than two models recorded them, or none differs."""
    recorded = [model for model in models if model.training and model.status != "not_run"]
    keys = [key for key in SETTING_LABELS
            if len({json.dumps(model.training.get(key), sort_keys=True) for model in recorded}) > 1]
    if len(recorded) < 2 or not keys:
        return None
    rows = [(model.name, {key: setting_text(key, model.training.get(key)) for key in keys}) for model in recorded]
    others: dict[str, dict[str, list[tuple[str, list[str]]]]] = {}
    for name, _values in rows:
        per_key: dict[str, list[tuple[str, list[str]]]] = {}
        for key in keys:
            groups: dict[str, list[str]] = {}
            for other, other_values in rows:
                if other != name:
                    groups.setdefault(other_values[key], []).append(other)
            per_key[key] = list(groups.items())
        others[name] = per_key
    return {"keys": [(key, SETTING_LABELS[key]) for key in keys], "rows": rows, "values": dict(rows), "others": others}


def _trait_phrase(key: str, value: str) -> str:
    return {"input": f"sees {value}", "augment": f"has {value}"}.get(key, value)


def compare(first: ModelView, second: ModelView, by_name: dict[str, ModelView] | None = None,
            base_weights: str | None = None) -> PairedComparison:
    """First minus second, paired over validation images; paired by seed too when both descend
    from the same runs (one continues the other, or both continue one model) with the same seeds."""
    by_name = by_name if by_name is not None else {first.name: first, second.name: second}
    counts = (len(first.correct_seeds), len(second.correct_seeds))
    notes = confounds(first, second, base_weights, by_name)
    if first.correct is None or second.correct is None:
        missing = first if first.correct is None else second
        reason = f"{missing.name} has no usable validation predictions" + (f" ({missing.predictions_note})" if missing.predictions_note else "")
        return PairedComparison(first.name, second.name, None, NOT_COMPARABLE, reason, notes, counts)
    if first.correct.shape[1] != second.correct.shape[1]:
        return PairedComparison(first.name, second.name, None, NOT_COMPARABLE,
                                "their predictions cover different numbers of validation images", notes, counts)
    same_lineage = lineage_root(first, by_name) == lineage_root(second, by_name)
    paired = same_lineage and first.correct_seeds == second.correct_seeds and len(first.correct_seeds) > 1
    difference = analysis.paired_difference(first.correct, second.correct, paired=paired)
    outcome = BETTER if difference.low > 0 else WORSE if difference.high < 0 else NO_CLEAR_DIFFERENCE
    comparison = PairedComparison(first.name, second.name, difference, outcome, None, notes, counts)
    comparison.paired_by_seed = paired
    comparison.shared_lineage = same_lineage
    comparison.identical = difference.identical and first.histories == second.histories
    comparison.window_difference = _window_difference(first, second)
    comparison.improving = [view.name for view in (first, second) if any(v.code == analysis.STILL_IMPROVING for v in view.verdicts)]
    comparison.cost = {"first": (first.epochs_completed, first.wall_seconds), "second": (second.epochs_completed, second.wall_seconds)}
    if outcome == NO_CLEAR_DIFFERENCE and difference.seed_variation_known and not difference.identical:
        fixed, per_seed = _image_variance_parts(first, second)
        comparison.seeds_needed = analysis.seeds_to_settle(difference.estimate, _seed_sd(first, second, paired),
                                                          image_variance=fixed, interaction_variance=per_seed)
    return comparison


def _window_difference(first: ModelView, second: ModelView) -> float | None:
    """First minus second on each seed's mean validation accuracy over its last FINAL_WINDOW epochs."""
    first_mean = analysis.window_mean(first.histories, "val_accuracy")
    second_mean = analysis.window_mean(second.histories, "val_accuracy")
    return None if first_mean is None or second_mean is None else first_mean - second_mean


def _seed_sd(first: ModelView, second: ModelView, paired: bool) -> float:
    """The seed-to-seed standard deviation of one model's accuracy, pooled over the two."""
    seeds_first, seeds_second = first.correct.mean(axis=1), second.correct.mean(axis=1)
    if paired:
        return float(np.std(seeds_first - seeds_second, ddof=1)) / math.sqrt(2)
    variances = [float(np.var(values, ddof=1)) for values in (seeds_first, seeds_second) if len(values) > 1]
    return math.sqrt(statistics.fmean(variances)) if variances else 0.0


def _image_variance_parts(first: ModelView, second: ModelView) -> tuple[float, float]:
    """The image part of the difference's variance split in two: what more seeds leave (the
    images' own difficulty) and, per seed, what they average out (which seed gets which image right)."""
    images = first.correct.shape[1]
    per_image = first.correct.mean(axis=0) - second.correct.mean(axis=0)
    if images < 2:
        return 0.0, 0.0
    first_interaction, second_interaction = analysis.interaction_variance(first.correct), analysis.interaction_variance(second.correct)
    observed = float(np.var(per_image, ddof=1))
    fixed = max(0.0, observed - first_interaction / len(first.correct) - second_interaction / len(second.correct))
    return fixed / images, (first_interaction + second_interaction) / images


def settle_family(comparisons: list[PairedComparison | None]) -> int:
    """Hold the family-wise error rate over the report's comparisons with Holm's correction.

    Each distinct pair of models counts once. A comparison whose interval excludes zero keeps
    its "better" only when Holm's step-down correction at 1 - LEVEL over the family rejects too;
    otherwise it becomes "no clear difference" with ``holm_failed`` set. Returns the family size.
    """
    family: dict[frozenset[str], list[PairedComparison]] = {}
    for comparison in comparisons:
        if comparison is not None and comparison.difference is not None:
            family.setdefault(frozenset((comparison.first, comparison.second)), []).append(comparison)
    groups = list(family.values())
    rejected = analysis.holm_rejections([group[0].difference.p_value for group in groups])
    for group, holds in zip(groups, rejected):
        for comparison in group:
            comparison.family_size = len(groups)
            if comparison.outcome in (BETTER, WORSE) and not holds:
                comparison.outcome = NO_CLEAR_DIFFERENCE
                comparison.holm_failed = True
    return len(groups)


def _add_seeds(
    view: ModelView,
    seeds: obs.SeedSummary | None,
    runs: list[SeedRun],
    entry: ModelEntry | None,
    all_seeds: list[int],
) -> None:
    """Fill in the per-seed facts of a model view: rows, missing seeds, the accuracy estimate."""
    precisions = sorted({run.precision for run in runs if run.precision})
    view.precision = (entry.precision if entry else None) or (", ".join(precisions) if precisions else None)
    if seeds is None:
        return
    view.over_seeds = seeds
    run_entries = entry.runs if entry else {}
    by_seed = {run.seed: run for run in runs}
    view.seed_rows = [_seed_row(result, by_seed[result.seed], run_entries.get(str(result.seed))) for result in seeds.seeds]
    found = {result.seed for result in seeds.seeds}
    view.missing_seeds = [seed for seed in all_seeds if seed not in found] if view.status != "not_run" else []
    view.accuracy = seeds.last_val


def _seed_row(result: obs.SeedResult, run: SeedRun, entry: RunEntry | None) -> SeedRow:
    status = entry.status if entry else STATUS_COMPLETE
    return SeedRow(
        result=result,
        precision=run.precision,
        wall_seconds=finite(entry.wall_seconds) if entry else None,
        status_label=STATUS_LABELS.get(status, "did not finish"),
        complete=status == STATUS_COMPLETE,
    )


def _add_comparisons(views: list[ModelView], base_weights: str | None = None, plan: ComparisonPairs | None = None) -> None:
    """Make the comparisons of the plan (default: each model with the previous one), and note
    whose epochs lead into a continued curve."""
    by_name = {view.name: view for view in views}
    names = [view.name for view in views]
    plan = plan if plan is not None else ComparisonPairs(PLAN_PREVIOUS, tuple(zip(names[1:], names[:-1])))
    for view in views:
        view.train_below_validation = _train_below_validation(view, by_name) if view.histories else None
    for first_name, second_name in plan.pairs:
        first, second = by_name.get(first_name), by_name.get(second_name)
        if first is None or second is None:
            continue
        comparison = None
        if first.over_seeds is not None and second.over_seeds is not None:
            comparison = compare(first, second, by_name, base_weights)
        if not first.planned:
            first.comparison = comparison
        first.planned.append((second.name, comparison))
        first.page_comparisons.append((second.name, comparison))
        if plan.kind != PLAN_PREVIOUS:
            second.page_comparisons.append((first.name, comparison))
    for view in views:
        source = by_name.get(view.recipe.continues_model or "")
        if source is not None and source.epoch_range is not None:
            view.lead_in = {"model": source.name, "first_epoch": source.epoch_range[0], "last_epoch": source.epoch_range[1]}


def _model_view(
    recipe: StudyModel,
    names: list[str],
    status: str,
    entry: ModelEntry | None,
    summary: ModelSummary | None,
    runs: list[SeedRun],
    observation_error: str | None,
    figures: list[str],
    validation: ModelScore | None,
    selection_score: float | None,
) -> ModelView:
    name = recipe.name
    index = names.index(name)
    layers = [{"name": layer.name or None, "type": layer.type or None, "output_shape": layer.output_shape or None,
               "params": layer.params, **trainability}
              for layer, trainability in zip(summary.layers if summary else [], layer_trainability(summary))]
    # a train_on model's summary was headed with the name of the model it continues (older runs)
    summary_text = summary_text_named(summary.summary_text, name) if summary else None
    curves = f"curves_{name}.png"
    return ModelView(
        name=name,
        status=status,
        status_label=STATUS_LABELS.get(status, "did not finish"),
        complete=status == STATUS_COMPLETE,
        error=entry.error if entry else None,
        recipe=recipe,
        wall_seconds=finite(entry.wall_seconds) if entry else None,
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
        validation_accuracy=finite(validation.accuracy) if validation else None,
        selection_score=finite(selection_score),
        training=summary.training if summary else None,
    )


#: Layer types that hold other layers, and so may train only part of their parameters.
_NESTED_TYPES = ("Functional", "Sequential", "Model")


def _is_nested(layer: Any) -> bool:
    return "nested" in layer.type or layer.type.split(" ")[0] in _NESTED_TYPES


def layer_trainability(summary: ModelSummary | None) -> list[dict[str, Any]]:
    """Per layer of a model summary: ``trainable`` ("yes", "no", "partly" or "some or all"), the
    layer's ``trainable_params`` when known and whether that count was ``derived`` from the
    model's totals rather than recorded.

    summary.json records each layer's trainable count (a backbone unfrozen from one of its layers
    on trains only part of its parameters). Older files have only a flag, true as soon as any
    of the layer's parameters trains: their flagged layers hold more parameters than the model
    trains when one of them is partly frozen. That surplus is put on the one nested model among
    them (other layers train all their weights or none); with no single such layer, each
    flagged layer is "some or all", never a plain "yes"."""
    if summary is None:
        return []
    rows: list[dict[str, Any]] = []
    for layer in summary.layers:
        count = layer.trainable_params if layer.trainable_params is not None else (None if layer.trainable else 0)
        rows.append({"trainable_params": count, "derived": False})
    unknown = [index for index, row in enumerate(rows) if row["trainable_params"] is None]
    recorded = sum(row["trainable_params"] for row in rows if row["trainable_params"] is not None)
    surplus = sum(summary.layers[index].params for index in unknown) - (summary.trainable_params - recorded)
    if unknown and surplus <= 0:
        for index in unknown:
            rows[index]["trainable_params"] = summary.layers[index].params
    elif unknown:
        nested = [index for index in unknown if _is_nested(summary.layers[index])]
        if len(nested) == 1 and summary.layers[nested[0]].params >= surplus:
            for index in unknown:
                rows[index]["trainable_params"] = summary.layers[index].params
            rows[nested[0]].update(trainable_params=summary.layers[nested[0]].params - surplus, derived=True)
    for layer, row in zip(summary.layers, rows):
        count = row["trainable_params"]
        if count is None:
            row["trainable"] = "some or all" if layer.params else "yes"
        elif count == 0 and (layer.params > 0 or not layer.trainable):
            row["trainable"] = "no"
        elif count >= layer.params:
            row["trainable"] = "yes"
        else:
            row["trainable"] = "partly"
    return rows


def _epochs_completed(runs: list[SeedRun], entry: ModelEntry | None) -> int | None:
    """Epochs finished over all of a model's runs: the manifest's sum, else the histories' lengths."""
    recorded = entry.epochs_completed if entry else None
    if recorded is not None or not runs:
        return recorded
    return sum(len(run.epochs) for run in runs if isinstance(run.epochs, list))


def _epochs_planned(runs: list[SeedRun], entry: ModelEntry | None) -> int | None:
    """Epochs planned over all of a model's runs: per-run plan (state.json) times the runs."""
    planned = [run.epochs_planned for run in runs if run.epochs_planned is not None]
    run_count = (len(entry.runs) if entry else 0) or len(runs)
    return max(planned) * run_count if planned else None


# --------------------------------------------------------------------------- view helpers


#: Config keys whose value may be a path on the machine that trained (the report shows its last part only).
_PATH_KEYS = ("data.data_dir", "data.cache_dir", "training.base_weights")


def local_path_name(value: object) -> str | None:
    """The last part of a local path ("cats-dogs-cc0" of "../shared/data/cats-dogs-cc0"), None
    for anything else (a URL, "imagenet", a generator's description, empty). A path of the
    machine that trained means nothing to a reader and says where someone keeps their files."""
    if not isinstance(value, str) or not value.strip() or "://" in value:
        return None
    text = value.strip()
    if not ("/" in text or "\\" in text or text.startswith("~") or text.startswith(".")):
        return None
    name = text.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return name if name not in ("", ".", "..", "~") else None


def _public_value(key: str, value: str) -> str:
    """A config row's JSON value, a local path replaced by its last part after "…/"."""
    if not (key in _PATH_KEYS or key.startswith("models.") and key.endswith(".weights")):
        return value
    try:
        name = local_path_name(json.loads(value))
    except ValueError:
        return value
    return value if name is None else json.dumps(f"…/{name}", ensure_ascii=False)


def public_source(source: DataSource | BaseWeights | None) -> dict[str, str | None]:
    """Where the data or the base weights came from, for the method page: the kind, and the
    location unless it is a local path (``local_name``: its last part, or the file's name)."""
    if source is None:
        return {"kind": None, "location": None, "local_name": None, "sha256": None}
    location = artifact_text(source.location)
    name = local_path_name(location)
    if name is not None and getattr(source, "file", None):
        name = source.file
    return {"kind": artifact_text(source.kind), "location": None if name else location, "local_name": name,
            "sha256": artifact_text(getattr(source, "sha256", None))}


def applicable_config_rows(config: object, settings: Iterable[str]) -> list[tuple[str, str]]:
    """The config's rows (flatten_config) whose keys are among `settings`, the ones that applied
    to the models that ran (manifest.study.settings: a folder run does not list the download
    URL, ...), local paths shortened to their last part."""
    applied = set(settings)
    return [(key, _public_value(key, value)) for key, value in flatten_config(as_dict(config)) if key in applied]


def study_text(manifest: Manifest) -> dict[str, str | None]:
    """The config's study.title and study.question (None when not given)."""
    return _pick_text(manifest.config.get("study"), ("title", "question"))


def about_data(manifest: Manifest) -> dict[str, str | None]:
    """The config's [dataset] description (name, description, source, licence): None values when not given."""
    return _pick_text(manifest.config.get("dataset"), ("name", "description", "source", "licence"))


def reading_rules() -> dict[str, Any]:
    """The thresholds of report_builder.analysis, for the method page to quote."""
    return {name.lower(): getattr(analysis, name) for name in (
        "LEVEL", "NOISE_Z", "SPREAD_Z", "FINAL_WINDOW", "LATE_EPOCHS", "TREND_WINDOW", "CHANCE_LOSS_FRACTION",
        "UNDERFIT_FRACTION", "RISING_SLOPE", "LOSS_RISE_FRACTION", "GAP_THRESHOLD", "SPREAD_THRESHOLD", "DROP_THRESHOLD")}


def sorted_items(mapping: object) -> list[tuple[str, Any]]:
    """Items of a mapping sorted by key (empty for non-mappings)."""
    if not isinstance(mapping, dict):
        return []
    return sorted(mapping.items(), key=lambda item: str(item[0]))


def split_rows(dataset: Dataset | None) -> list[dict[str, Any]]:
    """Per split: label, count and per-class counts in class order (extra labels sorted after)."""
    if dataset is None:
        return []
    rows = []
    for split in SPLIT_ORDER:
        info = dataset.splits.get(split)
        if info is None:
            continue
        counts = info.label_counts
        labels = dataset.class_names + sorted(label for label in counts if label not in dataset.class_names)
        total = float(info.count)
        classes = []
        for label in labels:
            count = finite(counts.get(label))
            share = count / total if count is not None and total else None
            classes.append({"name": label, "count": count, "share": share})
        rows.append({"key": split, "label": SPLIT_LABELS[split], "count": total, "classes": classes})
    return rows


def study_time(models: Iterable[ModelView]) -> dict[str, Any]:
    """When the study's training ran, from its cells' state.json files: the first start and the
    last finish over every cell (a cell's times are those of the last call that trained it),
    and how many cells have each. The manifest's own times are those of the last `train`
    call, which may have found every cell done and trained nothing."""
    starts, finishes = [], []
    for model in models:
        for started, finished in model.cell_times:
            starts += [moment for moment in [parse_time(started)] if moment is not None and moment.utcoffset() is not None]
            finishes += [moment for moment in [parse_time(finished)] if moment is not None and moment.utcoffset() is not None]
    return {"first_start": min(starts) if starts else None, "last_finish": max(finishes) if finishes else None,
            "cells": sum(len(model.cell_times) for model in models), "finished_cells": len(finishes)}


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


def baseline_view(dataset: Dataset | None) -> dict[str, Any] | None:
    """The majority baseline: class name and accuracy per split (None when not recorded)."""
    baseline = dataset.majority_baseline if dataset else None
    if baseline is None:
        return None
    train = dataset.splits.get("train")
    counts = train.label_counts if train else {}
    top = counts.get(baseline.class_name)
    tied = [name for name in dataset.class_names if top is not None and counts.get(name) == top]
    return {"class_name": baseline.class_name, "accuracy": {split: baseline.accuracy.get(split) for split in SPLIT_ORDER},
            # the classes as common in training as the one chosen (ties go to the first by name)
            "tied": tied if len(tied) > 1 else [], "all_tied": len(tied) == len(dataset.class_names) > 1}


def test_view(metrics: Metrics | None) -> dict[str, Any] | None:
    """The single test evaluation, or None when the run has none."""
    test = metrics.test if metrics else None
    if test is None or finite(test.accuracy) is None:
        return None
    return {
        "model": test.model,
        "seed": str(test.seed),
        "accuracy": test.accuracy,
        "correct": float(test.correct),
        "total": float(test.total),
        "interval": obs.wilson_interval(test.correct, test.total),
        "confusion": list(zip(test.class_names, test.confusion_matrix)),
        "confusion_names": test.class_names,
        "per_class": obs.per_class_scores(test.class_names, test.confusion_matrix),
    }


def test_resolution(test: dict[str, Any] | None, metrics: Metrics | None, dataset: Dataset | None) -> dict[str, Any]:
    """What the test set can resolve: half the width of the chosen model's test interval, the
    other models whose validation score lies within it of the chosen one's (the test could not
    tell them apart), and whether the test split was held out of the validation folder."""
    fraction = finite(dataset.test_fraction) if dataset else None
    resolution: dict[str, Any] = {"half_width": None, "close": [], "from_validation": bool(fraction), "fraction": fraction}
    if test is None or test.get("interval") is None or metrics is None:
        return resolution
    low, high = test["interval"]
    half_width = (high - low) / 2
    scores = {name: finite(score) for name, score in metrics.selection.candidates.items()}
    chosen = scores.get(metrics.chosen_model or "")
    resolution["half_width"] = half_width
    if chosen is not None:
        resolution["close"] = [name for name, score in scores.items()
                               if name != metrics.chosen_model and score is not None and abs(chosen - score) < half_width]
    return resolution


def selection_view(metrics: Metrics | None, order: Iterable[str] = ()) -> dict[str, Any] | None:
    """How the model was chosen: the rule and each candidate's validation score, in study order."""
    if metrics is None:
        return None
    order = list(order)
    scores = metrics.selection.candidates
    names = [name for name in order if name in scores] + sorted(name for name in scores if name not in order)
    return {
        "rule": metrics.selection.rule,
        "metric": metrics.selection.metric,
        "candidates": [(name, finite(scores[name])) for name in names],
        "seed_candidates": seed_candidates(metrics.selection.seed_candidates),
        "chosen_seed": None if metrics.chosen_seed is None else str(metrics.chosen_seed),
    }


def seed_candidates(scores: dict[str, float | None]) -> list[tuple[str, float | None]]:
    """The chosen model's per-seed validation scores as (seed, score), numeric seeds first in order."""
    def order(seed: str) -> tuple[int, int, str]:
        return (0, int(seed), "") if seed.isdigit() else (1, 0, seed)

    return [(seed, finite(scores[seed])) for seed in sorted(scores, key=order)]


def runner_up(models: Iterable[ModelView], chosen: str | None) -> ModelView | None:
    """The model with the highest mean last-epoch validation accuracy other than ``chosen``."""
    others = [model for model in models if model.name != chosen and model.accuracy is not None
              and model.accuracy.mean is not None]
    return max(others, key=lambda model: model.accuracy.mean, default=None)


def chosen_comparison(models: list[ModelView], chosen: str | None, base_weights: str | None = None) -> PairedComparison | None:
    """The chosen model against the runner-up, paired (:func:`compare`)."""
    by_name = {model.name: model for model in models}
    winner, second = by_name.get(chosen or ""), runner_up(models, chosen)
    if winner is None or winner.over_seeds is None or second is None:
        return None
    return compare(winner, second, by_name, base_weights)


def control_comparison(models: list[ModelView], base_weights: str | None = None) -> PairedComparison | None:
    """A fine-tuned model against its budget-matched control (recipe train_on: the same model
    it continues, trained on for as many epochs with nothing unfrozen), when both ran: the
    first such pair in study order."""
    for finetune in models:
        if finetune.recipe.recipe != "finetune" or finetune.over_seeds is None:
            continue
        for control in models:
            if (control.recipe.recipe == "train_on" and control.recipe.continues == finetune.recipe.continues
                    and control.over_seeds is not None and control.epoch_range == finetune.epoch_range):
                return compare(finetune, control, {model.name: model for model in models}, base_weights)
    return None


def dataset_view(dataset: Dataset | None) -> dict[str, Any] | None:
    """Dataset facts for the method page (all as text, except the test fraction)."""
    if dataset is None:
        return None
    return {
        "class_names": list(dataset.class_names),
        "image_size": " x ".join(str(side) for side in dataset.image_size),
        "seed": str(dataset.seed),
        "test_fraction": finite(dataset.test_fraction),
    }


def skipped_view(dataset: Dataset | None) -> list[dict[str, str | None]]:
    """Skipped files with their reasons, in the recorded order."""
    return [{"file": item.file, "reason": item.reason} for item in dataset.skipped] if dataset else []


def page_context(run: RunView) -> dict[str, Any]:
    """The variables every template sees; every value is present (templates use StrictUndefined)."""
    manifest = run.manifest
    models_by_name = {model.name: model for model in run.models}
    chosen_name = run.metrics.chosen_model if run.metrics else None
    dataset = dataset_view(run.dataset)
    base_weights = manifest.base_weights.kind if manifest.base_weights else None
    chosen = chosen_comparison(run.models, chosen_name, base_weights)
    control = control_comparison(run.models, base_weights)
    family_size = settle_family([comparison for _, _, comparison in run.planned] + [control, chosen])
    test = test_view(run.metrics)
    return {
        "run_status": manifest.status or "unknown",
        "run_info": {key: artifact_text(getattr(manifest, key)) for key in
                     ("config_hash", "data_fingerprint", "git_commit", "started_at", "finished_at", "status", "run_name")},
        "data_source": public_source(manifest.data_source),
        "base_weights": public_source(manifest.base_weights),
        "versions": [(name, artifact_text(value)) for name, value in sorted_items(manifest.versions)],
        "hardware": [(name, artifact_text(value)) for name, value in sorted_items(manifest.hardware)],
        "devices": list(manifest.devices),
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
        "chosen_comparison": chosen,
        "comparison_family": family_size,
        "seeds": run.seeds,
        "validation_count": _validation_count(run.dataset),
        "control_comparison": control,
        "plan": run.plan,
        "training_differences": training_differences(run.models),
        # the planned comparisons the front page lists: all but one of the same pair as the control's (shown apart)
        "step_comparisons": [(first, second, comparison) for first, second, comparison in run.planned
                             if control is None or {first, second} != {control.first, control.second}],
        "about_data": about_data(manifest),
        "rules": reading_rules(),
        "outcomes": {"better": BETTER, "worse": WORSE, "none": NO_CLEAR_DIFFERENCE, "unknown": NOT_COMPARABLE},
        "selection": selection_view(run.metrics, [model.name for model in run.models]),
        "test": test,
        "test_resolution": test_resolution(test, run.metrics, run.dataset),
        "continuing_models": [model.name for model in run.models if model.recipe.continues_model and model.status != "not_run"],
        "config_rows": applicable_config_rows(manifest.config, manifest.study.settings if manifest.study else []),
        "study": study_text(manifest),
        "heatmap_from_classes": HEATMAP_FROM_CLASSES,
        # the study's --base-weights reached a model: a transfer model without weights of its own ran
        "uses_base_weights": any(model.recipe.recipe == "transfer" and not model.recipe.weights and not model.recipe.own_backbone
                                 for model in run.models if model.status != "not_run"),
        "augmentation_model": next((model.name for model in run.models if model.recipe.augment), None),
        "total_wall_seconds": total_wall_seconds(run.models),
        "study_time": study_time(run.models),
    }


# --------------------------------------------------------------------------- per-seed histories (charts, CSV downloads)


def seed_histories(run: RunView) -> dict[str, dict[int, list[Epoch]]]:
    """Each reported model's checked history per seed (model -> seed -> epochs, seeds in numeric
    order), as the loader checked them: the seeds of every model with an aggregate over seeds."""
    return {model.name: dict(sorted(model.histories.items())) for model in run.models if model.over_seeds is not None}
