"""Every kind of claim the report makes, checked where the right answer is known.

The first part renders synthetic artifact folders (tests/report_fixtures.py, no TensorFlow)
whose histories are chosen so that the right sentence is known by hand, including cases built
to tell a correct implementation from a plausible wrong one: a last epoch that is not the best
one, seeds whose own verdicts differ from the seeds' together, every curve verdict, reference
figures read from their sourced table.

The second part reads one tiny real study (the smoke preset: synthetic data, no pretrained
weights; trained once for the session, tests/conftest.py's smoke_study) and checks what the
report's "finetune continues transfer" and "finished runs are reused only while their inputs are
the same" rest on.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report_fixtures as fixtures  # noqa: E402

from report_builder.formatting import breakable, breakable_name, escape_markdown  # noqa: E402
from report_builder.render import render_report  # noqa: E402
from tests.conftest import STUDY_CONFIG  # noqa: E402


def render_pages(run: Path, docs: Path) -> dict[str, str]:
    """Render ``run`` into ``docs``; every Markdown page by its path relative to docs/."""
    return {page.relative_to(docs).as_posix(): page.read_text(encoding="utf-8")
            for page in render_report(run, docs) if page.suffix == ".md"}


def render_histories(tmp_path: Path, name: str = "run", **options) -> dict[str, str]:
    run = fixtures.write_artifacts(tmp_path / name / "artifacts", **options)
    return render_pages(run, tmp_path / name / "docs")


def index_row(index: str, model: str) -> str:
    """The index table's row for ``model``."""
    return next(line for line in index.splitlines() if line.startswith(f"| [{breakable(model)}](models/{model}.md)"))


def constant(train: float | None, validation: float | None, epochs: int = 5, first_epoch: int = 1) -> list[dict]:
    return fixtures.make_history([train] * epochs, [validation] * epochs, first_epoch=first_epoch)


# --------------------------------------------------------------------------- last epoch vs best epoch


def test_last_and_best_epoch_each_get_their_own_numbers(tmp_path):
    """The last epoch (6) is not the best one (3): each seed's row, and the late-drop verdict, say so."""
    histories = fixtures.default_histories()
    histories["augmented"] = fixtures.make_history(
        train=[0.60, 0.70, 0.80, 0.85, 0.90, 0.92],
        validation=[0.55, 0.70, 0.74, 0.66, 0.64, 0.61],
    )
    pages = render_histories(tmp_path, histories=histories)
    augmented = pages["models/augmented.md"]
    # per seed (validation shifted by -1, 0, +1 point): last epoch 6, best epoch 3
    assert "| 1337 | 60.0% (6) | 73.0% (3) |" in augmented
    assert "| 1339 | 62.0% (6) | 75.0% (3) |" in augmented
    assert f"| {breakable_name('augmented')} | 60.0%, 61.0%, 62.0% | 3, 3, 3 |" in pages["index.md"]
    # its best of the last five epochs (2 to 6) is epoch 3, 13 points above the last
    assert "Seed 1337 ended at 60.0%, 13.0 points below its 73.0% of epoch 3" in augmented
    # train 0.89 against validation 0.637 over the last three epochs
    assert "- **Overfits: a train-validation gap of 25.3 points.**" in augmented


# --------------------------------------------------------------------------- verdicts over the seeds


def test_verdicts_are_read_over_the_seeds_not_from_one_seed(tmp_path):
    """Each seed alone would get another verdict than the seeds together."""
    histories = fixtures.default_histories()
    # gaps 20, 1 and 2 points: one seed alone overfits; together the gap is 7.7 points (no verdict), but
    # the seeds' final accuracies span 9 points, more than 3.3 x the 2.1-point noise of 76% on 400 images
    histories["preprocessed"] = {1337: constant(0.90, 0.70), 1338: constant(0.80, 0.79), 1339: constant(0.80, 0.78)}
    # 5 points above, 8 below, 5 above the 50% baseline: two seeds alone beat it, the three together do not
    histories["baseline"] = {1337: constant(0.55, 0.55), 1338: constant(0.42, 0.42), 1339: constant(0.55, 0.55)}
    pages = render_histories(tmp_path, histories=histories)
    preprocessed, baseline, index = pages["models/preprocessed.md"], pages["models/baseline.md"], pages["index.md"]
    assert "Overfits" not in preprocessed
    assert "- **Seeds disagree.** The last epoch's validation accuracy spans 9.0 points across seeds" in preprocessed
    assert index_row(index, "preprocessed").endswith("| seeds disagree |")
    assert "- **Near chance.** Its 95% interval reaches down to" in baseline
    assert "this run cannot show that the model learned anything from the images" in baseline
    assert index_row(index, "baseline").endswith("| near chance, underfits |")  # at chance, a spread is noise


