"""Scaling a study out (experiments/scale/): worker processes, job-array tasks, Dask, MirroredStrategy.

The first tests are pure functions (no TensorFlow). The others train tiny studies in subprocesses:
the same histories with --deterministic whether the cells run in one process, in a spawned pool of
two workers or on a Dask LocalCluster of two; two job-array tasks one after the other, then render;
a worker killed in the middle of a cell; a cell on two logical CPU devices with MirroredStrategy.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, TINY_BACKBONE, cli_environment, run_cli_command

TINY_CONFIG = f"""
[study]
run_name = "tiny"
models = ["baseline", "transfer", "finetune"]
seed = 7
seeds = 1
[data]
source = "synthetic"
image_size = [32, 32]
batch_size = 16
synthetic_train_per_class = 32
synthetic_validation_per_class = 10
[training]
epochs = 2
finetune_epochs = 1
base_weights = "none"
mixed_precision = "none"
verbose = "silent"
finetune_from_layer = 4
# The transfer -> finetune chain stands on the tests' own backbone (tests/tiny_backbone.py: 8 layers,
# where the built-in model's MobileNetV2 has 154): the same recipes and the same frozen base and
# unfrozen top, at a small CNN's cost (the smoke study keeps MobileNetV2)
[models.transfer]
recipe = "transfer"
backbone = "{TINY_BACKBONE}"
augment = true
"""
HAS_DASK = importlib.util.find_spec("distributed") is not None
# `python -c PARENT train ...`: the command line, then whether this (the parent) process imported TensorFlow
PARENT = ("import sys; from report_builder.cli import main; code = main(sys.argv[1:]); "
          "print('tensorflow in the parent:', 'tensorflow' in sys.modules, file=sys.stderr); sys.exit(code)")


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def tiny_config(tmp_path: Path, **changes: str) -> Path:
    text = TINY_CONFIG
    for old, new in changes.items():
        text = text.replace(old, new)
    path = tmp_path / "tiny.toml"
    path.write_text(text, encoding="utf-8")
    return path


def train_command(config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-c", PARENT, "train", "--config", str(config), "--out", str(out), *extra]


def run(command: list[str], environment: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=PROJECT_ROOT, env=environment or cli_environment(), capture_output=True, text=True, timeout=timeout)


def histories(run_dir: Path) -> dict[str, list[dict]]:
    """Every cell's epochs without their timings."""
    found = {}
    for path in sorted(run_dir.glob("models/*/seed-*/history.json")):
        found[f"{path.parent.parent.name}/{path.parent.name}"] = [
            {key: value for key, value in record.items() if key != "seconds"} for record in load(path)["epochs"]]
    return found


# --------------------------------------------------------------------------- no TensorFlow


def config_with(models: list[str], seeds: int = 1, epochs: int = 2, finetune_epochs: int = 1):
    from experiments.config import StudyConfig

    config = StudyConfig()
    config.study.models, config.study.seeds = models, seeds
    config.training.epochs, config.training.finetune_epochs = epochs, finetune_epochs
    return config


def test_shares_keep_chains_together_cover_every_cell_once_and_balance_epochs():
    from experiments.scale.cells import assign_shares, chain_groups
    from experiments.study.decisions import study_cells

    config = config_with(["baseline", "augmented", "preprocessed", "transfer", "finetune", "transfer_extended"], seeds=3,
                         epochs=20, finetune_epochs=10)
    groups = chain_groups(config)
    assert ["transfer", "finetune", "transfer_extended"] in [[name for name, _ in group] for group in groups]
    assert all(len({seed for _, seed in group}) == 1 for group in groups), "a chain has one seed"
    for count in (1, 2, 3, 4, 7, 30):
        shares = assign_shares(config, count)
        assert len(shares) == count
        assert sorted(cell for share in shares for cell in share) == sorted(study_cells(config))
        for group in groups:  # a chain is never split between tasks
            assert sum(1 for share in shares if set(group) <= set(share)) == 1
        assert shares == assign_shares(config, count), "every task computes the same split"
        for share in shares:
            assert share == [cell for cell in study_cells(config) if cell in share], "a share keeps study order"
    two = assign_shares(config, 2)
    loads = [sum(20 if name not in ("finetune", "transfer_extended") else 10 for name, _ in share) for share in two]
    assert loads == [160, 140], loads  # 3 chains of 40 epochs and 9 cells of 20: as even as whole chains allow


