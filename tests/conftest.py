"""Shared test set-up: quiet TensorFlow, the project root, and a tiny study config."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _share_the_cores_between_workers() -> None:
    """Under pytest-xdist (`-n N`), N workers share the cores: give each worker's TensorFlow, and the
    `train` processes it starts (they inherit the environment), its share of the intra-op pool, as
    the runner's own worker processes get theirs (experiments.scale.thread_counts). Without it every
    worker's pools would size themselves to all the cores, and N of them would thrash. A thread count
    the user exported is kept. Set before TensorFlow is imported: it reads them once."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if workers <= 1:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    intra = max(1, cores // workers)
    for variable, value in (("TF_NUM_INTRAOP_THREADS", intra), ("TF_NUM_INTEROP_THREADS", 2 if intra >= 4 else 1)):
        os.environ.setdefault(variable, str(value))


_share_the_cores_between_workers()
from experiments.runtime import prefer_onednn  # noqa: E402

prefer_onednn()  # the tests train on the CPU kernels the runner uses (before TensorFlow loads)
PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = PROJECT_ROOT.parent / "shared"
SMOKE_CONFIG = PROJECT_ROOT / "experiments" / "configs" / "smoke.toml"
#: `backbone = TINY_BACKBONE`: a transfer model on the tests' own eight-layer backbone (tests/tiny_backbone.py)
TINY_BACKBONE = f"{PROJECT_ROOT / 'tests' / 'tiny_backbone.py'}:build"
#: The study the session trains once (smoke_study): the smoke preset, its transfer chain on TINY_BACKBONE
STUDY_CONFIG = PROJECT_ROOT / "tests" / "session_study.toml"


def run_cli_command(*arguments: str) -> list[str]:
    """The command line for `python -m report_builder ARGUMENTS`."""
    return [sys.executable, "-m", "report_builder", *arguments]


def cli_environment() -> dict[str, str]:
    environment = dict(os.environ)
    environment["TF_CPP_MIN_LOG_LEVEL"] = "3"
    environment["PYTHONPATH"] = str(PROJECT_ROOT) + os.pathsep + environment.get("PYTHONPATH", "")
    return environment


@pytest.fixture
def write_config(tmp_path):
    """Write a TOML config into tmp_path and return its path."""

    def write(text: str, name: str = "config.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


def _tree_listing(folder: Path) -> list[tuple[str, int, int]]:
    return sorted((str(path.relative_to(folder)), path.stat().st_size, path.stat().st_mtime_ns)
                  for path in folder.rglob("*") if path.is_file())


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory):
    """The smoke preset (its transfer chain on the tests' own backbone: tests/session_study.toml,
    STUDY_CONFIG) trained once for the whole test session, every model with two seeds (seeds 7 and
    8): (run folder, the `train` process's result). Shared by the tests of several files,
    and under pytest-xdist by all the workers: the first to need it trains it, under a file lock,
    in the session's shared temporary folder; the others wait and read it. Read-only: a test that
    changes it works on a copy (shutil.copytree), and this fixture fails at the end if one did not."""
    import json
    import subprocess

    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        shared = shared.parent  # one folder for all the workers of this session
    out = shared / "smoke-study"
    record = shared / "smoke-study.json"
    with FileLock(str(shared / "smoke-study.lock")):
        if not record.is_file():
            result = subprocess.run(run_cli_command("train", "--config", str(STUDY_CONFIG), "--out", str(out), "--seeds", "2"),
                                    cwd=PROJECT_ROOT, env=cli_environment(), capture_output=True, text=True, timeout=600)
            record.write_text(json.dumps({"returncode": result.returncode, "stdout": result.stdout, "stderr": result.stderr}),
                              encoding="utf-8")
    result = subprocess.CompletedProcess(["train"], **json.loads(record.read_text(encoding="utf-8")))
    assert result.returncode == 0, result.stderr
    run_dir = out / "smoke"
    before = _tree_listing(run_dir)
    yield run_dir, result
    assert _tree_listing(run_dir) == before, "a test changed the shared smoke study; it must work on a copy"


@pytest.fixture(autouse=True)
def _decoded_image_cache_in_tmp(tmp_path_factory, monkeypatch):
    """Folder data is decoded into the user cache folder ($XDG_CACHE_HOME/report-builder): keep it out of ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


@pytest.fixture(autouse=True)
def _isolate_stop_requests():
    """A test that runs the command line in-process installs its Ctrl-C / SIGTERM handlers and may
    leave a recorded stop request behind; neither may reach the next test."""
    import signal

    from experiments import interrupts

    saved = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    yield
    for number, handler in saved.items():
        signal.signal(number, handler)
    interrupts._received = None


# --------------------------------------------------------------------------- lanes and workers


def pytest_addoption(parser):
    parser.addoption("--unit", action="store_true",
                     help="the unit lane: leave out every test marked `training` (those that train a model with TensorFlow) "
                          "or `keras` (those that build keras.applications backbones or start TensorFlow in a process)")


def _shared_fixture(item) -> str | None:
    """The first fixture of the tests' own that `item` uses and that outlives one test (a study
    trained once for its module, or for the session), as a group name; None if it uses none."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return None
    shared = {}
    for name in info.names_closure:
        definitions = info.name2fixturedefs.get(name)
        if not definitions or definitions[-1].scope == "function" or not definitions[-1].baseid.startswith("tests"):
            continue  # pytest's and plugins' own (tmp_path_factory, worker_id) have no baseid in tests/
        shared.setdefault(definitions[-1].scope, name)
    if "session" in shared:  # a module fixture built on the session's study joins the study's group
        return shared["session"]
    return next((f"{_module_name(item)}::{name}" for name in shared.values()), None)


