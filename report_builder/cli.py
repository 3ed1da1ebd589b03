"""The command line: `python -m report_builder train | render | build | all | cache`.

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

from experiments import interrupts
from experiments.config import CONFIG_DIR
from experiments.errors import StudyFailed, UserError, disk_full_sentence, is_disk_full
from experiments.runtime import prefer_onednn
from report_builder.commands import OUTPUT

DEFAULT_CONFIG = CONFIG_DIR / "default.toml"


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
    parser.add_argument("--docs", type=Path, default=Path("docs"), help="docs folder to write (default: docs/)")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m report_builder", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train the study's models and write artifacts")
    _add_train_options(train)
    render = commands.add_parser("render", help="render docs/ from a run's artifacts (no training)")
    render.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="config whose run to render by default")
    _add_render_options(render)
    build = commands.add_parser("build", help="mkdocs build --strict into site/")
    build.add_argument("--docs", type=Path, default=Path("docs"), help="rendered docs folder to build (default: docs/)")
    build.add_argument("--site-dir", type=Path, help="output folder (default: site/)")
    serve = commands.add_parser("serve", help="preview the rendered docs in a browser (mkdocs serve, with the study's navigation)")
    serve.add_argument("--docs", type=Path, default=Path("docs"), help="rendered docs folder to serve (default: docs/)")
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


# Each command's module is imported when that command runs: the runner (numpy, matplotlib) and the
# report (scipy, jinja2) take seconds to import, and `--help` or `cache` should answer at once.


def command_train(arguments: argparse.Namespace) -> Path:
    from report_builder.commands import train  # the runner: only for train and all

    return train.train(arguments)


def command_render(arguments: argparse.Namespace, run_dir: Path | None = None) -> None:
    from report_builder.commands import render  # the report: only for render and all

    render.render(arguments, run_dir=run_dir)


def command_build(arguments: argparse.Namespace) -> None:
    from report_builder.commands import site  # MkDocs: only for build and all

    site.build(arguments)


def command_serve(arguments: argparse.Namespace) -> None:
    from report_builder.commands import site  # MkDocs: only for serve

    site.serve(arguments)


def command_cache(arguments: argparse.Namespace) -> None:
    from report_builder.commands import cache  # the cache's module: only for cache

    cache.cache(arguments)


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
        if not is_disk_full(error):
            raise
        if error.filename == STANDARD_OUTPUT:
            _discard_output(stdout)
        what = error.filename or OUTPUT.get("what") or "the command's output"
        print(f"error: {disk_full_sentence(str(what), error)}", file=sys.stderr)
        return 2
    finally:
        sys.stdout = stdout


def _main(argv: list[str] | None = None) -> int:
    interrupts.install_handlers()  # Ctrl-C and SIGTERM: a clean stop, exit 130 / 143
    if hasattr(sys.stdout, "reconfigure"):  # a folder name that is not valid UTF-8 still prints
        sys.stdout.reconfigure(errors="backslashreplace")
        sys.stderr.reconfigure(errors="backslashreplace")
    OUTPUT.clear()
    phase = "train"
    try:
        arguments = parse_arguments(argv)
        phase = "train" if arguments.command in ("train", "all") else arguments.command
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter
        prefer_onednn()  # before TensorFlow is imported; TF_ENABLE_ONEDNN_OPTS=0 keeps it off
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


