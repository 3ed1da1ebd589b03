"""How fast do the study's models train when fed from arrays already in memory?

Trains each model on random images held in memory as float32 arrays, fed by Keras's own array
adapter (no JPEG decoding, no tf.data pipeline of ours, no cast), for a few epochs of the
study's size (2000 training and 1000 validation images of 160x160, batch 32), and prints
seconds per epoch. It is a point of comparison for `study_speed.py`'s "ours" column (how
does our tf.data path compare with the plain in-memory way of feeding Keras?) and a way to time
the models on other backends and devices.

It uses only Keras and `experiments.models.build`, so it runs on any Keras backend: TensorFlow (the
project's), JAX or PyTorch, on a CPU or a GPU (pick one with KERAS_BACKEND=jax, say). Weights
are random ("none"): speed does not depend on their values, and no accuracy is measured here.

    python benchmarks/model_compute.py                                  # four models, float32, 3 epochs
    python benchmarks/model_compute.py --precisions none,bf16,fp16 --models baseline,transfer
    KERAS_BACKEND=jax python benchmarks/model_compute.py --models all   # the five models, finetune too
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from experiments.runtime import describe_cpu_kernels, prefer_onednn  # noqa: E402  (after the path set-up above)

prefer_onednn()  # the CPU kernels the runner trains on; must come before Keras loads TensorFlow

import keras  # noqa: E402
import numpy as np  # noqa: E402

from experiments.config import MODEL_NAMES  # noqa: E402

# transfer_extended trains the transfer model itself on: the same computation, so not timed twice.
COMPUTE_MODELS = [name for name in MODEL_NAMES if name != "transfer_extended"]
from experiments.models.build import POLICIES, build_model, compile_model, make_finetune_model, set_precision  # noqa: E402
from experiments.runtime import processor_name  # noqa: E402  (reads /proc/cpuinfo; imports no TensorFlow)

IMAGE_SIZE = (160, 160)
BATCH_SIZE = 32
LEARNING_RATE = 0.001
FINETUNE_FROM_LAYER = 100


class EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._started)


def make_model(name: str, seed: int) -> tuple[keras.Model, float]:
    """The study model `name` with random weights, and the learning rate it trains with."""
    if name == "finetune":
        transfer = build_model("transfer", IMAGE_SIZE, 2, base_weights="none", seed=seed)
        return make_finetune_model(transfer, FINETUNE_FROM_LAYER), LEARNING_RATE / 10
    return build_model(name, IMAGE_SIZE, 2, base_weights="none", seed=seed), LEARNING_RATE


def time_model(name: str, precision: str, epochs: int, data, seed: int) -> list[float]:
    train_images, train_labels, validation_images, validation_labels = data
    set_precision(precision)
    keras.utils.set_random_seed(seed)
    try:
        model, learning_rate = make_model(name, seed)
        compile_model(model, learning_rate)
        timer = EpochTimer()
        model.fit(
            train_images,
            train_labels,
            batch_size=BATCH_SIZE,
            epochs=epochs,
            validation_data=(validation_images, validation_labels),
            callbacks=[timer],
            verbose=0,
        )
        return timer.seconds
    finally:
        keras.backend.clear_session()
        set_precision("none")


def describe_devices() -> str:
    backend = keras.backend.backend()
    try:
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            return ", ".join(gpu.name for gpu in gpus) or "CPU only"
        if backend == "jax":
            import jax

            return ", ".join(str(device) for device in jax.devices())
        if backend == "torch":
            import torch

            return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    except Exception as error:  # a report line, not a failure
        return f"unknown ({error})"
    return "unknown"


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="baseline,augmented,preprocessed,transfer",
                        help=f"comma-separated, or 'all' ({', '.join(COMPUTE_MODELS)})")
    parser.add_argument("--precisions", default="none",
                        help=f"comma-separated dtype policies to time each model with: {', '.join(POLICIES)}")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per model (epoch 1 also compiles; default 3)")
    parser.add_argument("--seed", type=int, default=1337)
    args = parser.parse_args(argv)
    args.models = list(COMPUTE_MODELS) if args.models == "all" else [name.strip() for name in args.models.split(",") if name.strip()]
    args.precisions = [name.strip() for name in args.precisions.split(",") if name.strip()]
    for name in args.models:
        if name not in COMPUTE_MODELS:
            parser.error(f"--models: unknown model {name!r}; known: {', '.join(COMPUTE_MODELS)}")
    for name in args.precisions:
        if name not in POLICIES:
            parser.error(f"--precisions: unknown policy {name!r}; known: {', '.join(POLICIES)}")
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (epoch 1 includes compilation and is reported apart)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    generator = np.random.default_rng(args.seed)
    data = (
        generator.integers(0, 256, size=(2000, *IMAGE_SIZE, 3), dtype=np.uint8).astype("float32"),
        generator.integers(0, 2, size=2000),
        generator.integers(0, 256, size=(1000, *IMAGE_SIZE, 3), dtype=np.uint8).astype("float32"),
        generator.integers(0, 2, size=1000),
    )
    kernels = f"; CPU kernels: {describe_cpu_kernels()}" if keras.backend.backend() == "tensorflow" else ""
    print(f"backend:  Keras {keras.__version__} on {keras.backend.backend()}; devices: {describe_devices()}{kernels}")
    print(f"machine:  {processor_name()}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}")
    print(f"setup:    random float32 images in memory, 2000 train + 1000 validation, {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]}, "
          f"batch {BATCH_SIZE}, {args.epochs} epochs, random weights")
    print()
    header = f"{'model':<13}{'precision':<11}{'epoch 1 s':>10}{'later s/epoch':>15}{'img/s':>8}"
    print(header)
    print("-" * len(header))
    for name in args.models:
        for precision in args.precisions:
            seconds = time_model(name, precision, args.epochs, data, args.seed)
            later = statistics.median(seconds[1:])
            print(f"{name:<13}{precision:<11}{seconds[0]:10.2f}{later:15.2f}{2000 / later:8.0f}", flush=True)
    print()
    print("later s/epoch: median of epochs 2+ (training and validation); img/s: training images / later s/epoch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
