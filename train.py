"""Train M²CNN, one resolution stage at a time (paper II-C): 224 → 448 → 720.

  python train.py --resolution=224 --init=imagenet --data_dir=tfrecords/kaggle
  python train.py --resolution=448 --init=runs/m2cnn_224 --data_dir=tfrecords/kaggle
  python train.py --resolution=720 --init=runs/m2cnn_448 --data_dir=tfrecords/kaggle

Weights restored by --init train at --lr_finetune (LR1), all others at --lr_new (LR2). Re-running
the same command resumes from the newest checkpoint in --model_dir. The loop lives in
m2cnn_tf/training.py; this file only parses flags.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter

from absl import app, flags, logging

from m2cnn_tf.config import TRAIN, VARIANTS

FLAGS = flags.FLAGS
flags.DEFINE_integer("resolution", TRAIN.resolution, "Input side in pixels; the data must have "
                     "been built at it. 224 trains BaseNet+MT, 448 adds the medial cells, 720 the "
                     "large cells.")
flags.DEFINE_string("init", TRAIN.init, "Starting weights: none (random), imagenet (BaseNet from "
                    "Keras' ImageNet weights; downloads), a Keras Inception-ResNet-v2 notop .h5 "
                    "file, or the model directory of an earlier stage (e.g. runs/m2cnn_224; its "
                    "best checkpoint, else its latest) or one checkpoint in it. Restored weights "
                    "train at --lr_finetune, the rest at --lr_new.")
flags.DEFINE_string("data_dir", TRAIN.data_dir, "A dataset folder written by build_tfrecords.py.")
flags.DEFINE_string("model_dir", TRAIN.model_dir, "Checkpoints and logs (default: "
                    f"{TRAIN.model_dir_template}).")
flags.DEFINE_enum("variant", TRAIN.variant, sorted(VARIANTS), "m2cnn: the paper's network; tiny: "
                  "one repeat of every cell (tests, CPU demos).")
flags.DEFINE_integer("batch_size", TRAIN.batch_size, "Global batch, split across replicas.")
flags.DEFINE_integer("train_steps", TRAIN.train_steps, "Train until this many steps in all "
                     "(a resumed run counts the steps already done).")
flags.DEFINE_integer("eval_every_steps", TRAIN.eval_every_steps, "Evaluate (and keep the best "
                     "checkpoint) every this many steps, and at the end.")
flags.DEFINE_integer("checkpoint_every_steps", TRAIN.checkpoint_every_steps, "Save a rolling "
                     "checkpoint every this many steps, and at the end.")
flags.DEFINE_integer("log_every_steps", TRAIN.log_every_steps, "Write loss terms, learning rates "
                     "and images/s every this many steps.")
flags.DEFINE_integer("keep_checkpoints", TRAIN.keep_checkpoints, "Rolling checkpoints kept.")
flags.DEFINE_float("lr_finetune", TRAIN.lr_finetune, "LR1: learning rate of the weights "
                   "restored by --init (paper: 1e-4).")
flags.DEFINE_float("lr_new", TRAIN.lr_new, "LR2: learning rate of the weights new at this stage "
                   "(paper: 1e-3).")
flags.DEFINE_float("weight_decay", TRAIN.weight_decay, "Coefficient of L_reg = wd · ½ Σ‖W‖² over "
                   "conv and dense kernels.")
flags.DEFINE_list("loss_weights", [f"{w:g}" for w in TRAIN.loss_weights], "Weights of the "
                  "cross-entropy and the score's MSE (paper: 1,1).")
flags.DEFINE_enum("optimizer", TRAIN.optimizer, ["adam", "sgd"], "Optimiser of both groups.")
flags.DEFINE_string("eval_split", TRAIN.eval_split, "Split evaluated every --eval_every_steps.")
flags.DEFINE_boolean("augment", TRAIN.augment, "Rotate, flip, zoom and jitter training images.")
flags.DEFINE_boolean("class_balanced", TRAIN.class_balanced, "Draw training images with equal "
                     "grade frequencies.")
flags.DEFINE_enum("strategy", TRAIN.strategy, ["default", "mirrored", "multiworker", "tpu"],
                  "default: one device; mirrored: all GPUs of this host; multiworker: the "
                  "cluster in TF_CONFIG; tpu: a TPU (--tpu).")
flags.DEFINE_string("tpu", TRAIN.tpu, "TPU name or address for --strategy=tpu.")
flags.DEFINE_enum("mixed_precision", TRAIN.mixed_precision, ["none", "float16", "bfloat16"],
                  "Compute in 16 bits, keep float32 variables (float16 adds loss scaling).")
flags.DEFINE_boolean("jit_compile", TRAIN.jit_compile, "Compile the train step with XLA.")
flags.DEFINE_integer("seed", TRAIN.seed, "Seed of weights, shuffling, augmentation and dropout.")
flags.DEFINE_boolean("quiet", False, "No progress bar or messages.")
flags.DEFINE_integer("cpu_devices", TRAIN.cpu_devices, "Split the CPU into this many logical "
                     "devices (to try --strategy=mirrored without GPUs; 0: leave it whole).")


def train_config_from_flags():
    """The TrainConfig of the command line."""
    import dataclasses

    return dataclasses.replace(
        TRAIN, resolution=FLAGS.resolution, init=FLAGS.init, data_dir=FLAGS.data_dir,
        model_dir=FLAGS.model_dir, variant=FLAGS.variant, batch_size=FLAGS.batch_size,
        train_steps=FLAGS.train_steps, eval_every_steps=FLAGS.eval_every_steps,
        checkpoint_every_steps=FLAGS.checkpoint_every_steps,
        log_every_steps=FLAGS.log_every_steps, keep_checkpoints=FLAGS.keep_checkpoints,
        lr_finetune=FLAGS.lr_finetune, lr_new=FLAGS.lr_new, weight_decay=FLAGS.weight_decay,
        loss_weights=tuple(float(w) for w in FLAGS.loss_weights), optimizer=FLAGS.optimizer,
        eval_split=FLAGS.eval_split, augment=FLAGS.augment, class_balanced=FLAGS.class_balanced,
        strategy=FLAGS.strategy, tpu=FLAGS.tpu, mixed_precision=FLAGS.mixed_precision,
        jit_compile=FLAGS.jit_compile, seed=FLAGS.seed, cpu_devices=FLAGS.cpu_devices)


def main(argv):
    if len(argv) > 1:
        sys.exit(f"train.py: unexpected arguments {argv[1:]}; see --help")
    try:
        train_config = train_config_from_flags()
    except ValueError as e:
        sys.exit(f"train.py: {e}")
    # Imported here so that --help and flag errors answer without loading TensorFlow.
    from m2cnn_tf.util import locking
    from m2cnn_tf.train import loop as training

    logging.set_verbosity(logging.WARNING)  # TensorFlow's per-checkpoint INFO lines

    try:
        training.train_and_evaluate(train_config, quiet=FLAGS.quiet)
    except (training.TrainingError, training.NonFiniteLossError, locking.LockedError) as e:
        sys.exit(f"train.py: {e}")


if __name__ == "__main__":
    app.run(main)
