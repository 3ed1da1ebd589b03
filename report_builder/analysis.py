"""Statistics that read a study's results the way a sceptical reviewer would.

Everything here is pure: numpy, scipy's t distribution and Python's ``statistics``; no
TensorFlow, no plotting, no file access. Two kinds of input:

* A *history* is a list of epoch records ``{"epoch", "loss", "accuracy", "val_loss",
  "val_accuracy", "seconds"}``. Epoch numbers are 1-based and may start above 1 (a model that
  continues another). ``None``, NaN and infinities all mean "not recorded". ``runs`` maps each
  training seed to its history.
* ``correct`` is a boolean array shaped ``(seeds, images)``: whether seed ``s``'s final model
  classified validation image ``i`` correctly. Every model is scored on the same images in the
  same order, so two models can be compared image by image (a *paired* comparison).

Accuracy intervals (:func:`accuracy_interval`, :func:`paired_difference`) count both sources of
chance in a result, which seeds were trained and which images happen to be in the validation
set, each by its own sample variance, and use a Student t quantile with Welch-Satterthwaite
degrees of freedom, so that they keep their coverage with the two to five seeds a study can
afford (``benchmarks/calibration.py`` measures it on models that are equal in truth).
:func:`holm_rejections` holds the family-wise error rate over a report's comparisons.
:func:`curve_verdicts` reads the training curves against named thresholds that scale with the
validation set's binomial noise. Every threshold is a module-level constant,
so the report's method page can quote the rules from this file.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# Student's t quantile and tail from scipy.special (what scipy.stats.t calls), without scipy.stats's
# second of import time: `render` starts in a fraction of a second
from scipy.special import stdtr, stdtrit

#: Confidence level of every interval (two-sided), and 1 - LEVEL the family-wise error rate
#: that Holm's correction holds over the report's comparisons.
LEVEL = 0.95

# --- Curve-reading thresholds. Accuracies are fractions in 0..1, losses are in nats. ---

#: How many final epochs of each seed are averaged for "final" train or validation accuracy.
FINAL_WINDOW = 3
#: A best epoch among a seed's last this-many epochs counts as "late".
LATE_EPOCHS = 3
#: How many final epochs of the mean curve the trend slope (and a seed's "recent best") uses.
TREND_WINDOW = 5
#: A validation loss that never falls below this fraction of the chance loss is "at chance".
CHANCE_LOSS_FRACTION = 0.95
#: Training accuracy must cover at least this fraction of the way from the majority baseline to
#: 100%, or the model underfits (75% for a balanced two-class set).
UNDERFIT_FRACTION = 0.5
#: Least-squares slope (per epoch) of mean validation accuracy from which it is still rising;
#: a validation loss slope at or below minus this value is still falling.
RISING_SLOPE = 0.002
#: The final mean validation loss must be at least this fraction above its minimum (20%) for the
#: loss to have turned upward.
LOSS_RISE_FRACTION = 0.2
#: Final train minus final validation accuracy from which the gap counts as overfitting.
GAP_THRESHOLD = 0.10
#: Max minus min over seeds of the last epoch's validation accuracy from which seeds disagree.
SPREAD_THRESHOLD = 0.03
#: How far a seed's last validation accuracy may fall below its recent best before it "drops".
DROP_THRESHOLD = 0.02
#: How many binomial standard errors of a validation accuracy a change must exceed to count
#: (about a two-sided 95% level for one comparison).
NOISE_Z = 2.0
#: How many binomial standard errors the seeds' final validation accuracies must span to disagree
#: (three seeds that differ by that noise alone span more than 3.3 of it 1 time in 20).
SPREAD_Z = 3.3
#: Values this close to a threshold count as reaching it (so 0.95 - 0.85 reaches a 0.10 gap).
TOLERANCE = 1e-9

AT_CHANCE = "at_chance"
OVERCONFIDENT = "overconfident"
UNDERFITTING = "underfitting"
STILL_IMPROVING = "still_improving"
OVERFITTING_LOSS = "overfitting_loss"
OVERFITTING_GAP = "overfitting_gap"
UNSTABLE_SPREAD = "unstable_spread"
LATE_DROP = "late_drop"
SETTLED = "settled"
#: Every verdict code, in the order :func:`curve_verdicts` returns them.
VERDICT_CODES = (AT_CHANCE, OVERCONFIDENT, UNDERFITTING, STILL_IMPROVING, OVERFITTING_LOSS, OVERFITTING_GAP, UNSTABLE_SPREAD, LATE_DROP, SETTLED)

History = Sequence[Mapping[str, object]]
Runs = Mapping[int, History]


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided interval ``[low, high]`` (same units as the estimate).

    ``df`` is the interval's Welch-Satterthwaite degrees of freedom (None for a zero-width one),
    ``p_value`` the two-sided test of a zero estimate (differences) or None, ``standard_error``
    the square root of the summed variance parts. ``seed_variation_known`` is False when only
    one seed was trained on each side, so the interval covers the choice of images only;
    ``identical`` marks two bit-identical sets of runs.
    """

    estimate: float
    low: float
    high: float
    df: float | None = None
    p_value: float | None = None
    seed_variation_known: bool = True
    identical: bool = False
    standard_error: float = 0.0

    def excludes(self, value: float) -> bool:
        """True when ``value`` lies strictly outside ``[low, high]``."""
        return value < self.low or value > self.high

    def covers(self, value: float) -> bool:
        """True when ``low <= value <= high``."""
        return self.low <= value <= self.high


