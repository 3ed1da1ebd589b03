"""Tests for experiments.data.images: scanning, decoding, skipping and errors.

Images are read the way the study reads them: whole data sets through the decoded-image cache
(experiments.data.cache.load_or_build, in tmp_path), one split through scan_dataset and
decode_scan_into (what that cache is built with), one image through decode_image_bytes.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, features

from experiments.data import images as images_module
from experiments.data.cache import CachedSplit, DecodedData, load_or_build
from experiments.data.images import (
    DecodedSplit,
    SkippedFile,
    UnusableImage,
    convert_to_rgb,
    decode_image_bytes,
    decode_scan_into,
    list_class_folders,
    scan_dataset,
    summarize_skipped,
)
from experiments.errors import DataError

IMAGE_SIZE = (16, 20)  # (height, width)
WEBP_AVAILABLE = features.check("webp")
# '/' cannot appear in a Linux folder name, so "<b>dogs</b>" would be two nested folders.
HTML_CLASS = "<b>dogs & 'cats'"


# --------------------------------------------------------------------------
# Helpers that write tiny image files
# --------------------------------------------------------------------------


def image_bytes(image: Image.Image, image_format: str, **save_options: object) -> bytes:
    """Encode a PIL image to bytes."""
    buffer = io.BytesIO()
    image.save(buffer, image_format, **save_options)
    return buffer.getvalue()


def write(path: Path, data: bytes) -> Path:
    """Write bytes, creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def colour_jpeg(colour: tuple[int, int, int] = (200, 30, 40), size: tuple[int, int] = (20, 16)) -> bytes:
    """A small solid-colour JPEG (size is width, height)."""
    return image_bytes(Image.new("RGB", size, colour), "JPEG", quality=95)


def palette_gif_with_transparency() -> bytes:
    """A two-frame palette GIF: left half transparent, right half red."""
    first = Image.new("P", (20, 16), 0)
    first.putpalette([0, 255, 0] + [255, 0, 0] + [0, 0, 0] * 254)
    for x in range(10, 20):
        for y in range(16):
            first.putpixel((x, y), 1)
    second = Image.new("P", (20, 16), 1)
    second.putpalette([0, 255, 0] + [255, 0, 0] + [0, 0, 0] * 254)
    return image_bytes(first, "GIF", save_all=True, append_images=[second], transparency=0, duration=100)


def grey16_png(value: int) -> bytes:
    """A 16-bit greyscale PNG filled with one value."""
    array = np.full((16, 20), value, dtype=np.uint16)
    return image_bytes(Image.fromarray(array), "PNG")


def snapshot(folder: Path) -> list[tuple[str, bool, int, bytes]]:
    """Recursive listing with mtimes and contents, to prove nothing changed."""
    rows = []
    for path in sorted(folder.rglob("*")):
        stat_result = path.lstat()
        contents = path.read_bytes() if path.is_file() else b""
        rows.append((path.relative_to(folder).as_posix(), path.is_dir(), stat_result.st_mtime_ns, contents))
    return rows


def make_two_class_split(root: Path, split: str, classes: tuple[str, ...] = ("cats", "dogs")) -> None:
    """One good JPEG per class."""
    for index, class_name in enumerate(classes):
        write(root / split / class_name / "a.jpg", colour_jpeg((40 * index, 100, 150)))


# --------------------------------------------------------------------------
# Reading as the study reads
# --------------------------------------------------------------------------


def decode_split(
    data_root: Path,
    split: str = "train",
    image_size: tuple[int, int] = IMAGE_SIZE,
    workers: int | None = None,
) -> tuple[DecodedSplit, np.ndarray]:
    """One split decoded as the decoded-image cache is built: scan_dataset lists both split
    folders (so both must exist, with the same classes), decode_scan_into decodes this one.
    Returns what it gives and the stored images of the used files, stacked in file order; every
    used file, and only those, must have been stored once, as a uint8 (height, width, 3) array."""
    scans = dict(zip(("train", "validation"), scan_dataset(data_root)))
    stored: dict[int, np.ndarray] = {}

    def store(index: int, image: np.ndarray) -> None:
        assert index not in stored, f"candidate {index} stored twice"
        assert image.dtype == np.uint8 and image.shape == (*image_size, 3), (image.dtype, image.shape)
        stored[index] = image

    decoded = decode_scan_into(scans[split], store, image_size, workers=workers)
    assert sorted(stored) == decoded.used_indices
    assert len(decoded.files) == len(decoded.used_indices) == len(decoded.labels) == len(decoded.file_digests)
    return decoded, np.stack([stored[index] for index in decoded.used_indices])


