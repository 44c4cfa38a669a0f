"""Two-eye fusion on real pairs: per-eye against fused kappa on held-out EyePACS patients.

    python bench/fusion_eyepacs.py [--images_dir=../shared/data/eyepacs_1024/images]
        [--labels_csv=../shared/data/eyepacs_1024/trainLabels.csv] [--train_minutes=15]
        [--work_dir=/tmp/m2cnn_fusion_bench] [--keep]

On the 960 photographs of ``eyepacs_1024`` (480 patients, both eyes): patients are split
(stratified by the worse eye's grade, by a hash of the patient id) into train ½, validation ⅙ and
test ⅓; TFRecords are built at 224 px (``builder.build`` on ``sources.kaggle_inputs``); the tiny
variant is trained from scratch on train for about ``--train_minutes`` of wall time (a probe of
``--probe_steps`` measures the speed, then resumed chunks sized from the speed just measured fill
the budget; best checkpoint by validation kappa); the main model's score thresholds are fitted
on validation; the fusion head is trained (``fusion.fit_and_save``: train, early-stopped on
validation, thresholds fitted on validation); and on the test patients per-eye and fused kappa
are reported with 95 % bootstrap intervals over patients (both eyes of a patient resampled
together), with the paired difference. Nothing is written outside ``--work_dir``, which is
deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import platform
import shutil
import sys
import time

from absl import app, flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(os.path.dirname(REPO), "shared", "data", "eyepacs_1024")
RESOLUTION = 224
SHARES = (("test", 1 / 3), ("validation", 1 / 6))  # the rest is train


FLAGS = flags.FLAGS
flags.DEFINE_string("images_dir", os.path.join(DATA, "images"), "EyePACS photographs.")
flags.DEFINE_string("labels_csv", os.path.join(DATA, "trainLabels.csv"), "Their Kaggle labels.")
flags.DEFINE_string("work_dir", "/tmp/m2cnn_fusion_bench", "TFRecords, the run and the head go here (deleted unless --keep).")
flags.DEFINE_float("train_minutes", 15.0, "Wall-time budget of the CNN's training.")
flags.DEFINE_integer("probe_steps", 60, "Steps of the first, timing chunk.")
flags.DEFINE_integer("chunk_steps", 300, "Most steps per resumed training call.")
flags.DEFINE_integer("batch_size", 8, "Training batch.")
flags.DEFINE_integer("eval_every_steps", 150, "Evaluate every this many steps.")
flags.DEFINE_integer("num_resamples", 2000, "Bootstrap resamples over patients.")
flags.DEFINE_integer("seed", 0, "Seed of splits and training.")
flags.DEFINE_bool("keep", False, "Keep --work_dir.")

def assign_patient_splits(inputs, seed: int):
    """Every patient to test, validation or train, stratified by the worse eye's grade."""
    worst = collections.defaultdict(int)
    for r in inputs:
        worst[r.patient_id] = max(worst[r.patient_id], r.grade)
    strata = collections.defaultdict(list)
    for patient, grade in worst.items():
        strata[grade].append(patient)
    chosen = {}
    for grade in sorted(strata):
        patients = sorted(strata[grade], key=lambda p: hashlib.sha256(
            f"{seed}:{p}".encode()).hexdigest())
        start = 0
        for split, share in SHARES:
            take = int(round(share * len(patients)))
            for p in patients[start:start + take]:
                chosen[p] = split
            start += take
        for p in patients[start:]:
            chosen[p] = "train"
    return [dataclasses.replace(r, split=chosen[r.patient_id]) for r in inputs]


def steps_that_fit(model_dir: str, args, seconds_left: float) -> int:
    """Steps that fit in ``seconds_left``, from the latest training speed and evaluation time."""
    from m2cnn_tf.train import summaries

    train = summaries.read_metrics(model_dir, "train")
    train = train[1:] or train  # the run's first window holds the compilation
    evals = summaries.read_metrics(model_dir, "eval")
    rate = float(np.median([r["images_per_second"] for r in train[-3:]])) / args.batch_size
    eval_seconds = evals[-1]["metrics"]["seconds"] if evals else 0.0
    restart = 60.0  # rebuilding the model, the datasets and the step functions on resume
    per_step = 1.0 / rate + eval_seconds / args.eval_every_steps
    return max(0, int((seconds_left - restart - eval_seconds) / per_step))


def kappa_intervals(grades, per_eye, fused, patients, num_resamples, seed):
    """Per-eye, fused and (fused − per-eye) kappa with 95 % intervals over patients."""
    from m2cnn_tf.grading import stats

    per = stats.kappa_interval(grades, per_eye, patients=patients,
                               num_resamples=num_resamples, seed=seed)
    fus = stats.kappa_interval(grades, fused, patients=patients,
                               num_resamples=num_resamples, seed=seed)
    diff = stats.bootstrap_interval(
        lambda g, a, b: stats.quadratic_kappa(g, b) - stats.quadratic_kappa(g, a),
        [grades, per_eye, fused], groups=patients, num_resamples=num_resamples, seed=seed)
    return per, fus, diff


