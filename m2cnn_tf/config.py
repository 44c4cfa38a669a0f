"""Every number of the method, named once.

Paper constants (Zhou et al., M²CNN) carry the section they come from; choices the paper leaves
open carry the reason we made them (see ../shared/docs/PAPER_NOTES.md, "Where the paper is
silent"). Code elsewhere in the package reads these objects and never repeats a literal.
"""

from __future__ import annotations

import dataclasses

NUM_GRADES = 5  # ICDR grades 0 (no DR) … 4 (PDR), paper Fig. 1.


@dataclasses.dataclass(frozen=True)
class PreprocessConfig:
    """Fundus preprocessing: border removal, then Eq. 1 ``I_c = α·I + β·G(ρ)*I + γ``."""

    # --- Eq. 1, paper section III-A ("empirically fixed") ---
    alpha: float = 4.0  # weight of the image
    beta: float = -4.0  # weight of the Gaussian-blurred image (subtracts local average colour)
    rho: float = 10.0  # σ of G, in pixels at a disc radius of ``rho_reference_radius`` (below)
    gamma: float = 128.0  # offset; also the value everywhere outside the circular mask

    # --- choices the paper leaves open ---
    # The paper does not say at which image scale ρ = 10 px holds. Eq. 1 is Ben Graham's
    # (paper ref. [6]), who blurred with σ = 10 at a disc radius of 300 px (σ = radius / 30).
    # We keep that ratio, so the filter covers the same part of the retina at every size.
    rho_reference_radius: float = 300.0
    # Graham's circular mask: keep the disc up to 0.9 × its radius, fill the rest with γ; hides
    # the dark rim of the lens and the ring Eq. 1 would draw there.
    mask_ratio: float = 0.9
    # Eq. 1 is computed once, at max(this, the largest requested size); every smaller size is
    # resampled from that one picture, so 224, 448 and 720 are the same image at three scales
    # whichever sizes a caller asks for (training, serving and a one-size build agree).
    normalization_size: int = 720
    # A Gaussian this wide (σ ≈ 12 px at 720) has no energy above a small fraction of the
    # sampling rate, so it is computed on a copy shrunk until σ is about this many pixels and
    # upsampled back; ~20× cheaper than blurring at full size, within a grey level of it.
    blur_sigma_at_reduced_scale: float = 3.0

    # --- locating the field of view (find_fundus) ---
    # The circle is fitted on a copy whose longer side is about this many pixels.
    detection_size: int = 512
    # A pixel belongs to the fundus when its brightest channel exceeds the background level by
    # this fraction of the (foreground − background) contrast...
    foreground_fraction: float = 0.15
    # ...and by at least this many grey levels (JPEG noise in the black frame stays below it).
    min_foreground_contrast: float = 8.0
    # A found circle is accepted only when at least this share of the pixels inside it (and in
    # the frame) are fundus and at most ``max_outside_fill`` of the pixels outside it are.
    min_inside_fill: float = 0.85
    max_outside_fill: float = 0.10
    # ...and its radius lies between these fractions of the photograph's shorter side.
    min_radius_fraction: float = 0.2
    max_radius_fraction: float = 1.5

    # --- image files ---
    # Decompression-bomb guard: a header claiming more pixels than this is refused before any
    # decode allocates memory (the largest EyePACS photographs are 4928 × 3264 ≈ 16 MP).
    max_image_pixels: int = 100_000_000


@dataclasses.dataclass(frozen=True)
class CellRepeats:
    """How many times each normal cell repeats (paper III-A: N1, N2, N3, N4)."""

    block35: int  # N1: Normal Cell-A (Inception-ResNet-A) repeats in BaseNet
    block17: int  # N2: Normal Cell-B (Inception-ResNet-B) repeats in BaseNet
    medial_block8: int  # N3: Normal Cell-C repeats after the first extra Reduction-B
    large_block8: int  # N4: Normal Cell-C repeats after the second extra Reduction-B


# The paper's network and a one-repeat variant with the same stem and reductions (hence the same
# feature-map geometry) for tests and CPU demos.
VARIANTS = {
    "m2cnn": CellRepeats(block35=10, block17=20, medial_block8=10, large_block8=5),
    "tiny": CellRepeats(block35=1, block17=1, medial_block8=1, large_block8=1),
}


@dataclasses.dataclass(frozen=True)
class MultiCellConfig:
    """The Multi-Cell switch on the input side (paper II-C)."""

    medium_min_resolution: int = 350  # < 350 px: BaseNet only ("small")
    large_min_resolution: int = 700  # ≥ 700 px: medial cells + large cells
    min_resolution: int = 75  # the smallest input Keras' InceptionResNetV2 accepts


PREPROCESS = PreprocessConfig()
MULTICELL = MultiCellConfig()
