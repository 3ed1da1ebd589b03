"""The run folder: its layout, atomic writes, and reading back what a run left.

The layout and the JSON schema are documented in docs/guide/artifacts.md; this module is the
only writer. Every write goes to a temporary file in the destination folder and is renamed
into place, so an interrupted run never leaves half a file behind. Files get the mode a plain
`open()` would give them under the user's umask (mkstemp alone makes them 0600).
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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from experiments.console import format_size
from experiments.errors import UserError, disk_full_sentence, is_disk_full

SCHEMA_VERSION = 2
#: One run of a model with one seed lives in `models/<model>/seed-<seed>/`.
SEED_FOLDER_PREFIX = "seed-"


def seed_folder_name(seed: int) -> str:
    return f"{SEED_FOLDER_PREFIX}{seed}"


def parse_seed_folder(name: str) -> int | None:
    """The seed of a `seed-<seed>` folder name, or None for any other name."""
    digits = name[len(SEED_FOLDER_PREFIX):] if name.startswith(SEED_FOLDER_PREFIX) else ""
    return int(digits) if digits.isascii() and digits.isdigit() else None


def _read_umask() -> int:
    """The process's umask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once, at import: os.umask cannot be read without briefly changing it.
UMASK = _read_umask()


class ArtifactError(UserError, OSError):
    """The run folder cannot be written (read-only, disk full, ...); names the path."""


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


#: The run folder's marker (the docs folder's marker file, with kind "run"): `train` writes a run only
#: into a folder that is absent, empty, marked, or an earlier run of this program (RunFolder.claim).
RUN_MARKER = ".report-builder.json"
RUN_MARKER_DATA = {"generator": "report-builder", "kind": "run",
                   "note": "A run folder written by report-builder `train` (its files: docs/guide/artifacts.md); "
                           "`train` writes runs only into folders that carry this marker, or are empty.",
                   "files": []}
#: Every name a run writes at its top level (files and folders), and the transient ones
RUN_ENTRIES = frozenset({"manifest.json", "dataset.json", "metrics.json", "figures", "models", "tensorboard", RUN_MARKER})
TRANSIENT_RUN_ENTRIES = frozenset({".manifest.lock", ".write-check.json", ".run.lock", ".run.users", ".run.settings.json"})
#: write_atomic's temporary files: `.<stem>.<random>.tmp<suffix>`
TEMPORARY_NAME = re.compile(r"\..+\.tmp(\.[A-Za-z0-9]+)?")


def _transient(name: str) -> bool:
    return name in TRANSIENT_RUN_ENTRIES or TEMPORARY_NAME.fullmatch(name) is not None


#: What a cell's checkpoint folder holds: `epoch-NNNN.keras`, `progress.json`, and their temporaries
CHECKPOINT_NAME = re.compile(r"epoch-\d{4,}\.keras|progress\.json|\.(?:epoch-\d{4,}|progress)\.[A-Za-z0-9_]+\.tmp\.(?:keras|json)")
#: What TensorBoard writes in a cell's train/ and validation/ folders
EVENT_FILE_NAME = re.compile(r"events\.out\.tfevents\..+")


#: The list of the files this program wrote in a folder it shares with no record of its own (a
#: cell's checkpoint/, its TensorBoard folders): what remove_written_files may remove there
LEDGER_NAME = ".report-builder-files.json"
#: A write_atomic temporary of one of those files (a random part, then ".tmp"): left by a kill
#: between writing and renaming, never listed, never a name anyone else would give a file
_TEMPORARY_OF = re.compile(r"\.[^/]+\.[A-Za-z0-9_]+\.tmp\.[A-Za-z0-9]+")


def written_names(folder: Path) -> set[str]:
    """The names `folder`'s ledger lists as written by this program (none when it has no ledger,
    or one that does not read: then nothing there is taken for ours)."""
    try:
        names = parse_json_file(Path(folder) / LEDGER_NAME)
    except (OSError, ArtifactFormatError):
        return set()
    return {name for name in names if isinstance(name, str)} if isinstance(names, list) else set()


def record_written(folder: Path, names: Iterable[str]) -> None:
    """Add `names` to `folder`'s ledger, before the files are written: a kill between the two
    leaves a listed name with no file, never a file of ours that is not listed."""
    known = written_names(folder)
    if known | set(names) != known:
        _write_ledger(folder, known | set(names))


def _write_ledger(folder: Path, names: set[str]) -> None:
    write_atomic(Path(folder) / LEDGER_NAME, lambda path: path.write_text(json.dumps(sorted(names), indent=0), encoding="utf-8"))


def remove_written_files(folder: Path, ours: re.Pattern[str], subfolders: Sequence[str] = ()) -> list[Path]:
    """Delete the plain files in `folder` (and in each of its `subfolders`) that this program
    wrote there: those its ledger lists (LEDGER_NAME) whose whole name `ours` matches, and the
    temporaries of such files. Each of these folders left empty goes too, ledger and all.
    Everything else (a file of the same pattern that the ledger does not list, another file, a
    folder, a link) is left alone and returned, so the caller can name it; nothing is removed by
    being inside a folder, or by its name alone."""
    left: list[Path] = []
    for name in subfolders:
        left += remove_written_files(folder / name, ours)
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return left
    listed = written_names(folder)
    for entry in entries:
        if entry.name == LEDGER_NAME or (entry.name in subfolders and entry.is_dir(follow_symlinks=False)):
            continue  # the ledger goes last; a subfolder was emptied above, what is left in it is listed already
        ours_by_record = entry.name in listed or (_TEMPORARY_OF.fullmatch(entry.name) is not None
                                                   and any(entry.name.startswith(f".{Path(name).stem}.") for name in listed))
        if ours_by_record and ours.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            Path(entry.path).unlink(missing_ok=True)
        else:
            left.append(Path(entry.path))
    remaining = {path.name for path in left} & listed  # listed, yet kept: not a name `ours` matches
    if not remaining:
        (Path(folder) / LEDGER_NAME).unlink(missing_ok=True)
    elif remaining != listed:  # the ledger forgets the removed names
        _write_ledger(folder, remaining)
    try:
        folder.rmdir()
    except OSError:  # not empty: someone else's files are in it
        pass
    return sorted(left)


def describe_left_files(folder: Path, left: Sequence[Path]) -> str:
    """One line naming the files `remove_written_files` left in `folder`."""
    names = [str(path.relative_to(folder)) for path in left]
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return f"  left alone in {folder}: {shown} (not written by this program)"


