"""The ImageNet pre-trained backbones a transfer model can stand on: keras.applications models
without their classifier top, by config name.

The metadata (:data:`BACKBONES`, names, preprocessing sentences, weight-file addresses) needs no
TensorFlow: the report builder imports it. Keras is imported inside the functions that build.

Every backbone takes float pixels in [0, 255] once :func:`preprocessing_layer` (None for the
backbones that normalise inside the network) has been applied. The weight-file addresses are the
ones keras.applications downloads from (Keras 3, `include_top=False`), so an offline user can be
told exactly which file to fetch elsewhere.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.errors import ConfigError

_APPLICATIONS = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclass(frozen=True)
class Backbone:
    name: str  # the config value
    display_name: str  # the keras.applications name, for text
    application: str  # the attribute of keras.applications that builds it
    preprocessing: str  # one plain sentence for a report: what happens to the [0, 255] pixels first
    minimum_side: int  # the smallest square input side keras.applications accepts
    module: str  # the keras.applications submodule (its preprocess_input)
    normalisation: str  # the normalisation layers inside: "BatchNormalization" or "LayerNormalization"
    preprocessing_inside: bool  # the application normalises [0, 255] pixels itself (include_preprocessing=True)
    weights_folder: str  # under https://storage.googleapis.com/tensorflow/keras-applications/
    notop_file: str  # the no-top ImageNet file name, with {side} where it depends on the input size
    weights_sides: tuple[int, ...] = ()  # square sides with their own file; others get default_side's
    default_side: int = 224  # the input side it was trained on in ImageNet
    # "tf" (x / 127.5 - 1), "torch" (ImageNet mean and standard deviation), "caffe" (RGB to BGR
    # and ImageNet's BGR mean subtracted): what preprocess_input does, before the network; unused
    # when preprocessing_inside
    preprocess_mode: str = "tf"
    preprocessing_argument: bool = True  # it takes include_preprocessing (EfficientNet B0-B7 always normalise)
    url_file: str = ""  # the file name at the address, where it differs from the cached one (NASNet)
    weights_base: str = ""  # the address's folder, where it is not under _APPLICATIONS (EfficientNet B0-B7)
    own: bool = False  # the study's own code builds it ("FILE.py:function"): no ImageNet file, no download

    def weights_file(self, image_size: tuple[int, int]) -> str:
        """The name of the no-top ImageNet weights file keras.applications loads for `image_size`
        (height, width). Only MobileNetV2's depends on it: a square side of 96, 128, 160, 192 or
        224 has its own file, any other size falls back to 224's."""
        rows, cols = int(image_size[0]), int(image_size[1])
        side = rows if rows == cols and rows in self.weights_sides else self.default_side
        return self.notop_file.format(side=side)

    def weights_url(self, image_size: tuple[int, int]) -> str:
        """The address keras.applications downloads that file from."""
        base = self.weights_base or f"{_APPLICATIONS}{self.weights_folder}/"
        return f"{base}{self.url_file or self.weights_file(image_size)}"


_SCALED_TO_UNIT = "scaled from [0, 255] to [-1, 1]"

BACKBONES: dict[str, Backbone] = {
    backbone.name: backbone
    for backbone in (
        Backbone(
            name="mobilenet_v2",
            display_name="MobileNetV2",
            application="MobileNetV2",
            preprocessing=_SCALED_TO_UNIT,
            minimum_side=32,
            module="mobilenet_v2",
            normalisation="BatchNormalization",
            preprocessing_inside=False,
            weights_folder="mobilenet_v2",
            notop_file="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{side}_no_top.h5",
            weights_sides=(96, 128, 160, 192, 224),
        ),
        Backbone(
            name="efficientnetv2_b0",
            display_name="EfficientNetV2B0",
            application="EfficientNetV2B0",
            preprocessing="scaled to [0, 1] and normalised with ImageNet's per-channel mean and standard deviation, inside the network",
            minimum_side=32,
            module="efficientnet_v2",
            normalisation="BatchNormalization",
            preprocessing_inside=True,
            weights_folder="efficientnet_v2",
            notop_file="efficientnetv2-b0_notop.h5",
        ),
        Backbone(
            name="resnet50v2",
            display_name="ResNet50V2",
            application="ResNet50V2",
            preprocessing=_SCALED_TO_UNIT,
            minimum_side=32,
            module="resnet_v2",
            normalisation="BatchNormalization",
            preprocessing_inside=False,
            weights_folder="resnet",
            notop_file="resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
        ),
        Backbone(
            name="convnext_tiny",
            display_name="ConvNeXtTiny",
            application="ConvNeXtTiny",
            preprocessing="normalised with ImageNet's per-channel mean and standard deviation, inside the network",
            minimum_side=32,
            module="convnext",
            normalisation="LayerNormalization",
            preprocessing_inside=True,
            weights_folder="convnext",
            notop_file="convnext_tiny_notop.h5",
        ),
    )
}


