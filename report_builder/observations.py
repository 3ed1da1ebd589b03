"""Turn a model's training histories into plain facts for the write-up.

Everything here is pure: no TensorFlow, no file access. A history is the ``epochs`` list of
``models/<model>/seed-<seed>/history.json`` (see ``docs/guide/artifacts.md``); values may be
``None`` (the schema allows ``null``) or NaN. Every model is trained once per seed:
:func:`summarise_seeds` aggregates the seeds' histories (mean, sample standard deviation, min
and max per epoch), :func:`observe_model` reads the facts off the mean curve, and
:func:`compare_models` is the one rule for saying whether one model beats another. Missing or unusable values never raise: the matching
facts are ``None`` and the verdicts say "not enough data". Data of the wrong *type* (a string
where a number belongs, an accuracy outside 0..1) raises ``ValueError`` with a clear message.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
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
    loss: float | None = None
    val_loss: float | None = None


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
                loss=clean_number(raw.get("loss"), f"{where}: loss"),
                val_loss=clean_number(raw.get("val_loss"), f"{where}: val_loss"),
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
    average = statistics.fmean(values)
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
WILSON_Z_95 = statistics.NormalDist().inv_cdf(0.975)  # 1.959963984540054


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


# --------------------------------------------------------------------------- seeds

#: The numbers of a history record that are aggregated over seeds, per epoch.
CURVE_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy")


@dataclass(frozen=True)
class Spread:
    """One number measured once per seed: how many usable values, mean, sample std, min, max."""

    count: int
    mean: float | None
    std: float | None  # sample standard deviation (n - 1); None with fewer than two values
    minimum: float | None
    maximum: float | None


@dataclass(frozen=True)
class EpochSpread:
    """One epoch number across the seeds that ran it: the spread of each metric."""

    epoch: int
    loss: Spread
    accuracy: Spread
    val_loss: Spread
    val_accuracy: Spread


@dataclass(frozen=True)
class SeedResult:
    """One seed's run of a model: its last epoch and its best epoch on validation."""

    seed: int
    epoch_count: int
    last_epoch: int | None
    last_val_accuracy: float | None
    best_epoch: int | None
    best_val_accuracy: float | None


@dataclass(frozen=True)
class SeedSummary:
    """A model over all of its seeds (seeds in numeric order)."""

    model: str
    seeds: tuple[SeedResult, ...]
    epochs: tuple[EpochSpread, ...]
    last_val: Spread  # over seeds: each seed's last-epoch validation accuracy
    best_val: Spread  # over seeds: each seed's best-epoch validation accuracy

    @property
    def seed_count(self) -> int:
        """How many seeds have a history (usable or not)."""
        return len(self.seeds)

    @property
    def best_epochs(self) -> tuple[int | None, ...]:
        """Each seed's best epoch, in seed order."""
        return tuple(result.best_epoch for result in self.seeds)


def sample_std(values: Sequence[float]) -> float | None:
    """The sample standard deviation (divides by n - 1); ``None`` with fewer than two values."""
    if len(values) < 2:
        return None
    return statistics.stdev(values)


def spread_of(values: Iterable[float | None]) -> Spread:
    """Count, mean, sample std, min and max of the usable (non-``None``) values."""
    usable = [value for value in values if value is not None]
    return Spread(
        count=len(usable),
        mean=mean_of(usable),
        std=sample_std(usable),
        minimum=min(usable) if usable else None,
        maximum=max(usable) if usable else None,
    )


def aggregate_epochs(runs: Mapping[int, Sequence[EpochRecord]]) -> list[EpochSpread]:
    """Per epoch number (ascending), the spread over seeds of every metric in CURVE_METRICS.

    Epochs are matched by their number, so a seed that stopped early simply contributes to
    fewer epochs (each spread's ``count`` says how many seeds it covers).
    """
    by_epoch: dict[int, list[EpochRecord]] = {}
    for records in runs.values():
        for record in records:
            by_epoch.setdefault(record.epoch, []).append(record)
    return [
        EpochSpread(epoch, **{metric: spread_of(getattr(record, metric) for record in records) for metric in CURVE_METRICS})
        for epoch, records in sorted(by_epoch.items())
    ]


def mean_curve(epochs: Sequence[EpochSpread]) -> list[dict[str, object]]:
    """The mean over seeds as a history ``epochs`` list, the input :func:`observe_model` reads."""
    return [{"epoch": item.epoch, **{metric: getattr(item, metric).mean for metric in CURVE_METRICS}} for item in epochs]


def seed_result(seed: int, records: Sequence[EpochRecord]) -> SeedResult:
    """The last and the best epoch of one seed's cleaned history."""
    best_number, best_value = best_epoch(records)
    last = records[-1] if records else None
    return SeedResult(
        seed=seed,
        epoch_count=len(records),
        last_epoch=last.epoch if last else None,
        last_val_accuracy=last.val_accuracy if last else None,
        best_epoch=best_number,
        best_val_accuracy=best_value,
    )


