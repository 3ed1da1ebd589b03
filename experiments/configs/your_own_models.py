"""The builder of experiments/configs/your-own-models.toml: a small residual network of our own.

The runner calls `build(input_shape=(height, width, 3), num_classes=N, **params)` with the
table's `params` and trains the model it returns: pixel values from 0 to 255 in, one logit per
class out. The function's docstring is the model page's description.
"""

from __future__ import annotations

import keras
from keras import layers

# Batch normalisation's running statistics, which validation uses, follow each batch's at this rate.
# Keras's default (0.99) needs a few hundred steps to catch up; a short study on a few hundred
# images takes only dozens, and its validation accuracy would lag far behind training's.
BN_MOMENTUM = 0.9


def _residual_block(x, filters: int, stride: int):
    """Two 3x3 convolutions with batch normalisation, added to a shortcut (a 1x1 convolution
    where the block changes the resolution or the width)."""
    shortcut = x
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
    y = layers.BatchNormalization(momentum=BN_MOMENTUM)(y)
    y = layers.ReLU()(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
    y = layers.BatchNormalization(momentum=BN_MOMENTUM)(y)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False)(shortcut)
        shortcut = layers.BatchNormalization(momentum=BN_MOMENTUM)(shortcut)
    return layers.ReLU()(layers.Add()([y, shortcut]))


def build(input_shape, num_classes, width=16):
    """A small residual network of our own: pixels scaled to [-1, 1], a strided 3x3 stem
    convolution, two residual blocks (two 3x3 convolutions with batch normalisation and a
    shortcut each; the second halves the resolution and doubles the width), global average
    pooling and a dense layer with one logit per class."""
    inputs = keras.Input(shape=input_shape)
    x = layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = layers.Conv2D(width, 3, strides=2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
    x = layers.ReLU()(x)
    x = _residual_block(x, width, 1)
    x = _residual_block(x, 2 * width, 2)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(num_classes)(x), name="residual")
