"""Write synthetic artifact folders that follow docs/guide/artifacts.md (schema 2) exactly.

Not a test module: the report tests import it to make runs with chosen histories (an
overfitting model, a steady one, one no better than the baseline), several seeds per model,
a finetune model whose epochs continue transfer's, partial runs and hostile class names,
without TensorFlow.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from PIL import Image

from experiments.artifacts import (
    BaseWeights,
    Dataset,
    DataSource,
    Epoch,
    History,
    Layer,
    MajorityBaseline,
    Manifest,
    Metrics,
    ModelEntry,
    ModelScore,
    ModelSummary,
    RunEntry,
    RunState,
    Selection,
    SkippedEntry,
    SplitFiles,
    TestEvaluation,
    TestPrediction,
    ValidationPredictions,
    files_digest,
    seed_folder_name,
)
from experiments.config import MODEL_NAMES
from experiments.study.records import with_study_record

MODEL_ORDER = MODEL_NAMES
DEFAULT_SEEDS = (1337, 1338, 1339)
#: How far apart the seeds' validation accuracies are, per step (their mean stays the given history).
SEED_STEP = 0.01
HOSTILE_CLASS = "<script>alert(1)</script>"

MODEL_TITLES = {
    "baseline": ("A small CNN from scratch", "Three convolution blocks and a dense head: the starting point."),
    "augmented": ("Adding data augmentation", "Random flips and rotations, so the model sees more varied pictures."),
    "preprocessed": ("MobileNetV2 input scaling", "Scale the pixels the way MobileNetV2 expects, to prepare for transfer."),
    "transfer": ("Transfer learning on a frozen MobileNetV2", "Reuse ImageNet features and train only a small head."),
    "finetune": ("Fine-tuning the top of MobileNetV2", "Unfreeze the top of the base and keep training at a tenth of the learning rate."),
    "transfer_extended": ("Control: transfer trained as long", "The transfer model trained on, base frozen, for as many epochs as fine-tuning."),
}


def make_history(
    train: Sequence[float | None], validation: Sequence[float | None], first_epoch: int = 1
) -> list[dict[str, Any]]:
    """History epochs from train and validation accuracy lists of the same length."""
    if len(train) != len(validation):
        raise ValueError("train and validation accuracy lists must have the same length")
    epochs = []
    for index, (train_accuracy, val_accuracy) in enumerate(zip(train, validation)):
        epochs.append(
            {
                "epoch": first_epoch + index,
                "loss": None if train_accuracy is None else round(1.0 - train_accuracy, 4),
                "accuracy": train_accuracy,
                "val_loss": None if val_accuracy is None else round(1.0 - val_accuracy, 4),
                "val_accuracy": val_accuracy,
                "seconds": 1.5,
            }
        )
    return epochs


def overfitting_history(epochs: int = 10) -> list[dict[str, Any]]:
    """Training accuracy climbs to ~0.95 while validation stays near 0.65 (gap ~30 points)."""
    train = [round(min(0.55 + 0.05 * index, 0.95), 4) for index in range(epochs)]
    validation = [round(0.60 + 0.01 * (index % 3), 4) + (0.03 if index > 4 else 0.0) for index in range(epochs)]
    return make_history(train, validation)


def steady_history(epochs: int = 10) -> list[dict[str, Any]]:
    """Train and validation rise together to ~0.80, gap ~1 point."""
    train = [round(0.55 + 0.025 * index, 4) for index in range(epochs)]
    validation = [round(value - 0.01, 4) for value in train]
    return make_history(train, validation)


def at_baseline_history(epochs: int = 10, baseline: float = 0.5) -> list[dict[str, Any]]:
    """Validation accuracy stuck within a point of the majority baseline."""
    train = [round(baseline + 0.01 * (index % 2), 4) for index in range(epochs)]
    validation = [round(baseline + 0.005 * (index % 3), 4) for index in range(epochs)]
    return make_history(train, validation)


def transfer_history(epochs: int = 10) -> list[dict[str, Any]]:
    """A strong model: validation around 0.95."""
    train = [round(0.85 + 0.01 * index, 4) for index in range(epochs)]
    validation = [round(0.90 + 0.006 * index, 4) for index in range(epochs)]
    return make_history(train, validation)


def finetune_history(epochs: int = 10, first_epoch: int = 11) -> list[dict[str, Any]]:
    """Fine-tuning after transfer: epochs continue transfer's numbering, validation near 0.96."""
    train = [round(0.95 + 0.003 * index, 4) for index in range(epochs)]
    validation = [round(0.955 + 0.001 * index, 4) for index in range(epochs)]
    return make_history(train, validation, first_epoch=first_epoch)


