"""The study: read the data, then for each model skip, resume or train; choose on validation;
evaluate the chosen model on the test split, once.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from experiments.artifacts import SCHEMA_VERSION, RunFolder, SeedRun, read_json, write_atomic, write_json
from experiments.config import StudyConfig, config_hash
from experiments.data import StudyData, load_study_data, make_dataset
from experiments.images import DataError, summarize_skipped
from experiments.runtime import describe_cpu_kernels

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tensorflow", "keras", "numpy", "pillow", "matplotlib", "jinja2", "mkdocs", "mkdocs-material")
SELECTION_RULE = ("highest mean over seeds of the last epoch's validation accuracy; within that model, the seed "
                  "with the highest; the test split is not looked at")


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
        "cpu_kernels": describe_cpu_kernels(),
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


def training_decision(seed_run: SeedRun, expected: dict[str, str], force: bool) -> tuple[str, str]:
    """What to do with one run (a model and a seed): SKIP, RESUME (keep committed epochs) or
    RESTART (discard them), and why, in words for the console."""
    if force:
        return RESTART, "--force given"
    state = read_json(seed_run.state)
    if state is None:
        return RESUME, "not trained yet"
    labels = {"config_hash": "config", "data_fingerprint": "data", "starting_point": "transfer model it starts from"}
    for key, value in expected.items():
        if state.get(key) != value:
            return RESTART, f"the {labels.get(key, key)} changed since it was trained ({str(state.get(key))[:10]} -> {value[:10]}); retraining"
    history = read_json(seed_run.history)
    if state.get("status") != "complete" or history is None:
        return RESUME, f"resuming an unfinished run ({state.get('epochs_completed', 0)} epochs done)"
    if len(history.get("epochs", [])) != state.get("epochs_planned"):
        return RESTART, "its history is incomplete; retraining"
    if not seed_run.model_file.is_file():
        return RESTART, f"its model file {seed_run.model_file.name} is missing (artifacts copied without models?); retraining"
    return SKIP, "finished with the same config and data"


def finished_runs(run: RunFolder, config: StudyConfig, model_name: str, data_fingerprint: str) -> dict[int, list[dict[str, Any]]]:
    """The histories, by seed, of this model's finished runs with the current config and data."""
    runs = {}
    for seed in config.seeds:
        seed_run = run.seed_run(model_name, seed)
        state = read_json(seed_run.state) or {}
        history = read_json(seed_run.history) or {}
        if (state.get("status") == "complete" and state.get("config_hash") == config_hash(config, model_name)
                and state.get("data_fingerprint") == data_fingerprint and history.get("epochs")):
            runs[seed] = history["epochs"]
    return runs


def last_validation_accuracy(epochs: list[dict[str, Any]]) -> float | None:
    return epochs[-1].get("val_accuracy") if epochs else None


def choose_model(runs_by_model: dict[str, dict[int, list[dict[str, Any]]]]) -> tuple[str | None, int | None, dict[str, float | None], dict[str, float | None]]:
    """The model with the highest mean (over seeds) last-epoch validation accuracy, then its
    seed with the highest; study order, then seed order, breaks ties. Test data is not used.

    Returns (model, seed, mean per model, value per seed of the chosen model).
    """
    candidates: dict[str, float | None] = {}
    for name, runs in runs_by_model.items():
        values = [value for value in map(last_validation_accuracy, runs.values()) if value is not None]
        candidates[name] = sum(values) / len(values) if values else None
    usable = [(value, -index, name) for index, (name, value) in enumerate(candidates.items()) if value is not None]
    if not usable:
        return None, None, candidates, {}
    chosen = max(usable)[2]
    per_seed = {str(seed): last_validation_accuracy(epochs) for seed, epochs in runs_by_model[chosen].items()}
    seeds = [(value, -index, int(seed)) for index, (seed, value) in enumerate(per_seed.items()) if value is not None]
    return chosen, max(seeds)[2], candidates, per_seed


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


