"""Tests for report_builder.analysis: bootstrap intervals, best epoch, chance loss and curve verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from report_builder import analysis
from report_builder.analysis import (
    Interval,
    accuracy_interval,
    best_epoch,
    chance_loss,
    curve_verdicts,
    mean_curve,
    paired_difference,
    window_mean,
)

IMAGES = 800
FEW_RESAMPLES = 4_000  # enough for the clear-cut cases; the stability test uses the default
LN2 = math.log(2)


# --- Synthetic data. ---


def seed_matrix(accuracy: float, *, seeds: int = 3, flips: int = 5, images: int = IMAGES, seed: int = 0) -> np.ndarray:
    """(seeds, images) booleans: one shared pattern at ``accuracy``, each seed flipping ``flips`` random images."""
    rng = np.random.default_rng(seed)
    base = np.zeros(images, dtype=bool)
    base[rng.permutation(images)[: round(accuracy * images)]] = True
    matrix = np.tile(base, (seeds, 1))
    for row in matrix:
        flipped = rng.choice(images, size=flips, replace=False)
        row[flipped] = ~row[flipped]
    return matrix


def independent_seeds(accuracies: list[float], *, images: int = IMAGES, seed: int = 0) -> np.ndarray:
    """One row per accuracy, each with exactly that fraction of images correct, independently placed."""
    rng = np.random.default_rng(seed)
    matrix = np.zeros((len(accuracies), images), dtype=bool)
    for row, accuracy in zip(matrix, accuracies):
        row[rng.permutation(images)[: round(accuracy * images)]] = True
    return matrix


def image_only_interval(correct: np.ndarray, resamples: int = 4_000, level: float = 0.95) -> tuple[float, float]:
    """What an interval that keeps the seeds fixed and resamples only images would say."""
    rng = np.random.default_rng(7)
    draws = rng.integers(0, correct.shape[1], size=(resamples, correct.shape[1]))
    means = correct[:, draws].mean(axis=2).mean(axis=0)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def history(val_accuracy, *, accuracy=None, val_loss=None, loss=None, first_epoch: int = 1) -> list[dict]:
    """Epoch records from per-epoch lists (None entries stay None); missing lists are all None."""
    epochs = len(val_accuracy)
    columns = {"loss": loss, "accuracy": accuracy, "val_loss": val_loss, "val_accuracy": val_accuracy}
    return [
        {"epoch": first_epoch + index, **{key: (None if values is None else values[index]) for key, values in columns.items()}, "seconds": 1.0}
        for index in range(epochs)
    ]


def shifted(values, offset):
    return [None if value is None else value + offset for value in values]


def three_seeds(val_accuracy, *, accuracy, val_loss, offsets=(0.0, 0.004, -0.004), first_epoch: int = 1) -> dict[int, list[dict]]:
    return {
        seed: history(shifted(val_accuracy, offset), accuracy=shifted(accuracy, offset), val_loss=val_loss, first_epoch=first_epoch)
        for seed, offset in zip((1, 2, 3), offsets)
    }


def codes(runs, *, majority_accuracy=0.5, loss=LN2, interval=None) -> list[str]:
    return [verdict.code for verdict in curve_verdicts(runs, majority_accuracy=majority_accuracy, chance_loss=loss, interval=interval)]


def verdict(runs, code, *, majority_accuracy=0.5, loss=LN2, interval=None) -> analysis.Verdict:
    found = [v for v in curve_verdicts(runs, majority_accuracy=majority_accuracy, chance_loss=loss, interval=interval) if v.code == code]
    assert found, f"expected a {code} verdict"
    return found[0]


CONVERGED_VAL_ACCURACY = [0.70, 0.80, 0.85, 0.88, 0.89, 0.90, 0.90, 0.90, 0.90, 0.90]
CONVERGED_ACCURACY = [0.70, 0.82, 0.88, 0.90, 0.91, 0.92, 0.92, 0.92, 0.92, 0.92]
CONVERGED_VAL_LOSS = [0.60, 0.45, 0.38, 0.33, 0.30, 0.29, 0.29, 0.29, 0.29, 0.29]


def converged_runs() -> dict[int, list[dict]]:
    return three_seeds(CONVERGED_VAL_ACCURACY, accuracy=CONVERGED_ACCURACY, val_loss=CONVERGED_VAL_LOSS)


# --- Intervals. ---


def test_interval_covers_and_excludes():
    interval = Interval(estimate=0.5, low=0.4, high=0.6)
    assert interval.covers(0.4) and interval.covers(0.6) and interval.covers(0.5)
    assert interval.excludes(0.39) and interval.excludes(0.61) and not interval.excludes(0.6)


def test_accuracy_interval_estimate_is_mean_of_seed_accuracies():
    correct = independent_seeds([0.80, 0.90, 0.95])
    interval = accuracy_interval(correct, resamples=FEW_RESAMPLES)
    assert interval.estimate == pytest.approx((0.80 + 0.90 + 0.95) / 3)
    assert interval.low < interval.estimate < interval.high


def test_single_seed_is_an_image_bootstrap_of_binomial_width():
    row = independent_seeds([0.90])[0]
    one_dimensional = accuracy_interval(row, resamples=FEW_RESAMPLES)
    assert one_dimensional == accuracy_interval(row[np.newaxis, :], resamples=FEW_RESAMPLES)
    half_width = 1.96 * math.sqrt(0.9 * 0.1 / IMAGES)  # about 0.021
    assert one_dimensional.high - one_dimensional.low == pytest.approx(2 * half_width, rel=0.15)


def test_identical_models_differ_by_exactly_zero():
    correct = seed_matrix(0.9)
    difference = paired_difference(correct, correct.copy(), resamples=FEW_RESAMPLES)
    assert difference.estimate == 0.0
    assert difference.covers(0.0)


def test_five_points_more_images_right_excludes_zero():
    worse = seed_matrix(0.88, seed=1)
    better = worse.copy()
    always_wrong = np.flatnonzero(~worse.any(axis=0))
    better[:, always_wrong[:40]] = True  # 40 of 800 images = 5 points more, the other images unchanged
    difference = paired_difference(better, worse, resamples=FEW_RESAMPLES)
    assert difference.estimate == pytest.approx(0.05)
    assert difference.excludes(0.0)
    assert difference.low > 0.0


def test_pairing_detects_a_difference_the_separate_intervals_cannot():
    model_a = seed_matrix(0.93, seed=2)
    model_b = model_a.copy()
    rng = np.random.default_rng(3)
    for row in model_b:
        row[rng.choice(np.flatnonzero(row), size=20, replace=False)] = False  # b misses 20 of a's correct images
    interval_a = accuracy_interval(model_a, resamples=FEW_RESAMPLES)
    interval_b = accuracy_interval(model_b, resamples=FEW_RESAMPLES)
    assert interval_a.low <= interval_b.high  # the separate intervals overlap ...
    difference = paired_difference(model_a, model_b, resamples=FEW_RESAMPLES)
    assert difference.estimate == pytest.approx(20 / IMAGES)
    assert difference.excludes(0.0)  # ... but the paired difference is clearly above zero


def test_pairing_shares_the_image_draw_between_the_two_models():
    """One seed each, so only images are resampled. With one image draw shared by both models,
    identical models differ by exactly zero in every resample, and a model right on 8 more of the
    800 images is ahead in every resample; separate draws would add about +-3 points of noise."""
    model_a = independent_seeds([0.90], seed=12)
    assert paired_difference(model_a, model_a.copy(), resamples=FEW_RESAMPLES) == Interval(estimate=0.0, low=0.0, high=0.0)
    model_b = model_a.copy()
    model_b[0, np.flatnonzero(model_a[0])[:8]] = False
    difference = paired_difference(model_a, model_b, resamples=FEW_RESAMPLES)
    assert difference.estimate == pytest.approx(8 / IMAGES)
    assert difference.low > 0.0
    assert difference.high - difference.low < 0.02


def test_seed_spread_widens_the_interval_beyond_an_image_only_bootstrap():
    correct = independent_seeds([0.80, 0.90, 0.95], seed=4)
    image_low, image_high = image_only_interval(correct)
    assert not image_low <= 0.85 <= image_high  # resampling images alone would rule 0.85 out
    interval = accuracy_interval(correct, resamples=FEW_RESAMPLES)
    assert interval.covers(0.85)  # the seeds alone range from 0.80 to 0.95
    assert interval.high - interval.low > 2 * (image_high - image_low)


def test_seed_spread_enters_the_paired_difference():
    steady = seed_matrix(0.90, seed=5)
    erratic = independent_seeds([0.80, 0.90, 0.97], seed=6)
    difference = paired_difference(erratic, steady, resamples=FEW_RESAMPLES)
    assert difference.high - difference.low > 0.08


def test_intervals_are_deterministic_for_a_generator_seed():
    model_a, model_b = independent_seeds([0.8, 0.9, 0.95], seed=8), seed_matrix(0.9, seed=9)
    assert accuracy_interval(model_a, generator_seed=11, resamples=FEW_RESAMPLES) == accuracy_interval(model_a, generator_seed=11, resamples=FEW_RESAMPLES)
    assert paired_difference(model_a, model_b, generator_seed=11, resamples=FEW_RESAMPLES) == paired_difference(
        model_a, model_b, generator_seed=11, resamples=FEW_RESAMPLES
    )


def test_default_resamples_give_bounds_stable_to_a_tenth_of_a_point():
    model_a = independent_seeds([0.945, 0.95, 0.955], seed=10)
    model_b = independent_seeds([0.925, 0.93, 0.935], seed=11)
    for compute in (lambda seed: accuracy_interval(model_a, generator_seed=seed), lambda seed: paired_difference(model_a, model_b, generator_seed=seed)):
        first, second = compute(analysis.GENERATOR_SEED), compute(1)
        assert abs(first.low - second.low) <= 0.002
        assert abs(first.high - second.high) <= 0.002


def test_level_sets_the_width():
    correct = seed_matrix(0.9)
    wide = accuracy_interval(correct, level=0.99, resamples=FEW_RESAMPLES)
    narrow = accuracy_interval(correct, level=0.80, resamples=FEW_RESAMPLES)
    assert wide.low < narrow.low and narrow.high < wide.high


@pytest.mark.parametrize(
    "correct_a, correct_b, message",
    [
        (np.ones((3, 800), dtype=bool), np.ones((3, 799), dtype=bool), "same validation images"),
        (np.ones((0, 800), dtype=bool), np.ones((3, 800), dtype=bool), "empty"),
        (np.ones((3, 800), dtype=bool), np.ones((3, 0), dtype=bool), "empty"),
        (np.full((3, 800), 2), np.ones((3, 800), dtype=bool), "booleans"),
        (np.ones((3, 800, 1), dtype=bool), np.ones((3, 800), dtype=bool), "shaped"),
    ],
)
def test_paired_difference_rejects_bad_arrays(correct_a, correct_b, message):
    with pytest.raises(ValueError, match=message):
        paired_difference(correct_a, correct_b, resamples=10)


def test_accuracy_interval_rejects_bad_settings():
    with pytest.raises(ValueError, match="empty"):
        accuracy_interval(np.zeros((2, 0), dtype=bool))
    with pytest.raises(ValueError, match="level"):
        accuracy_interval(np.ones((1, 10), dtype=bool), level=1.0)
    with pytest.raises(ValueError, match="resamples"):
        accuracy_interval(np.ones((1, 10), dtype=bool), resamples=0)


# --- Best epoch, chance loss, means. ---


def test_best_epoch_is_highest_validation_accuracy_earliest_on_ties():
    assert best_epoch(history([0.7, 0.9, 0.8, 0.9])) == 2


def test_best_epoch_skips_missing_values_and_returns_none_without_any():
    assert best_epoch(history([None, 0.6, float("nan"), 0.5])) == 2
    assert best_epoch(history([None, None])) is None
    assert best_epoch([]) is None


def test_best_epoch_uses_the_recorded_epoch_numbers_of_a_continuing_model():
    assert best_epoch(history([0.80, 0.85, 0.83], first_epoch=21)) == 22


def test_best_epoch_rejects_non_numbers():
    with pytest.raises(ValueError, match="val_accuracy"):
        best_epoch(history(["0.9"]))


def test_chance_loss_is_the_label_entropy():
    assert chance_loss([500, 500]) == pytest.approx(math.log(2))
    assert chance_loss([100, 100, 100]) == pytest.approx(math.log(3))
    assert chance_loss([900, 100]) == pytest.approx(-(0.9 * math.log(0.9) + 0.1 * math.log(0.1)))
    assert chance_loss([10, 0, 10]) == pytest.approx(math.log(2))
    with pytest.raises(ValueError):
        chance_loss([0, 0])


def test_mean_curve_uses_the_epochs_every_seed_reached():
    runs = {1: history([0.5, 0.6, 0.7]), 2: history([0.7, None])}
    assert mean_curve(runs, "val_accuracy") == pytest.approx({1: 0.6, 2: 0.6})
    assert mean_curve({1: history([None])}, "val_accuracy") == {1: None}
    assert mean_curve({}, "val_accuracy") == {}


def test_window_means():
    runs = {1: history([0.1, 0.5, 0.6, 0.7]), 2: history([0.9, 0.9, None])}
    assert window_mean(runs, "val_accuracy") == pytest.approx((0.6 + 0.9) / 2)
    assert window_mean(runs, "val_accuracy", window=1) == pytest.approx(0.7)
    assert window_mean(runs, "loss") is None and window_mean({}, "loss") is None


# --- Verdicts. ---


def test_a_clean_converged_curve_is_exactly_settled():
    assert codes(converged_runs()) == ["settled"]


def test_a_rising_curve_is_still_improving_and_not_settled():
    epochs = range(1, 11)
    runs = three_seeds([0.60 + 0.03 * e for e in epochs], accuracy=[0.62 + 0.03 * e for e in epochs], val_loss=[0.65 - 0.03 * e for e in epochs])
    assert codes(runs) == ["still_improving"]
    facts = verdict(runs, "still_improving").facts
    assert facts["best_epochs"] == {1: 10, 2: 10, 3: 10}
    assert facts["last_epoch"] == 10
    assert facts["accuracy_slope"] == pytest.approx(0.03)
    assert facts["loss_slope"] == pytest.approx(-0.03)


def test_still_improving_counts_continuing_epoch_numbers():
    epochs = range(1, 11)
    runs = three_seeds(
        [0.60 + 0.03 * e for e in epochs], accuracy=[0.62 + 0.03 * e for e in epochs], val_loss=[0.65 - 0.03 * e for e in epochs], first_epoch=21
    )
    facts = verdict(runs, "still_improving").facts
    assert facts["best_epochs"] == {1: 30, 2: 30, 3: 30} and facts["last_epoch"] == 30


def test_a_late_best_epoch_on_a_flat_curve_is_not_still_improving():
    val_accuracy = [*CONVERGED_VAL_ACCURACY[:-1], 0.901]  # best epoch is the last, but the trend is flat
    runs = three_seeds(val_accuracy, accuracy=CONVERGED_ACCURACY, val_loss=CONVERGED_VAL_LOSS)
    assert codes(runs) == ["settled"]


def test_still_improving_needs_most_seeds_to_peak_late():
    epochs = range(1, 11)
    rising = history([0.60 + 0.03 * e for e in epochs], accuracy=[0.62 + 0.03 * e for e in epochs], val_loss=[0.65 - 0.03 * e for e in epochs])
    peaked = history([0.92] + [0.60 + 0.03 * e for e in range(2, 11)], accuracy=[0.62 + 0.03 * e for e in epochs], val_loss=[0.65 - 0.03 * e for e in epochs])
    assert "still_improving" not in codes({1: rising, 2: peaked, 3: peaked})
    assert "still_improving" in codes({1: rising, 2: rising, 3: peaked})
    assert "still_improving" not in codes({1: rising, 2: peaked})  # half is not a majority


def test_a_loss_that_turns_upward_is_overfitting_loss():
    val_loss = [0.69 - (0.69 - 0.5) * (epoch - 1) / 4 for epoch in range(1, 6)] + [0.5 + 2.0 * (epoch - 5) / 15 for epoch in range(6, 21)]
    runs = three_seeds([0.85] * 20, accuracy=[0.88] * 20, val_loss=val_loss)
    facts = verdict(runs, "overfitting_loss").facts
    assert facts["turn_epoch"] == 5
    assert facts["lowest_val_loss"] == pytest.approx(0.5)
    assert facts["final_val_loss"] == pytest.approx(2.5)
    assert "settled" not in codes(runs)


def test_a_small_loss_rise_is_not_overfitting_loss():
    runs = three_seeds(CONVERGED_VAL_ACCURACY, accuracy=CONVERGED_ACCURACY, val_loss=[*CONVERGED_VAL_LOSS[:-1], 0.29 * 1.15])
    assert codes(runs) == ["settled"]


def test_the_loss_rise_is_relative_to_the_minimum():
    """LOSS_RISE_FRACTION is a fraction of the lowest loss, whatever its size."""
    def runs(val_loss):
        return three_seeds([0.85] * len(val_loss), accuracy=[0.88] * len(val_loss), val_loss=val_loss)

    assert "overfitting_loss" in codes(runs([0.30, 0.10, 0.05, 0.06, 0.07]))  # 40% above, only 0.02 nats
    assert "overfitting_loss" not in codes(runs([2.6, 2.2, 2.0, 2.1, 2.3]))  # 0.3 nats above, only 15%
    exactly = verdict(runs([0.8, 0.6, 0.5, 0.55, 0.6]), "overfitting_loss").facts  # 0.6 is 1.2 x 0.5
    assert (exactly["turn_epoch"], exactly["lowest_val_loss"], exactly["final_val_loss"]) == (3, pytest.approx(0.5), pytest.approx(0.6))


def test_a_flat_chance_loss_is_at_chance_by_loss():
    runs = three_seeds([0.55] * 10, accuracy=[0.55] * 10, val_loss=[0.69] * 10)
    facts = verdict(runs, "at_chance").facts
    assert facts["by_loss"] is True and facts["by_interval"] is False
    assert facts["lowest_val_loss"] == pytest.approx(0.69)
    assert facts["chance_loss"] == pytest.approx(LN2) and facts["majority_accuracy"] == 0.5
    assert codes(runs)[0] == "at_chance"


def test_an_interval_down_to_the_majority_baseline_is_at_chance_by_interval():
    runs = converged_runs()
    touching = Interval(estimate=0.9, low=0.49, high=0.95)
    assert codes(runs, interval=touching) == ["at_chance"]
    facts = verdict(runs, "at_chance", interval=touching).facts
    assert facts["by_interval"] is True and facts["by_loss"] is False
    assert codes(runs, interval=Interval(estimate=0.9, low=0.51, high=0.95)) == ["settled"]


def test_low_training_accuracy_is_underfitting():
    runs = three_seeds([0.57] * 10, accuracy=[0.58] * 10, val_loss=[0.60] * 10, offsets=(0.0, 0.0, 0.0))
    facts = verdict(runs, "underfitting").facts
    assert facts["train_accuracy"] == pytest.approx(0.58) and facts["threshold"] == pytest.approx(0.75)
    assert "underfitting" not in codes(three_seeds([0.57] * 10, accuracy=[0.80] * 10, val_loss=[0.60] * 10))


def test_underfitting_threshold_follows_the_majority_baseline():
    runs = three_seeds([0.80] * 10, accuracy=[0.85] * 10, val_loss=[0.30] * 10, offsets=(0.0, 0.0, 0.0))
    assert "underfitting" not in codes(runs, majority_accuracy=0.5)
    assert verdict(runs, "underfitting", majority_accuracy=0.8).facts["threshold"] == pytest.approx(0.9)


def test_training_accuracy_exactly_at_the_threshold_is_not_underfitting():
    """The threshold is reached, not exceeded: 75% for a 50% baseline, 80% for a 60% one."""
    def runs(train_accuracy):
        return three_seeds([0.70] * 10, accuracy=[train_accuracy] * 10, val_loss=[0.40] * 10, offsets=(0.0, 0.0, 0.0))

    assert "underfitting" not in codes(runs(0.75))
    assert "underfitting" in codes(runs(0.74))
    assert "underfitting" not in codes(runs(0.80), majority_accuracy=0.6)
    assert "underfitting" in codes(runs(0.79), majority_accuracy=0.6)


def test_a_wide_train_validation_gap_is_overfitting_gap():
    runs = three_seeds(shifted(CONVERGED_VAL_ACCURACY, -0.06), accuracy=[0.99] * 10, val_loss=CONVERGED_VAL_LOSS)
    facts = verdict(runs, "overfitting_gap").facts
    assert facts["train_accuracy"] == pytest.approx(0.99)
    assert facts["validation_accuracy"] == pytest.approx(0.84)
    assert facts["gap"] == pytest.approx(0.15)
    assert "settled" not in codes(runs)


def test_a_gap_of_exactly_the_threshold_counts():
    runs = three_seeds([0.85] * 10, accuracy=[0.95] * 10, val_loss=[0.30] * 10, offsets=(0.0, 0.0, 0.0))
    assert "overfitting_gap" in codes(runs)
    assert "overfitting_gap" not in codes(three_seeds([0.85] * 10, accuracy=[0.94] * 10, val_loss=[0.30] * 10))


def test_seeds_that_disagree_are_unstable_spread():
    runs = three_seeds([0.88] * 10, accuracy=[0.90] * 10, val_loss=[0.30] * 10, offsets=(-0.03, 0.02, 0.0))
    facts = verdict(runs, "unstable_spread").facts
    assert facts["spread"] == pytest.approx(0.05)
    assert facts["per_seed"] == pytest.approx({1: 0.85, 2: 0.90, 3: 0.88})
    assert "unstable_spread" not in codes({1: runs[1]})  # one seed has no spread


def test_a_spread_of_exactly_the_threshold_counts():
    """Seeds 3 points apart disagree, whichever way the subtraction rounds (0.88 - 0.85 is a little
    above 0.03 in floats, 0.95 - 0.92 a little below); 2.9 points apart they do not."""
    def runs(low, high):
        return {seed: history([value] * 10, accuracy=[0.90] * 10, val_loss=[0.30] * 10) for seed, value in ((1, low), (2, high))}

    for low, high in ((0.85, 0.88), (0.92, 0.95)):
        assert verdict(runs(low, high), "unstable_spread").facts["spread"] == pytest.approx(0.03), (low, high)
    assert "unstable_spread" not in codes(runs(0.85, 0.879))


def test_a_seed_that_falls_off_its_recent_best_is_a_late_drop():
    dropping = [*CONVERGED_VAL_ACCURACY[:7], 0.905, 0.89, 0.88]
    runs = {**converged_runs(), 4: history(dropping, accuracy=CONVERGED_ACCURACY, val_loss=CONVERGED_VAL_LOSS)}
    facts = verdict(runs, "late_drop").facts
    assert facts["seeds"] == [{"seed": 4, "final": pytest.approx(0.88), "recent_best": pytest.approx(0.905), "recent_best_epoch": 8}]
    assert "late_drop" not in codes(converged_runs())


def test_verdicts_come_in_the_fixed_order():
    runs = three_seeds([0.55] * 10, accuracy=[0.58] * 10, val_loss=[0.69] * 10, offsets=(-0.03, 0.02, 0.0))
    assert codes(runs) == ["at_chance", "underfitting", "unstable_spread"]
    assert analysis.VERDICT_CODES.index("at_chance") < analysis.VERDICT_CODES.index("settled")


def test_verdicts_survive_empty_short_and_missing_histories():
    assert curve_verdicts({}, majority_accuracy=0.5, chance_loss=LN2, interval=None) == []
    assert codes({1: []}) == []
    one_epoch = {1: history([0.9], accuracy=[0.9], val_loss=[0.3])}
    assert codes(one_epoch) == ["settled"]
    all_missing = {1: history([None] * 5), 2: history([None] * 5)}
    assert codes(all_missing) == ["settled"]
    partial = {**converged_runs(), 4: history(CONVERGED_VAL_ACCURACY[:6], accuracy=CONVERGED_ACCURACY[:6], val_loss=CONVERGED_VAL_LOSS[:6])}
    assert "overfitting_loss" not in codes(partial)
