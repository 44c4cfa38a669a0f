"""Same results as an earlier commit: records, trained weights and export outputs, compared.

A refactoring must not change what the code computes. This runs the same three jobs with this
checkout's code and with a reference checkout's (e.g. ``git worktree add /tmp/ref <commit>``),
each through its own command-line scripts, and compares:

1. **TFRecords**: the camera originals in ``../shared/data/eyepacs_fullres`` (or synthetic
   photographs with ``--synthetic``) built at 224 and 448 px — every shard byte for byte, and
   ``manifest.json`` key by key (keys present on one side only are listed);
2. **training**: a few train steps of the tiny variant from the same seeded initial weights on
   fixed batches of the reference's build — every weight afterwards;
3. **export**: a run trained by the reference, exported by both checkouts' ``export.py`` —
   ``serving_default`` outputs on the photographs (max abs difference of each output the
   reference has; outputs this checkout adds are listed).

    python bench/equivalence.py --reference=/tmp/ref [--work_dir=/tmp/equivalence]

A reference older than 15113a8 shares out the validation split by another rule (each grade
stratum rounded alone), so its records hold other patients in validation by design: compare with
such a reference at ``--val_fraction=0`` (every photograph in train).
"""

import json
import os
import subprocess
import sys
import tempfile

from absl import app, flags

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(HERE), "shared", "data", "eyepacs_fullres")

FLAGS = flags.FLAGS
flags.DEFINE_string("reference", None, "A checkout of the commit to compare with.", required=True)
flags.DEFINE_string("work_dir", None, "Where builds, runs and exports go (default: a temporary "
                    "folder).")
flags.DEFINE_bool("synthetic", False, "Build 24 synthetic photographs instead of the shared "
                  "camera originals.")
flags.DEFINE_integer("train_steps", 3, "Training steps of the tiny variant.")
flags.DEFINE_float("val_fraction", 0.2, "Validation share of the builds (0: no split rule "
                   "involved).")