@dataclass(frozen=True)
class Verdict:
    """One reading of a model's training curves: a code from VERDICT_CODES and the numbers behind it."""

    code: str
    facts: dict


# --- Intervals. ---


def as_correct_matrix(correct, name: str = "correct") -> np.ndarray:
    """``correct`` as a boolean ``(seeds, images)`` array; a 1-D array is one seed.

    Raises ValueError for an empty array, more than two dimensions, or values other than 0/1.
    """
    array = np.asarray(correct)
    if array.ndim == 1:
        array = array[np.newaxis, :]
    if array.ndim != 2:
        raise ValueError(f"{name} must be shaped (seeds, images), got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} is empty (shape {array.shape}): it needs at least one seed and one image")
    if array.dtype != bool:
        if not np.isin(array, (0, 1)).all():
            raise ValueError(f"{name} must hold booleans (or 0/1), got values such as {array.flat[0]!r}")
        array = array.astype(bool)
    return array


def accuracy_interval(correct, *, level: float = LEVEL) -> Interval:
    """Mean accuracy over seeds, with a two-component small-sample interval.

    Definition: the estimate is the mean over seeds of each seed's accuracy (the fraction of
    validation images it classifies correctly). Its variance has two parts, each estimated from
    the data: the seeds' sample variance of their accuracies over the number of seeds (which
    seeds were trained), and the images' sample variance of their mean correctness over the
    number of images (which images happen to be in the validation set). The interval is the
    estimate plus or minus a Student t quantile times the square root of their sum, with
    Welch-Satterthwaite degrees of freedom, so with two or three seeds the seed part counts with
    one or two degrees of freedom, as it should. With one seed the seed-to-seed variation is
    unknown: the interval covers the choice of images only (``seed_variation_known`` is False).
    The interval is clipped to [0, 1].
    """
    matrix = as_correct_matrix(correct)
    _check_level(level)
    per_seed = matrix.mean(axis=1)
    estimate = float(per_seed.mean())
    components = [_component(per_seed, floor=interaction_variance(matrix) / matrix.shape[1]), _component(matrix.mean(axis=0))]
    interval = _t_interval(estimate, components, level)
    return dataclasses.replace(interval, low=max(0.0, interval.low), high=min(1.0, interval.high), p_value=None,
                               seed_variation_known=matrix.shape[0] > 1)


