"""render and build never lose a file: they write only what they own, and atomically."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report_fixtures as fixtures  # noqa: E402
from conftest import PROJECT_ROOT, cli_environment, run_cli_command  # noqa: E402

from report_builder import publish  # noqa: E402
from report_builder.cli import main as cli_main  # noqa: E402
from report_builder.publish import MARKER, PublishError, marker_text, protected_folders  # noqa: E402
from report_builder.render import render_report  # noqa: E402
from report_builder.site import build_site  # noqa: E402


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every file (bytes) and link (target) under ``root``, by relative path."""
    found: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_symlink():
            found[relative] = "-> " + os.readlink(path)
        elif path.is_file():
            found[relative] = path.read_bytes()
    return found


def user_folder(root: Path) -> Path:
    """A folder of a user's files: nested, a link, an empty folder, odd names."""
    (root / "notes" / "deep").mkdir(parents=True)
    (root / "notes" / "deep" / "plan.md").write_text("my plan", encoding="utf-8")
    (root / "index.md").write_text("my own home page", encoding="utf-8")
    (root / "photo <b>1<i>.jpg").write_bytes(b"\xff\xd8 not really")
    (root / "empty").mkdir()
    os.symlink("notes/deep/plan.md", root / "link.md")
    return root


def assert_whole_report(docs: Path) -> set[str]:
    """The docs folder holds one complete report: every listed file exists and every figure a
    page links to is there. Returns the listed files."""
    listed = set(json.loads((docs / MARKER).read_text(encoding="utf-8"))["files"])
    for name in listed:
        assert (docs / name).is_file(), f"{name} is listed but missing"
    for page in docs.rglob("*.md"):
        for link in re.findall(r"\]\(([^)\s]+\.png)\)", page.read_text(encoding="utf-8")):
            assert (page.parent / link).resolve().is_file(), f"{page.name} links to missing {link}"
    return listed


# --------------------------------------------------------------------------- what is refused


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return fixtures.write_artifacts(tmp_path / "artifacts" / "run")


def test_a_folder_of_the_users_files_is_refused_and_untouched(run: Path, tmp_path: Path):
    target = user_folder(tmp_path / "mine")
    before = snapshot(target)
    with pytest.raises(PublishError, match=r"refusing to write into .*mine: it holds files report-builder did not write"):
        render_report(run, target)
    assert snapshot(target) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["artifacts", "mine"]  # not even a lock file


def test_every_user_file_is_kept_beside_the_report(run: Path, tmp_path: Path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / MARKER).write_text(marker_text("docs", []), encoding="utf-8")  # the user opts in
    (docs / "guide").mkdir()
    (docs / "guide" / "hand.md").write_text("hand-written", encoding="utf-8")
    (docs / "models").mkdir()
    (docs / "models" / "notes.md").write_text("mine", encoding="utf-8")
    os.symlink("guide/hand.md", docs / "link.md")
    (docs / "empty").mkdir()
    before = snapshot(docs)
    del before[MARKER]
    for _ in range(2):
        render_report(run, docs)
        after = snapshot(docs)
        assert {name: after[name] for name in before} == before
        assert (docs / "empty").is_dir()
        assert_whole_report(docs)


def test_a_generated_path_held_by_a_user_file_is_refused(run: Path, tmp_path: Path):
    docs = tmp_path / "docs"
    render_report(run, docs)
    marker = json.loads((docs / MARKER).read_text())
    marker["files"].remove("method.md")  # as if the user had written method.md themselves
    (docs / MARKER).write_text(json.dumps(marker))
    (docs / "method.md").write_text("mine", encoding="utf-8")
    before = snapshot(docs)
    with pytest.raises(PublishError, match=r"method\.md was not written by report-builder"):
        render_report(run, docs)
    assert snapshot(docs) == before


@pytest.mark.parametrize("where", ["run", "inside run", "around run", "data", "inside data"])
def test_the_run_and_the_data_are_never_a_target(tmp_path: Path, where: str):
    data = tmp_path / "photos"
    (data / "train" / "cats").mkdir(parents=True)
    run = fixtures.write_artifacts(tmp_path / "out" / "run", config_extra=None)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["data_source"] = {"kind": "folder", "location": str(data)}
    (run / "manifest.json").write_text(json.dumps(manifest))
    target = {"run": run, "inside run": run / "docs", "around run": tmp_path / "out",
              "data": data, "inside data": data / "report"}[where]
    before = snapshot(tmp_path)
    with pytest.raises(PublishError, match="refusing to write into"):
        render_report(run, target)
    assert snapshot(tmp_path) == before


