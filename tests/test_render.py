"""Rendering synthetic artifact folders into docs/ and building them with MkDocs."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report_fixtures as fixtures  # noqa: E402
from report_builder import observations as obs  # noqa: E402
from report_builder.render import (  # noqa: E402
    ReportError,
    escape_markdown,
    format_percent,
    format_points,
    render_report,
)
from report_builder.site import SiteBuildError, build_site  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def make_project(tmp_path: Path) -> Path:
    """A throw-away MkDocs project: the repo's mkdocs.yml and hand-written guide pages."""
    project = tmp_path / "project"
    (project / "docs").mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "mkdocs.yml", project / "mkdocs.yml")
    shutil.copytree(PROJECT_ROOT / "docs" / "guide", project / "docs" / "guide")
    return project


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


# --------------------------------------------------------------------------- escaping and formatting


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        ("a_b*c`d[e]f|g", r"a\_b\*c\`d\[e\]f\|g"),
        ("# heading", r"\# heading"),
        ("back\\slash", r"back\\slash"),
        ("Tom & Jerry", "Tom &amp; Jerry"),
        ("- item", r"\- item"),
        ("1. first", r"1\. first"),
        ("3.15.1", "3.15.1"),
        ("-5", "-5"),
        ("line one\nline two", "line one line two"),
        ("{: onclick=x}", r"\{: onclick=x\}"),
        (None, ""),
        (42, "42"),
    ],
)
def test_escape_markdown(raw, expected):
    assert escape_markdown(raw) == expected


def test_number_formatting_is_stable():
    assert format_percent(0.632) == "63.2%"
    assert format_percent(None) == "n/a"
    assert format_percent(float("nan")) == "n/a"
    assert format_percent(-0.00001) == "0.0%"
    assert format_points(3.44) == "+3.4 points"
    assert format_points(-2.0) == "-2.0 points"
    assert format_points(0.0) == "0.0 points"
    assert format_points(1.0, signed=False) == "1.0 point"


# --------------------------------------------------------------------------- complete run


@pytest.fixture
def complete_run(tmp_path: Path) -> Path:
    return fixtures.write_artifacts(tmp_path / "artifacts", skipped=[{"file": "train/cats/broken_1.jpg", "reason": "truncated"}])


def test_complete_run_writes_every_page_and_figure(complete_run: Path, tmp_path: Path):
    docs = tmp_path / "docs"
    written = render_report(complete_run, docs)
    relative = sorted(str(path.relative_to(docs)) for path in written)
    assert relative == sorted(
        ["index.md", "method.md"]
        + [f"models/{model}.md" for model in fixtures.MODEL_ORDER]
        + [f"assets/figures/{name}" for name in (
            "augmentation_flip.png", "augmentation_rotation.png", "comparison.png", "data_grid.png",
            "curves_baseline.png", "curves_augmented.png", "curves_preprocessed.png", "curves_transfer.png",
        )]
    )
    assert all(path.is_file() for path in written)
    assert not list(docs.rglob("*.tmp"))


def test_index_numbers_come_from_the_artifacts(complete_run: Path, tmp_path: Path):
    docs = tmp_path / "docs"
    render_report(complete_run, docs)
    index = read(docs / "index.md")
    augmented = obs.observe_model("augmented", fixtures.overfitting_history(), 0.5)
    settled = augmented.settled
    expected_range = f"{format_percent(settled.minimum)} to {format_percent(settled.maximum)}, mean {format_percent(settled.mean)}"
    assert expected_range in index
    assert "**19 of 20**" in index and "**95.0%**" in index
    assert "chosen model is **transfer**" in index
    assert "right 50.0% of the time on validation" in index
    assert "![A few training images of each class](assets/figures/data_grid.png)" in index
    assert '=== "Training"' in index and '=== "Test"' in index
    assert obs.overfitting_rule_text() in index
    assert "broken" not in index  # the file list lives on the method page
    assert "1 file was skipped" in index


