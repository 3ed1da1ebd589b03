"""Run a study scaled out: its cells on several worker processes, a cluster's job array, or a Dask cluster.

A study is a grid of cells (a model and a seed), each decided and trained by `experiments.study.cell.run_cell`
under its own file lock, plus chains: a continuing model (finetune, transfer_extended) starts from its
source model's cell with the same seed. Nothing here schedules anything itself; existing engines do:

- `--workers N` (`run_scaled` with a `PoolBackend`): concurrent.futures' ProcessPoolExecutor with N
  worker processes started by multiprocessing's "spawn" method (forking a process in which TensorFlow
  has started hangs). Each worker's environment is set before it imports TensorFlow
  (`experiments.scale.environment.worker_environment`): TF_NUM_INTRAOP_THREADS = cores // N (at least 1), TF_NUM_INTEROP_THREADS,
  and CUDA_VISIBLE_DEVICES = one GPU of its own when several are visible (`experiments.scale.environment.visible_gpus`: from
  CUDA_VISIBLE_DEVICES or `nvidia-smi -L`, without TensorFlow). A cell is handed out once its source
  cell has settled, so chains keep their order; every worker calls `run_cell(wait=True)`, so the
  locks keep other `train` processes on the same run as safe as ever.
- `--task-index I --task-count K` (`experiments.scale.cells.task_share`): this process runs its share of the cells, a fixed
  split of the chain-grouped cells (a chain stays in one task), into a shared `--out`. The defaults
  come from SLURM_ARRAY_TASK_ID (minus SLURM_ARRAY_TASK_MIN, over SLURM_ARRAY_TASK_STEP) and
  SLURM_ARRAY_TASK_COUNT, or from a Kubernetes Indexed Job's JOB_COMPLETION_INDEX (the count from
  `--task-count`). The process that finds every cell settled chooses the model and tests it.
- `--scheduler local | tcp://HOST:8786` (experiments.scale.dask_cluster): each cell a Dask task calling
  `run_cell` in a worker, a continuing cell depending on its source's task; a worker lost in a cell
  has the cell run again elsewhere (the scheduler's allowed-failures), an exception is retried
  (`retries=`), and what is still lost is reported, never dropped.

In every mode the parent process imports no TensorFlow: reading the data for the manifest, writing the
data figures (`experiments.scale.jobs.prepare_job`) and choosing and testing the model (`experiments.scale.jobs.finish_job`) run in a worker too.
Every worker reads the data with `experiments.data.loading.load_study_data`, which for folder data opens the decoded-image
cache on disk (the first worker builds it under the cache's lock; the others find it built).

`--strategy mirrored` (`experiments.training.strategy.make_strategy`): one tf.distribute.MirroredStrategy per process, over its
GPUs (or its logical CPU devices when it has no GPU), around each cell's build, compile and fit.
"""

from __future__ import annotations

import copy
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

from experiments.artifacts.folders import RunFolder
from experiments.artifacts.records import utc_now
from experiments.artifacts.run_records import Execution
from experiments.config import StudyConfig
from experiments.console import format_duration, log
from experiments.errors import UserError
from experiments.scale.cells import TaskSlot, announce_task, resolve_task
from experiments.scale.environment import visible_gpus, worker_environment
from experiments.scale.jobs import WorkerSpec, finish_job, prepare_job
from experiments.scale.pool import CellResults, PoolBackend
from experiments.study.census import CensusProgress, PlainLine
from experiments.study.decisions import DIVERGED, FAILED, study_cells
from experiments.study.lifecycle import OpenRun, open_run
from experiments.training.strategy import STRATEGIES
from experiments.training.tracking import check_tracking_packages

DASK_INSTALL = 'pip install -e ".[dask]"'


@dataclass
class ScaleOptions:
    """How `train` runs its cells: `workers` processes here, or a Dask `scheduler` ("local" or an
    address); `task`: this process's share of a job array; `strategy` around every cell; `retries`:
    how often a cell whose worker died (or raised) is tried again before it is reported lost."""

    workers: int = 1
    scheduler: str | None = None
    task: TaskSlot | None = None
    strategy: str = "none"
    retries: int = 1
    verbose: bool = False

    @property
    def scaled(self) -> bool:
        """Whether cells run in worker processes (else in this process, as always)."""
        return self.workers > 1 or self.scheduler is not None

    def check(self) -> ScaleOptions:
        if self.workers < 1:
            raise UserError(f"--workers must be 1 or more, got {self.workers}")
        if self.retries < 0:
            raise UserError(f"--retries must be 0 or more, got {self.retries}")
        if self.strategy not in STRATEGIES:
            raise UserError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.scheduler is not None:
            if self.scheduler != "local" and "://" not in self.scheduler and ":" not in self.scheduler:
                raise UserError(f"--scheduler must be 'local' or a Dask scheduler address such as tcp://HOST:8786, got {self.scheduler!r}")
            import importlib.util

            if importlib.util.find_spec("distributed") is None:
                raise UserError(f"--scheduler needs Dask's distributed package: run {DASK_INSTALL}, then the same command again")
        return self

    def describe(self, slots: int | None = None) -> Execution:
        """manifest.json's "execution": how this command ran its cells."""
        return Execution(slots if slots is not None else self.workers,
                         self.scheduler if self.scheduler in (None, "local") else "remote",
                         self.task.index if self.task else None, self.task.count if self.task else None,
                         self.strategy, socket.gethostname())


