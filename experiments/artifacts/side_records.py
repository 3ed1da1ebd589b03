"""Typed records of the small side files beside a cell's state (its lock's owner, its MLflow run) and
of the run's shared settings, read where a missing or unreadable one means "nothing known".

`read_or_none` gives None for those rather than an error. Files written before they carried a
schema_version still read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.artifacts.records import Fields, Record


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


@dataclass(frozen=True)
class MlflowLink(SideRecord):
    """`models/<model>/seed-<seed>/.mlflow_run.json` (with --mlflow): the MLflow store, experiment
    and run this cell logs to, so a resumed or skipped cell continues that run."""

    tracking_uri: str
    experiment_id: str
    run_id: str


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
