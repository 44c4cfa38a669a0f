"""quality.py's two commands: ``fit`` an assessor on labelled photographs, and ``report`` how an
assessor (or a cross-validated fit) does on labelled photographs, with pictures."""

from __future__ import annotations

import os
from typing import Callable, Dict, Optional

import numpy as np

from m2cnn_tf.grading import stats
from m2cnn_tf.preprocess import image_io
from m2cnn_tf.quality import assessor as assessors
from m2cnn_tf.quality import evaluation, fitting, labelled as labelled_data, pictures
from m2cnn_tf.config import QUALITY, QUALITY_NAMES, REJECT, QualityConfig
from m2cnn_tf.util import atomic, plots

MEASURES_SUFFIX = "_measures.npz"  # the measures' cache, beside the assessor file
GRID_SIZE = 18  # photographs in each of the most / least gradable grids


def default_cache(output: str) -> str:
    """Where ``fit`` caches the measures for an assessor written to ``output``."""
    return os.path.splitext(output)[0] + MEASURES_SUFFIX


def measured(images_dir: str, quality_csv: str, labels_csv: Optional[str], cache: Optional[str],
             batch_size: int = 16, quiet: bool = True, log: Callable = print):
    """(Labelled photographs that could be read, their measures, found) — unreadable files are
    left out and named, the measures cached in ``cache``."""
    data = labelled_data.labelled_photographs(images_dir, quality_csv, labels_csv)
    if data.skipped:
        log(f"{len(data.skipped)} image(s) {quality_csv} grades are not in {images_dir}; "
            f"first: {data.skipped[0][0]}")
    values, found, errors = labelled_data.cached_measures(data.paths, cache, batch_size, quiet)
    for path, reason in list(errors.items())[:10]:
        log(f"left out {path}: {reason}")
    keep = np.asarray([p not in errors for p in data.paths], bool)
    return data.subset(np.flatnonzero(keep)), values[keep], found[keep]


def cross_validation_report(data, values, found, assessor: assessors.Assessor,
                            out_of_fold: np.ndarray, num_resamples: int,
                            settings: QualityConfig = QUALITY) -> Dict:
    """The figures ``fit`` prints and records: the assessor's cross-validated metrics with
    intervals, the best single measure's, and what the operating point does."""
    name, baseline = evaluation.best_single_measure(values, data.quality, found, data.patients,
                                                    settings)
    return {
        "photographs": len(data), "quality_counts": evaluation.class_counts(data.quality),
        "patients": int(len(set(data.patients))), "folds": settings.folds,
        "bootstrap": {"num_resamples": num_resamples, "confidence": stats.CONFIDENCE,
                      "resampled": "patients"},
        "assessor": evaluation.metric_intervals(data.quality, out_of_fold, data.patients,
                                                num_resamples),
        "baseline": {"measure": name, **evaluation.metric_intervals(
            data.quality, baseline, data.patients, num_resamples)},
        "operating_point": evaluation.operating_point(out_of_fold, data.quality,
                                                      assessor.reject_threshold,
                                                      data.dr_grades),
    }


def print_cross_validation(report: Dict, log: Callable = print) -> None:
    log(f"{report['photographs']} photographs of {report['patients']} patients "
        f"({', '.join(f'{k} {v}' for k, v in report['quality_counts'].items())}); "
        f"{report['folds']}-fold cross-validation, a patient's eyes in one fold; 95 % bootstrap "
        f"intervals over patients ({report['bootstrap']['num_resamples']} resamples)")
    log(evaluation.format_metrics("assessor", report["assessor"]))
    log(evaluation.format_metrics(f"best single measure ({report['baseline']['measure']})",
                                  report["baseline"]))
    log(evaluation.format_operating_point(report["operating_point"]))


