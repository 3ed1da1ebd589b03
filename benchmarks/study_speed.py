"""How much faster is the project's data path than the write-ups' reference pipeline?

Trains the same models on the same data for the same number of epochs twice, each pipeline in
its own cold child process (so each one's peak resident memory can be reported):

- reference: the write-ups' pipeline. `keras.utils.image_dataset_from_directory` for the train
  and validation folders (batch 32, 160x160, shuffle=True) plus `.prefetch(AUTOTUNE)`: every
  JPEG is decoded and resized again in every epoch. Augmentation layers inside the model,
  float32, TensorFlow's default thread pools.
- ours: the project's path. `experiments.data.cache.load_or_build` decodes and resizes every image
  ONCE into a fresh decoded-image cache on disk (timed, and counted in our total), then
  `experiments.data.loading.make_dataset` reads batches from its memory-mapped arrays (per-epoch
  reshuffle, batch, cast to float32, prefetch), as the runner does.
  By default it trains as the runner does (bfloat16 for the three small CNNs where the CPU has it,
  cached frozen-base validation for transfer); `--ours-options` switches levers on or off
  (see OURS_OPTIONS_HELP).

Both pipelines validate on the WHOLE validation folder every epoch (the study itself holds a
fifth of it out as a test split; here nothing is held out, so both see the same images).
Both call keras.utils.set_random_seed(seed) before building each model, and build the models
with experiments.models.build.build_model. The reference runs with TensorFlow's default CPU kernels
(on an AVX2-only CPU that means oneDNN off); ours asks for oneDNN as the runner does
(experiments.runtime.prefer_onednn).

Printed per model and pipeline: median seconds per epoch (over all epochs; epoch 1 also holds
tf.function tracing, so it is shown on its own as well), seconds per epoch spent in
validation, training images per second (train images / median epoch seconds), final
validation accuracy. Then the totals (wall seconds from the start of data loading to the end
of the last fit, model building included; the child's Python/TensorFlow import time is shown
but not counted) and, as the last line, `speedup: <reference total / our total>`.

    python benchmarks/study_speed.py --quick            # 2 epochs, four models (< 10 minutes on 2 cores)
    python benchmarks/study_speed.py                    # 20 epochs, as the study trains
    python benchmarks/study_speed.py --quick --pipelines ours --ours-options fp32,no-val-cache \\
        --reference-from ref.json                       # try levers against a saved reference
"""

from __future__ import annotations

import argparse
import atexit
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROCESS_STARTED = time.time()
PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from experiments.runtime import ONEDNN_VARIABLE, cpu_flags, cpu_supports_bf16, describe_cpu_kernels, prefer_onednn, processor_name  # noqa: E402  (after the path set-up above; imports no TensorFlow)

MODEL_NAMES = ["baseline", "augmented", "preprocessed", "transfer"]
CNN_MODELS = ["baseline", "augmented", "preprocessed"]
AUGMENTED_MODELS = ["augmented", "preprocessed", "transfer"]
DEFAULT_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data" / "cats-dogs-cc0"
DEFAULT_WEIGHTS = PROJECT_ROOT.parent / "shared" / "weights" / "mobilenet_v2_1.0_imagenet_notop.weights.h5"
IMAGE_SIZE = (160, 160)
BATCH_SIZE = 32
LEARNING_RATE = 0.001
PIPELINES = ["reference", "ours"]
REFERENCE_OPTIONS = ["no-autotune", "onednn"]

