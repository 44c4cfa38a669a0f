"""util.plots: each figure renders to an RGB picture with its texts, and its PNG is written
atomically; no pyplot figure is left behind."""

import os

import cv2
import numpy as np
import pytest
from matplotlib import pyplot

from m2cnn_tf.util import plots


def _rgb(figure):
    image = plots.to_rgb(figure)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    return image


def _texts(figure):
    return {t.get_text() for t in figure.findobj(lambda a: hasattr(a, "get_text"))}


def _legend(figure):
    return [t.get_text() for t in figure.axes[0].get_legend().get_texts()]


def test_confusion_figure_shows_every_count_and_shades_by_row_share():
    counts = np.array([[90, 10, 0], [5, 5, 0], [0, 0, 0]])
    figure = plots.confusion_figure(counts, "kappa, step 7", class_names=["a", "b", "c"])
    texts = _texts(figure)
    assert {"90", "10", "5", "0", "kappa, step 7", "predicted grade", "true grade"} <= texts
    image = _rgb(figure)
    assert image.shape[:2] == (round(plots.CONFUSION_SIZE[1] * plots.DPI),
                               round(plots.CONFUSION_SIZE[0] * plots.DPI))
    shades = figure.axes[0].images[0].get_array()
    np.testing.assert_allclose(shades, [[0.9, 0.1, 0], [0.5, 0.5, 0], [0, 0, 0]])
    with pytest.raises(ValueError, match=r"\(K, K\) counts, got shape \(2, 3\)"):
        plots.confusion_figure(np.zeros((2, 3)))


def test_roc_figure_has_the_chance_line_the_curves_and_the_operating_point():
    curve = plots.Curve(np.array([0, 0.1, 1.0]), np.array([0, 0.8, 1.0]), "score: AUC 0.900")
    figure = plots.roc_figure([curve], [plots.Point(0.1, 0.8, "fitted cuts")], "ROC")
    assert _legend(figure) == ["chance", "score: AUC 0.900", "fitted cuts"]
    axes = figure.axes[0]
    assert "specificity" in axes.get_xlabel() and "sensitivity" in axes.get_ylabel()
    image = _rgb(figure)
    red = (image[..., 0] > 180) & (image[..., 1] < 80) & (image[..., 2] < 80)
    assert red.sum() > 20  # the operating point is drawn


def test_reliability_figure_skips_empty_bins_and_sizes_markers_by_count():
    edges = np.linspace(0, 1, 5)
    figure = plots.reliability_figure(edges, np.array([10, 0, 30, 60]),
                                      np.array([0.1, 0.0, 0.6, 0.9]),
                                      np.array([0.0, 0.0, 0.5, 1.0]), "Reliability",
                                      "predicted", "observed", "model (ECE 0.050)")
    assert _legend(figure) == ["perfect calibration", "model (ECE 0.050)",
                               "share of images per bin"]
    axes = figure.axes[0]
    points = axes.collections[0]
    np.testing.assert_allclose(points.get_offsets(), [[0.1, 0.0], [0.6, 0.5], [0.9, 1.0]])
    assert np.all(np.diff(points.get_sizes()) > 0)
    np.testing.assert_allclose([bar.get_height() for bar in axes.patches], [0.1, 0, 0.3, 0.6])
    _rgb(figure)


def test_curves_figure_and_its_png(tmp_path):
    steps = np.arange(0, 1000, 100)
    figure = plots.curves_figure([plots.Curve(steps, steps / 1000, "kappa (score)"),
                                  plots.Curve(steps, steps / 2000, "kappa (probabilities)",
                                              dashed=True, marker="o")],
                                 "Validation kappa", "training step", "kappa", y_limits=(0, 1))
    assert _legend(figure) == ["kappa (score)", "kappa (probabilities)"]
    assert figure.axes[0].get_ylim() == (0, 1)
    path = tmp_path / "kappa.png"
    plots.write_png(figure, path)
    image = cv2.imread(str(path))
    assert image is not None and image.shape[:2] == (round(plots.PLOT_SIZE[1] * plots.DPI),
                                                     round(plots.PLOT_SIZE[0] * plots.DPI))
    assert image.std() > 10 and os.listdir(tmp_path) == ["kappa.png"]


def test_no_pyplot_figure_is_left_open():
    plots.to_rgb(plots.confusion_figure(np.eye(5, dtype=int)))
    plots.to_rgb(plots.roc_figure([]))
    assert pyplot.get_fignums() == []
