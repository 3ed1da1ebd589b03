"""Splits, label counts, the majority baseline, and the three data sources (without network)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from experiments.config import load_config
from experiments.data.loading import Split, load_study_data, split_validation, synthetic_images
from experiments.errors import DataError
from tests.conftest import SMOKE_CONFIG


@pytest.fixture(autouse=True)
def _user_cache_in_tmp(tmp_path, monkeypatch):
    """Folder data is decoded into the decoded-image cache: keep it inside this test's tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def make_split(counts: dict[int, int]) -> Split:
    labels = np.concatenate([np.full(count, label, dtype=np.int32) for label, count in counts.items()])
    files = [f"validation/class{label}/{index:04d}.jpg" for index, label in enumerate(labels)]
    images = np.arange(len(labels), dtype=np.int32).reshape(-1, 1, 1, 1) * np.ones((1, 2, 2, 3), np.int32)  # pixel = index
    return Split(images, labels, files)


def test_test_split_is_fixed_disjoint_stratified_and_a_fifth():
    validation = make_split({0: 500, 1: 500})
    kept, test = split_validation(validation, 0.2, seed=1337)
    kept_again, test_again = split_validation(validation, 0.2, seed=1337)
    assert test.files == test_again.files and kept.files == kept_again.files
    assert not set(test.files) & set(kept.files)
    assert sorted(test.files + kept.files) == sorted(validation.files)
    assert len(test) == 200 and np.bincount(test.labels).tolist() == [100, 100]
    # images travel with their files
    for split in (kept, test):
        for image, name in zip(split.images, split.files):
            assert validation.files[int(image[0, 0, 0])] == name


def test_a_different_seed_draws_a_different_test_split():
    validation = make_split({0: 50, 1: 50})
    _, first = split_validation(validation, 0.2, seed=1)
    _, second = split_validation(validation, 0.2, seed=2)
    assert first.files != second.files


def test_smoke_data_counts_baseline_and_description():
    config = load_config(SMOKE_CONFIG)
    data = load_study_data(config)
    description = data.describe()
    assert description.class_names == ["blobs", "stripes"]
    splits = description.splits
    assert splits["train"].count == 128
    assert splits["train"].label_counts == {"blobs": 64, "stripes": 64}
    assert splits["validation"].count + splits["test"].count == 80
    assert splits["test"].count == 16
    assert not set(splits["test"].files) & set(splits["validation"].files)
    baseline = description.majority_baseline
    assert baseline.class_name == "blobs"
    assert baseline.accuracy["train"] == pytest.approx(0.5)
    assert data.train.images.dtype == np.uint8 and data.train.images.shape == (128, 48, 48, 3)
    assert load_study_data(config).fingerprint == data.fingerprint


def test_majority_baseline_on_unbalanced_training_data(tmp_path):
    for split, counts in {"train": {"a": 6, "b": 2}, "validation": {"a": 5, "b": 5}}.items():
        for class_name, count in counts.items():
            folder = tmp_path / split / class_name
            folder.mkdir(parents=True)
            for index in range(count):
                Image.new("RGB", (24, 24), (index * 20, 0, 0)).save(folder / f"{index}.png")
    config = load_config(SMOKE_CONFIG, {"data.source": "folder", "data.data_dir": str(tmp_path)})
    baseline = load_study_data(config).majority_baseline()
    assert baseline.class_name == "a"
    assert baseline.accuracy["train"] == pytest.approx(0.75)
    assert baseline.accuracy["validation"] == pytest.approx(4 / 8)



def test_the_majority_baseline_predicts_the_training_split_s_most_common_class_not_validation_s():
    """The baseline is a model that learned one thing from the training images: their most
    common class. Here validation's most common class is the other one."""
    from experiments.artifacts import DataSource
    from experiments.data.loading import StudyData

    train, validation, test = make_split({0: 2, 1: 6}), make_split({0: 7, 1: 3}), make_split({0: 3, 1: 1})
    data = StudyData(["blobs", "stripes"], (2, 2), train, validation, test, DataSource("synthetic"), "fingerprint",
                     seed=1, test_fraction=0.2)
    baseline = data.majority_baseline()
    assert baseline.class_name == "stripes"
    assert baseline.accuracy == pytest.approx({"train": 6 / 8, "validation": 3 / 10, "test": 1 / 4})

def test_synthetic_classes_differ_but_overlap():
    """Warm blobs against cool stripes: different on average, yet no pixel rule is perfect."""
    images, labels = synthetic_images(100, (32, 32), seed=3)
    warmth = images[..., 0].astype(float).mean(axis=(1, 2)) - images[..., 2].astype(float).mean(axis=(1, 2))
    assert warmth[labels == 0].mean() > warmth[labels == 1].mean() + 5
    accuracy = np.mean((warmth < np.median(warmth)).astype(int) == labels)
    assert 0.6 < accuracy < 1.0


