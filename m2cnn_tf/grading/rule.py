"""Score → grade: the one rule, in NumPy and in TensorFlow.

The regression head gives a score; four increasing cuts turn it into a grade 0–4 (paper Fig. 2,
Table II): **the grade is the number of cuts the score strictly exceeds, compared in float32**
(the precision of the exported graph). Rounding is the cuts ``ROUNDING`` = (0.5, 1.5, 2.5, 3.5);
``thresholds.fit_thresholds`` fits others for kappa. Every grade read off a score — training's
confusion counts, evaluation, the export's signatures, two-eye fusion, test-time augmentation,
Grad-CAM — comes from ``apply_thresholds`` (NumPy) or ``apply_thresholds_tf`` (the graph), which
give identical results (tests/test_grading_rule.py).

* A score equal to a cut does not exceed it, so **at an exact cut the grade goes down**: with the
  rounding cuts 0.5 → 0, 1.5 → 1, 2.5 → 2 and 3.5 → 3. Training once rounded with ``tf.round``
  (halves to even: 1.5 → 2 but 2.5 → 2) while evaluation cut, so the two disagreed at 1.5 and
  3.5; training's counts now use this rule with ``ROUNDING`` and agree with evaluation.
* A NaN score exceeds no cut: grade 0 (the serving outputs mask photographs without a fundus to
  −1 after grading; training counts a blown-up score as grade 0 and reports the non-finite loss
  itself). +inf exceeds every cut (grade 4), −inf none (grade 0).
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import tensorflow as tf

from m2cnn_tf.config import NUM_GRADES

ROUNDING = tuple(g + 0.5 for g in range(NUM_GRADES - 1))  # (0.5, 1.5, 2.5, 3.5)


def check_thresholds(thresholds: Sequence[float]) -> Tuple[float, ...]:
    """Validates the cuts of a grading.

    Args:
      thresholds: four cuts (``NUM_GRADES - 1``).

    Returns:
      The cuts as a tuple of Python floats.

    Raises:
      ValueError: not four values, or not finite and strictly increasing (naming them).
    """
    values = tuple(float(t) for t in thresholds)
    if len(values) != NUM_GRADES - 1:
        raise ValueError(f"expected {NUM_GRADES - 1} thresholds, got {len(values)}: {values}")
    if not all(np.isfinite(values)) or any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"thresholds must be finite and strictly increasing, got {values}")
    return values


def apply_thresholds(scores, thresholds: Sequence[float] = ROUNDING) -> np.ndarray:
    """The grade of each score: how many cuts it strictly exceeds, in float32 (NumPy).

    Args:
      scores: scores of any shape (cast to float32, as the graph compares them).
      thresholds: four increasing cuts (``check_thresholds``); rounding by default.

    Returns:
      int32 grades 0–4 of the shape of ``scores``.
    """
    cuts = np.asarray(check_thresholds(thresholds), np.float32)
    scores = np.asarray(scores, np.float32)
    grades = np.zeros(scores.shape, np.int32)
    for cut in cuts:  # four comparisons: cheaper than an (N, 4) array, and NaN exceeds none
        grades += scores > cut
    return grades


def apply_thresholds_tf(scores: tf.Tensor, thresholds) -> tf.Tensor:
    """``apply_thresholds`` in the graph.

    Args:
      scores: (B,) scores (cast to float32).
      thresholds: (4,) float32 cuts as a tensor (an export's constant), or a sequence of four
        increasing cuts (checked by ``check_thresholds``).

    Returns:
      (B,) int32 grades 0–4.
    """
    if not tf.is_tensor(thresholds):
        thresholds = check_thresholds(thresholds)
    thresholds = tf.cast(thresholds, tf.float32)  # no op for the export's float32 constant
    scores = tf.cast(scores, tf.float32)
    return tf.reduce_sum(tf.cast(scores[:, None] > thresholds[None, :], tf.int32), axis=1)