def test_the_critical_path_puts_chain_sources_first():
    from experiments.scale.cells import critical_path
    from experiments.study.decisions import study_cells

    config = config_with(["baseline", "transfer", "finetune", "transfer_extended"], epochs=2, finetune_epochs=3)
    path = critical_path(config, study_cells(config))
    assert path[("transfer", 1337)] == 5 and path[("baseline", 1337)] == 2 and path[("finetune", 1337)] == 3


@pytest.mark.parametrize(("index", "count", "environ", "expected"), [
    (None, None, {}, None),
    (1, 3, {}, (1, 3, "--task-index")),
    (None, None, {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "4", "SLURM_ARRAY_TASK_COUNT": "3"}, (1, 3, "SLURM_ARRAY_TASK_ID")),
    (None, None, {"SLURM_ARRAY_TASK_ID": "8", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_STEP": "4",
                  "SLURM_ARRAY_TASK_COUNT": "3"}, (2, 3, "SLURM_ARRAY_TASK_ID")),
    (None, 2, {"JOB_COMPLETION_INDEX": "1"}, (1, 2, "JOB_COMPLETION_INDEX")),
    (0, None, {"SLURM_ARRAY_TASK_COUNT": "4"}, (0, 4, "--task-index")),
    (None, 1, {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}, None),  # --task-count 1: the whole study
    (0, 1, {}, None),
])
def test_the_task_comes_from_the_flags_or_the_job_array(index, count, environ, expected):
    from experiments.scale.cells import resolve_task

    task = resolve_task(index, count, environ)
    assert (None if task is None else (task.index, task.count, task.origin)) == expected


@pytest.mark.parametrize(("index", "count", "environ", "message"), [
    (2, 2, {}, "task index 2 .* is not between 0 and 1"),
    (0, None, {}, "--task-index needs --task-count"),
    (None, 3, {}, "--task-count needs --task-index"),
    (None, None, {"JOB_COMPLETION_INDEX": "0"}, "pass --task-count K, the Job's completions"),
    (None, None, {"SLURM_ARRAY_TASK_ID": "3"}, "SLURM_ARRAY_TASK_COUNT is not"),
    (None, None, {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_STEP": "2", "SLURM_ARRAY_TASK_COUNT": "2"}, "not on the array's grid"),
    (None, None, {"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "2"}, "not a whole number"),
    (None, 0, {}, "--task-count must be 1 or more"),
])
def test_a_task_that_cannot_be_placed_is_refused_in_one_sentence(index, count, environ, message):
    from experiments.errors import UserError
    from experiments.scale.cells import resolve_task

    with pytest.raises(UserError, match=message):
        resolve_task(index, count, environ)


def test_each_worker_gets_its_share_of_cores_and_its_own_gpu():
    from experiments.scale.environment import worker_environment

    cpu = [worker_environment(slot, 2, [], cores=16, environ={}) for slot in range(2)]
    assert cpu[0] == {"REPORT_BUILDER_WORKER": "0", "TF_NUM_INTRAOP_THREADS": "8", "TF_NUM_INTEROP_THREADS": "2"}
    assert worker_environment(0, 4, [], cores=2, environ={})["TF_NUM_INTRAOP_THREADS"] == "1", "at least one thread"
    kept = worker_environment(0, 2, [], cores=16, environ={"TF_NUM_INTRAOP_THREADS": "3"})
    assert "TF_NUM_INTRAOP_THREADS" not in kept, "a thread count the user exported is theirs"
    gpus = [worker_environment(slot, 2, ["0", "1"], cores=16, environ={})["CUDA_VISIBLE_DEVICES"] for slot in range(2)]
    assert gpus == ["0", "1"]
    shared = [worker_environment(slot, 3, ["4", "6"], cores=16, environ={}) for slot in range(3)]
    assert [item["CUDA_VISIBLE_DEVICES"] for item in shared] == ["4", "6", "4"]
    assert all(item["TF_FORCE_GPU_ALLOW_GROWTH"] == "true" for item in shared), "workers sharing a GPU grow into it"
    mirrored = [worker_environment(slot, 2, ["0", "1", "2", "3", "4"], "mirrored", cores=16, environ={}) for slot in range(2)]
    assert [item["CUDA_VISIBLE_DEVICES"] for item in mirrored] == ["0,1,2", "3,4"]
    one_gpu = worker_environment(1, 2, ["0"], cores=16, environ={})
    assert "CUDA_VISIBLE_DEVICES" not in one_gpu and one_gpu["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert "CUDA_VISIBLE_DEVICES" not in worker_environment(0, 1, ["0", "1"], cores=16, environ={}), "one worker keeps every GPU"


def test_gpus_are_found_without_tensorflow():
    from experiments.scale.environment import visible_gpus

    def no_call(*arguments, **options):
        raise AssertionError("CUDA_VISIBLE_DEVICES is set: nvidia-smi is not asked")

    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}, no_call) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, no_call) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "1,-1,2"}, no_call) == ["1"]

    class Listing:
        returncode = 0
        stdout = ("GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-aaaa)\nGPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-bbbb)\n"
                  "  MIG 3g.40gb     Device  0: (UUID: MIG-cccc)\n  MIG 3g.40gb     Device  1: (UUID: MIG-dddd)\n")

    assert visible_gpus({}, lambda *arguments, **options: Listing()) == ["0", "MIG-cccc", "MIG-dddd"]

    def missing(*arguments, **options):
        raise FileNotFoundError("nvidia-smi")

    assert visible_gpus({}, missing) == []


