"""Training helpers: validation from cached frozen-base features, and model selection."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from experiments.artifacts import Epoch
from experiments.study.decisions import choose_model


@pytest.mark.training
def test_cached_validation_gives_the_numbers_model_evaluate_gives():
    """The cache is a speed lever only: val_loss and val_accuracy must match a full evaluation,
    label smoothing included (the compiled loss smooths at validation too). The transfer recipe
    (augmentation, a frozen base with BatchNorm, max pooling, dropout) on the tests' own eight-layer
    backbone: the callback works on the recipe's layers, whatever the backbone."""
    import keras

    from experiments.config import TrainingSettings
    from experiments.data.loading import Split, make_dataset
    from experiments.models.build import build_model, compile_model
    from experiments.models.recipes import BUILT_IN
    from experiments.training.fit import CachedFeatureValidation
    from tests.conftest import TINY_BACKBONE

    keras.utils.set_random_seed(3)
    recipe = dataclasses.replace(BUILT_IN["transfer"], backbone=TINY_BACKBONE, backbone_file=TINY_BACKBONE.rpartition(":")[0])
    settings = TrainingSettings("adam", 1e-2, 0.0, 0.2, 8, 3, "constant")  # label smoothing 0.2
    model = compile_model(build_model(recipe, (32, 32), class_count=2, base_weights="builder", seed=3), 1e-2,
                          settings=settings, steps_per_epoch=3)
    rng = np.random.default_rng(3)
    train = Split(rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8), np.array([0, 1] * 12, dtype=np.int32), [f"t{i}" for i in range(24)])
    validation = Split(rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8), np.array([0, 1] * 10, dtype=np.int32), [f"v{i}" for i in range(20)])
    cached = CachedFeatureValidation(validation.images, validation.labels, batch_size=8, label_smoothing=settings.label_smoothing)
    seen = []

    class Compare(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            loss, accuracy = self.model.evaluate(make_dataset(validation, 8, shuffle=False, seed=0), verbose=0)
            seen.append((logs["val_loss"], logs["val_accuracy"], loss, accuracy))

    model.fit(make_dataset(train, 8, shuffle=True, seed=0), epochs=3, callbacks=[cached, Compare()], verbose=0)
    assert len(seen) == 3
    for cached_loss, cached_accuracy, loss, accuracy in seen:
        assert cached_loss == pytest.approx(loss, rel=1e-4, abs=1e-5)
        assert cached_accuracy == pytest.approx(accuracy)
    assert len({round(loss, 6) for loss, *_ in seen}) > 1, "the head trained, so the validation loss must move"


def test_softmax_cross_entropy_against_hand_values():
    from experiments.training.fit import softmax_cross_entropy

    logits = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    loss, accuracy = softmax_cross_entropy(logits, np.array([0, 0, 0]))
    expected = np.mean([np.log(2), np.log(1 + np.exp(-2)), np.log(1 + np.exp(3))])
    assert loss == pytest.approx(expected)
    assert accuracy == pytest.approx(2 / 3)  # argmax of [0, 0] is class 0; [0, 3] is wrong


def test_smoothed_cross_entropy_against_hand_values():
    """Keras's label smoothing: the target is 1 - ε + ε/K for the label and ε/K for the others."""
    from experiments.training.fit import softmax_cross_entropy

    logits, labels = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), np.array([0, 2])
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    targets = np.array([[0.8 + 0.2 / 3, 0.2 / 3, 0.2 / 3], [0.2 / 3, 0.2 / 3, 0.8 + 0.2 / 3]])
    loss, accuracy = softmax_cross_entropy(logits, labels, label_smoothing=0.2)
    assert loss == pytest.approx(float(-(targets * log_p).sum(axis=1).mean()))
    assert accuracy == pytest.approx(0.5)
    assert softmax_cross_entropy(logits, labels)[0] == pytest.approx(float(-(log_p[0, 0] + log_p[1, 2]) / 2))


def _runs(*last_values):
    return {1337 + index: [Epoch(1, val_accuracy=0.1), Epoch(2, val_accuracy=value)] for index, value in enumerate(last_values)}


