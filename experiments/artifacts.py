"""The run folder: its layout, atomic writes, and reading back what a run left.

The layout and the JSON schema are documented in docs/guide/artifacts.md; this module is the
only writer. Every write goes to a temporary file in the destination folder and is renamed
into place, so an interrupted run never leaves half a file behind. Files get the mode a plain
`open()` would give them under the user's umask (mkstemp alone makes them 0600).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
    def owner_file(self) -> Path:
        """Who holds the lock (pid, host, what it does), for the other processes' messages."""
        return self.folder / ".cell.owner.json"


class ArtifactFormatError(UserError, ValueError):
    """An artifact file does not hold what its format says; the message names the file and field."""


def files_digest(files: Sequence[str]) -> str:
    """sha256 of a split's file list (one name per line, in order): ties per-image records to it."""
    return hashlib.sha256("\n".join(files).encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class ValidationPredictions:
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

    def to_json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "model": self.model, "seed": self.seed, "epoch": self.epoch,
                "files_sha256": self.files_sha256, "class_names": list(self.class_names),
                "accuracy": self.accuracy, "labels": list(self.labels), "predicted": list(self.predicted),
                "probability": list(self.probability)}

    @classmethod
    def from_json(cls, data: object, path: Path | str) -> ValidationPredictions:
        """Check every field; raise ArtifactFormatError naming the file and the field."""

        def fail(field_name: str, what: str) -> ArtifactFormatError:
            return ArtifactFormatError(f"{path}: field {field_name!r} {what}")

        if not isinstance(data, dict):
            raise ArtifactFormatError(f"{path}: not a JSON object")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise fail("schema_version", f"is {data.get('schema_version')!r}, expected {SCHEMA_VERSION}")
        for name in ("model", "files_sha256"):
            if not isinstance(data.get(name), str):
                raise fail(name, "must be a string")
        for name in ("seed", "epoch"):
            if isinstance(data.get(name), bool) or not isinstance(data.get(name), int):
                raise fail(name, "must be an integer")
        class_names = data.get("class_names")
        if not isinstance(class_names, list) or len(class_names) < 2 or not all(isinstance(n, str) for n in class_names):
            raise fail("class_names", "must list two or more class names")
        count = None
        for name in ("labels", "predicted", "probability"):
            values = data.get(name)
            if not isinstance(values, list):
                raise fail(name, "must be a list")
            if count is not None and len(values) != count:
                raise fail(name, f"has {len(values)} entries, but labels has {count}")
            count = len(values)
            for value in values:
                if name == "probability":
                    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                        raise fail(name, f"holds {value!r}, not a probability")
                elif isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(class_names):
                    raise fail(name, f"holds {value!r}, not a class index below {len(class_names)}")
        return cls(data["model"], data["seed"], data["epoch"], data["files_sha256"], list(class_names),
                   list(data["labels"]), list(data["predicted"]), [float(v) for v in data["probability"]])

    @classmethod
    def read(cls, path: Path) -> ValidationPredictions | None:
        """The record at `path`; None when the file is missing; ArtifactFormatError when it is unusable."""
        path = Path(path)
        if not path.exists():
            return None
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError) as error:
            raise ArtifactFormatError(f"{path}: not readable JSON ({error})") from None
        return cls.from_json(data, path)

    def write(self, path: Path) -> Path:
        return write_json(path, self.to_json())
