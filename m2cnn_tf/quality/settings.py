"""Every number of the quality assessor, named once (``QualityConfig``).

The paper has no quality assessment: every value here is our choice, with its reason.
"""

from __future__ import annotations

import dataclasses
from typing import Tuple

# EyeQ's quality scale (Fu et al., MICCAI 2019), the assessor's three classes.
GOOD, USABLE, REJECT = 0, 1, 2
QUALITY_NAMES = ("Good", "Usable", "Reject")
NUM_QUALITIES = len(QUALITY_NAMES)


@dataclasses.dataclass(frozen=True)
class QualityConfig:
    """The measures read from a photograph and the classifier fitted on them."""

    # --- where the measures are taken ---
    # The disc's square (before Eq. 1, ``preprocess.graph``'s ``disc``) is shrunk to this side by
    # an exact mean: every measure is then taken at one scale relative to the disc, whatever
    # the camera (a 1024-px copy and its 4928-px original have discs of ~900 and ~3000 px).
    measure_size: int = 360
    # Radii as fractions of the disc radius. The field is read inside ``field_radius``; the
    # sharpness inside ``sharpness_radius``, away from the aperture's own edge (its step would
    # swamp the retina's gradients, and the circle found can be a few % off, up to ~6 %).
    field_radius: float = 0.9
    sharpness_radius: float = 0.82
    # The rim ring and the frame beyond it, whose contrast says whether the disc stands out
    # of the black frame at all (a photograph taken with almost no light does not).
    rim_ring: Tuple[float, float] = (0.78, 0.92)
    frame_radius: float = 1.06
    # The centre and the outer ring compared for a falling-off of light towards the rim; the
    # outer ring is also cut into sectors by angle, for a dark crescent on one side.
    centre_radius: float = 0.5
    outer_ring: Tuple[float, float] = (0.55, 0.9)
    num_sectors: int = 8
    # A pixel is under-exposed below this luma (grey levels), over-exposed (washed out) from
    # this one up. Luma, not the brightest channel: a well-lit fundus often saturates its red.
    dark_level: float = 20.0
    saturated_level: float = 235.0
    # Added to grey levels before a ratio or a logarithm, so a black region gives a finite value.
    level_floor: float = 1.0
    # Fewer frame pixels than this (the disc's square lies almost wholly inside the field) and
    # the frame counts as black (0): EyePACS frames are ≤ 2 grey levels a channel.
    min_frame_pixels: int = 50

    # --- the classifier: multinomial logistic regression on the standardised measures ---
    # Inverse L2 strength (scikit-learn's C): a few hundred labelled photographs and ~20
    # correlated measures need a firm prior.
    inverse_l2: float = 0.5
    max_iterations: int = 2000
    # Classes weighed inversely to their counts: EyeQ has ~3 Good photographs for each Usable or
    # Reject one, and an unweighted fit would rarely say Usable.
    balanced_classes: bool = True
    # The operating point: gradable = P(Reject) < threshold, with the threshold chosen on the
    # cross-validated P(Reject) of the labelled photographs so that this share of the Reject
    # photographs is called ungradable (sensitivity to Reject).
    target_reject_sensitivity: float = 0.9
    # Cross-validation: folds (both eyes of a patient in one fold), and its seed.
    folds: int = 5
    seed: int = 0


QUALITY = QualityConfig()
