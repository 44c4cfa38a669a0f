"""Plots of numbers (confusion matrices, ROC curves, reliability, curves over steps) with
matplotlib.

Each figure is a ``matplotlib.figure.Figure`` on its own Agg canvas, built with the object API:
no pyplot, so no process-wide backend switch (a notebook keeps its own), no global list of open
figures to leak into, and nothing to close — a figure is freed like any object. Functions take
plain arrays and return the figure; ``to_rgb`` renders it for TensorBoard, ``write_png`` saves
it through the atomic write. Pictures of photographs (Grad-CAM sheets, previews) are OpenCV's,
not this module's.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from m2cnn_tf.util import atomic

DPI = 100
# Sizes in inches (× DPI pixels) and margins around the axes in inches (left, right, bottom,
# top): room for tick labels, axis labels and the title. Fixed rather than computed by a layout
# engine, which measures every text before drawing it and doubles the drawing time.
PLOT_SIZE, PLOT_MARGINS = (6.4, 4.8), (0.85, 0.25, 0.7, 0.5)
SQUARE_SIZE = (5.9, 6.0)  # a unit-square plot (ROC, reliability): axes of 4.8 × 4.8 inches
CONFUSION_SIZE = (4.3, 4.5)  # the confusion matrix, 3.15 inches a side
CONFUSION_MARGINS = (0.9, 0.25, 0.45, 0.9)  # the predicted-grade axis is on top
REFERENCE = "0.55"  # grey of reference lines (chance, perfect calibration)
BAR_COLOUR = "#c8d2e1"  # bars drawn behind the data
POINT_COLOUR = "#d62728"  # marked points (an operating point)
CONFUSION_COLOURS = "Blues"  # colour map of the confusion matrix's row shares
MARKER_AREA = (16.0, 300.0)  # points²: smallest and largest marker of a reliability plot
TITLE_SIZE, LABEL_SIZE, TEXT_SIZE = 12, 10.5, 9


@dataclasses.dataclass(frozen=True)
class Curve:
    """One labelled line: ``y`` against ``x``.

    Attributes:
      x, y: the points, in order.
      label: the legend entry ("" for none).
      dashed: drawn dashed (a reference or secondary line).
      marker: a matplotlib marker drawn at every point ("o", "s", …), or None.
    """

    x: np.ndarray
    y: np.ndarray
    label: str = ""
    dashed: bool = False
    marker: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Point:
    """One marked point with a legend entry, e.g. the operating point of fitted thresholds."""

    x: float
    y: float
    label: str


def new_figure(size: Tuple[float, float] = PLOT_SIZE,
               margins: Tuple[float, float, float, float] = PLOT_MARGINS):
    """(figure, axes): an empty plot on its own Agg canvas.

    Args:
      size: (width, height) in inches (× ``DPI`` pixels).
      margins: (left, right, bottom, top) around the axes, in inches.
    """
    figure = Figure(figsize=size, dpi=DPI)
    FigureCanvasAgg(figure)
    (width, height), (left, right, bottom, top) = size, margins
    figure.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height,
                           top=1 - top / height)
    return figure, figure.add_subplot()


def to_rgb(figure: Figure) -> np.ndarray:
    """Renders ``figure``; returns uint8 RGB (H, W, 3)."""
    canvas = figure.canvas
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def write_png(figure: Figure, path) -> None:
    """Saves ``figure`` as a PNG at ``path``, atomically (``util.atomic``).

    Raises:
      OSError: the write failed; ``path`` keeps what it held.
    """
    with atomic.replacing(path) as f:
        figure.savefig(f, format="png", dpi=DPI)


def _decorate(axes, title: str, x_label: str, y_label: str) -> None:
    # y given: matplotlib would otherwise measure the axes to lift the title over them
    axes.set_title(title, fontsize=TITLE_SIZE, y=1.0, pad=8)
    axes.set_xlabel(x_label, fontsize=LABEL_SIZE)
    axes.set_ylabel(y_label, fontsize=LABEL_SIZE)
    axes.grid(True, color="0.9", linewidth=0.8)
    axes.set_axisbelow(True)
    axes.tick_params(labelsize=TEXT_SIZE)


def _draw(axes, curve: Curve, **style) -> None:
    axes.plot(np.asarray(curve.x), np.asarray(curve.y), label=curve.label or None,
              linestyle="--" if curve.dashed else "-", marker=curve.marker, **style)


def _legend(axes, location: str) -> None:
    if axes.get_legend_handles_labels()[1]:
        axes.legend(loc=location, fontsize=TEXT_SIZE, framealpha=0.95)


def _unit_square(axes) -> None:
    """Both axes over [0, 1] (a little margin so lines on the border stay visible), square."""
    axes.set_xlim(-0.01, 1.01)
    axes.set_ylim(-0.01, 1.01)
    axes.set_aspect("equal")


def curves_figure(curves: Sequence[Curve], title: str, x_label: str, y_label: str,
                  x_limits: Optional[Tuple[float, float]] = None,
                  y_limits: Optional[Tuple[float, float]] = None,
                  legend: str = "best") -> Figure:
    """Labelled curves on one pair of axes (kappa against steps, per-class curves, …).

    Args:
      curves: the lines, coloured in turn from matplotlib's default cycle.
      title, x_label, y_label: the texts of the plot.
      x_limits, y_limits: axis ranges; None fits the data.
      legend: where the legend goes (a matplotlib ``loc``); only drawn when a curve has a label.

    Returns:
      The figure (``to_rgb`` or ``write_png`` it).
    """
    figure, axes = new_figure()
    for curve in curves:
        _draw(axes, curve, linewidth=2)
    if x_limits is not None:
        axes.set_xlim(*x_limits)
    if y_limits is not None:
        axes.set_ylim(*y_limits)
    _decorate(axes, title, x_label, y_label)
    _legend(axes, legend)
    return figure


@dataclasses.dataclass(frozen=True)
class Panel:
    """One pair of axes of ``panels_figure``: its curves, x label and labelled points."""

    curves: Sequence[Curve]
    x_label: str
    points: Sequence[Point] = ()


PANEL_GAP = 1.0  # inches between two panels of ``panels_figure``: the next one's y labels


def panels_figure(panels: Sequence[Panel], title: str, y_label: str,
                  y_limits: Optional[Tuple[float, float]] = None) -> Figure:
    """Panels side by side sharing the y quantity (kappa against steps and against hours, …).

    Args:
      panels: the panels, left to right; each panel's curves coloured in turn from matplotlib's
        default cycle, so a run has one colour in every panel; each labelled point is marked
        and its label written beside it.
      title: above the panels.
      y_label: the y axis of every panel.
      y_limits: the y range of every panel; None fits the data.

    Returns:
      The figure.
    """
    (width, height), (left, right, bottom, top) = PLOT_SIZE, PLOT_MARGINS
    total = width * len(panels)
    figure = Figure(figsize=(total, height), dpi=DPI)
    FigureCanvasAgg(figure)
    figure.subplots_adjust(left=left / total, right=1 - right / total, bottom=bottom / height,
                           top=1 - top / height,
                           wspace=PANEL_GAP * len(panels) / (total - left - right
                                                             - PANEL_GAP * (len(panels) - 1)))
    for i, panel in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), i + 1)
        for curve in panel.curves:
            _draw(axes, curve, linewidth=2)
        for point in panel.points:
            axes.plot([point.x], [point.y], linestyle="none", marker="o", markersize=6,
                      color=POINT_COLOUR, zorder=5)
            axes.annotate(point.label, (point.x, point.y), xytext=(4, 4),
                          textcoords="offset points", fontsize=TEXT_SIZE)
        if y_limits is not None:
            axes.set_ylim(*y_limits)
        _decorate(axes, "", panel.x_label, y_label)
        _legend(axes, "lower right")
    figure.suptitle(title, fontsize=TITLE_SIZE)
    return figure


def roc_figure(curves: Sequence[Curve], operating_points: Sequence[Point] = (),
               title: str = "ROC curve") -> Figure:
    """ROC curves over the unit square with the chance diagonal and marked operating points.

    Args:
      curves: (false-positive rate, true-positive rate) lines; put each AUC in its label.
      operating_points: points to mark, e.g. (1 − specificity, sensitivity) of graded output.
      title: above the plot.

    Returns:
      The figure.
    """
    figure, axes = new_figure(SQUARE_SIZE)
    _draw(axes, Curve(np.array([0.0, 1.0]), np.array([0.0, 1.0]), "chance", dashed=True),
          color=REFERENCE, linewidth=1)
    for curve in curves:
        _draw(axes, curve, linewidth=2)
    for point in operating_points:
        axes.plot([point.x], [point.y], linestyle="none", marker="o", markersize=9,
                  color=POINT_COLOUR, markeredgecolor="white", label=point.label, zorder=5)
    _unit_square(axes)
    _decorate(axes, title, "1 − specificity (false-positive rate)",
              "sensitivity (true-positive rate)")
    _legend(axes, "lower right")
    return figure


def reliability_figure(bin_edges: np.ndarray, counts: np.ndarray, mean_predicted: np.ndarray,
                       observed_fraction: np.ndarray, title: str, x_label: str, y_label: str,
                       label: str = "model") -> Figure:
    """Reliability plot: the observed frequency of the outcome against the mean predicted
    probability per bin (marker area ∝ the bin's count), the diagonal of perfect calibration,
    and each bin's share of the samples as bars behind.

    Args:
      bin_edges: (B + 1,) edges of the probability bins over [0, 1].
      counts: (B,) samples per bin.
      mean_predicted, observed_fraction: (B,) per bin; bins without samples are skipped.
      title, x_label, y_label: the texts of the plot.
      label: the legend entry of the points (say with the calibration error).

    Returns:
      The figure.
    """
    counts = np.asarray(counts, float)
    edges = np.asarray(bin_edges, float)
    figure, axes = new_figure(SQUARE_SIZE)
    axes.bar(edges[:-1], counts / max(counts.sum(), 1.0), width=np.diff(edges), align="edge",
             color=BAR_COLOUR, edgecolor="white", label="share of images per bin")
    _draw(axes, Curve(np.array([0.0, 1.0]), np.array([0.0, 1.0]), "perfect calibration",
                      dashed=True), color=REFERENCE, linewidth=1)
    filled = counts > 0
    if filled.any():
        x = np.asarray(mean_predicted, float)[filled]
        y = np.asarray(observed_fraction, float)[filled]
        area = MARKER_AREA[0] + (MARKER_AREA[1] - MARKER_AREA[0]) * counts[filled] / counts.max()
        line, = axes.plot(x, y, linewidth=2, marker="o", markersize=6, label=label)
        axes.scatter(x, y, s=area, color=line.get_color(), edgecolors="white", zorder=3)
    _unit_square(axes)
    _decorate(axes, title, x_label, y_label)
    _legend(axes, "upper left")
    return figure


def confusion_figure(counts, title: str = "", class_names: Optional[Sequence[str]] = None,
                     true_label: str = "true grade",
                     predicted_label: str = "predicted grade") -> Figure:
    """A confusion matrix: rows the true class, columns the predicted one, each cell showing its
    count and shaded by its share of the row (so rare classes read as well as common ones).

    Args:
      counts: (K, K) counts.
      title: above the matrix.
      class_names: K tick labels; default 0 … K − 1.
      true_label, predicted_label: the axis labels.

    Returns:
      The figure.

    Raises:
      ValueError: ``counts`` is not a square matrix.
    """
    counts = np.asarray(counts, np.int64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"a confusion matrix must be (K, K) counts, got shape {counts.shape}")
    k = counts.shape[0]
    rows = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, rows, out=np.zeros(counts.shape), where=rows > 0)
    figure, axes = new_figure(CONFUSION_SIZE, CONFUSION_MARGINS)
    axes.imshow(shares, cmap=CONFUSION_COLOURS, vmin=0.0, vmax=1.0)
    for (i, j), n in np.ndenumerate(counts):
        axes.text(j, i, str(n), ha="center", va="center", fontsize=TEXT_SIZE + 1,
                  color="white" if shares[i, j] > 0.6 else "black")
    names = [str(c) for c in (class_names if class_names is not None else range(k))]
    axes.set_xticks(range(k), names, fontsize=TEXT_SIZE)
    axes.set_yticks(range(k), names, fontsize=TEXT_SIZE)
    axes.xaxis.set_ticks_position("top")
    axes.xaxis.set_label_position("top")
    axes.set_xlabel(predicted_label, fontsize=LABEL_SIZE)
    axes.set_ylabel(true_label, fontsize=LABEL_SIZE)
    axes.tick_params(length=0)
    # placed in the top margin, above the predicted-grade axis, without measuring it
    height = figure.get_figheight()
    figure.text(0.5, 1 - 0.15 / height, title, ha="center", va="top", fontsize=TITLE_SIZE - 1)
    figure.text(0.5, 0.12 / height, f"shade: share of the row (of the {true_label})",
                ha="center", va="bottom", fontsize=TEXT_SIZE - 1, color="0.35")
    return figure
