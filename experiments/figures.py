"""Matplotlib figures made from the data and the training histories, saved as PNG.

Every text these figures draw (titles, captions, legends, axis labels) is drawn literally:
class names come from folder names, and one such as `cost$_$` or `a$x^2$` must show as
written, not as matplotlib math text (or a parse error).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from experiments.artifacts import write_atomic  # noqa: E402

FIGURE_DPI = 110
PNG_METADATA = {"Software": None}  # keep the files free of version strings that churn diffs
# Keyword arguments that make a matplotlib Text draw its string as it is: no math text between
# dollar signs, no LaTeX even if an rcParams file turns text.usetex on.
LITERAL = {"parse_math": False, "usetex": False}


def _literal(texts) -> None:
    """Make already-created Text artists (a legend's entries) draw their strings literally."""
    for text in texts:
        text.set_parse_math(False)
        text.set_usetex(False)


def _legend(axis, **options):
    """axis.legend(**options) with every entry drawn literally."""
    legend = axis.legend(**options)
    _literal(legend.get_texts())
    return legend


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
                axis.set_title(class_name, fontsize=11, **LITERAL)
    figure.tight_layout()
    return _save(figure, path)


def augmentation_demo(image: np.ndarray, variants: list[tuple[str, np.ndarray]], path: Path) -> Path:
    """The original image, then each (title, transformed image) of `variants`."""
    figure, axes = plt.subplots(1, len(variants) + 1, figsize=(2.4 * (len(variants) + 1), 2.7))
    axes[0].imshow(image)
    axes[0].set_title("original", fontsize=10, **LITERAL)
    for axis, (title, variant) in zip(axes[1:], variants):
        axis.imshow(np.clip(variant, 0, 255).astype(np.uint8))
        axis.set_title(title, fontsize=10, **LITERAL)
    for axis in axes:
        axis.axis("off")
    figure.tight_layout()
    return _save(figure, path)


def band(runs: list[list[dict[str, Any]]], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Epoch numbers and the mean, minimum and maximum of `key` over `runs` (one history per
    seed) at each epoch; missing and null values are left out of that epoch."""
    by_epoch: dict[int, list[float]] = {}
    for epochs in runs:
        for record in epochs:
            if record.get(key) is not None:
                by_epoch.setdefault(int(record["epoch"]), []).append(float(record[key]))
    numbers = sorted(by_epoch)
    values = [np.asarray(by_epoch[number]) for number in numbers]
    return (np.asarray(numbers), np.asarray([v.mean() for v in values]),
            np.asarray([v.min() for v in values]), np.asarray([v.max() for v in values]))


def _plot_band(axis, runs, key: str, label: str, style: str, color=None, alpha: float = 1.0) -> None:
    epochs, mean, low, high = band(runs, key)
    if len(epochs) == 0:
        return
    (line,) = axis.plot(epochs, mean, style, label=label, markersize=3, color=color, alpha=alpha)
    if len(runs) > 1:
        axis.fill_between(epochs, low, high, color=line.get_color(), alpha=0.18 * alpha, linewidth=0)


def training_curves(
    runs: list[list[dict[str, Any]]],
    title: str,
    path: Path,
    baseline_accuracy: float | None = None,
    lead_in: list[list[dict[str, Any]]] | None = None,
    lead_in_name: str = "",
) -> Path:
    """Accuracy and loss per epoch, training against validation: the mean over `runs` (one
    history per seed) with a min-max band when there are several. `lead_in` runs (the
    transfer model, for finetune) are drawn faintly first, with a line where they end."""
    figure, (accuracy_axis, loss_axis) = plt.subplots(1, 2, figsize=(11, 4))
    for axis, keys, ylabel in ((accuracy_axis, ("accuracy", "val_accuracy"), "accuracy"),
                               (loss_axis, ("loss", "val_loss"), "loss (cross-entropy, log scale)")):
        for key, label, style, color in ((keys[0], "training", "-o", "tab:blue"), (keys[1], "validation", "-s", "tab:orange")):
            if lead_in:
                _plot_band(axis, lead_in, key, f"{label} ({lead_in_name})", "-", color=color, alpha=0.35)
            _plot_band(axis, runs, key, label, style, color=color)
        if lead_in:
            last_lead_in_epoch = max((record["epoch"] for epochs in lead_in for record in epochs), default=None)
            if last_lead_in_epoch is not None:
                axis.axvline(last_lead_in_epoch + 0.5, color="grey", linestyle="--", linewidth=1)
        axis.set_ylabel(ylabel, **LITERAL)
    if baseline_accuracy is not None:
        accuracy_axis.axhline(baseline_accuracy, color="grey", linestyle=":", label="majority baseline")
    accuracy_axis.set_ylim(0, 1.02)
    loss_axis.set_yscale("log")  # a first-epoch loss of 10+ would flatten every later epoch
    for axis in (accuracy_axis, loss_axis):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("epoch", **LITERAL)
        axis.grid(alpha=0.3)
        _legend(axis, fontsize=8)
    seeds_note = f" (mean of {len(runs)} seeds, band: min-max)" if len(runs) > 1 else ""
    figure.suptitle(title + seeds_note, **LITERAL)
    figure.tight_layout()
    return _save(figure, path)


def comparison(histories: dict[str, list[list[dict[str, Any]]]], path: Path, baseline_accuracy: float | None = None) -> Path:
    """Every model's validation accuracy per epoch on one chart: for each model the mean over
    its runs (one history per seed) with a min-max band when there are several."""
    figure, axis = plt.subplots(figsize=(8, 4.5))
    for model_name, runs in histories.items():
        _plot_band(axis, runs, "val_accuracy", model_name, "-o")
    if baseline_accuracy is not None:
        axis.axhline(baseline_accuracy, color="grey", linestyle=":", label="majority baseline")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("epoch", **LITERAL)
    axis.set_ylabel("validation accuracy", **LITERAL)
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    _legend(axis)
    most_runs = max((len(runs) for runs in histories.values()), default=1)
    axis.set_title("Validation accuracy of every model" + (f" (mean of {most_runs} seeds, band: min-max)" if most_runs > 1 else ""),
                   **LITERAL)
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
            axis.set_title(captions[index], fontsize=9, **LITERAL)
    if shown == 0:
        axes[0][0].text(0.5, 0.5, "no misclassified test images", ha="center", va="center", **LITERAL)
    figure.tight_layout()
    return _save(figure, path)