def test_offline_download_names_the_url_and_both_alternatives(tmp_path):
    config = load_config(SMOKE_CONFIG, {"data.source": "download", "data.url": "http://127.0.0.1:9/cats_and_dogs_filtered.zip",
                                        "data.cache_dir": str(tmp_path)})
    with pytest.raises(DataError) as caught:
        load_study_data(config)
    message = str(caught.value)
    assert "http://127.0.0.1:9/cats_and_dogs_filtered.zip" in message
    assert "--data-dir" in message and "--dataset synthetic" in message


def test_a_corrupt_cached_archive_is_fetched_again(tmp_path, monkeypatch):
    """A truncated archive in the cache fails its CRC check and is downloaded again; a whole one is
    used as it is."""
    import zipfile

    import experiments.data.loading as data_module

    source = tmp_path / "source.zip"
    with zipfile.ZipFile(source, "w") as bundle:
        for split in ("train", "validation"):
            for class_name in ("cats", "dogs"):
                bundle.writestr(f"cats_and_dogs_filtered/{split}/{class_name}/readme.txt", "x" * 1000)
    datasets = tmp_path / "cache" / "datasets"
    datasets.mkdir(parents=True)
    (datasets / "cats_and_dogs_filtered.zip").write_bytes(source.read_bytes()[:-300])
    fetches = []

    def fake_get_file(fname, origin, cache_dir, cache_subdir, **kwargs):
        target = datasets / fname
        if not target.exists():
            fetches.append(origin)
            target.write_bytes(source.read_bytes())
        return str(target)

    import keras.utils

    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)
    folder = data_module.download_dataset("http://example.invalid/x.zip", str(tmp_path / "cache"))
    assert fetches == ["http://example.invalid/x.zip"]
    assert (folder / "train" / "cats" / "readme.txt").exists()
    assert (datasets / "cats_and_dogs_filtered.zip.sha256").exists()

    def offline(*arguments, **keywords):
        raise AssertionError("a whole cached archive is checked, not fetched (nor is TensorFlow started for it)")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    assert data_module.download_dataset("http://example.invalid/x.zip", str(tmp_path / "cache")) == folder


# --------------------------------------------------------------------------- folder data: labels and fingerprint

# Unbalanced on purpose: reversed labels would turn the 8-of-11 majority baseline on validation
# into 3 of 11, and a label per class into the other class's.
COLOUR_STUDY = {"train": {"cats": 5, "dogs": 3}, "validation": {"cats": 10, "dogs": 4}}


def colour_image(class_name: str, index: int) -> Image.Image:
    """Cats are red-ish, dogs blue-ish; every file has its own shade, so every file has its own bytes."""
    shade = 10 * index
    colour = (180 + shade % 70, 20 + shade % 40, 40) if class_name == "cats" else (30, 40 + shade % 50, 170 + shade % 80)
    return Image.new("RGB", (20, 16), colour)


def write_colour_study(root) -> None:
    for split, counts in COLOUR_STUDY.items():
        for class_name, count in counts.items():
            folder = root / split / class_name
            folder.mkdir(parents=True)
            for index in range(count):
                colour_image(class_name, index + (100 if split == "validation" else 0)).save(folder / f"{class_name[0]}{index}.png")


def folder_config(root):
    return load_config(SMOKE_CONFIG, {"data.source": "folder", "data.data_dir": str(root)})


def red_or_blue(images: np.ndarray) -> np.ndarray:
    """A fixed classifier that needs no training: 0 (cats) where red outweighs blue, else 1 (dogs)."""
    channels = images.astype(np.float64).mean(axis=(1, 2))
    return (channels[:, 2] > channels[:, 0]).astype(np.int32)


def test_folder_labels_follow_each_file_s_class_folder(tmp_path):
    write_colour_study(tmp_path)
    data = load_study_data(folder_config(tmp_path))
    assert data.class_names == ["cats", "dogs"]
    for split_name, split in data.splits.items():
        assert len(split) > 0 and split.labels.dtype == np.int32
        for file, label in zip(split.files, split.labels):
            folder_split, class_name, _ = file.split("/")
            assert folder_split == ("train" if split_name == "train" else "validation")
            assert data.class_names[label] == class_name, f"{file} in {split_name} is labelled {data.class_names[label]}"
        accuracy = float(np.mean(red_or_blue(split.images) == split.labels))
        assert accuracy == 1.0, f"the colour rule scores {accuracy} on {split_name}: images and labels do not match"
    assert data.label_counts(data.validation) == {"cats": 8, "dogs": 3}
    assert data.label_counts(data.test) == {"cats": 2, "dogs": 1}
    baseline = data.majority_baseline()
    assert baseline.class_name == "cats"
    assert baseline.accuracy["validation"] == pytest.approx(8 / 11)
    assert baseline.accuracy["test"] == pytest.approx(2 / 3)


def test_the_pipeline_keeps_every_image_with_its_label(tmp_path):
    from experiments.data.loading import make_dataset

    write_colour_study(tmp_path)
    data = load_study_data(folder_config(tmp_path))
    for split in data.splits.values():  # evaluation order is file order
        batches = list(make_dataset(split, batch_size=3, shuffle=False, seed=0).as_numpy_iterator())
        assert np.concatenate([labels for _, labels in batches]).tolist() == split.labels.tolist()
        images = np.concatenate([images for images, _ in batches])
        assert images.dtype == np.float32
        np.testing.assert_array_equal(images, split.images.astype(np.float32))
    # training batches are shuffled, but each image still travels with its own label
    shuffled = list(make_dataset(data.train, batch_size=3, shuffle=True, seed=1).as_numpy_iterator())
    labels = np.concatenate([labels for _, labels in shuffled])
    assert sorted(labels.tolist()) == sorted(data.train.labels.tolist())
    assert (red_or_blue(np.concatenate([images for images, _ in shuffled])) == labels).all()


