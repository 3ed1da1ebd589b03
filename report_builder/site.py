"""Build the MkDocs site from a rendered docs folder.

The site is built into a staging folder and swapped in whole (see
:mod:`report_builder.publish`): a failed, killed or concurrent build leaves the previous site,
and a folder that report-builder did not build is never emptied.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from experiments.artifacts.files import ArtifactFormatError, parse_json_file
from experiments.errors import UserError
from report_builder.publish import protected_folders, publish_tree, recover, wait_for_folder

BUILD_TIMEOUT_SECONDS = 600
#: The site's settings when the folder a command runs in has no mkdocs.yml of its own (a study of
#: one's own, in a folder of its own): the package's, the same the project's mkdocs.yml inherits.
DEFAULT_MKDOCS = Path(__file__).resolve().with_name("mkdocs.yml")
PROGRAM_DIR = Path(__file__).resolve().parent


def mkdocs_config(folder: Path) -> Path:
    """The MkDocs config for a site built in `folder`: its own mkdocs.yml, else the package's."""
    own = Path(folder) / "mkdocs.yml"
    return own if own.is_file() else DEFAULT_MKDOCS
#: Written by `render` into the docs folder (a dot-file: MkDocs does not publish it): the study's
#: title and its model pages in study order, so the site's name and navigation follow the study.
NAV_FILE = ".report-builder-nav.json"
#: The entry of mkdocs.yml's nav whose pages are the study's model pages.
MODELS_SECTION = "Models"


class SiteBuildError(UserError, RuntimeError):
    """``mkdocs build`` failed; the message carries mkdocs's own output."""


def _mkdocs_command(config_file: Path, docs_dir: Path, site_dir: Path, strict: bool) -> list[str]:
    """``mkdocs build`` with the docs folder given explicitly (the mkdocs CLI has no option for it)."""
    return [sys.executable, "-m", "report_builder.site", str(config_file), str(docs_dir), str(site_dir),
            "strict" if strict else "lenient"]


def build_site(project_root: Path, strict: bool = True, site_dir: Path | None = None,
               docs_dir: Path | None = None) -> Path:
    """Run ``mkdocs build`` (``--strict`` by default) for ``project_root/mkdocs.yml``, or the
    package's default settings where the folder has none (:func:`mkdocs_config`).

    ``docs_dir`` (default: the config's, ``docs/``) is the folder built; ``site_dir`` (default
    ``project_root/site``) receives the site. Returns the site folder. Raises
    :class:`SiteBuildError` naming the config file and quoting mkdocs's output, or
    :class:`~report_builder.publish.PublishError` when ``site_dir`` is not the site's to replace.
    """
    project_root = Path(project_root).resolve()
    config_file = mkdocs_config(project_root)
    docs_dir = Path(os.path.abspath(docs_dir)) if docs_dir is not None else project_root / "docs"
    output_dir = Path(os.path.abspath(site_dir)) if site_dir is not None else project_root / "site"
    missing = SiteBuildError(f"no docs folder to build: {docs_dir} (run `python -m report_builder render` first)")
    if not docs_dir.is_dir() and not docs_dir.parent.is_dir():
        raise missing
    with wait_for_folder(docs_dir):  # a render swapping docs/ meanwhile would mix two reports
        recover(docs_dir)
        if not docs_dir.is_dir():
            raise missing
        return _build_locked(config_file, project_root, docs_dir, output_dir, strict)


def _build_locked(config_file: Path, project_root: Path, docs_dir: Path, output_dir: Path, strict: bool) -> Path:

    def write(staging: Path) -> list[str]:
        _run_mkdocs(_mkdocs_command(config_file, docs_dir, staging, strict), config_file, project_root, strict)
        return [path.relative_to(staging).as_posix() for path in sorted(staging.rglob("*"))
                if path.is_file() and not path.is_symlink() and not path.name.startswith(".report-builder")]

    forbidden = [(docs_dir, "the docs folder it is built from"), (PROGRAM_DIR, "the program")]
    publish_tree(output_dir, write, kind="site", forbidden=forbidden + protected_folders(docs_dir))
    return output_dir


