"""Hand-written mutation testing: inject one small bug at a time and see whether a test fails.

Each mutation replaces one exact piece of text in one source file (or template) with a wrong
version: the bugs of the "tests that guard every claim the report makes" issue, and more. The
catalogue is data, scripts/mutations.toml: each entry names its file by module name
(experiments.data) or, for a template, by path, and when the text is no longer in that file the
one other file of the same package that holds it is used instead, so mutations follow code that
moves between files (--list says "moved"). For
each, this script writes the mutated file, runs pytest, records whether the suite failed
("killed") or passed ("survived"), and puts the original bytes back (always: after an error,
Ctrl-C or SIGTERM too). It prints a table and a score.

    python scripts/mutate.py --list                    # the mutations, and whether each still applies
    python scripts/mutate.py --only paired-images-not-shared,verdicts-from-first-seed
    python scripts/mutate.py --targeted                # each mutation against the tests meant to catch it
    python scripts/mutate.py --pytest-args "-x -q tests/test_claims.py"

First the tests run once without any mutation: they must pass. Then, by default, every mutation
runs the fast suite (`-x -q`, the project's default markers) without tests/test_shipped_report.py's
snapshot comparison: a bug only the snapshot of the shipped report notices is counted as
surviving (`--with-snapshot` counts it). A mutation whose original
text is not found exactly once in its file, nor in exactly one other file of its package, is
reported as a "stale mutation": the code changed and the mutation must be rewritten, it is never
silently skipped.

While a mutation is applied, a copy of the original file is kept in a folder under the system's
temporary directory; if this script is killed outright (SIGKILL), the next run puts the
original back before doing anything else (unless the file was edited since). Child pythons run
with PYTHONDONTWRITEBYTECODE=1, so no bytecode of a mutated module is ever cached.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT_TEST = "tests/test_shipped_report.py::test_committed_docs_are_rendered_from_committed_artifacts"
DEFAULT_PYTEST_ARGS = "-x -q -p no:randomly"
CATALOGUE = Path(__file__).with_name("mutations.toml")  # the mutations: data, one table each
BACKUP_DIR = Path(tempfile.gettempdir()) / f"mutate-{hashlib.sha256(str(PROJECT_ROOT).encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class Mutation:
    name: str
    target: str  # a module name (experiments.data) or, for a template, a path from the project root
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]  # the tests meant to catch it (what --targeted runs)
    bug: str  # the bug in words

    @property
    def is_module(self) -> bool:
        return "/" not in self.target and not self.target.endswith(".py")


CATALOGUE_KEYS = {"name", "old", "new", "tests", "bug"}


def load_catalogue(path: Path = CATALOGUE) -> tuple[Mutation, ...]:
    """The mutations of `path` (TOML, one [[mutation]] table each), checked: every problem names its entry."""
    with open(path, "rb") as handle:
        entries = tomllib.load(handle).get("mutation", [])
    mutations, seen = [], set()
    for number, entry in enumerate(entries, 1):
        where = f"{path.name}: mutation {number} ({entry.get('name', 'no name')})"
        targets = [key for key in ("module", "file") if key in entry]
        missing = sorted(CATALOGUE_KEYS - set(entry))
        unknown = sorted(set(entry) - CATALOGUE_KEYS - {"module", "file"})
        if missing or unknown or len(targets) != 1:
            raise SystemExit(f"{where}: needs {', '.join(sorted(CATALOGUE_KEYS))} and one of module or file"
                             + (f"; missing {', '.join(missing)}" if missing else "") + (f"; unknown {', '.join(unknown)}" if unknown else ""))
        if entry["name"] in seen:
            raise SystemExit(f"{where}: the name is used twice")
        seen.add(entry["name"])
        mutations.append(Mutation(entry["name"], entry[targets[0]], entry["old"], entry["new"], tuple(entry["tests"]), entry["bug"]))
    return tuple(mutations)


# --------------------------------------------------------------------------- files

SEARCHED_SUFFIXES = (".py", ".j2")


@dataclass(frozen=True)
class Located:
    """Where a mutation's text is: `path` when it occurs exactly once there, else None and why."""
    path: Path | None
    problem: str = ""
    moved: bool = False  # found in another file of the package than the catalogue names

    def describe(self) -> str:
        return str(self.path.relative_to(PROJECT_ROOT)) if self.path else self.problem


def named_file(mutation: Mutation) -> Path:
    """The file the catalogue names: a module (as a .py file or a package's __init__.py) or a path."""
    if not mutation.is_module:
        return PROJECT_ROOT / mutation.target
    base = PROJECT_ROOT.joinpath(*mutation.target.split("."))
    package_init = base / "__init__.py"
    return package_init if package_init.is_file() else base.with_suffix(".py")


def _count(path: Path, text: str) -> int:
    try:
        return path.read_text(encoding="utf-8").count(text)
    except (OSError, UnicodeDecodeError):
        return 0


