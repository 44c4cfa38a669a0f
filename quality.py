"""Image quality: fit the quality assessor on labelled photographs, and report how it does.

    # fit on photographs graded in EyeQ's format (image,quality: 0 Good, 1 Usable, 2 Reject)
    python quality.py fit --images_dir=train --quality_csv=Label_EyeQ_train.csv \\
        --output=runs/m2cnn_720/quality.json
    # how an assessor does on other labelled photographs: ROC per class, confusion matrix,
    # the most and least gradable photographs
    python quality.py report --images_dir=test --quality_csv=Label_EyeQ_test.csv \\
        --assessor=runs/m2cnn_720/quality.json --output_dir=quality_report

fit measures every photograph once (cached beside --output as <name>_measures.npz), fits a
multinomial logistic regression on the measures, cross-validates it with both eyes of a
patient in one fold, chooses the operating point on the cross-validated P(Reject) for the
target sensitivity to Reject, prints AUCs, accuracy and macro-F1 with bootstrap intervals
beside the best single measure's, and writes the assessor (a small JSON file). export.py builds
the run's quality.json (or --quality_model) into the export's serving_default; predict.py,
evaluate.py and explain.py use it. report without --assessor cross-validates a fit instead.
See m2cnn_tf/quality/.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from m2cnn_tf.data import sources  # noqa: E402
from m2cnn_tf.grading import stats  # noqa: E402
from m2cnn_tf.quality import assessor as assessors, fitting, workflow  # noqa: E402

COMMANDS = ("fit", "report")
FLAGS = flags.FLAGS
flags.DEFINE_string("images_dir", None, "Folder of the photographs (<id>.jpeg, .jpg or .png).")
flags.DEFINE_string("quality_csv", None, "Their quality grades in EyeQ's format: columns image "
                    "(<id> or <id>.jpeg) and quality (0 Good, 1 Usable, 2 Reject); EyeQ's "
                    "Label_EyeQ_train.csv / Label_EyeQ_test.csv as published.")
flags.DEFINE_string("labels_csv", None, "Optional Kaggle DR grades (image,level) of the same "
                    "photographs: the operating point's cost in referable-DR photographs.")
flags.DEFINE_string("output", None, "fit: the assessor file to write (e.g. "
                    "runs/m2cnn_720/quality.json, where export.py finds it).")
flags.DEFINE_string("assessor", None, "report: the assessor to report on (default: "
                    "cross-validate a fit on these photographs).")
flags.DEFINE_string("output_dir", "quality_report", "report: where the PNGs and report.json go.")
flags.DEFINE_string("cache", None, "Where the measures are cached (default: beside --output, or "
                    "in --output_dir).")
flags.DEFINE_integer("bootstrap", stats.NUM_RESAMPLES, "Bootstrap resamples (of patients) for "
                     "the 95 % intervals; 0 for none.")
flags.DEFINE_integer("batch_size", 16, "Photographs measured at once.")
flags.DEFINE_bool("quiet", False, "No progress bar.")


def _check_usage(argv):
    if len(argv) != 2 or argv[1] not in COMMANDS:
        raise app.UsageError(f"give one command: {' or '.join(COMMANDS)} (python quality.py fit "
                             "--images_dir=... --quality_csv=... --output=...)")
    if not FLAGS.images_dir or not FLAGS.quality_csv:
        raise app.UsageError("--images_dir and --quality_csv are required")
    if argv[1] == "fit" and not FLAGS.output:
        raise app.UsageError("fit needs --output, the assessor file to write")
    if FLAGS.bootstrap < 0:
        raise app.UsageError(f"--bootstrap={FLAGS.bootstrap}: give 0 (no intervals) or more")


def main(argv):
    _check_usage(argv)
    common = dict(labels_csv=FLAGS.labels_csv, cache=FLAGS.cache,
                  num_resamples=FLAGS.bootstrap, batch_size=FLAGS.batch_size, quiet=FLAGS.quiet)
    try:
        if argv[1] == "fit":
            workflow.fit(FLAGS.images_dir, FLAGS.quality_csv, FLAGS.output, **common)
        else:
            paths = workflow.report(FLAGS.images_dir, FLAGS.quality_csv, FLAGS.output_dir,
                                    FLAGS.assessor, **common)
            print(f"wrote {', '.join(os.path.basename(p) for p in paths.values())} to "
                  f"{FLAGS.output_dir}")
    except (sources.SourceError, assessors.AssessorError, fitting.FittingError) as e:
        print(f"quality: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
