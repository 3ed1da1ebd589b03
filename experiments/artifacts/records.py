"""The base of every typed record of a run's files: the schema version, a JSON object read field by
field (errors name the file and the field), the record written back, and the form of the times
records hold.

One record per JSON file a run writes (experiments.artifacts.cell_records, run_records,
side_records). `to_json()` gives the object written to disk (keys in the order the runner has
always written them); `from_json(data, path)` checks every field the format names and raises
ArtifactFormatError naming the file and the field. Keys a record does not know are ignored on
reading, so older runs with extra keys still read.

Each record and each part of one (`Part`) reads and writes itself from its dataclass annotations
(`read_fields`, `to_fields`): a field is read with the `Fields` getter its type names, is optional
when it may be None or has a default (absent or null gives the default), and is written in field
order unless the class names a `WRITE_ORDER`. What a type cannot say (ranges, labels within the
class count) a record checks in its own `from_fields` around `read_fields`.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

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

    def _get(self, name: str, problem: Callable[[object], str | None], optional: bool) -> Any:
        """The field, unless `problem(value)` says what it must be instead (null or absent passes
        when `optional`)."""
        value = self.data.get(name)
        if value is None and optional:
            return None
        found = problem(value)
        if found:
            raise self.fail(name, found + (" or null" if optional else ""))
        return value

    def _typed(self, name: str, expected: type, optional: bool) -> Any:
        """The field if it has the `expected` type (experiments.typed, the config's check too)."""
        return self._get(name, lambda value: type_problem(value, expected), optional)

    def text(self, name: str, optional: bool = False) -> str | None:
        return self._typed(name, str, optional)

    def integer(self, name: str, optional: bool = False) -> int | None:
        return self._typed(name, int, optional)

    def number(self, name: str, optional: bool = False) -> float | None:
        value = self._typed(name, float, optional)
        return None if value is None else float(value)

    def boolean(self, name: str, optional: bool = False) -> bool | None:
        return self._typed(name, bool, optional)

    def items(self, name: str, optional: bool = False) -> list[Any]:
        value = self._typed(name, list, optional)
        return [] if value is None else value

    def mapping(self, name: str, optional: bool = False) -> dict[str, Any]:
        value = self._get(name, lambda value: None if isinstance(value, dict) else "must be a JSON object", optional)
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

    def texts_by_name(self, name: str, optional: bool = False) -> dict[str, str | None]:
        """An object of strings (or nulls) by name, such as package versions."""
        values = self.mapping(name, optional)
        for key, value in values.items():
            if value is not None and not isinstance(value, str):
                raise self.fail(f"{name}.{key}", "must be a string or null")
        return {str(key): value for key, value in values.items()}

    def child(self, name: str, optional: bool = False) -> Fields:
        return Fields(self.mapping(name, optional), self.path, f"{self.prefix}{name}.")

    def children(self, name: str) -> list[Fields]:
        return [Fields(item, self.path, f"{self.prefix}{name}[{index}].") for index, item in enumerate(self.items(name))]

    def schema_version(self) -> None:
        version = self.data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise self.fail("schema_version", f"is {version!r}, expected {SCHEMA_VERSION}")


#: Field metadata: read the field even though it has a default (absent is an error, as for a field without one).
REQUIRED = {"required": True}
#: Field metadata: leave the key out of the written object when the value is None.
OMITTED_WHEN_NONE = {"omitted_when_none": True}

_GETTERS: dict[object, str] = {str: "text", int: "integer", float: "number", bool: "boolean", list[str]: "texts",
                               dict[str, Any]: "mapping", dict[str, float | None]: "numbers",
                               dict[str, str | None]: "texts_by_name"}


class Part:
    """A dataclass read from a JSON object and written back to one by its annotations (str, int,
    float, bool, list[str], dict[str, Any], dict[str, float | None], dict[str, str | None], a Part,
    list[Part], dict[str, Part], each of them `| None`)."""

    #: The order keys are written in, where it is not the order of the fields; it may name a property
    #: whose value the file holds for its readers (derived, not read back).
    WRITE_ORDER: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_fields(cls, fields: Fields) -> Any:
        return cls(**cls.read_fields(fields))

    @classmethod
    def read_fields(cls, fields: Fields, **given: Any) -> dict[str, Any]:
        """Each field's value read from `fields` by its annotation, as keyword arguments for the
        class; `given` holds those the caller read itself (they are not read again)."""
        hints = _type_hints(cls)
        values = dict(given)
        for item in dataclasses.fields(cls):
            if item.name not in values:
                values[item.name] = _read(fields, item, hints[item.name])
        return values

    def to_fields(self) -> dict[str, Any]:
        items = {item.name: item for item in dataclasses.fields(self)}
        data: dict[str, Any] = {}
        for name in self.WRITE_ORDER or items:
            value = getattr(self, name)
            if value is None and name in items and items[name].metadata.get("omitted_when_none"):
                continue
            data[name] = _written(value)
        return data


#: A class's annotations, evaluated once (the modules use `from __future__ import annotations`).
_type_hints = functools.cache(typing.get_type_hints)


def _read(fields: Fields, item: dataclasses.Field, hint: Any) -> Any:
    """One field's value, by its type `hint`; absent or null gives its default where it may."""
    arguments = typing.get_args(hint)
    nullable = typing.get_origin(hint) in (types.UnionType, typing.Union) and type(None) in arguments
    kind = next(argument for argument in arguments if argument is not type(None)) if nullable else hint
    has_default = item.default is not dataclasses.MISSING or item.default_factory is not dataclasses.MISSING
    optional = nullable or (has_default and not item.metadata.get("required"))
    name = item.name
    if optional and fields.data.get(name) is None:
        if item.default_factory is not dataclasses.MISSING:
            return item.default_factory()
        return None if item.default is dataclasses.MISSING else item.default
    origin, arguments = typing.get_origin(kind), typing.get_args(kind)
    if kind in _GETTERS:
        return getattr(fields, _GETTERS[kind])(name, optional=optional)
    if _is_part(kind):
        return kind.from_fields(fields.child(name))
    if origin is list and _is_part(arguments[0]):
        return [arguments[0].from_fields(child) for child in fields.children(name)]
    if origin is dict and arguments[0] is str and _is_part(arguments[1]):
        children = fields.child(name, optional)
        return {str(key): arguments[1].from_fields(children.child(key)) for key in children.data}
    raise TypeError(f"{name}: no reader for {hint!r}; read it in from_fields and pass it to read_fields")


def _is_part(kind: object) -> bool:
    return isinstance(kind, type) and issubclass(kind, Part)


def _written(value: Any) -> Any:
    """A field's value as JSON holds it: parts as objects, lists and objects of them likewise."""
    if isinstance(value, Part):
        return value.to_fields()
    if isinstance(value, list):
        return [_written(item) for item in value]
    if isinstance(value, dict):
        return {key: _written(item) for key, item in value.items()}
    return value


class Record(Part):
    """What every record shares: reading a file into it and writing it to a file."""

    @classmethod
    def from_json(cls, data: object, path: Path | str) -> Any:
        fields = Fields(data, path)
        fields.schema_version()
        return cls.from_fields(fields)

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
