"""Observation facts and verdicts from synthetic histories."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report_fixtures as fixtures  # noqa: E402

from report_builder import observations as obs  # noqa: E402


def test_overfitting_model_is_called_strong_with_correct_numbers():
    history = fixtures.make_history(
        train=[0.60, 0.70, 0.80, 0.90, 0.95, 0.96, 0.97],
        validation=[0.58, 0.62, 0.64, 0.65, 0.63, 0.66, 0.64],
    )
    observation = obs.observe_model("augmented", history, baseline_accuracy=0.5)
    settled = observation.settled
    assert settled is not None
    assert (settled.window_epochs, settled.first_epoch, settled.last_epoch) == (5, 3, 7)
    assert settled.minimum == pytest.approx(0.63)
    assert settled.maximum == pytest.approx(0.66)
    assert settled.mean == pytest.approx((0.64 + 0.65 + 0.63 + 0.66 + 0.64) / 5)
    assert (observation.best_epoch, observation.best_val_accuracy) == (6, 0.66)
    assert (observation.last_epoch, observation.last_train_accuracy, observation.last_val_accuracy) == (7, 0.97, 0.64)
    expected_gap = ((0.80 - 0.64) + (0.90 - 0.65) + (0.95 - 0.63) + (0.96 - 0.66) + (0.97 - 0.64)) / 5 * 100
    assert observation.mean_gap_points == round(expected_gap, 1)
    assert observation.overfitting == obs.VERDICT_STRONG
    assert observation.gain_over_baseline_points == round((settled.mean - 0.5) * 100, 1)
    assert observation.at_baseline is False
    assert observation.baseline_verdict == obs.BASELINE_BETTER


def test_mild_and_no_overfitting_thresholds():
    mild = fixtures.make_history([0.80] * 6, [0.74] * 6)  # gap 6 points
    steady = fixtures.make_history([0.80] * 6, [0.78] * 6)  # gap 2 points
    at_threshold = fixtures.make_history([0.90] * 5, [0.80] * 5)  # gap exactly 10 points (after rounding)
    assert obs.observe_model("m", mild).overfitting == obs.VERDICT_MILD
    assert obs.observe_model("m", steady).overfitting == obs.VERDICT_NONE
    assert obs.observe_model("m", at_threshold).overfitting == obs.VERDICT_STRONG


def test_validation_above_training_is_no_overfitting():
    observation = obs.observe_model("m", fixtures.make_history([0.70] * 5, [0.75] * 5))
    assert observation.mean_gap_points == pytest.approx(-5.0)
    assert observation.overfitting == obs.VERDICT_NONE


def test_at_baseline_model():
    observation = obs.observe_model("baseline", fixtures.at_baseline_history(baseline=0.5), baseline_accuracy=0.5)
    assert observation.at_baseline is True
    assert observation.baseline_verdict == obs.BASELINE_NO_BETTER
    assert 0 <= observation.gain_over_baseline_points <= obs.AT_BASELINE_MARGIN_POINTS


@pytest.mark.parametrize(
    "val_accuracy, gain, at_baseline",
    [
        (0.519, 1.9, True),  # just inside the margin
        (0.52, 2.0, True),  # exactly at the margin: "at most 2 points above" is still no better
        (0.521, 2.1, False),  # just outside
    ],
)
def test_the_baseline_margin_boundary(val_accuracy, gain, at_baseline):
    assert obs.AT_BASELINE_MARGIN_POINTS == 2.0  # the cases below are written for a 2-point margin
    observation = obs.observe_model("m", fixtures.make_history([0.6] * 5, [val_accuracy] * 5), baseline_accuracy=0.5)
    assert observation.gain_over_baseline_points == gain
    assert observation.at_baseline is at_baseline
    assert observation.baseline_verdict == (obs.BASELINE_NO_BETTER if at_baseline else obs.BASELINE_BETTER)
    assert obs.baseline_verdict(gain) == (at_baseline, observation.baseline_verdict)


def test_records_without_an_epoch_number_count_from_one():
    records = [{"accuracy": 0.6, "val_accuracy": 0.5}, {"accuracy": 0.7, "val_accuracy": 0.8},
               {"accuracy": 0.8, "val_accuracy": 0.6}]
    observation = obs.observe_model("m", records)
    assert (observation.best_epoch, observation.best_val_accuracy) == (2, 0.8)
    assert observation.last_epoch == 3
    assert (observation.settled.first_epoch, observation.settled.last_epoch) == (1, 3)
    summary = obs.summarise_seeds("m", {1: records})
    assert summary.best_epochs == (2,) and summary.seeds[0].last_epoch == 3
    assert [item.epoch for item in summary.epochs] == [1, 2, 3]
    # an explicit number wins over the position
    assert obs.observe_model("m", [{"epoch": 7, "accuracy": 0.5, "val_accuracy": 0.5}]).best_epoch == 7


def test_below_baseline_is_no_better_than_baseline():
    observation = obs.observe_model("m", fixtures.make_history([0.6] * 3, [0.4] * 3), baseline_accuracy=0.55)
    assert observation.gain_over_baseline_points == pytest.approx(-15.0)
    assert observation.at_baseline is True


def test_gain_over_previous_model():
    first = obs.observe_model("baseline", fixtures.make_history([0.6] * 5, [0.60] * 5), 0.5)
    second = obs.observe_model("augmented", fixtures.make_history([0.7] * 5, [0.655] * 5), 0.5, previous=first)
    assert second.previous_model == "baseline"
    assert second.gain_over_previous_points == pytest.approx(5.5)


def test_observe_study_names_previous_model_even_without_history():
    histories = {"baseline": None, "augmented": fixtures.steady_history()}
    observations = obs.observe_study(histories, 0.5, ("baseline", "augmented"))
    assert observations["baseline"] is None
    augmented = observations["augmented"]
    assert augmented is not None
    assert augmented.previous_model == "baseline"
    assert augmented.gain_over_previous_points is None


def test_single_epoch():
    observation = obs.observe_model("m", fixtures.make_history([0.7], [0.6]), baseline_accuracy=0.5)
    assert observation.epoch_count == 1
    assert observation.settled.window_epochs == 1
    assert observation.settled.minimum == observation.settled.maximum == observation.settled.mean == 0.6
    assert observation.best_epoch == 1
    assert observation.mean_gap_points == pytest.approx(10.0)
    assert observation.overfitting == obs.VERDICT_STRONG


@pytest.mark.parametrize("epochs", [[], None])
def test_empty_history_gives_none_facts(epochs):
    observation = obs.observe_model("m", epochs, baseline_accuracy=0.5)
    assert observation.epoch_count == 0
    assert observation.settled is None
    assert observation.best_epoch is None
    assert observation.last_val_accuracy is None
    assert observation.overfitting == obs.VERDICT_NOT_ENOUGH_DATA
    assert observation.at_baseline is None
    assert observation.baseline_verdict == obs.VERDICT_NOT_ENOUGH_DATA
    assert not observation.has_data


def test_constant_history():
    observation = obs.observe_model("m", fixtures.make_history([0.5] * 8, [0.5] * 8), baseline_accuracy=0.5)
    assert observation.settled.minimum == observation.settled.maximum == observation.settled.mean == 0.5
    assert observation.best_epoch == 1  # earliest on ties
    assert observation.mean_gap_points == 0.0
    assert observation.overfitting == obs.VERDICT_NONE
    assert observation.at_baseline is True


def test_none_and_nan_values_are_skipped():
    history = fixtures.make_history(
        train=[0.6, None, 0.8, float("nan"), 0.9],
        validation=[0.55, 0.6, None, 0.7, float("nan")],
    )
    observation = obs.observe_model("m", history, baseline_accuracy=float("nan"))
    assert observation.settled.valid_values == 3
    assert observation.settled.mean == pytest.approx((0.55 + 0.6 + 0.7) / 3)
    assert observation.best_epoch == 4
    assert observation.last_val_accuracy is None
    assert observation.mean_gap_points == pytest.approx(5.0)  # only epoch 1 has both values
    assert observation.gap_epochs == 1
    assert observation.baseline_accuracy is None
    assert observation.at_baseline is None


def test_all_values_missing():
    observation = obs.observe_model("m", fixtures.make_history([None] * 3, [None] * 3))
    assert observation.epoch_count == 3
    assert observation.settled.mean is None
    assert not observation.has_data
    assert observation.overfitting == obs.VERDICT_NOT_ENOUGH_DATA


@pytest.mark.parametrize(
    "epochs, message",
    [
        ("not a list", "must be a list"),
        ([1, 2], "must be an object"),
        ([{"epoch": 1, "accuracy": "high", "val_accuracy": 0.5}], "must be a number"),
        ([{"epoch": 1, "accuracy": 1.5, "val_accuracy": 0.5}], "between 0 and 1"),
        ([{"epoch": "one", "accuracy": 0.5, "val_accuracy": 0.5}], "non-integer epoch"),
    ],
)
def test_malformed_history_raises_value_error(epochs, message):
    with pytest.raises(ValueError, match=message):
        obs.observe_model("m", epochs)


def test_rule_texts_come_from_constants():
    text = obs.overfitting_rule_text()
    assert obs.format_number(obs.STRONG_OVERFIT_GAP_POINTS) in text
    assert obs.format_number(obs.MILD_OVERFIT_GAP_POINTS) in text
    assert str(obs.SETTLED_WINDOW_EPOCHS) in text
    for verdict in (obs.VERDICT_STRONG, obs.VERDICT_MILD, obs.VERDICT_NONE):
        assert verdict in text
    assert obs.format_number(obs.AT_BASELINE_MARGIN_POINTS) in obs.baseline_rule_text()


# --------------------------------------------------------------------------- properties

any_value = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-5, max_value=5),
    st.text(max_size=3),
    st.booleans(),
)
accuracy_value = st.one_of(st.none(), st.just(float("nan")), st.floats(min_value=0.0, max_value=1.0))


def epochs_of(value_strategy):
    record = st.fixed_dictionaries({"accuracy": value_strategy, "val_accuracy": value_strategy})
    return st.lists(record, min_size=0, max_size=30).map(
        lambda records: [{"epoch": index + 1, **record} for index, record in enumerate(records)]
    )


def usable_accuracy(value) -> bool:
    """The history schema, stated independently: null, a non-finite number (read as missing)
    or a number in 0..1; never a boolean or a string."""
    if value is None:
        return True
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return not math.isfinite(value) or 0.0 <= value <= 1.0


@settings(max_examples=300, deadline=None)
@given(epochs=epochs_of(any_value), baseline=any_value)
def test_arbitrary_histories_raise_only_value_error(epochs, baseline):
    bad_epochs = [record["epoch"] for record in epochs
                  if not (usable_accuracy(record["accuracy"]) and usable_accuracy(record["val_accuracy"]))]
    try:
        observation = obs.observe_model("m", epochs, baseline_accuracy=baseline)
    except ValueError as error:
        message = str(error)
        if bad_epochs:  # the first bad record is named
            assert message.startswith(f"history of m, epoch {bad_epochs[0]}: "), message
        else:
            assert not usable_accuracy(baseline), f"a usable history and baseline were rejected: {message}"
            assert message.startswith("majority baseline validation accuracy"), message
    else:
        assert not bad_epochs, f"epoch {bad_epochs[0]} holds an unusable value, but no ValueError was raised"
        assert usable_accuracy(baseline), f"the baseline {baseline!r} is unusable, but no ValueError was raised"
        assert observation.epoch_count == len(epochs)
        assert observation.overfitting in obs.VERDICTS


@settings(max_examples=200, deadline=None)
@given(epochs=epochs_of(accuracy_value), baseline=accuracy_value)
def test_valid_histories_never_raise_and_facts_are_consistent(epochs, baseline):
    observation = obs.observe_model("m", epochs, baseline_accuracy=baseline)
    assert observation.epoch_count == len(epochs)
    assert observation.overfitting in obs.VERDICTS
    settled = observation.settled
    if settled is not None and settled.mean is not None:
        assert settled.minimum <= settled.mean <= settled.maximum
        assert observation.best_val_accuracy >= settled.maximum
        assert 1 <= settled.window_epochs <= obs.SETTLED_WINDOW_EPOCHS
    if observation.mean_gap_points is not None:
        assert math.isfinite(observation.mean_gap_points)
        assert -100.0 <= observation.mean_gap_points <= 100.0
    else:
        assert observation.overfitting == obs.VERDICT_NOT_ENOUGH_DATA


# --------------------------------------------------------------------------- test-set uncertainty


@pytest.mark.parametrize(
    "correct, total, low, high",
    [
        (0, 10, 0.0, 0.2775),  # the classic "zero successes" case: the interval is not empty
        (10, 10, 0.7225, 1.0),
        (14, 16, 0.6400, 0.9650),
        (81, 263, 0.2553, 0.3662),  # Wilson (1927) / Newcombe (1998) worked example
    ],
)
def test_wilson_interval_matches_known_values(correct, total, low, high):
    interval = obs.wilson_interval(correct, total)
    assert interval == pytest.approx((low, high), abs=5e-4)


def test_wilson_interval_rejects_impossible_counts():
    assert obs.wilson_interval(0, 0) is None
    assert obs.wilson_interval(5, 4) is None


def test_per_class_precision_and_recall():
    scores = obs.per_class_scores(["cats", "dogs"], [[6, 2], [0, 8]])
    assert scores[0] == {"name": "cats", "support": 8, "precision": 1.0, "recall": 0.75}
    assert scores[1]["precision"] == pytest.approx(0.8) and scores[1]["recall"] == 1.0
    assert obs.per_class_scores(["a", "b"], [[0, 0], [3, 0]])[1]["precision"] is None


# --------------------------------------------------------------------------- seeds


def epoch(number, accuracy, val_accuracy, loss=None, val_loss=None):
    return {"epoch": number, "accuracy": accuracy, "val_accuracy": val_accuracy, "loss": loss, "val_loss": val_loss}


THREE_SEEDS = {  # given out of order: the summary must sort the seeds numerically
    1339: [epoch(1, 0.80, 0.70, 0.8, 0.8), epoch(2, 0.90, 0.70)],
    1337: [epoch(1, 0.60, 0.50, 0.9, 1.0), epoch(2, 0.70, 0.60)],
    1338: [epoch(1, 0.70, 0.60, 0.7, None), epoch(2, 0.80, 0.80)],
}


def test_aggregation_over_seeds_matches_hand_computed_values():
    summary = obs.summarise_seeds("m", THREE_SEEDS)
    assert [result.seed for result in summary.seeds] == [1337, 1338, 1339]
    first, second = summary.epochs
    assert (first.epoch, second.epoch) == (1, 2)
    # epoch 1 validation accuracy 0.5, 0.6, 0.7: mean 0.6, sample std sqrt((0.01 + 0 + 0.01) / 2) = 0.1
    assert first.val_accuracy.count == 3
    assert first.val_accuracy.mean == pytest.approx(0.6)
    assert first.val_accuracy.std == pytest.approx(0.1)
    assert (first.val_accuracy.minimum, first.val_accuracy.maximum) == (0.5, 0.7)
    assert first.accuracy.mean == pytest.approx(0.7) and first.accuracy.std == pytest.approx(0.1)
    assert first.loss.mean == pytest.approx(0.8) and first.loss.std == pytest.approx(0.1)
    # val_loss is missing for seed 1338: 1.0 and 0.8 -> mean 0.9, std sqrt(0.02 / 1)
    assert first.val_loss.count == 2
    assert first.val_loss.mean == pytest.approx(0.9)
    assert first.val_loss.std == pytest.approx(math.sqrt(0.02))
    assert second.loss.count == 0 and second.loss.mean is None and second.loss.std is None
    assert second.val_accuracy.mean == pytest.approx(0.7)
    assert (second.val_accuracy.minimum, second.val_accuracy.maximum) == (0.6, 0.8)


def test_per_seed_last_and_best_epochs():
    summary = obs.summarise_seeds("m", THREE_SEEDS)
    rows = [(r.seed, r.last_epoch, r.last_val_accuracy, r.best_epoch, r.best_val_accuracy) for r in summary.seeds]
    assert rows == [(1337, 2, 0.60, 2, 0.60), (1338, 2, 0.80, 2, 0.80), (1339, 2, 0.70, 1, 0.70)]  # ties: earliest
    assert summary.best_epochs == (2, 2, 1)
    assert summary.last_val.mean == pytest.approx(0.7) and summary.last_val.std == pytest.approx(0.1)
    assert summary.best_val.mean == pytest.approx(0.7) and summary.best_val.std == pytest.approx(0.1)


def test_observations_run_on_the_mean_curve():
    summary = obs.summarise_seeds("m", THREE_SEEDS)
    observation = obs.observe_model("m", obs.mean_curve(summary.epochs), baseline_accuracy=0.5)
    assert (observation.last_epoch, observation.last_val_accuracy) == (2, pytest.approx(0.7))
    assert observation.last_train_accuracy == pytest.approx(0.8)
    assert (observation.best_epoch, observation.best_val_accuracy) == (2, pytest.approx(0.7))
    assert observation.settled.mean == pytest.approx(0.65)
    assert observation.mean_gap_points == pytest.approx(10.0)  # (0.7 - 0.6 + 0.8 - 0.7) / 2


def test_sample_standard_deviation_divides_by_n_minus_one():
    assert obs.sample_std([0.8, 0.9]) == pytest.approx(0.1 / math.sqrt(2))
    assert obs.sample_std([0.5]) is None
    assert obs.sample_std([]) is None
    assert obs.sample_std([0.3, 0.3, 0.3]) == 0.0


def test_one_seed_has_no_spread():
    summary = obs.summarise_seeds("m", {1337: THREE_SEEDS[1337]})
    assert summary.seed_count == 1
    assert summary.last_val.mean == 0.6 and summary.last_val.std is None
    assert summary.epochs[0].val_accuracy.std is None
    assert summary.epochs[0].val_accuracy.minimum == summary.epochs[0].val_accuracy.maximum == 0.5


def test_seeds_that_stopped_early_cover_fewer_epochs():
    summary = obs.summarise_seeds("m", {1: [epoch(1, 0.5, 0.5), epoch(2, 0.6, 0.6)], 2: [epoch(1, 0.7, 0.7)]})
    assert [item.val_accuracy.count for item in summary.epochs] == [2, 1]
    assert summary.epochs[1].val_accuracy.std is None
    assert summary.last_val.mean == pytest.approx(0.65)  # each seed's own last epoch


def test_continued_epoch_numbers_are_kept():
    runs = {1337: fixtures.finetune_history(epochs=3, first_epoch=21), 1338: fixtures.finetune_history(epochs=3, first_epoch=21)}
    summary = obs.summarise_seeds("finetune", runs)
    assert [item.epoch for item in summary.epochs] == [21, 22, 23]
    assert [result.last_epoch for result in summary.seeds] == [23, 23]
    observation = obs.observe_model("finetune", obs.mean_curve(summary.epochs))
    assert (observation.settled.first_epoch, observation.settled.last_epoch) == (21, 23)


def test_malformed_seed_history_names_the_seed():
    with pytest.raises(ValueError, match=r"finetune \(seed 1338\), epoch 1: accuracy"):
        obs.summarise_seeds("finetune", {1337: [epoch(1, 0.5, 0.5)], 1338: [epoch(1, "high", 0.5)]})


# --------------------------------------------------------------------------- intervals and the noise rule


def estimate(mean, total=400, std=0.01, seeds=3):
    return obs.accuracy_estimate(obs.Spread(seeds, mean, std, mean, mean), total)


def test_accuracy_estimate_reads_the_mean_as_a_count():
    result = estimate(0.7)
    assert (result.correct, result.total) == (280, 400)
    assert result.interval == obs.wilson_interval(280, 400)
    assert estimate(0.70049).correct == 280 and estimate(0.70126).correct == 281
    assert estimate(0.7, total=None).interval is None
    assert estimate(0.7, total=True).interval is None
    assert estimate(None).interval is None and estimate(None).correct is None


def test_overlapping_intervals_are_within_noise():
    comparison = obs.compare_models("finetune", estimate(0.965), "transfer", estimate(0.955))
    assert comparison.verdict == obs.COMPARISON_WITHIN_NOISE
    assert comparison.better is None and comparison.worse is None and not comparison.first_is_better
    assert comparison.difference_points == pytest.approx(1.0)


def test_separated_intervals_rank_the_higher_mean_either_way_round():
    up = obs.compare_models("augmented", estimate(0.80), "baseline", estimate(0.50))
    assert up.verdict == obs.COMPARISON_BETTER
    assert (up.better, up.worse, up.first_is_better) == ("augmented", "baseline", True)
    down = obs.compare_models("augmented", estimate(0.50), "baseline", estimate(0.80))
    assert (down.better, down.worse, down.first_is_better) == ("baseline", "augmented", False)
    assert down.difference_points == pytest.approx(-30.0)


def test_without_an_interval_nothing_is_ranked():
    comparison = obs.compare_models("a", estimate(0.9, total=None), "b", estimate(0.5, total=None))
    assert comparison.verdict == obs.COMPARISON_UNKNOWN and comparison.better is None
    assert obs.compare_models("a", estimate(None), "b", estimate(0.5)).verdict == obs.COMPARISON_UNKNOWN


def test_touching_intervals_count_as_overlapping():
    assert obs.intervals_overlap((0.1, 0.2), (0.2, 0.3))
    assert obs.intervals_overlap((0.1, 0.5), (0.2, 0.3))
    assert not obs.intervals_overlap((0.1, 0.2), (0.21, 0.3))
    assert not obs.intervals_overlap((0.21, 0.3), (0.1, 0.2))


def test_noise_rule_text_names_the_rule():
    text = obs.noise_rule_text()
    assert obs.COMPARISON_WITHIN_NOISE in text and "95% Wilson interval" in text and "overlap" in text
