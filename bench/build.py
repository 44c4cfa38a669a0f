"""Benchmark: TFRecord building speed against TFDS's reference fundus processing, in one run.

Baseline (named): ``tensorflow_datasets.image_classification.diabetic_retinopathy_detection.
_btgraham_processing`` — decode, scale to radius 300, subtract the local average, mask, JPEG q72:
one resolution per photograph. Ours: decode once (DCT-reduced when large enough), find the disc,
Eq. 1, and JPEG q95 at 224 + 448 + 720 — three resolutions per photograph.

Both run over the same camera originals (../shared/data/eyepacs_fullres), first in one process
with one OpenCV thread (per core), then with one worker process per core. Prints images/s and
the ratio ours / TFDS. The end-to-end builder (records written to disk) is timed too.

    python bench/build.py [--repeats 3] [--images DIR]
"""

import argparse
import glob
import io
import multiprocessing
import os
import pathlib
import platform
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "eyepacs_fullres" / "images"
SIZES = (224, 448, 720)
TFDS_RADIUS = 300


def _init():
    import cv2

    cv2.setNumThreads(1)


def ours(path: str) -> int:
    from m2cnn_tf import build_worker

    result = build_worker.process(build_worker.Task(0, "file", path, 0, SIZES, 95))
    assert result.error is None, result.error
    return sum(len(b) for b in result.encoded.values())


def tfds_reference(path: str) -> int:
    from tensorflow_datasets.image_classification import diabetic_retinopathy_detection as drd

    with open(path, "rb") as f:
        return len(drd._btgraham_processing(io.BytesIO(f.read()), path, TFDS_RADIUS).getvalue())


def _rate(function, files, repeats, workers):
    """Best images/s over ``repeats`` passes (the first pass also warms the page cache)."""
    best = 0.0
    if workers == 1:
        _init()
        function(files[0])  # imports, lazy loads
        for _ in range(repeats):
            start = time.perf_counter()
            for f in files:
                function(f)
            best = max(best, len(files) / (time.perf_counter() - start))
        return best
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_init) as pool:
        pool.map(function, files[:workers])
        for _ in range(repeats):
            start = time.perf_counter()
            pool.map(function, files, chunksize=1)
            best = max(best, len(files) / (time.perf_counter() - start))
    return best


def _builder_rate(images_dir, repeats):
    from m2cnn_tf import builder, sources

    files = sorted(glob.glob(os.path.join(images_dir, "*.jpeg")))
    inputs = [sources.InputRecord(pathlib.Path(f).stem, pathlib.Path(f).stem, "", 0, "file", f)
              for f in files]
    best = 0.0
    for _ in range(repeats):
        out = tempfile.mkdtemp(prefix="bench-build-")
        try:
            start = time.perf_counter()
            builder.build(inputs, [], out, builder.BuildSettings(resolutions=SIZES,
                                                                 val_fraction=0.0),
                          {"kind": "bench"}, quiet=True)
            best = max(best, len(files) / (time.perf_counter() - start))
        finally:
            shutil.rmtree(out)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", default=str(DEFAULT_IMAGES))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    files = sorted(glob.glob(os.path.join(args.images, "*.jpeg")))
    if not files:
        sys.exit(f"no .jpeg photographs in {args.images}")
    cores = os.cpu_count() or 1
    print(f"machine: {platform.processor() or platform.machine()}, {cores} cores, "
          f"Python {platform.python_version()}; {len(files)} photographs from {args.images}")
    rows = []
    for label, workers in (("per core (1 process)", 1), (f"all cores ({cores} processes)", cores)):
        theirs = _rate(tfds_reference, files, args.repeats, workers)
        mine = _rate(ours, files, args.repeats, workers)
        rows.append((label, theirs, mine))
    print(f"\n{'':<28}{'TFDS btgraham (1 size)':>24}{'ours (224+448+720)':>22}{'ratio':>8}")
    for label, theirs, mine in rows:
        print(f"{label:<28}{theirs:>18.1f} img/s{mine:>16.1f} img/s{mine / theirs:>7.2f}×")
    end_to_end = _builder_rate(args.images, max(1, args.repeats - 1))
    print(f"\nbuild_tfrecords end to end (workers + TFRecord writing, all cores): "
          f"{end_to_end:.1f} img/s = {end_to_end / rows[1][1]:.2f}× TFDS on all cores")


if __name__ == "__main__":
    main()