@pytest.mark.skipif(not HAS_DASK, reason='Dask is not installed (pip install -e ".[dask]")')
def test_dask_gets_the_longest_chain_first_and_each_source_before_the_cells_that_continue_it(monkeypatch):
    """The scheduler hands a task to an idle worker as it is submitted: the order of submission,
    not only the priorities, decides what starts first."""
    from datetime import UTC, datetime

    from experiments.scale import dask_cluster
    from experiments.scale.jobs import WorkerSpec
    from experiments.study.decisions import study_cells

    class Future:
        status = "finished"

        def __init__(self, key: str, after: tuple):
            self.key, self.after = key, after

        def result(self) -> dict:
            return {}

    class Client:
        def __init__(self):
            self.submitted: list[tuple[str, int, tuple]] = []

        def submit(self, function, job, spec, ranks, model, seed, label, *after, key, **options):
            self.submitted.append((model, seed, after, options["priority"]))
            return Future(key, after)

    config = config_with(["baseline", "augmented", "transfer", "finetune", "transfer_extended"], epochs=2, finetune_epochs=3)
    backend = object.__new__(dask_cluster.DaskBackend)
    backend.client, backend.ranks, backend.retries = Client(), {}, 0
    monkeypatch.setattr(dask_cluster, "as_completed", lambda futures: futures)
    cells = study_cells(config)
    backend.run_cells(WorkerSpec(config, False, datetime.now(UTC)), cells, cells, lambda: None)
    order = [(model, seed) for model, seed, _, _ in backend.client.submitted]
    assert order[0] == ("transfer", 1337), order  # 2 epochs and a 3-epoch cell after it: the longest path
    assert sorted(order) == sorted(cells)
    for model, seed, after, _ in backend.client.submitted:  # a continuing cell waits on its source's task
        if model in ("finetune", "transfer_extended"):
            assert [future.key for future in after] == ["cell-transfer-seed1337-" + after[0].key.rsplit("-", 1)[1]]
            assert order.index(("transfer", 1337)) < order.index((model, seed))
    priorities = [priority for *_, priority in backend.client.submitted]
    assert priorities == sorted(priorities, reverse=True)


