"""The typed artifact records (experiments.artifacts): what they read, what they refuse, and
that docs/guide/artifacts.md documents exactly the fields they write."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from experiments.artifacts import (
    ArtifactFormatError,
    BaseWeights,
    CheckpointProgress,
    ComparisonPairs,
    Dataset,
    DataSource,
    Epoch,
    Execution,
    History,
    Layer,
    MajorityBaseline,
    Manifest,
    Metrics,
    ModelEntry,
    ModelScore,
    ModelSummary,
    RunEntry,
    RunState,
    Selection,
    SkippedEntry,
    SplitFiles,
    StudyModel,
    StudyRecord,
    TestEvaluation,
    TestPrediction,
    ValidationPredictions,
    summary_text_named,
)
from experiments.config import MODEL_NAMES

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guide" / "artifacts.md"
SHIPPED_RUN = Path(__file__).resolve().parents[1] / "artifacts" / "cats-vs-dogs"

EXAMPLES = {
    "models/<model>/seed-<seed>/history.json": History("baseline", 1337, "float32", [Epoch(1, 0.69, 0.52, 0.68, 0.55, 9.8)]),
    "models/<model>/seed-<seed>/checkpoint/progress.json": CheckpointProgress("epoch-0001.keras", [Epoch(1)]),
    "models/<model>/seed-<seed>/state.json": RunState("finetune", 1337, "c", "d", "complete", 5, 5, 1.0, None, "float32",
                                                      "t0", "t1", starting_point="s"),
    "models/<model>/summary.json": ModelSummary("transfer", "t", "d", [Layer("dense", "Dense", "(None, 2)", 10, True, 10)], 10, 10, 0, ""),
    "models/<model>/seed-<seed>/validation_predictions.json": ValidationPredictions("baseline", 1337, 1, "0" * 64, ["a", "b"], [0],
                                                                                    [1], [0.5]),
    # the guide's placeholders (<model>, <seed>) and free mappings (config, versions) by the names it shows
    "manifest.json": Manifest(
        "r", {}, "h", "running", [1337], {"<model>": ModelEntry("complete", 1.0, 1, None, "float32", {"<seed>": RunEntry("complete")})},
        "f", DataSource("folder", "d"), [SkippedEntry("x", "y")], BaseWeights("file", "p", "n", "s"),
        {"python": "3", "tensorflow": "2", "keras": "3", "numpy": "2"}, ["cpu"],
        {"platform": "p", "processor": "c", "cpu_count": 2, "gpus": [], "cpu_kernels": "oneDNN"}, "g", "t0", "t1",
        Execution(2, None, 0, 4, "none", "h"), 1.0,
        StudyRecord([StudyModel("transfer", "transfer", "t", "d", False, True, False, 0.2, "mobilenet_v2", "MobileNetV2", "p")],
                    ComparisonPairs("reference", (("finetune", "transfer"),), "transfer"), ["data.source"], [])),
    "dataset.json": Dataset(
        ["cats", "dogs"], [160, 160], 1337, {split: SplitFiles(2, {"cats": 1, "dogs": 1}, ["a", "b"]) for split in ("train", "validation", "test")},
        0.2, MajorityBaseline("cats", "r", {"train": 0.5, "validation": 0.5, "test": 0.5}), [SkippedEntry("x", "y")],
        DataSource("folder", "d"), "f"),
    "metrics.json": Metrics(
        "h", "f", Selection("val_accuracy", "r", dict.fromkeys(MODEL_NAMES, 0.5), dict.fromkeys(("1337", "1338", "1339"), 0.5)),
        "finetune", 1338, {"<model>": ModelScore(0.2, 0.9)},
        TestEvaluation("finetune", 1338, 0.1, 0.5, 1, 2, ["cats", "dogs"], [[1, 0], [1, 0]], [TestPrediction("f", "cats", "dogs", 0.8)]),
        "s"),
}


def keys_of(value: object) -> set[str]:
    """Every key of a JSON value, at any depth (placeholders such as <model> left out)."""
    if isinstance(value, dict):
        return {key for key in value if re.fullmatch(r"\w+", key)} | {key for item in value.values() for key in keys_of(item)}
    if isinstance(value, list):
        return {key for item in value for key in keys_of(item)}
    return set()


def documented_keys(file_name: str) -> set[str]:
    """The keys of the JSON example under the guide's heading for `file_name`."""
    section = GUIDE.read_text(encoding="utf-8").split(f"## `{file_name}`\n", 1)[1].split("\n## ", 1)[0]
    example = section.split("```json\n", 1)[1].split("```", 1)[0]
    return set(re.findall(r'"(\w+)":', example))


