"""Fundus preprocessing (paper section II-A): find the disc, crop it square, apply Eq. 1.

The paper "firstly remove[s] the extra black pixels from the image and then perform[s] the image
normalization" ``I_c = α·I + β·G(ρ)*I + γ`` (Eq. 1). Here that is four small steps:

1. ``find_fundus``: locate the circular field of view — threshold the brightest channel against
   the black frame, fit a circle to the disc's edge points that are not on the photograph's
   border (EyePACS discs are often cut off at the top and bottom, so the vertical extent is not
   the diameter).
2. ``crop_to_disc``: cut a square of side 2·radius around the disc centre (parts outside the
   photograph are black and marked invalid) and scale it to the normalisation size, so the disc
   always has the same radius.
3. ``apply_eq1``: Eq. 1 with the blur computed only over valid pixels (normalised convolution),
   so the frame and the clipped top/bottom draw no halo; outside the circular mask the result is
   γ, as in Graham's preprocessing.
4. ``normalize_fundus_multi``: Eq. 1 once at the largest size, every smaller size resampled from
   it (224, 448 and 720 are one picture at three scales).

NumPy and OpenCV only; images are RGB uint8 in and out.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Dict, Iterable, Optional, Sequence, Tuple

import cv2
import numpy as np

from m2cnn_tf.preprocess import image_io
from m2cnn_tf.config import PREPROCESS, PreprocessConfig


@functools.lru_cache(maxsize=4)
def ransac_fractions(trials: int) -> np.ndarray:
    """Where in the edge-point list each RANSAC trial picks its 3 points.

    A fixed low-discrepancy sequence (Roberts' R3) instead of a random generator, so the same
    photograph always gives the same circle, here and in the TensorFlow serving graph, whatever
    NumPy version either runs.

    Args:
      trials: how many trials (``PreprocessConfig.ransac_trials``).

    Returns:
      (trials, 3) float64 in [0, 1), read-only (it is cached).
    """
    phi = 1.2207440846057596  # the positive root of x⁴ = x + 1 (R3 in three dimensions)
    alpha = np.array([1 / phi, 1 / phi ** 2, 1 / phi ** 3])
    fractions = np.mod(0.5 + np.arange(1, trials + 1)[:, None] * alpha[None, :], 1.0)
    fractions.flags.writeable = False
    return fractions


class NoFundusError(ValueError):
    """The photograph shows no circular fundus field of view; the message says what was seen."""


@dataclasses.dataclass(frozen=True)
class FundusCircle:
    """The field of view: centre and radius in pixels of the image it was found on.

    Coordinates are pixel indices (the centre of the top-left pixel is (0, 0)), as OpenCV uses.
    """

    cx: float
    cy: float
    radius: float

    def scaled(self, factor: float) -> "FundusCircle":
        """The same circle on a copy of the image resized by ``factor``."""
        return FundusCircle(
            (self.cx + 0.5) * factor - 0.5, (self.cy + 0.5) * factor - 0.5, self.radius * factor
        )


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise TypeError(f"expected an RGB uint8 numpy array, got {type(image).__name__} "
                        f"{getattr(image, 'dtype', '')}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
    if min(image.shape[:2]) < 8:
        raise NoFundusError(f"image of {image.shape[1]}x{image.shape[0]} pixels is too small "
                            "to hold a fundus photograph")


def _fit_circle(x: np.ndarray, y: np.ndarray) -> Tuple[float, float, float]:
    """Algebraic least-squares circle (Kåsa): x² + y² + D·x + E·y + F = 0."""
    a = np.stack([x, y, np.ones_like(x)], axis=1)
    b = -(x * x + y * y)
    (d, e, f), *_ = np.linalg.lstsq(a, b, rcond=None)
    cx, cy = -d / 2.0, -e / 2.0
    r2 = cx * cx + cy * cy - f
    return cx, cy, math.sqrt(max(r2, 0.0))


def _circles_through(p1: np.ndarray, p2: np.ndarray, p3: np.ndarray):
    """Circumcircles of many point triples at once: (cx, cy, r), NaN for collinear triples."""
    ax, ay = p1[:, 0], p1[:, 1]
    bx, by = p2[:, 0], p2[:, 1]
    qx, qy = p3[:, 0], p3[:, 1]
    d = 2.0 * (ax * (by - qy) + bx * (qy - ay) + qx * (ay - by))
    with np.errstate(divide="ignore", invalid="ignore"):
        a2, b2, q2 = ax * ax + ay * ay, bx * bx + by * by, qx * qx + qy * qy
        cx = (a2 * (by - qy) + b2 * (qy - ay) + q2 * (ay - by)) / d
        cy = (a2 * (qx - bx) + b2 * (ax - qx) + q2 * (bx - ax)) / d
    return cx, cy, np.hypot(ax - cx, ay - cy)


def _robust_circle(x: np.ndarray, y: np.ndarray, tolerance: float, min_radius: float,
                   max_radius: float, config: PreprocessConfig):
    """RANSAC then least squares: the circle most edge points lie on, and their share.

    Straight cuts (a photograph's frame, a damaged half image) and dark bays in the rim give
    edge points off the circle; 3-point circles scored by their inliers ignore them.
    """
    points = np.stack([x, y], axis=1)
    fractions = ransac_fractions(config.ransac_trials)
    picks = np.minimum((fractions * len(points)).astype(np.int64), len(points) - 1)
    cx, cy, r = _circles_through(points[picks[:, 0]], points[picks[:, 1]], points[picks[:, 2]])
    ok = np.isfinite(r) & (r >= min_radius) & (r <= max_radius)
    cx, cy, r = cx[ok], cy[ok], r[ok]
    if r.size == 0:
        return 0.0, 0.0, 0.0, 0.0
    step = max(1, len(x) // config.ransac_scoring_points)
    sx, sy = x[::step], y[::step]
    residual = np.abs(np.hypot(sx[None, :] - cx[:, None], sy[None, :] - cy[:, None]) - r[:, None])
    best = int(np.argmax((residual <= tolerance).sum(axis=1)))
    keep = np.abs(np.hypot(x - cx[best], y - cy[best]) - r[best]) <= tolerance
    for _ in range(2):  # refine on the inliers, re-select them with the refined circle
        fx, fy, fr = _fit_circle(x[keep], y[keep])
        keep = np.abs(np.hypot(x - fx, y - fy) - fr) <= tolerance
        if keep.sum() < 3:
            break
    return fx, fy, fr, float(keep.mean())


def _percentiles_u8(values: np.ndarray, percents: Sequence[float]) -> Tuple[float, ...]:
    """``np.percentile(values, p)`` (linear interpolation) of a uint8 array, for each p.

    Read from the cumulative histogram instead of a partial sort: the same numbers as NumPy,
    bit for bit (the same virtual index and interpolation), about 8× faster.
    """
    cumulative = np.cumsum(np.bincount(values.ravel(), minlength=256))
    last = values.size - 1
    results = []
    for p in percents:
        virtual = last * np.true_divide(p, 100)
        previous = np.floor(virtual)
        below = last if virtual >= last else int(previous)
        above = last if virtual >= last else below + 1
        gamma = virtual - previous
        a, b = (float(v) for v in np.searchsorted(cumulative, (below, above), side="right"))
        diff = b - a
        results.append(float(b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma))
    return tuple(results)


def _edge_points(mask: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Boundary points of the field of view that are not cut by the photograph's border.

    For every row the left- and rightmost foreground pixel, for every column the top- and
    bottommost, each taken at the pixel edge (±0.5) and kept only when it is not on the border.
    """
    h, w = mask.shape
    xs, ys = [], []
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size:
        sub = mask[rows]
        left = sub.argmax(axis=1)
        right = w - 1 - sub[:, ::-1].argmax(axis=1)
        keep = left > 0
        xs.append(left[keep] - 0.5)
        ys.append(rows[keep].astype(np.float64))
        keep = right < w - 1
        xs.append(right[keep] + 0.5)
        ys.append(rows[keep].astype(np.float64))
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size:
        sub = mask[:, cols]
        top = sub.argmax(axis=0)
        bottom = h - 1 - sub[::-1, :].argmax(axis=0)
        keep = top > 0
        xs.append(cols[keep].astype(np.float64))
        ys.append(top[keep] - 0.5)
        keep = bottom < h - 1
        xs.append(cols[keep].astype(np.float64))
        ys.append(bottom[keep] + 0.5)
    if not xs:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(xs).astype(np.float64), np.concatenate(ys).astype(np.float64)


def find_fundus(image: np.ndarray, config: PreprocessConfig = PREPROCESS) -> FundusCircle:
    """Locates the circular field of view of a fundus photograph.

    Works on dark, over-exposed and top/bottom-clipped photographs: the threshold adapts to the
    photograph's own background and foreground levels, and only edge points away from the
    photograph's border enter the circle fit.

    Args:
      image: (H, W, 3) RGB uint8 photograph.
      config: preprocessing constants (detection size, thresholds, RANSAC, acceptance limits).

    Returns:
      The disc as a FundusCircle in ``image``'s pixel coordinates.

    Raises:
      NoFundusError: no fundus (all black, blank, noise, ...); the message says what was found.
    """
    _check_image(image)
    h, w = image.shape[:2]
    small, k, row_offset = _detection_picture(image, config)
    mask = _fundus_mask(small, config)
    # Only the outline counts: edge points are each row's and column's outermost pixels, so
    # dark holes (macula, haemorrhages) do not matter, and dark bays reaching the rim give
    # points off the circle, which the robust fit ignores.
    x, y = _edge_points(mask)
    if x.size < config.min_edge_points:
        raise NoFundusError(
            "no fundus found: the bright region has no dark border to fit a circle to "
            "(expected a circular field of view on a black frame)")
    short_side = min(small.shape[:2])
    min_radius = config.min_radius_fraction * short_side
    max_radius = config.max_radius_fraction * short_side
    cx, cy, r, inliers = _robust_circle(x, y, config.circle_tolerance * max(small.shape),
                                        min_radius, max_radius, config)
    if inliers < config.min_circle_inliers:
        raise NoFundusError(
            f"no fundus found: the bright region's border is not circular (only "
            f"{inliers:.0%} of its edge points lie on the best circle)")
    if not (min_radius <= r <= max_radius):
        raise NoFundusError(
            f"no fundus found: fitted circle radius {r * k:.0f} px is implausible for a "
            f"{w}x{h} photograph (expected {config.min_radius_fraction:g}–"
            f"{config.max_radius_fraction:g} × the shorter side)")
    _check_filled_disc(mask, cx, cy, r, config)
    # Small column x averages source columns kx … kx + k − 1; small row y is source row
    # ky + row_offset.
    return FundusCircle(cx=float((cx + 0.5) * k - 0.5), cy=float(cy * k + row_offset),
                        radius=float(r * k))


def _detection_picture(image: np.ndarray, config: PreprocessConfig):
    """The photograph shrunk by a whole factor k to about ``detection_size``.

    One row from each band of k rows (its middle one), averaged along it over k columns
    (OpenCV's fast exact area path). A full k × k average reads every pixel of a camera-sized
    photograph for a picture whose rim is then median-filtered anyway; one row in k reads 1/k
    of them.

    Returns:
      (small, k, row_offset): the picture, the factor, and which row of each band it kept.
    """
    h, w = image.shape[:2]
    k = max(1, math.ceil(max(h, w) / config.detection_size))
    row_offset = (k - 1) // 2
    if k == 1:
        return image, k, row_offset
    small = cv2.resize(image[row_offset: h // k * k: k, : w // k * k], (w // k, h // k),
                       interpolation=cv2.INTER_AREA)
    return small, k, row_offset


def _fundus_mask(small: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """(h, w) bool: the largest region brighter than the frame, in the detection picture.

    Raises:
      NoFundusError: the picture is nearly uniform, has no dark frame, or nothing is brighter
        than its background.
    """
    # Brightness = R + G + B saturated at 255 (cv2.transform keeps uint8): dark photographs keep
    # more signal than in any one channel, and the saturation keeps over-exposed ones from
    # pushing the threshold up. graph_preprocess reproduces exactly this.
    brightness = cv2.transform(small, np.ones((1, 3), np.float32))
    # A median removes JPEG noise and specks without moving the step at the rim.
    brightness = cv2.medianBlur(brightness, 5)
    background, foreground = _percentiles_u8(
        brightness, (config.background_percentile, config.foreground_percentile))
    contrast = foreground - background
    if contrast < config.min_foreground_contrast:
        raise NoFundusError(
            f"no fundus found: the image is nearly uniform (channel-sum brightness "
            f"{background:.0f}–{foreground:.0f} of 255); expected a bright circular retina on a "
            "dark frame")
    if background > config.max_frame_brightness:
        raise NoFundusError(
            f"no fundus found: the photograph has no dark frame (its darkest "
            f"{config.background_percentile:g} % has channel-sum brightness {background:.0f}, "
            f"over PreprocessConfig.max_frame_brightness={config.max_frame_brightness:g}); "
            "expected a circular retina on a black frame")
    threshold = background + max(config.min_foreground_contrast,
                                 config.foreground_fraction * contrast)
    mask = (brightness > threshold).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count < 2:
        raise NoFundusError("no fundus found: nothing brighter than the background")
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == largest


def _check_filled_disc(mask: np.ndarray, cx: float, cy: float, r: float,
                       config: PreprocessConfig) -> None:
    """Raises NoFundusError unless the circle is mostly bright inside and mostly dark outside."""
    inside = np.zeros(mask.shape, np.uint8)
    cv2.circle(inside, (int(round(cx)), int(round(cy))), int(round(r)), 1, thickness=cv2.FILLED)
    inside = inside.astype(bool)
    inside_fill = float(mask[inside].mean()) if inside.any() else 0.0
    outside_fill = float(mask[~inside].mean()) if (~inside).any() else 0.0
    if inside_fill < config.min_inside_fill or outside_fill > config.max_outside_fill:
        raise NoFundusError(
            f"no fundus found: the bright region is not a filled disc ({inside_fill:.0%} of the "
            f"fitted circle is bright, {outside_fill:.0%} of the outside is)")


def resample(image: np.ndarray, size: int, config: PreprocessConfig = PREPROCESS) -> np.ndarray:
    """Square image → (size, size), fast and without aliasing.

    Shrinking by at most ``bilinear_max_shrink`` is bilinear; by more, the image is first
    resampled to twice ``size`` (by this same rule) and then halved by the exact 2×2 mean
    (OpenCV's fast path), so 720 → 224 is 720 → 448 → 224. See the config for why. Depends only
    on (image, size), so a size is the same whichever others are asked.
    """
    return _resample_via(image, size, {}, config)


def _resample_via(image: np.ndarray, size: int, done: Dict[int, np.ndarray],
                  config: PreprocessConfig) -> np.ndarray:
    """``resample``, reusing (and filling) ``done``: {size: image resampled to it}."""
    if size not in done:
        if image.shape[0] / size > config.bilinear_max_shrink:
            double = _resample_via(image, 2 * size, done, config)
            done[size] = cv2.resize(double, (size, size), interpolation=cv2.INTER_AREA)
        else:
            done[size] = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
    return done[size]


def shrink_photograph(image: np.ndarray, circle: FundusCircle, size: int,
                      config: PreprocessConfig = PREPROCESS) -> Tuple[np.ndarray, FundusCircle]:
    """Area-averages a photograph by a whole factor while its disc stays ≥ ``size``/2× across.

    Used before cropping, so that the crop is then scaled by at most ``bilinear_max_shrink``.
    The last (k − 1) rows and columns of the frame are dropped to make the factor exact; the
    circle is mapped exactly.
    """
    shrink = 2 * circle.radius / size
    if shrink <= config.bilinear_max_shrink:
        return image, circle
    k = int(shrink)  # the disc stays at least ``size`` across; what is left is a shrink < 2
    h, w = image.shape[:2]
    small = cv2.resize(image[: h // k * k, : w // k * k], (w // k, h // k),
                       interpolation=cv2.INTER_AREA)
    return small, circle.scaled(1.0 / k)


def crop_to_disc(
    image: np.ndarray, circle: FundusCircle, size: int, config: PreprocessConfig = PREPROCESS
) -> Tuple[np.ndarray, np.ndarray]:
    """Cuts the square around the disc and scales it so the disc's diameter is ``size``.

    Args:
      image: (H, W, 3) RGB uint8 photograph.
      circle: its field of view (``find_fundus``).
      size: output side in pixels.

    Returns:
      canvas: (size, size, 3) uint8, the disc centred, black where the photograph ended.
      inside_frame: (size, size) bool, True where the canvas pixel lies wholly inside the
        photograph (the clipped top and bottom of a disc are False).
    """
    h, w = image.shape[:2]
    side = max(1, int(round(2 * circle.radius)))
    x0 = int(round(circle.cx - circle.radius))
    y0 = int(round(circle.cy - circle.radius))
    # The part of the square inside the photograph, padded with black where it is not.
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + side, w), min(y0 + side, h)
    if sx1 <= sx0 or sy1 <= sy0:
        raise NoFundusError(f"fundus circle {circle} lies outside the {w}x{h} photograph")
    crop = image[sy0:sy1, sx0:sx1]
    crop = cv2.copyMakeBorder(crop, sy0 - y0, y0 + side - sy1, sx0 - x0, x0 + side - sx1,
                              cv2.BORDER_CONSTANT, value=(0, 0, 0))
    canvas = resample(crop, size, config)
    # Canvas pixel i covers source [x0 + i/s, x0 + (i+1)/s) (pixel-edge coordinates).
    scale = size / side
    edges = np.arange(size + 1) / scale
    cols_ok = (x0 + edges[:-1] >= 0) & (x0 + edges[1:] <= w)
    rows_ok = (y0 + edges[:-1] >= 0) & (y0 + edges[1:] <= h)
    return canvas, rows_ok[:, None] & cols_ok[None, :]


def circular_mask(size: int, config: PreprocessConfig = PREPROCESS) -> np.ndarray:
    """(size, size) bool: the centred circle of radius ``mask_ratio`` × size/2 (Graham's mask)."""
    return _circular_mask(int(size), float(config.mask_ratio)).copy()


@functools.lru_cache(maxsize=16)
def _circular_mask(size: int, mask_ratio: float) -> np.ndarray:
    centre = (size - 1) / 2.0
    offsets = (np.arange(size) - centre) ** 2
    radius = mask_ratio * size / 2.0
    return offsets[:, None] + offsets[None, :] <= radius * radius


def blur_sigma(size: int, config: PreprocessConfig = PREPROCESS) -> float:
    """σ of G(ρ) in pixels for a canvas of side ``size`` (disc radius size/2).

    ρ = 10 px holds at a disc radius of ``rho_reference_radius`` = 300 px (Graham's scale), so
    σ = ρ · (size / 2) / 300: 12 px at 720, 7.5 at 448, 3.7 at 224.
    """
    return config.rho * (size / 2.0) / config.rho_reference_radius


def local_average(
    image: np.ndarray, valid: np.ndarray, sigma: float, config: PreprocessConfig = PREPROCESS
) -> np.ndarray:
    """G(σ) * image over valid pixels only (normalised convolution).

    ``sum G·I·valid / sum G·valid``: near the mask edge and the clipped top/bottom the average
    is taken over the retina alone instead of mixing in black, so Eq. 1 draws no halo there.
    The blur is computed on a copy shrunk until σ is ``blur_sigma_at_reduced_scale`` pixels
    (a Gaussian this wide carries nothing the shrink removes) and upsampled back.

    Args:
      image: (H, W, 3) uint8, float32 or float64.
      valid: (H, W) bool.
      sigma: Gaussian σ in pixels of ``image``.
      config: preprocessing constants.

    Returns:
      (H, W, 3) float32 (float64 for a float64 image); meaningless where no valid pixel is
      within a few σ.
    """
    dtype = np.float64 if image.dtype == np.float64 else np.float32
    h, w = valid.shape
    reduction = max(1, int(sigma // config.blur_sigma_at_reduced_scale))
    small_size = (max(1, round(w / reduction)), max(1, round(h / reduction)))
    if image.dtype == np.uint8:
        masked = cv2.bitwise_and(image, image, mask=valid.view(np.uint8)).astype(dtype)
    else:
        masked = image * valid[:, :, None]
    weight = valid.astype(dtype)
    if reduction > 1:
        masked = _area_shrink(masked, reduction, small_size, image.dtype == np.uint8)
        weight = _area_shrink(weight, reduction, small_size, True)
    small_sigma = sigma * masked.shape[1] / w

    def blur(x):
        return cv2.GaussianBlur(x, (0, 0), sigmaX=small_sigma, sigmaY=small_sigma,
                                borderType=cv2.BORDER_CONSTANT)

    # Divide before upsampling: every small pixel within the blur's reach of a valid pixel has a
    # positive weight, and bilinear upsampling of a valid pixel only reads such neighbours.
    # (Colour and weight are blurred apart: channel by channel the same sums as one 4-channel
    # blur, without interleaving them.)
    average = blur(masked) / np.maximum(blur(weight), np.asarray(1e-6, dtype))[:, :, None]
    if reduction > 1:
        average = cv2.resize(average, (w, h), interpolation=cv2.INTER_LINEAR)
    return average


def _area_shrink(image: np.ndarray, k: int, small_size: Tuple[int, int],
                 integer_valued: bool) -> np.ndarray:
    """``cv2.resize(image, small_size, INTER_AREA)`` of a float image, by whole factor k.

    For an image holding integers (or 0/1 weights) and k a power of two, halving k times gives
    the same numbers — every partial mean of at most 255-valued integers is exact in float32 —
    and OpenCV's exact-2× path is about twice as fast as its k × k one.
    """
    h, w = image.shape[:2]
    if integer_valued and k & (k - 1) == 0 and (small_size[0] * k, small_size[1] * k) == (w, h):
        while k > 1:
            w, h, k = w // 2, h // 2, k // 2
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)  # the 2×2 mean
        return image
    return cv2.resize(image, small_size, interpolation=cv2.INTER_AREA)


def apply_eq1(
    canvas: np.ndarray, valid: np.ndarray, config: PreprocessConfig = PREPROCESS
) -> np.ndarray:
    """Eq. 1, ``α·I + β·G(ρ)*I + γ``, on a disc canvas; γ outside ``valid``.

    Args:
      canvas: (N, N, 3) uint8, the disc centred with radius N/2 (``crop_to_disc``).
      valid: (N, N) bool, retina pixels to keep (inside the frame and the circular mask).
      config: α, β, ρ, γ.

    Returns:
      (N, N, 3) uint8: rounded and clipped to 0–255.
    """
    blurred = local_average(canvas, valid, blur_sigma(canvas.shape[0], config), config)
    # addWeighted computes α·I + β·B + γ in float, then rounds and saturates to uint8.
    # A uint8 canvas goes in as it is: OpenCV widens it to float32 itself (exactly), saving a
    # converted copy.
    image = canvas if canvas.dtype == np.uint8 else canvas.astype(np.float32)
    normalized = cv2.addWeighted(image, config.alpha, blurred, config.beta, config.gamma,
                                 dtype=cv2.CV_8U)
    out = np.full_like(normalized, int(round(config.gamma)))
    cv2.copyTo(normalized, valid.view(np.uint8), out)
    return out


def normalization_size(sizes: Iterable[int], config: PreprocessConfig = PREPROCESS) -> int:
    """The one size at which Eq. 1 is computed for a set of requested sizes."""
    return max(max(sizes), config.normalization_size)


def check_sizes(sizes) -> Tuple[int, ...]:
    """The output sizes as a tuple of ints, or ValueError saying what is allowed.

    Args:
      sizes: one size or a sequence of them (integers ≥ 8).

    Returns:
      A non-empty tuple of Python ints.
    """
    if isinstance(sizes, (int, np.integer)) and not isinstance(sizes, bool):
        sizes = (sizes,)
    try:
        sizes = tuple(sizes)
    except TypeError:
        raise ValueError(f"output sizes must be an integer ≥ 8 or a sequence of them, got "
                         f"{sizes!r}") from None
    if not sizes:
        raise ValueError("at least one output size is required")
    for s in sizes:
        if not isinstance(s, (int, np.integer)) or isinstance(s, bool) or s < 8:
            raise ValueError(f"output sizes must be integers ≥ 8, got {s!r}")
    return tuple(int(s) for s in sizes)


def normalize_fundus_multi(
    image: np.ndarray,
    sizes: Sequence[int],
    circle: Optional[FundusCircle] = None,
    config: PreprocessConfig = PREPROCESS,
) -> Dict[int, np.ndarray]:
    """Eq. 1 once at the normalisation size, then every requested size resampled from it.

    Args:
      image: (H, W, 3) RGB uint8 photograph.
      sizes: output sides, e.g. (224, 448, 720).
      circle: the field of view if already known (else ``find_fundus``).
      config: preprocessing constants.

    Returns:
      {size: (size, size, 3) uint8}.

    Raises:
      NoFundusError: when no fundus is found.
    """
    sizes = check_sizes(sizes)
    if circle is None:
        circle = find_fundus(image, config)
    full = normalization_size(sizes, config)
    image, circle = shrink_photograph(image, circle, full, config)
    canvas, inside_frame = crop_to_disc(image, circle, full, config)
    normalized = apply_eq1(canvas, inside_frame & circular_mask(full, config), config)
    # Largest first, so 224 reuses the 448 it is halved from (the same pixels either way).
    done = {full: normalized}
    for s in sorted(sizes, reverse=True):
        _resample_via(normalized, s, done, config)
    return {s: done[s] for s in sizes}


def normalize_fundus(
    image: np.ndarray,
    size: int,
    circle: Optional[FundusCircle] = None,
    config: PreprocessConfig = PREPROCESS,
) -> np.ndarray:
    """The normalised fundus at one size: (size, size, 3) uint8 (see normalize_fundus_multi)."""
    return normalize_fundus_multi(image, (size,), circle, config)[size]


@dataclasses.dataclass(frozen=True)
class NormalizedPhotograph:
    """A photograph read and normalised at several sizes."""

    images: Dict[int, np.ndarray]  # {size: (size, size, 3) uint8}
    circle: FundusCircle  # field of view in the original photograph's pixels
    original_size: Tuple[int, int]  # (width, height) of the original photograph
    reduction: int  # the JPEG DCT reduction it was decoded at (1 = full size)


def _jpeg_reduction(width: int, height: int, needed: int) -> int:
    """Largest DCT reduction that still leaves the disc at least ``needed`` pixels across.

    The disc's diameter is at least about the shorter side in fundus photographs (EyePACS discs
    are usually clipped top and bottom); the caller checks the found disc and decodes again at
    a finer scale in the rare case this guess was too coarse.
    """
    for reduction in (8, 4, 2):
        if min(width, height) / reduction >= needed:
            return reduction
    return 1


def load_normalized(
    source: image_io.ImageSource,
    sizes: Sequence[int],
    name: Optional[str] = None,
    config: PreprocessConfig = PREPROCESS,
) -> NormalizedPhotograph:
    """Reads a photograph (path or bytes), decoding it once at the smallest sufficient scale.

    Camera JPEGs are often 3–16 MP while the largest output is 720 px: decoding at ½ or ¼ scale
    straight from the DCT is 2–3× faster than a full decode and loses nothing we keep.

    Args:
      source: a file path or the encoded bytes.
      sizes: output sides.
      name: how to name the source in errors (defaults to the path).
      config: preprocessing constants.

    Returns:
      A NormalizedPhotograph.

    Raises:
      image_io.ImageReadError: the file is not a readable photograph.
      NoFundusError: it is a photograph without a fundus; the message names it.
    """
    sizes = check_sizes(sizes)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, name = bytes(source), name or "<bytes>"
    else:
        data, name = image_io.read_file_bytes(source), name or os.fspath(source)
    fmt, width, height = image_io.check_image_bytes(data, name, config)
    needed = normalization_size(sizes, config)
    reduction = _jpeg_reduction(width, height, needed) if fmt == "jpeg" else 1
    while True:
        image = image_io.decode_image(data, name, reduction, config)
        try:
            circle = find_fundus(image, config)
        except NoFundusError as e:
            raise NoFundusError(f"{name}: {e}") from None
        if 2 * circle.radius >= needed or reduction == 1:
            break
        reduction //= 2
    images = normalize_fundus_multi(image, sizes, circle, config)
    factor = width / image.shape[1]
    return NormalizedPhotograph(images, circle.scaled(factor), (width, height), reduction)