def control_history(epochs: int = 10, first_epoch: int = 11) -> list[dict[str, Any]]:
    """transfer trained on with its base frozen: validation flat near 0.95."""
    train = [round(0.93 + 0.001 * index, 4) for index in range(epochs)]
    validation = [0.95] * epochs
    return make_history(train, validation, first_epoch=first_epoch)


def default_histories() -> dict[str, list[dict[str, Any]]]:
    """One model of each kind: at baseline, overfitting, steady, strong, fine-tuned, the control."""
    return {
        "baseline": at_baseline_history(),
        "augmented": overfitting_history(),
        "preprocessed": steady_history(),
        "transfer": transfer_history(),
        "finetune": finetune_history(),
        "transfer_extended": control_history(),
    }


def seed_offsets(count: int, step: float = SEED_STEP) -> list[float]:
    """Offsets that sum to zero: 3 seeds -> [-step, 0, +step]; 1 seed -> [0]."""
    return [step * (index - (count - 1) / 2) for index in range(count)]


def spread_over_seeds(
    epochs: list[dict[str, Any]], seeds: Sequence[int], step: float = SEED_STEP
) -> dict[int, list[dict[str, Any]]]:
    """One history per seed: the same history with validation accuracy shifted by :func:`seed_offsets`.

    The offsets cancel, so the mean over seeds is the given history (for values away from 0 and 1).
    """
    runs = {}
    for seed, offset in zip(seeds, seed_offsets(len(seeds), step)):
        shifted = []
        for record in epochs:
            value = record["val_accuracy"]
            if isinstance(value, float) and value == value:
                value = round(min(max(value + offset, 0.0), 1.0), 6)
            shifted.append({**record, "val_accuracy": value})
        runs[seed] = shifted
    return runs


