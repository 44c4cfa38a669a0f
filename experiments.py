r"""Reproduce the paper's Table II, Table III and Fig. 4, each one command, at any scale.

  python experiments.py --experiment=table3 --data_dir=tfrecords/eyepacs --dry_run
  python experiments.py --experiment=table3 --data_dir=tfrecords/eyepacs
  python experiments.py --experiment=table2 --only=paper_224,basenet_mt_448,basenet_mt_720 ...
  python experiments.py --experiment=fig4 --data_dir=tfrecords/synthetic --variant=tiny \
      --init=none --scale=0.001

The runs of the experiment are presets (m2cnn_tf/config.py, ``PAPER_EXPERIMENTS``); each lands
in <output_dir>/runs/<preset>, staged runs starting from their parents'. Finished runs are kept,
an interrupted one resumes: re-running the command goes on where it stopped. Writes table2.md or
table3.md (the paper's layout, the paper's numbers beside ours, bootstrap 95 % intervals over
patients) or fig4.png and fig4.md, and results.json, to --output_dir. The runner lives in
m2cnn_tf/evaluate/experiments.py; this file only parses flags.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter

from absl import app, flags, logging  # noqa: E402

import tensorflow as tf  # noqa: E402

from m2cnn_tf.evaluate import experiment_plan, experiments  # noqa: E402
from m2cnn_tf.train import loop as training  # noqa: E402
from m2cnn_tf.util import config_flags, locking, memory  # noqa: E402

FLAGS = flags.FLAGS
# One flag per ExperimentConfig field made with config.setting.
config_flags.define_flags(experiment_plan.ExperimentConfig, experiment_plan.EXPERIMENT)
flags.DEFINE_boolean("quiet", False, "No progress bars or per-run messages.")


def main(argv):
    if len(argv) > 1:
        sys.exit(f"experiments.py: unexpected arguments {argv[1:]}; see --help")
    try:
        settings = config_flags.config_from_flags(experiment_plan.ExperimentConfig,
                                                  experiment_plan.EXPERIMENT)
    except ValueError as e:
        sys.exit(f"experiments.py: {e}")
    logging.set_verbosity(logging.WARNING)  # TensorFlow's per-checkpoint INFO lines
    # Every run builds its own step and prediction functions, which TensorFlow counts as
    # retracings of one function and warns about after a few runs: not a fault here.
    tf.get_logger().addFilter(lambda record: "triggered tf.function retracing"
                              not in record.getMessage())
    memory.configure_process_for_image_work()  # for the augmenting input pipeline
    try:
        experiments.run_experiment(settings, quiet=FLAGS.quiet)
    except (experiments.ExperimentError, training.TrainingError, training.NonFiniteLossError,
            locking.LockedError) as e:
        sys.exit(f"experiments.py: {e}")


if __name__ == "__main__":
    app.run(main)
