"""Evaluation metrics from accumulated counts: confusion matrices in, kappa and accuracy out.

An evaluation step returns sufficient statistics per batch (``batch_statistics``: two confusion
matrices, a sum of squared errors, a count); they are summed over batches (and replicas), and
``summarize`` computes every metric once from the totals, kappa and accuracy by
``agreement`` (the one implementation, equal to scikit-learn's ``cohen_kappa_score``).
"""

from __future__ import annotations

from typing import Dict

import numpy as np
import tensorflow as tf

from m2cnn_tf.config import NUM_GRADES
from m2cnn_tf.grading import agreement, rule

# How a prediction is read off the model (paper Fig. 2, Table II): the regression score cut at
# the rounding cuts (``rule.ROUNDING``, by ``rule.apply_thresholds_tf``: the grade evaluation and
# serving give), or the class of highest probability.
SCORE = "score"
ARGMAX = "argmax"
PREDICTIONS = (SCORE, ARGMAX)

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
    score_grades = rule.apply_thresholds_tf(scores, rule.ROUNDING)
    return {
        "confusion_score": confusion_counts(grades, score_grades),
        "confusion_argmax": confusion_counts(grades, logits_to_grade(logits)),
        "squared_error_sum": tf.reduce_sum(tf.square(scores - tf.cast(grades, tf.float32))),
        "cross_entropy_sum": tf.reduce_sum(ce),
        "count": tf.size(grades, out_type=tf.int32),
    }


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
        result[f"kappa_{how}"] = agreement.kappa_from_counts(
            confusion, agreement.KAPPA_WHEN_UNDEFINED)
        result[f"accuracy_{how}"] = agreement.accuracy(confusion)
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
