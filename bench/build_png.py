"""Benchmark: building from PNG photographs (APTOS 2019, Messidor-2's .png) against the same
photographs as JPEG (EyePACS, IDRiD, DDR, DeepDRiD), in one run.

Baseline (named): the builder's per-photograph work (``build_worker.process``: read, decode,
find the disc, Eq. 1, JPEG q95 at 224 + 448 + 720) on the camera JPEGs of ../shared/data.
Compared: the same work on lossless PNG copies of the same photographs (the pixels the JPEG
decodes to, written by OpenCV at its default compression) — so any difference is the file
format: PNG's inflate against JPEG's Huffman + IDCT, and the JPEG decoder's DCT-domain downscale
(½ or ¼ when the disc stays ≥ 720 px), which PNG does not have.

Each format runs in its own spawned worker process, set up as the builder's workers are
(``build_worker.init_worker``: one OpenCV thread); the formats take turns pass by pass, and the
ratio printed is the median over the passes of PNG time / the JPEG pass timed next to it.
Decoding alone (``image_io``) is timed the same way, in this process.

    python bench/build_png.py [--repeats=5] [--images=DIR,DIR]
"""

from absl import app, flags
import glob
import multiprocessing
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
DEFAULT_IMAGES = [str(DATA / "eyepacs_fullres" / "images"), str(DATA / "eyepacs_1024" / "images")]
SIZES = (224, 448, 720)
PER_FOLDER = 30  # photographs per folder: the first ones by name


flags.DEFINE_list("images", DEFAULT_IMAGES, "Folders of JPEG photographs to compare as PNG.")
flags.DEFINE_integer("repeats", 5, "Paired passes per format.")
FLAGS = flags.FLAGS


def _init():
    from m2cnn_tf.data import build_worker

    build_worker.init_worker()


def process(path: str) -> int:
    from m2cnn_tf.data import build_worker

    result = build_worker.process(build_worker.Task(0, "file", path, 0, SIZES, 95))
    assert result.error is None, f"{path}: {result.error}"
    return sum(len(b) for b in result.encoded.values())


def _png_copies(files, folder):
    """Lossless PNG copies of ``files`` (the pixels their JPEG decodes to) in ``folder``."""
    import cv2

    copies = []
    for path in files:
        copy = os.path.join(folder, pathlib.Path(path).stem + ".png")
        assert cv2.imwrite(copy, cv2.imread(path, cv2.IMREAD_COLOR))
        copies.append(copy)
    return copies


def _paired_passes(sides, repeats):
    """{side: [seconds per pass]}: one spawned worker per side, the sides taking turns."""
    context = multiprocessing.get_context("spawn")
    pools = {name: context.Pool(1, initializer=_init) for name in sides}
    try:
        for name, pool in pools.items():
            pool.map(process, sides[name][:1])  # imports, lazy loads
        seconds = {name: [] for name in sides}
        for _ in range(repeats):
            for name, pool in pools.items():
                start = time.perf_counter()
                pool.map(process, sides[name], chunksize=1)
                seconds[name].append(time.perf_counter() - start)
        return seconds
    finally:
        for pool in pools.values():
            pool.terminate()


def _decode_ms(files, repeats):
    """Median milliseconds to read and decode one photograph at full size, in this process."""
    from m2cnn_tf.preprocess import image_io

    times = []
    for _ in range(repeats):
        for path in files:
            start = time.perf_counter()
            image_io.read_image(path)
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _megabytes(files):
    return sum(os.path.getsize(f) for f in files) / len(files) / 1e6


def bench_folder(folder, repeats, scratch):
    jpegs = sorted(glob.glob(os.path.join(folder, "*.jpeg")))[:PER_FOLDER]
    if not jpegs:
        sys.exit(f"no .jpeg photographs in {folder}")
    pngs = _png_copies(jpegs, tempfile.mkdtemp(dir=scratch))
    seconds = _paired_passes({"jpeg": jpegs, "png": pngs}, repeats)
    ratio = statistics.median(p / j for p, j in zip(seconds["png"], seconds["jpeg"]))
    ratios = [p / j for p, j in zip(seconds["png"], seconds["jpeg"])]
    n = len(jpegs)
    print(f"\n{folder}: {n} photographs, JPEG {_megabytes(jpegs):.2f} MB, PNG "
          f"{_megabytes(pngs):.2f} MB each on average")
    print(f"  build work, per core:   JPEG {n / min(seconds['jpeg']):6.1f} img/s   PNG "
          f"{n / min(seconds['png']):6.1f} img/s   (best of {repeats} passes)")
    print(f"  PNG time ÷ JPEG time:   median {ratio:.2f}×, range {min(ratios):.2f}–"
          f"{max(ratios):.2f}× over {repeats} paired passes")
    print(f"  decoding alone (full size, this process): JPEG {_decode_ms(jpegs, 2):.1f} ms, "
          f"PNG {_decode_ms(pngs, 2):.1f} ms per photograph (median)")


def main(argv):
    del argv
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}, load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="bench-png-") as scratch:
        for folder in FLAGS.images:
            bench_folder(folder, FLAGS.repeats, scratch)


if __name__ == "__main__":
    app.run(main)
