"""The command line: one error hierarchy, one sentence per user error, and the console script."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess

import pytest

from experiments.artifacts import ArtifactError, ArtifactFormatError
from experiments.config import ConfigError
from experiments.errors import DataError, StudyFailed, UserError
from report_builder.cli import main
from report_builder.publish import PublishError
from report_builder.site import SiteBuildError
from report_builder.views import ReportError


@pytest.mark.parametrize("error_class", [ConfigError, DataError, ArtifactError, ReportError, PublishError, SiteBuildError])
def test_every_user_error_is_one_kind_with_status_2(error_class):
    assert issubclass(error_class, UserError) and error_class("x").exit_status == 2


def test_a_malformed_artifact_is_a_user_error_naming_file_and_field():
    error = ArtifactFormatError("run/state.json", "field 'seed' must be an integer")
    assert isinstance(error, UserError) and error.exit_status == 2
    assert str(error) == "run/state.json: field 'seed' must be an integer"


@pytest.mark.parametrize("error, status", [(ConfigError("study.seeds must be 1 to 1000"), 2),
                                           (StudyFailed("1 run(s) failed: baseline (seed 1): loss became NaN in epoch 2"), 1)])
def test_the_cli_prints_one_sentence_and_the_errors_status(monkeypatch, capsys, error, status):
    import report_builder.cli as cli

    def fail(arguments):
        raise error

    monkeypatch.setattr(cli, "command_render", fail)
    assert main(["render"]) == status
    assert capsys.readouterr().err == f"error: {error}\n"


def test_the_console_script_runs_the_same_command_line():
    scripts = [entry for entry in importlib.metadata.entry_points(group="console_scripts") if entry.name == "report-builder"]
    assert scripts and scripts[0].load() is main
    executable = shutil.which("report-builder")
    if executable:
        result = subprocess.run([executable, "--help"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "render" in result.stdout and "build" in result.stdout


def test_rendering_and_publishing_never_load_tensorflow():
    """The report half imports the format's constants from experiments/, but never TensorFlow."""
    import sys as _sys

    code = ("import sys; import report_builder.render, report_builder.site, report_builder.publish, "
            "report_builder.__main__; print('tensorflow' in sys.modules or 'keras' in sys.modules)")
    result = subprocess.run([_sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr


# --------------------------------------------------------------------------- closed pipes and full disks


def _cache_listing_command(tmp_path) -> list[str]:
    """A command that prints a line and imports no TensorFlow: the cache listing of an empty folder."""
    from tests.conftest import run_cli_command

    return run_cli_command("cache", "--cache-dir", str(tmp_path / "caches"))


def test_a_closed_standard_output_ends_the_command_quietly_with_status_141(tmp_path):
    from tests.conftest import PROJECT_ROOT, cli_environment

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the command writes a byte (as `| head -0`, or `| true` done)
    try:
        result = subprocess.run(_cache_listing_command(tmp_path), stdout=write_end, stderr=subprocess.PIPE, text=True,
                                cwd=PROJECT_ROOT, env=cli_environment(), timeout=120)
    finally:
        os.close(write_end)
    assert result.returncode == 141 and result.stderr == ""


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_disk_under_standard_output_is_one_sentence_naming_it(tmp_path):
    from tests.conftest import PROJECT_ROOT, cli_environment

    with open("/dev/full", "w") as full:
        result = subprocess.run(_cache_listing_command(tmp_path), stdout=full, stderr=subprocess.PIPE, text=True,
                                cwd=PROJECT_ROOT, env=cli_environment(), timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: Cannot write standard output: the disk is full") and result.stderr.count("\n") == 1


def test_a_disk_that_fills_up_during_render_is_one_sentence_naming_the_docs_folder(tmp_path, monkeypatch, capsys):
    import errno

    from report_builder.commands import render

    def fills_the_disk(*arguments, **keywords):
        raise OSError(errno.ENOSPC, "No space left on device")  # as a write() gives it: no file name

    monkeypatch.setattr(render, "render_report", fills_the_disk)
    docs = tmp_path / "docs"
    assert main(["render", "--artifacts", str(tmp_path / "run"), "--docs", str(docs)]) == 2
    error = capsys.readouterr().err
    assert error == (f"error: Cannot write into the docs folder {docs}: the disk is full (No space left on device); "
                     "free some space and run the same command again (what was written before is intact).\n")
