"""Build normalised fundus TFRecords at several resolutions from raw photographs.

Examples:
  # Kaggle EyePACS training images, 10 % of patients held out for validation
  python build_tfrecords.py --source=kaggle --images_dir=train \\
      --labels_csv=trainLabels.csv --output_dir=tfrecords/eyepacs

  # The official splits: train + Public (validation) + Private (test)
  python build_tfrecords.py --source=kaggle --images_dir=train,test \\
      --labels_csv=trainLabels.csv,retinopathy_solution.csv --output_dir=tfrecords/eyepacs

  # EyeQ's image-quality grades stored in the records that have one (any source)
  python build_tfrecords.py --source=kaggle --images_dir=train --labels_csv=trainLabels.csv \\
      --quality_csv=Label_EyeQ_train.csv --output_dir=tfrecords/eyepacs

  # Built-in synthetic photographs (no download)
  python build_tfrecords.py --source=synthetic --num_images=200

  # A public DR dataset, read from the folder as downloaded (aptos2019, messidor2, idrid, ddr,
  # deepdrid, eyeq); --external_test puts it all in the test split
  python build_tfrecords.py --source=messidor2 --dataset_dir=messidor-2 --external_test

Output: OUTPUT/<resolution>/<split>-NNNNN-of-MMMMM.tfrecord, OUTPUT/manifest.json and
OUTPUT/errors.csv. Re-running the same command after an interruption finishes the build.
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter

from absl import app, flags

from m2cnn_tf.config import BUILDER, BuilderConfig
from m2cnn_tf.data import builder, sources
from m2cnn_tf.util import config_flags

FLAGS = flags.FLAGS
# The source flags (sources.SourceOptions) and the build's settings (config.BuilderConfig): name,
# type, default and help of each live in those dataclasses.
config_flags.define_flags(sources.SourceOptions, sources.SourceOptions())
config_flags.define_flags(BuilderConfig, BUILDER)
flags.DEFINE_string("output_dir", None, f"Dataset folder (default: "
                    f"{BUILDER.output_root}/<source>).")
flags.DEFINE_bool("quiet", False, "No progress bar.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.source is None:
        raise app.UsageError(f"--source is required ({', '.join(sources.SOURCES)}); see --help")
    try:
        config = config_flags.config_from_flags(BuilderConfig, BUILDER)
        options = config_flags.config_from_flags(sources.SourceOptions, sources.SourceOptions())
    except ValueError as e:
        raise app.UsageError(str(e))
    output_dir = FLAGS.output_dir or builder.default_output_dir(FLAGS.source)
    start = time.time()
    try:
        selection = sources.select_inputs(options, config.seed)
        print(f"{len(selection.inputs)} photographs to build at "
              f"{', '.join(map(str, config.resolutions))} px"
              + (f"; {len(selection.skipped)} inputs skipped already (listed in errors.csv)"
                 if selection.skipped else ""), file=sys.stderr)
        if "quality_csv" in selection.info:
            print(f"quality labels: {selection.info['quality_matched']} of the photographs are "
                  f"among the {selection.info['quality_listed']} images "
                  f"{selection.info['quality_csv']} grades", file=sys.stderr)
        manifest = builder.build(selection.inputs, selection.skipped, output_dir, config,
                                 selection.info, selection.payloads, selection.images_root,
                                 quiet=FLAGS.quiet)
    except (sources.SourceError, builder.BuildError, builder.locking.LockedError) as e:
        print(f"build_tfrecords: error: {e}", file=sys.stderr)
        return 1
    print(builder.summary_table(manifest))
    print(f"wrote {output_dir} in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
