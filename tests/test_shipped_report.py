"""The report that ships with the repository is exactly what its committed artifacts render to."""

from __future__ import annotations

import json
import shutil
from html.parser import HTMLParser
from urllib.parse import unquote, urlsplit

import yaml

from report_builder.render import render_report
from report_builder.site import build_site
from tests.conftest import PROJECT_ROOT

SHIPPED_RUN = PROJECT_ROOT / "artifacts" / "cats-vs-dogs"
GENERATED = ("index.md", "method.md", "models", "assets/figures", ".report-builder.json")


def generated_files(docs):
    files = {}
    for name in GENERATED:
        path = docs / name
        candidates = [path] if path.is_file() else sorted(item for item in path.rglob("*") if item.is_file())
        for item in candidates:
            files[item.relative_to(docs).as_posix()] = item.read_bytes()
    marker = ".report-builder.json"  # its list of files; the protected folders depend on where docs/ is
    files[marker] = json.dumps(json.loads(files[marker])["files"]).encode()
    return files


def test_committed_docs_are_rendered_from_committed_artifacts(tmp_path):
    docs = tmp_path / "docs"
    render_report(SHIPPED_RUN, docs)
    rendered, committed = generated_files(docs), generated_files(PROJECT_ROOT / "docs")
    assert sorted(rendered) == sorted(committed)
    changed = [name for name in rendered if rendered[name] != committed[name]]
    assert not changed, (
        f"docs/ differs from a fresh render of the committed artifacts in {changed}. Find out why before "
        "re-rendering: if the change to the code was meant to change the report, read the diff of the rendered "
        "pages and commit them with it (`python -m report_builder render`); if not, the code change is the bug."
    )


def test_shipped_site_builds_strictly(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(PROJECT_ROOT / "report_builder" / "mkdocs.yml", project)
    shutil.copytree(PROJECT_ROOT / "docs", project / "docs")
    site = build_site(project, strict=True, site_dir=tmp_path / "site")
    pages = nav_pages(yaml.safe_load((PROJECT_ROOT / "report_builder" / "mkdocs.yml").read_text(encoding="utf-8"))["nav"])
    assert "index.md" in pages and "models/finetune.md" in pages and "method.md" in pages
    for page in pages:
        built = site / ("index.html" if page == "index.md" else page.removesuffix(".md") + "/index.html")
        assert built.is_file(), f"the nav names {page}, but the site has no {built.relative_to(site)}"
    broken = []
    html_pages = sorted(site.rglob("*.html"))
    for html_page in html_pages:
        for attribute, url in page_references(html_page.read_text(encoding="utf-8")):
            target = local_target(site, html_page, url)
            if target is not None and not target.is_file():
                broken.append(f"{html_page.relative_to(site)}: {attribute}={url}")
    assert not broken, "references to files the site does not have:\n" + "\n".join(broken)
    figures = [html_page for html_page in html_pages
               if any("assets/figures/" in url for _, url in page_references(html_page.read_text(encoding="utf-8")))]
    assert len(figures) >= 6, "the report's figures are not referenced from its pages"


def nav_pages(nav) -> list[str]:
    """Every page file the mkdocs.yml nav names (entries are "file", {"title": "file"} or {"title": [...]})."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return [page for item in nav for page in nav_pages(item)]


class _References(HTMLParser):
    def __init__(self):
        super().__init__()
        self.found: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value and (name == "src" or (name == "href" and tag in ("a", "link"))):
                self.found.append((f"{tag}.{name}", value))


def page_references(text: str) -> list[tuple[str, str]]:
    parser = _References()
    parser.feed(text)
    return parser.found


def local_target(site, html_page, url: str):
    """The file in the site a relative URL points at, or None for external and in-page links."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or not parts.path:
        return None
    path = unquote(parts.path)
    target = (site / path.lstrip("/")) if path.startswith("/") else (html_page.parent / path)
    if path.endswith("/") or target.is_dir():
        target = target / "index.html"
    return target


def test_shipped_run_is_a_real_complete_run():
    import json

    manifest = json.loads((SHIPPED_RUN / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["data_source"]["kind"] in ("folder", "download")
    assert manifest["config"]["training"]["epochs"] == 20
    assert set(manifest["models"]) == {"baseline", "augmented", "preprocessed", "transfer", "finetune", "transfer_extended"}
    assert len(manifest["seeds"]) >= 3, "the shipped report shows the spread over at least three seeds"
    assert all(entry["status"] == "complete" and set(entry["runs"]) == {str(seed) for seed in manifest["seeds"]}
               for entry in manifest["models"].values())
