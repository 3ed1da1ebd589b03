"""Numbers and text as the write-up prints them: every formatter takes any artifact value and
never raises (an unusable value prints as "n/a"), and :func:`escape_markdown` makes artifact
text safe to place in Markdown.
"""

from __future__ import annotations

import html
import math
import re

from report_builder import observations as obs

# --------------------------------------------------------------------------- escaping

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]|#!])")
#: Control characters (NUL and the like) have no business in a page; they show as U+FFFD.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_LINE_START_SPECIAL = re.compile(r"^([-+])(?=\s|$)")
_ORDERED_LIST_START = re.compile(r"^(\d+)([.)])(?=\s|$)")


def escape_markdown(value: object) -> str:
    """Make any value safe to place in Markdown text (also inside a table cell).

    HTML-escapes ``& < > "``, backslash-escapes Markdown-significant characters, turns line
    breaks into spaces and neutralises list markers at the start. Never use it inside code.
    """
    if value is None:
        return ""
    text = str(value)
    text = " ".join(text.splitlines()) if ("\n" in text or "\r" in text) else text
    text = _CONTROL_CHARACTERS.sub("\ufffd", text)
    # Quotes become &quot; but apostrophes stay: html.escape would write &#x27;, whose "#" the
    # next step would backslash-escape into text that shows up literally.
    text = html.escape(text, quote=False).replace('"', "&quot;")
    text = _MARKDOWN_SPECIAL.sub(r"\\\1", text)
    text = _LINE_START_SPECIAL.sub(r"\\\1", text)
    text = _ORDERED_LIST_START.sub(r"\1\\\2", text)
    return text


def code_fence(text: object) -> str:
    """A backtick fence longer than any backtick run in ``text`` (so the text cannot close it)."""
    runs = re.findall(r"`+", str(text or ""))
    longest = max((len(run) for run in runs), default=0)
    return "`" * max(3, longest + 1)


# --------------------------------------------------------------------------- number formatting


def finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _no_negative_zero(text: str) -> str:
    return text[1:] if re.fullmatch(r"-0(\.0+)?", text) else text


def format_percent(value: object, digits: int = 1) -> str:
    """A fraction as a percentage: 0.632 -> "63.2%"; "n/a" when unknown."""
    number = finite(value)
    if number is None:
        return "n/a"
    return _no_negative_zero(f"{number * 100:.{digits}f}") + "%"


def format_points(value: object, signed: bool = True) -> str:
    """Percentage points: 3.4 -> "+3.4 points"; "n/a" when unknown."""
    number = finite(value)
    if number is None:
        return "n/a"
    text = _no_negative_zero(f"{number:.{obs.POINTS_DECIMALS}f}")
    if signed and not text.startswith("-") and text.strip("0.") != "":
        text = "+" + text
    unit = "point" if text.lstrip("+-") == "1.0" else "points"
    return f"{text} {unit}"


def format_difference(value: object) -> str:
    """A difference of two fractions in signed percentage points, no unit: 0.031 -> "+3.1"."""
    number = finite(value)
    if number is None:
        return "n/a"
    text = _no_negative_zero(f"{number * 100:.{obs.POINTS_DECIMALS}f}")
    return text if text.startswith("-") or text.strip("0.") == "" else "+" + text


def format_count(value: object) -> str:
    """An integer with thousands separators: 2260546 -> "2,260,546"."""
    number = finite(value)
    if number is None:
        return "n/a"
    return f"{int(number):,}"


def format_seconds(value: object) -> str:
    """Wall time: 83.4 -> "83.4 s (1 min 23 s)"."""
    number = finite(value)
    if number is None:
        return "n/a"
    text = f"{number:.1f} s"
    if number >= 60:
        whole = int(round(number))
        hours, rest = divmod(whole, 3600)
        minutes, seconds = divmod(rest, 60)
        parts = ([f"{hours} h"] if hours else []) + [f"{minutes} min", f"{seconds} s"]
        text += " (" + " ".join(parts) + ")"
    return text


def format_std(value: object) -> str:
    """A standard deviation (a fraction) in points without the unit: 0.0123 -> "1.2"; "—" when unknown.

    With a single seed there is no sample standard deviation, so it shows as a dash.
    """
    number = finite(value)
    if number is None:
        return "\u2014"
    return _no_negative_zero(f"{number * 100:.{obs.POINTS_DECIMALS}f}")


def format_interval(value: object) -> str:
    """A (low, high) pair of fractions: "93.1% to 97.2%"; "n/a" when unknown."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        return "n/a"
    return f"{format_percent(value[0])} to {format_percent(value[1])}"


_NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def number_word(value: object) -> str:
    """Small counts as words (3 -> "three"), larger ones as digits."""
    number = as_int(value)
    if number is None:
        return "n/a"
    return _NUMBER_WORDS[number] if 0 <= number < len(_NUMBER_WORDS) else format_count(number)


def join_words(values: object) -> str:
    """Items as a list in prose: "a", "a and b", "a, b and c" (each item as text)."""
    items = [str(value) for value in values] if isinstance(values, list | tuple) else [str(values)]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else ""


def number_of_times(value: object) -> str:
    """How often, in words: 1 -> "once", 2 -> "twice", 3 -> "three times"."""
    number = as_int(value)
    if number is None:
        return "an unknown number of times"
    return {1: "once", 2: "twice"}.get(number, f"{number_word(number)} times")


def magnitude(value: object) -> float | None:
    """Absolute value (for wording like "3.4 points lower")."""
    number = finite(value)
    return None if number is None else abs(number)


def as_int(value: object) -> int | None:
    """A whole number from artifact data, or ``None`` when it is not a finite number."""
    number = finite(value)
    return None if number is None else int(number)
