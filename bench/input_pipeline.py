"""Benchmark: training input pipeline at 720 px, our TFRecords against Keras' folder reader.

Baseline (named): ``keras.utils.image_dataset_from_directory`` over the same normalised 720 px
images written as JPEG files in class folders, shuffled, batched, with the same augmentation done
the Keras way — ``RandomRotation`` over the full circle, ``RandomFlip``, ``RandomZoom`` (±5 %),
``RandomBrightness`` (±8 grey levels), ``RandomContrast`` (±10 %), filling with γ — and
prefetched. Ours: ``input_pipeline.make_dataset(..., training=True)`` over the TFRecords.

A second baseline isolates the reader: the same folder reader with *our* OpenCV augmentation.

All run in this process on the same images; prints images/s after a warm-up and the ratios.

    python bench/input_pipeline.py [--images N] [--batches 40] [--batch_size 32]
"""

import csv
import os
import pathlib
import platform
import shutil
import sys
import tempfile
import time

from absl import app, flags

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402

from m2cnn_tf.config import BuilderConfig  # noqa: E402
from m2cnn_tf.data import builder, input_pipeline, records, sources  # noqa: E402
from m2cnn_tf.util import memory  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "eyepacs_1024"
RESOLUTION = 720


FLAGS = flags.FLAGS
flags.DEFINE_string("data", str(DEFAULT_DATA), "Folder with images/ and trainLabels.csv (Kaggle layout).")
flags.DEFINE_integer("images", 240, "Photographs to build.")
flags.DEFINE_integer("batches", 40, "Batches timed per pipeline.")
flags.DEFINE_integer("batch_size", 32, "Images per batch.")

def _build(data, count, workdir):
    with open(data / "trainLabels.csv", newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: r["image"])[:count]
    inputs = [sources.InputRecord(r["image"], *sources.parse_image_id(r["image"]),
                                  int(r["level"]), "file",
                                  str(data / "images" / f"{r['image']}.jpeg")) for r in rows]
    out = workdir / "records"
    builder.build(inputs, [], str(out), BuilderConfig(resolutions=(RESOLUTION,),
                                                      val_fraction=0.0),
                  {"kind": "bench"}, quiet=True)
    folders = workdir / "folders"
    manifest = builder.read_manifest(str(out))
    for shard in manifest["splits"]["train"]["resolutions"][str(RESOLUTION)]["shards"]:
        for raw in tf.data.TFRecordDataset(str(out / shard)):
            e = records.parse_example_numpy(raw.numpy())
            grade_dir = folders / str(e[records.GRADE])
            grade_dir.mkdir(parents=True, exist_ok=True)
            (grade_dir / f"{e[records.IMAGE_ID].decode()}.jpg").write_bytes(
                e[records.IMAGE_ENCODED])
    return out, folders


def _keras_folder_dataset(folders, seed):
    import keras

    return keras.utils.image_dataset_from_directory(
        str(folders), labels="inferred", label_mode="int", image_size=(RESOLUTION, RESOLUTION),
        batch_size=None, shuffle=True, seed=seed, verbose=False).repeat()


def _keras_baseline(folders, batch_size, seed):
    """The folder reader with Keras' own augmentation layers, applied per batch."""
    import keras

    config = input_pipeline.AUGMENT
    augment = keras.Sequential([
        keras.layers.RandomRotation(1.0, fill_mode="constant", fill_value=config.fill, seed=seed),
        keras.layers.RandomFlip("horizontal", seed=seed),
        keras.layers.RandomZoom(config.zoom, fill_mode="constant", fill_value=config.fill,
                                seed=seed),
        keras.layers.RandomBrightness(config.brightness / 255.0, value_range=(0, 255), seed=seed),
        keras.layers.RandomContrast(config.contrast, seed=seed),
    ])
    dataset = _keras_folder_dataset(folders, seed).batch(batch_size, drop_remainder=True)
    dataset = dataset.map(lambda images, labels: (augment(images, training=True), labels),
                          num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _keras_reader_with_our_augmentation(folders, batch_size, seed):
    seeds = tf.data.Dataset.random(seed=seed)

    def augment(image, label, s):
        image = tf.numpy_function(lambda i, x: input_pipeline.augment_image(i, x),
                                  [tf.cast(image, tf.uint8), s], tf.uint8, stateful=False)
        return tf.ensure_shape(image, (RESOLUTION, RESOLUTION, 3)), label

    dataset = tf.data.Dataset.zip((_keras_folder_dataset(folders, seed), seeds)).map(
        lambda image_label, s: augment(*image_label, s), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def _rate(dataset, batches, batch_size, warmup=5):
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    rate = batches * batch_size / (time.perf_counter() - start)
    del iterator
    return rate


def main(argv):
    del argv
    args = FLAGS
    # As train.py does; process-wide, so the Keras baselines run with the same settings.
    memory.configure_process_for_image_work()
    data = pathlib.Path(args.data)
    if not (data / "trainLabels.csv").is_file():
        sys.exit(f"{data} has no trainLabels.csv")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, TF {tf.__version__}; "
          f"{args.images} photographs from {data} at {RESOLUTION} px, batch {args.batch_size}")
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    try:
        records_dir, folders = _build(data, args.images, workdir)
        ours = _rate(input_pipeline.make_dataset(str(records_dir), "train", RESOLUTION,
                                                 args.batch_size, training=True, seed=0),
                     args.batches, args.batch_size)
        theirs = _rate(_keras_baseline(folders, args.batch_size, 0), args.batches,
                       args.batch_size)
        reader_only = _rate(_keras_reader_with_our_augmentation(folders, args.batch_size, 0),
                            args.batches, args.batch_size)
    finally:
        shutil.rmtree(workdir)
    print(f"\n{'keras folders + Keras augmentation layers':<46}{theirs:>10.1f} img/s   (baseline)")
    print(f"{'keras folders + our OpenCV augmentation':<46}{reader_only:>10.1f} img/s")
    print(f"{'ours (TFRecords, make_dataset)':<46}{ours:>10.1f} img/s")
    print(f"ratio ours / baseline: {ours / theirs:.2f}×   "
          f"(ours / folder reader with the same augmentation code: {ours / reader_only:.2f}×)")


if __name__ == "__main__":
    app.run(main)
