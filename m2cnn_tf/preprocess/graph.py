"""The fundus preprocessing of ``fundus.load_normalized`` as TensorFlow graph ops, for serving.

TF Serving runs a SavedModel's graph and nothing else: no Python, no OpenCV. The exported serving
signature therefore takes the encoded photograph (JPEG or PNG bytes) and does everything the
training data went through offline — decode, find the disc, crop, Eq. 1, resample — with ops of
the standard TensorFlow runtime (no ``tf.numpy_function`` / ``tf.py_function``).

It is a step-by-step twin of ``fundus.load_normalized(bytes, (size,))``, reading the same
constants from ``PreprocessConfig`` (and the RANSAC picks from ``fundus.ransac_fractions``), and
reproducing the arithmetic of the OpenCV calls it stands in for:

* JPEG: ``tf.io.decode_jpeg(ratio=r, dct_method="INTEGER_ACCURATE")`` is pixel-identical to
  ``cv2.imdecode(IMREAD_REDUCED_COLOR_r)`` (both libjpeg-turbo, both the accurate integer IDCT;
  TF's default DCT method is not). The DCT reduction and the finer re-decode follow
  ``fundus._jpeg_reduction`` and ``load_normalized``.
* Whole-factor ``INTER_AREA`` on uint8: the exact mean, rounded like OpenCV's fast path
  (``(sum + 2) >> 2`` for 2×2, ``cvRound(sum · (1/k²))`` otherwise).
* ``INTER_LINEAR`` on uint8: OpenCV's fixed-point bilinear (11-bit weights, and the rounding of
  its SIMD vertical pass), bit-exact; a 2× shrink is the 2×2 area mean, as in OpenCV.
* ``cv2.transform`` with a 1×3 matrix of ones on uint8 saturates: brightness = min(R+G+B, 255).
* ``cv2.medianBlur(…, 5)`` replicates the border (here a 25-input median selection network).
* ``cv2.connectedComponentsWithStats`` (8-connected; TF has no such op): labels spread along
  horizontal and vertical runs and to 8-neighbours in a ``tf.while_loop`` until nothing
  changes; each component is named after its first pixel in raster order.
* ``np.percentile`` (linear), ``np.linalg.lstsq`` (here normal equations in float64 on centred
  points), ``np.argmax`` (first maximum) as in ``fundus``.
* ``cv2.circle(…, FILLED)`` with integer centre and radius fills exactly dx² + dy² ≤ r².
* ``cv2.GaussianBlur`` on float32: ``getGaussianKernel(cvRound(8σ + 1) | 1, σ)``, zero border.
* ``cv2.addWeighted(…, dtype=CV_8U)``: float, rounded half to even, saturated.

Where no fundus is found (a black or blank image, no circular field of view) the graph does not
fail — a batch must not be lost to one bad photograph: ``found`` is False and the image is the
*defined result* of an all-γ picture (Eq. 1's value outside the disc, 128). Bytes that are no
JPEG/PNG at all, or whose header exceeds ``max_image_pixels``, or that are truncated, fail with an
``InvalidArgumentError`` saying "could not be decoded", as ``image_io`` raises ImageReadError.
"""

from __future__ import annotations

import functools
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from m2cnn_tf.preprocess import fundus, image_io
from m2cnn_tf.config import PREPROCESS, PreprocessConfig

_F32 = tf.float32
_F64 = tf.float64
_I32 = tf.int32
_I64 = tf.int64
# OpenCV's INTER_LINEAR on uint8 weighs with 11-bit fixed-point coefficients.
_RESIZE_COEF_BITS = 11
_RESIZE_COEF_SCALE = 1 << _RESIZE_COEF_BITS
# Bytes searched for the end marker, as image_io._check_complete does.
_TAIL_BYTES = 4096
_DECODE_ERROR = "image bytes could not be decoded"


class Preprocessed(NamedTuple):
    """Everything the graph computes for one photograph (``_preprocess``)."""

    images: Dict[int, tf.Tensor]  # {size: (size, size, 3) uint8}
    found: tf.Tensor  # bool scalar: a fundus was found (else the images are all γ)
    circle: tf.Tensor  # (3,) float64: cx, cy, radius in the original photograph's pixels
    reduction: tf.Tensor  # int32 scalar: the JPEG DCT reduction decoded at (1 for PNG)
    # With ``with_disc``: the photograph itself (before Eq. 1) in the disc's square, at the
    # normalisation size (N, N, 3) uint8, and (N, N) bool: which of its pixels lie inside the
    # photograph (the square can stick out where the frame cuts the disc off). All zeros and
    # False when no fundus is found. What image-quality measures read (``m2cnn_tf.quality``).
    disc: Optional[tf.Tensor] = None
    disc_inside: Optional[tf.Tensor] = None


# ---------------------------------------------------------------------------------------------
# Small helpers


def _static_int(x):
    """A Python int when ``x`` is one or a constant-shaped dimension, else the tensor."""
    if isinstance(x, (int, np.integer)):
        return int(x)
    value = tf.get_static_value(x)
    return int(value) if value is not None else x


def _shape2(image: tf.Tensor):
    """(height, width) of an (H, W, C) tensor, as Python ints where static."""
    static = image.shape
    dynamic = tf.shape(image)
    h = static[0] if static[0] is not None else dynamic[0]
    w = static[1] if static[1] is not None else dynamic[1]
    return h, w


def _cond(pred, true_fn, false_fn):
    """``tf.cond``, or a plain Python choice when the predicate is known while tracing."""
    if isinstance(pred, (bool, np.bool_)):
        return true_fn() if pred else false_fn()
    return tf.cond(pred, true_fn, false_fn)


def _round_to_int(x: tf.Tensor, dtype=_I32) -> tf.Tensor:
    """Round half to even, like Python's round() and OpenCV's cvRound."""
    return tf.cast(tf.round(x), dtype)


def _saturate_u8(x: tf.Tensor) -> tf.Tensor:
    """Float → uint8 like OpenCV's saturate_cast: round half to even, clip to 0–255."""
    return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)


# ---------------------------------------------------------------------------------------------
# Decoding (image_io.check_image_bytes + decode_image)


def _contains(haystack: tf.Tensor, needle: bytes) -> tf.Tensor:
    """Whether the uint8 vector ``haystack`` contains the byte string ``needle``."""
    n = tf.size(haystack)
    windows = tf.maximum(n - len(needle) + 1, 0)
    hit = tf.ones([windows], tf.bool)
    for i, byte in enumerate(needle):
        hit &= tf.equal(haystack[i : i + windows], byte)
    return tf.reduce_any(hit)


