"""The study's progress, read from the run folder so that it counts every process's cells: done, running, left, and the time left."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from experiments.artifacts.cell_records import RunState
from experiments.artifacts.folders import RunFolder
from experiments.artifacts.side_records import CellOwner
from experiments.config import StudyConfig
from experiments.console import STATUS_LINE, StatusLine, estimate_seconds_left, format_duration, log, progress_line
from experiments.study.decisions import COMPLETE, SETTLED_STATUSES, Cell, at_or_after, settled_for, study_cells


def owner_alive(owner: CellOwner | None) -> bool:
    """Whether the process an owner file names is still there (on another host: assumed so)."""
    if owner is None:
        return False
    if owner.host != socket.gethostname():
        return True
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class PlainLine:
    """A progress line printed as a message of its own: several processes write to the terminal."""

    def show(self, text: str) -> None:
        log(text)


@dataclass
class Census:
    done: list[Cell]
    running: list[Cell]
    left: list[Cell]
    durations: dict[str, list[float]]


class CensusProgress:
    """The study's progress read from the run folder, so it counts every process's cells: cells done
    (settled for this config and data), running (held by a live process), left; time elapsed, and
    the time left estimated from the cells trained since this command started (any process's),
    divided among the `parallel` processes working on the study."""

    def __init__(self, run: RunFolder, config: StudyConfig, data_fingerprint: str, since: datetime, started: float,
                 parallel: int = 1, line: Any = STATUS_LINE):
        self.run, self.config, self.fingerprint = run, config, data_fingerprint
        self.since, self.started, self.parallel, self.line = since, started, max(1, parallel), line
        self.cells = study_cells(config)

    def census(self) -> Census:
        done, running, left = [], [], []
        durations: dict[str, list[float]] = {}
        for model_name, seed in self.cells:
            seed_run = self.run.seed_run(model_name, seed)
            state = RunState.read_or_none(seed_run.state)  # a bad one is left to its cell's turn
            if settled_for(state, self.config, model_name, self.fingerprint) and state.status in SETTLED_STATUSES:
                done.append((model_name, seed))
                if state.status == COMPLETE and state.wall_seconds is not None and at_or_after(state.finished_at, self.since):
                    durations.setdefault(model_name, []).append(state.wall_seconds)
            elif owner_alive(CellOwner.read_or_none(seed_run.owner_file)):
                running.append((model_name, seed))
            else:
                left.append((model_name, seed))
        return Census(done, running, left, durations)

    def text(self) -> str:
        census = self.census()
        total = len(self.cells)
        text = (f"Study: {len(census.done)} of {total} cells done, {len(census.running)} running, {len(census.left)} left, "
                f"{format_duration(time.perf_counter() - self.started)} elapsed")
        remaining = [name for name, _ in census.running + census.left]
        if not remaining:
            return text
        serial = estimate_seconds_left(census.durations, remaining)
        if serial is None:
            return text + ", time left estimated once a cell has trained"
        return text + f", about {format_duration(serial / max(1, min(self.parallel, len(remaining))))} left"

    def cell_done(self, model_name: str = "", seed: int = 0, trained_seconds: float | None = None) -> str:
        text = self.text()
        self.line.show(text)
        return text


class StudyProgress:
    """Counts the study's cells as they settle and shows the progress line after each."""

    def __init__(self, cells: list[tuple[str, int]], started: float, line: StatusLine = STATUS_LINE):
        self.cells = list(cells)
        self.started = started
        self.line = line
        self.done: set[tuple[str, int]] = set()
        self.durations: dict[str, list[float]] = {}

    def cell_done(self, model_name: str, seed: int, trained_seconds: float | None = None) -> str:
        """`trained_seconds`: the cell's wall time when it was trained here (None: skipped or failed)."""
        self.done.add((model_name, seed))
        if trained_seconds is not None:
            self.durations.setdefault(model_name, []).append(trained_seconds)
        remaining = [name for name, cell_seed in self.cells if (name, cell_seed) not in self.done]
        text = progress_line(len(self.cells) - len(remaining), len(self.cells), time.perf_counter() - self.started,
                             estimate_seconds_left(self.durations, remaining))
        self.line.show(text)
        return text
