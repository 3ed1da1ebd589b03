"""The study's decisions as pure functions: no files, no TensorFlow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from experiments.artifacts import BaseWeights, Epoch, History, RunState
from experiments.study.decisions import RESTART, RESUME, SETTLED, SKIP, choose_model, decide

EXPECTED = {"config_hash": "c1", "data_fingerprint": "d1"}
HISTORY = History("baseline", 1, None, [Epoch(1), Epoch(2)])


def state(status="complete", **changes):
    fields = {**EXPECTED, "status": status, "epochs_planned": 2, "epochs_completed": 2, "error": None, **changes}
    return RunState("baseline", 1, **fields)


@pytest.mark.parametrize("arguments, action, words", [
    ((None, None, False, EXPECTED, False), RESUME, "not trained yet"),
    ((state(), HISTORY, True, EXPECTED, False), SKIP, "same config and data"),
    ((state(), HISTORY, True, EXPECTED, True), RESTART, "--force"),
    ((state(config_hash="c0"), HISTORY, True, EXPECTED, False), RESTART, "config changed"),
    ((state(data_fingerprint="d0"), HISTORY, True, EXPECTED, False), RESTART, "data changed"),
    ((state(), HISTORY, True, {**EXPECTED, "starting_point": "new"}, False), RESTART, "the model it starts from changed"),
    ((state(), HISTORY, False, EXPECTED, False), RESTART, "model file model.keras is missing"),
    ((state(), History("baseline", 1, None, [Epoch(1)]), True, EXPECTED, False), RESTART, "history is incomplete"),
    ((state("partial", epochs_completed=1), None, False, EXPECTED, False), RESUME, "1 epochs done"),
    ((state("failed", error="boom"), None, False, EXPECTED, False), RESUME, "failed last time (boom)"),
    ((state("diverged", error="loss became NaN in epoch 2"), None, False, EXPECTED, False), RESTART, "diverged last time"),
])
def test_each_decision_and_its_reason(arguments, action, words):
    decided, reason = decide(*arguments)
    assert decided == action and words in reason


def test_a_changed_starting_point_names_the_model_it_continues():
    reason = decide(state(), HISTORY, True, {**EXPECTED, "starting_point": "new"}, False, source_name="transfer")[1]
    assert "the transfer model it starts from changed" in reason


def test_a_run_another_process_finished_meanwhile_is_not_trained_again_even_with_force():
    since = datetime.now(UTC) - timedelta(seconds=5)
    finished = datetime.now(UTC).isoformat()
    assert decide(state(finished_at=finished), HISTORY, True, EXPECTED, True, since)[0] == SKIP
    assert decide(state("diverged", finished_at=finished, error="x"), None, False, EXPECTED, True, since)[0] == SETTLED
    earlier = (since - timedelta(minutes=1)).isoformat()
    assert decide(state(finished_at=earlier), HISTORY, True, EXPECTED, True, since)[0] == RESTART


def test_a_local_weights_file_is_recorded_with_its_sha256(tmp_path):
    import hashlib

    from experiments.study.environment import describe_base_weights

    weights = tmp_path / "base.weights.h5"
    weights.write_bytes(b"not really weights")
    described = describe_base_weights(str(weights))
    assert described == BaseWeights("file", str(weights), "base.weights.h5", hashlib.sha256(b"not really weights").hexdigest())
    assert describe_base_weights("imagenet") == BaseWeights("imagenet")


def validation_curve(*accuracies: float) -> list[Epoch]:
    return [Epoch(number, val_accuracy=accuracy) for number, accuracy in enumerate(accuracies, 1)]


def test_a_model_is_scored_by_its_last_epoch_not_its_best():
    """The weights that are saved, tested and reported are the last epoch's: choosing on a peak
    the saved model no longer has would test another model than the one chosen."""
    runs = {"peaked": {7: validation_curve(0.60, 0.95, 0.70), 8: validation_curve(0.60, 0.93, 0.72)},
            "steady": {7: validation_curve(0.60, 0.75, 0.80), 8: validation_curve(0.60, 0.90, 0.78)}}
    chosen, seed, candidates, per_seed = choose_model(runs)
    assert candidates == pytest.approx({"peaked": 0.71, "steady": 0.79})
    assert chosen == "steady", "peaked's best epochs (0.95, 0.93) are higher, but its last ones are not"
    assert per_seed == {"7": 0.80, "8": 0.78}
    assert seed == 7, "seed 8 peaked at 0.90 and ended at 0.78; seed 7 ended at 0.80"


@pytest.mark.parametrize("resumable, words", [
    ((4, None), "an unfinished run (4 epochs done last time), resuming after its 4 committed epochs"),
    ((0, "its checkpoint checkpoint/epoch-0004.keras is missing"),
     "an unfinished run (4 epochs done last time), but its checkpoint checkpoint/epoch-0004.keras is missing, "
     "so from its first epoch again"),
    ((0, None), "an unfinished run (4 epochs done last time), but its checkpoint is gone, so from its first epoch again"),
])
def test_a_resume_says_whether_its_checkpoint_really_resumes(resumable, words):
    partial = state("partial", epochs_planned=6, epochs_completed=4)
    action, reason = decide(partial, None, False, EXPECTED, False, resumable=resumable)
    assert action == RESUME and reason == words
    assert "resuming" not in reason or resumable[0] == 4  # never "resuming" while training starts again at epoch 1
