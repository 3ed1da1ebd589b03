"""Interactive charts (Vega-Lite specs) and CSV downloads for the report, built from view data.

Nothing here reads a file: :func:`report_files` receives the loaded run (:class:`~report_builder.views.RunView`)
and each model's per-seed histories (:func:`~report_builder.views.seed_histories`) and returns the
files to publish under ``docs/``, as text:

- ``assets/charts/<name>.json``: one Vega-Lite spec per chart, its data inlined (no request at view
  time). ``comparison`` for the index page (every model's mean validation accuracy per epoch with a
  min-max band over seeds, and each seed's final accuracy), ``curves-<model>`` for each model page
  (training and validation accuracy and loss per epoch, per seed and mean). Every point has a
  tooltip; every panel zooms and pans (an interval selection bound to the scales; double-click resets).
- ``assets/data/*.csv``: the numbers behind the pages' tables and curves, written with :mod:`csv`.

The page templates link both (``macros.chart`` and ``macros.downloads``); ``report-charts.js``
(bundled with vega, vega-lite and vega-embed, see ``assets/javascripts/``) draws each chart below
its static figure, which stays the fallback without JavaScript and in print.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from report_builder import observations as obs
from report_builder.views import ModelView, RunView, baseline_view, test_view

#: The Vega-Lite version of the bundled vega-lite.min.js (6.x).
SCHEMA = "https://vega.github.io/schema/vega-lite/v6.json"
CHARTS_SUBDIR = Path("assets") / "charts"
DATA_SUBDIR = Path("assets") / "data"
JAVASCRIPTS_SUBDIR = Path("assets") / "javascripts"
#: The files of ``report_builder/assets/javascripts/`` copied into every render, in load order
#: (mkdocs.yml's extra_javascript lists the .js files in this order).
BUNDLE_FILES = ("vega.min.js", "vega-lite.min.js", "vega-embed.min.js", "report-charts.js", "THIRD_PARTY_NOTICES.txt")

COMPARISON_CHART = "comparison"
#: Width and height of one panel in CSS px as written; report-charts.js fits the width to the page.
PANEL_WIDTH = 640
PANEL_HEIGHT = 240
ROW_STEP = 26  # px per model row in the last-epoch panel
SPLITS = (("training", "accuracy", "loss"), ("validation", "val_accuracy", "val_loss"))
OWN, LEAD_IN = "this model", "lead-in"
REFERENCE_COLOR = "#888888"
#: Characters that make a spreadsheet read a cell as a formula; a text cell starting with one is
#: written with a leading apostrophe (numbers are written as numbers and never start with one but "-").
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

History = Sequence[obs.EpochRecord]
Histories = Mapping[str, Mapping[int, History]]  # model -> seed -> cleaned epochs


def curves_chart_name(model: str) -> str:
    return f"curves-{model}"


def history_csv_name(model: str) -> str:
    return f"history-{model}.csv"


# --------------------------------------------------------------------------- specs


def spec_text(spec: Mapping[str, Any]) -> str:
    """A spec as JSON text: sorted keys, ASCII only, no NaN (the same spec always gives the same bytes)."""
    return json.dumps(spec, sort_keys=True, ensure_ascii=True, allow_nan=False, separators=(",", ":")) + "\n"


def _number(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _tooltip(field_name: str, title: str, kind: str = "quantitative", number_format: str | None = None) -> dict[str, Any]:
    item: dict[str, Any] = {"field": field_name, "type": kind, "title": title}
    if number_format:
        item["format"] = number_format
    return item


def _zoom(name: str, encodings: Sequence[str] = ("x", "y")) -> dict[str, Any]:
    """An interval selection bound to the scales: drag to pan, scroll to zoom, double-click to reset."""
    return {"name": name, "select": {"type": "interval", "encodings": list(encodings)}, "bind": "scales"}


def _epoch_axis() -> dict[str, Any]:
    return {"field": "epoch", "type": "quantitative", "title": "epoch", "axis": {"format": "d", "tickMinStep": 1},
            "scale": {"zero": False, "nice": False}}


def _filter(field_name: str, value: Any) -> dict[str, Any]:
    return {"filter": {"field": field_name, "equal": value}}


def _config() -> dict[str, Any]:
    return {
        "legend": {"orient": "top", "title": None, "labelLimit": 240, "symbolOpacity": 1},
        "axis": {"labelFontSize": 11, "titleFontSize": 12, "titleFontWeight": "normal"},
        "title": {"fontSize": 13, "fontWeight": "normal", "anchor": "start"},
        "view": {"stroke": None},
    }


def _baseline_layer(baseline: float | None, axis: str = "y") -> list[dict[str, Any]]:
    if baseline is None:
        return []
    return [{
        "data": {"values": [{"baseline": baseline, "label": "majority baseline"}]},
        "mark": {"type": "rule", "strokeDash": [3, 3], "color": REFERENCE_COLOR},
        "encoding": {axis: {"field": "baseline", "type": "quantitative"},
                     "tooltip": [_tooltip("label", "", "nominal"), _tooltip("baseline", "accuracy", number_format=".1%")]},
    }]


def _seed_rows(model: str, runs: Mapping[int, History], pairs: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
    """Long-form rows, one per seed, epoch and (label, metric) pair with a usable value."""
    rows = []
    for seed in sorted(runs):
        for record in runs[seed]:
            for label, metric in pairs:
                value = _number(getattr(record, metric))
                if value is not None:
                    rows.append({"model": model, "seed": seed, "epoch": record.epoch, "split": label, "value": value})
    return rows


def _mean_rows(model: str, stage: str, epochs: Iterable[obs.EpochSpread], pairs: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
    """Long-form rows of the mean, minimum and maximum over seeds per epoch (for each (label, metric) pair)."""
    rows = []
    pairs = list(pairs)
    for item in epochs:
        for label, metric in pairs:
            spread: obs.Spread = getattr(item, metric)
            if _number(spread.mean) is None:
                continue
            rows.append({"model": model, "stage": stage, "epoch": item.epoch, "split": label, "mean": spread.mean,
                         "min": spread.minimum, "max": spread.maximum, "seeds": spread.count})
    return rows


def final_limits(values: Sequence[float]) -> list[float]:
    """The x range of the last-epoch panel: the values with a 12% margin (at least 0.01), inside [0, 1]
    (the static figure's zoom, experiments.study.figures.final_epoch_limits)."""
    if not values:
        return [0.0, 1.0]
    low, high = min(values), max(values)
    margin = max(0.12 * (high - low), 0.01)
    return [max(0.0, low - margin), min(1.0, high + margin)]


def accuracy_limits(values: Sequence[float], step: float = 0.05) -> list[float]:
    """The y range of the per-epoch comparison: the accuracies shown, widened to whole steps of
    5 points (a value on a step gets a step of room beyond it), inside [0, 1]. A 0-100% axis flattens models that
    differ by a few points near the top."""
    values = [value for value in values if value is not None and math.isfinite(value)]
    if not values:
        return [0.0, 1.0]
    low = max(0.0, math.floor(min(values) / step - 1e-9) * step)
    high = min(1.0, math.ceil(max(values) / step + 1e-9) * step)
    return [round(low, 4), round(high, 4)]


def _percent_format(domain: Sequence[float]) -> str:
    """Whole percentages on an axis spanning ten points or more, one decimal on a closer zoom."""
    return ".0%" if domain[1] - domain[0] >= 0.1 else ".1%"


def comparison_spec(models: Sequence[ModelView], histories: Histories, baseline: float | None = None) -> dict[str, Any] | None:
    """Every model with a history: validation accuracy per epoch (mean over seeds, a min-max band,
    each seed's points) above each seed's last-epoch accuracy with the mean and the 95% interval.
    ``None`` when no model has a history."""
    shown = [model for model in models if model.over_seeds is not None]
    if not shown:
        return None
    names = [model.name for model in shown]
    pairs = [("validation", "val_accuracy")]
    mean_rows = [row for model in shown for row in _mean_rows(model.name, OWN, model.over_seeds.epochs, pairs)]
    seed_rows = [row for model in shown for row in _seed_rows(model.name, histories.get(model.name, {}), pairs)]
    finals, summaries = [], []
    for model in shown:
        results = [row.result for row in model.seed_rows if _number(row.result.last_val_accuracy) is not None]
        for index, result in enumerate(results):  # each seed a little apart within its model's row
            offset = -1 + 2 * index / (len(results) - 1) if len(results) > 1 else 0.0
            finals.append({"model": model.name, "seed": result.seed, "epoch": result.last_epoch, "value": result.last_val_accuracy,
                           "offset": offset})
        mean = _number(model.over_seeds.last_val.mean)
        if mean is not None:
            summary = {"model": model.name, "mean": mean, "seeds": model.over_seeds.last_val.count}
            if model.interval is not None:
                summary.update(low=model.interval.low, high=model.interval.high)
            summaries.append(summary)
    color = {"field": "model", "type": "nominal", "title": None, "scale": {"domain": names}}
    several = any(model.seed_count > 1 for model in shown)
    per_epoch_tooltip = [_tooltip("model", "model", "nominal"), _tooltip("epoch", "epoch", number_format="d"),
                         _tooltip("mean", "mean over seeds", number_format=".2%"), _tooltip("min", "lowest seed", number_format=".2%"),
                         _tooltip("max", "highest seed", number_format=".2%"), _tooltip("seeds", "seeds")]
    seed_tooltip = [_tooltip("model", "model", "nominal"), _tooltip("seed", "seed", "nominal"),
                    _tooltip("epoch", "epoch", number_format="d"), _tooltip("value", "validation accuracy", number_format=".2%")]
    y_domain = accuracy_limits([row[key] for row in mean_rows for key in ("mean", "min", "max")] + [row["value"] for row in seed_rows])
    y_accuracy = {"type": "quantitative", "title": "validation accuracy" + (" (zoomed)" if y_domain != [0.0, 1.0] else ""),
                  "scale": {"domain": y_domain, "zero": False}, "axis": {"format": _percent_format(y_domain)}}
    per_epoch_layers: list[dict[str, Any]] = []
    if several:
        per_epoch_layers.append({"data": {"name": "mean"}, "mark": {"type": "area", "opacity": 0.15},
                                 "encoding": {"x": _epoch_axis(), "y": {**y_accuracy, "field": "min"}, "y2": {"field": "max"},
                                              "color": color}})
    per_epoch_layers += [
        {"data": {"name": "mean"}, "mark": {"type": "line", "strokeWidth": 2},
         "encoding": {"x": _epoch_axis(), "y": {**y_accuracy, "field": "mean"}, "color": color}},
        {"data": {"name": "seeds"}, "mark": {"type": "point", "filled": True, "size": 14, "opacity": 0.45},
         "encoding": {"x": _epoch_axis(), "y": {**y_accuracy, "field": "value"}, "color": color, "tooltip": seed_tooltip}},
        {"data": {"name": "mean"}, "mark": {"type": "point", "filled": True, "size": 40},
         "params": [_zoom("zoom_per_epoch")],
         "encoding": {"x": _epoch_axis(), "y": {**y_accuracy, "field": "mean"}, "color": color, "tooltip": per_epoch_tooltip}},
    ]
    if baseline is not None and y_domain[0] <= baseline <= y_domain[1]:
        per_epoch_layers += _baseline_layer(baseline)
    values = [row["value"] for row in finals] + [row[key] for row in summaries for key in ("low", "high") if key in row]
    x_domain = final_limits(values)
    x_final = {"type": "quantitative", "title": "validation accuracy at the last epoch (zoomed)",
               "scale": {"domain": x_domain, "zero": False}, "axis": {"format": _percent_format(x_domain)}}
    y_model = {"field": "model", "type": "nominal", "title": None,
               "scale": {"type": "band", "domain": names, "paddingInner": 0, "paddingOuter": 0}}
    # px from the top of a model's row: the seeds spread over the middle of the row, as in the figure
    y_offset = {"field": "offset", "type": "quantitative", "scale": {"domain": [-1, 1], "range": [ROW_STEP / 2 - 6, ROW_STEP / 2 + 6]}}
    final_layers: list[dict[str, Any]] = [
        {"data": {"name": "summaries"}, "transform": [{"filter": {"field": "low", "valid": True}}],
         "mark": {"type": "rule", "strokeWidth": 2, "opacity": 0.5},
         "encoding": {"x": {**x_final, "field": "low"}, "x2": {"field": "high"}, "y": y_model, "color": color,
                      "tooltip": [_tooltip("model", "model", "nominal"), _tooltip("low", "95% interval from", number_format=".2%"),
                                  _tooltip("high", "95% interval to", number_format=".2%")]}},
        {"data": {"name": "summaries"}, "mark": {"type": "tick", "thickness": 3, "size": ROW_STEP - 4},
         "encoding": {"x": {**x_final, "field": "mean"}, "y": y_model, "color": color,
                      "tooltip": [_tooltip("model", "model", "nominal"), _tooltip("mean", "mean over seeds", number_format=".2%"),
                                  _tooltip("seeds", "seeds")]}},
        {"data": {"name": "finals"}, "mark": {"type": "point", "filled": True, "size": 50, "opacity": 0.9},
         "params": [_zoom("zoom_last_epoch", ("x",))],
         "encoding": {"x": {**x_final, "field": "value"}, "y": y_model, "yOffset": y_offset,
                      "color": color, "tooltip": seed_tooltip}},
    ]
    if baseline is not None and x_final["scale"]["domain"][0] <= baseline <= x_final["scale"]["domain"][1]:
        final_layers += _baseline_layer(baseline, "x")
    return {
        "$schema": SCHEMA,
        "description": "Validation accuracy of every model: per epoch (mean over seeds, band from the lowest to the "
                       "highest seed) and at the last epoch (dots: seeds, tick: mean, bar: 95% interval where there is one).",
        "datasets": {"mean": mean_rows, "seeds": seed_rows, "finals": finals, "summaries": summaries},
        "vconcat": [
            {"title": "Validation accuracy per epoch" + (" (line: mean over seeds, band: lowest to highest seed)" if several else ""),
             "width": PANEL_WIDTH, "height": PANEL_HEIGHT, "layer": per_epoch_layers},
            {"title": "Last epoch (dots: seeds, tick: mean" + (", bar: 95% interval)" if any("low" in row for row in summaries) else ")"),
             "width": PANEL_WIDTH, "height": {"step": ROW_STEP}, "layer": final_layers},
        ],
        "config": _config(),
    }


def curves_spec(model: ModelView, runs: Mapping[int, History], lead_in: ModelView | None = None,
                baseline: float | None = None) -> dict[str, Any] | None:
    """One model's accuracy and loss per epoch, training and validation: each seed (thin lines,
    points with tooltips), the mean over seeds (thick) and a min-max band. ``lead_in`` (the model
    whose run this one continues) is drawn faintly first, with a dashed line where it ends.
    ``None`` without a history."""
    if model.over_seeds is None:
        return None
    lead_in_end = _lead_in_end(lead_in)
    mean_rows: list[dict[str, Any]] = []
    seed_rows: list[dict[str, Any]] = []
    for panel, metrics in (("accuracy", ("accuracy", "val_accuracy")), ("loss", ("loss", "val_loss"))):
        pairs = [(label, metric) for (label, _, _), metric in zip(SPLITS, metrics)]
        rows = _mean_rows(model.name, OWN, model.over_seeds.epochs, pairs)
        if lead_in_end is not None:
            rows = _mean_rows(lead_in.name, LEAD_IN, lead_in.over_seeds.epochs, pairs) + rows
        mean_rows += [{"panel": panel, **row} for row in rows]
        seed_rows += [{"panel": panel, **row} for row in _seed_rows(model.name, runs, pairs)]
    color = {"field": "split", "type": "nominal", "scale": {"domain": [label for label, _, _ in SPLITS]}}
    stage = {"field": "stage", "type": "ordinal", "legend": None, "scale": {"domain": [OWN, LEAD_IN], "range": [1.0, 0.35]}}
    panels = []
    for panel, title, number_format, y_scale in (
        ("accuracy", "Accuracy", ".2%", {"domain": [0, 1]}),
        # the losses' own range (with a few pixels of room), not whole powers of ten: a loss between
        # 0.74 and 0.78 drawn from 0.1 to 1 was a flat line
        ("loss", "Loss (cross-entropy, log scale)", ".4f", {"type": "log", "nice": False, "padding": 8}),
    ):
        y = {"type": "quantitative", "title": panel, "scale": y_scale}
        if panel == "accuracy":
            y["axis"] = {"format": "%"}
        only = [_filter("panel", panel)]
        if panel == "loss":  # a log scale has no place for 0
            positive_mean, positive_value = [{"filter": {"field": "mean", "gt": 0}}], [{"filter": {"field": "value", "gt": 0}}]
        else:
            positive_mean, positive_value = [], []
        layers: list[dict[str, Any]] = []
        if model.seed_count > 1:
            band_filter = [{"filter": {"field": "min", "gt": 0}}] if panel == "loss" else []
            layers.append({"data": {"name": "mean"}, "transform": only + [_filter("stage", OWN)] + band_filter,
                           "mark": {"type": "area", "opacity": 0.15},
                           "encoding": {"x": _epoch_axis(), "y": {**y, "field": "min"}, "y2": {"field": "max"}, "color": color}})
            layers.append({"data": {"name": "seeds"}, "transform": only + positive_value,
                           "mark": {"type": "line", "strokeWidth": 1, "opacity": 0.4},
                           "encoding": {"x": _epoch_axis(), "y": {**y, "field": "value"}, "color": color,
                                        "detail": {"field": "seed", "type": "nominal"}}})
        layers += [
            {"data": {"name": "mean"}, "transform": only + positive_mean, "mark": {"type": "line", "strokeWidth": 2.5},
             "encoding": {"x": _epoch_axis(), "y": {**y, "field": "mean"}, "color": color, "opacity": stage}},
            {"data": {"name": "seeds"}, "transform": only + positive_value, "mark": {"type": "point", "filled": True, "size": 18, "opacity": 0.6},
             "encoding": {"x": _epoch_axis(), "y": {**y, "field": "value"}, "color": color,
                          "tooltip": [_tooltip("model", "model", "nominal"), _tooltip("seed", "seed", "nominal"),
                                      _tooltip("epoch", "epoch", number_format="d"), _tooltip("split", "split", "nominal"),
                                      _tooltip("value", panel, number_format=number_format)]}},
            {"data": {"name": "mean"}, "transform": only + positive_mean, "mark": {"type": "point", "filled": True, "size": 40},
             "params": [_zoom(f"zoom_{panel}")],
             "encoding": {"x": _epoch_axis(), "y": {**y, "field": "mean"}, "color": color, "opacity": stage,
                          "tooltip": [_tooltip("model", "model", "nominal"), _tooltip("epoch", "epoch", number_format="d"),
                                      _tooltip("split", "split", "nominal"), _tooltip("mean", "mean over seeds", number_format=number_format),
                                      _tooltip("min", "lowest seed", number_format=number_format),
                                      _tooltip("max", "highest seed", number_format=number_format), _tooltip("seeds", "seeds")]}},
        ]
        if panel == "accuracy":
            layers += _baseline_layer(baseline)
        if lead_in_end is not None:
            layers.append({"data": {"values": [{"epoch": lead_in_end + 0.5, "label": f"{model.name} starts"}]},
                           "mark": {"type": "rule", "strokeDash": [6, 3], "color": REFERENCE_COLOR},
                           "encoding": {"x": {"field": "epoch", "type": "quantitative"}, "tooltip": [_tooltip("label", "", "nominal")]}})
        panels.append({"title": title, "width": PANEL_WIDTH, "height": PANEL_HEIGHT, "layer": layers})
    seeds_note = (f"mean over {model.seed_count} seeds (thick), each seed (thin), band: lowest to highest seed"
                  if model.seed_count > 1 else "one seed")
    lead_note = f"; faint: the {lead_in.name} run it continues" if lead_in_end is not None else ""
    return {
        "$schema": SCHEMA,
        "description": f"Accuracy and loss of the {model.name} model per epoch, training versus validation: {seeds_note}{lead_note}.",
        "datasets": {"mean": mean_rows, "seeds": seed_rows},
        "vconcat": panels,
        "config": _config(),
    }


def _lead_in_end(lead_in: ModelView | None) -> int | None:
    if lead_in is None or lead_in.over_seeds is None or not lead_in.over_seeds.epochs:
        return None
    return lead_in.over_seeds.epochs[-1].epoch


# --------------------------------------------------------------------------- CSV


def csv_cell(value: object) -> str:
    """One CSV cell: numbers as Python writes them (floats round-trip exactly), ``None`` as empty,
    text as is, except that text a spreadsheet would run as a formula gets a leading apostrophe."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    text = str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def csv_text(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A CSV file (RFC 4180 quoting by :mod:`csv`, ``\\r\\n`` line ends) with ``header`` first."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    writer.writerow([csv_cell(name) for name in header])
    for row in rows:
        writer.writerow([csv_cell(value) for value in row])
    return buffer.getvalue()


HISTORY_HEADER = ("model", "seed", "epoch", "loss", "accuracy", "val_loss", "val_accuracy")


def history_csv(model: str, runs: Mapping[int, History]) -> str:
    """One model's per-epoch history, every seed (seeds in numeric order)."""
    return csv_text(HISTORY_HEADER, ((model, seed, record.epoch, record.loss, record.accuracy, record.val_loss, record.val_accuracy)
                                     for seed in sorted(runs) for record in runs[seed]))


MODELS_HEADER = ("model", "status", "seeds", "mean_val_accuracy", "std_val_accuracy", "interval_estimate", "interval_low",
                 "interval_high", "verdicts")


def models_csv(models: Sequence[ModelView]) -> str:
    """The index's side-by-side table: each model's mean last-epoch validation accuracy over seeds,
    its 95% interval (seeds and images resampled) and its curve verdicts (``; ``-separated)."""
    rows = []
    for model in models:
        last = model.over_seeds.last_val if model.over_seeds is not None else None
        interval = model.interval
        rows.append((model.name, model.status_label, model.seed_count, last.mean if last else None, last.std if last else None,
                     interval.estimate if interval else None, interval.low if interval else None, interval.high if interval else None,
                     "; ".join(model.verdict_labels)))
    return csv_text(MODELS_HEADER, rows)


SEEDS_HEADER = ("model", "seed", "status", "final_epoch", "final_val_accuracy", "best_epoch", "best_val_accuracy", "wall_seconds")


def seeds_csv(models: Sequence[ModelView]) -> str:
    """Each seed of each model: its last epoch and validation accuracy there, and its best epoch."""
    return csv_text(SEEDS_HEADER, ((model.name, row.result.seed, row.status_label, row.result.last_epoch, row.result.last_val_accuracy,
                                    row.result.best_epoch, row.result.best_val_accuracy, row.wall_seconds)
                                   for model in models for row in model.seed_rows))


TEST_CLASSES_HEADER = ("class", "test_images", "correct", "precision", "recall")
TEST_CONFUSION_HEADER = ("true_class", "predicted_class", "images")


def test_csvs(test: Mapping[str, Any] | None) -> dict[str, str]:
    """The test tables (per class, and the confusion matrix in long form), when the run has them."""
    if not test or test.get("confusion") is None or test.get("per_class") is None:
        return {}
    names = test["confusion_names"]
    correct = {name: row[index] for index, (name, row) in enumerate(test["confusion"])}
    return {
        "test-classes.csv": csv_text(TEST_CLASSES_HEADER, ((item["name"], item["support"], correct.get(item["name"]), item["precision"],
                                                            item["recall"]) for item in test["per_class"])),
        "test-confusion.csv": csv_text(TEST_CONFUSION_HEADER, ((true_name, names[column], count)
                                                               for true_name, row in test["confusion"] for column, count in enumerate(row))),
    }


# --------------------------------------------------------------------------- everything for one render


@dataclass
class ReportFiles:
    """What :func:`report_files` made: the files (docs-relative POSIX path -> bytes), the chart
    names and the CSV file names the pages may link (templates: ``charts`` and ``data_files``)."""

    files: dict[str, bytes] = field(default_factory=dict)
    charts: set[str] = field(default_factory=set)
    data_files: set[str] = field(default_factory=set)

    def add_chart(self, name: str, spec: Mapping[str, Any] | None) -> None:
        if spec is not None:
            self.files[(CHARTS_SUBDIR / f"{name}.json").as_posix()] = spec_text(spec).encode("utf-8")
            self.charts.add(name)

    def add_data(self, name: str, text: str) -> None:
        self.files[(DATA_SUBDIR / name).as_posix()] = text.encode("utf-8")
        self.data_files.add(name)


def report_files(run: RunView, histories: Histories) -> ReportFiles:
    """Every chart spec and CSV file of the report, from the loaded run and its per-seed histories."""
    output = ReportFiles()
    baseline = (baseline_view(run.dataset) or {}).get("accuracy", {}).get("validation")
    by_name = {model.name: model for model in run.models}
    output.add_chart(COMPARISON_CHART, comparison_spec(run.models, histories, baseline))
    for model in run.models:
        if model.over_seeds is None:
            continue
        lead_in = by_name.get(model.lead_in["model"]) if model.lead_in else None
        output.add_chart(curves_chart_name(model.name), curves_spec(model, histories.get(model.name, {}), lead_in, baseline))
        output.add_data(history_csv_name(model.name), history_csv(model.name, histories.get(model.name, {})))
    output.add_data("models.csv", models_csv(run.models))
    output.add_data("seeds.csv", seeds_csv(run.models))
    for name, text in test_csvs(test_view(run.metrics)).items():
        output.add_data(name, text)
    return output
