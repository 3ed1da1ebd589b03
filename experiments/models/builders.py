"""Models from the study's own code: a `recipe = "keras"` model's builder function.

    [models.mine]
    recipe = "keras"
    builder = "models.py:build"      # relative to the config file, or "package.module:build"
    params = { width = 64 }          # build(input_shape, num_classes, width=64)
    outputs = "logits"               # or "probabilities" when the model ends in a softmax

The builder is called as `build(input_shape=(height, width, 3), num_classes=N, **params)` and
returns a `keras.Model` that takes float pixels in [0, 255]. A config with a builder runs that
code. Everything that can go wrong with it (the file cannot be imported, the function is
missing or raises, it returns something that is not a Keras model, or a model with the wrong
input or output shape, or one that cannot be saved and loaded back) is found by
:func:`check_builders` before any model trains, and said in one sentence naming the config key
and the file (a ConfigError: exit status 2).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from experiments.errors import ConfigError
from experiments.models.local_imports import local_imports
from experiments.models.recipes import ModelRecipe, builder_is_file, split_builder


def _where(recipe: ModelRecipe) -> str:
    return recipe.builder_file or recipe.builder


def _fail(recipe: ModelRecipe, problem: str) -> ConfigError:
    text = " ".join(problem.split())
    return ConfigError(f"models.{recipe.name}.builder = {recipe.builder!r} ({_where(recipe)}): {text}")


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def load_builder(recipe: ModelRecipe) -> Callable[..., Any]:
    """The builder function of a keras model, its module imported (once per file version:
    the module's name carries the file's digest, so an edited file is imported afresh)."""
    where, function = split_builder(recipe.builder, f"models.{recipe.name}.builder")
    if builder_is_file(where):
        path = Path(recipe.builder_file or where)
        if not path.is_file():
            raise _fail(recipe, "the file does not exist (a builder file is found relative to the config file)")
        module_name = f"_study_builder_{(recipe.builder_sha256 or 'unhashed')[:16]}_{path.stem}"
        module = sys.modules.get(module_name)
        if module is None:
            _import_from_folder(path)
            spec = importlib.util.spec_from_file_location(module_name, path)
            if spec is None or spec.loader is None:
                raise _fail(recipe, "the file cannot be imported as Python")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException as error:  # a SyntaxError, ImportError or anything its top level raises
                del sys.modules[module_name]
                if isinstance(error, KeyboardInterrupt):
                    raise
                raise _fail(recipe, f"importing it failed with {_reason(error)}") from None
    else:
        try:
            module = importlib.import_module(where)
        except BaseException as error:
            if isinstance(error, KeyboardInterrupt):
                raise
            raise _fail(recipe, f"importing module {where} failed with {_reason(error)}") from None
    builder = getattr(module, function, None)
    if not callable(builder):
        raise _fail(recipe, f"it defines no function {function}")
    return builder


def _import_from_folder(path: Path) -> None:
    """Let a builder file import its helpers as a script would: its folder goes first on sys.path
    (and stays, for imports inside the builder function), and the helpers it imports from there
    (experiments.models.local_imports) that this process imported before are dropped from
    sys.modules, so that a builder whose digest changed with an edited helper gets the helper afresh."""
    folder = path.resolve().parent
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    for file in local_imports(path):
        parts = list(file.relative_to(folder).with_suffix("").parts)
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        module = sys.modules.get(name)
        module_file = getattr(module, "__file__", None)
        if module_file and Path(module_file).resolve() == file:
            del sys.modules[name]


def builder_docstring(recipe: ModelRecipe) -> str:
    """The builder function's docstring, as one paragraph ("" when it has none)."""
    return " ".join((inspect.getdoc(load_builder(recipe)) or "").split())


def build_user_model(recipe: ModelRecipe, image_size: tuple[int, int], class_count: int) -> Any:
    """Call the builder and check what it returns: a keras.Model taking (height, width, 3) images
    and giving `class_count` outputs per image. ConfigError (naming the key and file) otherwise."""
    import keras

    builder = load_builder(recipe)
    input_shape = (int(image_size[0]), int(image_size[1]), 3)
    try:
        model = builder(input_shape=input_shape, num_classes=class_count, **recipe.params)
    except BaseException as error:
        if isinstance(error, KeyboardInterrupt):
            raise
        raise _fail(recipe, f"calling it with input_shape={input_shape}, num_classes={class_count} and "
                            f"params {recipe.params} raised {_reason(error)}") from None
    if not isinstance(model, keras.Model):
        raise _fail(recipe, f"it returned a {type(model).__name__}, not a keras.Model")
    inputs = model.inputs if getattr(model, "inputs", None) else None
    if inputs is None or len(inputs) != 1:
        raise _fail(recipe, "its model must have exactly one input, of images (height, width, 3); build it with "
                            "keras.Input(shape=input_shape) or give its first layer input_shape")
    got_input = tuple(inputs[0].shape)[1:]
    if len(got_input) != 3 or any(want != got and got is not None for want, got in zip(input_shape, got_input)):
        raise _fail(recipe, f"its model takes inputs of shape {got_input}, but the images are {input_shape}")
    outputs = model.outputs
    got_output = tuple(outputs[0].shape)[1:] if outputs and len(outputs) == 1 else None
    if got_output != (class_count,):
        shown = [tuple(output.shape)[1:] for output in outputs or []]
        raise _fail(recipe, f"its model must output one vector of {class_count} {recipe.outputs} per image "
                            f"(shape (batch, {class_count})), but it outputs {shown[0] if len(shown) == 1 else shown}")
    return model


def _check_saveable(recipe: ModelRecipe, model: Any) -> None:
    """The runner saves a checkpoint every epoch and loads it to resume, to test and to continue:
    the model must survive a save and a load (a subclassed model needs get_config and
    @keras.saving.register_keras_serializable)."""
    import keras

    with tempfile.TemporaryDirectory(prefix="builder-check-") as folder:
        path = Path(folder) / "model.keras"
        try:
            model.save(path)
            keras.models.load_model(path)
        except BaseException as error:
            if isinstance(error, KeyboardInterrupt):
                raise
            raise _fail(recipe, f"its model cannot be saved and loaded back ({_reason(error)}); the runner saves it "
                                "every epoch to resume, so custom layers or models need get_config and "
                                "@keras.saving.register_keras_serializable") from None


def check_builders(config: Any, image_size: tuple[int, int], class_count: int) -> None:
    """Build every keras model of the study once, before any training, so that a broken builder
    stops the run with one sentence instead of failing cell after cell."""
    import keras

    for model_name in config.study.models:
        recipe = config.recipe(model_name)
        if recipe.recipe != "keras":
            continue
        try:
            _check_saveable(recipe, build_user_model(recipe, image_size, class_count))
        finally:
            keras.backend.clear_session()
