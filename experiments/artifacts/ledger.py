"""The ledger of the files this program wrote into folders it shares (a cell's checkpoint and
TensorBoard folders), and the removal of those files and no others."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from experiments.artifacts.files import ArtifactFormatError, parse_json_file, write_atomic

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
