"""`render`: turn one run's artifacts into the site's Markdown under docs/ (no TensorFlow)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from experiments.config import load_config
from report_builder.commands import OUTPUT
from report_builder.render import render_report


def render(arguments: argparse.Namespace, run_dir: Path | None = None) -> None:
    artifacts = arguments.artifacts or run_dir or load_config(arguments.config).run_dir
    OUTPUT["what"] = f"into the docs folder {arguments.docs}"
    problems: list[str] = []
    written = render_report(artifacts, arguments.docs, problems)
    print(f"Rendered {artifacts} into {arguments.docs} ({len(written)} files)")
    if problems:  # every one, one line each, naming the file (relative to the run folder)
        shown = "".join(f"\n  - {one_line(problem)}" for problem in problems)
        print(f"warning: {len(problems)} problem(s) with the run's files (in {artifacts}); the report leaves out what they "
              f"concern and lists them at the foot of the method page:{shown}", file=sys.stderr)


def one_line(text: str) -> str:
    """`text` on one line: line breaks and other control characters (a file or field name may hold
    them) written as escapes."""
    return "".join(character if character.isprintable() else repr(character)[1:-1] for character in text)
