"""Rendering synthetic artifact folders into docs/ and building them with MkDocs."""

from __future__ import annotations

import json
import shutil
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report_fixtures as fixtures  # noqa: E402

from report_builder import analysis, charts  # noqa: E402
from report_builder import observations as obs  # noqa: E402
from report_builder.cli import main as cli_main  # noqa: E402
from report_builder.formatting import (
    breakable,
    breakable_name,
    escape_markdown,
    format_difference,  # noqa: E402
    format_interval,
    format_percent,
    format_points,
    format_std,
)
from report_builder.publish import MARKER, marker_text  # noqa: E402
from report_builder.render import render_report  # noqa: E402
from report_builder.site import SiteBuildError, build_site  # noqa: E402
from report_builder.views import ReportError  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def make_project(tmp_path: Path) -> Path:
    """A throw-away MkDocs project: the repo's mkdocs.yml and hand-written guide pages."""
    project = tmp_path / "project"
    (project / "docs").mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "report_builder" / "mkdocs.yml", project / "mkdocs.yml")
    shutil.copytree(PROJECT_ROOT / "docs" / "guide", project / "docs" / "guide")
    (project / "docs" / MARKER).write_text(marker_text("docs", []), encoding="utf-8")  # render may write here
    return project


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def fixture_estimate(model: str, history=None, seeds=fixtures.DEFAULT_SEEDS, validation_count: int = 400):
    """The accuracy estimate the report should print for a fixture model, computed independently."""
    runs = fixtures.per_seed(history if history is not None else fixtures.default_histories()[model], seeds)
    summary = obs.summarise_seeds(model, runs)
    return summary, obs.accuracy_estimate(summary.last_val, validation_count)


def fixture_correct(model: str, histories=None, seeds=fixtures.DEFAULT_SEEDS) -> np.ndarray:
    """The (seeds, images) right/wrong matrix the fixtures write for a model, rebuilt here."""
    histories = histories or fixtures.default_histories()
    runs = fixtures.per_seed(histories[model], seeds)
    validation = fixtures.validation_split(fixtures.dataset_for(("cats", "dogs"), None, 0.5))
    return np.array([fixtures.predictions_for(model, seed, runs[seed], validation).correct for seed in sorted(runs)])


def interval_text(interval) -> str:
    return f"{format_percent(interval.estimate)} ({format_percent(interval.low)} to {format_percent(interval.high)})"


def render_pages(run: Path, tmp_path: Path) -> dict[str, str]:
    """Render ``run`` and return every Markdown page by its path relative to docs/."""
    docs = tmp_path / "docs"
    return {str(page.relative_to(docs)): read(page) for page in render_report(run, docs) if page.suffix == ".md"}


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
    assert format_std(0.0123) == "1.2"
    assert format_std(None) == "\u2014"
    assert format_interval((0.931, 0.972)) == "93.1% to 97.2%"
    assert format_interval(None) == "n/a"


# --------------------------------------------------------------------------- complete run


@pytest.fixture
def complete_run(tmp_path: Path) -> Path:
    return fixtures.write_artifacts(tmp_path / "artifacts", skipped=[{"file": "train/cats/broken_1.jpg", "reason": "truncated"}])


def test_complete_run_writes_every_page_and_figure(complete_run: Path, tmp_path: Path):
    docs = tmp_path / "docs"
    written = render_report(complete_run, docs)
    relative = sorted(str(path.relative_to(docs)) for path in written)
    figures = ["augmentation_flip", "augmentation_rotation", "comparison", "data_grid", "misclassified_test"]
    figures += [f"curves_{model}" for model in fixtures.MODEL_ORDER]
    assert relative == sorted(
        ["index.md", "method.md"]
        + [f"models/{model}.md" for model in fixtures.MODEL_ORDER]
        + [f"assets/figures/{name}{variant}.png" for name in figures for variant in ("", "-dark")]
        + [f"assets/charts/{name}.json" for name in ["comparison"] + [f"curves-{model}" for model in fixtures.MODEL_ORDER]]
        + [f"assets/data/{name}" for name in ["models.csv", "seeds.csv", "test-classes.csv", "test-confusion.csv"]
           + [f"history-{model}.csv" for model in fixtures.MODEL_ORDER]]
        + [f"assets/javascripts/{name}" for name in charts.BUNDLE_FILES]
        + [".report-builder-nav.json", "assets/stylesheets/extra.css"]
    )
    assert all(path.is_file() for path in written)
    assert not list(docs.rglob("*.tmp"))


def test_index_numbers_come_from_the_artifacts(complete_run: Path, tmp_path: Path):
    docs = tmp_path / "docs"
    render_report(complete_run, docs)
    index = read(docs / "index.md")
    interval = analysis.accuracy_interval(fixture_correct("augmented"))
    assert f"| [augmented](models/augmented.md) | {interval_text(interval)} | train-val gap |" in index
    assert f"| {breakable_name('augmented')} | 62.0%, 63.0%, 64.0% | 6, 6, 6 |" in index  # and by hand
    assert "**19 of 20**" in index and "**95.0%**" in index
    assert "chosen model is **finetune**, trained with seed **1339**" in index
    assert "| 1339 (chosen) |" in index
    assert "Both the model and its seed were chosen on validation accuracy alone" in index
    assert f"| **{breakable_name('dogs')}** | 1 | 9 |" in index and "misclassified_test.png" in index
    assert "right 50.0% of the time on validation" in index
    assert "![A few training images of each class](assets/figures/data_grid.png#only-light)" in index
    assert "![A few training images of each class](assets/figures/data_grid-dark.png#only-dark)" in index
    assert '=== "Training"' in index and '=== "Test"' in index
    assert "broken" not in index  # the file list lives on the method page
    assert "1 file was skipped" in index


