"""Command line: `python -m report_builder train | render | build | all | cache`.

- train:  run the study (experiments/) and write a run's artifacts;
- render: turn one run's artifacts into the site's Markdown under docs/ (no TensorFlow);
- build:  `mkdocs build --strict` into site/;
- all:    train, render, build;
- cache:  list the decoded-image caches with their sizes, verify every byte of them, or remove them.

User errors (a bad config value, a missing folder, no network, a folder that is not the
report's to write) print one sentence and exit with status 2; Ctrl-C or SIGTERM stop cleanly
with status 130 or 143, and an interrupted training resumes when the same command is run again.
A closed standard output (`| head`) ends a command quietly with status 141; a full disk, anywhere,
with one sentence naming what was being written, and status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = PROJECT_ROOT / "experiments" / "configs" / "default.toml"


def _add_train_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="TOML config (default: experiments/configs/default.toml)")
    parser.add_argument("--data-dir", help="read DIR/train/<class>/ and DIR/validation/<class>/ instead of downloading")
    parser.add_argument("--dataset", choices=["download", "folder", "synthetic"], help="data source (overrides the config)")
    parser.add_argument("--base-weights", help="backbone weights of the transfer models that name none of their own: "
                        "imagenet, none, or a local .weights.h5 file")
    parser.add_argument("--epochs", type=int, help="epochs per model")
    parser.add_argument("--models", help="comma-separated models to run, in study order: built-in ones or ones the config "
                        "declares under [models] (default: the config's study.models)")
    parser.add_argument("--seed", type=int, help="seed for the test split and the first training run")
    parser.add_argument("--seeds", type=int, help="train every model N times, with seeds seed, seed+1, ... (default 1)")
    parser.add_argument("--deterministic", action="store_true", default=None,
                        help="TensorFlow op determinism: the same machine gives identical histories (slower)")
    parser.add_argument("--mixed-precision", choices=["auto", "none", "bf16", "fp16"],
                        help="auto (default): bfloat16 for the three small CNNs on CPUs with AVX-512 BF16/AMX, else float32")
    parser.add_argument("--jit-compile", action="store_true", default=None, help="compile train steps with XLA")
    parser.add_argument("--out", help="output folder for runs (default: artifacts)")
    parser.add_argument("--run-name", help="name of the run folder inside --out")
    parser.add_argument("--force", action="store_true", help="retrain every model even if finished")
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's own start-up lines (hidden by default)")
    parser.add_argument("--tensorboard", action="store_true", default=None,
                        help="also write TensorBoard event files per cell, in <run>/tensorboard/<model>/seed-<seed>/ "
                        '(needs pip install -e ".[tensorboard]")')
    parser.add_argument("--mlflow", nargs="?", const="", metavar="URI",
                        help="also log every cell as an MLflow run, to URI (default: $MLFLOW_TRACKING_URI, else "
                        'sqlite:///<out>/mlflow.db; needs pip install -e ".[mlflow]")')
    parser.add_argument("--cache-dir", help="folder for caches (data.cache_dir): decoded images in DIR/decoded/, the downloaded "
                        "archive in DIR/datasets/ (default: ~/.cache/report-builder/decoded/ and ~/.keras/datasets/)")
    scale = parser.add_argument_group("scale out (docs/guide/scale-out.md)")
    scale.add_argument("--workers", type=int, metavar="N",
                       help="train cells in N worker processes on this machine (spawned; cores/N TensorFlow threads and, "
                       "where there are several GPUs, one GPU each); with --scheduler local: the cluster's size (default 1; local: 2)")
    scale.add_argument("--task-index", type=int, metavar="I",
                       help="run task I's share of the cells (0-based; default: $SLURM_ARRAY_TASK_ID - $SLURM_ARRAY_TASK_MIN, "
                       "or $JOB_COMPLETION_INDEX)")
    scale.add_argument("--task-count", type=int, metavar="K",
                       help="how many tasks share the study (default: $SLURM_ARRAY_TASK_COUNT; a Kubernetes Indexed Job "
                       "passes its completions); the last task to finish chooses and tests the model")
    scale.add_argument("--scheduler", metavar="ADDRESS",
                       help="run the cells as Dask tasks: 'local' starts a LocalCluster, tcp://HOST:8786 uses a running "
                       'scheduler (needs pip install -e ".[dask]")')
    scale.add_argument("--strategy", choices=["none", "mirrored"],
                       help="mirrored: tf.distribute.MirroredStrategy over this process's GPUs for every cell (default none)")
    scale.add_argument("--retries", type=int, metavar="N",
                       help="with --workers or --scheduler: run a cell whose worker died (or raised) up to N more times "
                       "before reporting it lost (default 1)")


def _add_render_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--artifacts", type=Path, help="run folder to render (default: the run the config writes)")
    parser.add_argument("--docs", type=Path, default=PROJECT_ROOT / "docs", help="docs folder to write (default: docs/)")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m report_builder", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train the study's models and write artifacts")
    _add_train_options(train)
    render = commands.add_parser("render", help="render docs/ from a run's artifacts (no training)")
    render.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="config whose run to render by default")
    _add_render_options(render)
    build = commands.add_parser("build", help="mkdocs build --strict into site/")
    build.add_argument("--docs", type=Path, default=PROJECT_ROOT / "docs", help="rendered docs folder to build (default: docs/)")
    build.add_argument("--site-dir", type=Path, help="output folder (default: site/)")
    serve = commands.add_parser("serve", help="preview the rendered docs in a browser (mkdocs serve, with the study's navigation)")
    serve.add_argument("--docs", type=Path, default=PROJECT_ROOT / "docs", help="rendered docs folder to serve (default: docs/)")
    serve.add_argument("--dev-addr", default="127.0.0.1:8000", metavar="HOST:PORT", help="address to serve on (default 127.0.0.1:8000)")
    everything = commands.add_parser("all", help="train, render and build")
    _add_train_options(everything)
    _add_render_options(everything)
    everything.add_argument("--site-dir", type=Path, help="output folder (default: site/)")
    cache = commands.add_parser("cache", help="list the decoded-image caches with their sizes, or remove them")
    cache.add_argument("--cache-dir", help="the caches' folder, as train's --cache-dir (default: data.cache_dir of --config, "
                       "else $XDG_CACHE_HOME/report-builder or ~/.cache/report-builder)")
    cache.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="config whose data.cache_dir to use by default")
    cache.add_argument("--remove", nargs="+", metavar="NAME",
                       help="remove these caches (a unique start of a name is enough; 'all' removes every one)")
    cache.add_argument("--verify", nargs="*", metavar="NAME",
                       help="read every byte of these caches (default: all) against their checksums and print one line "
                       "each: OK or damaged (exit status 2 if any is damaged)")
    return parser.parse_args(argv)


def config_overrides(arguments: argparse.Namespace) -> dict[str, object]:
    overrides: dict[str, object] = {}
    if getattr(arguments, "data_dir", None):
        overrides["data.source"] = "folder"
        overrides["data.data_dir"] = arguments.data_dir
    if getattr(arguments, "dataset", None):
        overrides["data.source"] = arguments.dataset
    simple = {"base_weights": "training.base_weights", "epochs": "training.epochs", "seed": "study.seed", "seeds": "study.seeds",
              "deterministic": "training.deterministic",
              "mixed_precision": "training.mixed_precision", "jit_compile": "training.jit_compile",
              "out": "study.out_dir", "run_name": "study.run_name", "cache_dir": "data.cache_dir",
              "tensorboard": "training.tensorboard"}
    for attribute, key in simple.items():
        value = getattr(arguments, attribute, None)
        if value is not None:
            overrides[key] = value
    if getattr(arguments, "mlflow", None) is not None:  # --mlflow, with or without a URI
        overrides["training.mlflow"] = True
        if arguments.mlflow:
            overrides["training.mlflow_uri"] = arguments.mlflow
    if getattr(arguments, "models", None):
        overrides["study.models"] = [name.strip() for name in arguments.models.split(",") if name.strip()]
    return overrides


def command_train(arguments: argparse.Namespace) -> Path:
    from experiments.config import load_config

    config = load_config(arguments.config, config_overrides(arguments))
    _OUTPUT["what"] = f"into the run folder {config.run_dir}"
    from experiments.scale import options_from_arguments

    options = options_from_arguments(arguments.workers, arguments.scheduler, arguments.task_index, arguments.task_count,
                                     arguments.strategy, arguments.retries, verbose=arguments.verbose)
    if options.scaled:  # the cells train in worker processes; this one imports no TensorFlow
        from experiments.scale import run_scaled

        run = run_scaled(config, arguments.force, options)
        print(f"Artifacts written to {run.root}")
        return run.root
    if not arguments.verbose:
        from experiments.runtime import import_tensorflow_quietly

        import_tensorflow_quietly()
    from experiments.scale import announce_task
    from experiments.study import run_study

    if options.task is None and options.strategy == "none":
        run = run_study(config, force=arguments.force)
    else:
        task = options.task
        run = run_study(config, force=arguments.force, share=announce_task(config, task) if task else None,
                        strategy=options.strategy, execution=options.describe(), parallel=task.count if task else 1)
    print(f"Artifacts written to {run.root}")
    return run.root


def default_run_dir(config_path: Path) -> Path:
    from experiments.config import load_config

    return load_config(config_path).run_dir


def command_render(arguments: argparse.Namespace, run_dir: Path | None = None) -> None:
    from report_builder.render import render_report

    artifacts = arguments.artifacts or run_dir or default_run_dir(arguments.config)
    _OUTPUT["what"] = f"into the docs folder {arguments.docs}"
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


def command_build(arguments: argparse.Namespace) -> None:
    from report_builder.site import build_site

    _OUTPUT["what"] = f"into the site folder {arguments.site_dir or PROJECT_ROOT / 'site'}"
    site = build_site(PROJECT_ROOT, strict=True, site_dir=arguments.site_dir, docs_dir=arguments.docs)
    print(f"Site built in {site}; preview it with `python -m report_builder serve`")


def command_serve(arguments: argparse.Namespace) -> None:
    """`mkdocs serve` of the rendered docs, with the study's title and model pages in the navigation."""
    from mkdocs.commands.serve import serve
    from mkdocs.exceptions import MkDocsException

    from experiments.errors import UserError
    from report_builder.site import study_overrides

    config_file = PROJECT_ROOT / "mkdocs.yml"
    if not (arguments.docs / "index.md").is_file():
        raise UserError(f"no rendered report in {arguments.docs} (run `python -m report_builder render` first)")
    try:
        serve(config_file=str(config_file), dev_addr=arguments.dev_addr, docs_dir=str(arguments.docs.resolve()),
              **study_overrides(config_file, arguments.docs.resolve()))
    except MkDocsException as error:
        raise UserError(f"mkdocs serve failed for {config_file}: {error}") from None


