"""Matplotlib figures made from the data and the training histories, saved as PNG.

Every text these figures draw (titles, captions, legends, axis labels) is drawn literally:
class names come from folder names, and one such as `cost$_$` or `a$x^2$` must show as
written, not as matplotlib math text (or a parse error).

Every figure is written twice, for the two colour schemes of the report (MkDocs Material's
light "default" and dark "slate"): ``<name>.png`` on white, and ``<name>-dark.png`` (see
:func:`dark_path`) with the same content on the slate background (#1e2129), with light
text, axes and grid and brighter line colours. Pages show the pair with Material's
``![alt](figures/x.png#only-light)`` ``![alt](figures/x-dark.png#only-dark)``. The dark file
is written first, so a light file that exists always has its dark twin beside it (from this
or an earlier run). Each file is written atomically on its own (``_write_png``).

A figure is drawn again only when what it shows could differ: each PNG carries, in a text chunk
(:data:`INPUTS_KEY`), a digest of the data it was drawn from, this module's source, matplotlib's
version and rcParams; a pair whose two files carry the digest of this call's inputs is left as it
is (a re-run, a cell skipped as finished, a model whose other seeds trained elsewhere). Drawing a
pair costs about a second, a good part of a small study's time.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from cycler import cycler  # noqa: E402
from matplotlib.ticker import LogFormatterSciNotation, MaxNLocator  # noqa: E402
from matplotlib.transforms import blended_transform_factory  # noqa: E402

from experiments.artifacts.cell_records import Epoch  # noqa: E402
from experiments.artifacts.files import file_sha256, write_atomic  # noqa: E402

#: One history per seed; each epoch an artifacts.cell_records.Epoch or its JSON object (both read with .get).
Runs = list[list[Epoch | dict[str, Any]]]

FIGURE_DPI = 110
PNG_METADATA = {"Software": None}  # keep the files free of version strings that churn diffs
#: The PNG text chunk holding the digest of what the figure was drawn from (_inputs_digest).
INPUTS_KEY = "report-builder inputs sha256"
# Keyword arguments that make a matplotlib Text draw its string as it is: no math text between
# dollar signs, no LaTeX even if an rcParams file turns text.usetex on.
LITERAL = {"parse_math": False, "usetex": False}
DARK_SUFFIX = "-dark"
DARK_BACKGROUND = "#1e2129"  # Material's slate background, hsl(232, 15%, 14%)
DARK_TEXT = "#e3e5ea"
DARK_MUTED = "#a7adba"
# matplotlib's tab10, each lightened until it keeps a contrast of about 5:1 or more on the slate background
DARK_CYCLE = ("#63b0f2", "#ffa95c", "#6fd36f", "#ff7878", "#c8a2ff", "#dcae8e", "#f7a1d8", "#c9c9c9", "#dede66", "#55dbe9")


@dataclass(frozen=True)
class Theme:
    """What differs between the light and the dark drawing of a figure."""

    name: str
    rc: dict[str, Any] = field(default_factory=dict)  # rcParams in force while the figure is drawn and saved
    training: str = "tab:blue"
    validation: str = "tab:orange"
    reference: str = "grey"  # baseline and boundary lines
    muted: str = "dimgrey"  # secondary text
    band_alpha: float = 0.18


LIGHT = Theme("light")  # matplotlib's defaults: the light figures are drawn as they always were
DARK = Theme(
    "dark",
    rc={
        "figure.facecolor": DARK_BACKGROUND,
        "figure.edgecolor": DARK_BACKGROUND,
        "axes.facecolor": DARK_BACKGROUND,
        "savefig.facecolor": DARK_BACKGROUND,
        "savefig.edgecolor": DARK_BACKGROUND,
        "text.color": DARK_TEXT,
        "axes.labelcolor": DARK_TEXT,
        "axes.titlecolor": DARK_TEXT,
        "axes.edgecolor": DARK_MUTED,
        "xtick.color": DARK_MUTED,
        "ytick.color": DARK_MUTED,
        "xtick.labelcolor": DARK_TEXT,
        "ytick.labelcolor": DARK_TEXT,
        "grid.color": "#959cab",
        "legend.facecolor": "#272b35",
        "legend.edgecolor": "#4b5162",
        "legend.labelcolor": DARK_TEXT,
        "axes.prop_cycle": cycler(color=list(DARK_CYCLE)),
    },
    training=DARK_CYCLE[0],
    validation=DARK_CYCLE[1],
    reference="#9aa1af",
    muted=DARK_MUTED,
    band_alpha=0.26,
)

def dark_path(path: Path) -> Path:
    """Where the dark twin of the figure at `path` goes: ``x.png`` -> ``x-dark.png``."""
    path = Path(path)
    return path.with_name(f"{path.stem}{DARK_SUFFIX}{path.suffix}")


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


def _write_png(figure, path: Path, inputs: str | None = None) -> Path:
    """Write `figure` to `path` atomically (a temporary file renamed into place), then close it;
    `inputs` (a digest of what it was drawn from) goes into the file's INPUTS_KEY text chunk."""
    metadata = PNG_METADATA if inputs is None else {**PNG_METADATA, INPUTS_KEY: inputs}

    def write(temporary_path: Path) -> None:
        figure.savefig(temporary_path, format="png", dpi=FIGURE_DPI, bbox_inches="tight", metadata=metadata)

    try:
        return write_atomic(path, write)
    finally:
        plt.close(figure)


