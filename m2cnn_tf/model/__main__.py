"""One M²CNN configuration: its Multi-Cell path, feature-map sizes, parameters and FLOPs.

    python -m m2cnn_tf.model --resolution=720 --variant=m2cnn
    python -m m2cnn_tf.model --resolution=720 --multicell=off    # BaseNet alone at 720
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter

from absl import app, flags  # noqa: E402

from m2cnn_tf import config, model  # noqa: E402

FLAGS = flags.FLAGS
# The paper's largest input by default: the one that uses every cell group.
flags.DEFINE_integer("resolution", max(config.BUILDER.resolutions), "Input side in pixels.")
flags.DEFINE_enum("variant", "m2cnn", sorted(config.VARIANTS), "m2cnn: the paper's network; "
                  "tiny: one repeat of every cell.")
flags.DEFINE_enum("multicell", config.MULTICELL_AUTO, list(config.MULTICELL_MODES),
                  "auto: the Multi-Cell switch; off: BaseNet and the heads only (the paper's "
                  "BaseNet baselines).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        network = model.build_m2cnn(FLAGS.resolution, FLAGS.variant, multicell=FLAGS.multicell)
    except ValueError as e:
        print(f"m2cnn_tf.model: error: {e}", file=sys.stderr)
        return 1
    print(model.format_summary(model.summarize(network, FLAGS.variant)))
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
