"""The decoded-image cache: decode once, reuse everywhere, rebuild what is damaged, stream the rest.

Every test works on tiny synthetic image folders in tmp_path, with the user cache folder pointed
into tmp_path as well (XDG_CACHE_HOME), so nothing is written into the real ~/.cache.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from experiments.config import load_config
from experiments.data import cache as cache_module
from experiments.data import images as images_module
from experiments.data.cache import CachedImages, cache_root, list_caches, load_or_build
from experiments.data.loading import fingerprint, load_study_data
from experiments.errors import DataError
from tests.conftest import SMOKE_CONFIG

IMAGE_SIZE = (12, 10)


@pytest.fixture(autouse=True)
def _user_cache_in_tmp(tmp_path, monkeypatch):
    """The default cache folder ($XDG_CACHE_HOME/report-builder) inside this test's tmp_path."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


def write_folder(root: Path, per_class: dict[str, int] | None = None, side: int = 8, seed: int = 0) -> Path:
    """train/ and validation/ with classes a and b of small random PNGs, plus one broken file and
    one hidden file (so the skipped lists are exercised)."""
    per_class = per_class or {"train": 6, "validation": 5}
    generator = np.random.default_rng(seed)
    for split, count in per_class.items():
        for class_name in ("a", "b"):
            folder = root / split / class_name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                pixels = generator.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{class_name}{index:04d}.png")
    (root / "train" / "a" / "broken.jpg").write_bytes(b"not a jpeg")
    (root / "validation" / ".DS_Store").write_bytes(b"junk")
    return root


def count_decodes(monkeypatch) -> list[int]:
    """Count calls of the function that turns bytes into pixels (each decoded file calls it once)."""
    calls = [0]
    original = images_module.decode_image_bytes

    def counting(image_bytes, image_size):
        calls[0] += 1
        return original(image_bytes, image_size)

    monkeypatch.setattr(images_module, "decode_image_bytes", counting)
    return calls


def folder_config(root: Path, **overrides):
    values = {"data.source": "folder", "data.data_dir": str(root)}
    values.update(overrides)
    return load_config(SMOKE_CONFIG, values)


def the_only_cache(root: Path) -> Path:
    caches = [entry.path for entry in list_caches(root)]
    assert len(caches) == 1, caches
    return caches[0]


# --------------------------------------------------------------------------- decode once


def test_a_second_load_decodes_nothing_and_gives_the_same_data(tmp_path, monkeypatch):
    data_root = write_folder(tmp_path / "data")
    decodes = count_decodes(monkeypatch)
    config = folder_config(data_root)
    first = load_study_data(config)
    assert decodes[0] == 2 * 6 + 1 + 2 * 5  # every candidate once, the broken one included
    second = load_study_data(config)
    assert decodes[0] == 23, "the second load decoded images again"
    assert second.fingerprint == first.fingerprint
    assert second.describe() == first.describe()
    for name, split in first.splits.items():
        np.testing.assert_array_equal(np.asarray(second.splits[name].images), np.asarray(split.images))
    # another seed (another test split) and another process's view read the same cache
    load_study_data(folder_config(data_root, **{"study.seed": 7}))
    assert decodes[0] == 23


def decode_without_the_cache(data_root: Path) -> dict[str, tuple[images_module.DecodedSplit, np.ndarray]]:
    """Each split decoded straight into memory with the cache's own building blocks
    (scan_dataset, decode_scan_into): what it gives, and the used images in file order."""
    decoded = {}
    for name, scan in zip(("train", "validation"), images_module.scan_dataset(data_root)):
        stored: dict[int, np.ndarray] = {}
        split = images_module.decode_scan_into(scan, stored.__setitem__, IMAGE_SIZE)
        decoded[name] = (split, np.stack([stored[index] for index in split.used_indices]))
    return decoded


def test_the_cache_holds_what_decoding_in_memory_gives(tmp_path):
    data_root = write_folder(tmp_path / "data")
    decoded = load_or_build(data_root, IMAGE_SIZE)
    fresh = decode_without_the_cache(data_root)
    for cached, (split, images) in ((decoded.train, fresh["train"]), (decoded.validation, fresh["validation"])):
        assert cached.files == split.files
        assert cached.labels.tolist() == split.labels.tolist()
        assert cached.file_digests == split.file_digests
        assert cached.skipped == split.skipped
        assert cached.class_names == split.class_names
        np.testing.assert_array_equal(np.asarray(cached.images), images)
    assert fingerprint(decoded.class_names, {"train": decoded.train, "validation": decoded.validation}) == \
        fingerprint(fresh["train"][0].class_names, {name: split for name, (split, _) in fresh.items()})
    assert [item.path for item in decoded.train.skipped] == ["train/a/broken.jpg"]
    assert [item.path for item in decoded.validation.skipped] == ["validation/.DS_Store"]


