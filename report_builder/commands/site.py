"""`build` (`mkdocs build --strict` into site/) and `serve` (a preview of the rendered docs)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mkdocs.commands.serve import serve as mkdocs_serve
from mkdocs.exceptions import MkDocsException

from experiments.errors import UserError
from report_builder.commands import OUTPUT
from report_builder.site import build_site, mkdocs_config, study_overrides


def build(arguments: argparse.Namespace) -> None:
    OUTPUT["what"] = f"into the site folder {arguments.site_dir or Path.cwd() / 'site'}"
    site = build_site(Path.cwd(), strict=True, site_dir=arguments.site_dir, docs_dir=arguments.docs)
    print(f"Site built in {site}; preview it with `python -m report_builder serve`")


def serve(arguments: argparse.Namespace) -> None:
    """`mkdocs serve` of the rendered docs, with the study's title and model pages in the navigation."""
    config_file = mkdocs_config(Path.cwd())
    if not (arguments.docs / "index.md").is_file():
        raise UserError(f"no rendered report in {arguments.docs} (run `python -m report_builder render` first)")
    try:
        mkdocs_serve(config_file=str(config_file), dev_addr=arguments.dev_addr, docs_dir=str(arguments.docs.resolve()),
              **study_overrides(config_file, arguments.docs.resolve()))
    except MkDocsException as error:
        raise UserError(f"mkdocs serve failed for {config_file}: {error}") from None


