"""Hand-written mutation testing: inject one small bug at a time and see whether a test fails.

Each mutation replaces one exact piece of text in one source file (or template) with a wrong
version: the bugs of the "tests that guard every claim the report makes" issue, and more. For
each, this script writes the mutated file, runs pytest, records whether the suite failed
("killed") or passed ("survived"), and puts the original bytes back (always: after an error,
Ctrl-C or SIGTERM too). It prints a table and a score.

    python scripts/mutate.py --list                    # the mutations, and whether each still applies
    python scripts/mutate.py --only at-baseline-margin-exclusive,verdicts-from-first-seed
    python scripts/mutate.py --targeted                # each mutation against the tests meant to catch it
    python scripts/mutate.py --pytest-args "-x -q tests/test_claims.py"

First the tests run once without any mutation: they must pass. Then, by default, every mutation
runs the fast suite (`-x -q`, the project's default markers) without tests/test_shipped_report.py's
snapshot comparison: a bug only the snapshot of the shipped report notices is counted as
surviving (`--with-snapshot` counts it). A mutation whose original
text is not found exactly once in its file is reported as a "stale mutation": the code moved on
and the mutation must be rewritten, it is never silently skipped.

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
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT_TEST = "tests/test_shipped_report.py::test_committed_docs_are_rendered_from_committed_artifacts"
DEFAULT_PYTEST_ARGS = "-x -q -p no:randomly"
BACKUP_DIR = Path(tempfile.gettempdir()) / f"mutate-{hashlib.sha256(str(PROJECT_ROOT).encode()).hexdigest()[:12]}"


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # relative to the project root
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]  # the tests meant to catch it (what --targeted runs)
    bug: str  # the bug in words


MUTATIONS = (
    # ---- the survivors and snapshot-only bugs
    Mutation(
        "folder-validation-labels-reversed", "experiments/data.py",
        "Split(validation.images, validation.labels, validation.files),",
        "Split(validation.images, (len(validation.class_names) - 1 - validation.labels).astype(np.int32), validation.files),",
        ("tests/test_data.py",),
        "validation (and test) labels of folder data in reverse class order",
    ),
    Mutation(
        "finetune-from-fresh-transfer", "experiments/study.py",
        "model = make_finetune_model(load_trained_model(transfer_file), training.finetune_from_layer)",
        "model = make_finetune_model(build_model(\"transfer\", data.image_size, len(data.class_names), training.base_weights, seed), "
        "training.finetune_from_layer)",
        ("tests/test_claims.py::test_finetune_starts_from_the_trained_transfer_weights",),
        "fine-tuning starts from a freshly initialised transfer model, not the trained one",
    ),
    Mutation(
        "image-size-not-hashed", "experiments/config.py",
        '("data", "workers"), ("data", "cache_dir")}',
        '("data", "workers"), ("data", "cache_dir"), ("data", "image_size")}',
        ("tests/test_config.py",),
        "a run trained at another image size is reused (stale results)",
    ),
    Mutation(
        "fingerprint-ignores-content", "experiments/data.py",
        r'digest.update(f"{split_name}\0{path}\0{file_digest}\n".encode())',
        r'digest.update(f"{split_name}\0{path}\n".encode())',
        ("tests/test_data.py",),
        "the data fingerprint does not change when a file's bytes change (stale results)",
    ),
    Mutation(
        "finetune-ignores-its-starting-point", "experiments/study.py",
        "hashlib.sha256(transfer_history.read_bytes()).hexdigest()",
        "hashlib.sha256(str(transfer_history).encode()).hexdigest()",
        ("tests/test_claims.py::test_a_changed_transfer_run_restarts_the_finetune_run_built_on_it",),
        "a retrained transfer run leaves the finetune run built on the old one in place (stale results)",
    ),
    Mutation(
        "test-fraction-zero-accepted", "experiments/config.py",
        "if not 0.0 < data.test_fraction < 1.0:",
        "if not 0.0 <= data.test_fraction < 1.0:",
        ("tests/test_config.py",),
        "data.test_fraction = 0 accepted (no test split)",
    ),
    Mutation(
        "test-fraction-one-accepted", "experiments/config.py",
        "if not 0.0 < data.test_fraction < 1.0:",
        "if not 0.0 < data.test_fraction <= 1.0:",
        ("tests/test_config.py",),
        "data.test_fraction = 1 accepted (no validation split)",
    ),
    Mutation(
        "at-baseline-margin-exclusive", "report_builder/observations.py",
        "at_baseline = gain_points <= AT_BASELINE_MARGIN_POINTS",
        "at_baseline = gain_points < AT_BASELINE_MARGIN_POINTS",
        ("tests/test_observations.py",),
        "a model exactly at the margin above the baseline called better than the baseline",
    ),
    Mutation(
        "epoch-fallback-off-by-one", "report_builder/observations.py",
        'epoch_number = raw.get("epoch", index + 1)',
        'epoch_number = raw.get("epoch", index)',
        ("tests/test_observations.py",),
        "records without an epoch number are numbered from 0",
    ),
    Mutation(
        "final-epoch-shows-best-value", "report_builder/templates/_macros.md.j2",
        "{{ o.last_val_accuracy | percent }} on validation",
        "{{ o.best_val_accuracy | percent }} on validation",
        ("tests/test_claims.py::test_final_epoch_sentence_reports_the_last_epoch_and_the_best_separately",),
        "the final-epoch sentence quotes the best epoch's validation accuracy",
    ),
    Mutation(
        "verdicts-from-first-seed", "report_builder/views.py",
        "observation = obs.observe_model(name, obs.mean_curve(seeds.epochs), baseline, previous_observation)",
        "observation = obs.observe_model(name, runs[0].epochs, baseline, previous_observation)",
        ("tests/test_claims.py::test_verdicts_are_read_from_the_mean_curve_not_from_one_seed",),
        "verdicts read from the first seed instead of the mean curve",
    ),
    Mutation(
        "reference-below-above-swapped", "report_builder/templates/model.md.j2",
        "lies below their figure{% elif reference_finetune_accuracy < model.accuracy.interval[0] %}lies above their figure",
        "lies above their figure{% elif reference_finetune_accuracy < model.accuracy.interval[0] %}lies below their figure",
        ("tests/test_claims.py::test_finetune_interval_is_placed_right_against_the_reference",),
        "the finetune interval said to lie above the reference when it lies below, and the other way round",
    ),
    # ---- more
    Mutation(
        "fingerprint-skips-validation", "experiments/data.py",
        'fingerprint=fingerprint(train.class_names, {"train": train, "validation": validation}),',
        'fingerprint=fingerprint(train.class_names, {"train": train}),',
        ("tests/test_data.py",),
        "a changed validation (or test) image does not change the data fingerprint",
    ),
    Mutation(
        "finetune-keys-never-hashed", "experiments/config.py",
        'ignored = UNHASHED_KEYS | (set() if model_name == "finetune" else FINETUNE_KEYS)',
        "ignored = UNHASHED_KEYS | FINETUNE_KEYS",
        ("tests/test_config.py",),
        "changing the fine-tuning settings does not retrain finetune",
    ),
    Mutation(
        "evaluation-pipeline-shuffled", "experiments/data.py",
        "    if shuffle:\n        dataset = dataset.shuffle(",
        "    if True:\n        dataset = dataset.shuffle(",
        ("tests/test_data.py",),
        "validation and test batches come in shuffled order",
    ),
    Mutation(
        "class-labels-reversed-in-scan", "experiments/images.py",
        "for label, class_name in enumerate(class_names):\n        candidates, skipped = _scan_class_folder(",
        "for label, class_name in zip(range(len(class_names) - 1, -1, -1), class_names):\n        candidates, skipped = _scan_class_folder(",
        ("tests/test_data.py",),
        "folder data labelled in reverse class order (train and validation alike)",
    ),
    Mutation(
        "test-split-leaks-into-validation", "experiments/data.py",
        "remaining = [int(i) for i in order if int(i) not in test_set]",
        "remaining = [int(i) for i in order]",
        ("tests/test_data.py",),
        "the test images stay in the validation split too",
    ),
    Mutation(
        "strong-overfit-threshold-exclusive", "report_builder/observations.py",
        "if gap_points >= STRONG_OVERFIT_GAP_POINTS:",
        "if gap_points > STRONG_OVERFIT_GAP_POINTS:",
        ("tests/test_observations.py",),
        "a gap of exactly the strong threshold called mild",
    ),
    Mutation(
        "touching-intervals-apart", "report_builder/observations.py",
        "return first[0] <= second[1] and second[0] <= first[1]",
        "return first[0] < second[1] and second[0] < first[1]",
        ("tests/test_observations.py",),
        "two models whose intervals touch are ranked",
    ),
    Mutation(
        "population-std", "report_builder/observations.py",
        "    return statistics.stdev(values)",
        "    return statistics.pstdev(values)",
        ("tests/test_observations.py",),
        "the spread over seeds divides by n, not n - 1",
    ),
    Mutation(
        "best-epoch-latest-on-ties", "report_builder/observations.py",
        "if best is None or record.val_accuracy > (best.val_accuracy or 0.0):",
        "if best is None or record.val_accuracy >= (best.val_accuracy or 0.0):",
        ("tests/test_observations.py",),
        "the best epoch is the latest of tied epochs, not the earliest",
    ),
    Mutation(
        "mean-read-as-floor-count", "report_builder/observations.py",
        "correct = round(spread.mean * total)",
        "correct = int(spread.mean * total)",
        ("tests/test_observations.py",),
        "the interval is put around a truncated count of correct answers",
    ),
    Mutation(
        "no-lead-in-for-finetune", "experiments/config.py",
        'CONTINUES = {"finetune": "transfer"}',
        "CONTINUES = {}",
        ("tests/test_claims.py::test_finetune_is_said_to_continue_transfer_with_its_own_epoch_numbers",),
        "the finetune page no longer says which run it continues",
    ),
    Mutation(
        "method-page-forgets-finetune-continues", "report_builder/templates/method.md.j2",
        "{% if models_by_name.finetune is defined and models_by_name.finetune.over_seeds is not none %}",
        "{% if models_by_name.finetune is defined and models_by_name.finetune.over_seeds is none %}",
        ("tests/test_claims.py::test_finetune_is_said_to_continue_transfer_with_its_own_epoch_numbers",),
        "the method page drops (or misplaces) the sentence that finetune starts from transfer",
    ),
    Mutation(
        "onednn-label-swapped", "experiments/runtime.py",
        'return "oneDNN" if enabled else "Eigen (oneDNN off)"',
        'return "Eigen (oneDNN off)" if enabled else "oneDNN"',
        ("tests/test_runtime.py",),
        "the manifest records the wrong CPU kernels",
    ),
    Mutation(
        "validator-accepts-everything", "experiments/config.py",
        "    study, data, training = config.study, config.data, config.training\n",
        "    return config\n    study, data, training = config.study, config.data, config.training\n",
        ("tests/test_config.py::test_any_parsed_values_give_a_config_or_a_config_error",),
        "validate() accepts any well-typed config",
    ),
    Mutation(
        "accuracy-range-not-checked", "report_builder/observations.py",
        "if number is not None and not 0.0 <= number <= 1.0:",
        "if False:",
        ("tests/test_observations.py::test_arbitrary_histories_raise_only_value_error",),
        "an accuracy outside 0..1 in a history is taken as a fact instead of rejected",
    ),
    Mutation(
        "tested-once-note-without-test", "report_builder/templates/index.md.j2",
        '{% if test is not none %}\nThe chosen model is',
        '{% if test is none or test is not none %}\nThe chosen model is',
        ("tests/test_claims.py::test_a_run_without_a_test_evaluation_does_not_claim_one",),
        "a run without a test evaluation still claims to have tested the chosen model once",
    ),
    # ---- never lose a file
    Mutation(
        "carry-over-skipped", "report_builder/publish.py",
        "        if target.is_dir():\n            _carry_over(target, staging, owned, generated)\n",
        "",
        ("tests/test_publish.py",),
        "render drops the user's own files from docs/ (they are not carried into the new tree)",
    ),
    Mutation(
        "refuse-without-marker-off", "report_builder/publish.py",
        "    if entries:\n        shown =",
        "    if False:\n        shown =",
        ("tests/test_publish.py",),
        "a non-empty folder without the marker is written into",
    ),
    Mutation(
        "tidy-trusts-names", "report_builder/publish.py",
        "    return isinstance(name, str) and \"/\" not in name and name.startswith(f\".{target.name}.\") \\\n"
        "        and (\".staging-\" in name or \".old-\" in name)",
        "    return isinstance(name, str) and \"/\" not in name",
        ("tests/test_publish.py",),
        "the journal may name any folder beside the target for removal",
    ),
    Mutation(
        "diverged-called-failed", "experiments/study.py",
        "    if FAILED in statuses:\n        status = FAILED\n    elif DIVERGED in statuses:\n        status = DIVERGED",
        "    if FAILED in statuses:\n        status = FAILED\n    elif DIVERGED in statuses:\n        status = FAILED",
        ("tests/test_concurrency.py", "tests/test_study.py"),
        "a diverged model is reported as failed",
    ),
)


# --------------------------------------------------------------------------- files


def _project_path(relative: str) -> Path:
    return PROJECT_ROOT / relative


def occurrences(mutation: Mutation) -> int:
    try:
        return _project_path(mutation.path).read_text(encoding="utf-8").count(mutation.old)
    except OSError:
        return 0


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
    path = _project_path(mutation.path)
    count = occurrences(mutation)
    if count != 1:
        return Outcome(mutation, "stale mutation", f"its text occurs {count} times in {mutation.path}, expected once")
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
        count = occurrences(mutation)
        state = "" if count == 1 else f"  [stale mutation: its text occurs {count} times]"
        print(f"{mutation.name:<{width}}  {mutation.path}: {mutation.bug}{state}")
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
    known = {mutation.name: mutation for mutation in MUTATIONS}
    unknown = [name for name in names if name not in known]
    if unknown:
        print(f"unknown mutation(s): {', '.join(unknown)}; see --list", file=sys.stderr)
        return 2
    selected = tuple(known[name] for name in names) if names else MUTATIONS
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
            print(f"[{number}/{len(selected)}] {mutation.name} ({mutation.path})", flush=True)
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