def _module_name(item) -> str:
    module = getattr(item, "module", None)
    return module.__name__ if module is not None else item.nodeid.split("::")[0]


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist's own, which reads the xdist_group marks added here
def pytest_collection_modifyitems(config, items):
    """--unit leaves the training and keras tests out. Then, for pytest-xdist's `--dist loadgroup`: the tests
    that share a fixture of module or session scope (a study trained once, say) form one group,
    which runs on one worker, so the fixture is built once rather than once per worker; and the
    modules that train come first, so that their long tests do not start last and leave one worker
    running alone at the end (the browser check's too). Modules stay whole (their module fixtures are set up once)."""
    for item in items:  # a test that reads the session's trained study waits for its training
        if "smoke_study" in getattr(item, "fixturenames", ()) and item.get_closest_marker("training") is None:
            item.add_marker(pytest.mark.training)
    if config.getoption("unit"):
        def heavy(item) -> bool:
            return item.get_closest_marker("training") is not None or item.get_closest_marker("keras") is not None

        config.hook.pytest_deselected(items=[item for item in items if heavy(item)])
        items[:] = [item for item in items if not heavy(item)]
    for item in items:
        group = _shared_fixture(item)
        if group is not None and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(group))
    long_modules = {_module_name(item) for item in items  # training, and the browser check (-m browser)
                    if item.get_closest_marker("training") is not None or item.get_closest_marker("browser") is not None}
    order = {name: index for index, name in enumerate(dict.fromkeys(_module_name(item) for item in items))}
    items.sort(key=lambda item: (_module_name(item) not in long_modules, order[_module_name(item)]))


def pytest_configure(config):
    """Under `--dist loadgroup`, pytest-xdist marks each grouped test's node id with "@group" and
    schedules by it. pytest 9.2 keeps node ids where pytest-xdist 3.8 does not write, so the groups
    are silently lost (pytest-dev/pytest-xdist#1386): every shared study is then trained once per
    worker and the suite takes minutes longer with nothing failing. Stop before the workers start."""
    if getattr(config, "workerinput", None) is not None or config.getoption("dist", "no") != "loadgroup":
        return
    from importlib.metadata import version

    def release(package: str) -> tuple[int, ...]:
        return tuple(int(part) for part in version(package).split(".")[:2] if part.isdigit())

    if release("pytest") >= (9, 2) and release("pytest-xdist") <= (3, 8):
        raise pytest.UsageError(
            f"pytest {version('pytest')} and pytest-xdist {version('pytest-xdist')} do not work together: --dist "
            "loadgroup would silently ignore the test groups (pytest-dev/pytest-xdist#1386); install the versions "
            'pyproject.toml names (pip install -e ".[dev]")')


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """A test marked `serial` measures something another test running beside it would disturb
    (peak memory): under pytest-xdist it waits until no other worker runs a test, and the others
    wait while it runs. Around each test's setup, call and teardown (module fixtures, such as a
    trained study, included) the worker holds a shared lock on one file of the session, and a
    serial test an exclusive one; a turnstile in front lets a waiting serial test in before new
    tests start. In one process (`-n 0`) nothing is locked."""
    workerinput = getattr(item.config, "workerinput", None)
    if workerinput is None:
        return (yield)
    import fcntl

    # the session's temporary folder, which all its workers share (pytest-xdist's own advice for shared fixtures)
    stem = item.config._tmp_path_factory.getbasetemp().parent / "serial-tests"
    serial = item.get_closest_marker("serial") is not None
    with open(f"{stem}.turnstile", "a") as turnstile, open(f"{stem}.lock", "a") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        if serial:
            fcntl.flock(lock, fcntl.LOCK_EX)
        else:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
            fcntl.flock(lock, fcntl.LOCK_SH)
        try:
            return (yield)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            if serial:
                fcntl.flock(turnstile, fcntl.LOCK_UN)


class RunnerLog(logging.Handler):
    """The runner's messages (experiments.console.log) as they are logged; `on_message`, when set,
    is called with each one (a test may wait on a message)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []
        self.on_message = None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.messages.append(message)
        if self.on_message is not None:
            self.on_message(message)


@pytest.fixture
def runner_log():
    from experiments.console import LOGGER

    handler = RunnerLog()
    LOGGER.addHandler(handler)
    yield handler
    LOGGER.removeHandler(handler)