def load_dataset(data_root: Path, cache_dir: Path, **options: object) -> DecodedData:
    """Both splits as the study reads them: through a decoded-image cache in `cache_dir`."""
    return load_or_build(data_root, IMAGE_SIZE, cache_dir=cache_dir, log=lambda message: None, **options)


# --------------------------------------------------------------------------
# The full messy data set
# --------------------------------------------------------------------------

CATS_USED = [
    "train/cats/UPPER.JPG",
    "train/cats/cmyk.jpg",
    "train/cats/good.jpg",
    "train/cats/grey.jpg",
    "train/cats/grey16.png",
    "train/cats/image.bmp",
    "train/cats/image.gif",
    "train/cats/image.png",
    "train/cats/rgba.png",
    "train/cats/sub/x.jpg",
] + (["train/cats/image.webp"] if WEBP_AVAILABLE else [])

TRAIN_USED = [f"train/{HTML_CLASS}/a.jpg"] + sorted(CATS_USED) + ["train/chats été/a.jpg", "train/dogs with space/a.png"]
TRAIN_LABELS = [0] + [1] * len(CATS_USED) + [2, 3]

EXPECTED_SKIPPED = {
    "train/.DS_Store": "hidden or system file",
    "train/readme.md": "not inside a class folder",
    "train/cats/.DS_Store": "hidden or system file",
    "train/cats/.hidden.jpg": "hidden file",
    "train/cats/.thumbnails": "hidden folder",
    "train/cats/Thumbs.db": "hidden or system file",
    "train/cats/empty.jpg": "empty file",
    "train/cats/notes.txt": "not an image file extension: .txt",
    "train/cats/noextension": "not an image file extension: (none)",
    "train/cats/text.jpg": "not a readable image",
    "train/cats/tiny.png": "image too small (2x2",
    "train/cats/truncated.jpg": "truncated or corrupt image data",
}


