"""Turn a model's training history into plain facts for the write-up.

Everything here is pure: no TensorFlow, no file access. A history is the ``epochs`` list of
``models/<model>/history.json`` (see ``docs/guide/artifacts.md``); values may be ``None``
(the schema allows ``null``) or NaN. Missing or unusable values never raise: the matching
facts are ``None`` and the verdicts say "not enough data". Data of the wrong *type* (a string
where a number belongs, an accuracy outside 0..1) raises ``ValueError`` with a clear message.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

# --- The rules, in one place. The report renders its rule text from these constants. ---

#: How many final epochs form the "settled" window (fewer when fewer epochs ran).
SETTLED_WINDOW_EPOCHS = 5
#: Mean train-minus-validation accuracy gap (percentage points) from which a model overfits strongly.
STRONG_OVERFIT_GAP_POINTS = 10.0
#: Mean gap (percentage points) from which a model overfits mildly.
MILD_OVERFIT_GAP_POINTS = 4.0
#: A settled mean at most this many points above the majority baseline is "no better than the baseline".
AT_BASELINE_MARGIN_POINTS = 2.0
#: Gaps and gains are rounded to this many decimals before comparing, so the verdict agrees
#: with the rounded numbers printed next to it.
POINTS_DECIMALS = 1

VERDICT_STRONG = "overfits strongly"
VERDICT_MILD = "overfits mildly"
VERDICT_NONE = "no clear overfitting"
VERDICT_NOT_ENOUGH_DATA = "not enough data"
VERDICTS = (VERDICT_STRONG, VERDICT_MILD, VERDICT_NONE, VERDICT_NOT_ENOUGH_DATA)

BASELINE_NO_BETTER = "no better than the baseline"
BASELINE_BETTER = "better than the baseline"


@dataclass(frozen=True)
class SettledRange:
    """Validation accuracy over the last epochs of training (fractions in 0..1)."""

    window_epochs: int  # epochs in the window (min(SETTLED_WINDOW_EPOCHS, epoch count))
    first_epoch: int
    last_epoch: int
    valid_values: int  # how many of those epochs have a usable val_accuracy
    minimum: float | None
    maximum: float | None
    mean: float | None


@dataclass(frozen=True)
class ModelObservation:
    """Facts about one model's training run. Accuracies are fractions, gaps are points."""

    model: str
    epoch_count: int
    settled: SettledRange | None
    best_epoch: int | None
    best_val_accuracy: float | None
    last_epoch: int | None
    last_train_accuracy: float | None
    last_val_accuracy: float | None
    mean_gap_points: float | None  # mean of (train - validation) accuracy over the window
    gap_epochs: int  # epochs in the window where both accuracies are usable
    overfitting: str  # one of VERDICTS
    baseline_accuracy: float | None
    gain_over_baseline_points: float | None
    at_baseline: bool | None
    baseline_verdict: str  # BASELINE_NO_BETTER, BASELINE_BETTER or VERDICT_NOT_ENOUGH_DATA
    previous_model: str | None
    gain_over_previous_points: float | None

    @property
    def has_data(self) -> bool:
        """True when at least one epoch has a usable validation accuracy."""
        return self.settled is not None and self.settled.mean is not None


@dataclass(frozen=True)
class EpochRecord:
    """One cleaned history record: unusable numbers become ``None``."""

    epoch: int
    accuracy: float | None
    val_accuracy: float | None


def overfitting_rule_text() -> str:
    """The overfitting rule in words, built from the constants above."""
    strong = format_number(STRONG_OVERFIT_GAP_POINTS)
    mild = format_number(MILD_OVERFIT_GAP_POINTS)
    return (
        f"average the gap between training and validation accuracy over the last "
        f"{SETTLED_WINDOW_EPOCHS} epochs (or all of them, if fewer ran); a gap of {strong} points "
        f"or more means \u201c{VERDICT_STRONG}\u201d, from {mild} up to {strong} points means "
        f"\u201c{VERDICT_MILD}\u201d, and below {mild} points means \u201c{VERDICT_NONE}\u201d"
    )


def baseline_rule_text() -> str:
    """The "no better than the baseline" rule in words, built from the constants above."""
    margin = format_number(AT_BASELINE_MARGIN_POINTS)
    return (
        f"a model whose settled mean validation accuracy is at most {margin} points above the "
        f"majority baseline (or below it) is called \u201c{BASELINE_NO_BETTER}\u201d"
    )


