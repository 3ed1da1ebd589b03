"""The reference-figure table (report_builder/references.toml) and its loader.

The shipped table must load, and every figure in it must be sourced: its value appears
literally (as 0.6894 or as 58%) on the line of the cited write-up that `where` names. That
check reads the write-ups in ../shared/reference/ and is skipped where they are absent.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from report_builder.references import (
    DEFAULT,
    REFERENCE_MODELS,
    Reference,
    load_references,
    summarize,
)

REFERENCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference"

GOOD_ENTRY = {
    "model": '"transfer"',
    "metric": '"val_accuracy"',
    "value": "0.9641",
    "statistic": '"last epoch of 20"',
    "source": '"reference write-up 004_135cb23455335c70.txt"',
    "where": '"line 627"',
    "data": '"808 validation images"',
    "epochs": "20",
    "caveats": '["single run"]',
}


def write_table(tmp_path: Path, *entries: dict[str, str]) -> Path:
    """A references.toml with one [[reference]] table per entry (values as TOML literals)."""
    lines = []
    for entry in entries:
        lines.append("[[reference]]")
        lines.extend(f"{key} = {literal}" for key, literal in entry.items())
        lines.append("")
    path = tmp_path / "references.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def literal_forms(value: float) -> list[str]:
    """How a write-up may print ``value``: as a decimal (0.6894, 0.58) or a percentage (58%, 96.53%)."""
    percent = round(value * 100, 4)
    return [f"{value:.4f}", f"{value:.2f}", repr(value), f"{percent:g}%", f"{percent:.2f}%"]


def appears_in(value: float, text: str) -> bool:
    """Whether ``value`` is printed in ``text`` as a whole number (0.58 does not match 0.5842)."""
    return any(re.search(rf"(?<![\d.]){re.escape(form)}(?![\d])", text) for form in set(literal_forms(value)))


# ------------------------------------------------------------------ the shipped table


def test_shipped_table_loads():
    references = load_references()
    assert references, "the shipped table is empty"
    assert all(isinstance(reference, Reference) for reference in references)
    assert {reference.model for reference in references} == set(REFERENCE_MODELS)
    assert all(reference.source_file for reference in references), "every source names its write-up file"
    assert all(re.match(r"line \d+", reference.where) for reference in references), "every `where` starts with a line number"
    assert load_references(DEFAULT) == references


def test_shipped_values_appear_literally_in_the_cited_write_up():
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"the reference write-ups are not here ({REFERENCE_DIR})")
    for index, reference in enumerate(load_references()):
        label = f"reference[{index}] ({reference.model}, {reference.source_file})"
        path = REFERENCE_DIR / reference.source_file
        assert path.is_file(), f"{label}: cited file {path} does not exist"
        lines = path.read_text(encoding="utf-8").splitlines()
        line_number = int(re.match(r"line (\d+)", reference.where).group(1))
        assert 1 <= line_number <= len(lines), f"{label}: line {line_number} is past the end of the file"
        line = lines[line_number - 1]
        assert appears_in(reference.value, line), f"{label}: {reference.value} is not on line {line_number}: {line.strip()!r}"


def test_shipped_links_appear_literally_in_the_cited_write_up():
    if not REFERENCE_DIR.is_dir():
        pytest.skip(f"the reference write-ups are not here ({REFERENCE_DIR})")
    linked = [reference for reference in load_references() if reference.url]
    assert linked, "the table links no write-up"
    for reference in linked:
        assert reference.url in (REFERENCE_DIR / reference.source_file).read_text(encoding="utf-8"), reference.url


def test_a_write_up_is_cited_by_its_title_never_by_its_file_name():
    titles = {reference.title for reference in load_references()}
    assert '"Blog Post 5" (2022-02-25)' in titles and '"Classification is the Name of the Game!"' in titles
    assert not any(re.search(r"\d{3}_[0-9a-f]{16}|\.txt|reference write-up", title) for title in titles)
    citations = summarize(load_references(), "transfer")["citations"]
    assert [citation["value"] for citation in citations] == [0.9517, 0.9752, 0.9641]
    assert citations[-1]["url"] == "https://github.com/xinyudong1129/Blog-Post/tree/main/blogpost5"


@pytest.mark.parametrize("literal", ['"http://example.com"', '"https://example.com/a b"', '"https://e.com/)x"', "3"])
def test_a_link_that_the_report_cannot_print_as_it_is_is_refused(tmp_path, literal):
    path = write_table(tmp_path, {**GOOD_ENTRY, "url": literal})
    with pytest.raises(ValueError, match=r"reference\[0\]\.url: must be one https:// link"):
        load_references(path)


def test_no_reference_figure_for_finetuning():
    references = load_references()
    assert summarize(references, "finetune") is None
    assert not any("fine-tun" in reference.statistic.lower() for reference in references)


def test_the_write_up_that_trained_on_test_is_flagged_in_every_entry():
    references = load_references()
    flagged = {reference.source_file for reference in references if reference.trained_on_test}
    assert flagged == {"002_3e831e022264cad5.txt"}
    assert all(reference.trained_on_test for reference in references if reference.source_file in flagged)


def test_shipped_transfer_summary():
    summary = summarize(load_references(), "transfer")
    assert summary["count"] == 3
    assert (summary["min"], summary["max"]) == (0.9517, 0.9752)
    assert [reference.value for reference in summary["excluded"]] == [0.9864]
    assert all("002_" not in source for source in summary["sources"])


# ------------------------------------------------------------------ the loader's checks


def test_a_good_entry_loads(tmp_path):
    (reference,) = load_references(write_table(tmp_path, GOOD_ENTRY))
    assert reference == Reference(model="transfer", metric="val_accuracy", value=0.9641, statistic="last epoch of 20",
                                  source="reference write-up 004_135cb23455335c70.txt", where="line 627",
                                  data="808 validation images", epochs=20, caveats=("single run",))
    assert reference.source_file == "004_135cb23455335c70.txt"
    assert not reference.trained_on_test


@pytest.mark.parametrize(
    ("field", "literal", "message"),
    [
        ("model", '"resnet"', "unknown model 'resnet'"),
        ("model", '"finetune"', "none of the reference write-ups fine-tunes"),
        ("value", "96.41", "must be a fraction in [0, 1]"),
        ("value", "-0.1", "must be a fraction in [0, 1]"),
        ("value", "nan", "must be a fraction in [0, 1]"),
        ("value", '"0.96"', "must be a fraction in [0, 1]"),
        ("source", '""', "must be a non-empty string"),
        ("source", '"   "', "must be a non-empty string"),
        ("metric", '"test_accuracy"', "unknown metric"),
        ("epochs", "0", "positive integer"),
        ("caveats", '"single run"', "list of non-empty strings"),
    ],
)
def test_a_bad_field_names_file_entry_and_field(tmp_path, field, literal, message):
    path = write_table(tmp_path, GOOD_ENTRY, {**GOOD_ENTRY, "source": '"another write-up"', field: literal})
    with pytest.raises(ValueError) as raised:
        load_references(path)
    assert str(path) in str(raised.value)
    assert f"reference[1].{field}:" in str(raised.value)
    assert message in str(raised.value)


def test_a_missing_source_names_the_field(tmp_path):
    entry = {key: literal for key, literal in GOOD_ENTRY.items() if key != "source"}
    path = write_table(tmp_path, entry)
    with pytest.raises(ValueError, match=r"reference\[0\]\.source: missing"):
        load_references(path)


def test_an_unknown_field_is_refused(tmp_path):
    path = write_table(tmp_path, {**GOOD_ENTRY, "vaule": "0.5"})
    with pytest.raises(ValueError, match=r"reference\[0\]\.vaule: unknown field"):
        load_references(path)


def test_one_write_up_cannot_give_one_model_twice(tmp_path):
    path = write_table(tmp_path, GOOD_ENTRY, {**GOOD_ENTRY, "value": "0.9653"})
    with pytest.raises(ValueError, match=r"reference\[1\]\.source: .* already gives transfer val_accuracy in reference\[0\]"):
        load_references(path)


def test_a_file_that_is_not_toml_is_named(tmp_path):
    path = tmp_path / "references.toml"
    path.write_text("[[reference]\nmodel = ", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid TOML") as raised:
        load_references(path)
    assert str(path) in str(raised.value)


# ------------------------------------------------------------------ summarize


def test_summarize_excludes_entries_that_trained_on_test(tmp_path):
    path = write_table(
        tmp_path,
        {**GOOD_ENTRY, "source": '"write-up A"', "value": "0.95"},
        {**GOOD_ENTRY, "source": '"write-up B"', "value": "0.97", "data": '"800 validation images"'},
        {**GOOD_ENTRY, "source": '"write-up C"', "value": "0.99",
         "caveats": '["single run", "trained on its test split: fit(test_dataset)"]'},
        {**GOOD_ENTRY, "source": '"write-up A"', "model": '"baseline"', "value": "0.60"},
    )
    summary = summarize(load_references(path), "transfer")
    assert summary["count"] == 2
    assert (summary["min"], summary["max"]) == (0.95, 0.97)
    assert summary["sources"] == ["write-up A", "write-up B"]
    assert summary["data"] == ["808 validation images", "800 validation images"]
    assert [reference.source for reference in summary["entries"]] == ["write-up A", "write-up B"]
    assert [(reference.source, reference.value) for reference in summary["excluded"]] == [("write-up C", 0.99)]


def test_summarize_when_every_entry_trained_on_test(tmp_path):
    path = write_table(tmp_path, {**GOOD_ENTRY, "caveats": '["Trained on the test split"]'})
    summary = summarize(load_references(path), "transfer")
    assert summary["count"] == 0
    assert summary["min"] is None and summary["max"] is None
    assert summary["sources"] == [] and len(summary["excluded"]) == 1


def test_summarize_without_entries_and_with_an_unknown_model(tmp_path):
    references = load_references(write_table(tmp_path, GOOD_ENTRY))
    assert summarize(references, "baseline") is None
    assert summarize(references, "transfer", metric="test_accuracy") is None
    with pytest.raises(ValueError, match="unknown model 'tranfser'"):
        summarize(references, "tranfser")
