"""Evaluation metrics from accumulated counts: confusion matrices in, kappa and accuracy out.

An evaluation step returns sufficient statistics per batch (``batch_statistics``: two confusion
matrices, a sum of squared errors, a count); they are summed over batches (and replicas), and
``summarize`` computes every metric once from the totals. Kappa from a confusion matrix is exactly
``sklearn.metrics.cohen_kappa_score(weights="quadratic")`` on the underlying labels.
"""

from __future__ import annotations

from typing import Dict

import numpy as np
import tensorflow as tf

from m2cnn_tf.config import NUM_GRADES

# How a prediction is read off the model (paper Fig. 2, Table II): the regression score rounded
# and clipped to a grade, or the class of highest probability.
SCORE = "score"
ARGMAX = "argmax"
PREDICTIONS = (SCORE, ARGMAX)


def score_to_grade(scores: tf.Tensor) -> tf.Tensor:
    """The score rounded to the nearest grade and clipped to 0–4 (int32).

    A non-finite score counts as grade 0 here rather than failing the confusion matrix: the
    training loop reports a non-finite loss itself, naming the step, and the step after a
    blown-up update may run before that check sees it.
    """
    rounded = tf.round(tf.cast(scores, tf.float32))
    rounded = tf.where(tf.math.is_finite(rounded), rounded, tf.zeros_like(rounded))
    return tf.cast(tf.clip_by_value(rounded, 0.0, float(NUM_GRADES - 1)), tf.int32)


def logits_to_grade(logits: tf.Tensor) -> tf.Tensor:
    """The most probable grade (int32)."""
    return tf.argmax(logits, axis=-1, output_type=tf.int32)


def confusion_counts(grades: tf.Tensor, predicted: tf.Tensor) -> tf.Tensor:
    """Counts of (true grade, predicted grade) pairs: int32 (5, 5), rows are the true grades."""
    return tf.math.confusion_matrix(tf.cast(grades, tf.int32), tf.cast(predicted, tf.int32),
                                    num_classes=NUM_GRADES, dtype=tf.int32)


def batch_statistics(grades: tf.Tensor, logits: tf.Tensor, scores: tf.Tensor) -> Dict[str, tf.Tensor]:
    """What one evaluation batch contributes; sum these over batches and replicas.

    Args:
        grades: int (B,) true grades.
        logits: (B, 5) classification head.
        scores: (B,) regression head.

    Returns:
        ``{"confusion_score", "confusion_argmax": int32 (5, 5), "squared_error_sum",
        "cross_entropy_sum": float32, "count": int32}``.
    """
    grades = tf.cast(grades, tf.int32)
    scores = tf.cast(scores, tf.float32)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=grades,
                                                        logits=tf.cast(logits, tf.float32))
    return {
        "confusion_score": confusion_counts(grades, score_to_grade(scores)),
        "confusion_argmax": confusion_counts(grades, logits_to_grade(logits)),
        "squared_error_sum": tf.reduce_sum(tf.square(scores - tf.cast(grades, tf.float32))),
        "cross_entropy_sum": tf.reduce_sum(ce),
        "count": tf.size(grades, out_type=tf.int32),
    }


def quadratic_weighted_kappa(confusion) -> float:
    """Cohen's kappa with quadratic weights, from a confusion matrix (paper III-A's metric).

    κ = 1 − Σ w·O / Σ w·E with w_ij = (i − j)², O the observed counts and E the counts expected
    from the two marginals if they were independent.

    Args:
        confusion: (K, K) counts, rows true, columns predicted.

    Returns:
        κ in [−1, 1]; 0.0 when it is undefined (no examples, or both raters constant and equal).
        A split of one grade (every true grade the same, as in a small validation split) gives
        0.0 whatever the predictions: the expected disagreement then equals the observed one
        (each is Σ_j w_gj · predicted_j for the one grade g), so κ = 1 − 1; and when the
        predictions are that grade too, both are 0 and 0.0 is returned instead of 0/0
        (scikit-learn's cohen_kappa_score returns NaN there). Never a division by zero.
    """
    observed = np.asarray(confusion, dtype=np.float64)
    total = observed.sum()
    if total == 0:
        return 0.0
    k = observed.shape[0]
    i, j = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    weights = (i - j) ** 2
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / total
    denominator = (weights * expected).sum()
    if denominator == 0:
        return 0.0
    return float(1.0 - (weights * observed).sum() / denominator)


def accuracy(confusion) -> float:
    """Share of examples on the diagonal (0.0 for none)."""
    confusion = np.asarray(confusion, dtype=np.float64)
    total = confusion.sum()
    return float(np.trace(confusion) / total) if total else 0.0


def summarize(totals: Dict[str, np.ndarray]) -> Dict:
    """All evaluation metrics from summed ``batch_statistics``.

    Args:
        totals: the sums, as NumPy values.

    Returns:
        JSON-serialisable ``{"kappa_score", "kappa_argmax", "accuracy_score", "accuracy_argmax",
        "mse", "cross_entropy", "count", "confusion_score", "confusion_argmax"}`` (confusion
        matrices as nested lists, rows true grades).
    """
    count = int(totals["count"])
    result = {"count": count}
    for how in PREDICTIONS:
        confusion = np.asarray(totals[f"confusion_{how}"], dtype=np.int64)
        result[f"kappa_{how}"] = quadratic_weighted_kappa(confusion)
        result[f"accuracy_{how}"] = accuracy(confusion)
        result[f"confusion_{how}"] = confusion.tolist()
    result["mse"] = float(totals["squared_error_sum"]) / count if count else float("nan")
    result["cross_entropy"] = float(totals["cross_entropy_sum"]) / count if count else float("nan")
    return result


def zero_statistics() -> Dict[str, np.ndarray]:
    """Totals before the first batch."""
    return {
        "confusion_score": np.zeros((NUM_GRADES, NUM_GRADES), np.int64),
        "confusion_argmax": np.zeros((NUM_GRADES, NUM_GRADES), np.int64),
        "squared_error_sum": np.float64(0.0),
        "cross_entropy_sum": np.float64(0.0),
        "count": np.int64(0),
    }


def accumulate(totals: Dict[str, np.ndarray], batch: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """``totals`` plus one batch's statistics (new dict; integer counts stay exact)."""
    return {key: totals[key] + np.asarray(batch[key]).astype(np.asarray(totals[key]).dtype)
            for key in totals}
