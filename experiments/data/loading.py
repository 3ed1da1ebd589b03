"""Data for the study: where images come from, the fixed splits, and the tf.data pipelines.

Three sources give the same thing, a `StudyData` of uint8 images decoded once:

- download: the `cats_and_dogs_filtered.zip` archive of the write-ups, fetched into the Keras
  cache, checked and extracted once;
- folder: any `DIR/train/<class>/` and `DIR/validation/<class>/` tree;
- synthetic: two generated, learnable classes (offline demos and tests).

Folder and download data are decoded once into the decoded-image cache on disk
(experiments.data.cache: keyed by the files' contents, the image size and the decoding settings,
shared by every later run, seed and process) and read from there batch by batch, so memory does
not grow with the data set. Synthetic data is generated in memory on every run (it is small and
fast to make) and skips the cache.

The test split is a fixed, class-stratified fifth of the validation files, drawn with the
recorded seed from the sorted file list: the same files on every read, never shared with
validation. (The write-ups' `take`/`skip` on a reshuffling dataset draws a new "test" set
on every pass and leaks it into validation.) For cached data it is a view of the cached
validation array, not a copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from experiments.artifacts.files import file_sha256
from experiments.artifacts.run_records import Dataset, DataSource, MajorityBaseline, SkippedEntry, SplitFiles
from experiments.config import StudyConfig, check_synthetic_test_split, split_size_problem
from experiments.console import format_size, progress_counter
from experiments.data.cache import CachedImages, CachedSplit, load_or_build
from experiments.data.images import DecodedSplit, SkippedFile
from experiments.errors import ConfigError, DataError

ARCHIVE_NAME = "cats_and_dogs_filtered.zip"
ARCHIVE_FOLDER = "cats_and_dogs_filtered"
SYNTHETIC_CLASS_NAMES = ["blobs", "stripes", "rings", "checks", "green blobs", "green stripes", "green rings", "green checks",
                         "violet blobs", "violet stripes", "violet rings", "violet checks"]


@dataclass
class Split:
    # uint8, (N, height, width, 3): a numpy array (synthetic data), or CachedImages (folder data:
    # read from the decoded-image cache on demand; indexing gives numpy arrays)
    images: np.ndarray | CachedImages
    labels: np.ndarray  # int32, (N,)
    files: list[str]

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, indices: np.ndarray) -> Split:
        """The rows `indices`, in that order. Cached images stay on disk (a view, no copy)."""
        images = self.images.take(indices) if isinstance(self.images, CachedImages) else self.images[indices]
        return Split(images, self.labels[indices], [self.files[i] for i in indices])


@dataclass
class StudyData:
    class_names: list[str]
    image_size: tuple[int, int]
    train: Split
    validation: Split
    test: Split
    source: DataSource
    fingerprint: str
    seed: int
    test_fraction: float
    skipped: list[SkippedFile] = field(default_factory=list)

    @property
    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "validation": self.validation, "test": self.test}

    def label_counts(self, split: Split) -> dict[str, int]:
        counts = np.bincount(split.labels, minlength=len(self.class_names))
        return {name: int(count) for name, count in zip(self.class_names, counts)}

    def majority_baseline(self) -> MajorityBaseline:
        """Always predict the training split's most common class (ties: the first by name)."""
        majority_index = int(np.argmax(np.bincount(self.train.labels, minlength=len(self.class_names))))
        accuracy = {
            name: float(np.mean(split.labels == majority_index)) if len(split) else None
            for name, split in self.splits.items()
        }
        return MajorityBaseline(self.class_names[majority_index], "always predict the most common class of the training split",
                                accuracy)

    def describe(self) -> Dataset:
        """The content of dataset.json (see docs/guide/artifacts.md)."""
        return Dataset(
            class_names=list(self.class_names),
            image_size=list(self.image_size),
            seed=self.seed,
            source=self.source,
            fingerprint=self.fingerprint,
            splits={name: SplitFiles(len(split), self.label_counts(split), list(split.files)) for name, split in self.splits.items()},
            test_fraction=self.test_fraction,
            majority_baseline=self.majority_baseline(),
            skipped=[SkippedEntry(item.path, item.reason) for item in self.skipped],
        )