def fit(images_dir: str, quality_csv: str, output: str, labels_csv: Optional[str] = None,
        cache: Optional[str] = None, num_resamples: int = stats.NUM_RESAMPLES,
        batch_size: int = 16, quiet: bool = True, settings: QualityConfig = QUALITY,
        log: Callable = print) -> assessors.Assessor:
    """``quality.py fit``: measures, cross-validation, operating point, the final fit, saved
    to ``output`` with its cross-validated figures in its record."""
    data, values, found = measured(images_dir, quality_csv, labels_csv,
                                   cache or default_cache(output), batch_size, quiet, log)
    fitted_on = f"{len(data)} photographs of {images_dir} graded by {quality_csv}"
    assessor, out_of_fold = fitting.fit_assessor(values, data.quality, found, data.patients,
                                                 fitted_on, settings)
    report = cross_validation_report(data, values, found, assessor, out_of_fold,
                                     num_resamples, settings)
    print_cross_validation(report, log)
    assessor = fitting.summary_record(assessor, report)
    assessors.save(assessor, output)
    log(f"wrote {output}: {assessors.describe(assessor)}")
    return assessor


def _grids(data, probabilities, assessor_threshold: float, output_dir: str) -> Dict[str, str]:
    """most_gradable.png and least_gradable.png: the photographs with the lowest and the highest
    P(Reject), captioned with their EyeQ label and P(Reject)."""
    order = np.argsort(probabilities[:, REJECT], kind="stable")
    paths = {}
    for name, rows in (("most_gradable", order[:GRID_SIZE]),
                       ("least_gradable", order[::-1][:GRID_SIZE])):
        captions = [(str(data.image_ids[i]),
                     f"EyeQ {QUALITY_NAMES[data.quality[i]]}, P(Reject) "
                     f"{probabilities[i, REJECT]:.2f}") for i in rows]
        grid = pictures.photograph_grid([data.paths[i] for i in rows], captions,
                                        probabilities[rows, REJECT] >= assessor_threshold)
        paths[name] = os.path.join(output_dir, f"{name}.png")
        image_io.write_png(paths[name], grid)
    return paths


def report(images_dir: str, quality_csv: str, output_dir: str,
           assessor_path: Optional[str] = None, labels_csv: Optional[str] = None,
           cache: Optional[str] = None, num_resamples: int = stats.NUM_RESAMPLES,
           batch_size: int = 16, quiet: bool = True, settings: QualityConfig = QUALITY,
           log: Callable = print) -> Dict[str, str]:
    """``quality.py report``: an assessor's outputs on labelled photographs (with
    ``assessor_path``), or else the cross-validated outputs of a fit on them — ROC per class,
    confusion matrix, the most and least gradable photographs, ``report.json``."""
    os.makedirs(output_dir, exist_ok=True)
    data, values, found = measured(images_dir, quality_csv, labels_csv,
                                   cache or os.path.join(output_dir, "measures.npz"),
                                   batch_size, quiet, log)
    if assessor_path:
        assessor = assessors.load(assessor_path)
        probabilities = assessor.probabilities(values, found)
        what = f"the assessor {assessor_path} ({assessors.describe(assessor)})"
    else:
        assessor, probabilities = fitting.fit_assessor(values, data.quality, found,
                                                       data.patients, "report", settings)
        what = "a fit on these photographs, cross-validated (each scored by a fit without it)"
    summary = {"scored_by": what, "photographs": len(data),
               "quality_counts": evaluation.class_counts(data.quality),
               "metrics": evaluation.metric_intervals(data.quality, probabilities, data.patients,
                                                      num_resamples),
               "operating_point": evaluation.operating_point(
                   probabilities, data.quality, assessor.reject_threshold, data.dr_grades)}
    log(f"{len(data)} photographs scored by {what}")
    log(evaluation.format_metrics("assessor", summary["metrics"]))
    log(evaluation.format_operating_point(summary["operating_point"]))
    paths = {"roc": os.path.join(output_dir, "roc.png"),
             "confusion": os.path.join(output_dir, "confusion.png")}
    plots.write_png(pictures.roc_figure(data.quality, probabilities, assessor.reject_threshold),
                    paths["roc"])
    plots.write_png(pictures.confusion_figure(data.quality, probabilities), paths["confusion"])
    paths.update(_grids(data, probabilities, assessor.reject_threshold, output_dir))
    paths["report"] = os.path.join(output_dir, "report.json")
    atomic.write_json(paths["report"], {**summary, "pictures": {
        k: os.path.basename(v) for k, v in paths.items() if v.endswith(".png")}}, indent=2)
    return paths