def _size(byte_count: int) -> str:
    from experiments.cache import format_size  # one helper for sizes in the unit that fits

    return format_size(byte_count)


def _verify_caches(root: Path, entries: list, others: list, names: list[str]) -> None:
    """`cache --verify [NAME ...]`: one line per cache, OK or damaged (UserError if any is damaged)."""
    import time

    from experiments.cache import NO_FULL_CHECKSUMS, verify_cache
    from experiments.errors import UserError

    chosen = list(entries) if not names or "all" in names else []
    for name in [] if not names or "all" in names else names:
        matches = [entry for entry in entries if entry.name.startswith(name)]
        if not matches:
            other = next((entry for entry in others if entry.name.startswith(name)), None)
            if other is not None:
                raise UserError(f"'{other.path}' is not a decoded-image cache (it lacks the index and marker a cache writes), "
                                "so it is not verified; `python -m report_builder cache` lists the caches.")
            raise UserError(f"There is no decoded-image cache '{name}' in {root}; `python -m report_builder cache` lists them.")
        if len(matches) > 1:
            raise UserError(f"'{name}' names {len(matches)} caches in {root}; give more of the name.")
        chosen.extend(entry for entry in matches if entry not in chosen)
    if not chosen:
        print(f"No decoded-image caches in {root}")
        return
    damaged = []
    for entry in chosen:
        if entry.state.startswith(("unfinished", "being removed")):
            print(f"  {entry.name}  not verified: {entry.state}")
            continue
        started = time.perf_counter()
        problem = verify_cache(entry.path)
        seconds = time.perf_counter() - started
        if problem is None:
            print(f"  {entry.name}  OK ({_size(entry.bytes)} read in {seconds:.1f} s)")
        elif problem == NO_FULL_CHECKSUMS:
            print(f"  {entry.name}  not verifiable: {problem}; the next train that uses it decodes the images again")
        else:
            damaged.append(entry)
            print(f"  {entry.name}  damaged: {problem}")
    if damaged:
        names_text = ", ".join(entry.name for entry in damaged[:3]) + (", ..." if len(damaged) > 3 else "")
        raise UserError(f"{len(damaged)} of {len(chosen)} decoded-image caches in {root} failed the check ({names_text}); "
                        "remove them with `python -m report_builder cache --remove NAME` (the next train decodes the "
                        "images again).")


