"""The study: read the data, then for each model skip, resume or train; choose on validation;
evaluate the chosen model on the test split, once.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from experiments.artifacts import SCHEMA_VERSION, RunFolder, read_json, write_atomic, write_json
from experiments.config import StudyConfig, config_hash
from experiments.data import StudyData, load_study_data, make_dataset
from experiments.images import DataError, summarize_skipped

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tensorflow", "keras", "numpy", "pillow", "matplotlib", "jinja2", "mkdocs", "mkdocs-material")
SELECTION_RULE = "highest validation accuracy of the final weights (last epoch); the test split is not looked at"


class StudyFailed(RuntimeError):
    """One or more models failed to train; the others' artifacts are written."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- environment


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def processor_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def hardware_and_devices() -> tuple[dict[str, Any], list[str]]:
    import tensorflow as tf

    devices = [device.name for device in tf.config.list_physical_devices()]
    gpus = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        gpus.append(details.get("device_name", gpu.name))
    hardware = {
        "platform": platform.platform(),
        "processor": processor_name(),
        "cpu_count": os.cpu_count(),
        "gpus": gpus,
    }
    return hardware, devices


def git_commit() -> str | None:
    """HEAD of the project's repository, with "-dirty" if tracked files have changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def describe_base_weights(setting: str) -> dict[str, Any]:
    if setting in ("imagenet", "none"):
        return {"kind": setting, "location": None, "file": None}
    path = Path(setting)
    return {"kind": "file", "location": str(path), "file": path.name}


# --------------------------------------------------------------------------- decisions


SKIP, RESUME, RESTART = "skip", "resume", "restart"


def training_decision(run: RunFolder, model_name: str, expected: dict[str, str], force: bool) -> tuple[str, str]:
    """What to do with `model_name`: SKIP, RESUME (keep committed epochs) or RESTART (discard
    them), and why, in words for the console."""
    if force:
        return RESTART, "--force given"
    state = read_json(run.state(model_name))
    if state is None:
        return RESUME, "not trained yet"
    history = read_json(run.history(model_name))
    for key, label in (("config_hash", "config"), ("data_fingerprint", "data")):
        if state.get(key) != expected[key]:
            return RESTART, f"the {label} changed since it was trained ({str(state.get(key))[:10]} -> {expected[key][:10]}); retraining"
    if state.get("status") != "complete" or history is None:
        return RESUME, f"resuming an unfinished run ({state.get('epochs_completed', 0)} epochs done)"
    if len(history.get("epochs", [])) != state.get("epochs_planned"):
        return RESTART, "its history is incomplete; retraining"
    return SKIP, "finished with the same config and data"


def choose_model(histories: dict[str, list[dict[str, Any]]]) -> tuple[str | None, dict[str, float | None]]:
    """The model whose final validation accuracy is highest (study order breaks ties)."""
    candidates = {name: (epochs[-1].get("val_accuracy") if epochs else None) for name, epochs in histories.items()}
    usable = [(value, -index, name) for index, (name, value) in enumerate(candidates.items()) if value is not None]
    if not usable:
        return None, candidates
    return max(usable)[2], candidates


# --------------------------------------------------------------------------- steps


def write_data_figures(run: RunFolder, data: StudyData, seed: int) -> None:
    """The data grid, and what the augmentation layers of the models do to one training image."""
    import numpy as np
    from keras import layers

    from experiments import figures

    figures.data_grid(data.train.images, data.train.labels, data.class_names, run.figure("data_grid"))
    example = data.train.images[0]
    flips = [("flipped left-right", example[:, ::-1]), ("flipped upside down", example[::-1, :]),
             ("flipped both ways", example[::-1, ::-1])]
    figures.augmentation_demo(example, flips, run.figure("augmentation_flip"))
    rotate = layers.RandomRotation(0.2, seed=seed, name="demo_rotation")
    batch = np.repeat(example[None].astype(np.float32), 4, axis=0)
    rotated = np.asarray(rotate(batch, training=True))
    figures.augmentation_demo(example, [(f"rotated {index + 1}", image) for index, image in enumerate(rotated)],
                              run.figure("augmentation_rotation"))


def train_one(config: StudyConfig, run: RunFolder, data: StudyData, model_name: str, model_index: int, expected: dict[str, str]) -> dict[str, Any]:
    """Build, compile and fit one model; write its history, summary, state and model file."""
    import keras

    from experiments import figures
    from experiments.models import build_model, compile_model, describe_model
    from experiments.training import clear_checkpoint, fit, keras_verbosity, load_progress, write_history

    seed = config.study.seed + 1000 * model_index
    keras.utils.set_random_seed(seed)
    keras.backend.clear_session()
    model = build_model(model_name, data.image_size, len(data.class_names), config.training.base_weights, seed)
    compile_model(model, config.training.learning_rate, config.training.jit_compile)
    write_json(run.summary(model_name), {"schema_version": SCHEMA_VERSION, **describe_model(model)})
    earlier_epochs, _ = load_progress(run, model_name)
    state = {"schema_version": SCHEMA_VERSION, "model": model_name, **expected, "status": "partial",
             "epochs_completed": len(earlier_epochs), "epochs_planned": config.training.epochs}
    write_json(run.state(model_name), state)
    result = fit(
        model,
        run,
        model_name,
        make_dataset(data.train, config.data.batch_size, shuffle=True, seed=seed),
        make_dataset(data.validation, config.data.batch_size, shuffle=False, seed=seed),
        config.training.epochs,
        state,
        verbose=keras_verbosity(config.training.verbose),
    )
    write_history(run, model_name, result.epochs)
    write_atomic(run.model_file(model_name), lambda path: result.model.save(path))
    state.update(status="complete", epochs_completed=len(result.epochs))
    write_json(run.state(model_name), state)
    clear_checkpoint(run, model_name)
    baseline = data.majority_baseline()["accuracy"]["validation"]
    figures.training_curves(result.epochs, f"{model_name}: accuracy and loss per epoch", run.figure(f"curves_{model_name}"), baseline)
    earlier_seconds = sum(record.get("seconds") or 0 for record in result.epochs[: result.resumed_from_epoch])
    return {"status": "complete", "wall_seconds": round(result.wall_seconds + earlier_seconds, 1),
            "epochs_completed": len(result.epochs), "error": None}


def evaluate_on_test(config: StudyConfig, run: RunFolder, data: StudyData, chosen: str) -> dict[str, Any]:
    """Evaluate the chosen model's saved weights on the test split: the one look at test."""
    import numpy as np

    from experiments.models import load_trained_model

    model_path = run.model_file(chosen)
    if not model_path.is_file():
        raise StudyFailed(
            f"the chosen model's file {model_path} is missing, so it cannot be evaluated on the test split; "
            "run again with --force to retrain it"
        )
    model = load_trained_model(model_path)
    test_dataset = make_dataset(data.test, config.data.batch_size, shuffle=False, seed=0)
    loss, _ = model.evaluate(test_dataset, verbose=0)
    logits = model.predict(test_dataset, verbose=0).astype(np.float64)
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    predicted = np.argmax(probabilities, axis=1)
    class_count = len(data.class_names)
    confusion = np.zeros((class_count, class_count), dtype=int)
    np.add.at(confusion, (data.test.labels, predicted), 1)
    correct = int(np.trace(confusion))
    total = len(data.test)
    predictions = [
        {"file": name, "label": data.class_names[int(label)], "predicted": data.class_names[int(guess)],
         "probability": round(float(probability[guess]), 4)}
        for name, label, guess, probability in zip(data.test.files, data.test.labels, predicted, probabilities)
    ]
    wrong = [index for index in range(total) if predicted[index] != data.test.labels[index]]
    from experiments import figures

    figures.misclassified(
        data.test.images[wrong],
        [f"{predictions[index]['label']} as {predictions[index]['predicted']}\n(p = {predictions[index]['probability']:.2f})" for index in wrong],
        run.figure("misclassified_test"),
    )
    return {"model": chosen, "loss": float(loss), "accuracy": correct / total if total else None,
            "correct": correct, "total": total, "class_names": data.class_names,
            "confusion_matrix": confusion.tolist(), "predictions": predictions}


