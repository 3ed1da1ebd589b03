"""Robust scanning and one-time decoding of user image folders.

A data root is laid out as ``<root>/train/<class>/...`` and
``<root>/validation/<class>/...``; class names are the sub-folder names.
:func:`scan_dataset` lists both split folders, :func:`read_digests` hashes the
files, and :func:`decode_scan_into` decodes every usable file once with PIL
into a ``uint8`` RGB array of the target size, handing each image to the
caller's store (experiments.data.cache writes them into a decoded-image cache
on disk, keyed by the files' digests and :func:`decode_settings`; that cache is
the only way the study reads images).  Files that cannot be used are never
fatal: they are skipped and listed with a reason.  Problems that make a
study impossible (missing folders, fewer than two classes, a class with no
usable images, differing class sets) raise :class:`DataError`, whose message
is one sentence naming the folder, meant to be printed without a traceback.

Decoding rules (documented choices):

* Accepted extensions (case-insensitive): .jpg .jpeg .png .gif .bmp .webp.
  The content must also decode as JPEG, PNG, GIF, BMP or WebP.
* Truncated images are rejected: PIL's ``ImageFile.LOAD_TRUNCATED_IMAGES`` is
  never changed by this module (its default, False, makes PIL raise).
* Images with a side shorter than ``MINIMUM_IMAGE_SIDE`` (4) pixels are
  skipped; anything larger is resized (up or down) to the target size.
* Images over PIL's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``)
  are skipped.  Files over ``MAXIMUM_FILE_BYTES`` are skipped unread.
* EXIF orientation is applied.  Animated GIF/WebP use their first frame.
* Transparency (RGBA, LA, palette with transparency) is composited onto a
  white background instead of dropping the alpha channel, so transparent
  areas become white rather than whatever colour the hidden pixels hold.
* 16/32-bit greyscale ("I;16", "I") is scaled from the 0..65535 range to
  0..255; float greyscale ("F") is scaled by 255 when its values lie within
  0..1 and clipped to 0..255 otherwise.
* Resizing ignores the aspect ratio and uses bilinear resampling, like
  keras ``image_dataset_from_directory``.  Large JPEGs are first reduced by
  the decoder (``Image.draft``, powers of two, never below the target size).

Symbolic links to folders are never followed, whether inside a class folder or
as a class folder (a link to /usr would be scanned whole); they are listed as
skipped.  The data root and the split folders themselves may be links.

The user's folder is only ever opened for reading.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from experiments.artifacts.files import file_sha256
from experiments.console import ProgressCallback  # the callback protocol (experiments.data.cache imports it from here)
from experiments.errors import DataError

ACCEPTED_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp")
Image.init()  # register every PIL plugin so the format list below can be checked
ACCEPTED_PIL_FORMATS = tuple(
    name for name in ("JPEG", "MPO", "PNG", "GIF", "BMP", "DIB", "WEBP") if name in Image.OPEN
)
SYSTEM_FILE_NAMES = frozenset({".ds_store", "thumbs.db", "ehthumbs.db", "desktop.ini"})
MINIMUM_IMAGE_SIDE = 4
MAXIMUM_FILE_BYTES = 256 * 1024 * 1024
PROGRESS_EVERY = 50
IN_FLIGHT_PER_WORKER = 4  # files queued per decoding thread
SPLIT_NAMES = ("train", "validation")
ROTATING_EXIF_ORIENTATIONS = frozenset({5, 6, 7, 8})
# Part of every decoded-image cache's key (experiments.data.cache): bump it when a decoding rule changes.
DECODE_RULES_VERSION = 1
EXIF_ORIENTATION_TAG = 0x0112

# Symlinked folders are never followed (one pointing at /usr would be scanned whole): not in a
# class folder, and not as a class folder either.  They are listed with this reason.
LINKED_FOLDER_REASON = "link to a folder (not followed)"




class UnusableImage(Exception):
    """Internal: one file cannot be used; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class SkippedFile:
    """A file (or hidden folder) that was not used, relative to the data root."""

    path: str
    reason: str