class RunFolder:
    """Paths inside one run folder, `<out>/<run name>/`."""

    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def dataset(self) -> Path:
        return self.root / "dataset.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def figures(self) -> Path:
        return self.root / "figures"

    def figure(self, name: str) -> Path:
        return self.figures / f"{name}.png"

    def model_dir(self, model_name: str) -> Path:
        return self.root / "models" / model_name

    def summary(self, model_name: str) -> Path:
        return self.model_dir(model_name) / "summary.json"

    def seed_run(self, model_name: str, seed: int) -> CellFolder:
        return CellFolder(model_name, seed, self.model_dir(model_name) / seed_folder_name(seed))

    @property
    def lock_file(self) -> Path:
        """Held while the manifest is written and while the chosen model is tested."""
        return self.root / ".manifest.lock"

    @property
    def marker(self) -> Path:
        return self.root / RUN_MARKER

    @property
    def settings_guard(self) -> Path:
        """Held for a moment while a `train` command checks and joins the run's settings."""
        return self.root / ".run.lock"

    @property
    def users_file(self) -> Path:
        """Every `train` command working on the run holds a shared lock on it (see RunSettings)."""
        return self.root / ".run.users"

    @property
    def settings_file(self) -> Path:
        """The settings the `train` commands working on the run now share (RunSettings)."""
        return self.root / ".run.settings.json"

    def claim(self) -> None:
        """Make sure this folder is a run of this program before `train` writes anything into it,
        and mark it as one: UserError (one sentence naming the folder) unless it is absent, empty,
        carries the run marker, or is an earlier run written before the marker existed
        (`looks_like_an_earlier_run`)."""
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            names = []  # absent
        except NotADirectoryError:  # writing the marker said only "File exists" or "Not a directory"
            blocker = next((path for path in (*reversed(self.root.parents), self.root)
                            if path.exists() and not path.is_dir()), self.root)
            raise UserError(f"Refusing to write a run into {self.root}: {blocker} is a file, not a folder; "
                            "choose another --out or --run-name.") from None
        except OSError as error:
            raise ArtifactError(f"cannot read the run folder {self.root}: {error.strerror or error}") from None
        if RUN_MARKER in names:
            data = read_json(self.marker) or {}
            ours = data.get("generator") == RUN_MARKER_DATA["generator"]
            if ours and data.get("kind") == "run":
                return
            kind = data.get("kind")
            what = f"a {kind} folder" if ours and isinstance(kind, str) else "a folder whose marker this program did not write"
            raise UserError(f"Refusing to write a run into {self.root}: its {RUN_MARKER} marks it as {what}, not a run "
                            "folder; choose another --out or --run-name.")
        own = [name for name in names if not _transient(name)]
        if own and not self.looks_like_an_earlier_run(names):
            own.sort(key=lambda name: (name in RUN_ENTRIES, name))  # names a run never writes first
            shown = ", ".join(own[:4]) + (", ..." if len(own) > 4 else "")
            raise UserError(
                f"Refusing to write a run into {self.root}: it holds files this program did not write ({shown}) and no "
                f"{RUN_MARKER} run marker; choose another --out or --run-name, or, if it is a run from an older version, "
                f"mark it with `echo '{{\"generator\": \"report-builder\", \"kind\": \"run\"}}' > {self.marker}`."
            )
        write_json(self.marker, RUN_MARKER_DATA)

    def looks_like_an_earlier_run(self, names: Sequence[str]) -> bool:
        """A run written before the marker existed: nothing at its top level but what a run writes,
        and a manifest.json that reads as this program's (every field of the current format)."""
        if "manifest.json" not in names or not all(name in RUN_ENTRIES or _transient(name) for name in names):
            return False
        if not (self.root / "manifest.json").is_file() or (self.root / "manifest.json").is_symlink():
            return False
        try:
            return Manifest.read(self.manifest) is not None
        except ArtifactFormatError:
            return False

    def check_writable(self) -> None:
        """Fail early, with the folder named, if nothing can be written here."""
        write_json(self.root / ".write-check.json", {"ok": True})
        (self.root / ".write-check.json").unlink(missing_ok=True)


class CellFolder:
    """The folder of one cell (a model and a seed, one training run): `models/<model>/seed-<seed>/`."""

    def __init__(self, model_name: str, seed: int, folder: Path):
        self.model_name = model_name
        self.seed = seed
        self.folder = Path(folder)

    @property
    def label(self) -> str:
        return f"{self.model_name} (seed {self.seed})"

    @property
    def history(self) -> Path:
        return self.folder / "history.json"

    @property
    def state(self) -> Path:
        return self.folder / "state.json"

    @property
    def model_file(self) -> Path:
        return self.folder / "model.keras"

    @property
    def validation_predictions(self) -> Path:
        return self.folder / "validation_predictions.json"

    @property
    def checkpoint_dir(self) -> Path:
        return self.folder / "checkpoint"

    @property
    def lock_file(self) -> Path:
        """Held by the one process that decides about and trains this run."""
        return self.folder / ".cell.lock"

    @property
    def mlflow_link(self) -> Path:
        """With --mlflow: the MLflow run this cell logs to (MlflowLink)."""
        return self.folder / ".mlflow_run.json"

    @property
    def owner_file(self) -> Path:
        """Who holds the lock (pid, host, what it does), for the other processes' messages."""
        return self.folder / ".cell.owner.json"


def files_digest(files: Sequence[str]) -> str:
    """sha256 of a split's file list (one name per line, in order): ties per-image records to it."""
    return hashlib.sha256("\n".join(files).encode("utf-8", "surrogateescape")).hexdigest()



# --------------------------------------------------------------------------- typed records
#
# One record per JSON file a run writes. `to_json()` gives the object written to disk (keys in
# the order the runner has always written them); `from_json(data, path)` checks every field the
# format names and raises ArtifactFormatError naming the file and the field. Keys a record does
# not know are ignored on reading, so older runs with extra keys still read.


class ArtifactFormatError(UserError, ValueError):
    """An artifact file does not hold what its format says; the message names the file and field."""

    def __init__(self, path: Path | str, detail: str):
        super().__init__(f"{path}: {detail}")
        self.path = Path(path)
        self.detail = detail

    def __reduce__(self) -> tuple[Any, ...]:  # crosses process boundaries whole (worker pools, Dask)
        return type(self), (self.path, self.detail)


def _is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Fields:
    """The fields of one JSON object in a file: each getter checks one field's type, or raises
    ArtifactFormatError "<file>: field 'epochs[3].val_accuracy' must be a number or null"."""

    def __init__(self, data: object, path: Path | str, prefix: str = ""):
        if not isinstance(data, dict):
            raise ArtifactFormatError(path, f"field {prefix!r} must be a JSON object" if prefix else "not a JSON object")
        self.data, self.path, self.prefix = data, path, prefix

    def fail(self, name: str, what: str) -> ArtifactFormatError:
        return ArtifactFormatError(self.path, f"field {self.prefix + name!r} {what}")

    def _get(self, name: str, check: Callable[[object], bool], what: str, optional: bool) -> Any:
        value = self.data.get(name)
        if value is None and optional:
            return None
        if not check(value):
            raise self.fail(name, f"must be {what}" + (" or null" if optional else ""))
        return value

    def text(self, name: str, optional: bool = False) -> str | None:
        return self._get(name, lambda value: isinstance(value, str), "a string", optional)

    def integer(self, name: str, optional: bool = False) -> int | None:
        return self._get(name, _is_integer, "an integer", optional)

    def number(self, name: str, optional: bool = False) -> float | None:
        value = self._get(name, _is_number, "a number", optional)
        return None if value is None else float(value)

    def boolean(self, name: str) -> bool:
        return self._get(name, lambda value: isinstance(value, bool), "true or false", False)

    def items(self, name: str, optional: bool = False) -> list[Any]:
        value = self._get(name, lambda value: isinstance(value, list), "a list", optional)
        return [] if value is None else value

    def mapping(self, name: str, optional: bool = False) -> dict[str, Any]:
        value = self._get(name, lambda value: isinstance(value, dict), "a JSON object", optional)
        return {} if value is None else value

    def texts(self, name: str, optional: bool = False) -> list[str]:
        values = self.items(name, optional)
        if not all(isinstance(value, str) for value in values):
            raise self.fail(name, "must list strings")
        return list(values)

    def numbers(self, name: str, optional: bool = False) -> dict[str, float | None]:
        """An object of numbers (or nulls) by name, such as per-class counts."""
        values = self.mapping(name, optional)
        for key, value in values.items():
            if value is not None and not _is_number(value):
                raise self.fail(f"{name}.{key}", "must be a number or null")
        return {str(key): value for key, value in values.items()}

    def child(self, name: str, optional: bool = False) -> Fields:
        return Fields(self.mapping(name, optional), self.path, f"{self.prefix}{name}.")

    def children(self, name: str) -> list[Fields]:
        return [Fields(item, self.path, f"{self.prefix}{name}[{index}].") for index, item in enumerate(self.items(name))]

    def schema_version(self) -> None:
        version = self.data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise self.fail("schema_version", f"is {version!r}, expected {SCHEMA_VERSION}")


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


class Record:
    """What every record shares: reading a file into it and writing it to a file."""

    @classmethod
    def from_json(cls, data: object, path: Path | str) -> Any:
        fields = Fields(data, path)
        fields.schema_version()
        return cls.from_fields(fields)

    @classmethod
    def from_fields(cls, fields: Fields) -> Any:
        raise NotImplementedError

    def to_fields(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **self.to_fields()}

    @classmethod
    def read(cls, path: Path) -> Any:
        """The record at `path`; None when the file is missing; ArtifactFormatError when it is unusable."""
        data = load_json_object(path)
        return None if data is None else cls.from_json(data, path)

    @classmethod
    def read_or_none(cls, path: Path) -> Any:
        """The record at `path`; None when it is missing or unusable, for readers to whom such a
        file means "nothing known" (whoever acts on the file reports it)."""
        try:
            return cls.read(path)
        except ArtifactFormatError:
            return None

    def write(self, path: Path) -> Path:
        return write_json(path, self.to_json())