def summarise_seeds(model: str, histories: Mapping[int, object]) -> SeedSummary:
    """Aggregate one model's histories, given as seed -> ``epochs`` list (seeds sorted numerically).

    Raises ``ValueError`` naming the model and the seed when a history is malformed.
    """
    runs = {seed: clean_history(histories[seed], f"{model} (seed {seed})") for seed in sorted(histories)}
    results = tuple(seed_result(seed, records) for seed, records in runs.items())
    return SeedSummary(
        model=model,
        seeds=results,
        epochs=tuple(aggregate_epochs(runs)),
        last_val=spread_of(result.last_val_accuracy for result in results),
        best_val=spread_of(result.best_val_accuracy for result in results),
    )


# --------------------------------------------------------------------------- uncertainty and comparisons

COMPARISON_WITHIN_NOISE = "within noise"
COMPARISON_BETTER = "better"
COMPARISON_UNKNOWN = "not comparable"


@dataclass(frozen=True)
class AccuracyEstimate:
    """A model's mean over seeds of the last epoch's validation accuracy, with a 95% interval."""

    mean: float | None
    std: float | None
    seeds: int  # how many seeds the mean is over
    correct: int | None  # round(mean * total): the mean read as a count of validation images
    total: int | None  # images in the validation split
    interval: tuple[float, float] | None  # 95% Wilson interval for correct / total


@dataclass(frozen=True)
class Comparison:
    """The outcome of :func:`compare_models` for two named models."""

    first: str
    second: str
    first_estimate: AccuracyEstimate
    second_estimate: AccuracyEstimate
    verdict: str  # COMPARISON_WITHIN_NOISE, COMPARISON_BETTER or COMPARISON_UNKNOWN

    @property
    def difference_points(self) -> float | None:
        """First minus second mean, in rounded percentage points."""
        return difference_points(self.first_estimate.mean, self.second_estimate.mean)

    @property
    def first_is_better(self) -> bool:
        """True only when the rule ranks the first model above the second."""
        if self.verdict != COMPARISON_BETTER:
            return False
        return (self.first_estimate.mean or 0.0) > (self.second_estimate.mean or 0.0)

    @property
    def better(self) -> str | None:
        """The model the rule calls better, ``None`` unless the verdict is "better"."""
        if self.verdict != COMPARISON_BETTER:
            return None
        return self.first if self.first_is_better else self.second

    @property
    def worse(self) -> str | None:
        """The other model of a ranked pair, ``None`` unless the verdict is "better"."""
        if self.verdict != COMPARISON_BETTER:
            return None
        return self.second if self.first_is_better else self.first


def accuracy_estimate(spread: Spread, validation_count: object) -> AccuracyEstimate:
    """The 95% Wilson interval for a mean validation accuracy over seeds.

    The mean is read as ``correct = round(mean * n)`` right answers out of the ``n``
    validation images (``validation_count``); without a positive count there is no interval.
    """
    total = validation_count if isinstance(validation_count, int) and not isinstance(validation_count, bool) else None
    total = total if total is not None and total > 0 else None
    correct = round(spread.mean * total) if spread.mean is not None and total is not None else None
    interval = wilson_interval(correct, total) if correct is not None and total is not None else None
    return AccuracyEstimate(spread.mean, spread.std, spread.count, correct, total, interval)


def intervals_overlap(first: tuple[float, float], second: tuple[float, float]) -> bool:
    """Whether two closed intervals share at least one point (touching counts as overlapping)."""
    return first[0] <= second[1] and second[0] <= first[1]


def compare_models(first: str, first_estimate: AccuracyEstimate, second: str, second_estimate: AccuracyEstimate) -> Comparison:
    """The report's one rule for saying whether one model beats another.

    Each model is summarised by its mean over seeds of the last epoch's validation accuracy
    and that mean's 95% Wilson interval (:func:`accuracy_estimate`). When the two intervals
    overlap (touching counts), the difference is *within noise* and the report must not rank
    the two models. Only when the intervals do not overlap is the model with the higher mean
    called *better*. When either side has no interval (no usable accuracy, or no validation
    count to size it), the models are *not comparable* and are not ranked either.

    Overlap is a deliberately cautious test: intervals can overlap a little while a real
    difference exists, so "within noise" means "this run cannot tell them apart", not "equal".
    """
    if first_estimate.interval is None or second_estimate.interval is None:
        verdict = COMPARISON_UNKNOWN
    elif intervals_overlap(first_estimate.interval, second_estimate.interval):
        verdict = COMPARISON_WITHIN_NOISE
    else:
        verdict = COMPARISON_BETTER
    return Comparison(first, second, first_estimate, second_estimate, verdict)


def noise_rule_text() -> str:
    """The comparison rule of :func:`compare_models` in words."""
    return (
        "we take each model's mean over seeds of the last epoch's validation accuracy, read it as "
        "round(mean \u00d7 n) correct answers out of the n validation images and put a 95% Wilson "
        "interval around it; when two models' intervals overlap we call the models "
        f"\u201c{COMPARISON_WITHIN_NOISE}\u201d of each other and do not rank them, and only when the "
        "intervals are apart do we call the one with the higher mean better"
    )
