"""Every kind of claim the report makes, checked where the right answer is known.

The first part renders synthetic artifact folders (tests/report_fixtures.py, no TensorFlow)
whose histories are chosen so that the right sentence is known by hand, including cases built
to tell a correct implementation from a plausible wrong one: a last epoch that is not the best
one, seeds whose own verdicts differ from the mean curve's, a fine-tuning interval below, above
and around the reference figure.

The second part trains one tiny real study (transfer and finetune, synthetic data, no
pretrained weights; one module-scoped fixture) and checks what the report's "finetune continues
transfer" and "finished runs are reused only while their inputs are the same" rest on.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report_fixtures as fixtures  # noqa: E402

from report_builder.render import render_report  # noqa: E402
from tests.conftest import PROJECT_ROOT, cli_environment, run_cli_command  # noqa: E402


def render_pages(run: Path, docs: Path) -> dict[str, str]:
    """Render ``run`` into ``docs``; every Markdown page by its path relative to docs/."""
    return {page.relative_to(docs).as_posix(): page.read_text(encoding="utf-8")
            for page in render_report(run, docs) if page.suffix == ".md"}


def render_histories(tmp_path: Path, name: str = "run", **options) -> dict[str, str]:
    run = fixtures.write_artifacts(tmp_path / name / "artifacts", **options)
    return render_pages(run, tmp_path / name / "docs")


def index_row(index: str, model: str) -> str:
    """The index table's row for ``model``."""
    return next(line for line in index.splitlines() if line.startswith(f"| [{model}](models/{model}.md)"))


def constant(train: float | None, validation: float | None, epochs: int = 5, first_epoch: int = 1) -> list[dict]:
    return fixtures.make_history([train] * epochs, [validation] * epochs, first_epoch=first_epoch)


# --------------------------------------------------------------------------- last epoch vs best epoch


def test_final_epoch_sentence_reports_the_last_epoch_and_the_best_separately(tmp_path):
    """The last epoch (6) is not the best one (3): the sentence must give each its own numbers."""
    histories = fixtures.default_histories()
    histories["augmented"] = fixtures.make_history(
        train=[0.60, 0.70, 0.80, 0.85, 0.90, 0.92],
        validation=[0.55, 0.70, 0.74, 0.66, 0.64, 0.61],
    )
    pages = render_histories(tmp_path, histories=histories)
    augmented = pages["models/augmented.md"]
    assert ("The best single epoch was epoch 3 with 74.0%; in the final epoch (6) the model scored 92.0% "
            "on the training images and 61.0% on validation.") in augmented
    # the window is the last five epochs, 2 to 6
    assert ("Over the last 5 epochs (epochs 2 to 6) validation accuracy settled between 61.0% and 74.0%, "
            "67.0% on average.") in augmented
    # train 0.834 against validation 0.670 over the window
    assert "Training accuracy ran 16.4 points ahead of validation on average, so this model **overfits strongly**" in augmented
    # per seed (validation shifted by -1, 0, +1 point): last epoch 6, best epoch 3
    assert "| 1337 | 6 | 60.0% | 3 | 73.0% |" in augmented
    assert "| 1339 | 6 | 62.0% | 3 | 75.0% |" in augmented
    assert "| **Mean ± std** | | **61.0% ± 1.0** | | **74.0% ± 1.0** | | |" in augmented


# --------------------------------------------------------------------------- verdicts come from the mean curve


def test_verdicts_are_read_from_the_mean_curve_not_from_one_seed(tmp_path):
    """Each seed alone would get another verdict than the mean over the seeds."""
    histories = fixtures.default_histories()
    # gaps 15, 1 and 2 points: seed by seed "strong", "none", "none"; the mean curve's gap is 6: "mild"
    histories["preprocessed"] = {1337: constant(0.90, 0.75), 1338: constant(0.80, 0.79), 1339: constant(0.80, 0.78)}
    # 5 points above, 8 below, 5 above the 50% baseline: "better", "no better", "better"; the mean: 0.7 above
    histories["baseline"] = {1337: constant(0.55, 0.55), 1338: constant(0.42, 0.42), 1339: constant(0.55, 0.55)}
    pages = render_histories(tmp_path, histories=histories)
    preprocessed, baseline, index = pages["models/preprocessed.md"], pages["models/baseline.md"], pages["index.md"]
    assert "Training accuracy stayed 6.0 points ahead of validation on average: the model **overfits mildly**." in preprocessed
    assert "overfits strongly" not in preprocessed and "no clear overfitting" not in preprocessed
    assert index_row(index, "preprocessed").endswith("| overfits mildly |")
    assert ("Honestly, though, that is **no better than the baseline**: the settled mean is only 0.7 points above "
            "the 50.0% you would get by always answering with the most common class.") in baseline
    assert "clearly learned something" not in baseline
    assert index_row(index, "baseline").endswith("| no clear overfitting; no better than the baseline |")
    # the facts next to the verdicts are the mean curve's too
    assert "validation accuracy sat flat at 77.3%" in preprocessed
    assert "validation accuracy sat flat at 50.7%" in baseline