def paired_difference(correct_a, correct_b, *, paired: bool = False, level: float = LEVEL) -> Interval:
    """Mean accuracy of model a minus that of model b, with a paired two-component interval.

    Definition: the estimate is (mean over a's seeds of their accuracy) minus (the same for b).
    Its variance has two parts:

    * **Seeds.** Unpaired (independent trainings): a's seed variance over a's seed count plus
      b's over b's (Welch). ``paired=True`` (row ``s`` of both arrays comes from the same seed
      lineage, as when one model continues the other's run): the sample variance of the
      per-seed differences over the number of seeds. A model with one seed borrows the other's
      seed variance; with one seed each the seed part is unknown and left out
      (``seed_variation_known`` is False), so the interval then covers the images only.
    * **Images.** Both models are scored on the same images, so the image part is the sample
      variance of the per-image difference (a's mean correctness on the image minus b's) over
      the number of images: images both get right or both get wrong cancel out.

    The interval is the estimate plus or minus a Student t quantile at the Welch-Satterthwaite
    degrees of freedom of the sum. Counting the seed-by-image interaction in both parts makes it
    slightly wide, never narrow. ``p_value`` is the two-sided t test of no difference. Two
    identical arrays (the same runs) give ``identical=True`` and a zero-width interval.

    Raises ValueError when either array is empty, the two have different image counts, or
    ``paired`` is asked of different seed counts.
    """
    matrix_a = as_correct_matrix(correct_a, "correct_a")
    matrix_b = as_correct_matrix(correct_b, "correct_b")
    _check_level(level)
    if matrix_a.shape[1] != matrix_b.shape[1]:
        raise ValueError(
            f"paired comparison needs the same validation images for both models: correct_a has {matrix_a.shape[1]} images, correct_b has {matrix_b.shape[1]}"
        )
    if paired and matrix_a.shape[0] != matrix_b.shape[0]:
        raise ValueError(f"pairing by seed needs the same seeds for both models: correct_a has {matrix_a.shape[0]}, correct_b has {matrix_b.shape[0]}")
    seeds_a, seeds_b = matrix_a.mean(axis=1), matrix_b.mean(axis=1)
    estimate = float(seeds_a.mean() - seeds_b.mean())
    if matrix_a.shape == matrix_b.shape and np.array_equal(matrix_a, matrix_b):
        return Interval(estimate, estimate, estimate, None, 1.0, seed_variation_known=matrix_a.shape[0] > 1, identical=True)
    floor_a, floor_b = interaction_variance(matrix_a) / matrix_a.shape[1], interaction_variance(matrix_b) / matrix_b.shape[1]
    if paired:  # the runs share each seed's start: the floor is the interaction of the per-seed differences
        differences = matrix_a.astype(np.float64) - matrix_b.astype(np.float64)
        seed_component = _component(seeds_a - seeds_b, floor=_interaction(differences) / matrix_a.shape[1])
    else:
        seed_component = _welch_component(seeds_a, seeds_b, floor_a, floor_b)
    image_component = _component(matrix_a.mean(axis=0) - matrix_b.mean(axis=0))
    interval = _t_interval(estimate, [seed_component, image_component], level)
    return dataclasses.replace(interval, seed_variation_known=seed_component is not None)


def holm_rejections(p_values: Sequence[float | None], alpha: float = 1.0 - LEVEL) -> list[bool]:
    """Holm's step-down correction: which of a family of tests reject at family-wise error ``alpha``.

    Sort the p-values; the k-th smallest (k from 0) rejects when it and every smaller one are at
    most ``alpha / (m - k)``, m being the number of tests. ``None`` (a comparison that could not
    be made) never rejects and does not count in m. Controls the chance of any false rejection
    in the family at ``alpha``, whatever the dependence between the tests.
    """
    indexed = sorted((p, index) for index, p in enumerate(p_values) if p is not None)
    rejected = [False] * len(p_values)
    for rank, (p, index) in enumerate(indexed):
        if p > alpha / (len(indexed) - rank):
            break
        rejected[index] = True
    return rejected