def _die_with_parent() -> None:
    """In the mkdocs child (Linux): be killed when the parent dies, so a killed build leaves no
    process writing into its staging folder."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def _run_mkdocs(command: list[str], config_file: Path, project_root: Path, strict: bool) -> None:
    try:
        result = subprocess.run(
            command,
            preexec_fn=_die_with_parent,
            cwd=project_root,
            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},  # silence Material's end-of-life banner
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise SiteBuildError(f"mkdocs build for {config_file} took longer than {BUILD_TIMEOUT_SECONDS} s") from error
    except OSError as error:
        raise SiteBuildError(f"cannot run mkdocs for {config_file}: {error}") from error
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip()
        raise SiteBuildError(
            f"mkdocs build{' --strict' if strict else ''} failed for {config_file} "
            f"(exit code {result.returncode}):\n{output}"
        )


def study_overrides(config_file: str | Path, docs_dir: str | Path) -> dict[str, Any]:
    """MkDocs config overrides for the study `render` wrote into `docs_dir`: its title as the
    site's name; its model pages, in study order, as mkdocs.yml's "Models" section; and no nav
    entry for a page a docs folder other than mkdocs.yml's own does not have (a report rendered
    into a folder of its own has no guide pages). Nothing for a folder `render` did not write
    (no NAV_FILE)."""
    from mkdocs.config import load_config

    docs_dir = Path(docs_dir)
    try:
        study = parse_json_file(docs_dir / NAV_FILE)
    except (OSError, ArtifactFormatError):
        study = None
    if not isinstance(study, dict):
        return {}  # not a rendered report: mkdocs.yml as it is
    if Path(config_file).resolve() == DEFAULT_MKDOCS:
        # the package's settings have no docs folder of their own: every report is "in a folder of its own"
        own = load_config(str(config_file), docs_dir=str(docs_dir.resolve()))
        own_docs = None
    else:
        own = load_config(str(config_file))
        own_docs = Path(own.docs_dir)
    nav = own.nav
    overrides: dict[str, Any] = {}
    if isinstance(study.get("site_name"), str) and study["site_name"]:
        overrides["site_name"] = study["site_name"]
    if nav is None:
        return overrides
    models = study.get("models")
    if isinstance(models, list):
        pages = [page for page in models if isinstance(page, str) and page.startswith("models/") and page.endswith(".md")]
        nav = [{MODELS_SECTION: pages} if isinstance(entry, dict) and MODELS_SECTION in entry else entry for entry in nav]
    # a report rendered into a folder of its own has none of the hand-written pages; in the
    # project's own docs/ a missing page stays an error of the strict build
    overrides["nav"] = nav if own_docs is not None and docs_dir.resolve() == own_docs.resolve() else _present(nav, docs_dir)
    return overrides


def _present(nav: list[Any], docs_dir: Path) -> list[Any]:
    """`nav` without the pages missing from `docs_dir`, and without sections left empty."""
    kept = []
    for entry in nav:
        if isinstance(entry, str):
            if "://" in entry or (docs_dir / entry).is_file():
                kept.append(entry)
        elif isinstance(entry, dict) and len(entry) == 1:
            (title, value), = entry.items()
            if isinstance(value, list):
                if children := _present(value, docs_dir):
                    kept.append({title: children})
            elif isinstance(value, str) and ("://" in value or (docs_dir / value).is_file()):
                kept.append(entry)
        else:
            kept.append(entry)
    return kept


def _build_in_this_process(config_file: str, docs_dir: str, site_dir: str, strictness: str) -> int:
    """The child process: mkdocs's own build, with docs_dir and site_dir given."""
    import logging

    from mkdocs.commands.build import build
    from mkdocs.config import load_config
    from mkdocs.exceptions import MkDocsException

    logging.basicConfig(level=logging.WARNING, format="%(levelname)-7s -  %(message)s")
    try:
        overrides = study_overrides(config_file, docs_dir)
        config = load_config(config_file, docs_dir=docs_dir, site_dir=site_dir, strict=strictness == "strict", **overrides)
        build(config)
    except MkDocsException as error:
        print(f"Aborted: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"Aborted: cannot write {error.filename or site_dir}: {error.strerror or error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_build_in_this_process(*sys.argv[1:5]))