def select_and_test(config: StudyConfig, run: RunFolder, data: StudyData, expected: dict[str, str], retrained: set[str]) -> dict[str, Any] | None:
    histories = {}
    for name in config.study.models:
        state = read_json(run.state(name)) or {}
        history = read_json(run.history(name)) or {}
        if state.get("status") == "complete" and state.get("config_hash") == expected["config_hash"]:
            histories[name] = history.get("epochs", [])
    chosen, candidates = choose_model(histories)
    if chosen is None:
        log("No model finished; nothing to evaluate on the test split.")
        return None
    previous = read_json(run.metrics)
    if (
        previous
        and previous.get("chosen_model") == chosen
        and previous.get("config_hash") == expected["config_hash"]
        and previous.get("data_fingerprint") == expected["data_fingerprint"]
        and chosen not in retrained
        and previous.get("test")
    ):
        test = previous["test"]
        log(f"Test score of {chosen} is unchanged since the last run; not evaluating again.")
    else:
        log(f"Chosen on validation: {chosen} ({candidates[chosen]:.3f}). Evaluating it on the test split, once.")
        test = evaluate_on_test(config, run, data, chosen)
    metrics = {
        "schema_version": SCHEMA_VERSION,
        **expected,
        "selection": {"metric": "val_accuracy", "rule": SELECTION_RULE, "candidates": candidates},
        "chosen_model": chosen,
        "test": test,
        "validation": {
            name: {"loss": epochs[-1].get("val_loss"), "accuracy": epochs[-1].get("val_accuracy")}
            for name, epochs in histories.items() if epochs
        },
    }
    write_json(run.metrics, metrics)
    from experiments import figures

    figures.comparison(histories, run.figure("comparison"), data.majority_baseline()["accuracy"]["validation"])
    return metrics


