"""A backbone of the study's own code for the tests: eight layers where MobileNetV2 has 154.

The tests that prove how the runner orders, locks, resumes and spreads a transfer -> finetune
chain (concurrency, killed workers, job arrays, Dask) name it as `backbone = "<this file>:build"`:
the same recipes, the same frozen base and unfrozen top, at the cost of a small CNN. The tests of
the keras.applications backbones themselves build those.
"""

import keras
from keras import layers


def build(input_shape):
    """Two strided 3x3 convolutions (8 and 16 filters), each with batch normalisation and ReLU:
    feature maps a quarter of the image's side."""
    inputs = keras.Input(shape=input_shape)
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    for filters in (8, 16):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    return keras.Model(inputs, x, name="tiny_backbone")
