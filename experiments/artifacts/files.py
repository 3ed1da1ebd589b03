"""Every file the project keeps, written atomically and read back safely: regular files only, within a
size, and JSON within bounds.

Every write goes to a temporary file in the destination folder and is renamed into place, so an
interrupted run never leaves half a file behind. Files get the mode a plain `open()` would give
them under the user's umask (mkstemp alone makes them 0600). Every JSON file the project reads
back goes through `parse_json_file`; an unusable one is one ArtifactFormatError naming it.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from experiments.console import format_size
from experiments.errors import UserError, disk_full_sentence, is_disk_full


def _read_umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once, at import: os.umask cannot be read without briefly changing it.
UMASK = _read_umask()


class ArtifactError(UserError, OSError):
    """The run folder cannot be written (read-only, disk full, ...); names the path."""


class ArtifactFormatError(UserError, ValueError):
    """An artifact file does not hold what its format says; the message names the file and field."""

    def __init__(self, path: Path | str, detail: str):
        super().__init__(f"{path}: {detail}")
        self.path = Path(path)
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:  # crosses process boundaries whole (worker pools, Dask)
        return type(self), (self.path, self.detail)


def _json_safe(value: Any) -> Any:
    """Replace non-finite floats with None: JSON has no NaN, and readers must not choke."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def write_atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Call `write(temporary_path)`, then rename the result onto `path`, with mode 0o666 less
    the umask (as `open()` would create it)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temporary_name = tempfile.mkstemp(
            prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent
        )
        os.close(descriptor)
    except OSError as error:
        if is_disk_full(error):
            raise ArtifactError(disk_full_sentence(str(path), error)) from None
        raise ArtifactError(f"cannot write {path}: {error.strerror or error}") from None
    temporary_path = Path(temporary_name)
    try:
        write(temporary_path)
        os.chmod(temporary_path, 0o666 & ~UMASK)
        os.replace(temporary_path, path)
    except OSError as error:
        temporary_path.unlink(missing_ok=True)
        if is_disk_full(error):  # the previous file at `path` is untouched: only the temporary one is gone
            raise ArtifactError(disk_full_sentence(str(path), error)) from None
        raise ArtifactError(f"cannot write {path}: {error.strerror or error}") from None
    except BaseException:
        temporary_path.unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, data: dict[str, Any]) -> Path:
    text = json.dumps(_json_safe(data), indent=2, ensure_ascii=False, allow_nan=False) + "\n"

    def write(temporary_path: Path) -> None:
        with open(temporary_path, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    return write_atomic(path, write)


class NotARegularFile(OSError):
    """Something other than a plain file (a named pipe, a socket, a device, a folder) where a file
    is read: reading it could block for ever, or never end; `kind` says what it is, in words."""

    def __init__(self, path: Path | str, kind: str):
        super().__init__(f"{path} is {kind}, not a regular file")
        self.filename = str(path)
        self.kind = kind


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a folder" if stat.S_ISDIR(mode) else "not a regular file"


class FileTooLarge(OSError):
    """A file larger than its reader accepts (`limit` bytes): reading it whole could exhaust memory."""

    def __init__(self, path: Path | str, size: int, limit: int):
        super().__init__(f"{path} holds {size} bytes, more than the {limit} bytes a file of its kind may hold")
        self.filename, self.size, self.limit = str(path), size, limit


@contextmanager
def _open_regular_file(path: Path | str) -> Iterator[tuple[BinaryIO, int]]:
    """The regular file at `path` (a link to one counts), opened for reading without blocking on
    anything else, with its size: FileNotFoundError when it is missing, NotARegularFile (an
    OSError) when it is a named pipe, a socket, a device or a folder. Opening a FIFO with
    O_NONBLOCK returns at once, where a plain open() would wait for a writer for ever."""
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        details = os.fstat(descriptor)
        if not stat.S_ISREG(details.st_mode):
            raise NotARegularFile(path, _file_kind(details.st_mode))
        with os.fdopen(descriptor, "rb", closefd=False) as handle:
            yield handle, details.st_size
    finally:
        os.close(descriptor)


def read_regular_file(path: Path | str, max_bytes: int | None = None) -> bytes:
    """The bytes of the regular file at `path`, opened as _open_regular_file opens it (missing:
    FileNotFoundError; not a regular file: NotARegularFile), FileTooLarge (an OSError) when it holds
    more than `max_bytes` (checked before reading, and while reading, should it grow)."""
    with _open_regular_file(path) as (handle, size):
        if max_bytes is not None and size > max_bytes:
            raise FileTooLarge(path, size, max_bytes)
        data = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise FileTooLarge(path, len(data), max_bytes)
    return data


def file_sha256(path: Path | str) -> str:
    """The sha256 of the regular file at `path`, read in blocks (hashlib.file_digest): the one file
    hash of the project. Raises OSError as read_regular_file does (missing, a pipe, a folder...)."""
    with _open_regular_file(path) as (handle, _size):
        return hashlib.file_digest(handle, "sha256").hexdigest()


# --------------------------------------------------------------------------- bounded JSON
#
# Every JSON file the project reads back (the run's records, the docs and site markers, the
# publish journal, the cache's index and marker) goes through `parse_json_file`, within three
# bounds, so that no file, however made, gets further than one sentence naming it: its size
# (read whole into memory), its nesting depth (Python's parser recurses, and a deep enough array
# raises RecursionError) and the digits of an integer (int() refuses more than 4300, and takes
# quadratic time below that). The real files stay far inside them: the shipped run nests 5
# deep, its integers are seeds, counts and sizes, and its largest file is 106 KiB.

#: The deepest nesting of arrays and objects a JSON file may have (the run's files reach 5; a
#: config's own tables add a few more)
JSON_MAX_DEPTH = 64
#: The most digits an integer in a JSON file may have (a 64-bit seed has 20)
JSON_MAX_INTEGER_DIGITS = 100
#: The largest JSON file read, in bytes: a record of one cell, a marker, a journal, a manifest
JSON_MAX_BYTES = 64 * 2**20
#: ... and for the files that list every image (file names, labels, predictions, digests): an
#: ImageNet-sized study (1.3 million images) writes about 200 MiB into them
PER_IMAGE_JSON_MAX_BYTES = 1 * 2**30
PER_IMAGE_JSON_FILES = frozenset({"dataset.json", "metrics.json", "validation_predictions.json", "manifest.json"})


def json_size_limit(path: Path | str) -> int:
    """The largest file `parse_json_file` reads at `path`, by its name (PER_IMAGE_JSON_FILES get more)."""
    return PER_IMAGE_JSON_MAX_BYTES if Path(path).name in PER_IMAGE_JSON_FILES else JSON_MAX_BYTES


class UnsafeJson(ValueError):
    """A JSON text beyond the reader's bounds (nesting depth, integer digits); says which, in words."""


#: A JSON string (escapes included), skipped when counting brackets
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_depth(text: str) -> int:
    """How deep the arrays and objects of a JSON text nest (strings skipped), without parsing it;
    a text with no more opening brackets than JSON_MAX_DEPTH gives their count (no less than its
    depth) without looking further. Where the text is not JSON the count may be off, but then the
    parser refuses it anyway."""
    openings = text.count("[") + text.count("{")
    if openings <= JSON_MAX_DEPTH:
        return openings
    brackets = _NOT_A_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(itertools.accumulate(map(_BRACKET_STEP.__getitem__, brackets)), default=0)


def _bounded_integer(text: str) -> int:
    if len(text) - text.startswith("-") > JSON_MAX_INTEGER_DIGITS:
        raise UnsafeJson(f"holds an integer of {len(text) - text.startswith('-')} digits, more than the "
                         f"{JSON_MAX_INTEGER_DIGITS} this program reads")
    return int(text)


def parse_json_text(text: str) -> Any:
    """`json.loads(text)` within the bounds above: UnsafeJson (a ValueError) when it nests deeper
    than JSON_MAX_DEPTH or holds an integer of more than JSON_MAX_INTEGER_DIGITS digits;
    json.JSONDecodeError when it is not JSON."""
    depth = json_depth(text)
    if depth > JSON_MAX_DEPTH:
        raise UnsafeJson(f"nests arrays and objects {depth} deep, more than the {JSON_MAX_DEPTH} levels this program reads")
    return json.loads(text, parse_int=_bounded_integer)


def parse_json_file(path: Path | str, max_bytes: int | None = None) -> Any:
    """The JSON value in the file at `path`: the one reader of every JSON file the project reads
    back. FileNotFoundError when the file is missing; ArtifactFormatError naming the file (and what
    is wrong, in words) when it cannot be read, is not a regular file, is larger than `max_bytes` (default:
    json_size_limit), is not UTF-8, not JSON, or beyond the bounds of parse_json_text."""
    path = Path(path)
    limit = json_size_limit(path) if max_bytes is None else max_bytes
    try:
        text = read_regular_file(path, limit).decode("utf-8")
    except FileNotFoundError:
        raise
    except UnicodeDecodeError as error:
        raise ArtifactFormatError(path, f"not UTF-8 text (byte {error.start})") from None
    except NotARegularFile as error:
        raise ArtifactFormatError(path, f"{error.kind} where a JSON file belongs, so it is not read") from None
    except FileTooLarge as error:
        raise ArtifactFormatError(path, f"is too large to read ({format_size(error.size)}, more than the "
                                        f"{format_size(error.limit)} a file of its kind may hold)") from None
    except OSError as error:
        raise ArtifactFormatError(path, f"cannot be read ({error.strerror or error})") from None
    try:
        return parse_json_text(text)
    except json.JSONDecodeError as error:
        raise ArtifactFormatError(path, f"not valid JSON ({error.msg} at line {error.lineno})") from None
    except UnsafeJson as error:
        raise ArtifactFormatError(path, str(error)) from None


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object at `path`, or None if it is missing or unusable (not a regular file, too
    large, not JSON, beyond parse_json_text's bounds, not an object)."""
    try:
        data = parse_json_file(path)
    except (OSError, ArtifactFormatError):
        return None
    return data if isinstance(data, dict) else None


def load_json_object(path: Path, max_bytes: int | None = None) -> dict[str, Any] | None:
    """The JSON object at `path`; None when the file is missing; ArtifactFormatError naming the
    file when it cannot be read, is too large, is not UTF-8, not JSON (or beyond the bounds of
    parse_json_file) or not an object."""
    try:
        data = parse_json_file(path, max_bytes)
    except FileNotFoundError:
        return None
    if not isinstance(data, dict):
        raise ArtifactFormatError(path, "not a JSON object")
    return data