@dataclass(frozen=True)
class Epoch:
    """One finished epoch of a history. A metric is None when it was not finite (a NaN loss)."""

    epoch: int  # counts from 1; a continuing model goes on from its source's last epoch
    loss: float | None = None
    accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None
    seconds: float | None = None  # wall time of the epoch

    METRICS: ClassVar[tuple[str, ...]] = ("loss", "accuracy", "val_loss", "val_accuracy")
    FIELDS: ClassVar[tuple[str, ...]] = ("epoch", *METRICS, "seconds")

    @classmethod
    def from_fields(cls, fields: Fields) -> Epoch:
        return cls(fields.integer("epoch"), *(fields.number(name, optional=True) for name in cls.METRICS),
                   fields.number("seconds", optional=True))

    def to_fields(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "loss": self.loss, "accuracy": self.accuracy, "val_loss": self.val_loss,
                "val_accuracy": self.val_accuracy, "seconds": self.seconds}

    def get(self, name: str, default: Any = None) -> Any:
        """A field by its JSON name, like a dict's get (the report's analysis reads epochs so)."""
        return getattr(self, name, default)

    def __getitem__(self, name: str) -> Any:
        """A field by its JSON name, like a dict's (the report's analysis reads epochs so)."""
        if name not in self.FIELDS:
            raise KeyError(name)
        return getattr(self, name)


def _epochs(fields: Fields) -> list[Epoch]:
    return [Epoch.from_fields(item) for item in fields.children("epochs")]


@dataclass(frozen=True)
class History(Record):
    """`models/<model>/seed-<seed>/history.json`: one record per finished epoch, in order."""

    model: str
    seed: int
    precision: str | None  # the Keras dtype policy the run trained under
    epochs: list[Epoch]

    @classmethod
    def from_fields(cls, fields: Fields) -> History:
        return cls(fields.text("model"), fields.integer("seed"), fields.text("precision", optional=True), _epochs(fields))

    def to_fields(self) -> dict[str, Any]:
        return {"model": self.model, "seed": self.seed, "precision": self.precision,
                "epochs": [epoch.to_fields() for epoch in self.epochs]}


@dataclass(frozen=True)
class CheckpointProgress(Record):
    """`models/<model>/seed-<seed>/checkpoint/progress.json`: the epochs committed with the
    resume checkpoint `checkpoint` (a file name in the same folder)."""

    checkpoint: str
    epochs: list[Epoch]

    @classmethod
    def from_fields(cls, fields: Fields) -> CheckpointProgress:
        return cls(fields.text("checkpoint"), _epochs(fields))

    def to_fields(self) -> dict[str, Any]:
        return {"checkpoint": self.checkpoint, "epochs": [epoch.to_fields() for epoch in self.epochs]}


@dataclass(frozen=True)
class RunState(Record):
    """`models/<model>/seed-<seed>/state.json`: one run's status and what it was trained from."""

    model: str
    seed: int
    config_hash: str
    data_fingerprint: str
    status: str  # "partial", "complete", "failed" or "diverged"
    epochs_completed: int
    epochs_planned: int | None = None
    wall_seconds: float | None = None
    error: str | None = None
    precision: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    starting_point: str | None = None  # finetune, transfer_extended: sha256 of the source run's history.json

    @classmethod
    def from_fields(cls, fields: Fields) -> RunState:
        return cls(fields.text("model"), fields.integer("seed"), fields.text("config_hash"), fields.text("data_fingerprint"),
                   fields.text("status"), fields.integer("epochs_completed"), fields.integer("epochs_planned", optional=True),
                   fields.number("wall_seconds", optional=True), fields.text("error", optional=True),
                   fields.text("precision", optional=True), fields.text("started_at", optional=True),
                   fields.text("finished_at", optional=True), fields.text("starting_point", optional=True))

    def to_fields(self) -> dict[str, Any]:
        inputs = {"config_hash": self.config_hash, "data_fingerprint": self.data_fingerprint}
        if self.starting_point is not None:
            inputs["starting_point"] = self.starting_point
        return {"model": self.model, "seed": self.seed, **inputs, "status": self.status,
                "epochs_completed": self.epochs_completed, "epochs_planned": self.epochs_planned,
                "wall_seconds": self.wall_seconds, "error": self.error, "precision": self.precision,
                "started_at": self.started_at, "finished_at": self.finished_at}


@dataclass(frozen=True)
class Layer:
    """One layer of a model summary. `trainable` says whether training updates any of its
    parameters; `trainable_params` how many (a nested backbone unfrozen from one of its layers
    on trains only part of its parameters). Files written before `trainable_params` existed
    read it as None: not recorded."""

    name: str
    type: str
    output_shape: str
    params: int
    trainable: bool
    trainable_params: int | None = None

    @classmethod
    def from_fields(cls, fields: Fields) -> Layer:
        params, trainable_params = fields.integer("params"), fields.integer("trainable_params", optional=True)
        if trainable_params is not None and not 0 <= trainable_params <= params:
            raise fields.fail("trainable_params", f"must be a count from 0 to the layer's params ({params})")
        return cls(fields.text("name"), fields.text("type"), fields.text("output_shape"), params,
                   fields.boolean("trainable"), trainable_params)

    def to_fields(self) -> dict[str, Any]:
        data = {"name": self.name, "type": self.type, "output_shape": self.output_shape, "params": self.params,
                "trainable": self.trainable}
        if self.trainable_params is not None:
            data["trainable_params"] = self.trainable_params
        return data


_SUMMARY_HEADER = re.compile(r'^(\s*Model: )"[^"\n]*"', re.MULTILINE)


def summary_text_named(text: str, name: str) -> str:
    """Keras's summary text headed with the study's model `name`. A train_on model trains the
    saved model object it continues, so Keras heads its summary with that model's name
    (transfer_extended's said Model: "transfer"); only the first header is renamed."""
    return _SUMMARY_HEADER.sub(lambda match: f'{match.group(1)}"{name}"', text, count=1)


@dataclass(frozen=True)
class ModelSummary(Record):
    """`models/<model>/summary.json`: the architecture, its parameter counts and Keras's summary text."""

    model: str
    title: str
    description: str
    layers: list[Layer]
    total_params: int
    trainable_params: int
    non_trainable_params: int
    summary_text: str
    # how the model trains (optimizer, learning_rate, weight_decay, label_smoothing, batch_size,
    # epochs, schedule: experiments.config.TrainingSettings); absent in summaries written before
    training: dict[str, Any] | None = None

    @classmethod
    def from_fields(cls, fields: Fields) -> ModelSummary:
        return cls(fields.text("model"), fields.text("title"), fields.text("description"),
                   [Layer.from_fields(item) for item in fields.children("layers")], fields.integer("total_params"),
                   fields.integer("trainable_params"), fields.integer("non_trainable_params"), fields.text("summary_text"),
                   fields.mapping("training", optional=True) or None)

    def to_fields(self) -> dict[str, Any]:
        extra = {"training": self.training} if self.training is not None else {}
        return {"model": self.model, "title": self.title, "description": self.description,
                "layers": [layer.to_fields() for layer in self.layers], "total_params": self.total_params,
                "trainable_params": self.trainable_params, "non_trainable_params": self.non_trainable_params,
                "summary_text": self.summary_text, **extra}


