"""Peak memory of one training step, per variant and resolution (each in a fresh process).

One step of the project's own train step (multi-task loss, both learning-rate groups through the
MultiOptimizer) on random images, at the batch sizes of PAPER_NOTES' CPU table (8 at 224, 4 at
448, 2 at 720); prints the process's peak resident memory (ru_maxrss) and the step time.

    python bench/memory.py [--variants tiny,m2cnn] [--resolutions 224,448,720]
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

BATCH = {224: 8, 448: 4, 720: 2}


def one(variant: str, resolution: int) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import dataclasses

    import numpy as np
    import tensorflow as tf

    from m2cnn_tf import model as m2cnn
    from m2cnn_tf.train import optimizers, loop as training
    from m2cnn_tf.config import TRAIN

    cfg = dataclasses.replace(TRAIN, variant=variant, resolution=resolution)
    model = m2cnn.build_m2cnn(resolution, variant)
    report = training.report_for_blocks(model, "none", ())
    groups = training.learning_rate_groups(model, report)
    optimizer = optimizers.make_optimizer(model.trainable_variables, groups, cfg, False)
    step = training.make_train_function(tf.distribute.get_strategy(), model, optimizer, cfg,
                                        BATCH[resolution])
    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, 256, (BATCH[resolution], resolution, resolution, 3),
                                      dtype=np.uint8))
    grades = tf.constant(rng.integers(0, 5, BATCH[resolution]), tf.int32)
    step((images, grades))  # trace + first step
    start = time.perf_counter()
    step((images, grades))
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"variant": variant, "resolution": resolution, "batch": BATCH[resolution],
            "peak_rss_gb": round(peak_kb / 1024 / 1024, 2), "step_seconds": round(seconds, 2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", default="tiny,m2cnn")
    parser.add_argument("--resolutions", default="224,448,720")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]))))
        return
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores")
    print(f"{'variant':<8}{'res':>5}{'batch':>6}{'peak RSS':>10}{'step':>9}")
    for variant in args.variants.split(","):
        for resolution in (int(r) for r in args.resolutions.split(",")):
            out = subprocess.run([sys.executable, __file__, "--one", variant, str(resolution)],
                                 capture_output=True, text=True, env=dict(
                                     os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
            if out.returncode:
                print(f"{variant:<8}{resolution:>5}  failed: {out.stderr.strip()[-300:]}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{variant:<8}{resolution:>5}{r['batch']:>6}{r['peak_rss_gb']:>8.2f} GB"
                  f"{r['step_seconds']:>8.2f}s")


if __name__ == "__main__":
    main()