def test_a_file_or_a_link_as_target_is_refused(run: Path, tmp_path: Path):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(PublishError, match="is a file, not a folder"):
        render_report(run, tmp_path / "a-file")
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "linked")
    with pytest.raises(PublishError, match="symbolic link"):
        render_report(run, tmp_path / "linked")


def test_cli_refusal_is_one_sentence_with_status_2(run: Path, tmp_path: Path, capsys):
    target = user_folder(tmp_path / "mine")
    assert cli_main(["render", "--artifacts", str(run), "--docs", str(target)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: refusing to write into") and error.count("\n") == 1 and "Traceback" not in error


def test_a_folder_that_cannot_be_written_gives_one_sentence(run: Path, tmp_path: Path, monkeypatch):
    real_open = os.open

    def denied(path, *args, **kwargs):
        if str(path).endswith(".docs.lock"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(publish.os, "open", denied)
    with pytest.raises(PublishError, match="cannot create the lock file .*Permission denied"):
        render_report(run, tmp_path / "docs")
    monkeypatch.setattr(publish.os, "open", real_open)
    real_mkdir = Path.mkdir

    def full(self, *args, **kwargs):
        if ".docs.staging-" in self.name:
            raise OSError(28, "No space left on device", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", full)
    with pytest.raises(PublishError, match="No space left on device"):
        render_report(run, tmp_path / "docs")


def test_a_marker_that_is_not_an_object_or_of_another_kind_is_refused(run: Path, tmp_path: Path):
    for text in ("[]", "null", '"x"', "42", '{"generator": "someone else", "files": []}'):
        target = tmp_path / f"t{len(text)}{text[:1].isalpha()}"
        target.mkdir(exist_ok=True)
        (target / MARKER).write_text(text)
        with pytest.raises(PublishError, match="not a report-builder marker"):
            render_report(run, target)
    site = tmp_path / "site"
    site.mkdir()
    (site / MARKER).write_text(marker_text("site", ["index.html"]))
    (site / "index.html").write_text("<html>")
    with pytest.raises(PublishError, match="holds a site folder, not a docs folder"):
        render_report(run, site)
    assert (site / "index.html").read_text() == "<html>"


def test_a_lock_file_that_is_a_link_to_a_users_file_is_refused_untouched(run: Path, tmp_path: Path):
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    os.link(precious, tmp_path / ".docs.lock")
    with pytest.raises(PublishError, match="not a lock file"):
        render_report(run, tmp_path / "docs")
    assert precious.read_text() == "keep me"


def test_a_data_folder_recorded_relative_to_another_folder_is_still_refused(tmp_path: Path, monkeypatch):
    project = tmp_path / "project"
    data = project / "data" / "photos"
    (data / "train" / "cats").mkdir(parents=True)
    run = fixtures.write_artifacts(project / "artifacts" / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["data_source"] = {"kind": "folder", "location": "data/photos"}  # as trained from project/
    (run / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.chdir(tmp_path)  # rendered from elsewhere
    with pytest.raises(PublishError, match="the data folder"):
        render_report(run, data / "train" / "docs")
    assert not (data / "train" / "docs").exists()


def test_build_refuses_the_run_and_the_data_the_docs_came_from(tmp_path: Path):
    data = tmp_path / "photos"
    (data / "train" / "cats").mkdir(parents=True)
    run = fixtures.write_artifacts(tmp_path / "out" / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["data_source"] = {"kind": "folder", "location": str(data)}
    (run / "manifest.json").write_text(json.dumps(manifest))
    project = project_with_docs(tmp_path, run)
    for site in (run / "site", data / "train" / "site", tmp_path / "out" / "run"):
        with pytest.raises(PublishError, match="refusing to write into"):
            build_site(project, site_dir=site)
    assert not (run / "site").exists() and not (data / "train" / "site").exists()


def test_the_marker_is_the_same_whether_the_data_folder_exists_or_not(tmp_path: Path, monkeypatch):
    """A fresh clone has no ../shared/data: rendering the same artifacts there must not change
    the committed docs/.report-builder.json. The data folder is found from the run at build time."""
    project = tmp_path / "project"
    run = fixtures.write_artifacts(project / "artifacts" / "run")
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["data_source"] = {"kind": "folder", "location": "../shared/data/photos"}
    (run / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.chdir(project)
    render_report(run, project / "docs")
    without = (project / "docs" / MARKER).read_bytes()
    data = tmp_path / "shared" / "data" / "photos"
    (data / "train" / "cats").mkdir(parents=True)
    render_report(run, project / "docs")
    assert (project / "docs" / MARKER).read_bytes() == without
    assert json.loads(without)["protected"] == ["artifacts/run"]
    refused = [folder.resolve() for folder, _ in protected_folders(project / "docs")]
    assert data.resolve() in refused and run.resolve() in refused


# --------------------------------------------------------------------------- atomic replacement


def failure_points(count: int, every: int) -> list[int]:
    """Which of `count` file writes to fail: all of them (`every` 1), or the first and last three
    and every `every`-th between them (the fast lane's sample of each kind of file)."""
    return sorted({*range(1, min(count, 3) + 1), *range(max(1, count - 2), count + 1), *range(1, count + 1, every)})


@pytest.mark.parametrize("every", [pytest.param(1, marks=pytest.mark.slow, id="every-file"), pytest.param(11, id="sampled")])
def test_a_full_disk_at_any_file_leaves_the_old_report(run: Path, tmp_path: Path, monkeypatch, every: int):
    docs = tmp_path / "docs"
    (docs / "guide").mkdir(parents=True)
    (docs / MARKER).write_text(marker_text("docs", []))
    (docs / "guide" / "hand.md").write_text("keep")
    render_report(run, docs)
    before = snapshot(docs)
    other = fixtures.write_artifacts(tmp_path / "artifacts" / "other", class_names=("owls", "larks"))
    real_write_bytes = Path.write_bytes
    file_count = len(render_report(other, tmp_path / "count"))
    assert file_count > 20  # the sample below reaches past the Markdown pages into figures and data
    for failing_call in failure_points(file_count, every):
        calls = {"count": 0}

        def write_bytes(self, data, _real=real_write_bytes, _calls=calls, _failing=failing_call):
            _calls["count"] += 1
            if _calls["count"] == _failing:
                raise OSError(28, "No space left on device", str(self))
            return _real(self, data)

        monkeypatch.setattr(Path, "write_bytes", write_bytes)
        with pytest.raises(PublishError, match="No space left on device.*is unchanged"):
            render_report(other, docs)
        monkeypatch.setattr(Path, "write_bytes", real_write_bytes)
        assert snapshot(docs) == before
        assert [path.name for path in tmp_path.iterdir() if ".docs.staging" in path.name] == []
    render_report(other, docs)
    assert "owls" in (docs / "index.md").read_text() and (docs / "guide" / "hand.md").read_text() == "keep"


def test_a_stop_between_the_two_renames_of_the_fallback_swap_is_mended(run: Path, tmp_path: Path, monkeypatch):
    docs = tmp_path / "docs"
    render_report(run, docs)
    (docs / "mine.md").write_text("keep")
    before = snapshot(docs)
    monkeypatch.setattr(publish, "_exchange", lambda first, second: False)  # no renameat2 (macOS, NFS)
    real_rename = os.rename

    def rename(source, destination):
        if Path(destination) == docs:
            raise KeyboardInterrupt  # killed with the old tree aside and the new one in staging
        return real_rename(source, destination)

    monkeypatch.setattr(publish.os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        render_report(run, docs)
    assert not docs.exists()
    monkeypatch.setattr(publish.os, "rename", real_rename)
    build_dir = tmp_path / "project"
    render_report(run, docs)  # the next render puts the old tree back, then replaces it
    assert snapshot(docs) == before
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(".docs")) == [".docs.lock"]
    assert not build_dir.exists()


def test_two_renders_at_once_both_succeed_and_leave_one_whole_report(run: Path, tmp_path: Path):
    other = fixtures.write_artifacts(tmp_path / "artifacts" / "other", class_names=("owls", "larks"))
    docs = tmp_path / "docs"
    commands = [run_cli_command("render", "--artifacts", str(artifacts), "--docs", str(docs)) for artifacts in (run, other, run, other)]
    processes = [subprocess.Popen(command, env=cli_environment(), stderr=subprocess.PIPE, text=True) for command in commands]
    results = [(process.wait(timeout=120), process.stderr.read()) for process in processes]
    assert all(code == 0 for code, _ in results), results
    assert_whole_report(docs)
    assert [path.name for path in tmp_path.iterdir() if ".docs.staging" in path.name or ".docs.old" in path.name] == []


KILLER = r"""
import sys
from report_builder.render import render_report
while True:
    for artifacts in sys.argv[2:]:
        render_report(artifacts, sys.argv[1])
        print("rendered", flush=True)
"""


@pytest.mark.parametrize("kills", [pytest.param(30, marks=pytest.mark.slow, id="30-kills"), pytest.param(4, id="4-kills")])
def test_render_killed_at_random_moments_always_leaves_a_buildable_report(tmp_path: Path, kills: int):
    """kill -9 a process that renders two different runs in turn, many times at random moments."""
    project = tmp_path / "project"
    docs = project / "docs"
    shutil.copytree(PROJECT_ROOT / "docs" / "guide", docs / "guide")
    shutil.copy(PROJECT_ROOT / "report_builder" / "mkdocs.yml", project)
    (docs / MARKER).write_text(marker_text("docs", []))
    first = fixtures.write_artifacts(tmp_path / "a", class_names=("wrens", "finches"))
    second = fixtures.write_artifacts(tmp_path / "b", class_names=("owls", "larks"))
    render_report(first, docs)
    guide = snapshot(docs / "guide")
    generator = random.Random(20261125)
    for _ in range(kills):
        process = subprocess.Popen([sys.executable, "-c", KILLER, str(docs), str(first), str(second)],
                                   env=cli_environment(), stdout=subprocess.PIPE, text=True)
        process.stdout.readline()  # it has rendered once: Python and Jinja2 are loaded
        time.sleep(generator.uniform(0.0, 0.25))
        process.kill()
        process.wait()
        listed = assert_whole_report(docs)
        index = (docs / "index.md").read_text()
        assert ("owls" in index) != ("wrens" in index)
        assert all(name in listed for name in ("index.md", "method.md", "models/baseline.md"))
        assert snapshot(docs / "guide") == guide
    site = build_site(project, strict=True, site_dir=tmp_path / "site")
    assert (site / "index.html").is_file()
    render_report(first, docs)  # and the next render tidies whatever the kills left beside it
    assert sorted(path.name for path in project.iterdir() if path.name.startswith(".docs")) == [".docs.lock"]


def test_folders_that_only_look_like_ours_are_never_touched(run: Path, tmp_path: Path):
    """Only folders the journal names are tidied: not a name that matches, not a copied marker."""
    docs = tmp_path / "docs"
    render_report(run, docs)
    backup = tmp_path / ".docs.old-backup-2024"
    shutil.copytree(docs, backup)
    (backup / "index.md").write_text("edited by me")
    staging = tmp_path / ".docs.staging-mine"
    staging.mkdir()
    (staging / "precious.txt").write_text("keep")
    before = snapshot(backup), snapshot(staging)
    render_report(run, docs)
    assert (snapshot(backup), snapshot(staging)) == before
    shutil.rmtree(docs)  # no docs/ now: the backup must not be "recovered" into it either
    render_report(run, docs)
    assert (snapshot(backup), snapshot(staging)) == before


def test_tidying_stopped_half_way_is_finished_by_the_next_call(run: Path, tmp_path: Path, monkeypatch):
    docs = tmp_path / "docs"
    render_report(run, docs)
    (docs / "mine.md").write_text("keep")
    other = fixtures.write_artifacts(tmp_path / "artifacts" / "other", class_names=("owls", "larks"))
    real_unlink = Path.unlink
    calls = {"count": 0}

    def unlink(self, *args, **kwargs):
        if ".docs.staging-" in str(self):
            calls["count"] += 1
            if calls["count"] == 3:
                raise KeyboardInterrupt  # killed while removing the old tree
        return real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(KeyboardInterrupt):
        render_report(other, docs)
    monkeypatch.setattr(Path, "unlink", real_unlink)
    assert "owls" in (docs / "index.md").read_text()  # the new report is in place
    assert [path.name for path in tmp_path.iterdir() if ".docs.staging-" in path.name]  # the old one beside it
    render_report(other, docs)
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(".docs")) == [".docs.lock"]
    assert (docs / "mine.md").read_text() == "keep"



@pytest.mark.parametrize("failing", ["the old tree", "an unswapped staging folder"])
def test_a_leftover_that_rmdir_could_not_remove_is_removed_by_the_next_call_and_a_strangers_look_alike_is_not(
        run: Path, tmp_path: Path, monkeypatch, capsys, failing):
    docs = tmp_path / "docs"
    render_report(run, docs)
    stranger = tmp_path / ".docs.staging-0123456789ab"  # our name pattern, but no journal entry: not ours
    (stranger / "sub").mkdir(parents=True)
    (stranger / "sub" / "mine.txt").write_text("keep")
    empty_stranger = tmp_path / ".docs.old-cafecafecafe"
    empty_stranger.mkdir()
    real_rmdir = os.rmdir

    def rmdir(path, *args, **kwargs):
        if ".docs.staging-" in str(path) or ".docs.old-" in str(path):
            raise OSError(16, "Device or resource busy", str(path))
        return real_rmdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "rmdir", rmdir)
    capsys.readouterr()
    if failing == "the old tree":
        render_report(run, docs)  # the new report goes in; the old tree's files go, its folders stay
    else:
        monkeypatch.setattr(publish, "_carry_over", lambda *args: (_ for _ in ()).throw(OSError(5, "Input/output error")))
        with pytest.raises(PublishError, match="is unchanged"):
            render_report(run, docs)
        monkeypatch.undo()
        monkeypatch.setattr(os, "rmdir", rmdir)
    leftovers = [path for path in tmp_path.iterdir() if path.name.startswith(".docs.") and path not in (stranger, empty_stranger)
                 and path.is_dir()]
    assert leftovers and not [path for leftover in leftovers for path in leftover.rglob("*") if not path.is_dir()]
    assert any(f"could not remove {leftover}" in capsys.readouterr().err for leftover in leftovers)
    names = {entry["name"] for entry in publish.Journal(docs).read()}
    assert {leftover.name for leftover in leftovers} <= names  # remembered, so the next call finds it
    render_report(run, docs)  # still failing: still remembered, and said again
    assert all(leftover.exists() for leftover in leftovers)
    monkeypatch.setattr(os, "rmdir", real_rmdir)
    render_report(run, docs)
    assert not any(leftover.exists() for leftover in leftovers)
    assert (stranger / "sub" / "mine.txt").read_text() == "keep" and empty_stranger.is_dir()
    assert not (tmp_path / ".docs.publish.json").exists()
    assert_whole_report(docs)


def test_a_file_that_cannot_be_linked_stops_the_render_and_stays(run: Path, tmp_path: Path, monkeypatch):
    """A user's file on another file system (a mount inside docs/) is never copied and deleted."""
    docs = tmp_path / "docs"
    render_report(run, docs)
    (docs / "notes").mkdir()
    (docs / "notes" / "team.md").write_text("team notes")
    before = snapshot(docs)

    def cross_device(*args, **kwargs):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(publish.os, "link", cross_device)
    with pytest.raises(PublishError, match=r"cannot keep .*team\.md in place"):
        render_report(run, docs)
    assert snapshot(docs) == before
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(".docs")) == [".docs.lock"]


def test_a_users_folders_keep_their_mode_and_times(run: Path, tmp_path: Path):
    docs = tmp_path / "docs"
    render_report(run, docs)
    private = docs / "private"
    private.mkdir()
    (private / "key.txt").write_text("secret")
    os.chmod(private, 0o700)
    os.utime(private, (1_000_000_000, 1_000_000_000))
    render_report(run, docs)
    details = os.stat(private)
    assert stat.S_IMODE(details.st_mode) == 0o700 and details.st_mtime == 1_000_000_000


def test_a_file_that_cannot_be_removed_from_the_old_tree_is_named_not_a_traceback(run: Path, tmp_path: Path, monkeypatch, capsys):
    docs = tmp_path / "docs"
    render_report(run, docs)
    real_unlink = Path.unlink

    def immutable(self, *args, **kwargs):
        if ".docs.staging-" in str(self) and self.name == "index.md":
            raise PermissionError(1, "Operation not permitted", str(self))
        return real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", immutable)
    render_report(run, docs)
    assert "could not be removed" in capsys.readouterr().err
    assert_whole_report(docs)


# --------------------------------------------------------------------------- files and figures


def test_pages_are_written_with_the_users_umask(run: Path, tmp_path: Path):
    old = os.umask(0o022)
    try:
        written = render_report(run, tmp_path / "docs")
    finally:
        os.umask(old)
    assert {stat.S_IMODE(path.stat().st_mode) for path in written} == {0o644}
    assert stat.S_IMODE((tmp_path / "docs").stat().st_mode) == 0o755


def test_only_regular_files_of_the_run_reach_the_site(run: Path, tmp_path: Path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"private bytes")
    comparison = run / "figures" / "comparison.png"
    comparison.unlink()
    os.symlink(secret, comparison)
    docs = tmp_path / "docs"
    written = render_report(run, docs)
    assert not (docs / "assets" / "figures" / "comparison.png").exists()
    assert all(path.read_bytes() != b"private bytes" for path in written)
    assert "comparison.png" not in (docs / "index.md").read_text()
    assert_whole_report(docs)


def test_a_binary_artifact_is_a_problem_note_not_a_traceback(run: Path, tmp_path: Path, capsys):
    (run / "metrics.json").write_bytes(b"\xff\xfe\x00binary")
    render_report(run, tmp_path / "docs")
    assert "metrics.json: not UTF-8 text" in (tmp_path / "docs" / "method.md").read_text()
    (run / "manifest.json").write_bytes(b"\x89PNG\r\n\x1a\n")
    assert cli_main(["render", "--artifacts", str(run), "--docs", str(tmp_path / "docs")]) == 2
    assert "manifest.json is not UTF-8 text" in capsys.readouterr().err


# --------------------------------------------------------------------------- build


def project_with_docs(tmp_path: Path, run: Path) -> Path:
    project = tmp_path / "project"
    shutil.copytree(PROJECT_ROOT / "docs" / "guide", project / "docs" / "guide")
    shutil.copy(PROJECT_ROOT / "report_builder" / "mkdocs.yml", project)
    (project / "docs" / MARKER).write_text(marker_text("docs", []))
    render_report(run, project / "docs")
    return project


def test_build_refuses_a_folder_it_did_not_build(run: Path, tmp_path: Path):
    project = project_with_docs(tmp_path, run)
    target = user_folder(tmp_path / "mine")
    before = snapshot(target)
    with pytest.raises(PublishError, match="refusing to write into"):
        build_site(project, site_dir=target)
    assert snapshot(target) == before
    with pytest.raises(PublishError, match="inside the docs folder"):
        build_site(project, site_dir=project / "docs" / "site")


def test_build_replaces_its_own_site_and_keeps_a_failed_builds_predecessor(run: Path, tmp_path: Path):
    project = project_with_docs(tmp_path, run)
    site = build_site(project, site_dir=tmp_path / "site")
    (site / "CNAME").write_text("example.org")  # a file the user added to the built site
    built = snapshot(site)
    (project / "docs" / "guide" / "publishing.md").unlink()  # the strict build now fails
    with pytest.raises(Exception, match="mkdocs build --strict failed"):
        build_site(project, site_dir=site)
    assert snapshot(site) == built
    shutil.copy(PROJECT_ROOT / "docs" / "guide" / "publishing.md", project / "docs" / "guide")
    build_site(project, site_dir=site)
    assert (site / "CNAME").read_text() == "example.org"


def test_all_builds_the_docs_it_rendered(tmp_path: Path, monkeypatch):
    """`all --docs DIR` renders into DIR and builds the site from DIR, not from docs/."""
    run = fixtures.write_artifacts(tmp_path / "artifacts" / "run", class_names=("owls", "larks"))
    docs = tmp_path / "elsewhere"
    shutil.copytree(PROJECT_ROOT / "docs" / "guide", docs / "guide")
    (docs / MARKER).write_text(marker_text("docs", []))
    import report_builder.cli as cli

    monkeypatch.setattr(cli, "command_train", lambda arguments: run)
    assert cli_main(["all", "--docs", str(docs), "--site-dir", str(tmp_path / "site")]) == 0
    assert "owls" in (tmp_path / "site" / "index.html").read_text()


# --------------------------------------------------------------------------- interrupts


@pytest.fixture
def restore_signal_handlers():
    saved = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    yield
    for number, handler in saved.items():
        signal.signal(number, handler)


@pytest.mark.parametrize("command, signal_number, status, words", [
    ("render", signal.SIGINT, 130, "docs folder holds the previous report or the new one"),
    ("render", signal.SIGTERM, 143, "docs folder holds the previous report or the new one"),
    ("build", signal.SIGINT, 130, "site folder holds the previous site or the new one"),
])
def test_a_stop_request_gives_its_status_and_a_message_for_the_command(
        run: Path, tmp_path: Path, monkeypatch, capsys, restore_signal_handlers, command, signal_number, status, words):
    import report_builder.cli as cli

    def stopped(*args, **kwargs):
        os.kill(os.getpid(), signal_number)
        time.sleep(1)

    monkeypatch.setattr(cli, f"command_{command}", stopped)
    assert cli_main([command, "--docs", str(tmp_path / "docs")] if command == "render" else [command]) == status
    error = capsys.readouterr().err
    assert words in error and "resume" not in error


def test_a_swallowed_interrupt_still_stops_with_130(run: Path, tmp_path: Path, monkeypatch, capsys, restore_signal_handlers):
    import report_builder.cli as cli

    def swallowing(arguments):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        except KeyboardInterrupt:
            pass  # what a finaliser inside a library does ("Exception ignored in ...")

    monkeypatch.setattr(cli, "command_render", swallowing)
    assert cli_main(["render"]) == 130
    assert "Interrupted" in capsys.readouterr().err


def test_a_journal_naming_other_folders_never_removes_them(run: Path, tmp_path: Path):
    """The journal is trusted only for folders with report-builder's own names beside the target."""
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")
    journal = {"generator": "report-builder",
               "folders": [{"name": "photos", "role": "writing"}, {"name": "../etc", "role": "writing"},
                           {"name": "photos", "role": "old"}]}
    (tmp_path / ".docs.publish.json").write_text(json.dumps(journal))
    render_report(run, tmp_path / "docs")
    assert (tmp_path / "photos" / "cat.jpg").read_bytes() == b"\xff\xd8"
    shutil.rmtree(tmp_path / "docs")
    (tmp_path / ".docs.publish.json").write_text(json.dumps(journal))
    render_report(run, tmp_path / "docs")  # no docs/: "photos" is not put back as docs/ either
    assert (tmp_path / "photos" / "cat.jpg").read_bytes() == b"\xff\xd8"


@pytest.mark.parametrize("entry", [
    {"name": ".docs.staging-aaaa", "role": "swapping", "old_files": [["x"]], "new_files": []},
    {"name": ".docs.staging-aaaa", "role": "swapping", "old_files": 5, "new_files": []},
    {"name": ".docs.staging-aaaa", "role": "swapping", "old_files": ["../../etc/passwd"], "new_files": []},
    {"name": ".docs.staging-aaaa", "role": "unheard-of"},
    "not an object",
])
def test_a_corrupted_journal_entry_is_ignored_not_a_traceback(run: Path, tmp_path: Path, entry):
    (tmp_path / ".docs.staging-aaaa").mkdir()
    (tmp_path / ".docs.staging-aaaa" / "x").write_text("keep")
    (tmp_path / ".docs.publish.json").write_text(json.dumps({"generator": "report-builder", "folders": [entry]}))
    render_report(run, tmp_path / "docs")
    assert (tmp_path / ".docs.staging-aaaa" / "x").read_text() == "keep"
    assert_whole_report(tmp_path / "docs")


def test_build_through_a_link_to_docs_takes_the_renderers_lock(run: Path, tmp_path: Path):
    """A build must exclude a render of the same folder, whatever path names it."""
    project = project_with_docs(tmp_path, run)
    os.symlink(project / "docs", tmp_path / "current")
    marker = json.loads((project / "docs" / MARKER).read_text())
    marker["protected"] = marker.get("protected", []) + ["x\u0000y"]  # a corrupted marker entry is ignored
    (project / "docs" / MARKER).write_text(json.dumps(marker))
    build_site(project, site_dir=tmp_path / "site", docs_dir=tmp_path / "current")
    assert (project / ".docs.lock").is_file() and not (tmp_path / ".current.lock").exists()
    assert not (project / ".docs.publish.json").exists()  # no journal entry outlives a finished call
