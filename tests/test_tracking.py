"""TensorBoard and MLflow beside the run folder, the network-needs message and the progress line.

The pure parts (messages, estimates, options) need neither package; the rest trains tiny models
and reads what was written back with TensorBoard's event reader and MLflow's client on a SQLite
store in tmp_path. Those skip when the optional package is not installed."""

from __future__ import annotations

import importlib.util
import io
import signal
from pathlib import Path

import numpy as np
import pytest

from experiments.artifacts import CellFolder, RunState, read_json
from experiments.config import DATASET_URL, MODEL_NAMES, StudyConfig, config_hash, load_config
from experiments.console import StatusLine, estimate_seconds_left, format_duration, progress_line
from experiments.errors import UserError
from experiments.study.census import StudyProgress
from experiments.training.tracking import (
    MlflowLog,
    StudyTracking,
    check_tracking_packages,
    mlflow_tracking_uri,
    network_message,
    network_needs,
    tracked_cell,
)
from tests.conftest import SMOKE_CONFIG

# MLflow's SQLite store on SQLAlchemy 2.1 (not this project's to mend)
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning")

# --------------------------------------------------------------------------- the network-needs message


def test_one_message_lists_every_download_with_its_offline_alternative():
    config = StudyConfig()  # the default study: the archive from the web, ImageNet weights for transfer
    needs = network_needs(config, is_cached=lambda path: False)
    message = network_message(needs)
    assert [need.source for need in needs] == [
        DATASET_URL,
        "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_160_no_top.h5",
    ]
    assert message.startswith("This run needs the network for:")
    assert "--data-dir DIR" in message and "--base-weights PATH" in message
    assert "transfer, finetune, transfer_extended" in message
    assert message.index(DATASET_URL) < message.index("--data-dir DIR") < message.index("mobilenet_v2_weights")


def test_no_message_when_nothing_is_fetched():
    config = StudyConfig()
    assert network_message(network_needs(config, is_cached=lambda path: True)) is None
    config.data.source, config.training.base_weights = "synthetic", "none"
    assert network_needs(config, is_cached=lambda path: False) == []
    config = StudyConfig()
    config.study.models = ["baseline", "augmented"]  # no MobileNetV2: only the data
    assert [need.source for need in network_needs(config, is_cached=lambda path: False)] == [DATASET_URL]


def test_the_cache_checks_look_where_keras_keeps_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    config = StudyConfig()
    config.data.image_size = [224, 224]
    assert len(network_needs(config)) == 2
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "cats_and_dogs_filtered.zip").write_bytes(b"zip")
    assert [need.what for need in network_needs(config)] == ["the ImageNet weights of MobileNetV2 (for transfer, finetune, transfer_extended)"]
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5").write_bytes(b"h5")
    assert network_needs(config) == []
    config.data.cache_dir = str(tmp_path / "elsewhere")  # data.cache_dir moves the archive, not the weights
    assert [need.source for need in network_needs(config)] == [DATASET_URL]


def test_the_weights_file_name_is_the_one_keras_downloads():
    from experiments.models.backbones import BACKBONES

    mobilenet = BACKBONES["mobilenet_v2"]
    assert mobilenet.weights_file((160, 160)).endswith("_1.0_160_no_top.h5")
    assert mobilenet.weights_file((150, 150)).endswith("_1.0_224_no_top.h5")  # Keras falls back to 224
    assert mobilenet.weights_file((96, 128)).endswith("_1.0_224_no_top.h5")
    source = Path(importlib.util.find_spec("keras").origin).parent / "src" / "applications" / "mobilenet_v2.py"
    if source.is_file():  # read, not imported: no TensorFlow here
        text = source.read_text(encoding="utf-8")
        assert mobilenet.weights_url((160, 160)).rsplit("/", 1)[0] + "/" in text and "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_" in text
        assert "[96, 128, 160, 192, 224]" in text