def test_model_pages_word_the_verdict_from_the_facts(complete_run: Path, tmp_path: Path):
    docs = tmp_path / "docs"
    render_report(complete_run, docs)
    baseline = read(docs / "models" / "baseline.md")
    augmented = read(docs / "models" / "augmented.md")
    preprocessed = read(docs / "models" / "preprocessed.md")
    assert "- **Near chance.** Its 95% interval reaches down to" in baseline
    assert "- **Underfits.**" in baseline
    assert "this run cannot show that the model learned anything from the images" in baseline
    assert "learned something from the images" in augmented and "cannot show" not in augmented
    assert "- **Overfits: a train-validation gap of" in augmented
    assert "A late drop" not in augmented  # its 3-point fall is within twice the noise of 63% on 400 images
    assert "## Compared with baseline" in augmented
    assert "**augmented vs baseline: +13.0 points**" in augmented and ": augmented is better." in augmented
    assert "- **Still improving when training stopped.**" in preprocessed
    index = read(docs / "index.md")
    assert "| near chance, underfits |" in index
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
    assert f"| {breakable_name('training.batch_size')} | 32 |" in method
    assert "| tensorflow | 2.21.0 |" in method
    assert r"| train/cats/broken\_1.jpg | truncated |" in method
    assert "c0ffee" in method and "f00d" in method
    assert "0123456789abcdef0123456789abcdef01234567" in method
    assert "**810.0 s (13 min 30 s)**" in method  # three seeds of 20, 30, 40, 50, 60 and 70 s
    assert (f"| [augmented](models/augmented.md) | {breakable_name('complete')} | 3 | {breakable_name('mixed_bfloat16')} | 30 | "
            "90.0 s (1 min 30 s) |") in method
    assert "The validation split has 400 images." in method
    assert "Student t quantile" in method and "Welch-Satterthwaite" in method
    assert "five distinct comparisons in all" in method and "Holm's correction" in method
    assert "(about 2.5 points at 50% on these 400 images)" in method


def test_render_is_deterministic(complete_run: Path, tmp_path: Path):
    first, second = tmp_path / "first", tmp_path / "second"
    render_report(complete_run, first)
    render_report(complete_run, second)
    assert tree_bytes(first) == tree_bytes(second)
    render_report(complete_run, first)  # re-render over the previous output
    assert tree_bytes(first) == tree_bytes(second)


def test_render_replaces_generated_files_only(complete_run: Path, tmp_path: Path):
    docs = tmp_path / "docs"
    render_report(complete_run, docs)
    marker = json.loads(read(docs / MARKER))
    marker["files"] += ["models/stale.md", "assets/figures/stale.png"]  # an earlier render wrote these
    (docs / MARKER).write_text(json.dumps(marker), encoding="utf-8")
    (docs / "models" / "stale.md").write_text("old", encoding="utf-8")
    (docs / "assets" / "figures" / "stale.png").write_bytes(b"old")
    (docs / "assets" / "extra.css").write_text("keep", encoding="utf-8")
    (docs / "models" / "mine.md").write_text("keep", encoding="utf-8")
    (docs / "guide").mkdir()
    (docs / "guide" / "hand.md").write_text("keep", encoding="utf-8")
    render_report(complete_run, docs)
    assert not (docs / "models" / "stale.md").exists()
    assert not (docs / "assets" / "figures" / "stale.png").exists()
    assert read(docs / "assets" / "extra.css") == "keep"
    assert read(docs / "guide" / "hand.md") == "keep"
    assert read(docs / "models" / "mine.md") == "keep"
    assert "models/mine.md" not in read(docs / MARKER) and "models/baseline.md" in read(docs / MARKER)
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".docs.")] == [".docs.lock"]


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
    assert "Did not finish" in preprocessed and "9 of 30 epochs completed over all seeds" in preprocessed
    assert r"Interrupted &lt;b&gt;by&lt;/b&gt; user\_1" in preprocessed
    assert not (docs / "assets" / "figures" / "curves_transfer.png").exists()
    assert "curves_transfer" not in transfer


def test_missing_dataset_and_broken_history_do_not_crash(tmp_path: Path):
    run = fixtures.write_artifacts(tmp_path / "artifacts", write_dataset=False, write_figures=False)
    (run / "models" / "augmented" / "seed-1337" / "history.json").write_text("{broken", encoding="utf-8")
    (run / "models" / "preprocessed" / "summary.json").unlink()
    bad_history = {"schema_version": 2, "model": "transfer", "seed": 1338, "precision": "float32",
                   "epochs": [{"epoch": 1, "accuracy": "high", "val_accuracy": 0.5}]}
    (run / "models" / "transfer" / "seed-1338" / "history.json").write_text(json.dumps(bad_history), encoding="utf-8")
    docs = tmp_path / "docs"
    render_report(run, docs)
    index = read(docs / "index.md")
    assert "No dataset description" in index
    assert "![" not in index
    assert "models/augmented/seed-1337/history.json: not valid JSON" in read(docs / "method.md")
    augmented = read(docs / "models" / "augmented.md")
    assert "| 1337 |" not in augmented and "| 1338 |" in augmented and "Over two seeds" in augmented
    assert "no architecture summary" in read(docs / "models" / "preprocessed.md")
    transfer = read(docs / "models" / "transfer.md")
    assert "could not be read" in transfer and "transfer (seed 1338)" in transfer
    baseline = read(docs / "models" / "baseline.md")
    assert "What the curves say" not in baseline  # no baseline and no label counts: no verdicts
    assert not (docs / "assets" / "figures").exists() or not list((docs / "assets" / "figures").iterdir())


def test_single_epoch_and_empty_histories(tmp_path: Path):
    histories = fixtures.default_histories()
    histories["baseline"] = fixtures.make_history([0.7], [0.6])
    histories["augmented"] = []
    histories["preprocessed"] = fixtures.make_history([None, None], [float("nan"), None])
    run = fixtures.write_artifacts(tmp_path / "artifacts", histories=histories)
    docs = tmp_path / "docs"
    render_report(run, docs)
    baseline = read(docs / "models" / "baseline.md")
    assert "| 1337 | 59.0% (1) | 59.0% (1) |" in baseline
    assert "There is no interval around it" in read(docs / "models" / "preprocessed.md")


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


# --------------------------------------------------------------------------- seeds, noise and finetune


def test_curves_say_mean_and_min_max_band_over_seeds(complete_run: Path, tmp_path: Path):
    pages = render_pages(complete_run, tmp_path)
    assert "mean over 3 seeds with a min-max band" in pages["models/baseline.md"]
    assert "the shaded band runs from the lowest to the highest seed" in pages["models/baseline.md"]
    assert "each seed's final accuracy](assets/figures/comparison.png#only-light)" in pages["index.md"]
    assert "with a band from the\nlowest to the highest seed" in pages["index.md"]


