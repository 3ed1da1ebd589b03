"""benchmarks/calibration.py: the drawing of studies and their reading, on synthetic right/wrong
rows (no training, no TensorFlow)."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def calibration():
    spec = importlib.util.spec_from_file_location("calibration", BENCHMARKS / "calibration.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["calibration"] = module  # its dataclass looks its module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("calibration", None)


def synthetic_pool(seeds: int, images: int, accuracy: float, seed: int) -> np.ndarray:
    """Right/wrong rows of `seeds` equally good seeds: each image has its own difficulty."""
    rng = np.random.default_rng(seed)
    difficulty = rng.beta(4 * accuracy, 4 * (1 - accuracy), size=images)
    return rng.random((seeds, images)) < difficulty


def test_equal_models_give_rates_between_0_and_1_and_a_family_per_study(calibration):
    pool = synthetic_pool(9, 120, 0.7, seed=1)
    setting = calibration.draw_studies(pool, 3, 40, np.random.default_rng(0), resamples=200)
    assert setting.studies == 40 and setting.families == 40
    for rate in (setting.claim_rate, setting.coverage, setting.accuracy_coverage, setting.rate(setting.family_claims, 40)):
        assert 0.0 <= rate <= 1.0
    assert setting.claim_rate + setting.coverage == pytest.approx(1.0)  # the truth is 0: covered or claimed
    assert setting.family_claims >= setting.better + setting.worse  # the family holds the A-B comparison
    lines = calibration.format_setting(setting)
    assert lines[0].startswith(f"seeds=3 comparisons=40 false better rate: {setting.claim_rate:.3f} (one-sided: ")
    assert "accuracy interval coverage: " in lines[0]


def test_a_pool_too_small_for_a_third_model_draws_no_family(calibration):
    setting = calibration.draw_studies(synthetic_pool(5, 60, 0.7, seed=2), 2, 5, np.random.default_rng(0), resamples=100)
    assert setting.families == 0 and setting.family_claims == 0
    with pytest.raises(ValueError, match="at least 6 seeds"):
        calibration.draw_studies(synthetic_pool(5, 60, 0.7, seed=2), 3, 5, np.random.default_rng(0))


def test_a_truly_better_model_is_found_nearly_always(calibration):
    worse, better = synthetic_pool(8, 400, 0.6, seed=3), synthetic_pool(8, 400, 0.9, seed=4)
    setting = calibration.draw_studies(worse, 3, 30, np.random.default_rng(0), pool_b=better, resamples=200)
    assert setting.rate(setting.worse) >= 0.95  # A (the worse pool) minus B: below 0
    assert setting.better == 0
    assert setting.families == 0


def test_options_default_to_the_shared_photos_and_refuse_a_pool_too_small(calibration, capsys):
    args = calibration.parse_arguments([])
    assert args.data_dir == (BENCHMARKS.parents[1] / "shared" / "data" / "cats-dogs-cc0").resolve()
    assert args.seeds == [2, 3, 5]
    with pytest.raises(SystemExit):
        calibration.parse_arguments(["--pool-seeds", "8", "--seeds", "5"])
    assert "--pool-seeds 8 is too few for 5 seeds per model" in capsys.readouterr().err


def test_a_missing_photo_folder_stops_with_one_message(calibration, tmp_path):
    with pytest.raises(SystemExit, match="no train/ and validation/ folders there"):
        calibration.main(["--data-dir", str(tmp_path / "absent"), "--work-dir", str(tmp_path / "work")])


def test_the_family_adds_the_chosen_against_the_runner_up_only_when_they_are_not_neighbours(calibration):
    rows = {accuracy: synthetic_pool(3, 200, accuracy, seed=5) for accuracy in (0.5, 0.7, 0.9)}
    first = calibration.analysis.paired_difference(rows[0.5], rows[0.7])
    # A, B, C = 0.9, 0.5, 0.7: the chosen (A) and the runner-up (C) are not compared in study order.
    assert len(calibration.family_comparisons([rows[0.9], rows[0.5], rows[0.7]], first, {})) == 3
    # A, B, C = 0.5, 0.7, 0.9: C against B is already the chosen against the runner-up.
    assert len(calibration.family_comparisons([rows[0.5], rows[0.7], rows[0.9]], first, {})) == 2