def expected_state(config: StudyConfig, run: RunFolder, model_name: str, seed: int, data_fingerprint: str) -> dict[str, str]:
    """What a finished run must have been trained from to be reused. For finetune that
    includes the transfer run it starts from (a digest of its history file)."""
    expected = {"config_hash": config_hash(config, model_name), "data_fingerprint": data_fingerprint}
    if model_name == "finetune":
        transfer_history = run.seed_run("transfer", seed).history
        expected["starting_point"] = hashlib.sha256(transfer_history.read_bytes()).hexdigest() if transfer_history.is_file() else "missing"
    return expected


def build_for_training(config: StudyConfig, run: RunFolder, data: StudyData, model_name: str, seed: int):
    """The compiled model to train, and its first and last epoch numbers (0-based start)."""
    from experiments.models import build_model, compile_model, load_trained_model, make_finetune_model

    training = config.training
    if model_name != "finetune":
        model = build_model(model_name, data.image_size, len(data.class_names), training.base_weights, seed)
        return compile_model(model, training.learning_rate, training.jit_compile), 0, training.epochs
    transfer_file = run.seed_run("transfer", seed).model_file
    if not transfer_file.is_file():
        raise StudyFailed(f"finetune starts from the trained transfer model for seed {seed}, but {transfer_file} is missing")
    model = make_finetune_model(load_trained_model(transfer_file), training.finetune_from_layer)
    compile_model(model, training.learning_rate * training.finetune_learning_rate_factor, training.jit_compile)
    return model, training.epochs, training.epochs + training.finetune_epochs


def train_one(config: StudyConfig, run: RunFolder, data: StudyData, seed_run: SeedRun, precision: str, expected: dict[str, str]) -> dict[str, Any]:
    """Build (or continue), compile and fit one model for one seed; write its history, state,
    model file and, for the first seed, its summary."""
    import keras

    from experiments.models import describe_model, set_precision
    from experiments.training import CachedFeatureValidation, clear_checkpoint, fit, keras_verbosity, load_progress, write_history

    model_name, seed = seed_run.model_name, seed_run.seed
    keras.backend.clear_session()
    policy = set_precision(precision)
    keras.utils.set_random_seed(seed)
    model, first_epoch, last_epoch = build_for_training(config, run, data, model_name, seed)
    write_json(run.summary(model_name), {"schema_version": SCHEMA_VERSION, **describe_model(model)})
    earlier_epochs, _ = load_progress(seed_run)
    state = {"schema_version": SCHEMA_VERSION, "model": model_name, "seed": seed, **expected, "status": "partial",
             "epochs_completed": len(earlier_epochs), "epochs_planned": last_epoch - first_epoch}
    write_json(seed_run.state, state)
    cached_validation = None
    if model_name == "transfer" and config.training.validation_feature_cache:
        cached_validation = CachedFeatureValidation(data.validation.images, data.validation.labels, config.data.batch_size)
    result = fit(
        model,
        seed_run,
        make_dataset(data.train, config.data.batch_size, shuffle=True, seed=seed),
        make_dataset(data.validation, config.data.batch_size, shuffle=False, seed=seed),
        state,
        first_epoch=first_epoch,
        last_epoch=last_epoch,
        precision=policy,
        cached_validation=cached_validation,
        verbose=keras_verbosity(config.training.verbose),
    )
    write_history(seed_run, result.epochs, policy)
    write_atomic(seed_run.model_file, lambda path: result.model.save(path))
    state.update(status="complete", epochs_completed=len(result.epochs))
    write_json(seed_run.state, state)
    clear_checkpoint(seed_run)
    earlier_seconds = sum(record.get("seconds") or 0 for record in result.epochs[: result.resumed_epochs])
    return {"status": "complete", "wall_seconds": round(result.wall_seconds + earlier_seconds, 1),
            "epochs_completed": len(result.epochs), "error": None}


