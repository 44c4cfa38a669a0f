"""What a photograph's quality is judged on: hand-made measures of the disc, as TensorFlow ops.

One function computes them (``disc_measures``), from the disc's square before Eq. 1 that the
in-graph preprocessing crops anyway (``preprocess.graph``, ``with_disc``). The same ops serve
fitting (``measure_encoded`` on files, eagerly through a traced function) and serving (the
export's ``serving_default`` calls ``preprocess_and_measure``), so the two cannot drift apart
(tests/test_quality.py checks the export against the offline path on camera originals).

The measures (``MEASURE_NAMES``), all at one scale relative to the disc (``measure_size``):

* **light**: median, 5th and 95th percentile of the luma inside the field (logarithms), and
  the shares of under-exposed (dark) and over-exposed (saturated) pixels;
* **rim contrast**: how far the rim ring stands above the black frame beyond it (log ratio) —
  a photograph taken with almost no light has its rim a few grey levels above the frame,
  whatever circle was fitted to it;
* **sharpness**: the mean absolute Laplacian of the green channel (where vessels show best)
  at the measure size and at half of it, relative to the green level, and the 90th percentile
  of its gradient magnitude (the vessels' edges), also relative; defocus lowers the first and
  its ratio to the second;
* **contrast**: the luma's coefficient of variation in the field;
* **coverage**: the share of the disc inside the photograph;
* **uneven light**: the darkest of ``num_sectors`` sectors of the outer ring against their
  median (a dark crescent on one side), their spread, and the outer ring against the centre;
* **colour**: red and blue against green (log ratios).

A photograph without a fundus has no disc: its measures are zeros and ``found`` is False (the
assessor calls it Reject).
"""

from __future__ import annotations

import functools
from typing import Sequence, Tuple

import numpy as np
import tensorflow as tf

from m2cnn_tf.config import PREPROCESS, PreprocessConfig
from m2cnn_tf.preprocess import fundus, graph as graph_preprocess
from m2cnn_tf.config import QUALITY, QualityConfig

MEASURE_NAMES = (
    "log_luma_median", "log_luma_p05", "log_luma_p95", "dark_share", "saturated_share",
    "rim_contrast", "sharpness_fine", "sharpness_coarse", "edge_strength", "contrast",
    "coverage", "sector_min", "sector_spread", "rim_falloff", "red_green", "blue_green",
)
NUM_MEASURES = len(MEASURE_NAMES)
# ITU-R BT.601 luma: how bright a pixel looks, from R, G, B.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
# The smallest output size the in-graph preprocessing accepts: what the measures need of it
# when only they are wanted (the disc's square is at the normalisation size either way).
_SMALLEST_SIZE = 8
_F32 = tf.float32
_LAPLACIAN = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], np.float32)


def _geometry(size: int) -> Tuple[np.ndarray, np.ndarray]:
    """(radius as a fraction of the disc's, angle in radians) of each pixel of the square."""
    centre = (size - 1) / 2.0
    y, x = np.mgrid[:size, :size].astype(np.float64) - centre
    return (np.hypot(x, y) / (size / 2.0)).astype(np.float32), np.arctan2(y, x)


def _shrink(disc: tf.Tensor, inside: tf.Tensor, size: int) -> Tuple[tf.Tensor, tf.Tensor]:
    """The square as float32 (size, size, 3) by an area mean, and which of its pixels lie
    wholly inside the photograph."""
    n = disc.shape[0]
    stacked = tf.concat([tf.cast(disc, _F32), tf.cast(inside, _F32)[:, :, None]], axis=2)[None]
    if n % size == 0:
        k = n // size
        small = tf.nn.avg_pool2d(stacked, k, k, "VALID")[0]
    else:
        small = tf.image.resize(stacked, [size, size], method="area")[0]
    return small[:, :, :3], small[:, :, 3] > 0.999


