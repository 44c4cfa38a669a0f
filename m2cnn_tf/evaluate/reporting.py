"""The evaluation report: terminal lines, ``report.json``, ``report.md`` with its pictures,
and ``predictions.csv``.

``report.md`` beside ``report.json`` shows the numbers with their intervals and links the PNGs
(confusion matrices, the referable ROC curve, the reliability plot), drawn by ``util.plots``
from the statistics of ``grading.stats``. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import os
from typing import Dict, Optional, Sequence

import numpy as np

from matplotlib.figure import Figure

from m2cnn_tf.config import NUM_GRADES
from m2cnn_tf.evaluate.collect import Predictions
from m2cnn_tf.grading import stats, thresholds
from m2cnn_tf.grading.assessment import REFERABLE_GRADE
from m2cnn_tf.util import atomic, plots

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
PREDICTIONS_CSV = "predictions.csv"  # one row per evaluated image, beside report.json


def _interval_text(interval: Optional[Dict]) -> str:
    """" (95% CI low–high)" for an ``Interval.to_dict()``, "" for none."""
    if not interval:
        return ""
    return f" ({interval['confidence']:.0%} CI {interval['low']:.4f}–{interval['high']:.4f})"


def percent_with_interval(entry: Dict, key: str) -> str:
    """``entry[key]`` as a percentage, with ``entry[key + "_interval"]`` if there is one:
    "85.0% (95% CI 80.1–89.0%)"."""
    value, interval = entry.get(key), entry.get(f"{key}_interval")
    if value is None:
        return "n/a"
    if not interval:
        return f"{value:.1%}"
    return (f"{value:.1%} ({interval['confidence']:.0%} CI {interval['low']:.1%}–"
            f"{interval['high']:.1%})")


def dataset_lines(report: Dict) -> list:
    """What the reader of an evaluation on a public dataset must know: the dataset, what the
    intervals resample, its caveats (none for other data)."""
    dataset = report.get("dataset")
    if not dataset:
        return []
    resampled = report.get("bootstrap", {}).get("resampled", "patients")
    lines = [f"dataset: {dataset['dataset']} ({dataset['kind']}); grades: {dataset['grade_scale']}",
             "intervals resample " + ("images: the dataset publishes no patient ids"
                                      if resampled == "images" else "patients")]
    lines += [f"caveat: {c}" for c in dataset.get("caveats") or []]
    return lines


def format_report(report: Dict) -> str:
    """A few lines for the terminal."""
    def pct(value):
        return "n/a" if value is None else f"{value:.1%}"

    lines = [f"{report['count']} images, grades 0/1/2/3/4: "
             + "/".join(map(str, report["grade_counts"]))]
    for how, label in (("score", "from the score"), ("probabilities", "from probabilities")):
        r = report[how]
        ci = _interval_text(r.get("kappa_interval"))
        lines.append(f"  {label:<20} kappa {r['kappa']:.4f}{ci}  accuracy {pct(r['accuracy'])}  "
                     f"referable sens {pct(r['referable_sensitivity'])} / spec "
                     f"{pct(r['referable_specificity'])}  recall per grade "
                     + " ".join(pct(x) for x in r["recall_per_grade"]))
    referable = report.get("referable")
    if referable and referable.get("auc") is not None:
        ci = _interval_text(referable.get("auc_interval"))
        lines.append(f"  referable DR (grade >= 2): ROC AUC of the score {referable['auc']:.4f}"
                     f"{ci}; at the fitted cut {referable['threshold']:.3f} sensitivity "
                     f"{percent_with_interval(referable, 'sensitivity')}, specificity "
                     f"{percent_with_interval(referable, 'specificity')}")
    tta = report.get("tta")
    if tta and tta.get("score_std_mean") is not None:
        lines.append(f"  TTA x{tta['views']}: score std over views mean "
                     f"{tta['score_std_mean']:.3f}, 95th percentile {tta['score_std_p95']:.3f}")
    lines += [f"  {line}" for line in dataset_lines(report)]
    lines.append("  confusion (score; rows true 0–4, columns predicted 0–4):")
    lines += _confusion_lines(report["score"]["confusion"])
    lines += format_gradable(report)
    return "\n".join(lines)


def _confusion_lines(confusion) -> list:
    return [f"    {g}: " + " ".join(f"{n:>5}" for n in row) for g, row in enumerate(confusion)]


def _side_by_side_rows(report: Dict, gradable: Dict):
    """(label, value on all, value on the gradable) of the headline figures."""
    def kappa(r, how):
        interval = r[how].get("kappa_interval")
        return f"{r[how]['kappa']:.4f}" + (f" [{interval['low']:.3f}, {interval['high']:.3f}]"
                                           if interval else "")

    def auc(r):
        referable = r.get("referable") or {}
        if referable.get("auc") is None:
            return "n/a"
        interval = referable.get("auc_interval")
        return f"{referable['auc']:.4f}" + (f" [{interval['low']:.3f}, {interval['high']:.3f}]"
                                            if interval else "")

    return [("photographs", str(report["count"]), str(gradable["count"])),
            ("kappa (score)", kappa(report, "score"), kappa(gradable, "score")),
            ("kappa (probabilities)", kappa(report, "probabilities"),
             kappa(gradable, "probabilities")),
            ("referable AUC (score)", auc(report), auc(gradable)),
            ("accuracy (score)", f"{report['score']['accuracy']:.1%}",
             f"{gradable['score']['accuracy']:.1%}")]


def format_gradable(report: Dict) -> list:
    """Terminal lines: all photographs and the gradable ones side by side, with the counts and
    the gradable ones' confusion matrix (none when gradability is unknown)."""
    quality = report.get("gradable")
    if not quality:
        return []
    lines = [f"  quality: {quality['gradable']} gradable, {quality['ungradable']} ungradable, "
             f"{quality['unknown']} unknown — from {quality['source']}"]
    if quality["report"] is None:
        return lines + ["  (no photograph known to be gradable: no gradable-only figures)"]
    lines.append(f"    {'':<24}{'all':<28}gradable")
    for label, everything, gradable in _side_by_side_rows(report, quality["report"]):
        lines.append(f"    {label:<24}{everything:<28}{gradable}")
    lines.append("  confusion on the gradable (score; rows true 0–4, columns predicted 0–4):")
    return lines + _confusion_lines(quality["report"]["score"]["confusion"])


