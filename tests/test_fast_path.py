"""The fast data path keeps the reference pipeline's semantics.

experiments.data.make_dataset serves images decoded once into uint8 arrays instead of
decoding every JPEG in every epoch (benchmarks/study_speed.py measures the gain). These tests
pin down what it must still do, on tiny synthetic arrays (no files, no real data):
every image exactly once per epoch with its own label, a new order every training epoch,
file order for evaluation, float32 values equal to the stored uint8 pixels, and augmentation
only in training.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from experiments.data import Split, make_dataset

COUNT = 10
SIDE = 8


def _marked_split() -> Split:
    """Image i is filled with the value i and has label i (so image and label can be matched)."""
    images = np.stack([np.full((SIDE, SIDE, 3), index, dtype=np.uint8) for index in range(COUNT)])
    labels = np.arange(COUNT, dtype=np.int32)
    return Split(images, labels, [f"train/class/{index:02d}.jpg" for index in range(COUNT)])


def _one_epoch(dataset) -> tuple[list[int], list[int]]:
    """(image markers, labels) in the order one pass over the dataset yields them."""
    markers: list[int] = []
    labels: list[int] = []
    for image_batch, label_batch in dataset:
        image_batch = image_batch.numpy()
        for image in image_batch:
            assert np.all(image == image.flat[0]), "an image was mixed with another"
            markers.append(int(image.flat[0]))
        labels.extend(int(label) for label in label_batch.numpy())
    return markers, labels


@pytest.mark.parametrize("shuffle", [True, False])
def test_one_epoch_yields_every_image_once_with_its_own_label(shuffle):
    dataset = make_dataset(_marked_split(), batch_size=3, shuffle=shuffle, seed=5)
    markers, labels = _one_epoch(dataset)
    assert sorted(markers) == list(range(COUNT))
    assert markers == labels  # image i still carries label i, whatever the order


def test_training_data_is_reshuffled_every_epoch_with_the_same_images():
    dataset = make_dataset(_marked_split(), batch_size=4, shuffle=True, seed=5)
    first, first_labels = _one_epoch(dataset)
    second, second_labels = _one_epoch(dataset)
    assert first != second, "two epochs came in the same order: no per-epoch reshuffle"
    assert Counter(first) == Counter(second) == Counter(range(COUNT))
    assert first == first_labels and second == second_labels
    assert first != list(range(COUNT)), "the training data was not shuffled at all"


def test_training_order_is_reproducible_with_the_same_seed():
    first = _one_epoch(make_dataset(_marked_split(), batch_size=4, shuffle=True, seed=5))
    again = _one_epoch(make_dataset(_marked_split(), batch_size=4, shuffle=True, seed=5))
    assert first == again


def test_evaluation_data_keeps_file_order_every_epoch():
    dataset = make_dataset(_marked_split(), batch_size=4, shuffle=False, seed=5)
    for _ in range(2):
        markers, labels = _one_epoch(dataset)
        assert markers == list(range(COUNT))
        assert labels == list(range(COUNT))


def test_batches_are_float32_with_the_stored_pixel_values():
    random_generator = np.random.default_rng(0)
    images = random_generator.integers(0, 256, size=(COUNT, SIDE, SIDE, 3), dtype=np.uint8)
    images[0] = 0
    images[1] = 255
    labels = random_generator.integers(0, 2, size=COUNT).astype(np.int32)
    split = Split(images, labels, [f"validation/x/{index}.png" for index in range(COUNT)])
    batches = list(make_dataset(split, batch_size=4, shuffle=False, seed=0))
    assert [len(labels_batch) for _, labels_batch in batches] == [4, 4, 2]
    for image_batch, label_batch in batches:
        assert image_batch.dtype.name == "float32"
        assert image_batch.shape[1:] == (SIDE, SIDE, 3)
        assert label_batch.dtype.name == "int32"
    served = np.concatenate([image_batch.numpy() for image_batch, _ in batches])
    np.testing.assert_array_equal(served, images.astype(np.float32))  # no scaling, no augmentation
    np.testing.assert_array_equal(np.concatenate([label_batch.numpy() for _, label_batch in batches]), labels)


@pytest.fixture(scope="module")
def augmented_model():
    import keras

    from experiments.models import build_model

    keras.utils.set_random_seed(3)
    return build_model("augmented", (32, 32), 2, seed=3)


def _images(count: int = 8):
    return np.random.default_rng(1).uniform(0, 255, size=(count, 32, 32, 3)).astype(np.float32)


@pytest.mark.parametrize("layer_name", ["random_flip", "random_rotation"])
def test_augmentation_layers_act_only_in_training(augmented_model, layer_name):
    layer = augmented_model.get_layer(layer_name)
    images = _images()
    np.testing.assert_array_equal(np.asarray(layer(images, training=False)), images)
    changed = np.asarray(layer(images, training=True))
    assert changed.shape == images.shape
    assert not np.allclose(changed, images), f"{layer_name} left every training image unchanged"


def test_the_augmented_model_is_deterministic_at_evaluation(augmented_model):
    images = _images()
    first = np.asarray(augmented_model(images, training=False))
    second = np.asarray(augmented_model(images, training=False))
    np.testing.assert_array_equal(first, second)
    # ...and equals the network with the augmentation layers skipped
    x = images
    for layer in augmented_model.layers[1:]:
        if layer.name in ("random_flip", "random_rotation"):
            continue
        x = layer(x, training=False)
    np.testing.assert_allclose(np.asarray(x), first, rtol=1e-5, atol=1e-5)
