"""Replace a folder the program owns, whole, without touching what it did not write.

``render`` writes the report's pages into ``docs/`` and ``build`` writes the site into
``site/``. Both go through :func:`publish_tree`:

1. A lock beside the target (``.<name>.lock``) lets one writer at a time in; a second waits.
2. The target must be missing, empty, or carry the marker file ``.report-builder.json`` (of the
   same kind: docs or site) that lists the files an earlier call wrote there. Anything else (a
   folder of the user's, a run folder, the data, the project root) is refused with one sentence,
   before anything is written.
3. The new tree is written into a staging folder beside the target. Files in the target that
   the marker does not list (hand-written pages such as ``docs/guide/``) are hard-linked into it
   (same file, same inode); folders are recreated with their mode, owner and times. A file that
   cannot be hard-linked (another file system, a mount point) stops the call with one sentence.
4. The staging folder and the target are swapped in one step (Linux ``renameat2`` with
   ``RENAME_EXCHANGE``; elsewhere two renames, undone by the next call if a kill falls between).
5. The old tree, now in the staging folder, is removed: the files its marker listed, and links
   to files that are still in the new tree. Anything else is kept and named.

Which folders beside the target are report-builder's own is written down in a journal
(``.<name>.publish.json``) before they are created, with what they hold, so a later call can
finish what a killed one started: a folder is never taken for ours because of its name or
because it holds a marker.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import secrets
import shutil
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from experiments.artifacts.files import ArtifactFormatError, parse_json_file, read_json, write_json
from experiments.artifacts.run_records import Manifest
from experiments.errors import UserError

MARKER = ".report-builder.json"
GENERATOR = "report-builder"


class PublishError(UserError):
    """A target folder cannot be written safely; the message names the path."""


def _describe(error: OSError) -> str:
    return error.strerror or str(error)


# --------------------------------------------------------------------------- the marker


def read_marker(folder: Path, kind: str | None = None) -> set[str] | None:
    """The files a marker in ``folder`` lists (POSIX relative paths), or None without a marker.

    Raises :class:`PublishError` for a marker that is not report-builder's, or of another kind.
    """
    path = folder / MARKER
    if path.is_symlink() or not path.is_file():
        return None
    try:
        data = parse_json_file(path)
    except (OSError, ArtifactFormatError) as error:
        detail = error.detail if isinstance(error, ArtifactFormatError) else _describe(error)
        raise PublishError(f"{path} is not a readable report-builder marker ({detail}); "
                           "remove it only if the folder holds nothing of yours") from None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(data, dict) or data.get("generator") != GENERATOR or not isinstance(files, list) \
            or not all(isinstance(name, str) for name in files):
        raise PublishError(f"{path} is not a report-builder marker; refusing to write into {folder}")
    found_kind = data.get("kind", kind)
    if kind is not None and found_kind != kind:
        raise PublishError(f"refusing to write into {folder}: it holds a {found_kind} folder, not a {kind} folder")
    return {name for name in files if _is_safe_relative(name)}


def marker_text(kind: str, files: Iterable[str], protected: Iterable[str] = ()) -> str:
    """The marker's text. ``protected`` names folders no later output may go into (for docs: the
    run they were rendered from, relative to the docs folder's parent), so that ``build`` can
    refuse them too, and the data that run read (:func:`protected_folders`). Only what the
    render was given goes in: the same artifacts rendered to the same place give the same
    marker on any machine, whatever folders exist there."""
    data = {"generator": GENERATOR, "kind": kind,
            "note": "Files listed here were written by report-builder and are replaced on the next run; "
                    "every other file in this folder is kept.",
            "files": sorted(set(files))}
    if protected:
        data["protected"] = sorted(set(protected))
    return json.dumps(data, indent=2) + "\n"


def protected_folders(folder: Path) -> list[tuple[Path, str]]:
    """The folders a marker says must not receive output, as (folder, description) pairs
    (recorded relative to the folder that holds ``folder``), and the data folders that a run
    folder among them read (its manifest's data location, where such a folder exists here)."""
    try:
        data = parse_json_file(folder / MARKER)
    except (OSError, ArtifactFormatError):
        return []
    names = data.get("protected") if isinstance(data, dict) else None
    folders = [folder.parent / name for name in names
               if isinstance(name, str) and name and "\0" not in name] if isinstance(names, list) else []
    found = [(path, "a folder the report was rendered from,") for path in folders]
    for path in folders:
        manifest = Manifest.read_or_none(path / "manifest.json") if is_run_folder(path) else None
        location = manifest.data_source.location if manifest is not None and manifest.data_source else None
        found += [(data_folder, "the data folder of the run the report was rendered from,")
                  for data_folder in data_folders(path, location)]
    return found


def data_folders(run_folder: Path, location: str | None) -> list[Path]:
    """The existing folders a run's data location may name: a URL none; an absolute path
    itself; a relative one from here and from where the run was most likely trained (the
    folder holding the output folder)."""
    if not location or "://" in location:
        return []
    candidates = [Path(location)] if Path(location).is_absolute() else \
        [Path.cwd() / location, Path(run_folder).resolve().parent.parent / location]
    try:
        return [candidate for candidate in candidates if candidate.is_dir()]
    except OSError:
        return []


def _is_safe_relative(name: str) -> bool:
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts and "." not in name.split("/") \
        and name != MARKER


# --------------------------------------------------------------------------- checks


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def is_run_folder(folder: Path) -> bool:
    """A run folder of the study: a manifest.json beside a models/ folder."""
    return (folder / "manifest.json").is_file() and (folder / "models").is_dir()


def check_target(target: Path, kind: str, forbidden: Iterable[tuple[Path, str]] = ()) -> set[str]:
    """Refuse a target that is not ours to replace; return the files its marker lists.

    ``forbidden`` holds (folder, description) pairs the target must be neither inside nor
    around: the run folder being rendered, the data folder, the docs folder for a site.
    """
    if target.is_symlink():
        raise PublishError(f"{target} is a symbolic link; pass the folder it points to instead")
    try:
        resolved = target.resolve()
        forbidden = [(Path(folder).resolve(), description) for folder, description in forbidden]
    except (OSError, ValueError) as error:
        raise PublishError(f"cannot check {target}: {error}") from None
    for folder, description in forbidden:
        if resolved == folder:
            raise PublishError(f"refusing to write into {target}: it is {description} {folder}")
        if _inside(resolved, folder):
            raise PublishError(f"refusing to write into {target}: it is inside {description} {folder}")
        if _inside(folder, resolved):
            raise PublishError(f"refusing to write into {target}: it contains {description} {folder}")
    for folder in (resolved, *resolved.parents):
        if is_run_folder(folder):
            raise PublishError(f"refusing to write into {target}: {folder} is a run folder of the study")
    if not target.exists():
        return set()
    if not target.is_dir():
        raise PublishError(f"{target} is a file, not a folder")
    if os.path.ismount(target):
        raise PublishError(f"refusing to write into {target}: it is a mount point, and the {kind} folder is "
                           "replaced as a whole; use a folder inside it")
    owned = read_marker(target, kind)
    if owned is not None:
        return owned
    try:
        entries = [entry.name for entry in os.scandir(target)]
    except OSError as error:
        raise PublishError(f"cannot read {target}: {_describe(error)}") from None
    if entries:
        shown = ", ".join(sorted(entries)[:3]) + (", ..." if len(entries) > 3 else "")
        raise PublishError(
            f"refusing to write into {target}: it holds files report-builder did not write ({shown}) and no "
            f"{MARKER} marker; choose an empty or new folder, or move those files away"
        )
    return set()


# --------------------------------------------------------------------------- the lock


@contextmanager
def folder_lock(target: Path, report: Callable[[str], None], reader: bool = False) -> Iterator[None]:
    """Hold ``.<name>.lock`` beside ``target`` (an fcntl lock: released by the kernel if we die).

    The lock file is created if missing and never truncated; it must be a plain file of its own.
    A ``reader`` of a folder it cannot create a lock beside (read-only) goes on without one:
    nobody can be writing there either.
    """
    path = target.parent / f".{target.name}.lock"
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    except OSError as error:
        if reader and error.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
            yield
            return
        raise PublishError(f"cannot create the lock file {path}: {_describe(error)}") from None
    try:
        details = os.fstat(descriptor)
        if not stat.S_ISREG(details.st_mode) or details.st_nlink != 1:
            raise PublishError(f"{path} is not a lock file of report-builder's (a link or a special file); move it away")
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            report(f"waiting for another process that is writing {target} ...")
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        except OSError as error:
            raise PublishError(f"cannot lock {path}: {_describe(error)}") from None
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


# --------------------------------------------------------------------------- the journal


class Journal:
    """``.<name>.publish.json`` beside the target: the folders this program made there and what
    each holds, written before the folder is made or changes role."""

    def __init__(self, target: Path):
        self.target = target
        self.path = target.parent / f".{target.name}.publish.json"

    def read(self) -> list[dict]:
        data = read_json(self.path) or {}  # missing or unreadable: remember nothing, so touch nothing
        entries = data.get("folders")
        return [entry for entry in entries if _is_valid_entry(self.target, entry)] if isinstance(entries, list) else []

    def write(self, entries: list[dict]) -> None:
        if not entries:
            self.path.unlink(missing_ok=True)
            return
        write_json(self.path, {"generator": GENERATOR, "folders": entries})

    def add(self, entry: dict) -> None:
        self.write([item for item in self.read() if item["name"] != entry["name"]] + [entry])

    def remove(self, name: str) -> None:
        self.write([item for item in self.read() if item["name"] != name])


def _is_valid_entry(target: Path, entry: object) -> bool:
    """An entry this program could have written; anything else is ignored (and so never acted on)."""
    if not isinstance(entry, dict) or not _is_own_name(target, entry.get("name")) \
            or entry.get("role") not in ("writing", "swapping", "old"):
        return False
    for key in ("old_files", "new_files"):
        files = entry.get(key, [])
        if not isinstance(files, list) or not all(isinstance(name, str) and _is_safe_relative(name) for name in files):
            return False
    return True


def _is_own_name(target: Path, name: object) -> bool:
    return isinstance(name, str) and "/" not in name and name.startswith(f".{target.name}.") \
        and (".staging-" in name or ".old-" in name)


def _new_name(target: Path, role: str) -> Path:
    return target.parent / f".{target.name}.{role}-{secrets.token_hex(6)}"


# --------------------------------------------------------------------------- the swap


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE). False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def _swap_in(staging: Path, target: Path, journal: Journal, entry: dict) -> Path | None:
    """Put ``staging`` at ``target``; return where the old tree now is (None if there was none)."""
    if not target.exists():
        os.rename(staging, target)
        return None
    if _exchange(staging, target):
        return staging
    old = _new_name(target, "old")
    journal.add({**entry, "name": old.name, "role": "old"})
    os.rename(target, old)  # a kill between these two renames is undone by recover()
    os.rename(staging, target)
    return old