# --------------------------------------------------------------------------- the reference figures


def test_reference_figures_come_from_the_sourced_table(tmp_path):
    from report_builder import references

    table = references.load_references()
    pages = render_histories(tmp_path)
    for model in ("baseline", "augmented", "preprocessed", "transfer"):
        summary = references.summarize(table, model)
        page = pages[f"models/{model}.md"]
        span = (f"{summary['min'] * 100:.1f}%" if summary["min"] == summary["max"]
                else f"{summary['min'] * 100:.1f}% to {summary['max'] * 100:.1f}%")
        assert f"report a final validation accuracy of {span} for this model, each from a single run" in page, model
        assert "This run used other images, so the figures compare in kind, not digit for digit." in page
        for citation in summary["citations"]:  # each write-up by its title, with its own figure
            assert f"- {escape_markdown(citation['title'])}: {citation['value'] * 100:.1f}%, {escape_markdown(citation['statistic'])}" in page
    transfer = pages["models/transfer.md"]
    assert "One more figure is left out because its write-up trained on its test split." in transfer
    for model in ("finetune", "transfer_extended"):
        assert "reference write-ups" not in pages[f"models/{model}.md"]


def test_reference_figures_say_when_the_data_is_theirs(tmp_path):
    pages = render_histories(tmp_path, config_extra=None)
    run = fixtures.write_artifacts(tmp_path / "named" / "artifacts")
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    manifest["config"]["dataset"] = {"name": "cats_and_dogs_filtered", "description": "", "source": "", "licence": ""}
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    named = render_pages(run, tmp_path / "named" / "docs")
    assert "This run scores a fixed validation split instead." in named["models/transfer.md"]
    assert "The images are **cats\\_and\\_dogs\\_filtered**" in named["index.md"]
    assert "This run's config does not name its data" in pages["index.md"]


# --------------------------------------------------------------------------- every verdict sentence


def test_each_verdict_sentence(tmp_path):
    rising = fixtures.make_history([0.55 + 0.03 * index for index in range(10)], [0.5 + 0.025 * index for index in range(10)])
    turned = fixtures.make_history([0.6 + 0.04 * index for index in range(10)], [0.70] * 10)
    for index, record in enumerate(turned):  # validation loss bottoms out at epoch 4, then climbs to 1.5
        record["val_loss"] = 0.6 - 0.05 * index if index < 4 else 0.45 + 0.15 * (index - 3)
    histories = {
        "baseline": constant(0.50, 0.50),  # at the baseline: near chance, and underfitting
        "augmented": rising,  # best epoch last, still rising
        "preprocessed": turned,  # validation loss turned upward
        "transfer": constant(0.96, 0.95, epochs=10),  # nothing to warn about
        "finetune": constant(0.97, 0.955, epochs=5, first_epoch=11),
    }
    pages = render_histories(tmp_path, histories=histories)
    baseline, augmented, preprocessed, transfer = (pages[f"models/{name}.md"] for name in ("baseline", "augmented", "preprocessed", "transfer"))
    index = pages["index.md"]

    assert "- **Near chance.** Its 95% interval reaches down to" in baseline
    assert "- **Underfits.** Training accuracy ends at 50.0% (mean of the last 3 epochs), below the 75.0%" in baseline

    assert "- **Still improving when training stopped.** Over the last 5 epochs the mean validation accuracy rose 10.0 points" in augmented
    assert "(best epochs: 10 for seed 1337, 10 for seed 1338, 10 for seed 1339, of 10)" in augmented
    assert index_row(index, "augmented").endswith("| still improving |")

    assert ("- **Validation loss rose after epoch 4, and stayed up.** The mean validation loss fell to 0.450 there and averaged "
            "1.200 over the last 3 epochs") in preprocessed
    assert "- **Overfits: a train-validation gap of 22.0 points.**" in preprocessed

    assert "- **Settled.** None of the warning signs applies" in transfer
    assert index_row(index, "transfer").endswith("| settled |")
    assert "That interval lies above the majority baseline of 50.0%: the model learned something from the images." in transfer


# --------------------------------------------------------------------------- continues, chosen on validation, tested once


def test_finetune_is_said_to_continue_transfer_with_its_own_epoch_numbers(tmp_path):
    histories = fixtures.default_histories()
    histories["transfer"] = fixtures.transfer_history(epochs=4)
    histories["finetune"] = fixtures.finetune_history(epochs=3, first_epoch=5)
    histories["transfer_extended"] = fixtures.control_history(epochs=3, first_epoch=5)
    pages = render_histories(tmp_path, histories=histories)
    assert ("The figure starts with transfer's epochs 1 to 4, the run this model continues from; "
            "its own epochs are 5 to 7.") in pages["models/finetune.md"]
    assert ("finetune does not start from scratch: each of its runs continues the final weights of the transfer "
            "run with the same seed, so its epochs continue transfer's numbering.") in pages["method.md"]
    assert "transfer_extended does not start from scratch" in pages["method.md"]
    # only finetune and its control continue another model
    for model in ("baseline", "augmented", "preprocessed", "transfer"):
        assert "the run this model continues from" not in pages[f"models/{model}.md"]