def test_changed_files_or_image_size_build_a_new_cache(tmp_path, monkeypatch):
    data_root = write_folder(tmp_path / "data")
    decodes = count_decodes(monkeypatch)
    first = load_or_build(data_root, IMAGE_SIZE)
    built = decodes[0]
    other_size = load_or_build(data_root, (10, 12))
    assert decodes[0] == 2 * built and other_size.folder != first.folder
    Image.new("RGB", (8, 8), (1, 2, 3)).save(data_root / "train" / "b" / "b0000.png")  # same name, other bytes
    changed = load_or_build(data_root, IMAGE_SIZE)
    assert decodes[0] == 3 * built and changed.folder != first.folder
    assert changed.built and not load_or_build(data_root, IMAGE_SIZE).built
    assert decodes[0] == 3 * built


def test_the_same_data_in_another_folder_shares_the_cache(tmp_path, monkeypatch):
    write_folder(tmp_path / "one")
    write_folder(tmp_path / "two")  # same seed: the same bytes under the same names
    decodes = count_decodes(monkeypatch)
    assert load_or_build(tmp_path / "one", IMAGE_SIZE).built
    assert not load_or_build(tmp_path / "two", IMAGE_SIZE).built
    assert decodes[0] == 23


def test_the_cache_folder_follows_data_cache_dir(tmp_path):
    data_root = write_folder(tmp_path / "data")
    data = load_study_data(folder_config(data_root, **{"data.cache_dir": str(tmp_path / "elsewhere")}))
    assert data.train.images.path.parent.parent == tmp_path / "elsewhere" / "decoded"
    assert not (tmp_path / "xdg-cache").exists()
    assert cache_root("") == tmp_path / "xdg-cache" / "report-builder" / "decoded"


# --------------------------------------------------------------------------- damage


def _truncate_train(folder: Path) -> None:
    path = folder / "train.npy"
    os.truncate(path, path.stat().st_size - 100)


def _flip_last_byte(folder: Path) -> None:
    path = folder / "validation.npy"
    with open(path, "r+b") as file:
        file.seek(-1, os.SEEK_END)
        last = file.read(1)
        file.seek(-1, os.SEEK_END)
        file.write(bytes([last[0] ^ 0xFF]))


def _relabel_in_index(folder: Path) -> None:
    index = json.loads((folder / "index.json").read_text())
    index["splits"]["train"]["labels"][0] = 1 - index["splits"]["train"]["labels"][0]
    (folder / "index.json").write_text(json.dumps(index))


def _break_header(folder: Path) -> None:
    with open(folder / "train.npy", "r+b") as file:
        file.write(b"XXXXXX")


def _remove_index(folder: Path) -> None:
    (folder / "index.json").unlink()


@pytest.mark.parametrize("damage, named", [
    (_truncate_train, "train.npy has"),
    (_flip_last_byte, "validation.npy fails its checksum"),
    (_relabel_in_index, "index.json fails its checksum"),
    (_break_header, "train.npy"),
    (_remove_index, "index.json is missing"),
])
def test_a_damaged_cache_is_reported_in_one_sentence_and_rebuilt(tmp_path, monkeypatch, capsys, damage, named):
    data_root = write_folder(tmp_path / "data")
    good = load_or_build(data_root, IMAGE_SIZE)
    expected = {name: np.asarray(split.images) for name, split in (("train", good.train), ("validation", good.validation))}
    labels = good.train.labels.tolist()
    damage(good.folder)
    capsys.readouterr()
    decodes = count_decodes(monkeypatch)
    rebuilt = load_or_build(data_root, IMAGE_SIZE)
    messages = [line for line in capsys.readouterr().err.splitlines() if " is damaged " in line]
    assert len(messages) == 1, messages
    assert str(good.folder) in messages[0] and named in messages[0] and messages[0].rstrip().endswith("decoded again.")
    assert messages[0].count(". ") == 0  # one sentence
    assert rebuilt.built and decodes[0] == 23
    assert rebuilt.train.labels.tolist() == labels
    for name, split in (("train", rebuilt.train), ("validation", rebuilt.validation)):
        np.testing.assert_array_equal(np.asarray(split.images), expected[name])
    assert [entry.state for entry in list_caches(cache_root(""))] == ["ok"]


