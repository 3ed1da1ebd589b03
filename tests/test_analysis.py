"""Tests for report_builder.analysis: small-sample intervals, Holm, best epoch, chance loss and curve verdicts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

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
    interval = accuracy_interval(correct)
    assert interval.estimate == pytest.approx((0.80 + 0.90 + 0.95) / 3)
    assert interval.low < interval.estimate < interval.high


def test_single_seed_has_binomial_width_and_says_the_seed_variation_is_unknown():
    row = independent_seeds([0.90])[0]
    one_dimensional = accuracy_interval(row)
    assert one_dimensional == accuracy_interval(row[np.newaxis, :])
    half_width = 1.96 * math.sqrt(0.9 * 0.1 / IMAGES)  # about 0.021
    assert one_dimensional.high - one_dimensional.low == pytest.approx(2 * half_width, rel=0.02)
    assert not one_dimensional.seed_variation_known
    assert accuracy_interval(independent_seeds([0.9, 0.9])).seed_variation_known


def test_three_seeds_use_a_t_quantile_on_their_few_degrees_of_freedom():
    """Seeds at 80, 90 and 95%: the seed part dominates, so the degrees of freedom are close to
    the seeds' 2, and the half-width is about t(0.975, 2) = 4.3 standard errors, not 1.96."""
    correct = independent_seeds([0.80, 0.90, 0.95], seed=4)
    interval = accuracy_interval(correct)
    seed_error = np.std([0.80, 0.90, 0.95], ddof=1) / math.sqrt(3)
    assert 2.0 <= interval.df < 2.5
    assert interval.estimate - interval.low > 4.0 * seed_error  # (the top is clipped at 100%)
    assert interval.covers(0.8) and interval.covers(0.95)


def test_the_image_part_is_the_variance_of_mean_correctness_per_image():
    """Seeds that agree on every image: the seed part is zero and the interval is the image
    part alone, sd(mean correctness per image) / sqrt(images) with images - 1 degrees of freedom."""
    correct = np.tile(independent_seeds([0.9])[0], (3, 1))
    interval = accuracy_interval(correct)
    error = np.std(correct.mean(axis=0), ddof=1) / math.sqrt(IMAGES)
    assert interval.df == pytest.approx(IMAGES - 1)
    assert interval.high - interval.estimate == pytest.approx(stats.t.ppf(0.975, IMAGES - 1) * error)


def test_an_interval_stays_within_zero_and_one():
    interval = accuracy_interval(independent_seeds([1.0, 0.99, 0.98], images=100))
    assert interval.high <= 1.0 and interval.low >= 0.0


