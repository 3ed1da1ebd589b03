"""The study's cells as Dask tasks (`--scheduler local` or `--scheduler tcp://HOST:8786`).

Needs Dask's distributed package (`pip install -e ".[dask]"`); experiments.scale imports this
module only when --scheduler is given. Each cell is one task; a continuing cell's task depends on
its source cell's task, so chains keep their order. The task runs the cell (`run_cell`, through
experiments.scale.jobs.cell_job) in a fresh Python process that the Dask worker starts and waits for
(`run_in_child`), with TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS (the worker's share of its
host's cores) and, where the host has several GPUs, CUDA_VISIBLE_DEVICES set before TensorFlow
starts. That process runs the cell in its main thread: run in a Dask worker's task thread,
TensorFlow gave a frozen MobileNetV2 cell other last bits than in one process (measured here), and
--deterministic must give the same histories however the study is run. It also keeps TensorFlow
(its memory, a crash) out of the long-lived Dask worker. Resume and skip are decided in that
process, as in one process: a cell that finished is skipped, one that stopped resumes from its
last finished epoch.

What happens when things go wrong:
- a cell's process dies or raises (killed, out of memory, an OSError): Dask runs the task again,
  up to --retries times;
- a Dask worker dies in a cell (its cell's process gets SIGTERM with it): the scheduler runs the
  cell again on another worker, up to its `distributed.scheduler.allowed-failures` times (for
  `--scheduler local` this command sets it to --retries; a cluster of your own keeps its own
  setting, 3 by default);
- a cell still failing then is reported, with the cells that start from it, in the summary and in
  the exit status (1); its committed epochs stay, and the same command resumes it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dask
from distributed import Client, LocalCluster, as_completed, get_worker

from experiments.console import log
from experiments.errors import StudyFailed, UserError
from experiments.scale.cells import Cell, critical_path, source_of
from experiments.scale.environment import thread_counts, visible_gpus, worker_environment
from experiments.scale.jobs import WorkerSpec, run_in_child
from experiments.scale.pool import CellResults, cell_label


def host_ranks(workers: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[int, int]]:
    """From Client.scheduler_info()["workers"]: each worker's rank on its host, and the host's count."""
    by_host: dict[str, list[str]] = {}
    for address, info in workers.items():
        by_host.setdefault(str(info.get("host", address)), []).append(address)
    return {address: (rank, len(addresses)) for addresses in by_host.values() for rank, address in enumerate(sorted(addresses))}


class DaskBackend:
    def __init__(self, address: str, workers: int, retries: int, strategy: str = "none"):
        self.retries = retries
        self.cluster: LocalCluster | None = None
        # A LocalCluster's nannies would set OMP_NUM_THREADS, MKL_NUM_THREADS and OPENBLAS_NUM_THREADS to 1 in
        # each worker (distributed.nanny.pre-spawn-environ); measured here, that made TensorFlow's CPU training
        # differ from run to run even with --deterministic. TensorFlow's own pools are set instead.
        self._settings = dask.config.set({"distributed.worker.multiprocessing-method": "spawn",
                                          **({"distributed.scheduler.allowed-failures": retries,
                                              "distributed.nanny.pre-spawn-environ": {}} if address == "local" else {})})
        if address == "local":
            intra, inter = thread_counts(workers, os.cpu_count() or 1)
            environment = {variable: os.environ.get(variable, str(value))
                           for variable, value in (("TF_NUM_INTRAOP_THREADS", intra), ("TF_NUM_INTEROP_THREADS", inter))}
            self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                                        silence_logs=logging.ERROR, env=environment)
            self.client = Client(self.cluster)
            log(f"Dask LocalCluster: {workers} worker processes, {environment['TF_NUM_INTRAOP_THREADS']} TensorFlow thread(s) each")
        else:
            try:
                self.client = Client(address, timeout="30s")
            except OSError as error:
                raise UserError(f"cannot reach the Dask scheduler at {address}: {error}") from None
        info = self.client.scheduler_info()["workers"]
        if not info:
            self.client.wait_for_workers(1, timeout=120)
            info = self.client.scheduler_info()["workers"]
        self.ranks = host_ranks(info)
        self.strategy = strategy
        self.workers = len(info)
        if address != "local":
            log(f"Dask scheduler {address}: {self.workers} worker(s)")

    @property
    def slots(self) -> int:
        return max(1, self.workers)

    def __enter__(self) -> DaskBackend:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        try:
            if error is not None:
                self.client.cancel(list(self.client.futures), force=True)
        finally:
            self.client.close()
            if self.cluster is not None:
                self.cluster.close()
            self._settings.__exit__(None, None, None)

    def call(self, function: Callable[..., Any], spec: WorkerSpec) -> Any:
        future = self.client.submit(dask_job, function.__name__, spec, self.ranks, pure=False, retries=self.retries)
        try:
            return future.result()
        except (UserError, StudyFailed):
            raise
        except Exception as error:
            if type(error).__name__ == "KilledWorker":
                raise StudyFailed(f"the worker running {function.__name__} died {self.retries + 1} time(s); run the same command again") from None
            raise

    def run_cells(self, spec: WorkerSpec, cells: Sequence[Cell], labels: Sequence[Cell], on_event: Callable[[], None]) -> CellResults:
        """Submit every cell at once, a continuing cell depending on its source's task; collect them
        as they finish. Nothing is dropped: a task that errs is reported with why. The cells are
        submitted longest path first (a source's path is longer than those of the cells that continue
        it, so it is submitted before them): the scheduler hands a task to an idle worker as soon as it
        is submitted, before the priorities of later ones can count, so study order would start the
        short cells first and leave the longest chain for last."""
        priority = critical_path(spec.config, cells)
        futures: dict[Cell, Any] = {}
        for cell in sorted(cells, key=lambda item: (-priority[item], cells.index(item))):
            source = source_of(spec.config, cell)
            after = [futures[source]] if source in futures else []
            futures[cell] = self.client.submit(dask_job, "cell_job", spec, self.ranks, cell[0], cell[1], cell_label(cell, labels), *after,
                                               key=f"cell-{cell[0]}-seed{cell[1]}-{spec.token[:12]}", pure=False,
                                               retries=self.retries, priority=priority[cell])
        cell_of = {future.key: cell for cell, future in futures.items()}
        results = CellResults()
        for future in as_completed(list(futures.values())):
            cell = cell_of[future.key]
            if future.status == "finished":
                results.outcomes[cell] = future.result()
            else:
                source = source_of(spec.config, cell)
                error = future.exception() if future.status == "error" else None
                if source in results.lost or (source in futures and futures[source].status != "finished"):
                    why = f"not run: it starts from {source[0]}, seed {source[1]}, which was lost"
                elif type(error).__name__ == "KilledWorker":
                    why = f"its worker died {self.retries + 1} time(s) running it (killed, or out of memory?)"
                else:
                    why = f"{type(error).__name__}: {error}" if error is not None else future.status
                results.lost[cell] = why
                log(f"  {cell[0]}, seed {cell[1]}: lost: {why}")
            on_event()
        return results


def dask_job(job: str, spec: WorkerSpec, ranks: Mapping[str, tuple[int, int]], *arguments: Any) -> Any:
    """A Dask task: run `job` (prepare_job, cell_job or finish_job of experiments.scale) in a fresh
    process with this worker's TensorFlow settings: its rank among the workers on its host gives
    its share of the cores and, where there are several GPUs, its own. What Dask's nanny put in the
    worker's environment for numpy's thread pools (distributed.nanny.pre-spawn-environ: OMP, MKL
    and OpenBLAS threads) is left out: TensorFlow's pools are set instead."""
    worker = get_worker()
    rank, count = ranks.get(worker.address, (0, 1))
    environment = dict(os.environ)
    for variable in dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {}:
        environment.pop(variable, None)
    environment.update(worker_environment(rank, count, visible_gpus(), spec.strategy, os.cpu_count(), environment))
    environment["REPORT_BUILDER_WORKER"] = str(worker.name)
    return run_in_child(job, spec, arguments, environment)
