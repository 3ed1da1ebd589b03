"""Models and backbones from the study's own code: a `recipe = "keras"` model's builder function,
and a transfer model's `backbone = "FILE.py:function"`.

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

A backbone function is called as `build(input_shape=(height, width, 3))` and returns a
`keras.Model` from the [0, 255] pixels to feature maps (batch, rows, columns, channels), with the
weights it wants (pre-trained ones it loads itself); the transfer recipe freezes it, pools,
drops out and classifies on top. It is checked the same way, before any training.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.errors import ConfigError
from experiments.models.backbones import backbone_named, check_unfreeze_layer
from experiments.models.local_imports import local_imports
from experiments.models.recipes import ModelRecipe, builder_is_file, chain_root, is_own_backbone, split_builder


@dataclass(frozen=True)
class _StudyCode:
    """Where a function of the study's own code is: the config key that names it, its value
    ("FILE.py:function" or "module:function"), its resolved file and that file's digest."""

    key: str
    value: str
    file: str
    digest: str

    def fail(self, problem: str) -> ConfigError:
        text = " ".join(problem.split())
        return ConfigError(f"{self.key} = {self.value!r} ({self.file or self.value}): {text}")


def _builder_code(recipe: ModelRecipe) -> _StudyCode:
    return _StudyCode(f"models.{recipe.name}.builder", recipe.builder, recipe.builder_file, recipe.builder_sha256)


def _backbone_code(recipe: ModelRecipe) -> _StudyCode:
    return _StudyCode(f"models.{recipe.name}.backbone", recipe.backbone, recipe.backbone_file, recipe.backbone_sha256)


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def load_builder(recipe: ModelRecipe) -> Callable[..., Any]:
    """The builder function of a keras model, its module imported (once per file version:
    the module's name carries the file's digest, so an edited file is imported afresh)."""
    return _load_function(_builder_code(recipe))


def load_backbone_builder(recipe: ModelRecipe) -> Callable[..., Any]:
    """The function that builds a transfer model's backbone of the study's own, imported as
    :func:`load_builder` imports a builder."""
    return _load_function(_backbone_code(recipe))


def _study_code(recipe: ModelRecipe) -> _StudyCode | None:
    """The study's own code a model is built by: a keras model's builder, a transfer model's
    backbone of its own; None for the other models."""
    if recipe.recipe == "keras":
        return _builder_code(recipe)
    if recipe.recipe == "transfer" and is_own_backbone(recipe.backbone):
        return _backbone_code(recipe)
    return None


def import_study_code(recipe: ModelRecipe) -> None:
    """Import the study's own code a model (the root of its chain) is built by, so that its custom
    layers are registered before a saved model of it is loaded; nothing for the other models."""
    code = _study_code(recipe)
    if code is not None:
        _load_function(code)


def _load_function(code: _StudyCode) -> Callable[..., Any]:
    where, function = split_builder(code.value, code.key)
    if builder_is_file(where):
        path = Path(code.file or where)
        if not path.is_file():
            raise code.fail("the file does not exist (a builder file is found relative to the config file)")
        module_name = f"_study_builder_{(code.digest or 'unhashed')[:16]}_{path.stem}"
        module = sys.modules.get(module_name)
        if module is None:
            _import_from_folder(path)
            spec = importlib.util.spec_from_file_location(module_name, path)
            if spec is None or spec.loader is None:
                raise code.fail("the file cannot be imported as Python")
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            try:
                spec.loader.exec_module(module)
            except BaseException as error:  # a SyntaxError, ImportError or anything its top level raises
                del sys.modules[module_name]
                if isinstance(error, KeyboardInterrupt):
                    raise
                raise code.fail(f"importing it failed with {_reason(error)}") from None
    else:
        try:
            module = importlib.import_module(where)
        except BaseException as error:
            if isinstance(error, KeyboardInterrupt):
                raise
            raise code.fail(f"importing module {where} failed with {_reason(error)}") from None
    builder = getattr(module, function, None)
    if not callable(builder):
        raise code.fail(f"it defines no function {function}")
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
    code = _builder_code(recipe)
    input_shape = (int(image_size[0]), int(image_size[1]), 3)
    model = _call(code, load_builder(recipe), f"input_shape={input_shape}, num_classes={class_count} and params {recipe.params}",
                  input_shape=input_shape, num_classes=class_count, **recipe.params)
    _check_image_input(code, model, input_shape)
    outputs = model.outputs
    got_output = tuple(outputs[0].shape)[1:] if outputs and len(outputs) == 1 else None
    if got_output != (class_count,):
        shown = [tuple(output.shape)[1:] for output in outputs or []]
        raise code.fail(f"its model must output one vector of {class_count} {recipe.outputs} per image "
                        f"(shape (batch, {class_count})), but it outputs {shown[0] if len(shown) == 1 else shown}")
    return model