def per_seed(history: Sequence[dict[str, Any]] | Mapping[int, list[dict[str, Any]]], seeds: Sequence[int]) -> dict[int, list[dict[str, Any]]]:
    """A model's histories by seed: a mapping is taken as is, a single history is spread over ``seeds``."""
    if isinstance(history, Mapping):
        return {int(seed): list(epochs) for seed, epochs in history.items()}
    return spread_over_seeds(list(history), seeds)


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_png(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (48, 32)) -> None:
    """A tiny solid-colour PNG (deterministic bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="PNG")


def summary_for(model: str) -> ModelSummary:
    frozen = {"transfer": 2257984, "finetune": 1861952}.get(model, 0)
    layers = [
        Layer("input_layer", "InputLayer", "(None, 160, 160, 3)", 0, True),
        Layer("conv2d", "Conv2D", "(None, 158, 158, 32)", 896, True),
        Layer("dense", "Dense", "(None, 2)", 1666, True),
    ]
    if model in ("transfer", "finetune"):
        layers.insert(1, Layer("mobilenetv2_1.00_160", "Functional", "(None, 5, 5, 1280)", 2257984, model == "finetune"))
    trainable = 2562 if model != "finetune" else 2260546 - frozen
    title, description = MODEL_TITLES[model]
    summary_text = f'Model: "{model}"\n\u250f\u2501\u2501\u2513\n\u2503 Layer (type) \u2503\n```not a fence end\nTotal params: {trainable + frozen:,}\n'
    return ModelSummary(model, title, description, layers, trainable + frozen, trainable, frozen, summary_text)


def write_artifacts(
    run_dir: Path,
    *,
    class_names: Sequence[str] = ("cats", "dogs"),
    histories: Mapping[str, list[dict[str, Any]] | Mapping[int, list[dict[str, Any]]] | None] | None = None,
    seeds: Sequence[int] = DEFAULT_SEEDS,
    model_status: Mapping[str, str] | None = None,
    model_errors: Mapping[str, str] | None = None,
    write_dataset: bool = True,
    write_metrics: bool = True,
    write_figures: bool = True,
    skipped: Sequence[Mapping[str, str]] | None = None,
    baseline_accuracy: float = 0.5,
    validation_per_class: int = 200,
    run_status: str | None = None,
    config_extra: Mapping[str, Any] | None = None,
    write_predictions: bool = True,
) -> Path:
    """Write a complete synthetic schema-2 run folder and return it.

    ``histories`` maps model -> one epochs list (spread over ``seeds`` by
    :func:`spread_over_seeds`) or seed -> epochs list; a model mapped to ``None`` (or left out,
    when a mapping is given) gets no model folder and is absent from the manifest.
    ``model_status`` overrides the manifest status per model ("partial", "failed", ...).
    """
    histories = default_histories() if histories is None else dict(histories)
    runs_by_model = {model: per_seed(history, seeds) for model, history in histories.items() if history is not None}
    model_status = dict(model_status or {})
    model_errors = dict(model_errors or {})
    run_dir.mkdir(parents=True, exist_ok=True)
    dataset = dataset_for(class_names, skipped, baseline_accuracy, validation_per_class)
    validation = validation_split(dataset) if write_predictions else None
    manifest_models: dict[str, ModelEntry] = {}
    for index, model in enumerate(MODEL_ORDER):
        runs = runs_by_model.get(model)
        if runs is None:
            continue
        status = model_status.get(model, "complete")
        entry = write_model(run_dir / "models" / model, model, index, runs, status, validation)
        manifest_models[model] = replace(entry, error=model_errors.get(model))
    all_complete = all(entry.status == "complete" for entry in manifest_models.values())
    status = run_status or ("complete" if all_complete and len(manifest_models) == len(MODEL_ORDER) else "failed")
    manifest_for(status, sorted(seeds), manifest_models, config_extra).write(run_dir / "manifest.json")
    if write_dataset:
        dataset.write(run_dir / "dataset.json")
    if write_metrics:
        metrics_for(runs_by_model, class_names).write(run_dir / "metrics.json")
    if write_figures:
        write_figures_for(run_dir, [model for model in MODEL_ORDER if model in runs_by_model], write_metrics)
    return run_dir


def precision_for(model: str) -> str:
    return "float32" if model in ("transfer", "finetune", "transfer_extended") else "mixed_bfloat16"


def validation_split(dataset: Dataset) -> tuple[list[str], list[int], list[str]]:
    """The validation files, their labels (from the class folder in each name) and the class names."""
    validation = dataset.splits["validation"]
    labels = [index for index, name in enumerate(dataset.class_names) for _ in range(validation.label_counts[name])]
    return list(validation.files), labels, list(dataset.class_names)


def predictions_for(model: str, seed: int, epochs: Sequence[Mapping[str, Any]],
                    validation: tuple[list[str], list[int], list[str]]) -> ValidationPredictions | None:
    """Predictions whose accuracy is the history's last val_accuracy (rounded to whole images).

    Images are ranked by one fixed order shared by every model and seed, and the first k of them
    are right: a better model is right on a superset of a worse one's images (strongly paired)."""
    accuracy = last_val_accuracy(epochs)
    if accuracy is None:
        return None
    files, labels, class_names = validation
    count = len(files)
    right = round(accuracy * count)
    order = sorted(range(count), key=lambda index: (index * 7919) % count)
    correct = [False] * count
    for index in order[:right]:
        correct[index] = True
    predicted = [label if ok else (label + 1) % len(class_names) for label, ok in zip(labels, correct)]
    return ValidationPredictions(model, seed, epochs[-1]["epoch"], files_digest(files), class_names, labels, predicted,
                                 [0.9] * count)


#: When the fixture's first cell started; the others follow ten minutes apart, each taking nine.
STUDY_START = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)


