"""Statistics with uncertainty: bootstrap intervals, referable-DR ROC, calibration.

A kappa measured on a few thousand photographs moves by a few hundredths from one sample to the
next, and the two eyes of a patient are not independent observations (their grades agree far
more often than chance). So intervals here come from a bootstrap that resamples *patients*
(both eyes together) with replacement when patient ids are given, rows otherwise, and reads a
percentile interval off the resampled statistics.

Referable DR (grade ≥ ``REFERABLE_GRADE``) is the screening question: the ROC curve and AUC use
the regression score as the referral score (the grade is a monotone cut of it), and sensitivity
and specificity are read at the cut that turns scores into grades ≥ 2 (the second of the four
fitted thresholds, between grades 1 and 2).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from sklearn import metrics as sklearn_metrics

from m2cnn_tf.config import NUM_GRADES
# Kappa and its undefined case are ``agreement``'s; imported here for the intervals below and for
# callers that take every statistic from this module.
from m2cnn_tf.grading.agreement import UndefinedStatisticError, quadratic_kappa  # noqa: F401

REFERABLE_GRADE = 2  # moderate NPDR or worse: the usual referral threshold in DR screening
NUM_RESAMPLES = 1000  # bootstrap resamples: enough for a stable 95 % percentile interval
CONFIDENCE = 0.95
CALIBRATION_BINS = 10  # equal-width bins of predicted probability in the reliability plot


@dataclasses.dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap percentile interval.

    ``num_resamples`` resamples were drawn; ``skipped`` of them left the statistic undefined
    and are not in the interval (so it rests on ``num_resamples − skipped`` values).
    """

    point: float
    low: float
    high: float
    num_resamples: int
    confidence: float
    skipped: int = 0

    def to_dict(self) -> Dict:
        return dataclasses.asdict(self)

    def __str__(self) -> str:
        return f"{self.point:.4f} ({self.confidence:.0%} CI {self.low:.4f}–{self.high:.4f})"