@dataclass
class DecodedSplit:
    """What decoding one split's candidates gave, without the pixels (see decode_scan_into)."""

    class_names: list[str]
    used_indices: list[int]  # candidate indices of the used images, in file order
    labels: np.ndarray
    files: list[str]
    skipped: list[SkippedFile]  # the scan's and the decoding's, sorted by path
    file_digests: list[str]
    read_digests: list[str | None]  # per candidate: sha256 of the bytes decoded, None if unreadable


@dataclass(frozen=True)
class _Candidate:
    """A file that looks like an image and will be decoded."""

    relative_path: str
    absolute_path: Path
    label: int


@dataclass
class _SplitScan:
    """The result of listing one split folder, before any decoding."""

    split_dir: Path
    class_names: list[str]
    candidates: list[_Candidate] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)


@dataclass(frozen=True)
class _DecodeOutcome:
    """What decoding one candidate produced: a digest, or a skip reason."""

    digest: str | None
    skip_reason: str | None
    read_digest: str | None = None  # sha256 of the bytes read, even when they did not decode


# --------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------


def list_class_folders(split_dir: Path) -> list[str]:
    """Return the sorted names of the non-hidden sub-folders of ``split_dir``.

    Hidden folders (name starting with '.') such as ``.ipynb_checkpoints`` are
    not classes and are ignored, and so are symbolic links to folders (never
    followed, like linked folders inside a class folder; the scan lists them
    as skipped).  ``split_dir`` itself may be a link.  Raises DataError if
    ``split_dir`` is not a folder or a folder name is not valid UTF-8.
    """
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise DataError(f"'{split_dir}' is not a folder.")
    class_names = []
    for entry in _sorted_entries(split_dir):
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        if not _is_valid_utf8(entry.name):
            raise DataError(
                f"Class folder '{_printable(entry.path)}' has a name that is not valid UTF-8; "
                "please rename it."
            )
        class_names.append(entry.name)
    return class_names


def scan_dataset(data_root: Path) -> tuple[_SplitScan, _SplitScan]:
    """List the train and validation folders (nothing is read or decoded) and check that their
    class sets match. Returns the two scans: ``class_names``, ``candidates`` (the files that will
    be read, sorted by path; each has ``relative_path``, ``absolute_path`` and ``label``) and
    ``skipped`` (what the listing alone rules out)."""
    data_root = _checked_data_root(data_root)
    train_scan = _scan_split(data_root, "train")
    validation_scan = _scan_split(data_root, "validation")
    _check_same_classes(train_scan, validation_scan)
    return train_scan, validation_scan


def decode_settings(image_size: tuple[int, int]) -> dict[str, object]:
    """Everything that decides the decoded pixels besides the files' bytes: a decoded-image
    cache built with other settings is not reused. Bump DECODE_RULES_VERSION when a rule in this
    module's docstring changes."""
    height, width = _checked_image_size(image_size)
    return {
        "image_size": [height, width],
        "rules_version": DECODE_RULES_VERSION,
        "pillow": Image.__version__,
        "resample": "bilinear",
        "minimum_side": MINIMUM_IMAGE_SIDE,
        "maximum_file_bytes": MAXIMUM_FILE_BYTES,
        "maximum_pixels": Image.MAX_IMAGE_PIXELS,
        "formats": list(ACCEPTED_PIL_FORMATS),
        "extensions": list(ACCEPTED_EXTENSIONS),
    }


def read_digests(candidates: list[_Candidate], workers: int | None = None) -> list[_DecodeOutcome]:
    """Read and hash every candidate (no decoding), in candidate order, on a thread pool:
    ``digest`` is the sha256 of the file's bytes, or None with ``skip_reason`` when the file
    cannot be read (not a regular file, too large, an I/O error)."""
    worker_count = _checked_worker_count(workers)

    def digest_of(candidate: _Candidate) -> _DecodeOutcome:
        try:
            return _DecodeOutcome(digest=_sha256_of_file(candidate.absolute_path), skip_reason=None)
        except UnusableImage as problem:
            return _DecodeOutcome(digest=None, skip_reason=problem.reason)

    outcomes: list[_DecodeOutcome] = []
    chunk = 256 * worker_count  # executor.map queues a whole chunk at once: keep that bounded
    with ThreadPoolExecutor(max_workers=worker_count, thread_name_prefix="image-digest") as executor:
        for start in range(0, len(candidates), chunk):
            outcomes.extend(executor.map(digest_of, candidates[start : start + chunk]))
    return outcomes


