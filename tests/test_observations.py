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


@settings(max_examples=200, deadline=None)
@given(epochs=epochs_of(any_value), baseline=any_value)
def test_arbitrary_histories_raise_only_value_error(epochs, baseline):
    try:
        obs.observe_model("m", epochs, baseline_accuracy=baseline)
    except ValueError:
        pass


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