def test_identical_runs_are_named_as_such():
    correct = seed_matrix(0.9)
    difference = paired_difference(correct, correct.copy())
    assert difference.identical
    assert (difference.estimate, difference.low, difference.high, difference.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert not paired_difference(correct, seed_matrix(0.9, seed=1)).identical


def test_five_points_more_images_right_excludes_zero():
    worse = seed_matrix(0.88, seed=1)
    better = worse.copy()
    always_wrong = np.flatnonzero(~worse.any(axis=0))
    better[:, always_wrong[:40]] = True  # 40 of 800 images = 5 points more, the other images unchanged
    difference = paired_difference(better, worse)
    assert difference.estimate == pytest.approx(0.05)
    assert difference.excludes(0.0)
    assert difference.low > 0.0
    assert difference.p_value < 0.001


def test_pairing_detects_a_difference_the_separate_intervals_cannot():
    model_a = seed_matrix(0.93, seed=2)
    model_b = model_a.copy()
    rng = np.random.default_rng(3)
    for row in model_b:
        row[rng.choice(np.flatnonzero(row), size=20, replace=False)] = False  # b misses 20 of a's correct images
    interval_a = accuracy_interval(model_a)
    interval_b = accuracy_interval(model_b)
    assert interval_a.low <= interval_b.high  # the separate intervals overlap ...
    difference = paired_difference(model_a, model_b, paired=True)
    assert difference.estimate == pytest.approx(20 / IMAGES)
    assert difference.excludes(0.0)  # ... but the paired difference is clearly above zero


def test_one_seed_each_compares_on_the_images_alone():
    """One seed each: the seed variation is unknown and said to be; the image part of a model
    right on 8 more of the 800 images is the sd of the per-image difference over sqrt(800)."""
    model_a = independent_seeds([0.90], seed=12)
    model_b = model_a.copy()
    model_b[0, np.flatnonzero(model_a[0])[:8]] = False
    difference = paired_difference(model_a, model_b)
    assert difference.estimate == pytest.approx(8 / IMAGES)
    assert not difference.seed_variation_known
    assert difference.low > 0.0
    assert difference.high - difference.low < 0.02


def test_a_model_with_one_seed_borrows_the_other_models_seed_variance():
    erratic = independent_seeds([0.80, 0.90, 0.97], seed=6)
    single = independent_seeds([0.90], seed=7)
    difference = paired_difference(erratic, single)
    assert difference.seed_variation_known
    assert difference.high - difference.low > 0.2  # 3 seeds' sd of 8.5 points, over 1 + 1/3 seeds, t with 2 df


def test_seed_spread_enters_the_paired_difference():
    steady = seed_matrix(0.90, seed=5)
    erratic = independent_seeds([0.80, 0.90, 0.97], seed=6)
    difference = paired_difference(erratic, steady)
    assert difference.high - difference.low > 0.08


def test_pairing_by_seed_removes_the_shared_seed_variation():
    """A model that continues another's runs inherits each seed's luck: seeds at 80, 90, 95%
    each gaining exactly 2 points. Paired by seed, the seed part of the difference is zero and
    the gain is clear; treated as independent seeds, the seeds' spread hides it."""
    start = independent_seeds([0.80, 0.90, 0.95], seed=13)
    continued = start.copy()
    for row in continued:
        row[np.flatnonzero(~row)[:16]] = True  # 16 of 800 = 2 points more on every seed
    assert paired_difference(continued, start, paired=True).low > 0
    assert paired_difference(continued, start, paired=False).low < 0


def test_pairing_needs_the_same_seed_count():
    with pytest.raises(ValueError, match="same seeds"):
        paired_difference(seed_matrix(0.9, seeds=3), seed_matrix(0.9, seeds=2), paired=True)


def test_intervals_are_deterministic():
    model_a, model_b = independent_seeds([0.8, 0.9, 0.95], seed=8), seed_matrix(0.9, seed=9)
    assert accuracy_interval(model_a) == accuracy_interval(model_a.copy())
    assert paired_difference(model_a, model_b) == paired_difference(model_a.copy(), model_b.copy())


def test_level_sets_the_width():
    correct = seed_matrix(0.9)
    wide = accuracy_interval(correct, level=0.99)
    narrow = accuracy_interval(correct, level=0.80)
    assert wide.low < narrow.low and narrow.high < wide.high


def test_equal_models_with_three_seeds_rarely_differ_clearly():
    """Known truth: two models that are the same model (each seed's accuracy from one
    distribution, each image's difficulty shared). Over 400 simulated 3-seed studies the 95%
    interval of their difference excludes zero in at most about 5% of them."""
    rng = np.random.default_rng(2026)
    claims = 0
    for _ in range(400):
        difficulty = rng.beta(0.6, 3.0, size=IMAGES)  # chance a seed gets the image wrong
        logit = np.log(difficulty / (1 - difficulty))

        def model(logit=logit) -> np.ndarray:
            skill = rng.normal(0.0, 0.6, size=(3, 1))  # seed-level luck on the logit scale
            return ~(rng.random((3, IMAGES)) < 1 / (1 + np.exp(-(logit + skill))))
        claims += paired_difference(model(), model()).excludes(0.0)
    assert claims / 400 <= 0.07


def test_holm_rejects_step_down_and_ignores_missing_comparisons():
    assert analysis.holm_rejections([0.01, 0.04, 0.03, None]) == [True, False, False, False]
    assert analysis.holm_rejections([0.01, 0.02, 0.03]) == [True, True, True]  # 0.01 <= .05/3, 0.02 <= .05/2, 0.03 <= .05
    assert analysis.holm_rejections([0.02, 0.001]) == [True, True]
    assert analysis.holm_rejections([0.03, 0.04]) == [False, False]  # 0.03 > .05/2 stops the steps
    assert analysis.holm_rejections([]) == []


def test_seeds_to_settle_grows_with_the_spread_and_shrinks_with_the_difference():
    small = analysis.seeds_to_settle(0.01, 0.01)
    assert small is not None and small > 3
    assert analysis.seeds_to_settle(0.01, 0.02) > small
    assert analysis.seeds_to_settle(0.03, 0.01) < small
    assert analysis.seeds_to_settle(0.0, 0.01) is None
    assert analysis.seeds_to_settle(0.001, 0.01, image_variance=0.01**2) is None  # the images alone blur it


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
        paired_difference(correct_a, correct_b)


def test_accuracy_interval_rejects_bad_settings():
    with pytest.raises(ValueError, match="empty"):
        accuracy_interval(np.zeros((2, 0), dtype=bool))
    with pytest.raises(ValueError, match="level"):
        accuracy_interval(np.ones((1, 10), dtype=bool), level=1.0)


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
    assert facts["final_val_loss"] == pytest.approx(0.5 + 2.0 * 14 / 15)  # the mean of the last three epochs
    assert "settled" not in codes(runs)


def test_a_small_loss_rise_is_not_overfitting_loss():
    runs = three_seeds(CONVERGED_VAL_ACCURACY, accuracy=CONVERGED_ACCURACY, val_loss=[*CONVERGED_VAL_LOSS[:-1], 0.29 * 1.15])
    assert codes(runs) == ["settled"]


def test_the_loss_rise_is_relative_to_the_minimum():
    """LOSS_RISE_FRACTION is a fraction of the lowest loss, whatever its size."""
    def runs(val_loss):
        return three_seeds([0.85] * len(val_loss), accuracy=[0.88] * len(val_loss), val_loss=val_loss)

    assert "overfitting_loss" in codes(runs([0.30, 0.10, 0.05, 0.07, 0.07, 0.07]))  # 40% above, only 0.02 nats
    assert "overfitting_loss" not in codes(runs([2.6, 2.2, 2.0, 2.3, 2.3, 2.3]))  # 0.3 nats above, only 15%
    exactly = verdict(runs([0.8, 0.6, 0.5, 0.6, 0.6, 0.6]), "overfitting_loss").facts  # 0.6 is 1.2 x 0.5
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
    assert facts["seeds"] == [{"seed": 4, "final": pytest.approx(0.88), "recent_best": pytest.approx(0.905), "recent_best_epoch": 8,
                               "threshold": pytest.approx(2 * analysis._jitter(dropping[:-1]))}]  # twice its own jitter
    assert "late_drop" not in codes(converged_runs())


def test_verdicts_come_in_the_fixed_order():
    runs = three_seeds([0.65] * 10, accuracy=[0.58] * 10, val_loss=[0.69] * 10, offsets=(-0.03, 0.02, 0.0))
    above_chance = Interval(estimate=0.65, low=0.6, high=0.7)
    assert codes(runs, interval=above_chance) == ["overconfident", "underfitting", "unstable_spread"]
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


def test_a_drop_within_a_seeds_own_jitter_is_not_a_late_drop():
    """A seed that swings 3 points from epoch to epoch all along: ending 2.5 points below its
    recent best is its usual jitter, not an event."""
    jittery = [0.70, 0.80, 0.85, 0.88, 0.90, 0.87, 0.90, 0.87, 0.905, 0.88]
    runs = {**converged_runs(), 4: history(jittery, accuracy=CONVERGED_ACCURACY, val_loss=CONVERGED_VAL_LOSS)}
    assert "late_drop" not in codes(runs)


def test_a_drop_within_the_binomial_noise_is_not_a_late_drop():
    """On 200 images a 90% accuracy is uncertain by about 2.1 points: a 2.5-point drop is within
    twice that noise, although it passes the fixed 2-point floor."""
    dropping = [*CONVERGED_VAL_ACCURACY[:7], 0.905, 0.89, 0.88]
    runs = {**converged_runs(), 4: history(dropping, accuracy=CONVERGED_ACCURACY, val_loss=CONVERGED_VAL_LOSS)}
    assert "late_drop" in codes(runs)
    assert "late_drop" not in [v.code for v in curve_verdicts(runs, majority_accuracy=0.5, chance_loss=LN2, interval=None, validation_count=200)]


# --- Verdicts on studies whose answer is known. ---


def noisy_seed(rng, true_accuracy, epochs=20, images=800, *, accuracy=None, val_loss=None) -> list[dict]:
    """A seed whose validation accuracy each epoch is a fresh binomial draw around its truth."""
    truth = true_accuracy if isinstance(true_accuracy, list) else [true_accuracy] * epochs
    measured = [rng.binomial(images, p) / images for p in truth]
    return history(measured, accuracy=accuracy or [0.7] * len(truth), val_loss=val_loss or [0.55] * len(truth))


def test_coin_flip_labels_are_near_chance_and_nothing_else_about_the_curve():
    """Labels with no signal: validation accuracy is 50% plus noise every epoch, training accuracy
    creeps up by memorising, validation loss rises. Near chance, the loss rise is said, and never
    "still improving", a late drop or seeds that disagree: at chance those are noise."""
    rng = np.random.default_rng(7)
    for _ in range(30):
        runs = {seed: noisy_seed(rng, 0.5, accuracy=[0.5 + 0.01 * e for e in range(20)], val_loss=[0.69 + 0.004 * e for e in range(20)])
                for seed in (1, 2, 3)}
        correct = rng.random((3, 800)) < 0.5
        found = [v.code for v in curve_verdicts(runs, majority_accuracy=0.5, chance_loss=LN2, interval=accuracy_interval(correct), validation_count=800)]
        if "at_chance" in found:
            assert not {"still_improving", "late_drop", "unstable_spread"} & set(found), found


def test_a_flat_noisy_curve_is_rarely_still_improving():
    """A model that stopped learning at 70%, measured on 800 images: one epoch's noise must not
    read as "more epochs would help". Over 200 such 3-seed studies at most 5% are called improving."""
    rng = np.random.default_rng(11)
    above_chance = Interval(estimate=0.7, low=0.66, high=0.74)
    called = 0
    for _ in range(200):
        runs = {seed: noisy_seed(rng, 0.7) for seed in (1, 2, 3)}
        found = [v.code for v in curve_verdicts(runs, majority_accuracy=0.5, chance_loss=LN2, interval=above_chance, validation_count=800)]
        called += "still_improving" in found
    assert called / 200 <= 0.05


def test_a_real_rise_through_the_noise_is_still_improving():
    rng = np.random.default_rng(12)
    runs = {seed: noisy_seed(rng, [0.60 + 0.01 * e for e in range(20)]) for seed in (1, 2, 3)}
    above_chance = Interval(estimate=0.78, low=0.75, high=0.81)
    found = [v.code for v in curve_verdicts(runs, majority_accuracy=0.5, chance_loss=LN2, interval=above_chance, validation_count=800)]
    assert "still_improving" in found


def test_a_model_at_chance_is_never_told_more_epochs_would_help():
    epochs = range(1, 11)
    rising = three_seeds([0.40 + 0.01 * e for e in epochs], accuracy=[0.62 + 0.03 * e for e in epochs], val_loss=[0.65 - 0.03 * e for e in epochs])
    assert "still_improving" in codes(rising)
    assert "still_improving" not in codes(rising, interval=Interval(estimate=0.5, low=0.45, high=0.55))


def test_a_rising_validation_loss_rules_out_still_improving():
    epochs = range(1, 11)
    runs = three_seeds([0.60 + 0.03 * e for e in epochs], accuracy=[0.62 + 0.03 * e for e in epochs],
                       val_loss=[0.40] * 5 + [0.40 + 0.05 * e for e in range(1, 6)])
    found = codes(runs)
    assert "overfitting_loss" in found and "still_improving" not in found


def test_one_seeds_one_epoch_loss_spike_is_one_event_named_once():
    """As in the shipped study's transfer model: three seeds settled near a 0.12 loss, one of
    them spiking to 0.243 at its last epoch while its accuracy dips 3.5 points. Not a lasting
    loss rise, and not counted again as seeds disagreeing: one late drop."""
    flat_accuracy = [0.90, 0.93, 0.94, 0.95, 0.955, 0.955, 0.96, 0.955, 0.96, 0.96]
    flat_loss = [0.30, 0.20, 0.15, 0.13, 0.12, 0.12, 0.117, 0.12, 0.118, 0.118]
    runs = {
        1: history(flat_accuracy, accuracy=[0.96] * 10, val_loss=flat_loss),
        2: history(shifted(flat_accuracy, 0.002), accuracy=[0.96] * 10, val_loss=flat_loss),
        3: history([*flat_accuracy[:-1], 0.925], accuracy=[0.96] * 10, val_loss=[*flat_loss[:-1], 0.243]),
    }
    found = [v.code for v in curve_verdicts(runs, majority_accuracy=0.5, chance_loss=LN2, interval=Interval(0.95, 0.93, 0.97), validation_count=800)]
    assert found == ["late_drop"]


def test_a_lasting_loss_rise_on_every_seed_is_named():
    val_loss = [0.5, 0.4, 0.32, 0.30, 0.31, 0.34, 0.38, 0.42, 0.46, 0.50]
    runs = three_seeds([0.85] * 10, accuracy=[0.95] * 10, val_loss=val_loss)
    facts = verdict(runs, "overfitting_loss").facts
    assert facts["turn_epoch"] == 4 and facts["seeds"] == [1, 2, 3]


def test_underfitting_beside_a_loss_rise_says_how_both_hold():
    val_loss = [0.69, 0.66, 0.64, 0.66, 0.70, 0.75, 0.80, 0.85, 0.90, 0.95]
    runs = three_seeds([0.6] * 10, accuracy=[0.6] * 10, val_loss=val_loss, offsets=(0.0, 0.0, 0.0))
    found = codes(runs, interval=Interval(0.6, 0.57, 0.63))
    assert "underfitting" in found and "overfitting_loss" in found
    assert verdict(runs, "overfitting_loss", interval=Interval(0.6, 0.57, 0.63)).facts["with_underfitting"] is True


def test_a_chance_level_loss_above_chance_accuracy_is_over_confidence():
    runs = three_seeds([0.60] * 10, accuracy=[0.9] * 10, val_loss=[0.70] * 10)
    assert codes(runs, interval=Interval(0.6, 0.57, 0.63))[0] == "overconfident"
    assert codes(runs, interval=Interval(0.6, 0.49, 0.63))[0] == "at_chance"


def test_seeds_apart_by_no_more_than_the_binomial_noise_agree():
    """On 200 images a 60% accuracy is uncertain by 3.5 points, so seeds 4 points apart agree."""
    runs = three_seeds([0.60] * 10, accuracy=[0.80] * 10, val_loss=[0.60] * 10, offsets=(-0.02, 0.02, 0.0))
    assert "unstable_spread" in codes(runs)
    assert "unstable_spread" not in [v.code for v in curve_verdicts(runs, majority_accuracy=0.5, chance_loss=LN2, interval=None, validation_count=200)]


def test_one_seeds_loss_rise_is_not_the_models():
    """One seed of three ends with its loss up fourfold over three epochs, the others flat: the
    mean curve rises well past 20%, but that is one run's story, not the model's."""
    flat = [0.30, 0.20, 0.15, 0.13, 0.12, 0.12, 0.117, 0.12, 0.118, 0.118]
    runs = {1: history([0.95] * 10, accuracy=[0.96] * 10, val_loss=flat),
            2: history([0.95] * 10, accuracy=[0.96] * 10, val_loss=flat),
            3: history([0.95] * 10, accuracy=[0.96] * 10, val_loss=[*flat[:7], 0.5, 0.6, 0.7])}
    assert "overfitting_loss" not in codes(runs)
    assert "overfitting_loss" in codes({**runs, 2: runs[3]})  # two of three: most seeds


def test_seeds_that_land_close_by_chance_do_not_shrink_the_interval_below_their_image_noise():
    """Two seeds at exactly 90%, right on different images: their sample variance is zero, but a
    seed's accuracy varies at least by which images it happens to get right (the seed-by-image
    interaction over the images). The seed part keeps that floor, and its one degree of freedom."""
    correct = independent_seeds([0.9, 0.9], seed=21)
    interval = accuracy_interval(correct)
    floor = analysis.interaction_variance(correct) / IMAGES
    assert floor > 0
    assert interval.df < 10  # the seed part, with its single degree of freedom, dominates
    assert interval.estimate - interval.low >= stats.t.ppf(0.975, interval.df) * math.sqrt(floor / 2) - 1e-12
    both = paired_difference(correct, independent_seeds([0.9, 0.9], seed=22))
    assert both.df < 10 and both.high - both.low > 0.06  # the image part alone would give about 4 points