def predictions_csv(predictions: Predictions, cuts: Sequence[float]) -> str:
    """One CSV row per image: ids, true grade, both predicted grades, score (and its TTA spread),
    probabilities, and whether it is gradable (1, 0, −1 unknown)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    std, gradable = predictions.score_std, predictions.gradable
    writer.writerow(["image_id", "patient_id", "grade", "grade_from_score",
                     "grade_from_probabilities", "score"] + (["score_std"] if std is not None
                                                             else [])
                    + [f"p{g}" for g in range(NUM_GRADES)]
                    + (["gradable"] if gradable is not None else []))
    from_score = thresholds.apply_thresholds(predictions.scores, cuts)
    from_probabilities = predictions.probabilities.argmax(axis=1)
    for i in range(len(predictions)):
        writer.writerow([predictions.image_ids[i], predictions.patient_ids[i],
                         int(predictions.grades[i]), int(from_score[i]),
                         int(from_probabilities[i]), f"{predictions.scores[i]:.4f}"]
                        + ([f"{std[i]:.4f}"] if std is not None else [])
                        + [f"{p:.4f}" for p in predictions.probabilities[i]]
                        + ([int(gradable[i])] if gradable is not None else []))
    return buffer.getvalue()


def roc_figure(grades, scores, referable_probability=None,
               operating_point: Optional[stats.Screening] = None,
               title: str = "Referable DR (grade ≥ 2): ROC") -> Figure:
    """The referable-DR ROC curve of the score (and of P(referable) if given), with the chance
    line and the operating point of the fitted thresholds; curves and AUCs from
    ``grading.stats``. A curve that is undefined (one class only) is left out.

    Args:
      grades: (N,) true grades.
      scores: (N,) regression scores.
      referable_probability: optional (N,) P(grade ≥ 2) from the classification head.
      operating_point: optional ``stats.Screening`` of the graded predictions.
      title: above the plot.
    """
    curves = []
    for name, values in (("score", scores), ("P(grade ≥ 2)", referable_probability)):
        if values is None:
            continue
        try:
            curve = stats.roc_curve(grades, values)
        except stats.UndefinedStatisticError:
            continue
        curves.append(plots.Curve(curve.false_positive_rate, curve.true_positive_rate,
                                  f"{name}: AUC {stats.referable_auc(grades, values):.3f}"))
    points = []
    if operating_point is not None and operating_point.sensitivity is not None \
            and operating_point.specificity is not None:
        points.append(plots.Point(
            1.0 - operating_point.specificity, operating_point.sensitivity,
            f"grade from the score (fitted cuts):\nsensitivity {operating_point.sensitivity:.1%}, "
            f"specificity {operating_point.specificity:.1%}"))
    return plots.roc_figure(curves, points, title)


def calibration_figure(table: stats.Calibration,
                       title: str = "Reliability of P(grade ≥ 2)") -> Figure:
    """The reliability plot of P(grade ≥ 2) from a ``stats.calibration`` table."""
    return plots.reliability_figure(
        table.bin_edges, table.count, table.mean_predicted, table.observed_fraction, title,
        "predicted P(grade ≥ 2), mean per bin", "observed fraction with grade ≥ 2",
        f"model (ECE {table.expected_calibration_error:.3f})")


def report_figures(report: Dict, title: str = "",
                   predictions: Optional[Predictions] = None) -> Dict[str, Figure]:
    """The report's pictures by name: the two confusion matrices always; with ``predictions``
    (the arrays the report was computed from) also ``roc`` and ``calibration``."""
    figures = {f"confusion_{how}": plots.confusion_figure(
        report[how]["confusion"], f"{title} grade from the {how}".strip())
        for how in ("score", "probabilities")}
    gradable = (report.get("gradable") or {}).get("report")
    if gradable is not None:
        figures["confusion_score_gradable"] = plots.confusion_figure(
            gradable["score"]["confusion"], f"{title} gradable, grade from the score".strip())
    if predictions is not None and len(predictions):
        screening = stats.sensitivity_specificity(
            predictions.grades, thresholds.apply_thresholds(predictions.scores,
                                                            report["thresholds"]))
        referable = stats.referable_probability(predictions.probabilities)
        figures["roc"] = roc_figure(predictions.grades, predictions.scores, referable, screening,
                                    f"{title} referable DR (grade ≥ 2): ROC".strip())
        table = stats.calibration(predictions.grades >= REFERABLE_GRADE, np.clip(referable, 0, 1))
        figures["calibration"] = calibration_figure(
            table, f"{title} reliability of P(grade ≥ 2)".strip())
    return figures


def write_report(report: Dict, output_dir: str, title: str = "",
                 predictions: Optional[Predictions] = None) -> Dict[str, str]:
    """Writes ``report.json``, ``report.md`` and the pictures; returns their paths.

    Always: the confusion matrices (``confusion_score.png``, ``confusion_probabilities.png``).
    With ``predictions`` (the arrays the report was computed from) also the referable ROC curve
    (``roc.png``), the reliability plot (``calibration.png``) and ``predictions.csv``.
    Every file is written under a temporary name and renamed.
    """
    os.makedirs(output_dir, exist_ok=True)
    paths = {}
    for name, figure in report_figures(report, title, predictions).items():
        paths[name] = os.path.join(output_dir, f"{name}.png")
        plots.write_png(figure, paths[name])
    if predictions is not None and len(predictions):
        paths["predictions"] = os.path.join(output_dir, PREDICTIONS_CSV)
        atomic.write_text(paths["predictions"], predictions_csv(predictions,
                                                                report["thresholds"]))
    paths["markdown"] = os.path.join(output_dir, REPORT_MD)
    images = {k: os.path.basename(v) for k, v in paths.items() if v.endswith(".png")}
    atomic.write_text(paths["markdown"], markdown(report, images, title))
    paths["report"] = os.path.join(output_dir, REPORT_JSON)
    atomic.write_json(paths["report"], report, indent=2)
    return paths


def _pct(value) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _num(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _interval(entry: Optional[Dict], digits: int = 4) -> str:
    if not entry:
        return "n/a"
    return (f"{entry['point']:.{digits}f} ({entry['confidence']:.0%} CI "
            f"{entry['low']:.{digits}f}–{entry['high']:.{digits}f})")


def _markdown_gradable(report: Dict) -> list:
    """report.md's section: all photographs and the gradable ones side by side."""
    quality = report.get("gradable")
    if not quality:
        return []
    lines = ["## All photographs and the gradable ones", "",
             f"{quality['gradable']} gradable, {quality['ungradable']} ungradable, "
             f"{quality['unknown']} unknown — from {quality['source']}.", ""]
    if quality["report"] is None:
        return lines + ["No photograph is known to be gradable.", ""]
    lines += ["| | all | gradable |", "|---|---|---|"]
    lines += [f"| {label} | {a} | {b} |"
              for label, a, b in _side_by_side_rows(report, quality["report"])]
    return lines + [""]


