"""The study's cells as scale-out sees them: chains of cells that continue one another, a job-array task's share, and which task this process is."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from experiments.config import StudyConfig
from experiments.console import log
from experiments.errors import UserError
from experiments.study.decisions import Cell, study_cells


def source_of(config: StudyConfig, cell: Cell) -> Cell | None:
    """The cell a continuing cell starts from (same seed), or None."""
    model_name, seed = cell
    source = config.source_of(model_name)
    return (source, seed) if source is not None else None


def root_of(config: StudyConfig, cell: Cell) -> Cell:
    while (source := source_of(config, cell)) is not None:
        cell = source
    return cell


def cell_epochs(config: StudyConfig, model_name: str) -> int:
    """The epochs a cell trains: the planned work, used to balance shares and order the queue."""
    first, last = config.epoch_span(model_name)
    return last - first


def chain_groups(config: StudyConfig) -> list[list[Cell]]:
    """The cells grouped by chain: a source cell with the cells that continue it (same seed), every
    other cell alone; groups in the order of their first cell, cells in study order."""
    groups: dict[Cell, list[Cell]] = {}
    for cell in study_cells(config):
        groups.setdefault(root_of(config, cell), []).append(cell)
    return list(groups.values())


def assign_shares(config: StudyConfig, count: int) -> list[list[Cell]]:
    """`count` shares of the study's cells, a chain never split: the chain groups, heaviest first
    (planned epochs; ties in study order), each to the share with the least planned epochs so far
    (the lowest index on a tie). A pure function of the config: every task computes the same split."""
    if count < 1:
        raise ValueError("count must be at least 1")
    groups = chain_groups(config)
    weights = [sum(cell_epochs(config, model_name) for model_name, _ in group) for group in groups]
    loads = [0] * count
    task_of_group: dict[int, int] = {}
    for index in sorted(range(len(groups)), key=lambda position: (-weights[position], position)):
        task = min(range(count), key=lambda number: (loads[number], number))
        loads[task] += weights[index]
        task_of_group[index] = task
    task_of_cell = {cell: task_of_group[index] for index, group in enumerate(groups) for cell in group}
    return [[cell for cell in study_cells(config) if task_of_cell[cell] == task] for task in range(count)]


def task_share(config: StudyConfig, index: int, count: int) -> list[Cell]:
    return assign_shares(config, count)[index]


def announce_task(config: StudyConfig, task: TaskSlot) -> list[Cell]:
    """This task's share of the cells, said on the console."""
    share = task_share(config, task.index, task.count)
    log(f"Task {task.index} of {task.count} (from {task.origin}): {len(share)} of {len(study_cells(config))} cells: "
        + (", ".join(f"{name} (seed {seed})" for name, seed in share) or "none"))
    return share


def critical_path(config: StudyConfig, cells: Sequence[Cell]) -> dict[Cell, int]:
    """Each cell's planned epochs plus the longest chain of cells that wait for it: cells with the
    longest path left are handed out first, so the study takes about as long as its longest chain."""
    dependents: dict[Cell, list[Cell]] = {}
    for cell in cells:
        if (source := source_of(config, cell)) is not None:
            dependents.setdefault(source, []).append(cell)
    lengths: dict[Cell, int] = {}

    def length(cell: Cell) -> int:
        if cell not in lengths:
            lengths[cell] = cell_epochs(config, cell[0]) + max((length(child) for child in dependents.get(cell, [])), default=0)
        return lengths[cell]

    return {cell: length(cell) for cell in cells}


@dataclass(frozen=True)
class TaskSlot:
    """This process's place in a job array: task `index` (0-based) of `count`; `origin` says where
    the index came from (a flag or an environment variable), for the messages."""

    index: int
    count: int
    origin: str = "--task-index"


def _integer(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise UserError(f"${name} is {value!r}, not a whole number") from None


def resolve_task(index: int | None, count: int | None, environ: Mapping[str, str] = os.environ) -> TaskSlot | None:
    """This process's task, from `--task-index` / `--task-count` or else the job array's environment:

    - SLURM (`sbatch --array=...`): the index is (SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) /
      SLURM_ARRAY_TASK_STEP, the count SLURM_ARRAY_TASK_COUNT (both overridable by the flags);
    - a Kubernetes Indexed Job: JOB_COMPLETION_INDEX, with the count from `--task-count` (the
      Job's `completions`), which Kubernetes does not put in the environment.

    None means the whole study in this process (no array, or `--task-count 1`)."""
    if count is not None and count < 1:
        raise UserError(f"--task-count must be 1 or more, got {count}")
    origin = "--task-index"
    if index is None:
        slurm_id = _integer(environ, "SLURM_ARRAY_TASK_ID")
        kubernetes_index = _integer(environ, "JOB_COMPLETION_INDEX")
        if count == 1:
            return None
        if slurm_id is not None:
            first = _integer(environ, "SLURM_ARRAY_TASK_MIN") or 0
            step = _integer(environ, "SLURM_ARRAY_TASK_STEP") or 1
            count = count if count is not None else _integer(environ, "SLURM_ARRAY_TASK_COUNT")
            if count is None:
                raise UserError("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not: pass --task-count K")
            if (slurm_id - first) % step:
                raise UserError(f"SLURM array task {slurm_id} is not on the array's grid (min {first}, step {step}): "
                                "use --array=0-(K-1) or pass --task-index")
            index, origin = (slurm_id - first) // step, "SLURM_ARRAY_TASK_ID"
        elif kubernetes_index is not None:
            if count is None:
                raise UserError("JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job): pass --task-count K, the Job's completions")
            index, origin = kubernetes_index, "JOB_COMPLETION_INDEX"
        elif count is not None:
            raise UserError("--task-count needs --task-index (or SLURM_ARRAY_TASK_ID / JOB_COMPLETION_INDEX in the environment)")
        else:
            return None
    elif count is None:
        count = _integer(environ, "SLURM_ARRAY_TASK_COUNT")
        if count is None:
            raise UserError("--task-index needs --task-count K (how many tasks share the study)")
    if not 0 <= index < count:
        raise UserError(f"task index {index} (from {origin}) is not between 0 and {count - 1} (--task-count {count})")
    return TaskSlot(index, count, origin) if count > 1 else None