def write_model_curves(config: StudyConfig, run: RunFolder, data: StudyData, model_name: str) -> None:
    """The model's curves over its finished seeds (finetune: with transfer's leading in)."""
    from experiments import figures

    runs = list(finished_runs(run, config, model_name, data.fingerprint).values())
    if not runs:
        return
    lead_in = list(finished_runs(run, config, "transfer", data.fingerprint).values()) if model_name == "finetune" else None
    figures.training_curves(runs, f"{model_name}: accuracy and loss per epoch", run.figure(f"curves_{model_name}"),
                            data.majority_baseline()["accuracy"]["validation"], lead_in=lead_in, lead_in_name="transfer")


def evaluate_on_test(config: StudyConfig, run: RunFolder, data: StudyData, chosen: str, seed: int) -> dict[str, Any]:
    """Evaluate the chosen model's saved weights on the test split: the one look at test."""
    import numpy as np

    from experiments.models import load_trained_model

    model_path = run.seed_run(chosen, seed).model_file
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
    return {"model": chosen, "seed": seed, "loss": float(loss), "accuracy": correct / total if total else None,
            "correct": correct, "total": total, "class_names": data.class_names,
            "confusion_matrix": confusion.tolist(), "predictions": predictions}


def _mean(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return sum(present) / len(present) if present else None


def select_and_test(config: StudyConfig, run: RunFolder, data: StudyData, retrained: set[tuple[str, int]]) -> dict[str, Any] | None:
    runs_by_model = {name: runs for name in config.study.models if (runs := finished_runs(run, config, name, data.fingerprint))}
    chosen, chosen_seed, candidates, seed_candidates = choose_model(runs_by_model)
    if chosen is None:
        log("No model finished; nothing to evaluate on the test split.")
        return None
    study_hash = config_hash(config)
    previous = read_json(run.metrics)
    if (
        previous
        and previous.get("chosen_model") == chosen
        and previous.get("chosen_seed") == chosen_seed
        and previous.get("config_hash") == study_hash
        and previous.get("data_fingerprint") == data.fingerprint
        and (chosen, chosen_seed) not in retrained
        and previous.get("test")
    ):
        test = previous["test"]
        log(f"Test score of {chosen} (seed {chosen_seed}) is unchanged since the last run; not evaluating again.")
    else:
        log(f"Chosen on validation: {chosen} (mean {candidates[chosen]:.3f} over {len(runs_by_model[chosen])} seed(s)), "
            f"seed {chosen_seed}. Evaluating it on the test split, once.")
        test = evaluate_on_test(config, run, data, chosen, chosen_seed)
    metrics = {
        "schema_version": SCHEMA_VERSION,
        "config_hash": study_hash,
        "data_fingerprint": data.fingerprint,
        "selection": {"metric": "val_accuracy", "rule": SELECTION_RULE, "candidates": candidates,
                      "seed_candidates": seed_candidates},
        "chosen_model": chosen,
        "chosen_seed": chosen_seed,
        "test": test,
        "validation": {
            name: {"loss": _mean([epochs[-1].get("val_loss") for epochs in runs.values()]),
                   "accuracy": _mean([epochs[-1].get("val_accuracy") for epochs in runs.values()])}
            for name, runs in runs_by_model.items()
        },
    }
    write_json(run.metrics, metrics)
    from experiments import figures

    figures.comparison({name: list(runs.values()) for name, runs in runs_by_model.items()}, run.figure("comparison"),
                       data.majority_baseline()["accuracy"]["validation"])
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


def set_determinism(enabled: bool) -> None:
    """TensorFlow op determinism (with the per-run seeds): identical histories on one machine."""
    import tensorflow as tf

    if enabled:
        tf.config.experimental.enable_op_determinism()


def aggregate_model_entry(precision: str, runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """manifest.models[<model>]: its runs, and their totals."""
    statuses = [entry["status"] for entry in runs.values()]
    status = "failed" if "failed" in statuses else "complete" if statuses and all(s == "complete" for s in statuses) else "partial"
    seconds = [entry.get("wall_seconds") for entry in runs.values()]
    errors = [f"seed {seed}: {entry['error']}" for seed, entry in runs.items() if entry.get("error")]
    return {
        "status": status,
        "wall_seconds": round(sum(seconds), 1) if seconds and all(value is not None for value in seconds) else None,
        "epochs_completed": sum(entry.get("epochs_completed") or 0 for entry in runs.values()),
        "error": "; ".join(errors) or None,
        "precision": precision,
        "runs": runs,
    }


def run_study(config: StudyConfig, force: bool = False) -> RunFolder:
    """Run the configured study into `<out_dir>/<run_name>/` and return the run folder."""
    import keras
    import tensorflow as tf

    from experiments.models import POLICIES, cpu_supports_bf16, precision_for, set_precision

    run = RunFolder(config.run_dir)
    run.check_writable()
    started = time.perf_counter()
    set_determinism(config.training.deterministic)
    preflight(config)
    log(f"Reading data ({config.data.source})...")
    data = load_study_data(config)
    if data.skipped:
        log(f"  {summarize_skipped(data.skipped)} (listed in {run.dataset})")
    log(f"  {len(data.train)} train, {len(data.validation)} validation, {len(data.test)} test images; classes: {', '.join(data.class_names)}")
    hardware, devices = hardware_and_devices()
    gpu_available, bf16_cpu = bool(tf.config.list_physical_devices("GPU")), cpu_supports_bf16()
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_name": config.study.run_name,
        "config": config.to_dict(),
        "config_hash": config_hash(config),
        "data_fingerprint": data.fingerprint,
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
        "seeds": config.seeds,
        "models": {},
    }
    previous_runs = {name: entry.get("runs", {}) for name, entry in (read_json(run.manifest) or {}).get("models", {}).items()
                     if isinstance(entry, dict)}
    write_json(run.dataset, {"schema_version": SCHEMA_VERSION, **data.describe()})
    write_data_figures(run, data, config.study.seed)
    failures: dict[str, str] = {}
    retrained: set[tuple[str, int]] = set()
    total_runs = len(config.study.models) * len(config.seeds)
    step = 0
    try:
        for model_name in config.study.models:
            precision = precision_for(model_name, config.training.mixed_precision, gpu_available, bf16_cpu)
            runs: dict[str, dict[str, Any]] = {}
            for seed in config.seeds:
                step += 1
                seed_run = run.seed_run(model_name, seed)
                expected = expected_state(config, run, model_name, seed, data.fingerprint)
                action, reason = training_decision(seed_run, expected, force)
                where = f"[{step}/{total_runs}] {model_name}, seed {seed}"
                if action == SKIP:
                    log(f"{where}: skipped, {reason}")
                    runs[str(seed)] = previous_runs.get(model_name, {}).get(str(seed)) or {
                        "status": "complete", "wall_seconds": None, "epochs_completed": None, "error": None}
                    continue
                log(f"{where}: training in {POLICIES[precision]}, {reason}")
                if action == RESTART:
                    from experiments.training import clear_checkpoint

                    clear_checkpoint(seed_run)
                runs[str(seed)] = {"status": "partial", "wall_seconds": None, "epochs_completed": 0, "error": None}
                manifest["models"][model_name] = aggregate_model_entry(POLICIES[precision], runs)
                write_json(run.manifest, manifest)
                try:
                    runs[str(seed)] = train_one(config, run, data, seed_run, precision, expected)
                    retrained.add((model_name, seed))
                except (KeyboardInterrupt, SystemExit, OSError):
                    raise
                except Exception as error:  # one run failing must not lose the others
                    message = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                    log(f"  {seed_run.label} failed: {message}")
                    failures[seed_run.label] = message
                    runs[str(seed)] = {"status": "failed", "wall_seconds": None, "epochs_completed": None, "error": message}
                manifest["models"][model_name] = aggregate_model_entry(POLICIES[precision], runs)
                write_json(run.manifest, manifest)
            manifest["models"][model_name] = aggregate_model_entry(POLICIES[precision], runs)
            write_model_curves(config, run, data, model_name)
        set_precision("none")
        select_and_test(config, run, data, retrained)
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
        raise StudyFailed(f"{len(failures)} run(s) failed: " + "; ".join(f"{name}: {message}" for name, message in failures.items()))
    return run
