"""The quality assessor on EyeQ-labelled EyePACS photographs, against the best single measure.

    python bench/quality.py [--images_dir=../shared/data/eyepacs_1024/images]
        [--quality_csv=../shared/data/eyepacs_1024/eyeq_quality.csv]
        [--labels_csv=../shared/data/eyepacs_1024/trainLabels.csv] [--repeats=5]
        [--bootstrap=1000] [--twins=10]

On the photographs the quality CSV grades (253 of eyepacs_1024: Good 164, Usable 34, Reject 55):
the measures are computed once (``quality.measures``, the export's graph); the assessor
(``quality.fitting``) is cross-validated in 5 folds with both eyes of a patient in one fold,
and so is the baseline — the same classifier on one measure, the best of them (chosen on these
photographs, which flatters the baseline). Printed: AUC of Reject vs the rest and of Good vs the
rest, 3-class accuracy and macro-F1 of both, with 95 % bootstrap intervals over patients (CV
seed 0), the spread of the point figures over ``--repeats`` CV seeds, the operating point (chosen
on the cross-validated P(Reject) for 90 % sensitivity to Reject) and what it costs; then the
assessor fitted on all of them against degraded synthetic twins of each kind (``--twins`` pairs
each), and an assessor fitted on synthetic photographs only, applied to the real ones (why the
package ships no default assessor). Nothing is written.
"""

from __future__ import annotations

from absl import app, flags
import dataclasses
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
DATA = os.path.join(os.path.dirname(REPO), "shared", "data", "eyepacs_1024")

from m2cnn_tf.quality import evaluation, fitting, measures, workflow  # noqa: E402
from m2cnn_tf.quality import synthetic as degraded  # noqa: E402
from m2cnn_tf.config import QUALITY, REJECT  # noqa: E402


flags.DEFINE_string("images_dir", os.path.join(DATA, "images"), "The labelled photographs.")
flags.DEFINE_string("quality_csv", os.path.join(DATA, "eyeq_quality.csv"),
                    "EyeQ-format quality labels.")
flags.DEFINE_string("labels_csv", os.path.join(DATA, "trainLabels.csv"),
                    "Kaggle DR grades of the photographs.")
flags.DEFINE_integer("repeats", 5, "CV seeds for the spread.")
flags.DEFINE_integer("bootstrap", 1000, "Bootstrap resamples for the intervals.")
flags.DEFINE_integer("twins", 10, "Synthetic pairs per degradation.")
FLAGS = flags.FLAGS


def _spread(data, values, found, repeats: int) -> None:
    """The point figures of assessor and baseline over several CV seeds."""
    rows = {"assessor": [], "baseline": []}
    for seed in range(repeats):
        settings = dataclasses.replace(QUALITY, seed=seed)
        oof = fitting.cross_validated(values, data.quality, found, data.patients, settings)
        _, base = evaluation.best_single_measure(values, data.quality, found, data.patients,
                                                 settings)
        for name, p in (("assessor", oof), ("baseline", base)):
            rows[name].append(list(evaluation.point_metrics(data.quality, p).values()))
    for name, table in rows.items():
        table = np.asarray(table)
        print(f"  {name:<9} over {repeats} CV seeds: " + "  ".join(
            f"{m} {table[:, i].min():.3f}–{table[:, i].max():.3f}"
            for i, m in enumerate(evaluation.METRICS)))


def _twins(assessor, per_kind: int) -> None:
    pairs = degraded.twins(range(7000, 7000 + per_kind))
    values, found = measures.measure_encoded([c for _, c, _ in pairs] +
                                             [d for _, _, d in pairs])
    p = assessor.probabilities(values, found)[:, REJECT]
    clean, worse = p[:len(pairs)], p[len(pairs):]
    print("  degraded synthetic twins called less gradable (higher P(Reject)) than the clean "
          "one, by the assessor fitted on the labelled photographs:")
    for kind in degraded.KINDS:
        rows = [i for i, (k, _, _) in enumerate(pairs) if k == kind]
        print(f"    {kind:<14} {np.mean(worse[rows] > clean[rows]):.0%} of {len(rows)} pairs; "
              f"ungradable {np.mean(worse[rows] >= assessor.reject_threshold):.0%} of the "
              f"degraded, {np.mean(clean[rows] >= assessor.reject_threshold):.0%} of the clean")


def _synthetic_only(data, values, found) -> None:
    encoded, quality, patients = degraded.training_set(100, seed=0)
    synthetic_values, synthetic_found = measures.measure_encoded(encoded)
    assessor, _ = fitting.fit_assessor(synthetic_values, quality, synthetic_found, patients,
                                       "synthetic photographs")
    p = assessor.probabilities(values, found)
    print("  an assessor fitted on 300 synthetic photographs only, on the labelled ones:")
    print(evaluation.format_metrics("synthetic-only", evaluation.metric_intervals(
        data.quality, p, data.patients, 0)))
    print(evaluation.format_operating_point(evaluation.operating_point(
        p, data.quality, assessor.reject_threshold, data.dr_grades)))


def main(argv) -> int:
    del argv
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"load average {os.getloadavg()[0]:.1f}; {time.strftime('%Y-%m-%d %H:%M')}")
    start = time.time()
    data, values, found = workflow.measured(FLAGS.images_dir, FLAGS.quality_csv, FLAGS.labels_csv,
                                            None, quiet=True)
    print(f"measured {len(data)} photographs in {time.time() - start:.1f} s "
          f"({(time.time() - start) / len(data) * 1000:.0f} ms each, one process)")
    assessor, oof = fitting.fit_assessor(values, data.quality, found, data.patients,
                                         FLAGS.quality_csv)
    report = workflow.cross_validation_report(data, values, found, assessor, oof, FLAGS.bootstrap)
    workflow.print_cross_validation(report)
    _spread(data, values, found, FLAGS.repeats)
    _twins(assessor, FLAGS.twins)
    _synthetic_only(data, values, found)
    print(f"total {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    app.run(main)