def seeds_to_settle(difference: float, seed_sd: float, level: float = LEVEL, power: float = 0.8,
                    image_variance: float = 0.0, interaction_variance: float = 0.0) -> int | None:
    """Seeds per model a study would need to call ``difference`` real with the given power.

    Each model trained with n independent seeds whose accuracies vary with standard deviation
    ``seed_sd``; the standard error of the difference is then
    ``sqrt(2 seed_sd^2 / n + image_variance + interaction_variance / n)``: ``image_variance`` is
    the part of the image variance that more seeds do not shrink (the images' own difficulty),
    ``interaction_variance`` the part that averages out over seeds (which seed gets which image
    right), both as variances of the mean over the images. Returns the smallest n from 2 with
    ``t(level, df) + t(power, df)`` such errors fitting in the difference, df = 2n - 2; None
    when no n up to 1,000 does (or the difference is zero).
    """
    if difference == 0 or not math.isfinite(difference) or seed_sd < 0:
        return None
    for seeds in range(2, 1001):
        df = 2 * seeds - 2
        needed = stdtrit(df, (1 + level) / 2) + stdtrit(df, power)
        if abs(difference) >= needed * math.sqrt(2 * seed_sd**2 / seeds + image_variance + interaction_variance / seeds):
            return seeds
    return None


def interaction_variance(correct) -> float:
    """The seed-by-image interaction variance of a ``(seeds, images)`` matrix: the residual mean
    square of a two-way layout (0 with one seed). How much which seed gets which image right
    varies beyond each seed's and each image's own level."""
    return _interaction(as_correct_matrix(correct).astype(np.float64))


def _interaction(matrix: np.ndarray) -> float:
    seeds, images = matrix.shape
    if seeds < 2 or images < 2:
        return 0.0
    residual = matrix - matrix.mean(axis=1, keepdims=True) - matrix.mean(axis=0, keepdims=True) + matrix.mean()
    return float((residual**2).sum() / ((seeds - 1) * (images - 1)))


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")


def _component(values: np.ndarray, floor: float = 0.0) -> tuple[float, int] | None:
    """The variance of the mean of ``values`` and its degrees of freedom; None for one value.
    ``floor``: the least the variance of one value can be (see :func:`_seed_variance`)."""
    count = len(values)
    if count < 2:
        return None
    return _seed_variance(values, floor) / count, count - 1


def _seed_variance(values: np.ndarray, floor: float) -> float:
    """The sample variance of per-seed accuracies, at least ``floor``.

    A seed's accuracy varies for two reasons: the seed's own luck, and which images it happens to
    get right, whose variance (the seed-by-image interaction over the number of images) is
    estimated precisely from the many images. Two or three seeds that land close together by
    chance would put the seed variance below that, where it cannot be; the floor keeps it there.
    """
    return max(float(np.var(values, ddof=1)), floor)


def _welch_component(seeds_a: np.ndarray, seeds_b: np.ndarray, floor_a: float = 0.0, floor_b: float = 0.0) -> tuple[float, float] | None:
    """Variance of the difference of two independent means of seeds (Welch), with its df.

    A side with one seed takes the other side's seed variance (the only estimate there is);
    with one seed on each side there is none.
    """
    count_a, count_b = len(seeds_a), len(seeds_b)
    if count_a < 2 and count_b < 2:
        return None
    if count_a < 2 or count_b < 2:
        known, floor = (seeds_a, floor_a) if count_a >= 2 else (seeds_b, floor_b)
        variance = _seed_variance(known, max(floor_a, floor_b))
        return variance * (1 / count_a + 1 / count_b), len(known) - 1
    part_a = _seed_variance(seeds_a, floor_a) / count_a
    part_b = _seed_variance(seeds_b, floor_b) / count_b
    total = part_a + part_b
    if total == 0:
        return 0.0, count_a + count_b - 2
    return total, total**2 / (part_a**2 / (count_a - 1) + part_b**2 / (count_b - 1))


def _t_interval(estimate: float, components: list[tuple[float, float] | None], level: float) -> Interval:
    """estimate +- t(df) x sqrt(sum of variances), df by Welch-Satterthwaite over the components."""
    present = [(variance, df) for variance, df in (item for item in components if item is not None) if variance > 0]
    variance = sum(part for part, _ in present)
    if variance == 0:
        p_value = 1.0 if estimate == 0 else 0.0
        return Interval(estimate, estimate, estimate, None, p_value)
    df = variance**2 / sum(part**2 / part_df for part, part_df in present)
    error = math.sqrt(variance)
    half = float(stdtrit(df, (1.0 + level) / 2.0)) * error
    p_value = float(2.0 * stdtr(df, -abs(estimate) / error))
    return Interval(estimate, estimate - half, estimate + half, float(df), p_value, standard_error=error)