def worker_config(config: StudyConfig) -> StudyConfig:
    """The config the workers train with: the same, except that Keras prints one line per epoch
    rather than progress bars (several processes share the terminal). `verbose` is not hashed."""
    config = copy.deepcopy(config)
    if config.training.verbose == "auto":
        config.training.verbose = "epoch"
    return config


def make_backend(options: ScaleOptions, spec_strategy: str):
    if options.scheduler is not None:
        from experiments.scale.dask_cluster import DaskBackend  # Dask is an optional extra (.[dask])

        return DaskBackend(options.scheduler, options.workers, options.retries, spec_strategy)
    gpus = visible_gpus()
    environments = [worker_environment(slot, options.workers, gpus, spec_strategy) for slot in range(options.workers)]
    threads = environments[0].get("TF_NUM_INTRAOP_THREADS", os.environ.get("TF_NUM_INTRAOP_THREADS", "?"))
    gpu_text = f"; GPUs {', '.join(environment.get('CUDA_VISIBLE_DEVICES', '') or 'shared' for environment in environments)}" if gpus else ""
    log(f"{options.workers} worker processes, {threads} TensorFlow thread(s) each{gpu_text}")
    return PoolBackend(options.workers, environments, options.retries)


def run_scaled(config: StudyConfig, force: bool, options: ScaleOptions) -> RunFolder:
    """Run the study (or this task's share of it) with its cells in worker processes or on a Dask
    cluster; this process imports no TensorFlow. Returns the run folder; raises StudyFailed when
    cells failed, diverged or were lost (the others' artifacts are written)."""

    with open_run(config, checks=lambda: check_tracking_packages(config)) as opened:
        _run_cells(opened, force, options)
    return opened.run


def _run_cells(opened: OpenRun, force: bool, options: ScaleOptions) -> None:
    """Hand the cells to the backend's workers; a worker reads the data and writes the manifest's
    header first (prepare_job), and one chooses and tests at the end (finish_job)."""
    run, config, manifest, started = opened.run, opened.config, opened.manifest, opened.started
    every_cell = study_cells(config)
    cells = announce_task(config, options.task) if options.task else every_cell
    spec = WorkerSpec(worker_config(config), force, opened.since, options.strategy, quiet=not options.verbose)
    results = CellResults()
    finished = False
    with make_backend(options, options.strategy) as backend:
        header = backend.call(prepare_job, spec)  # the header's start() heals a stale manifest
        manifest.start(replace(header, started_at=utc_now(), execution=options.describe(backend.slots)))
        progress = CensusProgress(run, config, header.data_fingerprint, opened.since, started,
                                  parallel=backend.slots * (options.task.count if options.task else 1), line=PlainLine())
        if cells:
            results = backend.run_cells(spec, cells, every_cell, lambda: (manifest.refresh(), progress.cell_done()))
        if not results.lost:
            finished = backend.call(finish_job, spec)
    opened.phase = "finished" if finished else ("interrupted" if results.lost else "running")
    counts: dict[str, int] = {}
    for outcome in results.outcomes.values():
        counts[outcome["status"]] = counts.get(outcome["status"], 0) + 1
    log(f"{len(cells)} cell(s) in {format_duration(time.perf_counter() - started)}: "
        + ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
        + (f", {len(results.lost)} lost" if results.lost else ""))
    opened.failures.update({f"{cell[0]} (seed {cell[1]})": outcome.get("error") or outcome["status"]
                            for cell, outcome in results.outcomes.items() if outcome["status"] in (FAILED, DIVERGED)})
    opened.failures.update({f"{cell[0]} (seed {cell[1]})": why for cell, why in results.lost.items()})
    if results.lost:
        opened.advice = "; run the same command again to resume the lost cells"


def options_from_arguments(workers: int | None, scheduler: str | None, task_index: int | None, task_count: int | None,
                           strategy: str | None, retries: int | None, verbose: bool = False,
                           environ: Mapping[str, str] = os.environ) -> ScaleOptions:
    """The command line's scale-out flags as ScaleOptions (the task from the environment where the
    flags leave it open), checked."""
    default_workers = 1
    if workers is None and scheduler == "local":  # a local cluster: a worker per GPU where there are several, else two
        gpus = visible_gpus(environ)
        default_workers = len(gpus) if len(gpus) > 1 else 2
    return ScaleOptions(workers=workers if workers is not None else default_workers, scheduler=scheduler,
                        task=resolve_task(task_index, task_count, environ), strategy=strategy or "none",
                        retries=1 if retries is None else retries, verbose=verbose).check()
