"""`--workers N`: the cells on a pool of N spawned worker processes, each cell handed out once the cell it continues has settled."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from experiments.console import log
from experiments.errors import StudyFailed
from experiments.interrupts import raise_if_interrupted
from experiments.scale.cells import Cell, critical_path, source_of
from experiments.scale.environment import apply_worker_environment
from experiments.scale.jobs import WorkerSpec, cell_job


@dataclass
class CellResults:
    """What the cells of this command came to: outcomes (as `cell_job` returns them) and the cells
    lost (their worker died, or the job raised, more often than --retries allows), with why."""

    outcomes: dict[Cell, dict[str, Any]] = field(default_factory=dict)
    lost: dict[Cell, str] = field(default_factory=dict)


def cell_label(cell: Cell, cells: Sequence[Cell]) -> str:
    return f"[{cells.index(cell) + 1}/{len(cells)}] {cell[0]}, seed {cell[1]}"


def _pool_worker_start(slots: Any, environments: Sequence[Mapping[str, str]]) -> None:
    """A pool worker's initializer, before it imports TensorFlow: take a worker number, set its
    environment. Ctrl-C is the parent's to handle: it stops the workers (SIGTERM) itself."""
    slot = slots.get()
    apply_worker_environment(environments[slot])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_stop_when_orphaned, args=(os.getppid(),), name="parent-watch", daemon=True).start()


def _stop_when_orphaned(parent: int, every: float = 1.0) -> None:
    """A pool worker whose `train` process was killed (kill -9) waits on the task queue forever,
    since each worker holds the queue's write end too. SIGTERM it (the default action: it ends, and
    its cell resumes from its last finished epoch next time) as soon as its parent is gone."""
    while os.getppid() == parent:
        time.sleep(every)
    os.kill(os.getpid(), signal.SIGTERM)


class PoolBackend:
    """`--workers N`: a ProcessPoolExecutor of N spawned processes. A worker that dies breaks the
    pool (concurrent.futures then stops its other workers too); the cells that were running are
    tried again in a new pool, each up to `retries` more times, resuming from their last epoch."""

    def __init__(self, workers: int, environments: Sequence[Mapping[str, str]], retries: int):
        self.workers, self.environments, self.retries = workers, list(environments), retries
        self._executor: ProcessPoolExecutor | None = None
        self.context = multiprocessing.get_context("spawn")

    @property
    def slots(self) -> int:
        return self.workers

    def __enter__(self) -> PoolBackend:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        self.close(stop=error is not None)

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            slots = self.context.Queue()
            for slot in range(self.workers):
                slots.put(slot)
            self._executor = ProcessPoolExecutor(self.workers, mp_context=self.context, initializer=_pool_worker_start,
                                                 initargs=(slots, self.environments))
        return self._executor

    def close(self, stop: bool = False) -> None:
        """Shut the pool down; with `stop` (an interrupt, an error) stop its workers first (SIGTERM:
        a cell stops where it is and resumes from its last finished epoch next time)."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        if stop:
            stop_children()
        executor.shutdown(wait=True, cancel_futures=True)

    def call(self, function: Callable[..., Any], *arguments: Any) -> Any:
        """Run one job in a worker and return its result (a pool broken meanwhile: tried again)."""
        for attempt in range(self.retries + 1):
            future = self._pool().submit(function, *arguments)
            try:
                return _result(future)
            except BrokenProcessPool:
                self.close(stop=True)
                if attempt == self.retries:
                    raise StudyFailed(f"a worker process died running {function.__name__}; run the same command again") from None
                log(f"  a worker process died running {function.__name__}; trying again in a new one")

    def run_cells(self, spec: WorkerSpec, cells: Sequence[Cell], labels: Sequence[Cell], on_event: Callable[[], None]) -> CellResults:
        """Run `cells`, at most one per worker at a time, a continuing cell once its source settled."""
        results = CellResults()
        priority = critical_path(spec.config, cells)
        tries: dict[Cell, int] = {}
        in_flight: dict[Future, Cell] = {}
        sources = {cell: source_of(spec.config, cell) for cell in cells}
        while True:
            for cell, source in sources.items():  # a cell whose source was lost is not run
                if cell not in results.lost and cell not in results.outcomes and source in results.lost:
                    results.lost[cell] = f"not run: it starts from {source[0]}, seed {source[1]}, which was lost"
            busy = set(in_flight.values())
            ready = [cell for cell in cells if cell not in results.outcomes and cell not in results.lost and cell not in busy
                     and (sources[cell] is None or sources[cell] not in sources or sources[cell] in results.outcomes)]
            for cell in sorted(ready, key=lambda item: (-priority[item], cells.index(item)))[: self.workers - len(in_flight)]:
                in_flight[self._pool().submit(cell_job, spec, cell[0], cell[1], cell_label(cell, labels))] = cell
            if not in_flight:
                return results
            finished, _ = wait(list(in_flight), timeout=1.0, return_when=FIRST_COMPLETED)
            raise_if_interrupted()
            if any(_broken(future) for future in finished):
                wait(list(in_flight), timeout=120, return_when=ALL_COMPLETED)  # the others fail too
                finished = {future for future in in_flight if future.done()}
            broken = []
            for future in finished:
                cell = in_flight.pop(future)
                try:
                    results.outcomes[cell] = future.result()
                except BrokenProcessPool:
                    broken.append(cell)
                except Exception as error:  # raised in the worker (an OSError, say): try again, up to --retries
                    self._charge(cell, tries, results, f"{type(error).__name__}: {error}")
                on_event()
            if broken:
                self.close(stop=True)
                for cell in [*broken, *in_flight.values()]:
                    self._charge(cell, tries, results, "its worker process died (killed, or out of memory?)")
                in_flight.clear()
                on_event()

    def _charge(self, cell: Cell, tries: dict[Cell, int], results: CellResults, why: str) -> None:
        tries[cell] = tries.get(cell, 0) + 1
        if tries[cell] > self.retries:
            results.lost[cell] = why
            log(f"  {cell[0]}, seed {cell[1]}: lost: {why}")
        else:
            log(f"  {cell[0]}, seed {cell[1]}: {why}; trying again (try {tries[cell] + 1} of {self.retries + 1}), "
                "from its last finished epoch")


def _broken(future: Future) -> bool:
    return future.done() and isinstance(future.exception(), BrokenProcessPool)


def _result(future: Future) -> Any:
    """A future's result, waiting in short steps so that a Ctrl-C or SIGTERM is seen."""
    while True:
        try:
            return future.result(timeout=0.5)
        except TimeoutError:
            raise_if_interrupted()


def stop_children(timeout: float = 20.0) -> None:
    """Stop this process's multiprocessing children (the pool's workers): SIGTERM, then SIGKILL."""
    children = multiprocessing.active_children()
    for child in children:
        child.terminate()
    deadline = time.monotonic() + timeout
    for child in children:
        child.join(max(0.0, deadline - time.monotonic()))
        if child.is_alive():
            child.kill()
            child.join(5)