def decode_scan_into(
    scan: _SplitScan,
    store: Callable[[int, np.ndarray], None],
    image_size: tuple[int, int],
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    progress_offset: int = 0,
    progress_total: int | None = None,
) -> DecodedSplit:
    """Decode every candidate of ``scan`` on a thread pool, handing each image to
    ``store(candidate_index, uint8 array)`` (threads call it concurrently, each with its own
    index), and return what was used and skipped. Raises DataError when a class is left with no
    usable image. The caller keeps the rows of ``used_indices``, in that order."""
    height, width = _checked_image_size(image_size)
    worker_count = _checked_worker_count(workers)
    total = len(scan.candidates) if progress_total is None else progress_total
    outcomes = _decode_all(scan.candidates, store, (height, width), worker_count, progress, progress_offset, total)
    return _decoded_split(scan, outcomes)


def decode_image_bytes(image_bytes: bytes, image_size: tuple[int, int]) -> np.ndarray:
    """Decode image bytes to a uint8 RGB array of shape (height, width, 3).

    Raises UnusableImage(reason) when the bytes are not a usable image.
    """
    height, width = image_size
    if not image_bytes:
        raise UnusableImage("empty file")
    image = _open_image(image_bytes)
    original_width, original_height = image.size
    _check_pixel_count(original_width, original_height)
    if min(original_width, original_height) < MINIMUM_IMAGE_SIDE:
        raise UnusableImage(
            f"image too small ({original_width}x{original_height}; "
            f"each side must be at least {MINIMUM_IMAGE_SIDE} pixels)"
        )
    _reduce_large_jpeg(image, width, height)
    _load_pixels(image)
    try:
        image = _apply_exif_orientation(image)
        rgb_image = convert_to_rgb(image)
        resized = rgb_image.resize((width, height), Image.Resampling.BILINEAR)
        return np.asarray(resized, dtype=np.uint8).reshape(height, width, 3)
    except UnusableImage:
        raise
    except Exception as error:  # PIL raises many types on odd files
        raise UnusableImage(f"truncated or corrupt image data ({_describe(error)})") from error


def convert_to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB, compositing transparency onto white."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        return _wide_greyscale_to_rgb(image, scale_maximum=65535.0)
    if image.mode == "F":
        return _float_greyscale_to_rgb(image)
    if image.has_transparency_data:
        return _composite_on_white(image)
    if image.mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except ValueError as error:
        raise UnusableImage(f"unsupported colour mode {image.mode}") from error


def summarize_skipped(skipped: list[SkippedFile]) -> str:
    """One console line counting skipped files by kind of reason.

    The kind is the reason without its details (text from the first ' (' or
    ':' on), e.g. "4 files skipped: 2 empty file, 1 hidden file, ...".
    """
    if not skipped:
        return "no files skipped"
    counts = Counter(_reason_kind(item.reason) for item in skipped)
    ordered = sorted(counts.items(), key=lambda pair: (-pair[1], pair[0]))
    parts = [f"{count} {kind}" for kind, count in ordered]
    noun = "file" if len(skipped) == 1 else "files"
    return f"{len(skipped)} {noun} skipped: " + ", ".join(parts)


# --------------------------------------------------------------------------
# Scanning
# --------------------------------------------------------------------------


def _checked_image_size(image_size: tuple[int, int]) -> tuple[int, int]:
    """Validate (height, width) as two positive integers."""
    try:
        height, width = (int(value) for value in image_size)
    except (TypeError, ValueError) as error:
        raise ValueError(f"image_size must be (height, width), got {image_size!r}") from error
    if height <= 0 or width <= 0:
        raise ValueError(f"image_size must be two positive integers, got {image_size!r}")
    return height, width


def _checked_worker_count(workers: int | None) -> int:
    """Default to min(8, the CPUs this process may use); require at least one worker."""
    if workers is None:
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return min(8, usable or 1)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    return workers