def test_a_one_epoch_continuation_is_said_in_the_singular(tmp_path):
    histories = fixtures.default_histories()
    histories["transfer"] = fixtures.transfer_history(epochs=1)
    histories["finetune"] = fixtures.finetune_history(epochs=1, first_epoch=2)
    pages = render_histories(tmp_path, histories=histories)
    assert "The figure starts with transfer's epoch 1, the run this model continues from; its own epoch is 2." in pages["models/finetune.md"]


def selection_table(index: str) -> dict[str, float]:
    rows = re.findall(r"^\| (?:<span class=\"report-name\">)?([\w\\<>]+?)(?:</span>)? \| ([\d.]+)% \|$",
                      index.split("| Model | Validation accuracy (mean over seeds) |")[1].split("\n\n")[0], re.M)
    return {name.replace("\\", "").replace("<wbr>", ""): float(value) for name, value in rows}


def test_the_model_is_chosen_on_validation_and_tested_once(tmp_path):
    histories = fixtures.default_histories()
    histories["preprocessed"] = fixtures.make_history([0.99] * 10, [0.99] * 10)  # the best on validation
    pages = render_histories(tmp_path, histories=histories)
    index = pages["index.md"]
    scores = selection_table(index)
    assert set(scores) == set(fixtures.MODEL_ORDER)
    assert max(scores, key=scores.get) == "preprocessed"
    assert "The chosen model is **preprocessed**, trained with seed **1339**." in index  # its best seed on validation
    assert "| 1339 (chosen) | 100.0% |" in index
    assert '!!! note "Chosen on validation, tested once"' in index
    assert "Both the model and its seed were chosen on validation accuracy alone; the test images played\n    no part in either choice." in index
    assert "the test set was touched exactly once,\n    for the chosen model and seed only" in index
    assert "**19 of 20** images correctly: a test accuracy of\n**95.0%**, against 50.0% for the majority baseline." in index


