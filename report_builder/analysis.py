"""Statistics that read a study's results the way a sceptical reviewer would.

Everything here is pure: numpy and Python's ``statistics`` only, no TensorFlow, no plotting, no
file access. Two kinds of input:

* A *history* is a list of epoch records ``{"epoch", "loss", "accuracy", "val_loss",
  "val_accuracy", "seconds"}``. Epoch numbers are 1-based and may start above 1 (a model that
  continues another). ``None``, NaN and infinities all mean "not recorded". ``runs`` maps each
  training seed to its history.
* ``correct`` is a boolean array shaped ``(seeds, images)``: whether seed ``s``'s final model
  classified validation image ``i`` correctly. Every model is scored on the same images in the
  same order, so two models can be compared image by image (a *paired* comparison).

Accuracy intervals come from a two-level percentile bootstrap (:func:`accuracy_interval`,
:func:`paired_difference`) that counts both sources of chance in a result: which seeds were
trained and which images happen to be in the validation set. :func:`curve_verdicts` reads the
training curves against fixed, named thresholds. Every threshold is a module-level constant,
so the report's method page can quote the rules from this file.
"""

from __future__ import annotations

import math
import numbers
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# --- Bootstrap settings. ---

#: Bootstrap resamples per interval. With 20,000 resamples the Monte Carlo error of a 2.5% or
#: 97.5% percentile is about 0.02 standard errors, i.e. well under 0.1 percentage points for
#: validation sets of a few hundred images or more.
RESAMPLES = 20_000
#: Seed of the random generator that draws the resamples (numpy.random.default_rng), so that
#: every interval in the report is reproducible.
GENERATOR_SEED = 20_261_125
#: Confidence level of every interval: the central 95% of the bootstrap distribution.
LEVEL = 0.95
#: Resamples are drawn in chunks of about this many (resample, image) cells, which keeps memory
#: to a few tens of megabytes whatever the number of resamples.
CHUNK_CELLS = 1_000_000

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
#: Values this close to a threshold count as reaching it (so 0.95 - 0.85 reaches a 0.10 gap).
TOLERANCE = 1e-9

AT_CHANCE = "at_chance"
UNDERFITTING = "underfitting"
STILL_IMPROVING = "still_improving"
OVERFITTING_LOSS = "overfitting_loss"
OVERFITTING_GAP = "overfitting_gap"
UNSTABLE_SPREAD = "unstable_spread"
LATE_DROP = "late_drop"
SETTLED = "settled"
#: Every verdict code, in the order :func:`curve_verdicts` returns them.
VERDICT_CODES = (AT_CHANCE, UNDERFITTING, STILL_IMPROVING, OVERFITTING_LOSS, OVERFITTING_GAP, UNSTABLE_SPREAD, LATE_DROP, SETTLED)

