"""Turn a model's training histories into plain per-seed facts for the write-up.

Everything here is pure: no TensorFlow, no file access. A history is the ``epochs`` list of
``models/<model>/seed-<seed>/history.json`` (see ``docs/guide/artifacts.md``); values may be
``None`` (the schema allows ``null``) or NaN. Every model is trained once per seed:
:func:`summarise_seeds` checks and aggregates the seeds' histories (mean, sample standard
deviation, min and max per epoch; each seed's last and best epoch). Reading those facts as a
reviewer would (intervals, paired comparisons, curve verdicts) is :mod:`report_builder.analysis`.
Missing or unusable values never raise: the matching facts are ``None``. Data of the wrong
*type* (a string where a number belongs, an accuracy outside 0..1), or an epoch listed twice or
out of order, raises ``ValueError`` with a clear message.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from experiments.artifacts.cell_records import Epoch
from experiments.artifacts.loader import check_epochs
from report_builder.analysis import best_epoch as best_epoch_number

#: Differences and spreads are printed in percentage points with this many decimals.
POINTS_DECIMALS = 1


#: One checked epoch of a history (experiments.artifacts.cell_records.Epoch): a number that was not finite is ``None``.
EpochRecord = Epoch


def clean_history(epochs: object, model: str = "model") -> list[EpochRecord]:
    """Check the ``epochs`` list of a history (JSON objects or Epoch records) with the one check
    the loader applies too (experiments.artifacts.loader.check_epochs): each epoch number once, in
    increasing order, accuracies in 0..1, numbers or null. ValueError naming `model` otherwise."""
    return check_epochs(epochs, model)


def mean_of(values: Sequence[float]) -> float | None:
    """Exact-as-possible mean, clamped into [min, max] against rounding; ``None`` if empty."""
    if not values:
        return None
    average = statistics.fmean(values)
    return min(max(average, min(values)), max(values))


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
    """The mean over seeds as a history ``epochs`` list."""
    return [{"epoch": item.epoch, **{metric: getattr(item, metric).mean for metric in CURVE_METRICS}} for item in epochs]


def seed_result(seed: int, records: Sequence[EpochRecord]) -> SeedResult:
    """The last and the best epoch of one seed's cleaned history."""
    best_number = best_epoch_number([{"epoch": record.epoch, "val_accuracy": record.val_accuracy} for record in records])
    best_value = next((record.val_accuracy for record in records if record.epoch == best_number), None)
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
    return summarise_checked(model, {seed: clean_history(histories[seed], f"{model} (seed {seed})") for seed in histories})


def summarise_checked(model: str, histories: Mapping[int, Sequence[EpochRecord]]) -> SeedSummary:
    """Aggregate one model's histories that are checked already (the loader checked them:
    experiments.artifacts.loader.check_epochs), given as seed -> epochs."""
    runs = {seed: histories[seed] for seed in sorted(histories)}
    results = tuple(seed_result(seed, records) for seed, records in runs.items())
    return SeedSummary(
        model=model,
        seeds=results,
        epochs=tuple(aggregate_epochs(runs)),
        last_val=spread_of(result.last_val_accuracy for result in results),
        best_val=spread_of(result.best_val_accuracy for result in results),
    )
