"""Grading quality from predictions: kappa, accuracy, recall per grade, referable-DR screening.

Works on plain arrays (true grades, scores, probabilities) so that it serves exports and training
runs alike; kappa comes from the confusion matrix (``metrics.quadratic_weighted_kappa``), equal to
``sklearn.metrics.cohen_kappa_score(weights="quadratic")``.
"""

from __future__ import annotations

import json
import os
from typing import Dict, Optional, Sequence

import numpy as np

from m2cnn_tf import image_io, metrics, thresholds
from m2cnn_tf.config import NUM_GRADES

REFERABLE_GRADE = 2  # moderate NPDR or worse: the usual referral threshold in DR screening


def confusion(grades: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """(5, 5) int64 counts, rows true grades, columns predicted."""
    grades = np.asarray(grades, np.int64)
    predicted = np.asarray(predicted, np.int64)
    return np.bincount(grades * NUM_GRADES + predicted,
                       minlength=NUM_GRADES * NUM_GRADES).reshape(NUM_GRADES, NUM_GRADES)


def _ratio(numerator: float, denominator: float) -> Optional[float]:
    return float(numerator / denominator) if denominator else None


def grade_report(grades, predicted) -> Dict:
    """Kappa, accuracy, recall per grade and referable sensitivity/specificity of one grading."""
    counts = confusion(grades, predicted)
    grades = np.asarray(grades, np.int64)
    predicted = np.asarray(predicted, np.int64)
    referable_true = grades >= REFERABLE_GRADE
    referable_pred = predicted >= REFERABLE_GRADE
    return {
        "kappa": metrics.quadratic_weighted_kappa(counts),
        "accuracy": metrics.accuracy(counts),
        "recall_per_grade": [_ratio(counts[g, g], counts[g].sum()) for g in range(NUM_GRADES)],
        "referable_sensitivity": _ratio((referable_true & referable_pred).sum(),
                                        referable_true.sum()),
        "referable_specificity": _ratio((~referable_true & ~referable_pred).sum(),
                                        (~referable_true).sum()),
        "confusion": counts.tolist(),
    }


def evaluate_arrays(grades: Sequence[int], scores: Sequence[float], probabilities,
                    cuts: Sequence[float] = thresholds.ROUNDING) -> Dict:
    """The full report for one set of predictions.

    Args:
      grades: (N,) true grades.
      scores: (N,) regression scores.
      probabilities: (N, 5) class probabilities.
      cuts: thresholds turning scores into grades.

    Returns:
      ``{"count", "grade_counts", "thresholds", "score": grade_report, "probabilities":
      grade_report, "mse"}``.
    """
    grades = np.asarray(grades, np.int64)
    scores = np.asarray(scores, np.float64)
    probabilities = np.asarray(probabilities, np.float64).reshape(len(grades), NUM_GRADES)
    return {
        "count": int(len(grades)),
        "grade_counts": np.bincount(grades, minlength=NUM_GRADES).tolist(),
        "thresholds": list(cuts),
        "score": grade_report(grades, thresholds.apply_thresholds(scores, cuts)),
        "probabilities": grade_report(grades, probabilities.argmax(axis=1)),
        "mse": float(np.mean((scores - grades) ** 2)) if len(grades) else None,
    }


def format_report(report: Dict) -> str:
    """A few lines for the terminal."""
    def pct(value):
        return "n/a" if value is None else f"{value:.1%}"

    lines = [f"{report['count']} images, grades 0/1/2/3/4: "
             + "/".join(map(str, report["grade_counts"]))]
    for how, label in (("score", "from the score"), ("probabilities", "from probabilities")):
        r = report[how]
        lines.append(f"  {label:<20} kappa {r['kappa']:.4f}  accuracy {pct(r['accuracy'])}  "
                     f"referable sens {pct(r['referable_sensitivity'])} / spec "
                     f"{pct(r['referable_specificity'])}  recall per grade "
                     + " ".join(pct(x) for x in r["recall_per_grade"]))
    lines.append("  confusion (score; rows true 0–4, columns predicted 0–4):")
    for g, row in enumerate(report["score"]["confusion"]):
        lines.append(f"    {g}: " + " ".join(f"{n:>5}" for n in row))
    return "\n".join(lines)


def write_report(report: Dict, output_dir: str, title: str = "") -> Dict[str, str]:
    """Writes ``report.json`` and the confusion matrices as PNGs; returns their paths."""
    from m2cnn_tf import summaries

    os.makedirs(output_dir, exist_ok=True)
    paths = {}
    for how in ("score", "probabilities"):
        image = summaries.confusion_matrix_image(report[how]["confusion"],
                                                 f"{title} grade from {how}".strip())
        paths[f"confusion_{how}"] = os.path.join(output_dir, f"confusion_{how}.png")
        image_io.write_png(paths[f"confusion_{how}"], image)
    paths["report"] = os.path.join(output_dir, "report.json")
    tmp = paths["report"] + ".incomplete"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2)
    os.replace(tmp, paths["report"])
    return paths