def test_choose_model_uses_the_mean_over_seeds_then_the_best_seed():
    runs = {"baseline": _runs(0.70, 0.90, 0.50), "transfer": _runs(0.80, 0.76, 0.78)}
    chosen, seed, candidates, per_seed = choose_model(runs)
    assert candidates["baseline"] == pytest.approx(0.70) and candidates["transfer"] == pytest.approx(0.78)
    assert chosen == "transfer"  # its single best seed (0.80) is below baseline's (0.90): means decide
    assert seed == 1337 and per_seed == {"1337": 0.80, "1338": 0.76, "1339": 0.78}


def test_choose_model_breaks_ties_by_study_order_and_skips_missing_values():
    runs = {"baseline": _runs(0.8), "augmented": _runs(0.8), "transfer": {1337: [Epoch(1, val_accuracy=None)]}}
    chosen, seed, candidates, _ = choose_model(runs)
    assert chosen == "baseline" and seed == 1337 and candidates["transfer"] is None
    assert choose_model({})[0] is None


@pytest.mark.training
def test_a_compiled_model_traces_its_train_step_once_and_so_does_a_saved_one_loaded(tmp_path):
    """compile_model builds the accuracy metric and the optimizer's slots before fit: made inside the
    first traced step, their variables made TensorFlow trace the whole step twice. The history
    keys stay "accuracy" and "loss", and a model saved and loaded back (resume, train_on) also
    traces once."""
    import keras
    import tensorflow as tf

    from experiments.models.build import compile_model
    from tests.test_benchmark_options import load_script

    count_train_step_traces = load_script("first_epoch").count_train_step_traces  # what the benchmark reports

    def traced_fit(model, epochs: int, initial_epoch: int = 0) -> tuple[int, dict]:
        traces = count_train_step_traces(model)
        history = model.fit(dataset, epochs=epochs, initial_epoch=initial_epoch, verbose=0)
        return len(traces), history.history

    keras.utils.set_random_seed(5)
    rng = np.random.default_rng(5)
    points, labels = rng.normal(size=(32, 4)).astype("float32"), np.array([0, 1] * 16, dtype=np.int32)
    dataset = tf.data.Dataset.from_tensor_slices((points, labels)).batch(8)
    model = compile_model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]), 1e-2)
    traces, history = traced_fit(model, epochs=2)
    assert traces == 1 and sorted(history) == ["accuracy", "loss"]
    model.save(tmp_path / "model.keras")
    traces, history = traced_fit(keras.models.load_model(tmp_path / "model.keras"), epochs=3, initial_epoch=2)
    assert traces == 1 and sorted(history) == ["accuracy", "loss"]


def _tiny_fit_setup(tmp_path, nan_from_step: int | None = None):
    """A two-class dense model on 32 random points, 4 steps an epoch; with `nan_from_step` its
    loss is NaN from that optimizer step on (step 8 is epoch 3's first)."""
    import keras
    import tensorflow as tf

    from experiments.artifacts import CellFolder

    keras.utils.set_random_seed(5)
    rng = np.random.default_rng(5)
    points, labels = rng.normal(size=(32, 4)).astype("float32"), np.array([0, 1] * 16, dtype=np.int32)
    dataset = tf.data.Dataset.from_tensor_slices((points, labels)).batch(8)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def loss(y_true, y_pred):
        value = cross_entropy(y_true, y_pred)
        if nan_from_step is None:
            return value
        return value + keras.ops.where(model.optimizer.iterations >= nan_from_step, float("nan"), 0.0)

    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss, metrics=["accuracy"])
    return model, dataset, CellFolder("baseline", 5, tmp_path / "seed-5")


