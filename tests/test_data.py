"""Splits, label counts, the majority baseline, and the three data sources (without network)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from experiments.config import load_config
from experiments.data import Split, load_study_data, split_validation, synthetic_images
from experiments.images import DataError
from tests.conftest import SMOKE_CONFIG


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
    assert description["class_names"] == ["blobs", "stripes"]
    splits = description["splits"]
    assert splits["train"]["count"] == 128
    assert splits["train"]["label_counts"] == {"blobs": 64, "stripes": 64}
    assert splits["validation"]["count"] + splits["test"]["count"] == 80
    assert splits["test"]["count"] == 16
    assert not set(splits["test"]["files"]) & set(splits["validation"]["files"])
    baseline = description["majority_baseline"]
    assert baseline["class_name"] == "blobs"
    assert baseline["accuracy"]["train"] == pytest.approx(0.5)
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
    assert baseline["class_name"] == "a"
    assert baseline["accuracy"]["train"] == pytest.approx(0.75)
    assert baseline["accuracy"]["validation"] == pytest.approx(4 / 8)


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
    """A truncated archive in the cache fails its CRC check and is downloaded again."""
    import zipfile

    import experiments.data as data_module

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