@dataclass(frozen=True)
class ValidationPredictions(Record):
    """`models/<model>/seed-<seed>/validation_predictions.json`: what one finished run's final
    model (the weights that are scored, saved and may be tested) predicts for every validation
    image, in the order of dataset.json's validation files. Paired comparisons of two models
    score them on the same images from these."""

    model: str
    seed: int
    epoch: int  # the epoch whose weights made these predictions (the run's last)
    files_sha256: str  # files_digest of the validation file list they follow
    class_names: list[str]
    labels: list[int]  # true class index per image
    predicted: list[int]  # predicted class index per image
    probability: list[float]  # softmax probability of the predicted class, 4 decimals

    @property
    def correct(self) -> list[bool]:
        return [label == guess for label, guess in zip(self.labels, self.predicted)]

    @property
    def accuracy(self) -> float | None:
        return sum(self.correct) / len(self.labels) if self.labels else None

    def to_fields(self) -> dict[str, Any]:
        return {"model": self.model, "seed": self.seed, "epoch": self.epoch, "files_sha256": self.files_sha256,
                "class_names": list(self.class_names), "accuracy": self.accuracy, "labels": list(self.labels),
                "predicted": list(self.predicted), "probability": list(self.probability)}

    @classmethod
    def from_fields(cls, fields: Fields) -> ValidationPredictions:
        class_names = fields.texts("class_names")
        if len(class_names) < 2:
            raise fields.fail("class_names", "must list two or more class names")
        count = None
        for name in ("labels", "predicted", "probability"):
            values = fields.items(name)
            if count is not None and len(values) != count:
                raise fields.fail(name, f"has {len(values)} entries, but labels has {count}")
            count = len(values)
            for value in values:
                if name == "probability":
                    if not _is_number(value) or not 0.0 <= value <= 1.0:
                        raise fields.fail(name, f"holds {value!r}, not a probability")
                elif not _is_integer(value) or not 0 <= value < len(class_names):
                    raise fields.fail(name, f"holds {value!r}, not a class index below {len(class_names)}")
        return cls(fields.text("model"), fields.integer("seed"), fields.integer("epoch"), fields.text("files_sha256"),
                   class_names, list(fields.data["labels"]), list(fields.data["predicted"]),
                   [float(value) for value in fields.data["probability"]])


# --------------------------------------------------------------------------- the run's own files


def _optional_record(fields: Fields, name: str, parse: Callable[[Fields], Any]) -> Any:
    """A nested object parsed by `parse`, or None when the field is absent or null."""
    return None if fields.data.get(name) is None else parse(fields.child(name))


def _texts_by_name(fields: Fields, name: str) -> dict[str, str | None]:
    """An object of strings (or nulls) by name, such as package versions."""
    values = fields.mapping(name, optional=True)
    for key, value in values.items():
        if value is not None and not isinstance(value, str):
            raise fields.fail(f"{name}.{key}", "must be a string or null")
    return {str(key): value for key, value in values.items()}


def _integers_by_name(fields: Fields, name: str) -> dict[str, int]:
    values = fields.mapping(name)
    for key, value in values.items():
        if not _is_integer(value) or value < 0:
            raise fields.fail(f"{name}.{key}", "must be a count (an integer, 0 or more)")
    return {str(key): value for key, value in values.items()}


@dataclass(frozen=True)
class SkippedEntry:
    """A data file the run left out, and why (manifest.skipped_files, dataset.skipped)."""

    file: str
    reason: str

    @classmethod
    def from_fields(cls, fields: Fields) -> SkippedEntry:
        return cls(fields.text("file"), fields.text("reason"))

    def to_fields(self) -> dict[str, Any]:
        return {"file": self.file, "reason": self.reason}


def _skipped(fields: Fields, name: str) -> list[SkippedEntry]:
    if fields.data.get(name) is None:
        return []
    return [SkippedEntry.from_fields(item) for item in fields.children(name)]


@dataclass(frozen=True)
class DataSource:
    """Where the images came from: kind "download", "folder" or "synthetic", and the URL,
    folder or generator."""

    kind: str
    location: str | None = None

    @classmethod
    def from_fields(cls, fields: Fields) -> DataSource:
        return cls(fields.text("kind"), fields.text("location", optional=True))

    def to_fields(self) -> dict[str, Any]:
        return {"kind": self.kind, "location": self.location}


@dataclass(frozen=True)
class BaseWeights:
    """Where the study's backbone weights came from (training.base_weights): kind "imagenet",
    "none" or "file"; for a file, its path, name and sha256."""

    kind: str
    location: str | None = None
    file: str | None = None
    sha256: str | None = None

    @classmethod
    def from_fields(cls, fields: Fields) -> BaseWeights:
        return cls(fields.text("kind"), fields.text("location", optional=True), fields.text("file", optional=True),
                   fields.text("sha256", optional=True))

    def to_fields(self) -> dict[str, Any]:
        return {"kind": self.kind, "location": self.location, "file": self.file, "sha256": self.sha256}


@dataclass(frozen=True)
class RunEntry:
    """manifest.models[<model>].runs[<seed>]: one cell as its state.json says."""

    status: str
    wall_seconds: float | None = None
    epochs_completed: int | None = None
    error: str | None = None

    @classmethod
    def from_fields(cls, fields: Fields) -> RunEntry:
        return cls(fields.text("status"), fields.number("wall_seconds", optional=True),
                   fields.integer("epochs_completed", optional=True), fields.text("error", optional=True))

    def to_fields(self) -> dict[str, Any]:
        return {"status": self.status, "wall_seconds": self.wall_seconds, "epochs_completed": self.epochs_completed,
                "error": self.error}


@dataclass(frozen=True)
class ModelEntry:
    """manifest.models[<model>]: a model's runs by seed (as text) and their totals."""

    status: str
    wall_seconds: float | None = None
    epochs_completed: int | None = None
    error: str | None = None
    precision: str | None = None
    runs: dict[str, RunEntry] = field(default_factory=dict)

    @classmethod
    def from_fields(cls, fields: Fields) -> ModelEntry:
        runs = fields.child("runs", optional=True)
        return cls(fields.text("status"), fields.number("wall_seconds", optional=True),
                   fields.integer("epochs_completed", optional=True), fields.text("error", optional=True),
                   fields.text("precision", optional=True),
                   {str(seed): RunEntry.from_fields(runs.child(seed)) for seed in runs.data})

    def to_fields(self) -> dict[str, Any]:
        return {"status": self.status, "wall_seconds": self.wall_seconds, "epochs_completed": self.epochs_completed,
                "error": self.error, "precision": self.precision,
                "runs": {seed: entry.to_fields() for seed, entry in self.runs.items()}}


@dataclass(frozen=True)
class StudyModel:
    """manifest.study.models[i]: one model of the study with its recipe as the runner resolved it
    (experiments.study.records.study_record), so that the report reads what the model was
    without reading the config's [models] tables or knowing the built-in models."""

    name: str
    recipe: str  # small_cnn, transfer, finetune, train_on or keras
    title: str = ""  # the recipe's title and description: its own, else built from the recipe
    description: str = ""
    declared: bool = False  # declared by the config's [models.<name>] table (not a built-in model)
    augment: bool = False  # random flips and rotations in training
    rescale: bool = False  # small_cnn: pixels scaled to [-1, 1]
    dropout: float = 0.0
    backbone: str = ""  # transfer: the backbone's key ("mobilenet_v2"); "" for other recipes
    backbone_name: str = ""  # its display name ("MobileNetV2"), as the report writes it
    preprocessing: str = ""  # its input scaling, in words
    weights: str = ""  # transfer: its own weights setting ("": the study's base weights)
    continues: str = ""  # finetune, train_on: the model whose final weights it starts from
    epochs: int = 0  # its own epochs (0: the [training] value)
    unfreeze_from_layer: int | None = None  # finetune: its own (None: training.finetune_from_layer)
    learning_rate_factor: float | None = None  # finetune: its own (None: training.finetune_learning_rate_factor)
    builder: str = ""  # keras: "FILE.py:function" or "module:function"
    training: dict[str, Any] = field(default_factory=dict)  # the training settings it sets itself

    #: The recipes that start from another model's final weights (experiments.models.recipes.CONTINUING_RECIPES).
    CONTINUING: ClassVar[tuple[str, ...]] = ("finetune", "train_on")

    @property
    def continues_model(self) -> str | None:
        """The model it continues, for a continuing recipe (None otherwise)."""
        return self.continues if self.recipe in self.CONTINUING else None

    @classmethod
    def from_fields(cls, fields: Fields) -> StudyModel:
        return cls(
            name=fields.text("name"), recipe=fields.text("recipe"), title=fields.text("title", optional=True) or "",
            description=fields.text("description", optional=True) or "", declared=fields.boolean("declared"),
            augment=fields.boolean("augment"), rescale=fields.boolean("rescale"),
            dropout=fields.number("dropout", optional=True) or 0.0, backbone=fields.text("backbone", optional=True) or "",
            backbone_name=fields.text("backbone_name", optional=True) or "",
            preprocessing=fields.text("preprocessing", optional=True) or "",
            weights=fields.text("weights", optional=True) or "", continues=fields.text("continues", optional=True) or "",
            epochs=fields.integer("epochs", optional=True) or 0,
            unfreeze_from_layer=fields.integer("unfreeze_from_layer", optional=True),
            learning_rate_factor=fields.number("learning_rate_factor", optional=True),
            builder=fields.text("builder", optional=True) or "", training=fields.mapping("training", optional=True))

    def to_fields(self) -> dict[str, Any]:
        return {"name": self.name, "recipe": self.recipe, "title": self.title, "description": self.description,
                "declared": self.declared, "augment": self.augment, "rescale": self.rescale, "dropout": self.dropout,
                "backbone": self.backbone, "backbone_name": self.backbone_name, "preprocessing": self.preprocessing,
                "weights": self.weights, "continues": self.continues, "epochs": self.epochs,
                "unfreeze_from_layer": self.unfreeze_from_layer, "learning_rate_factor": self.learning_rate_factor,
                "builder": self.builder, "training": self.training}