def test_a_crashed_build_leaves_nothing_that_is_read_and_is_cleaned_up(tmp_path, monkeypatch):
    data_root = write_folder(tmp_path / "data")
    calls = [0]
    original = images_module.decode_image_bytes

    def crash_halfway(image_bytes, image_size):
        calls[0] += 1
        if calls[0] == 10:
            raise KeyboardInterrupt
        return original(image_bytes, image_size)

    monkeypatch.setattr(images_module, "decode_image_bytes", crash_halfway)
    with pytest.raises(KeyboardInterrupt):
        load_or_build(data_root, IMAGE_SIZE, workers=1)
    root = cache_root("")
    assert [path.name for path in root.iterdir() if not path.name.endswith(".lock")] == []
    # a staging folder a killed process left behind is listed, and removed by the next build of its key
    monkeypatch.setattr(images_module, "decode_image_bytes", original)
    name = load_or_build(data_root, IMAGE_SIZE).folder.name
    assert cache_module.remove_cache(root, name)
    leftover = root / f"{cache_module.STAGING_PREFIX}{name}-12345-abcd"
    leftover.mkdir()
    (leftover / "train.npy").write_bytes(b"half")
    assert [entry.state for entry in list_caches(root)] == ["unfinished build (or one in progress)"]
    assert load_or_build(data_root, IMAGE_SIZE).built
    assert not leftover.exists()
    assert [entry.state for entry in list_caches(root)] == ["ok"]


def test_not_enough_disk_stops_before_decoding_in_one_sentence(tmp_path, monkeypatch):
    data_root = write_folder(tmp_path / "data")
    decodes = count_decodes(monkeypatch)
    monkeypatch.setattr(cache_module, "disk_free_bytes", lambda folder: 1000)
    with pytest.raises(DataError) as caught:
        load_study_data(folder_config(data_root, **{"data.cache_dir": str(tmp_path / "small-disk")}))
    message = str(caught.value)
    assert decodes[0] == 0
    assert str(tmp_path / "small-disk" / "decoded") in message and "23 images" in message
    assert "needs 1.2 MiB in the cache folder" in message and "only 1000 bytes is free" in message  # units that fit
    assert "0.0 GiB" not in message and "--cache-dir" in message
    assert message.count(". ") == 0 and message.endswith(".")


@pytest.mark.parametrize("byte_count, text", [(0, "0 bytes"), (1023, "1023 bytes"), (1536, "1.5 KiB"),
                                              (5 * 2**20, "5.0 MiB"), (int(2.25 * 2**30), "2.2 GiB"), (3 * 2**40, "3.0 TiB")])
def test_disk_sizes_are_given_in_the_unit_that_fits(byte_count, text):
    from experiments.console import format_size

    assert format_size(byte_count) == text


def test_a_disk_one_byte_short_names_both_sizes_in_bytes_rather_than_alike(tmp_path, monkeypatch):
    data_root = write_folder(tmp_path / "data")
    needed = 23 * 12 * 10 * 3 + 2 * cache_module.HEADER_BYTES + (1 << 20)
    monkeypatch.setattr(cache_module, "disk_free_bytes", lambda folder: needed - 1)
    with pytest.raises(DataError) as caught:
        load_or_build(data_root, IMAGE_SIZE)
    assert f"needs {needed:,} bytes" in str(caught.value) and f"only {needed - 1:,} bytes is free" in str(caught.value)


def test_a_disk_with_exactly_the_room_needed_is_enough(tmp_path, monkeypatch):
    """The disk check's boundary: the arrays (23 candidates of 12x10x3 bytes), their two headers
    and 1 MiB of slack fit in exactly that much free space, and not in one byte less."""
    data_root = write_folder(tmp_path / "data")
    needed = 23 * 12 * 10 * 3 + 2 * cache_module.HEADER_BYTES + (1 << 20)
    monkeypatch.setattr(cache_module, "disk_free_bytes", lambda folder: needed - 1)
    with pytest.raises(DataError, match="23 images"):
        load_or_build(data_root, IMAGE_SIZE)
    monkeypatch.setattr(cache_module, "disk_free_bytes", lambda folder: needed)
    assert load_or_build(data_root, IMAGE_SIZE).built


# --------------------------------------------------------------------------- two processes at once


def _load_in_child(data_root: str, cache_dir: str, barrier, results) -> None:
    """In a spawned process: decode slowly (so two builds overlap) and report what was done."""
    from experiments.data import cache as child_cache
    from experiments.data import images as child_images

    original = child_images.decode_image_bytes
    decodes = [0]

    def slow(image_bytes, image_size):
        decodes[0] += 1
        time.sleep(0.1)
        return original(image_bytes, image_size)

    child_images.decode_image_bytes = slow
    messages: list[str] = []
    barrier.wait(timeout=60)
    decoded = child_cache.load_or_build(Path(data_root), IMAGE_SIZE, workers=2, cache_dir=cache_dir, log=messages.append)
    results.put((messages, decodes[0], str(decoded.folder), decoded.built, np.asarray(decoded.train.images).tobytes()))


