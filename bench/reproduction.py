"""A miniature reproduction of the paper on this CPU: Table III's three rows and Table II's
multi-task (and M²CNN) columns at 224, 448 and 720 px, the tiny variant on synthetic photographs.

    python bench/reproduction.py [--output_dir=reproduction] [--scale=0.004] [--batch_size=4]
        [--eval_every_steps=16] [--num_images=200] [--bootstrap=1000]

Synthetic camera photographs of all five grades (the generator's microaneurysms are 0.35–0.65 %
of the disc radius: sub-pixel at 224 px, a few pixels at 720), split by patient into train
(60 %), validation (20 %) and test (20 %), built once at 224, 448 and 720 px. Then, through the
experiment runner (``evaluate.experiments.run_experiment``), deterministic, from random weights
(no ImageNet on the tiny variant), every step count the paper's × ``--scale``:

1. ``table3``: BaseNet (MSE only, 720, no extra cells), BaseNet+MT (720, no extra cells) and
   M²CNN (224 → 448 → 720 staged), validation and test;
2. ``table2`` with ``--only``: the multi-task column (paper_224, basenet_mt_448,
   basenet_mt_720) and the M²CNN column (paper_448, paper_720) — runs from step 1 reused.

The tables (ours with bootstrap 95 % intervals over patients, beside the paper's) are printed
and written to --output_dir with results.json; the time of each part is printed at the end.
Re-running resumes: finished runs are kept. Defaults: about an hour on 2 CPU cores (the
estimate in BENCHMARKS.md, "Miniature reproduction", with the run that measured it).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from m2cnn_tf import config  # noqa: E402
from m2cnn_tf.data import builder, sources  # noqa: E402
from m2cnn_tf.evaluate import experiment_plan, experiments  # noqa: E402
from m2cnn_tf.grading import stats  # noqa: E402
from m2cnn_tf.train import distribution  # noqa: E402
from m2cnn_tf.util import memory  # noqa: E402

# Table II's multi-task column and its M²CNN column; Table III is run whole.
TABLE2_RUNS = ("paper_224", "basenet_mt_448", "basenet_mt_720", "paper_448", "paper_720")
# Shares of the patients in each split (the rest is train).
VALIDATION_SHARE, TEST_SHARE = 0.2, 0.2


flags.DEFINE_string("output_dir", "reproduction", "The data, the runs and the tables.")
flags.DEFINE_float("scale", 0.004, "× the paper's step counts (0.004: 80 steps for 20k).")
flags.DEFINE_integer("batch_size", 4, "Global batch of every run.")
flags.DEFINE_integer("eval_every_steps", 16, "Validation every this many steps of each run.")
flags.DEFINE_integer("num_images", 200, "Synthetic photographs: both eyes of half as many "
                     "patients.")
flags.DEFINE_integer("bootstrap", stats.NUM_RESAMPLES, "Bootstrap resamples for the intervals.")
flags.DEFINE_integer("seed", 0, "Seed of the photographs and the build.")
FLAGS = flags.FLAGS


def _split(patient: int, patients: int) -> str:
    """Patients in order: the first VALIDATION_SHARE validation, then TEST_SHARE test. Grades
    cycle over the photographs (``sources.synthetic_inputs``), so each split has every grade."""
    if patient < round(VALIDATION_SHARE * patients):
        return "validation"
    if patient < round((VALIDATION_SHARE + TEST_SHARE) * patients):
        return "test"
    return "train"


def build_data(data_dir: str, num_images: int, seed: int) -> None:
    """Synthetic camera photographs at 224, 448 and 720 px, split by patient (resumes)."""
    inputs, skipped = sources.synthetic_inputs(num_images, seed)
    patients = (num_images + 1) // 2
    inputs = [dataclasses.replace(r, split=_split(int(r.patient_id), patients)) for r in inputs]
    settings = dataclasses.replace(config.BUILDER, resolutions=experiment_plan.PAPER_RESOLUTIONS,
                                   seed=seed)
    builder.build(inputs, skipped, data_dir, settings,
                  {"kind": "synthetic", "num_images": num_images}, quiet=True)


def main(argv) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    args = FLAGS
    memory.configure_process_for_image_work()
    distribution.run_ops_one_at_a_time()  # deterministic runs: before TensorFlow starts
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    data_dir = os.path.join(args.output_dir, "data")
    times = {}
    started = time.time()
    build_data(data_dir, args.num_images, args.seed)
    times["data"] = time.time() - started
    common = dict(data_dir=data_dir, output_dir=args.output_dir, variant="tiny", init="none",
                  scale=args.scale, batch_size=args.batch_size,
                  eval_every_steps=args.eval_every_steps, deterministic=True,
                  bootstrap=args.bootstrap)
    for experiment, only in (("table3", ()), ("table2", TABLE2_RUNS)):
        started = time.time()
        experiments.run_experiment(experiment_plan.ExperimentConfig(
            experiment=experiment, only=only, **common))
        times[experiment] = time.time() - started
    print("\ntime: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items())
          + f"; total {sum(times.values()):.0f} s; load now "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    app.run(main)