#: study.compare's kinds: each model against the one before it, every model against one, or listed pairs.
PLAN_KINDS = ("previous", "reference", "pairs")


@dataclass(frozen=True)
class ComparisonPairs:
    """manifest.study.compare: the comparisons the study planned, resolved to pairs of its
    models (first, second: first minus second), in plan order."""

    kind: str  # one of PLAN_KINDS
    pairs: tuple[tuple[str, str], ...] = ()
    reference: str | None = None  # kind "reference": the model every other one is compared with

    @classmethod
    def from_fields(cls, fields: Fields) -> ComparisonPairs:
        kind = fields.text("kind")
        if kind not in PLAN_KINDS:
            raise fields.fail("kind", f"is {kind!r}, not one of {', '.join(PLAN_KINDS)}")
        pairs = fields.items("pairs")
        if not all(isinstance(pair, list) and len(pair) == 2 and all(isinstance(name, str) for name in pair) for pair in pairs):
            raise fields.fail("pairs", "must list [first, second] pairs of model names")
        return cls(kind, tuple((first, second) for first, second in pairs), fields.text("reference", optional=True))

    def to_fields(self) -> dict[str, Any]:
        return {"kind": self.kind, "pairs": [list(pair) for pair in self.pairs], "reference": self.reference}


@dataclass(frozen=True)
class StudyRecord:
    """manifest.study: what the runner resolved from the study's config for the report, written
    with every manifest (experiments.study.records.study_record): the models in study order
    with their recipes, the planned comparisons, the config's settings (dotted keys, see
    flatten_config) that applied to the models that ran, and what in the config could not be
    read back (for a manifest upgraded from an older one; a config that `train` accepted has none)."""

    models: list[StudyModel]
    compare: ComparisonPairs
    settings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @classmethod
    def from_fields(cls, fields: Fields) -> StudyRecord:
        return cls([StudyModel.from_fields(item) for item in fields.children("models")],
                   ComparisonPairs.from_fields(fields.child("compare")), fields.texts("settings"),
                   fields.texts("problems", optional=True))

    def to_fields(self) -> dict[str, Any]:
        return {"models": [model.to_fields() for model in self.models], "compare": self.compare.to_fields(),
                "settings": list(self.settings), "problems": list(self.problems)}

    @property
    def names(self) -> list[str]:
        """The study's models, in study order."""
        return [model.name for model in self.models]


def flatten_config(config: object, prefix: str = "") -> list[tuple[str, str]]:
    """Nested config as sorted ``(dotted.key, json value)`` rows (manifest.study.settings names
    the keys that applied)."""
    if not isinstance(config, dict):
        return [(prefix or "config", json.dumps(config, sort_keys=True, ensure_ascii=False))]
    rows: list[tuple[str, str]] = []
    for key in sorted(config, key=str):
        path = f"{prefix}.{key}" if prefix else str(key)
        value = config[key]
        if isinstance(value, dict) and value:
            rows.extend(flatten_config(value, path))
        else:
            rows.append((path, json.dumps(value, sort_keys=True, ensure_ascii=False)))
    return rows


@dataclass(frozen=True)
class Execution:
    """manifest.execution: how the command that wrote the manifest ran its cells (train
    --workers, --scheduler, --task, --strategy; experiments.scale)."""

    workers: int | None = None  # cells at once in this command
    scheduler: str | None = None  # None (a local pool), "local" (a Dask LocalCluster) or "remote"
    task_index: int | None = None  # a job-array task's index and count, or None
    task_count: int | None = None
    strategy: str = "none"  # "none" or "mirrored"
    host: str | None = None

    @classmethod
    def from_fields(cls, fields: Fields) -> Execution:
        return cls(fields.integer("workers", optional=True), fields.text("scheduler", optional=True),
                   fields.integer("task_index", optional=True), fields.integer("task_count", optional=True),
                   fields.text("strategy", optional=True) or "none", fields.text("host", optional=True))

    def to_fields(self) -> dict[str, Any]:
        return {"workers": self.workers, "scheduler": self.scheduler, "task_index": self.task_index,
                "task_count": self.task_count, "strategy": self.strategy, "host": self.host}


@dataclass(frozen=True)
class Manifest(Record):
    """`manifest.json`: what ran, where and with what, and the run's status. `models` is derived
    from the cells' state.json files each time it is written (experiments.study.manifest.write_manifest)."""

    run_name: str
    config: dict[str, Any]  # the resolved config (experiments.config.StudyConfig.to_dict)
    config_hash: str
    status: str  # "running", "complete", "failed", "interrupted" (or "healing"'s carry-over of those)
    seeds: list[int]
    models: dict[str, ModelEntry] = field(default_factory=dict)
    data_fingerprint: str | None = None
    data_source: DataSource | None = None
    skipped_files: list[SkippedEntry] = field(default_factory=list)
    base_weights: BaseWeights | None = None
    versions: dict[str, str | None] = field(default_factory=dict)
    devices: list[str] = field(default_factory=list)
    hardware: dict[str, Any] = field(default_factory=dict)  # platform, processor, cpu_count, gpus, cpu_kernels
    git_commit: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    execution: Execution | None = None
    wall_seconds: float | None = None
    study: StudyRecord | None = None  # None in a manifest written before it was recorded (scripts/upgrade_manifest.py)

    @classmethod
    def from_fields(cls, fields: Fields) -> Manifest:
        seeds = fields.items("seeds", optional=True)
        if not all(_is_integer(seed) for seed in seeds):
            raise fields.fail("seeds", "must list integers")
        models = fields.child("models", optional=True)
        return cls(
            run_name=fields.text("run_name"), config=fields.mapping("config"), config_hash=fields.text("config_hash"),
            status=fields.text("status"), seeds=list(seeds),
            models={str(name): ModelEntry.from_fields(models.child(name)) for name in models.data},
            data_fingerprint=fields.text("data_fingerprint", optional=True),
            data_source=_optional_record(fields, "data_source", DataSource.from_fields),
            skipped_files=_skipped(fields, "skipped_files"),
            base_weights=_optional_record(fields, "base_weights", BaseWeights.from_fields),
            versions=_texts_by_name(fields, "versions"), devices=fields.texts("devices", optional=True),
            hardware=fields.mapping("hardware", optional=True), git_commit=fields.text("git_commit", optional=True),
            started_at=fields.text("started_at", optional=True), finished_at=fields.text("finished_at", optional=True),
            execution=_optional_record(fields, "execution", Execution.from_fields),
            wall_seconds=fields.number("wall_seconds", optional=True),
            study=_optional_record(fields, "study", StudyRecord.from_fields),
        )

    def to_fields(self) -> dict[str, Any]:
        data = {
            "run_name": self.run_name, "config": self.config, "config_hash": self.config_hash,
            "data_fingerprint": self.data_fingerprint,
            "data_source": self.data_source.to_fields() if self.data_source else None,
            "skipped_files": [item.to_fields() for item in self.skipped_files],
            "base_weights": self.base_weights.to_fields() if self.base_weights else None,
            "versions": self.versions, "devices": self.devices, "hardware": self.hardware, "git_commit": self.git_commit,
            "started_at": self.started_at, "finished_at": self.finished_at, "status": self.status, "seeds": self.seeds,
            "models": {name: entry.to_fields() for name, entry in self.models.items()},
        }
        if self.execution is not None:
            data["execution"] = self.execution.to_fields()
        if self.wall_seconds is not None:
            data["wall_seconds"] = self.wall_seconds
        if self.study is not None:
            data["study"] = self.study.to_fields()
        return data