def test_model_page_has_a_per_seed_table(complete_run: Path, tmp_path: Path):
    augmented = render_pages(complete_run, tmp_path)["models/augmented.md"]
    # overfitting_history ends at 0.63 and peaks at 0.65 in epoch 6; the seeds sit 1 point apart
    assert "| 1337 | 62.0% (10) | 64.0% (6) | 30.0 s |" in augmented
    assert "| 1339 | 64.0% (10) | 66.0% (6) | 30.0 s |" in augmented
    assert "Over three seeds the final validation accuracy is 63.0% ± 1.0 points" in augmented
    interval = analysis.accuracy_interval(fixture_correct("augmented"))
    assert (f"Its mean final validation accuracy is **{format_percent(interval.estimate)}**, 95% interval "
            f"{format_percent(interval.low)} to {format_percent(interval.high)}") in augmented


def test_finetune_page_continues_transfer_and_compares_with_its_control(complete_run: Path, tmp_path: Path):
    pages = render_pages(complete_run, tmp_path)
    finetune = pages["models/finetune.md"]
    difference = analysis.paired_difference(fixture_correct("finetune"), fixture_correct("transfer"), paired=True)
    assert "# Fine-tuning the top of MobileNetV2" in finetune
    assert "../assets/figures/curves_finetune.png" in finetune
    assert "starts with transfer's epochs 1 to 10" in finetune and "its own epochs are 11 to 20" in finetune
    assert "## Compared with transfer" in finetune
    assert (f"**finetune vs transfer: {format_difference(difference.estimate)} points** (95% interval "
            f"{format_difference(difference.low)} to {format_difference(difference.high)}, paired by seed): finetune is better") in finetune
    assert "*What differs besides chance:* finetune had 20 epochs of training in all, transfer 10." in finetune
    assert "## Against the budget-matched control" in finetune and "**finetune vs transfer_extended:" in finetune
    assert "reference write-ups" not in finetune  # none of them fine-tunes
    assert "98%" not in finetune
    assert "[finetune](models/finetune.md)" in pages["index.md"]
    assert "Next: [finetune](finetune.md)" in pages["models/transfer.md"]


def test_chosen_model_within_noise_of_runner_up_is_not_ranked(tmp_path: Path):
    """finetune gains on transfer on two seeds and loses on the third: within the seeds' noise."""
    histories = fixtures.default_histories()
    histories["finetune"] = {1337: fixtures.make_history([0.97] * 10, [0.965] * 10, first_epoch=11),
                             1338: fixtures.make_history([0.97] * 10, [0.975] * 10, first_epoch=11),
                             1339: fixtures.make_history([0.97] * 10, [0.945] * 10, first_epoch=11)}
    histories["transfer"] = {seed: fixtures.make_history([0.95] * 10, [0.955] * 10) for seed in fixtures.DEFAULT_SEEDS}
    histories["transfer_extended"] = None
    run = fixtures.write_artifacts(tmp_path / "artifacts", histories=histories)
    index = render_pages(run, tmp_path)["index.md"]
    honest_test = index[index.index("## The honest test"):]
    assert "The runner-up on validation is transfer." in honest_test
    assert "**finetune vs transfer:" in honest_test and "no clear difference, the interval includes zero" in honest_test
    assert "on this\nevidence the two are equally good" in honest_test
    assert "finetune is better" not in honest_test


def test_clearly_separated_models_are_ranked(tmp_path: Path):
    histories = fixtures.default_histories()
    histories["finetune"] = fixtures.make_history([0.99] * 10, [0.995] * 10, first_epoch=11)
    histories["transfer"] = fixtures.make_history([0.85] * 10, [0.85] * 10)
    run = fixtures.write_artifacts(tmp_path / "artifacts", histories=histories)
    pages = render_pages(run, tmp_path)
    finetune, index = pages["models/finetune.md"], pages["index.md"]
    assert "**finetune vs transfer: +14.3 points**" in finetune and ": finetune is better." in finetune
    assert "no clear difference" not in finetune.split("## Against")[0]
    honest_test = index[index.index("## The honest test"):]
    assert "The runner-up on validation is transfer_extended." in honest_test
    assert "equally good" not in honest_test


def test_a_paired_interval_that_includes_zero_ranks_nothing(tmp_path: Path):
    histories = fixtures.default_histories()
    histories["augmented"] = fixtures.make_history([0.6] * 10, [0.51] * 10)  # baseline ends at 0.505
    run = fixtures.write_artifacts(tmp_path / "artifacts", histories=histories)
    pages = render_pages(run, tmp_path)
    assert "**augmented vs baseline: +1.0 points** (95% interval" in pages["models/augmented.md"]
    assert "no clear difference, the interval includes zero" in pages["models/augmented.md"]
    assert "augmented is better" not in pages["index.md"]
    assert ": preprocessed is better." in pages["models/preprocessed.md"]


def test_a_model_clearly_below_the_one_before_is_called_worse(tmp_path: Path):
    histories = fixtures.default_histories()
    histories["augmented"] = fixtures.make_history([0.6] * 10, [0.49] * 10)  # a point below the baseline's 0.50
    histories["preprocessed"] = fixtures.make_history([0.6] * 10, [0.40] * 10)  # nine points below augmented
    run = fixtures.write_artifacts(tmp_path / "artifacts", histories=histories)
    pages = render_pages(run, tmp_path)
    augmented, preprocessed = pages["models/augmented.md"], pages["models/preprocessed.md"]
    assert "**augmented vs baseline: -1.0 points** (95% interval" in augmented
    assert "no clear difference, the interval includes zero" in augmented and "baseline is better" not in augmented
    assert "**preprocessed vs augmented: -9.0 points** (95% interval" in preprocessed
    assert "): augmented is better." in preprocessed and "preprocessed is better" not in preprocessed


