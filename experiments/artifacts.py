"""The run folder: its layout, atomic writes, and reading back what a run left.

The layout and the JSON schema are documented in docs/guide/artifacts.md; this module is the
only writer. Every write goes to a temporary file in the destination folder and is renamed
into place, so an interrupted run never leaves half a file behind. Files get the mode a plain
`open()` would give them under the user's umask (mkstemp alone makes them 0600).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from experiments.errors import UserError

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
        raise ArtifactError(f"cannot write {path}: {error.strerror or error}") from None
    temporary_path = Path(temporary_name)
    try:
        write(temporary_path)
        os.chmod(temporary_path, 0o666 & ~UMASK)
        os.replace(temporary_path, path)
    except OSError as error:
        temporary_path.unlink(missing_ok=True)
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


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object at `path`, or None if it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


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

    def seed_run(self, model_name: str, seed: int) -> SeedRun:
        return SeedRun(model_name, seed, self.model_dir(model_name) / seed_folder_name(seed))

    @property
    def lock_file(self) -> Path:
        """Held while the manifest is written and while the chosen model is tested."""
        return self.root / ".manifest.lock"

    def check_writable(self) -> None:
        """Fail early, with the folder named, if nothing can be written here."""
        write_json(self.root / ".write-check.json", {"ok": True})
        (self.root / ".write-check.json").unlink(missing_ok=True)


class SeedRun:
    """Paths of one training run: one model, one seed, `models/<model>/seed-<seed>/`."""

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
    def checkpoint_dir(self) -> Path:
        return self.folder / "checkpoint"

    @property
    def lock_file(self) -> Path:
        """Held by the one process that decides about and trains this run."""
        return self.folder / ".cell.lock"

    @property
    def owner_file(self) -> Path:
        """Who holds the lock (pid, host, what it does), for the other processes' messages."""
        return self.folder / ".cell.owner.json"