@dataclass(frozen=True)
class SplitFiles:
    """dataset.splits[<split>]: how many images, how many of each class, and which files."""

    count: int
    label_counts: dict[str, int]
    files: list[str]

    @classmethod
    def from_fields(cls, fields: Fields) -> SplitFiles:
        files = fields.texts("files", optional=True)
        return cls(fields.integer("count"), _integers_by_name(fields, "label_counts"), files)

    def to_fields(self) -> dict[str, Any]:
        return {"count": self.count, "label_counts": self.label_counts, "files": self.files}


@dataclass(frozen=True)
class MajorityBaseline:
    """Always predicting the training split's most common class (ties: the first by name), and
    its accuracy on each split (None for an empty split)."""

    class_name: str
    rule: str
    accuracy: dict[str, float | None]

    @classmethod
    def from_fields(cls, fields: Fields) -> MajorityBaseline:
        accuracy = fields.numbers("accuracy")
        for split, value in accuracy.items():
            if value is not None and not 0.0 <= value <= 1.0:
                raise fields.fail(f"accuracy.{split}", f"is {value!r}, not an accuracy between 0 and 1")
        return cls(fields.text("class_name"), fields.text("rule"), {key: None if value is None else float(value)
                                                                     for key, value in accuracy.items()})

    def to_fields(self) -> dict[str, Any]:
        return {"class_name": self.class_name, "rule": self.rule, "accuracy": self.accuracy}


@dataclass(frozen=True)
class Dataset(Record):
    """`dataset.json`: the classes, the splits with their files, the majority baseline and the
    files left out. File paths are relative to the data root."""

    class_names: list[str]
    image_size: list[int]  # height, width
    seed: int  # the seed of the validation/test split
    splits: dict[str, SplitFiles]  # "train", "validation", "test"
    test_fraction: float | None = None
    majority_baseline: MajorityBaseline | None = None
    skipped: list[SkippedEntry] = field(default_factory=list)
    source: DataSource | None = None
    fingerprint: str | None = None

    @classmethod
    def from_fields(cls, fields: Fields) -> Dataset:
        class_names = fields.texts("class_names")
        if len(class_names) < 2:
            raise fields.fail("class_names", "must list two or more class names")
        image_size = fields.items("image_size")
        if len(image_size) != 2 or not all(_is_integer(side) and side > 0 for side in image_size):
            raise fields.fail("image_size", "must be [height, width] in pixels")
        splits = fields.child("splits")
        return cls(class_names, list(image_size), fields.integer("seed"),
                   {str(name): SplitFiles.from_fields(splits.child(name)) for name in splits.data},
                   fields.number("test_fraction", optional=True),
                   _optional_record(fields, "majority_baseline", MajorityBaseline.from_fields), _skipped(fields, "skipped"),
                   _optional_record(fields, "source", DataSource.from_fields), fields.text("fingerprint", optional=True))

    def to_fields(self) -> dict[str, Any]:
        data: dict[str, Any] = {"class_names": self.class_names, "image_size": self.image_size, "seed": self.seed}
        if self.source is not None:
            data["source"] = self.source.to_fields()
        if self.fingerprint is not None:
            data["fingerprint"] = self.fingerprint
        return {**data, "splits": {name: split.to_fields() for name, split in self.splits.items()},
                "test_fraction": self.test_fraction,
                "majority_baseline": self.majority_baseline.to_fields() if self.majority_baseline else None,
                "skipped": [item.to_fields() for item in self.skipped]}

    def validation_files_sha256(self) -> str | None:
        """files_digest of the validation file list, as validation_predictions.json's files_sha256
        records it (None when this file does not list the validation files)."""
        validation = self.splits.get("validation")
        return files_digest(validation.files) if validation is not None and validation.files else None


@dataclass(frozen=True)
class Selection:
    """metrics.selection: the rule, and the validation scores it chose by."""

    metric: str
    rule: str
    candidates: dict[str, float | None]  # model -> mean over seeds of the last epoch's val_accuracy
    seed_candidates: dict[str, float | None]  # the chosen model's seed (as text) -> its last val_accuracy

    @classmethod
    def from_fields(cls, fields: Fields) -> Selection:
        return cls(fields.text("metric"), fields.text("rule"), fields.numbers("candidates"),
                   fields.numbers("seed_candidates", optional=True))

    def to_fields(self) -> dict[str, Any]:
        return {"metric": self.metric, "rule": self.rule, "candidates": self.candidates,
                "seed_candidates": self.seed_candidates}


@dataclass(frozen=True)
class TestPrediction:
    """What the chosen model predicted for one test file (class names), with the probability."""

    __test__ = False  # not a pytest test class, despite the name

    file: str
    label: str
    predicted: str
    probability: float

    @classmethod
    def from_fields(cls, fields: Fields) -> TestPrediction:
        return cls(fields.text("file"), fields.text("label"), fields.text("predicted"), fields.number("probability"))

    def to_fields(self) -> dict[str, Any]:
        return {"file": self.file, "label": self.label, "predicted": self.predicted, "probability": self.probability}


@dataclass(frozen=True)
class TestEvaluation:
    """metrics.test: the one evaluation of the chosen model and seed on the test split."""

    __test__ = False  # not a pytest test class, despite the name

    model: str
    seed: int
    loss: float | None
    accuracy: float | None
    correct: int
    total: int
    class_names: list[str]
    confusion_matrix: list[list[int]]  # [true class][predicted class]
    predictions: list[TestPrediction]

    @classmethod
    def from_fields(cls, fields: Fields) -> TestEvaluation:
        class_names = fields.texts("class_names")
        matrix = fields.items("confusion_matrix")
        if (len(matrix) != len(class_names) or not all(isinstance(row, list) and len(row) == len(class_names) for row in matrix)
                or not all(_is_integer(cell) and cell >= 0 for row in matrix for cell in row)):
            raise fields.fail("confusion_matrix", f"must be {len(class_names)} rows of {len(class_names)} counts, one per class")
        correct, total = fields.integer("correct"), fields.integer("total")
        if not 0 <= correct <= total:
            raise fields.fail("correct", f"is {correct}, not between 0 and total ({total})")
        return cls(fields.text("model"), fields.integer("seed"), fields.number("loss", optional=True),
                   fields.number("accuracy", optional=True), correct, total, class_names,
                   [list(row) for row in matrix], [TestPrediction.from_fields(item) for item in fields.children("predictions")])

    def to_fields(self) -> dict[str, Any]:
        return {"model": self.model, "seed": self.seed, "loss": self.loss, "accuracy": self.accuracy,
                "correct": self.correct, "total": self.total, "class_names": self.class_names,
                "confusion_matrix": self.confusion_matrix, "predictions": [item.to_fields() for item in self.predictions]}


@dataclass(frozen=True)
class ModelScore:
    """metrics.validation[<model>]: means over seeds of the last epoch's validation loss and accuracy."""

    loss: float | None
    accuracy: float | None

    @classmethod
    def from_fields(cls, fields: Fields) -> ModelScore:
        return cls(fields.number("loss", optional=True), fields.number("accuracy", optional=True))

    def to_fields(self) -> dict[str, Any]:
        return {"loss": self.loss, "accuracy": self.accuracy}


