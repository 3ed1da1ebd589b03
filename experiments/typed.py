"""One check of a value read from a TOML or JSON file against the type its field declares, shared by
the config (experiments.config), the model recipes (experiments.models.recipes) and the artifact
records (experiments.artifacts.records.Fields); each reader words its own error, naming its file
and field, around the phrase `type_problem` returns ("must be an integer").

TOML and JSON give ints, floats, bools, strings, lists and tables; Python counts a bool as an int,
so each check here says what the file meant: true is not the integer 1, and an integer is a fine
number (`1` for a learning rate of 1.0).
"""

from __future__ import annotations

import math
from typing import Any


def is_integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite_number(value: object) -> bool:
    return is_number(value) and math.isfinite(value)


#: Each declared type (a class, or its name as a dataclass annotation under `from __future__ import
#: annotations` gives it): the test a value passes and what the error says it must be.
_CHECKS: dict[object, tuple[Any, str]] = {
    int: (is_integer, "an integer"),
    float: (is_number, "a number"),
    bool: (lambda value: isinstance(value, bool), "true or false"),
    str: (lambda value: isinstance(value, str), "a string"),
    list: (lambda value: isinstance(value, list), "a list"),
    dict: (lambda value: isinstance(value, dict), "a table of keys and values"),
    "list[str]": (lambda value: isinstance(value, list) and all(isinstance(item, str) for item in value), "a list of strings"),
    "list[int]": (lambda value: isinstance(value, list) and all(is_integer(item) for item in value), "a list of integers"),
}
_CHECKS.update({kind.__name__: check for kind, check in list(_CHECKS.items()) if isinstance(kind, type)})


def type_problem(value: object, expected: object, *, finite: bool = False) -> str | None:
    """None when `value` has the `expected` type (int, float, bool, str, list, dict, "list[str]",
    "list[int]", or a type's name); otherwise what it must be, such as "must be an integer".
    `finite`: a float must also be finite (not NaN or infinite). A type it does not know passes."""
    if finite and expected in (float, "float"):
        return None if is_finite_number(value) else "must be a finite number"
    check = _CHECKS.get(expected)
    if check is None or check[0](value):
        return None
    return f"must be {check[1]}"