def test_two_processes_building_the_same_cache_at_once_end_with_one_good_cache(tmp_path):
    data_root = write_folder(tmp_path / "data")
    cache_dir = tmp_path / "shared-cache"
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    results = context.Queue()
    processes = [context.Process(target=_load_in_child, args=(str(data_root), str(cache_dir), barrier, results)) for _ in range(2)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    decodes = sorted(outcome[1] for outcome in outcomes)
    assert decodes == [0, 23], f"decodes per process: {decodes} (one must build, the other wait and reuse)"
    assert sorted(outcome[3] for outcome in outcomes) == [False, True]
    waited = next(outcome[0] for outcome in outcomes if not outcome[3])
    assert any("another process" in message for message in waited), f"the builds did not overlap: {waited}"
    assert outcomes[0][2] == outcomes[1][2] and outcomes[0][4] == outcomes[1][4]
    entries = list_caches(cache_root(cache_dir))
    assert [(entry.path, entry.state) for entry in entries] == [(Path(outcomes[0][2]), "ok")]
    assert sorted(path.name for path in cache_root(cache_dir).iterdir()) == [entries[0].name, entries[0].name + ".lock"]


# --------------------------------------------------------------------------- reading: CachedImages


def test_cached_images_index_like_a_numpy_array(tmp_path):
    data_root = write_folder(tmp_path / "data", {"train": 20, "validation": 3})
    images = load_or_build(data_root, IMAGE_SIZE).train.images
    everything = np.asarray(images)
    assert images.shape == everything.shape == (40, 12, 10, 3) and images.dtype == np.uint8 and len(images) == 40
    mask = np.arange(40) % 3 == 0
    for key in (0, -1, 7, np.int64(5), slice(None), slice(3, 30, 4), slice(None, None, -2), [5, 1, 5, 38], np.array([[1, 2], [3, 4]]),
                mask, [], (2, slice(None), 0), ([1, 2], 3), (slice(1, 4), Ellipsis, 1)):
        np.testing.assert_array_equal(images[key], everything[key], err_msg=f"key {key!r}")
    with pytest.raises(IndexError):
        images[40]
    with pytest.raises(IndexError):
        images[[0, 40]]
    with pytest.raises(IndexError):
        images[np.ones(39, dtype=bool)]
    view = images.take([9, 3, 4, 5, 30])
    assert len(view) == 5
    np.testing.assert_array_equal(np.asarray(view), everything[[9, 3, 4, 5, 30]])
    np.testing.assert_array_equal(view[[4, 0]], everything[[30, 9]])
    np.testing.assert_array_equal(np.asarray(view.take([1, 4])), everything[[3, 30]])  # a view of a view
    np.testing.assert_array_equal(np.stack(list(view)), np.asarray(view))
    np.testing.assert_array_equal(view.astype(np.float32), everything[[9, 3, 4, 5, 30]].astype(np.float32))
    np.testing.assert_array_equal(np.load(images.path, mmap_mode="r"), everything)
    unpickled = pickle.loads(pickle.dumps(view))  # worker processes get the cache by path
    np.testing.assert_array_equal(np.asarray(unpickled), np.asarray(view))


def test_the_test_split_is_a_view_of_the_cached_validation_array(tmp_path):
    data_root = write_folder(tmp_path / "data", {"train": 6, "validation": 10})
    data = load_study_data(folder_config(data_root))
    assert isinstance(data.test.images, CachedImages) and isinstance(data.validation.images, CachedImages)
    assert data.test.images.path == data.validation.images.path
    decoded = load_or_build(data_root, data.image_size)
    everything = np.asarray(decoded.validation.images)
    for split in (data.validation, data.test):
        rows = [decoded.validation.files.index(name) for name in split.files]
        np.testing.assert_array_equal(np.asarray(split.images), everything[rows])


# --------------------------------------------------------------------------- more data than memory


def _stream_in_child(data_root: str, cache_dir: str, side: int, results) -> None:
    """In a fresh process: load the cached data and train one epoch (validating too) on a quarter
    of it, then on all of it, and report the peak resident memory (VmHWM) each reached."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from experiments.runtime import prefer_onednn

    prefer_onednn()
    from experiments.config import load_config as child_load_config
    from experiments.data.loading import load_study_data as child_load
    from experiments.data.loading import make_dataset

    def status_mib(field: str) -> float:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1]) / 1024
        raise RuntimeError(field)

    config = child_load_config(SMOKE_CONFIG, {"data.source": "folder", "data.data_dir": data_root, "data.cache_dir": cache_dir,
                                              "data.image_size": [side, side]})
    data = child_load(config)
    import keras

    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((side, side, 3)), keras.layers.Rescaling(1 / 255), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])

    def train_one_epoch(fraction: float) -> float:
        train = data.train.subset(np.arange(int(len(data.train) * fraction)))
        validation = data.validation.subset(np.arange(int(len(data.validation) * fraction)))
        history = model.fit(make_dataset(train, 32, True, 1), validation_data=make_dataset(validation, 32, False, 1), epochs=1, verbose=0)
        return float(history.history["loss"][-1])

    train_one_epoch(0.03)  # traces the train and test functions
    rounds = []
    for _ in range(2):  # the second round starts with the allocator's and tf.data's pools already grown
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # the peak (VmHWM) starts again from the current resident size
        before = status_mib("VmRSS")
        train_one_epoch(0.25)
        quarter_peak = status_mib("VmHWM")
        loss = train_one_epoch(1.0)
        rounds.append({"before": before, "quarter_peak": quarter_peak, "full_peak": status_mib("VmHWM")})
    data_mib = sum(len(split) for split in data.splits.values()) * side * side * 3 / 2**20
    results.put({"rounds": rounds, "data_mib": data_mib, "train": len(data.train), "loss": loss})


@pytest.mark.training
@pytest.mark.slow  # a measurement of memory, not a unit test: tests/test_fast_path.py shows the batches come from the cache
@pytest.mark.serial  # a test training beside it changes the peak memory of tf.data's threads and the allocator
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="measures memory through Linux /proc")
def test_a_data_set_larger_than_the_memory_budget_trains_from_the_cache(tmp_path, monkeypatch):
    """2,000 training and 500 validation images of 192x192: 264 MiB of uint8 pixels. In a fresh
    process, one epoch (with validation) on a quarter of them, then one on all of them: the whole
    data set may add at most a 64 MiB budget to the peak resident memory the quarter reached,
    although it is 198 MiB more data, and the peak may never grow by the data's size. Loading
    the arrays whole (the pipeline before the cache) fails both. What this shows: training
    streams from the cache, and memory does not follow the data's size. It sets no hard limit on
    the process, and the page cache holding the file is not counted (it is the kernel's, shared,
    and given back under pressure). The first epoch's own growth (batches in flight, the
    allocator's pools) is a fixed cost, measured by the quarter; the two epochs run twice, and
    the round whose pools had already grown decides."""
    side, budget_mib = 192, 64
    data_root = write_folder(tmp_path / "data", {"train": 1000, "validation": 250}, side=4)
    cache_dir = tmp_path / "cache"
    load_or_build(data_root, (side, side), cache_dir=cache_dir, log=lambda message: None)  # decoded here, outside the measurement
    # glibc gives every thread that allocates its own malloc arena, so the peak RSS of a process
    # running tf.data's threads varies with their scheduling (one full-suite run measured 82 MiB
    # here, isolated runs well under the budget): two arenas make the measurement repeatable.
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")  # the spawned child inherits it
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=_stream_in_child, args=(str(data_root), str(cache_dir), side, results))
    process.start()
    outcome = results.get(timeout=300)
    process.join(timeout=60)
    assert process.exitcode == 0
    assert outcome["train"] == 2000 and np.isfinite(outcome["loss"])
    extra_data_mib = 0.75 * outcome["data_mib"]
    assert extra_data_mib > 3 * budget_mib
    # Memory that follows the data grows in every round; the allocator's and tf.data's own
    # growth (one full-suite run measured 122 MiB in a first round) is paid once, so the smaller
    # of the two rounds' growths is the one that tells.
    growths = [item["full_peak"] - item["quarter_peak"] for item in outcome["rounds"]]
    assert min(growths) < budget_mib, (f"all of the data added {min(growths):.0f} MiB to the peak a quarter of it reached, "
                                       f"in the better of two rounds ({extra_data_mib:.0f} MiB more data): {outcome}")
    assert all(item["full_peak"] - item["before"] < outcome["data_mib"] for item in outcome["rounds"]), outcome


# --------------------------------------------------------------------------- the command line


def test_the_cache_command_lists_the_caches_with_sizes_and_removes_them(tmp_path, capsys):
    from report_builder.cli import main

    cache_dir = tmp_path / "caches"
    small = load_or_build(write_folder(tmp_path / "small"), IMAGE_SIZE, cache_dir=cache_dir)
    large = load_or_build(write_folder(tmp_path / "large", {"train": 30, "validation": 10}, seed=1), IMAGE_SIZE, cache_dir=cache_dir)
    capsys.readouterr()
    assert main(["cache", "--cache-dir", str(cache_dir)]) == 0
    listing = capsys.readouterr().out
    assert str(cache_root(cache_dir)) in listing
    for decoded, images in ((small, 22), (large, 80)):
        line = next(line for line in listing.splitlines() if decoded.folder.name in line)
        assert f"{images} images at 12x10" in line and " KiB " in line
    assert "2 in all" in listing
    assert main(["cache", "--cache-dir", str(cache_dir), "--remove", "12x10-"]) == 2  # the start of both names
    assert "give more of the name" in capsys.readouterr().err
    assert main(["cache", "--cache-dir", str(cache_dir), "--remove", small.folder.name]) == 0
    assert f"Removed {small.folder}" in capsys.readouterr().out
    assert not small.folder.exists() and large.folder.is_dir()
    assert main(["cache", "--cache-dir", str(cache_dir), "--remove", "no-such-cache"]) == 2
    assert "no decoded-image cache 'no-such-cache'" in capsys.readouterr().err
    assert main(["cache", "--cache-dir", str(cache_dir), "--remove", "all"]) == 0
    assert main(["cache", "--cache-dir", str(cache_dir)]) == 0
    assert "No decoded-image caches" in capsys.readouterr().out
    assert list(cache_root(cache_dir).iterdir()) == []


def test_the_train_command_s_cache_dir_sets_data_cache_dir():
    from report_builder.cli import parse_arguments
    from report_builder.commands.train import config_overrides

    assert config_overrides(parse_arguments(["train", "--cache-dir", "/big/disk"]))["data.cache_dir"] == "/big/disk"
    assert "data.cache_dir" not in config_overrides(parse_arguments(["train"]))


def test_the_cache_module_imports_no_tensorflow():
    source = Path(cache_module.__file__).read_text(encoding="utf-8")
    assert "import tensorflow" not in source and "from tensorflow" not in source


# --------------------------------------------------------------------------- only caches are removed


def test_cache_remove_leaves_a_folder_that_is_not_a_cache_and_lists_it_as_such(tmp_path, capsys):
    from report_builder.cli import main

    cache_dir = tmp_path / "caches"
    built = load_or_build(write_folder(tmp_path / "data"), IMAGE_SIZE, cache_dir=cache_dir)
    photos = cache_root(cache_dir) / "photos"
    photos.mkdir()
    (photos / "p.jpg").write_bytes(b"x")
    capsys.readouterr()
    assert main(["cache", "--cache-dir", str(cache_dir)]) == 0
    listing = capsys.readouterr().out
    line = next(line for line in listing.splitlines() if "photos" in line)
    assert "not a cache, left alone" in line and "damaged" not in listing
    assert main(["cache", "--cache-dir", str(cache_dir), "--remove", "pho"]) == 2
    error = capsys.readouterr().err
    assert "is not a decoded-image cache" in error and str(photos) in error and error.count("\n") == 1
    assert main(["cache", "--cache-dir", str(cache_dir), "--remove", "all"]) == 0
    out = capsys.readouterr().out
    assert f"Removed {built.folder}" in out and f"Left alone: {photos}" in out
    assert (photos / "p.jpg").read_bytes() == b"x" and not built.folder.exists()


def test_a_cache_carries_a_marker_and_one_built_before_markers_is_still_recognised(tmp_path):
    root = cache_root(tmp_path / "caches")
    built = load_or_build(write_folder(tmp_path / "data"), IMAGE_SIZE, cache_dir=tmp_path / "caches")
    marker = json.loads((built.folder / cache_module.MARKER_FILE).read_text())
    assert marker["generator"] == "report-builder" and marker["key"] == built.key
    (built.folder / cache_module.MARKER_FILE).unlink()  # as a cache written before the marker existed
    assert cache_module.cache_kind(built.folder) == "cache before the marker"
    assert [entry.state for entry in list_caches(root)] == ["ok"]
    # without the marker, an index that does not check out (or a file a cache never writes) is not enough
    (built.folder / "notes.txt").write_text("mine")
    assert cache_module.cache_kind(built.folder) is None
    assert not cache_module.remove_cache(root, built.folder.name)
    assert (built.folder / "notes.txt").read_text() == "mine" and (built.folder / "train.npy").is_file()


def test_a_folder_named_like_a_cache_without_marker_or_valid_index_is_not_a_cache(tmp_path):
    root = cache_root(tmp_path / "caches")
    impostor = root / ("12x10-" + "ab" * 12)
    impostor.mkdir(parents=True)
    (impostor / "index.json").write_text("{}")
    assert cache_module.cache_kind(impostor) is None
    assert [entry.state for entry in list_caches(root)] == [cache_module.NOT_A_CACHE]
    assert cache_module.remove_cache(root, impostor.name).not_a_cache and (impostor / "index.json").is_file()


def test_removing_a_cache_that_holds_a_stranger_s_file_deletes_nothing_and_names_the_file(tmp_path, capsys):
    from report_builder.cli import main

    cache_dir = tmp_path / "caches"
    built = load_or_build(write_folder(tmp_path / "data"), IMAGE_SIZE, cache_dir=cache_dir)
    (built.folder / "keep-me.txt").write_text("mine")
    capsys.readouterr()
    assert main(["cache", "--cache-dir", str(cache_dir), "--remove", "all"]) == 0
    assert "keep-me.txt" in capsys.readouterr().out
    assert sorted(path.name for path in built.folder.iterdir()) == sorted(cache_module.CACHE_FILES | {"keep-me.txt"})


def test_a_damaged_cache_with_its_marker_is_listed_as_damaged_and_removable(tmp_path):
    root = cache_root(tmp_path / "caches")
    built = load_or_build(write_folder(tmp_path / "data"), IMAGE_SIZE, cache_dir=tmp_path / "caches")
    (built.folder / "index.json").unlink()
    assert [entry.state for entry in list_caches(root)] == ["damaged: index.json is missing"]
    assert cache_module.remove_cache(root, built.folder.name) and not built.folder.exists()


def test_a_disk_that_fills_up_while_decoding_stops_in_one_sentence_and_keeps_earlier_caches(tmp_path, monkeypatch):
    import errno

    cache_dir = tmp_path / "caches"
    earlier = load_or_build(write_folder(tmp_path / "earlier"), IMAGE_SIZE, cache_dir=cache_dir)
    writes = [0]
    real_pwrite = os.pwrite

    def fills_up(fd, data, offset):
        writes[0] += 1
        if writes[0] > 5:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(cache_module.os, "pwrite", fills_up)
    with pytest.raises(DataError) as caught:
        load_or_build(write_folder(tmp_path / "new", seed=3), IMAGE_SIZE, cache_dir=cache_dir, workers=1)
    message = str(caught.value)
    root = cache_root(cache_dir)
    assert f"The disk holding the cache folder '{root}' filled up" in message and message.count(". ") == 0
    monkeypatch.setattr(cache_module.os, "pwrite", real_pwrite)
    assert [entry.name for entry in list_caches(root)] == [earlier.folder.name]  # no staging folder left
    again = load_or_build(tmp_path / "earlier", IMAGE_SIZE, cache_dir=cache_dir)
    assert not again.built and again.folder == earlier.folder


def test_a_rebuild_leaves_a_damaged_cache_folder_holding_other_files_and_names_it(tmp_path):
    data_root = write_folder(tmp_path / "data")
    built = load_or_build(data_root, IMAGE_SIZE)
    (built.folder / "index.json").unlink()
    (built.folder / "mine.txt").write_text("mine")
    with pytest.raises(DataError) as caught:
        load_or_build(data_root, IMAGE_SIZE)
    assert str(built.folder) in str(caught.value) and "mine.txt" in str(caught.value)
    assert (built.folder / "mine.txt").read_text() == "mine" and (built.folder / "train.npy").is_file()


# --------------------------------------------------------------------------- every byte checked


def _small_samples(monkeypatch) -> None:
    """Sampled blocks of 64 bytes and checksum blocks of 1 KiB: the test's 8 KiB arrays then have
    bytes that no sampled block covers, as a real cache of hundreds of MiB has."""
    monkeypatch.setattr(cache_module, "SAMPLE_BLOCK_BYTES", 64)
    monkeypatch.setattr(cache_module, "BLOCK_BYTES", 1024)


def _corrupt_outside_the_samples(path: Path, count: int = 200) -> int:
    """Overwrite `count` bytes of `path` that no sampled block reads; returns where they start."""
    size = path.stat().st_size
    sampled = set()
    for offset in cache_module._sample_offsets(size):
        sampled.update(range(offset, offset + cache_module.SAMPLE_BLOCK_BYTES))
    start = next(offset for offset in range(cache_module.HEADER_BYTES, size - count)
                 if not sampled.intersection(range(offset, offset + count)))
    with open(path, "r+b") as file:
        file.seek(start)
        original = file.read(count)
        file.seek(start)
        file.write(bytes(byte ^ 0x5A for byte in original))
    return start


def test_damage_outside_the_sampled_blocks_is_seen_when_the_cache_is_opened_and_rebuilt(tmp_path, monkeypatch, capsys):
    _small_samples(monkeypatch)
    data_root = write_folder(tmp_path / "data", {"train": 12, "validation": 5})
    good = load_or_build(data_root, IMAGE_SIZE)
    expected = np.asarray(good.train.images)
    _corrupt_outside_the_samples(good.folder / "train.npy")
    assert cache_module._sample_checksum(good.folder / "train.npy", (good.folder / "train.npy").stat().st_size) == \
        json.loads((good.folder / "index.json").read_text())["splits"]["train"]["array"]["sample_sha256"]  # unseen before
    assert [entry.state for entry in list_caches(cache_root(""))] == ["ok"]  # the listing stays cheap
    capsys.readouterr()
    rebuilt = load_or_build(data_root, IMAGE_SIZE)
    messages = [line for line in capsys.readouterr().err.splitlines() if " is damaged " in line]
    assert len(messages) == 1 and "train.npy fails its checksum in bytes " in messages[0], messages
    assert rebuilt.built
    np.testing.assert_array_equal(np.asarray(rebuilt.train.images), expected)


def test_cache_verify_prints_one_line_per_cache_ok_or_damaged_and_exits_2_if_any_is_damaged(tmp_path, monkeypatch, capsys):
    from report_builder.__main__ import main

    _small_samples(monkeypatch)
    cache_dir = tmp_path / "caches"
    small = load_or_build(write_folder(tmp_path / "small"), IMAGE_SIZE, cache_dir=cache_dir)
    large = load_or_build(write_folder(tmp_path / "large", {"train": 12, "validation": 5}, seed=1), IMAGE_SIZE, cache_dir=cache_dir)
    (cache_root(cache_dir) / "photos").mkdir()
    capsys.readouterr()
    assert main(["cache", "--cache-dir", str(cache_dir), "--verify"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(" OK (" in line for line in lines), lines
    _corrupt_outside_the_samples(large.folder / "train.npy")
    assert main(["cache", "--cache-dir", str(cache_dir), "--verify", "all"]) == 2
    captured = capsys.readouterr()
    by_name = {line.split()[0]: line for line in captured.out.splitlines()}
    assert " OK (" in by_name[small.folder.name]
    assert "damaged: train.npy fails its checksum in bytes" in by_name[large.folder.name]
    error = captured.err.strip()
    assert error.startswith("error: 1 of 2 decoded-image caches") and "--remove" in error and error.count(". ") == 0
    assert main(["cache", "--cache-dir", str(cache_dir), "--verify", small.folder.name]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    assert main(["cache", "--cache-dir", str(cache_dir), "--verify", "photos"]) == 2
    assert "not a decoded-image cache" in capsys.readouterr().err
    assert large.folder.is_dir() and (cache_root(cache_dir) / "photos").is_dir()  # verifying changes nothing


def test_a_cache_built_before_block_checksums_is_rebuilt_saying_so_and_never_a_traceback(tmp_path, monkeypatch, capsys):
    from report_builder.__main__ import main

    data_root = write_folder(tmp_path / "data")
    old = load_or_build(data_root, IMAGE_SIZE)
    index = json.loads((old.folder / "index.json").read_text())
    for split in index["splits"].values():
        del split["array"]["block_sha256"], split["array"]["block_bytes"]
    index["index_sha256"] = cache_module._index_checksum(index)
    (old.folder / "index.json").write_text(json.dumps(index))
    assert [entry.state for entry in list_caches(cache_root(""))] == ["ok"]
    assert main(["cache", "--verify"]) == 0
    assert "not verifiable: it was built by an earlier version" in capsys.readouterr().out
    rebuilt = load_or_build(data_root, IMAGE_SIZE)
    err = capsys.readouterr().err
    assert "was built by an earlier version that kept no checksum over every byte, so the images are decoded again." in err
    assert rebuilt.built and rebuilt.folder == old.folder
    assert "block_sha256" in json.loads((old.folder / "index.json").read_text())["splits"]["train"]["array"]


@pytest.mark.parametrize("block_bytes, checksums", [(True, None), (1, None), (2**40, None), (1024, ["00"] * 3)])
def test_an_index_whose_block_checksums_do_not_fit_the_file_is_damaged_not_hashed_byte_by_byte(tmp_path, block_bytes, checksums):
    data_root = write_folder(tmp_path / "data")
    folder = load_or_build(data_root, IMAGE_SIZE).folder
    index = json.loads((folder / "index.json").read_text())
    array = index["splits"]["train"]["array"]
    array["block_bytes"], array["block_sha256"] = block_bytes, checksums if checksums is not None else array["block_sha256"]
    index["index_sha256"] = cache_module._index_checksum(index)
    (folder / "index.json").write_text(json.dumps(index))
    assert cache_module.verify_cache(folder) == "its index's block checksums for train.npy do not fit the file"


def test_a_file_given_as_the_cache_folder_is_one_sentence_not_an_empty_listing(tmp_path, capsys):
    from report_builder.cli import main

    not_a_folder = tmp_path / "caches.txt"
    not_a_folder.write_text("mine\n", encoding="utf-8")
    assert main(["cache", "--cache-dir", str(not_a_folder)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: The cache folder {not_a_folder} (--cache-dir, data.cache_dir) is a file, not a folder")
    assert error.count("\n") == 1 and not_a_folder.read_text(encoding="utf-8") == "mine\n"