def _jpeg_size(raw: tf.Tensor):
    """``image_io._jpeg_size``: (width, height, ok) from the first start-of-frame marker.

    Walks the marker segments like the Python parser; ``ok`` is False when there is none.
    """
    n = tf.size(raw, out_type=_I64)
    padded = tf.cast(tf.concat([raw, tf.zeros([16], tf.uint8)], axis=0), _I64)
    byte = lambda i: padded[i]
    searching, found, failed = 0, 1, 2

    def body(pos, width, height, state):
        marker = byte(pos + 1)
        length = byte(pos + 2) * 256 + byte(pos + 3)
        no_length = ((marker == 0xD8) | (marker == 0x01)
                     | ((marker >= 0xD0) & (marker <= 0xD7)))
        # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) carry the frame size.
        is_sof = ((marker >= 0xC0) & (marker <= 0xCF) & (marker != 0xC4) & (marker != 0xC8)
                  & (marker != 0xCC))
        not_marker = tf.not_equal(byte(pos), 0xFF)
        fill = tf.equal(marker, 0xFF)
        frame = ~not_marker & ~fill & ~no_length & is_sof
        state = tf.where(not_marker | (frame & (pos + 9 > n)), failed,
                         tf.where(frame, found, searching))
        height = tf.where(frame, byte(pos + 5) * 256 + byte(pos + 6), height)
        width = tf.where(frame, byte(pos + 7) * 256 + byte(pos + 8), width)
        step = tf.where(fill, tf.constant(1, _I64),
                        tf.where(no_length, tf.constant(2, _I64), 2 + length))
        return pos + step, width, height, state

    zero = tf.constant(0, _I64)
    _, width, height, state = tf.while_loop(
        lambda pos, w, h, state: tf.equal(state, searching) & (pos + 4 <= n), body,
        (tf.constant(2, _I64), zero, zero, tf.constant(searching)))
    return width, height, tf.equal(state, found)


def _png_size(raw: tf.Tensor):
    """(width, height, bit depth, ok) from the IHDR chunk of a PNG."""
    head = tf.cast(tf.concat([raw[:32], tf.zeros([32], tf.uint8)], axis=0), _I64)
    be32 = lambda i: head[i] * 16777216 + head[i + 1] * 65536 + head[i + 2] * 256 + head[i + 3]
    ok = (tf.size(raw) >= 24) & tf.reduce_all(tf.equal(head[12:16], list(b"IHDR")))
    return be32(16), be32(20), head[24], ok


def _check_bytes(data: tf.Tensor, config: PreprocessConfig):
    """In-graph ``image_io.check_image_bytes``: (data, is_jpeg, width, height, png_bit_depth).

    ``data`` comes back gated on the checks, so nothing decodes before they pass. Each failure
    is an InvalidArgumentError whose message says the bytes "could not be decoded" and why.
    """
    jpeg_magic, png_magic = image_io.JPEG_MAGIC, image_io.PNG_MAGIC
    is_jpeg = tf.equal(tf.strings.substr(data, 0, len(jpeg_magic)), jpeg_magic)
    is_png = tf.equal(tf.strings.substr(data, 0, len(png_magic)), png_magic)
    check = tf.debugging.Assert(is_jpeg | is_png, [
        f"{_DECODE_ERROR}: not a JPEG or PNG image (expected a photograph); it starts with",
        tf.strings.substr(data, 0, 8)])
    with tf.control_dependencies([check]):
        raw = tf.io.decode_raw(data, tf.uint8)

    def jpeg_header():
        width, height, ok = _jpeg_size(raw)
        return width, height, tf.constant(8, _I64), ok

    width, height, bit_depth, header_ok = tf.cond(is_jpeg, jpeg_header, lambda: _png_size(raw))
    kind = tf.where(is_jpeg, "JPEG", "PNG")
    check = tf.debugging.Assert(header_ok, [
        f"{_DECODE_ERROR}: the", kind, "header is damaged: no image size found"])
    with tf.control_dependencies([check]):
        width, height = tf.identity(width), tf.identity(height)
    tail = raw[tf.maximum(tf.size(raw) - _TAIL_BYTES, 0):]
    complete = tf.cond(is_jpeg, lambda: _contains(tail, image_io.JPEG_END),
                       lambda: _contains(tail, image_io.PNG_END_CHUNK))
    checks = [
        tf.debugging.Assert((width > 0) & (height > 0), [
            f"{_DECODE_ERROR}: the header says the image is", width, "x", height, "pixels"]),
        tf.debugging.Assert(width * height <= config.max_image_pixels, [
            f"{_DECODE_ERROR}: the header claims", width, "x", height,
            f"pixels, over the limit of {config.max_image_pixels:,} "
            "(PreprocessConfig.max_image_pixels); refused before decoding"]),
        tf.debugging.Assert(complete, [
            f"{_DECODE_ERROR}: truncated", kind, "(no end-of-image marker / IEND chunk)"]),
    ]
    with tf.control_dependencies(checks):
        data = tf.identity(data)
    return data, is_jpeg, width, height, bit_depth


def _decode(data: tf.Tensor, is_jpeg: tf.Tensor, bit_depth: tf.Tensor,
            reduction: tf.Tensor) -> tf.Tensor:
    """RGB uint8 (H, W, 3): JPEG at 1/``reduction`` scale from the DCT, PNG whole.

    The JPEG ratio is a static attribute of DecodeJpeg, hence one branch per reduction.
    """

    def jpeg():
        def at(ratio):
            return lambda: tf.io.decode_jpeg(data, channels=3, ratio=ratio,
                                             dct_method="INTEGER_ACCURATE")

        ratios = sorted(image_io.JPEG_REDUCTION_FLAGS)  # 1, 2, 4, 8
        index = tf.argmax(tf.cast(tf.equal(tf.constant(ratios, _I32), reduction), _I32),
                          output_type=_I32)
        return tf.switch_case(index, [at(r) for r in ratios])

    def png():
        # image_io._to_bgr8: 16-bit samples keep their high byte; gray → three equal channels;
        # alpha dropped (decode_png(channels=3) does both of the latter).
        return tf.cond(
            tf.equal(bit_depth, 16),
            lambda: tf.cast(tf.bitwise.right_shift(
                tf.io.decode_png(data, channels=3, dtype=tf.uint16), tf.constant(8, tf.uint16)),
                tf.uint8),
            lambda: tf.io.decode_png(data, channels=3, dtype=tf.uint8))

    image = tf.cond(is_jpeg, jpeg, png)
    image.set_shape([None, None, 3])
    return image


