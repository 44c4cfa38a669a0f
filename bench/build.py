"""Benchmark: TFRecord building speed against TFDS's reference fundus processing, in one run.

Baseline (named): ``tensorflow_datasets.image_classification.diabetic_retinopathy_detection.
_btgraham_processing`` — decode, scale to radius 300, subtract the local average, mask, JPEG q72:
one resolution per photograph. Ours: decode once (DCT-reduced when large enough), find the disc,
Eq. 1, and JPEG q95 at 224 + 448 + 720 — three resolutions per photograph.

Both run over the same camera originals (../shared/data/eyepacs_fullres), first in one worker
process with one OpenCV thread (per core), then with one worker process per core. Each side runs
in its own freshly spawned processes, set up as it ships: TFDS's with one OpenCV thread, ours
with ``build_worker.init_worker`` (one OpenCV thread, and glibc malloc told to keep freed image
buffers, ``memory.keep_freed_memory``). Because that malloc setting would speed TFDS up too, a
third column runs TFDS with it, and its ratio is printed as well. The sides take turns pass by
pass (this machine's speed drifts over seconds); the ratio printed is the median over the
passes of ours / the TFDS pass timed next to it, and images/s the best pass. The end-to-end
builder (records written to disk) is timed too.

    python bench/build.py [--repeats=5] [--images=DIR]
"""

from absl import app, flags
import glob
import io
import multiprocessing
import os
import pathlib
import platform
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "eyepacs_fullres" / "images"
SIZES = (224, 448, 720)
TFDS_RADIUS = 300


flags.DEFINE_string("images", str(DEFAULT_IMAGES), "A folder of .jpeg photographs.")
flags.DEFINE_integer("repeats", 5, "Passes per measurement.")
FLAGS = flags.FLAGS


def _init_tfds():
    import cv2

    cv2.setNumThreads(1)
    # TFDS hands imencode a float image, and OpenCV warns about it once per process; only the
    # message is silenced (the conversion it warns about is part of the baseline's time).
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def _init_tfds_tuned():
    from m2cnn_tf.util import memory

    _init_tfds()
    memory.keep_freed_memory()


def _init_ours():
    from m2cnn_tf.data import build_worker

    build_worker.init_worker()


def ours(path: str) -> int:
    from m2cnn_tf.data import build_worker

    result = build_worker.process(build_worker.Task(0, "file", path, 0, SIZES, 95))
    assert result.error is None, result.error
    return sum(len(b) for b in result.encoded.values())


def tfds_reference(path: str) -> int:
    from tensorflow_datasets.image_classification import diabetic_retinopathy_detection as drd

    with open(path, "rb") as f:
        return len(drd._btgraham_processing(io.BytesIO(f.read()), path, TFDS_RADIUS).getvalue())


SIDES = {  # name: (per-photograph function, worker set-up)
    "tfds": (tfds_reference, _init_tfds),
    "ours": (ours, _init_ours),
    "tfds_tuned": (tfds_reference, _init_tfds_tuned),
}


def _paired_rates(files, repeats, workers):
    """images/s of every side, pass by pass, the sides taking turns.

    Each side has its own ``workers`` fresh processes (warmed up on a first photograph); then
    every repeat times one pass of each side, one after the other, so that the machine's speed,
    which drifts over seconds on a shared host, is about the same for the passes compared.
    Returns {side: [images/s of each pass]}.
    """
    context = multiprocessing.get_context("spawn")
    pools = {name: context.Pool(workers, initializer=init) for name, (_, init) in SIDES.items()}
    try:
        for name, pool in pools.items():
            pool.map(SIDES[name][0], files[:workers])  # imports, lazy loads
        rates = {name: [] for name in SIDES}
        for _ in range(repeats):
            for name, pool in pools.items():
                start = time.perf_counter()
                pool.map(SIDES[name][0], files, chunksize=1)
                rates[name].append(len(files) / (time.perf_counter() - start))
        return rates
    finally:
        for pool in pools.values():
            pool.terminate()


def _builder_rate(images_dir, repeats):
    from m2cnn_tf.config import BuilderConfig
    from m2cnn_tf.data import builder, sources

    files = sorted(glob.glob(os.path.join(images_dir, "*.jpeg")))
    inputs = [sources.InputRecord(pathlib.Path(f).stem, pathlib.Path(f).stem, "", 0, "file", f)
              for f in files]
    best = 0.0
    for _ in range(repeats):
        out = tempfile.mkdtemp(prefix="bench-build-")
        try:
            start = time.perf_counter()
            builder.build(inputs, [], out, BuilderConfig(resolutions=SIZES, val_fraction=0.0),
                          {"kind": "bench"}, quiet=True)
            best = max(best, len(files) / (time.perf_counter() - start))
        finally:
            shutil.rmtree(out)
    return best


def main(argv):
    del argv
    files = sorted(glob.glob(os.path.join(FLAGS.images, "*.jpeg")))
    if not files:
        sys.exit(f"no .jpeg photographs in {FLAGS.images}")
    cores = os.cpu_count() or 1
    print(f"machine: {platform.processor() or platform.machine()}, {cores} cores, "
          f"Python {platform.python_version()}; {len(files)} photographs from {FLAGS.images}")
    rows = []
    for label, workers in (("per core (1 process)", 1), (f"all cores ({cores} processes)", cores)):
        rates = _paired_rates(files, FLAGS.repeats, workers)
        paired = lambda side: statistics.median(
            m / t for m, t in zip(rates["ours"], rates[side]))
        rows.append((label, max(rates["tfds"]), max(rates["ours"]), paired("tfds"),
                     max(rates["tfds_tuned"]), paired("tfds_tuned")))
    print(f"\nimages/s: best of {FLAGS.repeats} passes; ratio: median over the passes of ours / "
          f"the TFDS pass timed next to it")
    print(f"\n{'':<26}{'TFDS btgraham':>15}{'ours':>12}{'ratio':>8}"
          f"{'TFDS + malloc':>16}{'ratio':>8}")
    print(f"{'':<26}{'(1 size)':>15}{'(3 sizes)':>12}{'':>8}{'setting':>16}")
    for label, theirs, mine, ratio, tuned, tuned_ratio in rows:
        print(f"{label:<26}{theirs:>9.1f} img/s{mine:>6.1f} img/s{ratio:>7.2f}×"
              f"{tuned:>10.1f} img/s{tuned_ratio:>7.2f}×")
    end_to_end = _builder_rate(FLAGS.images, max(1, FLAGS.repeats - 1))
    print(f"\nbuild_tfrecords end to end (workers + TFRecord writing, all cores): "
          f"{end_to_end:.1f} img/s = {end_to_end / rows[1][1]:.2f}× TFDS on all cores")


if __name__ == "__main__":
    app.run(main)
