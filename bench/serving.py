"""Benchmark: what in-graph preprocessing costs at serving time.

Baseline (named): the same network as an in-memory Keras model (a compiled ``tf.function``) on
images already normalised at its resolution. Ours: the exported ``serving_default`` signature on
the raw camera JPEGs of ../shared/data/eyepacs_fullres (decode, find the disc, crop, Eq. 1 and
the network, all in the graph). Latency per batch, batch 1 and 8, at 224 and 720, in one run;
prints the overhead of in-graph preprocessing. Weights do not change latency, so the networks
are freshly initialised (``--variant`` m2cnn, the served one, by default).

    python bench/serving.py [--variant m2cnn] [--repeats 3]
"""

import os
import pathlib
import platform
import shutil
import statistics
import tempfile
import time

from absl import app, flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from m2cnn_tf.preprocess import fundus  # noqa: E402
from m2cnn_tf.grading import thresholds  # noqa: E402
from m2cnn_tf.serving import export, signatures  # noqa: E402
from m2cnn_tf import model as m2cnn  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "eyepacs_fullres" / "images"


FLAGS = flags.FLAGS
flags.DEFINE_string("images", str(DEFAULT_IMAGES), "Folder of camera JPEGs to serve.")
flags.DEFINE_string("variant", "m2cnn", "m2cnn or tiny.")
flags.DEFINE_string("resolutions", "224,720", "Comma-separated input sizes.")
flags.DEFINE_string("batch_sizes", "1,8", "Comma-separated batch sizes.")
flags.DEFINE_integer("repeats", 2, "Timed passes per case (median).")

def _median_seconds(function, batches, repeats):
    function(batches[0])  # trace and warm up
    times = []
    for _ in range(repeats):
        for batch in batches:
            start = time.perf_counter()
            function(batch)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv):
    del argv
    args = FLAGS
    files = sorted(pathlib.Path(args.images).glob("*.jpeg"))
    encoded = [f.read_bytes() for f in files]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, TF {tf.__version__}; "
          f"{len(files)} camera JPEGs from {args.images}; variant {args.variant}")
    print(f"\n{'res':>4} {'batch':>5} {'in-memory, normalised':>23} {'serving_default, JPEG':>23} "
          f"{'overhead':>9}")
    workdir = tempfile.mkdtemp(prefix="bench-serving-")
    try:
        for resolution in (int(r) for r in args.resolutions.split(",")):
            model = m2cnn.build_m2cnn(resolution, args.variant)
            path = os.path.join(workdir, str(resolution))
            export.build_archive(model, resolution, thresholds.ROUNDING).write_out(path)
            served = tf.saved_model.load(path).signatures[signatures.SERVING_SIGNATURE]
            normalized = np.stack([fundus.load_normalized(e, (resolution,)).images[resolution]
                                   for e in encoded])
            in_memory = tf.function(lambda x: model(x, training=False))
            for batch_size in (int(b) for b in args.batch_sizes.split(",")):
                count = max(1, min(4, len(files) // batch_size))
                raw = [tf.constant(encoded[i * batch_size:(i + 1) * batch_size])
                       for i in range(count)]
                ready = [tf.constant(normalized[i * batch_size:(i + 1) * batch_size])
                         for i in range(count)]
                base = _median_seconds(in_memory, ready, args.repeats)
                ours = _median_seconds(lambda b: served(image_bytes=b), raw, args.repeats)
                print(f"{resolution:>4} {batch_size:>5} {base * 1000:>19.0f} ms {ours * 1000:>19.0f}"
                      f" ms {100 * (ours / base - 1):>8.1f}%")
    finally:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    app.run(main)
