"""The fast data path keeps the reference pipeline's semantics.

experiments.data.loading.make_dataset serves images decoded once into uint8 arrays instead of
decoding every JPEG in every epoch (benchmarks/study_speed.py measures the gain). These tests
pin down what it must still do, on tiny synthetic arrays (no image files, no real data):
every image exactly once per epoch with its own label, a new order every training epoch,
file order for evaluation, float32 values equal to the stored uint8 pixels, and augmentation
only in training. It reads batch by batch (from arrays, or from the decoded-image cache on
disk), and gives exactly the batches of the pipeline that sliced the arrays in whole.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from experiments.data.loading import Split, make_dataset

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


def _sliced_whole_pipeline(split: Split, batch_size: int, shuffle: bool, seed: int):
    """make_dataset as it was before the decoded-image cache: the arrays sliced into the pipeline
    whole, then shuffled, batched and cast (the order every recorded run was trained in)."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((split.images, split.labels))
    if shuffle:
        dataset = dataset.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    dataset = dataset.map(lambda images, labels: (tf.cast(images, tf.float32), labels),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


def _random_split(count: int, seed: int = 0) -> Split:
    random_generator = np.random.default_rng(seed)
    images = random_generator.integers(0, 256, size=(count, 4, 3, 3), dtype=np.uint8)
    labels = random_generator.integers(0, 3, size=count).astype(np.int32)
    return Split(images, labels, [f"train/x/{index:04d}.png" for index in range(count)])


def _epochs(dataset, count: int) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    return [[(images.numpy(), labels.numpy()) for images, labels in dataset] for _ in range(count)]


def _assert_same_epochs(first, second) -> None:
    assert len(first) == len(second)
    for epoch, (batches, other_batches) in enumerate(zip(first, second)):
        assert len(batches) == len(other_batches), f"epoch {epoch}: {len(batches)} batches against {len(other_batches)}"
        for (images, labels), (other_images, other_labels) in zip(batches, other_batches):
            assert images.dtype == other_images.dtype and labels.dtype == other_labels.dtype
            np.testing.assert_array_equal(images, other_images, err_msg=f"epoch {epoch}")
            np.testing.assert_array_equal(labels, other_labels, err_msg=f"epoch {epoch}")


@pytest.mark.parametrize("count, batch_size, shuffle, seed", [(97, 8, True, 1337), (64, 32, True, 5), (33, 4, False, 0), (1, 3, True, 2)])
def test_batches_are_those_of_the_pipeline_that_sliced_the_arrays_whole(count, batch_size, shuffle, seed):
    """Shuffling row numbers gives the very order that shuffling the images gave, every epoch:
    runs trained before the cache and after it see the same batches for the same seed."""
    import keras

    split = _random_split(count)
    keras.utils.set_random_seed(11)  # the study sets the global seed too; it takes part in the order
    expected = _epochs(_sliced_whole_pipeline(split, batch_size, shuffle, seed), 3)
    keras.utils.set_random_seed(11)
    _assert_same_epochs(_epochs(make_dataset(split, batch_size, shuffle, seed), 3), expected)


def test_images_read_from_a_cache_file_give_the_same_batches(tmp_path):
    """The same split with its images in a .npy file read on demand (CachedImages, as the
    decoded-image cache serves them), and as a view of some rows (as the test split is)."""
    from experiments.data.cache import CachedImages

    split = _random_split(50, seed=3)
    np.save(tmp_path / "images.npy", split.images)
    on_disk = Split(CachedImages.open(tmp_path / "images.npy"), split.labels, split.files)
    for shuffle in (True, False):
        _assert_same_epochs(_epochs(make_dataset(on_disk, 8, shuffle, 7), 2), _epochs(make_dataset(split, 8, shuffle, 7), 2))
    rows = np.array([40, 2, 3, 4, 17, 0, 49, 25, 26])
    view, subset = on_disk.subset(rows), split.subset(rows)
    assert isinstance(view.images, CachedImages) and view.files == subset.files
    _assert_same_epochs(_epochs(make_dataset(view, 4, True, 9), 2), _epochs(make_dataset(subset, 4, True, 9), 2))


def test_image_batches_serve_images_in_order_without_labels(tmp_path):
    from experiments.data.cache import CachedImages
    from experiments.data.loading import make_image_batches

    split = _random_split(10)
    np.save(tmp_path / "images.npy", split.images)
    for images in (split.images, CachedImages.open(tmp_path / "images.npy")):
        batches = [batch.numpy() for batch in make_image_batches(images, 4)]
        assert [len(batch) for batch in batches] == [4, 4, 2] and batches[0].dtype == np.float32
        np.testing.assert_array_equal(np.concatenate(batches), split.images.astype(np.float32))


@pytest.fixture(scope="module")
def augmented_model():
    import keras

    from experiments.models.build import build_model

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
