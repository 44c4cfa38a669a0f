"""Synthetic photographs degraded in known ways: a labelled set to fit an assessor on without
real photographs (tests, the demo) and the twins that check any assessor (a clean photograph and
the same one degraded).

The degradations are what makes a real photograph ungradable, applied to a clean synthetic
photograph (``data.synthetic``) whose field of view is known: *defocus* (a Gaussian blur, σ a
fraction of the disc radius), *under-* and *over-exposure* (a gain on the light, clipped), and
a *dark crescent* at the rim (a shadow growing towards one side, as a lid, lashes or a
misaligned pupil cast). Each has a mild range (labelled Usable) and a strong one (Reject);
clean photographs are Good.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Tuple

import cv2
import numpy as np

from m2cnn_tf.data import synthetic
from m2cnn_tf.preprocess import image_io
from m2cnn_tf.config import GOOD, REJECT, USABLE

KINDS = ("defocus", "underexposure", "overexposure", "crescent")


@dataclasses.dataclass(frozen=True)
class DegradationConfig:
    """Strength ranges (low, high) of each degradation: mild → Usable, strong → Reject."""

    # Defocus: Gaussian σ as a fraction of the disc radius (0.004 R ≈ 1.7 px on a 1024-px
    # photograph: vessels soften; 0.012 R ≈ 5 px: small vessels are gone).
    defocus: Dict[str, Tuple[float, float]] = dataclasses.field(default_factory=lambda: {
        "mild": (0.003, 0.005), "strong": (0.009, 0.016)})
    # Under-exposure: a gain on the whole photograph.
    underexposure: Dict[str, Tuple[float, float]] = dataclasses.field(default_factory=lambda: {
        "mild": (0.45, 0.6), "strong": (0.08, 0.22)})
    # Over-exposure: a gain, then clipping at 255 (washed out).
    overexposure: Dict[str, Tuple[float, float]] = dataclasses.field(default_factory=lambda: {
        "mild": (1.5, 1.8), "strong": (2.6, 3.6)})
    # Dark crescent: the share of light taken away at the rim on the dark side.
    crescent: Dict[str, Tuple[float, float]] = dataclasses.field(default_factory=lambda: {
        "mild": (0.35, 0.5), "strong": (0.8, 0.95)})
    # The crescent's shadow grows from this fraction of the radius (along its direction) to
    # the rim.
    crescent_start: float = 0.2
    photograph_width: int = 1024  # as the EyePACS copies the assessor is usually fitted on
    jpeg_quality: int = 92  # the degraded photograph is re-encoded, as a camera would

    def strength(self, kind: str, level: str) -> Tuple[float, float]:
        if kind not in KINDS:
            raise ValueError(f"unknown degradation {kind!r}; expected one of {', '.join(KINDS)}")
        return getattr(self, kind)[level]


DEGRADATION = DegradationConfig()


def degrade(image: np.ndarray, disc: Tuple[float, float, float], kind: str, strength: float,
            angle: float = 0.0, config: DegradationConfig = DEGRADATION) -> np.ndarray:
    """One degradation of an RGB uint8 photograph whose field of view is ``disc`` (cx, cy, r).

    Args:
      kind: one of ``KINDS``; strength: its amount (``DegradationConfig``'s units);
      angle: the crescent's direction, radians (0 = towards +x).

    Returns:
      The degraded photograph, RGB uint8 of the same size.
    """
    cx, cy, radius = disc
    pixels = image.astype(np.float32)
    if kind == "defocus":
        pixels = cv2.GaussianBlur(pixels, (0, 0), strength * radius)
    elif kind in ("underexposure", "overexposure"):
        pixels = pixels * strength
    elif kind == "crescent":
        rows, cols = np.mgrid[:image.shape[0], :image.shape[1]].astype(np.float32)
        along = ((cols - cx) * math.cos(angle) + (rows - cy) * math.sin(angle)) / radius
        start = config.crescent_start
        shadow = np.clip((along - start) / (1.0 - start), 0.0, 1.0) ** 2
        pixels = pixels * (1.0 - strength * shadow)[:, :, None]
    else:
        raise ValueError(f"unknown degradation {kind!r}; expected one of {', '.join(KINDS)}")
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


def encode(image: np.ndarray, config: DegradationConfig = DEGRADATION) -> bytes:
    """RGB uint8 → JPEG bytes, as the photograph reaches the assessor."""
    return image_io.encode_jpeg(image, config.jpeg_quality)


def clean_photograph(seed: int, config: DegradationConfig = DEGRADATION):
    """A clean synthetic photograph (grade drawn from the seed): (RGB uint8, disc)."""
    fundus = synthetic.make_fundus(seed % len(synthetic.GRADES), seed, config.photograph_width)
    return fundus.image, fundus.disc


def training_set(num_retinas: int, seed: int, config: DegradationConfig = DEGRADATION
                 ) -> Tuple[List[bytes], np.ndarray, np.ndarray]:
    """Labelled synthetic photographs: each retina clean (Good), mildly degraded (Usable) and
    strongly degraded (Reject), the degradation and its strength drawn at random.

    Returns:
      (encoded photographs, quality (3·num_retinas,), patient ids — one per retina, so a
      retina's three photographs stay in one fold).
    """
    rng = np.random.default_rng(seed)
    encoded, quality, patients = [], [], []
    for i in range(num_retinas):
        image, disc = clean_photograph(int(rng.integers(0, 2**31 - 1)), config)
        versions = [(image, GOOD)]
        for level, label in (("mild", USABLE), ("strong", REJECT)):
            kind = KINDS[int(rng.integers(len(KINDS)))]
            strength = float(rng.uniform(*config.strength(kind, level)))
            versions.append((degrade(image, disc, kind, strength,
                                     float(rng.uniform(0, 2 * math.pi)), config), label))
        for picture, label in versions:
            encoded.append(encode(picture, config))
            quality.append(label)
            patients.append(f"synthetic_{seed}_{i}")
    return encoded, np.asarray(quality, np.int64), np.asarray(patients, str)


def twins(seeds, kinds=KINDS, level: str = "strong", config: DegradationConfig = DEGRADATION
          ) -> List[Tuple[str, bytes, bytes]]:
    """(kind, clean photograph, the same degraded) for every seed and kind: the degradation at
    the middle of its ``level`` range, the crescent's side drawn from the seed."""
    pairs = []
    for seed in seeds:
        image, disc = clean_photograph(int(seed), config)
        clean = encode(image, config)
        angle = float(np.random.default_rng(int(seed)).uniform(0, 2 * math.pi))
        for kind in kinds:
            strength = float(np.mean(config.strength(kind, level)))
            pairs.append((kind, clean, encode(degrade(image, disc, kind, strength, angle,
                                                      config), config)))
    return pairs