def test_scale_options_are_checked(monkeypatch):
    from experiments.errors import UserError
    from experiments.scale.run import options_from_arguments

    options = options_from_arguments(None, None, None, None, None, None, environ={})
    assert not options.scaled and options.workers == 1 and options.strategy == "none" and options.retries == 1
    assert options_from_arguments(3, None, None, None, "mirrored", 0, environ={}).scaled
    with pytest.raises(UserError, match="--workers must be 1 or more"):
        options_from_arguments(0, None, None, None, None, None, environ={})
    with pytest.raises(UserError, match="--retries must be 0 or more"):
        options_from_arguments(2, None, None, None, None, -1, environ={})
    with pytest.raises(UserError, match="'local' or a Dask scheduler address"):
        options_from_arguments(None, "somewhere", None, None, None, None, environ={})
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "distributed" else real_find_spec(name, *rest))
    with pytest.raises(UserError, match=r'pip install -e "\.\[dask\]"'):
        options_from_arguments(None, "local", None, None, None, None, environ={"CUDA_VISIBLE_DEVICES": ""})


def test_the_progress_line_counts_every_process_cells(tmp_path):
    """Done and running are read from the run folder: states, and the owner files of live holders."""
    from datetime import UTC, datetime, timedelta

    from experiments.artifacts import RunFolder, RunState, write_json
    from experiments.config import config_hash
    from experiments.study.census import CensusProgress

    config = config_with(["baseline", "transfer", "finetune"], seeds=2)
    run = RunFolder(tmp_path / "run")
    since = datetime.now(UTC) - timedelta(minutes=5)
    finished = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    for model, seed, seconds in (("baseline", 1337, 30.0), ("baseline", 1338, 50.0)):
        RunState(model, seed, config_hash(config, model), "data", "complete", 1, wall_seconds=seconds,
                 finished_at=finished).write(run.seed_run(model, seed).state)
    RunState("transfer", 1337, "another config", "data", "complete", 1).write(run.seed_run("transfer", 1337).state)
    write_json(run.seed_run("transfer", 1337).owner_file, {"pid": os.getpid(), "host": os.uname().nodename, "task": "training"})
    write_json(run.seed_run("transfer", 1338).owner_file, {"pid": 2**22 + 12345, "host": os.uname().nodename, "task": "training"})

    class Lines:
        shown: list[str] = []

        def show(self, text: str) -> None:
            self.shown.append(text)

    lines = Lines()
    progress = CensusProgress(run, config, "data", since, time.perf_counter() - 65, parallel=2, line=lines)
    text = progress.cell_done()
    assert lines.shown == [text]
    # 4 cells not done, each estimated at the 40 s mean, shared by two processes
    assert text == "Study: 2 of 6 cells done, 1 running, 3 left, 1m 05s elapsed, about 1m 20s left", text


# --------------------------------------------------------------------------- TensorFlow, in subprocesses


#: The equivalence study: a model from the study's own builder file (issue 29: it must load in every
#: worker) and the transfer -> finetune chain (transfer augments: its random flips and rotations must
#: repeat too).
EQUIVALENCE_MODELS = ["mine", "transfer", "finetune"]
BUILDER = '''
import keras
from keras import layers


def build(input_shape, num_classes, width=4):
    """A tiny network of the study's own: one convolution, global average pooling, a dense layer."""
    inputs = keras.Input(shape=input_shape)
    x = layers.Conv2D(width, 3, activation="relu")(layers.Rescaling(1 / 255)(inputs))
    return keras.Model(inputs, layers.Dense(num_classes)(layers.GlobalAveragePooling2D()(x)))
'''


