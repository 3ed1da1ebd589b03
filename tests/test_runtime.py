"""The runner asks TensorFlow for oneDNN's CPU kernels on x86-64, and leaves a user's choice alone."""

from __future__ import annotations

import os

from experiments.runtime import ONEDNN_VARIABLE, describe_cpu_kernels, onednn_enabled, prefer_onednn


def test_oneDNN_is_asked_for_on_x86_64_when_the_user_has_not_chosen():
    environment: dict[str, str] = {}
    assert prefer_onednn(environment, machine="x86_64") is True
    assert environment == {ONEDNN_VARIABLE: "1"}
    assert prefer_onednn(environment := {}, machine="AMD64") and environment[ONEDNN_VARIABLE] == "1"


def test_a_choice_already_in_the_environment_is_kept():
    for choice in ("0", "1", "false"):
        environment = {ONEDNN_VARIABLE: choice}
        assert prefer_onednn(environment, machine="x86_64") is False
        assert environment == {ONEDNN_VARIABLE: choice}


def test_other_processors_keep_tensorflow_s_default():
    for machine in ("aarch64", "arm64", "ppc64le"):
        environment: dict[str, str] = {}
        assert prefer_onednn(environment, machine=machine) is False
        assert environment == {}


def test_the_recorded_kernels_match_what_tensorflow_loaded():
    import tensorflow as tf  # noqa: F401  (the question is about the TensorFlow in this process)

    enabled = onednn_enabled()
    assert enabled in (True, False, None)
    expected = {True: "oneDNN", False: "Eigen (oneDNN off)", None: "unknown"}[enabled]
    assert describe_cpu_kernels() == expected
    # conftest asked for oneDNN before TensorFlow loaded; on x86-64 it must have taken effect
    if os.environ.get(ONEDNN_VARIABLE) == "1" and enabled is not None:
        assert enabled is True
    if os.environ.get(ONEDNN_VARIABLE) == "0" and enabled is not None:
        assert enabled is False
