"""The errors a user can cause and mend: one hierarchy, mapped by the command line to one
sentence and an exit status. No TensorFlow here: the report builder imports it too.

- :class:`UserError` (exit status 2): a bad config value, an unusable data folder, a folder that
  is not ours to write, an artifact folder that cannot be read. The message names the key, file
  or folder, and nothing has been trained or overwritten.
- :class:`StudyFailed` (exit status 1): the study ran, but one or more of its runs failed or
  diverged; the others' artifacts are written.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the user can fix; the message is one sentence naming the key, file or folder."""

    exit_status = 2


class ConfigError(UserError, ValueError):
    """A config value is unusable; the message names the key or file."""


class StudyFailed(RuntimeError):
    """One or more runs failed or diverged; the others' artifacts are written."""

    exit_status = 1
