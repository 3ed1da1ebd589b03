"""Build the MkDocs site from the rendered docs/ folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BUILD_TIMEOUT_SECONDS = 600


class SiteBuildError(RuntimeError):
    """``mkdocs build`` failed; the message carries mkdocs's own output."""


def build_site(project_root: Path, strict: bool = True, site_dir: Path | None = None) -> Path:
    """Run ``mkdocs build`` (``--strict`` by default) for ``project_root/mkdocs.yml``.

    Returns the folder the site was written to (``site_dir`` or ``project_root/site``).
    Raises :class:`SiteBuildError` naming the config file and quoting mkdocs's output.
    """
    project_root = Path(project_root).resolve()
    config_file = project_root / "mkdocs.yml"
    if not config_file.is_file():
        raise SiteBuildError(f"no MkDocs config found: {config_file}")
    output_dir = Path(site_dir).resolve() if site_dir is not None else project_root / "site"
    command = [
        sys.executable, "-m", "mkdocs", "build", "--clean",
        "--config-file", str(config_file), "--site-dir", str(output_dir),
    ]
    if strict:
        command.append("--strict")
    try:
        result = subprocess.run(
            command,
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
    return output_dir