def locate(mutation: Mutation) -> Located:
    """The file to mutate. The one the catalogue names, if its text occurs there exactly once; else,
    so that a mutation follows its code when files move into sub-packages, the one other file of
    the same top-level package (experiments, report_builder) that holds the text exactly once.
    Anything else is a stale mutation: the code moved on and the mutation must be rewritten."""
    named = named_file(mutation)
    count = _count(named, mutation.old)
    if count == 1:
        return Located(named)
    shown = named.relative_to(PROJECT_ROOT)
    package = PROJECT_ROOT / (mutation.target.split(".")[0] if mutation.is_module else Path(mutation.target).parts[0])
    found = {path: _count(path, mutation.old) for path in sorted(package.rglob("*"))
             if path.suffix in SEARCHED_SUFFIXES and path.is_file() and path != named}
    holders = [path for path, number in found.items() if number]
    if count == 0 and len(holders) == 1 and found[holders[0]] == 1:
        return Located(holders[0], moved=True)
    where = "it is missing" if not named.is_file() else f"its text occurs {count} times there"
    elsewhere = (f"; it also occurs in {', '.join(str(path.relative_to(PROJECT_ROOT)) for path in holders)}" if holders
                 else f"; no other file of {package.name}/ holds it")
    return Located(None, f"stale mutation: {shown}: {where}, expected once{elsewhere}")


def _backup_record() -> Path:
    return BACKUP_DIR / "applied.json"


def _save_backup(path: Path, original: bytes, mutated: bytes, mtime_ns: int) -> None:
    BACKUP_DIR.mkdir(parents=True, exist_ok=True)
    (BACKUP_DIR / "original").write_bytes(original)
    (BACKUP_DIR / "mutated").write_bytes(mutated)
    _backup_record().write_text(json.dumps({"path": str(path), "mtime_ns": mtime_ns}), encoding="utf-8")


def _drop_backup() -> None:
    for name in ("applied.json", "original", "mutated"):
        (BACKUP_DIR / name).unlink(missing_ok=True)


def restore(path: Path, original: bytes, mutated: bytes, mtime_ns: int) -> None:
    """Put `original` back, unless someone edited the mutated file meanwhile: then undo only
    the mutation's text, if that can still be done unambiguously, and say so."""
    try:
        current = path.read_bytes()
    except FileNotFoundError:
        current = None
    if current is None or current == mutated:
        path.write_bytes(original)
        os.utime(path, ns=(mtime_ns, mtime_ns))
        _drop_backup()
        return
    print(f"warning: {path} changed while a mutation was applied; the original is kept in {BACKUP_DIR / 'original'}",
          file=sys.stderr)


def recover_leftover() -> None:
    """A run killed while a mutation was applied left a backup: restore it first."""
    record = _backup_record()
    if not record.is_file():
        return
    details = json.loads(record.read_text(encoding="utf-8"))
    path = Path(details["path"])
    original, mutated = (BACKUP_DIR / "original").read_bytes(), (BACKUP_DIR / "mutated").read_bytes()
    if path.is_file() and path.read_bytes() == mutated:
        print(f"restoring {path}, left mutated by an interrupted run", file=sys.stderr)
        restore(path, original, mutated, details["mtime_ns"])
    elif path.is_file() and path.read_bytes() == original:
        _drop_backup()
    else:
        raise SystemExit(f"a leftover mutation backup for {path} is in {BACKUP_DIR}, but the file has changed since; "
                         "compare it by hand, then delete that folder")



# --------------------------------------------------------------------------- running


@dataclass
class Outcome:
    mutation: Mutation
    result: str  # killed, survived, stale mutation, error
    detail: str = ""
    seconds: float = 0.0


FAILED_LINE = re.compile(r"^(?:FAILED|ERROR) (\S+)(?: - (.*))?$", re.M)


