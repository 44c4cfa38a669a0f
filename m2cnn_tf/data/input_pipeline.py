"""tf.data input pipeline over a built dataset (``build_tfrecords.py`` output).

Order, fixed: list shards → interleave shards → shuffle records → parse → (class-balance) →
decode → augment → batch → prefetch. Records are shuffled while still encoded (a few hundred
bytes of buffer per 100 KB image instead of 1.5 MB decoded), and only training augments.

Augmentation is one affine warp per image (OpenCV, run through ``tf.numpy_function``): rotation
over the full circle — a fundus photograph has no canonical orientation —, a horizontal flip
(with the rotation this covers vertical flips too), a small zoom, then small brightness and
contrast jitter around γ. OpenCV's warp is about 3× faster than TF's projective transform on
2 cores (PAPER_NOTES), and the grey outside the disc stays exactly γ.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from typing import Dict, Optional

import cv2
import numpy as np
import tensorflow as tf

from m2cnn_tf.data import builder, records
from m2cnn_tf.config import PREPROCESS


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation ranges (the paper names none; these keep the disc's anatomy)."""

    rotate: bool = True  # uniform angle in [0°, 360°)
    flip: bool = True  # horizontal flip with probability ½
    zoom: float = 0.05  # scale in [1 − zoom, 1 + zoom]
    brightness: float = 8.0  # grey levels added, in [−b, b]
    contrast: float = 0.1  # (x − γ)·c + γ with c in [1 − contrast, 1 + contrast]
    fill: float = PREPROCESS.gamma  # outside the disc after a warp: the mask's own grey


AUGMENT = AugmentConfig()
SHUFFLE_BUFFER = 2048  # encoded records (≈ 100–200 KB each at 720 px)
CYCLE_LENGTH = 8  # shards read at once
# tf.data's autotuning model thread: off. Deleting an iterator joins that thread, which sits in a
# timed wait that its cancellation does not always cut short: with two trainings side by side on
# 2 cores, the end of a training stalled for 19 s, idle, in ``~RootDataset::Iterator`` (gdb:
# ``Model::OptimizeLoop`` in ``CondVar::WaitCommon``; measured 2026-11-30, TF 2.21). Off, the
# stall is gone (0.00 s in both processes) and the parallel stages run at TensorFlow's default
# parallelism: 348 against 339 img/s at 720 px with augmentation, on 2 cores
# (bench/input_pipeline.py --images=60 --batches=15 --batch_size=16, one run each).
AUTOTUNE_MODEL = False


def augment_image(image: np.ndarray, seed: int, config: AugmentConfig = AUGMENT) -> np.ndarray:
    """One random rotation/flip/zoom/brightness/contrast of a normalised fundus (NumPy).

    Args:
      image: (r, r, 3) uint8 normalised fundus, disc centred.
      seed: decides every random choice, so a run can be repeated exactly.
      config: ranges.

    Returns:
      (r, r, 3) uint8.
    """
    rng = np.random.default_rng(int(seed) & 0xFFFFFFFFFFFFFFFF)
    size = image.shape[0]
    angle = rng.uniform(0.0, 360.0) if config.rotate else 0.0
    scale = rng.uniform(1.0 - config.zoom, 1.0 + config.zoom)
    flip = config.flip and rng.random() < 0.5
    brightness = rng.uniform(-config.brightness, config.brightness)
    contrast = rng.uniform(1.0 - config.contrast, 1.0 + config.contrast)
    centre = ((size - 1) / 2.0, (size - 1) / 2.0)
    matrix = cv2.getRotationMatrix2D(centre, angle, scale)
    if flip:  # mirror x about the centre, after the rotation
        matrix[0] = -matrix[0]
        matrix[0, 2] += size - 1
    padded, warped = _scratch(size)
    # OpenCV's bilinear warp is about twice as fast on four interleaved channels as on three
    # (its SIMD path); the padding channel changes no pixel. The two 4-channel images are
    # per-thread buffers reused from call to call: fresh megabyte arrays on every call cost
    # more in page faults than the warp itself.
    cv2.cvtColor(image, cv2.COLOR_RGB2RGBA, dst=padded)
    cv2.warpAffine(padded, matrix, (size, size), dst=warped, flags=cv2.INTER_LINEAR,
                   borderMode=cv2.BORDER_CONSTANT, borderValue=(config.fill,) * 4)
    out = cv2.cvtColor(warped, cv2.COLOR_RGBA2RGB)  # a new array: TensorFlow may keep it
    # (x − γ)·c + γ + b  ==  c·x + ((1 − c)·γ + b), rounded and saturated to 0–255.
    # (Not convertScaleAbs: it takes |·| before saturating, so a dark pixel pushed below 0
    # would come back bright.)
    cv2.addWeighted(out, contrast, out, 0.0, (1.0 - contrast) * config.fill + brightness,
                    dst=out)
    return out


_scratch_buffers = threading.local()


def _scratch(size: int):
    """Two (size, size, 4) uint8 buffers belonging to the calling thread."""
    buffers = getattr(_scratch_buffers, "by_size", None)
    if buffers is None:
        buffers = _scratch_buffers.by_size = {}
    if size not in buffers:
        buffers[size] = (np.empty((size, size, 4), np.uint8), np.empty((size, size, 4), np.uint8))
    return buffers[size]