def command_cache(arguments: argparse.Namespace) -> None:
    """List the decoded-image caches (name, disk size, images, image size, data folder, date), or remove some."""
    from experiments.cache import cache_root, list_caches, remove_cache
    from experiments.errors import UserError

    if arguments.cache_dir is not None:
        cache_dir = arguments.cache_dir
    else:
        from experiments.config import load_config

        cache_dir = load_config(arguments.config).data.cache_dir
    root = cache_root(cache_dir)
    everything = list_caches(root)
    entries = [entry for entry in everything if entry.is_cache]
    others = [entry for entry in everything if not entry.is_cache]
    if arguments.verify is not None:
        if arguments.remove:
            raise UserError("Give either --remove or --verify, not both.")
        _verify_caches(root, entries, others, arguments.verify)
        return
    if arguments.remove:
        chosen = []
        for name in arguments.remove:
            matches = entries if name == "all" else [entry for entry in entries if entry.name.startswith(name)]
            if not matches and name != "all":
                other = next((entry for entry in others if entry.name.startswith(name)), None)
                if other is not None:
                    raise UserError(f"'{other.path}' is not a decoded-image cache (it lacks the index and marker a cache writes), "
                                    "so it is left alone; `python -m report_builder cache` lists the caches.")
                raise UserError(f"There is no decoded-image cache '{name}' in {root}; `python -m report_builder cache` lists them.")
            if len(matches) > 1 and name != "all":
                raise UserError(f"'{name}' names {len(matches)} caches in {root}; give more of the name.")
            chosen.extend(entry for entry in matches if entry not in chosen)
        for entry in chosen:
            removal = remove_cache(root, entry.name)
            if removal:
                print(f"Removed {entry.path} ({_size(entry.bytes)})")
            elif removal.busy:
                print(f"Not removed: {entry.path} is being built by another process right now")
            elif removal.strangers:
                print(f"Not removed: {entry.path} also holds files the cache did not write ({', '.join(removal.strangers[:3])}"
                      f"{', ...' if len(removal.strangers) > 3 else ''}); it is left alone")
            else:
                print(f"Not removed: {entry.path} is not a decoded-image cache; it is left alone")
        if not chosen:
            print(f"No decoded-image caches in {root}")
        for entry in others if "all" in arguments.remove else []:
            print(f"Left alone: {entry.path} (not a decoded-image cache)")
        return
    if not everything:
        print(f"No decoded-image caches in {root}")
        return
    print(f"Decoded-image caches in {root}:" if entries else f"No decoded-image caches in {root}; it holds:")
    for entry in everything:
        if entry.state == "ok":
            height, width = entry.image_size
            print(f"  {entry.name}  {_size(entry.bytes)}  {entry.images} images at {height}x{width}  "
                  f"from {entry.data_root}  ({entry.created_at})")
        else:
            print(f"  {entry.name}  {_size(entry.bytes)}  {entry.state}")
    if entries:
        print(f"{len(entries)} in all, {_size(sum(entry.bytes for entry in entries))}; "
              "remove with `python -m report_builder cache --remove NAME` (or `--remove all`)"
              + (f"; {len(others)} other folder(s) left alone" if others else ""))


