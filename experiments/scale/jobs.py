"""What a worker process runs (prepare the run, one cell, finish the study), and the fresh child process each job runs in."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from experiments.artifacts.folders import RunFolder
from experiments.artifacts.run_records import Manifest
from experiments.config import StudyConfig
from experiments.console import log
from experiments.data.images import summarize_skipped
from experiments.data.loading import load_study_data
from experiments.runtime import cpu_supports_bf16, import_tensorflow_quietly, prefer_onednn, set_determinism
from experiments.scale.environment import configure_threads, worker_name
from experiments.study.cell import CellContext, run_cell
from experiments.study.data_figures import record_data
from experiments.study.environment import check_builders, preflight
from experiments.study.manifest import study_header, write_manifest
from experiments.study.run import finish_study
from experiments.training.strategy import make_strategy
from experiments.training.tracking import StudyTracking


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
        import_tensorflow_quietly()
    configure_threads()
    config = spec.config
    set_determinism(config.training.deterministic)
    data = load_study_data(config)
    run = RunFolder(config.run_dir)

    def on_started() -> None:  # the manifest says what the cells say (the parent wrote its header)
        write_manifest(run, config, "running", data_fingerprint=data.fingerprint)

    context = CellContext(run, config, data, force=spec.force, since=spec.since,
                          bf16_cpu=cpu_supports_bf16(),
                          on_started=on_started, tracking=StudyTracking.for_config(config, run.root),
                          strategy=make_strategy(spec.strategy))
    _CONTEXT = (spec.token, context)
    return context


def prepare_job(spec: WorkerSpec) -> Manifest:
    """In a worker, before any cell: the checks that need TensorFlow, the data read once (building
    the decoded-image cache the other workers then open), dataset.json and the data figures.
    Returns the manifest's header."""

    with _CELL_LOCK:
        if spec.quiet:
            import_tensorflow_quietly()
        config = spec.config
        preflight(config)
        log(f"Reading data ({config.data.source}) in {worker_name()}...")
        context = worker_context(spec)
        data, run = context.data, context.run
        check_builders(config, data.image_size, len(data.class_names))  # the study's own code, before any training
        if data.skipped:
            log(f"  {summarize_skipped(data.skipped)} (listed in {run.dataset})")
        log(f"  {len(data.train)} train, {len(data.validation)} validation, {len(data.test)} test images; "
            f"classes: {', '.join(data.class_names)}")
        record_data(run, data)
        return study_header(config, data)


def cell_job(spec: WorkerSpec, model_name: str, seed: int, label: str, *after: Any) -> dict[str, Any]:
    """In a worker: run one cell (`run_cell` with wait semantics: a cell another process holds is
    waited for, then decided again). `after`: the results of the tasks it must follow (Dask's
    dependencies; not read). Returns the outcome as plain data."""

    with _CELL_LOCK:
        context = worker_context(spec)
        started = time.perf_counter()
        outcome = run_cell(context, model_name, seed, wait=True, where=f"{label} ({worker_name()})")
        return {"model": model_name, "seed": seed, "status": outcome.status, "error": outcome.error,
                "seconds": round(time.perf_counter() - started, 1), "worker": worker_name()}


def finish_job(spec: WorkerSpec) -> bool:
    """In a worker, after the cells: every model's curves, and choosing and testing the model if
    every planned cell has settled (`finish_study`). Returns whether it did."""

    with _CELL_LOCK:
        context = worker_context(spec)
        return finish_study(context.config, context.run, context.data)


WORKER_JOBS = {"prepare_job": prepare_job, "cell_job": cell_job, "finish_job": finish_job}


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
    """Run `job` (a name in WORKER_JOBS) with `spec` and `arguments` in a fresh Python process with
    `environment`, in that process's main thread, and return its result or raise its exception.
    Its output goes where this process's goes."""
    import pickle
    import tempfile

    with tempfile.TemporaryDirectory(prefix="report-builder-job-") as folder:
        request, answer = os.path.join(folder, "request.pickle"), os.path.join(folder, "answer.pickle")
        with open(request, "wb") as handle:
            pickle.dump((job, spec, tuple(arguments)), handle)
        command = [sys.executable, "-c", "from experiments.scale.jobs import child_main; child_main()", request, answer]
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

    prefer_onednn()
    request, answer = sys.argv[1], sys.argv[2]
    with open(request, "rb") as handle:
        job, spec, arguments = pickle.load(handle)
    try:
        outcome = (True, WORKER_JOBS[job](spec, *arguments))
    except Exception as error:  # an error the caller reports (or Dask retries); a crash leaves no answer
        outcome = (False, error)
    try:
        payload = pickle.dumps(outcome)
    except Exception as error:
        payload = pickle.dumps((False, RuntimeError(f"{type(outcome[1]).__name__}: {outcome[1]} (not picklable: {error})")))
    with open(answer + ".tmp", "wb") as handle:
        handle.write(payload)
    os.replace(answer + ".tmp", answer)
