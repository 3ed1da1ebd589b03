"""Write synthetic artifact folders that follow docs/guide/artifacts.md exactly.

Not a test module: the report tests import it to make runs with chosen histories (an
overfitting model, a steady one, one no better than the baseline), partial runs and hostile
class names, without TensorFlow.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

MODEL_ORDER = ("baseline", "augmented", "preprocessed", "transfer")
HOSTILE_CLASS = "<script>alert(1)</script>"

MODEL_TITLES = {
    "baseline": ("A small CNN from scratch", "Three convolution blocks and a dense head: the starting point."),
    "augmented": ("Adding data augmentation", "Random flips and rotations, so the model sees more varied pictures."),
    "preprocessed": ("MobileNetV2 input scaling", "Scale the pixels the way MobileNetV2 expects, to prepare for transfer."),
    "transfer": ("Transfer learning on a frozen MobileNetV2", "Reuse ImageNet features and train only a small head."),
}


def make_history(train: Sequence[float | None], validation: Sequence[float | None]) -> list[dict[str, Any]]:
    """History epochs from train and validation accuracy lists of the same length."""
    if len(train) != len(validation):
        raise ValueError("train and validation accuracy lists must have the same length")
    epochs = []
    for index, (train_accuracy, val_accuracy) in enumerate(zip(train, validation)):
        epochs.append(
            {
                "epoch": index + 1,
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


def default_histories() -> dict[str, list[dict[str, Any]]]:
    """One model of each kind: at baseline, overfitting, steady, strong."""
    return {
        "baseline": at_baseline_history(),
        "augmented": overfitting_history(),
        "preprocessed": steady_history(),
        "transfer": transfer_history(),
    }


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_png(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (48, 32)) -> None:
    """A tiny solid-colour PNG (deterministic bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format="PNG")


def summary_for(model: str) -> dict[str, Any]:
    frozen = 2257984 if model == "transfer" else 0
    layers = [
        {"name": "input_layer", "type": "InputLayer", "output_shape": "(None, 160, 160, 3)", "params": 0, "trainable": True},
        {"name": "conv2d", "type": "Conv2D", "output_shape": "(None, 158, 158, 32)", "params": 896, "trainable": True},
        {"name": "dense", "type": "Dense", "output_shape": "(None, 2)", "params": 1666, "trainable": True},
    ]
    if model == "transfer":
        layers.insert(1, {"name": "mobilenetv2_1.00_160", "type": "Functional", "output_shape": "(None, 5, 5, 1280)",
                          "params": frozen, "trainable": False})
    trainable = 2562
    title, description = MODEL_TITLES[model]
    return {
        "schema_version": 1,
        "model": model,
        "title": title,
        "description": description,
        "layers": layers,
        "total_params": trainable + frozen,
        "trainable_params": trainable,
        "non_trainable_params": frozen,
        "summary_text": f'Model: "{model}"\n\u250f\u2501\u2501\u2513\n\u2503 Layer (type) \u2503\n```not a fence end\nTotal params: {trainable + frozen:,}\n',
    }


