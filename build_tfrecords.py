"""Build normalised fundus TFRecords at several resolutions from raw photographs.

Examples:
  # Kaggle EyePACS training images, 10 % of patients held out for validation
  python build_tfrecords.py --source=kaggle --images_dir=train \\
      --labels_csv=trainLabels.csv --output_dir=tfrecords/eyepacs

  # The official splits: train + Public (validation) + Private (test)
  python build_tfrecords.py --source=kaggle --images_dir=train,test \\
      --labels_csv=trainLabels.csv,retinopathy_solution.csv --output_dir=tfrecords/eyepacs

  # Built-in synthetic photographs (no download)
  python build_tfrecords.py --source=synthetic --num_images=200

Output: OUTPUT/<resolution>/<split>-NNNNN-of-MMMMM.tfrecord, OUTPUT/manifest.json and
OUTPUT/errors.csv. Re-running the same command after an interruption finishes the build.
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter

from absl import app, flags

from m2cnn_tf.data import builder, sources
from m2cnn_tf.config import BUILDER

FLAGS = flags.FLAGS
flags.DEFINE_enum("source", None, ["kaggle", "csv", "folders", "tfds", "synthetic"],
                  "Where the photographs come from: kaggle (<id>.jpeg files + Kaggle label CSVs), "
                  "csv (any CSV of image path and grade), folders (class sub-folders 0…4), tfds "
                  "(tensorflow_datasets' diabetic_retinopathy_detection), synthetic (built-in "
                  "generator, no download).")
flags.DEFINE_list("images_dir", [], "Folder(s) of photographs. kaggle: one per --labels_csv "
                  "(e.g. train,test), or one for all; csv: paths in the CSV are relative to it; "
                  "folders: holds the sub-folders 0…4.")
flags.DEFINE_list("labels_csv", [], "kaggle: trainLabels.csv and/or retinopathy_solution.csv "
                  "(image,level[,Usage]; Usage Public → validation, Private → test); csv: one "
                  "CSV with --image_column and --label_column.")
flags.DEFINE_string("image_column", "image", "csv: column holding the image path (extension "
                    "optional), relative to --images_dir.")
flags.DEFINE_string("label_column", "level", "csv: column holding the grade 0–4.")
flags.DEFINE_string("patient_column", None, "csv: optional column holding the patient id "
                    "(default: parsed from <patient>_<left|right> file names, else the image).")
flags.DEFINE_string("tfds_data_dir", None, "tfds: TFDS data_dir (default: TFDS's own).")
flags.DEFINE_string("tfds_manual_dir", None, "tfds: folder with the Kaggle download, needed the "
                    "first time TFDS prepares diabetic_retinopathy_detection.")
flags.DEFINE_integer("num_images", 100, "synthetic: how many photographs to draw.")
flags.DEFINE_integer("synthetic_width", 0, "synthetic: photograph width in pixels (0: "
                     "camera-sized, 2000–3500).")
flags.DEFINE_string("output_dir", None, f"Dataset folder (default: "
                    f"{BUILDER.output_root}/<source>).")
flags.DEFINE_list("resolutions", [str(r) for r in BUILDER.resolutions],
                  "Square sizes to store; each photograph is decoded once for all of them.")
flags.DEFINE_float("val_fraction", BUILDER.val_fraction, "Share of patients held out for "
                   "validation (per grade stratum; both eyes of a patient stay together). "
                   "Ignored when the source fixes a validation split (Kaggle Usage, TFDS).")
flags.DEFINE_integer("seed", 0, "Seed of the validation split and the shard order.")
flags.DEFINE_integer("num_workers", 0, "Worker processes (0: one per core).")
flags.DEFINE_integer("jpeg_quality", BUILDER.jpeg_quality, "JPEG quality of stored images; 95 "
                     "keeps the fine detail Eq. 1 brings out (microaneurysms, small vessels) "
                     "within about one grey level.")
flags.DEFINE_integer("examples_per_shard", BUILDER.examples_per_shard, "Photographs per shard.")
flags.DEFINE_float("max_error_fraction", BUILDER.max_error_fraction, "Fail the build when more "
                   "than this share of the inputs had to be skipped (all are listed in "
                   "errors.csv).")
flags.DEFINE_bool("quiet", False, "No progress bar.")


def _inputs():
    """(inputs, skipped, payloads, images_root, source_info) for the chosen source."""
    source = FLAGS.source
    info = {"kind": source}
    payloads = {}
    images_root = FLAGS.images_dir[0] if FLAGS.images_dir else None
    if source == "kaggle":
        inputs, skipped = sources.kaggle_inputs(FLAGS.images_dir, FLAGS.labels_csv)
        info.update(images_dir=FLAGS.images_dir, labels_csv=FLAGS.labels_csv)
        if len(set(FLAGS.images_dir)) > 1:
            images_root = os.path.commonpath([os.path.abspath(d) for d in FLAGS.images_dir])
    elif source == "csv":
        if len(FLAGS.images_dir) != 1 or len(FLAGS.labels_csv) != 1:
            raise sources.SourceError("--source=csv needs one --images_dir and one --labels_csv")
        inputs, skipped = sources.csv_inputs(FLAGS.images_dir[0], FLAGS.labels_csv[0],
                                             FLAGS.image_column, FLAGS.label_column,
                                             FLAGS.patient_column)
        info.update(images_dir=FLAGS.images_dir, labels_csv=FLAGS.labels_csv,
                    image_column=FLAGS.image_column, label_column=FLAGS.label_column)
    elif source == "folders":
        if len(FLAGS.images_dir) != 1:
            raise sources.SourceError("--source=folders needs one --images_dir")
        inputs, skipped = sources.folder_inputs(FLAGS.images_dir[0])
        info.update(images_dir=FLAGS.images_dir)
    elif source == "tfds":
        inputs, skipped, payloads = sources.tfds_inputs(FLAGS.tfds_data_dir,
                                                        FLAGS.tfds_manual_dir)
        info.update(name=sources.TFDS_NAME)
    else:
        inputs, skipped = sources.synthetic_inputs(FLAGS.num_images, FLAGS.seed,
                                                   FLAGS.synthetic_width)
        info.update(num_images=FLAGS.num_images, synthetic_width=FLAGS.synthetic_width)
    return inputs, skipped, payloads, images_root, info


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.source is None:
        raise app.UsageError("--source is required (kaggle, csv, folders, tfds or synthetic); "
                             "see --help")
    try:
        resolutions = tuple(int(r) for r in FLAGS.resolutions)
    except ValueError:
        raise app.UsageError(f"--resolutions must be integers, got {','.join(FLAGS.resolutions)}")
    output_dir = FLAGS.output_dir or builder.default_output_dir(FLAGS.source)
    settings = builder.BuildSettings(
        resolutions=resolutions, jpeg_quality=FLAGS.jpeg_quality,
        examples_per_shard=FLAGS.examples_per_shard, val_fraction=FLAGS.val_fraction,
        seed=FLAGS.seed, max_error_fraction=FLAGS.max_error_fraction,
        num_workers=FLAGS.num_workers)
    start = time.time()
    try:
        inputs, skipped, payloads, images_root, info = _inputs()
        print(f"{len(inputs)} photographs to build at {', '.join(map(str, resolutions))} px"
              + (f"; {len(skipped)} inputs skipped already (listed in errors.csv)"
                 if skipped else ""), file=sys.stderr)
        manifest = builder.build(inputs, skipped, output_dir, settings, info, payloads,
                                 images_root, quiet=FLAGS.quiet)
    except (sources.SourceError, builder.BuildError, builder.locking.LockedError) as e:
        print(f"build_tfrecords: error: {e}", file=sys.stderr)
        return 1
    print(builder.summary_table(manifest))
    print(f"wrote {output_dir} in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