# --------------------------------------------------------------------------- splits


def split_validation(validation: Split, test_fraction: float, seed: int) -> tuple[Split, Split]:
    """Hold out a fixed, class-stratified `test_fraction` of `validation` as the test split.

    Within each class the files are sorted, permuted with `seed`, and the first
    round(n * fraction) go to test. Returns (validation, test), both in file order.
    """
    random_generator = np.random.default_rng(seed)
    order = np.argsort(np.array(validation.files, dtype=object), kind="stable")
    test_indices: list[int] = []
    for label in np.unique(validation.labels):
        class_indices = [int(i) for i in order if validation.labels[i] == label]
        permuted = random_generator.permutation(class_indices)
        test_count = int(round(len(class_indices) * test_fraction))
        test_indices.extend(int(i) for i in permuted[:test_count])
    test_set = set(test_indices)
    remaining = [int(i) for i in order if int(i) not in test_set]
    test_sorted = [int(i) for i in order if int(i) in test_set]
    return validation.subset(np.array(remaining, dtype=np.int64)), validation.subset(
        np.array(test_sorted, dtype=np.int64)
    )


def check_validation_classes_can_split(
    class_names: list[str], labels: np.ndarray, test_fraction: float, validation_dir: Path
) -> None:
    """Raise DataError unless every class of the validation split gives at least one test image
    and keeps at least one validation image at `test_fraction` (as split_validation draws them).
    Classes are checked in name order; the first too small one is named."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(class_names))
    for class_name, count in zip(class_names, counts):
        problem = split_size_problem(int(count), test_fraction)
        if problem is not None:
            raise DataError(f"Class folder '{validation_dir / class_name}' {problem}.")


def fingerprint(class_names: list[str], splits: dict[str, CachedSplit | DecodedSplit]) -> str:
    """sha256 over class names and every used file's relative path and content digest (`splits`:
    anything with `files` and `file_digests`: the cache's splits, or decode_scan_into's)."""
    digest = hashlib.sha256(json.dumps(class_names).encode())
    for split_name in sorted(splits):
        split = splits[split_name]
        for path, file_digest in zip(split.files, split.file_digests):
            digest.update(f"{split_name}\0{path}\0{file_digest}\n".encode())
    return digest.hexdigest()


# --------------------------------------------------------------------------- sources


def _from_folder(config: StudyConfig, data_root: Path, source: DataSource) -> StudyData:
    """Decoded splits from the decoded-image cache (decoding the folder once, on a miss)."""
    with progress_counter(f"reading {data_root} images") as progress:
        cached = load_or_build(
            data_root,
            config.image_size,
            workers=config.data.workers or None,
            cache_dir=config.data.cache_dir,
            progress=progress,
            fingerprint=fingerprint,
        )
    train, validation = cached.train, cached.validation
    check_validation_classes_can_split(
        validation.class_names, validation.labels, config.data.test_fraction, data_root / "validation"
    )
    validation_split, test_split = split_validation(
        Split(validation.images, validation.labels, validation.files),
        config.data.test_fraction,
        config.study.seed,
    )
    return StudyData(
        class_names=list(train.class_names),
        image_size=config.image_size,
        train=Split(train.images, train.labels, train.files),
        validation=validation_split,
        test=test_split,
        source=source,
        fingerprint=fingerprint(train.class_names, {"train": train, "validation": validation}),
        seed=config.study.seed,
        test_fraction=config.data.test_fraction,
        skipped=list(train.skipped) + list(validation.skipped),
    )


def synthetic_images(count_per_class: int, image_size: tuple[int, int], seed: int,
                     class_count: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Learnable classes of shapes on noisy backgrounds: by default two, warm soft blobs vs. cool
    oriented stripes; up to twelve (SYNTHETIC_CLASS_NAMES): rings and checks, then each of the
    four shapes in green and in violet.

    Position, size, colour, stripe period and orientation vary per image, so a model has to
    learn shape and colour cues rather than memorise pixels.
    """
    if not 2 <= class_count <= len(SYNTHETIC_CLASS_NAMES):
        raise ValueError(f"class_count must be 2 to {len(SYNTHETIC_CLASS_NAMES)}, got {class_count}")
    height, width = image_size
    random_generator = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
    images = np.empty((class_count * count_per_class, height, width, 3), dtype=np.uint8)
    labels = np.repeat(np.arange(class_count, dtype=np.int32), count_per_class)
    for index, label in enumerate(labels):
        background = random_generator.uniform(30, 110, size=3)
        canvas = np.broadcast_to(background, (height, width, 3)).astype(np.float32).copy()
        shape, family = int(label) % 4, int(label) // 4
        if shape == 0:
            center_row, center_column = random_generator.uniform(0.25, 0.75, size=2) * (height, width)
            radius = random_generator.uniform(0.15, 0.3) * min(height, width)
            distance = np.hypot(rows - center_row, columns - center_column)
            mask = np.clip(1.5 - distance / radius, 0.0, 1.0)[..., None]
            colour = np.array([random_generator.uniform(140, 255), random_generator.uniform(80, 190), random_generator.uniform(30, 150)])
        elif shape == 1:
            angle = random_generator.uniform(0, np.pi)
            period = random_generator.uniform(0.12, 0.25) * min(height, width)
            phase = random_generator.uniform(0, 2 * np.pi)
            wave = np.sin(2 * np.pi * (rows * np.cos(angle) + columns * np.sin(angle)) / period + phase)
            mask = (wave > 0).astype(np.float32)[..., None]
            colour = np.array([random_generator.uniform(30, 150), random_generator.uniform(90, 190), random_generator.uniform(140, 255)])
        elif shape == 2:  # a ring
            center_row, center_column = random_generator.uniform(0.3, 0.7, size=2) * (height, width)
            radius = random_generator.uniform(0.18, 0.3) * min(height, width)
            distance = np.hypot(rows - center_row, columns - center_column)
            mask = (np.abs(distance - radius) < 0.3 * radius).astype(np.float32)[..., None]
            colour = np.array([random_generator.uniform(160, 255), random_generator.uniform(140, 230), random_generator.uniform(30, 120)])
        else:  # a checkerboard
            cell = random_generator.uniform(0.12, 0.25) * min(height, width)
            offset = random_generator.uniform(0, cell, size=2)
            mask = ((((rows + offset[0]) // cell) + ((columns + offset[1]) // cell)) % 2).astype(np.float32)[..., None]
            colour = np.array([random_generator.uniform(140, 255), random_generator.uniform(30, 120), random_generator.uniform(140, 255)])
        if family:  # the same shapes in one colour family each: green, then violet
            low, high = (np.array([20, 150, 20]), np.array([110, 255, 110])) if family == 1 else (np.array([110, 20, 150]), np.array([190, 90, 255]))
            colour = random_generator.uniform(low, high)
        mask = mask * random_generator.uniform(0.35, 0.8)  # faint shapes: learnable, not trivial
        canvas = canvas * (1 - mask) + colour * mask
        canvas += random_generator.normal(0, 28, size=canvas.shape)
        images[index] = np.clip(canvas, 0, 255).astype(np.uint8)
    return images, labels


def _synthetic(config: StudyConfig) -> StudyData:
    image_size = config.image_size
    seed = config.study.seed
    check_synthetic_test_split(config.data.synthetic_validation_per_class, config.data.test_fraction)
    class_count = config.data.synthetic_classes
    train_images, train_labels = synthetic_images(config.data.synthetic_train_per_class, image_size, seed, class_count)
    validation_images, validation_labels = synthetic_images(
        config.data.synthetic_validation_per_class, image_size, seed + 1, class_count
    )

    def names(split: str, labels: np.ndarray) -> list[str]:
        counters = dict.fromkeys(range(class_count), 0)
        result = []
        for label in labels:
            counters[int(label)] += 1
            result.append(f"{split}/{SYNTHETIC_CLASS_NAMES[label]}/{counters[int(label)]:05d}.png")
        return result

    validation_all = Split(validation_images, validation_labels, names("validation", validation_labels))
    validation_split, test_split = split_validation(validation_all, config.data.test_fraction, seed)
    description = {
        "generator": "experiments.data.loading.synthetic_images",
        "seed": seed,
        "train_per_class": config.data.synthetic_train_per_class,
        "validation_per_class": config.data.synthetic_validation_per_class,
        "image_size": list(image_size),
        **({"classes": class_count} if class_count != 2 else {}),  # two-class data keeps its fingerprint
    }
    return StudyData(
        class_names=list(SYNTHETIC_CLASS_NAMES[:class_count]),
        image_size=image_size,
        train=Split(train_images, train_labels, names("train", train_labels)),
        validation=validation_split,
        test=test_split,
        source=DataSource("synthetic", "generated in memory (experiments.data.loading.synthetic_images)"),
        fingerprint=hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest(),
        seed=seed,
        test_fraction=config.data.test_fraction,
    )


def offline_message(url: str, reason: str) -> str:
    return (
        f"Could not download the dataset from {url} ({reason}). If this machine is offline, "
        "point the study at a local copy with --data-dir DIR (a folder with train/<class>/ and "
        "validation/<class>/ image folders), or use --dataset synthetic for generated images."
    )


def _archive_is_intact(archive: Path) -> bool:
    """True if `archive` is a zip whose every member passes its CRC check."""
    try:
        with zipfile.ZipFile(archive) as bundle:
            return bundle.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


def download_dataset(url: str, cache_dir: str = "", expected_sha256: str = "") -> Path:
    """Fetch and extract the archive once; return the folder holding train/ and validation/.

    The archive is checked before use: its sha256 against `expected_sha256` when given
    (otherwise against the digest recorded at first download), and every member's CRC.
    A broken or corrupt archive is deleted and fetched again, once.
    """
    cache_root = Path(cache_dir).expanduser() if cache_dir else Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    datasets_dir = cache_root / "datasets"
    archive = datasets_dir / ARCHIVE_NAME
    recorded_digest_file = datasets_dir / f"{ARCHIVE_NAME}.sha256"
    extracted = datasets_dir / ARCHIVE_FOLDER
    for _attempt in range(2):
        if not archive.is_file():  # fetched once: a cached archive is checked below, without starting TensorFlow
            from keras.utils import get_file  # loads TensorFlow: the only TensorFlow-side import of this module

            try:
                get_file(
                    fname=ARCHIVE_NAME,
                    origin=url,
                    cache_dir=str(cache_root),
                    cache_subdir="datasets",
                    file_hash=expected_sha256 or None,
                    hash_algorithm="sha256",
                )
            except Exception as error:  # get_file raises bare Exception subclasses for network errors
                raise DataError(offline_message(url, str(error).strip() or type(error).__name__)) from None
        digest = file_sha256(archive)
        expected = expected_sha256 or (recorded_digest_file.read_text().strip() if recorded_digest_file.exists() else "")
        if (expected and digest != expected) or not _archive_is_intact(archive):
            print(f"  {archive} is corrupt or incomplete; fetching it again", file=sys.stderr)
            archive.unlink(missing_ok=True)
            recorded_digest_file.unlink(missing_ok=True)
            continue
        if not recorded_digest_file.exists():
            recorded_digest_file.write_text(digest + "\n")
        marker = extracted / f".extracted-{digest[:16]}"
        if not marker.exists():
            with zipfile.ZipFile(archive) as bundle:
                bundle.extractall(datasets_dir)
            marker.write_text(digest + "\n")
        return extracted
    raise DataError(f"The archive downloaded from {url} failed its checksum twice; delete {datasets_dir} and retry.")


def available_memory_bytes() -> int | None:
    """The memory this process can still use: /proc/meminfo's MemAvailable, lowered to what is left
    under a cgroup (container) limit; None where neither can be read."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
            left = max(int(limit) - used, 0)
            available = left if available is None else min(available, left)
    except (OSError, ValueError):
        pass
    return available


def memory_needed(config: StudyConfig) -> tuple[int, str]:
    """A lower bound of the memory the study's data needs at data.image_size, and what it is: the
    largest batch of float32 images the models train on, plus, for synthetic data, the uint8 arrays
    held in memory (folder and downloaded data are read from the cache on disk, batch by batch)."""
    height, width = config.image_size
    batch_size = max([config.data.batch_size] + [config.training_settings(name).batch_size for name in config.study.models])
    needed = batch_size * height * width * 3 * 4
    what = f"one batch of {batch_size} images as float32"
    if config.data.source == "synthetic":
        count = (config.data.synthetic_train_per_class + config.data.synthetic_validation_per_class) * config.data.synthetic_classes
        needed += count * height * width * 3
        what += f", plus the {count} synthetic images held in memory"
    return needed, what


def check_memory_for_images(config: StudyConfig, available: int | None = None) -> None:
    """ConfigError naming data.image_size, before anything is decoded, when the memory its images
    need (`memory_needed`, a lower bound) exceeds what is available (`available_memory_bytes`)."""

    available = available_memory_bytes() if available is None else available
    needed, what = memory_needed(config)
    if available is not None and needed > available:
        height, width = config.image_size
        raise ConfigError(f"data.image_size {height}x{width} needs at least {format_size(needed)} of memory ({what}) but only "
                          f"{format_size(available)} is available; use a smaller data.image_size (or data.batch_size).")


def load_study_data(config: StudyConfig) -> StudyData:
    """Resolve the configured source and return decoded, split data (after checking that the
    images fit in memory: `check_memory_for_images`)."""
    check_memory_for_images(config)
    source = config.data.source
    if source == "synthetic":
        return _synthetic(config)
    if source == "folder":
        data_root = Path(config.data.data_dir).expanduser()
        return _from_folder(config, data_root, DataSource("folder", str(data_root)))
    data_root = download_dataset(config.data.url, config.data.cache_dir, config.data.archive_sha256)
    return _from_folder(config, data_root, DataSource("download", config.data.url))


# --------------------------------------------------------------------------- tf.data


def make_dataset(split: Split, batch_size: int, shuffle: bool, seed: int):
    """A batched tf.data pipeline over uint8 images, read batch by batch.

    The pipeline shuffles (every epoch, with a fixed seed) and batches the row numbers, not the
    images, and each batch's rows are then read from `split.images`: a numpy array, or the
    decoded-image cache on disk (CachedImages), so memory holds a few batches whatever the
    split's size. The row numbers go through the same `shuffle(len(split), seed,
    reshuffle_each_iteration=True)` that shuffled the images when they were sliced into the
    pipeline whole, and a shuffle's order depends on its seed and element count alone, so every
    epoch's batches are the same as that pipeline's, image for image (tests/test_fast_path.py).
    Images become float32 batch by batch; evaluation data keeps file order.
    """
    import tensorflow as tf

    images = split.images
    labels = np.asarray(split.labels)
    image_shape = tuple(int(side) for side in images.shape[1:])
    types = (tf.as_dtype(images.dtype), tf.as_dtype(labels.dtype))

    def read_batch(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(images[rows]), labels[rows]

    def load(rows):
        image_batch, label_batch = tf.numpy_function(read_batch, [rows], types, stateful=False)
        image_batch.set_shape((None,) + image_shape)
        label_batch.set_shape((None,))
        return tf.cast(image_batch, tf.float32), label_batch

    dataset = tf.data.Dataset.range(len(split))
    if shuffle:
        dataset = dataset.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    dataset = dataset.map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # Autotuning is off: Keras makes new iterators every epoch, and deleting one waits out the
    # autotune thread's sleep, which stalled whole epochs by 10 to 20 s here (benchmarks/README.md).
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


def make_image_batches(images: np.ndarray | CachedImages, batch_size: int):
    """float32 batches of `images` in order, read batch by batch (no labels): for predicting on
    a split without holding it in memory (experiments.training.fit.CachedFeatureValidation)."""
    split = Split(images, np.zeros(len(images), dtype=np.int32), [""] * len(images))
    return make_dataset(split, batch_size, shuffle=False, seed=0).map(lambda image_batch, _labels: image_batch)