# --- Reading histories. ---


def best_epoch(history: History) -> int | None:
    """The epoch number with the highest ``val_accuracy``; the earliest epoch on ties.

    This is the one definition of "best epoch" used throughout the report. Returns None when
    no epoch has a recorded (finite) ``val_accuracy``.
    """
    best = None
    for record in sorted(history, key=lambda record: record["epoch"]):
        value = _value(record, "val_accuracy")
        if value is not None and (best is None or value > best[1]):
            best = (int(record["epoch"]), value)
    return None if best is None else best[0]


def chance_loss(label_counts: Sequence[int]) -> float:
    """Cross-entropy (nats) of always predicting the class frequencies.

    Equals the entropy of the label distribution, ``-sum(p_k * ln p_k)`` with
    ``p_k = count_k / total``: ``ln K`` for K balanced classes. Classes with zero count add nothing.
    Raises ValueError for negative counts or when no labels are counted.
    """
    if any(count < 0 for count in label_counts):
        raise ValueError(f"label counts cannot be negative, got {list(label_counts)}")
    total = sum(label_counts)
    if total <= 0:
        raise ValueError(f"chance_loss needs at least one label, got counts {list(label_counts)}")
    return -sum(count / total * math.log(count / total) for count in label_counts if count > 0)


def mean_curve(runs: Runs, key: str) -> dict[int, float | None]:
    """Mean over seeds of ``key`` per epoch number, for the epochs present in every seed's history.

    Histories can differ in length (a partial run), so only the common epoch numbers are kept,
    in increasing order. Missing values are ignored in the mean; an epoch where no seed has a
    value maps to None.
    """
    if not runs:
        return {}
    per_seed = [{int(record["epoch"]): _value(record, key) for record in history} for history in runs.values()]
    common = set.intersection(*(set(values) for values in per_seed))
    curve = {}
    for epoch in sorted(common):
        values = [values[epoch] for values in per_seed if values[epoch] is not None]
        curve[epoch] = statistics.fmean(values) if values else None
    return curve


def window_mean(runs: Runs, key: str, window: int = FINAL_WINDOW) -> float | None:
    """Mean over seeds of each seed's mean ``key`` over its last ``window`` epochs.

    This is the "final" value used by the verdicts (FINAL_WINDOW = 3 epochs by default), which
    smooths out a single lucky or unlucky last epoch. Missing values are ignored; a seed with no
    value in its window is left out; None when no seed has a value.
    """
    seed_means = []
    for history in runs.values():
        values = [value for record in _ordered(history)[-window:] if (value := _value(record, key)) is not None]
        if values:
            seed_means.append(statistics.fmean(values))
    return _mean_or_none(seed_means)


def trend_slope(curve: Mapping[int, float | None], window: int = TREND_WINDOW) -> float | None:
    """Least-squares slope (change per epoch) of a curve over its last ``window`` epochs.

    Epochs without a value are skipped; None when fewer than two values remain.
    """
    points = [(epoch, value) for epoch, value in list(curve.items())[-window:] if value is not None]
    if len(points) < 2:
        return None
    epochs, values = zip(*points)
    return statistics.linear_regression(epochs, values).slope


# --- Verdicts. ---


