"""Train one cell: decide from its records, build or resume its model, fit it, and write its history, predictions, state and curves."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace
from datetime import datetime
from typing import Any

from experiments.artifacts.cell_records import Epoch, History, ModelSummary, RunState, ValidationPredictions, files_digest
from experiments.artifacts.files import ArtifactFormatError, file_sha256, write_atomic
from experiments.artifacts.folders import CellFolder, RunFolder
from experiments.artifacts.records import Fields, utc_now_precise
from experiments.config import StudyConfig, config_hash
from experiments.console import STATUS_LINE, log
from experiments.data.loading import StudyData, make_dataset
from experiments.errors import StudyFailed
from experiments.models.builders import import_study_code
from experiments.models.recipes import chain_root
from experiments.study import figures
from experiments.study.decisions import (
    COMPLETE,
    PARTIAL,
    decide,
    finished_for,
)
from experiments.training.tracking import (
    StudyTracking,
)


def expected_state(config: StudyConfig, run: RunFolder, model_name: str, seed: int, data_fingerprint: str) -> dict[str, str]:
    """What a finished run must have been trained from to be reused. For a model that continues
    another (finetune, transfer_extended) that includes the run it starts from (a digest of its
    history file)."""
    expected = {"config_hash": config_hash(config, model_name), "data_fingerprint": data_fingerprint}
    source = config.source_of(model_name)
    if source is not None:
        source_history = run.seed_run(source, seed).history
        try:
            expected["starting_point"] = file_sha256(source_history)
        except OSError:  # missing, or a pipe or folder in its place: no starting point to train from
            expected["starting_point"] = "missing"
    return expected


def build_for_training(config: StudyConfig, run: RunFolder, data: StudyData, model_name: str, seed: int):
    """The compiled model to train, and its first and last epoch numbers (0-based start)."""
    from experiments.models.build import build_model, compile_model, load_trained_model, make_finetune_model  # loads TensorFlow: only where it is needed

    training = config.training
    recipe = config.recipe(model_name)
    settings = config.training_settings(model_name)
    steps_per_epoch = math.ceil(len(data.train) / settings.batch_size)
    first_epoch, last_epoch = config.epoch_span(model_name)
    source = recipe.continues_model
    if source is None:
        model = build_model(recipe, data.image_size, len(data.class_names), config.weights_of(model_name), seed)
        compile_model(model, settings.learning_rate, training.jit_compile, settings, steps_per_epoch,
                      from_logits=recipe.outputs != "probabilities")
        return model, first_epoch, last_epoch
    source_file = run.seed_run(source, seed).model_file
    if not source_file.is_file():
        raise StudyFailed(f"{model_name} starts from the trained {source} model for seed {seed}, but {source_file} is missing")
    import_study_code(chain_root(model_name, config.models))  # the custom layers of its own code, if any, register
    if recipe.recipe == "train_on":
        # the budget-matched control: the saved model as it is (frozen backbone, same optimizer,
        # learning rate and optimizer state), trained on for its epochs
        return load_trained_model(source_file), first_epoch, last_epoch
    model = make_finetune_model(load_trained_model(source_file), config.unfreeze_from(model_name)[0], model_name)
    compile_model(model, settings.learning_rate, training.jit_compile, settings, steps_per_epoch)
    return model, first_epoch, last_epoch


def as_logits(config: StudyConfig, model_name: str, outputs: Any) -> Any:
    """A model's outputs as logits: a keras model that outputs probabilities gives their logarithm
    (softmax of it is the same probabilities)."""
    import numpy as np

    outputs = np.asarray(outputs, dtype=np.float64)
    if config.recipe(model_name).outputs == "probabilities":
        return np.log(np.clip(outputs, 1e-12, None))
    return outputs


def train_one(config: StudyConfig, run: RunFolder, data: StudyData, seed_run: CellFolder, precision: str,
              expected: dict[str, str], on_started: Callable[[], None] | None = None,
              tracking: StudyTracking | None = None, strategy: Any = None) -> RunState:
    """Build (or continue), compile and fit one model for one seed; write its history, state,
    model file and its model's summary. The caller holds the cell's lock.

    state.json holds everything the manifest says about the run (status, wall_seconds,
    epochs_completed, error, precision); `on_started` is called once it says "partial".
    `strategy` (a tf.distribute strategy, or None): the model is built, loaded, compiled and
    fitted in its scope. Raises TrainingDiverged (experiments.training.fit) when the loss stops
    being finite."""
    import keras

    STATUS_LINE.release()  # Keras prints the epochs from here on
    keras.backend.clear_session()  # before the strategy's scope: it resets the graph the scope lives in
    with strategy_scope(strategy):
        return _train_one(config, run, data, seed_run, precision, expected, on_started, tracking)


def _train_one(config: StudyConfig, run: RunFolder, data: StudyData, seed_run: CellFolder, precision: str,
               expected: dict[str, str], on_started: Callable[[], None] | None,
               tracking: StudyTracking | None) -> RunState:
    import keras

    from experiments.models.build import describe_model, set_precision  # loads TensorFlow: only where it is needed
    from experiments.training.fit import (
        CachedFeatureValidation,
        clear_checkpoint,
        fit,
        keras_verbosity,
        resumable_progress,
        write_history,
    )  # loads TensorFlow: only where it is needed

    model_name, seed = seed_run.model_name, seed_run.seed
    policy = set_precision(precision)
    keras.utils.set_random_seed(seed)
    model, first_epoch, last_epoch = build_for_training(config, run, data, model_name, seed)
    settings = config.training_settings(model_name)
    ModelSummary.from_fields(Fields(describe_model(model, config.recipe(model_name), settings),
                                    run.summary(model_name))).write(run.summary(model_name))
    earlier_epochs, _, _ = resumable_progress(seed_run, first_epoch, last_epoch - first_epoch)
    state = RunState(model_name, seed, **expected, status=PARTIAL, epochs_completed=len(earlier_epochs),
                     epochs_planned=last_epoch - first_epoch, precision=policy, started_at=utc_now_precise())
    state.write(seed_run.state)
    if on_started is not None:
        on_started()
    cached_validation = None
    if frozen_backbone(config, model_name) and config.training.validation_feature_cache:
        pooling = chain_root(model_name, config.models).pooling  # a train_on model has its transfer model's layers
        cached_validation = CachedFeatureValidation(data.validation.images, data.validation.labels, config.data.batch_size,
                                                    feature_layer=f"global_{pooling}_pool", label_smoothing=settings.label_smoothing)
    result = fit(
        model,
        seed_run,
        make_dataset(data.train, settings.batch_size, shuffle=True, seed=seed),
        make_dataset(data.validation, settings.batch_size, shuffle=False, seed=seed),
        state,
        first_epoch=first_epoch,
        last_epoch=last_epoch,
        precision=policy,
        cached_validation=cached_validation,
        verbose=keras_verbosity(config.training.verbose),
        tracking=tracking,
    )
    write_history(seed_run, result.epochs, policy)
    write_atomic(seed_run.model_file, lambda path: result.model.save(path))
    record_validation_predictions(config, data, seed_run, result.model, first_epoch + len(result.epochs))
    earlier_seconds = sum(record.get("seconds") or 0 for record in result.epochs[: result.resumed_epochs])
    state = replace(state, status=COMPLETE, epochs_completed=len(result.epochs),
                    wall_seconds=round(result.wall_seconds + earlier_seconds, 1), finished_at=utc_now_precise())
    state.write(seed_run.state)
    clear_checkpoint(seed_run, log)
    return state


def record_validation_predictions(config: StudyConfig, data: StudyData, seed_run: CellFolder, model, epoch: int) -> ValidationPredictions:
    """Write what `model` (a run's final weights, those that are scored) predicts for every
    validation image: the report's paired comparisons score models on the same images from it."""
    from experiments.training.fit import softmax  # loads TensorFlow: only where it is needed

    outputs = model.predict(make_dataset(data.validation, config.data.batch_size, shuffle=False, seed=0), verbose=0)
    logits = as_logits(config, seed_run.model_name, outputs)
    probabilities = softmax(logits)
    predicted = probabilities.argmax(axis=1)
    record = ValidationPredictions(
        model=seed_run.model_name, seed=seed_run.seed, epoch=epoch, files_sha256=files_digest(data.validation.files),
        class_names=list(data.class_names), labels=[int(label) for label in data.validation.labels],
        predicted=[int(guess) for guess in predicted],
        probability=[round(float(probabilities[index, guess]), 4) for index, guess in enumerate(predicted)])
    record.write(seed_run.validation_predictions)
    return record


def backfill_validation_predictions(config: StudyConfig, data: StudyData, seed_run: CellFolder) -> None:
    """A finished run from before predictions were recorded gets them from its saved model."""
    history = History.read(seed_run.history)
    if seed_run.validation_predictions.is_file() or not history or not history.epochs or not seed_run.model_file.is_file():
        return
    from experiments.models.build import load_trained_model  # loads TensorFlow: only where it is needed

    log(f"  {seed_run.label}: recording its validation predictions from the saved model")
    import_study_code(chain_root(seed_run.model_name, config.models))  # the custom layers of its own code, if any, register
    record_validation_predictions(config, data, seed_run, load_trained_model(seed_run.model_file), history.epochs[-1].epoch)


def record_unfinished(seed_run: CellFolder, expected: dict[str, str], status: str, error: str, precision: str | None) -> None:
    """Write a failed or diverged run's state: its status, the error, the epochs still committed."""
    from experiments.training.fit import load_progress  # loads TensorFlow: only where it is needed

    try:
        previous = RunState.read(seed_run.state)
    except ArtifactFormatError:
        previous = None
    if previous is not None and any(getattr(previous, key) != value for key, value in expected.items()):
        previous = None  # a state from other inputs says nothing about this attempt
    RunState(seed_run.model_name, seed_run.seed, **expected, status=status, epochs_completed=len(load_progress(seed_run)[0]),
             epochs_planned=previous.epochs_planned if previous else None, error=error,
             precision=previous.precision if previous else precision,
             started_at=previous.started_at if previous else None, finished_at=utc_now_precise()).write(seed_run.state)


def write_model_curves(config: StudyConfig, run: RunFolder, data: StudyData, model_name: str) -> None:
    """The model's curves over its finished seeds (a continuing model: with its source's leading in)."""

    runs = list(finished_runs(run, config, model_name, data.fingerprint).values())
    if not runs:
        return
    source = config.source_of(model_name)
    lead_in = list(finished_runs(run, config, source, data.fingerprint).values()) if source else None
    figures.training_curves(runs, f"{model_name}: accuracy and loss per epoch", run.figure(f"curves_{model_name}"),
                            data.majority_baseline().accuracy["validation"], lead_in=lead_in, lead_in_name=source or "")


def frozen_backbone(config: StudyConfig, model_name: str) -> bool:
    """Whether the model trains with its whole pre-trained backbone frozen: a transfer model, or
    one trained on from it (train_on) with nothing unfrozen on the way."""
    recipe = config.recipe(model_name)
    while recipe.recipe == "train_on":
        recipe = config.recipe(recipe.continues)
    return recipe.recipe == "transfer"


def strategy_scope(strategy: Any):
    """The scope of `strategy` (a tf.distribute strategy), or nothing when it is None."""
    return strategy.scope() if strategy is not None else nullcontext()


def training_decision(seed_run: CellFolder, expected: dict[str, str], force: bool,
                      since: datetime | None = None, source: str | None = None,
                      epoch_span: tuple[int, int] | None = None) -> tuple[str, str]:
    """What to do with one run (a model and a seed), read from its folder: see `decide`.
    `source`: the model it continues, if any; `epoch_span` (its first and last epoch): given, the
    checkpoint is checked, so that a resume says whether it really resumes."""
    try:
        state, history = RunState.read(seed_run.state), History.read(seed_run.history)
    except ArtifactFormatError as error:
        if not force:
            raise ArtifactFormatError(error.path, f"{error.detail}; mend or delete the file, or pass --force to train "
                                                  f"{seed_run.label} again") from None
        log(f"  {error}; --force: training {seed_run.label} again")
        state, history = None, None
    resumable = None
    if epoch_span is not None and not force and state is not None and state.status != COMPLETE:
        from experiments.training.fit import resumable_progress  # loads TensorFlow: only where it is needed

        epochs, _checkpoint, problem = resumable_progress(seed_run, epoch_span[0], epoch_span[1] - epoch_span[0])
        resumable = (len(epochs), problem)
    return decide(state, history, seed_run.model_file.is_file(), expected, force, since, seed_run.model_file.name, source,
                  resumable)


def finished_runs(run: RunFolder, config: StudyConfig, model_name: str, data_fingerprint: str) -> dict[int, list[Epoch]]:
    """The histories, by seed, of this model's finished runs with the current config and data
    (failed, diverged and unfinished runs are left out: they are never chosen or tested)."""
    runs = {}
    for seed in config.seeds:
        seed_run = run.seed_run(model_name, seed)
        history = History.read(seed_run.history)
        if finished_for(RunState.read(seed_run.state), config, model_name, data_fingerprint) and history and history.epochs:
            runs[seed] = history.epochs
    return runs
