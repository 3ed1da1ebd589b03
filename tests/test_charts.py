"""Interactive charts (Vega-Lite specs), CSV downloads and the bundled chart JavaScript of a render."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report_fixtures as fixtures  # noqa: E402

from report_builder import charts  # noqa: E402
from report_builder import observations as obs  # noqa: E402
from report_builder.publish import MARKER, marker_text  # noqa: E402
from report_builder.render import JAVASCRIPTS_DIR, render_report  # noqa: E402
from report_builder.site import build_site  # noqa: E402
from report_builder.views import load_run, seed_histories  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: Class names that would break a CSV file, a Markdown table or an HTML page if written as they are.
HOSTILE_NAMES = (fixtures.HOSTILE_CLASS, 'dogs, "the good ones"\nand | [more](x)', "=1+1")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return fixtures.write_artifacts(tmp_path_factory.mktemp("charts") / "artifacts")


@pytest.fixture(scope="module")
def run(run_dir):
    return load_run(run_dir)


@pytest.fixture(scope="module")
def histories(run):
    return seed_histories(run)


def raw_runs(model: str, seeds=fixtures.DEFAULT_SEEDS) -> dict[int, list[dict]]:
    """The histories the fixtures wrote for `model`, seed -> epochs, rebuilt here."""
    return fixtures.per_seed(fixtures.default_histories()[model], seeds)


def layers(spec: dict) -> list[dict]:
    return [layer for panel in spec["vconcat"] for layer in panel["layer"]]


def rows_of(spec: dict, layer: dict) -> list[dict]:
    data = layer["data"]
    return data["values"] if "values" in data else spec["datasets"][data["name"]]


def check_vega_lite(spec: dict) -> None:
    """What a Vega-Lite spec needs here: the schema of the bundled vega-lite, JSON without NaN, a
    mark and encoding for every layer, and every field it names present in the rows it draws."""
    assert spec["$schema"] == charts.SCHEMA
    bundled = re.search(r'"(\d+)\.(\d+)\.(\d+)"', (JAVASCRIPTS_DIR / "vega-lite.min.js").read_text(encoding="utf-8"))
    assert spec["$schema"].endswith(f"/v{bundled.group(1)}.json"), "the spec's major version is not the bundled vega-lite's"
    json.loads(charts.spec_text(spec))  # no NaN or Infinity: allow_nan=False would have raised
    for panel in spec["vconcat"]:
        assert isinstance(panel["width"], int) and panel["layer"]
        for layer in panel["layer"]:
            assert layer["mark"]["type"] in {"line", "point", "area", "rule", "tick"}
            rows = rows_of(spec, layer)
            assert rows, f"a layer without data: {layer['mark']}"
            for channel, definition in layer["encoding"].items():
                for item in definition if isinstance(definition, list) else [definition]:
                    if "field" in item:
                        assert any(item["field"] in row for row in rows), f"{channel} names {item['field']}, not in its data"


def tooltip_fields(layer: dict) -> set[str]:
    return {item["field"] for item in layer["encoding"].get("tooltip", [])}


def zooms(panel: dict) -> list[dict]:
    return [param for layer in panel["layer"] for param in layer.get("params", [])
            if param.get("bind") == "scales" and param["select"]["type"] == "interval"]


# --------------------------------------------------------------------------- specs


def test_comparison_spec_holds_every_models_curve_and_finals(run, histories):
    spec = charts.comparison_spec(run.models, histories, baseline=0.5)
    check_vega_lite(spec)
    per_epoch, last_epoch = spec["vconcat"]
    by_name = {model.name: model for model in run.models}
    for model in fixtures.MODEL_ORDER:
        raw = raw_runs(model)
        seeds = {(row["seed"], row["epoch"]): row["value"] for row in spec["datasets"]["seeds"] if row["model"] == model}
        assert seeds == {(seed, record["epoch"]): record["val_accuracy"] for seed, epochs in raw.items() for record in epochs}
        summary = obs.summarise_seeds(model, raw)
        means = {row["epoch"]: (row["mean"], row["min"], row["max"], row["seeds"]) for row in spec["datasets"]["mean"] if row["model"] == model}
        assert means == {item.epoch: (item.val_accuracy.mean, item.val_accuracy.minimum, item.val_accuracy.maximum, 3) for item in summary.epochs}
        finals = {row["seed"]: row["value"] for row in spec["datasets"]["finals"] if row["model"] == model}
        assert finals == {seed: epochs[-1]["val_accuracy"] for seed, epochs in raw.items()}
        (mean_row,) = [row for row in spec["datasets"]["summaries"] if row["model"] == model]
        assert (mean_row["low"], mean_row["high"]) == (by_name[model].interval.low, by_name[model].interval.high)
    # tooltips on every drawn point: per epoch and seed, per epoch mean, per seed final, per model mean
    assert {"model", "seed", "epoch", "value"} <= set.union(*(tooltip_fields(layer) for layer in per_epoch["layer"]))
    assert {"model", "epoch", "mean", "min", "max"} <= set.union(*(tooltip_fields(layer) for layer in per_epoch["layer"]))
    for layer in layers(spec):
        if layer["mark"]["type"] in ("point", "tick"):
            assert tooltip_fields(layer), f"no tooltip on {layer['mark']}"
    assert [zoom["select"]["encodings"] for zoom in zooms(per_epoch)] == [["x", "y"]]
    assert [zoom["select"]["encodings"] for zoom in zooms(last_epoch)] == [["x"]]  # models are rows: zoom the accuracy
    assert any(layer["mark"]["type"] == "area" for layer in per_epoch["layer"])  # the min-max band
    assert any(layer["mark"]["type"] == "rule" and rows_of(spec, layer) == [{"baseline": 0.5, "label": "majority baseline"}]
               for layer in per_epoch["layer"])


def test_the_comparison_zooms_its_accuracy_axis_to_the_models_compared(run, histories):
    """A 0-100% axis flattened the shipped run's 93-97% models: the per-epoch panel's range is
    the accuracies shown, in whole steps of 5 points, and says it is zoomed."""
    spec = charts.comparison_spec(run.models, histories, baseline=0.5)
    per_epoch = spec["vconcat"][0]
    shown = [row[key] for row in spec["datasets"]["mean"] for key in ("mean", "min", "max")]
    shown += [row["value"] for row in spec["datasets"]["seeds"]]
    (domain,) = {json.dumps(layer["encoding"]["y"]["scale"]["domain"]) for layer in per_epoch["layer"] if "scale" in layer["encoding"]["y"]}
    low, high = json.loads(domain)
    assert [low, high] == charts.accuracy_limits(shown) != [0.0, 1.0]
    assert low <= min(shown) and max(shown) <= high and low > min(shown) - 0.05 - 1e-9 and high < max(shown) + 0.05 + 1e-9
    assert all(layer["encoding"]["y"]["title"] == "validation accuracy (zoomed)" for layer in per_epoch["layer"] if "title" in layer["encoding"]["y"])
    baseline_shown = any(layer["mark"]["type"] == "rule" for layer in per_epoch["layer"])
    assert baseline_shown == (low <= 0.5 <= high)


@pytest.mark.parametrize(("values", "limits"), [
    ([0.93, 0.97], [0.9, 1.0]), ([0.48, 0.97], [0.45, 1.0]), ([0.95], [0.9, 1.0]), ([0.0, 0.01], [0.0, 0.05]),
    ([0.0, 1.0], [0.0, 1.0]), ([], [0.0, 1.0]),
])
def test_accuracy_limits_are_whole_steps_around_the_values(values, limits):
    assert charts.accuracy_limits(values) == limits


def test_a_chart_in_a_phones_column_wraps_its_legend_and_titles_instead_of_shrinking():
    """report-charts.js lays a chart out for a column under 600 px (legend in columns, titles in
    lines) and fits it in up to three passes; scripts/check_site.py fails a chart shown narrower
    than it was drawn (test_site_browser runs it on the shipped site at 390 px)."""
    script = (JAVASCRIPTS_DIR / "report-charts.js").read_text(encoding="utf-8")
    assert "var NARROW = 600;" in script and "columns: Math.max(1, Math.floor(containerWidth / 130))" in script
    assert "wrapTitles(copy, Math.max(MIN_WIDTH, width));" in script and "return fit(width, 3)" in script
    check_site = (Path(__file__).resolve().parents[1] / "scripts" / "check_site.py").read_text(encoding="utf-8")
    assert "its text is shrunk to" in check_site


def test_a_confusion_heatmap_keeps_its_size_and_scrolls_sideways_on_a_phone():
    stylesheet = (Path(charts.__file__).resolve().parent / "assets" / "stylesheets" / "extra.css").read_text(encoding="utf-8")
    phone = stylesheet.split("@media screen and (max-width: 600px) {\n  .md-typeset p:has(img[src*=\"figures/confusion_test\"])", 1)[1]
    assert phone.split("}", 1)[0] == " {\n    overflow-x: auto;\n  "
    assert '.md-typeset img[src*="figures/confusion_test"] {\n    max-width: none;' in phone


def test_curves_spec_has_every_seed_the_mean_tooltips_and_zoom(run, histories):
    augmented = next(model for model in run.models if model.name == "augmented")
    spec = charts.curves_spec(augmented, histories["augmented"], baseline=0.5)
    check_vega_lite(spec)
    raw = raw_runs("augmented")
    for panel, metrics in (("accuracy", ("accuracy", "val_accuracy")), ("loss", ("loss", "val_loss"))):
        got = {(row["seed"], row["epoch"], row["split"]): row["value"] for row in spec["datasets"]["seeds"] if row["panel"] == panel}
        assert got == {(seed, record["epoch"], split): record[metric] for seed, epochs in raw.items() for record in epochs
                       for split, metric in zip(("training", "validation"), metrics)}
    summary = obs.summarise_seeds("augmented", raw)
    means = {(row["panel"], row["split"], row["epoch"]): row["mean"] for row in spec["datasets"]["mean"]}
    assert means[("loss", "validation", 4)] == summary.epochs[3].val_loss.mean
    assert means[("accuracy", "training", 10)] == summary.epochs[9].accuracy.mean
    accuracy, loss = spec["vconcat"]
    for panel in (accuracy, loss):
        assert len(zooms(panel)) == 1 and "y" in zooms(panel)[0]["select"]["encodings"]
        tooltips = [tooltip_fields(layer) for layer in panel["layer"] if layer["mark"]["type"] == "point"]
        assert {"model", "seed", "epoch", "split", "value"} in tooltips and any({"mean", "min", "max"} <= fields for fields in tooltips)
    assert {layer["encoding"]["y"]["scale"].get("type") for layer in loss["layer"] if "y" in layer["encoding"]} == {"log"}
    assert len({zoom["name"] for panel in spec["vconcat"] for zoom in zooms(panel)}) == 2  # names are unique in a spec


def test_a_continued_model_shows_the_run_it_continues(run, histories):
    by_name = {model.name: model for model in run.models}
    spec = charts.curves_spec(by_name["finetune"], histories["finetune"], lead_in=by_name["transfer"])
    check_vega_lite(spec)
    lead_in = [row for row in spec["datasets"]["mean"] if row["stage"] == charts.LEAD_IN]
    assert {row["model"] for row in lead_in} == {"transfer"} and max(row["epoch"] for row in lead_in) == 10
    assert {row["model"] for row in spec["datasets"]["seeds"]} == {"finetune"}
    rules = [rows_of(spec, layer) for layer in spec["vconcat"][0]["layer"] if layer["mark"]["type"] == "rule"]
    assert [{"epoch": 10.5, "label": "finetune starts"}] in rules


def test_one_seed_draws_no_band_and_a_model_without_history_no_chart(tmp_path):
    histories = fixtures.default_histories()
    histories["transfer_extended"] = None
    run = load_run(fixtures.write_artifacts(tmp_path / "artifacts", seeds=(1337,), histories=histories))
    runs = seed_histories(run)
    baseline = next(model for model in run.models if model.name == "baseline")
    spec = charts.curves_spec(baseline, runs["baseline"])
    assert not any(layer["mark"]["type"] == "area" for layer in layers(spec))
    assert "one seed" in spec["description"]
    control = next(model for model in run.models if model.name == "transfer_extended")
    assert charts.curves_spec(control, {}) is None and "transfer_extended" not in runs
    assert charts.comparison_spec([control], runs) is None


def test_seed_histories_are_the_cleaned_histories_of_the_reported_seeds(run, histories):
    assert sorted(histories) == sorted(fixtures.MODEL_ORDER)
    for model in fixtures.MODEL_ORDER:
        cleaned = {seed: obs.clean_history(epochs, model) for seed, epochs in raw_runs(model).items()}
        assert histories[model] == cleaned


# --------------------------------------------------------------------------- CSV


def read_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def test_history_csv_round_trips_with_hostile_model_names(histories):
    for name in HOSTILE_NAMES:
        rows = read_csv(charts.history_csv(name, histories["baseline"]))
        assert rows[0] == list(charts.HISTORY_HEADER)
        expected_name = "'" + name if name.startswith("=") else name  # a spreadsheet must not run it
        assert {row[0] for row in rows[1:]} == {expected_name}
        assert all(len(row) == len(charts.HISTORY_HEADER) for row in rows)
        first = histories["baseline"][1337][0]
        assert rows[1][1:] == ["1337", str(first.epoch), repr(first.loss), repr(first.accuracy), repr(first.val_loss), repr(first.val_accuracy)]


def test_model_and_seed_csvs_round_trip(run):
    hostile = [dataclasses.replace(model, name=name) for model, name in zip(run.models, HOSTILE_NAMES)]
    models = read_csv(charts.models_csv(hostile))
    assert models[0] == list(charts.MODELS_HEADER)
    assert [row[0] for row in models[1:]] == [fixtures.HOSTILE_CLASS, HOSTILE_NAMES[1], "'=1+1"]
    augmented = run.models[1]
    row = read_csv(charts.models_csv([augmented]))[1]
    assert row[2] == "3" and float(row[3]) == augmented.over_seeds.last_val.mean
    assert (float(row[6]), float(row[7])) == (augmented.interval.low, augmented.interval.high)
    assert row[8] == "; ".join(augmented.verdict_labels) == "train-val gap"
    seeds = read_csv(charts.seeds_csv(hostile))
    assert seeds[0] == list(charts.SEEDS_HEADER) and len(seeds) == 1 + 3 * len(hostile)
    assert [row[:2] for row in seeds[1:4]] == [[fixtures.HOSTILE_CLASS, str(seed)] for seed in fixtures.DEFAULT_SEEDS]


def test_csv_cells():
    assert charts.csv_cell(None) == "" and charts.csv_cell(float("nan")) == ""
    assert charts.csv_cell(-0.25) == "-0.25" and charts.csv_cell(3) == "3"
    assert charts.csv_cell("-x") == "'-x" and charts.csv_cell("@SUM(A1)") == "'@SUM(A1)" and charts.csv_cell("cats") == "cats"


def test_rendered_test_csvs_and_pages_survive_hostile_class_names(tmp_path):
    run = fixtures.write_artifacts(tmp_path / "artifacts", class_names=HOSTILE_NAMES[:2])
    docs = tmp_path / "docs"
    render_report(run, docs)
    classes = read_csv((docs / "assets" / "data" / "test-classes.csv").read_text(encoding="utf-8"))
    assert [row[0] for row in classes] == ["class", *HOSTILE_NAMES[:2]]
    confusion = read_csv((docs / "assets" / "data" / "test-confusion.csv").read_text(encoding="utf-8"))
    assert [row[:2] for row in confusion[1:]] == [[true, predicted] for true in HOSTILE_NAMES[:2] for predicted in HOSTILE_NAMES[:2]]
    index = (docs / "index.md").read_text(encoding="utf-8")
    assert ("Download the numbers (CSV): [per class](assets/data/test-classes.csv){ download=\"test-classes.csv\" }, "
            "[confusion matrix](assets/data/test-confusion.csv){ download=\"test-confusion.csv\" }.") in index
    assert "<script" not in index


# --------------------------------------------------------------------------- what a render writes


def owned(docs: Path) -> set[str]:
    return set(json.loads((docs / MARKER).read_text(encoding="utf-8"))["files"])


def files_under(docs: Path, *folders: str) -> set[str]:
    return {path.relative_to(docs).as_posix() for folder in folders for path in (docs / folder).rglob("*") if path.is_file()}


def test_render_writes_bundle_specs_and_csvs_as_owned_files(run_dir, tmp_path):
    docs = tmp_path / "docs"
    written = {path.relative_to(docs).as_posix() for path in render_report(run_dir, docs)}
    expected = {f"assets/javascripts/{name}" for name in charts.BUNDLE_FILES}
    expected |= {"assets/charts/comparison.json"} | {f"assets/charts/curves-{model}.json" for model in fixtures.MODEL_ORDER}
    expected |= {f"assets/data/history-{model}.csv" for model in fixtures.MODEL_ORDER}
    expected |= {"assets/data/models.csv", "assets/data/seeds.csv", "assets/data/test-classes.csv", "assets/data/test-confusion.csv"}
    assert files_under(docs, "assets/javascripts", "assets/charts", "assets/data") == expected
    assert expected <= written and expected <= owned(docs)
    for name in charts.BUNDLE_FILES:
        assert (docs / "assets" / "javascripts" / name).read_bytes() == (JAVASCRIPTS_DIR / name).read_bytes()
    for name in ("comparison", "curves-finetune"):
        check_vega_lite(json.loads((docs / "assets" / "charts" / f"{name}.json").read_text(encoding="utf-8")))

    # render again, a run without finetune: its chart and CSV go, nothing is left that the marker does not own
    histories = fixtures.default_histories()
    histories["finetune"] = None
    smaller = fixtures.write_artifacts(tmp_path / "smaller", histories=histories)
    render_report(smaller, docs)
    assert not (docs / "assets" / "charts" / "curves-finetune.json").exists()
    assert not (docs / "assets" / "data" / "history-finetune.csv").exists()
    assert files_under(docs, "assets/javascripts", "assets/charts", "assets/data") <= owned(docs)
    assert "assets/charts/curves-finetune.json" not in owned(docs)
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".docs.")] == [".docs.lock"]


def test_pages_link_only_charts_and_csvs_that_exist(run_dir, tmp_path):
    docs = tmp_path / "docs"
    render_report(run_dir, docs)
    index = (docs / "index.md").read_text(encoding="utf-8")
    assert '<div class="report-chart" data-chart="comparison" data-figure="comparison" markdown>' in index
    assert "[Interactive version of this figure (its Vega-Lite spec, JSON)](assets/charts/comparison.json)" in index
    figure, chart = index.index("assets/figures/comparison-dark.png#only-dark)"), index.index('data-chart="comparison"')
    assert figure < chart and "\n\n" in index[figure:chart]  # below the figure, in its own block
    assert "Download the numbers (CSV): [every model](assets/data/models.csv)" in index
    finetune = (docs / "models" / "finetune.md").read_text(encoding="utf-8")
    assert 'data-chart="curves-finetune" data-figure="curves_finetune"' in finetune
    assert "(../assets/charts/curves-finetune.json)" in finetune
    assert "[per-epoch history of every seed](../assets/data/history-finetune.csv)" in finetune
    for page in docs.rglob("*.md"):
        for link in re.findall(r"\]\(((?:\.\./)?assets/(?:charts|data)/[^)]+)\)", page.read_text(encoding="utf-8")):
            assert (page.parent / link).resolve().is_file(), f"{page.name} links {link}, which the render did not write"

    # no figure, no chart (the figure is the fallback); the numbers are still there to download
    bare = fixtures.write_artifacts(tmp_path / "bare", write_figures=False)
    render_report(bare, docs)
    assert "report-chart" not in (docs / "index.md").read_text(encoding="utf-8")
    assert "history-baseline.csv" in (docs / "models" / "baseline.md").read_text(encoding="utf-8")


def test_mkdocs_loads_the_bundle_in_order():
    config = yaml.safe_load((PROJECT_ROOT / "report_builder" / "mkdocs.yml").read_text(encoding="utf-8"))
    scripts = [name for name in charts.BUNDLE_FILES if name.endswith(".js")]
    assert config["extra_javascript"] == [f"assets/javascripts/{name}" for name in scripts]
    assert "navigation.instant" not in config["theme"].get("features", [])
    assert config["theme"]["font"] is False


def test_bundle_is_the_published_builds_without_a_cdn():
    for name in ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js"):
        text = (JAVASCRIPTS_DIR / name).read_text(encoding="utf-8")
        assert "sourceMappingURL" not in text  # no request for a map the site does not have
    notices = (JAVASCRIPTS_DIR / "THIRD_PARTY_NOTICES.txt").read_text(encoding="utf-8")
    assert "vega 6.4.0 (BSD-3-Clause)" in notices and "vega-lite 6.5.0 (BSD-3-Clause)" in notices
    assert "vega-embed 7.3.0 (BSD-3-Clause)" in notices and "d3-array" in notices
    init = (JAVASCRIPTS_DIR / "report-charts.js").read_text(encoding="utf-8")
    assert "http" not in init.replace("HTTP ", "")  # fetches its specs from the site only
    if shutil.which("node"):
        subprocess.run(["node", "--check", str(JAVASCRIPTS_DIR / "report-charts.js")], check=True, capture_output=True)


def test_rendered_charts_build_strictly(run_dir, tmp_path):
    project = tmp_path / "project"
    (project / "docs").mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "report_builder" / "mkdocs.yml", project / "mkdocs.yml")
    shutil.copytree(PROJECT_ROOT / "docs" / "guide", project / "docs" / "guide")
    (project / "docs" / MARKER).write_text(marker_text("docs", []), encoding="utf-8")
    render_report(run_dir, project / "docs")
    site = build_site(project, site_dir=tmp_path / "site")  # strict: a link to a missing spec or CSV fails
    html = (site / "models" / "finetune" / "index.html").read_text(encoding="utf-8")
    assert '<div class="report-chart" data-chart="curves-finetune" data-figure="curves_finetune">' in html
    assert 'href="../../assets/charts/curves-finetune.json"' in html and 'download="history-finetune.csv"' in html
    assert '<script src="../../assets/javascripts/vega.min.js"></script>' in html
    assert (site / "assets" / "javascripts" / "report-charts.js").is_file() and (site / "assets" / "data" / "models.csv").is_file()