@pytest.mark.training
def test_a_nan_loss_stops_the_fit_and_keeps_the_last_finite_epoch(tmp_path):
    from experiments.artifacts import RunState, read_json
    from experiments.training.fit import TrainingDiverged, fit, load_progress

    model, dataset, seed_run = _tiny_fit_setup(tmp_path, nan_from_step=8)
    state = RunState("baseline", 5, "config", "data", "partial", 0)
    with pytest.raises(TrainingDiverged, match="^loss became NaN in epoch 3$") as caught:
        fit(model, seed_run, dataset, dataset, state, first_epoch=0, last_epoch=6, verbose=0)
    assert caught.value.epoch == 3
    epochs, checkpoint = load_progress(seed_run)
    assert [record["epoch"] for record in epochs] == [1, 2], "the NaN epoch is not committed, and training stopped"
    assert checkpoint is not None and checkpoint.name == "epoch-0002.keras"
    history = read_json(seed_run.history)["epochs"]
    assert [record["epoch"] for record in history] == [1, 2] and all(record["loss"] is not None for record in history)
    assert RunState.read(seed_run.state).epochs_completed == 2


@pytest.mark.training
def test_a_recorded_stop_request_ends_the_fit_after_committing_the_epoch(tmp_path, monkeypatch):
    """A KeyboardInterrupt that TensorFlow swallowed still stops training at the epoch's end."""
    import signal

    from experiments import interrupts
    from experiments.artifacts import RunState
    from experiments.training.fit import fit, load_progress

    model, dataset, seed_run = _tiny_fit_setup(tmp_path)
    monkeypatch.setattr(interrupts, "_received", signal.SIGTERM)
    with pytest.raises(interrupts.Interrupted):
        fit(model, seed_run, dataset, dataset, RunState("baseline", 5, "config", "data", "partial", 0), first_epoch=0, last_epoch=4,
            verbose=0)
    epochs, checkpoint = load_progress(seed_run)
    assert [record["epoch"] for record in epochs] == [1] and checkpoint.name == "epoch-0001.keras"


def test_one_softmax_serves_the_test_scores_and_the_cached_validation_loss():
    from experiments.training.fit import log_softmax, softmax, softmax_cross_entropy

    logits = np.array([[1000.0, 1001.0], [-3.0, 2.0], [0.0, 0.0]])
    probabilities = softmax(logits)
    assert np.allclose(probabilities.sum(axis=1), 1.0) and np.all(np.isfinite(probabilities))
    assert np.allclose(probabilities[0], [1 / (1 + np.e), np.e / (1 + np.e)])
    loss, accuracy = softmax_cross_entropy(logits, np.array([1, 1, 0]))
    assert loss == pytest.approx(-np.mean(log_softmax(logits)[[0, 1, 2], [1, 1, 0]])) and accuracy == 1.0


# --------------------------------------------------------------------------- retraining removes only what it wrote


def test_clearing_a_checkpoint_removes_only_its_own_files_and_names_a_stranger_s(tmp_path, capsys):
    """Its own: the files its record (the folder's ledger) lists, and their temporaries; a file
    named as this program names them, that no record lists, is someone else's."""
    from experiments.artifacts import RunFolder, record_written
    from experiments.training.fit import clear_checkpoint

    seed_run = RunFolder(tmp_path / "run").seed_run("baseline", 7)
    folder = seed_run.checkpoint_dir
    folder.mkdir(parents=True)
    record_written(folder, ["epoch-0003.keras", "epoch-0004.keras", "progress.json"])  # as the epochs' commits list them
    for name in ("epoch-0003.keras", "progress.json", ".epoch-0004.k2j_x9.tmp.keras", ".progress.abc123.tmp.json"):
        (folder / name).write_bytes(b"ours")
    (folder / "notes.txt").write_text("mine")
    (folder / "epoch-best.keras").write_text("mine too")  # epoch-*.keras, but not a name this program gives
    (folder / "epoch-0009.keras").write_text("mine, named like ours")  # the name fits, but no record lists it
    clear_checkpoint(seed_run)
    assert sorted(path.name for path in folder.iterdir()) == ["epoch-0009.keras", "epoch-best.keras", "notes.txt"]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and str(folder) in lines[0] and "epoch-0009.keras, epoch-best.keras, notes.txt" in lines[0]
    for name in ("notes.txt", "epoch-best.keras", "epoch-0009.keras"):
        (folder / name).unlink()
    record_written(folder, ["epoch-0001.keras"])
    (folder / "epoch-0001.keras").write_bytes(b"ours")
    clear_checkpoint(seed_run)
    assert not folder.exists() and capsys.readouterr().err == ""  # all ours: the folder goes too, ledger and all