_TF = "scaled from [0, 255] to [-1, 1]"
_TORCH = "scaled to [0, 1] and normalised with ImageNet's per-channel mean and standard deviation"
_CAFFE = "turned from RGB to BGR order with ImageNet's mean pixel subtracted"
_INSIDE = "normalised inside the network"


def _keras_application(application: str, module: str, mode: str, folder: str, notop: str, side: int = 224, minimum: int = 32,
                 normalisation: str = "BatchNormalization", **extra: Any) -> Backbone:
    preprocessing = {"tf": _TF, "torch": _TORCH, "caffe": _CAFFE, "inside": _INSIDE}[mode]
    return Backbone(name=application, display_name=application, application=application, preprocessing=preprocessing,
                    minimum_side=minimum, module=module, normalisation=normalisation, preprocessing_inside=mode == "inside",
                    weights_folder=folder, notop_file=notop, default_side=side,
                    preprocess_mode=mode if mode != "inside" else "tf", **extra)


def _resnet(application: str, v2: bool) -> Backbone:
    stem = application.lower()
    return _keras_application(application, "resnet_v2" if v2 else "resnet", "tf" if v2 else "caffe", "resnet",
                        f"{stem}_weights_tf_dim_ordering_tf_kernels_notop.h5")


_EFFICIENTNET_SIDES = {"B0": 224, "B1": 240, "B2": 260, "B3": 300, "B4": 380, "B5": 456, "B6": 528, "B7": 600}
_EFFICIENTNETV2_SIDES = {"B0": 224, "B1": 240, "B2": 260, "B3": 300, "S": 384, "M": 480, "L": 480}

#: Every keras.applications backbone, by its keras.applications name (ResNet50V2, ConvNeXtTiny,
#: EfficientNetV2S, DenseNet121, ...): its preprocessing, ImageNet input side, minimum side and
#: the no-top weights file keras.applications downloads. No TensorFlow needed to read it.
APPLICATIONS: dict[str, Backbone] = {
    backbone.name: backbone
    for backbone in (
        _keras_application("Xception", "xception", "tf", "xception", "xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
                     side=299, minimum=71),
        _keras_application("VGG16", "vgg16", "caffe", "vgg16", "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", normalisation="none"),
        _keras_application("VGG19", "vgg19", "caffe", "vgg19", "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5", normalisation="none"),
        *(_resnet(f"ResNet{depth}", False) for depth in (50, 101, 152)),
        *(_resnet(f"ResNet{depth}V2", True) for depth in (50, 101, 152)),
        _keras_application("InceptionV3", "inception_v3", "tf", "inception_v3",
                     "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5", side=299, minimum=75),
        _keras_application("InceptionResNetV2", "inception_resnet_v2", "tf", "inception_resnet_v2",
                     "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels_notop.h5", side=299, minimum=75),
        _keras_application("MobileNet", "mobilenet", "tf", "mobilenet", "mobilenet_1_0_{side}_tf_no_top.h5",
                     weights_sides=(128, 160, 192, 224)),
        _keras_application("MobileNetV2", "mobilenet_v2", "tf", "mobilenet_v2",
                     "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_{side}_no_top.h5", weights_sides=(96, 128, 160, 192, 224)),
        _keras_application("MobileNetV3Small", "mobilenet_v3", "inside", "mobilenet_v3", "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"),
        _keras_application("MobileNetV3Large", "mobilenet_v3", "inside", "mobilenet_v3", "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5"),
        *(_keras_application(f"DenseNet{depth}", "densenet", "torch", "densenet", f"densenet{depth}_weights_tf_dim_ordering_tf_kernels_notop.h5")
          for depth in (121, 169, 201)),
        _keras_application("NASNetMobile", "nasnet", "tf", "nasnet", "nasnet_mobile_no_top.h5", url_file="NASNet-mobile-no-top.h5"),
        _keras_application("NASNetLarge", "nasnet", "tf", "nasnet", "nasnet_large_no_top.h5", side=331, url_file="NASNet-large-no-top.h5"),
        *(_keras_application(f"EfficientNet{size}", "efficientnet", "inside", "", f"efficientnet{size.lower()}_notop.h5", side=side,
                       preprocessing_argument=False, weights_base="https://storage.googleapis.com/keras-applications/")
          for size, side in _EFFICIENTNET_SIDES.items()),
        *(_keras_application(f"EfficientNetV2{size}", "efficientnet_v2", "inside", "efficientnet_v2", f"efficientnetv2-{size.lower()}_notop.h5",
                       side=side) for size, side in _EFFICIENTNETV2_SIDES.items()),
        *(_keras_application(f"ConvNeXt{size}", "convnext", "inside", "convnext", f"convnext_{size.lower()}_notop.h5",
                       normalisation="LayerNormalization") for size in ("Tiny", "Small", "Base", "Large", "XLarge")),
    )
}


