"""Several evaluations side by side: one Markdown table and one ROC plot.

Each evaluation is what ``evaluate.py`` wrote — ``report.json`` and, beside it,
``predictions.csv`` (the true grade and the score of every image), from which the ROC curves are
redrawn. The table gives, per evaluation, the quadratic kappa of the grade from the score and the
referable-DR (grade ≥ 2) AUC with their bootstrap intervals, sensitivity and specificity at the
model's fitted cut, what the intervals resample, and the caveats of the dataset.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
from matplotlib.figure import Figure

from m2cnn_tf.grading import rule, stats
from m2cnn_tf.evaluate import reporting
from m2cnn_tf.util import atomic, plots

COMPARISON_MD = "comparison.md"
COMPARISON_ROC = "comparison_roc.png"


@dataclasses.dataclass
class Evaluation:
    """One evaluation: its name in the table, its report, and (if saved) its grades and scores."""

    name: str
    report_path: str
    report: Dict
    grades: Optional[np.ndarray] = None
    scores: Optional[np.ndarray] = None


def _report_path(path: str) -> str:
    """``path`` itself if it is a file, else its report.json."""
    candidate = path if os.path.isfile(path) else os.path.join(path, reporting.REPORT_JSON)
    if not os.path.isfile(candidate):
        raise FileNotFoundError(f"--compare: {path} is neither a report.json nor a folder with "
                                "one (evaluate.py writes them to its --output_dir)")
    return candidate


def _name(report: Dict, report_path: str) -> str:
    dataset = report.get("dataset") or {}
    data = dataset.get("kind") or os.path.basename(os.path.normpath(str(report.get("data") or
                                                                        report_path)))
    return f"{data} / {report.get('split', '?')}"


def load_evaluation(path: str) -> Evaluation:
    """An evaluation from its report.json (or the folder holding it) and predictions.csv.

    Raises:
      FileNotFoundError: no report.json there; ValueError: a report that is not evaluate.py's.
    """
    report_path = _report_path(path)
    with open(report_path) as f:
        report = json.load(f)
    for key in ("count", "score", "thresholds"):
        if key not in report:
            raise ValueError(f"{report_path} has no {key!r}: not a report.json of evaluate.py")
    evaluation = Evaluation(_name(report, report_path), report_path, report)
    predictions = os.path.join(os.path.dirname(report_path), reporting.PREDICTIONS_CSV)
    if os.path.isfile(predictions):
        with open(predictions, newline="") as f:
            rows = list(csv.DictReader(f))
        evaluation.grades = np.array([int(r["grade"]) for r in rows], np.int64)
        evaluation.scores = np.array([float(r["score"]) for r in rows], np.float64)
    return evaluation


def load_evaluations(paths: Sequence[str]) -> List[Evaluation]:
    """Every evaluation named, with names made unique (a repeated name gets its folder)."""
    evaluations = [load_evaluation(p) for p in paths]
    names = [e.name for e in evaluations]
    for e in evaluations:
        if names.count(e.name) > 1:
            e.name = f"{e.name} ({os.path.dirname(e.report_path) or '.'})"
    return evaluations


def _interval(point: Optional[float], interval: Optional[Dict]) -> str:
    if point is None:
        return "n/a"
    if not interval:
        return f"{point:.3f}"
    return f"{point:.3f} [{interval['low']:.3f}, {interval['high']:.3f}]"


def _row(evaluation: Evaluation) -> str:
    report = evaluation.report
    referable = report.get("referable") or {}
    resampled = (report.get("bootstrap") or {}).get("resampled", "—")
    patients = report.get("num_patients")
    return (f"| {evaluation.name} | {report['count']} | {patients if patients else '—'} | "
            f"{_interval(report['score']['kappa'], report['score'].get('kappa_interval'))} | "
            f"{_interval(referable.get('auc'), referable.get('auc_interval'))} | "
            f"{reporting.percent_with_interval(referable, 'sensitivity')} | "
            f"{reporting.percent_with_interval(referable, 'specificity')} | "
            f"{resampled} |")


def comparison_markdown(evaluations: Sequence[Evaluation], roc_image: Optional[str] = None
                        ) -> str:
    """The table, the caveats of each dataset, and the ROC plot's link."""
    lines = ["# Evaluations compared", "",
             "| evaluation | images | patients | quadratic kappa [95 % CI] | referable AUC "
             "[95 % CI] | sensitivity | specificity | intervals resample |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [_row(e) for e in evaluations]
    lines += ["", "Kappa of the grade cut from the score by each model's fitted thresholds; "
              "referable DR is grade ≥ 2, sensitivity and specificity at the fitted cut "
              "between grades 1 and 2.", ""]
    for e in evaluations:
        notes = reporting.dataset_lines(e.report)[1:]
        if notes:
            lines += [f"**{e.name}** ({e.report.get('model', '')}):", ""]
            lines += [f"- {n}" for n in notes] + [""]
    if roc_image:
        lines += ["## Referable-DR ROC curves", "", f"![ROC curves]({roc_image})", ""]
    return "\n".join(lines)


def comparison_figure(evaluations: Sequence[Evaluation]) -> Figure:
    """One ROC plot: each evaluation's referable-DR curve of the score and its operating point
    at the fitted cut (an evaluation without predictions.csv, or with one class, is left out)."""
    curves, points = [], []
    for e in evaluations:
        if e.grades is None:
            continue
        try:
            curve = stats.roc_curve(e.grades, e.scores)
        except stats.UndefinedStatisticError:
            continue
        auc = stats.referable_auc(e.grades, e.scores)
        curves.append(plots.Curve(curve.false_positive_rate, curve.true_positive_rate,
                                  f"{e.name}: AUC {auc:.3f}"))
        point = stats.sensitivity_specificity(
            e.grades, rule.apply_thresholds(e.scores, e.report["thresholds"]))
        if point.sensitivity is not None and point.specificity is not None:
            points.append(plots.Point(1.0 - point.specificity, point.sensitivity,
                                      f"{e.name} at its fitted cut"))
    return plots.roc_figure(curves, points, "Referable DR (grade ≥ 2): ROC")


def write_comparison(paths: Sequence[str], output_dir: str) -> Dict[str, str]:
    """Writes comparison.md and comparison_roc.png to ``output_dir``; returns their paths and
    the table's text (``"markdown_text"``)."""
    evaluations = load_evaluations(paths)
    os.makedirs(output_dir, exist_ok=True)
    roc = os.path.join(output_dir, COMPARISON_ROC)
    plots.write_png(comparison_figure(evaluations), roc)
    text = comparison_markdown(evaluations, os.path.basename(roc))
    markdown = os.path.join(output_dir, COMPARISON_MD)
    atomic.write_text(markdown, text)
    return {"markdown": markdown, "roc": roc, "markdown_text": text}
