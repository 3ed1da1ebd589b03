"""A run's lifecycle, the same for the sequential and the scaled runner: open it (claim the folder,
hold its settings), interrupted (the manifest says so), finished (the manifest's end, then one
StudyFailed naming every cell that failed)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from experiments.artifacts.folders import RunFolder
from experiments.config import StudyConfig
from experiments.errors import StudyFailed
from experiments.study.locks import hold_run_settings
from experiments.study.manifest import ManifestWriter, write_manifest


@dataclass
class OpenRun:
    """A run this command works on. The runner records what became of the study: `phase` for the
    manifest at the end ("finished"; "running" while other tasks still have cells; "interrupted"
    when cells were lost) and `failures` (a cell's label and why), raised together at the end."""

    run: RunFolder
    config: StudyConfig
    since: datetime  # when this command started: a state written after it is this command's
    started: float  # time.perf_counter() at the start, for the wall time
    manifest: ManifestWriter
    phase: str = "finished"
    failures: dict[str, str] = field(default_factory=dict)
    advice: str = ""  # said after the failures, e.g. how to resume lost cells

    def heal(self) -> None:
        """Write manifest.json again from the cells' states, so that one a crash left stale agrees
        with them (before the header is known, when the command has passed its checks)."""
        write_manifest(self.run, self.config, "healing")


@contextmanager
def open_run(config: StudyConfig, checks: Callable[[], None] = lambda: None) -> Iterator[OpenRun]:
    """Open the run `config` writes: claim its folder (a folder that is not a run of ours is refused
    before anything is written), hold its settings (a command with other settings is refused while
    this one works), run `checks` (they may refuse the command: nothing in the run has changed
    yet), then yield. Any exception marks the manifest "interrupted"; a normal end stamps it with
    `phase` and, once the run is released, raises StudyFailed naming the failed cells."""
    run = RunFolder(config.run_dir)
    run.claim()
    with hold_run_settings(run, config):
        run.check_writable()
        since, started = datetime.now(UTC), time.perf_counter()
        checks()
        opened = OpenRun(run, config, since, started, ManifestWriter(run, config, started))
        with opened.manifest.until_interrupted():
            yield opened
        opened.manifest.finish(opened.phase)
    if opened.failures:
        # each reason may be a sentence of its own: one full stop, at the end
        raise StudyFailed(f"{len(opened.failures)} run(s) failed: "
                          + "; ".join(f"{name}: {message.rstrip('.')}" for name, message in opened.failures.items())
                          + opened.advice)
