"""A worker's environment, set before it imports TensorFlow: its threads, its GPU, its name in messages."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from experiments.console import log

THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


WORKER_VARIABLE = "REPORT_BUILDER_WORKER"  # the worker's number, for its messages


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