def build_own_backbone(recipe: ModelRecipe, image_size: tuple[int, int]) -> Any:
    """Call a transfer model's backbone function, `build(input_shape=(height, width, 3))`, and check
    what it returns: a keras.Model taking the images (float pixels from 0 to 255) and giving feature
    maps (batch, rows, columns, channels), which the transfer model pools. Its weights are whatever
    the function gives it (pre-trained ones it loads itself). ConfigError naming the key and file otherwise."""
    code = _backbone_code(recipe)
    input_shape = (int(image_size[0]), int(image_size[1]), 3)
    model = _call(code, load_backbone_builder(recipe), f"input_shape={input_shape}", input_shape=input_shape)
    _check_image_input(code, model, input_shape)
    outputs = model.outputs
    if not outputs or len(outputs) != 1 or len(tuple(outputs[0].shape)) != 4:
        shown = [tuple(output.shape)[1:] for output in outputs or []]
        raise code.fail("a backbone must output one feature map per image, of shape (batch, rows, columns, channels), "
                        f"which the transfer model pools; it outputs {shown[0] if len(shown) == 1 else shown}")
    return model


def _call(code: _StudyCode, function: Callable[..., Any], arguments: str, **keywords: Any) -> Any:
    """What `function(**keywords)` returns, checked to be a keras.Model; ConfigError otherwise."""
    import keras

    try:
        model = function(**keywords)
    except BaseException as error:
        if isinstance(error, KeyboardInterrupt):
            raise
        raise code.fail(f"calling it with {arguments} raised {_reason(error)}") from None
    if not isinstance(model, keras.Model):
        raise code.fail(f"it returned a {type(model).__name__}, not a keras.Model")
    return model


def _check_image_input(code: _StudyCode, model: Any, input_shape: tuple[int, int, int]) -> None:
    inputs = model.inputs if getattr(model, "inputs", None) else None
    if inputs is None or len(inputs) != 1:
        raise code.fail("its model must have exactly one input, of images (height, width, 3); build it with "
                        "keras.Input(shape=input_shape) or give its first layer input_shape")
    got_input = tuple(inputs[0].shape)[1:]
    if len(got_input) != 3 or any(want != got and got is not None for want, got in zip(input_shape, got_input)):
        raise code.fail(f"its model takes inputs of shape {got_input}, but the images are {input_shape}")


def _check_saveable(code: _StudyCode, model: Any) -> None:
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
            raise code.fail(f"its model cannot be saved and loaded back ({_reason(error)}); the runner saves it "
                            "every epoch to resume, so custom layers or models need get_config and "
                            "@keras.saving.register_keras_serializable") from None


def uses_study_code(config: Any) -> bool:
    """Whether a model of the study is built by the study's own code: a keras model, or a transfer
    model on a backbone of its own (a continuing model's source is listed too)."""
    return any(_study_code(config.recipe(name)) is not None for name in config.study.models)


def check_builders(config: Any, image_size: tuple[int, int], class_count: int) -> None:
    """Build every model of the study's own code once (a keras model, a backbone of the study's
    own), before any training, so that a broken builder stops the run with one sentence instead of
    failing cell after cell; and check that each finetune model's layer to unfreeze from is a layer
    of such a backbone (experiments.models.backbones.check_unfreeze_layer does it for the named ones)."""
    import keras

    layer_counts: dict[str, int] = {}
    for model_name in config.study.models:
        recipe = config.recipe(model_name)
        code = _study_code(recipe)
        if code is None:
            continue
        try:
            if recipe.recipe == "keras":
                _check_saveable(code, build_user_model(recipe, image_size, class_count))
            else:
                backbone = build_own_backbone(recipe, image_size)
                _check_saveable(code, backbone)
                layer_counts[model_name] = len(backbone.layers)
        finally:
            keras.backend.clear_session()
    for model_name in config.study.models:
        root = chain_root(model_name, config.models).name
        if config.recipe(model_name).recipe == "finetune" and root in layer_counts:
            from_layer, key = config.unfreeze_from(model_name)
            check_unfreeze_layer(backbone_named(config.recipe(root).backbone, key), from_layer, key, layer_counts[root])