def test_predictions_that_do_not_match_the_scored_run_give_no_interval(tmp_path: Path):
    """Predictions from another epoch than the scored one, or for another validation file list,
    are not paired with anything: the model gets no interval and no image-by-image comparison."""
    run = fixtures.write_artifacts(tmp_path / "artifacts")
    for model, seed, field, value in (("augmented", 1338, "epoch", 6), ("transfer", 1337, "files_sha256", "0" * 64)):
        path = run / "models" / model / f"seed-{seed}" / "validation_predictions.json"
        record = json.loads(read(path))
        record[field] = value
        path.write_text(json.dumps(record), encoding="utf-8")
    pages = render_pages(run, tmp_path)
    augmented, transfer, index = pages["models/augmented.md"], pages["models/transfer.md"], pages["index.md"]
    assert "There is no interval around it: seed 1338's predictions are from epoch 6, not its last epoch 10" in augmented
    assert ("**augmented vs baseline**: not compared image by image, because augmented has no usable validation "
            "predictions (seed 1338's predictions are from epoch 6, not its last epoch 10)") in augmented
    assert "There is no interval around it: seed 1337's predictions are for another validation file list" in transfer
    assert "**transfer vs preprocessed**: not compared image by image, because transfer has no usable" in transfer
    assert "| [augmented](models/augmented.md) | 63.0% (no interval) |" in index
    assert "| [transfer](models/transfer.md) | 95.4% (no interval) |" in index
    assert "95% interval" in pages["models/preprocessed.md"]  # the others keep theirs


def test_an_accuracy_outside_0_to_1_is_not_reported(tmp_path: Path):
    histories = fixtures.default_histories()
    histories["augmented"] = {seed: fixtures.make_history([0.6] * 10, [0.6] * 9 + [1.5]) for seed in fixtures.DEFAULT_SEEDS}
    run = fixtures.write_artifacts(tmp_path / "artifacts", histories=histories)
    augmented = render_pages(run, tmp_path)["models/augmented.md"]
    assert ("The training history of this model could not be read: history of augmented (seed 1337), epoch 10: "
            "val\\_accuracy must lie between 0 and 1, got 1.5") in augmented
    assert "150.0%" not in augmented


def test_the_method_page_lists_only_the_settings_that_applied():
    """The runner records which settings applied to the models that ran (manifest.study.settings);
    the method page lists those rows."""
    from experiments.study.records import study_record
    from report_builder.views import applicable_config_rows

    config = {"data": {"source": "folder", "data_dir": "photos", "url": "https://example.org/cats.zip", "archive_sha256": "ab12",
                       "batch_size": 32},
              "training": {"epochs": 10, "finetune_epochs": 5, "finetune_from_layer": 100, "finetune_learning_rate_factor": 0.1}}

    def keys(config, models):
        return {key for key, _ in applicable_config_rows(config, study_record(config, models).settings)}

    folder = keys(config, fixtures.MODEL_ORDER)
    assert {"data.data_dir", "data.batch_size", "training.epochs", "training.finetune_from_layer"} <= folder
    assert not {"data.url", "data.archive_sha256"} & folder  # a folder run downloaded nothing
    download = keys({**config, "data": {**config["data"], "source": "download"}}, fixtures.MODEL_ORDER)
    assert {"data.url", "data.archive_sha256"} <= download and "data.data_dir" not in download
    fine_tuning = {"training.finetune_from_layer", "training.finetune_learning_rate_factor"}
    control_only = keys(config, ["transfer", "transfer_extended"])  # the control reads only how many epochs
    assert "training.finetune_epochs" in control_only and not fine_tuning & control_only
    assert not ({"training.finetune_epochs"} | fine_tuning) & keys(config, ["baseline", "transfer"])


def test_one_seed_shows_no_band_and_no_seed_table(tmp_path: Path):
    run = fixtures.write_artifacts(tmp_path / "artifacts", seeds=(1337,))
    pages = render_pages(run, tmp_path)
    for name, text in pages.items():
        assert "band" not in text and "min-max" not in text, name
    index = pages["index.md"]
    assert "Final accuracy per seed" not in index
    assert "averaged over the single seed" in index
    augmented = pages["models/augmented.md"]
    assert "Over one seed the final validation accuracy is 63.0%." in augmented
    assert "Every model was trained once, with seed 1337" in pages["method.md"]


def test_seeds_are_read_in_numeric_order(tmp_path: Path):
    run = fixtures.write_artifacts(tmp_path / "artifacts", seeds=(9, 10, 100))
    augmented = render_pages(run, tmp_path)["models/augmented.md"]
    assert augmented.index("| 9 |") < augmented.index("| 10 |") < augmented.index("| 100 |")


def test_missing_finetune_renders_the_rest(tmp_path: Path):
    histories = fixtures.default_histories()
    del histories["finetune"]
    run = fixtures.write_artifacts(tmp_path / "artifacts", histories=histories)
    pages = render_pages(run, tmp_path)
    assert "| [finetune](models/finetune.md) (not run) |" in pages["index.md"]
    assert "Not run" in pages["models/finetune.md"]
    assert "reference write-ups" not in pages["models/finetune.md"]
    assert "chosen model is **transfer**" in pages["index.md"]
    assert "finetune does not start from scratch" not in pages["method.md"]


def test_a_seed_missing_from_a_model_is_named(tmp_path: Path):
    histories = fixtures.default_histories()
    histories["baseline"] = {1337: fixtures.at_baseline_history(), 1338: fixtures.at_baseline_history()}
    run = fixtures.write_artifacts(tmp_path / "artifacts", histories=histories)
    pages = render_pages(run, tmp_path)
    assert f"| {breakable_name('baseline')} | 50.0%, 50.0% | 3, 3 |" in pages["index.md"]
    assert "Seed 1339 of this run has no history for this model" in pages["models/baseline.md"]


# --------------------------------------------------------------------------- older runs


def test_a_manifest_without_the_study_record_stops_in_one_sentence_and_the_upgrade_script_adds_only_that(tmp_path: Path):
    """A manifest written before it recorded the study (the models' recipes, the plan, the settings
    that applied) cannot be read by the report, which knows nothing of the runner's recipes; the
    upgrade script derives the record from the manifest's own config and changes nothing else."""
    import subprocess

    run = fixtures.write_artifacts(tmp_path / "artifacts")
    expected = render_pages(run, tmp_path / "before")
    manifest = json.loads(read(run / "manifest.json"))
    study = manifest.pop("study")
    older = json.dumps({"schema_version": 2, **{key: value for key, value in manifest.items() if key != "schema_version"}}, indent=2)
    (run / "manifest.json").write_text(older, encoding="utf-8")
    with pytest.raises(ReportError, match=r"before manifests recorded the study's models.*scripts/upgrade_manifest.py"):
        render_report(run, tmp_path / "docs")
    script = Path(__file__).resolve().parents[1] / "scripts" / "upgrade_manifest.py"
    subprocess.run([sys.executable, str(script), str(run / "manifest.json")], check=True, capture_output=True)
    upgraded = json.loads(read(run / "manifest.json"))
    assert upgraded.pop("study") == study and upgraded == {**manifest, "schema_version": 2}
    assert render_pages(run, tmp_path / "after") == expected