@dataclass(frozen=True)
class Metrics(Record):
    """`metrics.json`: the choice on validation and the one test evaluation of the choice."""

    config_hash: str
    data_fingerprint: str
    selection: Selection
    chosen_model: str | None
    chosen_seed: int | None
    validation: dict[str, ModelScore]
    test: TestEvaluation | None = None
    chosen_history_sha256: str | None = None  # the test score is reused only for this training

    @classmethod
    def from_fields(cls, fields: Fields) -> Metrics:
        validation = fields.child("validation", optional=True)
        return cls(fields.text("config_hash"), fields.text("data_fingerprint"), Selection.from_fields(fields.child("selection")),
                   fields.text("chosen_model", optional=True), fields.integer("chosen_seed", optional=True),
                   {str(name): ModelScore.from_fields(validation.child(name)) for name in validation.data},
                   _optional_record(fields, "test", TestEvaluation.from_fields),
                   fields.text("chosen_history_sha256", optional=True))

    def to_fields(self) -> dict[str, Any]:
        data = {"config_hash": self.config_hash, "data_fingerprint": self.data_fingerprint,
                "selection": self.selection.to_fields(), "chosen_model": self.chosen_model, "chosen_seed": self.chosen_seed}
        if self.chosen_history_sha256 is not None:
            data["chosen_history_sha256"] = self.chosen_history_sha256
        if self.test is not None:
            data["test"] = self.test.to_fields()
        return {**data, "validation": {name: score.to_fields() for name, score in self.validation.items()}}


# --------------------------------------------------------------------------- a cell's side files
#
# Two small files beside a cell's state, read where a missing or unreadable one simply means
# "nothing known": `read_or_none` gives None for those rather than an error. Files written
# before they carried a schema_version still read.


class SideRecord(Record):
    """A record of a side file: written with the schema version, read without insisting on it."""

    @classmethod
    def from_json(cls, data: object, path: Path | str) -> Any:
        fields = Fields(data, path)
        if "schema_version" in fields.data:
            fields.schema_version()
        return cls.from_fields(fields)


@dataclass(frozen=True)
class CellOwner(SideRecord):
    """`models/<model>/seed-<seed>/.cell.owner.json`: who holds the cell's lock and what for, while
    it is held (deleted on release). Other processes read it for their messages and to tell a
    live holder from a dead one."""

    pid: int
    host: str
    task: str  # in words: "training transfer, seed 1337"
    since: str | None = None  # ISO time the lock was taken

    @classmethod
    def from_fields(cls, fields: Fields) -> CellOwner:
        return cls(fields.integer("pid"), fields.text("host"), fields.text("task"), fields.text("since", optional=True))

    def to_fields(self) -> dict[str, Any]:
        return {"pid": self.pid, "host": self.host, "task": self.task, "since": self.since}


@dataclass(frozen=True)
class MlflowLink(SideRecord):
    """`models/<model>/seed-<seed>/.mlflow_run.json` (with --mlflow): the MLflow store, experiment
    and run this cell logs to, so a resumed or skipped cell continues that run."""

    tracking_uri: str
    experiment_id: str
    run_id: str

    @classmethod
    def from_fields(cls, fields: Fields) -> MlflowLink:
        return cls(fields.text("tracking_uri"), fields.text("experiment_id"), fields.text("run_id"))

    def to_fields(self) -> dict[str, Any]:
        return {"tracking_uri": self.tracking_uri, "experiment_id": self.experiment_id, "run_id": self.run_id}


@dataclass(frozen=True)
class RunSettings(SideRecord):
    """`<run>/.run.settings.json`: the settings (study config hash) of the `train` commands
    working on the run now, written by the first of them; meaningful only while one holds
    `<run>/.run.users` (experiments.study.locks.hold_run_settings)."""

    config_hash: str
    settings: dict[str, Any]  # experiments.config.hashed_settings, to name what differs
    pid: int
    host: str
    since: str | None = None

    @classmethod
    def from_fields(cls, fields: Fields) -> RunSettings:
        return cls(fields.text("config_hash"), fields.mapping("settings"), fields.integer("pid"), fields.text("host"),
                   fields.text("since", optional=True))

    def to_fields(self) -> dict[str, Any]:
        return {"config_hash": self.config_hash, "settings": self.settings, "pid": self.pid, "host": self.host, "since": self.since}


def utc_now() -> str:
    """Now in UTC, to the second, as every artifact records a time."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def utc_now_precise() -> str:
    """Now, to the millisecond: states are compared with a command's start time."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


# --------------------------------------------------------------------------- one run folder, read for the report
#
# load_run_folder is the one reader of a finished (or unfinished) run for the report: every file
# the report uses is read and checked here, once, into the records above, and whatever is
# missing or unusable becomes a problem note (or, without a usable manifest, one RunFolderError).
# The report's views take these records and never read a file.

#: The command that writes a run again; the loader's sentences quote it.
RERUN_COMMAND = "python -m report_builder train"


class RunFolderError(UserError):
    """The run folder cannot be read at all (its manifest is missing, unusable or from an older
    version): one sentence naming the path."""


def check_epochs(epochs: object, what: str = "model") -> list[Epoch]:
    """The one check of a history's epochs (History.epochs, or a list of JSON objects): each epoch
    number once and in increasing order (a history lists each finished epoch once, so a repeated
    one would be counted twice), accuracies between 0 and 1, every metric a number or null. A
    metric that is not finite (a NaN loss) becomes None. ValueError naming `what` ("baseline
    (seed 1337)") and the epoch otherwise. An object without "epoch" counts from 1 by position."""
    if epochs is None:
        return []
    if isinstance(epochs, (str, bytes)) or not isinstance(epochs, Sequence):
        raise ValueError(f"history of {what}: 'epochs' must be a list, got {type(epochs).__name__}")
    checked: list[Epoch] = []
    for index, raw in enumerate(epochs):
        if not isinstance(raw, (Epoch, Mapping)):
            raise ValueError(f"history of {what}: epoch entry {index + 1} must be an object, got {raw!r}")
        number = raw.get("epoch", index + 1)
        if not _is_integer(number):
            raise ValueError(f"history of {what}: epoch entry {index + 1} has a non-integer epoch {number!r}")
        if checked and number <= checked[-1].epoch:
            where = "appears twice" if any(epoch.epoch == number for epoch in checked) else f"comes after epoch {checked[-1].epoch}"
            raise ValueError(f"history of {what}: epoch {number} {where} (entry {index + 1}); a history lists "
                             "each finished epoch once, in order")
        where = f"history of {what}, epoch {number}"
        values = {name: _checked_metric(raw.get(name), f"{where}: {name}", name.endswith("accuracy"))
                  for name in ("accuracy", "val_accuracy", "loss", "val_loss", "seconds")}
        checked.append(Epoch(number, **values))
    return checked


