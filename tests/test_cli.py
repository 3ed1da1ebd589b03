"""The command line: one error hierarchy, one sentence per user error, and the console script."""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess

import pytest

from experiments.artifacts import ArtifactError, ArtifactFormatError
from experiments.config import ConfigError
from experiments.errors import StudyFailed, UserError
from experiments.images import DataError
from report_builder.__main__ import main
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
    import report_builder.__main__ as cli

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
