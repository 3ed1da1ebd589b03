"""manifest.json, derived from the cells' state.json files under the run lock, and the study's header in it
(with the study record the report reads: experiments.study.records)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from experiments.artifacts.cell_records import RunState
from experiments.artifacts.files import ArtifactFormatError
from experiments.artifacts.folders import RunFolder
from experiments.artifacts.records import utc_now
from experiments.artifacts.run_records import Manifest, ModelEntry, RunEntry, SkippedEntry
from experiments.config import StudyConfig, config_hash
from experiments.console import log
from experiments.data.loading import StudyData
from experiments.errors import UserError
from experiments.study.decisions import (
    CELL_STATUSES,
    COMPLETE,
    DIVERGED,
    FAILED,
    PARTIAL,
    settled_for,
)
from experiments.study.environment import describe_base_weights, git_commit, hardware_and_devices, package_versions
from experiments.study.locks import run_lock
from experiments.study.records import with_study_record


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
        previous = read_if_valid(Manifest, run.manifest)
        if header is None:
            if previous is None:
                return None
            header = replace(previous, run_name=config.study.run_name, config=config.to_dict(),
                             config_hash=config_hash(config), seeds=config.seeds)
            if data_fingerprint is None:
                data_fingerprint = previous.data_fingerprint
        models, statuses = derive_models(run, config, data_fingerprint)
        manifest = replace(header, status=study_status(statuses, phase, previous.status if previous else None), models=models)
        manifest = with_study_record(manifest)  # the report reads the models' recipes here, not in the config
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

    def record_this_machine(self) -> None:
        """The header's hardware and devices become this process's (it trains), from the next write on."""
        if self.header is not None:
            hardware, devices = hardware_and_devices()
            self.header = replace(self.header, hardware=hardware, devices=devices)

    def refresh(self, phase: str = "running") -> None:
        if self.header is not None:
            write_manifest(self.run, self.config, phase, self.header, self.header.data_fingerprint)

    def finish(self, phase: str) -> None:
        if self.header is not None:
            self.header = replace(self.header, finished_at=utc_now(), wall_seconds=round(time.perf_counter() - self.started, 1))
        self.refresh(phase)

    @contextmanager
    def until_interrupted(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            if self.header is not None:
                self.header = replace(self.header, finished_at=utc_now())
            try:
                self.refresh("interrupted")
            except (OSError, UserError):  # the stop, not a file that cannot be written or read, is what to report
                pass
            raise


def read_if_valid(record: type, path: Path) -> Any:
    """The record at `path`, or None when it is missing or no longer reads (this process
    rewrites it from the cells' states, which are the truth; the message says so)."""
    try:
        return record.read(path)
    except ArtifactFormatError as error:
        log(f"  {error}; this command derives it again")
        return None


def recorded_machine(run: RunFolder) -> tuple[dict[str, Any], list[str]] | None:
    """The hardware and devices the run's manifest.json records (those of the last process that
    trained in it), or None when it records none or does not read."""
    previous = Manifest.read_or_none(run.manifest)
    return (previous.hardware, previous.devices) if previous is not None and previous.hardware else None


def study_header(config: StudyConfig, data: StudyData, machine: tuple[dict[str, Any], list[str]] | None = None) -> Manifest:
    """What manifest.json says about the run besides its cells: config, data, versions, hardware.
    `machine` (hardware, devices): what to record as the machine; None: this one (starts TensorFlow)."""
    hardware, devices = machine if machine is not None else hardware_and_devices()
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
        started_at=utc_now(),
        status="running",
        seeds=config.seeds,
    )