def recover(target: Path) -> None:
    """Put back an old tree that a kill left aside (between the two renames of the fallback swap)."""
    target = Path(os.path.abspath(target))
    if target.exists() or target.is_symlink():
        return
    journal = Journal(target)
    for entry in journal.read():
        folder = target.parent / entry["name"]
        if entry.get("role") == "old" and folder.is_dir() and not folder.is_symlink():
            os.rename(folder, target)
            journal.remove(entry["name"])
            return


# --------------------------------------------------------------------------- copying and cleaning


def _walk(folder: Path) -> Iterator[tuple[str, os.DirEntry[str], bool]]:
    """(relative POSIX path, entry, is_dir) for everything under ``folder``, not following links."""
    stack = [(folder, "")]
    while stack:
        directory, prefix = stack.pop()
        with os.scandir(directory) as entries:
            for entry in sorted(entries, key=lambda item: item.name):
                relative = f"{prefix}{entry.name}"
                if entry.is_dir(follow_symlinks=False):
                    yield relative, entry, True
                    stack.append((Path(entry.path), relative + "/"))
                else:
                    yield relative, entry, False


def _copy_folder_details(source: Path, destination: Path) -> None:
    """Mode, owner (where allowed) and times of a folder, as they were."""
    details = os.lstat(source)
    try:
        os.chown(destination, details.st_uid, details.st_gid)
    except OSError:
        pass
    os.chmod(destination, stat.S_IMODE(details.st_mode))
    os.utime(destination, ns=(details.st_atime_ns, details.st_mtime_ns))