INTERRUPTED_MESSAGES = {
    "train": "Interrupted. Finished epochs are saved; run the same command again to resume.",
    "render": "Interrupted. The docs folder holds the previous report or the new one, whole; nothing else changed.",
    "build": "Interrupted. The site folder holds the previous site or the new one, whole; nothing else changed.",
    "serve": "Stopped serving. Nothing was changed.",
    "cache": "Interrupted. A cache whose removal was cut short is listed as being removed; remove it again. Nothing else changed.",
}


STANDARD_OUTPUT = "standard output"
#: A closed standard output (`train | head -2`) ends the command quietly with this status: what a
#: shell reports for a program stopped by SIGPIPE (128 + 13), as `yes | head` gives.
CLOSED_OUTPUT_STATUS = 141


class _NamedOutput:
    """sys.stdout, whose write errors name it: an OSError from writing it gets filename
    "standard output", so a full disk there is told apart from one under a file the command writes."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except OSError as error:
            error.filename = error.filename or STANDARD_OUTPUT
            raise

    def flush(self):
        try:
            return self._stream.flush()
        except OSError as error:
            error.filename = error.filename or STANDARD_OUTPUT
            raise

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _discard_output(stream) -> None:
    """Point the standard output's descriptor at /dev/null, so that what is still buffered, flushed
    at exit, raises nothing more (the recipe of Python's signal documentation, "Note on SIGPIPE")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no descriptor (a test's captured output)
        pass


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (see the module's docstring). A closed standard
    output (`| head`) ends it quietly with status 141; a full disk, anywhere, with one sentence naming
    what was being written and status 2."""
    stdout = sys.stdout
    sys.stdout = _NamedOutput(stdout)
    try:
        status = _main(argv)
        sys.stdout.flush()  # whatever the outcome: a closed or full standard output shows here, not at exit
        return status
    except BrokenPipeError as error:
        if error.filename != STANDARD_OUTPUT:
            raise
        _discard_output(stdout)
        return CLOSED_OUTPUT_STATUS
    except OSError as error:
        from experiments.errors import disk_full_sentence, is_disk_full

        if not is_disk_full(error):
            raise
        if error.filename == STANDARD_OUTPUT:
            _discard_output(stdout)
        what = error.filename or _OUTPUT.get("what") or "the command's output"
        print(f"error: {disk_full_sentence(str(what), error)}", file=sys.stderr)
        return 2
    finally:
        sys.stdout = stdout


#: What the running command writes into (a folder), for a full-disk message that has no file name
_OUTPUT: dict[str, object] = {}


def _main(argv: list[str] | None = None) -> int:
    from experiments import interrupts

    interrupts.install_handlers()  # Ctrl-C and SIGTERM: a clean stop, exit 130 / 143
    if hasattr(sys.stdout, "reconfigure"):  # a folder name that is not valid UTF-8 still prints
        sys.stdout.reconfigure(errors="backslashreplace")
        sys.stderr.reconfigure(errors="backslashreplace")
    _OUTPUT.clear()
    phase = "train"
    try:
        arguments = parse_arguments(argv)
        phase = "train" if arguments.command in ("train", "all") else arguments.command
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter
        from experiments.runtime import prefer_onednn

        prefer_onednn()  # before TensorFlow is imported; TF_ENABLE_ONEDNN_OPTS=0 keeps it off
        from experiments.errors import StudyFailed, UserError

        try:
            if arguments.command == "train":
                command_train(arguments)
            elif arguments.command == "render":
                command_render(arguments)
            elif arguments.command == "build":
                command_build(arguments)
            elif arguments.command == "cache":
                command_cache(arguments)
            elif arguments.command == "serve":
                command_serve(arguments)
            else:
                run_dir = command_train(arguments)
                interrupts.raise_if_interrupted()
                phase = "render"
                command_render(arguments, run_dir=None if arguments.artifacts else run_dir)
                interrupts.raise_if_interrupted()
                phase = "build"
                command_build(arguments)
        except (UserError, StudyFailed) as error:  # one sentence; 2 for the user's to mend, 1 for failed runs
            print(f"error: {error}", file=sys.stderr)
            return error.exit_status
        interrupts.raise_if_interrupted()  # a stop whose exception something swallowed
    except KeyboardInterrupt as error:
        print("\n" + INTERRUPTED_MESSAGES[phase], file=sys.stderr)
        return interrupts.exit_status(error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