def test_the_fingerprint_follows_every_file_s_name_class_and_bytes(tmp_path):
    import os
    import shutil

    write_colour_study(tmp_path)
    config = folder_config(tmp_path)

    def fingerprint_now() -> str:
        return load_study_data(config).fingerprint

    original = fingerprint_now()
    assert fingerprint_now() == original
    os.utime(tmp_path / "train" / "cats" / "c0.png", (0, 0))  # a new date alone changes nothing
    assert fingerprint_now() == original

    for path in (tmp_path / "train" / "cats" / "c1.png", tmp_path / "validation" / "dogs" / "d2.png"):
        saved = path.read_bytes()
        colour_image(path.parent.name, 55).save(path)  # same name, other bytes
        assert path.read_bytes() != saved
        assert fingerprint_now() != original, f"changing the bytes of {path.relative_to(tmp_path)} kept the fingerprint"
        path.write_bytes(saved)
        assert fingerprint_now() == original

    # the last cats file moves to dogs under a name that sorts first there: the files' order and
    # bytes stay the same, only its class changes
    source, target = tmp_path / "train" / "cats" / "c4.png", tmp_path / "train" / "dogs" / "c4.png"
    shutil.move(source, target)
    assert fingerprint_now() != original
    shutil.move(target, source)
    assert fingerprint_now() == original

    added = tmp_path / "train" / "dogs" / "d9.png"
    colour_image("dogs", 9).save(added)
    assert fingerprint_now() != original
    added.unlink()
    assert fingerprint_now() == original

    removed = tmp_path / "validation" / "cats" / "c3.png"
    saved = removed.read_bytes()
    removed.unlink()
    assert fingerprint_now() != original
    removed.write_bytes(saved)
    assert fingerprint_now() == original


def test_decoding_a_folder_shows_its_progress_on_stderr_once(tmp_path, capfd):
    """The first read decodes the folder into the cache and counts the images on stderr (a log
    here: plain lines, the last one with the time taken); the second finds them in the cache and shows no counter. Nothing
    goes to stdout (see tests/test_progress.py for the terminal and the quarters)."""
    root = tmp_path / "pets"
    write_colour_study(root)
    load_study_data(folder_config(root))
    first = capfd.readouterr()
    total = sum(sum(counts.values()) for counts in COLOUR_STUDY.values())
    train = sum(COLOUR_STUDY["train"].values())  # each split reports when it is done (and every 50 images)
    counted = [line for line in first.err.splitlines() if " images: " in line]
    label = f"  reading {re.escape(str(root))} images: "
    assert len(counted) == 2, counted
    assert re.fullmatch(rf"{label}{train}/{total} \({100 * train // total}%\)", counted[0]), counted
    assert re.fullmatch(rf"{label}{total}/{total} \(100%\) in \d+\.\d s", counted[1]), counted
    load_study_data(folder_config(root))
    second = capfd.readouterr()
    assert " images: " not in second.err and "using the images decoded earlier" in second.err
    assert first.out == second.out == ""


def test_images_that_would_not_fit_in_memory_stop_before_any_decoding_naming_the_option_and_the_size(monkeypatch):
    from experiments.data import loading as data_module
    from experiments.errors import ConfigError

    calls = []
    monkeypatch.setattr(data_module, "synthetic_images", lambda *arguments, **keywords: calls.append(arguments))
    monkeypatch.setattr(data_module, "available_memory_bytes", lambda: 2**20)
    config = load_config(SMOKE_CONFIG, {"data.image_size": [512, 512]})
    with pytest.raises(ConfigError) as caught:
        load_study_data(config)
    message = str(caught.value)
    # 16 x 512 x 512 x 3 x 4 bytes (a batch) + 208 x 512 x 512 x 3 bytes (the synthetic images)
    assert message == ("data.image_size 512x512 needs at least 204.0 MiB of memory (one batch of 16 images as float32, plus "
                       "the 208 synthetic images held in memory) but only 1.0 MiB is available; use a smaller "
                       "data.image_size (or data.batch_size).")
    assert calls == []
    folder = load_config(SMOKE_CONFIG, {"data.image_size": [512, 512], "data.source": "folder", "data.data_dir": "/nonexistent"})
    assert data_module.memory_needed(folder) == (16 * 512 * 512 * 3 * 4, "one batch of 16 images as float32")
    monkeypatch.setattr(data_module, "available_memory_bytes", lambda: 2**40)
    data_module.check_memory_for_images(config)  # enough memory: nothing said


def test_the_available_memory_is_read_from_the_system():
    from experiments.data.loading import available_memory_bytes

    available = available_memory_bytes()
    assert available is None or available > 0
