"""Scale a study out: its cells on several worker processes, a cluster's job array, or a Dask cluster.

A study is a grid of cells (a model and a seed), each decided and trained by `experiments.study.run_cell`
under its own file lock, plus chains: a continuing model (finetune, transfer_extended) starts from its
source model's cell with the same seed. Nothing here schedules anything itself; existing engines do:

- `--workers N` (`run_scaled` with a `PoolBackend`): concurrent.futures' ProcessPoolExecutor with N
  worker processes started by multiprocessing's "spawn" method (forking a process in which TensorFlow
  has started hangs). Each worker's environment is set before it imports TensorFlow
  (`worker_environment`): TF_NUM_INTRAOP_THREADS = cores // N (at least 1), TF_NUM_INTEROP_THREADS,
  and CUDA_VISIBLE_DEVICES = one GPU of its own when several are visible (`visible_gpus`: from
  CUDA_VISIBLE_DEVICES or `nvidia-smi -L`, without TensorFlow). A cell is handed out once its source
  cell has settled, so chains keep their order; every worker calls `run_cell(wait=True)`, so the
  locks keep other `train` processes on the same run as safe as ever.
- `--task-index I --task-count K` (`task_share`): this process runs its share of the cells, a fixed
  split of the chain-grouped cells (a chain stays in one task), into a shared `--out`. The defaults
  come from SLURM_ARRAY_TASK_ID (minus SLURM_ARRAY_TASK_MIN, over SLURM_ARRAY_TASK_STEP) and
  SLURM_ARRAY_TASK_COUNT, or from a Kubernetes Indexed Job's JOB_COMPLETION_INDEX (the count from
  `--task-count`). The process that finds every cell settled chooses the model and tests it.
- `--scheduler local | tcp://HOST:8786` (experiments.scale_dask): each cell a Dask task calling
  `run_cell` in a worker, a continuing cell depending on its source's task; a worker lost in a cell
  has the cell run again elsewhere (the scheduler's allowed-failures), an exception is retried
  (`retries=`), and what is still lost is reported, never dropped.

In every mode the parent process imports no TensorFlow: reading the data for the manifest, writing the
data figures (`prepare_job`) and choosing and testing the model (`finish_job`) run in a worker too.
Every worker reads the data with `load_study_data`, which for folder data opens the decoded-image
cache on disk (the first worker builds it under the cache's lock; the others find it built).

`--strategy mirrored` (`make_strategy`): one tf.distribute.MirroredStrategy per process, over its
GPUs (or its logical CPU devices when it has no GPU), around each cell's build, compile and fit.
"""

from __future__ import annotations

import copy
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from experiments.artifacts import CellOwner, Execution, Manifest, RunFolder, RunState
from experiments.config import StudyConfig
from experiments.decisions import COMPLETE, DIVERGED, FAILED, at_or_after, settled_for
from experiments.errors import StudyFailed, UserError
from experiments.interrupts import raise_if_interrupted
from experiments.study import study_cells
from experiments.tracking import STATUS_LINE, check_tracking_packages, estimate_seconds_left, format_duration

Cell = tuple[str, int]
STRATEGIES = ("none", "mirrored")
THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
WORKER_VARIABLE = "REPORT_BUILDER_WORKER"  # the worker's number, for its messages
DASK_INSTALL = 'pip install -e ".[dask]"'
SETTLED_STATUSES = (COMPLETE, FAILED, DIVERGED)


def log(message: str) -> None:
    from experiments.study import log as study_log

    study_log(message)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- cells, chains and shares


def source_of(config: StudyConfig, cell: Cell) -> Cell | None:
    """The cell a continuing cell starts from (same seed), or None."""
    model_name, seed = cell
    source = config.source_of(model_name)
    return (source, seed) if source is not None else None


def root_of(config: StudyConfig, cell: Cell) -> Cell:
    while (source := source_of(config, cell)) is not None:
        cell = source
    return cell


def cell_epochs(config: StudyConfig, model_name: str) -> int:
    """The epochs a cell trains: the planned work, used to balance shares and order the queue."""
    first, last = config.epoch_span(model_name)
    return last - first


def chain_groups(config: StudyConfig) -> list[list[Cell]]:
    """The cells grouped by chain: a source cell with the cells that continue it (same seed), every
    other cell alone; groups in the order of their first cell, cells in study order."""
    groups: dict[Cell, list[Cell]] = {}
    for cell in study_cells(config):
        groups.setdefault(root_of(config, cell), []).append(cell)
    return list(groups.values())