History = Sequence[Mapping[str, object]]
Runs = Mapping[int, History]


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided interval ``[low, high]`` (same units as the estimate)."""

    estimate: float
    low: float
    high: float

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


# --- Bootstrap intervals. ---


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


def accuracy_interval(correct, *, resamples: int = RESAMPLES, generator_seed: int = GENERATOR_SEED, level: float = LEVEL) -> Interval:
    """Mean accuracy over seeds, with a two-level percentile bootstrap interval.

    Definition: the estimate is the mean over seeds of each seed's accuracy (the fraction of
    validation images it classifies correctly). Each of ``resamples`` bootstrap resamples draws
    the seeds with replacement, then the images with replacement (one image draw shared by all
    drawn seeds), and takes the mean over the drawn seeds of their accuracy on the drawn images.
    The interval is the central ``level`` of those resampled means (percentiles
    ``(1 - level) / 2`` and ``(1 + level) / 2``). It therefore covers both seed-to-seed
    variation and the finite validation set; with one seed it is a plain image bootstrap.
    Deterministic for a given ``generator_seed``.
    """
    matrix = as_correct_matrix(correct)
    estimate = float(matrix.mean(axis=1).mean())
    rng = _generator(resamples, generator_seed, level)
    means = np.concatenate([_seed_mean(rng, per_seed, chunk) for per_seed, chunk in _resampled_accuracies(rng, matrix, resamples)])
    return _percentile_interval(estimate, means, level)


def paired_difference(correct_a, correct_b, *, resamples: int = RESAMPLES, generator_seed: int = GENERATOR_SEED, level: float = LEVEL) -> Interval:
    """Mean accuracy of model a minus that of model b, with a paired two-level bootstrap interval.

    Definition: the estimate is (mean over a's seeds of their accuracy) minus (the same for b).
    Each bootstrap resample draws a's seeds and b's seeds with replacement, independently
    (different models' seeds are independent trainings), and draws the images with
    replacement once, shared by both models (paired: both are scored on the same images). The
    interval is the central ``level`` of the resampled differences. Because the image draw is
    shared, images that both models get right or both get wrong cancel out, so the interval
    is narrower than comparing two separate accuracy intervals. An interval that excludes 0
    means the difference is unlikely to be chance from seeds or from the choice of images.

    Raises ValueError when either array is empty or the two have different image counts.
    """
    matrix_a = as_correct_matrix(correct_a, "correct_a")
    matrix_b = as_correct_matrix(correct_b, "correct_b")
    if matrix_a.shape[1] != matrix_b.shape[1]:
        raise ValueError(
            f"paired comparison needs the same validation images for both models: correct_a has {matrix_a.shape[1]} images, correct_b has {matrix_b.shape[1]}"
        )
    estimate = float(matrix_a.mean(axis=1).mean() - matrix_b.mean(axis=1).mean())
    rng = _generator(resamples, generator_seed, level)
    both = np.concatenate([matrix_a, matrix_b])
    seeds_a = matrix_a.shape[0]
    differences = []
    for per_seed, chunk in _resampled_accuracies(rng, both, resamples):
        mean_a = _seed_mean(rng, per_seed[:, :seeds_a], chunk)
        mean_b = _seed_mean(rng, per_seed[:, seeds_a:], chunk)
        differences.append(mean_a - mean_b)
    return _percentile_interval(estimate, np.concatenate(differences), level)


def _generator(resamples: int, generator_seed: int, level: float) -> np.random.Generator:
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")
    return np.random.default_rng(generator_seed)


def _resampled_accuracies(rng: np.random.Generator, matrix: np.ndarray, resamples: int):
    """Yield ``(per_seed, chunk)``: every seed's accuracy on ``chunk`` image resamples, shape (chunk, seeds).

    Each resample draws ``images`` indices with replacement; the draw is turned into per-image
    counts, so a seed's accuracy on it is ``counts @ correct / images``.
    """
    images = matrix.shape[1]
    correct_columns = matrix.T.astype(np.float64)  # (images, seeds)
    chunk_size = max(1, CHUNK_CELLS // images)
    for start in range(0, resamples, chunk_size):
        chunk = min(chunk_size, resamples - start)
        draws = rng.integers(0, images, size=(chunk, images))
        draws += np.arange(chunk)[:, np.newaxis] * images  # row r's indices land in counts row r
        counts = np.bincount(draws.ravel(), minlength=chunk * images).reshape(chunk, images)
        yield counts @ correct_columns / images, chunk


def _seed_mean(rng: np.random.Generator, per_seed: np.ndarray, chunk: int) -> np.ndarray:
    """Mean over seeds drawn with replacement, one seed draw per resample (row)."""
    seeds = per_seed.shape[1]
    if seeds == 1:
        return per_seed[:, 0]
    drawn = rng.integers(0, seeds, size=(chunk, seeds))
    return np.take_along_axis(per_seed, drawn, axis=1).mean(axis=1)


def _percentile_interval(estimate: float, resampled: np.ndarray, level: float) -> Interval:
    low, high = np.quantile(resampled, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return Interval(estimate=estimate, low=float(low), high=float(high))


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


def curve_verdicts(runs: Runs, *, majority_accuracy: float, chance_loss: float, interval: Interval | None) -> list[Verdict]:
    """Every verdict that applies to a model's training curves, in VERDICT_CODES order.

    "Mean curve" is :func:`mean_curve`; "final train/validation accuracy" is :func:`window_mean`
    of ``accuracy``/``val_accuracy`` over each seed's last FINAL_WINDOW (3) epochs.

    * ``at_chance``: the accuracy interval (when given) reaches down to the majority baseline
      (``interval.low <= majority_accuracy``), or the lowest mean validation loss stays above
      CHANCE_LOSS_FRACTION (0.95) x the chance loss.
    * ``underfitting``: final train accuracy is below
      ``majority_accuracy + UNDERFIT_FRACTION (0.5) x (1 - majority_accuracy)``.
    * ``still_improving``: more than half of the seeds have their best epoch among their last
      LATE_EPOCHS (3) epochs, and over the last TREND_WINDOW (5) epochs of the mean curves the
      validation accuracy slope is >= RISING_SLOPE (0.002 per epoch) or the validation loss
      slope is <= -RISING_SLOPE.
    * ``overfitting_loss``: the mean validation loss is lowest at an epoch before the last, and
      its last value is at least LOSS_RISE_FRACTION (20%) above that lowest value.
    * ``overfitting_gap``: final train accuracy minus final validation accuracy is >=
      GAP_THRESHOLD (0.10).
    * ``unstable_spread``: with 2+ seeds, max minus min over seeds of the last epoch's
      validation accuracy is >= SPREAD_THRESHOLD (0.03).
    * ``late_drop``: some seed's last validation accuracy is >= DROP_THRESHOLD (0.02) below the
      best validation accuracy of its last TREND_WINDOW (5) epochs.
    * ``settled``: none of the above applies.

    A rule whose inputs are missing does not apply. Empty ``runs`` give ``[]``.
    """
    if not runs or not any(runs.values()):
        return []
    checks = (
        _at_chance(runs, majority_accuracy, chance_loss, interval),
        _underfitting(runs, majority_accuracy),
        _still_improving(runs),
        _overfitting_loss(runs),
        _overfitting_gap(runs),
        _unstable_spread(runs),
        _late_drop(runs),
    )
    verdicts = [verdict for verdict in checks if verdict is not None]
    return verdicts or [Verdict(SETTLED, {})]


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
    return Verdict(AT_CHANCE, facts)


def _underfitting(runs: Runs, majority_accuracy: float) -> Verdict | None:
    train_accuracy = window_mean(runs, "accuracy")
    threshold = majority_accuracy + UNDERFIT_FRACTION * (1.0 - majority_accuracy)
    if train_accuracy is None or train_accuracy >= threshold - TOLERANCE:
        return None
    return Verdict(UNDERFITTING, {"train_accuracy": train_accuracy, "threshold": threshold})


def _still_improving(runs: Runs) -> Verdict | None:
    best_epochs = {seed: best_epoch(history) for seed, history in runs.items()}
    late = [seed for seed, history in runs.items() if history and best_epochs[seed] in _epochs(history)[-LATE_EPOCHS:]]
    accuracy_slope = trend_slope(mean_curve(runs, "val_accuracy"))
    loss_slope = trend_slope(mean_curve(runs, "val_loss"))
    rising = (accuracy_slope is not None and accuracy_slope >= RISING_SLOPE - TOLERANCE) or (loss_slope is not None and loss_slope <= -RISING_SLOPE + TOLERANCE)
    if 2 * len(late) <= len(runs) or not rising:
        return None
    common_epochs = list(mean_curve(runs, "val_accuracy"))
    facts = {
        "best_epochs": best_epochs,
        "last_epoch": common_epochs[-1] if common_epochs else None,
        "accuracy_slope": accuracy_slope,
        "loss_slope": loss_slope,
    }
    return Verdict(STILL_IMPROVING, facts)


def _overfitting_loss(runs: Runs) -> Verdict | None:
    points = [(epoch, value) for epoch, value in mean_curve(runs, "val_loss").items() if value is not None]
    if len(points) < 2:
        return None
    turn_epoch, lowest = min(points, key=lambda point: point[1])  # min() keeps the earliest on ties
    final = points[-1][1]
    if turn_epoch == points[-1][0] or final <= lowest or final < (1.0 + LOSS_RISE_FRACTION) * lowest - TOLERANCE:
        return None
    return Verdict(OVERFITTING_LOSS, {"turn_epoch": turn_epoch, "lowest_val_loss": lowest, "final_val_loss": final})


def _overfitting_gap(runs: Runs) -> Verdict | None:
    train_accuracy = window_mean(runs, "accuracy")
    validation_accuracy = window_mean(runs, "val_accuracy")
    if train_accuracy is None or validation_accuracy is None:
        return None
    gap = train_accuracy - validation_accuracy
    if gap < GAP_THRESHOLD - TOLERANCE:
        return None
    return Verdict(OVERFITTING_GAP, {"train_accuracy": train_accuracy, "validation_accuracy": validation_accuracy, "gap": gap})


def _unstable_spread(runs: Runs) -> Verdict | None:
    per_seed = {seed: _value(_ordered(history)[-1], "val_accuracy") for seed, history in runs.items() if history}
    per_seed = {seed: value for seed, value in per_seed.items() if value is not None}
    if len(per_seed) < 2:
        return None
    spread = max(per_seed.values()) - min(per_seed.values())
    if spread < SPREAD_THRESHOLD - TOLERANCE:
        return None
    return Verdict(UNSTABLE_SPREAD, {"spread": spread, "per_seed": per_seed})


def _late_drop(runs: Runs) -> Verdict | None:
    dropped = []
    for seed, history in runs.items():
        recent = _ordered(history)[-TREND_WINDOW:]
        final = _value(recent[-1], "val_accuracy") if recent else None
        recent_best_epoch = best_epoch(recent)
        if final is None or recent_best_epoch is None:
            continue
        recent_best = next(_value(record, "val_accuracy") for record in recent if record["epoch"] == recent_best_epoch)
        if final <= recent_best - DROP_THRESHOLD + TOLERANCE:
            dropped.append({"seed": seed, "final": final, "recent_best": recent_best, "recent_best_epoch": recent_best_epoch})
    return Verdict(LATE_DROP, {"seeds": dropped}) if dropped else None


# --- Small helpers. ---


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
