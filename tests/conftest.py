"""Shared test set-up: quiet TensorFlow, the project root, and a tiny study config."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from experiments.runtime import prefer_onednn  # noqa: E402

prefer_onednn()  # the tests train on the CPU kernels the runner uses (before TensorFlow loads)
PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED = PROJECT_ROOT.parent / "shared"
SMOKE_CONFIG = PROJECT_ROOT / "experiments" / "configs" / "smoke.toml"


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
