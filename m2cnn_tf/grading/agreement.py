"""How well two gradings agree: the confusion matrix, quadratic weighted kappa, accuracy.

One implementation of each, used by training (on the confusion counts summed in the graph,
``metrics.batch_statistics``), threshold fitting, evaluation, bootstrap intervals and two-eye
fusion. Kappa is computed from a confusion matrix by ``kappa_from_counts`` and equals
``sklearn.metrics.cohen_kappa_score(weights="quadratic", labels=[0, 1, 2, 3, 4])`` on the
underlying labels (tests/test_grading_rule.py). It is not delegated to scikit-learn because it
is evaluated thousands of times per call site: ``thresholds.fit_thresholds`` tries about 2,400
cuts, a bootstrap interval 1,000 resamples, and scikit-learn spends about 2 ms per call
validating its inputs where one ``np.bincount`` and this formula take about 0.1 ms.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from m2cnn_tf.config import NUM_GRADES


class UndefinedStatisticError(ValueError):
    """The statistic has no value on this sample (e.g. an AUC with only one class present)."""


# What training logs, reports and threshold fitting show where kappa is undefined: a number, so
# that a log line, a report and the best-checkpoint comparison always have one.
KAPPA_WHEN_UNDEFINED = 0.0

# w_ij = (i − j)²: quadratic disagreement weights between grades i and j.
_WEIGHTS = np.subtract.outer(np.arange(NUM_GRADES), np.arange(NUM_GRADES)).astype(np.float64) ** 2


def confusion(grades, predicted) -> np.ndarray:
    """Counts of (true grade, predicted grade) pairs.

    Args:
      grades: (N,) true grades 0–4.
      predicted: (N,) predicted grades 0–4.

    Returns:
      (5, 5) int64 counts, rows true grades, columns predicted.

    Raises:
      ValueError: arrays of different lengths, or a value outside 0–4 (naming it).
    """
    grades = np.asarray(grades, np.int64).ravel()
    predicted = np.asarray(predicted, np.int64).ravel()
    if grades.shape != predicted.shape:
        raise ValueError(f"{grades.size} true grades but {predicted.size} predicted grades")
    for name, values in (("grades", grades), ("predicted grades", predicted)):
        if values.size and (values.min() < 0 or values.max() >= NUM_GRADES):
            bad = values[(values < 0) | (values >= NUM_GRADES)][0]
            raise ValueError(f"{name} must be 0–{NUM_GRADES - 1}, got {bad}")
    return np.bincount(grades * NUM_GRADES + predicted,
                       minlength=NUM_GRADES * NUM_GRADES).reshape(NUM_GRADES, NUM_GRADES)


def kappa_from_counts(counts, undefined: Optional[float] = None) -> float:
    """Cohen's kappa with quadratic weights from a confusion matrix (paper III-A's metric).

    κ = 1 − Σ w·O / Σ w·E with w_ij = (i − j)², O the observed counts and E the counts expected
    from the two marginals if they were independent.

    Kappa is undefined when there are no examples, or when both gradings are one and the same
    grade (then Σ w·E = 0: scikit-learn returns NaN). A split of one true grade with varied
    predictions is defined and gives 0.0 whatever the predictions: the expected disagreement
    then equals the observed one (each is Σ_j w_gj · predicted_j for the one grade g), so
    κ = 1 − 1.

    Args:
      counts: (5, 5) counts, rows true grades, columns predicted (``confusion``, or counts
        summed over batches).
      undefined: returned where kappa is undefined (``KAPPA_WHEN_UNDEFINED`` for logs and
        reports); None raises instead (bootstrap intervals skip such resamples).

    Returns:
      κ in [−1, 1].

    Raises:
      UndefinedStatisticError: kappa is undefined and ``undefined`` is None.
      ValueError: ``counts`` is not (5, 5).
    """
    observed = np.asarray(counts, dtype=np.float64)
    if observed.shape != _WEIGHTS.shape:
        raise ValueError(f"a confusion matrix must be {_WEIGHTS.shape}, got {observed.shape}")
    total = observed.sum()
    expected = (np.outer(observed.sum(axis=1), observed.sum(axis=0)) / total if total
                else observed)
    denominator = (_WEIGHTS * expected).sum()
    if denominator == 0:
        if undefined is None:
            raise UndefinedStatisticError(
                "kappa is undefined when both gradings are one constant grade (or empty)")
        return float(undefined)
    return float(1.0 - (_WEIGHTS * observed).sum() / denominator)


def quadratic_kappa(grades, predicted, undefined: Optional[float] = None) -> float:
    """Quadratic weighted kappa of two gradings: ``kappa_from_counts(confusion(...))``.

    Args:
      grades: (N,) true grades 0–4.
      predicted: (N,) predicted grades 0–4.
      undefined: as in ``kappa_from_counts``.

    Raises:
      UndefinedStatisticError: both gradings are one and the same constant grade (or empty),
        unless ``undefined`` is given.
    """
    return kappa_from_counts(confusion(grades, predicted), undefined)


def accuracy(counts) -> float:
    """Share of examples on the diagonal of a confusion matrix (0.0 for none)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    return float(np.trace(counts) / total) if total else 0.0
