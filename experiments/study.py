"""The study: read the data, then for each model and seed (a "cell") skip, resume or train;
choose on validation; evaluate the chosen model on the test split, once.

Several `train` processes may work on one run folder at once. Each cell has a lock
(`models/<model>/seed-<seed>/.cell.lock`): only its holder decides about the cell and trains it.
A process that finds a cell held goes on with the others and comes back to it at the end,
waiting for the holder. A cell that continues another model (finetune and its control,
transfer_extended, continue transfer) also holds the cell it starts from. Each
cell's `state.json` is the truth about it; `manifest.json` is derived from the cells' states
under the run's lock (`.manifest.lock`), which also guards choosing and testing the model.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import math
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from experiments.artifacts import (
    ArtifactFormatError,
    BaseWeights,
    CellOwner,
    Epoch,
    Execution,
    Fields,
    History,
    Manifest,
    Metrics,
    ModelEntry,
    ModelScore,
    ModelSummary,
    RunEntry,
    RunFolder,
    RunSettings,
    RunState,
    SeedRun,
    Selection,
    SkippedEntry,
    TestEvaluation,
    TestPrediction,
    ValidationPredictions,
    files_digest,
    read_regular_file,
    write_atomic,
)
from experiments.config import StudyConfig, config_hash, hashed_settings
from experiments.data import StudyData, load_study_data, make_dataset
from experiments.decisions import (  # noqa: F401  (RESUME and SETTLED: the study's vocabulary, for callers)
    CELL_STATUSES,
    COMPLETE,
    DIVERGED,
    FAILED,
    PARTIAL,
    RESTART,
    RESUME,
    SETTLED,
    SKIP,
    choose_model,
    decide,
    finished_for,
    settled_for,
)
from experiments.errors import StudyFailed, UserError
from experiments.images import summarize_skipped
from experiments.interrupts import raise_if_interrupted
from experiments.recipes import chain_root
from experiments.runtime import cpu_supports_bf16, describe_cpu_kernels, processor_name
from experiments.tracking import STATUS_LINE, StudyProgress, StudyTracking, check_tracking_packages, network_message, network_needs, tracked_cell

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tensorflow", "keras", "numpy", "pillow", "matplotlib", "jinja2", "mkdocs", "mkdocs-material")
SELECTION_RULE = ("highest mean over seeds of the last epoch's validation accuracy; within that model, the seed "
                  "with the highest; the test split is not looked at")




def log(message: str) -> None:
    with STATUS_LINE.paused():  # the progress line on a terminal stays below the messages
        print(message, file=sys.stderr, flush=True)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _now_precise() -> str:
    """Now, to the millisecond: states are compared with a command's start time."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# --------------------------------------------------------------------------- environment


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def hardware_and_devices() -> tuple[dict[str, Any], list[str]]:
    import tensorflow as tf

    devices = [device.name for device in tf.config.list_physical_devices()]
    gpus = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        gpus.append(details.get("device_name", gpu.name))
    hardware = {
        "platform": platform.platform(),
        "processor": processor_name(),
        "cpu_count": os.cpu_count(),
        "gpus": gpus,
        "cpu_kernels": describe_cpu_kernels(),
    }
    return hardware, devices


