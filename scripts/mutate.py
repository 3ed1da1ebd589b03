"""Hand-written mutation testing: inject one small bug at a time and see whether a test fails.

Each mutation replaces one exact piece of text in one source file (or template) with a wrong
version: the bugs of the "tests that guard every claim the report makes" issue, and more. For
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
    # ---- data: what the models see
    Mutation(
        "folder-validation-labels-reversed", "experiments/data/loading.py",
        "Split(validation.images, validation.labels, validation.files),",
        "Split(validation.images, (len(validation.class_names) - 1 - validation.labels).astype(np.int32), validation.files),",
        ("tests/test_data.py",),
        "validation (and test) labels of folder data in reverse class order",
    ),
    Mutation(
        "fingerprint-ignores-content", "experiments/data/loading.py",
        r'digest.update(f"{split_name}\0{path}\0{file_digest}\n".encode())',
        r'digest.update(f"{split_name}\0{path}\n".encode())',
        ("tests/test_data.py",),
        "the data fingerprint does not change when a file's bytes change (stale results)",
    ),
    Mutation(
        "fingerprint-skips-validation", "experiments/data/loading.py",
        'fingerprint=fingerprint(train.class_names, {"train": train, "validation": validation}),',
        'fingerprint=fingerprint(train.class_names, {"train": train}),',
        ("tests/test_data.py",),
        "a changed validation (or test) image does not change the data fingerprint",
    ),
    Mutation(
        "evaluation-pipeline-shuffled", "experiments/data/loading.py",
        "    if shuffle:\n        dataset = dataset.shuffle(",
        "    if True:\n        dataset = dataset.shuffle(",
        ("tests/test_data.py",),
        "validation and test batches come in shuffled order",
    ),
    Mutation(
        "class-labels-reversed-in-scan", "experiments/data/images.py",
        "for label, class_name in enumerate(class_names):\n        candidates, skipped = _scan_class_folder(",
        "for label, class_name in zip(range(len(class_names) - 1, -1, -1), class_names):\n        candidates, skipped = _scan_class_folder(",
        ("tests/test_data.py",),
        "folder data labelled in reverse class order (train and validation alike)",
    ),
    Mutation(
        "test-split-leaks-into-validation", "experiments/data/loading.py",
        "remaining = [int(i) for i in order if int(i) not in test_set]",
        "remaining = [int(i) for i in order]",
        ("tests/test_data.py",),
        "the test images stay in the validation split too",
    ),
    Mutation(
        "cache-key-ignores-file-content", "experiments/data/cache.py",
        'content = outcome.digest if outcome.digest is not None else f"unreadable: {outcome.skip_reason}"',
        'content = "" if outcome.digest is not None else f"unreadable: {outcome.skip_reason}"',
        ("tests/test_cache.py::test_changed_files_or_image_size_build_a_new_cache",),
        "a file whose bytes changed under the same name is read from the old decoded-image cache (stale pixels)",
    ),
    Mutation(
        "majority-baseline-from-validation", "experiments/data/loading.py",
        "majority_index = int(np.argmax(np.bincount(self.train.labels, minlength=len(self.class_names))))",
        "majority_index = int(np.argmax(np.bincount(self.validation.labels, minlength=len(self.class_names))))",
        ("tests/test_data.py::test_the_majority_baseline_predicts_the_training_split_s_most_common_class_not_validation_s",),
        "the majority baseline predicts validation's most common class, not the training split's (it peeks at validation)",
    ),
    # ---- the progress counter while images are read (experiments.console)
    Mutation(
        "folder-reading-without-progress", "experiments/data/loading.py",
        "            progress=progress,\n",
        "            progress=None,\n",
        ("tests/test_data.py::test_decoding_a_folder_shows_its_progress_on_stderr_once",),
        "decoding a data folder into the cache shows no progress at all",
    ),
    Mutation(
        "progress-line-at-every-report", "experiments/console.py",
        "        if quarter <= self._quarters_shown:\n            return\n",
        "        if done <= 0:\n            return\n",
        ("tests/test_progress.py",),
        "a log gets a line at every report (every 50 images) instead of one per quarter",
    ),
    Mutation(
        "progress-counter-without-lock", "experiments/console.py",
        "        self._lock = threading.Lock()\n",
        "        self._lock = __import__('contextlib').nullcontext()\n",
        ("tests/test_progress.py",),
        "reports from several threads at once are not serialised: garbled or repeated log lines",
    ),
    Mutation(
        "progress-lines-on-stdout", "experiments/console.py",
        "stream = self._file if self._file is not None else sys.stderr",
        "stream = self._file if self._file is not None else sys.stdout",
        ("tests/test_progress.py",),
        "the progress lines go to stdout, mixed into what a command prints or pipes",
    ),
    Mutation(
        "progress-display-left-running-on-error", "experiments/console.py",
        "    try:\n        yield counter\n    finally:\n        counter.close()\n",
        "    yield counter\n    counter.close()\n",
        ("tests/test_progress.py",),
        "Ctrl-C or an error while images decode leaves the live display running: hidden cursor, stderr redirected",
    ),
    # ---- the config, and which finished runs are reused
    Mutation(
        "image-size-not-hashed", "experiments/config.py",
        '("data", "workers"), ("data", "cache_dir"),\n',
        '("data", "workers"), ("data", "cache_dir"), ("data", "image_size"),\n',
        ("tests/test_config.py",),
        "a run trained at another image size is reused (stale results)",
    ),
    Mutation(
        "test-fraction-zero-accepted", "experiments/config.py",
        "    if not 0.0 < data.test_fraction < 1.0:",
        "    if not 0.0 <= data.test_fraction < 1.0:",
        ("tests/test_config.py",),
        "data.test_fraction = 0 accepted (no test split)",
    ),
    Mutation(
        "test-fraction-one-accepted", "experiments/config.py",
        "    if not 0.0 < data.test_fraction < 1.0:",
        "    if not 0.0 < data.test_fraction <= 1.0:",
        ("tests/test_config.py",),
        "data.test_fraction = 1 accepted (no validation split)",
    ),
    Mutation(
        "finetune-keys-never-hashed", "experiments/config.py",
        "ignored = UNHASHED_KEYS | (FINETUNE_KEYS - read_keys)",
        "ignored = UNHASHED_KEYS | FINETUNE_KEYS",
        ("tests/test_config.py",),
        "changing the fine-tuning settings does not retrain finetune (or its control)",
    ),
    Mutation(
        "control-hash-ignores-finetune-epochs", "experiments/config.py",
        'CONTINUATION_KEYS = {"finetune": FINETUNE_KEYS, "train_on": {("training", "finetune_epochs")}}',
        'CONTINUATION_KEYS = {"finetune": FINETUNE_KEYS}',
        ("tests/test_config.py::test_every_setting_that_changes_results_changes_the_hash",),
        "transfer_extended's hash ignores finetune_epochs: a control trained for another number of epochs is reused",
    ),
    Mutation(
        "control-hash-reads-every-finetune-key", "experiments/config.py",
        'CONTINUATION_KEYS = {"finetune": FINETUNE_KEYS, "train_on": {("training", "finetune_epochs")}}',
        'CONTINUATION_KEYS = {"finetune": FINETUNE_KEYS, "train_on": FINETUNE_KEYS}',
        ("tests/test_config.py::test_every_setting_that_changes_results_changes_the_hash",),
        "the control is retrained when only a setting it never reads (finetune_from_layer, the rate factor) changes",
    ),
    Mutation(
        "dataset-kept-on-other-data", "experiments/config.py",
        '    if data_keys_overridden and "dataset" not in nested:\n        config.dataset = DatasetSection()\n',
        '    if data_keys_overridden and "dataset" not in nested:\n        pass\n',
        ("tests/test_config.py::test_pointing_at_other_data_clears_the_dataset_description",
         "tests/test_config.py::test_another_folder_clears_the_description_of_the_configured_folder"),
        "--data-dir (or another data source) keeps the config file's [dataset] description of other images",
    ),
    Mutation(
        "data-dir-not-an-identity-key", "experiments/config.py",
        'DATA_IDENTITY_KEYS = ("data.source", "data.data_dir", "data.url")',
        'DATA_IDENTITY_KEYS = ("data.source", "data.url")',
        ("tests/test_config.py::test_another_folder_clears_the_description_of_the_configured_folder",),
        "a config that already reads a folder keeps its [dataset] description when --data-dir names another folder",
    ),
    Mutation(
        "validator-accepts-everything", "experiments/config.py",
        "    study, data, training = config.study, config.data, config.training\n",
        "    return config\n    study, data, training = config.study, config.data, config.training\n",
        ("tests/test_config.py::test_any_parsed_values_give_a_config_or_a_config_error",),
        "validate() accepts any well-typed config",
    ),
    # ---- models that continue transfer
    Mutation(
        "finetune-from-fresh-transfer", "experiments/study/",
        "model = make_finetune_model(load_trained_model(source_file), from_layer, model_name)",
        "model = make_finetune_model(build_model(config.recipe(source), data.image_size, len(data.class_names), "
        "config.weights_of(source), seed), from_layer, model_name)",
        ("tests/test_claims.py::test_finetune_starts_from_the_trained_transfer_weights",),
        "fine-tuning starts from a freshly initialised transfer model, not the trained one",
    ),
    Mutation(
        "finetune-ignores-its-starting-point", "experiments/study/",
        "hashlib.sha256(source_history.read_bytes()).hexdigest()",
        "hashlib.sha256(str(source_history).encode()).hexdigest()",
        ("tests/test_claims.py::test_a_changed_transfer_run_restarts_the_finetune_run_built_on_it",),
        "a retrained transfer run leaves the finetune run built on the old one in place (stale results)",
    ),
    Mutation(
        "no-lead-in-for-finetune", "report_builder/views.py",
        'source = by_name.get(view.recipe.continues_model or "")',
        'source = by_name.get(view.recipe.continues_model or "") if view.recipe.recipe != "finetune" else None',
        ("tests/test_claims.py::test_finetune_is_said_to_continue_transfer_with_its_own_epoch_numbers",),
        "finetune is no longer known to continue transfer (its page and the method page stop saying so)",
    ),
    Mutation(
        "method-page-forgets-finetune-continues", "report_builder/templates/method.md.j2",
        "{% for model in models if model.lead_in is not none and model.over_seeds is not none %}",
        '{% for model in models if model.lead_in is not none and model.over_seeds is not none and model.name != "finetune" %}',
        ("tests/test_claims.py::test_finetune_is_said_to_continue_transfer_with_its_own_epoch_numbers",),
        "the method page drops the sentence that finetune starts from transfer",
    ),
    # ---- the choice on validation and the one look at test
    Mutation(
        "chosen-by-best-epoch", "experiments/study/decisions.py",
        "    return epochs[-1].val_accuracy if epochs else None\n",
        "    return max((epoch.val_accuracy for epoch in epochs if epoch.val_accuracy is not None), default=None)\n",
        ("tests/test_decisions.py::test_a_model_is_scored_by_its_last_epoch_not_its_best",),
        "models and seeds are scored by their best epoch's validation accuracy, not the last (saved, tested) epoch's",
    ),
    Mutation(
        # (dropping `previous.chosen_seed == chosen_seed` alone changes nothing: history.json
        # records its seed, so another seed's history never has the digest compared next)
        "test-score-of-the-seed-tested-before", "experiments/study/",
        "    chosen_history = _file_digest(run.seed_run(chosen, chosen_seed).history)\n"
        "    previous = _readable(Metrics, run.metrics)\n"
        "    if (\n"
        "        previous is not None\n"
        "        and previous.chosen_model == chosen\n"
        "        and previous.chosen_seed == chosen_seed\n",
        "    previous = _readable(Metrics, run.metrics)\n"
        "    tested_seed = previous.chosen_seed if previous is not None and previous.chosen_seed is not None else chosen_seed\n"
        "    chosen_history = _file_digest(run.seed_run(chosen, tested_seed).history)\n"
        "    if (\n"
        "        previous is not None\n"
        "        and previous.chosen_model == chosen\n",
        ("tests/test_study.py::test_a_new_chosen_seed_is_tested_not_given_the_old_seed_s_score",
         "tests/test_study.py::test_a_change_of_seed_within_the_same_seeds_is_tested_again"),
        "a newly chosen seed gets the test score of the seed tested before (the reuse checks that run, not the chosen one)",
    ),
    Mutation(
        "test-score-kept-after-retraining", "experiments/study/",
        "        and previous.chosen_history_sha256 == chosen_history\n",
        "",
        ("tests/test_study.py::test_a_retrained_chosen_run_is_tested_again",),
        "a chosen run trained again (--force) keeps the test score of the weights it replaced",
    ),
    # ---- validation predictions: what the paired comparisons rest on
    Mutation(
        "predictions-recorded-with-wrong-epoch", "experiments/study/",
        "record_validation_predictions(config, data, seed_run, result.model, first_epoch + len(result.epochs))",
        "record_validation_predictions(config, data, seed_run, result.model, len(result.epochs))",
        ("tests/test_claims.py::test_each_run_records_the_predictions_of_its_scored_epoch",),
        "a continuing model's predictions are stamped with its epoch count, not its last epoch number (the report drops them)",
    ),
    Mutation(
        "backfill-numbers-epochs-from-one", "experiments/study/",
        "load_trained_model(seed_run.model_file), history.epochs[-1].epoch)",
        "load_trained_model(seed_run.model_file), len(history.epochs))",
        ("tests/test_claims.py::test_backfilled_predictions_are_the_ones_training_records",),
        "predictions backfilled for an older finetune run are stamped with the wrong epoch",
    ),
    Mutation(
        "wrong-epoch-predictions-accepted", "report_builder/views.py",
        "        elif record.epoch != last_epoch:",
        "        elif False:",
        ("tests/test_render.py::test_predictions_that_do_not_match_the_scored_run_give_no_interval",),
        "predictions from another epoch than the scored (last) one are paired and bootstrapped",
    ),
    Mutation(
        "files-sha256-check-dropped", "report_builder/views.py",
        "        elif files_sha256 is not None and record.files_sha256 != files_sha256:",
        "        elif False:",
        ("tests/test_render.py::test_predictions_that_do_not_match_the_scored_run_give_no_interval",),
        "predictions for another validation file list are paired image by image with this run's",
    ),
    # ---- the statistics (report_builder.analysis)
    Mutation(
        "seed-part-left-out", "report_builder/analysis.py",
        "    components = [_component(per_seed), _component(matrix.mean(axis=0))]",
        "    components = [None, _component(matrix.mean(axis=0))]",
        ("tests/test_analysis.py::test_three_seeds_use_a_t_quantile_on_their_few_degrees_of_freedom",),
        "the accuracy interval leaves the seed-to-seed variation out",
    ),
    Mutation(
        "seed-variance-floor-dropped", "report_builder/analysis.py",
        "    return max(float(np.var(values, ddof=1)), floor)",
        "    return float(np.var(values, ddof=1))",
        ("tests/test_analysis.py::test_seeds_that_land_close_by_chance_do_not_shrink_the_interval_below_their_image_noise",),
        "two seeds that land close by chance shrink the interval below the noise of which images each gets right",
    ),
    Mutation(
        "paired-seed-part-left-out", "report_builder/analysis.py",
        "        seed_component = _welch_component(seeds_a, seeds_b)",
        "        seed_component = None",
        ("tests/test_analysis.py::test_seed_spread_enters_the_paired_difference",),
        "the paired difference leaves the seed-to-seed variation out",
    ),
    Mutation(
        "normal-quantile-for-few-seeds", "report_builder/analysis.py",
        "    half = float(stats.t.ppf((1.0 + level) / 2.0, df)) * error",
        "    half = float(stats.norm.ppf((1.0 + level) / 2.0)) * error",
        ("tests/test_analysis.py::test_three_seeds_use_a_t_quantile_on_their_few_degrees_of_freedom",
         "tests/test_analysis.py::test_equal_models_with_three_seeds_rarely_differ_clearly"),
        "a normal quantile where three seeds need Student's t: intervals too narrow with few seeds",
    ),
    Mutation(
        "paired-images-not-shared", "report_builder/analysis.py",
        "    image_component = _component(matrix_a.mean(axis=0) - matrix_b.mean(axis=0))",
        "    image_component = _welch_component(matrix_a.mean(axis=0), matrix_b.mean(axis=0))",
        ("tests/test_analysis.py::test_one_seed_each_compares_on_the_images_alone",
         "tests/test_analysis.py::test_pairing_detects_a_difference_the_separate_intervals_cannot"),
        "each model's image variance counts on its own: the comparison is not paired image by image",
    ),
    Mutation(
        "pairing-by-seed-ignored", "report_builder/analysis.py",
        "    if paired:\n        seed_component = _component(seeds_a - seeds_b)",
        "    if False:\n        seed_component = _component(seeds_a - seeds_b)",
        ("tests/test_analysis.py::test_pairing_by_seed_removes_the_shared_seed_variation",),
        "models that continue the same runs are compared as if their seeds were independent",
    ),
    Mutation(
        "holm-step-down-skipped", "report_builder/analysis.py",
        "        if p > alpha / (len(indexed) - rank):",
        "        if p > alpha:",
        ("tests/test_analysis.py::test_holm_rejects_step_down_and_ignores_missing_comparisons",
         "tests/test_render.py::test_a_difference_that_does_not_survive_holm_is_not_called_better"),
        "every comparison is tested at 5% on its own: the family-wise error rate grows with the comparisons",
    ),
    Mutation(
        "family-not-corrected", "report_builder/views.py",
        "            if comparison.outcome in (BETTER, WORSE) and not holds:",
        "            if False:",
        ("tests/test_render.py::test_a_difference_that_does_not_survive_holm_is_not_called_better",),
        "the report's comparisons are not corrected for as a family",
    ),
    Mutation(
        "identical-runs-not-named", "report_builder/analysis.py",
        "    if matrix_a.shape == matrix_b.shape and np.array_equal(matrix_a, matrix_b):",
        "    if False:",
        ("tests/test_analysis.py::test_identical_runs_are_named_as_such", "tests/test_render.py::test_two_copies_of_one_recipe_are_named_identical_runs"),
        "two bit-identical sets of runs are compared as if they were two models",
    ),
    Mutation(
        "noise-not-scaled", "report_builder/analysis.py",
        "    noise = binomial_noise(window_mean(runs, \"val_accuracy\"), validation_count)",
        "    noise = 0.0",
        ("tests/test_analysis.py::test_a_drop_within_the_binomial_noise_is_not_a_late_drop",
         "tests/test_analysis.py::test_seeds_apart_by_no_more_than_the_binomial_noise_agree",
         "tests/test_analysis.py::test_a_flat_noisy_curve_is_rarely_still_improving"),
        "thresholds on validation accuracy ignore the validation set's binomial noise",
    ),
    Mutation(
        "trends-read-at-chance", "report_builder/analysis.py",
        "        None if at_chance or loss_rise else _still_improving(runs, noise),",
        "        None if loss_rise else _still_improving(runs, noise),",
        ("tests/test_analysis.py::test_a_model_at_chance_is_never_told_more_epochs_would_help",),
        "a model at chance is told that more epochs would help",
    ),
    Mutation(
        "one-seed-loss-spike-is-a-trend", "report_builder/analysis.py",
        "    if 2 * len(seeds) <= len(runs):\n        return None\n    turn_epoch, lowest, final = rise",
        "    turn_epoch, lowest, final = rise",
        ("tests/test_analysis.py::test_one_seeds_loss_rise_is_not_the_models",),
        "one seed's loss rise is read as the model's validation loss rising",
    ),
    Mutation(
        "late-drop-also-counted-as-spread", "report_builder/analysis.py",
        "    if spread([value for seed, value in per_seed.items() if seed not in dropped]) < threshold - TOLERANCE:",
        "    if False:",
        ("tests/test_analysis.py::test_one_seeds_one_epoch_loss_spike_is_one_event_named_once",),
        "one seed's late drop is counted again as seeds disagreeing",
    ),
    Mutation(
        "best-epoch-latest-on-ties", "report_builder/analysis.py",
        "if value is not None and (best is None or value > best[1]):",
        "if value is not None and (best is None or value >= best[1]):",
        ("tests/test_analysis.py::test_best_epoch_is_highest_validation_accuracy_earliest_on_ties",
         "tests/test_observations.py::test_per_seed_last_and_best_epochs"),
        "the best epoch is the latest of tied epochs, not the earliest (curve verdicts and the seed table alike)",
    ),
    Mutation(
        "at-chance-reads-the-estimate", "report_builder/analysis.py",
        "by_interval = interval is not None and interval.low <= majority_accuracy + TOLERANCE",
        "by_interval = interval is not None and interval.estimate <= majority_accuracy + TOLERANCE",
        ("tests/test_analysis.py::test_an_interval_down_to_the_majority_baseline_is_at_chance_by_interval",),
        "a model whose interval reaches down to the baseline is not called near chance when its estimate is above it",
    ),
    Mutation(
        "underfit-threshold-ignores-baseline", "report_builder/analysis.py",
        "threshold = majority_accuracy + UNDERFIT_FRACTION * (1.0 - majority_accuracy)",
        "threshold = 0.5 + UNDERFIT_FRACTION * 0.5",
        ("tests/test_analysis.py::test_underfitting_threshold_follows_the_majority_baseline",),
        "the underfitting threshold is a fixed 75% (right only for two balanced classes), not the fraction of the way from the baseline",
    ),
    Mutation(
        "underfit-threshold-from-zero", "report_builder/analysis.py",
        "threshold = majority_accuracy + UNDERFIT_FRACTION * (1.0 - majority_accuracy)",
        "threshold = UNDERFIT_FRACTION",
        ("tests/test_analysis.py::test_low_training_accuracy_is_underfitting",),
        "the underfitting threshold is UNDERFIT_FRACTION of the way from 0%, not from the majority baseline",
    ),
    Mutation(
        "underfit-at-threshold-counted", "report_builder/analysis.py",
        "if train_accuracy is None or train_accuracy >= threshold - TOLERANCE:",
        "if train_accuracy is None or train_accuracy > threshold + TOLERANCE:",
        ("tests/test_analysis.py::test_training_accuracy_exactly_at_the_threshold_is_not_underfitting",),
        "a model whose training accuracy is exactly at the threshold is called underfitting",
    ),
    Mutation(
        "still-improving-half-is-enough", "report_builder/analysis.py",
        "    if 2 * len(rising_seeds) <= len(runs):",
        "    if 2 * len(rising_seeds) < len(runs):",
        ("tests/test_analysis.py::test_still_improving_needs_most_seeds_to_peak_late",),
        "half of the seeds peaking late is taken for most of them",
    ),
    Mutation(
        "loss-rise-fraction-ignored", "report_builder/analysis.py",
        "final < (1.0 + LOSS_RISE_FRACTION) * lowest - TOLERANCE",
        "final < lowest - TOLERANCE",
        ("tests/test_analysis.py::test_a_small_loss_rise_is_not_overfitting_loss",),
        "any rise of the validation loss above its minimum counts as overfitting",
    ),
    Mutation(
        "loss-rise-absolute", "report_builder/analysis.py",
        "final < (1.0 + LOSS_RISE_FRACTION) * lowest - TOLERANCE",
        "final < lowest + LOSS_RISE_FRACTION - TOLERANCE",
        ("tests/test_analysis.py::test_the_loss_rise_is_relative_to_the_minimum",),
        "the validation loss must rise 0.2 nats, not 20%, above its minimum",
    ),
    Mutation(
        "loss-rise-from-first-epoch", "report_builder/analysis.py",
        "turn_epoch, lowest = min(points[:-window], key=lambda point: point[1])",
        "turn_epoch, lowest = points[0]",
        ("tests/test_analysis.py::test_a_loss_that_turns_upward_is_overfitting_loss",),
        "the rise is measured from the first epoch's validation loss, not from its minimum before the last epoch",
    ),
    Mutation(
        "gap-threshold-exclusive", "report_builder/analysis.py",
        "    if gap < max(GAP_THRESHOLD, NOISE_Z * noise) - TOLERANCE:",
        "    if gap <= max(GAP_THRESHOLD, NOISE_Z * noise):",
        ("tests/test_analysis.py::test_a_gap_of_exactly_the_threshold_counts",),
        "a train-validation gap of exactly 10 points (0.95 - 0.85 in floats) is not called overfitting",
    ),
    Mutation(
        "spread-threshold-exclusive", "report_builder/analysis.py",
        "    if len(per_seed) < 2 or total < threshold - TOLERANCE:",
        "    if len(per_seed) < 2 or total < threshold + TOLERANCE:",
        ("tests/test_analysis.py::test_a_spread_of_exactly_the_threshold_counts",),
        "seeds exactly 3 points apart are not said to disagree",
    ),
    # ---- what the pages say (views and templates)
    Mutation(
        "verdicts-from-first-seed", "report_builder/views.py",
        "view.verdicts = analysis.curve_verdicts(histories, majority_accuracy=baseline,",
        "view.verdicts = analysis.curve_verdicts(dict(list(histories.items())[:1]), majority_accuracy=baseline,",
        ("tests/test_claims.py::test_verdicts_are_read_over_the_seeds_not_from_one_seed",),
        "the curve verdicts are read from the first seed instead of over all seeds",
    ),
    Mutation(
        "interval-from-first-seed", "report_builder/views.py",
        "view.interval = analysis.accuracy_interval(view.correct)",
        "view.interval = analysis.accuracy_interval(view.correct[:1])",
        ("tests/test_render.py::test_model_page_has_a_per_seed_table",),
        "a model's interval is bootstrapped from its first seed only",
    ),
    Mutation(
        "compare-better-on-positive-estimate", "report_builder/views.py",
        "outcome = BETTER if difference.low > 0 else WORSE if difference.high < 0 else NO_CLEAR_DIFFERENCE",
        "outcome = BETTER if difference.estimate > 0 else WORSE if difference.high < 0 else NO_CLEAR_DIFFERENCE",
        ("tests/test_render.py::test_a_paired_interval_that_includes_zero_ranks_nothing",
         "tests/test_render.py::test_chosen_model_within_noise_of_runner_up_is_not_ranked"),
        "a model is called better whenever its estimate is positive, even when the interval includes zero",
    ),
    Mutation(
        "compare-worse-on-negative-estimate", "report_builder/views.py",
        "outcome = BETTER if difference.low > 0 else WORSE if difference.high < 0 else NO_CLEAR_DIFFERENCE",
        "outcome = BETTER if difference.low > 0 else WORSE if difference.estimate < 0 else NO_CLEAR_DIFFERENCE",
        ("tests/test_render.py::test_a_model_clearly_below_the_one_before_is_called_worse",),
        "a model is called worse whenever its estimate is negative, even when the interval includes zero",
    ),
    Mutation(
        "control-comparison-reversed", "report_builder/views.py",
        "                return compare(finetune, control, {model.name: model for model in models}, base_weights)",
        "                return compare(control, finetune, {model.name: model for model in models}, base_weights)",
        ("tests/test_render.py::test_finetune_page_continues_transfer_and_compares_with_its_control",),
        "finetune's comparison with its control is written the wrong way round (control minus finetune)",
    ),
    Mutation(
        "download-settings-listed-for-other-data", "report_builder/views.py",
        '    if key in ("data.url", "data.archive_sha256"):\n        return source == "download"',
        '    if key in ("data.url", "data.archive_sha256"):\n        return True',
        ("tests/test_render.py::test_the_method_page_lists_only_the_settings_that_applied",),
        "the method page lists the download URL and archive hash for a run that read a folder",
    ),
    Mutation(
        "finetune-settings-listed-without-finetune", "report_builder/views.py",
        '    if key == "training.finetune_from_layer":\n        return any(recipe.unfreeze_from_layer is None for recipe in finetune_defaults)',
        '    if key == "training.finetune_from_layer":\n        return bool(epochs_defaults)',
        ("tests/test_render.py::test_the_method_page_lists_only_the_settings_that_applied",),
        "the method page lists the fine-tuning settings for a run where only the control read finetune_epochs",
    ),
    Mutation(
        "paired-sentence-swapped", "report_builder/templates/_macros.md.j2",
        "{% if c.outcome == outcomes.better %}{{ c.first }} is better{% elif c.outcome == outcomes.worse %}{{ c.second }} is better",
        "{% if c.outcome == outcomes.better %}{{ c.second }} is better{% elif c.outcome == outcomes.worse %}{{ c.first }} is better",
        ("tests/test_render.py::test_clearly_separated_models_are_ranked",
         "tests/test_render.py::test_a_paired_interval_that_includes_zero_ranks_nothing"),
        "the paired sentence names the other model as the better one",
    ),
    Mutation(
        "paired-sentence-worse-names-first", "report_builder/templates/_macros.md.j2",
        "{% elif c.outcome == outcomes.worse %}{{ c.second }} is better",
        "{% elif c.outcome == outcomes.worse %}{{ c.first }} is better",
        ("tests/test_render.py::test_a_model_clearly_below_the_one_before_is_called_worse",),
        "when the first model is clearly worse, the sentence still calls it better",
    ),
    Mutation(
        "learned-something-at-baseline", "report_builder/templates/model.md.j2",
        "{% if model.interval.low > baseline.accuracy.validation %}",
        "{% if model.interval.estimate > baseline.accuracy.validation %}",
        ("tests/test_claims.py::test_verdicts_are_read_over_the_seeds_not_from_one_seed",),
        "'the model learned something' is said when the interval reaches down to the baseline but the estimate is above it",
    ),
    Mutation(
        "final-epoch-shows-best-value", "report_builder/templates/model.md.j2",
        "{{ r.last_val_accuracy | percent }} ({{ r.last_epoch | count }})",
        "{{ r.best_val_accuracy | percent }} ({{ r.last_epoch | count }})",
        ("tests/test_claims.py::test_last_and_best_epoch_each_get_their_own_numbers",),
        "the seed table's final-accuracy column quotes the best epoch's validation accuracy",
    ),
    Mutation(
        "reference-trained-on-test-counted", "report_builder/references.py",
        "counted = [reference for reference in matching if not reference.trained_on_test]",
        "counted = list(matching)",
        ("tests/test_references.py::test_summarize_excludes_entries_that_trained_on_test",
         "tests/test_claims.py::test_reference_figures_come_from_the_sourced_table"),
        "a reference figure from a write-up that trained on its test split is counted",
    ),
    Mutation(
        "trained-on-test-caveat-case-sensitive", "report_builder/references.py",
        r'_TRAINED_ON_TEST = re.compile(r"\btrain(?:ed|s)? on (?:its|the) test\b", re.IGNORECASE)',
        r'_TRAINED_ON_TEST = re.compile(r"\btrain(?:ed|s)? on (?:its|the) test\b")',
        ("tests/test_references.py::test_summarize_when_every_entry_trained_on_test",),
        "a caveat written 'Trained on the test split' is not recognised, so its figure is counted",
    ),
    Mutation(
        "tested-once-note-without-test", "report_builder/templates/index.md.j2",
        '{% if test is not none %}\nThe chosen model is',
        '{% if test is none or test is not none %}\nThe chosen model is',
        ("tests/test_claims.py::test_a_run_without_a_test_evaluation_does_not_claim_one",),
        "a run without a test evaluation still claims to have tested the chosen model once",
    ),
    # ---- the per-seed numbers (report_builder.observations)
    Mutation(
        "epoch-fallback-off-by-one", "report_builder/observations.py",
        'epoch_number = raw.get("epoch", index + 1)',
        'epoch_number = raw.get("epoch", index)',
        ("tests/test_observations.py::test_records_without_an_epoch_number_count_from_one",),
        "records without an epoch number are numbered from 0",
    ),
    Mutation(
        "population-std", "report_builder/observations.py",
        "    return statistics.stdev(values)",
        "    return statistics.pstdev(values)",
        ("tests/test_observations.py::test_sample_standard_deviation_divides_by_n_minus_one",
         "tests/test_render.py::test_model_page_has_a_per_seed_table"),
        "the spread over seeds divides by n, not n - 1",
    ),
    Mutation(
        "accuracy-range-not-checked", "report_builder/observations.py",
        "if number is not None and not 0.0 <= number <= 1.0:",
        "if False:",
        ("tests/test_render.py::test_an_accuracy_outside_0_to_1_is_not_reported",),
        "an accuracy outside 0..1 in a history is reported instead of rejected",
    ),
    Mutation(
        "onednn-label-swapped", "experiments/runtime.py",
        'return "oneDNN" if enabled else "Eigen (oneDNN off)"',
        'return "Eigen (oneDNN off)" if enabled else "oneDNN"',
        ("tests/test_runtime.py",),
        "the manifest records the wrong CPU kernels",
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
        ("tests/test_publish.py::test_a_journal_naming_other_folders_never_removes_them",),
        "the journal may name any folder beside the target for removal",
    ),
    Mutation(
        "diverged-called-failed", "experiments/study/",
        "    if FAILED in statuses:\n        status = FAILED\n    elif DIVERGED in statuses:\n        status = DIVERGED",
        "    if FAILED in statuses:\n        status = FAILED\n    elif DIVERGED in statuses:\n        status = FAILED",
        ("tests/test_concurrency.py::test_healing_derives_models_and_status_from_the_states",),
        "a diverged model is reported as failed",
    ),
    Mutation(
        "negative-label-counts-read", "experiments/artifacts.py",
        "        if not _is_integer(value) or value < 0:\n            raise fields.fail(f\"{name}.{key}\", \"must be a count (an integer, 0 or more)\")",
        "        if not _is_integer(value):\n            raise fields.fail(f\"{name}.{key}\", \"must be a count (an integer, 0 or more)\")",
        ("tests/test_artifact_records.py::test_a_malformed_run_file_is_one_error_naming_the_file_and_the_field",),
        "a dataset.json with a negative class count is read as if it were a count",
    ),
    Mutation(
        "execution-left-out-of-the-manifest", "experiments/artifacts.py",
        "            data[\"execution\"] = self.execution.to_fields()",
        "            pass",
        ("tests/test_artifact_records.py",),
        "the manifest forgets how its cells were run (workers, scheduler, task, strategy)",
    ),
    Mutation(
        "tie-break-called-the-most-common-class", "report_builder/views.py",
        "\"all_tied\": len(tied) == len(dataset.class_names) > 1}",
        "\"all_tied\": False}",
        ("tests/test_render.py::test_the_majority_baseline_says_when_its_class_is_a_tie_break",),
        "with equally common classes the write-up calls its first class the most common one",
    ),
    Mutation(
        "healed-manifest-keeps-the-old-config", "experiments/study/",
        "            header = replace(previous, run_name=config.study.run_name, config=config.to_dict(),\n"
        "                             config_hash=config_hash(config), seeds=config.seeds)",
        "            header = replace(previous, run_name=config.study.run_name, seeds=config.seeds)",
        ("tests/test_concurrency.py::test_healing_derives_models_and_status_from_the_states",),
        "a healed manifest keeps the config and config hash of the run before it",
    ),
    Mutation(
        "stopped-run-left-running", "experiments/study/",
        "                self.refresh(\"interrupted\")",
        "                self.refresh(\"running\")",
        ("tests/test_study.py::test_interrupted_training_resumes_with_every_epoch_once",),
        "a train stopped by Ctrl-C leaves its manifest saying the run is still running",
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
