"""The run's locks: the run lock (manifest, choosing and testing), one lock per cell, and the settings lock that keeps two configs out of one run."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from filelock import FileLock, Timeout

from experiments.artifacts.folders import CellFolder, RunFolder
from experiments.artifacts.records import utc_now
from experiments.artifacts.side_records import CellOwner, RunSettings
from experiments.config import StudyConfig, config_hash, hashed_settings
from experiments.errors import UserError
from experiments.interrupts import raise_if_interrupted

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

    def __init__(self, seed_run: CellFolder):
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
            CellOwner(os.getpid(), socket.gethostname(), task, utc_now()).write(self.seed_run.owner_file)
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
    mine = RunSettings(config_hash(config), hashed_settings(config), os.getpid(), socket.gethostname(), utc_now())
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
