"""Training memory per image, and what recompute, bfloat16 and accumulation do to it (issue 17).

Each configuration runs in a fresh process: the project's own train step
(``step.make_train_function``: multi-task loss, both learning-rate groups, Adam) on random
images, two steps, while a thread samples the process's resident memory every few milliseconds.
Run at batch 1 and batch 2, the difference of the two peaks is what one more image costs:
**per-image training memory**, measured. Everything else in the peak — TensorFlow, the model, its
gradients and Adam's two moments, the traced graph — is the same at both batches and cancels.

Prints, for the ``m2cnn`` variant at 224, 448 and 720 px, with ``--recompute`` none / cells /
all, float32 and bfloat16: the peaks, the per-image memory and its ratios (recompute off ÷ on,
float32 ÷ bfloat16); the step-time cost of recompute and of ``--accumulate_steps`` at 224 (same
run, batch 2); and from those figures the estimate for the 720 px stage on a GPU at an effective
batch of 16 (``estimate`` below: the estimate's assumptions are printed with it).

    python bench/memory.py [--resolutions=224,448,720] [--recompute=none,cells,all]
                           [--precisions=none,bfloat16] [--min_free_gb=12]
"""

from absl import app, flags
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time

GB = 2.0**30
EFFECTIVE_BATCH = 16  # the stage's default --batch_size: one optimiser step's images
CARDS_GB = (16, 24, 40, 80)
# What a GPU holds beyond the weights, their state and the activations: the CUDA context,
# cuDNN's workspaces, allocator slack. An assumption (not measured here: no GPU), stated with
# every estimate.
GPU_MARGIN_GB = 1.5
TIMED_STEPS = {224: 3}  # steps timed after the first (tracing) one; 1 elsewhere


# --------------------------------------------------------------------------------------------
# One configuration (in its own process)
# --------------------------------------------------------------------------------------------


flags.DEFINE_string("variant", "m2cnn", "Model variant.")
flags.DEFINE_string("resolutions", "224,448,720", "Resolutions to measure, in this order.")
flags.DEFINE_string("recompute", "none,cells,all", "--recompute values to measure.")
flags.DEFINE_string("precisions", "none,bfloat16",
                    "--mixed_precision values: none (float32), bfloat16.")
flags.DEFINE_float("min_free_gb", 12.0,
                   "Wait before each 720 px run until this much memory is available.")
flags.DEFINE_string("one", None, "Internal: run one configuration (JSON) and print its result.")
FLAGS = flags.FLAGS


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakSampler(threading.Thread):
    """The highest resident memory seen while it runs (sampled every ``interval`` seconds)."""

    def __init__(self, interval=0.003):
        super().__init__(daemon=True)
        self.interval, self.peak, self.running = interval, _rss_bytes(), True

    def run(self):
        while self.running:
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval)

    def stop(self) -> int:
        self.running = False
        self.join()
        return max(self.peak, _rss_bytes())


