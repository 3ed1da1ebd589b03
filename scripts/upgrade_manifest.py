"""Add the study record (manifest.study) to a manifest.json written before manifests carried it.

    python scripts/upgrade_manifest.py artifacts/cats-vs-dogs/manifest.json

The report reads each model's resolved recipe, the planned comparisons and the settings that
applied from the manifest (experiments.artifacts.run_records.StudyRecord) and never the runner's recipe
code. A manifest written before that lacks the record, and the report stops with one sentence
saying so. `python -m report_builder train` with the run's config rewrites the manifest (it
trains nothing that is done); this script does the same for a run that cannot be trained
again here, such as the shipped one: it derives the record from the manifest's own config and
models through the runner's one function (experiments.study.records.study_record), adds it,
and changes nothing else: every other field, number and byte of the file is written back as
it was read. A manifest that already has the record is left alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: the project's packages
    sys.path.insert(0, str(ROOT))

from experiments.artifacts.files import ArtifactFormatError  # noqa: E402
from experiments.artifacts.run_records import Manifest  # noqa: E402
from experiments.study.records import with_study_record  # noqa: E402


def upgrade(path: Path) -> bool:
    """Add the study record to the manifest at `path` (or in the run folder `path`); False when it
    already had one."""
    path = path / "manifest.json" if path.is_dir() else path
    try:
        manifest = Manifest.read(path)
    except ArtifactFormatError as error:
        raise SystemExit(f"error: {error}") from None
    if manifest is None:
        raise SystemExit(f"error: no manifest at {path}")
    if manifest.study is not None:
        return False
    before = manifest.to_json()
    upgraded = with_study_record(manifest)
    after = upgraded.to_json()
    if {key: value for key, value in after.items() if key != "study"} != before:
        raise SystemExit(f"error: upgrading {path} would change more than its study record")
    upgraded.write(path)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifests", nargs="+", type=Path, help="manifest.json files (or run folders) to upgrade")
    arguments = parser.parse_args(argv)
    for path in arguments.manifests:
        print(f"{path}: {'study record added' if upgrade(path) else 'already has a study record'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
