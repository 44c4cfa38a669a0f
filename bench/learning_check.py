"""Learning check on real photographs: the loop overfits 32 EyePACS images (issue 5's check).

    python bench/learning_check.py [--resolution=224] [--steps=120] [--batch_size=8]
        [--images_dir=../shared/data/eyepacs_1024/images]
        [--labels_csv=../shared/data/eyepacs_1024/trainLabels.csv]

If images and grades came apart anywhere between the JPEG files and the loss (builder, records,
input pipeline, distribution, loss), the network could not fit the grades: the training loss
would not fall far and the kappa of its training predictions would stay near 0. The tiny variant
from scratch, no augmentation, ``--steps`` steps of ``--batch_size`` over the 32 images (per
grade the first by id, every grade present: ``PER_GRADE``).

Two kappas are measured, both on the 32 training images: that of the training steps' own
predictions (batch norm in training mode, as Keras' fit reports training metrics), summed over
the last 40 steps, and that of the final network scoring the images in inference mode (batch-norm
moving averages). The bounds (``passes``): loss over the last 10 steps at most half that of the
first 5, cross-entropy falling, training kappa above 0.8, inference-mode kappa above 0.6. The
inference-mode kappa varies from run to run (TensorFlow's CPU kernels are not bit-reproducible,
and 120 steps from scratch amplify that), hence its lower bound, still far above the ≈ 0 of a
pipeline that separated images from grades.

At the issue's 224 px this takes about 3 minutes on 2 CPU cores (figures in README's results
table). tests/test_training_learning.py runs the same check at 112 px, a quarter of the compute.
Exits 1 when a bound fails. Nothing is written outside a temporary folder.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402

from m2cnn_tf import config  # noqa: E402
from m2cnn_tf.data import builder, sources  # noqa: E402
from m2cnn_tf.grading import agreement  # noqa: E402
from m2cnn_tf.train import summaries, loop as training  # noqa: E402
from m2cnn_tf.util import memory  # noqa: E402

DATA = os.path.join(os.path.dirname(REPO), "shared", "data", "eyepacs_1024")
# Per grade, the first images by id: 32 in all, every grade present (grades 3 and 4 are rare).
PER_GRADE = {0: 7, 1: 7, 2: 7, 3: 6, 4: 5}
STEPS, BATCH_SIZE = 120, 8  # 30 passes over the 32 images
WINDOW = 5  # steps per logged training window
LAST_WINDOWS = 8  # the training kappa sums the last 40 steps


def chosen_inputs(images_dir: str, labels_csv: str) -> list:
    """The 32 photographs of ``PER_GRADE`` as builder inputs, all in the train split."""
    with open(labels_csv, newline="") as f:
        rows = sorted((r["image"], int(r["level"])) for r in csv.DictReader(f))
    chosen = [r for grade, n in PER_GRADE.items() for r in [r for r in rows if r[1] == grade][:n]]
    inputs = []
    for image_id, grade in chosen:
        patient, eye = sources.parse_image_id(image_id)
        inputs.append(sources.InputRecord(image_id, patient, eye, grade, "file",
                                          os.path.join(images_dir, f"{image_id}.jpeg"), "train"))
    return inputs


def run_learning_check(images_dir: str, labels_csv: str, work_dir: str, resolution: int,
                       steps: int = STEPS, batch_size: int = BATCH_SIZE) -> dict:
    """Builds the 32 photographs at ``resolution``, overfits them and returns the figures."""
    data_dir = os.path.join(work_dir, "data")
    builder.build(chosen_inputs(images_dir, labels_csv), [], data_dir,
                  config.BuilderConfig(resolutions=(resolution,), num_workers=1),
                  {"kind": "eyepacs_1024 learning-check subset"}, quiet=True)
    cfg = dataclasses.replace(
        config.TRAIN, variant="tiny", resolution=resolution, init="none", data_dir=data_dir,
        model_dir=os.path.join(work_dir, "run"), batch_size=batch_size, train_steps=steps,
        eval_every_steps=steps, checkpoint_every_steps=steps, log_every_steps=WINDOW,
        eval_split="train", augment=False)
    result = training.train_and_evaluate(cfg, quiet=True)
    windows = summaries.read_metrics(cfg.model_dir, "train")
    confusion = np.sum([w["train_confusion_score"] for w in windows[-LAST_WINDOWS:]], axis=0)
    return {
        "resolution": resolution, "steps": steps, "batch_size": batch_size,
        "windows": len(windows),
        "first_loss": windows[0]["loss/total"],
        "last_loss": float(np.mean([w["loss/total"] for w in windows[-2:]])),
        "first_ce": windows[0]["loss/cross_entropy"],
        "last_ce": float(np.mean([w["loss/cross_entropy"] for w in windows[-2:]])),
        "training_kappa": agreement.kappa_from_counts(confusion, agreement.KAPPA_WHEN_UNDEFINED),
        "inference_kappa": result["last_eval"]["kappa_score"],
        "inference_count": result["last_eval"]["count"],
    }


def passes(figures: dict) -> dict:
    """Each bound of the check: {name: held}."""
    return {"loss at most half": figures["last_loss"] <= 0.5 * figures["first_loss"],
            "cross-entropy falls": figures["last_ce"] < figures["first_ce"],
            "training kappa > 0.8": figures["training_kappa"] > 0.8,
            "inference-mode kappa > 0.6": figures["inference_kappa"] > 0.6,
            "every photograph scored": figures["inference_count"] == sum(PER_GRADE.values())}


def describe(f: dict) -> str:
    return (f"learning check at {f['resolution']} px, {f['steps']} steps of {f['batch_size']}: "
            f"loss {f['first_loss']:.3f} (steps 1–{WINDOW}) → {f['last_loss']:.3f} (last "
            f"{2 * WINDOW} steps); cross-entropy {f['first_ce']:.3f} → {f['last_ce']:.3f}; "
            f"training kappa over the last {LAST_WINDOWS * WINDOW} steps "
            f"{f['training_kappa']:.3f}; inference-mode kappa on the "
            f"{f['inference_count']} images {f['inference_kappa']:.3f}")


FLAGS = flags.FLAGS


def define_flags() -> None:
    """Only when run as a script: a test imports this module into a process with other flags."""
    flags.DEFINE_string("images_dir", os.path.join(DATA, "images"), "EyePACS photographs.")
    flags.DEFINE_string("labels_csv", os.path.join(DATA, "trainLabels.csv"),
                        "Their Kaggle labels.")
    flags.DEFINE_integer("resolution", 224, "Image size (the issue's check: 224).")
    flags.DEFINE_integer("steps", STEPS, "Training steps.")
    flags.DEFINE_integer("batch_size", BATCH_SIZE, "Training batch.")


def main(argv):
    del argv
    memory.configure_process_for_image_work()  # as every script that runs the input pipeline
    with tempfile.TemporaryDirectory(prefix="m2cnn_learning_check_") as work_dir:
        figures = run_learning_check(FLAGS.images_dir, FLAGS.labels_csv, work_dir,
                                     FLAGS.resolution, FLAGS.steps, FLAGS.batch_size)
    print(describe(figures))
    held = passes(figures)
    for name, ok in held.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    return 0 if all(held.values()) else 1


if __name__ == "__main__":
    define_flags()
    app.run(main)