def test_a_run_without_a_test_evaluation_does_not_claim_one(tmp_path):
    run = fixtures.write_artifacts(tmp_path / "artifacts")
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    del metrics["test"]
    (run / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    index = render_pages(run, tmp_path / "docs")["index.md"]
    assert '!!! warning "No test score"' in index
    assert "The run selected **finetune** but recorded no test evaluation." in index
    assert "tested once" not in index and "test accuracy of" not in index


# --------------------------------------------------------------------------- a tiny real study: finetune and reuse

@pytest.fixture(scope="module")
def tiny_study(smoke_study):
    """The smoke study trained once for the session (tests/conftest.py: every model, seeds 7 and 8,
    transfer for two epochs and finetune continuing it for one); returns (config file, out folder).
    Read-only: a test that changes it copies it first."""
    run_dir, _ = smoke_study
    return STUDY_CONFIG, run_dir.parent


def tiny_config(config_file: Path, out: Path):
    from experiments.config import load_config

    return load_config(config_file, {"study.out_dir": str(out), "study.seeds": 2})  # as conftest's `train --seeds 2`


def layer_weights(model) -> dict[str, list]:
    return {layer.name: layer.get_weights() for layer in model.layers if layer.get_weights()}


@pytest.mark.training
def test_finetune_starts_from_the_trained_transfer_weights(tiny_study):
    import keras
    import numpy as np

    from experiments.artifacts import RunFolder
    from experiments.data.loading import load_study_data
    from experiments.models.build import build_model
    from experiments.study.train_cell import build_for_training

    config = tiny_config(*tiny_study)
    data = load_study_data(config)
    run = RunFolder(config.run_dir)
    seed = config.seeds[0]
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("float32")  # whatever an earlier test left
    trained_transfer = keras.models.load_model(run.seed_run("transfer", seed).model_file)
    keras.utils.set_random_seed(seed)  # as the runner does before building a model
    model, first_epoch, last_epoch = build_for_training(config, run, data, "finetune", seed)
    assert (first_epoch, last_epoch) == (2, 3)  # it continues transfer's two epochs
    expected, got = layer_weights(trained_transfer), layer_weights(model)
    assert set(got) == set(expected)
    for name, weights in expected.items():
        assert len(got[name]) == len(weights), name
        for index, (want, have) in enumerate(zip(weights, got[name])):
            np.testing.assert_array_equal(have, want, err_msg=f"{name} weight {index} is not the trained transfer model's")
    # not vacuous: training moved the transfer model away from where a fresh one starts
    keras.utils.set_random_seed(seed)
    fresh = layer_weights(build_model(config.recipe("transfer"), data.image_size, len(data.class_names), config.weights_of("transfer"), seed))
    assert any(not np.array_equal(a, b) for name in expected for a, b in zip(expected[name], fresh[name])), \
        "the trained transfer model still has its initial weights, so this test could not tell them apart"
    keras.backend.clear_session()


@pytest.mark.training
def test_a_changed_transfer_run_restarts_the_finetune_run_built_on_it(tiny_study, tmp_path):
    from experiments.artifacts import RunFolder
    from experiments.data.loading import load_study_data
    from experiments.study.cell import training_decision
    from experiments.study.decisions import RESTART, SKIP
    from experiments.study.train_cell import expected_state

    config_file, out = tiny_study
    shutil.copytree(out, tmp_path / "out")  # the module's run stays as trained
    config = tiny_config(config_file, tmp_path / "out")
    fingerprint = load_study_data(config).fingerprint
    run = RunFolder(config.run_dir)
    seed = config.seeds[0]
    finetune, transfer = run.seed_run("finetune", seed), run.seed_run("transfer", seed)

    def decision(model_run):
        return training_decision(model_run, expected_state(config, run, model_run.model_name, seed, fingerprint), False,
                                 source=config.source_of(model_run.model_name))

    assert decision(finetune)[0] == SKIP and decision(transfer)[0] == SKIP
    original = transfer.history.read_bytes()
    history = json.loads(original)
    history["epochs"][-1]["val_accuracy"] = 0.123  # transfer was trained again and ended elsewhere
    transfer.history.write_text(json.dumps(history), encoding="utf-8")
    action, reason = decision(finetune)
    assert action == RESTART, reason
    assert "the transfer model it starts from changed" in reason
    transfer.history.write_bytes(original)
    assert decision(finetune)[0] == SKIP


@pytest.mark.training
def test_each_run_records_the_predictions_of_its_scored_epoch(tiny_study, tmp_path):
    """The paired comparisons rest on validation_predictions.json: each run's must come from its
    last epoch (finetune's continue transfer's numbering) and follow this run's validation files,
    or the report drops them and shows no interval."""
    from experiments.artifacts import RunFolder, ValidationPredictions, files_digest

    config = tiny_config(*tiny_study)
    run = RunFolder(config.run_dir)
    dataset = json.loads((config.run_dir / "dataset.json").read_text(encoding="utf-8"))
    files = dataset["splits"]["validation"]["files"]
    for model, last_epoch in (("transfer", 2), ("finetune", 3)):
        seed_run = run.seed_run(model, config.seeds[0])
        history = json.loads(seed_run.history.read_text(encoding="utf-8"))["epochs"]
        record = ValidationPredictions.read(seed_run.validation_predictions)
        assert record is not None, model
        assert record.epoch == history[-1]["epoch"] == last_epoch, model
        assert record.files_sha256 == files_digest(files) and len(record.predicted) == len(files), model
        assert record.accuracy == pytest.approx(history[-1]["val_accuracy"], abs=1.5 / len(files)), model
    finetune = render_pages(config.run_dir, tmp_path / "docs")["models/finetune.md"]
    assert "95% interval" in finetune and "There is no interval" not in finetune


@pytest.mark.training
def test_backfilled_predictions_are_the_ones_training_records(tiny_study, tmp_path):
    """A finished run without predictions gets them from its saved model: the same ones, for the same epoch."""
    import keras

    from experiments.artifacts import RunFolder, ValidationPredictions
    from experiments.data.loading import load_study_data
    from experiments.study.train_cell import backfill_validation_predictions

    config_file, out = tiny_study
    shutil.copytree(out, tmp_path / "out")  # the module's run stays as trained
    config = tiny_config(config_file, tmp_path / "out")
    seed_run = RunFolder(config.run_dir).seed_run("finetune", config.seeds[0])
    recorded = ValidationPredictions.read(seed_run.validation_predictions)
    seed_run.validation_predictions.unlink()
    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("float32")  # whatever an earlier test left
    backfill_validation_predictions(config, load_study_data(config), seed_run)
    backfilled = ValidationPredictions.read(seed_run.validation_predictions)
    assert backfilled is not None
    assert backfilled.epoch == recorded.epoch == 3
    assert (backfilled.files_sha256, backfilled.labels, backfilled.predicted) == (recorded.files_sha256, recorded.labels, recorded.predicted)
    keras.backend.clear_session()
