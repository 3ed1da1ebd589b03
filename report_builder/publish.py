"""Replace a folder the program owns, whole, without touching what it did not write.

``render`` writes the report's pages into ``docs/`` and ``build`` writes the site into
``site/``. Both go through :func:`publish_tree`:

1. A lock beside the target (``.<name>.lock``) lets one writer at a time in; a second waits.
2. The target must be missing, empty, or carry the marker file ``.report-builder.json`` that
   lists the files an earlier render or build wrote there. Anything else (a folder of the
   user's, a run folder, the project root) is refused with one sentence, before any change.
3. The new tree is written into a staging folder beside the target. Files in the target that
   the marker does not list (hand-written pages such as ``docs/guide/``) are hard-linked (or
   copied) into it, unchanged; then the marker, listing only what was generated.
4. The staging folder and the target are swapped in one step (Linux ``renameat2`` with
   ``RENAME_EXCHANGE``; elsewhere two renames, with the old tree put back by the next call if a
   kill falls between them). A kill, a full disk or a second writer at any moment leaves the
   old tree or the new one, whole.
5. The old tree, now in the staging folder, is removed: the files its marker listed, and the
   user's files whose identical copy is in the new tree. Anything else is kept and named.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath

from filelock import FileLock, Timeout

MARKER = ".report-builder.json"
#: Present in a staging folder until its marker is written: proof that the folder is ours.
STAGING_SENTINEL = ".report-builder-staging"
GENERATOR = "report-builder"
LOCK_WAIT_NOTICE_SECONDS = 1.0


class PublishError(Exception):
    """A target folder cannot be written safely; the message names the path."""


# --------------------------------------------------------------------------- the marker


def read_marker(folder: Path) -> set[str] | None:
    """The files a marker in ``folder`` lists (POSIX relative paths), or None without a marker."""
    path = folder / MARKER
    if path.is_symlink() or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise PublishError(f"{path} is not a readable report-builder marker ({error}); "
                           "remove it only if the folder holds nothing of yours") from None
    files = data.get("files") if isinstance(data, dict) else None
    if data.get("generator") != GENERATOR or not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        raise PublishError(f"{path} is not a report-builder marker; refusing to write into {folder}")
    return {name for name in files if _is_safe_relative(name)}


def marker_text(kind: str, files: Iterable[str]) -> str:
    data = {"generator": GENERATOR, "kind": kind,
            "note": "Files listed here were written by report-builder and are replaced on the next run; "
                    "every other file in this folder is kept.",
            "files": sorted(set(files))}
    return json.dumps(data, indent=2) + "\n"


def _is_safe_relative(name: str) -> bool:
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts and name != MARKER


# --------------------------------------------------------------------------- checks


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_target(target: Path, forbidden: Iterable[tuple[Path, str]] = ()) -> set[str]:
    """Refuse a target that is not ours to replace; return the files its marker lists.

    ``forbidden`` holds (folder, description) pairs the target must be neither inside nor
    around: the run folder being rendered, the data folder, the docs folder for a site.
    """
    if target.is_symlink():
        raise PublishError(f"{target} is a symbolic link; pass the folder it points to instead")
    resolved = target.resolve()
    for folder, description in forbidden:
        folder = Path(folder).resolve()
        if _inside(resolved, folder) or _inside(folder, resolved):
            raise PublishError(f"refusing to write into {target}: it {'is inside' if _inside(resolved, folder) and resolved != folder else 'is' if resolved == folder else 'contains'} "
                               f"{description} {folder}")
    if not target.exists():
        return set()
    if not target.is_dir():
        raise PublishError(f"{target} is a file, not a folder")
    owned = read_marker(target)
    if owned is not None:
        return owned
    try:
        entries = [entry.name for entry in os.scandir(target)]
    except OSError as error:
        raise PublishError(f"cannot read {target}: {error.strerror or error}") from None
    if entries:
        shown = ", ".join(sorted(entries)[:3]) + (", ..." if len(entries) > 3 else "")
        raise PublishError(
            f"refusing to write into {target}: it holds files report-builder did not write ({shown}) and no "
            f"{MARKER} marker; choose an empty or new folder, or move those files away"
        )
    return set()


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


def _swap_in(staging: Path, target: Path) -> Path | None:
    """Put ``staging`` at ``target``; return where the old tree now is (None if there was none)."""
    if not target.exists():
        os.rename(staging, target)
        return None
    if _exchange(staging, target):
        return staging
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.rmdir(old)
    os.rename(target, old)  # a kill between these two renames is mended by recover()
    os.rename(staging, target)
    return old


def _leftovers(target: Path, kind: str) -> list[Path]:
    prefix = f".{target.name}.{kind}-"
    try:
        candidates = [path for path in target.parent.iterdir()
                      if path.name.startswith(prefix) and path.is_dir() and not path.is_symlink()]
    except OSError:
        return []
    return sorted(path for path in candidates if (path / STAGING_SENTINEL).is_file() or _has_marker(path))


def _has_marker(folder: Path) -> bool:
    try:
        return read_marker(folder) is not None
    except PublishError:
        return False


def recover(target: Path) -> None:
    """Put back an old tree that a kill left aside (between the two renames of the fallback swap)."""
    if target.exists() or target.is_symlink():
        return
    aside = [path for path in _leftovers(target, "old") if read_marker(path) is not None]
    if aside:
        os.rename(aside[-1], target)


# --------------------------------------------------------------------------- copying and cleaning


def _walk(folder: Path) -> Iterable[tuple[str, os.DirEntry[str] | Path, bool]]:
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


def _carry_over(target: Path, staging: Path, owned: set[str], generated: set[str]) -> None:
    """Link (or copy) every file of ``target`` that is not ours into ``staging``, unchanged."""
    generated_dirs = {str(parent) for name in generated for parent in PurePosixPath(name).parents}
    for relative, entry, is_dir in _walk(target):
        if relative == MARKER or relative in owned:
            continue
        destination = staging / relative
        if is_dir:
            if relative in generated:
                raise PublishError(f"{target / relative} is a folder of yours where the report writes a file; move it away")
            destination.mkdir(exist_ok=True)
            continue
        if relative in generated or relative in generated_dirs:
            raise PublishError(
                f"{target / relative} was not written by report-builder but the new report writes a file there; "
                "move it away or choose another folder"
            )
        destination.parent.mkdir(parents=True, exist_ok=True)
        if entry.is_symlink():
            os.symlink(os.readlink(entry.path), destination)
            continue
        try:
            os.link(entry.path, destination, follow_symlinks=False)
        except OSError:
            if not entry.is_file(follow_symlinks=False):
                raise PublishError(f"cannot keep {target / relative}: it is not a regular file") from None
            shutil.copy2(entry.path, destination, follow_symlinks=False)


def _same_file(first: Path, second: Path) -> bool:
    try:
        a, b = os.lstat(first), os.lstat(second)
    except OSError:
        return False
    if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
        return True
    if stat.S_ISLNK(a.st_mode) and stat.S_ISLNK(b.st_mode):
        return os.readlink(first) == os.readlink(second)
    if not (stat.S_ISREG(a.st_mode) and stat.S_ISREG(b.st_mode)) or a.st_size != b.st_size:
        return False
    with open(first, "rb") as one, open(second, "rb") as other:
        while True:
            block = one.read(1 << 20)
            if block != other.read(1 << 20):
                return False
            if not block:
                return True


def discard_tree(folder: Path, target: Path) -> list[str]:
    """Remove a staging or old tree of ours: the files its marker lists (or, without a marker,
    the files a render wrote before it was stopped), and files identical to the target's.
    Returns what had to be kept (relative paths); the folder stays when that is not empty."""
    listed = read_marker(folder)
    kept: list[str] = []
    directories: list[Path] = []
    for relative, entry, is_dir in list(_walk(folder)):
        path = Path(entry.path)
        if is_dir:
            directories.append(path)
            continue
        if relative in (MARKER, STAGING_SENTINEL) or listed is None or relative in listed or _same_file(path, target / relative):
            path.unlink()
        else:
            kept.append(relative)
    for directory in sorted(directories, key=lambda item: len(item.parts), reverse=True):
        try:
            directory.rmdir()
        except OSError:
            pass
    if not kept:
        (folder / MARKER).unlink(missing_ok=True)
        try:
            folder.rmdir()
        except OSError:
            pass
    return kept


def _tidy(target: Path, report: Callable[[str], None]) -> None:
    for leftover in _leftovers(target, "staging") + _leftovers(target, "old"):
        kept = discard_tree(leftover, target)
        if kept:
            report(f"kept {leftover}: it holds {len(kept)} file(s) that are in neither the marker nor {target} "
                   f"(first: {kept[0]}); look at them, then remove it yourself")


# --------------------------------------------------------------------------- the whole step


def _default_report(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _folder_mode(target: Path) -> int:
    if target.is_dir():
        return stat.S_IMODE(target.stat().st_mode)
    mask = os.umask(0)
    os.umask(mask)
    return 0o777 & ~mask


def publish_tree(
    target: Path,
    write: Callable[[Path], Iterable[str]],
    kind: str,
    forbidden: Iterable[tuple[Path, str]] = (),
    report: Callable[[str], None] = _default_report,
) -> list[Path]:
    """Replace the report-builder files in ``target`` with what ``write(staging)`` writes.

    ``write`` receives an empty staging folder and returns the relative POSIX paths of the files
    it wrote. Returns the written files as paths under ``target`` (sorted). Raises
    :class:`PublishError` naming the path when the target is not ours or cannot be written; the
    target is then as it was.
    """
    target = Path(os.path.abspath(target))
    forbidden = list(forbidden)
    if not (target.exists() or target.is_symlink()) and _leftovers(target, "old"):
        pass  # a kill left the old tree aside; recover() below puts it back first
    else:
        check_target(target, forbidden)  # refuse before writing anything, even the lock file
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PublishError(f"cannot create {target.parent}: {error.strerror or error}") from None
    lock = FileLock(str(target.parent / f".{target.name}.lock"))
    try:
        try:
            lock.acquire(timeout=LOCK_WAIT_NOTICE_SECONDS)
        except Timeout:
            report(f"waiting for another process that is writing {target} ...")
            lock.acquire()
    except OSError as error:
        raise PublishError(f"cannot write in {target.parent}: {error.strerror or error}") from None
    try:
        recover(target)
        _tidy(target, report)
        owned = check_target(target, forbidden)
        return _publish_locked(target, write, kind, owned, report)
    finally:
        lock.release()


def _publish_locked(target: Path, write: Callable[[Path], Iterable[str]], kind: str, owned: set[str],
                    report: Callable[[str], None]) -> list[Path]:
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
        (staging / STAGING_SENTINEL).touch()
    except OSError as error:
        raise PublishError(f"cannot write in {target.parent}: {error.strerror or error}") from None
    swapped = False
    try:
        os.chmod(staging, _folder_mode(target))
        generated = set(write(staging))
        if target.is_dir():
            _carry_over(target, staging, owned, generated)
        (staging / MARKER).write_text(marker_text(kind, generated), encoding="utf-8")
        (staging / STAGING_SENTINEL).unlink()
        old = _swap_in(staging, target)
        swapped = True
    except OSError as error:
        where = error.filename or target
        raise PublishError(f"cannot write {where}: {error.strerror or error}; {target} is unchanged") from None
    finally:
        if not swapped:  # only our output and links or copies of files still in the target
            shutil.rmtree(staging, ignore_errors=True)
    if old is not None:
        kept = discard_tree(old, target)
        if kept:
            report(f"kept {old}: {len(kept)} file(s) appeared in {target} while it was being written "
                   f"(first: {kept[0]}); move them back, then remove that folder")
    return sorted(target / name for name in generated)
