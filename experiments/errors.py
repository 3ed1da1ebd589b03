"""The errors a user can cause and mend: one hierarchy, mapped by the command line to one
sentence and an exit status. No TensorFlow here: the report builder imports it too.

- :class:`UserError` (exit status 2): a bad config value, an unusable data folder, a folder that
  is not ours to write, an artifact folder that cannot be read. The message names the key, file
  or folder, and nothing has been trained or overwritten.
- :class:`StudyFailed` (exit status 1): the study ran, but one or more of its runs failed or
  diverged; the others' artifacts are written.
"""

from __future__ import annotations

import errno


class UserError(Exception):
    """Something the user can fix; the message is one sentence naming the key, file or folder."""

    exit_status = 2


class ConfigError(UserError, ValueError):
    """A config value is unusable; the message names the key or file."""


class StudyFailed(RuntimeError):
    """One or more runs failed or diverged; the others' artifacts are written."""

    exit_status = 1


#: The errors a full disk (or a used-up quota) gives a write
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_disk_full(error: BaseException) -> bool:
    """Whether `error` is a write that failed because the disk (or the user's quota) is full."""
    return isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS


def disk_full_sentence(what: str, error: OSError) -> str:
    """One sentence: writing `what` (a file or folder, named) failed, the disk is full."""
    kind = "the disk quota is used up" if error.errno == errno.EDQUOT else "the disk is full"
    return (f"Cannot write {what}: {kind} ({error.strerror or error}); free some space and run the same "
            "command again (what was written before is intact).")


class DataError(UserError):
    """A problem with the user's data folder that stops the study (one sentence)."""