@pytest.mark.parametrize("file_name", sorted(EXAMPLES))
def test_the_guide_documents_every_field_a_record_writes_and_no_other(file_name):
    record = EXAMPLES[file_name]
    assert documented_keys(file_name) == keys_of(record.to_json())


@pytest.mark.parametrize("file_name", sorted(EXAMPLES))
def test_a_record_reads_back_what_it_writes(tmp_path, file_name):
    record = EXAMPLES[file_name]
    path = record.write(tmp_path / "record.json")
    assert type(record).read(path) == record


def test_the_shipped_run_reads_and_writes_back_byte_for_byte(tmp_path):
    paths = [SHIPPED_RUN / name for name in ("manifest.json", "dataset.json", "metrics.json")]
    paths += sorted(SHIPPED_RUN.glob("models/*/seed-*/*.json")) + sorted(SHIPPED_RUN.glob("models/*/summary.json"))
    for path in paths:
        record_type = {"history.json": History, "state.json": RunState, "summary.json": ModelSummary,
                       "validation_predictions.json": ValidationPredictions, "manifest.json": Manifest,
                       "dataset.json": Dataset, "metrics.json": Metrics}[path.name]
        record = record_type.read(path)
        assert record.write(tmp_path / path.name).read_bytes() == path.read_bytes(), path


@pytest.mark.parametrize(("change", "message"), [
    (lambda data: data["epochs"][1].update(val_accuracy="high"), "field 'epochs[1].val_accuracy' must be a number or null"),
    (lambda data: data["epochs"][0].pop("epoch"), "field 'epochs[0].epoch' must be an integer"),
    (lambda data: data.update(epochs={}), "field 'epochs' must be a list"),
    (lambda data: data.update(seed="1337"), "field 'seed' must be an integer"),
    (lambda data: data.update(schema_version=1), "field 'schema_version' is 1, expected 2"),
])
def test_a_malformed_history_is_one_error_naming_the_file_and_the_field(tmp_path, change, message):
    data = History("baseline", 1337, None, [Epoch(1, 0.5), Epoch(2, 0.4)]).to_json()
    change(data)
    path = tmp_path / "history.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ArtifactFormatError) as caught:
        History.read(path)
    assert str(caught.value) == f"{path}: {message}"


def test_unknown_keys_are_ignored_and_a_missing_file_reads_as_none(tmp_path):
    data = {**RunState("baseline", 1, "c", "d", "partial", 0).to_json(), "from_a_later_version": True}
    (tmp_path / "state.json").write_text(json.dumps(data), encoding="utf-8")
    assert RunState.read(tmp_path / "state.json") == RunState("baseline", 1, "c", "d", "partial", 0)
    assert RunState.read(tmp_path / "missing.json") is None
    (tmp_path / "broken.json").write_text("{", encoding="utf-8")
    with pytest.raises(ArtifactFormatError, match="broken.json: not valid JSON"):
        RunState.read(tmp_path / "broken.json")