def _carry_over(target: Path, staging: Path, owned: set[str], generated: set[str]) -> None:
    """Hard-link every file of ``target`` that is not ours into ``staging``, unchanged."""
    generated_dirs = {str(parent) for name in generated for parent in PurePosixPath(name).parents}
    folders: list[tuple[Path, Path]] = [(target, staging)]
    for relative, entry, is_dir in _walk(target):
        if relative == MARKER or relative in owned:
            continue
        source, destination = Path(entry.path), staging / relative
        if is_dir:
            if relative in generated:
                raise PublishError(f"{source} is a folder of yours where the report writes a file; move it away")
            if os.path.ismount(source):
                raise PublishError(f"{source} is a mount point inside {target}; report-builder replaces the folder "
                                   "as a whole, so move the mount elsewhere")
            destination.mkdir(exist_ok=True)
            folders.append((source, destination))
            continue
        if relative in generated or relative in generated_dirs:
            raise PublishError(f"{source} was not written by report-builder but the new {target.name} has a file "
                               "there; move it away or choose another folder")
        destination.parent.mkdir(parents=True, exist_ok=True)
        if entry.is_symlink():
            os.symlink(os.readlink(source), destination)
            continue
        try:
            os.link(source, destination, follow_symlinks=False)
        except OSError as error:
            raise PublishError(f"cannot keep {source} in place while replacing {target} ({_describe(error)}: it "
                               "cannot be hard-linked, for example it is on another file system); move it away") from None
    for source, destination in reversed(folders):  # deepest first: linking changed their times
        if source != target:
            _copy_folder_details(source, destination)