def own_backbone(value: str) -> Backbone:
    """A backbone of the study's own code, `value` being "FILE.py:function" or "module:function":
    its builder takes [0, 255] pixels as they are and gives it the weights it wants
    (experiments.models.builders.build_own_backbone builds and checks it)."""
    where, _, function = value.rpartition(":")
    return Backbone(name=value, display_name=f"{Path(where).name}:{function}", application="",  # a file by its name, a module by its dotted name
                    preprocessing="passed on as they are, from 0 to 255 (the backbone's builder scales them)", minimum_side=1,
                    module="", normalisation="", preprocessing_inside=True, weights_folder="", notop_file="", own=True)


def backbone_named(name: str, owner: str) -> Backbone:
    """The backbone called `name`: one of the four short names (mobilenet_v2, efficientnetv2_b0,
    resnet50v2, convnext_tiny), any keras.applications name (ResNet50V2, ConvNeXtTiny, ...) or
    "FILE.py:function" for one of the study's own; `owner` is the config key that named it, for the error."""
    if isinstance(name, str) and ":" in name:
        return own_backbone(name)
    if isinstance(name, str) and name in BACKBONES:
        return BACKBONES[name]
    if isinstance(name, str) and name in APPLICATIONS:
        return APPLICATIONS[name]
    raise ConfigError(f"{owner}: unknown backbone {name!r}; known: {', '.join(BACKBONES)}, a keras.applications name "
                      f"({', '.join(APPLICATIONS)}), or your own as \"FILE.py:function\"")