def run_pytest(arguments: list[str], timeout: float) -> tuple[int | None, str]:
    environment = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.Popen([sys.executable, "-m", "pytest", *arguments], cwd=PROJECT_ROOT, env=environment,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
        return process.returncode, output
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return None, output
    except BaseException:  # Ctrl-C or SIGTERM: stop pytest's whole process group, then restore
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise


def apply_and_test(mutation: Mutation, arguments: list[str], timeout: float) -> Outcome:
    located = locate(mutation)
    if located.path is None:
        return Outcome(mutation, "stale mutation", located.problem.removeprefix("stale mutation: "))
    path = located.path
    original = path.read_bytes()
    mtime_ns = path.stat().st_mtime_ns
    mutated = original.decode("utf-8").replace(mutation.old, mutation.new, 1).encode("utf-8")
    started = time.perf_counter()
    _save_backup(path, original, mutated, mtime_ns)
    try:
        path.write_bytes(mutated)
        # a different mtime than any bytecode of the original (whatever the clock did)
        os.utime(path, ns=(mtime_ns + 1_000_000_000, mtime_ns + 1_000_000_000))
        code, output = run_pytest(arguments, timeout)
    finally:
        restore(path, original, mutated, mtime_ns)
    seconds = time.perf_counter() - started
    failed = [test + (f" ({message[:100]})" if message else "") for test, message in FAILED_LINE.findall(output)]
    if len(failed) > 1:
        failed[0] += f" and {len(failed) - 1} more"
    if code is None:
        return Outcome(mutation, "killed", f"timed out after {timeout:.0f} s", seconds)
    if code == 0:
        return Outcome(mutation, "survived", "", seconds)
    if code in (1, 2):  # tests failed, or collection failed (the mutation broke an import)
        return Outcome(mutation, "killed", failed[0] if failed else f"pytest exit status {code}", seconds)
    tail = output.strip().splitlines()[-1:] or [""]
    return Outcome(mutation, "error", f"pytest exit status {code}: {tail[0]}", seconds)


def print_table(outcomes: list[Outcome]) -> None:
    width = max(len(outcome.mutation.name) for outcome in outcomes)
    print(f"\n{'mutation':<{width}}  {'result':<14}  {'s':>6}  caught by / detail")
    print(f"{'-' * width}  {'-' * 14}  {'-' * 6}  {'-' * 40}")
    for outcome in outcomes:
        print(f"{outcome.mutation.name:<{width}}  {outcome.result:<14}  {outcome.seconds:6.1f}  {outcome.detail}")
    killed = sum(outcome.result == "killed" for outcome in outcomes)
    print(f"\nscore: {killed}/{len(outcomes)} killed"
          + "".join(f", {sum(o.result == kind for o in outcomes)} {kind}" for kind in ("survived", "stale mutation", "error")
                    if any(o.result == kind for o in outcomes)))


def list_mutations(mutations: tuple[Mutation, ...]) -> None:
    width = max(len(mutation.name) for mutation in mutations)
    for mutation in mutations:
        located = locate(mutation)
        state = f"  [{located.problem}]" if located.path is None else (
            f"  [moved: the catalogue names {mutation.target}]" if located.moved else "")
        where = located.path.relative_to(PROJECT_ROOT) if located.path else mutation.target
        print(f"{mutation.name:<{width}}  {where}: {mutation.bug}{state}")
        print(f"{'':<{width}}  caught by: {' '.join(mutation.tests)}")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--list", action="store_true", help="list the mutations and whether each still applies")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run only these mutations (repeat, or separate with commas)")
    parser.add_argument("--pytest-args", default=None, metavar="ARGS",
                        help=f'pytest arguments for every mutation (default: "{DEFAULT_PYTEST_ARGS}", the fast suite)')
    parser.add_argument("--targeted", action="store_true",
                        help="run each mutation against only the tests meant to catch it (fast; see --list)")
    parser.add_argument("--with-snapshot", action="store_true",
                        help="let the shipped report's snapshot comparison count as catching a mutation")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the first run of the tests without any mutation (which must pass)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per mutation before it counts as killed (default 1800)")
    return parser.parse_args(argv)


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM stops like Ctrl-C: the mutated file is restored


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    names = [name for item in arguments.only for name in item.split(",") if name]
    mutations = load_catalogue()
    known = {mutation.name: mutation for mutation in mutations}
    unknown = [name for name in names if name not in known]
    if unknown:
        print(f"unknown mutation(s): {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    selected = tuple(known[name] for name in names) if names else mutations
    if arguments.list:
        list_mutations(selected)
        return 0
    recover_leftover()
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even where it was started with SIGINT ignored

    def pytest_arguments(tests: list[str]) -> list[str]:
        chosen = shlex.split(arguments.pytest_args if arguments.pytest_args is not None else DEFAULT_PYTEST_ARGS)
        chosen += tests if arguments.targeted else []
        return chosen + ([] if arguments.with_snapshot else ["--deselect", SNAPSHOT_TEST])

    outcomes: list[Outcome] = []
    try:
        if not arguments.no_baseline:  # a suite that fails unmutated would call every mutation killed
            print("[baseline] the same tests without any mutation", flush=True)
            code, output = run_pytest(pytest_arguments(sorted({test for m in selected for test in m.tests})), arguments.timeout)
            if code != 0:
                print(output[-3000:], file=sys.stderr)
                print("the tests fail (or time out) without any mutation; fix that first (or pass --no-baseline)",
                      file=sys.stderr)
                return 2
        for number, mutation in enumerate(selected, 1):
            print(f"[{number}/{len(selected)}] {mutation.name} ({locate(mutation).describe()})", flush=True)
            outcome = apply_and_test(mutation, pytest_arguments(list(mutation.tests)), arguments.timeout)
            print(f"    {outcome.result}{': ' + outcome.detail if outcome.detail else ''}", flush=True)
            outcomes.append(outcome)
    except KeyboardInterrupt:
        print("\ninterrupted; the mutated file was restored", file=sys.stderr)
        if outcomes:
            print_table(outcomes)
        return 130
    print_table(outcomes)
    return 0 if all(outcome.result == "killed" for outcome in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