OURS_OPTIONS_HELP = """\
Levers for OUR pipeline, comma separated; each may be limited to some models with
':model+model' (e.g. bf16:baseline+augmented). Default "": the project's training path as the
runner uses it by default: mixed_precision "auto" (bfloat16 for baseline, augmented and
preprocessed on a CPU with AVX-512 BF16 / AMX and no GPU, float32 otherwise) and, for transfer,
validation from base features computed once (experiments.training.fit.CachedFeatureValidation).
  fp32          float32 for every model (the runner's --mixed-precision none)
  bf16          mixed_bfloat16 policy (experiments.models.build.set_precision("bf16")), all models
  bf16-cnn      the same for baseline, augmented and preprocessed only (what "auto" gives here)
  no-val-cache  transfer: validate with model.evaluate on the images every epoch
  threads=I/J   tf.config.threading inter-op I / intra-op J threads (process wide)
  batch-aug     augmentation (the same RandomFlip + RandomRotation) applied to whole batches in
                the tf.data pipeline (map after batch, parallel calls) instead of inside the model
  spe=N         compile(..., steps_per_execution=N)
  jit           compile(..., jit_compile=True) (XLA)
  no-onednn     TF_ENABLE_ONEDNN_OPTS=0 for our process: TensorFlow's Eigen kernels instead of the
                oneDNN ones the runner asks for (process wide, so all models)
  no-autotune   tf.data.Options().autotune.enabled = False on our datasets (all models). Now a
                no-op: make_dataset always turns autotune off. With autotune on, deleting a
                tf.data iterator (Keras makes a new one every epoch, for training and for
                validation) waits for the autotune thread's sleep to end, and the process sits
                idle for up to several seconds
"""


# --------------------------------------------------------------------------- options


def parse_ours_options(text: str) -> dict[str, dict]:
    """'bf16-cnn,threads=2/1' -> {lever: {"value": ..., "models": [...]}}."""
    options: dict[str, dict] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        lever, _, scope = item.partition(":")
        name, _, value = lever.partition("=")
        models = scope.split("+") if scope else list(MODEL_NAMES)
        if name == "bf16-cnn":
            name, models = "bf16", [m for m in models if m in CNN_MODELS]
        unknown = [m for m in models if m not in MODEL_NAMES]
        if unknown:
            raise SystemExit(f"--ours-options {item}: unknown model(s) {', '.join(unknown)}")
        if name == "threads":
            try:
                inter, intra = (int(v) for v in value.split("/"))
            except ValueError:
                raise SystemExit(f"--ours-options {item}: expected threads=INTER/INTRA, e.g. threads=2/1") from None
            value = [inter, intra]
        elif name == "spe":
            if not value.isdigit() or int(value) < 1:
                raise SystemExit(f"--ours-options {item}: expected spe=N with N >= 1")
            value = int(value)
        elif name in ("bf16", "fp32", "no-val-cache", "batch-aug", "jit", "no-autotune", "no-onednn"):
            if value:
                raise SystemExit(f"--ours-options {item}: {name} takes no value")
        else:
            raise SystemExit(f"--ours-options: unknown lever {name!r}\n{OURS_OPTIONS_HELP}")
        options[name] = {"value": value, "models": models}
    return options


def lever_for(options: dict[str, dict], name: str, model: str):
    """The lever's value if it is on for `model` (True for flags), else None."""
    option = options.get(name)
    if option is None or model not in option["models"]:
        return None
    return option["value"] if option["value"] not in ("", None) else True


# --------------------------------------------------------------------------- child side


def _rss_peak_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def machine_busy_seconds() -> float:
    """CPU-seconds all processes have used so far (from /proc/stat; 0 where unavailable)."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(value) for value in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _epoch_recorder():
    import keras

    class EpochRecorder(keras.callbacks.Callback):
        """Wall seconds of every epoch (validation included) and of its validation alone."""

        def __init__(self, model_name: str):
            super().__init__()
            self.model_name = model_name
            self.epochs: list[dict] = []
            self._epoch_started = self._test_started = 0.0
            self._validation_seconds = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self._validation_seconds = 0.0
            self._cpu_started = time.process_time()
            self._busy_started = machine_busy_seconds()
            self._epoch_started = time.perf_counter()

        def on_test_begin(self, logs=None):
            self._test_started = time.perf_counter()

        def on_test_end(self, logs=None):
            self._validation_seconds += time.perf_counter() - self._test_started

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self._epoch_started
            cpu_seconds = time.process_time() - self._cpu_started
            other_cpu_seconds = max(0.0, machine_busy_seconds() - self._busy_started - cpu_seconds)
            logs = logs or {}
            validation_seconds = logs.pop("_validation_seconds", None)
            record = {
                "epoch": epoch + 1,
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "other_cpu_seconds": other_cpu_seconds,
                "validation_seconds": validation_seconds if validation_seconds is not None else self._validation_seconds,
            }
            for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
                record[key] = float(logs[key]) if key in logs else None
            self.epochs.append(record)
            print(
                f"    {self.model_name} epoch {epoch + 1}: {seconds:6.1f} s "
                f"(validation {record['validation_seconds']:.1f} s; this process {cpu_seconds:.1f} CPU-s, "
                f"other processes {other_cpu_seconds:.1f} CPU-s), val_accuracy {record['val_accuracy']:.3f}",
                file=sys.stderr,
                flush=True,
            )

    return EpochRecorder


def _timed_cached_validation(images, labels):
    """The runner's frozen-base validation cache, timed for the `val s` column."""
    from experiments.training.fit import CachedFeatureValidation

    class TimedCachedValidation(CachedFeatureValidation):
        def on_epoch_end(self, epoch, logs=None):
            started = time.perf_counter()
            super().on_epoch_end(epoch, logs)
            if logs is not None:
                logs["_validation_seconds"] = time.perf_counter() - started

    return TimedCachedValidation(images, labels, BATCH_SIZE)