def preprocessing_layer(backbone: Backbone) -> Any:
    """A Keras layer that turns [0, 255] float pixels into what `backbone` expects, or None when the
    keras.applications model does it inside (EfficientNetV2 and ConvNeXt, include_preprocessing=True).

    MobileNetV2 and ResNet50V2 use preprocess_input's "tf" mode, x / 127.5 - 1: as a Rescaling
    layer it is the same arithmetic and saves and loads without Lambda deserialisation."""
    if backbone.preprocessing_inside:
        return None
    from keras import initializers, layers

    name = f"{backbone.name}_preprocess"
    if backbone.preprocess_mode == "torch":  # (x / 255 - mean) / std, per channel
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        return layers.Normalization(mean=[255.0 * value for value in mean], variance=[(255.0 * value) ** 2 for value in std],
                                    name=name)
    if backbone.preprocess_mode == "caffe":  # BGR order, ImageNet's BGR mean subtracted: a fixed 1x1 convolution
        swap = [[[[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]]]  # (1, 1, in, out): output c takes input 2 - c
        return layers.Conv2D(3, 1, kernel_initializer=initializers.Constant(swap),
                             bias_initializer=initializers.Constant([-103.939, -116.779, -123.68]), trainable=False, name=name)
    return layers.Rescaling(scale=1.0 / 127.5, offset=-1.0, name=name)


def _check_size(backbone: Backbone, image_size: tuple[int, int], model_name: str) -> None:
    rows, cols = int(image_size[0]), int(image_size[1])
    if min(rows, cols) < backbone.minimum_side:
        raise ConfigError(
            f"model {model_name!r}: the {backbone.display_name} backbone needs images of at least "
            f"{backbone.minimum_side}x{backbone.minimum_side} pixels, got {rows}x{cols}"
        )


def _application(backbone: Backbone, image_size: tuple[int, int], weights: str | None) -> Any:
    import keras

    arguments: dict[str, Any] = {"input_shape": (int(image_size[0]), int(image_size[1]), 3), "include_top": False, "weights": weights}
    if backbone.preprocessing_inside and backbone.preprocessing_argument:
        arguments["include_preprocessing"] = True
    return getattr(keras.applications, backbone.application)(**arguments)


def _download_reason(error: BaseException) -> str:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    # Keras says "URL fetch failure on <url>: <errno> -- <reason>"; the URL is in our sentence already.
    if reason.startswith("URL fetch failure") and " -- " in reason:
        reason = reason.rsplit(" -- ", 1)[1]
    return reason


def _unavailable(backbone: Backbone, image_size: tuple[int, int], model_name: str, error: BaseException) -> Exception:
    from experiments.errors import DataError  # experiments.errors.DataError; no TensorFlow there either

    # The study's own MobileNetV2 models also take the command line's --base-weights.
    study_path, study_none = ("", "")
    if backbone.name == "mobilenet_v2":
        study_path, study_none = (" (--base-weights PATH for the study's MobileNetV2 models)", " (--base-weights none)")
    return DataError(
        f"Could not download the ImageNet weights of {backbone.display_name} for model {model_name!r} "
        f"({backbone.weights_file(image_size)} from {backbone.weights_url(image_size)}: {_download_reason(error)}); "
        f'if this machine is offline, point the model at a local copy of that file with weights = "PATH" in its '
        f'[models.{model_name}] table{study_path}, or train the backbone from random initial weights with weights = "none"{study_none}.'
    )


def _load_problem(base: Any, path: str) -> str | None:
    """Why `path` cannot be loaded into `base`, or None once it has been. Keras 3 raises for most
    mismatches, but loads a file that lacks some layers partially, with only a "Skipping" warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            base.load_weights(path)
        except Exception as error:  # h5py and Keras raise several types for a wrong file
            text = str(error).strip()
            return text.splitlines()[0].split(" Example error message")[0].rstrip(":. ") if text else type(error).__name__
    skipped = [str(item.message) for item in caught if "Skipping" in str(item.message)]
    if skipped:
        return f"{len(skipped)} part(s) of the backbone are not in the file ({skipped[0].split(': ')[0]})"
    return None


def build_backbone(backbone: Backbone, image_size: tuple[int, int], weights: str, model_name: str) -> Any:
    """`backbone` without its top, for images of `image_size` (height, width) in [0, 255] after
    :func:`preprocessing_layer`; `weights` = "imagenet" (Keras downloads them), "none" (random
    initial weights) or the path of a local .h5 / .weights.h5 file with this backbone's weights.

    Raises ConfigError for an image size below the backbone's minimum and for a file that does not
    hold this backbone's weights (both name the model), and experiments.errors.DataError when the
    ImageNet file cannot be downloaded (naming the file, its address and the two ways out)."""
    _check_size(backbone, image_size, model_name)
    weights = os.fspath(weights)
    if weights == "imagenet":
        try:
            return _application(backbone, image_size, "imagenet")
        except Exception as error:  # urllib, a failed checksum or a full disk: Keras raises several types
            raise _unavailable(backbone, image_size, model_name, error) from None
    base = _application(backbone, image_size, None)
    if weights == "none":
        return base
    if not Path(weights).is_file():
        raise ConfigError(f"model {model_name!r}: the weights file {weights} does not exist")
    problem = _load_problem(base, weights)
    if problem:
        raise ConfigError(f"model {model_name!r}: {weights} does not hold {backbone.display_name} (no top) weights: {problem}")
    return base


#: Layers per backbone, known for the four short names (the guide's table); others are counted once built.
_LAYER_COUNTS: dict[str, int] = {"mobilenet_v2": 154, "efficientnetv2_b0": 270, "resnet50v2": 190, "convnext_tiny": 133}


def layer_count(backbone: Backbone) -> int:
    """How many layers the backbone has (what finetune's unfreeze_from_layer counts), built once
    with random weights at its minimum side: the count does not depend on the input size."""
    if backbone.name not in _LAYER_COUNTS:
        import keras

        side = max(backbone.minimum_side, 32)
        _LAYER_COUNTS[backbone.name] = len(_application(backbone, (side, side), None).layers)
        keras.backend.clear_session()
    return _LAYER_COUNTS[backbone.name]


def check_unfreeze_layer(backbone: Backbone, from_layer: int, key: str, count: int | None = None) -> None:
    """ConfigError naming `key` when a finetune model's first layer to unfreeze is not a layer of
    `backbone` (a negative one counts from the top): found before any training, not after its
    source model has trained. `count`: its layers, where known (a backbone of the study's own,
    counted once built), else :func:`layer_count`."""
    count = layer_count(backbone) if count is None else count
    first = from_layer if from_layer >= 0 else count + from_layer
    if not 0 <= first < count:
        raise ConfigError(f"{key} is {from_layer}, but the {backbone.display_name} backbone has {count} layers "
                          f"(use 0 to {count - 1}, or -1 to -{count} to count from the top)")


def check_backbone_weights(backbone: Backbone, image_size: tuple[int, int], weights: str, model_name: str) -> None:
    """Build the backbone once before any training, so a failed download or a wrong weights file
    stops the run before hours of work rather than after (ConfigError or DataError as
    :func:`build_backbone`); the download stays in Keras's cache for the real build."""
    _check_size(backbone, image_size, model_name)
    if os.fspath(weights) == "none":
        return
    import keras

    try:
        build_backbone(backbone, image_size, weights, model_name)
    finally:
        keras.backend.clear_session()
