"""The process's tf.distribute strategy for `--strategy` (`mirrored`: one MirroredStrategy per process)."""

from __future__ import annotations

from typing import Any

from experiments.console import log
from experiments.errors import UserError

STRATEGIES = ("none", "mirrored")


_STRATEGY: Any = None


def make_strategy(name: str):
    """The process's tf.distribute strategy for --strategy (None for "none"); made once per process.

    "mirrored": MirroredStrategy over the process's GPUs or, without a GPU, its logical CPU devices
    (one, unless tf.config.set_logical_device_configuration split the CPU, as the tests do). The
    batch size stays the global batch (each device gets batch_size / devices) and the learning rate
    is unchanged, so the training is the same one, split. No model here trains a BatchNormalization
    layer (the MobileNetV2 base's stay frozen, in inference mode, in transfer and finetune), so there
    are no batch statistics to synchronise across devices."""
    global _STRATEGY
    if name == "none":
        return None
    if name not in STRATEGIES:
        raise UserError(f"--strategy must be one of {', '.join(STRATEGIES)}, got {name!r}")
    if _STRATEGY is not None:
        return _STRATEGY
    import tensorflow as tf

    devices = [device.name for device in tf.config.list_logical_devices("GPU")]
    devices = devices or [device.name for device in tf.config.list_logical_devices("CPU")]
    _STRATEGY = tf.distribute.MirroredStrategy(devices=devices)
    log(f"MirroredStrategy over {len(devices)} device(s): {', '.join(devices)}"
        + ("" if len(devices) > 1 else " (one device: the strategy changes nothing)"))
    return _STRATEGY
