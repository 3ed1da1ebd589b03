"""The decoded-image cache: every image folder is decoded once, into uint8 arrays on disk.

Layout: one folder per cache in `cache_root()`, which is `<data.cache_dir>/decoded/` when
data.cache_dir (the command line's --cache-dir) is set, else `$XDG_CACHE_HOME/report-builder/decoded/`
or `~/.cache/report-builder/decoded/`::

    ~/.cache/report-builder/decoded/
        160x160-3f9c0e1a2b4d5c6e7f8a9b0c/     one cache, named after its key
            train.npy                          uint8 (N, height, width, 3), numpy's .npy format
            validation.npy                     the whole validation folder (the test split is
                                               drawn from it per seed, as a view: no copy)
            index.json                         files, labels, digests, skipped files and their
                                               reasons, class names, image size, decoding
                                               settings, fingerprint, array sizes and checksums
            .report-builder-cache.json         the marker: this folder is a decoded-image cache
                                               (generator, kind, key), written first in a build
        160x160-3f9c0e1a2b4d5c6e7f8a9b0c.lock  the lock taken to build (or remove) that cache

The key is a sha256 over the format version, the decoding settings (image size, Pillow version,
the decoding rules' version: `experiments.data.images.decode_settings`), the class names and every
candidate file's split, relative path, label and content digest. The files are hashed (read, not
decoded) on every load, so a changed, added, removed or moved file, or another image size, gives
another key and a new cache; the same data in another folder, or for another seed, finds the
same one. The content fingerprint the study records is computed from the digests in the index,
exactly as experiments.data.loading.fingerprint computes it from a fresh decode.

A cache is built in a staging folder next to it and renamed into place, under a file lock on
`<key>.lock`: two processes never build the same cache twice, and no process ever sees a half
written one (a crashed build leaves only a staging folder, removed by the next build of that
key). Opening checks the index's own checksum, each array's file size, its .npy header (shape,
dtype), a checksum over a few sampled blocks of it, and then every byte: the index holds a sha256
per 8 MiB block of each array (`BLOCK_BYTES`), and all of them are verified on every open, so a
damaged byte anywhere is seen before a model trains on it. This reads the arrays once (sha256
runs at about 1.3 GiB/s on one core): 0.4 to 0.6 s for the 220 MiB cache of the 3,000 images of
cats-dogs-cc0 at 160x160 on two busy cores, where decoding them took 17 s; the pages read stay in
the kernel's cache for the training that follows. A cache failing a check is reported in one sentence
and rebuilt; one built before the block checksums existed is rebuilt too, saying so.
`python -m report_builder cache --verify` runs the same full check on the caches and prints one line each.

Only folders that are caches are ever listed as caches or removed (`cache_kind`): a folder with the
marker naming its own key, or, for caches built before the marker existed, a folder whose name is
a cache's (`<height>x<width>-<24 hex digits>`), whose index passes its checksum and names that key,
and that holds nothing but the files a cache writes. A staging or removal leftover is ours when
its name is one a build or removal gives and it holds only a cache's files. Anything else in the
cache folder (`photos/`, a folder of your own) is listed as "not a cache, left alone" and never
removed; removing a cache deletes the files it wrote by name, and a cache folder holding files it
did not write is left whole, with those files named.

The images are read on demand (`CachedImages`), batch by batch, with pread: they stay in the
kernel's page cache, shared by every process reading the same cache, and not in any process's
resident memory, whatever the data set's size.

No TensorFlow here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import secrets
import shutil
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from experiments.artifacts.files import PER_IMAGE_JSON_MAX_BYTES, ArtifactFormatError, parse_json_file
from experiments.console import format_size
from experiments.data import images as image_reading
from experiments.data.images import ProgressCallback, SkippedFile
from experiments.errors import DataError, is_disk_full

FORMAT_VERSION = 1
APP_FOLDER = "report-builder"
DECODED_FOLDER = "decoded"
INDEX_FILE = "index.json"
MARKER_FILE = ".report-builder-cache.json"
MARKER = {"generator": "report-builder", "kind": "decoded-image cache"}
SPLIT_NAMES = ("train", "validation")
HEADER_BYTES = 128  # every array file's .npy header is padded to this length (a multiple of 64)
SAMPLE_BLOCKS = 16
SAMPLE_BLOCK_BYTES = 64 * 1024
#: the full check: a sha256 per block of this many bytes of every array file, header included,
#: stored in the index and verified whenever a cache is opened
BLOCK_BYTES = 8 * 2**20
#: what `_check_array` says of a cache whose index has no block checksums (built before they existed)
NO_FULL_CHECKSUMS = "it was built by an earlier version that kept no checksum over every byte"
STAGING_PREFIX = ".staging-"
TRASH_PREFIX = ".removing-"
READ_CHUNK_ROWS = 256  # rows per pread when a whole array is read
#: every file a cache folder (or its staging folder) ever holds
CACHE_FILES = frozenset({INDEX_FILE, MARKER_FILE, *(f"{name}.npy" for name in SPLIT_NAMES)})
_CACHE_NAME = r"\d+x\d+-[0-9a-f]{24}"
CACHE_NAME_PATTERN = re.compile(_CACHE_NAME)
LEFTOVER_NAME_PATTERN = re.compile(rf"(?:{re.escape(STAGING_PREFIX)}|{re.escape(TRASH_PREFIX)})({_CACHE_NAME})-\d+-[0-9a-f]+")


# --------------------------------------------------------------------------- where


def default_cache_base() -> Path:
    """`$XDG_CACHE_HOME/report-builder`, else `~/.cache/report-builder` (the user's cache folder)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / APP_FOLDER
    try:
        return Path.home() / ".cache" / APP_FOLDER
    except RuntimeError:  # no home folder: a per-user folder in the temporary directory
        import tempfile

        return Path(tempfile.gettempdir()) / f"{APP_FOLDER}-{os.getuid() if hasattr(os, 'getuid') else 'user'}"


def cache_root(cache_dir: str | os.PathLike[str] = "") -> Path:
    """The folder holding the decoded-image caches: `<cache_dir>/decoded` when `cache_dir` (the
    config's data.cache_dir, the command line's --cache-dir) is given, else
    `<default_cache_base()>/decoded`."""
    base = Path(cache_dir).expanduser() if str(cache_dir) else default_cache_base()
    return base / DECODED_FOLDER


def disk_free_bytes(folder: Path) -> int:
    """Free bytes on the file system holding `folder` (for this user)."""
    return shutil.disk_usage(folder).free


# --------------------------------------------------------------------------- the images


class _RowFile:
    """An open .npy file of uint8 rows, read with pread (thread safe; reopened after pickling)."""

    def __init__(self, path: Path, header_bytes: int, count: int, image_shape: tuple[int, int, int]) -> None:
        self.path = Path(path)
        self.header_bytes = header_bytes
        self.count = count
        self.image_shape = image_shape
        self.row_bytes = int(np.prod(image_shape))
        self._open()

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self._pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key not in ("_fd", "_pid")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open()

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None and getattr(self, "_pid", None) == os.getpid():
            try:
                os.close(fd)
            except OSError:
                pass

    def read(self, rows: np.ndarray) -> np.ndarray:
        """The rows `rows` (file row numbers, any order, repeats allowed) as a new array.
        Runs of consecutive rows are read with one pread each."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        out = np.empty((len(rows),) + self.image_shape, dtype=np.uint8)
        if not len(rows):
            return out
        if rows.min() < 0 or rows.max() >= self.count:
            raise IndexError(f"row out of range for {self.path} ({self.count} rows)")
        flat = out.reshape(len(rows), self.row_bytes)
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        starts = np.concatenate(([0], breaks))
        ends = np.concatenate((breaks, [len(rows)]))
        for start, end in zip(starts.tolist(), ends.tolist()):
            target = memoryview(flat[start:end].reshape(-1))
            offset = self.header_bytes + int(rows[start]) * self.row_bytes
            done = 0
            while done < len(target):
                got = os.preadv(self._fd, [target[done:]], offset + done)
                if got <= 0:
                    raise OSError(f"the decoded-image cache file {self.path} ended early (truncated after it was opened)")
                done += got
        return out


class CachedImages:
    """The uint8 images (N, height, width, 3) of one cached split, read from disk on demand.

    It indexes like a numpy array and gives numpy arrays: an int gives one image, a slice, a
    list or array of ints or a boolean mask give a new array of those images (`x[i, :, :, 0]`
    works too). `take(indices)` gives a lazy view of some rows (what `Split.subset` uses), and
    `np.asarray(images)` or `astype` read everything. Nothing is memory-mapped: every read is a
    pread into a new array, so the pages stay in the page cache and out of this process's resident
    memory.
    Instances pickle by path (a worker process reopens the file).
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, row_file: _RowFile, rows: np.ndarray | None = None) -> None:
        self._file = row_file
        self._rows = None if rows is None else np.asarray(rows, dtype=np.int64).reshape(-1)

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> CachedImages:
        """Any C-order uint8 .npy file of shape (N, height, width, channels), read on demand."""
        with open(path, "rb") as file:
            version = np.lib.format.read_magic(file)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran_order, dtype = read_header(file)
            header_bytes = file.tell()
        if dtype != np.uint8 or fortran_order or len(shape) != 4:
            raise ValueError(f"{path} holds {dtype} {shape} (fortran order: {fortran_order}), not C-order uint8 (N, height, width, channels)")
        return cls(_RowFile(Path(path), header_bytes, shape[0], tuple(shape[1:])))

    @property
    def path(self) -> Path:
        return self._file.path

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self),) + self._file.image_shape

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size

    def __len__(self) -> int:
        return self._file.count if self._rows is None else len(self._rows)

    def __repr__(self) -> str:
        view = "" if self._rows is None else f", a view of {len(self)} of its {self._file.count} rows"
        return f"CachedImages('{self.path}', shape={self.shape}{view})"

    def _file_rows(self, positions: np.ndarray) -> np.ndarray:
        return positions if self._rows is None else self._rows[positions]

    def _positions(self, key: Any) -> np.ndarray:
        """Row positions (an int64 array of any shape) for a slice, int list/array or bool mask."""
        count = len(self)
        if isinstance(key, slice):
            return np.arange(count, dtype=np.int64)[key]
        array = np.asarray(key)
        if array.dtype == bool:
            if array.shape != (count,):
                raise IndexError(f"boolean index of shape {array.shape} does not match {count} images")
            return np.flatnonzero(array).astype(np.int64)
        if array.size == 0:
            return array.astype(np.int64)
        if array.dtype.kind not in "iu":
            raise IndexError("only integers, slices, integer arrays and boolean masks index images")
        positions = array.astype(np.int64)
        positions = np.where(positions < 0, positions + count, positions)
        if positions.min() < 0 or positions.max() >= count:
            raise IndexError(f"index out of range for {count} images")
        return positions

    def read(self, positions: Any) -> np.ndarray:
        """The images at `positions` (row positions of this view) as a new (n, h, w, 3) array."""
        positions = self._positions(positions)
        images = self._file.read(self._file_rows(positions.reshape(-1)))
        return images.reshape(positions.shape + self._file.image_shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        if isinstance(key, tuple):
            if not key or key[0] is Ellipsis:
                return np.asarray(self)[key]
            head = self[key[0]]
            if isinstance(key[0], (int, np.integer)):
                return head[key[1:]]
            leading = 1 if isinstance(key[0], slice) else max(1, np.ndim(key[0]))
            return head[(slice(None),) * leading + key[1:]]
        if isinstance(key, (int, np.integer)):
            position = int(key) + (len(self) if int(key) < 0 else 0)
            if not 0 <= position < len(self):
                raise IndexError(f"index {int(key)} out of range for {len(self)} images")
            return self._file.read(self._file_rows(np.array([position])))[0]
        return self.read(key)

    def take(self, indices: Any) -> CachedImages:
        """A lazy view of the rows `indices` (positions in this view), in that order."""
        positions = self._positions(indices).reshape(-1)
        return CachedImages(self._file, self._file_rows(positions))

    def __iter__(self):
        for start in range(0, len(self), READ_CHUNK_ROWS):
            yield from self.read(slice(start, start + READ_CHUNK_ROWS))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        everything = np.empty(self.shape, dtype=np.uint8)
        for start in range(0, len(self), READ_CHUNK_ROWS):
            everything[start : start + READ_CHUNK_ROWS] = self.read(slice(start, start + READ_CHUNK_ROWS))
        return everything if dtype is None else everything.astype(dtype, copy=False)

    def astype(self, dtype: Any, copy: bool = True) -> np.ndarray:
        return np.asarray(self).astype(dtype, copy=False)


# --------------------------------------------------------------------------- what load gives


@dataclasses.dataclass
class CachedSplit:
    """One split of the folder as the cache holds it."""

    images: CachedImages
    labels: np.ndarray  # int32, (N,)
    files: list[str]
    file_digests: list[str]
    skipped: list[SkippedFile]  # the scan's (listed again on every load) and the decoding's, by path
    class_names: list[str]


@dataclasses.dataclass
class DecodedData:
    """A data folder's decoded train and validation splits, from the cache at `folder`."""

    folder: Path
    key: str
    class_names: list[str]
    train: CachedSplit
    validation: CachedSplit
    built: bool  # decoded by this call (False: found in the cache)
    decode_seconds: float | None  # the build's, when built by this call


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_or_build(
    data_root: Path,
    image_size: tuple[int, int],
    workers: int | None = None,
    cache_dir: str | os.PathLike[str] = "",
    progress: ProgressCallback | None = None,
    fingerprint: Callable[[list[str], dict[str, Any]], str] | None = None,
    log: Callable[[str], None] = _log,
) -> DecodedData:
    """The decoded splits of `data_root` at `image_size`, from the cache, decoding only on a miss.

    Lists both split folders (DataError for a layout that makes a study impossible), hashes every
    candidate file, and opens the cache of that key; when it is missing or damaged, takes the
    key's lock and builds it (after checking the disk has room) unless another process did in
    the meantime. `fingerprint(class_names, {"train": split, "validation": split})` is recorded
    in the index when given (for `cache` listings).
    """
    height, width = image_reading._checked_image_size(image_size)
    worker_count = image_reading._checked_worker_count(workers)
    data_root = Path(data_root)
    scans = dict(zip(SPLIT_NAMES, image_reading.scan_dataset(data_root)))
    candidates = {name: scan.candidates for name, scan in scans.items()}
    digests = dict(zip(SPLIT_NAMES, _split_lists(image_reading.read_digests(candidates["train"] + candidates["validation"], worker_count),
                                                   len(candidates["train"]))))
    settings = image_reading.decode_settings((height, width))
    key = cache_key(scans["train"].class_names, candidates, digests, settings)
    root = cache_root(cache_dir)
    folder = root / folder_name(key, (height, width))
    opened, _problem = _open_cache(folder, key, scans)
    if opened is not None:
        log(f"  using the images decoded earlier, cached in {folder}")
        return opened
    _make_folder(root)
    lock = FileLock(str(root / f"{folder.name}.lock"))
    try:
        try:
            lock.acquire(timeout=1)
        except Timeout:
            log(f"  waiting for another process that is decoding {data_root} into {folder}")
            lock.acquire()
    except OSError as error:
        raise DataError(
            f"The cache folder '{root}' cannot be written ({error.strerror or error}); point --cache-dir "
            "(data.cache_dir) at a folder you can write."
        ) from None
    try:
        opened, problem = _open_cache(folder, key, scans)
        if opened is not None:
            log(f"  using the images another process just decoded, cached in {folder}")
            return opened
        if folder.exists() or folder.is_symlink():
            # A folder with this data's cache name: its files are a cache's (marker or not, they are
            # deleted by name); anything else there is someone else's, and stops the build.
            strangers = [folder.name] if folder.is_symlink() or not folder.is_dir() else _foreign_entries(folder) or []
            if strangers:
                raise DataError(
                    f"The folder '{folder}' has the name of this data's decoded-image cache but holds files a cache "
                    f"does not write ({_names(strangers)}), so it is left alone; move it out of '{root}' and run again."
                )
            if problem == NO_FULL_CHECKSUMS:
                log(f"  The decoded-image cache {folder} was built by an earlier version that kept no checksum over "
                    "every byte, so the images are decoded again.")
            else:
                log(f"  The decoded-image cache {folder} is damaged ({problem}), so the images are decoded again.")
            _remove_cache_files(folder)
        for leftover in root.glob(f"{STAGING_PREFIX}{folder.name}-*"):
            if cache_kind(leftover) is not None:
                _remove_cache_files(leftover)  # a build of this key that crashed (we hold its lock)
        total = sum(len(found) for found in candidates.values())
        check_disk_space(root, data_root, total, (height, width))
        log(f"  decoding {total} images once, into the cache {folder}")
        started = time.perf_counter()
        try:
            _build(folder, key, data_root, scans, digests, settings, worker_count, progress, fingerprint)
        except OSError as error:
            if not is_disk_full(error):
                raise
            raise DataError(  # _build has removed its staging folder; earlier caches are as they were
                f"The disk holding the cache folder '{root}' filled up while the images under '{data_root}' were being "
                f"decoded ({error.strerror or error}); the unfinished cache was removed and earlier caches are intact, so free "
                "some space or point --cache-dir (data.cache_dir) at a larger disk."
            ) from None
        seconds = time.perf_counter() - started
        opened, problem = _open_cache(folder, key, scans)
        if opened is None:
            raise DataError(f"The decoded-image cache {folder} failed its check right after it was written ({problem}).")
        return dataclasses.replace(opened, built=True, decode_seconds=seconds)
    finally:
        lock.release()


def _split_lists(items: list[Any], first_length: int) -> tuple[list[Any], list[Any]]:
    return items[:first_length], items[first_length:]


def cache_key(class_names: list[str], candidates: dict[str, list[Any]], digests: dict[str, list[Any]], settings: dict[str, Any]) -> str:
    """sha256 over the format version, the decoding settings, the class names and every
    candidate's split, path, label and content digest (or why it could not be read)."""
    digest = hashlib.sha256(json.dumps({"format_version": FORMAT_VERSION, "decode": settings, "class_names": class_names},
                                       sort_keys=True).encode())
    for split_name in SPLIT_NAMES:
        for candidate, outcome in zip(candidates[split_name], digests[split_name]):
            content = outcome.digest if outcome.digest is not None else f"unreadable: {outcome.skip_reason}"
            digest.update(f"{split_name}\0{candidate.relative_path}\0{candidate.label}\0{content}\n".encode("utf-8", "replace"))
    return digest.hexdigest()


def folder_name(key: str, image_size: tuple[int, int]) -> str:
    return f"{image_size[0]}x{image_size[1]}-{key[:24]}"




def check_disk_space(root: Path, data_root: Path, image_count: int, image_size: tuple[int, int]) -> None:
    """DataError, before anything is decoded, when the cache folder's disk cannot hold the arrays."""
    height, width = image_size
    needed = image_count * height * width * 3 + 2 * HEADER_BYTES + (1 << 20)
    free = disk_free_bytes(root)
    if needed > free:
        needed_text, free_text = format_size(needed), format_size(free)
        if needed_text == free_text:  # rounded alike: the bytes tell them apart
            needed_text, free_text = f"{needed:,} bytes", f"{free:,} bytes"
        raise DataError(
            f"Decoding the {image_count} images under '{data_root}' at {height}x{width} needs "
            f"{needed_text} in the cache folder '{root}' but only {free_text} is free there; "
            "free some space, point --cache-dir (data.cache_dir) at a larger disk, or use a smaller data.image_size."
        )


def _make_folder(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(
            f"The cache folder '{root}' cannot be created ({error.strerror or error}); point --cache-dir "
            "(data.cache_dir) at a folder you can write."
        ) from None


# --------------------------------------------------------------------------- building


def _npy_header(shape: tuple[int, ...]) -> bytes:
    """A version 1.0 .npy header for a C-order uint8 array of `shape`, padded to HEADER_BYTES."""
    text = "{'descr': '|u1', 'fortran_order': False, 'shape': " + repr(tuple(int(size) for size in shape)) + ", }"
    length = HEADER_BYTES - 10
    padded = text.ljust(length - 1) + "\n"
    if len(padded) != length:
        raise ValueError(f"shape {shape} does not fit a {HEADER_BYTES}-byte .npy header")
    return b"\x93NUMPY\x01\x00" + length.to_bytes(2, "little") + padded.encode("latin1")


def _pwrite_all(fd: int, data: memoryview | bytes, offset: int) -> None:
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


def _build(
    folder: Path,
    key: str,
    data_root: Path,
    scans: dict[str, Any],
    digests: dict[str, list[Any]],
    settings: dict[str, Any],
    worker_count: int,
    progress: ProgressCallback | None,
    fingerprint: Callable[[list[str], dict[str, Any]], str] | None,
) -> None:
    """Decode both splits into a staging folder next to `folder`, then rename it into place."""
    height, width = settings["image_size"]
    image_shape = (height, width, 3)
    row_bytes = height * width * 3
    staging = folder.parent / f"{STAGING_PREFIX}{folder.name}-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    total = sum(len(scan.candidates) for scan in scans.values())
    done_before = 0
    split_entries: dict[str, Any] = {}
    decoded_splits: dict[str, image_reading.DecodedSplit] = {}
    try:
        _write_synced(staging / MARKER_FILE, json.dumps({**MARKER, "key": key}, indent=1).encode("ascii"))
        for split_name in SPLIT_NAMES:
            scan = scans[split_name]
            path = staging / f"{split_name}.npy"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                os.ftruncate(fd, HEADER_BYTES + len(scan.candidates) * row_bytes)

                def store(index: int, image: np.ndarray, fd: int = fd) -> None:
                    _pwrite_all(fd, memoryview(np.ascontiguousarray(image, dtype=np.uint8)), HEADER_BYTES + index * row_bytes)

                decoded = image_reading.decode_scan_into(scan, store, (height, width), worker_count, progress, done_before, total)
                _check_unchanged(data_root, scan, digests[split_name], decoded)
                _compact_file(fd, decoded.used_indices, row_bytes)
                count = len(decoded.used_indices)
                os.ftruncate(fd, HEADER_BYTES + count * row_bytes)
                _pwrite_all(fd, _npy_header((count,) + image_shape), 0)
                os.fsync(fd)
            finally:
                os.close(fd)
            done_before += len(scan.candidates)
            decoded_splits[split_name] = decoded
            scan_skipped = {item.path for item in scan.skipped}
            split_entries[split_name] = {
                "files": decoded.files,
                "labels": [int(label) for label in decoded.labels],
                "digests": decoded.file_digests,
                "skipped": [{"file": item.path, "reason": item.reason} for item in decoded.skipped if item.path not in scan_skipped],
                "array": _describe_array(path, (count,) + image_shape),
            }
        index = {
            "format_version": FORMAT_VERSION,
            "key": key,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "data_root": str(data_root),
            "image_size": [height, width],
            "decode_settings": settings,
            "class_names": list(scans["train"].class_names),
            "fingerprint": fingerprint(list(scans["train"].class_names), decoded_splits) if fingerprint else None,
            "splits": split_entries,
        }
        index["index_sha256"] = _index_checksum(index)
        _write_synced(staging / INDEX_FILE, json.dumps(index, indent=1, ensure_ascii=True).encode("ascii"))
        _fsync_folder(staging)
        try:
            os.rename(staging, folder)
        except OSError:
            if not folder.is_dir():
                raise
            # Another process built this key at the same time (possible only when a `cache --remove`
            # deleted the lock file while both waited on it): keep its cache, drop ours.
        _fsync_folder(folder.parent)
    finally:
        if staging.exists():
            _remove_cache_files(staging)  # made by this call: only a cache's files


def _check_unchanged(data_root: Path, scan: Any, expected: list[Any], decoded: image_reading.DecodedSplit) -> None:
    """DataError when a file's bytes changed between the hashing pass and the decoding pass (the
    cache would hold other pixels than its key says)."""
    for candidate, before, after in zip(scan.candidates, expected, decoded.read_digests):
        if before.digest != after:
            raise DataError(
                f"The file '{data_root / candidate.relative_path}' changed while the images were being decoded; "
                "run the command again once nothing writes into the data folder."
            )


def _compact_file(fd: int, used_indices: list[int], row_bytes: int) -> None:
    """Move the used rows to the front, in order (skipped files leave holes)."""
    for new_index, old_index in enumerate(used_indices):
        if new_index != old_index:
            row = os.pread(fd, row_bytes, HEADER_BYTES + old_index * row_bytes)
            _pwrite_all(fd, row, HEADER_BYTES + new_index * row_bytes)


def _sample_offsets(size: int) -> list[int]:
    if size <= SAMPLE_BLOCK_BYTES:
        return [0]
    return sorted({int(offset) for offset in np.linspace(0, size - SAMPLE_BLOCK_BYTES, SAMPLE_BLOCKS)})


def _sample_checksum(path: Path, size: int) -> str:
    """sha256 over SAMPLE_BLOCKS blocks spread over the file, its header and its end included."""
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as file:
        for offset in _sample_offsets(size):
            file.seek(offset)
            digest.update(file.read(SAMPLE_BLOCK_BYTES))
    return digest.hexdigest()


def _block_checksums(path: Path, block_bytes: int | None = None) -> list[str]:
    """sha256 of each `block_bytes` (default BLOCK_BYTES) block of the file, the last one shorter:
    every byte is covered."""
    block_bytes = block_bytes or BLOCK_BYTES
    checksums = []
    with open(path, "rb", buffering=0) as file:
        while block := file.read(block_bytes):
            checksums.append(hashlib.sha256(block).hexdigest())
    return checksums


def _describe_array(path: Path, shape: tuple[int, ...]) -> dict[str, Any]:
    size = path.stat().st_size
    return {"file": path.name, "shape": list(shape), "dtype": "uint8", "header_bytes": HEADER_BYTES, "bytes": size,
            "sample_sha256": _sample_checksum(path, size), "block_bytes": BLOCK_BYTES,
            "block_sha256": _block_checksums(path)}


def _index_checksum(index: dict[str, Any]) -> str:
    content = {name: value for name, value in index.items() if name != "index_sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=True).encode("ascii")).hexdigest()


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- opening


def read_index(folder: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(the index, None), or (None, what is wrong with it)."""
    try:
        index = parse_json_file(folder / INDEX_FILE, PER_IMAGE_JSON_MAX_BYTES)  # it lists every image
    except FileNotFoundError:
        return None, f"{INDEX_FILE} is missing"
    except OSError as error:
        return None, f"{INDEX_FILE} cannot be read: {type(error).__name__}"
    except ArtifactFormatError as error:
        return None, f"{INDEX_FILE} cannot be read: {error.detail}"
    if not isinstance(index, dict) or index.get("index_sha256") != _index_checksum(index):
        return None, f"{INDEX_FILE} fails its checksum"
    if index.get("format_version") != FORMAT_VERSION:
        return None, f"it has format version {index.get('format_version')}, not {FORMAT_VERSION}"
    return index, None


def _check_array(folder: Path, entry: dict[str, Any], full: bool = True) -> str | None:
    """What is wrong with one array file, or None: its size, header, shape and sampled checksum,
    then (`full`) the checksum of every block, so that a damaged byte anywhere is seen."""
    path = folder / entry["file"]
    try:
        size = path.stat().st_size
    except OSError:
        return f"{entry['file']} is missing"
    if size != entry["bytes"]:
        return f"{entry['file']} has {size} bytes, not {entry['bytes']}"
    try:
        with open(path, "rb") as file:
            np.lib.format.read_magic(file)
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return f"{entry['file']} does not start with a valid .npy header"
    header_bytes = int(getattr(mapped, "offset", -1))
    shape, dtype = list(mapped.shape), mapped.dtype
    del mapped
    if shape != entry["shape"] or dtype != np.uint8 or header_bytes != entry["header_bytes"]:
        return f"{entry['file']} holds a {dtype} array of shape {tuple(shape)}, not uint8 {tuple(entry['shape'])}"
    if _sample_checksum(path, size) != entry["sample_sha256"]:
        return f"{entry['file']} fails its checksum"
    if not full:
        return None
    expected, block_bytes = entry.get("block_sha256"), entry.get("block_bytes")
    if expected is None and block_bytes is None:
        return NO_FULL_CHECKSUMS
    if (not isinstance(expected, list) or isinstance(block_bytes, bool) or not isinstance(block_bytes, int)
            or not 1024 <= block_bytes <= 2**30 or len(expected) != -(-size // block_bytes)):
        return f"its index's block checksums for {entry['file']} do not fit the file"
    try:
        found = _block_checksums(path, block_bytes)
    except OSError as error:
        return f"{entry['file']} cannot be read ({error.strerror or error})"
    if len(found) != len(expected):
        return f"its index lists {len(expected)} checksum blocks for {entry['file']}, which has {len(found)}"
    for number, (ours, theirs) in enumerate(zip(found, expected)):
        if ours != theirs:
            start = number * block_bytes
            return (f"{entry['file']} fails its checksum in bytes {start:,} to {min(start + block_bytes, size) - 1:,} "
                    f"(block {number + 1} of {len(expected)})")
    return None


def _open_cache(folder: Path, key: str, scans: dict[str, Any]) -> tuple[DecodedData | None, str | None]:
    """(the opened cache, None), or (None, what is missing or wrong)."""
    if not folder.is_dir():
        return None, "it does not exist"
    index, problem = read_index(folder)
    if index is None:
        return None, problem
    if index.get("key") != key:
        return None, "its index belongs to other data"
    splits = {}
    try:
        for split_name in SPLIT_NAMES:
            entry = index["splits"][split_name]
            array = entry["array"]
            count = array["shape"][0]
            if not len(entry["files"]) == len(entry["labels"]) == len(entry["digests"]) == count:
                return None, f"its index lists {len(entry['files'])} {split_name} files for {count} images"
            problem = _check_array(folder, array)
            if problem is not None:
                return None, problem
            scan = scans[split_name]
            skipped = list(scan.skipped) + [SkippedFile(item["file"], item["reason"]) for item in entry["skipped"]]
            skipped.sort(key=lambda item: item.path)
            row_file = _RowFile(folder / array["file"], array["header_bytes"], count, tuple(array["shape"][1:]))
            splits[split_name] = CachedSplit(
                images=CachedImages(row_file),
                labels=np.array(entry["labels"], dtype=np.int32),
                files=list(entry["files"]),
                file_digests=list(entry["digests"]),
                skipped=skipped,
                class_names=list(index["class_names"]),
            )
    except (KeyError, TypeError, IndexError, ValueError) as error:
        return None, f"its index is incomplete ({type(error).__name__}: {error})"
    except OSError as error:
        return None, f"it cannot be read ({error.strerror or error})"
    return DecodedData(folder=folder, key=key, class_names=list(index["class_names"]), train=splits["train"],
                       validation=splits["validation"], built=False, decode_seconds=None), None


# --------------------------------------------------------------------------- listing and removing


def _read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        marker = parse_json_file(folder / MARKER_FILE)
    except (OSError, ArtifactFormatError):
        return None
    if not isinstance(marker, dict) or any(marker.get(name) != value for name, value in MARKER.items()):
        return None
    return marker


def _foreign_entries(folder: Path) -> list[str] | None:
    """The names in `folder` that a cache never writes (anything but a regular file among
    CACHE_FILES), sorted; None when the folder cannot be listed."""
    try:
        names = os.listdir(folder)
    except OSError:
        return None
    return sorted(name for name in names if name not in CACHE_FILES or not os.path.isfile(folder / name)
                  or os.path.islink(folder / name))


def cache_kind(path: Path) -> str | None:
    """Whether `path` (a folder in the cache folder) is ours: "cache" (it has the marker, naming
    the key its name is made of), "cache before the marker" (a cache built before markers were
    written: a cache's name, an index that passes its checksum and names that key, and nothing
    but a cache's files), "leftover" (a staging or removal folder's name, nothing but a cache's
    files), or None: not a cache, never to be removed."""
    if path.is_symlink() or not path.is_dir():
        return None
    leftover = LEFTOVER_NAME_PATTERN.fullmatch(path.name)
    if leftover is not None:
        return "leftover" if _foreign_entries(path) == [] else None
    if CACHE_NAME_PATTERN.fullmatch(path.name) is None:
        return None
    key_start = path.name.split("-", 1)[1]
    marker = _read_marker(path)
    if marker is not None:
        return "cache" if str(marker.get("key", "")).startswith(key_start) else None
    index, _problem = read_index(path)
    if index is not None and str(index.get("key", "")).startswith(key_start) and _foreign_entries(path) == []:
        return "cache before the marker"
    return None


def _names(names: list[str], shown: int = 3) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _remove_cache_files(folder: Path) -> list[str]:
    """Delete the files a cache writes from `folder`, and the folder if that empties it. Returns
    the names of anything else found there (then nothing is deleted: they are someone else's)."""
    strangers = _foreign_entries(folder)
    if strangers is None:
        return []
    if strangers:
        return strangers
    for name in sorted(CACHE_FILES, key=lambda name: name == MARKER_FILE):  # the marker last: still ours if cut short
        try:
            (folder / name).unlink()
        except FileNotFoundError:
            pass
    try:
        folder.rmdir()
    except FileNotFoundError:
        pass
    except OSError:  # something appeared meanwhile: leave it, and say so
        return _foreign_entries(folder) or []
    return []


@dataclasses.dataclass
class CacheEntry:
    """One folder in the cache folder, as `python -m report_builder cache` lists it."""

    name: str
    path: Path
    bytes: int
    state: str  # "ok", "damaged: ...", "unfinished build", "being removed", NOT_A_CACHE
    images: int | None = None
    image_size: tuple[int, int] | None = None
    data_root: str | None = None
    created_at: str | None = None

    @property
    def is_cache(self) -> bool:
        """A cache or a leftover of one: listed with its state, removable."""
        return self.state != NOT_A_CACHE


NOT_A_CACHE = "not a cache, left alone"


def _folder_bytes(path: Path) -> int:
    total = 0
    for directory, _folders, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
            except OSError:
                pass
    return total


def list_caches(root: Path) -> list[CacheEntry]:
    """Every folder under `root`, by name: the caches (and leftovers of a build or removal) with
    their state, any other folder as NOT_A_CACHE. Sizes are the disk space used. Arrays get the
    cheap checks (size, header, a few sampled blocks); `verify_cache` reads every byte."""
    entries = []
    if not root.is_dir():
        return entries
    for path in sorted(root.iterdir()):
        if not path.is_dir() or path.is_symlink():
            continue
        kind = cache_kind(path)
        entry = CacheEntry(name=path.name, path=path, bytes=_folder_bytes(path), state="ok")
        if kind is None:
            entry.state = NOT_A_CACHE
        elif path.name.startswith(STAGING_PREFIX):
            entry.state = "unfinished build (or one in progress)"
        elif path.name.startswith(TRASH_PREFIX):
            entry.state = "being removed"
        else:
            index, problem = read_index(path)
            if index is None:
                entry.state = f"damaged: {problem}"
            else:
                try:
                    arrays = [index["splits"][name]["array"] for name in SPLIT_NAMES]
                    entry.images = sum(array["shape"][0] for array in arrays)
                    entry.image_size = tuple(index["image_size"])
                    entry.data_root = index.get("data_root")
                    entry.created_at = index.get("created_at")
                    problem = next(filter(None, (_check_array(path, array, full=False) for array in arrays)), None)
                except (KeyError, TypeError, IndexError) as error:
                    problem = f"its index is incomplete ({type(error).__name__})"
                if problem is not None:
                    entry.state = f"damaged: {problem}"
                else:
                    strangers = _foreign_entries(path)
                    if strangers:
                        entry.state = f"ok, but it also holds files it did not write ({_names(strangers)}), which --remove leaves alone"
        entries.append(entry)
    return entries


def verify_cache(path: Path) -> str | None:
    """What is wrong with the cache folder `path`, or None: its index, and every byte of its arrays
    against the index's block checksums (what opening it for training checks too)."""
    index, problem = read_index(path)
    if index is None:
        return problem
    try:
        for split_name in SPLIT_NAMES:
            entry = index["splits"][split_name]
            count = entry["array"]["shape"][0]
            if not len(entry["files"]) == len(entry["labels"]) == len(entry["digests"]) == count:
                return f"its index lists {len(entry['files'])} {split_name} files for {count} images"
            problem = _check_array(path, entry["array"])
            if problem is not None:
                return problem
    except (KeyError, TypeError, IndexError) as error:
        return f"its index is incomplete ({type(error).__name__})"
    return None


@dataclasses.dataclass
class Removal:
    """What `remove_cache` did: `removed`, or why not (`busy`: another process holds its lock;
    `not_a_cache`; `strangers`: files the cache did not write, left with the folder)."""

    removed: bool
    busy: bool = False
    not_a_cache: bool = False
    strangers: list[str] = dataclasses.field(default_factory=list)

    def __bool__(self) -> bool:
        return self.removed


def remove_cache(root: Path, name: str) -> Removal:
    """Remove one cache folder (or leftover) under its lock, by deleting the files a cache writes.
    Not removed: a folder that is not a cache (`cache_kind`), one holding other files too, or one
    whose lock another process holds (it is building that cache right now)."""
    path = root / name
    if cache_kind(path) is None:
        return Removal(False, not_a_cache=True)
    leftover = LEFTOVER_NAME_PATTERN.fullmatch(name)
    if leftover is not None:
        strangers = _remove_cache_files(path)
        return Removal(not strangers, strangers=strangers)
    lock_path = root / f"{name}.lock"
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return Removal(False, busy=True)
    try:
        if cache_kind(path) is None:  # checked again under the lock: it may have changed meanwhile
            return Removal(False, not_a_cache=True)
        strangers = _foreign_entries(path) or []
        if strangers:
            return Removal(False, strangers=strangers)
        trash = root / f"{TRASH_PREFIX}{name}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            os.rename(path, trash)  # atomic: nobody opens half of it
        except OSError:
            trash = path
        strangers = _remove_cache_files(trash)
        if strangers:
            return Removal(False, strangers=strangers)
        lock_path.unlink(missing_ok=True)  # a builder that raced for this very file copes (see _build)
    finally:
        lock.release()
    return Removal(True)