def git_commit() -> str | None:
    """HEAD of the project's repository, with "-dirty" if tracked files have changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def describe_base_weights(setting: str) -> BaseWeights:
    """manifest.base_weights: where the MobileNetV2 weights came from, and for a local file its
    sha256, so a reader can tell which weights a run used (the report's method page shows it)."""
    if setting in ("imagenet", "none"):
        return BaseWeights(setting)
    path = Path(setting)
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        sha256 = digest.hexdigest()
    except OSError:
        sha256 = None
    return BaseWeights("file", str(path), path.name, sha256)


# --------------------------------------------------------------------------- decisions


def training_decision(seed_run: SeedRun, expected: dict[str, str], force: bool,
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
        from experiments.training import resumable_progress

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


# --------------------------------------------------------------------------- steps


def write_data_figures(run: RunFolder, data: StudyData, seed: int) -> None:
    """The data grid, and what the augmentation layers of the models do to one training image."""
    import numpy as np
    from keras import layers

    from experiments import figures

    figures.data_grid(data.train.images, data.train.labels, data.class_names, run.figure("data_grid"))
    example = data.train.images[0]
    flips = [("flipped left-right", example[:, ::-1]), ("flipped upside down", example[::-1, :]),
             ("flipped both ways", example[::-1, ::-1])]
    figures.augmentation_demo(example, flips, run.figure("augmentation_flip"))
    rotate = layers.RandomRotation(0.2, seed=seed, name="demo_rotation")
    batch = np.repeat(example[None].astype(np.float32), 4, axis=0)
    rotated = np.asarray(rotate(batch, training=True))
    figures.augmentation_demo(example, [(f"rotated {index + 1}", image) for index, image in enumerate(rotated)],
                              run.figure("augmentation_rotation"))


def expected_state(config: StudyConfig, run: RunFolder, model_name: str, seed: int, data_fingerprint: str) -> dict[str, str]:
    """What a finished run must have been trained from to be reused. For a model that continues
    another (finetune, transfer_extended) that includes the run it starts from (a digest of its
    history file)."""
    expected = {"config_hash": config_hash(config, model_name), "data_fingerprint": data_fingerprint}
    source = config.source_of(model_name)
    if source is not None:
        source_history = run.seed_run(source, seed).history
        try:
            expected["starting_point"] = hashlib.sha256(read_regular_file(source_history)).hexdigest()
        except OSError:  # missing, or a pipe or folder in its place: no starting point to train from
            expected["starting_point"] = "missing"
    return expected


def build_for_training(config: StudyConfig, run: RunFolder, data: StudyData, model_name: str, seed: int):
    """The compiled model to train, and its first and last epoch numbers (0-based start)."""
    from experiments.models import build_model, compile_model, load_trained_model, make_finetune_model

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
    if recipe.recipe == "train_on":
        # the budget-matched control: the saved model as it is (frozen backbone, same optimizer,
        # learning rate and optimizer state), trained on for its epochs
        return load_trained_model(source_file), first_epoch, last_epoch
    from_layer = training.finetune_from_layer if recipe.unfreeze_from_layer is None else recipe.unfreeze_from_layer
    model = make_finetune_model(load_trained_model(source_file), from_layer, model_name)
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


def train_one(config: StudyConfig, run: RunFolder, data: StudyData, seed_run: SeedRun, precision: str,
              expected: dict[str, str], on_started: Callable[[], None] | None = None,
              tracking: StudyTracking | None = None, strategy: Any = None) -> RunState:
    """Build (or continue), compile and fit one model for one seed; write its history, state,
    model file and its model's summary. The caller holds the cell's lock.

    state.json holds everything the manifest says about the run (status, wall_seconds,
    epochs_completed, error, precision); `on_started` is called once it says "partial".
    `strategy` (a tf.distribute strategy, or None): the model is built, loaded, compiled and
    fitted in its scope. Raises TrainingDiverged (experiments.training) when the loss stops
    being finite."""
    import keras

    STATUS_LINE.release()  # Keras prints the epochs from here on
    keras.backend.clear_session()  # before the strategy's scope: it resets the graph the scope lives in
    with strategy_scope(strategy):
        return _train_one(config, run, data, seed_run, precision, expected, on_started, tracking)


def _train_one(config: StudyConfig, run: RunFolder, data: StudyData, seed_run: SeedRun, precision: str,
               expected: dict[str, str], on_started: Callable[[], None] | None,
               tracking: StudyTracking | None) -> RunState:
    import keras

    from experiments.models import describe_model, set_precision
    from experiments.training import CachedFeatureValidation, clear_checkpoint, fit, keras_verbosity, resumable_progress, write_history

    model_name, seed = seed_run.model_name, seed_run.seed
    policy = set_precision(precision)
    keras.utils.set_random_seed(seed)
    model, first_epoch, last_epoch = build_for_training(config, run, data, model_name, seed)
    settings = config.training_settings(model_name)
    ModelSummary.from_fields(Fields(describe_model(model, config.recipe(model_name), settings),
                                    run.summary(model_name))).write(run.summary(model_name))
    earlier_epochs, _, _ = resumable_progress(seed_run, first_epoch, last_epoch - first_epoch)
    state = RunState(model_name, seed, **expected, status=PARTIAL, epochs_completed=len(earlier_epochs),
                     epochs_planned=last_epoch - first_epoch, precision=policy, started_at=_now_precise())
    state.write(seed_run.state)
    if on_started is not None:
        on_started()
    cached_validation = None
    if frozen_backbone(config, model_name) and config.training.validation_feature_cache:
        pooling = chain_root(model_name, config.models).pooling  # a train_on model has its transfer model's layers
        cached_validation = CachedFeatureValidation(data.validation.images, data.validation.labels, config.data.batch_size,
                                                    feature_layer=f"global_{pooling}_pool")
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
                    wall_seconds=round(result.wall_seconds + earlier_seconds, 1), finished_at=_now_precise())
    state.write(seed_run.state)
    clear_checkpoint(seed_run, log)
    return state


def record_validation_predictions(config: StudyConfig, data: StudyData, seed_run: SeedRun, model, epoch: int) -> ValidationPredictions:
    """Write what `model` (a run's final weights, those that are scored) predicts for every
    validation image: the report's paired comparisons score models on the same images from it."""
    from experiments.training import softmax

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


def backfill_validation_predictions(config: StudyConfig, data: StudyData, seed_run: SeedRun) -> None:
    """A finished run from before predictions were recorded gets them from its saved model."""
    from experiments.models import load_trained_model

    history = History.read(seed_run.history)
    if seed_run.validation_predictions.is_file() or not history or not history.epochs or not seed_run.model_file.is_file():
        return
    log(f"  {seed_run.label}: recording its validation predictions from the saved model")
    record_validation_predictions(config, data, seed_run, load_trained_model(seed_run.model_file), history.epochs[-1].epoch)


def record_unfinished(seed_run: SeedRun, expected: dict[str, str], status: str, error: str, precision: str | None) -> None:
    """Write a failed or diverged run's state: its status, the error, the epochs still committed."""
    from experiments.training import load_progress

    try:
        previous = RunState.read(seed_run.state)
    except ArtifactFormatError:
        previous = None
    if previous is not None and any(getattr(previous, key) != value for key, value in expected.items()):
        previous = None  # a state from other inputs says nothing about this attempt
    RunState(seed_run.model_name, seed_run.seed, **expected, status=status, epochs_completed=len(load_progress(seed_run)[0]),
             epochs_planned=previous.epochs_planned if previous else None, error=error,
             precision=previous.precision if previous else precision,
             started_at=previous.started_at if previous else None, finished_at=_now_precise()).write(seed_run.state)


def write_model_curves(config: StudyConfig, run: RunFolder, data: StudyData, model_name: str) -> None:
    """The model's curves over its finished seeds (a continuing model: with its source's leading in)."""
    from experiments import figures

    runs = list(finished_runs(run, config, model_name, data.fingerprint).values())
    if not runs:
        return
    source = config.source_of(model_name)
    lead_in = list(finished_runs(run, config, source, data.fingerprint).values()) if source else None
    figures.training_curves(runs, f"{model_name}: accuracy and loss per epoch", run.figure(f"curves_{model_name}"),
                            data.majority_baseline().accuracy["validation"], lead_in=lead_in, lead_in_name=source or "")


def evaluate_on_test(config: StudyConfig, run: RunFolder, data: StudyData, chosen: str, seed: int) -> TestEvaluation:
    """Evaluate the chosen model's saved weights on the test split: the one look at test."""
    import numpy as np

    from experiments.models import load_trained_model
    from experiments.training import softmax

    model_path = run.seed_run(chosen, seed).model_file
    if not model_path.is_file():
        raise StudyFailed(
            f"the chosen model's file {model_path} is missing, so it cannot be evaluated on the test split; "
            "run again with --force to retrain it"
        )
    if config.recipe(chosen).recipe == "keras":  # its custom layers, if any, register as it is imported
        from experiments.builders import load_builder

        load_builder(config.recipe(chosen))
    model = load_trained_model(model_path)
    test_dataset = make_dataset(data.test, config.data.batch_size, shuffle=False, seed=0)
    loss, _ = model.evaluate(test_dataset, verbose=0)
    logits = as_logits(config, chosen, model.predict(test_dataset, verbose=0))
    probabilities = softmax(logits)
    predicted = np.argmax(probabilities, axis=1)
    class_count = len(data.class_names)
    confusion = np.zeros((class_count, class_count), dtype=int)
    np.add.at(confusion, (data.test.labels, predicted), 1)
    correct = int(np.trace(confusion))
    total = len(data.test)
    predictions = [
        TestPrediction(name, data.class_names[int(label)], data.class_names[int(guess)], round(float(probability[guess]), 4))
        for name, label, guess, probability in zip(data.test.files, data.test.labels, predicted, probabilities)
    ]
    return TestEvaluation(chosen, seed, float(loss), correct / total if total else None, correct, total,
                          list(data.class_names), confusion.tolist(), predictions)


def write_misclassified_figure(run: RunFolder, data: StudyData, test: TestEvaluation) -> None:
    """Up to twelve test images the chosen model got wrong, from the test record's predictions."""
    from experiments import figures

    row_of = {name: index for index, name in enumerate(data.test.files)}
    wrong = [item for item in test.predictions if item.label != item.predicted and item.file in row_of]
    figures.misclassified(
        data.test.images[[row_of[item.file] for item in wrong]],
        [f"{item.label} as {item.predicted}\n(p = {item.probability:.2f})" for item in wrong],
        run.figure("misclassified_test"),
    )
    if test.confusion_matrix:  # the report shows it in place of a table when there are many classes
        figures.confusion_heatmap(test.confusion_matrix, list(data.class_names), run.figure("confusion_test"))


def _mean(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.fmean(present) if present else None


def _file_digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(read_regular_file(path)).hexdigest()
    except OSError:
        return None


def select_and_test(config: StudyConfig, run: RunFolder, data: StudyData) -> Metrics | None:
    """Choose on validation among the finished runs and evaluate the choice on test, once;
    write metrics.json. Call it holding the run lock (see `run_lock`): two processes must not
    evaluate at once. The test score is reused while the chosen run's history (so its training)
    is the one it was computed for, whichever process trained it."""
    runs_by_model = {name: runs for name in config.study.models if (runs := finished_runs(run, config, name, data.fingerprint))}
    chosen, chosen_seed, candidates, seed_candidates = choose_model(runs_by_model)
    if chosen is None:
        log("No model finished; nothing to evaluate on the test split.")
        return None
    study_hash = config_hash(config)
    chosen_history = _file_digest(run.seed_run(chosen, chosen_seed).history)
    previous = _readable(Metrics, run.metrics)
    if (
        previous is not None
        and previous.chosen_model == chosen
        and previous.chosen_seed == chosen_seed
        and previous.config_hash == study_hash
        and previous.data_fingerprint == data.fingerprint
        and chosen_history is not None
        and previous.chosen_history_sha256 == chosen_history
        and previous.test is not None
    ):
        test = previous.test
        log(f"Test score of {chosen} (seed {chosen_seed}) is unchanged since the last run; not evaluating again.")
    else:
        log(f"Chosen on validation: {chosen} (mean {candidates[chosen]:.3f} over {len(runs_by_model[chosen])} seed(s)), "
            f"seed {chosen_seed}. Evaluating it on the test split, once.")
        test = evaluate_on_test(config, run, data, chosen, chosen_seed)
    write_misclassified_figure(run, data, test)
    metrics = Metrics(
        config_hash=study_hash,
        data_fingerprint=data.fingerprint,
        selection=Selection("val_accuracy", SELECTION_RULE, candidates, seed_candidates),
        chosen_model=chosen,
        chosen_seed=chosen_seed,
        chosen_history_sha256=chosen_history,
        test=test,
        validation={
            name: ModelScore(_mean([epochs[-1].val_loss for epochs in runs.values()]),
                             _mean([epochs[-1].val_accuracy for epochs in runs.values()]))
            for name, runs in runs_by_model.items()
        },
    )
    metrics.write(run.metrics)
    from experiments import figures

    figures.comparison({name: list(runs.values()) for name, runs in runs_by_model.items()}, run.figure("comparison"),
                       data.majority_baseline().accuracy["validation"])
    return metrics


# --------------------------------------------------------------------------- the study


def preflight(config: StudyConfig) -> None:
    """Checks that can fail fast, before data is read or anything trained; then one message with
    every network need of the run, before anything downloads."""
    check_tracking_packages(config)
    message = network_message(network_needs(config))
    if message:
        log(message)
    from experiments.backbones import backbone_named, check_backbone_weights

    checked = set()
    for model_name in config.study.models:
        recipe = config.recipe(model_name)
        weights = config.weights_of(model_name)
        if recipe.recipe != "transfer" or weights == "none" or (recipe.backbone, weights) in checked:
            continue
        check_backbone_weights(backbone_named(recipe.backbone, f"models.{model_name}.backbone"), config.image_size, weights, model_name)
        checked.add((recipe.backbone, weights))
    for model_name in config.study.models:  # a finetune model's layer to unfreeze from is one of its backbone's
        recipe = config.recipe(model_name)
        if recipe.recipe == "finetune":
            from experiments.backbones import check_unfreeze_layer
            from experiments.recipes import backbone_of

            from_layer = config.training.finetune_from_layer if recipe.unfreeze_from_layer is None else recipe.unfreeze_from_layer
            key = f"models.{model_name}.unfreeze_from_layer" if recipe.unfreeze_from_layer is not None else "training.finetune_from_layer"
            check_unfreeze_layer(backbone_named(backbone_of(model_name, config.models), key), from_layer, key)


def check_builders(config: StudyConfig, image_size: tuple[int, int], class_count: int) -> None:
    """Build every model of the study's own code once (experiments.builders.check_builders)."""
    if any(config.recipe(name).recipe == "keras" for name in config.study.models):
        from experiments.builders import check_builders as check

        log("Checking the builders of the study's own models...")
        check(config, image_size, class_count)


def frozen_backbone(config: StudyConfig, model_name: str) -> bool:
    """Whether the model trains with its whole pre-trained backbone frozen: a transfer model, or
    one trained on from it (train_on) with nothing unfrozen on the way."""
    recipe = config.recipe(model_name)
    while recipe.recipe == "train_on":
        recipe = config.recipe(recipe.continues)
    return recipe.recipe == "transfer"


def set_determinism(enabled: bool) -> None:
    """TensorFlow op determinism (with the per-run seeds): identical histories on one machine."""
    import tensorflow as tf

    if enabled:
        tf.config.experimental.enable_op_determinism()


# --------------------------------------------------------------------------- locks


LOCK_POLL_SECONDS = 0.5


def _acquire(lock: FileLock, interruptible: bool = True, timeout: float | None = None) -> bool:
    """Block until `lock` is held; between tries a recorded Ctrl-C / SIGTERM stops the wait.
    With `timeout`, give up after that many seconds (returns False)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            lock.acquire(timeout=LOCK_POLL_SECONDS if deadline is None else max(0.0, min(LOCK_POLL_SECONDS, deadline - time.monotonic())))
            return True
        except Timeout:
            if interruptible:
                raise_if_interrupted()
            if deadline is not None and time.monotonic() >= deadline:
                return False


@contextmanager
def run_lock(run: RunFolder, interruptible: bool = True, timeout: float | None = None) -> Iterator[bool]:
    """Hold the run's lock (`<run>/.manifest.lock`): for writing manifest.json and for choosing
    and testing the model. Yields whether it is held (False only after `timeout` seconds)."""
    run.root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(run.lock_file))
    held = _acquire(lock, interruptible, timeout)
    try:
        yield held
    finally:
        if held:
            lock.release()


class CellLock:
    """One process at a time decides about a cell (a model and a seed) and trains it.

    An exclusive lock on `<cell>/.cell.lock` (flock, through filelock: the kernel drops it when the
    holder dies, even by SIGKILL); `<cell>/.cell.owner.json` says who holds it, for the messages
    of the processes that find it held."""

    def __init__(self, seed_run: SeedRun):
        self.seed_run = seed_run
        seed_run.folder.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(seed_run.lock_file))

    def try_acquire(self, task: str) -> bool:
        """Take the lock if nobody holds it; `task` says what for (shown to the others)."""
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            return False
        self._claim(task)
        return True

    def acquire(self, task: str) -> None:
        """Wait for the lock (a Ctrl-C or SIGTERM still stops the wait)."""
        _acquire(self._lock)
        self._claim(task)

    def _claim(self, task: str) -> None:
        try:
            CellOwner(os.getpid(), socket.gethostname(), task, _now()).write(self.seed_run.owner_file)
        except BaseException:
            self._lock.release()
            raise

    def release(self) -> None:
        try:
            self.seed_run.owner_file.unlink(missing_ok=True)
        finally:
            self._lock.release()

    def holder(self) -> tuple[str, str]:
        """Who holds the lock, and what for, in words: ("another process (pid 123)", "training transfer, seed 7")."""
        owner = CellOwner.read_or_none(self.seed_run.owner_file)
        if owner is None:
            return "another process", f"training {self.seed_run.model_name}, seed {self.seed_run.seed}"
        where = f" on {owner.host}" if owner.host != socket.gethostname() else ""
        return f"another process (pid {owner.pid}{where})", owner.task


def _differences(theirs: dict[str, Any], ours: dict[str, Any], shown: int = 3) -> str:
    keys = sorted(key for key in theirs.keys() | ours.keys() if theirs.get(key, "unset") != ours.get(key, "unset"))
    text = ", ".join(f"{key}: {json_text(theirs.get(key, 'unset'))} there, {json_text(ours.get(key, 'unset'))} here"
                     for key in keys[:shown])
    return text + (f" and {len(keys) - shown} more" if len(keys) > shown else "")


def json_text(value: Any) -> str:
    import json

    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 40 else text[:37] + "..."


@contextmanager
def hold_run_settings(run: RunFolder, config: StudyConfig) -> Iterator[None]:
    """Join the `train` commands working on `run` with the same settings, or refuse: a run never
    mixes two configs (cells trained with one would be retrained by the other, back and forth).

    Every command working on a run holds a shared flock on `<run>/.run.users` until it ends (the
    kernel drops it when the process dies, even by SIGKILL). Under the guard `<run>/.run.lock`, a
    command that can take that lock exclusively is alone: it records its settings in
    `<run>/.run.settings.json` (RunSettings) and holds the lock shared. Otherwise others are working
    on the run: with the recorded config hash it joins them; with another it stops with a
    UserError naming what differs. Where flock is missing (not POSIX) nothing is checked."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    run.root.mkdir(parents=True, exist_ok=True)
    mine = RunSettings(config_hash(config), hashed_settings(config), os.getpid(), socket.gethostname(), _now())
    guard = FileLock(str(run.settings_guard))
    _acquire(guard)
    descriptor = None
    try:
        descriptor = os.open(run.users_file, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            alone = True
        except BlockingIOError:
            alone = False
        if alone:
            mine.write(run.settings_file)
        else:
            theirs = RunSettings.read_or_none(run.settings_file)
            if theirs is not None and theirs.config_hash != mine.config_hash:
                where = f" on {theirs.host}" if theirs.host != mine.host else ""
                raise UserError(
                    f"Another `train` command (pid {theirs.pid}{where}) is working on {run.root} with other settings "
                    f"({_differences(theirs.settings, mine.settings)}; config hash {theirs.config_hash[:12]} there, "
                    f"{mine.config_hash[:12]} here), and one run never mixes two; wait for it to finish, or give this "
                    "command another --run-name."
                )
        fcntl.flock(descriptor, fcntl.LOCK_SH)  # alone: held exclusively until now, under the guard
    except BaseException:
        if descriptor is not None:
            os.close(descriptor)
        raise
    finally:
        guard.release()
    try:
        yield
    finally:
        os.close(descriptor)  # drops the shared lock


# --------------------------------------------------------------------------- the manifest, derived from the cells


def run_entry(state: RunState) -> RunEntry:
    """manifest.models[<model>].runs[<seed>], from the cell's state."""
    status = state.status if state.status in CELL_STATUSES else PARTIAL
    return RunEntry(status, state.wall_seconds, state.epochs_completed, state.error)


def aggregate_model_entry(precision: str | None, runs: dict[str, RunEntry], planned_runs: int | None = None) -> ModelEntry:
    """manifest.models[<model>]: its runs, and their totals. `complete` only when every planned
    run is; `failed` when any failed; `diverged` when any diverged and none failed."""
    statuses = [entry.status for entry in runs.values()]
    planned = len(runs) if planned_runs is None else planned_runs
    if FAILED in statuses:
        status = FAILED
    elif DIVERGED in statuses:
        status = DIVERGED
    elif statuses and len(statuses) >= planned and all(s == COMPLETE for s in statuses):
        status = COMPLETE
    else:
        status = PARTIAL
    seconds = [entry.wall_seconds for entry in runs.values()]
    errors = [f"seed {seed}: {entry.error}" for seed, entry in runs.items() if entry.error]
    return ModelEntry(
        status=status,
        wall_seconds=round(sum(seconds), 1) if seconds and all(value is not None for value in seconds) else None,
        epochs_completed=sum(entry.epochs_completed or 0 for entry in runs.values()),
        error="; ".join(errors) or None,
        precision=precision,
        runs=runs,
    )


def derive_models(run: RunFolder, config: StudyConfig, data_fingerprint: str | None) -> tuple[dict[str, ModelEntry], list[str]]:
    """manifest.models, read fresh from every planned cell's state.json, and every planned
    cell's status ("not_run" for a cell with no state for this config and data).

    A state written for another config (or other data, when `data_fingerprint` is given) is not
    this study's: the cell counts as not run."""
    models: dict[str, ModelEntry] = {}
    statuses: list[str] = []
    for model_name in config.study.models:
        runs: dict[str, RunEntry] = {}
        precisions: set[str] = set()
        for seed in config.seeds:
            state = RunState.read_or_none(run.seed_run(model_name, seed).state)  # a bad one: the cell's turn says so
            if not settled_for(state, config, model_name, data_fingerprint):
                statuses.append("not_run")
                continue
            runs[str(seed)] = run_entry(state)
            statuses.append(runs[str(seed)].status)
            if state.precision:
                precisions.add(state.precision)
        if runs:
            models[model_name] = aggregate_model_entry(", ".join(sorted(precisions)) or None, runs, len(config.seeds))
    return models, statuses


def study_status(statuses: list[str], phase: str, previous_status: object = None) -> str:
    """The manifest's top-level status from the cells' statuses and what this process is doing:
    "running" (training), "interrupted" (stopped by a signal or an error), "finished" (done with
    every cell) or "healing" (a command's first look at an existing manifest)."""
    if phase == "running":
        return "running"
    if phase == "interrupted":
        return "interrupted"  # the study (and its one test evaluation) did not run to its end
    if statuses and all(status == COMPLETE for status in statuses):
        return "complete"
    if any(status in (FAILED, DIVERGED) for status in statuses):
        return "failed"
    if phase == "healing" and previous_status in ("running", "interrupted"):
        return str(previous_status)
    return "interrupted" if phase == "healing" else "failed"


def write_manifest(run: RunFolder, config: StudyConfig, phase: str, header: Manifest | None = None,
                   data_fingerprint: str | None = None) -> Manifest | None:
    """Write manifest.json: `header` (what this process knows: config, versions, ...) with
    `models` and `status` derived from the cells' states, read under the run lock, so the
    manifest never contradicts them whichever process writes last. Without `header` the existing
    manifest is healed: its models and status are derived again (nothing is written if there is
    none). Returns what was written."""
    if header is None and not run.manifest.is_file():
        return None
    interruptible = phase != "interrupted"
    with run_lock(run, interruptible=interruptible, timeout=None if interruptible else 10.0) as held:
        if not held:
            log(f"  could not take {run.lock_file.name} within 10 s; {run.manifest.name} not updated")
            return None
        previous = _readable(Manifest, run.manifest)
        if header is None:
            if previous is None:
                return None
            header = replace(previous, run_name=config.study.run_name, config=config.to_dict(),
                             config_hash=config_hash(config), seeds=config.seeds)
            if data_fingerprint is None:
                data_fingerprint = previous.data_fingerprint
        models, statuses = derive_models(run, config, data_fingerprint)
        manifest = replace(header, status=study_status(statuses, phase, previous.status if previous else None), models=models)
        manifest.write(run.manifest)
        return manifest


class ManifestWriter:
    """One process's manifest.json: its header (set once the data is read: `start`) with the
    cells' states, written again by `refresh`; `finish` stamps the end time and wall seconds.
    Inside `until_interrupted()`, any exception first writes the manifest as "interrupted"."""

    def __init__(self, run: RunFolder, config: StudyConfig, started: float):
        self.run, self.config, self.started = run, config, started  # started: time.perf_counter() at the command's start
        self.header: Manifest | None = None

    def start(self, header: Manifest) -> None:
        self.header = header
        self.refresh()

    def refresh(self, phase: str = "running") -> None:
        if self.header is not None:
            write_manifest(self.run, self.config, phase, self.header, self.header.data_fingerprint)

    def finish(self, phase: str) -> None:
        if self.header is not None:
            self.header = replace(self.header, finished_at=_now(), wall_seconds=round(time.perf_counter() - self.started, 1))
        self.refresh(phase)

    @contextmanager
    def until_interrupted(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            if self.header is not None:
                self.header = replace(self.header, finished_at=_now())
            try:
                self.refresh("interrupted")
            except (OSError, UserError):  # the stop, not a file that cannot be written or read, is what to report
                pass
            raise


def _readable(record: type, path: Path) -> Any:
    """The record at `path`, or None when it is missing or no longer reads (this process
    rewrites it from the cells' states, which are the truth; the message says so)."""
    try:
        return record.read(path)
    except ArtifactFormatError as error:
        log(f"  {error}; this command derives it again")
        return None


# --------------------------------------------------------------------------- one cell


DEFERRED, SKIPPED = "deferred", "skipped"


@dataclass
class CellContext:
    """What any process or worker needs to run cells of one study."""

    run: RunFolder
    config: StudyConfig
    data: StudyData
    force: bool = False
    since: datetime | None = None  # when this command started (see training_decision)
    gpu_available: bool = False
    bf16_cpu: bool = False
    on_started: Callable[[], None] | None = None  # called when a cell starts training (state "partial")
    tracking: StudyTracking | None = None  # TensorBoard and MLflow, when the config asks for them
    # a tf.distribute strategy (--strategy mirrored): every cell is built, compiled and fitted in
    # its scope; one per process (experiments.scale.make_strategy)
    strategy: Any = None


@dataclass
class CellOutcome:
    """What became of one cell in this process: SKIPPED, DEFERRED (held elsewhere: come back to
    it), COMPLETE (trained here), FAILED or DIVERGED (`error` says why)."""

    model_name: str
    seed: int
    status: str
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.model_name} (seed {self.seed})"


def run_cell(context: CellContext, model_name: str, seed: int, *, wait: bool = False,
             coming_back: Collection[tuple[str, int]] = (), where: str | None = None) -> CellOutcome:
    """Run one cell, holding its lock (and, for a continuing model, the lock of the cell it starts
    from): skip it if finished, else resume or train it; a failure or a diverging loss is written
    into its state and returned, not raised.

    If another process holds a lock: without `wait`, return DEFERRED at once; with `wait`, wait
    for it and decide then (normally: skipped, finished). `coming_back` lists the cells this
    process will come back to: a continuing cell whose source cell is among them is deferred."""
    run = context.run
    where = where or f"{model_name}, seed {seed}"
    seed_run = run.seed_run(model_name, seed)
    source = context.config.source_of(model_name)
    locks: list[tuple[CellLock, str]] = []
    if source:
        locks.append((CellLock(run.seed_run(source, seed)), f"training {model_name}, seed {seed}, which starts from {source}, seed {seed}"))
    locks.append((CellLock(seed_run), f"training {model_name}, seed {seed}"))
    held: list[CellLock] = []
    try:
        for lock, task in locks:
            if not lock.try_acquire(task):
                who, their_task = lock.holder()
                if not wait:
                    if lock.seed_run is seed_run:
                        log(f"{where}: held by {who}; coming back to it")
                    else:
                        log(f"{where}: starts from {source}, seed {seed}, which {who} holds; coming back to it")
                    return CellOutcome(model_name, seed, DEFERRED)
                log(f"{where}: waiting for {who} that is {their_task}")
                lock.acquire(task)
            held.append(lock)
        return _run_held_cell(context, seed_run, where, coming_back)
    finally:
        for lock in reversed(held):
            lock.release()


def _run_held_cell(context: CellContext, seed_run: SeedRun, where: str, coming_back: Collection[tuple[str, int]]) -> CellOutcome:
    from experiments.recipes import POLICIES, precision_for
    from experiments.training import TrainingDiverged, clear_checkpoint

    run, config, data = context.run, context.config, context.data
    model_name, seed = seed_run.model_name, seed_run.seed
    expected = expected_state(config, run, model_name, seed, data.fingerprint)
    source = config.source_of(model_name)
    if source:
        source_state = RunState.read(run.seed_run(source, seed).state)
        if not finished_for(source_state, config, source, data.fingerprint):
            if (source, seed) in coming_back:
                log(f"{where}: starts from {source}, seed {seed}, which is not finished yet; coming back to it")
                return CellOutcome(model_name, seed, DEFERRED)
            status = source_state.status if source_state is not None else "not trained"
            message = f"it starts from {source}, seed {seed}, which did not finish ({status})"
            log(f"{where}: not trained: {message}")
            record_unfinished(seed_run, expected, FAILED, message, None)
            return CellOutcome(model_name, seed, FAILED, message)
    action, reason = training_decision(seed_run, expected, context.force, context.since, source,
                                       config.epoch_span(model_name))
    if action == SKIP:
        log(f"{where}: skipped, {reason}")
        backfill_validation_predictions(config, data, seed_run)
        if context.tracking is not None:
            context.tracking.cell_skipped(seed_run)
        return CellOutcome(model_name, seed, SKIPPED)
    if action == SETTLED:
        state = RunState.read(seed_run.state)
        log(f"{where}: {reason}")
        return CellOutcome(model_name, seed, state.status if state else FAILED, state.error if state else None)
    precision = precision_for(config.recipe(model_name), config.training.mixed_precision, context.gpu_available, context.bf16_cpu)
    log(f"{where}: training in {POLICIES[precision]}, {reason}")
    if action == RESTART:
        clear_checkpoint(seed_run, log)
    try:
        with tracked_cell(context.tracking, seed_run):  # MLflow: the cell's run ends finished, failed or killed
            train_one(config, run, data, seed_run, precision, expected, context.on_started, context.tracking, context.strategy)
    except (KeyboardInterrupt, SystemExit, OSError):
        raise
    except TrainingDiverged as error:
        message = str(error)
        log(f"  {seed_run.label} diverged: {message}; stopped it, going on with the others")
        record_unfinished(seed_run, expected, DIVERGED, message, POLICIES[precision])
        return CellOutcome(model_name, seed, DIVERGED, message)
    except Exception as error:  # one run failing must not lose the others
        message = str(error) if isinstance(error, UserError) else \
            f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        log(f"  {seed_run.label} failed: {message}")
        record_unfinished(seed_run, expected, FAILED, message, POLICIES[precision])
        return CellOutcome(model_name, seed, FAILED, message)
    return CellOutcome(model_name, seed, COMPLETE)


def strategy_scope(strategy: Any):
    """The scope of `strategy` (a tf.distribute strategy), or nothing when it is None."""
    return strategy.scope() if strategy is not None else nullcontext()


# --------------------------------------------------------------------------- the study


def study_header(config: StudyConfig, data: StudyData) -> Manifest:
    """What manifest.json says about the run besides its cells: config, data, versions, hardware."""
    hardware, devices = hardware_and_devices()
    return Manifest(
        run_name=config.study.run_name,
        config=config.to_dict(),
        config_hash=config_hash(config),
        data_fingerprint=data.fingerprint,
        data_source=data.source,
        skipped_files=[SkippedEntry(item.path, item.reason) for item in data.skipped],
        base_weights=describe_base_weights(config.training.base_weights),
        versions=package_versions(),
        devices=devices,
        hardware=hardware,
        git_commit=git_commit(),
        started_at=_now(),
        status="running",
        seeds=config.seeds,
    )


def study_cells(config: StudyConfig) -> list[tuple[str, int]]:
    """Every planned cell, in study order: model by model, seed by seed."""
    return [(model_name, seed) for model_name in config.study.models for seed in config.seeds]


def unsettled_cells(run: RunFolder, config: StudyConfig, data_fingerprint: str) -> list[tuple[str, int]]:
    """The planned cells whose state.json does not say complete, failed or diverged for this
    config and data: not trained yet, being trained, or left unfinished by a process that died."""
    left = []
    for model_name, seed in study_cells(config):
        state = RunState.read(run.seed_run(model_name, seed).state)
        if not settled_for(state, config, model_name, data_fingerprint) or state.status not in (COMPLETE, FAILED, DIVERGED):
            left.append((model_name, seed))
    return left


def finish_study(config: StudyConfig, run: RunFolder, data: StudyData) -> bool:
    """For a process that ran a share of the cells (a job-array task, the worker that finishes a
    scaled run): under the run lock, if every planned cell has settled, write every model's curves,
    choose on validation and test once (see `select_and_test`) and return True; else say what is
    left to the others and return False."""
    from experiments.models import set_precision

    set_precision("none")
    with run_lock(run):
        left = unsettled_cells(run, config, data.fingerprint)
        if left:
            shown = ", ".join(f"{name} (seed {seed})" for name, seed in left[:6]) + (", ..." if len(left) > 6 else "")
            log(f"{len(left)} cell(s) not finished yet: {shown}. The process that finishes the last cell "
                "chooses the model and tests it; a task that died leaves its cells for the same command to resume.")
            return False
        for model_name in config.study.models:
            write_model_curves(config, run, data, model_name)
        select_and_test(config, run, data)
        return True


def run_study(config: StudyConfig, force: bool = False, *, share: Collection[tuple[str, int]] | None = None,
              strategy: str = "none", execution: Execution | None = None, parallel: int = 1) -> RunFolder:
    """Run the configured study into `<out_dir>/<run_name>/` and return the run folder.

    Other `train` processes may work on the same run at the same time: cells one of them holds
    are left to it and waited for at the end (see `run_cell`). They must share its settings: one
    with another config hash is refused while this one works (`hold_run_settings`).

    `share`: run only these cells (a job-array task's share, experiments.scale.task_share); the
    model is chosen and tested only if every planned cell has then settled (`finish_study`), by
    whichever task finds that. `strategy` ("none", "mirrored"): a tf.distribute strategy around
    every cell (experiments.scale.make_strategy). `execution` goes into manifest.json as it is;
    `parallel` (how many processes share the study) only scales the progress line's estimate."""
    run = RunFolder(config.run_dir)
    run.claim()  # a folder that is not a run of ours is refused before anything is written
    with hold_run_settings(run, config):  # a command with other settings is refused while this one works
        return _run_study(run, config, force, share=share, strategy=strategy, execution=execution, parallel=parallel)


def _run_study(run: RunFolder, config: StudyConfig, force: bool, *, share: Collection[tuple[str, int]] | None,
               strategy: str, execution: Execution | None, parallel: int) -> RunFolder:
    import keras
    import tensorflow as tf

    from experiments.models import set_precision

    run.check_writable()
    since = datetime.now(UTC)
    started = time.perf_counter()
    write_manifest(run, config, "healing")  # a manifest a crash left stale agrees with the cells again
    set_determinism(config.training.deterministic)
    preflight(config)
    tracking = StudyTracking.for_config(config, run.root)
    log(f"Reading data ({config.data.source})...")
    data = load_study_data(config)
    raise_if_interrupted()
    if data.skipped:
        log(f"  {summarize_skipped(data.skipped)} (listed in {run.dataset})")
    log(f"  {len(data.train)} train, {len(data.validation)} validation, {len(data.test)} test images; classes: {', '.join(data.class_names)}")
    check_builders(config, data.image_size, len(data.class_names))  # the study's own code, before any training
    data.describe().write(run.dataset)
    write_data_figures(run, data, config.study.seed)
    manifest = ManifestWriter(run, config, started)
    manifest.start(replace(study_header(config, data), execution=execution))
    distribute = None
    if strategy != "none":
        from experiments.scale import make_strategy

        distribute = make_strategy(strategy)
    context = CellContext(run, config, data, force=force, since=since,
                          gpu_available=bool(tf.config.list_physical_devices("GPU")), bf16_cpu=cpu_supports_bf16(),
                          on_started=manifest.refresh, tracking=tracking, strategy=distribute)
    failures: dict[str, str] = {}
    cells = study_cells(config)
    if share is not None:
        from experiments.scale import CensusProgress

        cells = [cell for cell in cells if cell in set(share)]
        progress: Any = CensusProgress(run, config, data.fingerprint, since, started, parallel=parallel)
    else:
        progress = StudyProgress(cells, started)

    def settle(outcome: CellOutcome, cell_started: float) -> None:
        if outcome.status in (FAILED, DIVERGED):
            failures[outcome.label] = outcome.error or outcome.status
        manifest.refresh()
        progress.cell_done(outcome.model_name, outcome.seed,
                           time.perf_counter() - cell_started if outcome.status == COMPLETE else None)

    finished = True
    try:
        with manifest.until_interrupted():
            deferred: list[tuple[str, int]] = []
            for step, (model_name, seed) in enumerate(cells, 1):
                raise_if_interrupted()
                cell_started = time.perf_counter()
                outcome = run_cell(context, model_name, seed, coming_back=deferred,
                                   where=f"[{step}/{len(cells)}] {model_name}, seed {seed}")
                if outcome.status == DEFERRED:
                    deferred.append((model_name, seed))
                    continue
                settle(outcome, cell_started)
                if share is None and seed == config.seeds[-1] and not any(name == model_name for name, _ in deferred):
                    write_model_curves(config, run, data, model_name)
            for index, (model_name, seed) in enumerate(deferred):
                raise_if_interrupted()
                cell_started = time.perf_counter()
                outcome = run_cell(context, model_name, seed, wait=True, coming_back=deferred[index + 1:],
                                   where=f"[{cells.index((model_name, seed)) + 1}/{len(cells)}] {model_name}, seed {seed} (back to it)")
                settle(outcome, cell_started)
            raise_if_interrupted()
            if share is None:
                for model_name in dict.fromkeys(name for name, _ in deferred):
                    write_model_curves(config, run, data, model_name)
                set_precision("none")
                with run_lock(run):
                    select_and_test(config, run, data)
            else:
                finished = finish_study(config, run, data)
    finally:
        STATUS_LINE.release()
        keras.backend.clear_session()
    manifest.finish("finished" if finished else "running")  # "running": other tasks still have cells
    if failures:
        raise StudyFailed(f"{len(failures)} run(s) failed: " + "; ".join(f"{name}: {message}" for name, message in failures.items()))
    return run