def curve_verdicts(runs: Runs, *, majority_accuracy: float, chance_loss: float, interval: Interval | None,
                   validation_count: int | None = None) -> list[Verdict]:
    """Every verdict that applies to a model's training curves, in VERDICT_CODES order.

    "Mean curve" is :func:`mean_curve`; "final train/validation accuracy" is :func:`window_mean`
    of ``accuracy``/``val_accuracy`` over each seed's last FINAL_WINDOW (3) epochs. "Noise" is
    the binomial standard error of a validation accuracy measured on ``validation_count``
    images, ``sqrt(p (1 - p) / n)`` at the final validation accuracy (:func:`binomial_noise`;
    zero when the count is unknown, which leaves the fixed floors alone). A threshold on
    validation accuracy is the larger of its fixed floor and NOISE_Z (2) x that noise.

    * ``at_chance``: the accuracy interval (when given) reaches down to the majority baseline,
      or, with no interval, the lowest mean validation loss stays above CHANCE_LOSS_FRACTION
      (0.95) x the chance loss.
    * ``overconfident``: the interval lies above the baseline, yet the lowest mean validation
      loss stays above CHANCE_LOSS_FRACTION x the chance loss: the model ranks images better
      than chance, but its probabilities are no better than guessing the class shares.
    * ``underfitting``: final train accuracy is below
      ``majority_accuracy + UNDERFIT_FRACTION (0.5) x (1 - majority_accuracy)``.
    * ``still_improving``: not at chance and no lasting validation-loss rise; over the last
      TREND_WINDOW (5) epochs the mean validation accuracy rises (least-squares slope times
      the window's span) by at least RISING_SLOPE (0.2 points) per epoch and by NOISE_Z x the
      noise of a mean over the seeds; and more than half of the seeds peak among their last
      LATE_EPOCHS (3) epochs after a rise of their own of at least one noise.
    * ``overfitting_loss``: a lasting rise of the validation loss: the mean of the mean curve's
      last FINAL_WINDOW epochs is at least LOSS_RISE_FRACTION (20%) above its lowest value,
      reached before that window, and the same holds of more than half of the seeds on their
      own. One seed's spike is not a trend.
    * ``overfitting_gap``: final train accuracy minus final validation accuracy is at least
      GAP_THRESHOLD (10 points) and NOISE_Z x the noise.
    * ``unstable_spread``: with 2+ seeds, the seeds' final validation accuracies span at least
      SPREAD_THRESHOLD (3 points) and SPREAD_Z (3.3) x the noise, and still do without the
      seeds that have a late drop (that event is named once, as the drop).
    * ``late_drop``: some seed's last validation accuracy is below the best of its last
      TREND_WINDOW epochs by at least DROP_THRESHOLD (2 points), NOISE_Z x the noise and
      NOISE_Z x the seed's own epoch-to-epoch variation (:func:`_jitter` of its validation
      accuracies before the last epoch, over the second half of training when it has 10 or
      more such epochs).
    * ``settled``: none of the above applies.

    A model at chance is not read for trends, spreads or drops: at chance they are noise.
    A rule whose inputs are missing does not apply. Empty ``runs`` give ``[]``.
    """
    if not runs or not any(runs.values()):
        return []
    noise = binomial_noise(window_mean(runs, "val_accuracy"), validation_count)
    chance = _at_chance(runs, majority_accuracy, chance_loss, interval)
    loss_rise = _overfitting_loss(runs)
    underfits = _underfitting(runs, majority_accuracy)
    at_chance = chance is not None and chance.code == AT_CHANCE
    drop = None if at_chance else _late_drop(runs, noise)
    dropped = {item["seed"] for item in drop.facts["seeds"]} if drop else set()
    checks = (
        chance,
        underfits,
        None if at_chance or loss_rise else _still_improving(runs, noise),
        _with_underfitting(loss_rise, underfits),
        _overfitting_gap(runs, noise),
        None if at_chance else _unstable_spread(runs, noise, dropped),
        drop,
    )
    verdicts = [verdict for verdict in checks if verdict is not None]
    return verdicts or [Verdict(SETTLED, {})]


def binomial_noise(accuracy: float | None, images: int | None) -> float:
    """The binomial standard error of an accuracy measured on ``images`` images: 0 when unknown."""
    if accuracy is None or not images or images < 1:
        return 0.0
    accuracy = min(max(accuracy, 0.0), 1.0)
    return math.sqrt(accuracy * (1.0 - accuracy) / images)


