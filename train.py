"""Train M²CNN: ``python train.py --resolution=720 --init=runs/m2cnn_448``.

Thin entry point. The training loop (two learning-rate groups, multi-task loss, staged
224 → 448 → 720 fine-tuning, kappa evaluation, resume) is the training issue's work and is not in
this version yet; this command says so instead of pretending to train.
"""

import sys

from absl import app


def main(argv):
    del argv
    sys.exit("train.py: training is not implemented in this version of m2cnn-tf yet "
             "(see the project's training issue); the model and preprocessing are available in "
             "the m2cnn_tf package.")


if __name__ == "__main__":
    app.run(main)