def _mean(values: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    weight = tf.cast(mask, _F32)
    return tf.reduce_sum(values * weight) / tf.maximum(tf.reduce_sum(weight), 1.0)


def _percentile(values: tf.Tensor, mask: tf.Tensor, q: float) -> tf.Tensor:
    """The ``q``-th percentile (linear, as NumPy) of ``values`` where ``mask``; 0 if none."""
    ordered = tf.sort(tf.boolean_mask(values, mask))
    n = tf.size(ordered)
    position = (q / 100.0) * tf.cast(tf.maximum(n - 1, 0), _F32)
    low = tf.cast(tf.floor(position), tf.int32)
    high = tf.minimum(low + 1, tf.maximum(n - 1, 0))
    padded = tf.concat([ordered, [0.0]], axis=0)  # an empty selection reads the pad
    fraction = position - tf.floor(position)
    return padded[low] * (1.0 - fraction) + padded[high] * fraction


def _log(level: tf.Tensor, settings: QualityConfig) -> tf.Tensor:
    return tf.math.log(level + settings.level_floor)


def _light(rgb, luma, field, rho, inside, settings: QualityConfig):
    """Light measures: luma percentiles, dark and saturated shares, rim over frame."""
    rim = (rho >= settings.rim_ring[0]) & (rho <= settings.rim_ring[1]) & inside
    frame = (rho >= settings.frame_radius) & inside
    frame_level = tf.where(
        tf.reduce_sum(tf.cast(frame, tf.int32)) >= settings.min_frame_pixels,
        _percentile(luma, frame, 50.0), 0.0)
    return [
        _log(_percentile(luma, field, 50.0), settings),
        _log(_percentile(luma, field, 5.0), settings),
        _log(_percentile(luma, field, 95.0), settings),
        _mean(tf.cast(luma < settings.dark_level, _F32), field),
        _mean(tf.cast(luma >= settings.saturated_level, _F32), field),
        _log(_percentile(luma, rim, 50.0), settings) - _log(frame_level, settings),
    ]


def _laplacian_energy(green: tf.Tensor, region: tf.Tensor, settings: QualityConfig):
    """log(mean |∇²G| / mean G) over ``region`` (the 3×3 Laplacian, valid positions)."""
    response = tf.nn.conv2d(green[None, :, :, None], _LAPLACIAN[:, :, None, None], 1,
                            "VALID")[0, :, :, 0]
    inner = region[1:-1, 1:-1]
    return (tf.math.log(_mean(tf.abs(response), inner) + 1e-3)
            - _log(_mean(green[1:-1, 1:-1], inner), settings))


def _sharpness(green, rho, inside, settings: QualityConfig):
    """Fine and coarse Laplacian energy, and the vessels' edge strength, relative to G."""
    region = (rho <= settings.sharpness_radius) & inside
    fine = _laplacian_energy(green, region, settings)
    half = tf.nn.avg_pool2d(green[None, :, :, None], 2, 2, "VALID")[0, :, :, 0]
    # a half-size pixel is in the region when all four of its pixels are (a min-pool)
    half_region = -tf.nn.max_pool2d(-tf.cast(region, _F32)[None, :, :, None], 2, 2,
                                    "VALID")[0, :, :, 0] > 0.5
    coarse = _laplacian_energy(half, half_region, settings)
    dy = green[2:, 1:-1] - green[:-2, 1:-1]
    dx = green[1:-1, 2:] - green[1:-1, :-2]
    magnitude = tf.sqrt(dx * dx + dy * dy) / 2.0
    inner = region[1:-1, 1:-1]
    edges = (_log(_percentile(magnitude, inner, 90.0), settings)
             - _log(_percentile(green[1:-1, 1:-1], inner, 50.0), settings))
    return [fine, coarse, edges]


def _sectors(luma, rho_np: np.ndarray, angle: np.ndarray, inside, settings: QualityConfig):
    """The darkest sector of the outer ring against their median, their spread, and the
    outer ring against the centre (``rho_np``, ``angle``: ``_geometry``)."""
    in_ring = (rho_np >= settings.outer_ring[0]) & (rho_np <= settings.outer_ring[1])
    ring = tf.constant(in_ring) & inside
    n = settings.num_sectors
    sector = np.minimum(((angle + np.pi) / (2 * np.pi) * n).astype(np.int32), n - 1)
    weight = tf.reshape(tf.cast(ring, _F32), [-1])
    ids = tf.constant(sector.reshape(-1))
    sums = tf.math.unsorted_segment_sum(tf.reshape(luma, [-1]) * weight, ids, n)
    counts = tf.math.unsorted_segment_sum(weight, ids, n)
    # A sector the frame cuts off (fewer than a quarter of its pixels in the photograph) says
    # nothing about the light: it takes the brightest valid sector's level (never the minimum).
    expected = np.bincount(sector[in_ring], minlength=n).astype(np.float32)
    valid = counts >= 0.25 * expected
    means = sums / tf.maximum(counts, 1.0)
    any_valid = tf.reduce_any(valid)
    top = tf.reduce_max(tf.where(valid, means, -1.0))
    means = tf.where(valid, means, top)
    middle = _percentile(means, valid, 50.0)
    spread = tf.sqrt(_mean(tf.square(means - _mean(means, valid)), valid))
    centre = tf.constant(rho_np <= settings.centre_radius) & inside
    values = [_log(tf.reduce_min(means), settings) - _log(middle, settings),
              spread / (_mean(means, valid) + settings.level_floor),
              _log(_mean(luma, ring), settings) - _log(_mean(luma, centre), settings)]
    return [tf.where(any_valid, v, 0.0) for v in values]


def disc_measures(disc: tf.Tensor, inside: tf.Tensor,
                  settings: QualityConfig = QUALITY) -> tf.Tensor:
    """The quality measures of one photograph (``MEASURE_NAMES``, in that order).

    Args:
      disc: (N, N, 3) uint8, the photograph in the disc's square before Eq. 1
        (``preprocess.graph.Preprocessed.disc``), N static.
      inside: (N, N) bool, which of its pixels lie inside the photograph.
      settings: the assessor's constants.

    Returns:
      (NUM_MEASURES,) float32.
    """
    rgb, inside = _shrink(disc, inside, settings.measure_size)
    rho_np, angle = _geometry(settings.measure_size)
    rho = tf.constant(rho_np)
    luma = tf.tensordot(rgb, tf.constant(LUMA_WEIGHTS, _F32), axes=[[2], [0]])
    field = (rho <= settings.field_radius) & inside
    green = rgb[:, :, 1]
    spread = tf.sqrt(_mean(tf.square(luma - _mean(luma, field)), field))
    colour = [_log(_mean(rgb[:, :, c], field), settings)
              - _log(_mean(green, field), settings) for c in (0, 2)]
    values = (_light(rgb, luma, field, rho, inside, settings)
              + _sharpness(green, rho, inside, settings)
              + [spread / (_mean(luma, field) + settings.level_floor),
                 _mean(tf.cast(inside, _F32), rho <= 1.0)]
              + _sectors(luma, rho_np, angle, inside, settings) + colour)
    return tf.ensure_shape(tf.stack(values), [NUM_MEASURES])


@tf.autograph.experimental.do_not_convert
def preprocess_and_measure(image_bytes: tf.Tensor, size: int,
                           config: PreprocessConfig = PREPROCESS,
                           settings: QualityConfig = QUALITY):
    """A batch of encoded photographs → normalised images, ``found`` and quality measures.

    The normalised images are ``preprocess.graph.preprocess_batch``'s, from the same decode.

    Args:
      image_bytes: (B,) tf.string, JPEG or PNG photographs.
      size: side of the normalised images.
      config: preprocessing constants.
      settings: the assessor's constants.

    Returns:
      images (B, size, size, 3) uint8, found (B,) bool, measures (B, NUM_MEASURES) float32
      (zeros where no fundus is found).
    """
    size = fundus.check_sizes((size,))[0]
    image_bytes = tf.convert_to_tensor(image_bytes, tf.string)
    if tf.executing_eagerly():
        return _compiled_batch(size, config, settings)(image_bytes)

    def one(data):
        result = graph_preprocess.preprocess_details(data, (size,), config, with_disc=True)
        measures = disc_measures(result.disc, result.disc_inside, settings)
        return (result.images[size], result.found,
                tf.where(result.found, measures, tf.zeros_like(measures)))

    images, found, measures = tf.map_fn(one, image_bytes, fn_output_signature=(
        tf.TensorSpec([size, size, 3], tf.uint8), tf.TensorSpec([], tf.bool),
        tf.TensorSpec([NUM_MEASURES], _F32)))
    return (tf.ensure_shape(images, [None, size, size, 3]), tf.ensure_shape(found, [None]),
            tf.ensure_shape(measures, [None, NUM_MEASURES]))


@functools.lru_cache(maxsize=8)
def _compiled_batch(size: int, config: PreprocessConfig, settings: QualityConfig):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)
    def run(batch):
        return preprocess_and_measure(batch, size, config, settings)

    return run


def measure_encoded(encoded: Sequence[bytes], config: PreprocessConfig = PREPROCESS,
                    settings: QualityConfig = QUALITY) -> Tuple[np.ndarray, np.ndarray]:
    """The measures of encoded photographs, offline: (measures (B, F) float32, found (B,)).

    The same graph as the export's; bytes that cannot be decoded raise
    ``tf.errors.InvalidArgumentError`` (callers that read files check them first).
    """
    if not len(encoded):
        return np.zeros((0, NUM_MEASURES), np.float32), np.zeros((0,), bool)
    _, found, measures = preprocess_and_measure(tf.constant(list(encoded), tf.string),
                                                _SMALLEST_SIZE, config, settings)
    return measures.numpy(), found.numpy()