def _checked_data_root(data_root: Path) -> Path:
    """Ensure the data root exists and is a folder."""
    data_root = Path(data_root)
    if not data_root.exists():
        raise DataError(f"Data folder '{data_root}' does not exist.")
    if not data_root.is_dir():
        raise DataError(f"Data folder '{data_root}' is not a folder.")
    return data_root


def _scan_split(data_root: Path, split: str) -> _SplitScan:
    """List the class folders and candidate files of one split (no decoding)."""
    split_dir = data_root / split
    if not split_dir.is_dir():
        expected = " and ".join(f"{data_root}/{name}/<class>/" for name in SPLIT_NAMES)
        raise DataError(f"Data folder '{data_root}' has no '{split}' folder; expected {expected}.")
    class_names = list_class_folders(split_dir)
    loose = _loose_files_in_split(data_root, split_dir)
    linked_note = _linked_folders_note([item for item in loose if item.reason == LINKED_FOLDER_REASON])
    if not class_names:
        raise DataError(
            f"Folder '{split_dir}' has no class folders{linked_note}; put each class's images in "
            f"'{split_dir}/<class name>/'."
        )
    if len(class_names) == 1:
        raise DataError(
            f"Folder '{split_dir}' has only one class folder '{class_names[0]}'{linked_note}; "
            "a study needs two or more."
        )
    scan = _SplitScan(split_dir=split_dir, class_names=class_names)
    scan.skipped.extend(loose)
    for label, class_name in enumerate(class_names):
        candidates, skipped = _scan_class_folder(data_root, split_dir / class_name, label)
        scan.candidates.extend(candidates)
        scan.skipped.extend(skipped)
    scan.skipped.sort(key=lambda item: item.path)
    _check_every_class_has_images(scan, Counter(candidate.label for candidate in scan.candidates))
    return scan


def _loose_files_in_split(data_root: Path, split_dir: Path) -> list[SkippedFile]:
    """Files lying directly in the split folder belong to no class, and links to folders are
    not followed (hidden ones are ignored, like hidden folders); list them."""
    skipped = []
    for entry in _sorted_entries(split_dir):
        if entry.is_dir(follow_symlinks=False):
            continue
        relative_path = _relative_posix(data_root, entry.path)
        if entry.is_dir():  # a symbolic link to a folder
            if not entry.name.startswith("."):
                skipped.append(SkippedFile(relative_path, LINKED_FOLDER_REASON))
            continue
        reason = _hidden_reason(entry.name) or "not inside a class folder"
        skipped.append(SkippedFile(relative_path, reason))
    return skipped


def _linked_folders_note(linked: list[SkippedFile]) -> str:
    """' (links to folders are not followed: 'a', 'b')' for error messages, or ''."""
    if not linked:
        return ""
    names = [item.path.rsplit("/", 1)[-1] for item in linked]
    return f" (links to folders are not followed: {_quoted(names)})"


def _scan_class_folder(
    data_root: Path, class_dir: Path, label: int
) -> tuple[list[_Candidate], list[SkippedFile]]:
    """Walk a class folder recursively; return candidates sorted by path and skips."""
    candidates: list[_Candidate] = []
    skipped: list[SkippedFile] = []
    for directory, folder_names, file_names in os.walk(class_dir, followlinks=False):
        for folder_name in sorted(folder_names):
            folder_path = os.path.join(directory, folder_name)
            if folder_name.startswith("."):
                skipped.append(SkippedFile(_relative_posix(data_root, folder_path), "hidden folder"))
            elif os.path.islink(folder_path):
                skipped.append(SkippedFile(_relative_posix(data_root, folder_path), LINKED_FOLDER_REASON))
        folder_names[:] = sorted(
            name
            for name in folder_names
            if not name.startswith(".") and not os.path.islink(os.path.join(directory, name))
        )
        for file_name in file_names:
            file_path = os.path.join(directory, file_name)
            relative_path = _relative_posix(data_root, file_path)
            reason = _file_name_problem(file_name)
            if reason is None:
                candidates.append(_Candidate(relative_path, Path(file_path), label))
            else:
                skipped.append(SkippedFile(relative_path, reason))
    candidates.sort(key=lambda candidate: candidate.relative_path)
    return candidates, skipped