def one(spec: dict) -> dict:
    """Two (or more) training steps of one configuration; its memory and step times."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import dataclasses

    import numpy as np
    import tensorflow as tf

    from m2cnn_tf import model as m2cnn
    from m2cnn_tf.config import TRAIN
    from m2cnn_tf.train import distribution, loop as training, optimizers, step as train_step

    cfg = dataclasses.replace(
        TRAIN, variant=spec["variant"], resolution=spec["resolution"], batch_size=spec["batch"],
        recompute=spec["recompute"], batch_norm=spec["batch_norm"],
        accumulate_steps=spec["accumulate"], mixed_precision=spec["precision"])
    with distribution.precision_policy(cfg.mixed_precision):
        model = m2cnn.build_m2cnn(cfg.resolution, cfg.variant)
        groups = training.learning_rate_groups(
            model, training.report_for_blocks(model, "none", ()))
        optimizer = optimizers.make_optimizer(model.trainable_variables, groups, cfg,
                                              loss_scaling=cfg.mixed_precision == "float16")
        function = train_step.make_train_function(tf.distribute.get_strategy(), model, optimizer,
                                                  cfg, cfg.batch_size)
        rng = np.random.default_rng(0)
        images = tf.constant(rng.integers(0, 256, (cfg.batch_size, cfg.resolution,
                                                   cfg.resolution, 3), dtype=np.uint8))
        grades = tf.constant(rng.integers(0, 5, cfg.batch_size), tf.int32)
        before = _rss_bytes()
        sampler = PeakSampler()
        sampler.start()
        seconds = []
        for _ in range(1 + TIMED_STEPS.get(cfg.resolution, 1)):
            start = time.perf_counter()
            function((images, grades))
            function.window.non_finite()  # waits for the step (a no-op wait on a CPU)
            seconds.append(time.perf_counter() - start)
        peak = sampler.stop()
    trainable = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    return {**spec, "rss_before_gb": before / GB, "peak_gb": peak / GB,
            "maxrss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB,
            "first_step_seconds": seconds[0], "step_seconds": statistics.median(seconds[1:]),
            "trainable_parameters": trainable,
            "other_parameters": model.count_params() - trainable}


# --------------------------------------------------------------------------------------------
# The plan, the runs and the tables
# --------------------------------------------------------------------------------------------


def plan() -> list:
    """Every configuration to run, in the order of --resolutions."""
    specs = []
    base = {"variant": FLAGS.variant, "batch_norm": "train", "accumulate": 1}
    for resolution in (int(r) for r in FLAGS.resolutions.split(",")):
        for precision in FLAGS.precisions.split(","):
            for recompute in FLAGS.recompute.split(","):
                for batch in (1, 2):
                    specs.append({**base, "resolution": resolution, "precision": precision,
                                  "recompute": recompute, "batch": batch})
        if resolution == 224:  # the step-time cost of accumulation (two micro-batches of one)
            specs.append({**base, "resolution": 224, "precision": "none", "recompute": "none",
                          "batch": 2, "accumulate": 2})
        if resolution >= 700:  # the stage's suggested flags: frozen batch norm as well
            for batch in (1, 2):
                specs.append({**base, "resolution": resolution, "precision": "bfloat16",
                              "recompute": "all", "batch": batch, "batch_norm": "frozen"})
    return specs


def _available_gb() -> float:
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) * 1024 / GB


def wait_for_memory(needed_gb: float, patience_s: float = 900) -> None:
    """Waits (up to ``patience_s``) until the machine has ``needed_gb`` available."""
    deadline = time.time() + patience_s
    while _available_gb() < needed_gb and time.time() < deadline:
        print(f"  waiting: {_available_gb():.1f} GB available, {needed_gb} GB wanted", flush=True)
        time.sleep(30)


def run(spec: dict, min_free_gb: float) -> dict:
    if spec["resolution"] >= 700:
        wait_for_memory(min_free_gb)
    out = subprocess.run([sys.executable, __file__, "--one=" + json.dumps(spec)],
                         capture_output=True, text=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    if out.returncode:
        return {**spec, "error": out.stderr.strip()[-400:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def key(r: dict) -> tuple:
    return (r["resolution"], r["precision"], r["recompute"], r["batch_norm"], r["accumulate"])


def per_image(results: list) -> dict:
    """{configuration: {"per_image_gb", "b1", "b2", "step_seconds", "trainable", "other"}}."""
    by = {}
    for r in results:
        if "error" not in r:
            by.setdefault(key(r), {})[r["batch"]] = r
    table = {}
    for k, runs in by.items():
        if 1 in runs and 2 in runs:
            table[k] = {"per_image_gb": runs[2]["peak_gb"] - runs[1]["peak_gb"],
                        "b1": runs[1]["peak_gb"], "b2": runs[2]["peak_gb"],
                        "step_seconds": runs[2]["step_seconds"],
                        "trainable": runs[2]["trainable_parameters"],
                        "other": runs[2]["other_parameters"]}
    return table


def name(precision: str) -> str:
    return "float32" if precision == "none" else precision


def print_per_image(table: dict) -> None:
    print(f"\n{'res':>4} {'precision':<9} {'recompute':<9} {'batch norm':<10} {'peak b=1':>9} "
          f"{'peak b=2':>9} {'per image':>10} {'step b=2':>9}")
    for k in sorted(table):
        t = table[k]
        print(f"{k[0]:>4} {name(k[1]):<9} {k[2]:<9} {k[3]:<10} {t['b1']:>7.2f}GB {t['b2']:>7.2f}GB "
              f"{t['per_image_gb']:>8.3f}GB {t['step_seconds']:>8.2f}s")


def print_ratios(table: dict, results: list) -> None:
    print("\nper-image memory, ratios:")
    for (res, precision, recompute, bn, acc), t in sorted(table.items()):
        plain = table.get((res, precision, "none", bn, acc))
        if recompute != "none" and plain and t["per_image_gb"] > 0:
            print(f"  {res} px {name(precision)}: recompute=none ÷ {recompute} = "
                  f"{plain['per_image_gb'] / t['per_image_gb']:.2f}×; step time "
                  f"{t['step_seconds'] / plain['step_seconds']:.2f}× (batch 2)")
        wide = table.get((res, "none", recompute, bn, acc))
        if precision == "bfloat16" and wide and t["per_image_gb"] > 0:
            print(f"  {res} px recompute={recompute}: float32 ÷ bfloat16 = "
                  f"{wide['per_image_gb'] / t['per_image_gb']:.2f}×")
    accumulated = [r for r in results if r["accumulate"] > 1 and "error" not in r]
    plain = table.get((224, "none", "none", "train", 1))
    for r in accumulated:
        if plain:
            print(f"  224 px float32, batch 2 as {r['accumulate']} micro-batches: step time "
                  f"{r['step_seconds'] / plain['step_seconds']:.2f}× one batch of 2")


def estimate(t: dict, micro_batch: int) -> float:
    """GPU memory (GB) of the 720 stage at a micro-batch, from one measured configuration.

    weights, gradients and Adam's two moments in float32 (16 bytes per trainable parameter,
    4 per other); with accumulation a float32 gradient sum (4 more); 16-bit copies of the
    weights under mixed precision are transient and left out; activations = micro_batch ×
    the measured per-image memory; plus ``GPU_MARGIN_GB``."""
    state = 16 * t["trainable"] + 4 * t["other"]
    accumulator = 4 * t["trainable"] if micro_batch < EFFECTIVE_BATCH else 0
    return (state + accumulator) / GB + micro_batch * t["per_image_gb"] + GPU_MARGIN_GB


def print_estimates(table: dict, resolution: int) -> None:
    rows = [k for k in sorted(table) if k[0] == resolution and k[4] == 1]
    if not rows:
        return
    print(f"\nestimate at {resolution} px, effective batch {EFFECTIVE_BATCH} (weights + "
          f"gradients + Adam in float32, activations = micro-batch × per-image memory measured "
          f"here, + {GPU_MARGIN_GB} GB CUDA/cuDNN margin; micro-batch × --accumulate_steps):")
    print(f"  {'flags':<44}" + "".join(f"{c:>8} GB" for c in CARDS_GB) + "   batch 16 in one")
    for k in rows:
        t = table[k]
        fits = []
        for card in CARDS_GB:
            sizes = [m for m in (16, 8, 4, 2, 1) if estimate(t, m) <= card]
            fits.append(f"{sizes[0]}×{EFFECTIVE_BATCH // sizes[0]}" if sizes else "no")
        flags = f"{name(k[1])}, recompute={k[2]}, batch_norm={k[3]}"
        print(f"  {flags:<44}" + "".join(f"{f:>11}" for f in fits)
              + f"   {estimate(t, EFFECTIVE_BATCH):6.1f} GB")


def main(argv):
    del argv
    if FLAGS.one:
        print(json.dumps(one(json.loads(FLAGS.one))))
        return
    load = os.getloadavg()[0]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {load:.1f}, "
          f"{_available_gb():.1f} GB available; {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    results = []
    for spec in plan():
        result = run(spec, FLAGS.min_free_gb)
        results.append(result)
        status = result.get("error") or (f"peak {result['peak_gb']:.2f} GB, step "
                                         f"{result['step_seconds']:.2f} s")
        print(f"  {spec['resolution']} {name(spec['precision'])} recompute={spec['recompute']} "
              f"bn={spec['batch_norm']} acc={spec['accumulate']} batch {spec['batch']}: {status}",
              flush=True)
    table = per_image(results)
    print_per_image(table)
    print_ratios(table, results)
    print_estimates(table, max(k[0] for k in table) if table else 0)
    print(f"\nfinished {time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.1f}")
    print("raw: " + json.dumps(results))


if __name__ == "__main__":
    app.run(main)