def main(argv) -> int:
    del argv
    args = FLAGS

    from m2cnn_tf import fusion
    from m2cnn_tf.data import builder, sources
    from m2cnn_tf.grading import thresholds
    from m2cnn_tf.train import loop as training
    from m2cnn_tf.config import TRAIN, BuilderConfig

    started = time.time()
    os.makedirs(args.work_dir, exist_ok=True)
    data_dir = os.path.join(args.work_dir, "data")
    model_dir = os.path.join(args.work_dir, "run")
    inputs, skipped = sources.kaggle_inputs([args.images_dir], [args.labels_csv])
    inputs = assign_patient_splits(inputs, args.seed)
    t = time.time()
    manifest = builder.build(inputs, skipped, data_dir, BuilderConfig(
        resolutions=(RESOLUTION,), val_fraction=0.0), {"kind": "kaggle",
                                                        "images_dir": args.images_dir},
        images_root=args.images_dir, quiet=True)
    build_seconds = time.time() - t
    sizes = {s: manifest["splits"][s]["count"] for s in manifest["splits"]}
    print(f"data: {sizes} images at {RESOLUTION} px, built in {build_seconds:.0f} s "
          f"({len(skipped)} skipped)", flush=True)

    train_config = dataclasses.replace(
        TRAIN, resolution=RESOLUTION, variant="tiny", init="none", data_dir=data_dir,
        model_dir=model_dir, batch_size=args.batch_size, train_steps=args.probe_steps,
        eval_every_steps=args.eval_every_steps, checkpoint_every_steps=args.eval_every_steps,
        log_every_steps=args.probe_steps // 3, seed=args.seed)
    # The machine's speed changes (it is shared): train in chunks, each sized from the speed
    # just measured, until the budget is spent.
    t = time.time()
    result = training.train_and_evaluate(train_config, quiet=True)
    steps = args.probe_steps
    while True:
        more = min(steps_that_fit(model_dir, args, args.train_minutes * 60.0 - (time.time() - t)),
                   args.chunk_steps)
        if more < args.probe_steps // 2:
            break
        steps += more
        print(f"  {time.time() - t:.0f} s: training on to step {steps}", flush=True)
        result = training.train_and_evaluate(dataclasses.replace(train_config, train_steps=steps),
                                             quiet=True)
    train_seconds = time.time() - t
    best = result["best"] or {}
    print(f"trained {result['step']} steps (batch {args.batch_size}) in {train_seconds:.0f} s; "
          f"best validation kappa {best.get('metrics', {}).get('kappa_score')} at step "
          f"{best.get('step')}", flush=True)

    # The main model's thresholds, fitted on validation (evaluate.py --fit_thresholds does it).
    from m2cnn_tf.train import checkpoints

    model, info = checkpoints.load_trained_model(model_dir)
    validation = fusion.cached_features(model, info, data_dir, "validation",
                                        cache_dir=fusion.fusion_dir(model_dir))
    rounding = thresholds.kappa_with(validation["score"], validation["grade"])
    cuts, kappa = thresholds.fit_thresholds(validation["score"], validation["grade"])
    thresholds.save_thresholds(model_dir, cuts, kappa, rounding, "validation")
    print(f"main model thresholds fitted on validation: {', '.join(f'{c:.3f}' for c in cuts)} "
          f"(validation kappa {rounding:.4f} rounding → {kappa:.4f})", flush=True)

    t = time.time()
    record = fusion.fit_and_save(model_dir, data_dir, report_splits=("test",), log=print)
    print(f"fusion head: {time.time() - t:.1f} s, feature extraction of train and test included")
    print(fusion.format_kappas(record))

    predictions, summary = fusion.evaluate_split(model_dir, data_dir, "test", model=model,
                                                 info=info)
    per, fus, diff = kappa_intervals(predictions["grade"], predictions["per_eye_grade"],
                                     predictions["fused_grade"],
                                     predictions["patient_id"].astype(str),
                                     args.num_resamples, args.seed)
    print()
    print(f"held-out test: {summary['images']} eyes of {summary['patients']} patients, grades "
          f"0–4: {np.bincount(predictions['grade'], minlength=5).tolist()}; 95 % bootstrap "
          f"intervals over patients ({args.num_resamples} resamples)")
    print(f"  per-eye kappa  {per.point:.3f}  [{per.low:.3f}, {per.high:.3f}]")
    print(f"  fused kappa    {fus.point:.3f}  [{fus.low:.3f}, {fus.high:.3f}]")
    print(f"  fused − per-eye {diff.point:+.3f}  [{diff.low:+.3f}, {diff.high:+.3f}] (paired)")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}; total {time.time() - started:.0f} s")
    if not args.keep:
        shutil.rmtree(args.work_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
