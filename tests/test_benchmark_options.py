"""The benchmarks refuse bad options with one message naming the option, and set up their runs as documented."""

import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str):
    """A benchmark script as a module (they are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model_compute():
    return load_script("model_compute")


@pytest.fixture(scope="module")
def study_speed():
    return load_script("study_speed")


def test_defaults_time_the_four_study_models_in_float32(model_compute):
    args = model_compute.parse_arguments([])
    assert args.models == ["baseline", "augmented", "preprocessed", "transfer"]
    assert args.precisions == ["none"]
    assert model_compute.parse_arguments(["--models", "all"]).models[-1] == "finetune"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--models", "baseline,resnet"], "--models: unknown model 'resnet'"),
        (["--precisions", "none,int8"], "--precisions: unknown policy 'int8'"),
        (["--epochs", "1"], "--epochs must be at least 2"),
    ],
)
def test_bad_options_stop_with_a_message_naming_the_option(model_compute, capsys, argv, message):
    with pytest.raises(SystemExit):
        model_compute.parse_arguments(argv)
    assert message in capsys.readouterr().err


def test_the_reference_runs_on_tensorflow_s_default_kernels_whatever_the_shell_exports(study_speed):
    for exported in ({}, {"TF_ENABLE_ONEDNN_OPTS": "1"}, {"TF_ENABLE_ONEDNN_OPTS": "0"}):
        environment = study_speed.child_environment("reference", [], {}, base=exported)
        assert "TF_ENABLE_ONEDNN_OPTS" not in environment
    forced = study_speed.child_environment("reference", ["onednn"], {}, base={})
    assert forced["TF_ENABLE_ONEDNN_OPTS"] == "1"


def test_ours_runs_on_the_kernels_the_runner_asks_for(study_speed, monkeypatch):
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    assert study_speed.child_environment("ours", [], {}, base={})["TF_ENABLE_ONEDNN_OPTS"] == "1"
    kept = study_speed.child_environment("ours", [], {}, base={"TF_ENABLE_ONEDNN_OPTS": "0"})
    assert kept["TF_ENABLE_ONEDNN_OPTS"] == "0"  # the user's choice, as the runner keeps it
    lever = study_speed.parse_ours_options("no-onednn")
    assert study_speed.child_environment("ours", [], lever, base={})["TF_ENABLE_ONEDNN_OPTS"] == "0"


def test_unknown_reference_options_are_named(study_speed, capsys, tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "validation").mkdir()
    with pytest.raises(SystemExit):
        study_speed.parse_arguments(["--data-dir", str(tmp_path), "--reference-options", "onednn,fast"])
    assert "--reference-options: unknown fast" in capsys.readouterr().err
    args = study_speed.parse_arguments(["--data-dir", str(tmp_path), "--reference-options", "onednn,no-autotune", "--quick"])
    assert args.reference_options == ["onednn", "no-autotune"] and args.epochs == 2
