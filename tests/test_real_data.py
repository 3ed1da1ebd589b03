"""Optional checks on the real photos and weights in ../shared (skipped when absent)."""

from __future__ import annotations

import pytest

from tests.conftest import SHARED

REAL_DATA = SHARED / "data" / "cats-dogs-cc0"
REAL_WEIGHTS = SHARED / "weights" / "mobilenet_v2_1.0_imagenet_notop.weights.h5"

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason="../shared/data/cats-dogs-cc0 is not here")
def test_real_folder_reads_into_the_study_splits():
    from experiments.config import load_config
    from experiments.data.loading import load_study_data

    config = load_config(None, {"data.source": "folder", "data.data_dir": str(REAL_DATA)})
    data = load_study_data(config)
    assert data.class_names == ["cats", "dogs"]
    assert (len(data.train), len(data.validation), len(data.test)) == (2000, 800, 200)
    assert data.label_counts(data.test) == {"cats": 100, "dogs": 100}
    assert not data.skipped


@pytest.mark.skipif(not REAL_WEIGHTS.is_file(), reason="../shared/weights is not here")
def test_local_imagenet_weights_load_into_the_transfer_model():
    from experiments.models.build import build_model, describe_model

    model = build_model("transfer", (160, 160), class_count=2, base_weights=str(REAL_WEIGHTS))
    assert describe_model(model)["non_trainable_params"] == 2257984