def _at_chance(runs: Runs, majority_accuracy: float, chance_loss: float, interval: Interval | None) -> Verdict | None:
    by_interval = interval is not None and interval.low <= majority_accuracy + TOLERANCE
    losses = [value for value in mean_curve(runs, "val_loss").values() if value is not None]
    lowest = min(losses) if losses else None
    by_loss = lowest is not None and lowest > CHANCE_LOSS_FRACTION * chance_loss
    if not (by_interval or by_loss):
        return None
    facts = {
        "by_interval": by_interval,
        "by_loss": by_loss,
        "lowest_val_loss": lowest,
        "chance_loss": chance_loss,
        "majority_accuracy": majority_accuracy,
        "interval_low": None if interval is None else interval.low,
    }
    if not by_interval and interval is not None:  # above chance by accuracy: the loss tells of over-confidence
        return Verdict(OVERCONFIDENT, facts)
    return Verdict(AT_CHANCE, facts)


def _underfitting(runs: Runs, majority_accuracy: float) -> Verdict | None:
    train_accuracy = window_mean(runs, "accuracy")
    threshold = majority_accuracy + UNDERFIT_FRACTION * (1.0 - majority_accuracy)
    if train_accuracy is None or train_accuracy >= threshold - TOLERANCE:
        return None
    return Verdict(UNDERFITTING, {"train_accuracy": train_accuracy, "threshold": threshold})


def _still_improving(runs: Runs, noise: float) -> Verdict | None:
    accuracy_curve = mean_curve(runs, "val_accuracy")
    accuracy_slope = trend_slope(accuracy_curve)
    span = min(TREND_WINDOW, len(accuracy_curve)) - 1
    if accuracy_slope is None or span < 1:
        return None
    needed = max(RISING_SLOPE * span, NOISE_Z * noise / math.sqrt(len(runs)))
    rise = accuracy_slope * span
    if rise < needed - TOLERANCE:
        return None
    best_epochs = {seed: best_epoch(history) for seed, history in runs.items()}
    rising_seeds = []
    for seed, history in runs.items():
        own = {int(record["epoch"]): _value(record, "val_accuracy") for record in _ordered(history)}
        own_slope = trend_slope(own)
        if (history and best_epochs[seed] in _epochs(history)[-LATE_EPOCHS:] and own_slope is not None
                and own_slope * span >= max(RISING_SLOPE * span, noise) - TOLERANCE):
            rising_seeds.append(seed)
    if 2 * len(rising_seeds) <= len(runs):
        return None
    common_epochs = list(accuracy_curve)
    facts = {
        "best_epochs": best_epochs,
        "last_epoch": common_epochs[-1] if common_epochs else None,
        "accuracy_slope": accuracy_slope,
        "loss_slope": trend_slope(mean_curve(runs, "val_loss")),
        "rise": rise,
        "needed": needed,
        "rising_seeds": rising_seeds,
    }
    return Verdict(STILL_IMPROVING, facts)


def _overfitting_loss(runs: Runs) -> Verdict | None:
    rise = _lasting_loss_rise(mean_curve(runs, "val_loss"))
    if rise is None:
        return None
    seeds = [seed for seed, history in runs.items()
             if _lasting_loss_rise({int(record["epoch"]): _value(record, "val_loss") for record in _ordered(history)}) is not None]
    if 2 * len(seeds) <= len(runs):
        return None
    turn_epoch, lowest, final = rise
    return Verdict(OVERFITTING_LOSS, {"turn_epoch": turn_epoch, "lowest_val_loss": lowest, "final_val_loss": final, "seeds": seeds})


def _lasting_loss_rise(curve: Mapping[int, float | None]) -> tuple[int, float, float] | None:
    """(epoch of the lowest loss, the lowest loss, the mean of the last FINAL_WINDOW losses) when
    that mean is LOSS_RISE_FRACTION above the lowest loss, reached before the window."""
    points = [(epoch, value) for epoch, value in curve.items() if value is not None]
    window = min(FINAL_WINDOW, len(points) - 1)
    if window < 1:
        return None
    turn_epoch, lowest = min(points[:-window], key=lambda point: point[1])  # min() keeps the earliest on ties
    final = statistics.fmean(value for _, value in points[-window:])
    if final <= lowest or final < (1.0 + LOSS_RISE_FRACTION) * lowest - TOLERANCE or min(value for _, value in points[-window:]) < lowest:
        return None
    return turn_epoch, lowest, final