def _checked_metric(value: object, what: str, accuracy: bool) -> float | None:
    """A finite float, or None for null, NaN or infinity; ValueError for anything else (and, for
    an accuracy, for a value outside 0..1)."""
    if value is None:
        return None
    if not _is_number(value):
        raise ValueError(f"{what} must be a number or null, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        return None
    if accuracy and not 0.0 <= number <= 1.0:
        raise ValueError(f"{what} must lie between 0 and 1, got {number!r}")
    return number


@dataclass
class SeedRun:
    """What one ``models/<model>/seed-<seed>/`` folder holds, read and checked."""

    seed: int
    epochs: list[Epoch] | None  # the checked history (check_epochs); None with `error`
    precision: str | None
    epochs_planned: int | None  # state.json's plan for this run
    predictions: ValidationPredictions | None = None
    error: str | None = None  # why the history cannot be used
    started_at: str | None = None  # state.json: when the cell's last training call started and finished
    finished_at: str | None = None


@dataclass
class ModelFiles:
    """One model's folder: its summary and the runs of it the manifest lists, in seed order."""

    name: str
    summary: ModelSummary | None
    runs: list[SeedRun]


@dataclass
class RunRecords:
    """One run folder as the report uses it: typed, checked records, and the problems found in
    reading them (each names its file; none stops the report)."""

    folder: Path
    manifest: Manifest
    study: StudyRecord
    dataset: Dataset | None
    metrics: Metrics | None
    models: dict[str, ModelFiles]  # every model of the study, in study order
    figures: list[str]  # the names of the regular files in figures/ (links and special files left out)
    problems: list[str] = field(default_factory=list)


def load_run_folder(path: Path | str) -> RunRecords:
    """Read a run folder for the report: RunFolderError, one sentence naming the path, when it has
    no usable manifest (or was written by an older version); every other missing or unusable file
    is a problem note in RunRecords.problems and its record is None."""
    folder = Path(path)
    if not folder.is_dir():
        raise RunFolderError(f"artifact folder does not exist: {folder}")
    problems: list[str] = []
    manifest = _read_manifest(folder / "manifest.json", problems)
    study = _manifest_study(folder / "manifest.json", manifest)
    _reject_seedless_models(folder, study.names)
    dataset = _read_record(Dataset, folder / "dataset.json", problems)
    metrics = _read_record(Metrics, folder / "metrics.json", problems)
    problems += study.problems  # what of the config no longer read, when the manifest was upgraded
    models = {}
    for name in study.names:
        model_dir = folder / "models" / name
        runs = _listed_runs(name, manifest.models.get(name), _read_seed_runs(model_dir, problems), problems)
        models[name] = ModelFiles(name, _read_record(ModelSummary, model_dir / "summary.json", problems), runs)
    return RunRecords(folder, manifest, study, dataset, metrics, models, _regular_figures(folder), problems)


def older_schema_error(folder: Path, detail: str) -> RunFolderError:
    """The one error for a run folder written by an older version of the study."""
    return RunFolderError(
        f"the run in {folder} was written by an older version of the study ({detail}); "
        f"this report needs artifact schema {SCHEMA_VERSION}, with one training run per seed. "
        f"Rerun `{RERUN_COMMAND}` to regenerate it."
    )


def _read_object(path: Path, problems: list[str], required: bool = False) -> dict[str, Any] | None:
    """A JSON object of the current schema. A missing or broken optional file is a problem note
    (or nothing, when missing); a required one is a RunFolderError."""
    try:
        data = load_json_object(path)
    except ArtifactFormatError as error:
        if required:
            message = f"is {error.detail}" if error.detail.startswith("not ") else f"{error.detail}"
            raise RunFolderError(f"artifact file {path} {message}") from None
        problems.append(f"{_relative_name(path)}: {error.detail}")
        return None
    if data is None:
        if required:
            raise RunFolderError(f"required artifact file is missing: {path}")
        return None
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        message = f"schema_version is {version!r}, expected {SCHEMA_VERSION}"
        if required and _is_integer(version) and 0 < version < SCHEMA_VERSION:
            raise older_schema_error(path.parent, f"{path.name} has schema_version {version}")
        if required:
            raise RunFolderError(f"artifact file {path}: {message}")
        problems.append(f"{_relative_name(path)}: {message}")
        return None
    return data


def _read_record(record_type: type, path: Path, problems: list[str]) -> Any:
    """The record at `path`, or None when it is missing or unusable; an unusable one becomes a
    problem note naming the file and the field."""
    data = _read_object(path, problems)
    if data is None:
        return None
    try:
        return record_type.from_json(data, path)
    except ArtifactFormatError as error:
        problems.append(f"{_relative_name(path)}: {error.detail}")
        return None


def _read_manifest(path: Path, problems: list[str]) -> Manifest:
    """The run's manifest.json; RunFolderError naming the file (and field) when it is missing or
    unusable: without it there is no report."""
    data = _read_object(path, problems, required=True)
    try:
        return Manifest.from_json(data, path)
    except ArtifactFormatError as error:
        raise RunFolderError(f"artifact file {path}: {error.detail}") from None


def _manifest_study(path: Path, manifest: Manifest) -> StudyRecord:
    """The manifest's study record; RunFolderError for a manifest written before it recorded one."""
    if manifest.study is None:
        raise RunFolderError(
            f"artifact file {path} was written before manifests recorded the study's models and plan "
            f"(its \"study\" field); run `{RERUN_COMMAND}` with the run's config (it trains nothing that is done and "
            f"rewrites the manifest), or `python scripts/upgrade_manifest.py {path}`, which adds the field from the "
            "manifest's own config and changes nothing else.")
    return manifest.study


def _reject_seedless_models(folder: Path, names: Iterable[str]) -> None:
    """older_schema_error for a schema-1 folder of one of the models `names` (history.json, no seed folders)."""
    for name in names:
        model_dir = folder / "models" / name
        if (model_dir / "history.json").is_file() and not seed_folders(model_dir):
            raise older_schema_error(folder, f"models/{name}/history.json and no seed-<seed>/ folders")


def seed_folders(model_dir: Path) -> list[tuple[int, Path]]:
    """A model's ``seed-<seed>/`` folders as ``(seed, path)``, seeds in numeric order."""
    if not model_dir.is_dir():
        return []
    found = []
    for path in model_dir.iterdir():
        seed = parse_seed_folder(path.name)
        if seed is not None and path.is_dir():
            found.append((seed, path))
    return sorted(found)


def _read_seed_runs(model_dir: Path, problems: list[str]) -> list[SeedRun]:
    """Every seed folder of a model that has a readable history, in numeric seed order; its
    history checked once (check_epochs)."""
    runs = []
    for seed, folder in seed_folders(model_dir):
        data = _read_object(folder / "history.json", problems)
        if data is None:
            continue
        state = _read_record(RunState, folder / "state.json", problems)
        epochs_planned = state.epochs_planned if state is not None else None
        times = {"started_at": state.started_at, "finished_at": state.finished_at} if state is not None else {}
        predictions = _read_record(ValidationPredictions, folder / "validation_predictions.json", problems)
        what = f"{model_dir.name} (seed {seed})"
        try:
            history = History.from_json(data, folder / "history.json")
            epochs = check_epochs(history.epochs, what)  # values in range, each epoch once, in order
        except ArtifactFormatError as error:
            detail, error_text = error.detail, f"history of {what}: {error.detail}"
        except ValueError as error:
            detail = error_text = str(error)
        else:
            runs.append(SeedRun(seed, epochs, history.precision or None, epochs_planned, predictions, **times))
            continue
        # the model page says why its curves are missing; the method page (and render's warning) name the file
        problems.append(f"{_relative_name(folder / 'history.json')}: {detail}")
        runs.append(SeedRun(seed, None, None, epochs_planned, predictions, error_text, **times))
    return runs


def _listed_runs(name: str, entry: ModelEntry | None, runs: list[SeedRun], problems: list[str]) -> list[SeedRun]:
    """The runs manifest.json lists for a model: a seed folder it does not list (trained under other
    settings, which the manifest, derived from the cells that match the run's config, leaves out)
    is named as a problem and left out, so the report and the manifest agree on which runs exist."""
    listed = None if entry is None else set(entry.runs)
    if listed is not None and not listed:
        return runs  # a manifest that records no runs per seed (older runs): every seed folder counts
    kept = [run for run in runs if listed is not None and str(run.seed) in listed]
    left_out = sorted(run.seed for run in runs if run not in kept)
    if left_out:
        seeds = ", ".join(str(seed) for seed in left_out)
        problems.append(f"models/{name}/: seed folder(s) {seeds} are not runs of this study in manifest.json "
                        "(trained under other settings, or not yet counted); the report leaves them out")
    return kept


def _relative_name(path: Path) -> str:
    """A short, stable name for a problem note (no absolute paths in the report)."""
    parts = path.parts
    if "models" in parts:
        return "/".join(parts[parts.index("models") :])
    return path.name


def is_regular_file_of(folder: Path, relative: Path) -> bool:
    """True for a regular file inside the run folder: not a link, not a special file, and not
    reached through a linked folder (only the run's own files are published)."""
    path = folder / relative
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        return path.resolve().is_relative_to(folder.resolve()) and not any(
            (folder / parent).is_symlink() for parent in relative.parents if parent != Path(".")
        )
    except OSError:
        return False


def _regular_figures(folder: Path) -> list[str]:
    """The names of the regular files directly in the run's figures/ folder (is_regular_file_of), sorted."""
    try:
        names = [entry.name for entry in os.scandir(folder / "figures")]
    except OSError:
        return []
    return sorted(name for name in names if is_regular_file_of(folder, Path("figures") / name))
