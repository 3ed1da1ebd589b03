"""How much faster does a study finish with its cells on several worker processes?

Runs the same study once per worker count, each in a fresh run folder, as the user would:
`python -m report_builder train --workers N` (N = 1 trains in one process, as without the flag),
and reports for each its wall time and the CPU time of the whole process tree (user + system,
from the resource usage of the children: the `train` process and the workers it spawned and
waited for). CPU / wall is how many cores were busy on average. The last line is the ratio of
the one-worker wall time to that of the largest worker count.

    python benchmarks/study_scale.py                              # the smoke study, 2 seeds, workers 1 and 2
    python benchmarks/study_scale.py --workers 1,2,4              # where the machine has 4 cores or more
    python benchmarks/study_scale.py --data-dir ../shared/data/cats-dogs-cc0 --models baseline,transfer,finetune \\
        --epochs 2 --image-size 96                                # a small real-data study
    python benchmarks/study_scale.py --scheduler local            # the same, on a Dask LocalCluster

Folder data is decoded into a fresh decoded-image cache before the first timed run (timed apart,
not counted), so every timed run reads the same cache. The runs use the config's settings
otherwise (`--deterministic` off: the timing of one run does not depend on it being reproducible).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SMOKE_CONFIG = PROJECT_ROOT / "experiments" / "configs" / "smoke.toml"


def default_worker_counts() -> list[int]:
    cores = os.cpu_count() or 1
    counts, count = [1], 2
    while count <= max(2, cores):
        counts.append(count)
        count *= 2
    return counts


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", default=",".join(map(str, default_worker_counts())),
                        help="comma-separated worker counts to time (default: 1 and powers of two up to the cores, at least 2)")
    parser.add_argument("--config", type=Path, default=SMOKE_CONFIG, help="study config (default: the smoke preset)")
    parser.add_argument("--data-dir", help="a folder of images (train/<class>/, validation/<class>/) instead of the config's data")
    parser.add_argument("--models", help="comma-separated models (default: the config's)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per model (default 2)")
    parser.add_argument("--epochs", type=int, help="epochs per model (default: the config's)")
    parser.add_argument("--image-size", type=int, help="square image side for --data-dir runs (default: the config's)")
    parser.add_argument("--scheduler", choices=["pool", "local"], default="pool",
                        help="pool: --workers N (spawned processes); local: --scheduler local (a Dask LocalCluster)")
    parser.add_argument("--keep", type=Path, help="keep the run folders and logs here (default: a temporary folder, removed)")
    arguments = parser.parse_args(argv)
    try:
        arguments.worker_counts = [int(item) for item in arguments.workers.split(",") if item.strip()]
    except ValueError:
        parser.error(f"--workers: not a list of whole numbers: {arguments.workers!r}")
    if not arguments.worker_counts or min(arguments.worker_counts) < 1:
        parser.error("--workers: every count must be 1 or more")
    if arguments.seeds < 1:
        parser.error("--seeds must be 1 or more")
    return arguments


def train_arguments(arguments: argparse.Namespace, out: Path, cache: Path) -> list[str]:
    command = ["train", "--config", str(arguments.config), "--out", str(out), "--seeds", str(arguments.seeds),
               "--cache-dir", str(cache)]
    if arguments.data_dir:
        command += ["--data-dir", arguments.data_dir]
    if arguments.models:
        command += ["--models", arguments.models]
    if arguments.epochs:
        command += ["--epochs", str(arguments.epochs)]
    return command


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONPATH"] = str(PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(command: list[str], log: Path) -> tuple[float, float, int]:
    """Wall and CPU seconds of `command` and its waited-for descendants, and its exit status."""
    cpu_before, started = children_cpu(), time.perf_counter()
    with open(log, "w") as handle:
        status = subprocess.run(command, cwd=PROJECT_ROOT, env=environment(), stdout=handle, stderr=subprocess.STDOUT).returncode
    return time.perf_counter() - started, children_cpu() - cpu_before, status


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    keep = arguments.keep
    with tempfile.TemporaryDirectory(prefix="study-scale-") as temporary:
        root = keep or Path(temporary)
        root.mkdir(parents=True, exist_ok=True)
        cache = root / "cache"
        config_path = arguments.config
        if arguments.image_size:  # a copy of the config with the image size changed
            copy = root / "config.toml"
            copy.write_text(config_path.read_text(encoding="utf-8"), encoding="utf-8")
            arguments.config = _with_image_size(copy, arguments.image_size)
        print(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cores; "
              f"config {arguments.config.name}, seeds {arguments.seeds}"
              + (f", data {arguments.data_dir}" if arguments.data_dir else "") + (f", models {arguments.models}" if arguments.models else "")
              + (f", {arguments.epochs} epoch(s)" if arguments.epochs else "") + f"; {arguments.scheduler}", flush=True)
        if arguments.data_dir:
            warm = [sys.executable, "-c", "import sys; from report_builder.cli import main; sys.exit(main(sys.argv[1:]))",
                    *train_arguments(arguments, root / "warm-up", cache), "--epochs", "1", "--models", "baseline", "--seeds", "1"]
            seconds, _, status = timed(warm, root / "warm-up.log")
            print(f"decoded-image cache built (and one baseline epoch trained) in {seconds:.1f} s, not counted", flush=True)
            if status:
                print(f"the warm-up failed (exit {status}); see {root / 'warm-up.log'}", file=sys.stderr)
                return 1
        rows = []
        for count in arguments.worker_counts:
            extra = ["--workers", str(count)] if count > 1 or arguments.scheduler == "local" else []
            if arguments.scheduler == "local":
                extra += ["--scheduler", "local"]
            command = [sys.executable, "-m", "report_builder", *train_arguments(arguments, root / f"workers-{count}", cache), *extra]
            wall, cpu, status = timed(command, root / f"workers-{count}.log")
            if status:
                print(f"workers {count}: train exited {status}; see {root / f'workers-{count}.log'}", file=sys.stderr)
                return 1
            rows.append((count, wall, cpu))
            print(f"workers {count}: wall {wall:8.1f} s   CPU {cpu:8.1f} s   cores busy {cpu / wall:4.2f}", flush=True)
        base = rows[0][1]
        print("\nworkers  wall s   CPU s  cores busy  speed-up")
        for count, wall, cpu in rows:
            print(f"{count:7d} {wall:7.1f} {cpu:7.1f} {cpu / wall:11.2f} {base / wall:9.2f}")
        last_count, last_wall, _ = rows[-1]
        print(f"ratio: wall(workers {rows[0][0]}) / wall(workers {last_count}) = {base / last_wall:.2f}")
        if keep:
            print(f"run folders and logs kept in {root}")
    return 0


def _with_image_size(path: Path, side: int) -> Path:
    """The config at `path` with data.image_size = [side, side] (a line appended under [data] would
    be a duplicate key: rewrite the key where it is, or add it to the [data] table)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    section, replaced, output = "", False, []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            if section == "data" and not replaced:
                output.append(f"image_size = [{side}, {side}]")
                replaced = True
            section = stripped.strip("[]").strip()
        if section == "data" and stripped.startswith("image_size"):
            line, replaced = f"image_size = [{side}, {side}]", True
        output.append(line)
    if not replaced:
        output += ["[data]", f"image_size = [{side}, {side}]"] if section != "data" else [f"image_size = [{side}, {side}]"]
    path.write_text("\n".join(output) + "\n", encoding="utf-8")
    return path


if __name__ == "__main__":
    sys.exit(main())
