"""External reference figures: what the reference write-ups of this study report, with sources.

The figures live in ``references.toml`` next to this module, one ``[[reference]]`` table per
figure, each naming the write-up it comes from, where in it, which statistic it is and what
data it was measured on. :func:`load_references` reads and checks that table;
:func:`summarize` gives one model's figures for the report, setting aside the entries of a
write-up that trained on its test split.

These are other people's numbers, measured on their runs and their data; the report quotes
them with that attribution and never as a result of this run. Standard library only.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The table shipped with the package.
DEFAULT = Path(__file__).with_name("references.toml")

#: Models a reference figure may be for: the study's models 1-4. The study's fifth model,
#: finetune, is not here on purpose: none of the reference write-ups fine-tunes.
REFERENCE_MODELS = ("baseline", "augmented", "preprocessed", "transfer")
#: Every model name of the study (experiments.config.MODEL_NAMES, repeated here to keep this
#: module free of the experiments package); summarize() answers None for finetune and its control.
STUDY_MODELS = (*REFERENCE_MODELS, "finetune", "transfer_extended")
METRICS = ("val_accuracy",)

#: A caveat that says the write-up trained on its test split ("trained on its test split", "trains on the test ...").
_TRAINED_ON_TEST = re.compile(r"\btrain(?:ed|s)? on (?:its|the) test\b", re.IGNORECASE)
#: A reference write-up's file name inside a source, e.g. 000_dad564cf92011e57.txt.
_SOURCE_FILE = re.compile(r"\b\d{3}_[0-9a-f]{16}\.txt\b")

_TEXT_FIELDS = ("model", "metric", "statistic", "source", "where", "data")
_FIELDS = (*_TEXT_FIELDS, "value", "epochs", "caveats")
#: Fields an entry may leave out: ``url``, a link the write-up gives for itself or its code.
_OPTIONAL_FIELDS = ("url",)
#: A link the report may print as it is: https, no white space, quotes, brackets or parentheses.
_URL = re.compile(r"https://[^\s\"'<>()\[\]]+")


@dataclass(frozen=True)
class Reference:
    """One externally reported figure and where it comes from."""

    model: str
    metric: str
    value: float
    statistic: str
    source: str
    where: str
    data: str
    epochs: int
    caveats: tuple[str, ...] = ()
    url: str | None = None

    @property
    def title(self) -> str:
        """The write-up as a reader knows it: the source without the reference file it cites
        ('"Blog Post 5" (2022-02-25)', not '... reference write-up 004_135cb23455335c70.txt')."""
        title = re.sub(r",?\s*(?:reference write-up\s*)?" + _SOURCE_FILE.pattern, "", self.source).strip(" ,;")
        return title or "a reference write-up"

    @property
    def trained_on_test(self) -> bool:
        """Whether a caveat says the write-up trained on its test split."""
        return any(_TRAINED_ON_TEST.search(caveat) for caveat in self.caveats)

    @property
    def source_file(self) -> str | None:
        """The reference write-up's file name the source cites, if it cites one."""
        match = _SOURCE_FILE.search(self.source)
        return match.group(0) if match else None


def load_references(path: Path | str = DEFAULT) -> list[Reference]:
    """The checked entries of the reference table at ``path``, in file order.

    Raises ValueError, naming the file and the entry (``reference[i]``, 0-based) and field,
    when the file is not TOML, an entry lacks a field or has an unknown one, the model is not
    one of :data:`REFERENCE_MODELS`, the value is not a fraction in [0, 1], a text field
    (source included) is empty, or one source gives the same model's metric twice.
    OSError (e.g. FileNotFoundError) passes through unchanged.
    """
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not valid TOML: {error}") from error
    unknown = sorted(set(document) - {"reference"})
    if unknown:
        raise ValueError(f"{path}: unknown top-level key(s) {', '.join(unknown)}; expected only [[reference]] tables")
    entries = document.get("reference", [])
    if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
        raise ValueError(f"{path}: 'reference' must be an array of tables, written [[reference]]")

    references: list[Reference] = []
    seen: dict[tuple[str, str, str], int] = {}
    for index, entry in enumerate(entries):
        reference = _check_entry(entry, f"{path}: reference[{index}]")
        key = (reference.source, reference.model, reference.metric)
        if key in seen:
            raise ValueError(f"{path}: reference[{index}].source: {reference.source!r} already gives "
                             f"{reference.model} {reference.metric} in reference[{seen[key]}]; one entry per write-up and model")
        seen[key] = index
        references.append(reference)
    return references