def write_model(model_dir: Path, model: str, index: int, runs: Mapping[int, list[dict[str, Any]]], status: str,
                validation: tuple[list[str], list[int], list[str]] | None = None) -> ModelEntry:
    """Write a model's summary and per-seed history, state and (with `validation`) predictions;
    return its manifest entry."""
    summary_for(model).write(model_dir / "summary.json")
    run_entries = {}
    for seed, epochs in sorted(runs.items()):
        seed_dir = model_dir / seed_folder_name(seed)
        History(model, seed, precision_for(model), [Epoch(**record) for record in epochs]).write(seed_dir / "history.json")
        run_status = "complete" if status == "complete" else "partial"
        record = predictions_for(model, seed, epochs, validation) if validation is not None and epochs else None
        if record is not None:
            record.write(seed_dir / "validation_predictions.json")
        started = STUDY_START + timedelta(minutes=10 * (index * len(runs) + len(run_entries)))  # one cell after another
        finished = (started + timedelta(minutes=9)).isoformat() if run_status == "complete" else None
        RunState(model, seed, "c0ffee", "f00d", run_status, len(epochs), epochs_planned=10, started_at=started.isoformat(),
                 finished_at=finished).write(seed_dir / "state.json")
        run_entries[str(seed)] = RunEntry(run_status, 20.0 + 10.0 * index, len(epochs))
    return ModelEntry(
        status=status,
        wall_seconds=math.fsum(entry.wall_seconds for entry in run_entries.values()),
        epochs_completed=sum(entry.epochs_completed for entry in run_entries.values()),
        precision=precision_for(model),
        runs=run_entries,
    )


def manifest_for(status: str, seeds: Sequence[int], models: Mapping[str, ModelEntry], config_extra: Mapping[str, Any] | None) -> Manifest:
    config = {"run": {"name": "cats-vs-dogs", "seed": 1337}, "training": {"epochs": 10, "batch_size": 32, "learning_rate": 0.001}}
    if config_extra:
        config["extra"] = dict(config_extra)
    return with_study_record(Manifest(  # the study record as the runner writes it
        run_name="cats-vs-dogs",
        config=config,
        config_hash="c0ffee" * 10 + "abcd",
        data_fingerprint="f00d" * 16,
        data_source=DataSource("synthetic", "generator: coloured_shapes_v1"),
        base_weights=BaseWeights("none"),
        versions={"python": "3.11.7", "numpy": "2.1.0", "tensorflow": "2.21.0", "keras": "3.15.1"},
        devices=["/physical_device:CPU:0"],
        hardware={"platform": "Linux-x86_64", "processor": "test CPU", "cpu_count": 2, "gpus": []},
        git_commit="0123456789abcdef0123456789abcdef01234567",
        started_at="2026-11-22T03:00:00+00:00",
        finished_at="2026-11-22T03:10:00+00:00" if status == "complete" else None,
        status=status,
        seeds=list(seeds),
        models=dict(models),
    ))


def rewrite_manifest(run_dir: Path, change: Any) -> None:
    """Apply `change` to the run's manifest.json as a JSON object and write it back with its study
    record derived again from the changed config, as the runner would have written it."""
    path = run_dir / "manifest.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    data.pop("study", None)
    write_json(path, with_study_record(Manifest.from_json(data, path)).to_json())


def dataset_for(
    class_names: Sequence[str], skipped: Sequence[Mapping[str, str]] | None, baseline: float, validation_per_class: int = 200
) -> Dataset:
    splits = {}
    for split, per_class in (("train", 20), ("validation", validation_per_class), ("test", 10)):
        extra = 1 if split == "train" else 0  # the first class is the training split's majority
        counts = {name: per_class + (extra if index == 0 else 0) for index, name in enumerate(class_names)}
        files = [f"{split}/{name}/{name}.{number}.jpg" for name in class_names for number in range(counts[name])]
        splits[split] = SplitFiles(sum(counts.values()), counts, files)
    return Dataset(
        class_names=list(class_names),
        image_size=[160, 160],
        seed=1337,
        splits=splits,
        test_fraction=0.2,
        majority_baseline=MajorityBaseline(class_names[0], "always predict the most common class of the training split",
                                           {"train": baseline, "validation": baseline, "test": baseline}),
        skipped=[SkippedEntry(item["file"], item["reason"]) for item in (skipped or [])],
    )