@pytest.mark.parametrize(("name", "change", "message"), [
    ("manifest.json", lambda data: data["models"]["transfer"]["runs"]["1337"].update(wall_seconds="long"),
     "field 'models.transfer.runs.1337.wall_seconds' must be a number or null"),
    ("manifest.json", lambda data: data.update(seeds=[1337, "1338"]), "field 'seeds' must list integers"),
    ("manifest.json", lambda data: data["base_weights"].pop("kind"), "field 'base_weights.kind' must be a string"),
    ("dataset.json", lambda data: data["splits"]["validation"]["label_counts"].update(cats=-1),
     "field 'splits.validation.label_counts.cats' must be a count (an integer, 0 or more)"),
    ("dataset.json", lambda data: data["majority_baseline"]["accuracy"].update(test=50),
     "field 'majority_baseline.accuracy.test' is 50, not an accuracy between 0 and 1"),
    ("dataset.json", lambda data: data.update(image_size=[160]), "field 'image_size' must be [height, width] in pixels"),
    ("metrics.json", lambda data: data["test"]["confusion_matrix"].pop(), "field 'test.confusion_matrix' must be 2 rows of 2 counts"),
    ("metrics.json", lambda data: data["test"].update(correct=999), "field 'test.correct' is 999, not between 0 and total"),
    ("metrics.json", lambda data: data["selection"]["candidates"].update(transfer="best"),
     "field 'selection.candidates.transfer' must be a number or null"),
])
def test_a_malformed_run_file_is_one_error_naming_the_file_and_the_field(tmp_path, name, change, message):
    path = SHIPPED_RUN / name
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    broken = tmp_path / name
    broken.write_text(json.dumps(data), encoding="utf-8")
    record_type = {"manifest.json": Manifest, "dataset.json": Dataset, "metrics.json": Metrics}[name]
    with pytest.raises(ArtifactFormatError) as caught:
        record_type.read(broken)
    assert str(caught.value).startswith(f"{broken}: {message}")


def test_side_files_read_without_a_schema_version_and_as_nothing_when_unusable(tmp_path):
    from experiments.artifacts import CellOwner, MlflowLink

    owner = tmp_path / ".cell.owner.json"
    owner.write_text(json.dumps({"pid": 12, "host": "node", "task": "training transfer, seed 1"}), encoding="utf-8")
    assert CellOwner.read_or_none(owner) == CellOwner(12, "node", "training transfer, seed 1")
    owner.write_text(json.dumps({"pid": "12", "host": "node", "task": "t"}), encoding="utf-8")
    assert CellOwner.read_or_none(owner) is None and CellOwner.read_or_none(tmp_path / "gone.json") is None
    link = MlflowLink("sqlite:///m.db", "1", "abc").write(tmp_path / ".mlflow_run.json")
    assert MlflowLink.read_or_none(link) == MlflowLink("sqlite:///m.db", "1", "abc")
    link.write_text("{", encoding="utf-8")
    assert MlflowLink.read_or_none(link) is None


def test_a_format_error_crosses_a_process_boundary_whole():
    """Worker processes (--workers, Dask) send their exceptions back pickled."""
    import pickle

    error = pickle.loads(pickle.dumps(ArtifactFormatError("run/history.json", "field 'seed' must be an integer")))
    assert isinstance(error, ArtifactFormatError) and error.detail == "field 'seed' must be an integer"
    assert str(error) == "run/history.json: field 'seed' must be an integer" and error.path == Path("run/history.json")