def _jpeg_reduction(width: tf.Tensor, height: tf.Tensor, needed: int) -> tf.Tensor:
    """``fundus._jpeg_reduction``: the largest DCT reduction leaving the shorter side ≥ needed."""
    short = tf.minimum(width, height)
    reduction = tf.constant(1, _I32)
    for r in (2, 4, 8):  # later (larger) reductions override, as the Python loop tries 8 first
        reduction = tf.where(short >= needed * r, tf.constant(r, _I32), reduction)
    return reduction


# ---------------------------------------------------------------------------------------------
# OpenCV's resize arithmetic


def _area_shrink_u8(image: tf.Tensor, k) -> tf.Tensor:
    """``cv2.resize(image[:h//k*k, :w//k*k], (w//k, h//k), INTER_AREA)`` on uint8 (k ≥ 1)."""
    h, w = _shape2(image)
    c = image.shape[2]
    hk, wk = h // k, w // k
    # Rows first, then columns: two reductions over adjacent axes are much faster in TF than
    # one over two strided axes.
    rows = tf.reduce_sum(tf.reshape(tf.cast(image[: hk * k, : wk * k], _I32),
                                    [hk, k, wk * k * c]), axis=1)
    total = tf.reduce_sum(tf.reshape(rows, [hk, wk, k, c]), axis=2)
    k_static = _static_int(k)
    # OpenCV's 2×2 SIMD path rounds half up; the general fast path multiplies by 1/k² in float.
    by_scale = lambda: _round_to_int(tf.cast(total, _F32) * (1.0 / tf.cast(k * k, _F32)))
    half_up = lambda: tf.bitwise.right_shift(total + 2, 2)
    if isinstance(k_static, int):
        out = half_up() if k_static == 2 else by_scale()
    else:
        out = tf.where(tf.equal(k, 2), half_up(), by_scale())
    return tf.cast(tf.clip_by_value(out, 0, 255), tf.uint8)


