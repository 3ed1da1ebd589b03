"""The model-compute benchmark refuses bad options with one message naming the option."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "model_compute.py"


@pytest.fixture(scope="module")
def model_compute():
    spec = importlib.util.spec_from_file_location("model_compute", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