def _shard_paths(data_dir: str, split: str, resolution: int) -> list:
    manifest = builder.read_manifest(data_dir)
    splits = manifest.get("splits", {})
    if split not in splits:
        raise ValueError(f"{data_dir} has no '{split}' split; it has: "
                         f"{', '.join(sorted(splits)) or 'none'}")
    resolutions = splits[split]["resolutions"]
    if str(resolution) not in resolutions:
        raise ValueError(f"{data_dir} has no {resolution} px images; it has: "
                         f"{', '.join(sorted(resolutions, key=int))} (rebuild with "
                         f"--resolutions including {resolution})")
    if splits[split]["count"] == 0:
        raise ValueError(f"the '{split}' split of {data_dir} is empty")
    paths = [os.path.join(data_dir, p) for p in resolutions[str(resolution)]["shards"]]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} shard(s) listed in the manifest are missing, "
                                f"e.g. {missing[0]}")
    return paths


def split_size(data_dir: str, split: str) -> int:
    """Number of images in a split (from the manifest)."""
    return int(builder.read_manifest(data_dir)["splits"][split]["count"])


def grade_counts(data_dir: str, split: str) -> list:
    return list(builder.read_manifest(data_dir)["splits"][split]["grades"])


def _parse(serialized) -> Dict[str, tf.Tensor]:
    parsed = records.parse_example(serialized)
    return {
        "encoded": parsed[records.IMAGE_ENCODED],
        "grade": tf.cast(parsed[records.GRADE], tf.int32),
        "image_id": parsed[records.IMAGE_ID],
        "patient_id": parsed[records.PATIENT_ID],
        # labels beyond the grade: records.UNLABELLED (-1) where the source did not know them
        **{name: tf.cast(parsed[feature], tf.int32)
           for name, feature in records.EXTRA_LABELS.items()},
    }


def preprocess_for_eval(example: Dict[str, tf.Tensor], resolution: int) -> Dict[str, tf.Tensor]:
    """Decodes the stored JPEG: the image as the model sees it at evaluation."""
    image = tf.io.decode_jpeg(example.pop("encoded"), channels=3)
    example["image"] = tf.ensure_shape(image, (resolution, resolution, 3))
    return example


def preprocess_for_train(example: Dict[str, tf.Tensor], seed: tf.Tensor, resolution: int,
                         config: AugmentConfig = AUGMENT) -> Dict[str, tf.Tensor]:
    """Decodes and augments (``augment_image``) one training example."""
    example = preprocess_for_eval(example, resolution)
    image = tf.numpy_function(lambda i, s: augment_image(i, s, config),
                              [example["image"], seed], tf.uint8, stateful=False)
    example["image"] = tf.ensure_shape(image, (resolution, resolution, 3))
    return example


def make_dataset(
    data_dir: str,
    split: str,
    resolution: int,
    batch_size: int,
    training: bool,
    seed: Optional[int] = None,
    deterministic: bool = False,
    class_balanced: bool = False,
    augment: Optional[bool] = None,
    repeat: Optional[bool] = None,
    drop_remainder: Optional[bool] = None,
    augment_config: AugmentConfig = AUGMENT,
) -> tf.data.Dataset:
    """Batches of ``{"image": uint8 (B, r, r, 3), "grade": int32 (B,), "image_id", "patient_id"}``.

    Sets nothing process-wide: a script that augments calls
    ``memory.configure_process_for_image_work`` first (one OpenCV thread, freed memory kept).

    Args:
      data_dir: a builder output folder (with manifest.json).
      split: "train", "validation" or "test".
      resolution: one of the built sizes.
      batch_size: examples per batch.
      training: shuffle, augment, repeat and drop the last partial batch (each overridable).
      seed: seeds shuffling and augmentation.
      deterministic: same order and same augmentations on every run with the same seed.
      class_balanced: draw the grades with equal frequencies (one stream per grade).
      augment, repeat, drop_remainder: override what ``training`` implies.
      augment_config: augmentation ranges.

    Raises:
      ValueError / FileNotFoundError: a missing split, resolution or shard, naming what exists.
    """
    augment = training if augment is None else augment
    repeat = training if repeat is None else repeat
    drop_remainder = training if drop_remainder is None else drop_remainder
    if deterministic and seed is None:
        seed = 0
    options = tf.data.Options()
    options.deterministic = deterministic or not training
    options.autotune.enabled = AUTOTUNE_MODEL
    dataset = _parsed_records(_shard_paths(data_dir, split, resolution), training, repeat, seed)
    if class_balanced:
        dataset = _class_balanced(dataset, grade_counts(data_dir, split), seed)
    if augment:
        seeds = tf.data.Dataset.random(seed=seed)
        dataset = tf.data.Dataset.zip((dataset, seeds)).map(
            lambda e, s: preprocess_for_train(e, s, resolution, augment_config),
            num_parallel_calls=tf.data.AUTOTUNE)
    else:
        dataset = dataset.map(lambda e: preprocess_for_eval(e, resolution),
                              num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder,
                            num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE).with_options(options)


def _parsed_records(paths: list, training: bool, repeat: bool, seed: Optional[int]
                    ) -> tf.data.Dataset:
    """Shards interleaved, records shuffled while still encoded (training), then parsed."""
    files = tf.data.Dataset.from_tensor_slices(paths)
    if training:
        files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        files = files.repeat()
    dataset = files.interleave(tf.data.TFRecordDataset, cycle_length=min(CYCLE_LENGTH, len(paths)),
                               num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if training:
        dataset = dataset.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
    return dataset.map(_parse, num_parallel_calls=tf.data.AUTOTUNE)


def _class_balanced(dataset: tf.data.Dataset, counts: list, seed: Optional[int]
                    ) -> tf.data.Dataset:
    """One stream per grade present, drawn with equal weights. Filtering parsed records is
    cheap (nothing is decoded yet) and, unlike rejection sampling, discards nothing."""
    present = [g for g, n in enumerate(counts) if n > 0]
    streams = [dataset.filter(lambda e, g=g: tf.equal(e["grade"], g)).repeat() for g in present]
    return tf.data.Dataset.sample_from_datasets(
        streams, weights=[1.0 / len(present)] * len(present), seed=seed)