@pytest.fixture(scope="module")
def messy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data root exercising every kind of file the scanner must handle."""
    root = tmp_path_factory.mktemp("messy")
    cats = root / "train" / "cats"
    good = colour_jpeg()
    write(cats / "good.jpg", good)
    big_jpeg = image_bytes(Image.new("RGB", (400, 300), (10, 200, 30)), "JPEG", quality=95)
    write(cats / "truncated.jpg", big_jpeg[: len(big_jpeg) // 2])
    write(cats / "empty.jpg", b"")
    write(cats / "text.jpg", b"this is not an image, just some text\n" * 3)
    write(cats / "notes.txt", b"notes")
    write(cats / "noextension", good)
    write(cats / "image.png", image_bytes(Image.new("RGB", (20, 16), (0, 0, 255)), "PNG"))
    write(cats / "image.gif", palette_gif_with_transparency())
    write(cats / "image.bmp", image_bytes(Image.new("RGB", (20, 16), (0, 255, 0)), "BMP"))
    if WEBP_AVAILABLE:
        write(cats / "image.webp", image_bytes(Image.new("RGB", (20, 16), (255, 255, 0)), "WEBP", lossless=True))
    write(cats / "grey.jpg", image_bytes(Image.new("L", (20, 16), 90), "JPEG"))
    write(cats / "cmyk.jpg", image_bytes(Image.new("CMYK", (20, 16), (0, 255, 255, 0)), "JPEG", quality=95))
    write(cats / "rgba.png", image_bytes(Image.new("RGBA", (20, 16), (255, 0, 0, 128)), "PNG"))
    write(cats / "grey16.png", grey16_png(128 * 257))
    write(cats / "tiny.png", image_bytes(Image.new("RGB", (2, 2), (1, 2, 3)), "PNG"))
    write(cats / ".hidden.jpg", good)
    write(cats / ".DS_Store", b"\x00\x00\x00\x01Bud1")
    write(cats / "Thumbs.db", b"junk")
    write(cats / ".thumbnails" / "t.jpg", good)
    write(cats / "sub" / "x.jpg", good)
    write(cats / "UPPER.JPG", good)
    write(root / "train" / "dogs with space" / "a.png", image_bytes(Image.new("RGB", (30, 30), (9, 9, 9)), "PNG"))
    write(root / "train" / "chats été" / "a.jpg", good)
    write(root / "train" / HTML_CLASS / "a.jpg", good)
    write(root / "train" / ".ipynb_checkpoints" / "a.jpg", good)
    write(root / "train" / ".DS_Store", b"junk")
    write(root / "train" / "readme.md", b"# readme")
    for class_name in ("cats", "dogs with space", "chats été", HTML_CLASS):
        write(root / "validation" / class_name / "v.jpg", good)
    return root


def test_class_folders_sorted_and_hidden_ignored(messy_root: Path) -> None:
    assert list_class_folders(messy_root / "train") == [HTML_CLASS, "cats", "chats été", "dogs with space"]


def check_messy_train_split(split: DecodedSplit | CachedSplit, images: np.ndarray) -> None:
    """The used files, labels and images, and the skipped files with their reasons, of messy_root's train split."""
    assert split.files == TRAIN_USED
    assert split.class_names == [HTML_CLASS, "cats", "chats été", "dogs with space"]
    assert split.labels.tolist() == TRAIN_LABELS
    assert split.labels.dtype == np.int32
    assert images.dtype == np.uint8
    assert images.shape == (len(TRAIN_USED), 16, 20, 3)
    skipped_paths = [item.path for item in split.skipped]
    assert skipped_paths == sorted(EXPECTED_SKIPPED)
    for item in split.skipped:
        assert item.reason.startswith(EXPECTED_SKIPPED[item.path]), item
    assert all(isinstance(item, SkippedFile) for item in split.skipped)


def test_used_and_skipped_files(messy_root: Path) -> None:
    split, images = decode_split(messy_root, "train", workers=4)
    check_messy_train_split(split, images)


def test_the_cache_gives_the_used_and_skipped_files_and_their_pixels(messy_root: Path, tmp_path: Path) -> None:
    """What the study reads (load_or_build, built and then reopened) is what decoding gives:
    the same files and reasons (odd names included), labels and pixels."""
    _, decoded_images = decode_split(messy_root, "train")
    for expect_built in (True, False):
        data = load_dataset(messy_root, tmp_path / "cache")
        assert data.built is expect_built
        check_messy_train_split(data.train, np.asarray(data.train.images))
        np.testing.assert_array_equal(np.asarray(data.train.images), decoded_images)


def test_digests_are_sha256_of_file_bytes(messy_root: Path) -> None:
    split, _ = decode_split(messy_root, "train")
    assert len(split.file_digests) == len(split.files)
    for relative_path, digest in zip(split.files, split.file_digests):
        assert digest == hashlib.sha256((messy_root / relative_path).read_bytes()).hexdigest()


def test_pixel_conversions(messy_root: Path) -> None:
    split, images = decode_split(messy_root, "train")
    by_file = dict(zip(split.files, images))
    rgba = by_file["train/cats/rgba.png"].astype(int)
    assert np.all(np.abs(rgba - np.array([255, 127, 127])) <= 2), "alpha composited onto white"
    grey16 = by_file["train/cats/grey16.png"]
    assert np.all(grey16 == 128)
    grey = by_file["train/cats/grey.jpg"].astype(int)
    assert np.all(np.abs(grey - 90) <= 2)
    cmyk = by_file["train/cats/cmyk.jpg"].astype(int)
    assert cmyk[..., 0].mean() > 200 and cmyk[..., 1].mean() < 60 and cmyk[..., 2].mean() < 60
    gif = by_file["train/cats/image.gif"].astype(int)
    assert np.all(gif[:, :8] == 255), "transparent palette pixels become white"
    assert np.all(gif[:, 12:] == np.array([255, 0, 0])), "first frame only"
    png = by_file["train/cats/image.png"]
    assert np.all(png == np.array([0, 0, 255]))
    if WEBP_AVAILABLE:
        assert np.all(by_file["train/cats/image.webp"] == np.array([255, 255, 0]))


