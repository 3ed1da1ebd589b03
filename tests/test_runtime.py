"""The runner asks TensorFlow for oneDNN's CPU kernels on x86-64, and leaves a user's choice alone."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from experiments.runtime import ONEDNN_VARIABLE, X86_64_NAMES, prefer_onednn
from tests.conftest import PROJECT_ROOT


def test_oneDNN_is_asked_for_on_x86_64_when_the_user_has_not_chosen():
    environment: dict[str, str] = {}
    assert prefer_onednn(environment, machine="x86_64") is True
    assert environment == {ONEDNN_VARIABLE: "1"}
    assert prefer_onednn(environment := {}, machine="AMD64") and environment[ONEDNN_VARIABLE] == "1"


def test_a_choice_already_in_the_environment_is_kept():
    for choice in ("0", "1", "false"):
        environment = {ONEDNN_VARIABLE: choice}
        assert prefer_onednn(environment, machine="x86_64") is False
        assert environment == {ONEDNN_VARIABLE: choice}


def test_other_processors_keep_tensorflow_s_default():
    for machine in ("aarch64", "arm64", "ppc64le"):
        environment: dict[str, str] = {}
        assert prefer_onednn(environment, machine=machine) is False
        assert environment == {}


ONEDNN_LOG_LINE = "oneDNN custom operations are on"
PROBE = "from experiments.runtime import describe_cpu_kernels; print('kernels:', describe_cpu_kernels())"


@pytest.mark.keras
@pytest.mark.skipif(platform.machine().lower() not in X86_64_NAMES,
                    reason="TF_ENABLE_ONEDNN_OPTS switches oneDNN on and off only in TensorFlow's x86-64 wheels")
def test_the_recorded_kernels_match_what_tensorflow_loaded():
    """Two fresh pythons, one told TF_ENABLE_ONEDNN_OPTS=0 and one =1: each must record the kernels
    it was told to use, and TensorFlow's own start-up log must agree."""
    children = {}
    for choice in ("0", "1"):
        environment = {**os.environ, ONEDNN_VARIABLE: choice, "TF_CPP_MIN_LOG_LEVEL": "0",
                       "PYTHONPATH": str(PROJECT_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        children[choice] = subprocess.Popen([sys.executable, "-c", PROBE], cwd=PROJECT_ROOT, env=environment,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = {choice: child.communicate(timeout=180) for choice, child in children.items()}
    for choice, child in children.items():
        assert child.returncode == 0, results[choice][1]
    (off_out, off_log), (on_out, on_log) = results["0"], results["1"]
    assert "kernels: Eigen (oneDNN off)" in off_out.splitlines()
    assert "kernels: oneDNN" in on_out.splitlines()
    assert ONEDNN_LOG_LINE not in off_log
    if ONEDNN_LOG_LINE in on_log + off_log:  # TensorFlow versions that announce oneDNN must announce it here
        assert ONEDNN_LOG_LINE in on_log


def _child_importing_a_fake_tensorflow(tmp_path, body: str,
                                       code: str = "from experiments.runtime import import_tensorflow_quietly; import_tensorflow_quietly(); print('imported')"):
    import subprocess
    import sys

    (tmp_path / "tensorflow.py").write_text(f"import os\nos.write(2, b'start-up line from C++\\n')\n{body}\n")
    project_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), project_root])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=60)


def test_tensorflow_start_up_lines_are_hidden(tmp_path):
    result = _child_importing_a_fake_tensorflow(tmp_path, "")
    assert result.returncode == 0 and result.stdout.strip() == "imported"
    assert "start-up line" not in result.stderr


def test_after_a_quiet_start_the_first_import_from_anywhere_is_hidden_even_after_a_probe(tmp_path):
    """`train` asks for a quiet start and imports TensorFlow only if something trains: wherever the
    first import happens (here a module imported later), its lines are hidden; asking whether it is
    installed (importlib.util.find_spec) imports nothing and keeps the quiet start for the import."""
    (tmp_path / "elsewhere.py").write_text("import tensorflow\n")
    code = ("import importlib.util, sys; from experiments.runtime import quiet_tensorflow_start; quiet_tensorflow_start(); "
            "assert importlib.util.find_spec('tensorflow') is not None and 'tensorflow' not in sys.modules; "
            "import elsewhere; print('imported')")
    result = _child_importing_a_fake_tensorflow(tmp_path, "", code)
    assert result.returncode == 0 and result.stdout.strip() == "imported", result.stderr
    assert "start-up line" not in result.stderr


def test_a_failing_import_shows_what_it_printed(tmp_path):
    result = _child_importing_a_fake_tensorflow(tmp_path, "raise ImportError('libcudnn missing')")
    assert result.returncode != 0
    assert "start-up line from C++" in result.stderr and "libcudnn missing" in result.stderr
