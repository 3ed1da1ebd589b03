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


def test_records_without_an_epoch_number_count_from_one():
    records = [{"accuracy": 0.6, "val_accuracy": 0.5}, {"accuracy": 0.7, "val_accuracy": 0.8},
               {"accuracy": 0.8, "val_accuracy": 0.6}]
    assert [record.epoch for record in obs.clean_history(records)] == [1, 2, 3]
    summary = obs.summarise_seeds("m", {1: records})
    assert (summary.seeds[0].best_epoch, summary.seeds[0].best_val_accuracy) == (2, 0.8)
    assert summary.best_epochs == (2,) and summary.seeds[0].last_epoch == 3
    assert [item.epoch for item in summary.epochs] == [1, 2, 3]
    # an explicit number wins over the position
    assert obs.summarise_seeds("m", {1: [{"epoch": 7, "accuracy": 0.5, "val_accuracy": 0.5}]}).best_epochs == (7,)


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
        obs.clean_history(epochs, "m")


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
@given(epochs=epochs_of(any_value))
def test_arbitrary_histories_raise_only_value_error(epochs):
    bad_epochs = [record["epoch"] for record in epochs
                  if not (usable_accuracy(record["accuracy"]) and usable_accuracy(record["val_accuracy"]))]
    try:
        summary = obs.summarise_seeds("m", {1: epochs})
    except ValueError as error:
        message = str(error)
        assert bad_epochs, f"a usable history was rejected: {message}"
        assert message.startswith(f"history of m (seed 1), epoch {bad_epochs[0]}: "), message  # the first bad record
    else:
        assert not bad_epochs, f"epoch {bad_epochs[0]} holds an unusable value, but no ValueError was raised"
        assert summary.seeds[0].epoch_count == len(epochs)
        best = summary.seeds[0].best_val_accuracy
        values = [record["val_accuracy"] for record in epochs if isinstance(record["val_accuracy"], (int, float))
                  and not isinstance(record["val_accuracy"], bool) and math.isfinite(record["val_accuracy"])]
        assert best == (max(values) if values else None)


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
    assert [record["epoch"] for record in obs.mean_curve(summary.epochs)] == [21, 22, 23]


def test_malformed_seed_history_names_the_seed():
    with pytest.raises(ValueError, match=r"finetune \(seed 1338\), epoch 1: accuracy"):
        obs.summarise_seeds("finetune", {1337: [epoch(1, 0.5, 0.5)], 1338: [epoch(1, "high", 0.5)]})


# --------------------------------------------------------------------------- intervals and the noise rule


