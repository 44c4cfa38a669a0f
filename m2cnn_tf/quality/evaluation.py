"""How good a quality assessment is: AUCs, accuracy and macro-F1 with bootstrap intervals over
patients, what the operating point costs, and the best single measure as a baseline."""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from sklearn import metrics as sklearn_metrics

from m2cnn_tf.grading import stats
from m2cnn_tf.quality import fitting
from m2cnn_tf.quality.measures import MEASURE_NAMES
from m2cnn_tf.config import GOOD, QUALITY, QUALITY_NAMES, REJECT, USABLE, QualityConfig

METRICS = ("reject_auc", "good_auc", "accuracy", "macro_f1")


def _auc(positive: np.ndarray, scores: np.ndarray) -> float:
    if positive.all() or not positive.any():
        raise stats.UndefinedStatisticError("an AUC needs both classes")
    return float(sklearn_metrics.roc_auc_score(positive, scores))


def reject_auc(quality, probabilities) -> float:
    """ROC AUC of P(Reject) for Reject against the rest."""
    return _auc(np.asarray(quality) == REJECT, np.asarray(probabilities)[:, REJECT])


def good_auc(quality, probabilities) -> float:
    """ROC AUC of P(Good) for Good against the rest."""
    return _auc(np.asarray(quality) == GOOD, np.asarray(probabilities)[:, GOOD])


def accuracy(quality, probabilities) -> float:
    """Share of photographs whose most probable class is their label."""
    return float(np.mean(np.asarray(probabilities).argmax(axis=1) == np.asarray(quality)))


def macro_f1(quality, probabilities) -> float:
    """F1 of the most probable class, averaged over the three classes."""
    return float(sklearn_metrics.f1_score(np.asarray(quality),
                                          np.asarray(probabilities).argmax(axis=1),
                                          labels=[GOOD, USABLE, REJECT], average="macro",
                                          zero_division=0))


_STATISTICS = {"reject_auc": reject_auc, "good_auc": good_auc, "accuracy": accuracy,
               "macro_f1": macro_f1}


def point_metrics(quality, probabilities) -> Dict[str, float]:
    """``{metric: value}`` for ``METRICS``, without intervals."""
    return {name: _STATISTICS[name](quality, probabilities) for name in METRICS}


def metric_intervals(quality, probabilities, patients,
                     num_resamples: int = stats.NUM_RESAMPLES, seed: int = 0) -> Dict:
    """``{metric: Interval.to_dict()}`` for ``METRICS``, resampling patients (both eyes
    together); with ``num_resamples`` 0 the points alone (``low``, ``high`` None)."""
    quality = np.asarray(quality, np.int64)
    probabilities = np.asarray(probabilities, np.float64)
    result = {}
    for name in METRICS:
        statistic = _STATISTICS[name]
        if not num_resamples:
            result[name] = {"point": statistic(quality, probabilities), "low": None,
                            "high": None}
            continue
        result[name] = stats.bootstrap_interval(statistic, [quality, probabilities],
                                                groups=np.asarray(patients),
                                                num_resamples=num_resamples, seed=seed).to_dict()
    return result


def operating_point(probabilities, quality, threshold: float,
                    dr_grades: Optional[Sequence[int]] = None) -> Dict:
    """What ``gradable = P(Reject) < threshold`` does on labelled photographs.

    Returns:
      ``{"threshold", "reject_sensitivity" (Reject called ungradable), "gradable_kept" (Good
      and Usable called gradable), "good_kept", "usable_kept", "ungradable_share", counts}``,
      and with ``dr_grades`` ``"referable_dr_ungradable"``: the share of photographs with
      referable DR (grade ≥ 2) that would not be graded — what the operating point costs in
      DR sensitivity if they are not retaken — beside ``"referable_dr_labelled_reject"``, the
      share of them the labels call Reject.
    """
    quality = np.asarray(quality, np.int64)
    ungradable = np.asarray(probabilities)[:, REJECT] >= threshold

    def share(rows):
        return float(ungradable[rows].mean()) if rows.any() else None

    result = {"threshold": float(threshold), "photographs": int(len(quality)),
              "ungradable": int(ungradable.sum()),
              "reject_sensitivity": share(quality == REJECT),
              "gradable_kept": None if share(quality != REJECT) is None
              else 1.0 - share(quality != REJECT),
              "ungradable_share": float(ungradable.mean()) if len(quality) else None}
    for name, q in (("good_kept", GOOD), ("usable_kept", USABLE)):
        result[name] = None if share(quality == q) is None else 1.0 - share(quality == q)
    if dr_grades is not None:
        referable = np.asarray(dr_grades) >= stats.REFERABLE_GRADE
        result["referable_dr_photographs"] = int(referable.sum())
        result["referable_dr_ungradable"] = share(referable)
        result["referable_dr_labelled_reject"] = (float(np.mean(quality[referable] == REJECT))
                                                  if referable.any() else None)
    return result


def best_single_measure(measures, quality, found, patients,
                        settings: QualityConfig = QUALITY) -> Tuple[str, np.ndarray]:
    """The baseline: of the classifiers on one measure each (cross-validated like the full
    one), the one with the highest mean of Reject and Good AUC — chosen on the same
    photographs, which flatters the baseline, not the assessor.

    Returns:
      (the measure's name, its out-of-fold probabilities (N, 3)).
    """
    best = (-1.0, "", None)
    for column, name in enumerate(MEASURE_NAMES):
        probabilities = fitting.cross_validated(measures, quality, found, patients, settings,
                                                columns=[column])
        score = (reject_auc(quality, probabilities) + good_auc(quality, probabilities)) / 2
        if score > best[0]:
            best = (score, name, probabilities)
    return best[1], best[2]


def format_metrics(name: str, intervals: Dict) -> str:
    """One line: the metrics with their intervals."""
    parts = []
    for metric in METRICS:
        entry = intervals[metric]
        ci = (f" [{entry['low']:.3f}, {entry['high']:.3f}]" if entry.get("low") is not None
              else "")
        parts.append(f"{metric} {entry['point']:.3f}{ci}")
    return f"  {name:<28} " + "  ".join(parts)


def format_operating_point(point: Dict) -> str:
    """Two lines: the operating point and what it costs."""
    def pct(value):
        return "n/a" if value is None else f"{value:.1%}"

    text = (f"  operating point: gradable when P(Reject) < {point['threshold']:.3f} — "
            f"{pct(point['reject_sensitivity'])} of Reject photographs called ungradable; "
            f"{pct(point['gradable_kept'])} of Good/Usable kept (Good {pct(point['good_kept'])}, "
            f"Usable {pct(point['usable_kept'])}); {point['ungradable']} of "
            f"{point['photographs']} photographs ungradable")
    if "referable_dr_ungradable" in point:
        text += (f"\n  cost: {pct(point['referable_dr_ungradable'])} of the "
                 f"{point['referable_dr_photographs']} photographs with referable DR would not "
                 f"be graded (to be retaken); EyeQ's graders called "
                 f"{pct(point['referable_dr_labelled_reject'])} of them Reject")
    return text


def class_counts(quality) -> Dict[str, int]:
    return dict(zip(QUALITY_NAMES, np.bincount(np.asarray(quality, np.int64),
                                               minlength=len(QUALITY_NAMES)).tolist()))
