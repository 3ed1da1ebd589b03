"""The figures: each written as a light and a dark PNG, and the two-panel comparison."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from experiments.study import figures

ODD_NAME = "cost$_$"  # a class or model name that must not turn into math text


def history(final: float, epochs: int = 5, start: float = 0.55) -> list[dict]:
    """One seed's history, validation accuracy rising from `start` to `final`."""
    values = np.linspace(start, final, epochs)
    return [{"epoch": epoch, "accuracy": min(1.0, value + 0.02), "val_accuracy": float(value),
             "loss": 1.0 / epoch, "val_loss": 1.1 / epoch} for epoch, value in zip(range(1, epochs + 1), values)]


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0


def luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.2126, 0.7152, 0.0722])


def frame_luminance(path: Path) -> float:
    """Mean luminance of the outermost 3 px of the image: the figure's background."""
    light = luminance(pixels(path))
    return float(np.concatenate([light[:3].ravel(), light[-3:].ravel(), light[:, :3].ravel(), light[:, -3:].ravel()]).mean())


def draw_every_figure(folder: Path) -> dict[str, Path]:
    """Every figure function, called as experiments/study/ calls it; returns name -> light path."""
    images = np.full((6, 16, 16, 3), 120, np.uint8)
    labels = np.array([0, 0, 0, 1, 1, 1])
    runs = [history(0.80), history(0.82)]
    return {
        "data_grid": figures.data_grid(images, labels, [ODD_NAME, "dogs"], folder / "data_grid.png"),
        "augmentation_flip": figures.augmentation_demo(images[0], [("flipped", images[0][:, ::-1])], folder / "augmentation_flip.png"),
        "curves_baseline": figures.training_curves(runs, "baseline: accuracy and loss per epoch", folder / "curves_baseline.png", 0.5),
        "curves_finetune": figures.training_curves(runs, "finetune", folder / "curves_finetune.png", 0.5, lead_in=runs, lead_in_name="transfer"),
        "comparison": figures.comparison({"baseline": runs, ODD_NAME: [history(0.95), history(0.96)]}, folder / "comparison.png", 0.5),
        "misclassified_test": figures.misclassified(images[:2], ["cats as dogs\n(p = 0.9)", "dogs as cats\n(p = 0.6)"], folder / "misclassified_test.png"),
        "misclassified_none": figures.misclassified(images[:0], [], folder / "misclassified_none.png"),
    }


@pytest.fixture(scope="module")
def drawn_with_figures(tmp_path_factory) -> tuple[dict[str, Path], list[tuple[str, object]]]:
    """Every figure drawn once for the module: (name -> light path, every (file name, matplotlib
    figure) in the order written)."""
    written = []
    original = figures._write_png

    def keep(figure, path, *arguments):
        written.append((Path(path).name, figure))
        return original(figure, path, *arguments)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(figures, "_write_png", keep)
        paths = draw_every_figure(tmp_path_factory.mktemp("figures"))
    return paths, written


@pytest.fixture
def drawn(drawn_with_figures) -> dict[str, Path]:
    return drawn_with_figures[0]


def test_dark_path_names_the_twin():
    assert figures.dark_path(Path("a/figures/comparison.png")) == Path("a/figures/comparison-dark.png")
    assert figures.dark_path(Path("curves_finetune.png")).name == "curves_finetune-dark.png"


def test_every_figure_writes_a_light_and_a_dark_png_and_nothing_else(drawn):
    folder = next(iter(drawn.values())).parent
    expected = set()
    for name, path in drawn.items():
        assert path == folder / f"{name}.png"  # still returns the light figure's path
        expected |= {f"{name}.png", f"{name}-dark.png"}
        for written in (path, figures.dark_path(path)):
            assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", written
        assert Image.open(path).size == Image.open(figures.dark_path(path)).size, name  # the same figure, twice
    assert {path.name for path in folder.iterdir()} == expected  # no temporary files left behind


def test_light_figures_are_light_and_dark_ones_dark(drawn):
    for name, path in drawn.items():
        dark = figures.dark_path(path)
        assert frame_luminance(path) > 0.95, name
        assert frame_luminance(dark) < 0.15, name
        assert tuple(np.asarray(Image.open(dark).convert("RGB"))[0, 0]) == (0x1E, 0x21, 0x29), name  # Material's slate
        if not name.startswith(("data_grid", "augmentation", "misclassified")):  # charts: the background is most of it
            assert luminance(pixels(path)).mean() > 0.8, name
            assert luminance(pixels(dark)).mean() < 0.3, name


def test_dark_charts_draw_light_text_and_lines(drawn):
    dark = pixels(figures.dark_path(drawn["comparison"]))
    bright = luminance(dark) > 0.6
    assert bright.mean() > 0.005  # text, ticks and lines stand out against the background
    light = luminance(pixels(drawn["comparison"]))
    assert (light < 0.4).mean() > 0.005  # and the light figure keeps dark text


def test_dark_figures_draw_text_literally(drawn_with_figures):
    _, written = drawn_with_figures
    dark = {name: figure for name, figure in written if name.endswith("-dark.png")}
    assert len(dark) == 7 and len(written) == 14  # every figure drawn twice

    from matplotlib.text import Text

    for name in ("data_grid-dark.png", "comparison-dark.png"):
        strings = [text._preprocess_math(text.get_text())[0] for text in dark[name].findobj(Text)
                   if text.get_text() and not text._preprocess_math(text.get_text())[1]]
        assert ODD_NAME in strings, name


def test_comparison_is_two_panels_wide_enough_for_the_page(drawn):
    width, height = Image.open(drawn["comparison"]).size
    assert width > 2 * height
    assert 900 <= width <= 1300  # about 10 inches at FIGURE_DPI


