"""How long is a model's first epoch, compiled as Keras users usually compile it and as the runner does?

A model's first epoch includes tracing its train step into a TensorFlow graph. Compiled the usual
way (`metrics=["accuracy"]`, an optimizer whose slot variables appear on its first update), the
accuracy metric and the optimizer make their variables inside that first trace, and TensorFlow
then traces the whole step a second time. `experiments.models.build.compile_model` makes them
before fit (a SparseCategoricalAccuracy instance named "accuracy", `optimizer.build`), so the step
is traced once. This prints, per model, the traces and seconds of one epoch both ways and their
ratio (reference / ours), each measured in a fresh process of its own (a cold start, as the
runner's first cell is), reference and ours alternating, `--repeats` times each.

    python benchmarks/first_epoch.py                           # baseline and transfer, 160 x 160, 3 repeats
    python benchmarks/first_epoch.py --models baseline --repeats 5

Weights are random ("none"): tracing does not depend on their values. The data: `--images`
random training images and as many validation images, batch 32.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
IMAGE_SIZE = (160, 160)
BATCH_SIZE = 32
VARIANTS = ("reference", "ours")


def count_train_step_traces(model) -> list[int]:
    """Wrap `model.train_step` so that each trace of it appends to the list returned (fit calls the
    Python function only while TensorFlow traces it). tests/test_training.py counts with it too."""
    traces: list[int] = []
    train_step = model.train_step

    def counted(data):
        traces.append(1)
        return train_step(data)

    model.train_step = counted
    return traces


def one_epoch(model_name: str, variant: str, images: int) -> dict[str, float]:
    """In a fresh process: build `model_name`, compile it the `variant` way, fit one epoch."""
    sys.path.insert(0, str(PROJECT_ROOT))
    from experiments.runtime import import_tensorflow_quietly, prefer_onednn

    prefer_onednn()  # the CPU kernels the runner trains on
    import_tensorflow_quietly()
    import keras
    import numpy as np
    import tensorflow as tf

    from experiments.models.build import build_model, compile_model
    from experiments.models.recipes import BUILT_IN

    keras.utils.set_random_seed(1)
    model = build_model(BUILT_IN[model_name], IMAGE_SIZE, 2, "none", seed=1)
    if variant == "ours":
        compile_model(model, 1e-3)
    else:  # as the write-ups (and most Keras code) compile
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
    traces = count_train_step_traces(model)
    rng = np.random.default_rng(1)
    train = tf.data.Dataset.from_tensor_slices((rng.uniform(0, 255, (images, *IMAGE_SIZE, 3)).astype("float32"),
                                                rng.integers(0, 2, images))).batch(BATCH_SIZE)
    started = time.perf_counter()
    model.fit(train, validation_data=train, epochs=1, verbose=0)
    return {"seconds": time.perf_counter() - started, "traces": len(traces)}


def measure(model_name: str, variant: str, images: int) -> dict[str, float]:
    code = (f"import json, sys; sys.path.insert(0, {str(PROJECT_ROOT / 'benchmarks')!r}); import first_epoch; "
            f"print(json.dumps(first_epoch.one_epoch({model_name!r}, {variant!r}, {images})))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if result.returncode != 0:
        raise SystemExit(f"{model_name} ({variant}) failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="baseline,transfer", help="built-in models, comma-separated")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per model and variant")
    parser.add_argument("--images", type=int, default=128, help="training (and validation) images")
    arguments = parser.parse_args(argv)
    print(f"first epoch ({arguments.images} images of {IMAGE_SIZE[0]} x {IMAGE_SIZE[1]}, batch {BATCH_SIZE}, "
          f"one epoch with validation), median of {arguments.repeats} fresh processes")
    print(f"{'model':<12} {'reference traces':>16} {'ours traces':>12} {'reference s':>12} {'ours s':>8} {'reference / ours':>17}")
    for model_name in [name.strip() for name in arguments.models.split(",") if name.strip()]:
        runs: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
        for _ in range(arguments.repeats):
            for variant in VARIANTS:
                runs[variant].append(measure(model_name, variant, arguments.images))
        seconds = {variant: statistics.median(run["seconds"] for run in runs[variant]) for variant in VARIANTS}
        traces = {variant: max(run["traces"] for run in runs[variant]) for variant in VARIANTS}
        print(f"{model_name:<12} {traces['reference']:>16} {traces['ours']:>12} {seconds['reference']:>12.2f} "
              f"{seconds['ours']:>8.2f} {seconds['reference'] / seconds['ours']:>16.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