def test_a_layer_from_before_trainable_counts_reads_and_a_count_beyond_its_params_is_refused(tmp_path):
    data = ModelSummary("finetune", "t", "d", [Layer("base", "Functional", "(None, 2)", 10, True, 4)], 10, 4, 6, "").to_json()
    assert data["layers"][0]["trainable_params"] == 4
    del data["layers"][0]["trainable_params"]  # as every run before it wrote
    (tmp_path / "summary.json").write_text(json.dumps(data), encoding="utf-8")
    assert ModelSummary.read(tmp_path / "summary.json").layers[0].trainable_params is None
    data["layers"][0]["trainable_params"] = 11
    (tmp_path / "summary.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ArtifactFormatError, match=r"field 'layers\[0\]\.trainable_params' must be a count from 0 to the layer's params \(10\)"):
        ModelSummary.read(tmp_path / "summary.json")


def test_the_generic_reader_reads_defaults_as_optional_unless_required_and_names_a_type_it_cannot_read():
    """records.Part reads each field by its annotation: a field with a default may be absent or null,
    one marked REQUIRED (StudyModel's booleans, StudyRecord.settings) may not; an annotation it has
    no getter for is a programming error naming the field, not a silent pass."""
    from dataclasses import dataclass

    from experiments.artifacts.records import Fields, Part

    model = StudyModel("transfer", "transfer", declared=True).to_fields()
    for name in ("title", "dropout", "epochs", "training"):
        del model[name]
    read = StudyModel.from_fields(Fields(model, "m.json"))
    assert (read.title, read.dropout, read.epochs, read.training, read.declared) == ("", 0.0, 0, {}, True)
    del model["declared"]
    with pytest.raises(ArtifactFormatError, match=r"^m\.json: field 'declared' must be true or false$"):
        StudyModel.from_fields(Fields(model, "m.json"))

    @dataclass(frozen=True)
    class Odd(Part):
        shape: tuple[int, int]

    with pytest.raises(TypeError, match="shape: no reader"):
        Odd.from_fields(Fields({"shape": [1, 2]}, "o.json"))


def test_a_continued_models_summary_text_is_headed_with_its_own_name():
    text = 'Model: "transfer"\n\u2503 Layer (type) \u2503\n\u2502 logits (Dense) \u2502\n'
    assert summary_text_named(text, "transfer_extended") == text.replace('"transfer"', '"transfer_extended"', 1)
    assert summary_text_named("no header here", "transfer") == "no header here"


def test_the_loader_reads_a_run_folder_into_checked_records_and_names_each_unusable_file(tmp_path):
    """load_run_folder is the report's one reader: typed records, each history checked once
    (check_epochs), and a problem per unusable file instead of an error."""
    import shutil

    from experiments.artifacts import RunFolderError, check_epochs, load_run_folder

    shipped = load_run_folder(SHIPPED_RUN)
    assert shipped.problems == [] and list(shipped.models) == shipped.study.names == list(MODEL_NAMES)
    runs = [run for files in shipped.models.values() for run in files.runs]
    assert runs and all(run.error is None and run.epochs and all(isinstance(epoch, Epoch) for epoch in run.epochs) for run in runs)
    assert "comparison.png" in shipped.figures and shipped.dataset is not None and shipped.metrics is not None

    run = tmp_path / "run"
    shutil.copytree(SHIPPED_RUN, run)
    history = run / "models" / "baseline" / "seed-1337" / "history.json"
    data = json.loads(history.read_text(encoding="utf-8"))
    data["epochs"].insert(1, dict(data["epochs"][0]))
    history.write_text(json.dumps(data), encoding="utf-8")
    (run / "dataset.json").write_text("{", encoding="utf-8")
    loaded = load_run_folder(run)
    assert loaded.dataset is None
    assert loaded.problems[0].startswith("dataset.json: not valid JSON")
    assert loaded.problems[1].startswith("models/baseline/seed-1337/history.json: history of baseline (seed 1337): epoch 1 appears twice")
    broken = next(seed_run for seed_run in loaded.models["baseline"].runs if seed_run.seed == 1337)
    assert broken.epochs is None and "appears twice" in broken.error
    with pytest.raises(ValueError, match="epoch 2: val_accuracy must lie between 0 and 1"):
        check_epochs([{"epoch": 1}, {"epoch": 2, "val_accuracy": 1.5}], "m")
    assert check_epochs([{"epoch": 1, "loss": float("nan")}], "m") == [Epoch(1)]
    (run / "manifest.json").unlink()
    with pytest.raises(RunFolderError, match="required artifact file is missing"):
        load_run_folder(run)