def assign_shares(config: StudyConfig, count: int) -> list[list[Cell]]:
    """`count` shares of the study's cells, a chain never split: the chain groups, heaviest first
    (planned epochs; ties in study order), each to the share with the least planned epochs so far
    (the lowest index on a tie). A pure function of the config: every task computes the same split."""
    if count < 1:
        raise ValueError("count must be at least 1")
    groups = chain_groups(config)
    weights = [sum(cell_epochs(config, model_name) for model_name, _ in group) for group in groups]
    loads = [0] * count
    task_of_group: dict[int, int] = {}
    for index in sorted(range(len(groups)), key=lambda position: (-weights[position], position)):
        task = min(range(count), key=lambda number: (loads[number], number))
        loads[task] += weights[index]
        task_of_group[index] = task
    task_of_cell = {cell: task_of_group[index] for index, group in enumerate(groups) for cell in group}
    return [[cell for cell in study_cells(config) if task_of_cell[cell] == task] for task in range(count)]


def task_share(config: StudyConfig, index: int, count: int) -> list[Cell]:
    return assign_shares(config, count)[index]


def announce_task(config: StudyConfig, task: TaskSlot) -> list[Cell]:
    """This task's share of the cells, said on the console."""
    share = task_share(config, task.index, task.count)
    log(f"Task {task.index} of {task.count} (from {task.origin}): {len(share)} of {len(study_cells(config))} cells: "
        + (", ".join(f"{name} (seed {seed})" for name, seed in share) or "none"))
    return share


def critical_path(config: StudyConfig, cells: Sequence[Cell]) -> dict[Cell, int]:
    """Each cell's planned epochs plus the longest chain of cells that wait for it: cells with the
    longest path left are handed out first, so the study takes about as long as its longest chain."""
    dependents: dict[Cell, list[Cell]] = {}
    for cell in cells:
        if (source := source_of(config, cell)) is not None:
            dependents.setdefault(source, []).append(cell)
    lengths: dict[Cell, int] = {}

    def length(cell: Cell) -> int:
        if cell not in lengths:
            lengths[cell] = cell_epochs(config, cell[0]) + max((length(child) for child in dependents.get(cell, [])), default=0)
        return lengths[cell]

    return {cell: length(cell) for cell in cells}


# --------------------------------------------------------------------------- which task this is


@dataclass(frozen=True)
class TaskSlot:
    """This process's place in a job array: task `index` (0-based) of `count`; `origin` says where
    the index came from (a flag or an environment variable), for the messages."""

    index: int
    count: int
    origin: str = "--task-index"