# --------------------------------------------------------------------------- the reference figure


def reference_sentence(page: str) -> tuple[float, float, str]:
    match = re.search(r"with a 95% interval of ([\d.]+)% to ([\d.]+)%, which (lies below|lies above|includes) their figure\.", page)
    assert match, "the finetune page does not place its interval against the reference figure"
    return float(match.group(1)), float(match.group(2)), match.group(3)


@pytest.mark.parametrize(
    "val_accuracy, validation_per_class, expected",
    [
        (0.90, 200, "lies below"),  # 360 of 400: about 86.7% to 92.6%
        (0.98, 200, "includes"),  # 392 of 400: about 96.1% to 99.0%
        (0.995, 1000, "lies above"),  # 1990 of 2000: about 99.1% to 99.7%
    ],
)
def test_finetune_interval_is_placed_right_against_the_reference(tmp_path, val_accuracy, validation_per_class, expected):
    histories = fixtures.default_histories()
    histories["finetune"] = {seed: constant(min(val_accuracy + 0.01, 1.0), val_accuracy, epochs=10, first_epoch=11)
                             for seed in (1337, 1338)}
    pages = render_histories(tmp_path, histories=histories, seeds=(1337, 1338), validation_per_class=validation_per_class)
    finetune = pages["models/finetune.md"]
    assert "The reference write-ups this study follows report about\n98% validation accuracy after fine-tuning." in finetune
    low, high, placement = reference_sentence(finetune)
    assert placement == expected
    # and the words agree with the printed interval, read back from the page
    assert placement == ("lies below" if high < 98.0 else "lies above" if low > 98.0 else "includes")
    assert f"Ours is {val_accuracy * 100:.1f}% ± 0.0 points" in finetune


# --------------------------------------------------------------------------- every overfitting and baseline sentence


def test_each_overfitting_and_baseline_sentence(tmp_path):
    histories = {
        "baseline": constant(0.50, 0.50),  # flat, no gap, level with the baseline
        "augmented": constant(0.40, 0.45),  # validation above training, below the baseline
        "preprocessed": constant(None, 0.70),  # no training accuracy: no gap to judge
        "transfer": constant(0.53, 0.515),  # a small gap, only a little above the baseline
        "finetune": constant(0.90, 0.84, first_epoch=6),  # a mild gap
    }
    pages = render_histories(tmp_path, histories=histories)
    baseline, augmented = pages["models/baseline.md"], pages["models/augmented.md"]
    preprocessed, transfer, finetune = pages["models/preprocessed.md"], pages["models/transfer.md"], pages["models/finetune.md"]
    index = pages["index.md"]

    assert "Over the last 5 epochs (epochs 1 to 5) validation accuracy sat flat at 50.0%." in baseline
    assert "Training and validation accuracy stayed close, 0.0 points apart on average, so there is **no clear overfitting** here." in baseline
    assert "the settled mean is level with the 50.0% you would get by always answering with the most common class" in baseline

    assert ("Validation accuracy was even 5.0 points above training accuracy on average (training images are the harder "
            "ones when they are augmented or dropout is active), so there is **no clear overfitting** here.") in augmented
    assert "the settled mean is 5.0 points below the 50.0% you would get" in augmented

    assert "There is **not enough data** to judge overfitting: no epoch in the window has both a training and a validation accuracy." in preprocessed
    assert "That is 20.0 points above the majority baseline of 50.0%, so the model has clearly learned something." in preprocessed
    assert index_row(index, "preprocessed").endswith("| not enough data |")

    assert "Training and validation accuracy stayed close, 1.5 points apart on average, so there is **no clear overfitting** here." in transfer
    assert "the settled mean is only 1.5 points above the 50.0% you would get" in transfer
    assert index_row(index, "transfer").endswith("| no clear overfitting; no better than the baseline |")

    assert "Training accuracy stayed 6.0 points ahead of validation on average: the model **overfits mildly**." in finetune
    assert index_row(index, "finetune").endswith("| overfits mildly |")
    assert index_row(index, "augmented").endswith("| no clear overfitting; no better than the baseline |")


