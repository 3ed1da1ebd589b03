"""Do memory and the cost per image stay flat as the data set grows? (the decoded-image cache)

For each size N (default 2,000, 10,000 and 40,000; `--sizes`) it generates a synthetic JPEG
folder once (N training images and N/4 validation images, two learnable classes, 256x192 JPEGs
of about 10 KB, kept under --workdir for later runs), empties the decoded-image cache, and then,
in a FRESH child process per size (spawned, so each size's peak memory is its own):

1. `experiments.data.loading.load_study_data` with the cold cache: lists, hashes, decodes and resizes
   every image once into the cache on disk (timed: `decode s`, all N + N/4 images);
2. `load_study_data` again, now from the cache (timed: `reload s`: listing and hashing the
   files, no decoding);
3. the baseline model, built, compiled and in the precision the runner gives it
   (experiments.models.build; `--mixed-precision auto`), warmed up on two batches (tf.function
   tracing is a fixed cost), then ONE timed epoch over all N training images, batches streamed
   from the cache by `experiments.data.loading.make_dataset` (shuffled with the seed), no validation.

Printed per size: decode seconds, reload seconds, the cache's size in GiB, the child's peak
resident memory (ru_maxrss: TensorFlow, the model, the decoding and training together), and
seconds per 1,000 training images. Then two closing lines, each the largest size's value over
the smallest's:

    rss growth: X               peak RSS
    per-image time growth: Y    seconds per training image

    python benchmarks/data_scale.py                     # 2,000, 10,000, 40,000 (about 5 GB of disk, long)
    python benchmarks/data_scale.py --sizes 200,400     # a quick look

The cache files stay in the page cache after decoding (on a machine with the RAM for it), so
the timed epoch reads them from memory the kernel holds, not from the disk; that memory is not
the process's and is not in its RSS.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from experiments.runtime import prefer_onednn, processor_name  # noqa: E402  (after the path set-up; imports no TensorFlow)

DEFAULT_SIZES = [2000, 10000, 40000]
IMAGE_SIZE = 160
BATCH_SIZE = 32
SOURCE_SIZE = (256, 192)  # width, height of the generated JPEGs
CLASS_NAMES = ("blobs", "stripes")
FORMAT_VERSION = 1  # of the generated folders (bump when the generator changes)


# --------------------------------------------------------------------------- options


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(str(size) for size in DEFAULT_SIZES),
                        help="training images per data set, comma separated (default 2000,10000,40000); validation gets a quarter as many")
    parser.add_argument("--image-size", type=int, default=IMAGE_SIZE, help="side the images are decoded to (default 160, as the study)")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="batch size (default 32, as the study)")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "report-builder-data-scale",
                        help="where the generated folders (kept for later runs) and the cache go")
    parser.add_argument("--workers", type=int, default=0, help="decoding threads (data.workers; default 0: automatic)")
    parser.add_argument("--seed", type=int, default=1337)
    parser.add_argument("--json-out", type=Path, help="also write the measurements as JSON")
    args = parser.parse_args(argv)
    try:
        args.sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
    except ValueError:
        parser.error(f"--sizes must be whole numbers separated by commas, got {args.sizes!r}")
    if not args.sizes or min(args.sizes) < 8:
        parser.error("--sizes needs at least one size, each of at least 8 images")
    if args.image_size < 18:
        parser.error("--image-size must be at least 18 (the baseline model's smallest input)")
    return args


# --------------------------------------------------------------------------- data


def _write_images(job: tuple[str, int, int, int]) -> None:
    """Write `count` JPEGs of class `label` into `folder`, numbered from `start`."""
    import numpy as np
    from PIL import Image

    folder, label, start, count = job
    width, height = SOURCE_SIZE
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
    for index in range(start, start + count):
        generator = np.random.default_rng([label, index])
        canvas = np.empty((height, width, 3), dtype=np.float32)
        canvas[:] = generator.uniform(30, 110, size=3)
        if label == 0:  # a warm soft blob
            centre = generator.uniform(0.25, 0.75, size=2) * (height, width)
            radius = generator.uniform(0.15, 0.3) * height
            mask = np.clip(1.5 - np.hypot(rows - centre[0], columns - centre[1]) / radius, 0, 1)
            colour = (generator.uniform(140, 255), generator.uniform(80, 190), generator.uniform(30, 150))
        else:  # cool stripes
            angle, period = generator.uniform(0, np.pi), generator.uniform(0.12, 0.25) * height
            mask = (np.sin(2 * np.pi * (rows * np.cos(angle) + columns * np.sin(angle)) / period) > 0).astype(np.float32)
            colour = (generator.uniform(30, 150), generator.uniform(90, 190), generator.uniform(140, 255))
        mask = mask[..., None] * generator.uniform(0.35, 0.8)
        canvas = canvas * (1 - mask) + np.array(colour, dtype=np.float32) * mask
        canvas += generator.normal(0, 12, size=(height // 8, width // 8, 1)).repeat(8, 0).repeat(8, 1)
        Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).save(Path(folder) / f"{index:06d}.jpg", quality=85)


def generate_folder(workdir: Path, size: int) -> Path:
    """`workdir/data-<size>/` with train/<class>/ and validation/<class>/ JPEGs (made once)."""
    root = workdir / f"data-{size}"
    marker = root / f".complete-v{FORMAT_VERSION}"
    if marker.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    jobs = []
    for split, count in (("train", size), ("validation", max(4, size // 4))):
        for label, class_name in enumerate(CLASS_NAMES):
            folder = root / split / class_name
            folder.mkdir(parents=True)
            per_class = count // 2 + (count % 2 if label == 0 else 0)
            first = 0 if split == "train" else 10_000_000
            jobs.extend((str(folder), label, start, min(500, first + per_class - start))
                        for start in range(first, first + per_class, 500))
    started = time.perf_counter()
    print(f"  generating {size} + {max(4, size // 4)} JPEGs into {root} ...", file=sys.stderr, flush=True)
    with multiprocessing.get_context("spawn").Pool(max(1, min(4, os.cpu_count() or 1))) as pool:
        pool.map(_write_images, jobs)
    marker.write_text("")
    print(f"  generated in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return root


# --------------------------------------------------------------------------- child side


def _peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def measure(spec: dict, results) -> None:
    """In a fresh process: decode into the cold cache, reload, train one epoch; report."""
    try:
        results.put(_measure(spec))
    except BaseException as error:  # the parent reports it
        results.put({"error": f"{type(error).__name__}: {error}"})
        raise


def _measure(spec: dict) -> dict:
    import numpy as np

    from experiments.config import load_config
    from experiments.data.loading import load_study_data, make_dataset

    config = load_config(None, {"data.source": "folder", "data.data_dir": spec["data_dir"], "data.cache_dir": spec["cache_dir"],
                                "data.image_size": [spec["image_size"]] * 2, "data.batch_size": spec["batch_size"],
                                "data.workers": spec["workers"], "study.models": ["baseline"], "study.seed": spec["seed"]})
    started = time.perf_counter()
    load_study_data(config)
    decode_seconds = time.perf_counter() - started
    started = time.perf_counter()
    data = load_study_data(config)
    reload_seconds = time.perf_counter() - started
    rss_after_loading = _peak_rss_mib()

    import keras
    import tensorflow as tf

    from experiments.models.build import build_model, compile_model, set_precision
    from experiments.models.recipes import precision_for
    from experiments.runtime import cpu_supports_bf16

    precision = precision_for("baseline", "auto", bool(tf.config.list_physical_devices("GPU")), cpu_supports_bf16())
    set_precision(precision)
    keras.utils.set_random_seed(spec["seed"])
    model = compile_model(build_model("baseline", config.image_size, len(data.class_names), "none", spec["seed"]), 0.001)
    warm_up = data.train.subset(np.arange(min(len(data.train), 2 * spec["batch_size"])))
    model.fit(make_dataset(warm_up, spec["batch_size"], shuffle=True, seed=spec["seed"]), epochs=1, verbose=0)
    train = make_dataset(data.train, spec["batch_size"], shuffle=True, seed=spec["seed"])
    cpu_started = time.process_time()
    started = time.perf_counter()
    history = model.fit(train, epochs=1, verbose=0)
    train_seconds = time.perf_counter() - started
    cache_bytes = sum(path.stat().st_blocks * 512 for path in Path(spec["cache_dir"]).rglob("*") if path.is_file())
    return {
        "size": spec["size"],
        "train_images": len(data.train),
        "decoded_images": len(data.train) + len(data.validation) + len(data.test) + len(data.skipped),
        "decode_seconds": decode_seconds,
        "reload_seconds": reload_seconds,
        "cache_gib": cache_bytes / 2**30,
        "rss_after_loading_mib": rss_after_loading,
        "peak_rss_mib": _peak_rss_mib(),
        "train_seconds": train_seconds,
        "train_cpu_seconds": time.process_time() - cpu_started,
        "seconds_per_1000": 1000 * train_seconds / len(data.train),
        "loss": float(history.history["loss"][-1]),
        "precision": precision,
        "tensorflow": tf.__version__,
    }


# --------------------------------------------------------------------------- parent side


def run_size(args: argparse.Namespace, size: int) -> dict:
    data_dir = generate_folder(args.workdir, size)
    cache_dir = args.workdir / "cache"
    shutil.rmtree(cache_dir, ignore_errors=True)  # cold: this size is decoded in the child
    spec = {"size": size, "data_dir": str(data_dir), "cache_dir": str(cache_dir), "image_size": args.image_size,
            "batch_size": args.batch_size, "workers": args.workers, "seed": args.seed}
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=measure, args=(spec, results))
    print(f"[{size}] fresh process: decode into the cache, reload, one epoch of the baseline ...", file=sys.stderr, flush=True)
    process.start()
    result = results.get()
    process.join()
    if "error" in result or process.exitcode != 0:
        raise SystemExit(f"the child for {size} images failed: {result.get('error', f'exit status {process.exitcode}')}")
    shutil.rmtree(cache_dir, ignore_errors=True)
    return result


def print_report(args: argparse.Namespace, results: list[dict]) -> None:
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine:  {processor_name()}, {os.cpu_count()} logical CPUs ({affinity} usable)")
    print(f"software: Python {platform.python_version()}, TensorFlow {results[0]['tensorflow']}; baseline in {results[0]['precision']}")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    print(f"load:     {load:.2f} (1-minute average at the end; other work on the CPU inflates every number)")
    print(f"setup:    synthetic {SOURCE_SIZE[0]}x{SOURCE_SIZE[1]} JPEGs decoded to {args.image_size}x{args.image_size}, batch "
          f"{args.batch_size}, seed {args.seed}, one epoch, no validation; a fresh process per size")
    print()
    header = f"{'train images':>12}{'decoded':>9}{'decode s':>10}{'reload s':>10}{'cache GiB':>11}{'peak RSS MiB':>14}{'s/1000 img':>12}"
    print(header)
    print("-" * len(header))
    for result in results:
        print(f"{result['train_images']:>12}{result['decoded_images']:>9}{result['decode_seconds']:>10.1f}{result['reload_seconds']:>10.1f}"
              f"{result['cache_gib']:>11.3f}{result['peak_rss_mib']:>14.0f}{result['seconds_per_1000']:>12.2f}")
    print()
    print("decoded: train + validation images decoded into the cache (decode s covers them all: listing, hashing, decoding, "
          "writing); reload s: the next load of the same folder (listing and hashing, no decoding); peak RSS: the child's "
          "ru_maxrss (TensorFlow, decoding and training); s/1000 img: the timed epoch's seconds per 1,000 training images.")
    smallest, largest = min(results, key=lambda r: r["size"]), max(results, key=lambda r: r["size"])
    print(f"rss growth: {largest['peak_rss_mib'] / smallest['peak_rss_mib']:.2f}")
    print(f"per-image time growth: {largest['seconds_per_1000'] / smallest['seconds_per_1000']:.2f}")


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    prefer_onednn()  # the runner's CPU kernels; the spawned children inherit the environment
    results = [run_size(args, size) for size in sorted(args.sizes)]
    print_report(args, results)
    if args.json_out:
        args.json_out.write_text(json.dumps({"sizes": args.sizes, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
