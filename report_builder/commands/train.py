"""`train`: run the study (experiments/) and write a run's artifacts."""

from __future__ import annotations

import argparse
from pathlib import Path

from experiments.config import load_config
from experiments.runtime import quiet_tensorflow_start
from experiments.scale.cells import announce_task
from experiments.scale.run import options_from_arguments, run_scaled
from experiments.study.run import run_study
from report_builder.commands import OUTPUT


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


def train(arguments: argparse.Namespace) -> Path:
    config = load_config(arguments.config, config_overrides(arguments))
    OUTPUT["what"] = f"into the run folder {config.run_dir}"
    options = options_from_arguments(arguments.workers, arguments.scheduler, arguments.task_index, arguments.task_count,
                                     arguments.strategy, arguments.retries, verbose=arguments.verbose)
    if options.scaled:  # the cells train in worker processes; this one imports no TensorFlow
        run = run_scaled(config, arguments.force, options)
        print(f"Artifacts written to {run.root}")
        return run.root
    if not arguments.verbose:
        quiet_tensorflow_start()  # TensorFlow starts only if something trains or is tested
    if options.task is None and options.strategy == "none":
        run = run_study(config, force=arguments.force)
    else:
        task = options.task
        run = run_study(config, force=arguments.force, share=announce_task(config, task) if task else None,
                        strategy=options.strategy, execution=options.describe(), parallel=task.count if task else 1)
    print(f"Artifacts written to {run.root}")
    return run.root