def _file_name_problem(file_name: str) -> str | None:
    """Why a file is skipped judging by its name alone, or None if it may be an image."""
    hidden_reason = _hidden_reason(file_name)
    if hidden_reason is not None:
        return hidden_reason
    if not _is_valid_utf8(file_name):
        return "file name is not valid UTF-8"
    extension = os.path.splitext(file_name)[1].lower()
    if extension not in ACCEPTED_EXTENSIONS:
        return f"not an image file extension: {extension or '(none)'}"
    return None


def _hidden_reason(file_name: str) -> str | None:
    """Reason for hidden and OS junk files, or None for ordinary names."""
    if file_name.lower() in SYSTEM_FILE_NAMES:
        return "hidden or system file"
    if file_name.startswith("."):
        return "hidden file"
    return None


def _check_every_class_has_images(scan: _SplitScan, counts_by_label: Counter[int]) -> None:
    """Raise DataError when the split or one of its classes has no usable images."""
    if sum(counts_by_label.values()) == 0:
        raise DataError(
            f"Folder '{scan.split_dir}' contains no usable images ({summarize_skipped(scan.skipped)})."
        )
    empty_classes = [
        class_name for label, class_name in enumerate(scan.class_names) if counts_by_label[label] == 0
    ]
    if len(empty_classes) == 1:
        raise DataError(
            f"Class folder '{scan.split_dir / empty_classes[0]}' has no usable images, and a class "
            "with zero images cannot be learned; add images or remove the folder."
        )
    if empty_classes:
        names = ", ".join(f"'{name}'" for name in empty_classes)
        raise DataError(
            f"Class folders {names} in '{scan.split_dir}' have no usable images, and a class "
            "with zero images cannot be learned; add images or remove those folders."
        )


def _check_same_classes(train_scan: _SplitScan, validation_scan: _SplitScan) -> None:
    """Raise DataError naming the classes missing from either split."""
    train_classes = set(train_scan.class_names)
    validation_classes = set(validation_scan.class_names)
    if train_classes == validation_classes:
        return
    problems = []
    missing_from_validation = sorted(train_classes - validation_classes)
    missing_from_train = sorted(validation_classes - train_classes)
    if missing_from_validation:
        problems.append(
            f"missing from '{validation_scan.split_dir}': {_quoted(missing_from_validation)}"
            + _linked_folders_note(_linked_among(validation_scan, missing_from_validation))
        )
    if missing_from_train:
        problems.append(
            f"missing from '{train_scan.split_dir}': {_quoted(missing_from_train)}"
            + _linked_folders_note(_linked_among(train_scan, missing_from_train))
        )
    raise DataError(
        f"The class folders of '{train_scan.split_dir}' and '{validation_scan.split_dir}' differ ("
        + "; ".join(problems)
        + ")."
    )


def _linked_among(scan: _SplitScan, names: list[str]) -> list[SkippedFile]:
    """The skipped links to folders directly in the scan's split folder named in `names`."""
    return [
        item
        for item in scan.skipped
        if item.reason == LINKED_FOLDER_REASON
        and item.path.count("/") == 1
        and item.path.rsplit("/", 1)[-1] in names
    ]


# --------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------


def _decoded_split(scan: _SplitScan, outcomes: list[_DecodeOutcome]) -> DecodedSplit:
    """Sort the outcomes into used and skipped files; DataError if a class has no usable image."""
    candidates = scan.candidates
    used_indices = [index for index, outcome in enumerate(outcomes) if outcome.digest is not None]
    skipped = list(scan.skipped)
    skipped.extend(
        SkippedFile(candidates[index].relative_path, outcome.skip_reason)
        for index, outcome in enumerate(outcomes)
        if outcome.skip_reason is not None
    )
    skipped.sort(key=lambda item: item.path)
    scan_after_decoding = _SplitScan(scan.split_dir, scan.class_names, skipped=skipped)
    _check_every_class_has_images(
        scan_after_decoding, Counter(candidates[index].label for index in used_indices)
    )
    return DecodedSplit(
        class_names=list(scan.class_names),
        used_indices=used_indices,
        labels=np.array([candidates[index].label for index in used_indices], dtype=np.int32),
        files=[candidates[index].relative_path for index in used_indices],
        skipped=skipped,
        file_digests=[outcomes[index].digest for index in used_indices],
        read_digests=[outcome.read_digest for outcome in outcomes],
    )


