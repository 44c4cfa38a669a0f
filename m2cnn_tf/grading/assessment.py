"""How good a grading is: kappa, accuracy, recall per grade, referable-DR screening.

Works on plain arrays (true grades, scores, probabilities) so that it serves exports, training
runs and two-eye fusion alike. Kappa and the referable AUC come with bootstrap intervals that
resample patients (``stats``).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

from m2cnn_tf.config import NUM_GRADES
from m2cnn_tf.grading import agreement, rule, stats

REFERABLE_GRADE = stats.REFERABLE_GRADE  # moderate NPDR or worse: the usual referral threshold


def _ratio(numerator: float, denominator: float) -> Optional[float]:
    return float(numerator / denominator) if denominator else None


def grade_report(grades, predicted) -> Dict:
    """Kappa, accuracy, recall per grade and referable sensitivity/specificity of one grading."""
    counts = agreement.confusion(grades, predicted)
    screening = stats.sensitivity_specificity(grades, predicted)
    return {
        "kappa": agreement.kappa_from_counts(counts, agreement.KAPPA_WHEN_UNDEFINED),
        "accuracy": agreement.accuracy(counts),
        "recall_per_grade": [_ratio(counts[g, g], counts[g].sum()) for g in range(NUM_GRADES)],
        "referable_sensitivity": screening.sensitivity,
        "referable_specificity": screening.specificity,
        "confusion": counts.tolist(),
    }


def or_none(compute):
    """``compute()``, or None where the statistic is undefined on these data."""
    try:
        return compute()
    except stats.UndefinedStatisticError:
        return None


def referable_report(grades, scores, probabilities, cuts: Sequence[float], patients=None,
                     num_resamples: int = stats.NUM_RESAMPLES, seed: int = 0) -> Dict:
    """Referable DR (grade ≥ 2): ROC AUC of the score and of P(grade ≥ 2), and sensitivity/
    specificity at the fitted cut between grades 1 and 2 (None where undefined: one class only);
    the AUC of the score, the sensitivity and the specificity with bootstrap intervals unless
    ``num_resamples`` is 0."""
    grades = np.asarray(grades, np.int64)
    scores = np.asarray(scores, np.float64)
    predicted = rule.apply_thresholds(scores, cuts)
    screening = stats.sensitivity_specificity(grades, predicted)

    def interval(statistic, arrays):
        found = or_none(lambda: stats.bootstrap_interval(
            statistic, arrays, groups=patients, num_resamples=num_resamples,
            seed=seed)) if num_resamples else None
        return found.to_dict() if found else None

    report = {
        "threshold": float(cuts[REFERABLE_GRADE - 1]),
        "auc": or_none(lambda: stats.referable_auc(grades, scores)),
        "auc_interval": interval(stats.referable_auc, (grades, scores)),
        "auc_probabilities": or_none(lambda: stats.referable_auc(
            grades, stats.referable_probability(probabilities))),
        **screening.to_dict(),
    }
    for what in ("sensitivity", "specificity"):  # at the fitted cut, resampled like the AUC
        report[f"{what}_interval"] = interval(
            lambda g, p, what=what: getattr(stats.sensitivity_specificity(g, p), what),
            (grades, predicted))
    return report


def evaluate_arrays(grades: Sequence[int], scores: Sequence[float], probabilities,
                    cuts: Sequence[float] = rule.ROUNDING, patients=None,
                    num_resamples: int = stats.NUM_RESAMPLES, seed: int = 0) -> Dict:
    """The full report for one set of predictions.

    Args:
      grades: (N,) true grades.
      scores: (N,) regression scores.
      probabilities: (N, 5) class probabilities.
      cuts: thresholds turning scores into grades.
      patients: optional (N,) patient ids: the bootstrap resamples patients (both eyes stay
        together); without them it resamples images.
      num_resamples: bootstrap resamples for the intervals (0: no intervals).
      seed: of the bootstrap.

    Returns:
      ``{"count", "grade_counts", "thresholds", "score": grade_report, "probabilities":
      grade_report, "mse", "referable", "calibration", "bootstrap", "num_patients"}``; each
      grade_report has ``kappa_interval`` (``stats.Interval`` as a dict, None if undefined).
    """
    grades = np.asarray(grades, np.int64)
    scores = np.asarray(scores, np.float64)
    probabilities = np.asarray(probabilities, np.float64).reshape(len(grades), NUM_GRADES)
    if patients is not None and len(patients) != len(grades):
        raise ValueError(f"{len(patients)} patient ids for {len(grades)} images")
    bootstrap = {"num_resamples": num_resamples, "seed": seed}
    predicted = {"score": rule.apply_thresholds(scores, cuts),
                 "probabilities": probabilities.argmax(axis=1)}
    report = {
        "count": int(len(grades)),
        "grade_counts": np.bincount(grades, minlength=NUM_GRADES).tolist(),
        "thresholds": list(cuts),
        "score": grade_report(grades, predicted["score"]),
        "probabilities": grade_report(grades, predicted["probabilities"]),
        "mse": float(np.mean((scores - grades) ** 2)) if len(grades) else None,
    }
    if not len(grades):
        return report
    for how in predicted:
        interval = or_none(lambda: stats.kappa_interval(grades, predicted[how], patients,
                                                        **bootstrap)) if num_resamples else None
        report[how]["kappa_interval"] = interval.to_dict() if interval else None
    report["referable"] = referable_report(grades, scores, probabilities, cuts, patients,
                                           **bootstrap)
    report["calibration"] = stats.calibration(
        grades >= REFERABLE_GRADE, np.clip(stats.referable_probability(probabilities), 0, 1)
    ).to_dict()
    report["num_patients"] = int(len(np.unique(patients))) if patients is not None else None
    report["bootstrap"] = {**bootstrap, "confidence": stats.CONFIDENCE,
                           "resampled": "patients" if patients is not None else "images"}
    return report


def uncertainty_summary(predictions, cuts: Sequence[float]) -> Optional[Dict]:
    """How the TTA spread (``score_std``) is distributed, overall and for right and wrong
    grades (an informative uncertainty is larger where the grade is wrong)."""
    if predictions.score_std is None or not len(predictions):
        return None
    std = predictions.score_std
    right = rule.apply_thresholds(predictions.scores, cuts) == predictions.grades

    def mean(values):
        return float(values.mean()) if values.size else None

    return {"score_std_mean": float(std.mean()), "score_std_median": float(np.median(std)),
            "score_std_p95": float(np.percentile(std, 95)), "score_std_max": float(std.max()),
            "score_std_mean_correct_grade": mean(std[right]),
            "score_std_mean_wrong_grade": mean(std[~right])}
