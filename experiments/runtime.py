"""TensorFlow settings that are fixed for the whole process and must be made before it is imported.

oneDNN. TensorFlow's x86-64 wheels carry oneDNN's CPU kernels but switch them on by default only
on CPUs with AVX-512 VNNI, AVX-512 BF16 or AMX. On an AVX2-only CPU (an AMD EPYC Zen 3, say) they
stay off and convolutions run on Eigen. Measured on such a CPU, oneDNN roughly halves the small
CNNs' training time (benchmarks/README.md), so the runner asks for it on every x86-64 CPU. A
`TF_ENABLE_ONEDNN_OPTS` already in the environment is the user's choice and is left alone
(`TF_ENABLE_ONEDNN_OPTS=0` turns oneDNN off). Where oneDNN is already TensorFlow's default,
asking for it changes nothing.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.abc
import os
import platform
import sys
from collections.abc import Iterator
from pathlib import Path

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
X86_64_NAMES = ("x86_64", "amd64")


def prefer_onednn(environment: dict[str, str] | None = None, machine: str | None = None) -> bool:
    """Ask TensorFlow for oneDNN kernels on x86-64 unless the user chose; True if this set it.

    Call it before TensorFlow is imported: TensorFlow reads the variable once, at import. It
    works on `environment` (default: this process's) so that a parent can prepare a child's.
    """
    environment = os.environ if environment is None else environment
    if ONEDNN_VARIABLE in environment:
        return False
    if (machine or platform.machine()).lower() not in X86_64_NAMES:
        return False
    if environment is os.environ and "tensorflow" in sys.modules:
        return False  # too late to matter for this process; say nothing false about it
    environment[ONEDNN_VARIABLE] = "1"
    return True


def onednn_enabled() -> bool | None:
    """Whether the TensorFlow in this process runs oneDNN's CPU kernels (None: cannot tell)."""
    try:
        from tensorflow.python.util import _pywrap_util_port  # private, but what TensorFlow itself asks
    except ImportError:
        return None
    try:
        return bool(_pywrap_util_port.IsMklEnabled())
    except Exception:  # an API change must not break a run that only wants to record it
        return None


def describe_cpu_kernels() -> str:
    """For the manifest: which CPU kernels TensorFlow used, in words."""
    enabled = onednn_enabled()
    if enabled is None:
        return "unknown"
    return "oneDNN" if enabled else "Eigen (oneDNN off)"


# --------------------------------------------------------------------------- the processor, read once


@functools.lru_cache(maxsize=1)
def _cpuinfo_lines() -> tuple[str, ...]:
    try:
        return tuple(Path("/proc/cpuinfo").read_text().splitlines())
    except OSError:
        return ()


def processor_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    for line in _cpuinfo_lines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (from /proc/cpuinfo on Linux; empty elsewhere)."""
    for line in _cpuinfo_lines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_supports_bf16() -> bool:
    """Whether the CPU has native bfloat16 matrix instructions (AVX-512 BF16 or AMX)."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


# --------------------------------------------------------------------------- a quiet start


class _QuietLoader(importlib.abc.Loader):
    """Runs TensorFlow's own loader with file descriptor 2 captured (see `quiet_tensorflow_start`)."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        _uninstall()  # its start is the one with the C++ lines
        module.__loader__ = module.__spec__.loader = self.loader  # the package keeps its own loader
        with _stderr_captured():
            self.loader.exec_module(module)


class _QuietStart(importlib.abc.MetaPathFinder):
    """Finds nothing itself: the spec the other finders give for tensorflow, its loader wrapped in
    `_QuietLoader` (a `find_spec` that only asks whether TensorFlow is installed imports nothing)."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _QuietLoader(spec.loader)
                return spec
        return None


def _uninstall() -> None:
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _QuietStart)]


def quiet_tensorflow_start() -> None:
    """Hide TensorFlow's C++ start-up lines (oneDNN and CUDA notices, printed twice by TensorFlow
    2.21 before its logging is set up, which TF_CPP_MIN_LOG_LEVEL does not reach) whenever this
    process first imports it, from wherever that is: a command that finds nothing to train never
    starts TensorFlow (6 s here) just to keep its start quiet. Does nothing once it is imported."""
    if "tensorflow" in sys.modules or any(isinstance(finder, _QuietStart) for finder in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietStart())


@contextlib.contextmanager
def _stderr_captured() -> Iterator[None]:
    """File descriptor 2 goes to a temporary file; if the block raises, what was printed there is
    written to stderr before the error propagates, so nothing useful is lost."""
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.buffer.write(captured.read())
            sys.stderr.flush()
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow now, its C++ start-up lines hidden (see `quiet_tensorflow_start`)."""
    quiet_tensorflow_start()
    import tensorflow  # noqa: F401


@functools.cache
def tensorflow_sees_a_gpu() -> bool:
    """Whether TensorFlow sees a GPU (imports it: ask only where something trains)."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def set_determinism(enabled: bool) -> None:
    """TensorFlow op determinism (with the per-run seeds): identical histories on one machine.
    Off, TensorFlow is not imported (its default is off)."""
    if enabled:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