# --------------------------------------------------------------------------- continues, chosen on validation, tested once


def test_finetune_is_said_to_continue_transfer_with_its_own_epoch_numbers(tmp_path):
    histories = fixtures.default_histories()
    histories["transfer"] = fixtures.transfer_history(epochs=4)
    histories["finetune"] = fixtures.finetune_history(epochs=3, first_epoch=5)
    pages = render_histories(tmp_path, histories=histories)
    assert ("The figure starts with transfer's epochs 1 to 4, the run this model continues from, so you can see where "
            "finetune picks up: its own epochs are 5 to 7.") in pages["models/finetune.md"]
    assert ("The finetune model is the exception to starting from scratch: each of its runs starts from the\n"
            "final weights of the transfer run with the same seed, which is why its epochs continue\n"
            "transfer's numbering.") in pages["method.md"]
    # only finetune continues another model
    for model in ("baseline", "augmented", "preprocessed", "transfer"):
        assert "the run this model continues from" not in pages[f"models/{model}.md"]


def selection_table(index: str) -> dict[str, float]:
    rows = re.findall(r"^\| (\w+) \| ([\d.]+)% \|$", index.split("| Model | Validation accuracy (mean over seeds) |")[1].split("\n\n")[0], re.M)
    return {name: float(value) for name, value in rows}


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

TINY_STUDY = """\
[study]
run_name = "claims"
models = ["transfer", "finetune"]
seed = 11

[data]
source = "synthetic"
image_size = [32, 32]
batch_size = 16
synthetic_train_per_class = 24
synthetic_validation_per_class = 10

[training]
epochs = 2
base_weights = "none"
finetune_epochs = 1
"""


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """Train transfer and finetune once (about 20 s); returns (config file, out folder)."""
    folder = tmp_path_factory.mktemp("claims")
    config_file = folder / "tiny.toml"
    config_file.write_text(TINY_STUDY, encoding="utf-8")
    out = folder / "out"
    result = subprocess.run(run_cli_command("train", "--config", str(config_file), "--out", str(out)),
                            cwd=PROJECT_ROOT, env=cli_environment(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return config_file, out


def tiny_config(config_file: Path, out: Path):
    from experiments.config import load_config

    return load_config(config_file, {"study.out_dir": str(out)})


def layer_weights(model) -> dict[str, list]:
    return {layer.name: layer.get_weights() for layer in model.layers if layer.get_weights()}


def test_finetune_starts_from_the_trained_transfer_weights(tiny_study):
    import keras
    import numpy as np

    from experiments.artifacts import RunFolder
    from experiments.data import load_study_data
    from experiments.models import build_model
    from experiments.study import build_for_training

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
    fresh = layer_weights(build_model("transfer", data.image_size, len(data.class_names), "none", seed))
    assert any(not np.array_equal(a, b) for name in expected for a, b in zip(expected[name], fresh[name])), \
        "the trained transfer model still has its initial weights, so this test could not tell them apart"
    keras.backend.clear_session()


def test_a_changed_transfer_run_restarts_the_finetune_run_built_on_it(tiny_study, tmp_path):
    from experiments.artifacts import RunFolder
    from experiments.data import load_study_data
    from experiments.study import RESTART, SKIP, expected_state, training_decision

    config_file, out = tiny_study
    shutil.copytree(out, tmp_path / "out")  # the module's run stays as trained
    config = tiny_config(config_file, tmp_path / "out")
    fingerprint = load_study_data(config).fingerprint
    run = RunFolder(config.run_dir)
    seed = config.seeds[0]
    finetune, transfer = run.seed_run("finetune", seed), run.seed_run("transfer", seed)

    def decision(model_run):
        return training_decision(model_run, expected_state(config, run, model_run.model_name, seed, fingerprint), False)

    assert decision(finetune)[0] == SKIP and decision(transfer)[0] == SKIP
    original = transfer.history.read_bytes()
    history = json.loads(original)
    history["epochs"][-1]["val_accuracy"] = 0.123  # transfer was trained again and ended elsewhere
    transfer.history.write_text(json.dumps(history), encoding="utf-8")
    action, reason = decision(finetune)
    assert action == RESTART, reason
    assert "transfer" in reason
    transfer.history.write_bytes(original)
    assert decision(finetune)[0] == SKIP
