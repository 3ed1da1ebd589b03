"""The base of every typed record of a run's files: the schema version, a JSON object read field by
field (errors name the file and the field), the record written back, and the form of the times
records hold.

One record per JSON file a run writes (experiments.artifacts.cell_records, run_records,
side_records). `to_json()` gives the object written to disk (keys in the order the runner has
always written them); `from_json(data, path)` checks every field the format names and raises
ArtifactFormatError naming the file and the field. Keys a record does not know are ignored on
reading, so older runs with extra keys still read.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from experiments.artifacts.files import ArtifactFormatError, load_json_object, write_json
from experiments.typed import is_number, type_problem

SCHEMA_VERSION = 2


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

    def _typed(self, name: str, expected: type, optional: bool) -> Any:
        """The field if it has the `expected` type (experiments.typed, the config's check too)."""
        value = self.data.get(name)
        if value is None and optional:
            return None
        problem = type_problem(value, expected)
        if problem:
            raise self.fail(name, problem + (" or null" if optional else ""))
        return value

    def text(self, name: str, optional: bool = False) -> str | None:
        return self._typed(name, str, optional)

    def integer(self, name: str, optional: bool = False) -> int | None:
        return self._typed(name, int, optional)

    def number(self, name: str, optional: bool = False) -> float | None:
        value = self._typed(name, float, optional)
        return None if value is None else float(value)

    def boolean(self, name: str) -> bool:
        return self._typed(name, bool, False)

    def items(self, name: str, optional: bool = False) -> list[Any]:
        value = self._typed(name, list, optional)
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
            if value is not None and not is_number(value):
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


def utc_now() -> str:
    """Now in UTC, to the second, as every artifact records a time."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def utc_now_precise() -> str:
    """Now, to the millisecond: states are compared with a command's start time."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")
