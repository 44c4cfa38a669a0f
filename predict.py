"""Grade fundus photographs with an export or a training run; one CSV row per photograph.

    python predict.py --model=exported/m2cnn --images=clinic_photos/ --output=predictions.csv
    python predict.py --model=exported/m2cnn --images=clinic_photos/ --tta=8

    python predict.py --model=exported/m2cnn --images=clinic_photos/ --skip_ungradable

--images takes a folder, a glob ("photos/*.jpeg"), a .txt file listing paths, or a comma list.
Columns: image, grade, grade_from_probabilities, score, p0…p4, p_good, p_usable, p_reject,
gradable, error; with --tta=2, 4 or 8 (test-time augmentation: each disc graded in that many
orientations, outputs averaged) also score_std, the score's spread over the orientations.
p_good…p_reject are the quality assessor's P(Good), P(Usable), P(Reject) (EyeQ's scale) and
gradable is 1, 0 (P(Reject) at or above the operating point, or no fundus) or −1 (the model
has no quality assessor: quality.py fit, then export.py --quality_model). With
--skip_ungradable the grade columns of an ungradable photograph stay empty and ``error`` says
why. A file that cannot be read, or shows no fundus, gets its reason in ``error`` and never
stops the batch.
"""

import csv
import io
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

import numpy as np  # noqa: E402

from m2cnn_tf.quality import assessor as quality_assessor  # noqa: E402
from m2cnn_tf.serving import predictor as predictors  # noqa: E402
from m2cnn_tf.util import atomic, progress  # noqa: E402
from m2cnn_tf.serving import tta  # noqa: E402
from m2cnn_tf.config import NUM_GRADES  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "An export (export.py output: a version folder or its base "
                    "path) or a training run's --model_dir.", required=True)
flags.DEFINE_string("images", None, "Folder, glob, .txt list or comma-separated photographs.",
                    required=True)
flags.DEFINE_string("output", "predictions.csv", "CSV to write.")
flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "For a training run: which "
                  "checkpoint.")
flags.DEFINE_integer("batch_size", 8, "Photographs graded at once.")
flags.DEFINE_integer("tta", 1, "Test-time augmentation: grade each photograph in this many "
                     "orientations of its disc and average (1, 2, 4 or 8); adds score_std.")
flags.DEFINE_bool("skip_ungradable", False, "Leave the grade empty for photographs the quality "
                  "assessor calls ungradable (gradable 0), with the reason in the error column. "
                  "Needs a model with a quality assessor.")
flags.DEFINE_bool("quiet", False, "No progress bar.")

QUALITY_COLUMNS = ["p_good", "p_usable", "p_reject", "gradable"]
COLUMNS = (["image", "grade", "grade_from_probabilities", "score"]
           + [f"p{g}" for g in range(NUM_GRADES)] + QUALITY_COLUMNS + ["error"])
TTA_COLUMNS = COLUMNS[:4] + [tta.STD_OUTPUT] + COLUMNS[4:]


def _quality_cells(outputs) -> dict:
    probabilities = outputs[quality_assessor.PROBABILITIES_OUTPUT]
    cells = {name: ("" if np.isnan(p) else f"{float(p):.4f}")
             for name, p in zip(QUALITY_COLUMNS, probabilities)}
    cells["gradable"] = int(outputs[quality_assessor.GRADABLE_OUTPUT])
    return cells


def rows(results, skip_ungradable: bool = False, threshold=None):
    """One CSV row per (path, outputs, error); with ``skip_ungradable`` an ungradable
    photograph's grade is left empty and ``error`` says why."""
    for path, outputs, error in results:
        if outputs is None:
            yield {"image": path, "error": error}
            continue
        row = {"image": path, **_quality_cells(outputs)}
        if not bool(outputs["fundus_found"]):
            yield {**row, "error": "no fundus found in the photograph"}
            continue
        if skip_ungradable and row["gradable"] == quality_assessor.UNGRADABLE:
            yield {**row, "error": f"ungradable: P(Reject) {row['p_reject']} is not below the "
                                   f"operating point {threshold:.4f}; not graded (retake it)"}
            continue
        row.update({"grade": int(outputs["grade"]),
                    "grade_from_probabilities": int(outputs["grade_from_probabilities"]),
                    "score": f"{float(outputs['score']):.4f}", "error": ""})
        row.update({f"p{g}": f"{float(p):.4f}" for g, p in enumerate(outputs["probabilities"])})
        if tta.STD_OUTPUT in outputs:
            row[tta.STD_OUTPUT] = f"{float(outputs[tta.STD_OUTPUT]):.4f}"
        yield row


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        tta.check_num_views(FLAGS.tta)
        paths = predictors.list_images(FLAGS.images)
        base = predictors.open_predictor(FLAGS.model, FLAGS.checkpoint)
        if FLAGS.skip_ungradable and base.assessor is None:
            raise ValueError(f"--skip_ungradable: {FLAGS.model} has no quality assessor; fit "
                             "one (python quality.py fit --output=<run>/quality.json) and "
                             "export again, or leave the flag out")
        model = tta.wrap(base, FLAGS.tta)
    except (FileNotFoundError, ValueError) as e:
        print(f"predict: error: {e}", file=sys.stderr)
        return 1
    print(f"grading {len(paths)} photograph(s) with {model.description} at "
          f"{model.resolution} px; {quality_assessor.describe(base.assessor)}", file=sys.stderr)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=TTA_COLUMNS if FLAGS.tta > 1 else COLUMNS,
                            lineterminator="\n")
    writer.writeheader()
    errors = 0
    results = progress.progress(model.predict_files(paths, FLAGS.batch_size), total=len(paths),
                                desc="grading", unit="img", quiet=FLAGS.quiet)
    threshold = base.assessor.reject_threshold if base.assessor is not None else None
    for row in rows(results, FLAGS.skip_ungradable, threshold):
        errors += bool(row["error"])
        writer.writerow(row)
    # errors="surrogateescape": a file name that is not UTF-8 is written back as its own bytes
    atomic.write_text(FLAGS.output, buffer.getvalue(), errors="surrogateescape")
    print(f"wrote {FLAGS.output}: {len(paths)} rows, {errors} without a grade (unreadable, no "
          f"fundus{', ungradable' if FLAGS.skip_ungradable else ''})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