def test_a_cell_trained_afresh_with_tensorboard_keeps_a_stranger_s_files_in_its_event_folder(tmp_path, capsys):
    from experiments.artifacts import RunFolder, record_written
    from experiments.config import load_config
    from experiments.training.tracking import StudyTracking, tensorboard_dir
    from tests.conftest import SMOKE_CONFIG

    tracking = StudyTracking(load_config(SMOKE_CONFIG, {"training.tensorboard": True}), tmp_path)
    seed_run = RunFolder(tmp_path).seed_run("baseline", 7)
    folder = tensorboard_dir(tmp_path, seed_run)
    for split in ("train", "validation"):
        (folder / split).mkdir(parents=True)
        (folder / split / "events.out.tfevents.1796560943.vm.12092.0.v2").write_bytes(b"old events")
        record_written(folder / split, ["events.out.tfevents.1796560943.vm.12092.0.v2"])  # as the earlier training listed it
    (folder / "train" / "keep.txt").write_text("mine")
    (folder / "train" / "events.out.tfevents.123.user").write_text("mine, named like TensorBoard's")
    capsys.readouterr()
    tracking.callbacks(seed_run, [], 0, {})
    assert sorted(str(path.relative_to(folder)) for path in folder.rglob("*")) == [
        "train", "train/events.out.tfevents.123.user", "train/keep.txt"]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "train/keep.txt" in lines[0] and "events.out.tfevents.123.user" in lines[0] and str(folder) in lines[0]


def _truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_a_truncated_checkpoint_is_named_and_training_starts_again_from_epoch_one_saying_so(tmp_path, capsys):
    from experiments.artifacts import RunState, read_json
    from experiments.training.fit import fit, resumable_progress

    model, dataset, seed_run = _tiny_fit_setup(tmp_path)
    state = RunState("baseline", 5, "config", "data", "partial", 0)
    fit(model, seed_run, dataset, dataset, state, first_epoch=0, last_epoch=2, verbose=0)
    checkpoint = seed_run.checkpoint_dir / "epoch-0002.keras"
    _truncate(checkpoint)
    epochs, found, problem = resumable_progress(seed_run, 0, 4)
    assert epochs == [] and found is None and f"its checkpoint {checkpoint} cannot be used (it is truncated or damaged: " in problem
    capsys.readouterr()
    (tmp_path / "fresh").mkdir()
    fresh, _dataset, _seed_run = _tiny_fit_setup(tmp_path / "fresh")
    result = fit(fresh, seed_run, dataset, dataset, state, first_epoch=0, last_epoch=4, verbose=0)  # no "File not found"
    err = capsys.readouterr().err
    assert f"baseline (seed 5) cannot resume: its checkpoint {checkpoint} cannot be used (it is truncated" in err
    assert "training starts again from epoch 1" in err and "resuming" not in err
    assert result.resumed_epochs == 0
    assert [record["epoch"] for record in read_json(seed_run.history)["epochs"]] == [1, 2, 3, 4]
    assert resumable_progress(seed_run, 0, 4)[1].name == "epoch-0004.keras"  # the damaged file was replaced, not kept


def test_a_truncated_saved_model_is_one_sentence_naming_the_file_and_what_to_do(tmp_path):
    import keras

    from experiments.errors import UserError
    from experiments.models.build import load_trained_model

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    path = tmp_path / "model.keras"
    model.save(path)
    assert load_trained_model(path).count_params() == model.count_params()
    _truncate(path)
    with pytest.raises(UserError) as caught:
        load_trained_model(path)
    message = str(caught.value)
    assert message.startswith(f"The saved model {path} cannot be used (it is truncated or damaged: File is not a zip file)")
    assert "delete it (or pass --force)" in message and "File not found" not in message
    assert message.count(". ") == 0 and message.endswith(".")
    assert caught.value.exit_status == 2


