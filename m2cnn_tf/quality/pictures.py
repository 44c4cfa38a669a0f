"""The quality report's pictures: the ROC of each class against the rest and the confusion
matrix (``util.plots``), and grids of the most and least gradable photographs (OpenCV)."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import cv2
import numpy as np
from matplotlib.figure import Figure
from sklearn import metrics as sklearn_metrics

from m2cnn_tf.preprocess import image_io
from m2cnn_tf.config import NUM_QUALITIES, QUALITY_NAMES, REJECT
from m2cnn_tf.util import plots

GRID_COLUMNS = 6  # photographs per row of a grid
GRID_TILE = 240  # px: each photograph is shrunk to fit a square this wide
CAPTION_HEIGHT = 40  # px: two lines under each photograph
FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.42
BACKGROUND = 255
TEXT_COLOUR = (0, 0, 0)
UNGRADABLE_COLOUR = (200, 0, 0)  # the caption of a photograph called ungradable


def roc_figure(quality, probabilities, threshold: Optional[float] = None,
               title: str = "Image quality: each class against the rest") -> Figure:
    """One ROC curve per class (its probability against the other two classes), the AUC in
    each label, and the operating point on the Reject curve (P(Reject) ≥ ``threshold`` called
    ungradable)."""
    quality = np.asarray(quality)
    probabilities = np.asarray(probabilities)
    curves, points = [], []
    for q, name in enumerate(QUALITY_NAMES):
        positive = quality == q
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = sklearn_metrics.roc_curve(positive, probabilities[:, q])
        auc = sklearn_metrics.roc_auc_score(positive, probabilities[:, q])
        curves.append(plots.Curve(fpr, tpr, f"{name} vs rest: AUC {auc:.3f}"))
    rejects = quality == REJECT
    if threshold is not None and rejects.any() and not rejects.all():
        called = probabilities[:, REJECT] >= threshold
        sensitivity, false_alarms = called[rejects].mean(), called[~rejects].mean()
        points.append(plots.Point(float(false_alarms), float(sensitivity),
                                  f"operating point P(Reject) ≥ {threshold:.3f}:\n"
                                  f"{sensitivity:.1%} of Reject ungradable, "
                                  f"{false_alarms:.1%} of the rest"))
    return plots.roc_figure(curves, points, title)


def confusion_figure(quality, probabilities, title: str = "Image quality") -> Figure:
    """The 3 × 3 confusion matrix of the most probable class."""
    predicted = np.asarray(probabilities).argmax(axis=1)
    counts = sklearn_metrics.confusion_matrix(np.asarray(quality), predicted,
                                              labels=list(range(NUM_QUALITIES)))
    return plots.confusion_figure(counts, title, QUALITY_NAMES, "EyeQ quality",
                                  "most probable quality")


def _tile(path: str, lines: Sequence[str], colour) -> np.ndarray:
    """One photograph shrunk into a GRID_TILE square, with its caption below."""
    tile = np.full((GRID_TILE + CAPTION_HEIGHT, GRID_TILE, 3), BACKGROUND, np.uint8)
    try:
        image = image_io.read_image(path, 1)
    except image_io.ImageReadError:
        image = None
    if image is not None:
        h, w = image.shape[:2]
        scale = GRID_TILE / max(h, w)
        small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_AREA)
        y, x = (GRID_TILE - small.shape[0]) // 2, (GRID_TILE - small.shape[1]) // 2
        tile[y:y + small.shape[0], x:x + small.shape[1]] = small
    for i, line in enumerate(lines):
        cv2.putText(tile, line, (4, GRID_TILE + 15 + 17 * i), FONT, FONT_SCALE, colour, 1,
                    cv2.LINE_AA)
    return tile


def photograph_grid(paths: Sequence[str], captions: Sequence[Sequence[str]],
                    ungradable: Sequence[bool]) -> np.ndarray:
    """Photographs side by side, ``GRID_COLUMNS`` a row, each with its two caption lines (in
    ``UNGRADABLE_COLOUR`` where ``ungradable``). RGB uint8."""
    if not len(paths):
        raise ValueError("a photograph grid needs at least one photograph")
    columns = min(GRID_COLUMNS, len(paths))
    rows = math.ceil(len(paths) / columns)
    height = GRID_TILE + CAPTION_HEIGHT
    grid = np.full((rows * height, columns * GRID_TILE, 3), BACKGROUND, np.uint8)
    for i, (path, lines, bad) in enumerate(zip(paths, captions, ungradable)):
        y, x = (i // columns) * height, (i % columns) * GRID_TILE
        grid[y:y + height, x:x + GRID_TILE] = _tile(path, lines,
                                                    UNGRADABLE_COLOUR if bad else TEXT_COLOUR)
    return grid