@pytest.fixture(scope="module")
def equivalence_study(tmp_path_factory):
    """The equivalence study's config (with its builder file beside it) and its run trained in one
    process, deterministic."""
    folder = tmp_path_factory.mktemp("equivalence")
    (folder / "models.py").write_text(BUILDER, encoding="utf-8")
    config = tiny_config(folder, **{'models = ["baseline", "transfer", "finetune"]': f"models = {json.dumps(EQUIVALENCE_MODELS)}"})
    config.write_text(config.read_text(encoding="utf-8")
                      + '[models.mine]\nrecipe = "keras"\nbuilder = "models.py:build"\nparams = { width = 4 }\n', encoding="utf-8")
    out = folder / "sequential"
    result = run(run_cli_command("train", "--config", str(config), "--out", str(out), "--deterministic"))
    assert result.returncode == 0, result.stderr
    return config, out / "tiny"


@pytest.mark.parametrize(("how", "models"), [
    # each Dask task runs in a process of its own (a TensorFlow start each): the builder model and the
    # frozen backbone (whose last bits differed when TensorFlow ran in a Dask worker's thread) are the
    # cases; the order of a chain's tasks is test_dask_gets_the_longest_chain_first_...'s
    pytest.param(["--scheduler", "local", "--workers", "2"], ["mine", "transfer"], id="dask-local-cluster",
                 marks=pytest.mark.skipif(not HAS_DASK, reason='Dask is not installed (pip install -e ".[dask]")')),
    pytest.param(["--workers", "2"], EQUIVALENCE_MODELS, id="spawned-pool"),
])
@pytest.mark.training
def test_two_workers_give_the_histories_of_one_process(equivalence_study, tmp_path, how, models):
    config, sequential = equivalence_study
    if models != EQUIVALENCE_MODELS:  # a part of the study: its cells train as they did in the whole one
        config = tmp_path / config.name
        config.write_text(equivalence_study[0].read_text(encoding="utf-8").replace(
            f"models = {json.dumps(EQUIVALENCE_MODELS)}", f"models = {json.dumps(models)}"), encoding="utf-8")
        (tmp_path / "models.py").write_text(BUILDER, encoding="utf-8")
    out = tmp_path / "scaled"
    result = run(train_command(config, out, "--deterministic", *how))
    assert result.returncode == 0, result.stderr
    assert "tensorflow in the parent: False" in result.stderr, "the parent process must not start TensorFlow"
    run_dir = out / "tiny"
    # --deterministic: other processes (the workers), the same seeds -> the same numbers, epoch by epoch
    expected = {cell: epochs for cell, epochs in histories(sequential).items() if cell.split("/")[0] in models}
    assert histories(run_dir) == expected and len(expected) == len(models)
    assert load(run_dir / "manifest.json")["config"]["training"]["deterministic"] is True
    assert "worker 0)" in result.stderr and "worker 1)" in result.stderr, result.stderr  # both workers trained cells
    assert "1 TensorFlow thread(s) each" in result.stderr  # two cores, two workers
    manifest = load(run_dir / "manifest.json")
    assert manifest["status"] == "complete" and manifest["execution"]["workers"] == 2
    assert manifest["models"]["mine"]["status"] == "complete"  # the builder model trained in a worker
    assert manifest["hardware"]["cpu_kernels"] == load(sequential / "manifest.json")["hardware"]["cpu_kernels"]
    metrics, whole = load(run_dir / "metrics.json"), load(sequential / "metrics.json")
    assert metrics["selection"]["candidates"] == {model: whole["selection"]["candidates"][model] for model in models}
    if models == EQUIVALENCE_MODELS:
        assert (metrics["chosen_model"], metrics["chosen_seed"]) == (whole["chosen_model"], whole["chosen_seed"])
    for name in ("data_grid", "comparison", "curves_mine", f"curves_{models[-1]}"):
        assert (run_dir / "figures" / f"{name}.png").is_file(), name
    assert result.stderr.count("Evaluating it on the test split, once.") == 1


