"""The run folder's layout: where each file of a run and of its cells lives, which names a run writes,
and claiming a folder for a run before anything is written into it."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from experiments.artifacts.files import ArtifactError, ArtifactFormatError, read_json, write_json
from experiments.artifacts.run_records import Manifest
from experiments.errors import UserError

#: One run of a model with one seed lives in `models/<model>/seed-<seed>/`.
SEED_FOLDER_PREFIX = "seed-"


def seed_folder_name(seed: int) -> str:
    return f"{SEED_FOLDER_PREFIX}{seed}"


def parse_seed_folder(name: str) -> int | None:
    """The seed of a `seed-<seed>` folder name, or None for any other name."""
    digits = name[len(SEED_FOLDER_PREFIX):] if name.startswith(SEED_FOLDER_PREFIX) else ""
    return int(digits) if digits.isascii() and digits.isdigit() else None


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
