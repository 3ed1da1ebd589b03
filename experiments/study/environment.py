"""Where a run ran (packages, hardware, git commit, base weights) and the checks made before any data is read or anything trained."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from experiments.artifacts.files import file_sha256
from experiments.artifacts.run_records import BaseWeights
from experiments.config import StudyConfig
from experiments.console import log
from experiments.models.backbones import backbone_named, check_backbone_weights, check_unfreeze_layer
from experiments.models.builders import check_builders as check
from experiments.models.builders import uses_study_code
from experiments.models.recipes import OWN_WEIGHTS, backbone_of, is_own_backbone
from experiments.runtime import describe_cpu_kernels, processor_name
from experiments.training.tracking import (
    check_tracking_packages,
    network_message,
    network_needs,
)

CODE_ROOT = Path(__file__).resolve().parents[2]  # the checkout the runner runs from: its git commit goes into the manifest


PACKAGES = ("tensorflow", "keras", "numpy", "pillow", "matplotlib", "jinja2", "mkdocs", "mkdocs-material")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def hardware_and_devices() -> tuple[dict[str, Any], list[str]]:
    import tensorflow as tf

    devices = [device.name for device in tf.config.list_physical_devices()]
    gpus = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        gpus.append(details.get("device_name", gpu.name))
    hardware = {
        "platform": platform.platform(),
        "processor": processor_name(),
        "cpu_count": os.cpu_count(),
        "gpus": gpus,
        "cpu_kernels": describe_cpu_kernels(),
    }
    return hardware, devices


def git_commit() -> str | None:
    """HEAD of the project's repository, with "-dirty" if tracked files have changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=CODE_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=CODE_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def describe_base_weights(setting: str) -> BaseWeights:
    """manifest.base_weights: where the MobileNetV2 weights came from, and for a local file its
    sha256, so a reader can tell which weights a run used (the report's method page shows it)."""
    if setting in ("imagenet", "none"):
        return BaseWeights(setting)
    path = Path(setting)
    try:
        sha256 = file_sha256(path)
    except OSError:
        sha256 = None
    return BaseWeights("file", str(path), path.name, sha256)


def preflight(config: StudyConfig) -> None:
    """Checks that can fail fast, before data is read or anything trained; then one message with
    every network need of the run, before anything downloads."""
    check_tracking_packages(config)
    message = network_message(network_needs(config))
    if message:
        log(message)

    checked = set()
    for model_name in config.study.models:
        recipe = config.recipe(model_name)
        weights = config.weights_of(model_name)
        if recipe.recipe != "transfer" or weights in ("none", OWN_WEIGHTS) or (recipe.backbone, weights) in checked:
            continue
        check_backbone_weights(backbone_named(recipe.backbone, f"models.{model_name}.backbone"), config.image_size, weights, model_name)
        checked.add((recipe.backbone, weights))
    for model_name in config.study.models:  # a finetune model's layer to unfreeze from is one of its backbone's
        recipe = config.recipe(model_name)
        if recipe.recipe == "finetune" and not is_own_backbone(backbone_of(model_name, config.models)):  # own: check_builders
            from_layer, key = config.unfreeze_from(model_name)
            check_unfreeze_layer(backbone_named(backbone_of(model_name, config.models), key), from_layer, key)


def check_builders(config: StudyConfig, image_size: tuple[int, int], class_count: int) -> None:
    """Build every model (and backbone) of the study's own code once (experiments.models.builders.check_builders)."""
    if uses_study_code(config):
        log("Checking the builders of the study's own models...")
        check(config, image_size, class_count)