def _markdown_header(report: Dict, title: str) -> list:
    """report.md's title, what was evaluated (model, data, images, patients, thresholds, TTA,
    skipped files) and the dataset's facts and caveats."""
    lines = [f"# Evaluation{f': {title}' if title else ''}", ""]
    for key, label in (("model", "Model"), ("data", "Data"), ("split", "Split")):
        if report.get(key):
            lines.append(f"- **{label}:** `{report[key]}`")
    lines.append(f"- **Images:** {report['count']} (grades 0/1/2/3/4: "
                 f"{'/'.join(map(str, report['grade_counts']))})")
    if report.get("num_patients"):
        lines.append(f"- **Patients:** {report['num_patients']} (intervals resample patients, "
                     "both eyes together)")
    lines.append(f"- **Score thresholds:** {', '.join(f'{t:.3f}' for t in report['thresholds'])}")
    tta = report.get("tta")
    if tta:
        lines.append(f"- **Test-time augmentation:** {tta['views']} views "
                     f"({', '.join(tta['view_names'])}); score spread over views (std) mean "
                     f"{_num(tta.get('score_std_mean'), 3)}, 95th percentile "
                     f"{_num(tta.get('score_std_p95'), 3)}")
    if report.get("skipped"):
        lines.append(f"- **Skipped:** {len(report['skipped'])} file(s) (listed in report.json)")
    if report.get("dataset"):
        lines += ["", "## Dataset", ""] + [f"- {line[0].upper()}{line[1:]}"
                                           for line in dataset_lines(report)]
    return lines