def test_the_zoomed_panel_separates_models_a_point_apart():
    histories = {
        "transfer": [history(0.950), history(0.952), history(0.948)],
        "finetune": [history(0.962), history(0.960), history(0.964)],
        "baseline": [history(0.940, epochs=3), history(0.944, epochs=4)],  # seeds stopped at different epochs
    }
    with figures._themed(figures.LIGHT):
        figure = figures._comparison_figure(histories, 0.5, figures.LIGHT)
    try:
        curves_axis, final_axis = [axis for axis in figure.axes]
        assert curves_axis.get_ylim() == pytest.approx((0, 1.02))  # the per-epoch panel as before
        assert [label.get_text() for label in final_axis.get_yticklabels()] == list(histories)
        low, high = final_axis.get_xlim()
        assert low == pytest.approx(0.930) and high == pytest.approx(0.974)  # 0.940..0.964, 0.01 margin
        means = {"transfer": 0.950, "finetune": 0.962}
        gap = (means["finetune"] - means["transfer"]) / (high - low)
        assert gap > 0.25  # 1.2 points apart: a quarter of the panel
        assert not any(np.allclose(line.get_xdata(), 0.5) for line in final_axis.get_lines())  # baseline far outside: not drawn
    finally:
        figures.plt.close(figure)
    with figures._themed(figures.DARK):
        figure = figures._comparison_figure(histories, 0.955, figures.DARK)
    try:
        assert any(np.allclose(line.get_xdata(), 0.955) for line in figure.axes[1].get_lines())  # a baseline in range is drawn
        assert figure.get_facecolor()[:3] == pytest.approx((0x1E / 255, 0x21 / 255, 0x29 / 255))
    finally:
        figures.plt.close(figure)


def test_final_values_and_limits():
    runs = [history(0.9, epochs=3), [{"epoch": 1, "val_accuracy": 0.7}, {"epoch": 2, "val_accuracy": None}],
            [{"epoch": 1, "val_accuracy": float("nan")}], []]
    assert figures.final_values(runs) == pytest.approx([0.9, 0.7])
    assert figures.final_epoch_limits([]) == (0.0, 1.0)
    assert figures.final_epoch_limits([0.5, 0.5]) == pytest.approx((0.49, 0.51))
    assert figures.final_epoch_limits([0.995, 1.0]) == pytest.approx((0.985, 1.0))  # kept inside [0, 1]
    assert figures.final_epoch_limits([0.2, 0.9]) == pytest.approx((0.2 - 0.084, 0.9 + 0.084))


def test_comparison_copes_with_models_without_epochs(tmp_path):
    path = figures.comparison({"baseline": [history(0.8)], "augmented": [], "transfer": [[]]}, tmp_path / "comparison.png")
    assert path.is_file() and figures.dark_path(path).is_file()
    path = figures.comparison({}, tmp_path / "empty.png", 0.5)
    assert path.is_file() and figures.dark_path(path).is_file()


def test_a_figure_is_drawn_again_only_when_its_inputs_change(tmp_path, monkeypatch):
    """A pair carrying the digest of this call's inputs is left as it is (a re-run draws nothing);
    other inputs, a file without the digest (an older run's) or a missing twin draw the pair again."""
    from experiments.artifacts.cell_records import Epoch

    drawn = []
    original = figures._write_png
    monkeypatch.setattr(figures, "_write_png", lambda figure, path, *rest: drawn.append(Path(path).name) or original(figure, path, *rest))
    path = tmp_path / "confusion_test.png"

    def draw(matrix=((5, 1), (2, 6)), names=("cats", "dogs")) -> list[str]:  # the quickest figure to draw
        drawn.clear()
        figures.confusion_heatmap(np.array(matrix), list(names), path)
        return sorted(drawn)

    pair = sorted([path.name, figures.dark_path(path).name])
    assert draw() == pair
    digest = figures.drawn_from(path)
    assert digest and figures.drawn_from(figures.dark_path(path)) == digest and len(digest) == 64
    before = {name: (tmp_path / name).stat().st_mtime_ns for name in pair}
    assert draw() == []  # the same inputs: nothing drawn, nothing written
    assert {name: (tmp_path / name).stat().st_mtime_ns for name in pair} == before
    assert draw(matrix=((5, 1), (3, 5))) == pair  # one count changed
    assert draw(names=("cats", "dogs & co")) == pair
    figures.dark_path(path).unlink()
    assert draw() == pair and figures.drawn_from(path) == digest  # a missing twin; the first inputs' digest again
    Image.open(path).save(path)  # the light file rewritten without the text chunk, as an older run wrote it
    assert figures.drawn_from(path) is None
    assert draw() == pair and figures.drawn_from(path) == digest
    assert figures.drawn_from(tmp_path / "missing.png") is None
    (tmp_path / "broken.png").write_bytes(b"not a png")
    assert figures.drawn_from(tmp_path / "broken.png") is None
    # the runner passes histories read from history.json: the same records give the same digest
    runs = [history(0.80), history(0.82)]
    records = [[Epoch(**record) for record in seed] for seed in runs]
    assert figures._inputs_digest(records) == figures._inputs_digest([[Epoch(**record) for record in seed] for seed in runs])
    assert figures._inputs_digest(records) != figures._inputs_digest([[Epoch(**record) for record in seed] for seed in runs[:1]])
    # the order of the models decides their colours in the comparison: another order is another figure
    models = {"a": runs, "b": [history(0.9)]}
    assert figures._inputs_digest(models) != figures._inputs_digest(dict(reversed(models.items())))
    with pytest.raises(TypeError, match="cannot digest a object"):
        figures._inputs_digest([object()])
