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