def test_schema_1_manifest_gives_one_clear_error(tmp_path: Path):
    run = fixtures.write_artifacts(tmp_path / "artifacts")
    manifest = json.loads(read(run / "manifest.json"))
    manifest["schema_version"] = 1
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ReportError, match=r"older version of the study.*Rerun `python -m report_builder train`"):
        render_report(run, tmp_path / "docs")


def test_schema_1_model_folder_gives_one_clear_error(tmp_path: Path):
    run = fixtures.write_artifacts(tmp_path / "artifacts")
    fixtures.downgrade_to_schema_1(run)
    with pytest.raises(ReportError, match=r"older version of the study \(models/baseline/history.json"):
        render_report(run, tmp_path / "docs")


def test_schema_1_run_on_the_command_line_is_one_sentence(tmp_path: Path, capsys):
    run = fixtures.write_artifacts(tmp_path / "artifacts")
    fixtures.downgrade_to_schema_1(run)
    assert cli_main(["render", "--artifacts", str(run), "--docs", str(tmp_path / "docs")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: the run in ") and "python -m report_builder train" in error
    assert "Traceback" not in error and not (tmp_path / "docs").exists()


# --------------------------------------------------------------------------- consistency and layout


def layer_row(page: str, layer: str) -> str:
    return next(line.strip() for line in page.splitlines() if line.strip().startswith(f"| {breakable_name(layer)} |"))


def test_a_partly_frozen_backbone_is_not_marked_trainable(tmp_path: Path):
    """An older summary flags the fine-tuned backbone trainable as a whole; the model's totals say
    1,861,952 of its parameters are frozen, so the page gives it the rest, not a plain yes."""
    pages = render_pages(fixtures.write_artifacts(tmp_path / "artifacts"), tmp_path)
    finetune = pages["models/finetune.md"]
    assert layer_row(finetune, "mobilenetv2_1.00_160").endswith("| 2,257,984 | partly |")
    assert "396,032 train and 1,861,952 stay frozen (worked out from the model's totals" in finetune
    assert layer_row(finetune, "dense").endswith("| yes |")
    assert layer_row(pages["models/transfer.md"], "mobilenetv2_1.00_160").endswith("| no |")


def test_a_recorded_trainable_count_is_shown_as_recorded(tmp_path: Path):
    run = fixtures.write_artifacts(tmp_path / "artifacts")
    path = run / "models" / "finetune" / "summary.json"
    summary = json.loads(read(path))
    for layer in summary["layers"]:
        layer["trainable_params"] = 396032 if layer["name"] == "mobilenetv2_1.00_160" else layer["params"]
    path.write_text(json.dumps(summary), encoding="utf-8")
    finetune = render_pages(run, tmp_path)["models/finetune.md"]
    assert layer_row(finetune, "mobilenetv2_1.00_160").endswith("| partly |")
    assert "396,032 train and 1,861,952 stay frozen." in finetune and "worked out" not in finetune


def test_a_surplus_no_single_layer_can_hold_is_never_called_fully_trainable():
    from experiments.artifacts import Layer, ModelSummary
    from report_builder.views import layer_trainability

    layers = [Layer("conv", "Conv2D", "(None, 2)", 100, True), Layer("dense", "Dense", "(None, 2)", 50, True),
              Layer("pool", "MaxPooling2D", "(None, 2)", 0, False)]
    rows = layer_trainability(ModelSummary("m", "t", "d", layers, 150, 120, 30, ""))
    assert [row["trainable"] for row in rows] == ["some or all", "some or all", "no"]
    rows = layer_trainability(ModelSummary("m", "t", "d", layers, 150, 150, 0, ""))
    assert [row["trainable"] for row in rows] == ["yes", "yes", "no"]


def test_a_continued_model_is_named_after_itself_in_its_keras_summary(tmp_path: Path):
    run = fixtures.write_artifacts(tmp_path / "artifacts")
    path = run / "models" / "transfer_extended" / "summary.json"
    summary = json.loads(read(path))
    summary["summary_text"] = summary["summary_text"].replace('Model: "transfer_extended"', 'Model: "transfer"')
    path.write_text(json.dumps(summary), encoding="utf-8")
    page = render_pages(run, tmp_path)["models/transfer_extended.md"]
    assert 'Model: "transfer_extended"' in page and 'Model: "transfer"' not in page


def test_the_method_page_gives_the_studys_first_start_and_last_finish_not_the_last_calls(tmp_path: Path):
    """The manifest's times are the last `train` call's (03:00 to 03:10, a call that may have
    trained nothing); the study ran from its first cell's start to its last cell's finish."""
    method = render_pages(fixtures.write_artifacts(tmp_path / "artifacts"), tmp_path)["method.md"]
    cells = len(fixtures.MODEL_ORDER) * len(fixtures.DEFAULT_SEEDS)
    last_finish = fixtures.STUDY_START + timedelta(minutes=10 * (cells - 1) + 9)
    assert "The study's training ran from **2026-11-22 01:00:00 UTC**, when its first cell" in method
    assert f"to **{last_finish:%Y-%m-%d %H:%M:%S} UTC**, when the last of its {cells} cells finished." in method
    assert "The last `train` call, which wrote the manifest, started at 2026-11-22 03:00:00 UTC and finished at 2026-11-22 03:10:00 UTC" \
        in method


def test_no_path_of_the_machine_that_trained_is_published(tmp_path: Path):
    run = fixtures.write_artifacts(tmp_path / "artifacts", config_extra={"unused": 1})

    def change(manifest):
        manifest["data_source"] = {"kind": "folder", "location": "/home/someone/private/cats-dogs-cc0"}
        manifest["base_weights"] = {"kind": "file", "location": "../shared/weights/mobilenet.weights.h5",
                                    "file": "mobilenet.weights.h5", "sha256": "ab" * 32}
        manifest["config"]["data"] = {"source": "folder", "data_dir": "/home/someone/private/cats-dogs-cc0", "cache_dir": "~/.cache/x"}
        manifest["config"]["training"]["base_weights"] = "../shared/weights/mobilenet.weights.h5"

    fixtures.rewrite_manifest(run, change)
    pages = render_pages(run, tmp_path)
    for name, page in pages.items():
        for fragment in ("/home/someone", "../shared", "~/", "Users"):
            assert fragment not in page, (name, fragment)
    method = pages["method.md"]
    assert f"| Location | a folder named {breakable_name('cats-dogs-cc0')} on the machine that trained" in method
    assert f"| Base weights | file ({breakable_name('mobilenet.weights.h5')}) |" in method
    assert f"| {breakable_name('data.data_dir')} | &quot;…/cats-dogs-cc0&quot; |" in method
    assert "a folder named cats-dogs-cc0 (see the [method page]" in pages["index.md"]


def test_a_download_url_and_a_generator_are_published_as_they_are():
    from experiments.artifacts import DataSource
    from experiments.study.records import study_record
    from report_builder.views import applicable_config_rows, public_source

    url = "https://storage.googleapis.com/mledu-datasets/cats_and_dogs_filtered.zip"
    assert public_source(DataSource("download", url))["location"] == url
    assert public_source(DataSource("synthetic", "generated in memory (experiments.data.loading.synthetic_images)"))["local_name"] is None
    config = {"models": {"resnet": {"recipe": "transfer", "backbone": "ResNet50V2", "weights": "C:\\Users\\someone\\w.weights.h5"}},
              "study": {"models": ["resnet"]}}
    rows = dict(applicable_config_rows(config, study_record(config, ["resnet"]).settings))
    assert rows["models.resnet.weights"] == '"…/w.weights.h5"'


def test_the_reference_write_ups_are_a_list_of_titles_never_file_names(tmp_path: Path):
    transfer = render_pages(fixtures.write_artifacts(tmp_path / "artifacts"), tmp_path)["models/transfer.md"]
    section = transfer.split("## What the reference write-ups report\n", 1)[1].split("\n## ", 1)[0]
    paragraph, listing = section.strip().split("\n\n", 1)  # a blank line before the list, or Markdown runs it on
    items = listing.strip().splitlines()
    assert len(items) == 3 and all(item.startswith("- ") for item in items)
    assert items[0] == "- &quot;Classification is the Name of the Game\\!&quot;: 95.2%, last epoch of 20 (training log)"
    assert items[2].endswith("([the author's repository](https://github.com/xinyudong1129/Blog-Post/tree/main/blogpost5))")
    assert ".txt" not in section and "reference write-up" not in section


def test_names_in_tables_wrap_only_after_an_underscore_or_between_camelcase_humps(tmp_path: Path):
    assert breakable_name("transfer_extended") == '<span class="report-name">transfer\\_<wbr>extended</span>'
    assert breakable("transfer_extended") == "transfer\\_<wbr>extended" and breakable("augmented") == "augmented"
    assert breakable_name("GlobalMaxPooling2D") == '<span class="report-name">Global<wbr>Max<wbr>Pooling2D</span>'
    assert breakable_name("augmented") == '<span class="report-name">augmented</span>'
    assert breakable_name("<b>") == '<span class="report-name">&lt;b&gt;</span>' and breakable_name(None) == ""
    pages = render_pages(fixtures.write_artifacts(tmp_path / "artifacts"), tmp_path)
    assert "| [transfer\\_<wbr>extended](models/transfer_extended.md) |" in pages["method.md"]  # a link: kept whole by the stylesheet
    assert "| [transfer\\_<wbr>extended](models/transfer_extended.md) |" in pages["index.md"]
    assert layer_row(pages["models/transfer.md"], "dense").startswith(f"| {breakable_name('dense')} | {breakable_name('Dense')} |")
    stylesheet = read(tmp_path / "docs" / "assets" / "stylesheets" / "extra.css")
    assert ".md-typeset .report-name,\n.md-typeset table:not([class]) td a {\n  overflow-wrap: normal;\n  word-break: keep-all;" in stylesheet


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


def test_a_folder_without_mkdocs_yml_builds_with_the_package_settings_and_one_with_its_own_uses_those(tmp_path: Path):
    from report_builder.site import DEFAULT_MKDOCS, mkdocs_config

    assert mkdocs_config(tmp_path) == DEFAULT_MKDOCS and DEFAULT_MKDOCS.is_file()
    with pytest.raises(SiteBuildError, match="no docs folder to build"):
        build_site(tmp_path)
    render_report(fixtures.write_artifacts(tmp_path / "run"), tmp_path / "docs")  # a study of one's own, in a folder of its own
    site = build_site(tmp_path)
    assert site == tmp_path / "site" and (site / "index.html").is_file() and (site / "method" / "index.html").is_file()
    assert not (site / "guide").exists(), "the guide pages are the project's: a folder of its own has none"
    (tmp_path / "mkdocs.yml").write_text("site_name: mine\n", encoding="utf-8")
    assert mkdocs_config(tmp_path) == tmp_path / "mkdocs.yml"


def test_apostrophes_survive_escaping():
    from report_builder.formatting import escape_markdown

    assert escape_markdown("the last epoch's accuracy") == "the last epoch's accuracy"
    assert escape_markdown('say "hi" & <go>') == "say &quot;hi&quot; &amp; &lt;go&gt;"


def test_control_characters_in_artifact_text_never_reach_a_page(tmp_path: Path):
    run = fixtures.write_artifacts(tmp_path / "artifacts", class_names=("ca\x00ts", "do\x1bgs"),
                                   skipped=[{"file": "train/a\x00b.jpg", "reason": "bad\x7f"}])
    for page in render_report(run, tmp_path / "docs"):
        if page.suffix == ".md":
            text = read(page)
            assert not any(character in text for character in "\x00\x1b\x7f"), page.name
    assert "ca\ufffdts" in read(tmp_path / "docs" / "index.md")


def test_a_diverged_model_is_called_diverged(tmp_path: Path):
    run = fixtures.write_artifacts(tmp_path / "artifacts", model_status={"augmented": "diverged"},
                                   model_errors={"augmented": "seed 1337: loss became NaN in epoch 3"})
    pages = render_pages(run, tmp_path)
    assert '!!! danger "Diverged"' in pages["models/augmented.md"]
    assert "loss became NaN in epoch 3" in pages["models/augmented.md"]
    assert "[augmented](models/augmented.md) (diverged)" in pages["index.md"]
    assert f"| [augmented](models/augmented.md) | {breakable_name('diverged')} |" in pages["method.md"]


def test_a_malformed_dataset_or_metrics_file_is_a_problem_naming_its_field_and_a_malformed_manifest_stops(tmp_path: Path, capsys):
    run = fixtures.write_artifacts(tmp_path / "artifacts")
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    metrics["test"]["correct"] = "most"
    (run / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    dataset = json.loads((run / "dataset.json").read_text(encoding="utf-8"))
    dataset["splits"]["train"]["count"] = None
    (run / "dataset.json").write_text(json.dumps(dataset), encoding="utf-8")
    docs = tmp_path / "docs"
    from report_builder.cli import main

    assert main(["render", "--artifacts", str(run), "--docs", str(docs)]) == 0
    warning = capsys.readouterr().err
    assert warning.startswith("warning: 2 problem(s) with the run's files") and "test.correct" in warning
    method, index = read(docs / "method.md"), read(docs / "index.md")
    assert "metrics.json: field 'test.correct' must be an integer" in method
    assert "dataset.json: field 'splits.train.count' must be an integer" in method
    assert "No dataset description" in index and "No test score yet" in index
    manifest = json.loads((run / "manifest.json").read_text(encoding="utf-8"))
    del manifest["seeds"]
    manifest["devices"] = None
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    render_report(run, tmp_path / "docs-1")  # no seeds recorded, no devices: still a report
    assert "once per seed: 1337, 1338, 1339" in read(tmp_path / "docs-1" / "method.md")  # the seeds the histories have
    manifest["models"]["baseline"]["status"] = 3
    (run / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    with pytest.raises(ReportError, match=r"manifest.json: field 'models.baseline.status' must be a string"):
        render_report(run, tmp_path / "docs-2")


def test_the_majority_baseline_says_when_its_class_is_a_tie_break(tmp_path: Path):
    run = fixtures.write_artifacts(tmp_path / "artifacts", seeds=(1337, 1338))
    dataset = json.loads((run / "dataset.json").read_text(encoding="utf-8"))
    docs = tmp_path / "docs"
    render_report(run, docs)
    index = read(docs / "index.md")
    assert "class of the training split, here **cats**." in index  # the fixture's first class leads by one image
    assert "every one of them twice with different seeds" in index
    assert "trained twice, once per seed" in read(docs / "method.md")
    dataset["splits"]["train"]["label_counts"] = {"cats": 20, "dogs": 20}
    (run / "dataset.json").write_text(json.dumps(dataset), encoding="utf-8")
    render_report(run, docs)
    index = " ".join(read(docs / "index.md").split())
    assert "the classes are equally common in training, so it answers with the first by name, **cats**" in index


# --------------------------------------------------------------------------- the comparisons as a family


def test_holm_keeps_the_family_wise_error_rate_over_the_distinct_pairs():
    """Three distinct pairs (the same pair twice counts once): p = 0.001 holds (<= 0.05/3), p = 0.03
    does not (> 0.05/2) and turns into no clear difference; p = 0.5 was never clear."""
    from report_builder import views

    def comparison(first, second, p, low):
        return views.PairedComparison(first, second, analysis.Interval(0.02, low, 0.04, 3.0, p),
                                      views.BETTER if low > 0 else views.NO_CLEAR_DIFFERENCE)

    strong, weak, none, again = (comparison("b", "a", 0.001, 0.01), comparison("c", "b", 0.03, 0.001),
                                 comparison("d", "c", 0.5, -0.02), comparison("b", "a", 0.001, 0.01))
    assert views.settle_family([strong, weak, None, none, again]) == 3
    assert (strong.outcome, again.outcome) == (views.BETTER, views.BETTER)
    assert weak.outcome == views.NO_CLEAR_DIFFERENCE and weak.holm_failed
    assert none.outcome == views.NO_CLEAR_DIFFERENCE and not none.holm_failed
    assert strong.family_size == 3


def test_a_difference_that_does_not_survive_holm_is_not_called_better(complete_run: Path, tmp_path: Path, monkeypatch):
    from report_builder import views

    monkeypatch.setattr(views.analysis, "holm_rejections", lambda p_values, alpha=0.05: [False] * len(p_values))
    augmented = render_pages(complete_run, tmp_path)["models/augmented.md"]
    assert "**augmented vs baseline: +13.0 points**" in augmented
    assert "augmented is better" not in augmented
    assert "no clear difference: the interval excludes zero, but not once the five comparisons of this report are corrected for together (Holm" in augmented


def test_two_copies_of_one_recipe_are_named_identical_runs(tmp_path: Path):
    histories = fixtures.default_histories()
    histories["augmented"] = histories["baseline"]
    run = fixtures.write_artifacts(tmp_path / "artifacts", histories=histories)
    augmented = render_pages(run, tmp_path)["models/augmented.md"]
    assert "**augmented vs baseline: identical runs.**" in augmented
    assert "one model under two names" in augmented and "95% interval 0.0" not in augmented


def test_a_conclusion_that_rests_on_the_last_epoch_is_flagged(tmp_path: Path):
    """augmented dips 4 points at its last epoch on every seed: clearly below preprocessed there,
    but over the last three epochs the gap is 1.3 points, which the same interval would not call."""
    histories = fixtures.default_histories()
    histories["augmented"] = fixtures.make_history([0.8] * 10, [0.70] * 9 + [0.66])
    histories["preprocessed"] = fixtures.make_history([0.8] * 10, [0.70] * 10)
    run = fixtures.write_artifacts(tmp_path / "artifacts", histories=histories)
    preprocessed = render_pages(run, tmp_path)["models/preprocessed.md"]
    assert "**preprocessed vs augmented: +4.0 points**" in preprocessed and "preprocessed is better" in preprocessed
    assert ("*Rests on one epoch:* scored on the mean of each seed's last 3 epochs instead of its last epoch, the difference "
            "is +1.3 points, which would not be a clear difference.") in preprocessed


def test_a_model_with_one_seed_says_its_interval_covers_the_images_only(tmp_path: Path):
    run = fixtures.write_artifacts(tmp_path / "artifacts", seeds=(7,))
    pages = render_pages(run, tmp_path)
    assert "one seed: the choice of validation images only, the seed-to-seed variation is unknown" in pages["models/augmented.md"]
    assert "With one seed each, the seed-to-seed variation is unknown" in pages["models/augmented.md"]


def test_a_last_epoch_that_moves_a_difference_is_noted_even_when_the_conclusion_stands():
    from report_builder import views

    def comparison(estimate, window):
        result = views.PairedComparison("b", "a", analysis.Interval(estimate, estimate - 0.027, estimate + 0.027, 3.0, 0.2),
                                        views.NO_CLEAR_DIFFERENCE)
        result.window_difference = window
        return result

    moved = comparison(0.019, 0.003)  # as finetune vs transfer in the shipped study: +1.9 on the last epoch, +0.3 over three
    assert moved.window_moves and not moved.window_changes_conclusion
    assert not comparison(0.019, 0.014).window_moves  # half a point: within a third of the half-width


def test_a_chance_level_loss_above_chance_is_over_confident_only_when_sure_of_its_wrong_answers():
    from experiments.artifacts import SeedRun, ValidationPredictions
    from report_builder import views

    def runs(probability):
        predictions = ValidationPredictions("m", 1, 5, "x", ["a", "b"], [0, 0, 1, 1], [0, 1, 1, 0], [probability] * 4)
        return [SeedRun(1, [], None, None, predictions)]

    verdict = analysis.Verdict(analysis.OVERCONFIDENT, {"by_loss": True, "by_interval": False})
    sure = views._with_confidence(verdict, runs(0.9)).facts
    unsure = views._with_confidence(verdict, runs(0.55)).facts
    assert sure["confident"] and sure["wrong_confidence"] == pytest.approx(0.9)
    assert unsure["confident"] is False and unsure["mean_confidence"] == pytest.approx(0.55)
    model = views.ModelView.__new__(views.ModelView)
    model.verdicts = [analysis.Verdict(analysis.OVERCONFIDENT, unsure)]
    assert model.verdict_labels == ["chance-level loss"]
    model.verdicts = [analysis.Verdict(analysis.OVERCONFIDENT, sure)]
    assert model.verdict_labels == ["over-confident"]


@pytest.mark.parametrize("field, value, sentence", [
    ("chosen_model", "ghost", "names 'ghost' as the chosen model, but the run has no such model (its models: "),
    ("test", "ghost", "holds the test score of 'ghost', not of the chosen model 'finetune'"),
])
def test_metrics_naming_a_chosen_or_tested_model_the_run_lacks_stops_render_in_one_sentence(tmp_path: Path, capsys, field, value,
                                                                                            sentence):
    run = fixtures.write_artifacts(tmp_path / "artifacts")
    data = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    if field == "test":
        data["test"]["model"] = value
    else:
        data[field] = value
    (run / "metrics.json").write_text(json.dumps(data), encoding="utf-8")
    docs = tmp_path / "docs"
    assert cli_main(["render", "--artifacts", str(run), "--docs", str(docs)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: artifact file {run / 'metrics.json'} {sentence}") and err.count("\n") == 1
    assert "rerun `python -m report_builder train`" in err and not docs.exists()


def test_damaged_histories_go_to_stderr_and_the_method_page_one_line_each_and_duplicates_stay_out_of_the_csv(
        tmp_path: Path, capsys):
    run = fixtures.write_artifacts(tmp_path / "artifacts")
    damaged = {  # model -> how its first seed's history is damaged, and the problem that names it
        "baseline": (lambda epochs: epochs[0].update(val_accuracy=7.5), "val_accuracy must lie between 0 and 1, got 7.5"),
        "augmented": (lambda epochs: epochs[0].update(epoch="one"), "field 'epochs[0].epoch' must be an integer"),
        "transfer": (lambda epochs: epochs.insert(1, dict(epochs[0])), "epoch 1 appears twice (entry 2)"),
    }
    expected = []
    for model, (damage, detail) in damaged.items():
        path = next((run / "models" / model).glob("seed-*/history.json"))
        data = json.loads(path.read_text(encoding="utf-8"))
        damage(data["epochs"])
        path.write_text(json.dumps(data), encoding="utf-8")
        expected.append((path.relative_to(run).as_posix(), detail))
    docs = tmp_path / "docs"
    assert cli_main(["render", "--artifacts", str(run), "--docs", str(docs)]) == 0
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines[0].startswith(f"warning: 3 problem(s) with the run's files (in {run})") and len(lines) == 4
    method = read(docs / "method.md")
    for relative, detail in expected:
        assert any(line.startswith(f"  - {relative}: ") and detail in line for line in lines[1:]), (relative, err)
        assert escape_markdown(relative) in method and escape_markdown(detail) in method
    for model in damaged:
        assert "could not be read" in read(docs / "models" / f"{model}.md")
        assert not (docs / "assets" / "data" / f"history-{model}.csv").exists()  # no seed of it is counted twice
    assert (docs / "assets" / "data" / "history-preprocessed.csv").exists()


def test_a_model_the_manifest_does_not_list_shows_no_numbers_from_the_folders_it_left_behind(tmp_path: Path):
    """A task trained baseline under other settings (3 epochs), then a task with new settings
    trained augmented: the manifest, derived from the cells that match the run's config, lists
    augmented only. The report must agree with it: baseline "not run", none of its old numbers,
    and the left-over folder named as a problem."""
    run = fixtures.write_artifacts(tmp_path / "run", histories={"augmented": fixtures.steady_history(5)},
                                   write_metrics=False)
    old = fixtures.write_artifacts(tmp_path / "old", histories={"baseline": fixtures.at_baseline_history(3, 0.781)},
                                   write_metrics=False)
    shutil.copytree(old / "models" / "baseline", run / "models" / "baseline")
    problems: list[str] = []
    docs = tmp_path / "docs"
    render_report(run, docs, problems)
    front = read(docs / "index.md")
    baseline_row = next(line for line in front.splitlines() if line.startswith("| ") and "baseline" in line.lower())
    assert "not run" in baseline_row and "%" not in baseline_row, baseline_row
    assert any(problem.startswith("models/baseline/: seed folder(s)") and "not runs of this study" in problem
               for problem in problems), problems
    assert "not runs of this study" in read(docs / "method.md")