@pytest.mark.training
def test_two_tasks_one_after_the_other_then_render(tmp_path):
    """A job array of two: the builder model in one task, the transfer -> finetune chain in the other."""
    (tmp_path / "models.py").write_text(BUILDER, encoding="utf-8")
    config = tiny_config(tmp_path, **{'models = ["baseline", "transfer", "finetune"]': 'models = ["mine", "transfer", "finetune"]'})
    config.write_text(config.read_text(encoding="utf-8") + '[models.mine]\nrecipe = "keras"\nbuilder = "models.py:build"\n',
                      encoding="utf-8")
    out = tmp_path / "out"
    run_dir = out / "tiny"
    first = run(train_command(config, out, "--task-index", "0", "--task-count", "2"))
    assert first.returncode == 0, first.stderr
    assert "Task 0 of 2 (from --task-index)" in first.stderr
    assert "cell(s) not finished yet" in first.stderr and "Evaluating it on the test split" not in first.stderr
    assert not (run_dir / "metrics.json").exists(), "only the task that finds every cell finished chooses and tests"
    assert load(run_dir / "manifest.json")["status"] == "running", "the other task still has cells"
    environment = {**cli_environment(), "SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "4", "SLURM_ARRAY_TASK_COUNT": "2"}
    second = run(train_command(config, out), environment)
    assert second.returncode == 0, second.stderr
    assert "Task 1 of 2 (from SLURM_ARRAY_TASK_ID)" in second.stderr
    assert second.stderr.count("Evaluating it on the test split, once.") == 1
    trained = [[line.split("] ", 1)[1].split(":")[0] for line in stderr.splitlines() if ": training in " in line]
               for stderr in (first.stderr, second.stderr)]
    cells = [f"{model}, seed 7" for model in ("mine", "transfer", "finetune")]
    assert sorted(trained[0] + trained[1]) == sorted(cells) and not set(trained[0]) & set(trained[1]), trained
    assert all(trained), "each task trains its share"
    assert sum("transfer, seed 7" in task and "finetune, seed 7" in task for task in trained) == 1  # a chain stays in one task
    manifest = load(run_dir / "manifest.json")
    assert manifest["status"] == "complete" and manifest["execution"]["task_count"] == 2
    assert all(entry["status"] == "complete" for entry in manifest["models"].values())
    assert (run_dir / "metrics.json").is_file() and (run_dir / "figures" / "curves_finetune.png").is_file()
    docs = tmp_path / "docs"
    rendered = run(run_cli_command("render", "--artifacts", str(run_dir), "--docs", str(docs)))
    assert rendered.returncode == 0, rendered.stderr
    assert (docs / "index.md").is_file() and (docs / "models" / "mine.md").is_file()


def _kill_mid_cell(process: subprocess.Popen, folder: Path, timeout: float = 400) -> int:
    """SIGKILL the worker training the cell in `folder` once it has committed an epoch and not finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            state = load(folder / "state.json")
            owner = load(folder / ".cell.owner.json")
        except (OSError, ValueError):
            time.sleep(0.02)
            continue
        if state.get("status") == "partial" and 1 <= state.get("epochs_completed", 0) < state.get("epochs_planned", 0):
            os.kill(owner["pid"], signal.SIGKILL)
            assert owner["pid"] != process.pid, "the cell trains in a worker, not in the parent"
            return owner["pid"]
        time.sleep(0.02)
    raise AssertionError(f"the cell in {folder} was never seen between two epochs")


@pytest.mark.training
@pytest.mark.parametrize("retries", [pytest.param("0", marks=pytest.mark.slow), "1"])
def test_a_worker_killed_mid_cell_then_the_study_completes_with_every_epoch_once(tmp_path, retries):
    """--retries 0: the command reports the lost cells and the same command again resumes them;
    --retries 1: the command itself runs the cell again in a new worker, from its last epoch. The
    fast lane runs the second: a kill, a retry and a resume from the last epoch in one command."""
    # transfer's 4 epochs on the tiny backbone, a fraction of a second each: killed in the second to fourth
    config = tiny_config(tmp_path, **{'"baseline", ': "", "epochs = 2": "epochs = 4"})
    out = tmp_path / "out"
    run_dir = out / "tiny"
    command = train_command(config, out, "--workers", "2", "--retries", retries)
    log = tmp_path / "first.err"
    with open(log, "w") as handle:
        process = subprocess.Popen(command, cwd=PROJECT_ROOT, env=cli_environment(), stdout=subprocess.DEVNULL, stderr=handle)
        try:
            _kill_mid_cell(process, run_dir / "models" / "transfer" / "seed-7")
            process.wait(timeout=600)
        finally:
            if process.poll() is None:
                process.kill()
    first = log.read_text()
    if retries == "0":
        assert process.returncode == 1, first
        assert "transfer (seed 7): its worker process died" in first and "run the same command again" in first, first
        assert "finetune (seed 7): not run: it starts from transfer, seed 7, which was lost" in first, first
        again = run(command)
        assert again.returncode == 0, again.stderr
        assert "transfer, seed 7" in again.stderr and "resuming transfer (seed 7) after epoch" in again.stderr, again.stderr
    else:
        assert process.returncode == 0, first
        assert "trying again (try 2 of 2)" in first and "resuming transfer (seed 7) after epoch" in first, first
    expected = {"transfer/seed-7": [1, 2, 3, 4], "finetune/seed-7": [5]}
    assert {cell: [record["epoch"] for record in epochs] for cell, epochs in histories(run_dir).items()} == expected
    manifest = load(run_dir / "manifest.json")
    assert manifest["status"] == "complete"
    assert all(entry["status"] == "complete" for entry in manifest["models"].values())
    assert (run_dir / "metrics.json").is_file()
    for model in ("transfer", "finetune"):
        assert not (run_dir / "models" / model / "seed-7" / "checkpoint").exists()


MIRRORED = """
import os
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from report_builder.cli import main
code = main(sys.argv[1:])
import keras
from experiments.training.strategy import make_strategy
print("replicas:", make_strategy("mirrored").num_replicas_in_sync, file=sys.stderr)
model = keras.models.load_model(os.environ["SAVED_MODEL"])  # saved from mirrored variables, loaded without a strategy
print("loaded:", model.name, model.count_params(), file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.training
def test_mirrored_strategy_on_two_logical_cpus_trains_and_saves(tmp_path):
    config = tiny_config(tmp_path, **{'models = ["baseline", "transfer", "finetune"]': 'models = ["transfer"]', "epochs = 2": "epochs = 1"})
    out = tmp_path / "out"
    saved = out / "tiny" / "models" / "transfer" / "seed-7" / "model.keras"
    result = run([sys.executable, "-c", MIRRORED, "train", "--config", str(config), "--out", str(out), "--strategy", "mirrored"],
                 {**cli_environment(), "SAVED_MODEL": str(saved)})
    assert result.returncode == 0, result.stderr
    assert "MirroredStrategy over 2 device(s)" in result.stderr and "replicas: 2" in result.stderr, result.stderr
    run_dir = out / "tiny"
    for model in ("transfer",):
        epochs = load(run_dir / "models" / model / "seed-7" / "history.json")["epochs"]
        assert [record["epoch"] for record in epochs] == [1] and all(record["loss"] is not None for record in epochs)
        assert (run_dir / "models" / model / "seed-7" / "model.keras").is_file()
    manifest = load(run_dir / "manifest.json")
    assert manifest["status"] == "complete" and manifest["execution"]["strategy"] == "mirrored"
    assert (run_dir / "metrics.json").is_file()


def _running(pid: int) -> bool:
    """Whether `pid` is a live process (an unreaped zombie counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_pool_workers_end_when_the_train_process_is_killed_with_sigkill():
    """kill -9 of `train --workers N` used to leave its N workers waiting on the task queue for
    ever (about 700 MB each with TensorFlow loaded); each now ends within seconds of its parent."""
    script = ("import os, sys\n"
              "from experiments.scale.pool import PoolBackend\n"
              "backend = PoolBackend(1, [{}], retries=0)\n"
              "print(backend._pool().submit(os.getpid).result(), flush=True)\n"
              "sys.stdin.read()\n")
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=PROJECT_ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 30
    while _running(worker) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _running(worker):
        os.kill(worker, signal.SIGKILL)
        pytest.fail(f"pool worker {worker} outlived its killed parent by 30 s")
