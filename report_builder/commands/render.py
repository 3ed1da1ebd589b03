"""`render`: turn one run's artifacts into the site's Markdown under docs/ (no TensorFlow)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from report_builder.commands import OUTPUT
from report_builder.commands.train import default_run_dir
from report_builder.render import render_report


def render(arguments: argparse.Namespace, run_dir: Path | None = None) -> None:
    artifacts = arguments.artifacts or run_dir or default_run_dir(arguments.config)
    OUTPUT["what"] = f"into the docs folder {arguments.docs}"
    problems: list[str] = []
    written = render_report(artifacts, arguments.docs, problems)
    print(f"Rendered {artifacts} into {arguments.docs} ({len(written)} files)")
    if problems:
        shown = "".join(f"\n  - {problem}" for problem in problems[:10]) + ("\n  - ..." if len(problems) > 10 else "")
        print(f"warning: {len(problems)} problem(s) with the run's files; the report leaves out what they concern and "
              f"lists them at the foot of the method page:{shown}", file=sys.stderr)