def test_deterministic_and_worker_independent(messy_root: Path) -> None:
    first, first_images = decode_split(messy_root, "train", workers=1)
    second, second_images = decode_split(messy_root, "train", workers=4)
    assert first.files == second.files
    assert first.skipped == second.skipped
    assert first.file_digests == second.file_digests
    assert np.array_equal(first_images, second_images)
    assert np.array_equal(first.labels, second.labels)


def test_folder_unchanged(messy_root: Path, tmp_path: Path) -> None:
    before = snapshot(messy_root)
    load_dataset(messy_root, tmp_path / "cache")
    assert snapshot(messy_root) == before


def test_both_splits_and_progress_over_both(messy_root: Path, tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    data = load_dataset(messy_root, tmp_path / "cache", progress=lambda done, total: calls.append((done, total)))
    assert data.train.class_names == data.validation.class_names == data.class_names
    assert data.validation.images.shape == (4, 16, 20, 3)
    assert data.validation.labels.tolist() == [0, 1, 2, 3]
    train_scan, validation_scan = scan_dataset(messy_root)
    total = len(train_scan.candidates) + len(validation_scan.candidates)
    assert calls and calls[-1] == (total, total), "progress counts the candidates of both splits"
    assert all(reported_total == total for _, reported_total in calls)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert (len(train_scan.candidates), total) in calls, "the train split ends where the validation split starts"


def test_hashing_and_decoding_read_the_same_bytes(messy_root: Path) -> None:
    """read_digests (the cache key's pass) and decode_scan_into (the build's pass) agree: per
    candidate the sha256 of its bytes (None where it cannot be read), and for the used files
    the digests the fingerprint is computed from."""
    train_scan, _ = scan_dataset(messy_root)
    digests = images_module.read_digests(train_scan.candidates, workers=2)
    decoded = decode_scan_into(train_scan, lambda index, image: None, IMAGE_SIZE, workers=2)
    assert decoded.read_digests == [outcome.digest for outcome in digests]
    for candidate, outcome in zip(train_scan.candidates, digests):
        assert outcome.digest == hashlib.sha256(candidate.absolute_path.read_bytes()).hexdigest(), candidate
    by_path = {candidate.relative_path: outcome.digest for candidate, outcome in zip(train_scan.candidates, digests)}
    assert [by_path[file] for file in decoded.files] == decoded.file_digests


def test_decode_settings_name_what_decides_the_pixels() -> None:
    settings = images_module.decode_settings(IMAGE_SIZE)
    assert settings["image_size"] == [16, 20] and settings["pillow"] == Image.__version__
    assert settings["rules_version"] == images_module.DECODE_RULES_VERSION
    assert images_module.decode_settings((20, 16)) != settings


def test_summarize_skipped() -> None:
    skipped = [
        SkippedFile("a", "empty file"),
        SkippedFile("b", "empty file"),
        SkippedFile("c", "not a readable image (cannot identify)"),
        SkippedFile("d", "not an image file extension: .txt"),
    ]
    line = summarize_skipped(skipped)
    assert line == "4 files skipped: 2 empty file, 1 not a readable image, 1 not an image file extension"
    assert "\n" not in line
    assert summarize_skipped([]) == "no files skipped"


# --------------------------------------------------------------------------
# Single-file decoding
# --------------------------------------------------------------------------


def test_exif_orientation_applied() -> None:
    raw = np.zeros((10, 20, 3), dtype=np.uint8)
    raw[:, 10:] = 255  # left half black, right half white
    image = Image.fromarray(raw)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    array = decode_image_bytes(image_bytes(image, "JPEG", exif=exif.tobytes(), quality=95), (20, 10))
    assert array.shape == (20, 10, 3)
    assert array[:8].mean() < 30 and array[12:].mean() > 225


def test_large_jpeg_uses_draft_and_stays_correct() -> None:
    raw = np.zeros((480, 640, 3), dtype=np.uint8)
    raw[:, :320] = (250, 0, 0)
    raw[:, 320:] = (0, 0, 250)
    array = decode_image_bytes(image_bytes(Image.fromarray(raw), "JPEG", quality=95), IMAGE_SIZE).astype(int)
    assert array.shape == (16, 20, 3)
    assert np.all(np.abs(array[:, :8] - np.array([250, 0, 0])) <= 6)
    assert np.all(np.abs(array[:, 12:] - np.array([0, 0, 250])) <= 6)


def test_other_modes_convert_to_rgb() -> None:
    float_image = Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32), mode="F")
    assert np.all(np.asarray(convert_to_rgb(float_image)) == 128)
    wide = Image.fromarray(np.full((4, 4), 65535, dtype=np.int32), mode="I")
    assert np.all(np.asarray(convert_to_rgb(wide)) == 255)
    la = Image.new("LA", (4, 4), (0, 0))
    assert np.all(np.asarray(convert_to_rgb(la)) == 255)
    bilevel = Image.new("1", (4, 4), 1)
    assert np.all(np.asarray(convert_to_rgb(bilevel)) == 255)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("pixel_limit", [100, 200])
