"""Grad-CAM explanations of fundus photographs, from an export or a training run.

    python explain.py --model=exported/m2cnn --images=clinic_photos/ --output_dir=explanations

--images takes what predict.py takes: a folder, a glob ("photos/*.jpeg"), a .txt file listing
paths, or a comma list. For each photograph OUTPUT_DIR/<name>_gradcam.png shows the normalised
photograph, the Grad-CAM of the score head and of the predicted class at the last feature map,
and both refined pixel by pixel (× gradient × input), titled with grade and score;
contact_sheet.png shows them all and explanations.csv lists them (with the reason for any
photograph that could not be read or shows no fundus; the others go on). When the model has a
quality assessor (quality.py fit), a photograph it calls ungradable is framed in red and
explanations.csv has its P(Reject) and gradable. See m2cnn_tf/explain/ and
m2cnn_tf/serving/explainer.py.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from m2cnn_tf import explain  # noqa: E402
from m2cnn_tf.serving import predictor as predictors  # noqa: E402
from m2cnn_tf.serving import explainer as explainers  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "An export (export.py output: a version folder or its base "
                    "path; it needs the explain_normalized signature) or a training run's "
                    "--model_dir.", required=True)
flags.DEFINE_string("images", None, "Folder, glob, .txt list or comma-separated photographs.",
                    required=True)
flags.DEFINE_string("output_dir", "explanations", "Folder for the PNGs, the contact sheet and "
                    "explanations.csv (created if needed).")
flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "For a training run: which "
                  "checkpoint.")
flags.DEFINE_integer("batch_size", 8, "Photographs explained at once.")
flags.DEFINE_bool("quiet", False, "No progress bar.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.batch_size < 1:
        raise app.UsageError(f"--batch_size must be ≥ 1, got {FLAGS.batch_size}")
    try:
        paths = predictors.list_images(FLAGS.images)
        explainer = explainers.open_explainer(FLAGS.model, FLAGS.checkpoint)
    except (FileNotFoundError, ValueError, explain.ExplainError) as e:
        print(f"explain: error: {e}", file=sys.stderr)
        return 1
    print(f"explaining {len(paths)} photograph(s) with {explainer.description} at "
          f"{explainer.resolution} px", file=sys.stderr)
    results = explain.explain_files(explainer, paths, FLAGS.output_dir, FLAGS.batch_size,
                                    FLAGS.quiet)
    failed = [r for r in results if r.error]
    for r in failed:
        print(f"explain: {r.path}: {r.error}", file=sys.stderr)
    print(f"wrote {len(results) - len(failed)} explanation(s) to {FLAGS.output_dir}; "
          f"{len(failed)} photograph(s) failed", file=sys.stderr)
    return 1 if failed and len(failed) == len(results) else 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