@contextmanager
def _themed(theme: Theme) -> Iterator[None]:
    with matplotlib.rc_context(theme.rc):
        yield


@functools.cache
def _drawing_code() -> bytes:
    """What, besides its inputs, decides how a figure looks: this module's source and matplotlib's version."""
    return f"{file_sha256(__file__)} {matplotlib.__version__}".encode()


def _feed(hasher: Any, value: Any) -> None:
    """Add `value` to `hasher`, unambiguously: arrays by dtype, shape and bytes; dataclasses, dicts
    (in their order: a figure draws them in it), lists and tuples item by item; scalars by type and repr."""
    if isinstance(value, np.ndarray):
        hasher.update(f"<array {value.dtype.str} {value.shape}>".encode())
        hasher.update(np.ascontiguousarray(value).tobytes())
    elif is_dataclass(value) and not isinstance(value, type):
        _feed(hasher, {"<dataclass>": type(value).__name__, **{item.name: getattr(value, item.name) for item in fields(value)}})
    elif isinstance(value, dict):
        hasher.update(b"{")
        for key, item in value.items():
            _feed(hasher, key)
            _feed(hasher, item)
        hasher.update(b"}")
    elif isinstance(value, (list, tuple)):
        hasher.update(b"[")
        for item in value:
            _feed(hasher, item)
        hasher.update(b"]")
    elif value is None or isinstance(value, (str, bytes, int, float, np.generic, Path)):
        hasher.update(f"<{type(value).__name__} {value!r}>".encode())
    else:
        raise TypeError(f"cannot digest a {type(value).__name__} as a figure's input")


def _inputs_digest(inputs: Any) -> str:
    """The digest a figure drawn from `inputs` carries: those inputs, the drawing code, the rcParams."""
    hasher = hashlib.sha256(_drawing_code())
    _feed(hasher, inputs)
    hasher.update(repr(sorted((key, repr(value)) for key, value in matplotlib.rcParams.items())).encode())
    return hasher.hexdigest()


def drawn_from(path: Path) -> str | None:
    """The inputs digest the PNG at `path` carries; None if it has none, or is missing or unreadable."""
    from PIL import Image  # matplotlib's own dependency, loaded with it

    try:
        with Image.open(path) as image:
            return getattr(image, "text", {}).get(INPUTS_KEY)
    except (OSError, ValueError, SyntaxError):
        return None


def _save_both(draw: Callable[[Theme], Any], path: Path, inputs: Any = None) -> Path:
    """Draw the figure for each scheme with `draw(theme)` and write ``x-dark.png``, then ``x.png``;
    returns the light one's path. With `inputs` (everything the drawing depends on besides this
    module), a pair that already carries their digest is not drawn again."""
    digest = None if inputs is None else _inputs_digest(inputs)
    if digest is not None and drawn_from(dark_path(path)) == digest and drawn_from(path) == digest:
        return path
    with _themed(DARK):
        _write_png(draw(DARK), dark_path(path), digest)
    with _themed(LIGHT):
        return _write_png(draw(LIGHT), path, digest)


class _PlainLogLabels(LogFormatterSciNotation):
    """A log axis's tick labels as plain numbers ("0.7", "2", "1e-05"), on the ticks matplotlib's own
    log formatter chooses to label. Its own labels are mathtext ("7 x 10^-1" with a raised exponent),
    hard to read on a loss axis that spans less than a decade, and laying them out went through
    matplotlib's TeX-like parser: about a second and a half of every process that draws curves."""

    def __call__(self, value, position=None) -> str:
        return f"{value:.3g}" if super().__call__(value, position) else ""