def test_model_pages_word_the_verdict_from_the_facts(complete_run: Path, tmp_path: Path):
    docs = tmp_path / "docs"
    render_report(complete_run, docs)
    baseline = read(docs / "models" / "baseline.md")
    augmented = read(docs / "models" / "augmented.md")
    preprocessed = read(docs / "models" / "preprocessed.md")
    assert "**no better than the baseline**" in baseline
    assert "clearly learned something" not in baseline
    assert "**overfits strongly**" in augmented
    index = read(docs / "index.md")
    assert "| no clear overfitting; no better than the baseline |" in index
    assert "| overfits strongly |" in index
    assert "clearly learned something" in augmented
    assert "Compared with the previous model, baseline" in augmented
    assert "**no clear overfitting**" in preprocessed
    assert "../assets/figures/augmentation_flip.png" in augmented
    assert "augmentation_flip" not in baseline
    assert "![Accuracy and loss of the baseline model" in baseline
    assert "../assets/figures/curves_baseline.png" in baseline
    transfer = read(docs / "models" / "transfer.md")
    assert "**2,260,546** parameters" in transfer and "2,257,984 frozen" in transfer
    assert "````text" in transfer  # fence longer than the ``` inside the summary text


def test_method_page_lists_config_versions_and_skipped_files(complete_run: Path, tmp_path: Path):
    docs = tmp_path / "docs"
    render_report(complete_run, docs)
    method = read(docs / "method.md")
    assert r"| training.batch\_size | 32 |" in method
    assert "| tensorflow | 2.21.0 |" in method
    assert r"| train/cats/broken\_1.jpg | truncated |" in method
    assert "c0ffee" in method and "f00d" in method
    assert "0123456789abcdef0123456789abcdef01234567" in method
    assert "**423.5 s (7 min 4 s)**" in method  # 60.5 + 90.75 + 121.0 + 151.25


def test_render_is_deterministic(complete_run: Path, tmp_path: Path):
    first, second = tmp_path / "first", tmp_path / "second"
    render_report(complete_run, first)
    render_report(complete_run, second)
    assert tree_bytes(first) == tree_bytes(second)
    render_report(complete_run, first)  # re-render over the previous output
    assert tree_bytes(first) == tree_bytes(second)


def test_render_replaces_generated_files_only(complete_run: Path, tmp_path: Path):
    docs = tmp_path / "docs"
    (docs / "models").mkdir(parents=True)
    (docs / "models" / "stale.md").write_text("old", encoding="utf-8")
    (docs / "assets" / "figures").mkdir(parents=True)
    (docs / "assets" / "figures" / "stale.png").write_bytes(b"old")
    (docs / "assets" / "extra.css").write_text("keep", encoding="utf-8")
    (docs / "guide").mkdir()
    (docs / "guide" / "hand.md").write_text("keep", encoding="utf-8")
    render_report(complete_run, docs)
    assert not (docs / "models" / "stale.md").exists()
    assert not (docs / "assets" / "figures" / "stale.png").exists()
    assert read(docs / "assets" / "extra.css") == "keep"
    assert read(docs / "guide" / "hand.md") == "keep"


# --------------------------------------------------------------------------- errors and partial runs


def test_missing_folder_raises_report_error(tmp_path: Path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ReportError, match="nowhere"):
        render_report(missing, tmp_path / "docs")


def test_missing_manifest_raises_report_error(tmp_path: Path):
    run = fixtures.write_artifacts(tmp_path / "artifacts")
    (run / "manifest.json").unlink()
    with pytest.raises(ReportError, match="manifest.json"):
        render_report(run, tmp_path / "docs")


def test_corrupt_manifest_raises_report_error(tmp_path: Path):
    run = fixtures.write_artifacts(tmp_path / "artifacts")
    (run / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ReportError, match="manifest.json"):
        render_report(run, tmp_path / "docs")


def test_partial_run_renders_what_exists(tmp_path: Path):
    histories = fixtures.default_histories()
    histories["transfer"] = None
    histories["preprocessed"] = fixtures.steady_history(epochs=3)
    run = fixtures.write_artifacts(
        tmp_path / "artifacts",
        histories=histories,
        model_status={"preprocessed": "partial"},
        model_errors={"preprocessed": "Interrupted <b>by</b> user_1"},
        write_metrics=False,
    )
    docs = tmp_path / "docs"
    render_report(run, docs)
    index = read(docs / "index.md")
    assert "| [transfer](models/transfer.md) (not run) |" in index
    assert "| [preprocessed](models/preprocessed.md) (did not finish) |" in index
    assert "This run is not complete" in index
    assert "No test score yet" in index
    transfer = read(docs / "models" / "transfer.md")
    assert "Not run" in transfer and "no training history" in transfer
    preprocessed = read(docs / "models" / "preprocessed.md")
    assert "Did not finish" in preprocessed and "3 of 10 epochs" in preprocessed
    assert r"Interrupted &lt;b&gt;by&lt;/b&gt; user\_1" in preprocessed
    assert not (docs / "assets" / "figures" / "curves_transfer.png").exists()
    assert "curves_transfer" not in transfer