def markdown(report: Dict, images: Dict[str, str], title: str = "") -> str:
    """report.md: the headline numbers with their intervals, then the pictures.

    Args:
      report: ``evaluation.evaluate_arrays`` output (plus what evaluate.py adds).
      images: picture name → file name relative to report.md (confusion_score,
        confusion_probabilities, roc, calibration; any may be missing).
      title: the evaluated split's name.
    """
    lines = _markdown_header(report, title)
    lines += ["", "## Grading", "",
              "| grade from | quadratic kappa | accuracy | referable sensitivity | "
              "referable specificity |", "|---|---|---|---|---|"]
    for how, label in (("score", "score (thresholds)"), ("probabilities", "probabilities")):
        r = report[how]
        kappa = _interval(r.get("kappa_interval")) if r.get("kappa_interval") else _num(r["kappa"])
        lines.append(f"| {label} | {kappa} | {_pct(r['accuracy'])} | "
                     f"{_pct(r['referable_sensitivity'])} | {_pct(r['referable_specificity'])} |")
    recall = report["score"]["recall_per_grade"]
    lines += ["", "Recall per grade (score): " + ", ".join(
        f"{g}: {_pct(v)}" for g, v in enumerate(recall)), ""]
    referable = report.get("referable")
    if referable:
        lines += ["## Referable DR (grade ≥ 2)", "",
                  f"- ROC AUC of the score: {_interval(referable.get('auc_interval'))}"
                  if referable.get("auc_interval") else
                  f"- ROC AUC of the score: {_num(referable.get('auc'))}",
                  f"- ROC AUC of P(grade ≥ 2): {_num(referable.get('auc_probabilities'))}",
                  f"- At the fitted cut between grades 1 and 2 (score > "
                  f"{_num(referable.get('threshold'), 3)}): sensitivity "
                  f"{percent_with_interval(referable, 'sensitivity')}, specificity "
                  f"{percent_with_interval(referable, 'specificity')}"]
        if report.get("calibration"):
            lines.append(f"- Expected calibration error of P(grade ≥ 2): "
                         f"{_num(report['calibration']['expected_calibration_error'], 3)}")
        lines.append("")
    lines += _markdown_gradable(report)
    for key, caption in (("confusion_score", "Confusion matrix, grade from the score"),
                         ("confusion_score_gradable", "Confusion matrix of the gradable "
                                                      "photographs, grade from the score"),
                         ("confusion_probabilities", "Confusion matrix, grade from the "
                                                     "probabilities"),
                         ("roc", "Referable-DR ROC curve"),
                         ("calibration", "Reliability (calibration) of P(grade ≥ 2)")):
        if images.get(key):
            lines += [f"### {caption}", "", f"![{caption}]({images[key]})", ""]
    return "\n".join(lines)
