"""Benchmark: writing the TF Serving export.

Baseline (named): ``keras.export.ExportArchive`` holding the same endpoints (what
``serving.export`` used before). Ours: ``serving.export.ServingArchive`` (a ``tf.Module`` saved
by ``tf.saved_model.save``). Both are filled by ``export.build_archive`` around the same
freshly initialised network (weights do not change the time), written alternately
``--repeats`` times in one run; prints the median seconds, the SavedModel's size on disk, the
ratios, and whether ``serving_default`` gives the same outputs on synthetic camera photographs.

    python bench/export.py [--variant tiny] [--resolution 224] [--repeats 3]
"""

import os
import platform
import shutil
import statistics
import tempfile
import time

from absl import app, flags, logging

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from m2cnn_tf import model as m2cnn  # noqa: E402
from m2cnn_tf.data import synthetic  # noqa: E402
from m2cnn_tf.grading import thresholds  # noqa: E402
from m2cnn_tf.preprocess import image_io  # noqa: E402
from m2cnn_tf.serving import export, signatures  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("variant", "tiny", ["tiny", "m2cnn"], "The network exported.")
flags.DEFINE_integer("resolution", 224, "Input side in pixels.")
flags.DEFINE_integer("repeats", 3, "Exports written by each writer (median).")

WRITERS = {
    "keras.export.ExportArchive (baseline)":
        lambda: (keras.export.ExportArchive(), {"verbose": False}),
    "ServingArchive (ours)": lambda: (export.ServingArchive(), {}),
}


def _size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(folder, name))
               for folder, _, names in os.walk(path) for name in names)


def _write(model, writer, path: str) -> float:
    archive, options = WRITERS[writer]()
    start = time.perf_counter()
    export.build_archive(model, FLAGS.resolution, thresholds.ROUNDING, archive=archive)
    archive.write_out(path, **options)
    return time.perf_counter() - start


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # not the SavedModel writer's INFO lines
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, TF {tf.__version__}, "
          f"Keras {keras.__version__}; {FLAGS.variant} at {FLAGS.resolution} px, "
          f"{FLAGS.repeats} exports each")
    model = m2cnn.build_m2cnn(FLAGS.resolution, FLAGS.variant)
    photos = tf.constant([image_io.encode_jpeg(synthetic.make_fundus(g, 9100 + g, 640).image, 92)
                          for g in range(4)])
    workdir = tempfile.mkdtemp(prefix="bench-export-")
    seconds = {writer: [] for writer in WRITERS}
    sizes, outputs = {}, {}
    try:
        for repeat in range(FLAGS.repeats):
            for n, writer in enumerate(WRITERS):
                path = os.path.join(workdir, f"{n}_{repeat}")
                seconds[writer].append(_write(model, writer, path))
                sizes[writer] = _size(path)
                if repeat == 0:
                    served = tf.saved_model.load(path).signatures[signatures.SERVING_SIGNATURE]
                    outputs[writer] = {k: v.numpy() for k, v in served(image_bytes=photos).items()}
                shutil.rmtree(path)
    finally:
        shutil.rmtree(workdir)
    print(f"\n{'writer':<40} {'median s':>9} {'range s':>13} {'size MB':>9}")
    for writer in WRITERS:
        times = seconds[writer]
        print(f"{writer:<40} {statistics.median(times):>9.2f} "
              f"{min(times):>6.2f}–{max(times):<6.2f} {sizes[writer] / 1e6:>9.1f}")
    base, ours = WRITERS
    same = all(np.array_equal(outputs[base][k], outputs[ours][k], equal_nan=True)
               for k in outputs[base])
    print(f"\nours / baseline: time {statistics.median(seconds[ours]) / statistics.median(seconds[base]):.2f}×, "
          f"size {sizes[ours] / sizes[base]:.2f}×; serving_default outputs identical: {same}")


if __name__ == "__main__":
    app.run(main)