def test_decompression_bomb_is_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pixel_limit: int) -> None:
    # 20x16 = 320 pixels: over twice 100 (PIL error) and between 200 and 400 (PIL warning).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pixel_limit)
    bomb = image_bytes(Image.new("RGB", (20, 16)), "PNG")
    with pytest.raises(UnusableImage, match="image too large"):
        decode_image_bytes(bomb, IMAGE_SIZE)
    # in a split it is listed as skipped with that reason; the 8x8 images (64 pixels) are used
    for split_name in ("train", "validation"):
        for class_name in ("cats", "dogs"):
            write(tmp_path / split_name / class_name / "a.jpg", colour_jpeg(size=(8, 8)))
    write(tmp_path / "train" / "cats" / "bomb.png", bomb)
    split, _ = decode_split(tmp_path, "train")
    assert split.files == ["train/cats/a.jpg", "train/dogs/a.jpg"]
    assert [item.path for item in split.skipped] == ["train/cats/bomb.png"]
    assert split.skipped[0].reason.startswith("image too large")


def test_unreadable_special_files_are_skipped(tmp_path: Path) -> None:
    make_two_class_split(tmp_path, "train")
    make_two_class_split(tmp_path, "validation")
    (tmp_path / "train" / "cats" / "broken.jpg").symlink_to(tmp_path / "missing.jpg")
    split, _ = decode_split(tmp_path, "train")
    assert split.files == ["train/cats/a.jpg", "train/dogs/a.jpg"]
    assert split.skipped[0].path == "train/cats/broken.jpg"
    assert split.skipped[0].reason.startswith("could not read file")


def test_a_linked_class_folder_is_skipped_like_other_linked_folders(tmp_path: Path) -> None:
    """A class folder that is a symbolic link is not followed (one pointing at /usr would be
    scanned whole); it is listed among the skipped entries, as linked sub-folders are."""
    make_two_class_split(tmp_path, "train")
    make_two_class_split(tmp_path, "validation")
    outside = tmp_path / "elsewhere"
    write(outside / "birds" / "b.jpg", colour_jpeg())
    (tmp_path / "train" / "birds").symlink_to(outside / "birds", target_is_directory=True)
    (tmp_path / "train" / "system").symlink_to("/usr", target_is_directory=True)
    (tmp_path / "train" / "cats" / "nested").symlink_to(outside / "birds", target_is_directory=True)
    (tmp_path / "train" / ".hidden-link").symlink_to(outside / "birds", target_is_directory=True)
    assert list_class_folders(tmp_path / "train") == ["cats", "dogs"]
    split, _ = decode_split(tmp_path, "train")
    assert split.class_names == ["cats", "dogs"]
    assert split.files == ["train/cats/a.jpg", "train/dogs/a.jpg"]
    linked = "link to a folder (not followed)"
    assert SkippedFile("train/birds", linked) in split.skipped
    assert SkippedFile("train/system", linked) in split.skipped
    assert SkippedFile("train/cats/nested", linked) in split.skipped
    assert not any("hidden-link" in item.path for item in split.skipped)


