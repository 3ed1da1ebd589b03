"""Run a study in this process: read the data, then for each model and seed (a "cell") skip, resume
or train; choose on validation; evaluate the chosen model on the test split, once.

Several `train` processes may work on one run folder at once. Each cell has a lock
(`models/<model>/seed-<seed>/.cell.lock`): only its holder decides about the cell and trains it.
A process that finds a cell held goes on with the others and comes back to it at the end,
waiting for the holder. A cell that continues another model (finetune and its control,
transfer_extended, continue transfer) also holds the cell it starts from. Each
cell's `state.json` is the truth about it; `manifest.json` is derived from the cells' states
under the run's lock (`.manifest.lock`), which also guards choosing and testing the model.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Collection
from dataclasses import replace
from typing import Any

from experiments.artifacts.cell_records import RunState
from experiments.artifacts.folders import RunFolder
from experiments.artifacts.run_records import Execution
from experiments.config import StudyConfig
from experiments.console import STATUS_LINE, log
from experiments.data.images import summarize_skipped
from experiments.data.loading import StudyData, load_study_data
from experiments.interrupts import raise_if_interrupted
from experiments.runtime import cpu_supports_bf16, set_determinism
from experiments.study.cell import DEFERRED, CellContext, CellOutcome, run_cell
from experiments.study.census import CensusProgress, StudyProgress
from experiments.study.choose import select_and_test
from experiments.study.data_figures import record_data
from experiments.study.decisions import (
    COMPLETE,
    DIVERGED,
    FAILED,
    settled_for,
    study_cells,
)
from experiments.study.environment import check_builders, preflight
from experiments.study.lifecycle import OpenRun, open_run
from experiments.study.locks import run_lock
from experiments.study.manifest import recorded_machine, study_header
from experiments.study.train_cell import write_model_curves
from experiments.training.strategy import make_strategy
from experiments.training.tracking import (
    StudyTracking,
)


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

    `share`: run only these cells (a job-array task's share, experiments.scale.cells.task_share); the
    model is chosen and tested only if every planned cell has then settled (`finish_study`), by
    whichever task finds that. `strategy` ("none", "mirrored"): a tf.distribute strategy around
    every cell (experiments.training.strategy.make_strategy). `execution` goes into manifest.json as it is;
    `parallel` (how many processes share the study) only scales the progress line's estimate."""
    with open_run(config, checks=lambda: preflight(config)) as opened:
        run = opened.run
        opened.heal()  # a manifest a crash left stale agrees with the cells again
        set_determinism(config.training.deterministic)
        tracking = StudyTracking.for_config(config, run.root)
        log(f"Reading data ({config.data.source})...")
        data = load_study_data(config)
        raise_if_interrupted()
        if data.skipped:
            log(f"  {summarize_skipped(data.skipped)} (listed in {run.dataset})")
        log(f"  {len(data.train)} train, {len(data.validation)} validation, {len(data.test)} test images; "
            f"classes: {', '.join(data.class_names)}")
        record_data(run, data)
        # the machine the run last trained on, until a cell trains here (`_run_cells`): a command that
        # finds every cell finished neither starts TensorFlow to ask nor records a machine that trained nothing
        opened.manifest.start(replace(study_header(config, data, machine=recorded_machine(run)), execution=execution))
        _run_cells(opened, data, tracking, force, share=share, strategy=strategy, parallel=parallel)
    return run


def _run_cells(opened: OpenRun, data: StudyData, tracking: StudyTracking | None, force: bool, *, share: Collection[tuple[str, int]] | None,
               strategy: str, parallel: int) -> None:
    """Every cell of the study (or of `share`) in this process, then the choice and the test (or,
    for a share, the choice and the test if every cell of the study has settled). TensorFlow starts
    when the first cell trains or the chosen model is tested: a study with nothing left to do is
    skipped through without it."""
    run, config, manifest, failures = opened.run, opened.config, opened.manifest, opened.failures
    since, started = opened.since, opened.started
    distribute = make_strategy(strategy) if strategy != "none" else None

    @functools.cache  # once, before the first cell this process trains (not for a study with every cell finished)
    def before_training() -> None:
        check_builders(config, data.image_size, len(data.class_names))  # the study's own code
        manifest.record_this_machine()

    context = CellContext(run, config, data, force=force, since=since, bf16_cpu=cpu_supports_bf16(),
                          on_started=manifest.refresh, before_training=before_training, tracking=tracking,
                          strategy=distribute)
    cells = study_cells(config)
    if share is not None:
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

    try:
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
            with run_lock(run):
                select_and_test(config, run, data)
        elif not finish_study(config, run, data):
            opened.phase = "running"  # other tasks still have cells
    finally:
        STATUS_LINE.release()
        if "keras" in sys.modules:  # a process that trained or tested: free what Keras holds
            sys.modules["keras"].backend.clear_session()
