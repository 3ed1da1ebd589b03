"""The project's shape: no import circle, and every project import inside a function says why
(scripts/import_graph.py); the report reaches the runner only through the artifact contract;
every module opens with the sentence that says its job."""

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


#: The runner's floors the report must not reach: what a model is and which settings applied come
#: from the manifest's study record (experiments.study.records writes it), never from the runner's code.
RUNNER_MODULES = ("experiments.config", "experiments.models", "experiments.study", "experiments.scale",
                  "experiments.training", "experiments.data")
#: The command line drives the runner (train, cache) and so may import it, and render finds the
#: default run folder from the config (through commands.train); nothing that renders may.
RUNNER_COMMANDS = ("report_builder.__main__", "report_builder.cli", "report_builder.commands.train", "report_builder.commands.cache",
                   "report_builder.commands.render")
#: What of experiments the rest of report_builder imports: the artifact contract (the package and its
#: modules) and the user errors.
REPORT_READS = ("experiments.artifacts", "experiments.errors")


def _a_report_read(module: str) -> bool:
    return any(module == name or module.startswith(f"{name}.") for name in REPORT_READS)


def test_the_report_reads_the_runner_only_through_the_artifact_contract():
    """No module of report_builder but the command line's imports experiments.config,
    experiments.models or the training floors, directly or through another module: the report
    knows a run by its files (experiments.artifacts) and the user errors (experiments.errors)."""
    graph = _import_graph()
    edges, _ = graph.graph(graph.project_modules())

    def reached(name: str) -> set[str]:
        seen, todo = set(), [name]
        while todo:
            for other in edges[todo.pop()] - seen:
                seen.add(other)
                todo.append(other)
        return seen

    leaks = {name: sorted(other for other in reached(name) if other.startswith(RUNNER_MODULES))
             for name in edges if name.startswith("report_builder") and name not in RUNNER_COMMANDS}
    assert {name: found for name, found in leaks.items() if found} == {}
    direct = {name: sorted(other for other in edges[name] if other.startswith("experiments") and not _a_report_read(other))
              for name in leaks}
    assert {name: found for name, found in direct.items() if found} == {}
    assert any(other.startswith("experiments.artifacts.") for name in leaks for other in edges[name])  # its modules count
    assert any(module.startswith("report_builder.views") for module in leaks)  # the check sees the report's modules
