"""Train the two-eye (patient-level) fusion head of a trained M²CNN run.

    python fuse.py --model=runs/m2cnn_720 --data_dir=tfrecords/eyepacs

Extracts the frozen network's pooled features of every image once (cached in
<model>/fusion/features_<split>.npz), trains a small head that grades each eye from its own
features, the other eye's features and which eye it is (m2cnn_tf/fusion/), early-stops it on
the validation split, fits its score thresholds there, and saves it to <model>/fusion/
(head.npz, fusion.json). Prints per-eye and fused kappa for every split. A patient with one eye
only keeps the per-eye grade. export.py then adds the grade_patient signature. Fit the main
model's thresholds first (evaluate.py --fit_thresholds) so both gradings use fitted cuts.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from m2cnn_tf import fusion  # noqa: E402
from m2cnn_tf.data import builder, sources  # noqa: E402
from m2cnn_tf.grading import thresholds  # noqa: E402
from m2cnn_tf.config import FUSION, FusionConfig  # noqa: E402
from m2cnn_tf.util import config_flags, memory  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "The training run (its --model_dir) whose frozen features the "
                    "head reads; the head is saved in <model>/fusion/.", required=True)
flags.DEFINE_string("data_dir", None, "A build_tfrecords.py output (the run's data or another "
                    "with Kaggle-style <patient>_<left|right> ids).", required=True)
flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint of the run.")
flags.DEFINE_string("train_split", "train", "Split the head is trained on.")
flags.DEFINE_string("validation_split", "validation", "Split for early stopping and the "
                    "head's score thresholds.")
flags.DEFINE_list("report_splits", None, "Further splits to report kappa on (default: every "
                  "other split of --data_dir, e.g. test; nothing is fitted on them).")
flags.DEFINE_integer("batch_size", 16, "Images per batch when extracting features.")
config_flags.define_flags(FusionConfig, FUSION)
flags.DEFINE_bool("recompute_features", False, "Extract the features again even when the cache "
                  "matches the checkpoint and data.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    memory.configure_process_for_image_work()  # as every script that runs the input pipeline
    try:
        config = config_flags.config_from_flags(FusionConfig, FUSION)
        report = FLAGS.report_splits
        if report is None:
            present = builder.read_manifest(FLAGS.data_dir).get("splits", {})
            report = [s for s in sources.SPLITS if s in present
                      and s not in (FLAGS.train_split, FLAGS.validation_split)]
        record = fusion.fit_and_save(FLAGS.model, FLAGS.data_dir, FLAGS.train_split,
                                     FLAGS.validation_split, report, FLAGS.checkpoint,
                                     FLAGS.batch_size, config, FLAGS.recompute_features)
    except (FileNotFoundError, ValueError, builder.BuildError) as e:  # FusionError: a ValueError
        print(f"fuse: error: {e}", file=sys.stderr)
        return 1
    print(f"fusion head for {FLAGS.model} ({record['checkpoint']}), thresholds fitted on "
          f"{record['thresholds_fitted_on']}; saved to {fusion.fusion_dir(FLAGS.model)}")
    print(fusion.format_kappas(record))
    if thresholds.load_thresholds(FLAGS.model)[1] == "rounding":
        print("note: the per-eye grades use rounding while the fused thresholds were fitted on "
              f"{FLAGS.validation_split}, which favours the fused kappa; fit the run's own first "
              f"(evaluate.py --model={FLAGS.model} --fit_thresholds) and run fuse.py again")
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
