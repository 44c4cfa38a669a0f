"""Train M²CNN, one resolution stage at a time (paper II-C): 224 → 448 → 720.

  python train.py --preset=paper_224 --data_dir=tfrecords/kaggle
  python train.py --preset=paper_448 --data_dir=tfrecords/kaggle
  python train.py --preset=paper_720 --data_dir=tfrecords/kaggle
  python train.py --list_presets     # the paper's stages and every run of its experiments

A preset (m2cnn_tf/config.py, ``PRESETS``) names every setting of a run — resolution, starting
weights, steps, rates, Multi-Cell switch, loss weights, its folder runs/<preset>; flags given
explicitly still win (``--preset=paper_448 --batch_size=8``). Without a preset the flags start
from their defaults (``--resolution=448 --init=runs/m2cnn_224 …``).

Weights restored by --init train at --lr_finetune (LR1), all others at --lr_new (LR2). Re-running
the same command resumes from the newest checkpoint in --model_dir. The loop lives in
m2cnn_tf/train/loop.py; this file only parses flags.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter

from absl import app, flags, logging

from m2cnn_tf import config
from m2cnn_tf.config import TRAIN, TrainConfig
from m2cnn_tf.util import config_flags, memory

FLAGS = flags.FLAGS
# One flag per TrainConfig field made with config.setting: name, type, default and help live there.
config_flags.define_flags(TrainConfig, TRAIN)
flags.DEFINE_enum("preset", None, list(config.PRESETS), "Start from this named run (see "
                  "--list_presets); flags given explicitly override its settings.")
flags.DEFINE_boolean("list_presets", False, "Print the presets (name, the run each starts from, "
                     "steps, what it is) and exit.")
flags.DEFINE_boolean("quiet", False, "No progress bar or messages.")


def format_presets() -> str:
    """One line per preset: name, parent (and how it starts from it), steps, summary."""
    lines = []
    for name, p in config.PRESETS.items():
        start = f"{p.relation} {p.parent}" if p.parent else f"init {p.config.init}"
        lines.append(f"{name:<18}{start:<26}{p.config.train_steps:>7} steps  {p.summary}")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        sys.exit(f"train.py: unexpected arguments {argv[1:]}; see --help")
    if FLAGS.list_presets:
        print(format_presets())
        return
    try:
        base = config.preset_config(FLAGS.preset) if FLAGS.preset else None
        train_config = config_flags.config_from_flags(TrainConfig, TRAIN, base=base)
    except ValueError as e:
        sys.exit(f"train.py: {e}")
    # Imported here so that --help and flag errors answer without loading TensorFlow.
    from m2cnn_tf.util import locking
    from m2cnn_tf.train import loop as training

    logging.set_verbosity(logging.WARNING)  # TensorFlow's per-checkpoint INFO lines
    memory.configure_process_for_image_work()  # for the augmenting input pipeline

    try:
        training.train_and_evaluate(train_config, quiet=FLAGS.quiet)
    except (training.TrainingError, training.NonFiniteLossError, locking.LockedError) as e:
        sys.exit(f"train.py: {e}")


if __name__ == "__main__":
    app.run(main)