def _with_underfitting(loss_rise: Verdict | None, underfits: Verdict | None) -> Verdict | None:
    """A loss rise beside underfitting says how both can hold (the page words it)."""
    if loss_rise is None:
        return None
    return Verdict(loss_rise.code, {**loss_rise.facts, "with_underfitting": underfits is not None})


def _overfitting_gap(runs: Runs, noise: float) -> Verdict | None:
    train_accuracy = window_mean(runs, "accuracy")
    validation_accuracy = window_mean(runs, "val_accuracy")
    if train_accuracy is None or validation_accuracy is None:
        return None
    gap = train_accuracy - validation_accuracy
    if gap < max(GAP_THRESHOLD, NOISE_Z * noise) - TOLERANCE:
        return None
    return Verdict(OVERFITTING_GAP, {"train_accuracy": train_accuracy, "validation_accuracy": validation_accuracy, "gap": gap})


def _unstable_spread(runs: Runs, noise: float, dropped: set[int]) -> Verdict | None:
    per_seed = {seed: _value(_ordered(history)[-1], "val_accuracy") for seed, history in runs.items() if history}
    per_seed = {seed: value for seed, value in per_seed.items() if value is not None}
    threshold = max(SPREAD_THRESHOLD, SPREAD_Z * noise)

    def spread(values: list[float]) -> float:
        return max(values) - min(values) if len(values) >= 2 else 0.0

    total = spread(list(per_seed.values()))
    if len(per_seed) < 2 or total < threshold - TOLERANCE:
        return None
    if spread([value for seed, value in per_seed.items() if seed not in dropped]) < threshold - TOLERANCE:
        return None  # the late drop of those seeds is the event; it is named there
    return Verdict(UNSTABLE_SPREAD, {"spread": total, "per_seed": per_seed, "threshold": threshold})


def _late_drop(runs: Runs, noise: float) -> Verdict | None:
    dropped = []
    for seed, history in runs.items():
        ordered = _ordered(history)
        recent = ordered[-TREND_WINDOW:]
        final = _value(recent[-1], "val_accuracy") if recent else None
        recent_best_epoch = best_epoch(recent)
        if final is None or recent_best_epoch is None:
            continue
        recent_best = next(_value(record, "val_accuracy") for record in recent if record["epoch"] == recent_best_epoch)
        earlier = [value for record in ordered[:-1] if (value := _value(record, "val_accuracy")) is not None]
        earlier = earlier[len(earlier) // 2:] if len(earlier) >= 10 else earlier  # the second half: past the learning phase
        jitter = _jitter(earlier)
        threshold = max(DROP_THRESHOLD, NOISE_Z * noise, NOISE_Z * jitter)
        if final <= recent_best - threshold + TOLERANCE:
            dropped.append({"seed": seed, "final": final, "recent_best": recent_best, "recent_best_epoch": recent_best_epoch,
                            "threshold": threshold})
    return Verdict(LATE_DROP, {"seeds": dropped}) if dropped else None


# --- Small helpers. ---


def _jitter(values: Sequence[float]) -> float:
    """The typical size of an epoch-to-epoch change that is noise, not trend: the standard
    deviation of the second differences over sqrt(3). For values that are a smooth trend plus
    independent noise of standard deviation s, second differences cancel the trend and have
    standard deviation sqrt(6) s, so this estimates sqrt(2) s, the spread of one change.
    0 with fewer than five values."""
    if len(values) < 5:
        return 0.0
    second = [values[index + 2] - 2 * values[index + 1] + values[index] for index in range(len(values) - 2)]
    return statistics.stdev(second) / math.sqrt(3)


def _value(record: Mapping[str, object], key: str) -> float | None:
    """A record's value as a float; None when absent, None or not finite."""
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"epoch {record.get('epoch')}: {key} must be a number or None, got {value!r}")
    value = float(value)
    return value if math.isfinite(value) else None


def _ordered(history: History) -> list[Mapping[str, object]]:
    return sorted(history, key=lambda record: record["epoch"])


def _epochs(history: History) -> list[int]:
    return [int(record["epoch"]) for record in _ordered(history)]


def _mean_or_none(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None