def test_a_damaged_checkpoint_with_a_whole_earlier_one_beside_it_resumes_from_that_one_saying_so(tmp_path, capsys):
    """A kill between committing epoch N and deleting epoch N-1's file leaves both; when N's is
    then damaged, the fit resumes after epoch N-1 instead of starting again."""
    import shutil

    import keras

    from experiments.artifacts import RunState, read_json
    from experiments.training.fit import fit, resumable_progress

    model, dataset, seed_run = _tiny_fit_setup(tmp_path)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])  # a loss Keras can load back
    state = RunState("baseline", 5, "config", "data", "partial", 0)
    fit(model, seed_run, dataset, dataset, state, first_epoch=0, last_epoch=1, verbose=0)
    kept = tmp_path / "epoch-0001.keras"
    shutil.copy(seed_run.checkpoint_dir / "epoch-0001.keras", kept)
    fit(model, seed_run, dataset, dataset, state, first_epoch=0, last_epoch=2, verbose=0)
    shutil.copy(kept, seed_run.checkpoint_dir / "epoch-0001.keras")  # as a kill at that moment leaves it
    _truncate(seed_run.checkpoint_dir / "epoch-0002.keras")
    epochs, found, note = resumable_progress(seed_run, 0, 4)
    assert [record["epoch"] for record in epochs] == [1] and found.name == "epoch-0001.keras"
    assert note.endswith("so it resumes from the earlier epoch-0001.keras")
    capsys.readouterr()
    result = fit(model, seed_run, dataset, dataset, state, first_epoch=0, last_epoch=3, verbose=0)
    err = capsys.readouterr().err
    assert "epoch-0002.keras cannot be used (it is truncated or damaged" in err
    assert "resuming baseline (seed 5) after epoch 1 of 3" in err
    assert result.resumed_epochs == 1
    assert [record["epoch"] for record in read_json(seed_run.history)["epochs"]] == [1, 2, 3]


def test_a_fit_lists_the_checkpoints_it_writes_and_never_replaces_a_file_of_the_same_name_it_did_not_write(tmp_path):
    from experiments.artifacts import RunState, written_names
    from experiments.errors import UserError
    from experiments.training.fit import clear_checkpoint, fit

    model, dataset, seed_run = _tiny_fit_setup(tmp_path)
    fit(model, seed_run, dataset, dataset, RunState("baseline", 5, "config", "data", "partial", 0),
        first_epoch=0, last_epoch=2, verbose=0)
    assert {"epoch-0002.keras", "progress.json"} <= written_names(seed_run.checkpoint_dir)
    clear_checkpoint(seed_run)
    assert not seed_run.checkpoint_dir.exists()
    seed_run.checkpoint_dir.mkdir(parents=True)
    mine = seed_run.checkpoint_dir / "epoch-0001.keras"
    mine.write_text("a user's file, named as the first epoch's checkpoint")
    with pytest.raises(UserError, match="epoch-0001.keras") as refused:
        fit(model, seed_run, dataset, dataset, RunState("baseline", 5, "config", "data", "partial", 0),
            first_epoch=0, last_epoch=2, verbose=0)
    assert "did not write" in str(refused.value)
    assert mine.read_text() == "a user's file, named as the first epoch's checkpoint"


def test_a_checkpoint_folder_from_before_the_ledger_is_adopted_by_its_progress_record_and_only_then(tmp_path, capsys):
    from experiments.artifacts import CheckpointProgress, RunFolder
    from experiments.training.fit import clear_checkpoint

    ours = RunFolder(tmp_path / "run").seed_run("baseline", 7)
    ours.checkpoint_dir.mkdir(parents=True)
    (ours.checkpoint_dir / "epoch-0003.keras").write_bytes(b"an old run's checkpoint")
    CheckpointProgress("epoch-0003.keras", []).write(ours.checkpoint_dir / "progress.json")
    clear_checkpoint(ours)
    assert not ours.checkpoint_dir.exists(), "its own record names it: the old run's checkpoint files are ours"

    stranger = RunFolder(tmp_path / "run").seed_run("baseline", 8)
    stranger.checkpoint_dir.mkdir(parents=True)
    (stranger.checkpoint_dir / "epoch-0003.keras").write_text("no record of ours says so")
    clear_checkpoint(stranger)
    assert [path.name for path in stranger.checkpoint_dir.iterdir()] == ["epoch-0003.keras"]
    assert "epoch-0003.keras" in capsys.readouterr().err