def _plain_log_scale(axis) -> None:
    """Put `axis`'s y axis on a log scale labelled with plain numbers (major and minor ticks)."""
    axis.set_yscale("log")
    axis.yaxis.set_major_formatter(_PlainLogLabels(base=10))
    axis.yaxis.set_minor_formatter(_PlainLogLabels(base=10, labelOnlyBase=False))


def _cycle_colors() -> list[str]:
    """The colours of the current property cycle (the theme's, inside _themed)."""
    return list(plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"]))


def data_grid(images: np.ndarray, labels: np.ndarray, class_names: list[str], path: Path, per_class: int = 3) -> Path:
    """The first `per_class` training images of every class: one class per row for up to four
    classes, then two classes side by side per row (three from thirteen on), so that many
    classes do not make a figure taller than the page is long."""
    classes_per_row = 1 if len(class_names) <= 4 else 2 if len(class_names) <= 12 else 3
    # the images shown, read once (`images` may be the decoded-image cache on disk, too big to digest)
    shown = [np.asarray(images[np.flatnonzero(np.asarray(labels) == label)[:per_class]]) for label in range(len(class_names))]

    def draw(theme: Theme):
        rows = -(-len(class_names) // classes_per_row)
        columns = classes_per_row * per_class
        figure, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.6 * rows), squeeze=False)
        for axis in axes.flat:
            axis.axis("off")
        for label, class_name in enumerate(class_names):
            row, block = divmod(label, classes_per_row)
            for offset, image in enumerate(shown[label]):
                axis = axes[row][block * per_class + offset]
                axis.imshow(image)
                axis.set_title(class_name, fontsize=11, **LITERAL)
        figure.tight_layout()
        return figure

    return _save_both(draw, path, ("data_grid", shown, class_names, per_class))


def augmentation_demo(image: np.ndarray, variants: list[tuple[str, np.ndarray]], path: Path) -> Path:
    """The original image, then each (title, transformed image) of `variants`."""

    def draw(theme: Theme):
        figure, axes = plt.subplots(1, len(variants) + 1, figsize=(2.4 * (len(variants) + 1), 2.7))
        axes[0].imshow(image)
        axes[0].set_title("original", fontsize=10, **LITERAL)
        for axis, (title, variant) in zip(axes[1:], variants):
            axis.imshow(np.clip(variant, 0, 255).astype(np.uint8))
            axis.set_title(title, fontsize=10, **LITERAL)
        for axis in axes:
            axis.axis("off")
        figure.tight_layout()
        return figure

    return _save_both(draw, path, ("augmentation_demo", image, variants))


