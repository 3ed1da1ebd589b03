"""One cell (a model and a seed) in any process: hold its lock, decide to skip, resume or train, and report what became of it."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from experiments.artifacts.cell_records import RunState
from experiments.artifacts.folders import CellFolder, RunFolder
from experiments.config import StudyConfig
from experiments.console import log
from experiments.data.loading import StudyData
from experiments.errors import UserError
from experiments.models.recipes import POLICIES, precision_for
from experiments.runtime import tensorflow_sees_a_gpu
from experiments.study.decisions import (
    COMPLETE,
    DIVERGED,
    FAILED,
    RESTART,
    SETTLED,
    SKIP,
    finished_for,
)
from experiments.study.locks import CellLock
from experiments.study.train_cell import backfill_validation_predictions, expected_state, record_unfinished, train_one, training_decision
from experiments.training.tracking import (
    StudyTracking,
    tracked_cell,
)

DEFERRED, SKIPPED = "deferred", "skipped"


@dataclass
class CellContext:
    """What any process or worker needs to run cells of one study."""

    run: RunFolder
    config: StudyConfig
    data: StudyData
    force: bool = False
    since: datetime | None = None  # when this command started (see training_decision)
    gpu_available: Callable[[], bool] = tensorflow_sees_a_gpu  # asked only when a cell trains: it starts TensorFlow
    bf16_cpu: bool = False
    on_started: Callable[[], None] | None = None  # called when a cell starts training (state "partial")
    # called before each cell this process trains, before anything of it is written: the checks of
    # the study's own code, made once (a process that trains nothing never starts TensorFlow for them)
    before_training: Callable[[], None] | None = None
    tracking: StudyTracking | None = None  # TensorBoard and MLflow, when the config asks for them
    # a tf.distribute strategy (--strategy mirrored): every cell is built, compiled and fitted in
    # its scope; one per process (experiments.training.strategy.make_strategy)
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


def _run_held_cell(context: CellContext, seed_run: CellFolder, where: str, coming_back: Collection[tuple[str, int]]) -> CellOutcome:
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
    from experiments.training.fit import TrainingDiverged, clear_checkpoint  # loads TensorFlow: this cell trains

    if context.before_training is not None:
        context.before_training()
    precision = precision_for(config.recipe(model_name), config.training.mixed_precision, context.gpu_available(), context.bf16_cpu)
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
