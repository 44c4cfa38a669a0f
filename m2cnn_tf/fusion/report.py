"""Per-eye against fused kappa, with bootstrap intervals over patients, and their text."""

from __future__ import annotations

from typing import Dict

import numpy as np

from m2cnn_tf.grading import assessment, stats


def kappas(predictions: Dict[str, np.ndarray]) -> Dict:
    """Per-eye and fused quadratic kappa of ``fuse`` output (all images), and counts."""
    grades = predictions["grade"]
    return {"images": int(len(grades)), "paired_images": int(predictions["paired"].sum()),
            "patients": int(len(set(predictions["patient_id"]))),
            "kappa_per_eye": assessment.grade_report(grades, predictions["per_eye_grade"])["kappa"],
            "kappa_fused": assessment.grade_report(grades, predictions["fused_grade"])["kappa"]}


def format_kappas(record: Dict) -> str:
    """One line per split: per-eye and fused kappa."""
    lines = []
    for split, k in record["kappa"].items():
        lines.append(f"  {split:<11} {k['images']:>5} images ({k['paired_images']} with both "
                     f"eyes, {k['patients']} patients)  kappa per eye {k['kappa_per_eye']:.4f}"
                     f"  fused {k['kappa_fused']:.4f}")
    return "\n".join(lines)


def interval_report(predictions: Dict[str, np.ndarray], **kw) -> Dict:
    """Per-eye and fused kappa side by side, with bootstrap intervals over patients.

    Args:
      predictions: ``fuse`` / ``evaluate_split`` output.
      **kw: ``num_resamples``, ``confidence``, ``seed`` of ``stats.bootstrap_interval``;
        ``num_resamples=0`` gives the kappas without intervals (``low``, ``high`` None).

    Returns:
      ``{"per_eye", "fused", "difference": {"kappa", "low", "high"}, "images", "paired_images",
      "patients", "num_resamples", "confidence"}``; ``difference`` is fused − per-eye, resampled
      paired (the same patients for both), so its interval says whether fusion helped. A
      kappa undefined on these data (both gradings one constant grade) is
      ``agreement.KAPPA_WHEN_UNDEFINED`` with ``low``/``high`` None, as in the per-eye report.
    """
    grades = np.asarray(predictions["grade"], np.int64)
    patients = np.asarray(predictions["patient_id"]).astype(str)
    summary = kappas(predictions)
    point = {"per_eye": summary["kappa_per_eye"], "fused": summary["kappa_fused"]}
    point["difference"] = point["fused"] - point["per_eye"]
    num_resamples = kw.get("num_resamples", stats.NUM_RESAMPLES)
    intervals = dict.fromkeys(point)
    if num_resamples:
        for name in ("per_eye", "fused"):
            intervals[name] = assessment.or_none(lambda name=name: stats.kappa_interval(
                grades, predictions[f"{name}_grade"], patients=patients, **kw))
        intervals["difference"] = assessment.or_none(lambda: stats.bootstrap_interval(
            lambda g, a, b: stats.quadratic_kappa(g, b) - stats.quadratic_kappa(g, a),
            [grades, predictions["per_eye_grade"], predictions["fused_grade"]],
            groups=patients, **kw))
    # Without an interval (none asked for, or the kappa undefined: both gradings one constant
    # grade) the point is the report's kappa (agreement.KAPPA_WHEN_UNDEFINED where undefined).
    result = {name: {"kappa": interval.point if interval else point[name],
                     "low": interval.low if interval else None,
                     "high": interval.high if interval else None}
              for name, interval in intervals.items()}
    result.update(images=summary["images"], paired_images=summary["paired_images"],
                  patients=summary["patients"], num_resamples=num_resamples,
                  confidence=kw.get("confidence", stats.CONFIDENCE))
    return result


def format_interval_report(report: Dict) -> str:
    """A few lines for the terminal: per-eye, fused and the difference with their intervals."""
    lines = [f"two-eye fusion: {report['images']} images ({report['paired_images']} with both "
             f"eyes) of {report['patients']} patients"
             + (f"; {report['confidence']:.0%} bootstrap intervals over patients "
                f"({report['num_resamples']} resamples)" if report["num_resamples"] else "")]
    for key, label in (("per_eye", "per-eye kappa"), ("fused", "fused kappa"),
                       ("difference", "fused − per-eye")):
        r = report[key]
        sign = "+" if key == "difference" else ""
        lines.append(f"  {label:<16} {r['kappa']:{sign}.4f}" + (
            f"  [{r['low']:{sign}.4f}, {r['high']:{sign}.4f}]" if r["low"] is not None else ""))
    return "\n".join(lines)
