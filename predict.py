"""Grade fundus photographs with an export or a training run; one CSV row per photograph.

    python predict.py --model=exported/m2cnn --images=clinic_photos/ --output=predictions.csv
    python predict.py --model=exported/m2cnn --images=clinic_photos/ --tta=8

--images takes a folder, a glob ("photos/*.jpeg"), a .txt file listing paths, or a comma list.
Columns: image, grade, grade_from_probabilities, score, p0…p4, error; with --tta=2, 4 or 8
(test-time augmentation: each disc graded in that many orientations, outputs averaged) also
score_std, the score's spread over the orientations. A file that cannot be read, or shows no
fundus, gets its reason in ``error`` and never stops the batch.
"""

import csv
import io
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

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
flags.DEFINE_bool("quiet", False, "No progress bar.")

COLUMNS = (["image", "grade", "grade_from_probabilities", "score"]
           + [f"p{g}" for g in range(NUM_GRADES)] + ["error"])
TTA_COLUMNS = COLUMNS[:4] + [tta.STD_OUTPUT] + COLUMNS[4:]


def rows(results):
    for path, outputs, error in results:
        if outputs is not None and not bool(outputs["fundus_found"]):
            outputs, error = None, "no fundus found in the photograph"
        if outputs is None:
            yield {"image": path, "error": error}
            continue
        row = {"image": path, "grade": int(outputs["grade"]),
               "grade_from_probabilities": int(outputs["grade_from_probabilities"]),
               "score": f"{float(outputs['score']):.4f}", "error": ""}
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
        model = tta.wrap(predictors.open_predictor(FLAGS.model, FLAGS.checkpoint), FLAGS.tta)
    except (FileNotFoundError, ValueError) as e:
        print(f"predict: error: {e}", file=sys.stderr)
        return 1
    print(f"grading {len(paths)} photograph(s) with {model.description} at "
          f"{model.resolution} px", file=sys.stderr)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=TTA_COLUMNS if FLAGS.tta > 1 else COLUMNS,
                            lineterminator="\n")
    writer.writeheader()
    errors = 0
    results = progress.progress(model.predict_files(paths, FLAGS.batch_size), total=len(paths),
                                desc="grading", unit="img", quiet=FLAGS.quiet)
    for row in rows(results):
        errors += bool(row["error"])
        writer.writerow(row)
    # errors="surrogateescape": a file name that is not UTF-8 is written back as its own bytes
    atomic.write_text(FLAGS.output, buffer.getvalue(), errors="surrogateescape")
    print(f"wrote {FLAGS.output}: {len(paths)} rows, {errors} with an error", file=sys.stderr)
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