def last_val_accuracy(epochs: Sequence[Mapping[str, Any]]) -> float | None:
    value = epochs[-1]["val_accuracy"] if epochs else None
    return value if isinstance(value, float) and value == value else None


def metrics_for(runs_by_model: Mapping[str, Mapping[int, list[dict[str, Any]]]], class_names: Sequence[str]) -> Metrics:
    """Selection as the runner does it: best mean last-epoch validation accuracy, then the best seed."""
    candidates = {}
    for model in MODEL_ORDER:
        values = [last_val_accuracy(epochs) for epochs in runs_by_model.get(model, {}).values()]
        usable = [value for value in values if value is not None]
        if usable:
            candidates[model] = round(math.fsum(usable) / len(usable), 6)
    chosen = max(sorted(candidates), key=lambda name: candidates[name]) if candidates else None
    seed_scores = {str(seed): last_val_accuracy(epochs) for seed, epochs in sorted(runs_by_model.get(chosen, {}).items())}
    usable_seeds = {seed: value for seed, value in seed_scores.items() if value is not None}
    chosen_seed = int(max(sorted(usable_seeds), key=lambda seed: usable_seeds[seed])) if usable_seeds else None
    return Metrics(
        config_hash="c0ffee" * 10 + "abcd",
        data_fingerprint="f00d" * 16,
        selection=Selection("val_accuracy", "highest mean over seeds of the last epoch's validation accuracy; within that model, "
                            "the seed with the highest; the test split is not looked at", candidates, seed_scores),
        chosen_model=chosen,
        chosen_seed=chosen_seed,
        validation={name: ModelScore(0.3, value) for name, value in candidates.items()},
        test=test_for(chosen, chosen_seed, class_names) if chosen is not None else None,
    )


def test_for(model: str, seed: int | None, class_names: Sequence[str]) -> TestEvaluation:
    """Ten test images per class, all right except one image of the second class (19 of 20 for two)."""
    size = len(class_names)
    confusion = [[10 if row == column else 0 for column in range(size)] for row in range(size)]
    confusion[1][1], confusion[1][0] = 9, 1
    total = 10 * size
    return TestEvaluation(model, seed, 0.11, (total - 1) / total, total - 1, total, list(class_names), confusion,
                          [TestPrediction(f"validation/{class_names[1]}/x.jpg", class_names[1], class_names[0], 0.81)])


def write_figures_for(run_dir: Path, models: Sequence[str], misclassified: bool = True) -> None:
    """Every figure as a small PNG, each with its dark twin (`<name>-dark.png`)."""
    figures = run_dir / "figures"
    colors = {"data_grid": (200, 120, 40), "augmentation_flip": (40, 120, 200), "augmentation_rotation": (40, 200, 120),
              "comparison": (120, 40, 200)}
    if misclassified:
        colors["misclassified_test"] = (220, 60, 60)
    for index, model in enumerate(models):
        colors[f"curves_{model}"] = (30 * index, 90, 160)
    for name, color in colors.items():
        write_png(figures / f"{name}.png", color)
        write_png(figures / f"{name}-dark.png", tuple(channel // 4 for channel in color))


def downgrade_to_schema_1(run_dir: Path) -> None:
    """Turn a schema-2 folder into what the old runner wrote: one history per model, no seed folders."""
    for model_dir in sorted((run_dir / "models").iterdir()):
        seed_dirs = sorted(model_dir.glob("seed-*"))
        history = json.loads((seed_dirs[0] / "history.json").read_text(encoding="utf-8"))
        write_json(model_dir / "history.json", {"schema_version": 1, "model": history["model"], "epochs": history["epochs"]})
        for seed_dir in seed_dirs:
            for path in seed_dir.iterdir():
                path.unlink()
            seed_dir.rmdir()
