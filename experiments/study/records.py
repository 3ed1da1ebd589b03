"""manifest.study: the one place that resolves a stored config into what the report needs to know.

The report (report_builder) reads the run's files and nothing of the runner: it does not know
the built-in models, the recipes, the backbones or which config settings a model uses. This
module turns the config a manifest records (experiments.config.StudyConfig.to_dict) into
:class:`~experiments.artifacts.run_records.StudyRecord`: each model's resolved recipe, the comparison
plan's pairs, and the settings that applied to the models that ran. write_manifest records it
with every manifest, and scripts/upgrade_manifest.py adds it to a manifest written before it
was recorded, from that manifest's own config.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from experiments.artifacts.run_records import ComparisonPairs, Manifest, StudyModel, StudyRecord, as_dict, flatten_config
from experiments.config import MODEL_NAMES
from experiments.errors import ConfigError
from experiments.models.backbones import backbone_named
from experiments.models.recipes import (
    PLAN_PREVIOUS,
    TRAINING_KEYS,
    ComparisonPlan,
    ModelRecipe,
    check_name,
    comparison_plan,
    describe,
    is_own_backbone,
    parse_model,
    recipe_for,
)


def study_record(config: dict[str, Any], ran: Iterable[str]) -> StudyRecord:
    """manifest.study for a run of the stored `config` whose models `ran` (the names that have a
    manifest entry): the models in study order with their recipes, the planned comparisons, the
    settings that applied to the models that ran, and what in the config no longer reads."""
    problems: list[str] = []
    recipes = study_models(config, problems)
    plan = study_plan(config, [recipe.name for recipe in recipes], problems)
    ran = set(ran)
    settings = applied_settings(config, [recipe for recipe in recipes if recipe.name in ran])
    replaced = {recipe.name for recipe in recipes if recipe.declared}
    return StudyRecord([study_model(_in_its_own_words(recipe, replaced)) for recipe in recipes],
                       ComparisonPairs(plan.kind, plan.pairs, plan.reference), settings, problems)


def _in_its_own_words(recipe: ModelRecipe, replaced: set[str]) -> ModelRecipe:
    """A built-in continuing model (finetune, transfer_extended) that continues a model the config
    declares (a [models.transfer] table on another backbone) is described from its recipe, not in
    the built-in words, which speak of MobileNetV2. Only the words change: its hash keeps them."""
    if recipe.declared or recipe.continues_model not in replaced:
        return recipe
    return replace(recipe, title="", description="")


def with_study_record(manifest: Manifest) -> Manifest:
    """`manifest` with its study record derived from its own config and models (every number as it was)."""
    return replace(manifest, study=study_record(manifest.config, manifest.models))


def study_models(config: dict[str, Any], problems: list[str]) -> list[ModelRecipe]:
    """The study's models in study order, with their recipes, from the config the manifest
    records (study.models and its [models.<name>] tables); a run from before models were
    declared lists the built-in ones. A declaration that no longer reads is a problem, and the
    model is shown with the built-in recipe of its name, or left out."""
    listed = as_dict(config.get("study")).get("models")
    names = [name for name in listed if isinstance(name, str)] if isinstance(listed, list) else list(MODEL_NAMES)
    declared: dict[str, ModelRecipe] = {}
    for name, table in as_dict(config.get("models")).items():
        try:
            declared[name] = parse_model(name, table, "the manifest's config")
        except ConfigError as error:
            problems.append(f"manifest.json: {error}")
    recipes = []
    for name in names:
        try:
            check_name(name, "manifest.json: study.models")
            recipes.append(recipe_for(name, declared))
        except ConfigError as error:
            problems.append(f"manifest.json: {error}")
    return recipes


def study_plan(config: dict[str, Any], names: list[str], problems: list[str]) -> ComparisonPlan:
    """The comparisons the study planned (study.compare in the stored config, as
    experiments.config settled it), over the study's models `names`. A run from before plans, or
    one whose plan no longer reads (a problem), compares each model with the one before it."""
    declared = as_dict(config.get("study")).get("compare", PLAN_PREVIOUS)
    try:
        return comparison_plan(declared, names, {}, "manifest.json: study.compare")
    except ConfigError as error:
        problems.append(str(error))
        return comparison_plan(PLAN_PREVIOUS, names)


def study_model(recipe: ModelRecipe) -> StudyModel:
    """One model's resolved recipe, as the manifest records it."""
    known = None
    if recipe.recipe == "transfer":
        try:
            known = backbone_named(recipe.backbone, f"models.{recipe.name}.backbone")
        except ConfigError:  # an unknown backbone (a run from an older version): its name as it is
            known = None
    try:
        title, description = describe(recipe)
    except ConfigError:  # an unknown backbone: the model's own words, if any
        title, description = recipe.title, recipe.description
    values = {key: getattr(recipe, key) for key in TRAINING_KEYS}
    return StudyModel(
        name=recipe.name, recipe=recipe.recipe, title=title, description=description, declared=recipe.declared,
        augment=recipe.augment, rescale=recipe.rescale, dropout=recipe.dropout,
        backbone=recipe.backbone if recipe.recipe == "transfer" else "",
        backbone_name=(known.display_name if known else recipe.backbone) if recipe.recipe == "transfer" else "",
        preprocessing=known.preprocessing if known else "", weights=recipe.weights, continues=recipe.continues,
        epochs=recipe.epochs, unfreeze_from_layer=recipe.unfreeze_from_layer, learning_rate_factor=recipe.learning_rate_factor,
        builder=recipe.builder, training={key: value for key, value in values.items() if value not in (None, "")})


def applied_settings(config: dict[str, Any], models: list[ModelRecipe]) -> list[str]:
    """The config's settings (flatten_config's dotted keys) that applied to `models`, the ones
    that ran: a folder run does not list the download URL, a study without a transfer model
    not the base weights, ..."""
    return [key for key, _ in flatten_config(config) if _applies(key, config, models)]


def _applies(key: str, config: dict[str, Any], models: list[ModelRecipe]) -> bool:
    data = as_dict(config.get("data"))
    source = data.get("source")
    recipes = {recipe.recipe for recipe in models}
    # the continuing models that take these keys from [training] (not set in their own table)
    finetune_defaults = [recipe for recipe in models if recipe.recipe == "finetune"]
    epochs_defaults = [recipe for recipe in models if recipe.recipe in ("finetune", "train_on") and not recipe.epochs]
    if key in ("data.url", "data.archive_sha256"):
        return source == "download"
    if key == "data.cache_dir":  # the downloaded archive and the decoded-image cache
        return source in ("download", "folder")
    if key == "data.data_dir":
        return source == "folder"
    if key.startswith("data.synthetic_"):
        return source == "synthetic"
    if key == "training.base_weights":
        return any(recipe.recipe == "transfer" and not recipe.weights and not is_own_backbone(recipe.backbone) for recipe in models)
    if key == "training.validation_feature_cache":
        return "transfer" in recipes
    if key == "training.finetune_epochs":
        return bool(epochs_defaults)
    if key == "training.finetune_from_layer":
        return any(recipe.unfreeze_from_layer is None for recipe in finetune_defaults)
    if key == "training.finetune_learning_rate_factor":
        return any(recipe.learning_rate_factor is None for recipe in finetune_defaults)
    if key in ("study.title", "study.question"):
        return False  # the front page says them
    if key == "models":
        return False  # no [models] tables: every model is a built-in one
    if key.startswith("dataset."):
        return False  # shown in its own table
    return True
