"""The runner end to end on the smoke preset: artifacts, skipping, resuming after a kill; and the
test step (choose, test once, reuse the score only for the same run) on hand-written cells."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, SMOKE_CONFIG, STUDY_CONFIG, cli_environment, run_cli_command

MODELS = ["baseline", "augmented", "preprocessed", "transfer", "finetune", "transfer_extended"]
SEEDS = [7, 8]  # session_study.toml has seed = 7; the fixture trains with --seeds 2


def train(out: Path, *extra: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        run_cli_command("train", "--config", str(STUDY_CONFIG), "--out", str(out), *extra),
        cwd=PROJECT_ROOT, env=cli_environment(), capture_output=True, text=True, timeout=timeout,
    )


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture
def smoke_run(smoke_study):
    """The smoke preset trained with --seeds 2, once for the session (tests/conftest.py); read-only."""
    return smoke_study


def seed_folder(run_dir: Path, model: str, seed: int) -> Path:
    return run_dir / "models" / model / f"seed-{seed}"


@pytest.mark.training
def test_smoke_run_writes_every_artifact(smoke_run):
    run_dir, _ = smoke_run
    manifest = load(run_dir / "manifest.json")
    assert manifest["status"] == "complete" and manifest["schema_version"] == 2
    assert manifest["seeds"] == SEEDS
    assert set(manifest["models"]) == set(MODELS)
    assert all(entry["status"] == "complete" and entry["wall_seconds"] > 0 for entry in manifest["models"].values())
    assert all(set(entry["runs"]) == {"7", "8"} for entry in manifest["models"].values())
    for key in ("config", "config_hash", "data_fingerprint", "versions", "devices", "hardware", "git_commit", "wall_seconds"):
        assert key in manifest
    assert manifest["config"]["training"]["epochs"] == 2
    assert "tensorflow" in manifest["versions"]
    # the runner records which CPU kernels TensorFlow ran: what TF_ENABLE_ONEDNN_OPTS asked for
    # (conftest, like the runner, asks for oneDNN on x86-64 unless the user chose)
    kernels = manifest["hardware"]["cpu_kernels"]
    assert kernels in ("oneDNN", "Eigen (oneDNN off)", "unknown")
    choice = cli_environment().get("TF_ENABLE_ONEDNN_OPTS")
    if choice in ("0", "1") and kernels != "unknown":
        assert kernels == ("oneDNN" if choice == "1" else "Eigen (oneDNN off)")
    for name in MODELS:
        for seed in SEEDS:
            history = load(seed_folder(run_dir, name, seed) / "history.json")
            assert history["seed"] == seed and history["model"] == name
            expected_epochs = [3] if name in ("finetune", "transfer_extended") else [1, 2]  # they continue transfer's 2 epochs
            assert [record["epoch"] for record in history["epochs"]] == expected_epochs
            assert set(history["epochs"][0]) == {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds"}
            assert (seed_folder(run_dir, name, seed) / "model.keras").is_file()
            assert not (seed_folder(run_dir, name, seed) / "checkpoint").exists()
            assert load(seed_folder(run_dir, name, seed) / "state.json")["seed"] == seed
        summary = load(run_dir / "models" / name / "summary.json")
        assert summary["total_params"] == summary["trainable_params"] + summary["non_trainable_params"]
        assert (run_dir / "figures" / f"curves_{name}.png").stat().st_size > 1000
    # the two seeds are two different trainings, not one run written twice
    first, second = (load(seed_folder(run_dir, "baseline", seed) / "history.json")["epochs"] for seed in SEEDS)
    assert [record["loss"] for record in first] != [record["loss"] for record in second]
    transfer = load(run_dir / "models" / "transfer" / "summary.json")
    finetune = load(run_dir / "models" / "finetune" / "summary.json")
    assert finetune["total_params"] == transfer["total_params"]
    assert finetune["trainable_params"] > 10 * transfer["trainable_params"], "fine-tuning unfreezes the top of the base"
    # the backbone trains only from its unfrozen layer on: its row says how much, not "all of it"
    (base,) = [layer for layer in finetune["layers"] if layer["type"] == "Functional (nested model)"]
    assert base["trainable"] and 0 < base["trainable_params"] < base["params"]
    assert sum(layer["trainable_params"] for layer in finetune["layers"]) == finetune["trainable_params"]
    # transfer_extended trains transfer's saved model, but its summary is headed with its own name
    control = load(run_dir / "models" / "transfer_extended" / "summary.json")
    assert control["summary_text"].lstrip().startswith('Model: "transfer_extended"')
    for figure in ("data_grid", "augmentation_flip", "augmentation_rotation", "comparison", "misclassified_test"):
        assert (run_dir / "figures" / f"{figure}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = load(run_dir / "metrics.json")
    candidates = metrics["selection"]["candidates"]
    assert metrics["chosen_model"] == max(candidates, key=lambda name: (candidates[name], -MODELS.index(name)))
    for name in MODELS:  # candidates are means over the seeds of the last epoch's validation accuracy
        last = [load(seed_folder(run_dir, name, seed) / "history.json")["epochs"][-1]["val_accuracy"] for seed in SEEDS]
        assert candidates[name] == pytest.approx(sum(last) / 2)
    seed_candidates = metrics["selection"]["seed_candidates"]
    assert metrics["chosen_seed"] == int(max(seed_candidates, key=lambda seed: (seed_candidates[seed], -int(seed))))
    assert metrics["test"]["model"] == metrics["chosen_model"] and metrics["test"]["seed"] == metrics["chosen_seed"]
    assert metrics["test"]["total"] == 16 and 0 <= metrics["test"]["correct"] <= 16
    assert candidates[metrics["chosen_model"]] > 0.6, "the synthetic classes must be learnable"
    confusion = metrics["test"]["confusion_matrix"]
    assert sum(map(sum, confusion)) == 16 and confusion[0][0] + confusion[1][1] == metrics["test"]["correct"]
    assert len(metrics["test"]["predictions"]) == 16
    assert not list(run_dir.rglob(".*.tmp.*")), "temporary files left behind"


@pytest.mark.training
def test_rerun_skips_finished_models_a_malformed_state_stops_it_and_force_retrains(smoke_run, tmp_path):
    """On a copy of the session's smoke study: the same command again trains nothing, does not
    look at the test split again and never starts TensorFlow (the manifest keeps the machine that
    trained); a state file broken by hand stops it in one sentence naming the file and field, and
    the file stays as the user left it; --force trains that model again. (A changed setting
    retrains: tests/test_decisions.py, and test_own_models' edited builder end to end.)"""
    import shutil
    import sys

    shutil.copytree(smoke_run[0], tmp_path / "smoke")  # the session's run stays as trained
    run_dir = tmp_path / "smoke"

    def histories() -> dict:
        return {(name, seed): (seed_folder(run_dir, name, seed) / "history.json").read_bytes() for name in MODELS for seed in SEEDS}

    before = histories()
    manifest = load(run_dir / "manifest.json")
    manifest["hardware"]["processor"], manifest["devices"] = "the machine that trained it", ["/physical_device:GPU:0"]
    (run_dir / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    # `train` as the command line runs it, then whether this process ever imported TensorFlow
    code = ("import sys; from report_builder.cli import main; status = main(sys.argv[1:]); "
            "print('tensorflow imported:', 'tensorflow' in sys.modules); sys.exit(status)")
    result = subprocess.run([sys.executable, "-c", code, "train", "--config", str(STUDY_CONFIG), "--out", str(tmp_path), "--seeds", "2"],
                            cwd=PROJECT_ROOT, env=cli_environment(), capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("skipped, finished with the same config and data") == 12
    assert "Epoch 1/" not in result.stdout
    assert before == histories()
    assert "not evaluating again" in result.stderr
    assert result.stdout.splitlines()[-1] == "tensorflow imported: False"
    manifest = load(run_dir / "manifest.json")
    assert (manifest["hardware"]["processor"], manifest["devices"]) == ("the machine that trained it", ["/physical_device:GPU:0"])
    assert manifest["status"] == "complete"

    state = seed_folder(run_dir, "augmented", 8) / "state.json"
    broken = {**load(state), "epochs_completed": "three"}
    state.write_text(json.dumps(broken), encoding="utf-8")
    result = train(tmp_path, "--seeds", "2")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (f"error: {state}: field 'epochs_completed' must be an integer; mend or "
                                                      "delete the file, or pass --force to train augmented (seed 8) again")
    assert "Traceback" not in result.stderr
    assert load(state) == broken, "the file stays as the user left it"
    forced = train(tmp_path, "--seeds", "2", "--models", "augmented", "--force")
    assert forced.returncode == 0, forced.stderr
    assert "--force: training augmented (seed 8) again" in forced.stderr
    assert load(run_dir / "manifest.json")["devices"] != ["/physical_device:GPU:0"], "a process that trains records its own machine"
    assert load(state)["status"] == "complete" and isinstance(load(state)["epochs_completed"], int)
    after = histories()  # another list of models leaves the models not listed as they were
    assert all(after[cell] == before[cell] for cell in before if cell[0] != "augmented")


@pytest.mark.keras
def test_offline_download_is_one_clear_message(write_config, tmp_path):
    config = write_config(
        "[study]\nmodels = ['baseline']\n[data]\nsource = 'download'\nimage_size = [32, 32]\n"
        f"url = 'http://127.0.0.1:9/cats_and_dogs_filtered.zip'\ncache_dir = '{tmp_path / 'cache'}'\n"
        "[training]\nbase_weights = 'none'\n"
    )
    result = subprocess.run(run_cli_command("train", "--config", str(config), "--out", str(tmp_path / "out")),
                            cwd=PROJECT_ROOT, env=cli_environment(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1
    assert "http://127.0.0.1:9/cats_and_dogs_filtered.zip" in error_lines[0]
    assert "--data-dir DIR" in error_lines[0] and "--dataset synthetic" in error_lines[0]


def test_bad_config_value_stops_before_anything_is_written(tmp_path):
    result = train(tmp_path, "--epochs", "0")
    assert result.returncode == 2
    assert "training.epochs" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "smoke").exists()


def wait_for_epochs(progress: Path, count: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if len(json.loads(progress.read_text())["epochs"]) >= count:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"{progress} never reached {count} epochs")


@pytest.mark.slow
@pytest.mark.training
@pytest.mark.parametrize("stop_signal", [signal.SIGKILL, signal.SIGINT])
def test_interrupted_training_resumes_with_every_epoch_once(tmp_path, stop_signal):
    """Stop a real training process in the middle of an epoch, then run the same command again.
    In the slow lane: the fast lane stops a builder model's run with Ctrl-C (test_own_models) and
    kills a pool worker (test_scale), and resumes both."""
    config = tmp_path / "slower.toml"  # epochs of about a second, so a signal lands mid-epoch
    config.write_text(
        "[study]\nrun_name = 'smoke'\nmodels = ['augmented']\n[data]\nsource = 'synthetic'\nimage_size = [64, 64]\n"
        "synthetic_train_per_class = 320\nsynthetic_validation_per_class = 40\n[training]\nepochs = 5\nbase_weights = 'none'\n",
        encoding="utf-8",
    )
    command = run_cli_command("train", "--config", str(config), "--out", str(tmp_path))
    process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=cli_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_folder = tmp_path / "smoke" / "models" / "augmented" / "seed-1337"
    progress = run_folder / "checkpoint" / "progress.json"
    try:
        wait_for_epochs(progress, 2)
        time.sleep(0.4)  # into the third epoch
        process.send_signal(stop_signal)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    if stop_signal == signal.SIGINT:
        assert process.returncode == 130, stderr
        assert "run the same command again to resume" in stderr
        assert load(tmp_path / "smoke" / "manifest.json")["status"] == "interrupted"
    else:
        assert process.returncode == -signal.SIGKILL
    done_before = len(load(progress)["epochs"])
    assert 2 <= done_before < 5
    history_before = load(run_folder / "history.json")["epochs"]
    assert [record["epoch"] for record in history_before] == list(range(1, done_before + 1))

    resumed = subprocess.run(command, cwd=PROJECT_ROOT, env=cli_environment(), capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming augmented (seed 1337) after epoch {done_before} of 5" in resumed.stderr
    history = load(run_folder / "history.json")["epochs"]
    assert [record["epoch"] for record in history] == [1, 2, 3, 4, 5]
    assert history[:done_before] == history_before
    assert load(run_folder / "state.json")["status"] == "complete"
    assert load(tmp_path / "smoke" / "manifest.json")["status"] == "complete"
    assert load(tmp_path / "smoke" / "metrics.json")["chosen_model"] == "augmented"


@pytest.mark.training
def test_skipped_files_reach_the_manifest_and_the_report(tmp_path):
    """A folder with a corrupt and an empty file trains on the rest and lists both, end to end."""
    from PIL import Image

    from experiments.data.loading import synthetic_images

    images, labels = synthetic_images(24, (40, 40), seed=1)
    data_root = tmp_path / "photos"
    for split, (start, stop) in {"train": (0, 16), "validation": (16, 24)}.items():
        for label, class_name in enumerate(["<b>cats</b>", "dogs & co"]):
            folder = data_root / split / class_name
            folder.mkdir(parents=True)
            for index in range(start, stop):
                Image.fromarray(images[labels == label][index]).save(folder / f"{index}.png")
    (data_root / "train" / "dogs & co" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (data_root / "train" / "<b>cats</b>" / "empty.png").write_bytes(b"")
    before = sorted((path.relative_to(data_root), path.stat().st_mtime_ns) for path in data_root.rglob("*"))
    result = subprocess.run(
        run_cli_command("train", "--config", str(SMOKE_CONFIG), "--data-dir", str(data_root), "--out", str(tmp_path / "out"),
                        "--models", "baseline", "--epochs", "1"),
        cwd=PROJECT_ROOT, env=cli_environment(), capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr
    assert "2 files skipped" in result.stderr
    manifest = load(tmp_path / "out" / "smoke" / "manifest.json")
    skipped = {item["file"]: item["reason"] for item in manifest["skipped_files"]}
    assert set(skipped) == {"train/dogs & co/broken.jpg", "train/<b>cats</b>/empty.png"}
    assert skipped["train/<b>cats</b>/empty.png"] == "empty file"
    assert load(tmp_path / "out" / "smoke" / "dataset.json")["splits"]["train"]["count"] == 32
    assert sorted((path.relative_to(data_root), path.stat().st_mtime_ns) for path in data_root.rglob("*")) == before

    from report_builder.render import render_report

    docs = tmp_path / "docs"
    render_report(tmp_path / "out" / "smoke", docs)
    method = (docs / "method.md").read_text(encoding="utf-8")
    assert "broken.jpg" in method and "empty file" in method
    assert "<b>" not in method and "&lt;b&gt;cats&lt;/b&gt;" in method


@pytest.mark.keras
def test_a_folder_that_cannot_make_a_study_stops_with_one_sentence(tmp_path):
    from PIL import Image

    for split in ("train", "validation"):
        (tmp_path / "photos" / split / "cats").mkdir(parents=True)
        Image.new("RGB", (30, 30)).save(tmp_path / "photos" / split / "cats" / "a.png")
    result = train(tmp_path / "out", "--data-dir", str(tmp_path / "photos"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "only one class folder 'cats'" in result.stderr and str(tmp_path / "photos") in result.stderr


def test_finetune_without_transfer_is_a_config_error(tmp_path):
    result = train(tmp_path, "--models", "baseline,finetune")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "transfer must be listed before it" in result.stderr


DIVERGING_CONFIG = """
[study]
run_name = "diverging"
models = ["baseline", "augmented"]
seed = 7
[data]
source = "synthetic"
image_size = [24, 24]
batch_size = 16
synthetic_train_per_class = 32
synthetic_validation_per_class = 10
[training]
epochs = 4
base_weights = "none"
mixed_precision = "none"
verbose = "silent"
"""


@pytest.mark.training
def test_a_diverging_loss_stops_the_run_and_fails_the_study(write_config, tmp_path):
    """A learning rate of 1e6 sends the loss to NaN: the run stops in that epoch, the cell says
    "diverged", the others still train, and the study exits 1 naming model, seed and epoch."""
    config = write_config(DIVERGING_CONFIG.replace("epochs = 4", "epochs = 4\nlearning_rate = 1e6"))
    result = subprocess.run(run_cli_command("train", "--config", str(config), "--out", str(tmp_path / "out")),
                            cwd=PROJECT_ROOT, env=cli_environment(), capture_output=True, text=True, timeout=240)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "baseline (seed 7): loss became NaN in epoch 1" in error[0], result.stderr
    assert "augmented (seed 7): loss became NaN in epoch 1" in error[0], "the other model trained (and diverged) too"
    run_dir = tmp_path / "out" / "diverging"
    for model in ("baseline", "augmented"):
        state = load(seed_folder(run_dir, model, 7) / "state.json")
        assert state["status"] == "diverged" and state["error"] == "loss became NaN in epoch 1"
        assert not (seed_folder(run_dir, model, 7) / "model.keras").exists()
    manifest = load(run_dir / "manifest.json")
    assert manifest["status"] == "failed"
    assert manifest["models"]["baseline"]["runs"]["7"]["status"] == "diverged"
    assert manifest["models"]["baseline"]["status"] == "diverged"
    assert not (run_dir / "metrics.json").exists(), "nothing finished, so nothing is chosen or tested"
    from report_builder.render import render_report

    render_report(run_dir, tmp_path / "docs")
    page = (tmp_path / "docs" / "models" / "baseline.md").read_text(encoding="utf-8")
    assert '!!! danger "Diverged"' in page and "loss became NaN in epoch 1" in page


@pytest.mark.training
def test_a_diverged_run_is_never_chosen_and_trains_again_next_time(write_config, tmp_path, monkeypatch, runner_log):
    """augmented's loss turns NaN in its third epoch (the poisoned loss below): its first two
    epochs stay committed, baseline is chosen and tested, and the study fails naming the epoch."""
    import keras

    from experiments.config import load_config
    from experiments.errors import StudyFailed
    from experiments.study import train_cell
    from experiments.study.run import run_study

    config = load_config(write_config(DIVERGING_CONFIG.replace('run_name = "diverging"', f'run_name = "diverging"\nout_dir = "{tmp_path}"')))
    real_build = train_cell.build_for_training

    def poisoned_build(config, run, data, model_name, seed):
        model, first_epoch, last_epoch = real_build(config, run, data, model_name, seed)
        if model_name == "augmented":  # 64 images in batches of 16: step 8 starts epoch 3
            cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

            def loss(y_true, y_pred):
                return cross_entropy(y_true, y_pred) + keras.ops.where(model.optimizer.iterations >= 8, float("nan"), 0.0)

            model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss, metrics=["accuracy"])
        return model, first_epoch, last_epoch

    monkeypatch.setattr(train_cell, "build_for_training", poisoned_build)
    messages = runner_log.messages
    with pytest.raises(StudyFailed, match=r"augmented \(seed 7\): loss became NaN in epoch 3"):
        run_study(config)
    assert "  augmented (seed 7) diverged: loss became NaN in epoch 3; stopped it, going on with the others" in messages
    run_dir = tmp_path / "diverging"
    state = load(seed_folder(run_dir, "augmented", 7) / "state.json")
    assert (state["status"], state["error"], state["epochs_completed"]) == ("diverged", "loss became NaN in epoch 3", 2)
    assert [record["epoch"] for record in load(seed_folder(run_dir, "augmented", 7) / "history.json")["epochs"]] == [1, 2]
    metrics = load(run_dir / "metrics.json")
    assert metrics["chosen_model"] == "baseline" and set(metrics["selection"]["candidates"]) == {"baseline"}
    manifest = load(run_dir / "manifest.json")
    assert manifest["status"] == "failed" and manifest["models"]["baseline"]["status"] == "complete"
    assert manifest["models"]["augmented"]["runs"]["7"] == {"status": "diverged", "wall_seconds": None,
                                                           "epochs_completed": 2, "error": "loss became NaN in epoch 3"}

    monkeypatch.setattr(train_cell, "build_for_training", real_build)
    messages.clear()
    run_study(config)
    assert "[2/2] augmented, seed 7: training in float32, it diverged last time (loss became NaN in epoch 3); training again from the start" in messages
    assert load(seed_folder(run_dir, "augmented", 7) / "state.json")["status"] == "complete"
    assert load(run_dir / "manifest.json")["status"] == "complete"


# --------------------------------------------------------------------------- the test step, without TensorFlow
#
# The cells' files are written by hand (as a finished training leaves them) and the evaluation on
# the test split is a stand-in that records each call: what is checked is when the study looks at
# the test split again and when it reuses the score it has.


class HandMadeStudy:
    """baseline and augmented, seeds 7 and 8, on the smoke data; `evaluations` lists the
    (model, seed) of every evaluation on the test split, in order."""

    def __init__(self, tmp_path: Path, monkeypatch):
        from experiments.artifacts import RunFolder, TestEvaluation
        from experiments.config import load_config
        from experiments.data.loading import load_study_data
        from experiments.study import choose, figures

        self.choose = choose
        self.config = load_config(SMOKE_CONFIG, {"study.out_dir": str(tmp_path), "study.models": ["baseline", "augmented"],
                                                 "study.seeds": 2})
        self.data = load_study_data(self.config)
        self.run = RunFolder(self.config.run_dir)
        self.evaluations: list[tuple[str, int]] = []
        self.trainings = 0

        def evaluate_on_test(config, run, data, chosen, seed):
            self.evaluations.append((chosen, seed))
            # the loss numbers the evaluation, so a reused score can be told from a fresh one
            return TestEvaluation(chosen, seed, float(len(self.evaluations)), 0.5, 8, 16, list(data.class_names),
                                  [[4, 4], [4, 4]], [])

        monkeypatch.setattr(choose, "evaluate_on_test", evaluate_on_test)
        monkeypatch.setattr(choose, "write_misclassified_figure", lambda run, data, test: None)
        monkeypatch.setattr(figures, "comparison", lambda *arguments, **keywords: None)

    def finish(self, model: str, seed: int, last_val_accuracy: float) -> None:
        """What training `model` for `seed` leaves behind: its history (two epochs, the last
        scoring `last_val_accuracy` on validation), its model file and a complete state."""
        from experiments.artifacts import Epoch, History, RunState
        from experiments.config import config_hash

        self.trainings += 1
        training = self.trainings  # every training has its own losses, timings and weights
        seed_run = self.run.seed_run(model, seed)
        seed_run.folder.mkdir(parents=True, exist_ok=True)
        epochs = [Epoch(1, 0.69 - training / 1000, 0.5, 0.68, 0.5, 1.0 + training / 1000),
                  Epoch(2, 0.5 - training / 1000, 0.7, 0.55 - training / 1000, last_val_accuracy, 1.0 + training / 1000)]
        History(model, seed, "float32", epochs).write(seed_run.history)
        seed_run.model_file.write_bytes(f"weights of training {training}".encode())
        RunState(model, seed, config_hash(self.config, model), self.data.fingerprint, "complete", 2, 2,
                 wall_seconds=2.0, precision="float32", finished_at=f"2026-01-01T00:00:{training:02d}+00:00").write(seed_run.state)

    def finish_all(self, baseline_7: float = 0.80, baseline_8: float = 0.75) -> None:
        self.finish("baseline", 7, baseline_7)
        self.finish("baseline", 8, baseline_8)
        self.finish("augmented", 7, 0.60)
        self.finish("augmented", 8, 0.60)

    def select_and_test(self):
        metrics = self.choose.select_and_test(self.config, self.run, self.data)
        assert (metrics.test.model, metrics.test.seed) == (metrics.chosen_model, metrics.chosen_seed), \
            "the test score must be the chosen run's"
        return metrics


def test_an_unchanged_choice_reuses_its_test_score(tmp_path, monkeypatch):
    study = HandMadeStudy(tmp_path, monkeypatch)
    study.finish_all()
    first = study.select_and_test()
    assert (first.chosen_model, first.chosen_seed) == ("baseline", 7)
    again = study.select_and_test()
    assert study.evaluations == [("baseline", 7)], "nothing changed: the test split is not looked at twice"
    assert again.test == first.test


def test_a_new_chosen_seed_is_tested_not_given_the_old_seed_s_score(tmp_path, monkeypatch):
    """A third seed of the chosen model does better (seeds are not hashed: the others are kept):
    the choice moves to it, and it is evaluated on test."""
    study = HandMadeStudy(tmp_path, monkeypatch)
    study.finish_all()
    assert study.select_and_test().chosen_seed == 7
    study.config.study.seeds = 3
    study.finish("baseline", 9, 0.90)
    study.finish("augmented", 9, 0.60)
    metrics = study.select_and_test()
    assert (metrics.chosen_model, metrics.chosen_seed) == ("baseline", 9)
    assert study.evaluations == [("baseline", 7), ("baseline", 9)]
    assert metrics.test.loss == 2.0, "the score is the new evaluation's"


def test_a_change_of_seed_within_the_same_seeds_is_tested_again(tmp_path, monkeypatch):
    """Seed 8 of the chosen model is retrained (its run failed, or --force) and now ends above seed 7."""
    study = HandMadeStudy(tmp_path, monkeypatch)
    study.finish_all()
    assert study.select_and_test().chosen_seed == 7
    study.finish("baseline", 8, 0.85)
    metrics = study.select_and_test()
    assert (metrics.chosen_model, metrics.chosen_seed) == ("baseline", 8)
    assert study.evaluations == [("baseline", 7), ("baseline", 8)]


@pytest.mark.parametrize("retrained_by", ["--force", "a changed config"])
def test_a_retrained_chosen_run_is_tested_again(tmp_path, monkeypatch, retrained_by):
    """The chosen run is trained again and is still the one chosen, with the same validation
    accuracy: its weights are new, so the old test score says nothing about them."""
    study = HandMadeStudy(tmp_path, monkeypatch)
    study.finish_all()
    first = study.select_and_test()
    assert (first.chosen_model, first.chosen_seed) == ("baseline", 7)
    if retrained_by == "--force":
        study.finish("baseline", 7, 0.80)
    else:
        study.config.training.learning_rate *= 2  # every run is stale: all are trained again
        study.finish_all()
    metrics = study.select_and_test()
    assert (metrics.chosen_model, metrics.chosen_seed) == ("baseline", 7)
    assert study.evaluations == [("baseline", 7), ("baseline", 7)]
    assert metrics.test.loss == 2.0, "the score is the new evaluation's, not the one of the weights retrained away"


@pytest.mark.training
def test_a_truncated_chosen_model_at_the_test_step_is_one_sentence_naming_it_and_what_to_do(tmp_path, capsys):
    from report_builder.__main__ import main

    command = ["train", "--config", str(SMOKE_CONFIG), "--out", str(tmp_path), "--models", "baseline", "--epochs", "1"]
    assert main(command) == 0
    model_file = seed_folder(tmp_path / "smoke", "baseline", 7) / "model.keras"
    data = model_file.read_bytes()
    model_file.write_bytes(data[: len(data) // 2])
    (tmp_path / "smoke" / "metrics.json").unlink()  # so that the test step runs again
    capsys.readouterr()
    assert main(command) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: The saved model {model_file} cannot be used (it is truncated or damaged: File is not a zip "
                      "file); delete it (or pass --force) and run train again, and that model is trained again."], err
    assert "Traceback" not in err and "File not found" not in err
    assert model_file.read_bytes() == data[: len(data) // 2]  # left as it is


def test_the_data_figures_are_drawn_once_per_run_folder_and_data(tmp_path, monkeypatch):
    """A rerun or a resume of the same data does not redraw them; a missing figure, or other data
    (here another split seed), does."""
    from experiments.artifacts import RunFolder
    from experiments.config import load_config
    from experiments.data.loading import load_study_data
    from experiments.study import data_figures, figures

    drawn = []

    def draw(run, data):  # stands for the drawing (matplotlib and a Keras layer: seconds)
        drawn.append(data.seed)
        for name in data_figures.DATA_FIGURES:
            for path in (run.figure(name), figures.dark_path(run.figure(name))):
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"drawn")

    monkeypatch.setattr(data_figures, "write_data_figures", draw)
    config = load_config(SMOKE_CONFIG, {"study.out_dir": str(tmp_path)})
    run = RunFolder(config.run_dir)
    run.root.mkdir(parents=True)
    data = load_study_data(config)
    data_figures.record_data(run, data)
    data_figures.record_data(run, data)
    assert drawn == [7] and load(run.dataset)["fingerprint"] == data.fingerprint
    figures.dark_path(run.figure("augmentation_rotation")).unlink()
    data_figures.record_data(run, data)
    assert drawn == [7, 7]
    other = load_study_data(load_config(SMOKE_CONFIG, {"study.out_dir": str(tmp_path), "study.seed": 8}))
    data_figures.record_data(run, other)
    assert drawn == [7, 7, 8] and load(run.dataset)["seed"] == 8