def _linked_in_target(path: Path, target: Path, relative: str) -> bool:
    """True when ``path`` is the same file as the target's one at ``relative`` (a hard link) or a
    symbolic link with the same text: removing it loses nothing."""
    try:
        mine, theirs = os.lstat(path), os.lstat(target / relative)
    except OSError:
        return False
    if stat.S_ISLNK(mine.st_mode):
        return stat.S_ISLNK(theirs.st_mode) and os.readlink(path) == os.readlink(target / relative)
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


def discard_tree(folder: Path, target: Path, owned: set[str]) -> list[str]:
    """Remove an old or staging tree of ours: files in ``owned`` (what report-builder wrote
    there) and links to files still in ``target``. Returns what had to be kept (relative paths);
    the folder stays when that is not empty."""
    kept: list[str] = []
    directories: list[Path] = []
    for relative, entry, is_dir in list(_walk(folder)):
        path = Path(entry.path)
        if is_dir:
            if os.path.ismount(path):
                kept.append(relative + "/")
            else:
                directories.append(path)
            continue
        if relative == MARKER or relative in owned or _linked_in_target(path, target, relative):
            try:
                path.unlink()
            except OSError:
                kept.append(relative)
        else:
            kept.append(relative)
    for directory in sorted(directories, key=lambda item: len(item.parts), reverse=True):
        try:
            directory.rmdir()
        except OSError:
            pass
    try:
        folder.rmdir()
    except OSError:
        pass
    return kept


def _tidy(target: Path, journal: Journal, report: Callable[[str], None]) -> None:
    """Finish what a killed call left beside the target, from the journal."""
    for entry in journal.read():
        folder = target.parent / entry["name"]
        if folder.is_dir() and not folder.is_symlink():
            if entry.get("role") == "writing":  # never swapped: only our output and links into the target
                owned = None
            else:  # may hold the old tree or the new: either's files are ours, the rest are links
                owned = set(entry.get("old_files", [])) | set(entry.get("new_files", []))
            kept = discard_tree(folder, target, owned) if owned is not None else _discard_unswapped(folder, target)
            if kept:
                report(f"kept {folder}: it holds {len(kept)} file(s) that are in neither report-builder's list "
                       f"nor {target} (first: {kept[0]}); look at them, then remove it yourself")
                continue
            if _still_there(folder, report):
                continue  # the journal still names it: the next call tries again
        journal.remove(entry["name"])


def _still_there(folder: Path, report: Callable[[str], None]) -> bool:
    """Whether a folder of ours that was emptied is still there (a folder in it could not be
    removed); says so. The caller then keeps its journal entry, so that the next call, finding it
    there, removes it: a leftover is never forgotten while it exists."""
    if not os.path.lexists(folder):
        return False
    report(f"could not remove {folder} (report-builder's own, now without files of ours); the next call removes it")
    return True


