"""Render a synthetic report, build it and load every page in headless Chromium."""

from __future__ import annotations

import importlib.util
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


def build_and_check(project: Path, tmp_path: Path) -> list:
    """Build `project` strictly, load every page in Chromium, and fail on any page problem."""
    site = build_site(project, site_dir=tmp_path / "site")
    results = load_check_site().check_site(site, tmp_path / "screenshots")
    problems = [f"{result.path}: {problem}" for result in results for problem in result.problems]
    assert not problems, "\n".join(problems)
    return results


@pytest.mark.slow
def test_every_page_loads_with_its_images(tmp_path: Path):
    reason = browser_missing_reason()
    if reason:
        pytest.skip(reason)
    project = tmp_path / "project"
    (project / "docs").mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "mkdocs.yml", project / "mkdocs.yml")
    shutil.copytree(PROJECT_ROOT / "docs" / "guide", project / "docs" / "guide")
    (project / "docs" / MARKER).write_text(marker_text("docs", []), encoding="utf-8")  # render may write beside guide/
    run = fixtures.write_artifacts(tmp_path / "artifacts", class_names=(fixtures.HOSTILE_CLASS, "dogs"))
    render_report(run, project / "docs")
    results = build_and_check(project, tmp_path)
    pages = {result.path: result for result in results}
    assert pages["index.html"].images >= 2
    assert pages["models/augmented/index.html"].images == 3
    assert all(result.screenshot is not None and result.screenshot.stat().st_size > 0 for result in results)


@pytest.mark.slow
def test_shipped_report_loads_in_a_browser(tmp_path: Path):
    """The committed report, built as `mkdocs build` would: every image loads, no console errors."""
    reason = browser_missing_reason()
    if reason:
        pytest.skip(reason)
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(PROJECT_ROOT / "mkdocs.yml", project / "mkdocs.yml")
    shutil.copytree(PROJECT_ROOT / "docs", project / "docs")
    results = build_and_check(project, tmp_path)
    assert {result.path for result in results} >= {"index.html", "method/index.html", "models/transfer/index.html", "models/finetune/index.html"}
