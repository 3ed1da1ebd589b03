"""Several `train` processes on one run: one writer per cell, a manifest derived from the cells."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, TINY_BACKBONE, cli_environment, run_cli_command

# Small enough that a cell takes a second or two, so that two processes started together meet.
CHAIN_CONFIG = f"""
[study]
run_name = "shared"
models = ["baseline", "transfer", "finetune"]
seed = 7
seeds = 2
[data]
source = "synthetic"
image_size = [32, 32]
batch_size = 16
synthetic_train_per_class = 32
synthetic_validation_per_class = 10
[training]
epochs = 1
finetune_epochs = 1
base_weights = "none"
mixed_precision = "none"
verbose = "silent"
finetune_from_layer = 4
# The transfer -> finetune chain stands on the tests' own backbone (tests/tiny_backbone.py: 8 layers,
# where the built-in model's MobileNetV2 has 154): the same recipes and the same frozen base and
# unfrozen top, at a small CNN's cost (the smoke study keeps MobileNetV2)
[models.transfer]
recipe = "transfer"
backbone = "{TINY_BACKBONE}"
augment = true
"""
CELLS = [(model, seed) for model in ("baseline", "transfer", "finetune") for seed in (7, 8)]
TRAINING_LINE = re.compile(r"\] (\w+), seed (\d+)(?: \(back to it\))?: training in ")


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def assert_manifest_agrees_with_the_cells(run_dir: Path, cells: list[tuple[str, int]]) -> dict:
    """Every planned cell's state.json says what the manifest's run entry says."""
    manifest = load(run_dir / "manifest.json")
    for model, seed in cells:
        state = load(run_dir / "models" / model / f"seed-{seed}" / "state.json")
        entry = manifest["models"][model]["runs"][str(seed)]
        assert entry == {key: state[key] for key in ("status", "wall_seconds", "epochs_completed", "error")}, (model, seed)
    for model in {model for model, _ in cells}:
        runs = manifest["models"][model]["runs"]
        statuses = {entry["status"] for entry in runs.values()}
        expected = ("failed" if "failed" in statuses else "diverged" if "diverged" in statuses
                    else "complete" if statuses == {"complete"} else "partial")
        assert manifest["models"][model]["status"] == expected, model
        assert manifest["models"][model]["epochs_completed"] == sum(entry["epochs_completed"] for entry in runs.values())
    return manifest


def wait_for_text(paths: list[Path], text: str, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sum(path.read_text(errors="replace").count(text) for path in paths if path.exists())
        if found >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"{text!r} did not appear {count} times in {paths}: "
                         + "\n".join(path.read_text(errors="replace") for path in paths if path.exists()))


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory):
    """Two `train` processes started together on one run, while the test itself holds the
    transfer seed-7 cell: both must leave it and the finetune cell that starts from it, go on,
    come back and wait for it."""
    from experiments.artifacts import RunFolder
    from experiments.study.locks import CellLock

    root = tmp_path_factory.mktemp("concurrent")
    config = root / "chain.toml"
    config.write_text(CHAIN_CONFIG, encoding="utf-8")
    run_dir = root / "out" / "shared"
    RunFolder(run_dir).claim()  # the holder stands for a third `train` command, which claimed (marked) the run
    held = CellLock(RunFolder(run_dir).seed_run("transfer", 7))
    assert held.try_acquire("training transfer, seed 7")
    logs = [root / "first.err", root / "second.err"]
    command = run_cli_command("train", "--config", str(config), "--out", str(root / "out"))
    processes = []
    try:
        for log in logs:
            with open(log, "w") as handle:
                processes.append(subprocess.Popen(command, cwd=PROJECT_ROOT, env=cli_environment(),
                                                  stdout=subprocess.DEVNULL, stderr=handle))
        # generous: both processes first train the other cells, with a pytest-xdist worker beside them on the same cores
        wait_for_text(logs, f"held by another process (pid {os.getpid()}); coming back to it", 2, timeout=480)
        wait_for_text(logs, f"waiting for another process (pid {os.getpid()}) that is training transfer, seed 7", 2, timeout=480)
    finally:
        held.release()
        for process in processes:
            try:
                process.wait(timeout=240)
            except subprocess.TimeoutExpired:
                process.kill()
    return run_dir, config, [process.returncode for process in processes], [log.read_text() for log in logs]


@pytest.mark.training
def test_two_processes_train_every_cell_exactly_once(shared_run):
    run_dir, _, codes, stderrs = shared_run
    assert codes == [0, 0], "\n".join(stderrs)
    trained = [match.groups() for stderr in stderrs for match in TRAINING_LINE.finditer(stderr)]
    assert sorted((model, int(seed)) for model, seed in trained) == sorted(CELLS), "\n".join(stderrs)
    for stderr in stderrs:  # the one that did not train a cell skipped it, having waited when it was held
        assert "Traceback" not in stderr
        # the finetune cell is left while the transfer cell it starts from is held
        assert f"finetune, seed 7: starts from transfer, seed 7, which another process (pid {os.getpid()}) holds; coming back to it" in stderr
        assert stderr.count("skipped, finished") + len(TRAINING_LINE.findall(stderr)) == len(CELLS), stderr
    assert sum(stderr.count("Evaluating it on the test split, once.") for stderr in stderrs) == 1, "\n".join(stderrs)
    manifest = assert_manifest_agrees_with_the_cells(run_dir, CELLS)
    assert manifest["status"] == "complete"
    assert all(entry["status"] == "complete" for entry in manifest["models"].values())
    for model, seed in CELLS:
        folder = run_dir / "models" / model / f"seed-{seed}"
        expected = [2] if model == "finetune" else [1]
        assert [record["epoch"] for record in load(folder / "history.json")["epochs"]] == expected
        assert (folder / "model.keras").is_file() and not (folder / "checkpoint").exists()
        assert not (folder / ".cell.owner.json").exists(), "a released lock leaves no owner behind"
    metrics = load(run_dir / "metrics.json")
    assert (metrics["chosen_model"], metrics["chosen_seed"]) in CELLS
    assert not list(run_dir.rglob(".*.tmp.*")), "temporary files left behind"


@pytest.mark.training
def test_a_stale_manifest_is_healed_by_the_next_train(shared_run):
    run_dir, config, codes, _ = shared_run
    assert codes == [0, 0]
    manifest_path = run_dir / "manifest.json"
    stale = load(manifest_path)
    stale["status"] = "interrupted"
    stale["models"]["transfer"]["status"] = "partial"
    stale["models"]["transfer"]["runs"]["8"].update(status="partial", epochs_completed=0, wall_seconds=None)
    del stale["models"]["finetune"]
    manifest_path.write_text(json.dumps(stale), encoding="utf-8")
    result = subprocess.run(run_cli_command("train", "--config", str(config), "--out", str(run_dir.parent)),
                            cwd=PROJECT_ROOT, env=cli_environment(), capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("skipped, finished with the same config and data") == len(CELLS), result.stderr
    assert "not evaluating again" in result.stderr
    manifest = assert_manifest_agrees_with_the_cells(run_dir, CELLS)
    assert manifest["status"] == "complete"
    assert manifest["models"]["transfer"]["status"] == manifest["models"]["finetune"]["status"] == "complete"


def _in_process_config(tmp_path: Path, models: list[str], seeds: int):
    from experiments.config import load_config

    path = tmp_path / "in-process.toml"
    path.write_text(CHAIN_CONFIG.replace('models = ["baseline", "transfer", "finetune"]', f"models = {json.dumps(models)}")
                    .replace("seeds = 2", f"seeds = {seeds}")
                    .replace('run_name = "shared"', f'run_name = "held"\nout_dir = "{tmp_path / "out"}"'), encoding="utf-8")
    return load_config(path)


def test_healing_derives_models_and_status_from_the_states(tmp_path):
    """The manifest a crashed process left is rewritten from the cells, without training."""
    from experiments.artifacts import Manifest, ModelEntry, RunFolder, RunState, write_json
    from experiments.config import config_hash
    from experiments.study.manifest import write_manifest

    config = _in_process_config(tmp_path, ["baseline"], 2)
    run = RunFolder(config.run_dir)
    for seed, status, error in ((7, "complete", None), (8, "diverged", "loss became NaN in epoch 1")):
        RunState("baseline", seed, config_hash(config, "baseline"), "data", status, 1 if status == "complete" else 0, 1,
                 2.5 if status == "complete" else None, error, "float32").write(run.seed_run("baseline", seed).state)
    Manifest("held", {}, "stale", "running", [7, 8], {"baseline": ModelEntry("complete")}, data_fingerprint="data").write(run.manifest)
    manifest = write_manifest(run, config, "healing").to_json()
    assert manifest == load(run.manifest) and manifest["config_hash"] == config_hash(config)
    assert manifest["status"] == "failed"
    baseline = manifest["models"]["baseline"]
    assert baseline["status"] == "diverged" and baseline["precision"] == "float32"
    assert baseline["runs"]["7"] == {"status": "complete", "wall_seconds": 2.5, "epochs_completed": 1, "error": None}
    assert baseline["runs"]["8"]["status"] == "diverged" and baseline["error"] == "seed 8: loss became NaN in epoch 1"
    # the manifest, written before it recorded the study, now has the record the report reads
    assert [model["name"] for model in manifest["study"]["models"]] == ["baseline"]
    assert manifest["study"]["models"][0]["recipe"] == "small_cnn" and "training.epochs" in manifest["study"]["settings"]
    # a state trained for other data is not this study's: the cell counts as not run
    write_json(run.seed_run("baseline", 8).state, {**load(run.seed_run("baseline", 8).state), "data_fingerprint": "other"})
    manifest = write_manifest(run, config, "healing").to_json()
    assert set(manifest["models"]["baseline"]["runs"]) == {"7"} and manifest["models"]["baseline"]["status"] == "partial"
    assert manifest["status"] == "interrupted", "cells not run, and nobody said it is running"
    assert write_manifest(RunFolder(tmp_path / "nothing"), config, "healing") is None, "no manifest, nothing to heal"
    assert not (tmp_path / "nothing").exists()


def _hold_until(seed_run, release_when: threading.Event) -> threading.Thread:
    """Hold a cell's lock from another thread (its own flock, as another process would) until
    `release_when` is set. (filelock's locks belong to the thread that takes them.)"""
    from experiments.study.locks import CellLock

    taken = threading.Event()

    def hold():
        lock = CellLock(seed_run)
        assert lock.try_acquire(f"training {seed_run.model_name}, seed {seed_run.seed}")
        taken.set()
        release_when.wait(timeout=120)
        lock.release()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    assert taken.wait(timeout=30)
    return thread


@pytest.mark.training
@pytest.mark.parametrize(("models", "seeds", "held"), [
    (["baseline"], 2, "baseline"),
    # a chain whose source is held: its finetune cell waits too (also shown, with two `train` processes, by shared_run)
    pytest.param(["transfer", "finetune"], 1, "transfer", marks=pytest.mark.slow)])
def test_a_held_cell_is_left_then_waited_for(tmp_path, runner_log, models, seeds, held):
    """A cell another holder has is left for later, the others go on (a finetune cell waits for
    the transfer cell it starts from), and at the end the process waits for it and decides again."""
    from experiments.artifacts import RunFolder
    from experiments.study.run import run_study

    config = _in_process_config(tmp_path, models, seeds)
    messages = runner_log.messages
    waiting = threading.Event()

    def on_message(message: str) -> None:
        if "waiting for another process" in message:
            waiting.set()

    runner_log.on_message = on_message
    RunFolder(config.run_dir).claim()  # the other process claimed (marked) the run first, as `train` does
    holder = _hold_until(RunFolder(config.run_dir).seed_run(held, 7), waiting)
    run_study(config)
    holder.join(timeout=10)
    pid = os.getpid()
    text = "\n".join(messages)
    if held == "baseline":
        expected_order = [
            f"[1/2] baseline, seed 7: held by another process (pid {pid}); coming back to it",
            "[2/2] baseline, seed 8: training in",
            f"[1/2] baseline, seed 7 (back to it): waiting for another process (pid {pid}) that is training baseline, seed 7",
            "[1/2] baseline, seed 7 (back to it): training in float32, not trained yet",
        ]
    else:
        expected_order = [
            f"[1/2] transfer, seed 7: held by another process (pid {pid}); coming back to it",
            f"[2/2] finetune, seed 7: starts from transfer, seed 7, which another process (pid {pid}) holds; coming back to it",
            f"[1/2] transfer, seed 7 (back to it): waiting for another process (pid {pid}) that is training transfer, seed 7",
            "[1/2] transfer, seed 7 (back to it): training in float32, not trained yet",
            "[2/2] finetune, seed 7 (back to it): training in float32, not trained yet",
        ]
    positions = [next((index for index, message in enumerate(messages) if message.startswith(line)), None) for line in expected_order]
    assert None not in positions and positions == sorted(positions), text
    cells = [(model, seed) for model in models for seed in config.seeds]
    manifest = assert_manifest_agrees_with_the_cells(config.run_dir, cells)
    assert manifest["status"] == "complete", text


# --------------------------------------------------------------------------- one run, one set of settings


def test_a_command_with_other_settings_is_refused_while_one_works_on_the_run_and_the_same_settings_join(tmp_path):
    from experiments.artifacts import RunFolder
    from experiments.config import load_config
    from experiments.errors import UserError
    from experiments.study.locks import hold_run_settings
    from tests.conftest import SMOKE_CONFIG

    three = load_config(SMOKE_CONFIG, {"study.out_dir": str(tmp_path), "training.epochs": 3})
    five = load_config(SMOKE_CONFIG, {"study.out_dir": str(tmp_path), "training.epochs": 5})
    run = RunFolder(three.run_dir)
    with hold_run_settings(run, three):
        with hold_run_settings(run, three):  # the same settings: a second command joins, as before
            pass
        with pytest.raises(UserError) as caught:
            with hold_run_settings(run, five):
                pytest.fail("a second set of settings got into the run")
        message = str(caught.value)
        assert str(run.root) in message and "training.epochs: 3 there, 5 here" in message
        assert "another --run-name" in message and message.count(". ") == 0
    with hold_run_settings(run, five):  # the first has finished: the run is free for other settings
        pass


def test_train_with_other_settings_stops_in_one_sentence_before_anything_is_written(tmp_path, capsys):
    from experiments.artifacts import RunFolder
    from experiments.config import load_config
    from experiments.study.locks import hold_run_settings
    from report_builder.cli import main
    from tests.conftest import SMOKE_CONFIG

    three = load_config(SMOKE_CONFIG, {"study.out_dir": str(tmp_path), "training.epochs": 3})
    run = RunFolder(three.run_dir)
    run.claim()
    with hold_run_settings(run, three):  # stands for a `train --epochs 3` at work on the run
        before = sorted(path.name for path in run.root.iterdir())
        status = main(["train", "--config", str(SMOKE_CONFIG), "--out", str(tmp_path), "--epochs", "5"])
        assert sorted(path.name for path in run.root.iterdir()) == before
    assert status == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: Another `train` command") and "training.epochs: 3 there, 5 here" in error
    assert len(error.splitlines()) == 1


def test_a_study_whose_runs_failed_says_so_in_one_sentence_with_one_full_stop(tmp_path):
    """Each failed cell's reason may be a sentence of its own (a full disk's): the error joins
    them with semicolons, without a full stop in the middle."""
    from experiments.config import load_config
    from experiments.errors import StudyFailed
    from experiments.study.lifecycle import open_run
    from tests.conftest import SMOKE_CONFIG

    config = load_config(SMOKE_CONFIG, {"study.out_dir": str(tmp_path)})
    with pytest.raises(StudyFailed) as failed:
        with open_run(config) as opened:
            opened.failures["baseline (seed 7)"] = "Cannot write x: the disk is full; free some space (what was written before is intact)."
            opened.failures["augmented (seed 7)"] = "loss became NaN in epoch 3"
            opened.advice = "; run the same command again to resume the lost cells"
    message = str(failed.value)
    assert ".;" not in message and message.count(". ") == 0, message
    assert message.startswith("2 run(s) failed: baseline (seed 7): Cannot write x") and "augmented (seed 7): loss became NaN" in message
