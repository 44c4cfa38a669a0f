"""The evaluation report as pictures and Markdown: ROC curve, reliability plot, report.md.

matplotlib is not a dependency, so the plots are drawn with OpenCV, like the confusion matrix
(``summaries.confusion_matrix_image``): a unit square of axes with grid, ticks, axis labels,
a title and a legend, curves anti-aliased. ``report.md`` beside ``report.json`` shows the
numbers with their intervals and links the PNGs.
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from m2cnn_tf.grading import stats


# Plot geometry in pixels (unit square of data inside the margins) and colours (RGB).
WIDTH, HEIGHT = 640, 560


MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 80, 28, 48, 64


TICKS = np.linspace(0.0, 1.0, 6)


_FONT = cv2.FONT_HERSHEY_SIMPLEX


_TEXT = (30, 30, 30)


_GRID = (228, 228, 228)


_AXIS = (90, 90, 90)


_REFERENCE = (150, 150, 150)


BLUE, ORANGE, RED, GREY_BAR = (31, 119, 180), (255, 127, 14), (214, 39, 40), (200, 210, 225)


_DASH = 8  # dash and gap length of dashed reference lines


@dataclasses.dataclass
class Series:
    """One legend entry: a polyline, markers, or both."""

    label: str
    x: np.ndarray
    y: np.ndarray
    colour: Tuple[int, int, int]
    line: bool = True
    dashed: bool = False
    marker_radius: Optional[np.ndarray] = None  # per point; None: no markers
    patch: bool = False  # shown in the legend as a filled square (for bars)


class UnitPlot:
    """Axes over [0, 1] × [0, 1] on a white canvas."""

    def __init__(self, title: str, x_label: str, y_label: str):
        self.image = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)
        self.x0, self.y0 = MARGIN_LEFT, HEIGHT - MARGIN_BOTTOM  # data origin in pixels
        self.width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
        self.height = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
        self.legend: List[Series] = []
        self._axes(title, x_label, y_label)

    def pixel(self, x, y) -> np.ndarray:
        """Data coordinates → (N, 2) int32 pixel points (anti-aliased drawing uses sub-pixels
        via ``shift``, so these are in 1/16 px)."""
        x, y = np.clip(np.asarray(x, float), 0, 1), np.clip(np.asarray(y, float), 0, 1)
        px = (self.x0 + x * self.width) * 16
        py = (self.y0 - y * self.height) * 16
        return np.stack([px, py], axis=-1).round().astype(np.int32).reshape(-1, 2)

    def text(self, text: str, org, scale: float = 0.45, colour=_TEXT, anchor: str = "left"):
        (w, h), _ = cv2.getTextSize(text, _FONT, scale, 1)
        x, y = int(org[0]), int(org[1])
        if anchor == "centre":
            x -= w // 2
        elif anchor == "right":
            x -= w
        cv2.putText(self.image, text, (x, y), _FONT, scale, colour, 1, cv2.LINE_AA)
        return w, h

    def _vertical_text(self, text: str, centre_y: int, x: int, scale: float = 0.5):
        (w, h), base = cv2.getTextSize(text, _FONT, scale, 1)
        patch = np.full((h + base + 4, w + 4, 3), 255, np.uint8)
        cv2.putText(patch, text, (2, h + 2), _FONT, scale, _TEXT, 1, cv2.LINE_AA)
        patch = cv2.rotate(patch, cv2.ROTATE_90_COUNTERCLOCKWISE)
        top = max(0, centre_y - patch.shape[0] // 2)
        self.image[top:top + patch.shape[0], x:x + patch.shape[1]] = patch

    def _axes(self, title, x_label, y_label):
        for t in TICKS:
            (gx, gy0), (_, gy1) = self.pixel([t, t], [0, 1]) // 16
            (gx0, gy), (gx1, _) = self.pixel([0, 1], [t, t]) // 16
            cv2.line(self.image, (gx, gy0), (gx, gy1), _GRID, 1)
            cv2.line(self.image, (gx0, gy), (gx1, gy), _GRID, 1)
            cv2.line(self.image, (gx, gy0), (gx, gy0 + 5), _AXIS, 1)
            cv2.line(self.image, (gx0 - 5, gy), (gx0, gy), _AXIS, 1)
            self.text(f"{t:.1f}", (gx, gy0 + 20), 0.42, anchor="centre")
            self.text(f"{t:.1f}", (gx0 - 9, gy + 5), 0.42, anchor="right")
        cv2.rectangle(self.image, (self.x0, self.y0 - self.height), (self.x0 + self.width, self.y0),
                      _AXIS, 1)
        self.text(x_label, (self.x0 + self.width // 2, HEIGHT - 18), 0.5, anchor="centre")
        self._vertical_text(y_label, self.y0 - self.height // 2, 12)
        self.text(title, (WIDTH // 2, 28), 0.55, anchor="centre")

    def _dashed(self, points: np.ndarray, colour):
        for a, b in zip(points[:-1], points[1:]):
            length = np.hypot(*(b - a)) / 16
            steps = max(1, int(length // _DASH))
            for k in range(0, steps, 2):
                p = a + (b - a) * k / steps
                q = a + (b - a) * min(k + 1, steps) / steps
                cv2.line(self.image, tuple(p.astype(int)), tuple(q.astype(int)), colour, 1,
                         cv2.LINE_AA, shift=4)

    def add(self, series: Series) -> None:
        points = self.pixel(series.x, series.y)
        if series.line and len(points) > 1:
            if series.dashed:
                self._dashed(points, series.colour)
            else:
                cv2.polylines(self.image, [points], False, series.colour, 2, cv2.LINE_AA, shift=4)
        if series.marker_radius is not None:
            for point, radius in zip(points, np.broadcast_to(series.marker_radius, len(points))):
                cv2.circle(self.image, tuple(int(v) for v in point), int(radius * 16),
                           series.colour, -1, cv2.LINE_AA, shift=4)
                cv2.circle(self.image, tuple(int(v) for v in point), int(radius * 16),
                           (255, 255, 255), 1, cv2.LINE_AA, shift=4)
        if series.label:
            self.legend.append(series)

    def bars(self, edges: np.ndarray, heights: np.ndarray, colour=GREY_BAR) -> None:
        """Filled bars (data coordinates), drawn under whatever is added later."""
        for left, right, h in zip(edges[:-1], edges[1:], heights):
            if h > 0:
                (x1, y1), (x2, y2) = self.pixel([left, right], [0, h]) // 16
                cv2.rectangle(self.image, (x1 + 1, y2), (x2 - 1, y1 - 1), colour, -1)

    def draw_legend(self, corner: str = "bottom_right", notes: Sequence[str] = ()) -> None:
        rows = [(s.label, s) for s in self.legend] + [(n, None) for n in notes]
        if not rows:
            return
        scale, line_h = 0.42, 20
        width = max(cv2.getTextSize(label, _FONT, scale, 1)[0][0] for label, _ in rows) + 44
        height = line_h * len(rows) + 8
        x = self.x0 + self.width - width - 10 if corner.endswith("right") else self.x0 + 10
        y = self.y0 - height - 10 if corner.startswith("bottom") else self.y0 - self.height + 10
        cv2.rectangle(self.image, (x, y), (x + width, y + height), (255, 255, 255), -1)
        cv2.rectangle(self.image, (x, y), (x + width, y + height), _REFERENCE, 1)
        for i, (label, series) in enumerate(rows):
            cy = y + 4 + line_h * i + line_h // 2
            if series is not None:
                if series.line:
                    a = np.array([[x + 8, cy], [x + 32, cy]]) * 16
                    if series.dashed:
                        self._dashed(a, series.colour)
                    else:
                        cv2.line(self.image, (x + 8, cy), (x + 32, cy), series.colour, 2,
                                 cv2.LINE_AA)
                if series.marker_radius is not None:
                    cv2.circle(self.image, (x + 20, cy), 5, series.colour, -1, cv2.LINE_AA)
                if series.patch:
                    cv2.rectangle(self.image, (x + 12, cy - 6), (x + 28, cy + 6), series.colour, -1)
            self.text(label, (x + 38, cy + 5), scale)


def roc_image(grades, scores, referable_probability=None, operating_point=None,
              title: str = "Referable DR (grade >= 2): ROC") -> np.ndarray:
    """The referable-DR ROC curve of the score (and of P(referable) if given), with the chance
    line and the operating point of the fitted thresholds.

    Args:
      grades: (N,) true grades.
      scores: (N,) regression scores.
      referable_probability: optional (N,) P(grade ≥ 2) from the classification head.
      operating_point: optional ``stats.Screening`` of the graded predictions.
      title: drawn above.

    Returns:
      uint8 RGB (H, W, 3).
    """
    plot = UnitPlot(title, "1 - specificity (false-positive rate)",
                    "sensitivity (true-positive rate)")
    plot.add(Series("chance", np.array([0.0, 1.0]), np.array([0.0, 1.0]), _REFERENCE,
                    dashed=True))
    curves = [("score", scores, BLUE)]
    if referable_probability is not None:
        curves.append(("P(grade >= 2)", referable_probability, ORANGE))
    for name, values, colour in curves:
        try:
            curve = stats.roc_curve(grades, values)
        except stats.UndefinedStatisticError:
            continue
        auc = stats.referable_auc(grades, values)
        plot.add(Series(f"{name}: AUC {auc:.3f}", curve.false_positive_rate,
                        curve.true_positive_rate, colour))
    notes = []
    if operating_point is not None and operating_point.sensitivity is not None \
            and operating_point.specificity is not None:
        plot.add(Series("grade from score (fitted cuts)",
                        np.array([1.0 - operating_point.specificity]),
                        np.array([operating_point.sensitivity]), RED, line=False,
                        marker_radius=np.array([6.0])))
        notes.append(f"  sens {operating_point.sensitivity:.1%}, "
                     f"spec {operating_point.specificity:.1%}")
    plot.draw_legend("bottom_right", notes)
    return plot.image


def calibration_image(table: stats.Calibration,
                      title: str = "Reliability of P(grade >= 2)") -> np.ndarray:
    """Reliability plot: observed share of referable eyes against the mean predicted
    probability per bin (marker area ∝ count), the diagonal of perfect calibration, and the
    share of images per bin as grey bars."""
    plot = UnitPlot(title, "predicted P(grade >= 2), mean per bin",
                    "observed fraction with grade >= 2")
    total = max(int(table.count.sum()), 1)
    plot.bars(table.bin_edges, table.count / total)
    plot.add(Series("perfect calibration", np.array([0.0, 1.0]), np.array([0.0, 1.0]),
                    _REFERENCE, dashed=True))
    filled = table.count > 0
    radius = 3.0 + 9.0 * np.sqrt(table.count[filled] / table.count.max()) if filled.any() else None
    plot.add(Series(f"model (ECE {table.expected_calibration_error:.3f})",
                    table.mean_predicted[filled], table.observed_fraction[filled], BLUE,
                    marker_radius=radius))
    plot.legend.append(Series("share of images per bin", np.zeros(0), np.zeros(0), GREY_BAR,
                              line=False, patch=True))
    plot.draw_legend("top_left")
    return plot.image