def test_a_linked_split_folder_is_still_read(tmp_path: Path) -> None:
    """The split folders themselves (and the data root) may be links."""
    real = tmp_path / "real"
    make_two_class_split(real, "train")
    make_two_class_split(real, "validation")
    root = tmp_path / "root"
    root.mkdir()
    (root / "train").symlink_to(real / "train", target_is_directory=True)
    (root / "validation").symlink_to(real / "validation", target_is_directory=True)
    linked_root = tmp_path / "linked-root"
    linked_root.symlink_to(root, target_is_directory=True)
    data = load_dataset(linked_root, tmp_path / "cache")
    assert data.train.files == ["train/cats/a.jpg", "train/dogs/a.jpg"] and len(data.validation.files) == 2


def test_a_linked_second_class_folder_leaves_one_class(tmp_path: Path) -> None:
    write(tmp_path / "train" / "cats" / "a.jpg", colour_jpeg())
    write(tmp_path / "elsewhere" / "dogs" / "a.jpg", colour_jpeg())
    (tmp_path / "train" / "dogs").symlink_to(tmp_path / "elsewhere" / "dogs", target_is_directory=True)
    make_two_class_split(tmp_path, "validation")
    expect_data_error(
        load_dataset, tmp_path, tmp_path / "cache",
        naming=[str(tmp_path / "train"), "only one class folder 'cats'", "links to folders are not followed: 'dogs'"],
    )


def test_a_class_linked_in_one_split_only_is_named(tmp_path: Path) -> None:
    make_two_class_split(tmp_path, "train", ("birds", "cats", "dogs"))
    make_two_class_split(tmp_path, "validation", ("cats", "dogs"))
    write(tmp_path / "elsewhere" / "birds" / "a.jpg", colour_jpeg())
    (tmp_path / "validation" / "birds").symlink_to(tmp_path / "elsewhere" / "birds", target_is_directory=True)
    expect_data_error(
        load_dataset, tmp_path, tmp_path / "cache",
        naming=[str(tmp_path / "validation"), "'birds'", "links to folders are not followed"],
    )


# --------------------------------------------------------------------------
# Errors that stop the study
# --------------------------------------------------------------------------


def expect_data_error(function, *arguments, naming: list[str]) -> str:
    """Call and check a DataError is raised whose one-line message names each text."""
    with pytest.raises(DataError) as caught:
        function(*arguments)
    message = str(caught.value)
    assert "\n" not in message
    for text in naming:
        assert text in message, (text, message)
    return message