def _integer(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise UserError(f"${name} is {value!r}, not a whole number") from None


def resolve_task(index: int | None, count: int | None, environ: Mapping[str, str] = os.environ) -> TaskSlot | None:
    """This process's task, from `--task-index` / `--task-count` or else the job array's environment:

    - SLURM (`sbatch --array=...`): the index is (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) /
      SLURM_ARRAY_TASK_STEP, the count SLURM_ARRAY_TASK_COUNT (both overridable by the flags);
    - a Kubernetes Indexed Job: JOB_COMPLETION_INDEX, with the count from `--task-count` (the
      Job's `completions`), which Kubernetes does not put in the environment.

    None means the whole study in this process (no array, or `--task-count 1`)."""
    if count is not None and count < 1:
        raise UserError(f"--task-count must be 1 or more, got {count}")
    origin = "--task-index"
    if index is None:
        slurm_id = _integer(environ, "SLURM_ARRAY_TASK_ID")
        kubernetes_index = _integer(environ, "JOB_COMPLETION_INDEX")
        if count == 1:
            return None
        if slurm_id is not None:
            first = _integer(environ, "SLURM_ARRAY_TASK_MIN") or 0
            step = _integer(environ, "SLURM_ARRAY_TASK_STEP") or 1
            count = count if count is not None else _integer(environ, "SLURM_ARRAY_TASK_COUNT")
            if count is None:
                raise UserError("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not: pass --task-count K")
            if (slurm_id - first) % step:
                raise UserError(f"SLURM array task {slurm_id} is not on the array's grid (min {first}, step {step}): "
                                "use --array=0-(K-1) or pass --task-index")
            index, origin = (slurm_id - first) // step, "SLURM_ARRAY_TASK_ID"
        elif kubernetes_index is not None:
            if count is None:
                raise UserError("JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job): pass --task-count K, the Job's completions")
            index, origin = kubernetes_index, "JOB_COMPLETION_INDEX"
        elif count is not None:
            raise UserError("--task-count needs --task-index (or SLURM_ARRAY_TASK_ID / JOB_COMPLETION_INDEX in the environment)")
        else:
            return None
    elif count is None:
        count = _integer(environ, "SLURM_ARRAY_TASK_COUNT")
        if count is None:
            raise UserError("--task-index needs --task-count K (how many tasks share the study)")
    if not 0 <= index < count:
        raise UserError(f"task index {index} (from {origin}) is not between 0 and {count - 1} (--task-count {count})")
    return TaskSlot(index, count, origin) if count > 1 else None


# --------------------------------------------------------------------------- a worker's environment


def visible_gpus(environ: Mapping[str, str] = os.environ, runner: Callable[..., Any] = subprocess.run) -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them, without TensorFlow:
    CUDA_VISIBLE_DEVICES when it is set (CUDA stops at the first entry that is not a device), else
    `nvidia-smi -L` (a GPU split by MIG: its MIG devices' UUIDs). None found: []."""
    value = environ.get("CUDA_VISIBLE_DEVICES")
    if value is not None:
        devices = []
        for item in (part.strip() for part in value.split(",")):
            if not item or item.startswith("-"):
                break
            devices.append(item)
        return devices
    try:
        listing = runner(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    if listing.returncode != 0:
        return []
    devices: list[str] = []
    migs: list[str] = []
    gpu_index = -1
    for line in listing.stdout.splitlines():
        stripped = line.strip()
        if line.startswith("GPU "):
            if gpu_index >= 0:
                devices.extend(migs or [str(gpu_index)])
            gpu_index, migs = gpu_index + 1, []
        elif stripped.startswith("MIG ") and "UUID: " in stripped:
            migs.append(stripped.split("UUID: ", 1)[1].rstrip(")").strip())
    if gpu_index >= 0:
        devices.extend(migs or [str(gpu_index)])
    return devices


def thread_counts(workers: int, cores: int) -> tuple[int, int]:
    """TensorFlow's intra-op and inter-op pool sizes for one of `workers` processes on `cores` cores."""
    intra = max(1, cores // max(1, workers))
    return intra, 2 if intra >= 4 else 1


def gpu_groups(gpus: Sequence[str], workers: int, strategy: str) -> list[list[str]]:
    """The GPUs of each worker: with --strategy mirrored the GPUs in `workers` contiguous groups (each
    worker's strategy spans its group); else one GPU each, round robin (workers > GPUs share)."""
    if not gpus:
        return [[] for _ in range(workers)]
    if strategy == "mirrored" and workers <= len(gpus):
        size, extra = divmod(len(gpus), workers)
        groups, start = [], 0
        for number in range(workers):
            end = start + size + (1 if number < extra else 0)
            groups.append(list(gpus[start:end]))
            start = end
        return groups
    return [[gpus[number % len(gpus)]] for number in range(workers)]


def worker_environment(slot: int, workers: int, gpus: Sequence[str], strategy: str = "none", cores: int | None = None,
                       environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """What worker `slot` of `workers` sets before it imports TensorFlow. Thread counts the user
    exported are kept; CUDA_VISIBLE_DEVICES narrows the GPUs this process sees (`gpus`) to the
    worker's own when there are several, and GPUs shared by several workers grow their memory on
    demand (else the first worker would take all of it)."""
    cores = cores or os.cpu_count() or 1
    intra, inter = thread_counts(workers, cores)
    environment = {WORKER_VARIABLE: str(slot)}
    for variable, value in zip(THREAD_VARIABLES, (intra, inter)):
        if variable not in environ:
            environment[variable] = str(value)
    if gpus and workers > 1:
        group = gpu_groups(gpus, workers, strategy)[slot % workers]
        if len(gpus) > 1:
            environment["CUDA_VISIBLE_DEVICES"] = ",".join(group)
        if workers > len(gpus) and "TF_FORCE_GPU_ALLOW_GROWTH" not in environ:
            environment["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    return environment


def apply_worker_environment(environment: Mapping[str, str]) -> None:
    """Set a worker's environment; too late for TensorFlow once it is imported, which is said."""
    if "tensorflow" in sys.modules:
        log(f"  worker {os.getpid()}: TensorFlow had already started; its thread and GPU settings stay as they were")
    os.environ.update(environment)


def configure_threads() -> tuple[int, int]:
    """In a worker, after importing TensorFlow and before its first operation: the thread pools
    from TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS (TensorFlow reads them itself too; this
    makes tf.config.threading report them). Returns the pools' sizes (0: TensorFlow's default)."""
    import tensorflow as tf

    for variable, setter in zip(THREAD_VARIABLES, (tf.config.threading.set_intra_op_parallelism_threads,
                                                   tf.config.threading.set_inter_op_parallelism_threads)):
        value = os.environ.get(variable, "")
        if value.isdigit():
            try:
                setter(int(value))
            except RuntimeError:  # TensorFlow already ran an operation in this process
                pass
    return tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads()


def worker_name() -> str:
    slot = os.environ.get(WORKER_VARIABLE)
    return f"worker {slot}" if slot is not None else f"worker pid {os.getpid()}"


# --------------------------------------------------------------------------- the distribution strategy


_STRATEGY: Any = None


def make_strategy(name: str):
    """The process's tf.distribute strategy for --strategy (None for "none"); made once per process.

    "mirrored": MirroredStrategy over the process's GPUs or, without a GPU, its logical CPU devices
    (one, unless tf.config.set_logical_device_configuration split the CPU, as the tests do). The
    batch size stays the global batch (each device gets batch_size / devices) and the learning rate
    is unchanged, so the training is the same one, split. No model here trains a BatchNormalization
    layer (the MobileNetV2 base's stay frozen, in inference mode, in transfer and finetune), so there
    are no batch statistics to synchronise across devices."""
    global _STRATEGY
    if name == "none":
        return None
    if name not in STRATEGIES:
        raise UserError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")
    if _STRATEGY is not None:
        return _STRATEGY
    import tensorflow as tf

    devices = [device.name for device in tf.config.list_logical_devices("GPU")]
    devices = devices or [device.name for device in tf.config.list_logical_devices("CPU")]
    _STRATEGY = tf.distribute.MirroredStrategy(devices=devices)
    log(f"MirroredStrategy over {len(devices)} device(s): {', '.join(devices)}"
        + ("" if len(devices) > 1 else " (one device: the strategy changes nothing)"))
    return _STRATEGY


# --------------------------------------------------------------------------- in a worker


@dataclass
class WorkerSpec:
    """What a worker needs to run cells of one `train` command (pickled to each worker)."""

    config: StudyConfig
    force: bool
    since: datetime
    strategy: str = "none"
    quiet: bool = True  # hide TensorFlow's C++ start-up lines
    token: str = field(default_factory=lambda: uuid.uuid4().hex)  # one command: a worker's context is kept for it


_CONTEXT: tuple[str, Any] | None = None
# One cell at a time per process: TensorFlow and Keras keep global state (the session, seeds, the
# precision policy). A Dask worker with several threads runs its cells one after the other.
_CELL_LOCK = threading.Lock()


def worker_context(spec: WorkerSpec):
    """This worker's CellContext for the command `spec` belongs to, made on first use: TensorFlow
    imported (after the environment was set), determinism, the data read (from the decoded-image
    cache for folder data), tracking and the strategy."""
    global _CONTEXT
    if _CONTEXT is not None and _CONTEXT[0] == spec.token:
        return _CONTEXT[1]
    _CONTEXT = None
    if spec.quiet:
        from experiments.runtime import import_tensorflow_quietly

        import_tensorflow_quietly()
    configure_threads()
    import tensorflow as tf

    from experiments.data import load_study_data
    from experiments.runtime import cpu_supports_bf16
    from experiments.study import CellContext, set_determinism, write_manifest
    from experiments.tracking import StudyTracking

    config = spec.config
    set_determinism(config.training.deterministic)
    data = load_study_data(config)
    run = RunFolder(config.run_dir)

    def on_started() -> None:  # the manifest says what the cells say (the parent wrote its header)
        write_manifest(run, config, "running", data_fingerprint=data.fingerprint)

    context = CellContext(run, config, data, force=spec.force, since=spec.since,
                          gpu_available=bool(tf.config.list_physical_devices("GPU")), bf16_cpu=cpu_supports_bf16(),
                          on_started=on_started, tracking=StudyTracking.for_config(config, run.root),
                          strategy=make_strategy(spec.strategy))
    _CONTEXT = (spec.token, context)
    return context


def prepare_job(spec: WorkerSpec) -> Manifest:
    """In a worker, before any cell: the checks that need TensorFlow, the data read once (building
    the decoded-image cache the other workers then open), dataset.json and the data figures.
    Returns the manifest's header."""
    from experiments.images import summarize_skipped
    from experiments.study import preflight, study_header, write_data_figures

    with _CELL_LOCK:
        if spec.quiet:
            from experiments.runtime import import_tensorflow_quietly

            import_tensorflow_quietly()
        config = spec.config
        preflight(config)
        log(f"Reading data ({config.data.source}) in {worker_name()}...")
        context = worker_context(spec)
        data, run = context.data, context.run
        if data.skipped:
            log(f"  {summarize_skipped(data.skipped)} (listed in {run.dataset})")
        log(f"  {len(data.train)} train, {len(data.validation)} validation, {len(data.test)} test images; "
            f"classes: {', '.join(data.class_names)}")
        data.describe().write(run.dataset)
        write_data_figures(run, data, config.study.seed)
        return study_header(config, data)


def cell_job(spec: WorkerSpec, model_name: str, seed: int, label: str, *after: Any) -> dict[str, Any]:
    """In a worker: run one cell (`run_cell` with wait semantics: a cell another process holds is
    waited for, then decided again). `after`: the results of the tasks it must follow (Dask's
    dependencies; not read). Returns the outcome as plain data."""
    from experiments.study import run_cell

    with _CELL_LOCK:
        context = worker_context(spec)
        started = time.perf_counter()
        outcome = run_cell(context, model_name, seed, wait=True, where=f"{label} ({worker_name()})")
        return {"model": model_name, "seed": seed, "status": outcome.status, "error": outcome.error,
                "seconds": round(time.perf_counter() - started, 1), "worker": worker_name()}


def finish_job(spec: WorkerSpec) -> bool:
    """In a worker, after the cells: every model's curves, and choosing and testing the model if
    every planned cell has settled (`finish_study`). Returns whether it did."""
    from experiments.study import finish_study

    with _CELL_LOCK:
        context = worker_context(spec)
        return finish_study(context.config, context.run, context.data)


JOBS = {"prepare_job": prepare_job, "cell_job": cell_job, "finish_job": finish_job}


class ChildDied(RuntimeError):
    """The process running a job ended without an answer (killed, out of memory, a crash)."""


def _die_with_parent() -> None:
    """In a job's process, before it runs (Linux): SIGTERM when the thread that started it ends, so a
    Dask worker that dies does not leave its cell training on (holding the cell's lock) unseen."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run_in_child(job: str, spec: WorkerSpec, arguments: Sequence[Any], environment: Mapping[str, str]) -> Any:
    """Run `job` (a name in JOBS) with `spec` and `arguments` in a fresh Python process with
    `environment`, in that process's main thread, and return its result or raise its exception.
    Its output goes where this process's goes."""
    import pickle
    import tempfile

    with tempfile.TemporaryDirectory(prefix="report-builder-job-") as folder:
        request, answer = os.path.join(folder, "request.pickle"), os.path.join(folder, "answer.pickle")
        with open(request, "wb") as handle:
            pickle.dump((job, spec, tuple(arguments)), handle)
        command = [sys.executable, "-c", "from experiments.scale import child_main; child_main()", request, answer]
        process = subprocess.Popen(command, env=dict(environment), preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        try:
            code = process.wait()
        except BaseException:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
            raise
        if not os.path.exists(answer):
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"status {code}"
            raise ChildDied(f"the process running {job} ended with {how} before it finished (killed, or out of memory?)")
        with open(answer, "rb") as handle:
            succeeded, value = pickle.load(handle)
    if succeeded:
        return value
    raise value


def child_main() -> None:
    """The process `run_in_child` starts: run the job, write (True, result) or (False, exception)."""
    import pickle

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the `train` process's to handle
    from experiments.runtime import prefer_onednn

    prefer_onednn()
    request, answer = sys.argv[1], sys.argv[2]
    with open(request, "rb") as handle:
        job, spec, arguments = pickle.load(handle)
    try:
        outcome = (True, JOBS[job](spec, *arguments))
    except Exception as error:  # an error the caller reports (or Dask retries); a crash leaves no answer
        outcome = (False, error)
    try:
        payload = pickle.dumps(outcome)
    except Exception as error:
        payload = pickle.dumps((False, RuntimeError(f"{type(outcome[1]).__name__}: {outcome[1]} (not picklable: {error})")))
    with open(answer + ".tmp", "wb") as handle:
        handle.write(payload)
    os.replace(answer + ".tmp", answer)


# --------------------------------------------------------------------------- progress across processes


def _alive(owner: CellOwner | None) -> bool:
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
            elif _alive(CellOwner.read_or_none(seed_run.owner_file)):
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


# --------------------------------------------------------------------------- options


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


# --------------------------------------------------------------------------- backends


@dataclass
class CellResults:
    """What the cells of this command came to: outcomes (as `cell_job` returns them) and the cells
    lost (their worker died, or the job raised, more often than --retries allows), with why."""

    outcomes: dict[Cell, dict[str, Any]] = field(default_factory=dict)
    lost: dict[Cell, str] = field(default_factory=dict)


def _label(cell: Cell, cells: Sequence[Cell]) -> str:
    return f"[{cells.index(cell) + 1}/{len(cells)}] {cell[0]}, seed {cell[1]}"


def _pool_worker_start(slots: Any, environments: Sequence[Mapping[str, str]]) -> None:
    """A pool worker's initializer, before it imports TensorFlow: take a worker number, set its
    environment. Ctrl-C is the parent's to handle: it stops the workers (SIGTERM) itself."""
    slot = slots.get()
    apply_worker_environment(environments[slot])
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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
                in_flight[self._pool().submit(cell_job, spec, cell[0], cell[1], _label(cell, labels))] = cell
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


# --------------------------------------------------------------------------- the scaled study


def worker_config(config: StudyConfig) -> StudyConfig:
    """The config the workers train with: the same, except that Keras prints one line per epoch
    rather than progress bars (several processes share the terminal). `verbose` is not hashed."""
    config = copy.deepcopy(config)
    if config.training.verbose == "auto":
        config.training.verbose = "epoch"
    return config


def make_backend(options: ScaleOptions, spec_strategy: str):
    if options.scheduler is not None:
        from experiments.scale_dask import DaskBackend

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
    from experiments.study import hold_run_settings

    run = RunFolder(config.run_dir)
    run.claim()  # a folder that is not a run of ours is refused before anything is written
    with hold_run_settings(run, config):  # a command with other settings is refused while this one works
        return _run_scaled(run, config, force, options)


def _run_scaled(run: RunFolder, config: StudyConfig, force: bool, options: ScaleOptions) -> RunFolder:
    from experiments.study import ManifestWriter, write_manifest

    run.check_writable()
    since = datetime.now(UTC)
    started = time.perf_counter()
    write_manifest(run, config, "healing")
    check_tracking_packages(config)
    every_cell = study_cells(config)
    cells = announce_task(config, options.task) if options.task else every_cell
    spec = WorkerSpec(worker_config(config), force, since, options.strategy, quiet=not options.verbose)
    manifest = ManifestWriter(run, config, started)
    finished = False
    results = CellResults()
    with manifest.until_interrupted(), make_backend(options, options.strategy) as backend:
        header = backend.call(prepare_job, spec)
        manifest.start(replace(header, started_at=_now(), execution=options.describe(backend.slots)))
        progress = CensusProgress(run, config, header.data_fingerprint, since, started,
                                  parallel=backend.slots * (options.task.count if options.task else 1), line=PlainLine())
        if cells:
            results = backend.run_cells(spec, cells, every_cell, lambda: (manifest.refresh(), progress.cell_done()))
        if not results.lost:
            finished = backend.call(finish_job, spec)
    manifest.finish("finished" if finished else ("interrupted" if results.lost else "running"))
    counts: dict[str, int] = {}
    for outcome in results.outcomes.values():
        counts[outcome["status"]] = counts.get(outcome["status"], 0) + 1
    log(f"{len(cells)} cell(s) in {format_duration(time.perf_counter() - started)}: "
        + ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
        + (f", {len(results.lost)} lost" if results.lost else ""))
    failures = {f"{cell[0]} (seed {cell[1]})": outcome.get("error") or outcome["status"]
                for cell, outcome in results.outcomes.items() if outcome["status"] in (FAILED, DIVERGED)}
    failures.update({f"{cell[0]} (seed {cell[1]})": why for cell, why in results.lost.items()})
    if failures:
        advice = "; run the same command again to resume the lost cells" if results.lost else ""
        raise StudyFailed(f"{len(failures)} run(s) failed: " + "; ".join(f"{name}: {message}" for name, message in failures.items()) + advice)
    return run


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