def format_number(value: float) -> str:
    """Write a rule constant without a useless ``.0`` (10.0 -> "10", 2.5 -> "2.5")."""
    return f"{value:g}"


def clean_number(value: object, what: str) -> float | None:
    """A finite float, or ``None`` for null/NaN/infinity. Non-numbers raise ``ValueError``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be a number or null, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        return None
    return number


def clean_accuracy(value: object, what: str) -> float | None:
    """Like :func:`clean_number`, and the value must lie in 0..1."""
    number = clean_number(value, what)
    if number is not None and not 0.0 <= number <= 1.0:
        raise ValueError(f"{what} must lie between 0 and 1, got {number!r}")
    return number


def clean_history(epochs: object, model: str = "model") -> list[EpochRecord]:
    """Validate the ``epochs`` list of a history and clean its accuracy values."""
    if epochs is None:
        return []
    if isinstance(epochs, (str, bytes)) or not isinstance(epochs, Sequence):
        raise ValueError(f"history of {model}: 'epochs' must be a list, got {type(epochs).__name__}")
    records: list[EpochRecord] = []
    for index, raw in enumerate(epochs):
        if not isinstance(raw, Mapping):
            raise ValueError(f"history of {model}: epoch entry {index + 1} must be an object, got {raw!r}")
        epoch_number = raw.get("epoch", index + 1)
        if isinstance(epoch_number, bool) or not isinstance(epoch_number, int):
            raise ValueError(f"history of {model}: epoch entry {index + 1} has a non-integer epoch {epoch_number!r}")
        where = f"history of {model}, epoch {epoch_number}"
        records.append(
            EpochRecord(
                epoch=epoch_number,
                accuracy=clean_accuracy(raw.get("accuracy"), f"{where}: accuracy"),
                val_accuracy=clean_accuracy(raw.get("val_accuracy"), f"{where}: val_accuracy"),
            )
        )
    return records


def to_points(fraction: float) -> float:
    """A fraction (0..1) as percentage points, rounded like the report prints it."""
    return round(fraction * 100.0, POINTS_DECIMALS)


def mean_of(values: Sequence[float]) -> float | None:
    """Exact-as-possible mean, clamped into [min, max] against rounding; ``None`` if empty."""
    if not values:
        return None
    average = math.fsum(values) / len(values)
    return min(max(average, min(values)), max(values))


def settled_range(records: Sequence[EpochRecord]) -> SettledRange | None:
    """Validation accuracy over the last ``min(SETTLED_WINDOW_EPOCHS, n)`` epochs."""
    if not records:
        return None
    window = list(records[-SETTLED_WINDOW_EPOCHS:])
    values = [record.val_accuracy for record in window if record.val_accuracy is not None]
    return SettledRange(
        window_epochs=len(window),
        first_epoch=window[0].epoch,
        last_epoch=window[-1].epoch,
        valid_values=len(values),
        minimum=min(values) if values else None,
        maximum=max(values) if values else None,
        mean=mean_of(values),
    )


def best_epoch(records: Sequence[EpochRecord]) -> tuple[int | None, float | None]:
    """The epoch with the highest validation accuracy (the earliest one on ties)."""
    best: EpochRecord | None = None
    for record in records:
        if record.val_accuracy is None:
            continue
        if best is None or record.val_accuracy > (best.val_accuracy or 0.0):
            best = record
    if best is None:
        return None, None
    return best.epoch, best.val_accuracy


def mean_gap_points(records: Sequence[EpochRecord]) -> tuple[float | None, int]:
    """Mean train-minus-validation gap in points over the settled window, and its epoch count."""
    window = records[-SETTLED_WINDOW_EPOCHS:]
    gaps = [
        record.accuracy - record.val_accuracy
        for record in window
        if record.accuracy is not None and record.val_accuracy is not None
    ]
    gap = mean_of(gaps)
    return (None if gap is None else to_points(gap)), len(gaps)


def overfitting_verdict(gap_points: float | None) -> str:
    """Apply the stated overfitting rule to a (rounded) gap in points."""
    if gap_points is None:
        return VERDICT_NOT_ENOUGH_DATA
    if gap_points >= STRONG_OVERFIT_GAP_POINTS:
        return VERDICT_STRONG
    if gap_points >= MILD_OVERFIT_GAP_POINTS:
        return VERDICT_MILD
    return VERDICT_NONE


def baseline_verdict(gain_points: float | None) -> tuple[bool | None, str]:
    """Whether a gain over the majority baseline (points) counts as "no better than the baseline"."""
    if gain_points is None:
        return None, VERDICT_NOT_ENOUGH_DATA
    at_baseline = gain_points <= AT_BASELINE_MARGIN_POINTS
    return at_baseline, (BASELINE_NO_BETTER if at_baseline else BASELINE_BETTER)


def difference_points(new: float | None, old: float | None) -> float | None:
    """``new - old`` in rounded points, ``None`` when either side is unknown."""
    if new is None or old is None:
        return None
    return to_points(new - old)


def observe_model(
    model: str,
    epochs: object,
    baseline_accuracy: object = None,
    previous: ModelObservation | None = None,
) -> ModelObservation:
    """Facts for one model from its history ``epochs`` list.

    ``baseline_accuracy`` is the majority baseline's validation accuracy (a fraction, or None).
    ``previous`` is the observation of the previous model in study order, if it has one.
    """
    records = clean_history(epochs, model)
    baseline = clean_accuracy(baseline_accuracy, "majority baseline validation accuracy")
    settled = settled_range(records)
    settled_mean = settled.mean if settled is not None else None
    best_epoch_number, best_value = best_epoch(records)
    gap, gap_epochs = mean_gap_points(records)
    gain_over_baseline = difference_points(settled_mean, baseline)
    at_baseline, baseline_words = baseline_verdict(gain_over_baseline)
    previous_mean = previous.settled.mean if previous is not None and previous.settled is not None else None
    last = records[-1] if records else None
    return ModelObservation(
        model=model,
        epoch_count=len(records),
        settled=settled,
        best_epoch=best_epoch_number,
        best_val_accuracy=best_value,
        last_epoch=last.epoch if last else None,
        last_train_accuracy=last.accuracy if last else None,
        last_val_accuracy=last.val_accuracy if last else None,
        mean_gap_points=gap,
        gap_epochs=gap_epochs,
        overfitting=overfitting_verdict(gap),
        baseline_accuracy=baseline,
        gain_over_baseline_points=gain_over_baseline,
        at_baseline=at_baseline,
        baseline_verdict=baseline_words,
        previous_model=previous.model if previous is not None else None,
        gain_over_previous_points=difference_points(settled_mean, previous_mean),
    )


def observe_study(
    histories: Mapping[str, object],
    baseline_accuracy: object,
    model_order: Sequence[str],
) -> dict[str, ModelObservation | None]:
    """Observations for every model in ``model_order``; ``None`` for models without a history.

    Each model is compared with the model right before it in study order; when that model has
    no history the comparison is left out (``gain_over_previous_points`` is ``None``).
    """
    observations: dict[str, ModelObservation | None] = {}
    previous: ModelObservation | None = None
    previous_name: str | None = None
    for model in model_order:
        epochs = histories.get(model)
        if epochs is None:
            observation = None
        else:
            observation = observe_model(model, epochs, baseline_accuracy, previous)
            if observation.previous_model is None and previous_name is not None:
                observation = _with_previous_name(observation, previous_name)
        observations[model] = observation
        previous = observation
        previous_name = model
    return observations


def _with_previous_name(observation: ModelObservation, previous_name: str) -> ModelObservation:
    """Record which model came before even when it has no history to compare with."""
    return replace(observation, previous_model=previous_name)


#: z for a two-sided 95% interval.
WILSON_Z_95 = 1.959963984540054


def wilson_interval(correct: int, total: int, z: float = WILSON_Z_95) -> tuple[float, float] | None:
    """The Wilson score interval for a proportion `correct / total` (None when total is 0).

    Unlike the normal approximation it stays inside [0, 1] and behaves at 0 or total correct,
    which matters for accuracies near 100% on a couple of hundred test images.
    """
    if total <= 0 or not 0 <= correct <= total:
        return None
    proportion = correct / total
    denominator = 1 + z * z / total
    centre = (proportion + z * z / (2 * total)) / denominator
    half_width = z * math.sqrt(proportion * (1 - proportion) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half_width), min(1.0, centre + half_width)


def per_class_scores(class_names: Sequence[str], confusion: Sequence[Sequence[int]]) -> list[dict[str, object]]:
    """Precision and recall per class from a confusion matrix (rows: true, columns: predicted)."""
    scores = []
    for index, name in enumerate(class_names):
        true_positive = confusion[index][index]
        predicted = sum(row[index] for row in confusion)
        actual = sum(confusion[index])
        scores.append({
            "name": name,
            "support": actual,
            "precision": true_positive / predicted if predicted else None,
            "recall": true_positive / actual if actual else None,
        })
    return scores