def _run(checkout: str, script: str, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": checkout, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, os.path.join(checkout, script), *args], env=env,
                            cwd=checkout, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{script} in {checkout} failed:\n{result.stderr[-3000:]}")
    return result.stdout


def _build(checkout: str, out: str) -> None:
    if FLAGS.synthetic:
        source = ["--source=synthetic", "--num_images=24", "--synthetic_width=640"]
    else:
        source = ["--source=kaggle", f"--images_dir={SHARED}/images",
                  f"--labels_csv={SHARED}/trainLabels.csv"]
    _run(checkout, "build_tfrecords.py", *source, "--resolutions=224,448",
         f"--val_fraction={FLAGS.val_fraction}", f"--output_dir={out}", "--quiet")


def _compare_builds(a: str, b: str) -> bool:
    with open(os.path.join(a, "manifest.json")) as f:
        manifest_a = json.load(f)
    with open(os.path.join(b, "manifest.json")) as f:
        manifest_b = json.load(f)
    shards = [s for split in manifest_a["splits"].values()
              for r in split["resolutions"].values() for s in r["shards"]]
    same = [open(os.path.join(a, s), "rb").read() == open(os.path.join(b, s), "rb").read()
            for s in shards]
    print(f"records: {sum(same)} of {len(shards)} shards byte-identical")
    keys = sorted(set(manifest_a) | set(manifest_b))
    differ = [k for k in keys if manifest_a.get(k) != manifest_b.get(k)]
    for key in differ:
        if key == "preprocessing" and key in manifest_a and key in manifest_b:
            only = {k: manifest_b[key][k] for k in set(manifest_b[key]) - set(manifest_a[key])}
            changed = [k for k in manifest_a[key] if manifest_a[key].get(k) != manifest_b[key].get(k)]
            print(f"manifest 'preprocessing': new constants {only}; changed values {changed}")
        elif key in ("package_version",):
            print(f"manifest '{key}': {manifest_a.get(key)!r} vs {manifest_b.get(key)!r}")
        else:
            print(f"manifest '{key}' differs")
    print("manifest: every other key equal" if differ else "manifest: identical")
    return all(same)


# Three train steps on fixed batches (the evaluation pipeline: no shuffle, no augmentation)
# from seeded initial weights, run by each checkout's own library; train.py itself is not
# bit-reproducible (its training stream reads shards in parallel, in no fixed order).
_PROBE = """
import dataclasses, inspect, sys
import numpy as np, keras
try:
    from m2cnn_tf.train import loop as training, optimizers, losses
    from m2cnn_tf.data import input_pipeline
except ImportError:  # the flat layout before sub-packages
    from m2cnn_tf import training, optimizers, losses, input_pipeline
from m2cnn_tf import config
from m2cnn_tf import model as m2cnn
data_dir, out, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
keras.utils.set_random_seed(0)
model = m2cnn.build_m2cnn(224, "tiny")
groups = training.learning_rate_groups(model, training.report_for_blocks(model, "none", ()))
c = dataclasses.replace(config.TRAIN, variant="tiny", resolution=224)
optimizer = optimizers.make_optimizer(model.trainable_variables, groups, c)
kernels = [v for v in model.trainable_variables if losses.is_decayed(v)]
loss_config = dict(loss_weights=c.loss_weights, weight_decay=c.weight_decay,
                   global_batch_size=4, num_replicas=1)
batches = input_pipeline.make_dataset(data_dir, "train", 224, 4, training=False).take(steps)
for step, batch in enumerate(batches, start=1):
    if "forward" in inspect.signature(training.train_step).parameters:  # since the memory flags
        training.train_step(lambda images: model(images, training=True), optimizer, kernels,
                            model.trainable_variables, batch["image"], batch["grade"], step,
                            loss_config)
    else:
        training.train_step(model, optimizer, kernels, batch["image"], batch["grade"], loss_config)
np.savez(out, *[w.numpy() for w in model.weights])
"""


def _train(checkout: str, data_dir: str, out: str) -> None:
    env = {**os.environ, "PYTHONPATH": checkout, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", _PROBE, data_dir, out, str(FLAGS.train_steps)],
                            env=env, cwd=checkout, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"the training probe in {checkout} failed:\n{result.stderr[-3000:]}")


def _compare_weights(a: str, b: str) -> bool:
    import numpy as np

    with np.load(a) as wa, np.load(b) as wb:
        same_count = wa.files == wb.files
        worst = max(float(np.max(np.abs(wa[k] - wb[k]))) if wa[k].size else 0.0
                    for k in wa.files) if same_count else float("inf")
    print(f"training: {len(wa.files)} weights after {FLAGS.train_steps} steps, max abs "
          f"difference {worst:g}")
    return same_count and worst == 0.0


def _export_run(checkout: str, data_dir: str, model_dir: str) -> None:
    _run(checkout, "train.py", "--variant=tiny", "--resolution=224", "--init=none",
         f"--data_dir={data_dir}", f"--model_dir={model_dir}", "--batch_size=4",
         "--train_steps=2", "--eval_every_steps=1000", "--checkpoint_every_steps=1000",
         "--noaugment", "--seed=0", "--quiet",
         f"--eval_split={'validation' if FLAGS.val_fraction else 'train'}")


def _serve(version_dir: str, photos):
    import numpy as np
    import tensorflow as tf

    signature = tf.saved_model.load(version_dir).signatures["serving_default"]
    outputs = [signature(image_bytes=tf.constant([open(p, "rb").read()]))
               for p in photos]
    return {k: np.concatenate([o[k].numpy() for o in outputs]) for k in outputs[0]}


def _compare_exports(a: str, b: str, photos) -> bool:
    import numpy as np

    out_a, out_b = _serve(a, photos), _serve(b, photos)
    # Outputs a later change added (this side only) are listed, as the manifest's new
    # constants are; every output of the reference must be present and equal.
    added = sorted(set(out_b) - set(out_a))
    if added:
        print(f"export: outputs in this checkout only: {added}")
    ok = set(out_a) <= set(out_b)
    for key in sorted(set(out_a) & set(out_b)):
        x, y = out_a[key].astype(np.float64), out_b[key].astype(np.float64)
        worst = float(np.nanmax(np.abs(x - y))) if x.size else 0.0
        ok &= worst <= 1e-6 and np.array_equal(np.isnan(x), np.isnan(y))
        print(f"export {key}: max abs difference {worst:g} over {len(photos)} photographs")
    return ok


def main(argv):
    del argv
    reference = os.path.abspath(FLAGS.reference)
    work = FLAGS.work_dir or tempfile.mkdtemp(prefix="equivalence_")
    sides = {"reference": reference, "this": HERE}
    for name, checkout in sides.items():
        _build(checkout, os.path.join(work, f"build_{name}"))
    results = {"records": _compare_builds(*(os.path.join(work, f"build_{n}") for n in sides))}
    data_dir = os.path.join(work, "build_reference")
    for name, checkout in sides.items():
        _train(checkout, data_dir, os.path.join(work, f"weights_{name}.npz"))
    results["weights"] = _compare_weights(*(os.path.join(work, f"weights_{n}.npz")
                                            for n in sides))
    run = os.path.join(work, "run_reference")
    _export_run(reference, data_dir, run)
    for name, checkout in sides.items():
        _run(checkout, "export.py", f"--model_dir={run}",
             f"--export_dir={os.path.join(work, f'export_{name}')}", "--checkpoint=latest")
    photos = sorted(os.path.join(SHARED, "images", n) for n in os.listdir(
        os.path.join(SHARED, "images"))) if os.path.isdir(SHARED) else []
    if not photos:
        raise SystemExit(f"no photographs to serve: {SHARED} is absent")
    results["export"] = _compare_exports(*(os.path.join(work, f"export_{n}", "1")
                                           for n in sides), photos)
    print("equal:" if all(results.values()) else "DIFFERENT:",
          ", ".join(f"{k} {'same' if v else 'differ'}" for k, v in results.items()))
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
