"""The study's decisions, as pure functions of what a run folder holds: whether to skip, resume or
restart a run, whether a run counts as finished, and which model and seed to choose on validation.
No TensorFlow and no file access here: `experiments.study` reads the files and acts on the answers.
"""

from __future__ import annotations

import statistics
from datetime import datetime

from experiments.artifacts.cell_records import Epoch, History, RunState
from experiments.config import StudyConfig, config_hash

SKIP, RESUME, RESTART, SETTLED = "skip", "resume", "restart", "settled"
# What a state.json's status can be; the manifest's run entries use the same words.
COMPLETE, PARTIAL, FAILED, DIVERGED = "complete", "partial", "failed", "diverged"
CELL_STATUSES = (COMPLETE, PARTIAL, FAILED, DIVERGED)


def decide(state: RunState | None, history: History | None, model_file_present: bool,
           expected: dict[str, str], force: bool, since: datetime | None = None,
           model_file_name: str = "model.keras", source_name: str | None = None,
           resumable: tuple[int, str | None] | None = None) -> tuple[str, str]:
    """What to do with one run (a model and a seed), from its state.json and history.json (None
    when missing) and whether its model file exists: SKIP, RESUME (keep committed epochs), RESTART
    (discard them) or SETTLED (another process ended it in failure since `since`, when this command
    started: report it, do not train it again), and why, in words for the console. `resumable`:
    (the epochs its checkpoint can resume from, a note: why it cannot, or why from an earlier
    checkpoint; None: nothing to say), when known, so that a resume says what really happens."""
    labels = {"config_hash": "config", "data_fingerprint": "data",
              "starting_point": f"{source_name} model it starts from" if source_name else "model it starts from"}
    same_inputs = state is not None and all(getattr(state, key) == value for key, value in expected.items())
    if same_inputs and since is not None and at_or_after(state.finished_at, since):
        # another process finished it while this one waited: --force does not retrain it twice
        if (state.status == COMPLETE and history is not None and model_file_present
                and len(history.epochs) == state.epochs_planned):
            return SKIP, "finished by another process since this command started"
        if state.status in (FAILED, DIVERGED):
            return SETTLED, f"{state.status} in another process since this command started ({state.error})"
    if force:
        return RESTART, "--force given"
    if state is None:
        return RESUME, "not trained yet"
    for key, value in expected.items():
        if getattr(state, key) != value:
            return RESTART, f"the {labels.get(key, key)} changed since it was trained ({str(getattr(state, key))[:10]} -> {value[:10]}); retraining"
    if state.status == DIVERGED:
        return RESTART, f"it diverged last time ({state.error}); training again from the start"
    if state.status != COMPLETE or history is None:
        if resumable is None:
            start = ""
        elif resumable[0] > 0:
            start = f", resuming after its {resumable[0]} committed epochs" + (f" ({resumable[1]})" if resumable[1] else "")
        elif resumable[1] is not None:
            start = f", but {resumable[1]}, so from its first epoch again"
        elif state.epochs_completed:
            start = ", but its checkpoint is gone, so from its first epoch again"
        else:
            start = ", from its first epoch (no epoch was committed)"
        if state.status == FAILED:
            return RESUME, f"it failed last time ({state.error}); trying again{start}"
        if resumable is None:
            return RESUME, f"resuming an unfinished run ({state.epochs_completed} epochs done)"
        return RESUME, f"an unfinished run ({state.epochs_completed} epochs done last time){start}"
    if len(history.epochs) != state.epochs_planned:
        return RESTART, "its history is incomplete; retraining"
    if not model_file_present:
        return RESTART, f"its model file {model_file_name} is missing (artifacts copied without models?); retraining"
    return SKIP, "finished with the same config and data"


def finished_for(state: RunState | None, config: StudyConfig, model_name: str, data_fingerprint: str) -> bool:
    """Whether a cell's state says it finished training with the current config and data."""
    return settled_for(state, config, model_name, data_fingerprint) and state.status == COMPLETE


def settled_for(state: RunState | None, config: StudyConfig, model_name: str, data_fingerprint: str | None) -> bool:
    """Whether a cell's state was written for the current config (and data, unless
    `data_fingerprint` is None): only then does it say anything about this study."""
    return state is not None and state.config_hash == config_hash(config, model_name) \
        and (data_fingerprint is None or state.data_fingerprint == data_fingerprint)


def at_or_after(moment: object, since: datetime) -> bool:
    """Whether `moment` (an ISO time string from a state.json) is at or after `since`."""
    try:
        return isinstance(moment, str) and datetime.fromisoformat(moment) >= since
    except ValueError:
        return False


def last_validation_accuracy(epochs: list[Epoch]) -> float | None:
    return epochs[-1].val_accuracy if epochs else None


def choose_model(runs_by_model: dict[str, dict[int, list[Epoch]]]) -> tuple[str | None, int | None, dict[str, float | None], dict[str, float | None]]:
    """The model with the highest mean (over seeds) last-epoch validation accuracy, then its
    seed with the highest; study order, then seed order, breaks ties. Test data is not used.

    Returns (model, seed, mean per model, value per seed of the chosen model).
    """
    candidates: dict[str, float | None] = {}
    for name, runs in runs_by_model.items():
        values = [value for value in map(last_validation_accuracy, runs.values()) if value is not None]
        candidates[name] = statistics.fmean(values) if values else None
    usable = [(value, -index, name) for index, (name, value) in enumerate(candidates.items()) if value is not None]
    if not usable:
        return None, None, candidates, {}
    chosen = max(usable)[2]
    per_seed = {str(seed): last_validation_accuracy(epochs) for seed, epochs in runs_by_model[chosen].items()}
    seeds = [(value, -index, int(seed)) for index, (seed, value) in enumerate(per_seed.items()) if value is not None]
    return chosen, max(seeds)[2], candidates, per_seed


Cell = tuple[str, int]


SETTLED_STATUSES = (COMPLETE, FAILED, DIVERGED)


def study_cells(config: StudyConfig) -> list[tuple[str, int]]:
    """Every planned cell, in study order: model by model, seed by seed."""
    return [(model_name, seed) for model_name in config.study.models for seed in config.seeds]