def test_every_backbone_that_downloads_is_a_network_need(tmp_path, monkeypatch):
    from experiments.models.backbones import BACKBONES
    from experiments.models.recipes import ModelRecipe

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    config = StudyConfig()
    config.data.source = "synthetic"
    config.models = {"resnet": ModelRecipe("resnet", "transfer", backbone="resnet50v2", declared=True),
                     "scratch": ModelRecipe("scratch", "transfer", backbone="convnext_tiny", weights="none", declared=True)}
    config.study.models = ["baseline", "transfer", "resnet", "scratch"]
    config.training.base_weights = "imagenet"
    sources = [need.source for need in network_needs(config)]
    assert sources == [BACKBONES["mobilenet_v2"].weights_url((160, 160)), BACKBONES["resnet50v2"].weights_url((160, 160))]
    message = network_message(network_needs(config))
    assert "ResNet50V2 (for resnet)" in message and "[models.<name>]" in message and "ConvNeXt" not in message


def test_an_mlflow_server_is_a_network_need_without_its_password():
    config = StudyConfig()
    config.data.source, config.training.base_weights = "synthetic", "none"
    config.training.mlflow_uri = "https://user:secret@mlflow.example.org:5000"
    message = network_message(network_needs(config))
    assert "https://mlflow.example.org:5000" in message and "secret" not in message
    assert "--mlflow without a URI" in message


# --------------------------------------------------------------------------- the progress line


def test_the_progress_line_text():
    assert format_duration(0.4) == "0s" and format_duration(59) == "59s"
    assert format_duration(125) == "2m 05s" and format_duration(3 * 3600 + 7 * 60 + 9) == "3h 07m"
    assert progress_line(3, 10, 130, 340) == "Study: 3 of 10 cells done, 2m 10s elapsed, about 5m 40s left"
    assert progress_line(2, 10, 4, None) == "Study: 2 of 10 cells done, 4s elapsed, time left estimated once a cell has trained"
    assert progress_line(10, 10, 3700, 0) == "Study: 10 of 10 cells done, 1h 01m elapsed"


def test_the_estimate_uses_each_models_own_time_where_known():
    durations = {"baseline": [10.0, 20.0], "transfer": [100.0]}
    assert estimate_seconds_left(durations, ["baseline", "transfer", "finetune"]) == 15 + 100 + (130 / 3)
    assert estimate_seconds_left({}, ["baseline"]) is None
    assert estimate_seconds_left({}, []) == 0.0


class _Stream(io.StringIO):
    def __init__(self, terminal: bool):
        super().__init__()
        self.terminal = terminal

    def isatty(self) -> bool:
        return self.terminal