def _batch_augmenter(seed: int):
    """The models' augmentation (same layers, same settings) as a tf.data map on batches."""
    from keras import layers

    flip = layers.RandomFlip("horizontal_and_vertical", seed=seed, name="random_flip")
    rotation = layers.RandomRotation(0.2, seed=seed + 1, name="random_rotation")

    def augment(images, labels):
        return rotation(flip(images, training=True), training=True), labels

    return augment


def _compile(model, jit_compile: bool, steps_per_execution: int) -> None:
    import keras

    from experiments.models.build import compile_model

    if steps_per_execution == 1:
        compile_model(model, LEARNING_RATE, jit_compile)
        return
    # compile_model with one more argument (the lever under test)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )


def run_child(spec: dict) -> dict:
    """Train every model with one pipeline; return the measurements."""
    process_started = spec["process_started"]
    options = spec["ours_options"] if spec["pipeline"] == "ours" else spec.get("reference_options", {})
    import tensorflow as tf

    threads = options.get("threads")
    if threads:
        tf.config.threading.set_inter_op_parallelism_threads(threads["value"][0])
        tf.config.threading.set_intra_op_parallelism_threads(threads["value"][1])
    import keras

    from experiments.models.build import build as models_module
    from experiments.models.build import build_model, set_precision
    from experiments.models.recipes import precision_for

    import_seconds = time.time() - process_started
    data_dir = Path(spec["data_dir"])
    seed = spec["seed"]
    result: dict = {
        "pipeline": spec["pipeline"],
        "ours_options": spec["ours_options_text"] if spec["pipeline"] == "ours" else spec.get("reference_options_text", ""),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "cpu_kernels": describe_cpu_kernels(),
        "import_seconds": import_seconds,
        "models": {},
    }
    EpochRecorder = _epoch_recorder()
    busy_started, cpu_started = machine_busy_seconds(), time.process_time()
    started = time.perf_counter()
    keras.utils.set_random_seed(seed)
    if spec["pipeline"] == "reference":
        train_dataset = keras.utils.image_dataset_from_directory(
            data_dir / "train", batch_size=BATCH_SIZE, image_size=IMAGE_SIZE, shuffle=True, seed=seed
        ).prefetch(tf.data.AUTOTUNE)
        validation_dataset = keras.utils.image_dataset_from_directory(
            data_dir / "validation", batch_size=BATCH_SIZE, image_size=IMAGE_SIZE, shuffle=True, seed=seed
        ).prefetch(tf.data.AUTOTUNE)
        result["data_seconds"] = time.perf_counter() - started
        result["data_note"] = "file listing only; every JPEG is decoded and resized inside every epoch"
        train_count = _count_files(data_dir / "train")
        validation_count = _count_files(data_dir / "validation")
        if "no-autotune" in options:  # diagnostic only (--reference-options): not the write-ups' pipeline
            no_autotune = tf.data.Options()
            no_autotune.autotune.enabled = False
            train_dataset = train_dataset.with_options(no_autotune)
            validation_dataset = validation_dataset.with_options(no_autotune)
    else:
        from experiments.data.cache import load_or_build
        from experiments.data.loading import Split, make_dataset

        # as the runner reads a folder: decoded once into the on-disk cache (a fresh one per run, so
        # the decoding is timed and counted), batches then read from its memory-mapped arrays
        cache_dir = tempfile.mkdtemp(prefix="study-speed-cache-")
        atexit.register(shutil.rmtree, cache_dir, True)
        decoded = load_or_build(data_dir, IMAGE_SIZE, cache_dir=cache_dir, log=lambda message: None)
        train, validation = decoded.train, decoded.validation
        result["data_seconds"] = time.perf_counter() - started
        result["data_note"] = "one-off decode and resize of every image into a fresh decoded-image cache (load_or_build)"
        train_split = Split(train.images, train.labels, train.files)
        validation_split = Split(validation.images, validation.labels, validation.files)
        train_count, validation_count = len(train_split), len(validation_split)
        train_dataset = make_dataset(train_split, BATCH_SIZE, shuffle=True, seed=seed)
        validation_dataset = make_dataset(validation_split, BATCH_SIZE, shuffle=False, seed=seed)
        if "no-autotune" in options:
            no_autotune = tf.data.Options()
            no_autotune.autotune.enabled = False
            train_dataset = train_dataset.with_options(no_autotune)
            validation_dataset = validation_dataset.with_options(no_autotune)
    result["train_images"] = train_count
    result["validation_images"] = validation_count
    print(
        f"  [{spec['pipeline']}] data ready in {result['data_seconds']:.1f} s "
        f"({train_count} train, {validation_count} validation images)",
        file=sys.stderr,
        flush=True,
    )

    for name in spec["models"]:
        model_started = time.perf_counter()
        if spec["pipeline"] == "reference":
            precision = "none"
        elif lever_for(options, "fp32", name):
            precision = "none"
        elif lever_for(options, "bf16", name):
            precision = "bf16"
        else:  # the runner's default, training.mixed_precision = "auto"
            precision = precision_for(name, "auto", bool(tf.config.list_physical_devices("GPU")), cpu_supports_bf16())
        set_precision(precision)
        keras.utils.set_random_seed(seed)
        batch_aug = bool(lever_for(options, "batch-aug", name)) and name in AUGMENTED_MODELS
        original_augmentation = models_module._augmentation
        if batch_aug:
            models_module._augmentation = lambda inputs, seed: inputs  # augmentation moves to tf.data
        try:
            model = build_model(name, IMAGE_SIZE, 2, spec["base_weights"], seed)
        finally:
            models_module._augmentation = original_augmentation
        _compile(model, bool(lever_for(options, "jit", name)), lever_for(options, "spe", name) or 1)
        model_train = train_dataset
        if batch_aug:
            model_train = train_dataset.map(
                _batch_augmenter(seed), num_parallel_calls=tf.data.AUTOTUNE, deterministic=False
            ).prefetch(tf.data.AUTOTUNE)
        recorder = EpochRecorder(name)
        callbacks = [recorder]
        model_validation = validation_dataset
        if spec["pipeline"] == "ours" and name == "transfer" and not lever_for(options, "no-val-cache", name):
            callbacks = [_timed_cached_validation(validation_split.images, validation_split.labels), recorder]
            model_validation = None
        build_seconds = time.perf_counter() - model_started
        model.fit(
            model_train,
            validation_data=model_validation,
            epochs=spec["epochs"],
            callbacks=callbacks,
            verbose=0,
            shuffle=False,
        )
        result["models"][name] = {
            "precision": precision,
            "build_seconds": build_seconds,
            "seconds": time.perf_counter() - model_started,
            "epochs": recorder.epochs,
        }
        del model
        keras.backend.clear_session()
        set_precision("none")
    result["total_seconds"] = time.perf_counter() - started
    result["cpu_seconds"] = time.process_time() - cpu_started
    result["other_cpu_seconds"] = max(0.0, machine_busy_seconds() - busy_started - result["cpu_seconds"])
    result["peak_rss_mib"] = _rss_peak_mib()
    return result


