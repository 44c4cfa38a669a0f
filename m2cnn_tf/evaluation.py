"""Grading quality from predictions: kappa, accuracy, recall per grade, referable-DR screening.

Works on plain arrays (true grades, scores, probabilities) so that it serves exports and training
runs alike; kappa comes from the confusion matrix (``metrics.quadratic_weighted_kappa``), equal to
``sklearn.metrics.cohen_kappa_score(weights="quadratic")``. Kappa and the referable AUC come with
bootstrap intervals that resample patients (``stats``), and the written report has the confusion
matrices, the referable ROC curve and a reliability plot as PNGs, linked from ``report.md``.

Evaluating is two steps: ``predictions_from_records`` / ``predictions_from_images`` grade a data
set into ``Predictions`` (arrays with image and patient ids), and ``evaluate_arrays`` turns
arrays into the report — so anything that combines predictions (per patient, say) fits between.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from m2cnn_tf import image_io, metrics, stats, thresholds
from m2cnn_tf.config import NUM_GRADES

REFERABLE_GRADE = stats.REFERABLE_GRADE  # moderate NPDR or worse: the usual referral threshold
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
PREDICTIONS_CSV = "predictions.csv"  # one row per evaluated image, beside report.json
Skipped = List[Dict[str, str]]  # {"file", "reason"} per input that could not be evaluated


@dataclasses.dataclass
class Predictions:
    """What a model said about each image of a data set, with the truth and the ids.

    ``score_std`` is the score's spread over test-time-augmentation views (None without TTA).
    """

    grades: np.ndarray  # (N,) int64 true grades
    scores: np.ndarray  # (N,) float
    probabilities: np.ndarray  # (N, 5)
    image_ids: np.ndarray  # (N,) str
    patient_ids: np.ndarray  # (N,) str: both eyes of a patient share it
    score_std: Optional[np.ndarray] = None  # (N,) float

    def __len__(self) -> int:
        return len(self.grades)


def _predictions(grades, scores, probabilities, image_ids, patient_ids, score_std) -> Predictions:
    return Predictions(np.asarray(grades, np.int64), np.asarray(scores, np.float64),
                       np.asarray(probabilities, np.float64).reshape(-1, NUM_GRADES),
                       np.asarray(image_ids, str), np.asarray(patient_ids, str),
                       np.asarray(score_std, np.float64) if score_std is not None else None)


def predictions_from_records(model, data_dir: str, split: str, batch_size: int = 16,
                             quiet: bool = False) -> Tuple[Predictions, Skipped]:
    """Grades every image of a built split (``build_tfrecords.py`` output).

    Args:
      model: a ``predictor.Predictor`` (optionally wrapped by ``tta.wrap``).
      data_dir, split: the data set.
      batch_size: images per call.
      quiet: no progress bar.

    Returns:
      (Predictions, skipped) — nothing is skipped from built records.
    """
    from m2cnn_tf import input_pipeline
    from m2cnn_tf import predictor as predictors

    columns = {k: [] for k in ("grades", "scores", "probabilities", "image_ids", "patient_ids",
                               "score_std")}
    total = input_pipeline.split_size(data_dir, split)
    dataset = input_pipeline.make_dataset(data_dir, split, model.resolution, batch_size,
                                          training=False)
    progress = predictors.iter_with_progress(None, total, f"evaluating {split}", quiet)
    for batch in dataset:
        outputs = model.predict_normalized(batch["image"].numpy())
        columns["grades"].append(batch["grade"].numpy())
        columns["scores"].append(outputs["score"])
        columns["probabilities"].append(outputs["probabilities"])
        columns["image_ids"] += [i.decode() for i in batch["image_id"].numpy()]
        columns["patient_ids"] += [i.decode() for i in batch["patient_id"].numpy()]
        if "score_std" in outputs:
            columns["score_std"].append(outputs["score_std"])
        progress.update(len(batch["grade"]))
    progress.close()
    if not columns["grades"]:
        raise ValueError(f"the '{split}' split of {data_dir} has no image")
    return _predictions(np.concatenate(columns["grades"]), np.concatenate(columns["scores"]),
                        np.concatenate(columns["probabilities"]), columns["image_ids"],
                        columns["patient_ids"],
                        np.concatenate(columns["score_std"]) if columns["score_std"] else None), []


def predictions_from_images(model, images_dir: str, labels_csv: str, batch_size: int = 16,
                            quiet: bool = False) -> Tuple[Predictions, Skipped]:
    """Grades raw photographs ``<images_dir>/<id>.jpeg`` labelled by a Kaggle-style CSV.

    Patients come from the Kaggle ids ``<patient>_<left|right>`` (``sources.parse_image_id``).
    A photograph that cannot be read or shows no fundus is skipped, with its reason.

    Returns:
      (Predictions, skipped).
    """
    from m2cnn_tf import predictor as predictors
    from m2cnn_tf import sources

    inputs, skipped_inputs = sources.kaggle_inputs([images_dir], [labels_csv])
    skipped = [{"file": s.file, "reason": s.reason} for s in skipped_inputs]
    record_of = {r.location: r for r in inputs}
    rows = []
    results = predictors.iter_with_progress(
        model.predict_files([r.location for r in inputs], batch_size), len(inputs),
        "evaluating", quiet)
    for path, outputs, error in results:
        if outputs is None or not bool(outputs["fundus_found"]):
            skipped.append({"file": path, "reason": error or "no fundus found"})
            continue
        rows.append((record_of[path], outputs))
    std = [o["score_std"] for _, o in rows] if rows and "score_std" in rows[0][1] else None
    return _predictions([r.grade for r, _ in rows], [o["score"] for _, o in rows],
                        [o["probabilities"] for _, o in rows], [r.image_id for r, _ in rows],
                        [r.patient_id for r, _ in rows], std), skipped


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
    screening = stats.sensitivity_specificity(grades, predicted)
    return {
        "kappa": metrics.quadratic_weighted_kappa(counts),
        "accuracy": metrics.accuracy(counts),
        "recall_per_grade": [_ratio(counts[g, g], counts[g].sum()) for g in range(NUM_GRADES)],
        "referable_sensitivity": screening.sensitivity,
        "referable_specificity": screening.specificity,
        "confusion": counts.tolist(),
    }


def _or_none(compute):
    """``compute()``, or None where the statistic is undefined on these data."""
    try:
        return compute()
    except stats.UndefinedStatisticError:
        return None


def referable_report(grades, scores, probabilities, cuts: Sequence[float], patients=None,
                     num_resamples: int = stats.NUM_RESAMPLES, seed: int = 0) -> Dict:
    """Referable DR (grade ≥ 2): ROC AUC of the score (with its bootstrap interval unless
    ``num_resamples`` is 0) and of P(grade ≥ 2), and sensitivity/specificity at the fitted cut
    between grades 1 and 2 (None where undefined: one class only)."""
    grades = np.asarray(grades, np.int64)
    scores = np.asarray(scores, np.float64)
    screening = stats.sensitivity_specificity(grades, thresholds.apply_thresholds(scores, cuts))
    interval = _or_none(lambda: stats.bootstrap_interval(
        stats.referable_auc, (grades, scores), groups=patients, num_resamples=num_resamples,
        seed=seed)) if num_resamples else None
    return {
        "threshold": float(cuts[REFERABLE_GRADE - 1]),
        "auc": _or_none(lambda: stats.referable_auc(grades, scores)),
        "auc_interval": interval.to_dict() if interval else None,
        "auc_probabilities": _or_none(lambda: stats.referable_auc(
            grades, stats.referable_probability(probabilities))),
        **screening.to_dict(),
    }


def evaluate_arrays(grades: Sequence[int], scores: Sequence[float], probabilities,
                    cuts: Sequence[float] = thresholds.ROUNDING, patients=None,
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
    predicted = {"score": thresholds.apply_thresholds(scores, cuts),
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
        interval = _or_none(lambda: stats.kappa_interval(grades, predicted[how], patients,
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


def evaluate_predictions(predictions: Predictions, cuts: Sequence[float], **kw) -> Dict:
    """``evaluate_arrays`` of ``Predictions``, resampling its patients."""
    return evaluate_arrays(predictions.grades, predictions.scores, predictions.probabilities,
                           cuts, patients=predictions.patient_ids, **kw)


def uncertainty_summary(predictions: Predictions, cuts: Sequence[float]) -> Optional[Dict]:
    """How the TTA spread (``score_std``) is distributed, overall and for right and wrong
    grades (an informative uncertainty is larger where the grade is wrong)."""
    if predictions.score_std is None or not len(predictions):
        return None
    std = predictions.score_std
    right = thresholds.apply_thresholds(predictions.scores, cuts) == predictions.grades

    def mean(values):
        return float(values.mean()) if values.size else None

    return {"score_std_mean": float(std.mean()), "score_std_median": float(np.median(std)),
            "score_std_p95": float(np.percentile(std, 95)), "score_std_max": float(std.max()),
            "score_std_mean_correct_grade": mean(std[right]),
            "score_std_mean_wrong_grade": mean(std[~right])}


def _interval_text(interval: Optional[Dict]) -> str:
    """" (95% CI low–high)" for an ``Interval.to_dict()``, "" for none."""
    if not interval:
        return ""
    return f" ({interval['confidence']:.0%} CI {interval['low']:.4f}–{interval['high']:.4f})"


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
                     f"{pct(referable['sensitivity'])}, specificity "
                     f"{pct(referable['specificity'])}")
    tta = report.get("tta")
    if tta and tta.get("score_std_mean") is not None:
        lines.append(f"  TTA x{tta['views']}: score std over views mean "
                     f"{tta['score_std_mean']:.3f}, 95th percentile {tta['score_std_p95']:.3f}")
    lines.append("  confusion (score; rows true 0–4, columns predicted 0–4):")
    for g, row in enumerate(report["score"]["confusion"]):
        lines.append(f"    {g}: " + " ".join(f"{n:>5}" for n in row))
    return "\n".join(lines)


def predictions_csv(predictions: Predictions, cuts: Sequence[float]) -> str:
    """One CSV row per image: ids, true grade, both predicted grades, score (and its TTA spread),
    probabilities."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    std = predictions.score_std
    writer.writerow(["image_id", "patient_id", "grade", "grade_from_score",
                     "grade_from_probabilities", "score"] + (["score_std"] if std is not None
                                                             else [])
                    + [f"p{g}" for g in range(NUM_GRADES)])
    from_score = thresholds.apply_thresholds(predictions.scores, cuts)
    from_probabilities = predictions.probabilities.argmax(axis=1)
    for i in range(len(predictions)):
        writer.writerow([predictions.image_ids[i], predictions.patient_ids[i],
                         int(predictions.grades[i]), int(from_score[i]),
                         int(from_probabilities[i]), f"{predictions.scores[i]:.4f}"]
                        + ([f"{std[i]:.4f}"] if std is not None else [])
                        + [f"{p:.4f}" for p in predictions.probabilities[i]])
    return buffer.getvalue()