# --------------------------------------------------------------------------- the study


def preflight(config: StudyConfig) -> None:
    """Checks that can fail fast, before data is read or anything trained."""
    if "transfer" in config.study.models and config.training.base_weights != "none":
        from experiments.models import check_base_weights

        def unavailable(reason: str) -> DataError:
            return DataError(
                f"Could not load the ImageNet weights for MobileNetV2 ({reason}). If this machine is offline, "
                "pass a local file with --base-weights PATH (a MobileNetV2 alpha 1.0 no-top .weights.h5), "
                "or train the base from scratch with --base-weights none."
            )

        check_base_weights(config.image_size, config.training.base_weights, unavailable)


def run_study(config: StudyConfig, force: bool = False) -> RunFolder:
    """Run the configured study into `<out_dir>/<run_name>/` and return the run folder."""
    import keras

    from experiments.models import set_precision

    run = RunFolder(config.run_dir)
    run.check_writable()
    started = time.perf_counter()
    set_precision(config.training.mixed_precision)
    preflight(config)
    log(f"Reading data ({config.data.source})...")
    data = load_study_data(config)
    if data.skipped:
        log(f"  {summarize_skipped(data.skipped)} (listed in {run.dataset})")
    log(f"  {len(data.train)} train, {len(data.validation)} validation, {len(data.test)} test images; classes: {', '.join(data.class_names)}")
    expected = {"config_hash": config_hash(config), "data_fingerprint": data.fingerprint}
    hardware, devices = hardware_and_devices()
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_name": config.study.run_name,
        "config": config.to_dict(),
        **expected,
        "data_source": data.source,
        "skipped_files": [{"file": item.path, "reason": item.reason} for item in data.skipped],
        "base_weights": describe_base_weights(config.training.base_weights),
        "versions": package_versions(),
        "devices": devices,
        "hardware": hardware,
        "git_commit": git_commit(),
        "started_at": _now(),
        "finished_at": None,
        "status": "running",
        "models": {},
    }
    previous_manifest = read_json(run.manifest) or {}
    write_json(run.dataset, {"schema_version": SCHEMA_VERSION, **data.describe()})
    write_data_figures(run, data, config.study.seed)
    failures: dict[str, str] = {}
    retrained: set[str] = set()
    try:
        for index, model_name in enumerate(config.study.models):
            action, reason = training_decision(run, model_name, expected, force)
            if action == SKIP:
                log(f"[{index + 1}/{len(config.study.models)}] {model_name}: skipped, {reason}")
                manifest["models"][model_name] = previous_manifest.get("models", {}).get(model_name) or {
                    "status": "complete", "wall_seconds": None, "epochs_completed": config.training.epochs, "error": None}
                continue
            log(f"[{index + 1}/{len(config.study.models)}] {model_name}: training, {reason}")
            if action == RESTART:
                from experiments.training import clear_checkpoint

                clear_checkpoint(run, model_name)
            manifest["models"][model_name] = {"status": "partial", "wall_seconds": None, "epochs_completed": 0, "error": None}
            write_json(run.manifest, manifest)
            try:
                manifest["models"][model_name] = train_one(config, run, data, model_name, index, expected)
                retrained.add(model_name)
            except (KeyboardInterrupt, SystemExit, OSError):
                raise
            except Exception as error:  # one model failing must not lose the others
                message = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                log(f"  {model_name} failed: {message}")
                failures[model_name] = message
                manifest["models"][model_name] = {"status": "failed", "wall_seconds": None, "epochs_completed": None, "error": message}
            write_json(run.manifest, manifest)
        select_and_test(config, run, data, expected, retrained)
    except BaseException:
        manifest["status"] = "interrupted"
        manifest["finished_at"] = _now()
        try:
            write_json(run.manifest, manifest)
        except OSError:
            pass
        raise
    finally:
        keras.backend.clear_session()
    manifest["status"] = "failed" if failures else "complete"
    manifest["finished_at"] = _now()
    manifest["wall_seconds"] = round(time.perf_counter() - started, 1)
    write_json(run.manifest, manifest)
    if failures:
        raise StudyFailed(f"{len(failures)} model(s) failed: " + "; ".join(f"{name}: {message}" for name, message in failures.items()))
    return run