def band(runs: Runs, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Epoch numbers and the mean, minimum and maximum of `key` over `runs` (one history per
    seed) at each epoch; missing and null values are left out of that epoch."""
    by_epoch: dict[int, list[float]] = {}
    for epochs in runs:
        for record in epochs:
            if record.get(key) is not None:
                by_epoch.setdefault(int(record.get("epoch")), []).append(float(record.get(key)))
    numbers = sorted(by_epoch)
    values = [np.asarray(by_epoch[number]) for number in numbers]
    return (np.asarray(numbers), np.asarray([v.mean() for v in values]),
            np.asarray([v.min() for v in values]), np.asarray([v.max() for v in values]))


def final_values(runs: Runs, key: str = "val_accuracy") -> list[float]:
    """`key` at the last epoch of each run (one history per seed) that has a finite value of it,
    in the order of `runs`."""
    values = []
    for epochs in runs:
        recorded = [record for record in epochs if record.get(key) is not None and np.isfinite(float(record.get(key)))]
        if recorded:
            values.append(float(max(recorded, key=lambda record: int(record.get("epoch"))).get(key)))
    return values


def _plot_band(axis, runs, key: str, label: str, style: str, color=None, alpha: float = 1.0, band_alpha: float = 0.18) -> None:
    epochs, mean, low, high = band(runs, key)
    if len(epochs) == 0:
        return
    (line,) = axis.plot(epochs, mean, style, label=label, markersize=3, color=color, alpha=alpha)
    if len(runs) > 1:
        axis.fill_between(epochs, low, high, color=line.get_color(), alpha=band_alpha * alpha, linewidth=0)


def training_curves(
    runs: Runs,
    title: str,
    path: Path,
    baseline_accuracy: float | None = None,
    lead_in: Runs | None = None,
    lead_in_name: str = "",
) -> Path:
    """Accuracy and loss per epoch, training against validation: the mean over `runs` (one
    history per seed) with a min-max band when there are several. `lead_in` runs (the
    transfer model, for finetune) are drawn faintly first, with a line where they end."""

    def draw(theme: Theme):
        figure, (accuracy_axis, loss_axis) = plt.subplots(1, 2, figsize=(11, 4))
        for axis, keys, ylabel in ((accuracy_axis, ("accuracy", "val_accuracy"), "accuracy"),
                                   (loss_axis, ("loss", "val_loss"), "loss (cross-entropy, log scale)")):
            for key, label, style, color in ((keys[0], "training", "-o", theme.training), (keys[1], "validation", "-s", theme.validation)):
                if lead_in:
                    _plot_band(axis, lead_in, key, f"{label} ({lead_in_name})", "-", color=color, alpha=0.35, band_alpha=theme.band_alpha)
                _plot_band(axis, runs, key, label, style, color=color, band_alpha=theme.band_alpha)
            if lead_in:
                last_lead_in_epoch = max((record.get("epoch") for epochs in lead_in for record in epochs), default=None)
                if last_lead_in_epoch is not None:
                    axis.axvline(last_lead_in_epoch + 0.5, color=theme.reference, linestyle="--", linewidth=1)
            axis.set_ylabel(ylabel, **LITERAL)
        if baseline_accuracy is not None:
            accuracy_axis.axhline(baseline_accuracy, color=theme.reference, linestyle=":", label="majority baseline")
        accuracy_axis.set_ylim(0, 1.02)
        _plain_log_scale(loss_axis)  # a first-epoch loss of 10+ would flatten every later epoch
        for axis in (accuracy_axis, loss_axis):
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
            axis.set_xlabel("epoch", **LITERAL)
            axis.grid(alpha=0.3)
            _legend(axis, fontsize=8)
        seeds_note = f" (mean of {len(runs)} seeds, band: min-max)" if len(runs) > 1 else ""
        figure.suptitle(title + seeds_note, **LITERAL)
        figure.tight_layout()
        return figure

    return _save_both(draw, path, ("training_curves", runs, title, baseline_accuracy, lead_in, lead_in_name))


def final_epoch_limits(values: list[float]) -> tuple[float, float]:
    """The x range of the zoomed last-epoch panel: the range of `values` with a margin of 12% of
    it (at least 0.01 each side), kept inside [0, 1]; (0, 1) when there are no values."""
    if not values:
        return 0.0, 1.0
    low, high = min(values), max(values)
    margin = max(0.12 * (high - low), 0.01)
    return max(0.0, low - margin), min(1.0, high + margin)


def _comparison_figure(histories: dict[str, Runs], baseline_accuracy: float | None, theme: Theme):
    """The two-panel comparison figure, drawn for `theme` (call inside _themed(theme))."""
    figure, (curves_axis, final_axis) = plt.subplots(1, 2, figsize=(10, 4.2), gridspec_kw={"width_ratios": [1.3, 1]})
    colors = _cycle_colors()
    model_colors = {name: colors[index % len(colors)] for index, name in enumerate(histories)}

    # Left: validation accuracy per epoch, mean and min-max band over the seeds.
    for model_name, runs in histories.items():
        _plot_band(curves_axis, runs, "val_accuracy", model_name, "-o", color=model_colors[model_name], band_alpha=theme.band_alpha)
    if baseline_accuracy is not None:
        curves_axis.axhline(baseline_accuracy, color=theme.reference, linestyle=":", label="majority baseline")
    curves_axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    curves_axis.set_xlabel("epoch", **LITERAL)
    curves_axis.set_ylabel("validation accuracy", **LITERAL)
    curves_axis.set_ylim(0, 1.02)
    curves_axis.grid(alpha=0.3)
    if curves_axis.get_legend_handles_labels()[0]:
        _legend(curves_axis, fontsize=8.5)
    most_runs = max((len(runs) for runs in histories.values()), default=1)
    curves_axis.set_title("Per epoch" + (f" (mean of {most_runs} seeds, band: min-max)" if most_runs > 1 else ""), fontsize=10.5, **LITERAL)

    # Right: the last epoch of every seed, one row per model, on an axis zoomed to those values.
    finals = {name: final_values(runs) for name, runs in histories.items()}
    low, high = final_epoch_limits([value for values in finals.values() for value in values])
    row_of_axis = blended_transform_factory(final_axis.transAxes, final_axis.transData)
    for row, (model_name, values) in enumerate(finals.items()):
        color = model_colors[model_name]
        if not values:
            final_axis.text(0.5, row, "no finished epoch", transform=row_of_axis, ha="center", va="center",
                            fontsize=9, color=theme.muted, **LITERAL)
            continue
        offsets = np.linspace(-0.2, 0.2, len(values)) if len(values) > 1 else np.zeros(1)
        mean = float(np.mean(values))
        final_axis.plot([mean, mean], [row - 0.34, row + 0.34], color=color, linewidth=2.5, solid_capstyle="butt", zorder=3)
        final_axis.scatter(values, row + offsets, s=30, color=color, edgecolors=plt.rcParams["axes.facecolor"], linewidths=0.8,
                           zorder=4, clip_on=False)
        final_axis.annotate(f"{mean:.3f}", xy=(1, row), xycoords=row_of_axis, xytext=(5, 0), textcoords="offset points",
                            ha="left", va="center", fontsize=9, **LITERAL)
    if baseline_accuracy is not None and low <= baseline_accuracy <= high:
        final_axis.axvline(baseline_accuracy, color=theme.reference, linestyle=":")
    final_axis.set_xlim(low, high)
    final_axis.set_ylim(max(len(finals), 1) - 0.5, -0.5)  # the first model on top, as in the legend
    final_axis.set_yticks(range(len(finals)))
    final_axis.set_yticklabels(list(finals))
    _literal(final_axis.get_yticklabels())
    final_axis.tick_params(axis="y", length=0)
    final_axis.xaxis.set_major_locator(MaxNLocator(nbins=5))
    final_axis.ticklabel_format(axis="x", style="plain", useOffset=False)
    final_axis.grid(axis="x", alpha=0.3)
    final_axis.set_xlabel("validation accuracy at the last epoch (zoomed)", **LITERAL)
    final_axis.set_title("Last epoch: dots = seeds, bar = mean", fontsize=10.5, **LITERAL)

    figure.suptitle("Validation accuracy of every model", **LITERAL)
    figure.tight_layout()
    return figure


def comparison(histories: dict[str, Runs], path: Path, baseline_accuracy: float | None = None) -> Path:
    """Every model's validation accuracy, in two panels. Left: per epoch, for each model the mean
    over its runs (one history per seed) with a min-max band when there are several, and the
    majority baseline. Right: the last epoch only, one row per model, each seed's value a dot
    and the mean a bar (its value printed beside the row), on an axis zoomed to those values
    so that models a point or two apart stay apart."""
    return _save_both(lambda theme: _comparison_figure(histories, baseline_accuracy, theme), path,
                      ("comparison", histories, baseline_accuracy))


def misclassified(images: np.ndarray, captions: list[str], path: Path, limit: int = 12, columns: int = 4) -> Path:
    """Up to `limit` misclassified test images, each captioned with true and predicted class."""

    def draw(theme: Theme):
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
        return figure

    return _save_both(draw, path, ("misclassified", images, captions, limit, columns))


def confusion_heatmap(matrix: np.ndarray, class_names: list[str], path: Path) -> Path:
    """The test confusion matrix as a heatmap: rows the true class, columns the predicted one,
    each cell shaded by its share of the true class's images and labelled with its count."""
    matrix = np.asarray(matrix, dtype=int)
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
    count = len(class_names)

    def draw(theme: Theme):
        side = min(14.0, 2.0 + 0.55 * count)
        figure, axis = plt.subplots(figsize=(side + 1.2, side))
        image = axis.imshow(shares, cmap="Blues" if theme.name == "light" else "magma", vmin=0.0, vmax=1.0)
        axis.set_xticks(range(count), class_names, rotation=45, ha="right", fontsize=9, **LITERAL)
        axis.set_yticks(range(count), class_names, fontsize=9, **LITERAL)
        axis.set_xlabel("predicted class", **LITERAL)
        axis.set_ylabel("true class", **LITERAL)
        if count <= 25:  # a number in every cell while they stay readable
            for row in range(count):
                for column in range(count):
                    dark_cell = (shares[row, column] > 0.5) == (theme.name == "light")
                    axis.text(column, row, str(matrix[row, column]), ha="center", va="center", fontsize=8,
                              color="white" if dark_cell else "black", **LITERAL)
        figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04, label="share of the true class's test images")
        figure.tight_layout()
        return figure

    return _save_both(draw, path, ("confusion_heatmap", matrix, class_names))
