"""Matplotlib figures made from the data and the training histories, saved as PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from experiments.artifacts import write_atomic  # noqa: E402

FIGURE_DPI = 110
PNG_METADATA = {"Software": None}  # keep the files free of version strings that churn diffs


def _save(figure, path: Path) -> Path:
    def write(temporary_path: Path) -> None:
        figure.savefig(temporary_path, format="png", dpi=FIGURE_DPI, bbox_inches="tight", metadata=PNG_METADATA)

    try:
        return write_atomic(path, write)
    finally:
        plt.close(figure)


def data_grid(images: np.ndarray, labels: np.ndarray, class_names: list[str], path: Path, per_class: int = 3) -> Path:
    """One row per class, the first `per_class` training images of that class."""
    rows = len(class_names)
    figure, axes = plt.subplots(rows, per_class, figsize=(2.6 * per_class, 2.6 * rows), squeeze=False)
    for row, class_name in enumerate(class_names):
        indices = np.flatnonzero(labels == row)[:per_class]
        for column in range(per_class):
            axis = axes[row][column]
            axis.axis("off")
            if column < len(indices):
                axis.imshow(images[indices[column]])
                axis.set_title(class_name, fontsize=11)
    figure.tight_layout()
    return _save(figure, path)


def augmentation_demo(image: np.ndarray, variants: list[tuple[str, np.ndarray]], path: Path) -> Path:
    """The original image, then each (title, transformed image) of `variants`."""
    figure, axes = plt.subplots(1, len(variants) + 1, figsize=(2.4 * (len(variants) + 1), 2.7))
    axes[0].imshow(image)
    axes[0].set_title("original", fontsize=10)
    for axis, (title, variant) in zip(axes[1:], variants):
        axis.imshow(np.clip(variant, 0, 255).astype(np.uint8))
        axis.set_title(title, fontsize=10)
    for axis in axes:
        axis.axis("off")
    figure.tight_layout()
    return _save(figure, path)


def _series(epochs: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(record["epoch"], record[key]) for record in epochs if record.get(key) is not None]
    return [epoch for epoch, _ in points], [value for _, value in points]


def training_curves(epochs: list[dict[str, Any]], title: str, path: Path, baseline_accuracy: float | None = None) -> Path:
    """Accuracy and loss per epoch, training against validation."""
    figure, (accuracy_axis, loss_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label, style in (("accuracy", "training", "-o"), ("val_accuracy", "validation", "-s")):
        accuracy_axis.plot(*_series(epochs, key), style, label=label, markersize=3)
    if baseline_accuracy is not None:
        accuracy_axis.axhline(baseline_accuracy, color="grey", linestyle=":", label="majority baseline")
    accuracy_axis.set_ylabel("accuracy")
    accuracy_axis.set_ylim(0, 1.02)
    for key, label, style in (("loss", "training", "-o"), ("val_loss", "validation", "-s")):
        loss_axis.plot(*_series(epochs, key), style, label=label, markersize=3)
    loss_axis.set_ylabel("loss (cross-entropy, log scale)")
    loss_axis.set_yscale("log")  # a first-epoch loss of 10+ would flatten every later epoch
    for axis in (accuracy_axis, loss_axis):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, path)


def comparison(histories: dict[str, list[dict[str, Any]]], path: Path, baseline_accuracy: float | None = None) -> Path:
    """Every model's validation accuracy per epoch on one chart."""
    figure, axis = plt.subplots(figsize=(8, 4.5))
    for model_name, epochs in histories.items():
        axis.plot(*_series(epochs, "val_accuracy"), "-o", label=model_name, markersize=3)
    if baseline_accuracy is not None:
        axis.axhline(baseline_accuracy, color="grey", linestyle=":", label="majority baseline")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("epoch")
    axis.set_ylabel("validation accuracy")
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    axis.legend()
    axis.set_title("Validation accuracy of every model")
    figure.tight_layout()
    return _save(figure, path)


def misclassified(images: np.ndarray, captions: list[str], path: Path, limit: int = 12, columns: int = 4) -> Path:
    """Up to `limit` misclassified test images, each captioned with true and predicted class."""
    shown = min(len(images), limit)
    rows = max(1, -(-shown // columns))
    figure, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.9 * rows), squeeze=False)
    for index, axis in enumerate(axes.flat):
        axis.axis("off")
        if index < shown:
            axis.imshow(images[index])
            axis.set_title(captions[index], fontsize=9)
    if shown == 0:
        axes[0][0].text(0.5, 0.5, "no misclassified test images", ha="center", va="center")
    figure.tight_layout()
    return _save(figure, path)