def test_on_a_terminal_the_line_is_rewritten_in_place_and_elsewhere_printed(monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    stream = _Stream(terminal=True)
    line = StatusLine(lambda: stream)
    progress = StudyProgress([("baseline", 7), ("baseline", 8), ("transfer", 7)], started=0.0, line=line)
    progress.cell_done("baseline", 7, trained_seconds=12.0)
    with line.paused():
        stream.write("[2/3] baseline, seed 8: skipped\n")
    progress.cell_done("baseline", 8)
    line.release()
    text = stream.getvalue()
    assert text.count("\n") == 2, "one message line, and the progress line left in place at the end"
    assert "\x1b[1G\x1b[2KStudy: 1 of 3 cells done" in text and "about 12s left" in text
    assert text.endswith("\n") and "Study: 2 of 3 cells done" in text.splitlines()[-1]
    monkeypatch.setenv("COLUMNS", "30")  # a narrow terminal: the line is cut to fit, one column to spare
    narrow = _Stream(terminal=True)
    StatusLine(lambda: narrow).show("Study: 1 of 12 cells done, 1m 05s elapsed, about 3m 20s left")
    assert narrow.getvalue() == "\x1b[1G\x1b[2KStudy: 1 of 12 cells done, 1…"
    plain = _Stream(terminal=False)
    logged = StudyProgress([("baseline", 7)], started=0.0, line=StatusLine(lambda: plain))
    logged.cell_done("baseline", 7, 3.0)
    assert plain.getvalue().startswith("Study: 1 of 1 cells done,") and "\r" not in plain.getvalue()


# --------------------------------------------------------------------------- options and packages


def test_the_options_set_unhashed_keys():
    from report_builder.cli import parse_arguments
    from report_builder.commands.train import config_overrides

    assert config_overrides(parse_arguments(["train", "--tensorboard", "--mlflow"])) == {
        "training.tensorboard": True, "training.mlflow": True}
    overrides = config_overrides(parse_arguments(["train", "--mlflow", "http://localhost:5000", "--epochs", "1"]))
    assert overrides["training.mlflow_uri"] == "http://localhost:5000" and overrides["training.mlflow"] is True
    assert "training.mlflow" not in config_overrides(parse_arguments(["train"]))
    plain = load_config(SMOKE_CONFIG)
    tracked = load_config(SMOKE_CONFIG, {"training.tensorboard": True, "training.mlflow": True, "training.mlflow_uri": "sqlite:///x.db"})
    assert all(config_hash(plain, name) == config_hash(tracked, name) for name in MODEL_NAMES)


def test_the_default_store_is_a_sqlite_file_in_the_output_folder(tmp_path):
    config = StudyConfig()
    config.study.out_dir = str(tmp_path / "runs")
    assert mlflow_tracking_uri(config, environ={}) == f"sqlite:///{(tmp_path / 'runs').resolve().as_posix()}/mlflow.db"
    assert mlflow_tracking_uri(config, environ={"MLFLOW_TRACKING_URI": "http://tracker:5000"}) == "http://tracker:5000"
    config.training.mlflow_uri = "sqlite:///elsewhere.db"
    assert mlflow_tracking_uri(config, environ={"MLFLOW_TRACKING_URI": "http://tracker:5000"}) == "sqlite:///elsewhere.db"


def test_a_missing_package_is_one_error_naming_the_extra():
    config = StudyConfig()
    config.training.tensorboard = True
    with pytest.raises(UserError, match=r'pip install -e "\.\[tensorboard\]"'):
        check_tracking_packages(config, find_spec=lambda name: None)
    config.training.tensorboard, config.training.mlflow = False, True
    with pytest.raises(UserError, match=r'pip install -e "\.\[mlflow\]"'):
        check_tracking_packages(config, find_spec=lambda name: None)
    with pytest.raises(UserError, match="sqlalchemy and alembic"):
        check_tracking_packages(config, find_spec=lambda name: None if name == "alembic" else object())
    check_tracking_packages(StudyConfig(), find_spec=lambda name: None)  # nothing asked, nothing needed


# --------------------------------------------------------------------------- MLflow errors never stop training


class _BrokenClient:
    """An MLflow client whose store went away after the experiment was opened."""

    def get_experiment_by_name(self, name):
        return type("Experiment", (), {"experiment_id": "1", "lifecycle_stage": "active"})()

    def __getattr__(self, name):
        def fail(*args, **kwargs):
            raise ConnectionError("database is locked")

        return fail


def test_an_mlflow_failure_warns_once_and_training_goes_on(tmp_path, capsys):
    log = MlflowLog("sqlite:///unused.db", "study", client=_BrokenClient())
    assert log.connect()
    seed_run = CellFolder("baseline", 7, tmp_path / "seed-7")
    epochs = [{"epoch": 1, "loss": 0.5, "accuracy": 0.7, "val_loss": 0.6, "val_accuracy": 0.6, "seconds": 1.0}]
    log.open_cell(seed_run, {"config_hash": "abc"}, resumed=False, epochs=epochs)
    log.log_epochs(seed_run, epochs)
    log.close_cell(seed_run, "FINISHED", "complete", create=True)
    log.record_finished(seed_run)
    err = capsys.readouterr().err
    assert err.count("warning: MLflow logging failed") == 1
    assert "ConnectionError: database is locked" in err and "training goes on" in err


def test_an_unusable_store_is_a_warning_not_an_error(capsys):
    pytest.importorskip("mlflow")
    log = MlflowLog("no-such-scheme://nowhere", "study")
    assert log.connect() is False
    assert capsys.readouterr().err.count("warning: MLflow logging failed") == 1


# --------------------------------------------------------------------------- reading back what was written


def _event_scalars(directory: Path, tag: str) -> dict[int, float]:
    """{step: value} of a scalar summary in the event files of `directory` (all of them, in order)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    accumulator = EventAccumulator(str(directory), size_guidance={"tensors": 0, "scalars": 0})
    accumulator.Reload()
    if tag in accumulator.Tags()["tensors"]:  # tf.summary (TF 2) writes scalars as tensors
        return {event.step: float(tensor_util.make_ndarray(event.tensor_proto)) for event in accumulator.Tensors(tag)}
    return {event.step: event.value for event in accumulator.Scalars(tag)}


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory) -> str:
    """One SQLite store for this module's tests (each uses its own experiment): MLflow creates
    its tables once per database, which takes seconds."""
    return f"sqlite:///{(tmp_path_factory.mktemp('mlflow') / 'mlflow.db').as_posix()}"


def _mlflow_runs(uri: str, experiment: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    return client, (client.search_runs([found.experiment_id]) if found else [])


@pytest.mark.training
def test_a_study_writes_tensorboard_events_and_mlflow_runs_for_every_cell(tmp_path, capsys, mlflow_store):
    """Seed 7 trains without either option; then with both, seed 7 is skipped (and logged from
    its files) and seed 8 trains (logged live); passing the finished cells again adds nothing."""
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    from experiments.study.run import run_study

    uri = mlflow_store
    plain = {"study.out_dir": str(tmp_path / "runs"), "study.models": ["baseline"], "training.epochs": 2}
    run_study(load_config(SMOKE_CONFIG, plain))
    run_dir = tmp_path / "runs" / "smoke"
    assert not (run_dir / "tensorboard").exists()
    capsys.readouterr()
    both = {**plain, "study.seeds": 2, "training.tensorboard": True, "training.mlflow_uri": uri}
    run_study(load_config(SMOKE_CONFIG, both))
    err = capsys.readouterr().err
    assert "Study: 1 of 2 cells done" in err and "Study: 2 of 2 cells done" in err
    assert "This run needs the network" not in err  # synthetic data, no ImageNet weights
    assert "warning" not in err.lower(), err

    client, runs = _mlflow_runs(uri, "smoke")
    assert sorted(run.data.params["seed"] for run in runs) == ["7", "8"]
    for seed in (7, 8):
        cell = run_dir / "models" / "baseline" / f"seed-{seed}"
        history = read_json(cell / "history.json")["epochs"]
        events = run_dir / "tensorboard" / "baseline" / f"seed-{seed}"
        for subfolder, key in (("train", "loss"), ("validation", "val_loss")):
            logged = _event_scalars(events / subfolder, "epoch_loss")
            assert sorted(logged) == [1, 2], f"one epoch_loss per epoch, at the epoch's number ({subfolder}, seed {seed})"
            assert [logged[record["epoch"]] for record in history] == pytest.approx([record[key] for record in history], rel=1e-5)
        run = next(run for run in runs if run.data.params["seed"] == str(seed))
        assert run.info.status == "FINISHED" and run.info.run_name == f"baseline seed {seed}"
        assert run.data.params["model"] == "baseline" and run.data.params["config_hash"] == read_json(cell / "state.json")["config_hash"]
        assert {"data_fingerprint", "precision"} <= set(run.data.params)
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            metric = sorted(client.get_metric_history(run.info.run_id, key), key=lambda point: point.step)
            assert [point.step for point in metric] == [record["epoch"] for record in history]
            assert [point.value for point in metric] == pytest.approx([record[key] for record in history])
        assert {item.path for item in client.list_artifacts(run.info.run_id)} == {
            "history.json", "state.json", "validation_predictions.json"}
        assert read_json(cell / ".mlflow_run.json")["run_id"] == run.info.run_id
    assert next(run for run in runs if run.data.params["seed"] == "7").data.tags.get("report_builder.logged_from")
    event_files = sorted(path.name for path in (run_dir / "tensorboard").rglob("events.out.tfevents.*"))

    later = StudyTracking(load_config(SMOKE_CONFIG, both), run_dir)  # as the next `train`, which skips both cells
    for seed in (7, 8):
        later.cell_skipped(CellFolder("baseline", seed, run_dir / "models" / "baseline" / f"seed-{seed}"))
    assert "warning" not in capsys.readouterr().err.lower()
    _, again = _mlflow_runs(uri, "smoke")
    assert sorted(run.info.run_id for run in again) == sorted(run.info.run_id for run in runs)
    assert sorted(path.name for path in (run_dir / "tensorboard").rglob("events.out.tfevents.*")) == event_files


def _tiny_setup(tmp_path: Path):
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(5)
    rng = np.random.default_rng(5)
    points, labels = rng.normal(size=(32, 4)).astype("float32"), np.array([0, 1] * 16, dtype=np.int32)
    dataset = tf.data.Dataset.from_tensor_slices((points, labels)).batch(8)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    return model, dataset


@pytest.mark.training
def test_a_resumed_cell_adds_event_files_and_continues_its_mlflow_run(tmp_path, monkeypatch, mlflow_store):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    from experiments import interrupts
    from experiments.training.fit import fit

    config = StudyConfig()
    config.study.run_name = "resume"
    config.training.tensorboard = True
    config.training.mlflow_uri = mlflow_store
    study_tracking = StudyTracking(config, tmp_path)
    seed_run = CellFolder("baseline", 5, tmp_path / "models" / "baseline" / "seed-5")
    state = RunState("baseline", 5, "h", "f", "partial", 0, precision="float32")

    model, dataset = _tiny_setup(tmp_path)
    monkeypatch.setattr(interrupts, "_received", signal.SIGTERM)  # stop after epoch 1 is committed
    with pytest.raises(interrupts.Interrupted), tracked_cell(study_tracking, seed_run):
        fit(model, seed_run, dataset, dataset, state, first_epoch=0, last_epoch=3, verbose=0, tracking=study_tracking)
    first_run = read_json(seed_run.mlflow_link)["run_id"]
    client, runs = _mlflow_runs(config.training.mlflow_uri, "resume")
    assert [run.info.status for run in runs] == ["KILLED"]
    monkeypatch.setattr(interrupts, "_received", None)

    model, dataset = _tiny_setup(tmp_path)
    with tracked_cell(study_tracking, seed_run):
        result = fit(model, seed_run, dataset, dataset, state, first_epoch=0, last_epoch=3, verbose=0, tracking=study_tracking)
    assert result.resumed_epochs == 1
    events = tmp_path / "tensorboard" / "baseline" / "seed-5" / "train"
    assert len(list(events.glob("events.out.tfevents.*"))) == 2, "the resumed fit adds an event file beside the first"
    assert sorted(_event_scalars(events, "epoch_loss")) == [1, 2, 3]
    client, runs = _mlflow_runs(config.training.mlflow_uri, "resume")
    assert [(run.info.run_id, run.info.status) for run in runs] == [(first_run, "FINISHED")], "one MLflow run, continued"
    assert [point.step for point in client.get_metric_history(first_run, "loss")] == [1, 2, 3]
    assert [point.value for point in client.get_metric_history(first_run, "loss")] == pytest.approx(
        [record["loss"] for record in result.epochs])


@pytest.mark.parametrize("where", ["tensorboard", "tensorboard/baseline", "tensorboard/baseline/seed-7/validation"])
def test_a_file_where_a_tensorboard_folder_goes_is_one_sentence_before_training_and_is_left_alone(tmp_path, capsys, where):
    pytest.importorskip("tensorboard")
    from report_builder.__main__ import main

    out = tmp_path / "out"
    blocker = out / "smoke" / where
    blocker.parent.mkdir(parents=True)
    blocker.write_text("the user's notes")
    (out / "smoke" / ".report-builder.json").write_text('{"generator": "report-builder", "kind": "run"}')  # a run of ours
    status = main(["train", "--config", str(SMOKE_CONFIG), "--out", str(out), "--models", "baseline", "--tensorboard"])
    err = capsys.readouterr().err
    assert status == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and f"writes its event files into the folder '{blocker}', but a file is there" in lines[0], err
    assert "FailedPrecondition" not in err and "Traceback" not in err and "Epoch 1" not in err
    assert blocker.read_text() == "the user's notes"
    assert not (out / "smoke" / "models").exists()  # nothing trained
