"""Test-time augmentation: grade each normalised disc in several orientations and average.

A fundus photograph has no canonical orientation (training rotates over the full circle and
mirrors, ``input_pipeline.AUGMENT``), and the normalised disc is centred in a square, so rotating
it by quarter turns and mirroring it are exact pixel permutations that keep the disc where it
is. The views are the elements of a subgroup of the square's symmetry (dihedral) group:

  N = 1  identity
  N = 2  identity, mirror                       (a left eye shown as a right eye too)
  N = 4  rotations by 0°, 90°, 180°, 270°
  N = 8  the four rotations, each with and without the mirror (the whole dihedral group)

Because each set is a group, transforming the input by one of its elements only permutes the
views, so the averaged output does not change: rotating the photograph by 90° leaves the TTA-8
(and TTA-4) grade unchanged. Any other N would not be a group of these symmetries and is
refused.

Averaged: ``score`` and ``probabilities`` (over the views); ``grade`` is the averaged score cut
by the model's thresholds (the same cuts and the same rule as the export, ``grading.rule``) —
for a model read by its probabilities (cross-entropy only) the argmax of the averaged
probabilities, as its own ``grade`` is — and ``grade_from_probabilities`` that argmax. ``score_std`` is the
standard deviation of the score over the views: how much the model's answer depends on the
orientation, a cheap uncertainty.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Sequence, Tuple

import numpy as np

from m2cnn_tf.config import PREDICT_BY_PROBABILITIES, PREDICT_BY_SCORE
from m2cnn_tf.grading import rule
from m2cnn_tf.serving import predictor as predictors
from m2cnn_tf.serving import signatures


@dataclasses.dataclass(frozen=True)
class View:
    """Mirror left–right (if ``mirror``), then turn by ``quarter_turns`` × 90° anticlockwise."""

    quarter_turns: int
    mirror: bool

    @property
    def name(self) -> str:
        return f"rot{90 * self.quarter_turns}" + ("+mirror" if self.mirror else "")


VIEWS: Dict[int, Tuple[View, ...]] = {
    1: (View(0, False),),
    2: (View(0, False), View(0, True)),
    4: tuple(View(k, False) for k in range(4)),
    8: tuple(View(k, m) for m in (False, True) for k in range(4)),
}
STD_OUTPUT = "score_std"  # the extra output: the score's spread over the views


def check_num_views(num_views) -> int:
    """``num_views`` as an int, if it is one of the supported group sizes.

    Raises:
      ValueError: naming the value and the allowed ones.
    """
    if isinstance(num_views, bool) or not isinstance(num_views, (int, np.integer)) \
            or int(num_views) not in VIEWS:
        raise ValueError(f"--tta={num_views!r} is not supported: test-time augmentation uses "
                         f"{', '.join(map(str, VIEWS))} views (subgroups of the disc's rotations "
                         "by 90° and mirror, so that a rotated photograph grades the same)")
    return int(num_views)


def apply_view(images: np.ndarray, view: View) -> np.ndarray:
    """The view of a batch of square images (B, r, r, C); exact (a pixel permutation)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] != images.shape[2]:
        raise ValueError(f"expected a batch of square images (B, r, r, C), got {images.shape}")
    if view.mirror:
        images = images[:, :, ::-1]
    return np.ascontiguousarray(np.rot90(images, view.quarter_turns, axes=(1, 2)))


def combine(view_outputs: List[Dict[str, np.ndarray]], cuts: Sequence[float],
            prediction: str = PREDICT_BY_SCORE) -> Dict[str, np.ndarray]:
    """One output from the outputs of every view (see the module docstring).

    Args:
      view_outputs: serving outputs of each view, for the same batch in the same order.
      cuts: the model's score thresholds.
      prediction: what ``grade`` reads, as the model's own ``grade`` does
        (``signatures.prediction_of``): the averaged score, or the averaged probabilities.

    Returns:
      ``probabilities``, ``score``, ``grade``, ``grade_from_probabilities``, ``fundus_found`` and
      ``score_std``; rows without a fundus keep the no-fundus outputs (NaN, −1).
    """
    if not view_outputs:
        raise ValueError("combine needs the outputs of at least one view")
    scores = np.stack([np.asarray(o["score"], np.float64) for o in view_outputs])
    probabilities = np.stack([np.asarray(o["probabilities"], np.float64) for o in view_outputs])
    score = scores.mean(axis=0).astype(np.float32)
    mean_probabilities = probabilities.mean(axis=0).astype(np.float32)
    found = np.asarray(view_outputs[0]["fundus_found"], bool)
    for o in view_outputs[1:]:
        found = found & np.asarray(o["fundus_found"], bool)
    if len(score):
        from_probabilities = np.argmax(np.nan_to_num(mean_probabilities, nan=0.0), axis=1)
    else:
        from_probabilities = np.zeros((0,), np.int64)
    outputs = {
        "probabilities": mean_probabilities,
        "score": score,
        "grade": (from_probabilities.astype(np.int32) if prediction == PREDICT_BY_PROBABILITIES
                  else rule.apply_thresholds(score, cuts)),
        "grade_from_probabilities": from_probabilities.astype(np.int32),
        "fundus_found": found,
        STD_OUTPUT: scores.std(axis=0).astype(np.float32),
    }
    # The quality of a photograph does not depend on the view: passed through as given.
    outputs.update({k: view_outputs[0][k] for k in predictors.QUALITY_OUTPUTS
                    if k in view_outputs[0]})
    return predictors.mask_not_found(outputs, found)


class TTAPredictor(predictors.Predictor):
    """Any predictor, each image graded in ``num_views`` orientations and averaged.

    Photographs are preprocessed by the wrapped predictor's own ``normalized_files`` (an
    export's in-graph preprocessing, a training run's OpenCV one), then every view goes through
    its ``predict_normalized``: one call per view, so memory stays that of one batch.
    """

    def __init__(self, base: predictors.Predictor, num_views: int):
        self.base = base
        self.num_views = check_num_views(num_views)
        self.views = VIEWS[self.num_views]
        self.resolution = base.resolution
        self.assessor = base.assessor  # quality is the photograph's, whatever the view
        self.metadata = {**base.metadata, "tta_views": [v.name for v in self.views]}
        self.description = f"{base.description}, TTA ×{self.num_views}"
        self.cuts = tuple(base.metadata["thresholds"])
        self.prediction = signatures.prediction_of(base.metadata)

    def view_outputs(self, images, found=None) -> List[Dict[str, np.ndarray]]:
        """The wrapped predictor's outputs for each view, in ``self.views`` order."""
        return [self.base.predict_normalized(apply_view(images, view), found)
                for view in self.views]

    def predict_normalized(self, images, found=None):
        return combine(self.view_outputs(images, found), self.cuts, self.prediction)

    def normalized_files(self, paths, batch_size=8):
        return self.base.normalized_files(paths, batch_size)


def wrap(predictor: predictors.Predictor, num_views: int) -> predictors.Predictor:
    """``predictor`` itself for one view (an export keeps grading raw bytes through
    serving_default), else a ``TTAPredictor``."""
    if check_num_views(num_views) == 1:
        return predictor
    return TTAPredictor(predictor, num_views)