def _defined(value) -> Optional[float]:
    """``value`` as a float, or None when the statistic says it is undefined."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _evaluate(statistic: Callable, arrays: Sequence[np.ndarray]) -> Optional[float]:
    try:
        return _defined(statistic(*arrays))
    except UndefinedStatisticError:
        return None


def _group_index(groups: np.ndarray):
    """Rows sorted by group, with each group's start and size in that order."""
    _, inverse = np.unique(groups, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    sizes = np.bincount(inverse)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return order, starts, sizes


def _resampler(n: int, groups, seed: int) -> Callable[[], np.ndarray]:
    """A function drawing the rows of one bootstrap resample: ``n`` rows with replacement, or
    with ``groups`` (per-row ids) as many whole groups as there are, the rows of each together.
    """
    rng = np.random.default_rng(seed)
    if groups is None:
        return lambda: rng.integers(0, n, n)
    groups = np.asarray(groups)
    if len(groups) != n:
        raise ValueError(f"groups has {len(groups)} entries for {n} rows")
    order, starts, sizes = _group_index(groups)

    def draw() -> np.ndarray:
        drawn = rng.integers(0, len(sizes), len(sizes))
        counts = sizes[drawn]
        # the rows of each drawn group, concatenated: start of its group + 0, 1, …, size − 1
        offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        return order[np.repeat(starts[drawn], counts) + offsets]

    return draw


def bootstrap_interval(statistic: Callable[..., float], arrays: Sequence, groups=None,
                       num_resamples: int = NUM_RESAMPLES, confidence: float = CONFIDENCE,
                       seed: int = 0) -> Interval:
    """Percentile bootstrap interval of ``statistic(*arrays)``.

    Args:
      statistic: called with the resampled arrays (same order), returns a float; it may return
        None or NaN, or raise ``UndefinedStatisticError``, when undefined on a resample.
      arrays: equal-length arrays (rows are observations).
      groups: optional per-row group ids (patients): whole groups are drawn with replacement,
        as many as there are groups, so the rows of a group stay together.
      num_resamples: how many resamples to draw.
      confidence: coverage of the interval, in (0, 1).
      seed: for the random draws (the same seed gives the same interval).

    Returns:
      An ``Interval``; ``skipped`` counts the resamples on which the statistic was undefined.

    Raises:
      ValueError: empty or unequal arrays, bad ``num_resamples``/``confidence``.
      UndefinedStatisticError (a ValueError): the statistic is undefined on the full sample, or
        on every resample.
    """
    arrays = [np.asarray(a) for a in arrays]
    if not arrays:
        raise ValueError("bootstrap_interval needs at least one array")
    n = len(arrays[0])
    if n == 0:
        raise ValueError("bootstrap_interval: the arrays are empty")
    if any(len(a) != n for a in arrays):
        raise ValueError(f"bootstrap_interval: arrays of unequal length {[len(a) for a in arrays]}")
    if not isinstance(num_resamples, (int, np.integer)) or num_resamples < 1:
        raise ValueError(f"num_resamples must be a positive integer, got {num_resamples!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    point = _evaluate(statistic, arrays)
    if point is None:
        raise UndefinedStatisticError("the statistic is undefined on the full sample")
    draw_rows = _resampler(n, groups, seed)
    values: List[float] = []
    for _ in range(num_resamples):
        rows = draw_rows()
        value = _evaluate(statistic, [a[rows] for a in arrays])
        if value is not None:
            values.append(value)
    if not values:
        raise UndefinedStatisticError(
            f"the statistic is undefined on all {num_resamples} resamples")
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return Interval(point, float(low), float(high), int(num_resamples), float(confidence),
                    int(num_resamples - len(values)))


def _grades(values, name: str) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {values.shape}")
    if values.size and (values.min() < 0 or values.max() >= NUM_GRADES
                        or not np.all(np.equal(np.mod(values, 1), 0))):
        bad = values[(values < 0) | (values >= NUM_GRADES) | (np.mod(values, 1) != 0)][0]
        raise ValueError(f"{name} must be integer grades 0–{NUM_GRADES - 1}, got {bad!r}")
    return values.astype(np.int64)


def _same_length(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if len(a) != len(b):
        raise ValueError(f"{names} differ in length: {len(a)} and {len(b)}")


def kappa_interval(grades, predicted, patients=None, **kw) -> Interval:
    """Quadratic weighted kappa with its bootstrap interval.

    Args:
      grades: (N,) true grades 0–4.
      predicted: (N,) predicted grades 0–4.
      patients: optional (N,) patient ids: patients are resampled, both eyes together.
      **kw: ``num_resamples``, ``confidence``, ``seed`` of ``bootstrap_interval``.
    """
    grades, predicted = _grades(grades, "grades"), _grades(predicted, "predicted grades")
    _same_length(grades, predicted, "grades and predicted grades")
    return bootstrap_interval(quadratic_kappa, (grades, predicted), groups=patients, **kw)


def _referable(grades) -> np.ndarray:
    return _grades(grades, "grades") >= REFERABLE_GRADE


def _scores(scores, n: int) -> np.ndarray:
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 1 or len(scores) != n:
        raise ValueError(f"scores must be 1-D with one value per grade ({n}), got shape "
                         f"{scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError(f"scores must be finite, got {scores[~np.isfinite(scores)][0]!r}")
    return scores


@dataclasses.dataclass(frozen=True)
class RocCurve:
    """Operating points from the strictest cut to the loosest (starts at (0, 0), ends at (1, 1)).

    ``thresholds[i]``: scores ≥ it are called referable at point i (the first is +inf).
    """

    false_positive_rate: np.ndarray
    true_positive_rate: np.ndarray
    thresholds: np.ndarray


def _both_classes(grades, scores):
    """(referable, scores) checked: 1-D, one finite score per grade, both classes present.

    Raises:
      UndefinedStatisticError: only referable or only non-referable eyes (scikit-learn would
        warn and return NaN, or raise a bare ValueError).
    """
    positive = _referable(grades)
    scores = _scores(scores, len(positive))
    num_pos, num_neg = int(positive.sum()), int((~positive).sum())
    if num_pos == 0 or num_neg == 0:
        raise UndefinedStatisticError(
            f"the referable ROC needs both classes; got {num_pos} referable and {num_neg} "
            "non-referable")
    return positive, scores


def roc_curve(grades, scores) -> RocCurve:
    """ROC of the score as a referable-DR (grade ≥ 2) detector, one point per distinct score
    (``sklearn.metrics.roc_curve`` without dropping collinear points).

    Raises:
      UndefinedStatisticError: only referable or only non-referable eyes.
    """
    positive, scores = _both_classes(grades, scores)
    fpr, tpr, cuts = sklearn_metrics.roc_curve(positive, scores, drop_intermediate=False)
    return RocCurve(fpr, tpr, cuts)


def referable_auc(grades, scores) -> float:
    """Area under the referable-DR ROC curve (``sklearn.metrics.roc_auc_score(grades ≥ 2,
    scores)``; ties count one half).

    Raises:
      UndefinedStatisticError: only one class present.
    """
    positive, scores = _both_classes(grades, scores)
    return float(sklearn_metrics.roc_auc_score(positive, scores))


@dataclasses.dataclass(frozen=True)
class Screening:
    """Referable-DR detection by a grading: sensitivity, specificity and the counts behind."""

    sensitivity: Optional[float]  # None without referable eyes
    specificity: Optional[float]  # None without non-referable eyes
    true_positives: int
    false_negatives: int
    true_negatives: int
    false_positives: int

    def to_dict(self) -> Dict:
        return dataclasses.asdict(self)


def sensitivity_specificity(grades, predicted_grades) -> Screening:
    """Referable (grade ≥ 2) sensitivity and specificity of predicted grades.

    With grades cut from the score by the fitted thresholds this is the operating point at the
    cut between grades 1 and 2.
    """
    truth, called = _referable(grades), _referable(predicted_grades)
    _same_length(truth, called, "grades and predicted grades")
    tp, fn = int((truth & called).sum()), int((truth & ~called).sum())
    tn, fp = int((~truth & ~called).sum()), int((~truth & called).sum())
    return Screening(tp / (tp + fn) if tp + fn else None, tn / (tn + fp) if tn + fp else None,
                     tp, fn, tn, fp)


def referable_probability(probabilities) -> np.ndarray:
    """P(grade ≥ 2) from (N, 5) class probabilities."""
    probabilities = np.asarray(probabilities, np.float64)
    if probabilities.ndim != 2 or probabilities.shape[1] != NUM_GRADES:
        raise ValueError(f"probabilities must be (N, {NUM_GRADES}), got {probabilities.shape}")
    return probabilities[:, REFERABLE_GRADE:].sum(axis=1)


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Reliability of predicted probabilities of a binary outcome, per equal-width bin.

    Bins without examples have count 0 and NaN means. ``expected_calibration_error`` is the
    count-weighted mean of |observed − predicted| over the bins.
    """

    bin_edges: np.ndarray  # (B + 1,)
    mean_predicted: np.ndarray  # (B,)
    observed_fraction: np.ndarray  # (B,)
    count: np.ndarray  # (B,)
    expected_calibration_error: float

    def to_dict(self) -> Dict:
        def listed(values):
            return [None if not np.isfinite(v) else float(v) for v in values]

        return {"bin_edges": listed(self.bin_edges), "mean_predicted": listed(self.mean_predicted),
                "observed_fraction": listed(self.observed_fraction),
                "count": [int(c) for c in self.count],
                "expected_calibration_error": self.expected_calibration_error}


def calibration(outcomes, predicted, num_bins: int = CALIBRATION_BINS) -> Calibration:
    """Reliability table of ``predicted`` probabilities (N,) against 0/1 ``outcomes`` (N,)."""
    outcomes = np.asarray(outcomes, np.float64)
    predicted = np.asarray(predicted, np.float64)
    _same_length(outcomes, predicted, "outcomes and predicted probabilities")
    if num_bins < 1:
        raise ValueError(f"num_bins must be ≥ 1, got {num_bins}")
    if predicted.size and (np.nanmin(predicted) < -1e-6 or np.nanmax(predicted) > 1 + 1e-6
                           or not np.all(np.isfinite(predicted))):
        raise ValueError("predicted probabilities must be finite and in [0, 1], got values in "
                         f"[{np.min(predicted)}, {np.max(predicted)}]")
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    which = np.clip(np.digitize(predicted, edges[1:-1]), 0, num_bins - 1)
    count = np.bincount(which, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_predicted = np.bincount(which, predicted, num_bins) / count
        observed = np.bincount(which, outcomes, num_bins) / count
    filled = count > 0
    ece = (float(np.sum(count[filled] * np.abs(observed[filled] - mean_predicted[filled]))
                 / count.sum()) if count.sum() else float("nan"))
    return Calibration(edges, mean_predicted, observed, count, ece)
