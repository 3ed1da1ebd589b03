"""Atomic writes: a failed write names the file and leaves what was written before intact."""

from __future__ import annotations

import json
import os

import pytest

from experiments.artifacts import ArtifactError, RunFolder, read_json, write_atomic, write_json


def test_write_json_replaces_whole_files_and_maps_nan_to_null(tmp_path):
    path = write_json(tmp_path / "a" / "history.json", {"loss": float("nan"), "values": [1.0, float("inf")]})
    assert json.loads(path.read_text()) == {"loss": None, "values": [1.0, None]}
    assert [item.name for item in path.parent.iterdir()] == ["history.json"]


def test_a_failing_writer_keeps_the_previous_file(tmp_path):
    path = write_json(tmp_path / "metrics.json", {"ok": 1})

    def broken(temporary_path):
        temporary_path.write_text("{half")
        raise OSError(28, "No space left on device")

    with pytest.raises(ArtifactError, match="metrics.json.*No space left"):
        write_atomic(path, broken)
    assert read_json(path) == {"ok": 1}
    assert [item.name for item in tmp_path.iterdir()] == ["metrics.json"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores folder permissions")
def test_read_only_run_folder_is_named(tmp_path):
    root = tmp_path / "run"
    root.mkdir()
    write_json(root / "manifest.json", {"status": "complete"})
    root.chmod(0o555)
    try:
        with pytest.raises(ArtifactError, match=str(root)):
            RunFolder(root).check_writable()
        assert read_json(root / "manifest.json") == {"status": "complete"}
    finally:
        root.chmod(0o755)


def test_unwritable_output_location_is_named(tmp_path):
    blocker = tmp_path / "out"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(ArtifactError, match="out"):
        RunFolder(blocker / "run").check_writable()


def test_permission_denied_is_named_even_as_root(tmp_path, monkeypatch):
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(ArtifactError, match="manifest.json: Permission denied"):
        write_json(tmp_path / "manifest.json", {})


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_get_the_users_umask(tmp_path, umask, mode):
    """mkstemp makes 0600 files; every artifact gets 0666 less the umask, as open() would give it.
    The umask is read once, at import, so a fresh interpreter runs with it set."""
    import subprocess
    import sys

    from tests.conftest import PROJECT_ROOT

    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from experiments.artifacts import write_atomic, write_json\n"
        "folder = Path(sys.argv[1])\n"
        "write_json(folder / 'state.json', {'ok': True})\n"
        "write_atomic(folder / 'model.bin', lambda path: path.write_bytes(b'weights'))\n"
    )
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=PROJECT_ROOT, umask=umask, check=True, timeout=60)
    for name in ("state.json", "model.bin"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name
    assert sorted(item.name for item in tmp_path.iterdir()) == ["model.bin", "state.json"]


def test_umask_is_read_at_import_and_left_as_it_was(monkeypatch, tmp_path):
    from experiments import artifacts

    before = os.umask(0o022)
    os.umask(before)
    assert artifacts.UMASK == artifacts._read_umask() == before  # reading it does not change it
    monkeypatch.setattr(artifacts, "UMASK", 0o027)
    assert write_json(tmp_path / "manifest.json", {}).stat().st_mode & 0o777 == 0o640


# --------------------------------------------------------------------------- whose folder a run may be written into


def _a_folder_of_the_user_s(root):
    """The files of issue 27: names a run writes, none of them written by this program."""
    (root / "figures").mkdir(parents=True)
    (root / "manifest.json").write_text('{"mine": 1}')
    (root / "dataset.json").write_text("mine")
    (root / "metrics.json").write_text("mine")
    (root / "figures" / "comparison.png").write_bytes(b"png")
    return {path.relative_to(root): path.read_bytes() for path in root.rglob("*") if path.is_file()}


def test_a_run_is_created_and_marked_only_in_an_absent_or_empty_folder(tmp_path):
    from experiments.errors import UserError

    for root in (tmp_path / "absent" / "run", tmp_path / "empty"):
        if root.name == "empty":
            root.mkdir()
        RunFolder(root).claim()
        assert read_json(root / ".report-builder.json")["kind"] == "run"
        RunFolder(root).claim()  # marked: claimed again without a word
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / ".report-builder.json").write_text('{"generator": "report-builder", "kind": "docs", "files": []}')
    with pytest.raises(UserError, match="marks it as a docs folder"):
        RunFolder(docs).claim()