def _count_files(folder: Path) -> int:
    image_suffixes = {".jpg", ".jpeg", ".png", ".bmp", ".gif"}
    return sum(1 for path in folder.rglob("*") if path.suffix.lower() in image_suffixes)


# --------------------------------------------------------------------------- parent side


def installed_version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def child_environment(pipeline: str, reference_options: list[str], ours_options: dict, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a pipeline's child starts with; it decides the CPU kernels TensorFlow loads.

    The reference gets TensorFlow's default kernels whatever this shell exports (`onednn`
    diagnostic: oneDNN on). Ours gets what the runner asks for (`prefer_onednn`, which keeps a
    TF_ENABLE_ONEDNN_OPTS the user exported), or oneDNN off with the `no-onednn` lever.
    """
    environment = dict(os.environ if base is None else base)
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if pipeline == "reference":
        environment.pop(ONEDNN_VARIABLE, None)
        if "onednn" in reference_options:
            environment[ONEDNN_VARIABLE] = "1"
    elif "no-onednn" in ours_options:
        environment[ONEDNN_VARIABLE] = "0"
    else:
        prefer_onednn(environment)
    return environment


def spawn(pipeline: str, args, ours_options: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="study_speed_") as folder:
        spec_path = Path(folder) / "spec.json"
        result_path = Path(folder) / "result.json"
        spec = {
            "pipeline": pipeline,
            "data_dir": str(args.data_dir),
            "epochs": args.epochs,
            "models": args.models,
            "base_weights": args.base_weights,
            "seed": args.seed,
            "ours_options": ours_options,
            "ours_options_text": args.ours_options,
            "reference_options": {name: {"value": True, "models": MODEL_NAMES} for name in args.reference_options},
            "reference_options_text": ",".join(args.reference_options),
            "result_path": str(result_path),
        }
        spec_path.write_text(json.dumps(spec))
        environment = child_environment(pipeline, args.reference_options, ours_options)
        print(f"[{pipeline}] starting a fresh process ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        completed = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--_child", str(spec_path)],
            stdout=sys.stderr,  # the child's chatter goes to stderr; our stdout is the report
            env=environment,
            cwd=str(PROJECT_ROOT),
        )
        wall = time.perf_counter() - started
        if completed.returncode != 0 or not result_path.exists():
            raise SystemExit(f"the {pipeline} child process failed (exit status {completed.returncode})")
        result = json.loads(result_path.read_text())
    result["process_wall_seconds"] = wall
    return result


def _median_epoch(epochs: list[dict]) -> float:
    return statistics.median(epoch["seconds"] for epoch in epochs)


def print_report(args, results: dict[str, dict], reused_reference: str | None) -> None:
    any_result = next(iter(results.values()))
    print(f"date (UTC):  {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M')}")
    flags = cpu_flags()
    isa = ", ".join(flag for flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if flag in flags)
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine:     {processor_name()}, {os.cpu_count()} logical CPUs ({affinity} usable); {isa or 'no AVX info'}")
    print(f"software:    Python {platform.python_version()}, TensorFlow {any_result['tensorflow']}, Keras {any_result['keras']}")
    kernels = ", ".join(f"{pipeline} {results[pipeline].get('cpu_kernels', 'not recorded')}" for pipeline in PIPELINES if pipeline in results)
    print(f"CPU kernels: {kernels}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    print(f"load:        {load:.2f} (1-minute average at the end; other work on the CPU inflates every number)")
    print(
        f"setup:       {args.data_dir}; {len(args.models)} model(s), {args.epochs} epoch(s) each, batch {BATCH_SIZE}, "
        f"{IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}, seed {args.seed}, base weights {args.base_weights}"
    )
    print("validation:  both pipelines validate on the WHOLE validation folder every epoch (no test hold-out here)")
    print(f"ours:        --ours-options {args.ours_options or '(none: the default training path of the runner)'}")
    if args.reference_options:
        print(f"reference:   --reference-options {','.join(args.reference_options)} (diagnostic: not the write-ups' pipeline as written)")
    if reused_reference:
        print(f"reference:   reused from {reused_reference} (measured earlier, same data/epochs/models)")
    print()
    header = (
        f"{'model':<13}{'pipeline':<11}{'s/epoch':>8}{'epoch 1':>9}{'later':>8}{'val s':>7}"
        f"{'cpu s':>7}{'other':>7}{'img/s':>7}{'val acc':>9}{'dtype':>7}"
    )
    print(header)
    print("-" * len(header))
    for name in args.models:
        for pipeline in PIPELINES:
            if pipeline not in results or name not in results[pipeline]["models"]:
                continue
            result = results[pipeline]
            model = result["models"][name]
            epochs = model["epochs"]
            median = _median_epoch(epochs)
            later = statistics.median(e["seconds"] for e in epochs[1:]) if len(epochs) > 1 else float("nan")
            validation = statistics.median(e["validation_seconds"] for e in epochs)
            cpu = statistics.median(e.get("cpu_seconds", float("nan")) for e in epochs)
            other = statistics.median(e.get("other_cpu_seconds", float("nan")) for e in epochs)
            images_per_second = result["train_images"] / median
            accuracy = epochs[-1]["val_accuracy"]
            print(
                f"{name if pipeline == 'reference' or 'reference' not in results else '':<13}{pipeline:<11}"
                f"{median:8.2f}{epochs[0]['seconds']:9.2f}{later:8.2f}{validation:7.2f}{cpu:7.1f}{other:7.1f}"
                f"{images_per_second:7.0f}{accuracy:9.3f}{'bf16' if model['precision'] == 'bf16' else 'fp32':>7}"
            )
    print()
    print(
        "s/epoch: median over all epochs (epoch 1 includes tf.function tracing, and for ours' transfer the "
        "one-off validation feature pass); later: median of epochs 2+; val s: median seconds of an epoch spent validating; "
        "cpu s: median CPU-seconds this process used per epoch (all threads); other: median CPU-seconds OTHER "
        "processes used per epoch (should be ~0; more means the timings were disturbed); img/s: train images / s/epoch; "
        "val acc: validation accuracy after the last epoch."
    )
    print()
    for pipeline in PIPELINES:
        if pipeline not in results:
            continue
        result = results[pipeline]
        model_seconds = sum(model["seconds"] for model in result["models"].values())
        print(
            f"{pipeline:<10} total {result['total_seconds']:8.1f} s = data {result['data_seconds']:6.1f} s "
            f"({result['data_note']}) + models {model_seconds:7.1f} s; "
            f"peak RSS {result['peak_rss_mib']:7.0f} MiB; process wall {result.get('process_wall_seconds', float('nan')):.1f} s "
            f"(import {result['import_seconds']:.1f} s not counted)"
        )
        other = result.get("other_cpu_seconds")
        if other is not None:
            share = other / max(1e-9, result["total_seconds"] * (os.cpu_count() or 1))
            warning = "  <- DISTURBED: timings are not trustworthy" if share > 0.05 else ""
            print(f"{'':<10} other processes used {other:.1f} CPU-s during it ({share:.0%} of the machine){warning}")
    if "reference" in results and "ours" in results:
        print(f"speedup: {results['reference']['total_seconds'] / results['ours']['total_seconds']:.2f}")
    else:
        print("speedup: n/a (only one pipeline was run)")


def parse_arguments(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(
        description="Time the write-ups' reference input pipeline against the project's fast path.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=OURS_OPTIONS_HELP,
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="folder with train/<class>/ and validation/<class>/ (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=20, help="epochs per model (default: %(default)s)")
    parser.add_argument("--models", default=",".join(MODEL_NAMES), help="comma-separated model names (default: all four)")
    parser.add_argument("--base-weights", default=None,
                        help="MobileNetV2 weights for transfer: a .weights.h5 path, 'imagenet' or 'none' "
                             "(default: the local file under ../shared/weights if present, else none)")
    parser.add_argument("--quick", action="store_true", help="2 epochs per model")
    parser.add_argument("--ours-options", default="", help="speed levers for our pipeline, comma separated (see below)")
    parser.add_argument("--reference-options", default="",
                        help="diagnostics only, comma separated: 'no-autotune' runs the reference with tf.data autotuning off, "
                             "'onednn' with oneDNN kernels forced on (either way it is no longer the write-ups' pipeline "
                             "as TensorFlow runs it by default)")
    parser.add_argument("--pipelines", default="reference,ours", help="which pipelines to run (default: %(default)s)")
    parser.add_argument("--reference-from", type=Path, default=None, help="reuse the reference result of an earlier --json-out file instead of running it")
    parser.add_argument("--json-out", type=Path, default=None, help="also write all measurements to this JSON file")
    parser.add_argument("--seed", type=int, default=1337, help="keras.utils.set_random_seed value for both pipelines (default: %(default)s, the study's)")
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._child:
        return args
    if args.quick:
        args.epochs = 2
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    args.models = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = [name for name in args.models if name not in MODEL_NAMES]
    if unknown or not args.models:
        parser.error(f"--models: unknown {', '.join(unknown) or '(empty)'}; known: {', '.join(MODEL_NAMES)}")
    args.reference_options = [name.strip() for name in args.reference_options.split(",") if name.strip()]
    unknown = [name for name in args.reference_options if name not in REFERENCE_OPTIONS]
    if unknown:
        parser.error(f"--reference-options: unknown {', '.join(unknown)}; known: {', '.join(REFERENCE_OPTIONS)}")
    args.pipelines = [p.strip() for p in args.pipelines.split(",") if p.strip()]
    if not args.pipelines or any(p not in PIPELINES for p in args.pipelines):
        parser.error(f"--pipelines: choose from {', '.join(PIPELINES)}")
    args.data_dir = args.data_dir.expanduser().resolve()
    if not (args.data_dir / "train").is_dir() or not (args.data_dir / "validation").is_dir():
        parser.error(f"--data-dir {args.data_dir} needs train/ and validation/ folders")
    if args.base_weights is None:
        args.base_weights = str(DEFAULT_WEIGHTS) if DEFAULT_WEIGHTS.is_file() else "none"
    elif args.base_weights not in ("imagenet", "none"):
        args.base_weights = str(Path(args.base_weights).expanduser().resolve())
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    if args._child:
        import faulthandler
        import signal

        faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1 <child>: Python stacks to stderr
        spec = json.loads(Path(args._child).read_text())
        spec["process_started"] = PROCESS_STARTED
        result = run_child(spec)
        Path(spec["result_path"]).write_text(json.dumps(result))
        return 0
    ours_options = parse_ours_options(args.ours_options)
    results: dict[str, dict] = {}
    reused = None
    if args.reference_from is not None:
        saved = json.loads(args.reference_from.read_text())
        reference = saved.get("reference")
        if (
            reference is None
            or saved["data_dir"] != str(args.data_dir)
            or saved["epochs"] != args.epochs
            or not set(args.models) <= set(reference["models"])
            or saved["base_weights"] != args.base_weights
        ):
            raise SystemExit(f"--reference-from {args.reference_from}: no reference run with the same data, epochs, models and weights")
        reference["models"] = {name: reference["models"][name] for name in args.models}
        if set(args.models) != set(saved["models"]):  # a subset: total = data + those models
            reference["total_seconds"] = reference["data_seconds"] + sum(m["seconds"] for m in reference["models"].values())
        results["reference"] = reference
        reused = str(args.reference_from)
    for pipeline in PIPELINES:
        if pipeline in args.pipelines and pipeline not in results:
            results[pipeline] = spawn(pipeline, args, ours_options)
    if "ours" in results and set(args.models) != set(results["ours"]["models"]):
        raise SystemExit("internal error: models missing from our result")
    if args.json_out is not None:
        args.json_out.write_text(
            json.dumps(
                {
                    "data_dir": str(args.data_dir),
                    "epochs": args.epochs,
                    "models": args.models,
                    "base_weights": args.base_weights,
                    "ours_options": args.ours_options,
                    **results,
                },
                indent=1,
            )
        )
    print_report(args, results, reused)
    return 0


if __name__ == "__main__":
    sys.exit(main())
