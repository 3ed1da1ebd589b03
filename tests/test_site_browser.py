"""Render a synthetic report, build it and load every page in headless Chromium."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report_fixtures as fixtures  # noqa: E402

from report_builder.publish import MARKER, marker_text  # noqa: E402
from report_builder.render import render_report  # noqa: E402
from report_builder.site import build_site  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: The window widths (CSS px) the report's pages are checked at: desktop and phone.
REPORT_WIDTHS = (1280, 390)


def browser_missing_reason() -> str | None:
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed"
    if not any(Path(path).is_file() for path in ("/usr/bin/chromium", "/usr/bin/chromium-browser")) and not shutil.which("chromium"):
        return "chromium is not installed"
    if not Path("/usr/bin/chromedriver").is_file() and not shutil.which("chromedriver"):
        return "chromedriver is not installed"
    return None


def load_check_site():
    spec = importlib.util.spec_from_file_location("check_site", PROJECT_ROOT / "scripts" / "check_site.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def build_and_check(project: Path, tmp_path: Path, screenshots: bool = True, widths: tuple[int, ...] = REPORT_WIDTHS) -> list:
    """Build `project` strictly, load every page in Chromium at each of `widths` (taking screenshots
    if asked), and fail on any page problem."""
    site = build_site(project, site_dir=tmp_path / "site")
    results = load_check_site().check_site(site, tmp_path / "screenshots" if screenshots else None, widths=widths)
    problems = [f"{result.path}: {problem}" for result in results for problem in result.problems]
    assert not problems, "\n".join(problems)
    return results


@pytest.mark.slow
@pytest.mark.browser
def test_every_page_loads_with_its_images(tmp_path: Path):
    reason = browser_missing_reason()
    if reason:
        pytest.skip(reason)
    project = tmp_path / "project"
    (project / "docs" / "guide").mkdir(parents=True)
    # mkdocs.yml's guide section cut to its first page, a short stand-in: a hand-written page for render
    # to write beside (the shipped report's test loads the real guide; loading it here was half this test's time)
    guide_pages = re.findall(r"^ +- (guide/[\w-]+\.md)$", (PROJECT_ROOT / "report_builder" / "mkdocs.yml").read_text(encoding="utf-8"), re.M)
    assert guide_pages, "mkdocs.yml has no guide section to cut"
    settings = (PROJECT_ROOT / "report_builder" / "mkdocs.yml").read_text(encoding="utf-8")
    for page in guide_pages[1:]:
        settings = settings.replace(f"      - {page}\n", "")
    (project / "mkdocs.yml").write_text(settings, encoding="utf-8")
    (project / "docs" / guide_pages[0]).write_text("# A hand-written page\n\nWritten by hand, not by render.\n", encoding="utf-8")
    (project / "docs" / MARKER).write_text(marker_text("docs", []), encoding="utf-8")  # render may write beside guide/
    run = fixtures.write_artifacts(tmp_path / "artifacts", class_names=(fixtures.HOSTILE_CLASS, "dogs"))
    render_report(run, project / "docs")
    results = build_and_check(project, tmp_path)  # no page asked another host for anything; every chart drew
    pages = {result.path: result for result in results}
    assert pages["index.html"].images >= 2
    assert pages["models/augmented/index.html"].images == 6  # three figures, each in a light and a dark variant
    assert all(result.screenshot is not None and result.screenshot.stat().st_size > 0 for result in results)
    assert all(sorted(result.screenshots) == sorted(REPORT_WIDTHS) for result in results)
    # the interactive charts: the comparison on the index, the learning curves on every model page
    assert pages["index.html"].charts == 1 and list(pages["index.html"].chart_screenshots) == ["comparison"]
    for model in fixtures.MODEL_ORDER:
        page = pages[f"models/{model}/index.html"]
        assert page.charts == 1 and list(page.chart_screenshots) == [f"curves-{model}"]
        assert page.chart_screenshots[f"curves-{model}"].stat().st_size > 0
    assert all(result.charts == 0 for path, result in pages.items() if path.startswith(("guide/", "method/")))


@pytest.mark.slow
@pytest.mark.browser
def test_shipped_report_loads_in_a_browser(tmp_path: Path):
    """The committed report, built as `mkdocs build` would: every image loads, no console errors,
    no table wider than a phone's page. At the phone width only, where a table overflows first (the
    synthetic report's test loads every page at both widths), and without screenshots (that test
    proves they are taken): this test was the browser check's longest."""
    reason = browser_missing_reason()
    if reason:
        pytest.skip(reason)
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(PROJECT_ROOT / "report_builder" / "mkdocs.yml", project / "mkdocs.yml")
    shutil.copytree(PROJECT_ROOT / "docs", project / "docs")
    results = build_and_check(project, tmp_path, screenshots=False, widths=(REPORT_WIDTHS[-1],))
    assert {result.path for result in results} >= {"index.html", "method/index.html", "models/transfer/index.html", "models/finetune/index.html"}


