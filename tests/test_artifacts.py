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
    from experiments.artifacts import files  # write_atomic looks UMASK up there

    before = os.umask(0o022)
    os.umask(before)
    assert files.UMASK == files._read_umask() == before  # reading it does not change it
    monkeypatch.setattr(files, "UMASK", 0o027)
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


def test_a_file_where_the_run_folder_or_out_goes_is_named_and_left_untouched(tmp_path):
    from experiments.errors import UserError

    (tmp_path / "smoke").write_text("mine")
    (tmp_path / "out").write_text("mine too")
    for root, blocker in ((tmp_path / "smoke", tmp_path / "smoke"), (tmp_path / "out" / "smoke", tmp_path / "out")):
        with pytest.raises(UserError, match=f"{blocker} is a file, not a folder"):
            RunFolder(root).claim()
    assert (tmp_path / "smoke").read_text() == "mine" and (tmp_path / "out").read_text() == "mine too"


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


# --------------------------------------------------------------------------- bounded JSON

DEEP_ARRAY = "[" * 100_000 + "]" * 100_000
LONG_INTEGER = '{"schema_version": 2, "seed": ' + "7" * 5000 + "}"


@pytest.mark.parametrize("text, detail", [
    (DEEP_ARRAY, "nests arrays and objects 100000 deep, more than the 64 levels this program reads"),
    (LONG_INTEGER, "holds an integer of 5000 digits, more than the 100 this program reads"),
])
def test_a_deep_array_or_a_long_integer_is_one_sentence_naming_the_file_not_a_recursion_or_digits_error(tmp_path, text, detail):
    from experiments.artifacts import ArtifactFormatError, History, RunState, load_json_object

    path = tmp_path / "history.json"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ArtifactFormatError) as caught:
        load_json_object(path)
    assert str(caught.value) == f"{path}: {detail}"
    with pytest.raises(ArtifactFormatError, match="history.json: "):
        History.read(path)
    assert read_json(path) is None and RunState.read_or_none(path) is None  # the lenient readers: nothing known


def test_json_within_the_bounds_reads_as_json_does_brackets_in_strings_included(tmp_path):
    from experiments.artifacts import JSON_MAX_DEPTH, JSON_MAX_INTEGER_DIGITS, load_json_object

    nested: object = 1
    for _ in range(JSON_MAX_DEPTH - 1):
        nested = [nested]
    data = {"nested": nested, "text": '[[[{{{"\\' * 50, "big": -int("9" * JSON_MAX_INTEGER_DIGITS), "float": 1e300}
    path = tmp_path / "state.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    assert load_json_object(path) == data


def test_a_json_file_larger_than_its_kind_allows_is_refused_by_its_size_before_it_is_read(tmp_path, monkeypatch):
    from experiments.artifacts import files  # json_size_limit looks JSON_MAX_BYTES up there

    path = tmp_path / "history.json"
    path.write_text(json.dumps({"epochs": list(range(1000))}), encoding="utf-8")
    size = path.stat().st_size
    monkeypatch.setattr(files, "JSON_MAX_BYTES", 100)
    with pytest.raises(files.ArtifactFormatError) as caught:
        files.load_json_object(path)
    assert str(caught.value) == (f"{path}: is too large to read ({size / 1024:.1f} KiB, more than the 100 bytes a file "
                                 "of its kind may hold)")
    assert files.json_size_limit(tmp_path / "validation_predictions.json") == files.PER_IMAGE_JSON_MAX_BYTES


def test_the_shipped_runs_json_files_lie_well_inside_the_bounds():
    from experiments import artifacts
    from tests.conftest import PROJECT_ROOT

    def depth(value: object) -> int:
        items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        return 0 if items is None else 1 + max(map(depth, items), default=0)

    files = [path for folder in ("artifacts", "docs") for path in (PROJECT_ROOT / folder).rglob("*.json")]
    assert files
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert depth(json.loads(text)) <= artifacts.JSON_MAX_DEPTH // 4, path
        assert path.stat().st_size <= artifacts.json_size_limit(path) // 100, path
        assert artifacts.parse_json_file(path) == json.loads(text)


@pytest.mark.parametrize("text, detail", [(DEEP_ARRAY, "nests arrays and objects 100000 deep"),
                                          (LONG_INTEGER, "holds an integer of 5000 digits")])
def test_render_names_a_deep_or_long_numbered_history_as_a_problem_and_stops_on_such_a_manifest_in_one_sentence(
        tmp_path, capsys, text, detail):
    from report_builder.cli import main
    from tests import report_fixtures

    run = report_fixtures.write_artifacts(tmp_path / "artifacts")
    history = next((run / "models" / "baseline").glob("seed-*/history.json"))
    history.write_text(text, encoding="utf-8")
    assert main(["render", "--artifacts", str(run), "--docs", str(tmp_path / "docs")]) == 0
    err = capsys.readouterr().err
    assert f"{history.relative_to(run).as_posix()}: {detail}" in err and "Traceback" not in err
    (run / "manifest.json").write_text(text, encoding="utf-8")
    assert main(["render", "--artifacts", str(run), "--docs", str(tmp_path / "docs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: artifact file {run / 'manifest.json'} {detail}") and err.count("\n") == 1


def test_the_cache_index_and_the_docs_marker_go_through_the_bounded_reader(tmp_path):
    from experiments.data.cache import INDEX_FILE, read_index
    from report_builder.publish import MARKER, PublishError, read_marker

    (tmp_path / INDEX_FILE).write_text(DEEP_ARRAY, encoding="ascii")
    assert read_index(tmp_path) == (None, f"{INDEX_FILE} cannot be read: nests arrays and objects 100000 deep, "
                                          "more than the 64 levels this program reads")
    (tmp_path / MARKER).write_text(LONG_INTEGER, encoding="ascii")
    with pytest.raises(PublishError, match="holds an integer of 5000 digits"):
        read_marker(tmp_path, "docs")