def test_a_folder_holding_the_user_s_own_run_named_files_is_refused_untouched(tmp_path):
    from experiments.errors import UserError

    root = tmp_path / "X" / "tiny"
    before = _a_folder_of_the_user_s(root)
    with pytest.raises(UserError) as caught:
        RunFolder(root).claim()
    message = str(caught.value)
    assert str(root) in message and "did not write" in message and message.count(". ") == 0
    assert {path.relative_to(root): path.read_bytes() for path in root.rglob("*") if path.is_file()} == before


def test_a_run_written_before_the_marker_is_recognised_by_its_manifest_and_its_names_only(tmp_path):
    import shutil
    from pathlib import Path

    from experiments.errors import UserError

    shipped = Path(__file__).resolve().parents[1] / "artifacts" / "cats-vs-dogs"
    root = tmp_path / "old-run"
    shutil.copytree(shipped, root)
    RunFolder(root).claim()
    assert read_json(root / ".report-builder.json")["kind"] == "run"
    stranger = tmp_path / "old-run-with-notes"
    shutil.copytree(shipped, stranger)
    (stranger / "notes.txt").write_text("mine")  # a run does not write it: not recognisably ours
    with pytest.raises(UserError, match="notes.txt"):
        RunFolder(stranger).claim()


def test_train_refuses_a_folder_that_is_not_a_run_with_exit_status_2_and_one_sentence(tmp_path, capsys):
    from report_builder.cli import main
    from tests.conftest import SMOKE_CONFIG

    root = tmp_path / "X" / "tiny"
    before = _a_folder_of_the_user_s(root)
    assert main(["train", "--config", str(SMOKE_CONFIG), "--out", str(tmp_path / "X"), "--run-name", "tiny"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: Refusing to write a run into {root}") and "Traceback" not in error
    assert {path.relative_to(root): path.read_bytes() for path in root.rglob("*") if path.is_file()} == before


def test_a_full_disk_while_an_artifact_is_written_says_so_and_keeps_the_previous_file(tmp_path):
    import errno

    path = write_json(tmp_path / "history.json", {"epochs": [1]})

    def fills_the_disk(temporary_path):
        temporary_path.write_text('{"epo')
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(ArtifactError) as caught:
        write_atomic(path, fills_the_disk)
    assert str(caught.value).startswith(f"Cannot write {path}: the disk is full")
    assert read_json(path) == {"epochs": [1]} and [item.name for item in tmp_path.iterdir()] == ["history.json"]


# --------------------------------------------------------------------------- a pipe where a file belongs


def _finishes(action, seconds: float = 20.0):
    """Run `action` in a thread; fail if it does not end within `seconds` (a read blocked on a pipe)."""
    import threading

    outcome: dict[str, object] = {}

    def run():
        try:
            outcome["value"] = action()
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the read blocked on the named pipe"
    return outcome


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_named_pipe_in_place_of_history_json_is_refused_in_one_sentence_without_waiting(tmp_path):
    from experiments.artifacts import ArtifactFormatError, History, RunState

    seed_run = RunFolder(tmp_path / "run").seed_run("baseline", 7)
    seed_run.folder.mkdir(parents=True)
    os.mkfifo(seed_run.history)
    outcome = _finishes(lambda: History.read(seed_run.history))
    error = outcome.get("error")
    assert isinstance(error, ArtifactFormatError) and str(error) == (
        f"{seed_run.history}: a named pipe (FIFO) where a JSON file belongs, so it is not read")
    assert _finishes(lambda: read_json(seed_run.history)) == {"value": None}
    assert _finishes(lambda: RunState.read_or_none(seed_run.history)) == {"value": None}


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_render_leaves_out_a_named_pipe_in_place_of_history_json_and_names_it_without_waiting(tmp_path):
    import subprocess

    from tests import report_fixtures
    from tests.conftest import PROJECT_ROOT, cli_environment, run_cli_command

    run = report_fixtures.write_artifacts(tmp_path / "artifacts")
    history = next((run / "models" / "baseline").glob("seed-*/history.json"))
    history.unlink()
    os.mkfifo(history)
    result = subprocess.run(run_cli_command("render", "--artifacts", str(run), "--docs", str(tmp_path / "docs")),
                            cwd=PROJECT_ROOT, env=cli_environment(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    relative = history.relative_to(run).as_posix()
    assert f"{relative}: a named pipe (FIFO) where a JSON file belongs, so it is not read" in result.stderr
    assert "Traceback" not in result.stderr