def _check_entry(entry: dict[str, Any], where: str) -> Reference:
    missing = [name for name in _FIELDS if name not in entry]
    if missing:
        raise ValueError(f"{where}.{missing[0]}: missing (every entry needs {', '.join(_FIELDS)})")
    unknown = sorted(set(entry) - set(_FIELDS) - set(_OPTIONAL_FIELDS))
    if unknown:
        raise ValueError(f"{where}.{unknown[0]}: unknown field (known: {', '.join(_FIELDS + _OPTIONAL_FIELDS)})")
    url = entry.get("url")
    if url is not None and (not isinstance(url, str) or not _URL.fullmatch(url)):
        raise ValueError(f"{where}.url: must be one https:// link without spaces, quotes or brackets, got {url!r}")

    for name in _TEXT_FIELDS:
        text = entry[name]
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{where}.{name}: must be a non-empty string, got {text!r}")
    if entry["model"] not in REFERENCE_MODELS:
        hint = " (none of the reference write-ups fine-tunes)" if entry["model"] == "finetune" else ""
        raise ValueError(f"{where}.model: unknown model {entry['model']!r}{hint}; expected one of {', '.join(REFERENCE_MODELS)}")
    if entry["metric"] not in METRICS:
        raise ValueError(f"{where}.metric: unknown metric {entry['metric']!r}; expected one of {', '.join(METRICS)}")

    value = entry["value"]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{where}.value: must be a fraction in [0, 1] (0.9641, not 96.41), got {value!r}")
    epochs = entry["epochs"]
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"{where}.epochs: must be a positive integer, got {epochs!r}")
    caveats = entry["caveats"]
    if not isinstance(caveats, list) or not all(isinstance(caveat, str) and caveat.strip() for caveat in caveats):
        raise ValueError(f"{where}.caveats: must be a list of non-empty strings, got {caveats!r}")

    return Reference(model=entry["model"], metric=entry["metric"], value=float(value), statistic=entry["statistic"],
                     source=entry["source"], where=entry["where"], data=entry["data"], epochs=epochs,
                     caveats=tuple(caveats), url=url)


def summarize(references: list[Reference], model: str, metric: str = "val_accuracy") -> dict[str, Any] | None:
    """One model's reference figures, or None when no entry is for ``model`` and ``metric``.

    Returns a dict with:

    - ``count``: how many write-ups are counted (entries that did not train on test);
    - ``min`` / ``max``: their lowest and highest value (None when ``count`` is 0);
    - ``sources``: their sources, in table order;
    - ``citations``: per counted write-up, its ``title``, ``url`` (None without one), ``value``
      and ``statistic``, in table order, for the report's list (no internal file names);
    - ``data``: the distinct descriptions of what they were measured on, in table order;
    - ``entries``: the counted :class:`Reference` entries themselves;
    - ``excluded``: the entries set aside because a caveat says their write-up trained on
      its test split (each a :class:`Reference`, so its source and caveats can be cited);
    - ``model`` and ``metric``, as asked.

    Raises ValueError for a name that is not one of the study's models (a typo would
    otherwise read as "no reference figure").
    """
    if model not in STUDY_MODELS:
        raise ValueError(f"unknown model {model!r}; expected one of {', '.join(STUDY_MODELS)}")
    matching = [reference for reference in references if reference.model == model and reference.metric == metric]
    if not matching:
        return None
    counted = [reference for reference in matching if not reference.trained_on_test]
    values = [reference.value for reference in counted]
    return {
        "model": model,
        "metric": metric,
        "count": len(counted),
        "min": min(values) if values else None,
        "max": max(values) if values else None,
        "sources": [reference.source for reference in counted],
        "citations": [{"title": reference.title, "url": reference.url, "value": reference.value, "statistic": reference.statistic}
                      for reference in counted],
        "data": list(dict.fromkeys(reference.data for reference in counted)),
        "entries": counted,
        "excluded": [reference for reference in matching if reference.trained_on_test],
    }
