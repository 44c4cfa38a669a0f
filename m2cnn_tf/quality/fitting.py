"""Fitting the quality assessor on labelled photographs' measures.

``fit_assessor`` (quality.py fit): the logistic regression is cross-validated with both eyes
of a patient in one fold; the operating point is chosen on the *cross-validated* P(Reject)
(what the assessor says about photographs it has not seen, not its optimistic in-sample view)
for a target sensitivity to Reject; then the classifier is refitted on every photograph.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold

from m2cnn_tf.quality import assessor as assessors
from m2cnn_tf.config import NUM_QUALITIES, QUALITY, QUALITY_NAMES, REJECT, QualityConfig

# A measure that does not vary over the fitting photographs keeps scale 1 (it then adds a
# constant, which the bias absorbs).
_MIN_SCALE = 1e-6


class FittingError(ValueError):
    """The labelled photographs cannot fit an assessor; the message says why."""


def _check_classes(quality: np.ndarray, what: str) -> None:
    counts = np.bincount(quality, minlength=NUM_QUALITIES)
    if np.any(counts == 0):
        raise FittingError(f"{what} has quality counts {dict(zip(QUALITY_NAMES, counts.tolist()))}"
                           f"; fitting needs photographs of every class")


def fit_classifier(measures: np.ndarray, quality: np.ndarray,
                   settings: QualityConfig = QUALITY) -> Tuple[np.ndarray, ...]:
    """The standardised multinomial logistic regression (L2, classes balanced).

    Args:
      measures: (N, F) float; quality: (N,) int 0–2.

    Returns:
      (mean (F,), scale (F,), weights (F, 3), bias (3,)).

    Raises:
      FittingError: a class without photographs.
    """
    measures = np.asarray(measures, np.float64)
    quality = np.asarray(quality, np.int64)
    _check_classes(quality, "the fitting set")
    mean = measures.mean(axis=0)
    scale = measures.std(axis=0)
    scale = np.where(scale < _MIN_SCALE, 1.0, scale)
    model = LogisticRegression(C=settings.inverse_l2, max_iter=settings.max_iterations,
                               class_weight="balanced" if settings.balanced_classes else None)
    model.fit((measures - mean) / scale, quality)
    return mean, scale, model.coef_.T, model.intercept_


def _probabilities(parameters, measures: np.ndarray) -> np.ndarray:
    mean, scale, weights, bias = parameters
    return assessors.make_assessor(mean, scale, weights, bias, 1.0, measure_names=[
        f"m{i}" for i in range(len(mean))]).probabilities(measures)


def folds(quality: np.ndarray, patients: np.ndarray, settings: QualityConfig = QUALITY):
    """(train rows, test rows) of each fold: classes stratified, a patient's eyes together."""
    quality = np.asarray(quality)
    splitter = StratifiedGroupKFold(settings.folds, shuffle=True, random_state=settings.seed)
    return list(splitter.split(np.zeros(len(quality)), quality, np.asarray(patients)))


def cross_validated(measures, quality, found, patients, settings: QualityConfig = QUALITY,
                    columns: Optional[Sequence[int]] = None) -> np.ndarray:
    """Out-of-fold probabilities (N, 3): each photograph scored by the classifier fitted on
    the other folds (on ``columns`` of the measures only, if given). Photographs without a
    fundus are not fitted on and get ``assessor.NO_FUNDUS``."""
    measures = np.asarray(measures, np.float64)
    if columns is not None:
        measures = measures[:, list(columns)]
    quality = np.asarray(quality, np.int64)
    found = np.asarray(found, bool)
    result = np.tile(np.asarray(assessors.NO_FUNDUS, np.float32), (len(quality), 1))
    for train, test in folds(quality, patients, settings):
        train, test = train[found[train]], test[found[test]]
        parameters = fit_classifier(measures[train], quality[train], settings)
        result[test] = _probabilities(parameters, measures[test])
    return result


def choose_threshold(p_reject, quality, target: float) -> float:
    """The operating point: the highest threshold t with at least ``target`` of the Reject
    photographs at P(Reject) ≥ t (called ungradable, since gradable = P(Reject) < t).

    Raises:
      FittingError: no Reject photograph, or a target outside (0, 1].
    """
    if not 0.0 < target <= 1.0:
        raise FittingError(f"target sensitivity {target!r} must lie in (0, 1]")
    rejects = np.sort(np.asarray(p_reject, np.float64)[np.asarray(quality) == REJECT])[::-1]
    if not rejects.size:
        raise FittingError("no Reject photograph to choose the operating point on")
    needed = math.ceil(target * rejects.size - 1e-9)
    return float(min(max(rejects[needed - 1], np.finfo(np.float32).tiny), 1.0))


def fit_assessor(measures, quality, found, patients, fitted_on: str,
                 settings: QualityConfig = QUALITY) -> Tuple[assessors.Assessor, np.ndarray]:
    """Fits an assessor on labelled photographs (module docstring).

    Args:
      measures: (N, F) ``measures.MEASURE_NAMES``; quality: (N,) 0–2; found: (N,) bool;
      patients: (N,) patient ids (both eyes in one fold).
      fitted_on: what the photographs were, for the record.
      settings: classifier and cross-validation settings.

    Returns:
      (assessor, out-of-fold probabilities (N, 3) that chose its operating point).

    Raises:
      FittingError: a class without photographs (overall or in a fold).
    """
    quality = np.asarray(quality, np.int64)
    found = np.asarray(found, bool)
    out_of_fold = cross_validated(measures, quality, found, patients, settings)
    threshold = choose_threshold(out_of_fold[:, REJECT], quality,
                                 settings.target_reject_sensitivity)
    mean, scale, weights, bias = fit_classifier(np.asarray(measures)[found], quality[found],
                                                settings)
    record = {"fitted_on": fitted_on, "photographs": int(len(quality)),
              "no_fundus": int((~found).sum()),
              "quality_counts": dict(zip(QUALITY_NAMES,
                                         np.bincount(quality, minlength=3).tolist())),
              "operating_point": {
                  "chosen_on": f"{settings.folds}-fold cross-validated P(Reject), a patient's "
                               "eyes in one fold",
                  "target_reject_sensitivity": settings.target_reject_sensitivity},
              "classifier": {"inverse_l2": settings.inverse_l2,
                             "balanced_classes": settings.balanced_classes}}
    return assessors.make_assessor(mean, scale, weights, bias, threshold, record), out_of_fold


def summary_record(assessor: assessors.Assessor, report: Dict) -> assessors.Assessor:
    """The assessor with the cross-validated figures added to its record."""
    return assessors.make_assessor(assessor.mean, assessor.scale, assessor.weights,
                                   assessor.bias, assessor.reject_threshold,
                                   {**assessor.record, "cross_validation": report})