def _discard_unswapped(folder: Path, target: Path) -> list[str]:
    """A staging folder that was never swapped in holds what this program wrote and hard links
    to the target's files: everything in it may go, except a mount point."""
    kept = [relative + "/" for relative, entry, is_dir in _walk(folder) if is_dir and os.path.ismount(entry.path)]
    if kept:
        return kept
    shutil.rmtree(folder, ignore_errors=True)
    return []


# --------------------------------------------------------------------------- the whole step


def _default_report(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def publish_tree(
    target: Path,
    write: Callable[[Path], Iterable[str]],
    kind: str,
    forbidden: Iterable[tuple[Path, str]] = (),
    report: Callable[[str], None] = _default_report,
    protect: Iterable[Path] = (),
) -> list[Path]:
    """Replace the report-builder files in ``target`` with what ``write(staging)`` writes.

    ``forbidden`` are folders the target must be neither inside nor around; ``protect`` the
    folders the marker records (relative to the target's parent) for later calls to refuse too.

    ``write`` receives an empty staging folder and returns the relative POSIX paths of the files
    it wrote. Returns the written files as paths under ``target`` (sorted). Raises
    :class:`PublishError` naming the path when the target is not ours or cannot be written; the
    target is then as it was.
    """
    target = Path(os.path.abspath(target))
    forbidden = list(forbidden)
    journal = Journal(target)
    if target.exists() or target.is_symlink() or not journal.read():
        check_target(target, kind, forbidden)  # refuse before writing anything, even the lock file
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PublishError(f"cannot create {target.parent}: {_describe(error)}") from None
    with folder_lock(target, report):
        try:
            recover(target)
            _tidy(target, journal, report)
        except OSError as error:
            raise PublishError(f"cannot tidy what an interrupted call left beside {target}: {_describe(error)}") from None
        owned = check_target(target, kind, forbidden)
        protected = [os.path.relpath(Path(folder).resolve(), target.parent.resolve()) for folder in protect]
        return _publish_locked(target, write, kind, owned, journal, report, protected)


def _publish_locked(target: Path, write: Callable[[Path], Iterable[str]], kind: str, owned: set[str],
                    journal: Journal, report: Callable[[str], None], protected: list[str]) -> list[Path]:
    staging = _new_name(target, "staging")
    entry = {"name": staging.name, "role": "writing"}
    swapped = False
    try:
        journal.add(entry)
        staging.mkdir()
        if target.is_dir():
            _copy_folder_details(target, staging)
        else:
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(staging, 0o777 & ~mask)
        generated = {name for name in write(staging) if _is_safe_relative(name)}
        if target.is_dir():
            _carry_over(target, staging, owned, generated)
        (staging / MARKER).write_text(marker_text(kind, generated, protected), encoding="utf-8")
        entry = {**entry, "role": "swapping", "old_files": sorted(owned), "new_files": sorted(generated)}
        journal.add(entry)
        old = _swap_in(staging, target, journal, entry)
        swapped = True
    except OSError as error:
        where = error.filename or target
        raise PublishError(f"cannot write {where}: {_describe(error)}; {target} is unchanged") from None
    finally:
        if not swapped:  # only our output and links to files still in the target
            try:
                _discard_unswapped(staging, target)
                if not _still_there(staging, report):
                    journal.remove(staging.name)
            except OSError:
                pass  # the journal still names it: the next call tidies it
    if old is None:
        try:
            journal.remove(staging.name)  # renamed into place: nothing is left beside the target
        except OSError:
            pass  # the next call finds no such folder and forgets it
    else:
        try:
            kept = discard_tree(old, target, owned)
            if kept:
                report(f"kept {old}: {len(kept)} file(s) there could not be removed or appeared while "
                       f"{target} was being written (first: {kept[0]}); look at them, then remove that folder")
            elif not _still_there(old, report):
                journal.remove(old.name)
            if old != staging:
                journal.remove(staging.name)
        except OSError as error:
            report(f"{target} is written; tidying the previous version beside it stopped ({_describe(error)}) "
                   "and is finished by the next call")
    return sorted(target / name for name in generated)


def wait_for_folder(target: Path, report: Callable[[str], None] = _default_report):
    """The lock of ``target``, for a reader that must not see it change meanwhile (build reads docs)."""
    return folder_lock(Path(os.path.realpath(target)), report, reader=True)  # the writers' lock, whatever the path