def _row_sampled_shrink_u8(image: tf.Tensor, k) -> tf.Tensor:
    """``fundus.find_fundus``'s detection picture: the middle row of each band of k rows,
    ``cv2.resize(…, INTER_AREA)`` by k along it (the sum × float32(1/k), rounded half to even)."""
    h, w = _shape2(image)
    c = image.shape[2]
    hk, wk = h // k, w // k
    rows = image[(k - 1) // 2: hk * k: k, : wk * k]
    total = tf.reduce_sum(tf.reshape(tf.cast(rows, _I32), [hk, wk, k, c]), axis=2)
    out = _round_to_int(tf.cast(total, _F32) * (1.0 / tf.cast(k, _F32)))
    return tf.cast(tf.clip_by_value(out, 0, 255), tf.uint8)


def _area_shrink_f32(image: tf.Tensor, k: int) -> tf.Tensor:
    """Whole-factor INTER_AREA on float32 (static k): block sum × 1/k²."""
    h, w = _shape2(image)
    c = image.shape[2]
    hk, wk = h // k, w // k
    rows = tf.reduce_sum(tf.reshape(image[: hk * k, : wk * k], [hk, k, wk * k * c]), axis=1)
    return tf.reduce_sum(tf.reshape(rows, [hk, wk, k, c]), axis=2) * np.float32(1.0 / (k * k))


def _area_weights(src, dst) -> tf.Tensor:
    """(dst, src) float32 weights of OpenCV's general INTER_AREA (computeResizeAreaTab)."""
    src_f = tf.cast(src, _F64)
    scale = 1.0 / (tf.cast(dst, _F64) / src_f)
    start = tf.range(tf.cast(dst, _F64), dtype=_F64)[:, None] * scale
    end = start + scale
    cell = tf.minimum(scale, src_f - start)
    s = tf.range(src_f, dtype=_F64)[None, :]
    overlap = tf.minimum(s + 1.0, end) - tf.maximum(s, start)
    overlap = tf.where(overlap > 1e-3, overlap, 0.0)  # OpenCV drops slivers of ≤ 1e-3 px
    return tf.cast(overlap / cell, _F32)


def _area_resize(image: tf.Tensor, out_h, out_w) -> tf.Tensor:
    """General (non-integer) INTER_AREA shrink; float32 in, float32 out."""
    h, w = _shape2(image)
    wy = _area_weights(h, out_h)
    wx = _area_weights(w, out_w)
    return tf.einsum("ys,sxc->yxc", wy, tf.einsum("xs,ysc->yxc", wx, image))


def _linear_taps(src, dst):
    """OpenCV's INTER_LINEAR source index and float32 fraction for each output pixel."""
    scale = 1.0 / (tf.cast(dst, _F64) / tf.cast(src, _F64))
    position = tf.cast((tf.range(tf.cast(dst, _F64), dtype=_F64) + 0.5) * scale - 0.5, _F32)
    first = tf.floor(position)
    return tf.cast(first, _I32), position - first


def _column_taps(src, dst):
    """Columns: outside the image the weight is clamped to the edge pixel (fx = 0)."""
    sx, fx = _linear_taps(src, dst)
    low = sx < 0
    high = sx >= src - 1
    fx = tf.where(low | high, tf.zeros_like(fx), fx)
    sx = tf.where(low, tf.zeros_like(sx), tf.where(high, tf.fill(tf.shape(sx), src - 1), sx))
    return sx, tf.minimum(sx + 1, src - 1), fx


def _row_taps(src, dst):
    """Rows: the fraction is kept and both source rows are clipped into the image."""
    sy, fy = _linear_taps(src, dst)
    return tf.clip_by_value(sy, 0, src - 1), tf.clip_by_value(sy + 1, 0, src - 1), fy


def _fixed(weight: tf.Tensor) -> tf.Tensor:
    return _round_to_int(weight * float(_RESIZE_COEF_SCALE))


def _bilinear_u8(image: tf.Tensor, out_h: int, out_w: int) -> tf.Tensor:
    """``cv2.resize(image, (out_w, out_h), INTER_LINEAR)`` on uint8, bit-exact.

    The horizontal pass is exact integer arithmetic (source · 11-bit weights); the vertical pass
    rounds as OpenCV's vectorised code does: ((b0·(t >> 4)) >> 16 + (b1·(u >> 4)) >> 16 + 2) >> 2.
    """
    h, w = _shape2(image)
    x0, x1, fx = _column_taps(w, out_w)
    y0, y1, fy = _row_taps(h, out_h)
    a0, a1 = _fixed(1.0 - fx)[:, None, None], _fixed(fx)[:, None, None]
    b0, b1 = _fixed(1.0 - fy)[:, None, None], _fixed(fy)[:, None, None]
    # Gathering whole rows of a transposed copy is faster than gathering columns.
    columns = tf.transpose(image, [1, 0, 2])
    column = lambda index: tf.cast(tf.gather(columns, index), _I32)
    rows = tf.transpose(column(x0) * a0 + column(x1) * a1, [1, 0, 2])
    shift = tf.bitwise.right_shift
    top = shift(tf.gather(rows, y0), 4)
    bottom = shift(tf.gather(rows, y1), 4)
    out = shift(shift(b0 * top, 16) + shift(b1 * bottom, 16) + 2, 2)
    return tf.cast(tf.clip_by_value(out, 0, 255), tf.uint8)


def _linear_u8(image: tf.Tensor, out_h: int, out_w: int) -> tf.Tensor:
    """INTER_LINEAR on uint8, with OpenCV's shortcuts: a copy at equal size, area mean at 2×."""
    h, w = _shape2(image)
    if isinstance(h, int) and isinstance(w, int):
        if (h, w) == (out_h, out_w):
            return image
        double = (h, w) == (2 * out_h, 2 * out_w)
    else:
        double = tf.equal(h, 2 * out_h) & tf.equal(w, 2 * out_w)
    out = _cond(double, lambda: _area_shrink_u8(image, 2),
                lambda: _bilinear_u8(image, out_h, out_w))
    return tf.ensure_shape(out, [out_h, out_w, image.shape[2]])


def _linear_f32(image: tf.Tensor, out_h: int, out_w: int) -> tf.Tensor:
    """``cv2.resize(image, (out_w, out_h), INTER_LINEAR)`` on float32."""
    h, w = _shape2(image)
    x0, x1, fx = _column_taps(w, out_w)
    y0, y1, fy = _row_taps(h, out_h)
    fx, fy = fx[None, :, None], fy[:, None, None]
    rows = tf.gather(image, x0, axis=1) * (1.0 - fx) + tf.gather(image, x1, axis=1) * fx
    return tf.gather(rows, y0) * (1.0 - fy) + tf.gather(rows, y1) * fy


# A dynamic-size input is the disc crop, which ``_shrink_photograph`` leaves at most 2× the
# output; deeper pyramids are traced for safety, to this many halvings.
_MAX_DYNAMIC_HALVINGS = 3


def _resample(image: tf.Tensor, size: int, config: PreprocessConfig, depth: int = 0) -> tf.Tensor:
    """``fundus.resample`` on a square uint8 image of static or dynamic side."""
    n, _ = _shape2(image)
    if isinstance(n, int):
        if n / size > config.bilinear_max_shrink:
            return _area_shrink_u8(_resample(image, 2 * size, config), 2)
        return _linear_u8(image, size, size)
    if depth >= _MAX_DYNAMIC_HALVINGS:
        return _linear_u8(image, size, size)
    shrink = tf.cast(n, _F64) / size
    return _cond(shrink > config.bilinear_max_shrink,
                 lambda: _area_shrink_u8(_resample(image, 2 * size, config, depth + 1), 2),
                 lambda: _linear_u8(image, size, size))


# ---------------------------------------------------------------------------------------------
# find_fundus


# Devillard's median-of-25 selection network ("Fast median search", opt_med25): after these
# compare-exchanges the 13th wire holds the median. Checked for all 2^25 binary inputs (0-1
# principle) and against a sort in tests/test_graph_preprocess.py.
_MEDIAN25_NETWORK = (
    (0, 1), (3, 4), (2, 4), (2, 3), (6, 7), (5, 7), (5, 6), (9, 10), (8, 10), (8, 9), (12, 13),
    (11, 13), (11, 12), (15, 16), (14, 16), (14, 15), (18, 19), (17, 19), (17, 18), (21, 22),
    (20, 22), (20, 21), (23, 24), (2, 5), (3, 6), (0, 6), (0, 3), (4, 7), (1, 7), (1, 4),
    (11, 14), (8, 14), (8, 11), (12, 15), (9, 15), (9, 12), (13, 16), (10, 16), (10, 13),
    (20, 23), (17, 23), (17, 20), (21, 24), (18, 24), (18, 21), (19, 22), (8, 17), (9, 18),
    (0, 18), (0, 9), (10, 19), (1, 19), (1, 10), (11, 20), (2, 20), (2, 11), (12, 21), (3, 21),
    (3, 12), (13, 22), (4, 22), (4, 13), (14, 23), (5, 23), (5, 14), (15, 24), (6, 24), (6, 15),
    (7, 16), (7, 19), (13, 21), (15, 23), (7, 13), (7, 15), (1, 9), (3, 11), (5, 17), (11, 17),
    (9, 17), (4, 10), (6, 12), (7, 14), (4, 6), (4, 7), (12, 14), (10, 14), (6, 7), (10, 12),
    (6, 10), (6, 17), (12, 17), (7, 17), (7, 10), (12, 18), (7, 12), (10, 18), (12, 20),
    (10, 20), (10, 12),
)


def _median5(x: tf.Tensor) -> tf.Tensor:
    """``cv2.medianBlur(x, 5)`` on a 2-D integer image: 5×5 median, border replicated."""
    h, w = _shape2(x)
    rows = tf.clip_by_value(tf.range(-2, h + 2), 0, h - 1)
    cols = tf.clip_by_value(tf.range(-2, w + 2), 0, w - 1)
    padded = tf.gather(tf.gather(x, rows), cols, axis=1)
    wires = [padded[i : i + h, j : j + w] for i in range(5) for j in range(5)]
    for a, b in _MEDIAN25_NETWORK:
        wires[a], wires[b] = tf.minimum(wires[a], wires[b]), tf.maximum(wires[a], wires[b])
    return wires[12]


def _percentile(sorted_values: tf.Tensor, q: float) -> tf.Tensor:
    """``np.percentile(values, q)`` (linear interpolation) of already sorted integers."""
    n = tf.size(sorted_values)
    virtual = tf.cast(n - 1, _F64) * (q / 100)
    previous = tf.floor(virtual)
    gamma = virtual - previous
    above = virtual >= tf.cast(n - 1, _F64)
    prev_i = tf.where(above, n - 1, tf.cast(previous, _I32))
    next_i = tf.where(above, n - 1, prev_i + 1)
    a = tf.gather(sorted_values, prev_i)
    b = tf.gather(sorted_values, next_i)
    diff = tf.cast(b - a, _F64)
    a, b = tf.cast(a, _F64), tf.cast(b, _F64)
    return tf.where(gamma >= 0.5, b - diff * (1.0 - gamma), a + diff * gamma)


def _run_max(labels: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Every pixel of each horizontal run of the mask gets the run's largest label."""
    h, w = _shape2(mask)
    starts = mask & ~tf.pad(mask[:, :-1], [[0, 0], [1, 0]])  # first pixel of each run
    segment = tf.math.cumsum(tf.reshape(tf.cast(starts, _I32), [-1]))
    # Background pixels fall into the run before them, but their label 0 raises no maximum.
    run_max = tf.math.segment_max(tf.reshape(labels, [-1]), segment)
    return tf.where(mask, tf.reshape(tf.gather(run_max, segment), [h, w]), 0)


def _neighbour_max(labels: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """The largest label in each mask pixel's 3×3 neighbourhood (8-connectivity)."""
    p = tf.pad(labels, [[1, 1], [1, 1]])
    rows = tf.maximum(tf.maximum(p[:, :-2], p[:, 1:-1]), p[:, 2:])
    return tf.where(mask, tf.maximum(tf.maximum(rows[:-2], rows[1:-1]), rows[2:]), 0)


def _largest_component(mask: tf.Tensor):
    """The largest 8-connected component of a 2-D bool mask, and whether there is one.

    Every pixel starts with a label unique to it, larger for earlier pixels in raster order;
    spreading the largest label along horizontal runs, vertical runs and to 8-neighbours until
    nothing changes names each component after its first pixel in raster order. Ties of size
    go to the component that starts first, as OpenCV numbers its components that way.
    """
    h, w = _shape2(mask)
    count = h * w
    first_rank = tf.reshape(count - tf.range(count, dtype=_I32), [h, w])
    labels = tf.where(mask, first_rank, 0)
    mask_t = tf.transpose(mask)

    def body(lab, _):
        new = _run_max(lab, mask)
        new = tf.transpose(_run_max(tf.transpose(new), mask_t))
        new = _neighbour_max(new, mask)
        return new, tf.reduce_any(tf.not_equal(new, lab))

    labels, _ = tf.while_loop(lambda lab, changed: changed, body, (labels, tf.constant(True)),
                              maximum_iterations=count)
    sizes = tf.math.bincount(tf.reshape(labels, [-1]), minlength=count + 1, dtype=_I32)
    sizes = tf.tensor_scatter_nd_update(sizes, [[0]], [0])
    biggest = tf.reduce_max(sizes)
    label = tf.reduce_max(tf.where(tf.equal(sizes, biggest), tf.range(tf.size(sizes)), -1))
    return mask & tf.equal(labels, label), biggest > 0


def _edge_points(mask: tf.Tensor):
    """``fundus._edge_points``: row ends, then column ends, off the border, ±0.5 px (float64)."""
    h, w = _shape2(mask)
    col_index = tf.range(w)[None, :]
    row_index = tf.range(h)[:, None]
    left = tf.reduce_min(tf.where(mask, col_index, w), axis=1)
    right = tf.reduce_max(tf.where(mask, col_index, -1), axis=1)
    top = tf.reduce_min(tf.where(mask, row_index, h), axis=0)
    bottom = tf.reduce_max(tf.where(mask, row_index, -1), axis=0)
    rows_any = tf.reduce_any(mask, axis=1)
    cols_any = tf.reduce_any(mask, axis=0)
    rows = tf.cast(tf.range(h), _F64)
    cols = tf.cast(tf.range(w), _F64)
    f = lambda v: tf.cast(v, _F64)
    keep_left = rows_any & (left > 0)
    keep_right = rows_any & (right < w - 1)
    keep_top = cols_any & (top > 0)
    keep_bottom = cols_any & (bottom < h - 1)
    xs = tf.concat([
        tf.boolean_mask(f(left) - 0.5, keep_left), tf.boolean_mask(f(right) + 0.5, keep_right),
        tf.boolean_mask(cols, keep_top), tf.boolean_mask(cols, keep_bottom)], axis=0)
    ys = tf.concat([
        tf.boolean_mask(rows, keep_left), tf.boolean_mask(rows, keep_right),
        tf.boolean_mask(f(top) - 0.5, keep_top), tf.boolean_mask(f(bottom) + 0.5, keep_bottom)],
        axis=0)
    return xs, ys


def _hypot(dx: tf.Tensor, dy: tf.Tensor) -> tf.Tensor:
    return tf.sqrt(dx * dx + dy * dy)


def _fit_circle(x: tf.Tensor, y: tf.Tensor, keep: tf.Tensor):
    """``fundus._fit_circle`` (Kåsa) on the kept points: normal equations on centred data.

    The algebraic fit is translation invariant, so centring changes nothing but the rounding;
    the 3×3 system is solved by Cramer's rule so a degenerate set gives NaN, not an error.
    """
    wgt = tf.cast(keep, _F64)
    n = tf.reduce_sum(wgt)
    safe_n = tf.maximum(n, 1.0)
    xm = tf.reduce_sum(wgt * x) / safe_n
    ym = tf.reduce_sum(wgt * y) / safe_n
    u, v = x - xm, y - ym
    z = u * u + v * v
    s = lambda a: tf.reduce_sum(wgt * a)
    a11, a12, a13 = s(u * u), s(u * v), s(u)
    a22, a23, a33 = s(v * v), s(v), n
    b1, b2, b3 = -s(u * z), -s(v * z), -s(z)
    det = lambda m11, m12, m13, m21, m22, m23, m31, m32, m33: (
        m11 * (m22 * m33 - m23 * m32) - m12 * (m21 * m33 - m23 * m31)
        + m13 * (m21 * m32 - m22 * m31))
    d0 = det(a11, a12, a13, a12, a22, a23, a13, a23, a33)
    d = det(b1, a12, a13, b2, a22, a23, b3, a23, a33) / d0
    e = det(a11, b1, a13, a12, b2, a23, a13, b3, a33) / d0
    f = det(a11, a12, b1, a12, a22, b2, a13, a23, b3) / d0
    cx, cy = -d / 2.0, -e / 2.0
    r2 = cx * cx + cy * cy - f
    return xm + cx, ym + cy, tf.sqrt(tf.maximum(r2, 0.0))


def _robust_circle(x, y, tolerance, min_radius, max_radius, config: PreprocessConfig):
    """``fundus._robust_circle``: RANSAC on the fixed R3 picks, then two least-squares refits.

    Returns (cx, cy, r, inlier share); the share is 0 when no 3-point circle is plausible.
    """
    n = tf.size(x)
    fractions = tf.constant(fundus.ransac_fractions(config.ransac_trials), _F64)
    picks = tf.minimum(tf.cast(fractions * tf.cast(n, _F64), _I32), n - 1)
    px, py = tf.gather(x, picks), tf.gather(y, picks)
    ax, bx, qx = px[:, 0], px[:, 1], px[:, 2]
    ay, by, qy = py[:, 0], py[:, 1], py[:, 2]
    d = 2.0 * (ax * (by - qy) + bx * (qy - ay) + qx * (ay - by))
    a2, b2, q2 = ax * ax + ay * ay, bx * bx + by * by, qx * qx + qy * qy
    cx = (a2 * (by - qy) + b2 * (qy - ay) + q2 * (ay - by)) / d
    cy = (a2 * (qx - bx) + b2 * (ax - qx) + q2 * (bx - ax)) / d
    r = _hypot(ax - cx, ay - cy)
    ok = tf.math.is_finite(r) & (r >= min_radius) & (r <= max_radius)

    step = tf.maximum(1, n // config.ransac_scoring_points)
    sx, sy = x[::step], y[::step]
    residual = tf.abs(_hypot(sx[None, :] - cx[:, None], sy[None, :] - cy[:, None]) - r[:, None])
    votes = tf.reduce_sum(tf.cast(residual <= tolerance, _I32), axis=1)
    votes = tf.where(ok, votes, -1)
    trials = tf.size(votes)
    best = tf.reduce_min(tf.where(tf.equal(votes, tf.reduce_max(votes)), tf.range(trials), trials))
    best = tf.minimum(best, trials - 1)

    def inliers(ccx, ccy, cr):
        return tf.abs(_hypot(x - ccx, y - ccy) - cr) <= tolerance

    keep = inliers(cx[best], cy[best], r[best])
    fit1 = _fit_circle(x, y, keep)
    keep1 = inliers(*fit1)
    fit2 = _fit_circle(x, y, keep1)
    refit = tf.reduce_sum(tf.cast(keep1, _I32)) >= 3  # else the Python loop breaks after one fit
    fx, fy, fr = (tf.where(refit, b, a) for a, b in zip(fit1, fit2))
    share = tf.reduce_mean(tf.cast(inliers(fx, fy, fr), _F64))
    share = tf.where(tf.reduce_any(ok), share, 0.0)
    return fx, fy, fr, share


def _not_found():
    zero = tf.constant(0.0, _F64)
    return tf.constant(False), zero, zero, zero


def _find_fundus(image: tf.Tensor, config: PreprocessConfig):
    """``fundus.find_fundus``: (found, cx, cy, radius) in ``image``'s pixels (float64)."""
    h, w = _shape2(image)
    k = tf.maximum(1, tf.cast(tf.math.ceil(
        tf.cast(tf.maximum(h, w), _F64) / config.detection_size), _I32))

    def detect():
        small = _row_sampled_shrink_u8(image, k)
        mask, plausible = _fundus_mask(small, config)
        x, y = _edge_points(mask)
        enough = plausible & (tf.size(x) >= config.min_edge_points)

        def fit():
            hs, ws = _shape2(small)
            short_side = tf.cast(tf.minimum(hs, ws), _F64)
            longest = tf.cast(tf.maximum(tf.maximum(hs, ws), 3), _F64)  # max(small.shape)
            min_r = config.min_radius_fraction * short_side
            max_r = config.max_radius_fraction * short_side
            cx, cy, r, share = _robust_circle(x, y, config.circle_tolerance * longest, min_r,
                                              max_r, config)
            ok = ((share >= config.min_circle_inliers) & (min_r <= r) & (r <= max_r)
                  & _filled_disc(mask, cx, cy, r, config))
            kf = tf.cast(k, _F64)
            return ok, (cx + 0.5) * kf - 0.5, cy * kf + tf.cast((k - 1) // 2, _F64), r * kf

        return tf.cond(enough, fit, _not_found)

    big_enough = (tf.minimum(h, w) >= 8) & (h // k >= 1) & (w // k >= 1)
    return tf.cond(big_enough, detect, _not_found)


def _fundus_mask(small: tf.Tensor, config: PreprocessConfig):
    """``fundus._fundus_mask``: (mask, plausible); ``plausible`` is False where it raises."""
    # cv2.transform(small, ones((1, 3))) keeps uint8 depth: the channel sum saturates.
    brightness = tf.minimum(tf.reduce_sum(tf.cast(small, _I32), axis=2), 255)
    brightness = _median5(brightness)
    ordered = tf.sort(tf.reshape(brightness, [-1]))
    background = _percentile(ordered, config.background_percentile)
    foreground = _percentile(ordered, config.foreground_percentile)
    contrast = foreground - background
    threshold = background + tf.maximum(
        tf.constant(config.min_foreground_contrast, _F64),
        config.foreground_fraction * contrast)
    mask = tf.cast(brightness, _F64) > threshold
    mask, any_component = _largest_component(mask)
    plausible = ((contrast >= config.min_foreground_contrast)
                 & (background <= config.max_frame_brightness) & any_component)
    return mask, plausible


def _filled_disc(mask: tf.Tensor, cx, cy, r, config: PreprocessConfig) -> tf.Tensor:
    """``fundus._check_filled_disc`` as a bool: mostly bright inside the circle, dark outside."""
    hs, ws = _shape2(mask)
    # cv2.circle(FILLED) at the rounded centre and radius fills dx² + dy² ≤ r².
    bound = tf.constant(1e6, _F64)
    icx = _round_to_int(tf.clip_by_value(cx, -bound, bound), _I64)
    icy = _round_to_int(tf.clip_by_value(cy, -bound, bound), _I64)
    ir = _round_to_int(tf.clip_by_value(r, 0.0, bound), _I64)
    dy = tf.range(tf.cast(hs, _I64))[:, None] - icy
    dx = tf.range(tf.cast(ws, _I64))[None, :] - icx
    inside = dx * dx + dy * dy <= ir * ir

    def share_of(region):
        total = tf.reduce_sum(tf.cast(region, _F64))
        hits = tf.reduce_sum(tf.cast(region & mask, _F64))
        return tf.where(total > 0, hits / tf.maximum(total, 1.0), 0.0)

    return ((share_of(inside) >= config.min_inside_fill)
            & (share_of(~inside) <= config.max_outside_fill))


# ---------------------------------------------------------------------------------------------
# shrink_photograph, crop_to_disc, apply_eq1


def _shrink_photograph(image, cx, cy, r, size: int, config: PreprocessConfig):
    """``fundus.shrink_photograph``: whole-factor area shrink while the disc stays ≥ size."""
    shrink = 2.0 * r / size

    def shrunk():
        k = tf.cast(shrink, _I32)
        f = 1.0 / tf.cast(k, _F64)
        return _area_shrink_u8(image, k), (cx + 0.5) * f - 0.5, (cy + 0.5) * f - 0.5, r * f

    return tf.cond(shrink > config.bilinear_max_shrink, shrunk, lambda: (image, cx, cy, r))


def _disc_box(image, cx, cy, r):
    """``crop_to_disc``'s integer square: (x0, y0, side), and whether it meets the photograph."""
    h, w = _shape2(image)
    side = tf.maximum(1, _round_to_int(2.0 * r))
    x0 = _round_to_int(cx - r)
    y0 = _round_to_int(cy - r)
    meets = (tf.minimum(x0 + side, w) > tf.maximum(x0, 0)) & (
        tf.minimum(y0 + side, h) > tf.maximum(y0, 0))
    return x0, y0, side, meets


def _crop_to_disc(image, x0, y0, side, size: int, config: PreprocessConfig):
    """``fundus.crop_to_disc``: (canvas uint8 (size, size, 3), inside_frame bool (size, size))."""
    h, w = _shape2(image)
    sx0, sy0 = tf.maximum(x0, 0), tf.maximum(y0, 0)
    sx1, sy1 = tf.minimum(x0 + side, w), tf.minimum(y0 + side, h)
    crop = image[sy0:sy1, sx0:sx1]
    crop = tf.pad(crop, [[sy0 - y0, y0 + side - sy1], [sx0 - x0, x0 + side - sx1], [0, 0]])
    canvas = tf.ensure_shape(_resample(crop, size, config), [size, size, 3])
    scale = size / tf.cast(side, _F64)
    edges = tf.range(size + 1, dtype=_F64) / scale
    fx0, fy0 = tf.cast(x0, _F64), tf.cast(y0, _F64)
    cols_ok = (fx0 + edges[:-1] >= 0) & (fx0 + edges[1:] <= tf.cast(w, _F64))
    rows_ok = (fy0 + edges[:-1] >= 0) & (fy0 + edges[1:] <= tf.cast(h, _F64))
    return canvas, rows_ok[:, None] & cols_ok[None, :]


def _circular_mask(size: int, config: PreprocessConfig) -> tf.Tensor:
    """``fundus.circular_mask`` computed in the graph (float64, the same expression)."""
    centre = (size - 1) / 2.0
    offsets = (tf.range(size, dtype=_F64) - centre) ** 2
    radius = config.mask_ratio * size / 2.0
    return offsets[:, None] + offsets[None, :] <= radius * radius


def _gaussian_kernel(sigma: float) -> np.ndarray:
    """``cv2.getGaussianKernel(cvRound(8σ + 1) | 1, σ, CV_32F)``, GaussianBlur's float kernel."""
    ksize = int(np.rint(sigma * 4 * 2 + 1)) | 1
    x = np.arange(ksize, dtype=np.float64) - (ksize - 1) / 2.0
    g = np.exp(-0.5 / (sigma * sigma) * x * x)
    return (g * (1.0 / g.sum())).astype(np.float32)


def _local_average(canvas: tf.Tensor, valid: tf.Tensor, sigma: float,
                   config: PreprocessConfig) -> tf.Tensor:
    """``fundus.local_average`` for a uint8 canvas of static size: float32 (N, N, 3)."""
    h, w = canvas.shape[0], canvas.shape[1]
    reduction = max(1, int(sigma // config.blur_sigma_at_reduced_scale))
    small_w, small_h = max(1, round(w / reduction)), max(1, round(h / reduction))
    weight = tf.cast(valid, _F32)[:, :, None]
    stacked = tf.concat([tf.cast(canvas, _F32) * weight, weight], axis=2)
    if reduction > 1:
        if small_w * reduction == w and small_h * reduction == h:
            stacked = _area_shrink_f32(stacked, reduction)
        else:
            stacked = _area_resize(stacked, small_h, small_w)
    small_sigma = sigma * small_w / w
    kernel = _gaussian_kernel(small_sigma)
    ksize, channels = kernel.size, stacked.shape[2]
    # Separable, rows first as OpenCV; "SAME" pads with zeros (BORDER_CONSTANT).
    blurred = tf.nn.depthwise_conv2d(stacked[None], np.tile(
        kernel.reshape(1, ksize, 1, 1), (1, 1, channels, 1)), [1, 1, 1, 1], "SAME")
    blurred = tf.nn.depthwise_conv2d(blurred, np.tile(
        kernel.reshape(ksize, 1, 1, 1), (1, 1, channels, 1)), [1, 1, 1, 1], "SAME")[0]
    average = blurred[:, :, :3] / tf.maximum(blurred[:, :, 3:], np.float32(1e-6))
    if reduction > 1:
        average = _linear_f32(average, h, w)
    return average


def _apply_eq1(canvas: tf.Tensor, valid: tf.Tensor, config: PreprocessConfig) -> tf.Tensor:
    """``fundus.apply_eq1``: α·I + β·G(ρ)*I + γ, rounded and saturated; γ outside ``valid``."""
    n = canvas.shape[0]
    blurred = _local_average(canvas, valid, fundus.blur_sigma(n, config), config)
    normalized = _saturate_u8(config.alpha * tf.cast(canvas, _F32) + config.beta * blurred
                              + config.gamma)
    return tf.where(valid[:, :, None], normalized, _gamma_image(n, config))


def _gamma_image(size: int, config: PreprocessConfig) -> tf.Tensor:
    """The defined result where there is no retina: every pixel γ, as outside the mask."""
    gamma = min(max(int(round(config.gamma)), 0), 255)
    return tf.fill([size, size, 3], tf.constant(gamma, tf.uint8))


# ---------------------------------------------------------------------------------------------
# The whole pipeline


def _decode_and_find(data: tf.Tensor, is_jpeg: tf.Tensor, bit_depth: tf.Tensor,
                     first: tf.Tensor, full: int, config: PreprocessConfig):
    """load_normalized's decoding: at the coarsest sufficient scale (JPEG reduction ``first``);
    if the disc found there is narrower than ``full``, again at the next finer scale.

    Returns (reduction, decoded image, found, (cx, cy, r) in the decoded image's pixels).
    """
    def body(reduction, _image, _circle, _found, _done):
        image = _decode(data, is_jpeg, bit_depth, reduction)
        found, cx, cy, r = _find_fundus(image, config)
        done = ~found | (2.0 * r >= full) | tf.equal(reduction, 1)
        reduction = tf.where(done, reduction, reduction // 2)
        return reduction, image, tf.stack([cx, cy, r]), found, done

    state = (first, tf.zeros([0, 0, 3], tf.uint8), tf.zeros([3], _F64), tf.constant(False),
             tf.constant(False))
    reduction, image, circle, found, _ = tf.while_loop(
        lambda *s: ~s[-1], body, state,
        shape_invariants=(tf.TensorShape([]), tf.TensorShape([None, None, 3]),
                          tf.TensorShape([3]), tf.TensorShape([]), tf.TensorShape([])),
        maximum_iterations=len(image_io.JPEG_REDUCTION_FLAGS))
    return reduction, image, found, (circle[0], circle[1], circle[2])


@tf.autograph.experimental.do_not_convert
def _preprocess(image_bytes: tf.Tensor, sizes: Sequence[int],
                config: PreprocessConfig = PREPROCESS, with_disc: bool = False) -> Preprocessed:
    """``fundus.load_normalized(bytes, sizes)`` in graph ops, with the found circle.

    Args:
      image_bytes: scalar tf.string, an encoded JPEG or PNG photograph.
      sizes: output sides (Python ints ≥ 8); Eq. 1 is computed once at
        ``fundus.normalization_size(sizes)`` and every size resampled from it.
      config: preprocessing constants.
      with_disc: also return the disc's square before Eq. 1 (``Preprocessed.disc``); the
        normalised images are the same either way.

    Returns:
      A ``Preprocessed``; its circle is in the original photograph's pixels (zeros when no
      fundus is found).
    """
    sizes = fundus.check_sizes(sizes)
    full = fundus.normalization_size(sizes, config)
    data = tf.convert_to_tensor(image_bytes, tf.string)
    data, is_jpeg, width, height, bit_depth = _check_bytes(data, config)
    first = tf.where(is_jpeg, _jpeg_reduction(width, height, full), 1)
    reduction, image, found, (cx, cy, r) = _decode_and_find(
        data, is_jpeg, bit_depth, first, full, config)

    small, scx, scy, sr = _shrink_photograph(image, cx, cy, r, full, config)
    x0, y0, side, meets = _disc_box(small, scx, scy, sr)
    found = found & meets

    def normalize():
        canvas, inside_frame = _crop_to_disc(small, x0, y0, side, full, config)
        normalized = _apply_eq1(canvas, inside_frame & _circular_mask(full, config), config)
        disc = (canvas, inside_frame) if with_disc else ()
        return tuple(normalized if s == full else _resample(normalized, s, config)
                     for s in sizes) + disc

    def blank():
        disc = ((tf.zeros([full, full, 3], tf.uint8), tf.zeros([full, full], tf.bool))
                if with_disc else ())
        return tuple(_gamma_image(s, config) for s in sizes) + disc

    outputs = tf.cond(found, normalize, blank)
    images = {s: tf.ensure_shape(out, [s, s, 3]) for s, out in zip(sizes, outputs)}
    disc = disc_inside = None
    if with_disc:
        disc = tf.ensure_shape(outputs[len(sizes)], [full, full, 3])
        disc_inside = tf.ensure_shape(outputs[len(sizes) + 1], [full, full])
    # NormalizedPhotograph.circle: scaled by original width / decoded width.
    factor = tf.cast(width, _F64) / tf.cast(tf.shape(image)[1], _F64)
    original = tf.stack([(cx + 0.5) * factor - 0.5, (cy + 0.5) * factor - 0.5, r * factor])
    original = tf.where(found, original, tf.zeros([3], _F64))
    return Preprocessed(images, found, original, reduction, disc, disc_inside)


@functools.lru_cache(maxsize=16)
def _compiled(sizes: Tuple[int, ...], config: PreprocessConfig, with_disc: bool = False):
    """A traced ``_preprocess`` for eager callers (one graph per sizes and config)."""

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)], autograph=False)
    def run(image_bytes):
        result = _preprocess(image_bytes, sizes, config, with_disc)
        return ({str(s): image for s, image in result.images.items()}, result.found,
                result.circle, result.reduction, result.disc, result.disc_inside)

    return run


@tf.autograph.experimental.do_not_convert
def preprocess_details(image_bytes, sizes: Sequence[int],
                       config: PreprocessConfig = PREPROCESS,
                       with_disc: bool = False) -> Preprocessed:
    """``_preprocess``, usable eagerly too (then through a cached tf.function)."""
    sizes = fundus.check_sizes(sizes)
    if not tf.executing_eagerly():
        return _preprocess(image_bytes, sizes, config, with_disc)
    images, found, circle, reduction, disc, inside = _compiled(sizes, config, with_disc)(
        tf.convert_to_tensor(image_bytes, tf.string))
    return Preprocessed({s: images[str(s)] for s in sizes}, found, circle, reduction, disc,
                        inside)


@tf.autograph.experimental.do_not_convert
def preprocess_image_bytes(image_bytes: tf.Tensor, size: int,
                           config: PreprocessConfig = PREPROCESS) -> Tuple[tf.Tensor, tf.Tensor]:
    """One encoded photograph → its normalised fundus, inside the TF graph.

    The same picture as ``fundus.load_normalized(image_bytes, (size,)).images[size]``: decode
    (JPEG at the coarsest sufficient DCT scale), find the field of view, crop the disc, apply
    Eq. 1 at the normalisation size (720) and resample to ``size``.

    Args:
      image_bytes: scalar tf.string, a JPEG or PNG photograph.
      size: output side in pixels (a Python int ≥ 8).
      config: preprocessing constants.

    Returns:
      image: (size, size, 3) uint8 RGB.
      found: bool scalar. When False (no fundus in the photograph) ``image`` is the defined
        result every pixel γ (128) — the value Eq. 1's output has outside the disc — instead of
        an error, so that a batch survives one bad photograph.

    Raises (when the graph runs):
      tf.errors.InvalidArgumentError: the bytes are not a JPEG/PNG photograph, its header claims
        more than ``max_image_pixels`` pixels, or it is truncated ("could not be decoded"), or
        the decoder rejects the data.
    """
    result = preprocess_details(image_bytes, (size,), config)
    return result.images[int(size)], result.found


@tf.autograph.experimental.do_not_convert
def preprocess_batch(image_bytes: tf.Tensor, size: int,
                     config: PreprocessConfig = PREPROCESS) -> Tuple[tf.Tensor, tf.Tensor]:
    """A batch of encoded photographs → (images uint8 [B, size, size, 3], found bool [B]).

    ``preprocess_image_bytes`` mapped over the batch (``tf.map_fn``); an empty batch gives
    (0, size, size, 3) and (0,).
    """
    size = fundus.check_sizes((size,))[0]
    image_bytes = tf.convert_to_tensor(image_bytes, tf.string)

    def one(data):
        result = _preprocess(data, (size,), config)
        return result.images[size], result.found

    def in_graph(batch):
        return tf.map_fn(one, batch, fn_output_signature=(
            tf.TensorSpec([size, size, 3], tf.uint8), tf.TensorSpec([], tf.bool)))

    run = _compiled_batch(size, config) if tf.executing_eagerly() else in_graph
    images, found = run(image_bytes)
    return tf.ensure_shape(images, [None, size, size, 3]), tf.ensure_shape(found, [None])


@functools.lru_cache(maxsize=16)
def _compiled_batch(size: int, config: PreprocessConfig):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)
    def run(batch):
        return preprocess_batch(batch, size, config)

    return run