def _decode_all(
    candidates: list[_Candidate],
    store: Callable[[int, np.ndarray], None],
    image_size: tuple[int, int],
    worker_count: int,
    progress: ProgressCallback | None,
    progress_offset: int,
    progress_total: int,
) -> list[_DecodeOutcome]:
    """Run the decoding on a thread pool; outcomes come back in candidate order. At most a few
    files per thread are in flight, so memory does not grow with the number of files."""
    outcomes: list[_DecodeOutcome | None] = [None] * len(candidates)
    executor = ThreadPoolExecutor(max_workers=worker_count, thread_name_prefix="image-decode")
    window = IN_FLIGHT_PER_WORKER * worker_count
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            pending: dict[Future[_DecodeOutcome], int] = {}
            next_index = done_count = 0
            while next_index < len(candidates) or pending:
                while next_index < len(candidates) and len(pending) < window:
                    future = executor.submit(_decode_into, candidates[next_index], store, next_index, image_size)
                    pending[future] = next_index
                    next_index += 1
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    outcomes[pending.pop(future)] = future.result()
                    done_count += 1
                    is_report_due = done_count % PROGRESS_EVERY == 0 or done_count == len(candidates)
                    if progress is not None and is_report_due:
                        progress(progress_offset + done_count, progress_total)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    return [outcome for outcome in outcomes if outcome is not None]


def _decode_into(
    candidate: _Candidate, store: Callable[[int, np.ndarray], None], index: int, image_size: tuple[int, int]
) -> _DecodeOutcome:
    """Read, hash and decode one file, and hand the image to ``store(index, image)``."""
    try:
        image_bytes = _read_file_bytes(candidate.absolute_path)
    except UnusableImage as problem:
        return _DecodeOutcome(digest=None, skip_reason=problem.reason)
    digest = hashlib.sha256(image_bytes).hexdigest()
    try:
        store(index, decode_image_bytes(image_bytes, image_size))
    except UnusableImage as problem:
        return _DecodeOutcome(digest=None, skip_reason=problem.reason, read_digest=digest)
    return _DecodeOutcome(digest=digest, skip_reason=None, read_digest=digest)


def _check_regular_file(path: Path) -> None:
    """Raise UnusableImage unless `path` is a regular file within MAXIMUM_FILE_BYTES (OSError passes through)."""
    file_status = os.stat(path)
    if not stat.S_ISREG(file_status.st_mode):
        raise UnusableImage("not a regular file")
    if file_status.st_size > MAXIMUM_FILE_BYTES:
        raise UnusableImage(f"file too large ({file_status.st_size} bytes; the limit is {MAXIMUM_FILE_BYTES})")


def _sha256_of_file(path: Path) -> str:
    """sha256 of a regular file's bytes, read in blocks; raise UnusableImage as _read_file_bytes does."""
    try:
        _check_regular_file(path)
        return file_sha256(path)
    except OSError as error:
        raise UnusableImage(f"could not read file ({error.strerror or error})") from error


def _read_file_bytes(path: Path) -> bytes:
    """Read a regular file's bytes (read-only); raise UnusableImage on problems."""
    try:
        _check_regular_file(path)
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise UnusableImage(f"could not read file ({error.strerror or error})") from error