def test_missing_dataset_and_broken_history_do_not_crash(tmp_path: Path):
    run = fixtures.write_artifacts(tmp_path / "artifacts", write_dataset=False, write_figures=False)
    (run / "models" / "augmented" / "history.json").write_text("{broken", encoding="utf-8")
    (run / "models" / "preprocessed" / "summary.json").unlink()
    bad_history = {"schema_version": 1, "model": "transfer", "epochs": [{"epoch": 1, "accuracy": "high", "val_accuracy": 0.5}]}
    (run / "models" / "transfer" / "history.json").write_text(json.dumps(bad_history), encoding="utf-8")
    docs = tmp_path / "docs"
    render_report(run, docs)
    index = read(docs / "index.md")
    assert "No dataset description" in index
    assert "![" not in index
    assert "models/augmented/history.json: not valid JSON" in read(docs / "method.md")
    assert "no architecture summary" in read(docs / "models" / "preprocessed.md")
    assert "could not be read" in read(docs / "models" / "transfer.md")
    baseline = read(docs / "models" / "baseline.md")
    assert "Without a majority baseline" in baseline
    assert not (docs / "assets" / "figures").exists() or not list((docs / "assets" / "figures").iterdir())


def test_single_epoch_and_empty_histories(tmp_path: Path):
    histories = fixtures.default_histories()
    histories["baseline"] = fixtures.make_history([0.7], [0.6])
    histories["augmented"] = []
    histories["preprocessed"] = fixtures.make_history([None, None], [float("nan"), None])
    run = fixtures.write_artifacts(tmp_path / "artifacts", histories=histories)
    docs = tmp_path / "docs"
    render_report(run, docs)
    assert "Only a single epoch finished" in read(docs / "models" / "baseline.md")
    assert "not enough data" in read(docs / "models" / "augmented.md")
    assert "no usable validation accuracy" in read(docs / "models" / "preprocessed.md")


def test_hostile_class_names_are_escaped_in_markdown(tmp_path: Path):
    run = fixtures.write_artifacts(
        tmp_path / "artifacts",
        class_names=(fixtures.HOSTILE_CLASS, "dogs_*[x]|"),
        skipped=[{"file": "train/<img src=x onerror=alert(2)>.jpg", "reason": "# not | a heading"}],
        config_extra={"note": "<script>alert(3)</script>"},
    )
    docs = tmp_path / "docs"
    for page in render_report(run, docs):
        if page.suffix == ".md":
            text = read(page)
            assert "<script" not in text and "<img" not in text


# --------------------------------------------------------------------------- mkdocs builds


def test_strict_build_escapes_hostile_names_in_html(tmp_path: Path):
    project = make_project(tmp_path)
    run = fixtures.write_artifacts(
        tmp_path / "artifacts",
        class_names=(fixtures.HOSTILE_CLASS, "dogs"),
        skipped=[{"file": "train/<img src=x onerror=alert(2)>.jpg", "reason": "bad | data"}],
    )
    render_report(run, project / "docs")
    site = build_site(project, site_dir=tmp_path / "site")
    index_html = read(site / "index.html")
    method_html = read(site / "method" / "index.html")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in index_html
    assert "<script>alert" not in index_html
    assert "&lt;img src=x onerror=alert(2)&gt;" in method_html
    assert "<img src=x" not in method_html
    for page in site.rglob("*.html"):
        assert "<script>alert" not in read(page)


def test_strict_build_of_partial_run(tmp_path: Path):
    project = make_project(tmp_path)
    histories = fixtures.default_histories()
    histories["transfer"] = None
    histories["preprocessed"] = None
    run = fixtures.write_artifacts(tmp_path / "artifacts", histories=histories, write_metrics=False)
    render_report(run, project / "docs")
    site = build_site(project, site_dir=tmp_path / "site")
    for model in fixtures.MODEL_ORDER:
        assert (site / "models" / model / "index.html").is_file()
    assert "assets/figures/curves_baseline.png" in read(site / "models" / "baseline" / "index.html")


def test_build_site_reports_mkdocs_output_on_failure(tmp_path: Path):
    project = make_project(tmp_path)  # nothing rendered: the nav names missing pages
    with pytest.raises(SiteBuildError, match="mkdocs build --strict failed"):
        build_site(project, site_dir=tmp_path / "site")


def test_build_site_without_config(tmp_path: Path):
    with pytest.raises(SiteBuildError, match="mkdocs.yml"):
        build_site(tmp_path)
