"""The project's shape: no import circle, and every project import inside a function says why
(scripts/import_graph.py); every module opens with the sentence that says its job."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _import_graph():
    spec = importlib.util.spec_from_file_location("import_graph", PROJECT_ROOT / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_import_graph_has_no_circle_and_no_unexplained_import_in_a_function(capsys):
    assert _import_graph().main([]) == 0, capsys.readouterr().err


def test_the_check_finds_a_circle_and_an_unexplained_import():
    graph = _import_graph()
    assert graph.circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert graph.circles({"a": {"b"}, "b": set()}) == []


def test_every_module_opens_with_a_docstring():
    missing = [str(path.relative_to(PROJECT_ROOT)) for package in ("experiments", "report_builder")
               for path in sorted((PROJECT_ROOT / package).rglob("*.py"))
               if path.stat().st_size and not ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))]
    assert missing == []