def test_missing_root(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    expect_data_error(load_dataset, missing, tmp_path / "cache", naming=[str(missing), "does not exist"])


def test_root_is_a_file(tmp_path: Path) -> None:
    file_path = write(tmp_path / "data.zip", b"zip")
    expect_data_error(load_dataset, file_path, tmp_path / "cache", naming=[str(file_path), "not a folder"])


def test_missing_validation(tmp_path: Path) -> None:
    make_two_class_split(tmp_path, "train")
    expect_data_error(
        load_dataset, tmp_path, tmp_path / "cache", naming=[str(tmp_path), "no 'validation' folder", "/train/<class>/"]
    )


def test_no_class_folders(tmp_path: Path) -> None:
    write(tmp_path / "train" / "loose.jpg", colour_jpeg())
    (tmp_path / "train" / ".ipynb_checkpoints").mkdir()
    make_two_class_split(tmp_path, "validation")
    expect_data_error(
        load_dataset, tmp_path, tmp_path / "cache", naming=[str(tmp_path / "train"), "no class folders"]
    )


def test_one_class_folder(tmp_path: Path) -> None:
    write(tmp_path / "train" / "cats" / "a.jpg", colour_jpeg())
    make_two_class_split(tmp_path, "validation")
    expect_data_error(
        load_dataset, tmp_path, tmp_path / "cache",
        naming=[str(tmp_path / "train"), "only one class folder 'cats'", "two or more"],
    )


def test_empty_class(tmp_path: Path) -> None:
    make_two_class_split(tmp_path, "train")
    write(tmp_path / "train" / "birds" / "notes.txt", b"no images here")
    make_two_class_split(tmp_path, "validation", ("birds", "cats", "dogs"))
    expect_data_error(
        load_dataset, tmp_path, tmp_path / "cache",
        naming=[str(tmp_path / "train" / "birds"), "no usable images", "cannot be learned"],
    )


def test_class_whose_images_all_fail_to_decode(tmp_path: Path) -> None:
    """Found only by decoding: the study stops, and the cache holds nothing of it."""
    make_two_class_split(tmp_path, "train")
    write(tmp_path / "train" / "birds" / "broken.jpg", b"not really a jpeg")
    make_two_class_split(tmp_path, "validation", ("birds", "cats", "dogs"))
    expect_data_error(
        decode_split, tmp_path, "train", naming=[str(tmp_path / "train" / "birds"), "no usable images"]
    )
    expect_data_error(
        load_dataset, tmp_path, tmp_path / "cache", naming=[str(tmp_path / "train" / "birds"), "no usable images"]
    )
    assert [path.name for path in (tmp_path / "cache" / "decoded").iterdir() if not path.name.endswith(".lock")] == []


def test_mismatched_classes(tmp_path: Path) -> None:
    make_two_class_split(tmp_path, "train", ("cats", "dogs"))
    make_two_class_split(tmp_path, "validation", ("birds", "cats"))
    expect_data_error(
        load_dataset, tmp_path, tmp_path / "cache",
        naming=[str(tmp_path / "train"), str(tmp_path / "validation"), "'dogs'", "'birds'"],
    )


def test_no_usable_images(tmp_path: Path) -> None:
    for class_name in ("cats", "dogs"):
        write(tmp_path / "train" / class_name / "empty.jpg", b"")
    make_two_class_split(tmp_path, "validation")
    expect_data_error(decode_split, tmp_path, "train", naming=[str(tmp_path / "train"), "no usable images"])
    expect_data_error(load_dataset, tmp_path, tmp_path / "cache", naming=[str(tmp_path / "train"), "no usable images"])


def test_bad_arguments(tmp_path: Path) -> None:
    make_two_class_split(tmp_path, "train")
    make_two_class_split(tmp_path, "validation")
    train_scan, _ = scan_dataset(tmp_path)
    for image_size, workers, named in (
        ((0, 10), None, "image_size"), ((16,), None, "image_size"), (IMAGE_SIZE, 0, "workers must be at least 1")
    ):
        with pytest.raises(ValueError, match=named):
            decode_scan_into(train_scan, lambda index, image: None, image_size, workers=workers)
        with pytest.raises(ValueError, match=named):
            load_or_build(tmp_path, image_size, workers=workers, cache_dir=tmp_path / "cache")


# --------------------------------------------------------------------------
# Random bytes never crash the reader
# --------------------------------------------------------------------------

PREFIXES = [
    b"",
    colour_jpeg()[:20],
    colour_jpeg()[:200],
    image_bytes(Image.new("RGB", (20, 16)), "PNG")[:40],
    b"GIF89a\x14\x00\x10\x00",
    b"BM",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ",
]


@pytest.fixture(scope="module")
def random_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two good classes; each example overwrites cats/random.jpg."""
    root = tmp_path_factory.mktemp("random")
    make_two_class_split(root, "train")
    make_two_class_split(root, "validation")
    return root


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prefix=st.sampled_from(PREFIXES), body=st.binary(max_size=400))
def test_random_bytes_are_used_or_skipped(random_root: Path, prefix: bytes, body: bytes) -> None:
    write(random_root / "train" / "cats" / "random.jpg", prefix + body)
    split, images = decode_split(random_root, "train", workers=2)
    used = "train/cats/random.jpg" in split.files
    skipped = [item for item in split.skipped if item.path == "train/cats/random.jpg"]
    assert used != bool(skipped)
    assert images.shape == (len(split.files), 16, 20, 3)


def test_module_has_no_tensorflow_import() -> None:
    source = Path(images_module.__file__).read_text(encoding="utf-8")
    assert "tensorflow" not in source