# --------------------------------------------------------------------------- check_site itself, on a tiny site

TINY_MKDOCS = """\
site_name: Tiny
theme:
  name: material
  font: false
extra_css:
  - stylesheets/extra.css
markdown_extensions:
  - tables
  - admonition
  - pymdownx.details
  - pymdownx.superfences
  - pymdownx.tabbed:
      alternate_style: true
"""
NORMAL_TABLE = "| Model | Accuracy | Seeds |\n| :--- | ---: | ---: |\n| baseline | 60.6% | 3 |\n| finetune | 96.5% | 3 |\n"
# Long cells that may not wrap (the report's CSS lets ordinary cells break anywhere): wider than the page at any width.
WIDE_TABLE = ("| " + " | ".join(f"column{index}" for index in range(8)) + " |\n" + "| --- " * 8 + "|\n"
              + "| " + " | ".join(f'<span style="white-space: nowrap">value{index}_' + "W" * 30 + "</span>" for index in range(8)) + " |\n")
# Five 12-letter cells that may not wrap: fits the 1280 px page, not a 390 px phone.
PHONE_WIDE_TABLE = ("| " + " | ".join(f"heading{index}" for index in range(5)) + " |\n" + "| --- " * 5 + "|\n"
                    + "| " + " | ".join('<span style="white-space: nowrap">abcdefghijkl</span>' for _ in range(5)) + " |\n")


def indented(text: str) -> str:
    return "".join(f"    {line}\n" for line in text.splitlines())


def tiny_site(tmp_path: Path, pages: dict[str, str]) -> Path:
    """Build a tiny Material site (the report's extra.css included) of `pages` {file: markdown}."""
    project = tmp_path / "tiny"
    (project / "docs" / "stylesheets").mkdir(parents=True)
    (project / "mkdocs.yml").write_text(TINY_MKDOCS, encoding="utf-8")
    shutil.copy(PROJECT_ROOT / "report_builder" / "assets" / "stylesheets" / "extra.css", project / "docs" / "stylesheets" / "extra.css")
    for name, text in pages.items():
        (project / "docs" / name).write_text(text, encoding="utf-8")
    return build_site(project, site_dir=tmp_path / "tiny-site")


