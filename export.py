"""Export a trained M²CNN as a TF Serving SavedModel that grades raw fundus photographs.

    python export.py --model_dir=runs/m2cnn_720 --export_dir=exported/m2cnn [--version=N]
        [--checkpoint=best|latest] [--quality_model=quality.json]

Writes exported/m2cnn/<version>/ (TF Serving's layout; never overwrites a version). Signatures:
serving_default(image_bytes: string[None]) with the whole preprocessing in the graph, and
predict_normalized(images: uint8[None, r, r, 3]). Thresholds fitted by
``evaluate.py --fit_thresholds`` are used when present, rounding otherwise. The quality
assessor (``quality.py fit``) given by --quality_model, or else the run's quality.json, is built
into serving_default (quality_probabilities, gradable); without one those outputs say "not
assessed" (NaN, −1).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from m2cnn_tf.config import PREDICT_BY_PROBABILITIES  # noqa: E402
from m2cnn_tf.serving import export, signatures  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "The training run to export.", required=True)
flags.DEFINE_string("export_dir", "exported/m2cnn", "TF Serving base path for the model.")
flags.DEFINE_integer("version", None, "Integer version (default: one above the highest present).")
flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "Which checkpoint to export.")
flags.DEFINE_string("quality_model", None, "A quality assessor file (python quality.py fit "
                    "--output=...) built into serving_default; default the run's quality.json, "
                    "if it has one.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        path = export.export_saved_model(FLAGS.model_dir, FLAGS.export_dir, FLAGS.version,
                                          FLAGS.checkpoint, FLAGS.quality_model)
    except (export.ExportError, FileNotFoundError, ValueError) as e:
        print(f"export: error: {e}", file=sys.stderr)
        return 1
    metadata = signatures.read_metadata(path)
    # the validation kappa of the head the export grades by (probabilities for a CE-only run)
    kappa = metadata.get("validation_kappa_argmax" if signatures.prediction_of(metadata) ==
                         PREDICT_BY_PROBABILITIES else "validation_kappa_score")
    print(f"exported {FLAGS.model_dir} ({metadata['checkpoint']}, {metadata['variant']} at "
          f"{metadata['resolution']} px, thresholds {metadata['thresholds_source']}"
          + (f", validation kappa {kappa:.4f}" if kappa is not None else "") + f") to {path}")
    print(metadata["quality"]["description"])
    print(f"serve it: docker run -p 8501:8501 -v {os.path.abspath(FLAGS.export_dir)}:"
          f"/models/m2cnn -e MODEL_NAME=m2cnn tensorflow/serving")
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