def write_report(report: Dict, output_dir: str, title: str = "",
                 predictions: Optional[Predictions] = None) -> Dict[str, str]:
    """Writes ``report.json``, ``report.md`` and the pictures; returns their paths.

    Always: the confusion matrices (``confusion_score.png``, ``confusion_probabilities.png``).
    With ``predictions`` (the arrays the report was computed from) also the referable ROC curve
    (``roc.png``), the reliability plot (``calibration.png``) and ``predictions.csv``.
    Every file is written under a temporary name and renamed.
    """
    from m2cnn_tf import report as report_md
    from m2cnn_tf import summaries

    os.makedirs(output_dir, exist_ok=True)
    paths = {}
    for how in ("score", "probabilities"):
        image = summaries.confusion_matrix_image(report[how]["confusion"],
                                                 f"{title} grade from {how}".strip())
        paths[f"confusion_{how}"] = os.path.join(output_dir, f"confusion_{how}.png")
        image_io.write_png(paths[f"confusion_{how}"], image)
    if predictions is not None and len(predictions):
        cuts = report["thresholds"]
        screening = stats.sensitivity_specificity(
            predictions.grades, thresholds.apply_thresholds(predictions.scores, cuts))
        paths["roc"] = os.path.join(output_dir, "roc.png")
        image_io.write_png(paths["roc"], report_md.roc_image(
            predictions.grades, predictions.scores,
            stats.referable_probability(predictions.probabilities), screening,
            f"{title} referable DR (grade >= 2): ROC".strip()))
        table = stats.calibration(predictions.grades >= REFERABLE_GRADE, np.clip(
            stats.referable_probability(predictions.probabilities), 0, 1))
        paths["calibration"] = os.path.join(output_dir, "calibration.png")
        image_io.write_png(paths["calibration"], report_md.calibration_image(
            table, f"{title} reliability of P(grade >= 2)".strip()))
        paths["predictions"] = os.path.join(output_dir, PREDICTIONS_CSV)
        report_md.write_text(paths["predictions"], predictions_csv(predictions, cuts))
    paths["markdown"] = os.path.join(output_dir, REPORT_MD)
    images = {k: os.path.basename(v) for k, v in paths.items() if v.endswith(".png")}
    report_md.write_text(paths["markdown"], report_md.markdown(report, images, title))
    paths["report"] = os.path.join(output_dir, REPORT_JSON)
    report_md.write_text(paths["report"], json.dumps(report, indent=2))
    return paths