def write_artifacts(
    run_dir: Path,
    *,
    class_names: Sequence[str] = ("cats", "dogs"),
    histories: Mapping[str, list[dict[str, Any]] | None] | None = None,
    model_status: Mapping[str, str] | None = None,
    model_errors: Mapping[str, str] | None = None,
    write_dataset: bool = True,
    write_metrics: bool = True,
    write_figures: bool = True,
    skipped: Sequence[Mapping[str, str]] | None = None,
    baseline_accuracy: float = 0.5,
    run_status: str | None = None,
    config_extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a complete synthetic run folder and return it.

    ``histories`` maps model -> epochs list; a model mapped to ``None`` (or left out, when a
    mapping is given) gets no model folder and is absent from the manifest. ``model_status``
    overrides the manifest status per model ("partial", "failed", ...).
    """
    histories = default_histories() if histories is None else dict(histories)
    model_status = dict(model_status or {})
    model_errors = dict(model_errors or {})
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest_models: dict[str, Any] = {}
    for index, model in enumerate(MODEL_ORDER):
        epochs = histories.get(model)
        if epochs is None:
            continue
        status = model_status.get(model, "complete")
        manifest_models[model] = {
            "status": status,
            "wall_seconds": 60.5 + 30.25 * index,
            "epochs_completed": len(epochs),
            "error": model_errors.get(model),
        }
        model_dir = run_dir / "models" / model
        write_json(model_dir / "history.json", {"schema_version": 1, "model": model, "epochs": epochs})
        write_json(model_dir / "summary.json", summary_for(model))
        write_json(
            model_dir / "state.json",
            {"schema_version": 1, "model": model, "config_hash": "c0ffee", "data_fingerprint": "f00d",
             "status": "complete" if status == "complete" else "partial",
             "epochs_completed": len(epochs), "epochs_planned": 10},
        )
    all_complete = all(entry["status"] == "complete" for entry in manifest_models.values())
    status = run_status or ("complete" if all_complete and len(manifest_models) == len(MODEL_ORDER) else "failed")
    config = {"run": {"name": "cats-vs-dogs", "seed": 1337}, "training": {"epochs": 10, "batch_size": 32, "learning_rate": 0.001}}
    if config_extra:
        config["extra"] = dict(config_extra)
    write_json(
        run_dir / "manifest.json",
        {
            "schema_version": 1,
            "run_name": "cats-vs-dogs",
            "config": config,
            "config_hash": "c0ffee" * 10 + "abcd",
            "data_fingerprint": "f00d" * 16,
            "data_source": {"kind": "synthetic", "location": "generator: coloured_shapes_v1"},
            "base_weights": {"kind": "none", "location": None, "sha256": None},
            "versions": {"python": "3.11.7", "numpy": "2.1.0", "tensorflow": "2.21.0", "keras": "3.15.1"},
            "devices": ["/physical_device:CPU:0"],
            "hardware": {"platform": "Linux-x86_64", "processor": "test CPU", "cpu_count": 2, "gpus": []},
            "git_commit": "0123456789abcdef0123456789abcdef01234567",
            "started_at": "2026-11-22T03:00:00+00:00",
            "finished_at": "2026-11-22T03:10:00+00:00" if status == "complete" else None,
            "status": status,
            "models": manifest_models,
        },
    )
    if write_dataset:
        write_json(run_dir / "dataset.json", dataset_for(class_names, skipped, baseline_accuracy))
    if write_metrics:
        write_json(run_dir / "metrics.json", metrics_for(histories))
    if write_figures:
        write_figures_for(run_dir, [model for model in MODEL_ORDER if histories.get(model) is not None])
    return run_dir


def dataset_for(class_names: Sequence[str], skipped: Sequence[Mapping[str, str]] | None, baseline: float) -> dict[str, Any]:
    splits = {}
    for split, per_class in (("train", 20), ("validation", 8), ("test", 2)):
        counts = {name: per_class + (1 if index == 0 else 0) for index, name in enumerate(class_names)}
        files = [f"{split}/{name}/{name}.{number}.jpg" for name in class_names for number in range(counts[name])]
        splits[split] = {"count": sum(counts.values()), "label_counts": counts, "files": files}
    return {
        "schema_version": 1,
        "class_names": list(class_names),
        "image_size": [160, 160],
        "seed": 1337,
        "splits": splits,
        "test_fraction": 0.2,
        "majority_baseline": {
            "class_name": class_names[0],
            "rule": "always predict the most common class of the training split",
            "accuracy": {"train": baseline, "validation": baseline, "test": baseline},
        },
        "skipped": [dict(item) for item in (skipped or [])],
    }


def metrics_for(histories: Mapping[str, list[dict[str, Any]] | None]) -> dict[str, Any]:
    candidates = {}
    for model in MODEL_ORDER:
        epochs = histories.get(model)
        if epochs:
            candidates[model] = epochs[-1]["val_accuracy"]
    usable = {name: value for name, value in candidates.items() if value is not None}
    chosen = max(sorted(usable), key=lambda name: usable[name]) if usable else None
    metrics: dict[str, Any] = {
        "schema_version": 1,
        "selection": {
            "metric": "val_accuracy",
            "rule": "highest validation accuracy of the final weights (last epoch); test data is not looked at",
            "candidates": candidates,
        },
        "chosen_model": chosen,
        "validation": {name: {"loss": 0.3, "accuracy": value} for name, value in candidates.items()},
    }
    if chosen is not None:
        metrics["test"] = {"model": chosen, "loss": 0.11, "accuracy": 0.95, "correct": 19, "total": 20}
    return metrics


def write_figures_for(run_dir: Path, models: Sequence[str]) -> None:
    figures = run_dir / "figures"
    write_png(figures / "data_grid.png", (200, 120, 40))
    write_png(figures / "augmentation_flip.png", (40, 120, 200))
    write_png(figures / "augmentation_rotation.png", (40, 200, 120))
    write_png(figures / "comparison.png", (120, 40, 200))
    for index, model in enumerate(models):
        write_png(figures / f"curves_{model}.png", (30 * index, 90, 160))
