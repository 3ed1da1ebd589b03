"""Choose on validation among the finished runs, then evaluate the chosen run on the test split, once."""

from __future__ import annotations

import statistics
from pathlib import Path

from experiments.artifacts.files import file_sha256
from experiments.artifacts.folders import RunFolder
from experiments.artifacts.run_records import Metrics, ModelScore, Selection, TestEvaluation, TestPrediction
from experiments.config import StudyConfig, config_hash
from experiments.console import log
from experiments.data.loading import StudyData, make_dataset
from experiments.errors import StudyFailed
from experiments.models.builders import import_study_code
from experiments.models.recipes import chain_root
from experiments.study import figures
from experiments.study.decisions import (
    choose_model,
)
from experiments.study.manifest import read_if_valid
from experiments.study.train_cell import as_logits, finished_runs

SELECTION_RULE = ("highest mean over seeds of the last epoch's validation accuracy; within that model, the seed "
                  "with the highest; the test split is not looked at")


def evaluate_on_test(config: StudyConfig, run: RunFolder, data: StudyData, chosen: str, seed: int) -> TestEvaluation:
    """Evaluate the chosen model's saved weights on the test split: the one look at test."""
    import numpy as np

    from experiments.models.build import load_trained_model, set_precision  # loads TensorFlow: only where it is needed
    from experiments.training.fit import softmax  # loads TensorFlow: only where it is needed

    set_precision("none")  # the global policy back to float32, whatever the last cell trained under

    model_path = run.seed_run(chosen, seed).model_file
    if not model_path.is_file():
        raise StudyFailed(
            f"the chosen model's file {model_path} is missing, so it cannot be evaluated on the test split; "
            "run again with --force to retrain it"
        )
    import_study_code(chain_root(chosen, config.models))  # the custom layers of the study's own code, if any, register
    model = load_trained_model(model_path)
    test_dataset = make_dataset(data.test, config.data.batch_size, shuffle=False, seed=0)
    loss, _ = model.evaluate(test_dataset, verbose=0)
    logits = as_logits(config, chosen, model.predict(test_dataset, verbose=0))
    probabilities = softmax(logits)
    predicted = np.argmax(probabilities, axis=1)
    class_count = len(data.class_names)
    confusion = np.zeros((class_count, class_count), dtype=int)
    np.add.at(confusion, (data.test.labels, predicted), 1)
    correct = int(np.trace(confusion))
    total = len(data.test)
    predictions = [
        TestPrediction(name, data.class_names[int(label)], data.class_names[int(guess)], round(float(probability[guess]), 4))
        for name, label, guess, probability in zip(data.test.files, data.test.labels, predicted, probabilities)
    ]
    return TestEvaluation(chosen, seed, float(loss), correct / total if total else None, correct, total,
                          list(data.class_names), confusion.tolist(), predictions)


def write_misclassified_figure(run: RunFolder, data: StudyData, test: TestEvaluation) -> None:
    """Up to twelve test images the chosen model got wrong, from the test record's predictions."""

    row_of = {name: index for index, name in enumerate(data.test.files)}
    wrong = [item for item in test.predictions if item.label != item.predicted and item.file in row_of]
    figures.misclassified(
        data.test.images[[row_of[item.file] for item in wrong]],
        [f"{item.label} as {item.predicted}\n(p = {item.probability:.2f})" for item in wrong],
        run.figure("misclassified_test"),
    )
    if test.confusion_matrix:  # the report shows it in place of a table when there are many classes
        figures.confusion_heatmap(test.confusion_matrix, list(data.class_names), run.figure("confusion_test"))


def _mean(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.fmean(present) if present else None


def _file_digest(path: Path) -> str | None:
    try:
        return file_sha256(path)
    except OSError:
        return None


def select_and_test(config: StudyConfig, run: RunFolder, data: StudyData) -> Metrics | None:
    """Choose on validation among the finished runs and evaluate the choice on test, once;
    write metrics.json. Call it holding the run lock (see `run_lock`): two processes must not
    evaluate at once. The test score is reused while the chosen run's history (so its training)
    is the one it was computed for, whichever process trained it."""
    runs_by_model = {name: runs for name in config.study.models if (runs := finished_runs(run, config, name, data.fingerprint))}
    chosen, chosen_seed, candidates, seed_candidates = choose_model(runs_by_model)
    if chosen is None:
        log("No model finished; nothing to evaluate on the test split.")
        return None
    study_hash = config_hash(config)
    chosen_history = _file_digest(run.seed_run(chosen, chosen_seed).history)
    previous = read_if_valid(Metrics, run.metrics)
    if (
        previous is not None
        and previous.chosen_model == chosen
        and previous.chosen_seed == chosen_seed
        and previous.config_hash == study_hash
        and previous.data_fingerprint == data.fingerprint
        and chosen_history is not None
        and previous.chosen_history_sha256 == chosen_history
        and previous.test is not None
    ):
        test = previous.test
        log(f"Test score of {chosen} (seed {chosen_seed}) is unchanged since the last run; not evaluating again.")
    else:
        log(f"Chosen on validation: {chosen} (mean {candidates[chosen]:.3f} over {len(runs_by_model[chosen])} seed(s)), "
            f"seed {chosen_seed}. Evaluating it on the test split, once.")
        test = evaluate_on_test(config, run, data, chosen, chosen_seed)
    write_misclassified_figure(run, data, test)
    metrics = Metrics(
        config_hash=study_hash,
        data_fingerprint=data.fingerprint,
        selection=Selection("val_accuracy", SELECTION_RULE, candidates, seed_candidates),
        chosen_model=chosen,
        chosen_seed=chosen_seed,
        chosen_history_sha256=chosen_history,
        test=test,
        validation={
            name: ModelScore(_mean([epochs[-1].val_loss for epochs in runs.values()]),
                             _mean([epochs[-1].val_accuracy for epochs in runs.values()]))
            for name, runs in runs_by_model.items()
        },
    )
    metrics.write(run.metrics)

    figures.comparison({name: list(runs.values()) for name, runs in runs_by_model.items()}, run.figure("comparison"),
                       data.majority_baseline().accuracy["validation"])
    return metrics