@pytest.mark.slow
@pytest.mark.browser
def test_check_site_reports_tables_wider_than_the_page_and_requests_off_host(tmp_path: Path, capsys):
    reason = browser_missing_reason()
    if reason:
        pytest.skip(reason)
    site = tiny_site(tmp_path, {
        "index.md": "# Fits\n\n## Results\n\n" + NORMAL_TABLE + '\n=== "One"\n\n' + indented(NORMAL_TABLE)
                    + '\n=== "Two"\n\n' + indented(NORMAL_TABLE),
        "wide.md": "# Wide\n\n## Too many columns\n\n" + WIDE_TABLE,
        "phone.md": "# Phone\n\n## Five columns\n\n" + NORMAL_TABLE + "\n" + PHONE_WIDE_TABLE,
        "hidden.md": ('# Hidden\n\n=== "Shown"\n\n' + indented(NORMAL_TABLE) + '\n=== "Second tab"\n\n' + indented(WIDE_TABLE)
                      + '\n??? note "Closed"\n\n' + indented(WIDE_TABLE)),
        "offline.md": '# Offline\n\n<img alt="from elsewhere" src="http://localhost:9/elsewhere.png">\n',
        "chart.md": '# Chart\n\n<div class="report-chart" data-chart="never-drawn"></div>\n',  # no script draws it
        # drawn 800 px wide, shown at 300: the browser shrank it, its text with it
        "shrunk.md": '# Shrunk\n\n<div class="report-chart" data-chart="shrunk" data-chart-state="drawn">'
                     '<svg width="800" height="100" style="width: 300px; height: auto"></svg></div>\n',
    })
    check_site = load_check_site()
    check_site.CHART_WAIT_SECONDS = 1.0
    results = {result.path: result for result in check_site.check_site(site, tmp_path / "shots", widths=(1280, 390))}

    assert results["index.html"].problems == []  # normal tables, also in tabs, pass at both widths
    assert results["index.html"].tables == 3
    assert sorted(results["index.html"].screenshots) == [390, 1280]
    assert (tmp_path / "shots" / "home.png").is_file() and (tmp_path / "shots" / "home-390px.png").is_file()

    wide = results["wide/index.html"].problems
    assert len(wide) == 2, wide
    for width in (1280, 390):
        assert any(problem.startswith(f"at {width} px: table 1 under \"Too many columns\" (column0 | column1") and "wider than its container" in problem
                   for problem in wide), wide

    phone = results["phone/index.html"].problems
    assert len(phone) == 1 and phone[0].startswith("at 390 px: table 2 under \"Five columns\""), phone

    hidden = results["hidden/index.html"].problems  # in a tab not shown and in a closed <details>
    assert {problem.split(" under")[0].split(": ", 1)[1] for problem in hidden} == {"table 2", "table 3"}, hidden

    offline = results["offline/index.html"].problems
    assert any("host other than the local server" in problem and "http://localhost:9/elsewhere.png" in problem for problem in offline), offline
    assert any(problem.startswith("image did not load") for problem in offline), offline

    chart = results["chart/index.html"].problems
    assert chart == [f'at {width} px: chart 1 "never-drawn" did not draw: no <svg> or <canvas> in its container (its script never ran)'
                     for width in (1280, 390)], chart
    assert results["chart/index.html"].charts == 1 and results["index.html"].charts == 0

    shrunk = results["shrunk/index.html"].problems
    assert shrunk == [f'at {width} px: chart 1 "shrunk" is drawn 800 px wide but shown 300 px wide: its text is shrunk to 38%'
                      for width in (1280, 390)], shrunk

    assert check_site.main([str(site), "--widths", "390"]) == 1
    output = capsys.readouterr().out
    assert "FAIL wide/index.html" in output and "ok   index.html" in output
    assert 'wide/index.html: at 390 px: table 1 under "Too many columns"' in output


@pytest.mark.slow
@pytest.mark.browser
def test_check_site_passes_a_site_whose_tables_fit(tmp_path: Path, capsys):
    reason = browser_missing_reason()
    if reason:
        pytest.skip(reason)
    site = tiny_site(tmp_path, {"index.md": "# Fits\n\n" + NORMAL_TABLE, "more.md": "# More\n\n" + NORMAL_TABLE + "\n" + PHONE_WIDE_TABLE})
    check_site = load_check_site()
    assert check_site.main([str(site), "--widths", "1280"]) == 0  # PHONE_WIDE_TABLE fits a desktop window
    assert "2 pages checked at 1280 px, 0 problems" in capsys.readouterr().out
    assert check_site.main([str(site), "--widths", "1280,390"]) == 1
    assert "more/index.html: at 390 px: table 2" in capsys.readouterr().out
    assert check_site.main([str(site), "--widths", "12"]) == 2
