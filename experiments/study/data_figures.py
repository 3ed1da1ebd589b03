"""The figures of a run's data: a grid of training images per class, and what the augmentation
layers do to one image. Drawn once per run folder and data (`record_data`), whoever prepares the run:
the sequential runner or a scale-out worker."""

from __future__ import annotations

import numpy as np

from experiments.artifacts.folders import RunFolder
from experiments.artifacts.run_records import Dataset
from experiments.data.loading import StudyData
from experiments.study import figures

#: The figures of the data (and of what augmentation does to it), drawn once per run folder and data.
DATA_FIGURES = ("data_grid", "augmentation_flip", "augmentation_rotation")


def record_data(run: RunFolder, data: StudyData) -> None:
    """Write dataset.json, and draw the data figures unless the run folder already has them for
    this very data: its earlier dataset.json describes the same classes, size, split seed (the seed
    the rotations are drawn with), files and fingerprint, and every data figure is there, light and
    dark. A rerun or a resume then spends no time redrawing them (seconds per `train`)."""
    described = data.describe()
    drawn = Dataset.read_or_none(run.dataset) == described and all(
        path.is_file() for name in DATA_FIGURES for path in (run.figure(name), figures.dark_path(run.figure(name))))
    described.write(run.dataset)
    if not drawn:
        write_data_figures(run, data)


def write_data_figures(run: RunFolder, data: StudyData) -> None:
    """The data grid, and what the augmentation layers of the models do to one training image
    (rotations drawn with the study's seed)."""
    from keras import layers  # loads TensorFlow: only when the figures are drawn

    figures.data_grid(data.train.images, data.train.labels, data.class_names, run.figure("data_grid"))
    example = data.train.images[0]
    flips = [("flipped left-right", example[:, ::-1]), ("flipped upside down", example[::-1, :]),
             ("flipped both ways", example[::-1, ::-1])]
    figures.augmentation_demo(example, flips, run.figure("augmentation_flip"))
    rotate = layers.RandomRotation(0.2, seed=data.seed, name="demo_rotation")
    batch = np.repeat(example[None].astype(np.float32), 4, axis=0)
    rotated = np.asarray(rotate(batch, training=True))
    figures.augmentation_demo(example, [(f"rotated {index + 1}", image) for index, image in enumerate(rotated)],
                              run.figure("augmentation_rotation"))
