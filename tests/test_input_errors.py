"""Inputs that must stop the study with one sentence (ConfigError or DataError) before any
training: split sizes, math text in class names, seeds, characters a path cannot hold,
non-finite numbers, and an output folder inside the data folder."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from experiments.config import (
    ConfigError,
    held_out_count,
    load_config,
    minimum_images_per_class,
)
from experiments.data.loading import Split, load_study_data, split_validation
from experiments.errors import DataError
from experiments.study import figures
from tests.conftest import PROJECT_ROOT, SMOKE_CONFIG, cli_environment, run_cli_command


def write_images(root: Path, counts: dict[str, dict[str, int]]) -> Path:
    """root/<split>/<class>/<n>.png, tiny solid-colour PNGs."""
    for split, classes in counts.items():
        for class_index, (class_name, count) in enumerate(classes.items()):
            folder = root / split / class_name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                Image.new("RGB", (8, 8), (index * 25 % 256, 60 * class_index, 90)).save(folder / f"{index}.png")
    return root


def folder_config(data_root: Path, **overrides):
    values = {"data.source": "folder", "data.data_dir": str(data_root), "data.image_size": [24, 24],
              "study.models": ["baseline"], "study.out_dir": str(data_root.parent / "artifacts")}
    values.update(overrides)
    return load_config(SMOKE_CONFIG, values)


# --------------------------------------------------------------------------- 1. split sizes


@pytest.mark.parametrize(
    "fraction, minimum",
    [
        (0.2, 3),  # 2 * 0.2 = 0.4 rounds to 0 test images
        (0.25, 3),  # 2 * 0.25 = 0.5 rounds (half to even) to 0: a round-half-up formula says 2
        (0.1, 6),  # 5 * 0.1 = 0.5 rounds to 0
        (0.5, 2),  # 1 * 0.5 = 0.5 rounds to 0
        (0.75, 3),  # 2 * 0.75 = 1.5 rounds to 2: no validation image left
        (0.9, 5),  # 5 * 0.9 = 4.5 rounds to 4, leaving one; half-up would need 6
    ],
)
def test_minimum_images_per_class_follows_round_half_even(fraction, minimum):
    assert minimum_images_per_class(fraction) == minimum
    # the same numbers as split_validation draws, on both sides of the minimum
    for count in (minimum - 1, minimum, minimum + 1):
        kept, test = split_validation(
            Split(np.zeros((count, 1, 1, 3), np.uint8), np.zeros(count, np.int32), [f"{i}.png" for i in range(count)]),
            fraction, seed=3,
        )
        assert len(test) == held_out_count(count, fraction)
        assert (len(test) >= 1 and len(kept) >= 1) == (count >= minimum)


def test_minimum_images_per_class_is_the_least_that_works_for_many_fractions():
    fractions = [numerator / denominator for denominator in range(2, 41) for numerator in range(1, denominator)]
    for fraction in fractions + [0.123, 0.999, 0.001]:
        minimum = minimum_images_per_class(fraction)

        def works(count, fraction=fraction):
            return held_out_count(count, fraction) >= 1 and count - held_out_count(count, fraction) >= 1

        assert works(minimum) and not any(works(count) for count in range(1, minimum)), fraction
        assert all(works(count) for count in range(minimum, minimum + 50)), fraction


@pytest.mark.parametrize(
    "fraction, small, enough",
    [(0.2, 2, 3), (0.75, 2, 3), (0.25, 2, 3)],  # no test image / no validation image / half-even
)
def test_a_validation_class_too_small_to_split_stops_before_training(tmp_path, fraction, small, enough):
    root = write_images(tmp_path / "data", {"train": {"cats": 2, "dogs": 2}, "validation": {"cats": small, "dogs": 4}})
    config = folder_config(root, **{"data.test_fraction": fraction})
    with pytest.raises(DataError) as caught:
        load_study_data(config)
    message = str(caught.value)
    assert str(root / "validation" / "cats") in message
    assert f"has {small} images" in message and f"data.test_fraction {fraction}" in message
    assert f"needs at least {enough} per class" in message
    assert "\n" not in message

    write_images(root, {"validation": {"cats": enough}})  # one more image: both splits get one
    data = load_study_data(config)
    assert data.label_counts(data.test)["cats"] >= 1 and data.label_counts(data.validation)["cats"] >= 1


def test_synthetic_validation_too_small_to_split_names_the_key():
    with pytest.raises(ConfigError) as caught:
        load_config(SMOKE_CONFIG, {"data.synthetic_validation_per_class": 2, "data.test_fraction": 0.2})
    message = str(caught.value)
    assert "data.synthetic_validation_per_class" in message and "needs at least 3 per class" in message
    config = load_config(SMOKE_CONFIG, {"data.synthetic_validation_per_class": 3, "data.test_fraction": 0.2,
                                        "data.synthetic_train_per_class": 2})
    data = load_study_data(config)
    assert len(data.test) == 2 and len(data.validation) == 4
    with pytest.raises(ConfigError, match="data.synthetic_validation_per_class"):  # 2 * 0.75 = 1.5 rounds to 2
        load_config(SMOKE_CONFIG, {"data.synthetic_validation_per_class": 2, "data.test_fraction": 0.75})


# --------------------------------------------------------------------------- 2. math text


ODD_NAMES = ["cost$_$", "a$x^2$", "50$ and 60$", r"back\slash $\alpha$"]


@pytest.fixture
def drawn_figures(monkeypatch):
    """Keep every light figure figures.py saves, to look at its texts after drawing."""
    kept = []
    original_write = figures._write_png

    def keep(figure, path, *arguments):
        if not Path(path).stem.endswith(figures.DARK_SUFFIX):
            kept.append(figure)
        return original_write(figure, path, *arguments)

    monkeypatch.setattr(figures, "_write_png", keep)
    return kept


def drawn_strings(figure) -> list[str]:
    """The strings the figure's texts draw, after matplotlib's math-text preprocessing."""
    from matplotlib.text import Text

    strings = []
    for text in figure.findobj(Text):
        if text.get_text():
            drawn, is_math = text._preprocess_math(text.get_text())
            if not is_math:
                strings.append(drawn)
    return strings


def test_class_names_with_math_text_are_drawn_literally(tmp_path, drawn_figures):
    images = np.full((len(ODD_NAMES) * 2, 8, 8, 3), 120, np.uint8)
    labels = np.repeat(np.arange(len(ODD_NAMES)), 2)
    figures.data_grid(images, labels, ODD_NAMES, tmp_path / "grid.png", per_class=2)
    figures.augmentation_demo(images[0], [(name, images[1]) for name in ODD_NAMES], tmp_path / "augmentation.png")
    captions = [f"{ODD_NAMES[0]} as {ODD_NAMES[1]}\n(p = 0.93)", f"{ODD_NAMES[2]} as {ODD_NAMES[3]}\n(p = 0.51)"]
    figures.misclassified(images[:2], captions, tmp_path / "misclassified.png")
    history = [[{"epoch": 1, "accuracy": 0.5, "val_accuracy": 0.5, "loss": 1.0, "val_loss": 1.1},
                {"epoch": 2, "accuracy": 0.6, "val_accuracy": 0.55, "loss": 0.8, "val_loss": 0.9}]]
    figures.training_curves(history, f"{ODD_NAMES[0]}: accuracy", tmp_path / "curves.png", baseline_accuracy=0.5,
                            lead_in=history, lead_in_name=ODD_NAMES[1])
    figures.comparison({name: history for name in ODD_NAMES}, tmp_path / "comparison.png", baseline_accuracy=0.5)

    assert len(drawn_figures) == 5
    for name in ("grid", "augmentation", "misclassified", "curves", "comparison"):
        assert (tmp_path / f"{name}.png").stat().st_size > 0
    grid, augmentation, misclassified, curves, comparison = (drawn_strings(figure) for figure in drawn_figures)
    for name in ODD_NAMES:
        assert name in grid and name in augmentation and name in comparison  # titles and legend entries
    assert captions[0] in misclassified and captions[1] in misclassified
    assert f"{ODD_NAMES[0]}: accuracy" in curves
    assert f"training ({ODD_NAMES[1]})" in curves  # the lead-in legend entry


# --------------------------------------------------------------------------- 3. seeds


@pytest.mark.parametrize(
    "seed, seeds, named",
    [
        (-1, 1, "study.seed"),
        (2**31, 1, "study.seed"),
        (2**31 - 2, 3, "study.seeds"),  # seeds 2**31 - 2, 2**31 - 1, 2**31
        (10**30, 1, "study.seed"),
        (0, 1001, "study.seeds"),
        (0, 10**12, "study.seeds"),
    ],
)
def test_seeds_out_of_range_name_the_key(seed, seeds, named):
    with pytest.raises(ConfigError) as caught:
        load_config(SMOKE_CONFIG, {"study.seed": seed, "study.seeds": seeds})
    assert named in str(caught.value)


@pytest.mark.parametrize("seed, seeds", [(0, 1), (2**31 - 1, 1), (2**31 - 2, 2), (0, 1000)])
def test_seeds_at_the_limits_are_accepted(seed, seeds):
    config = load_config(SMOKE_CONFIG, {"study.seed": seed, "study.seeds": seeds})
    assert config.seeds[0] == seed and config.seeds[-1] == seed + seeds - 1 < 2**31


# --------------------------------------------------------------------------- 4. path strings


PATH_KEYS = ["study.run_name", "study.out_dir", "data.data_dir", "data.cache_dir", "training.base_weights"]


@pytest.mark.parametrize("key", PATH_KEYS)
@pytest.mark.parametrize("bad", ["a\0b", "\0", "bad\ud800name", "x" * 256])
def test_strings_a_path_cannot_hold_name_the_key(key, bad):
    overrides = {key: bad}
    if key == "data.data_dir":
        overrides["data.source"] = "folder"
    if key == "training.base_weights":
        overrides["study.models"] = ["transfer"]
    with pytest.raises(ConfigError) as caught:
        load_config(SMOKE_CONFIG, overrides)
    assert key in str(caught.value)


@pytest.mark.parametrize("key", ["run_name", "out_dir"])
def test_nul_in_a_toml_string_names_the_key(write_config, key):
    path = write_config(f'[study]\n{key} = "run\\u0000name"\n')
    with pytest.raises(ConfigError, match=f"study.{key}"):
        load_config(path)


def test_a_name_of_255_bytes_is_accepted():
    assert load_config(SMOKE_CONFIG, {"study.run_name": "x" * 255}).study.run_name == "x" * 255


# --------------------------------------------------------------------------- 5. non-finite numbers


@pytest.mark.parametrize("key", ["training.learning_rate", "data.test_fraction", "training.finetune_learning_rate_factor"])
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "+inf"])
def test_non_finite_floats_name_the_key(write_config, key, value):
    section, name = key.split(".")
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(f"[{section}]\n{name} = {value}\n"))
    assert key in str(caught.value)


def test_every_float_key_is_checked_for_finiteness():
    import dataclasses

    from experiments.config import SECTIONS, StudyConfig, validate

    for section_name, section_type in SECTIONS.items():
        for item in dataclasses.fields(section_type):
            if item.type in ("float", float):
                config = StudyConfig()
                setattr(getattr(config, section_name), item.name, math.inf)
                with pytest.raises(ConfigError, match=f"{section_name}.{item.name}"):
                    validate(config)


def test_the_largest_finite_learning_rate_is_accepted(write_config):
    assert load_config(write_config("[training]\nlearning_rate = 1.7976931348623157e308\n")).training.learning_rate > 1e308


# --------------------------------------------------------------------------- 7. output inside the data


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "photos"
    (root / "train").mkdir(parents=True)
    (root / "validation").mkdir()
    return root


@pytest.mark.parametrize(
    "out_dir, run_name",
    [
        ("photos", "run"),  # --out is the data folder
        ("photos/artifacts", "run"),  # --out inside the data folder
        ("photos/train/cats", "run"),  # deep inside
        (".", "photos"),  # the run folder is the data folder
    ],
)
def test_output_inside_the_data_folder_is_refused(tmp_path, data_root, monkeypatch, out_dir, run_name):
    monkeypatch.chdir(tmp_path)  # relative --out, resolved like the study resolves it
    with pytest.raises(ConfigError) as caught:
        load_config(SMOKE_CONFIG, {"data.data_dir": str(data_root), "data.source": "folder",
                                   "study.out_dir": out_dir, "study.run_name": run_name})
    message = str(caught.value)
    assert str(data_root.resolve()) in message and "data.data_dir" in message
    assert str((tmp_path / out_dir).resolve()) in message


def test_data_folder_inside_the_run_folder_is_refused(tmp_path):
    data = tmp_path / "runs" / "smoke" / "photos"
    data.mkdir(parents=True)
    with pytest.raises(ConfigError) as caught:
        load_config(SMOKE_CONFIG, {"data.data_dir": str(data), "data.source": "folder",
                                   "study.out_dir": str(tmp_path / "runs"), "study.run_name": "smoke"})
    message = str(caught.value)
    assert str(data.resolve()) in message and str((tmp_path / "runs" / "smoke").resolve()) in message


def test_output_inside_the_data_folder_through_a_link_is_refused(tmp_path, data_root):
    link = tmp_path / "link-to-photos"
    link.symlink_to(data_root, target_is_directory=True)
    with pytest.raises(ConfigError, match="inside the data folder"):
        load_config(SMOKE_CONFIG, {"data.data_dir": str(link), "data.source": "folder",
                                   "study.out_dir": str(data_root / "out")})
    with pytest.raises(ConfigError, match="inside the data folder"):
        load_config(SMOKE_CONFIG, {"data.data_dir": str(data_root), "data.source": "folder",
                                   "study.out_dir": str(link / "out")})
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "smoke").symlink_to(data_root / "train", target_is_directory=True)
    with pytest.raises(ConfigError, match="the run folder"):  # the run folder itself is a link
        load_config(SMOKE_CONFIG, {"data.data_dir": str(data_root), "data.source": "folder",
                                   "study.out_dir": str(tmp_path / "runs"), "study.run_name": "smoke"})


@pytest.mark.parametrize("out_dir, run_name", [("out", "smoke"), (".", "smoke"), ("photos-out", "photos")])
def test_output_beside_the_data_folder_is_accepted(tmp_path, data_root, monkeypatch, out_dir, run_name):
    monkeypatch.chdir(tmp_path)  # "." is the data folder's parent; "photos-out" only shares a prefix
    config = load_config(SMOKE_CONFIG, {"data.data_dir": str(data_root), "data.source": "folder",
                                        "study.out_dir": out_dir, "study.run_name": run_name})
    assert config.run_dir == Path(out_dir) / run_name


def test_synthetic_data_does_not_check_the_data_folder(tmp_path):
    config = load_config(SMOKE_CONFIG, {"data.data_dir": str(tmp_path), "study.out_dir": str(tmp_path / "out")})
    assert config.data.source == "synthetic"


def test_the_command_line_prints_one_error_line_and_exits_2(tmp_path, data_root):
    """Refused before TensorFlow is imported: one "error:" line, no traceback."""
    result = subprocess.run(
        run_cli_command("train", "--config", str(SMOKE_CONFIG), "--data-dir", str(data_root),
                        "--out", str(data_root / "artifacts")),
        cwd=PROJECT_ROOT, env=cli_environment(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    assert "study.out_dir" in lines[0] and str(data_root.resolve()) in lines[0]
    assert not (data_root / "artifacts").exists()