def _open_image(image_bytes: bytes) -> Image.Image:
    """Identify the image format from its bytes (nothing is decoded yet)."""
    try:
        return Image.open(io.BytesIO(image_bytes), formats=ACCEPTED_PIL_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise UnusableImage(f"image too large ({_describe(error)})") from error
    except UnidentifiedImageError as error:
        raise UnusableImage(
            "not a readable image (cannot identify image file as JPEG, PNG, GIF, BMP or WebP)"
        ) from error
    except Exception as error:  # PIL plugins raise many types on odd headers
        raise UnusableImage(f"not a readable image ({_describe(error)})") from error


def _check_pixel_count(width: int, height: int) -> None:
    """Skip images over PIL's decompression-bomb limit (warning level included)."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        raise UnusableImage(
            f"image too large ({width}x{height} = {width * height} pixels; "
            f"the decompression-bomb limit is {limit})"
        )


def _reduce_large_jpeg(image: Image.Image, width: int, height: int) -> None:
    """Let the JPEG decoder shrink by a power of two, never below the target size."""
    if image.format != "JPEG":
        return
    requested_width, requested_height = width, height
    if _exif_orientation(image) in ROTATING_EXIF_ORIENTATIONS:
        requested_width, requested_height = height, width
    try:
        image.draft("RGB", (requested_width, requested_height))
    except Exception as error:  # a draft failure means odd data; treat as corrupt
        raise UnusableImage(f"truncated or corrupt image data ({_describe(error)})") from error


def _exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation value, 1 when missing or unreadable."""
    try:
        return int(image.getexif().get(EXIF_ORIENTATION_TAG, 1))
    except Exception:  # malformed EXIF: behave as unrotated
        return 1


def _load_pixels(image: Image.Image) -> None:
    """Decode the first frame's pixels; truncated data raises (not padded)."""
    try:
        image.load()
    except Image.DecompressionBombError as error:
        raise UnusableImage(f"image too large ({_describe(error)})") from error
    except Exception as error:  # OSError, SyntaxError, ValueError, ... from decoders
        raise UnusableImage(f"truncated or corrupt image data ({_describe(error)})") from error


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Rotate/flip as the EXIF orientation says; keep the image if EXIF is malformed."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block should not cost the user a photo
        return image


def _wide_greyscale_to_rgb(image: Image.Image, scale_maximum: float) -> Image.Image:
    """Scale 16/32-bit greyscale from 0..scale_maximum down to 8-bit RGB."""
    values = np.asarray(image).astype(np.float64)
    scaled = np.clip(values, 0.0, scale_maximum) * (255.0 / scale_maximum)
    return _grey_array_to_rgb(scaled)


def _float_greyscale_to_rgb(image: Image.Image) -> Image.Image:
    """Float greyscale: 0..1 data is scaled by 255, anything else clipped to 0..255."""
    values = np.nan_to_num(np.asarray(image).astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
    if values.size and values.min() >= 0.0 and values.max() <= 1.0:
        values = values * 255.0
    return _grey_array_to_rgb(np.clip(values, 0.0, 255.0))


def _grey_array_to_rgb(values: np.ndarray) -> Image.Image:
    """Round a 0..255 float array to uint8 and make it an RGB image."""
    grey = np.rint(values).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")


def _composite_on_white(image: Image.Image) -> Image.Image:
    """Blend a transparent image onto a white background and return RGB."""
    foreground = image.convert("RGBA")
    background = Image.new("RGBA", foreground.size, (255, 255, 255, 255))
    background.alpha_composite(foreground)
    return background.convert("RGB")


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def _sorted_entries(directory: Path) -> list[os.DirEntry[str]]:
    """Directory entries sorted by name; DataError if the folder can't be listed."""
    try:
        with os.scandir(directory) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except OSError as error:
        raise DataError(f"Folder '{directory}' cannot be read ({error.strerror or error}).") from error


def _relative_posix(data_root: Path, path: str | os.PathLike[str]) -> str:
    """Path relative to the data root, with '/' separators, printable."""
    return _printable(Path(os.path.relpath(path, data_root)).as_posix())


def _is_valid_utf8(name: str) -> bool:
    """False for names holding undecodable bytes (surrogate escapes)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(text: str | os.PathLike[str]) -> str:
    """Replace undecodable bytes so the text can be printed and saved as UTF-8."""
    text = os.fspath(text)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _describe(error: BaseException) -> str:
    """PIL's message for an error, without memory addresses of BytesIO objects."""
    message = str(error).split(" <_io.BytesIO")[0].strip()
    return message or type(error).__name__


def _reason_kind(reason: str) -> str:
    """The reason without its details, for counting in summaries."""
    return reason.split(" (")[0].split(":")[0].strip()


def _quoted(names: list[str]) -> str:
    """'a', 'b' for messages."""
    return ", ".join(f"'{name}'" for name in names)
