"""Render one run's artifact folder into the Markdown write-up under ``docs/``.

The artifact format is described in ``docs/guide/artifacts.md``. Rendering needs only the
standard library and Jinja2. The output is deterministic: the same artifacts always give the
same bytes. Every text that comes from the artifacts goes through the ``md`` filter
(:func:`~report_builder.formatting.escape_markdown`) so it shows as text, never as HTML or
Markdown markup.

The work is split by job: :func:`experiments.artifacts.loader.load_run_folder` reads the run's files
into checked records, :mod:`report_builder.views` turns those into view data,
:mod:`report_builder.formatting` turns numbers and text into what the pages print,
:mod:`report_builder.charts` makes the interactive charts' specs and the CSV downloads, and this
module writes them all (through :mod:`report_builder.publish`).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jinja2

from experiments.artifacts.run_records import Manifest
from report_builder import charts
from report_builder.formatting import (
    breakable,
    breakable_name,
    code_fence,
    escape_markdown,
    format_count,
    format_difference,
    format_duration,
    format_interval,
    format_percent,
    format_points,
    format_seconds,
    format_std,
    format_time,
    join_words,
    magnitude,
    number_of_times,
    number_word,
)
from report_builder.publish import data_folders, publish_tree
from report_builder.site import NAV_FILE
from report_builder.views import (
    FIGURES_SUBDIR,
    ReportError,
    RunView,
    load_run,
    page_context,
    seed_histories,
    study_text,
)

TEMPLATES_DIR = Path(__file__).resolve().parent / "templates"
#: vega, vega-lite, vega-embed (minified, BSD-3-Clause, see THIRD_PARTY_NOTICES.txt there) and
#: report-charts.js, copied into every render so that the charts draw without a request elsewhere.
JAVASCRIPTS_DIR = Path(__file__).resolve().parent / "assets" / "javascripts"
#: The site's stylesheet (mkdocs.yml's extra_css), written with every render so that a report
#: rendered into a folder of its own looks like the shipped one.
STYLESHEET = Path("assets") / "stylesheets" / "extra.css"

# --------------------------------------------------------------------------- rendering


@functools.cache
def make_environment() -> jinja2.Environment:
    """The Jinja2 environment for the page templates (strict, no autoescape: use ``| md``). One per
    process: it keeps the compiled templates (compiling them is most of a render's time), and
    reloads one whose file changed."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters.update(
        md=escape_markdown,
        name=breakable_name,
        breakable=breakable,
        percent=format_percent,
        points=format_points,
        diff=format_difference,
        count=format_count,
        seconds=format_seconds,
        duration=format_duration,
        magnitude=magnitude,
        fence=code_fence,
        std=format_std,
        interval=format_interval,
        words=number_word,
        times=number_of_times,
        and_join=join_words,
        when=format_time,
    )
    return environment


def build_pages(run: RunView, environment: jinja2.Environment, extra: dict[str, Any] | None = None) -> dict[Path, str]:
    """Render every page into memory: relative path -> Markdown text. ``extra`` adds template
    variables: ``charts`` and ``data_files``, the chart specs and CSV files the pages may link
    (none by default)."""
    context = {"charts": set(), "data_files": set(), **page_context(run), **(extra or {})}
    pages = {
        Path("index.md"): environment.get_template("index.md.j2").render(context),
        Path("method.md"): environment.get_template("method.md.j2").render(context),
    }
    model_template = environment.get_template("model.md.j2")
    for model in run.models:
        pages[Path("models") / f"{model.name}.md"] = model_template.render(context, model=model)
    return pages


def site_navigation(run: RunView) -> dict[str, Any]:
    """What report_builder.site needs for the study's site: its name and model pages in study order."""
    study = study_text(run.manifest)
    return {"site_name": plain_site_name(study["title"] or f"{number_word(len(run.models)).capitalize()} models, one honest test"),
            "models": [f"models/{model.name}.md" for model in run.models]}


def plain_site_name(title: str) -> str:
    """The study's title as a site name MkDocs can print anywhere: Material puts `site_name`
    into the page header and an aria-label unescaped, so characters that would make markup or
    end an attribute are replaced (& by "and", a double quote by a single one, <, > dropped),
    and control characters and runs of white space become one space."""
    text = title.replace("&", "and").replace('"', "'").replace("<", "").replace(">", "")
    return " ".join("".join(character if character.isprintable() else " " for character in text).split())


def javascript_files() -> dict[str, bytes]:
    """The bundled chart JavaScript (and its licence notices) and the site's stylesheet, as
    docs-relative path -> bytes."""
    files = {}
    sources = {charts.JAVASCRIPTS_SUBDIR / name: JAVASCRIPTS_DIR / name for name in charts.BUNDLE_FILES}
    sources[STYLESHEET] = Path(__file__).resolve().parent / STYLESHEET
    for relative, source in sources.items():
        try:
            files[relative.as_posix()] = source.read_bytes()
        except OSError as error:
            raise ReportError(f"cannot read {source}, part of report-builder's chart bundle "
                              f"(reinstall the package): {error.strerror or error}") from None
    return files


def forbidden_targets(artifacts_dir: Path, manifest: Manifest) -> list[tuple[Path, str]]:
    """Folders the docs must be neither inside nor around: the run, and the data it read. A
    relative data location is taken both from here and from where the run was most likely
    trained (the folder holding the output folder)."""
    location = manifest.data_source.location if manifest.data_source else None
    return [(artifacts_dir, "the run folder")] + [(folder, "the data folder") for folder in data_folders(artifacts_dir, location)]


def render_report(artifacts_dir: Path, docs_dir: Path, problems: list[str] | None = None) -> list[Path]:
    """Render the run in ``artifacts_dir`` into ``docs_dir``; returns the written files (sorted).

    The pages, figures, chart specs (``assets/charts/``), CSV downloads (``assets/data/``) and the
    chart JavaScript (``assets/javascripts/``) replace the previous render's as one step (see
    :mod:`report_builder.publish`); files in ``docs_dir`` that no render wrote are kept.
    Raises :class:`ReportError` when the folder or its ``manifest.json`` is missing or unusable,
    and :class:`~report_builder.publish.PublishError` when ``docs_dir`` is not the report's to write.
    ``problems``, when given, receives what the method page lists as unusable in the run's files.
    """
    artifacts_dir = Path(artifacts_dir)
    docs_dir = Path(docs_dir)
    run = load_run(artifacts_dir)
    if problems is not None:
        problems.extend(run.problems)
    extras = charts.report_files(run, seed_histories(run))
    pages = build_pages(run, make_environment(), {"charts": extras.charts, "data_files": extras.data_files})
    figure_bytes = {}
    for name in run.figures:
        source = artifacts_dir / "figures" / name
        try:
            figure_bytes[name] = source.read_bytes()
        except OSError as error:
            raise ReportError(f"cannot read figure {source}: {error.strerror or error}") from None
    files = {relative.as_posix(): text.encode("utf-8") for relative, text in pages.items()}
    files[NAV_FILE] = json.dumps(site_navigation(run), ensure_ascii=False, indent=1).encode("utf-8")
    files.update({(FIGURES_SUBDIR / name).as_posix(): data for name, data in figure_bytes.items()})
    files.update(extras.files)
    files.update(javascript_files())

    def write(staging: Path) -> list[str]:
        for relative, data in sorted(files.items()):
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return sorted(files)

    return publish_tree(docs_dir, write, kind="docs", forbidden=forbidden_targets(artifacts_dir, run.manifest),
                        protect=[artifacts_dir])  # build finds the data folders from the run's manifest
