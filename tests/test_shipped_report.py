"""The report that ships with the repository is exactly what its committed artifacts render to."""

from __future__ import annotations

import shutil

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
    shutil.copy(PROJECT_ROOT / "mkdocs.yml", project)
    shutil.copytree(PROJECT_ROOT / "docs", project / "docs")
    site = build_site(project, strict=True, site_dir=tmp_path / "site")
    assert (site / "index.html").is_file() and (site / "models" / "finetune" / "index.html").is_file()


def test_shipped_run_is_a_real_complete_run():
    import json

    manifest = json.loads((SHIPPED_RUN / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["data_source"]["kind"] in ("folder", "download")
    assert manifest["config"]["training"]["epochs"] == 20
    assert set(manifest["models"]) == {"baseline", "augmented", "preprocessed", "transfer", "finetune"}
    assert len(manifest["seeds"]) >= 3, "the shipped report shows the spread over at least three seeds"
    assert all(entry["status"] == "complete" and set(entry["runs"]) == {str(seed) for seed in manifest["seeds"]}
               for entry in manifest["models"].values())
