"""Synthetic fundus photographs with a known grade and lesion mask, for tests and the demo.

A photograph is made of three layers drawn from two random streams, so that only the lesions
carry the grade:

* the *photograph* (camera size, a circular field of view that the frame often clips at top and
  bottom as in EyePACS, exposure, colour cast, vignetting, haze, blur, noise, JPEG) and
* the *retina* (left or right eye, rotation, optic disc, macula, vessel tree)
  come from a stream seeded by the seed alone: one seed is one photograph of one retina, at
  every grade;
* the *lesions* come from a stream seeded by (seed, grade): microaneurysms from grade 1,
  haemorrhages and hard exudates from 2, many haemorrhages, cotton-wool spots and venous beading
  from 3, neovascularisation and pre-retinal haemorrhage at 4.

Lengths are fractions of the field-of-view radius R, so a small photograph (for fast tests) is the
same picture as a camera-sized one. The retina is painted as a reflectance map (colours in 0–1),
lit by the camera (exposure × colour cast × vignetting), at most ``render_width`` wide, and then
resized to the requested width; the lesion mask is resized with it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Iterable, Iterator, Sequence

import cv2
import numpy as np

from m2cnn_tf.config import NUM_GRADES

GRADES = tuple(range(NUM_GRADES))
EYES = ("left", "right")
Range = tuple  # (low, high) of a uniform draw
PerGrade = tuple  # one (low, high) count range per grade 0..4


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Every number of the synthetic photographs.

    Lengths are fractions of the field-of-view radius R unless a comment says otherwise; pairs are
    ``(low, high)`` of a uniform draw; colours are RGB reflectances in 0–1.
    """

    # --- the photograph (nuisance, independent of the grade) ---
    camera_width: Range = (2000, 3500)  # default output width in px (EyePACS cameras' range)
    aspect_ratio: Range = (1.33, 1.52)  # width / height: the 4:3 and 3:2 cameras
    # R / image height: above 0.5 the frame cuts the disc off at top and bottom (about half do).
    fov_radius: Range = (0.44, 0.6)
    fov_centre_jitter: tuple = (0.03, 0.02)  # largest offset of the disc centre, fraction of (W, H)
    fov_edge_width: float = 0.004  # soft rim of the lens aperture
    # Drawn at most this wide, then resized: the disc is still ≥ 560 px across internally, above
    # the 448-px training size, and a camera-sized photograph costs a fraction of a second.
    render_width: int = 1280
    min_width: int = 64  # below this the 0.3 %-of-R microaneurysms are not even one pixel
    exposure: Range = (0.5, 1.2)  # overall brightness, multiplies the reflectance
    channel_gain: tuple = ((0.85, 1.15), (0.65, 1.25), (0.6, 1.45))  # colour cast, R, G, B
    vignetting: Range = (0.15, 0.6)  # darkening at the rim: light = 1 − v·(r/R)^p
    vignetting_power: Range = (1.5, 4.0)  # p
    illumination_tilt: Range = (0.0, 0.25)  # linear brightness gradient, fraction at the rim
    # The brightest channel at the rim stays at least this bright (grey levels), so the disc stands
    # out from the black frame as in real photographs (find_fundus thresholds against the frame).
    min_rim_level: float = 40.0
    haze_probability: float = 0.5  # share of photographs with a grey-green glare towards the rim
    haze_strength: Range = (0.04, 0.25)  # added light at the rim, fraction of full scale
    haze_colour: tuple = (0.6, 0.75, 0.65)
    haze_start: float = 0.5  # the glare rises from this radius to the rim
    # Choroidal mottling: smooth relative noise, one octave per (correlation length, strength).
    texture_octaves: tuple = ((0.12, (0.01, 0.03)), (0.025, (0.005, 0.015)))
    blur: Range = (0.0008, 0.0025)  # Gaussian σ of defocus and optics (≤ 0.6 px at 448)
    noise: Range = (0.8, 2.5)  # sensor noise σ, grey levels
    jpeg_quality: Range = (80, 96)
    # The camera's tone curve rolls highlights off above this grey level instead of clipping
    # them, so vessels stay visible on a bright optic disc.
    highlight_knee: float = 200.0
    frame_level: Range = (0.0, 4.0)  # mean grey level of the black frame
    frame_noise: float = 1.0  # its noise σ, grey levels
    frame_max: float = 10.0  # and its ceiling
    # Anti-aliasing blur of drawn edges (vessels, exudates, new vessels), in render pixels.
    edge_blur_px: float = 0.5

    # --- the retina (nuisance) ---
    rotation_deg: float = 12.0  # the optic disc–macula axis is tilted by up to ± this
    background: tuple = (0.76, 0.42, 0.25)  # orange-red fundus reflectance
    optic_disc_radius: Range = (0.13, 0.16)  # ~15 % of the disc diameter, as in the brief
    optic_disc_aspect: Range = (0.85, 1.0)  # width / height: the disc is a vertical oval
    optic_disc_offset: Range = (0.34, 0.46)  # field centre → optic disc, towards the nose
    optic_disc_height: Range = (-0.04, 0.04)  # and up (−) or down (+)
    optic_disc_colour: tuple = (0.95, 0.78, 0.45)  # pale yellow rim
    optic_cup_colour: tuple = (1.0, 0.92, 0.68)  # near-white cup
    optic_cup_ratio: Range = (0.3, 0.55)  # cup radius / disc radius
    optic_cup_offset: Range = (0.0, 0.25)  # the cup sits towards the macula, in disc radii
    optic_cup_edge: float = 0.35  # blur of the cup's margin, in cup radii
    optic_disc_edge: float = 0.08  # blur of the disc margin, in disc radii
    # The nerve-fibre layer round the disc reflects more: a glow this many disc radii wide...
    disc_glow_sigma: float = 2.0
    disc_glow: Range = (0.05, 0.15)  # ...brightening the reflectance by this much at its centre
    macula_distance: Range = (0.6, 0.7)  # optic disc → fovea, temporal (≈ 2.5 disc diameters)
    macula_drop: Range = (0.0, 0.08)  # the fovea sits slightly below the optic disc
    macula_sigma: Range = (0.09, 0.15)  # Gaussian size of the darker macula
    macula_depth: Range = (0.2, 0.45)  # its darkening at the centre
    macula_channel_depth: tuple = (0.6, 1.0, 1.0)  # pigment absorbs green and blue more than red
    # Main vessels leave the optic disc as artery–vein pairs: (initial heading, heading they relax
    # to, relaxation rate per R, length, width scale), headings in degrees in the right eye's frame
    # (0 = temporal, towards the macula; −90 = up). The temporal arcades rise and bend round the
    # macula; the nasal ones fan out towards the nose; two small vessels run to the macula.
    vessel_trunks: tuple = (
        (-75.0, 20.0, 2.2, 1.5, 1.0),
        (75.0, -20.0, 2.2, 1.5, 1.0),
        (-120.0, -165.0, 1.2, 0.9, 0.85),
        (120.0, 165.0, 1.2, 0.9, 0.85),
        (-15.0, 0.0, 1.0, 0.35, 0.4),
        (15.0, 0.0, 1.0, 0.35, 0.4),
    )
    vein_width: Range = (0.015, 0.018)  # main vein calibre at the disc
    artery_to_vein_width: float = 0.72
    pair_spread_deg: Range = (4.0, 14.0)  # artery and vein leave at slightly different angles
    vessel_step: float = 0.012  # length of one drawn segment
    vessel_tortuosity: float = 0.5  # heading noise, rad per sqrt(R)
    vessel_taper: float = 0.35  # calibre loss per R of length, relative
    branch_spacing: float = 0.2  # mean distance between branches of a main vessel (× 1 + depth)
    first_branch: float = 0.2  # main vessels do not branch on the optic disc
    branch_angle_deg: Range = (25.0, 65.0)
    branch_bend_deg: Range = (0.0, 30.0)  # a branch then curves away from its parent by this
    branch_relaxation: float = 2.0  # per R, how fast a branch settles on its course
    branch_width: Range = (0.5, 0.75)  # child calibre / parent calibre
    branch_length: Range = (0.15, 0.55)  # × branch_length_decay per level of depth
    branch_length_decay: float = 0.8
    branch_flow_loss: float = 0.92  # a parent's calibre after a branch leaves it
    max_branch_depth: int = 3
    vessel_end_fade: float = 0.1  # vessels thin out over their last stretch instead of stopping
    min_vessel_width: float = 0.0022  # thinner capillaries are invisible in photographs
    vessel_max_radius: float = 0.93  # vessels fade before the rim, keeping the rim clean
    foveal_avascular_zone: float = 0.07  # no vessel enters this radius round the fovea
    vein_shade: tuple = (0.66, 0.42, 0.45)  # reflectance multipliers on a vein
    artery_shade: tuple = (0.82, 0.64, 0.66)

    # --- the lesions (the only layer that depends on the grade) ---
    lesion_max_radius: float = 0.85  # inside Graham's 0.9 R mask, which the preprocessing keeps
    lesion_disc_clearance: float = 1.2  # lesions keep this many disc radii from the disc centre
    microaneurysms: PerGrade = ((0, 0), (6, 16), (10, 25), (15, 35), (15, 35))
    microaneurysm_radius: Range = (0.0035, 0.0065)
    microaneurysm_spread: float = 0.55  # they cluster round the posterior pole (from the fovea)
    haemorrhages: PerGrade = ((0, 0), (0, 0), (4, 10), (28, 50), (34, 60))
    haemorrhage_radius: Range = (0.01, 0.03)
    haemorrhage_shapes: tuple = (0.6, 0.25, 0.15)  # probabilities of blot, flame, dot
    blot_parts: Range = (2, 5)  # a blot is this many overlapping ellipses
    dot_size: float = 0.6  # a dot haemorrhage's radius, relative to a blot's
    flame_elongation: Range = (2.5, 4.0)
    flame_strands: Range = (2, 4)  # a flame is a fan of thin streaks along the nerve fibres
    haemorrhage_edge: float = 0.15  # blur of a haemorrhage's edge, in its radius
    exudate_clusters: PerGrade = ((0, 0), (0, 0), (1, 3), (2, 4), (2, 4))
    exudates_per_cluster: Range = (4, 12)
    exudate_radius: Range = (0.005, 0.015)
    exudate_cluster_radius: Range = (0.04, 0.1)
    exudate_cluster_distance: Range = (0.08, 0.4)  # from the fovea
    cotton_wool_spots: PerGrade = ((0, 0), (0, 0), (0, 0), (1, 5), (1, 5))
    cotton_wool_radius: Range = (0.02, 0.035)
    cotton_wool_distance: Range = (0.2, 0.55)  # from the optic disc, along the arcades
    cotton_wool_opacity: Range = (0.5, 0.8)
    cotton_wool_softness: float = 0.3  # they are fluffy: blurred by this share of their size
    beaded_veins: PerGrade = ((0, 0), (0, 0), (0, 0), (1, 3), (1, 3))
    beaded_length: Range = (0.15, 0.3)
    beaded_position: Range = (0.15, 0.8)  # where the stretch lies, fraction of the vein's length
    bead_radius: Range = (1.3, 1.8)  # bead radius / vein half-calibre
    bead_spacing: float = 2.4  # between beads, in vein calibres
    new_vessel_tufts: PerGrade = ((0, 0), (0, 0), (0, 0), (0, 0), (1, 3))
    new_vessel_tuft_radius: Range = (0.05, 0.1)
    new_vessel_loops: Range = (10, 22)
    new_vessel_loop_steps: Range = (6, 12)
    new_vessel_step: Range = (0.008, 0.02)
    new_vessel_width: float = 0.005
    new_vessel_turn: float = 0.9  # σ of the heading change per step, rad: tortuous loops
    new_vessel_at_disc: float = 0.5  # share of tufts on the optic disc (NVD) rather than elsewhere
    new_vessel_distance: Range = (0.25, 0.6)  # NVE: from the optic disc
    preretinal_probability: tuple = (0.0, 0.0, 0.0, 0.0, 0.5)  # per grade
    preretinal_axes: tuple = ((0.05, 0.09), (0.025, 0.045))
    preretinal_distance: Range = (0.3, 0.6)  # from the optic disc
    haemorrhage_shade: tuple = (0.5, 0.22, 0.25)
    new_vessel_shade: tuple = (0.62, 0.36, 0.4)
    exudate_colour: tuple = (0.97, 0.85, 0.4)
    cotton_wool_colour: tuple = (0.95, 0.85, 0.65)


SYNTHETIC = SyntheticConfig()


@dataclasses.dataclass(frozen=True, eq=False)
class SyntheticFundus:
    """One synthetic photograph and its ground truth.

    ``eq=False``: instances compare by identity, since arrays have no single truth value.
    """

    image: np.ndarray  # (H, W, 3) uint8 RGB camera-style photograph
    grade: int  # 0..4
    lesion_mask: np.ndarray  # (H, W) bool, True on lesion pixels
    eye: str  # "left" or "right"
    disc: tuple  # (cx, cy, radius) of the field of view, in pixels


# cv2 draws with this many fractional bits, so lesions of a pixel or two keep their size.
_SHIFT = 4
_ONE = 1 << _SHIFT
# Separate streams of one seed: the photograph and retina, the lesions, a dataset's order.
_NUISANCE_STREAM, _LESION_STREAM, _DATASET_STREAM = 0, 1, 2
# Lesion layers, one opacity canvas each (see _composite_lesions for their colours).
_LESION_LAYERS = ("haemorrhage", "new_vessel", "vein", "exudate", "cotton_wool")
# The tone curve maps float grey levels up to this (exclusive) to uint8.
_TONE_RANGE = 1024
# Illumination is smooth, so it is computed on a grid this many render pixels apart.
_COARSE_LIGHT_GRID = 8


def make_fundus(
    grade: int,
    seed: int,
    width: int | None = None,
    config: SyntheticConfig = SYNTHETIC,
    eye: str | None = None,
) -> SyntheticFundus:
    """Draws one synthetic fundus photograph of the given grade.

    Args:
      grade: ICDR grade, 0 (no DR) to 4 (proliferative DR).
      seed: non-negative integer; the photograph and the retina depend on it alone (the same seed
        at two grades differs only by the lesions), the lesions on (seed, grade).
      width: output width in pixels; by default a camera width drawn from
        ``config.camera_width``. The height follows from the drawn aspect ratio.
      config: the numbers of the generator.
      eye: "left" or "right" to impose the eye (e.g. to match a record's label); by default it is
        drawn from the seed. Either way the rest of the photograph is the same.

    Returns:
      A SyntheticFundus: the uint8 RGB image, the grade, the boolean lesion mask of the same
      height and width, the eye and the field of view (cx, cy, radius) in pixels.

    Raises:
      ValueError: on a grade outside 0–4, a negative or non-integer seed, a width below
        ``config.min_width``, or an eye other than "left", "right" or None.
    """
    grade = _check_grade(grade)
    seed = _check_seed(seed)
    if width is not None and (not _is_int(width) or width < config.min_width):
        raise ValueError(
            f"width must be an integer ≥ {config.min_width} px or None, got {width!r}")
    if eye not in (None,) + EYES:
        raise ValueError(f"eye must be one of {EYES} or None, got {eye!r}")
    nuisance = np.random.default_rng([seed, _NUISANCE_STREAM])
    scene = _draw_scene(nuisance, width, eye, config)
    reflectance = _paint_retina(scene, config)
    lesion_rng = np.random.default_rng([seed, _LESION_STREAM, grade])
    lesions = _draw_lesions(lesion_rng, grade, scene, config)
    _composite_lesions(reflectance, lesions, scene, config)
    image = _photograph(reflectance, scene, config)
    mask = lesions.mask
    if (scene.width, scene.height) != image.shape[1::-1]:
        image = cv2.resize(image, (scene.width, scene.height), interpolation=cv2.INTER_LINEAR)
        mask = cv2.resize(mask, (scene.width, scene.height), interpolation=cv2.INTER_NEAREST)
    return SyntheticFundus(
        image=image,
        grade=grade,
        lesion_mask=mask > 0,
        eye=scene.eye,
        disc=(scene.fov_cx, scene.fov_cy, scene.fov_radius),
    )


def make_dataset(
    num_images: int,
    seed: int,
    width: int | None = None,
    grades: Iterable[int] | None = None,
    config: SyntheticConfig = SYNTHETIC,
) -> Iterator[SyntheticFundus]:
    """Yields synthetic photographs, balanced over the grades, in a shuffled deterministic order.

    Args:
      num_images: how many photographs.
      seed: non-negative integer; the same seed yields the same photographs in the same order.
      width: output width of every photograph (see make_fundus); None draws camera widths.
      grades: the grades to draw, each equally often (counts differ by at most one); all five by
        default.
      config: the numbers of the generator.

    Returns:
      An iterator of SyntheticFundus; photograph i has its own seed derived from (seed, i).

    Raises:
      ValueError: on a negative count, an invalid seed, an empty or invalid list of grades.
    """
    if not _is_int(num_images) or num_images < 0:
        raise ValueError(f"num_images must be a non-negative integer, got {num_images!r}")
    seed = _check_seed(seed)
    # Each grade once, so a repeated entry does not unbalance the set.
    chosen = GRADES if grades is None else tuple(dict.fromkeys(_check_grade(g) for g in grades))
    if not chosen:
        raise ValueError(f"grades must name at least one of {GRADES}, got an empty list")
    order = np.resize(np.asarray(chosen), int(num_images))
    np.random.default_rng([seed, _DATASET_STREAM]).shuffle(order)
    # Validated above, so the errors surface at the call rather than at the first next().
    return (
        make_fundus(int(g), _image_seed(seed, i), width, config) for i, g in enumerate(order)
    )


def _image_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, _DATASET_STREAM, index]).generate_state(1)[0])


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_grade(grade) -> int:
    if not _is_int(grade) or grade not in GRADES:
        raise ValueError(f"grade must be one of {GRADES} (ICDR 0 no DR … 4 PDR), got {grade!r}")
    return int(grade)


def _check_seed(seed) -> int:
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _uniform(rng: np.random.Generator, bounds: Range) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _count(rng: np.random.Generator, bounds: Range) -> int:
    return int(rng.integers(bounds[0], bounds[1], endpoint=True))


# ---------------------------------------------------------------------------------------------
# The scene: geometry and nuisance factors, from the nuisance stream only.


@dataclasses.dataclass
class _Vessel:
    kind: str  # "artery" or "vein"
    points: np.ndarray  # (N, 2) render pixels
    widths: np.ndarray  # (N,) calibre in render pixels
    depth: int  # 0 for a main vessel


@dataclasses.dataclass
class _Scene:
    width: int  # output size
    height: int
    fov_cx: float  # output pixels
    fov_cy: float
    fov_radius: float
    eye: str
    render_w: int  # internal size
    render_h: int
    cx: float  # field of view in render pixels
    cy: float
    radius: float
    optic_disc: tuple  # (x, y, radius) in render pixels
    fovea: tuple  # (x, y) in render pixels
    vessels: list
    light: dict  # the photograph's nuisance draws


def _draw_scene(rng: np.random.Generator, width: int | None, eye: str | None,
                cfg: SyntheticConfig) -> _Scene:
    """Draws the camera, the field of view and the retina's anatomy.

    The draws come from ``rng`` in a fixed order (camera, eye, rotation, anatomy, light), so a
    seed always gives the same scene.
    """
    width, height, fov_cx, fov_cy, fov_radius = _draw_camera(rng, width, cfg)
    render_w = min(width, cfg.render_width)
    scale = render_w / width
    render_h = max(1, int(round(height * scale)))
    # Pixel centres map as x_render = (x + 0.5)·scale − 0.5 under cv2.resize (per axis: the
    # rounded height makes the vertical scale differ by up to half a pixel).
    cx = (fov_cx + 0.5) * scale - 0.5
    cy = (fov_cy + 0.5) * (render_h / height) - 0.5
    radius = fov_radius * scale

    drawn_eye = EYES[int(rng.random() < 0.5)]  # drawn even when imposed: keeps the stream aligned
    eye = eye or drawn_eye
    mirror = 1.0 if eye == "right" else -1.0  # right eye: optic disc on the viewer's left
    angle = math.radians(_uniform(rng, (-cfg.rotation_deg, cfg.rotation_deg)))
    to_render = _retina_to_render(cx, cy, radius, mirror, angle)
    optic_disc, fovea, vessels = _draw_anatomy(rng, to_render, radius, cfg)
    light = _draw_light(rng, cfg)
    light.update(rotation=angle, mirror=mirror)
    return _Scene(
        width=width, height=height, fov_cx=float(fov_cx), fov_cy=float(fov_cy),
        fov_radius=float(fov_radius), eye=eye, render_w=render_w, render_h=render_h,
        cx=cx, cy=cy, radius=radius, optic_disc=optic_disc, fovea=fovea, vessels=vessels,
        light=light,
    )


def _draw_camera(rng: np.random.Generator, width: int | None, cfg: SyntheticConfig):
    """The photograph's size and its field of view: (width, height, fov_cx, fov_cy, fov_radius)."""
    if width is None:
        width = int(rng.integers(cfg.camera_width[0], cfg.camera_width[1], endpoint=True))
    else:
        rng.integers(0, 2)  # keep the stream aligned whether or not the width is drawn
    height = int(round(width / _uniform(rng, cfg.aspect_ratio)))
    fov_radius = _uniform(rng, cfg.fov_radius) * height
    # Horizontally the disc always fits (2R ≤ 1.2 H < W); vertically it may be clipped.
    fov_cx = width / 2 + _uniform(rng, (-1, 1)) * cfg.fov_centre_jitter[0] * width
    fov_cy = height / 2 + _uniform(rng, (-1, 1)) * cfg.fov_centre_jitter[1] * height
    fov_cx = float(np.clip(fov_cx, fov_radius + 1, width - fov_radius - 1))
    return width, height, fov_cx, fov_cy, fov_radius


def _retina_to_render(cx: float, cy: float, radius: float, mirror: float, angle: float):
    """The map from the retina's frame to render pixels, for a disc at (cx, cy) of ``radius``."""
    cos_a, sin_a = math.cos(angle), math.sin(angle)

    def to_render(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Retina frame (units of R, +u temporal, +v down, right eye) → render pixels."""
        x, y = mirror * u, v
        px = cx + radius * (cos_a * x - sin_a * y)
        py = cy + radius * (sin_a * x + cos_a * y)
        return np.stack([px, py], -1)

    return to_render


def _draw_anatomy(rng: np.random.Generator, to_render, radius: float, cfg: SyntheticConfig):
    """Optic disc (x, y, radius), fovea (x, y) and the vessel tree, in render pixels."""
    od_u, od_v = -_uniform(rng, cfg.optic_disc_offset), _uniform(rng, cfg.optic_disc_height)
    od_r = _uniform(rng, cfg.optic_disc_radius)
    fov_u = od_u + _uniform(rng, cfg.macula_distance)
    fov_v = od_v + _uniform(rng, cfg.macula_drop)
    optic_disc = tuple(to_render(np.array(od_u), np.array(od_v)).tolist()) + (od_r * radius,)
    fovea = tuple(to_render(np.array(fov_u), np.array(fov_v)).tolist())
    vessels_uv = _grow_vessel_tree(rng, (od_u, od_v), (fov_u, fov_v), cfg)
    vessels = [
        _Vessel(kind, to_render(pts[:, 0], pts[:, 1]), w * radius, depth)
        for kind, pts, w, depth in vessels_uv
    ]
    return optic_disc, fovea, vessels


def _draw_light(rng: np.random.Generator, cfg: SyntheticConfig) -> dict:
    """The photograph's nuisance draws: exposure, colour, vignetting, haze, blur, noise, …"""
    gains = [_uniform(rng, g) for g in cfg.channel_gain]
    return dict(
        exposure=_uniform(rng, cfg.exposure),
        gains=np.array(gains, np.float32),
        vignetting=_uniform(rng, cfg.vignetting),
        vignetting_power=_uniform(rng, cfg.vignetting_power),
        tilt=_uniform(rng, cfg.illumination_tilt),
        tilt_angle=_uniform(rng, (0.0, 2 * math.pi)),
        haze=_uniform(rng, cfg.haze_strength) if rng.random() < cfg.haze_probability else 0.0,
        texture=[_uniform(rng, strength) for _, strength in cfg.texture_octaves],
        disc_glow=_uniform(rng, cfg.disc_glow),
        texture_seed=int(rng.integers(2**31)),
        od_aspect=_uniform(rng, cfg.optic_disc_aspect),
        cup_ratio=_uniform(rng, cfg.optic_cup_ratio),
        cup_offset=_uniform(rng, cfg.optic_cup_offset),
        macula_sigma=_uniform(rng, cfg.macula_sigma),
        macula_depth=_uniform(rng, cfg.macula_depth),
        blur=_uniform(rng, cfg.blur),
        noise=_uniform(rng, cfg.noise),
        jpeg_quality=int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1], endpoint=True)),
        frame_level=_uniform(rng, cfg.frame_level),
        noise_seed=int(rng.integers(2**31)),
    )


def _grow_vessel_tree(rng, optic_disc, fovea, cfg: SyntheticConfig) -> list:
    """Grows artery–vein pairs from the optic disc, branching with decreasing calibre.

    Returns:
      A list of (kind, points (N, 2), widths (N,), depth) in the retina frame, units of R.
    """
    out = []
    vein_width = _uniform(rng, cfg.vein_width)
    for heading, target, rate, length, width_scale in cfg.vessel_trunks:
        spread = math.radians(_uniform(rng, cfg.pair_spread_deg)) / 2
        side = 1.0 if rng.random() < 0.5 else -1.0
        for kind, offset, calibre in (
            ("vein", side * spread, vein_width * width_scale),
            ("artery", -side * spread, vein_width * width_scale * cfg.artery_to_vein_width),
        ):
            h = math.radians(heading) + offset
            _grow_vessel(rng, kind, optic_disc, h, math.radians(target) + offset,
                         rate, calibre, length, 0, fovea, cfg, out)
    return out


def _grow_vessel(rng, kind, start, heading, target, rate, width, length, depth, fovea, cfg, out):
    """Walks one vessel; its heading relaxes towards ``target`` with noise, and it branches.

    Plain floats rather than small arrays: this loop runs thousands of steps per photograph.
    """
    step = cfg.vessel_step
    x, y = start
    fx, fy = fovea
    points, widths = [(x, y)], [width]
    travelled = 0.0
    spacing = cfg.branch_spacing * (1 + depth)
    next_branch = (cfg.first_branch if depth == 0 else 0.0) + rng.exponential(spacing)
    # One batch of heading noise per vessel (the walk ends after at most this many steps).
    jitter = rng.normal(0.0, cfg.vessel_tortuosity * math.sqrt(step), int(length / step) + 1)
    shrink = math.exp(-cfg.vessel_taper * step)
    max_r2, fovea_r2 = cfg.vessel_max_radius**2, cfg.foveal_avascular_zone**2
    for noise in jitter:
        if travelled >= length or width < cfg.min_vessel_width:
            break
        heading += rate * step * (target - heading) + noise
        x, y = x + step * math.cos(heading), y + step * math.sin(heading)
        if x * x + y * y > max_r2 or (x - fx) ** 2 + (y - fy) ** 2 < fovea_r2:
            break
        travelled += step
        width *= shrink
        points.append((x, y))
        widths.append(width)
        if travelled >= next_branch and depth < cfg.max_branch_depth:
            side = 1.0 if rng.random() < 0.5 else -1.0
            child_heading = heading + side * math.radians(_uniform(rng, cfg.branch_angle_deg))
            child_target = child_heading + side * math.radians(_uniform(rng, cfg.branch_bend_deg))
            _grow_vessel(rng, kind, (x, y), child_heading, child_target, cfg.branch_relaxation,
                         width * _uniform(rng, cfg.branch_width),
                         _uniform(rng, cfg.branch_length) * cfg.branch_length_decay**depth,
                         depth + 1, fovea, cfg, out)
            width *= cfg.branch_flow_loss
            next_branch = travelled + rng.exponential(spacing)
    if len(points) > 1:
        remaining = travelled - step * np.arange(len(points))  # R still to go at each point
        fade = np.minimum(np.maximum(remaining / cfg.vessel_end_fade, 0.3), 1.0)
        out.append((kind, np.array(points), np.array(widths) * fade, depth))


# ---------------------------------------------------------------------------------------------
# The retina: a reflectance map at render size.


def _paint_retina(scene: _Scene, cfg: SyntheticConfig) -> np.ndarray:
    """Returns the (3, h, w) float32 reflectance of the retina: background, macula, disc, vessels.

    Channel-first, so that multiplying by a (h, w) field broadcasts over whole planes (several
    times faster in NumPy than over an interleaved last axis).
    """
    h, w, R = scene.render_h, scene.render_w, scene.radius
    light = scene.light
    # Choroidal mottling: smooth noise drawn on a coarse grid per octave and resized up.
    tex_rng = np.random.default_rng(light["texture_seed"])
    texture = np.ones((h, w), np.float32)
    for (scale, _), strength in zip(cfg.texture_octaves, light["texture"]):
        cells = max(2.0, scale * R)
        small = tex_rng.standard_normal((int(h / cells) + 2, int(w / cells) + 2)).astype(np.float32)
        texture += strength * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    refl = texture[None] * _planes(cfg.background)

    ox, oy, orad = scene.optic_disc
    _gaussian_spot(refl, (ox, oy), cfg.disc_glow_sigma * orad, np.full(3, light["disc_glow"]))
    # Macula: a darker Gaussian, deeper in green and blue.
    depth = light["macula_depth"] * np.asarray(cfg.macula_channel_depth, np.float32)
    _gaussian_spot(refl, scene.fovea, light["macula_sigma"] * R, -depth)

    # Optic disc: a pale vertical oval with a brighter cup displaced temporally.
    angle = math.degrees(light["rotation"])
    disc = np.zeros((h, w), np.uint8)
    _ellipse(disc, (ox, oy), (orad * light["od_aspect"], orad), angle, 255)
    _blend_colour(refl, *_soft(disc, cfg.optic_disc_edge * orad), cfg.optic_disc_colour)
    cup = np.zeros((h, w), np.uint8)
    shift = light["mirror"] * light["cup_offset"] * orad
    cr = light["cup_ratio"] * orad
    centre = (ox + shift * math.cos(light["rotation"]), oy + shift * math.sin(light["rotation"]))
    _ellipse(cup, centre, (cr * light["od_aspect"], cr), angle, 255)
    _blend_colour(refl, *_soft(cup, cfg.optic_cup_edge * cr), cfg.optic_cup_colour)

    # Vessels: one canvas per kind, thick segments drawn last so a branch never notches its parent.
    for kind, shade in (("artery", cfg.artery_shade), ("vein", cfg.vein_shade)):
        canvas = np.zeros((h, w), np.uint8)
        _draw_vessels(canvas, [v for v in scene.vessels if v.kind == kind])
        _blend_shade(refl, *_soft(canvas, cfg.edge_blur_px), shade)
    return refl


def _gaussian_spot(refl: np.ndarray, centre, sigma: float, gain: np.ndarray) -> None:
    """refl ← refl · (1 + gain · G), G a unit-height Gaussian; computed within 3.5 σ only."""
    h, w = refl.shape[1:]
    reach = 3.5 * sigma
    x0, x1 = max(0, int(centre[0] - reach)), min(w, int(centre[0] + reach) + 1)
    y0, y1 = max(0, int(centre[1] - reach)), min(h, int(centre[1] + reach) + 1)
    if x0 >= x1 or y0 >= y1:
        return
    gx = np.exp(-((np.arange(x0, x1, dtype=np.float32) - centre[0]) ** 2) / (2 * sigma**2))
    gy = np.exp(-((np.arange(y0, y1, dtype=np.float32) - centre[1]) ** 2) / (2 * sigma**2))
    refl[:, y0:y1, x0:x1] *= 1.0 + np.outer(gy, gx)[None] * _planes(gain)


def _draw_vessels(canvas: np.ndarray, vessels: Sequence[_Vessel], chunk: int = 6) -> None:
    """Draws vessels as polylines of ``chunk`` segments, each at its mean calibre."""
    pieces = []
    for v in vessels:
        pts = np.round(v.points * _ONE).astype(np.int32)
        starts = np.arange(0, len(pts) - 1, chunk)
        widths = np.add.reduceat(v.widths, starts) / np.diff(np.append(starts, len(pts)))
        pieces.extend((float(wd), pts[st : st + chunk + 1]) for st, wd in zip(starts, widths))
    pieces.sort(key=lambda p: p[0])
    for width, pts in pieces:
        # Below a pixel a vessel is drawn one pixel wide and proportionally fainter.
        thickness = max(1, int(round(width)))
        value = int(round(255 * min(1.0, width)))
        cv2.polylines(canvas, [pts], False, value, thickness, cv2.LINE_AA, _SHIFT)


def _soft(canvas: np.ndarray, sigma: float):
    """uint8 canvas → (float32 opacity 0–1 blurred by ``sigma`` px, its slices in the canvas).

    Only the bounding box of the drawing (plus the blur's reach) is blurred and returned, which
    for the sparse lesion layers is a small fraction of the picture.
    """
    rows = np.flatnonzero(canvas.any(axis=1))
    if rows.size == 0:
        return None, None
    cols = np.flatnonzero(canvas[rows[0] : rows[-1] + 1].any(axis=0))
    pad = int(math.ceil(3 * sigma)) + 1
    h, w = canvas.shape
    sl = (slice(max(0, rows[0] - pad), min(h, rows[-1] + 1 + pad)),
          slice(max(0, cols[0] - pad), min(w, cols[-1] + 1 + pad)))
    crop = canvas[sl]
    if sigma >= 0.3:
        crop = cv2.GaussianBlur(crop, (0, 0), sigma)
    return crop.astype(np.float32) * (1.0 / 255.0), sl


def _blend_colour(refl: np.ndarray, alpha, sl, colour) -> None:
    """refl ← refl + α (colour − refl): an opaque layer of its own colour."""
    if alpha is not None:
        region = refl[:, sl[0], sl[1]]
        region += alpha[None] * (_planes(colour) - region)


def _blend_shade(refl: np.ndarray, alpha, sl, shade) -> None:
    """refl ← refl · (1 − α (1 − shade)): a translucent absorber on the local background."""
    if alpha is not None:
        refl[:, sl[0], sl[1]] *= 1.0 - alpha[None] * (1.0 - _planes(shade))


def _planes(colour) -> np.ndarray:
    """An RGB triple as a (3, 1, 1) float32 array, to scale or paint channel-first planes."""
    return np.asarray(colour, np.float32).reshape(3, 1, 1)


def _ellipse(canvas, centre, axes, angle_deg, value, line=cv2.LINE_AA) -> None:
    c = (int(round(centre[0] * _ONE)), int(round(centre[1] * _ONE)))
    a = (max(0, int(round(axes[0] * _ONE))), max(0, int(round(axes[1] * _ONE))))
    cv2.ellipse(canvas, c, a, angle_deg, 0, 360, int(value), -1, line, _SHIFT)


# ---------------------------------------------------------------------------------------------
# The lesions: from the lesion stream only.


class _LesionLayers:
    """Opacity canvases per lesion colour, and the ground-truth mask drawn with the same shapes."""

    def __init__(self, shape):
        self.alpha = {name: np.zeros(shape, np.uint8) for name in _LESION_LAYERS}
        self.mask = np.zeros(shape, np.uint8)

    def _mark(self, centre) -> None:
        # Every lesion owns at least its centre pixel, however small it is drawn.
        x, y = int(round(centre[0])), int(round(centre[1]))
        if 0 <= y < self.mask.shape[0] and 0 <= x < self.mask.shape[1]:
            self.mask[y, x] = 255

    def ellipse(self, layer, centre, axes, angle_deg, opacity=1.0) -> None:
        _ellipse(self.alpha[layer], centre, axes, angle_deg, 255 * opacity)
        _ellipse(self.mask, centre, axes, angle_deg, 255, cv2.LINE_8)
        self._mark(centre)

    def polyline(self, layer, points, thickness) -> None:
        pts = [np.round(np.asarray(points) * _ONE).astype(np.int32)]
        t = max(1, int(round(thickness)))
        cv2.polylines(self.alpha[layer], pts, False, 255, t, cv2.LINE_AA, _SHIFT)
        cv2.polylines(self.mask, pts, False, 255, t, cv2.LINE_8, _SHIFT)
        self._mark(points[0])


def _draw_lesions(rng: np.random.Generator, grade: int, scene: _Scene, cfg: SyntheticConfig):
    """Draws the lesions of one grade: counts and sizes from ``cfg``, in render pixels."""
    R = scene.radius
    layers = _LesionLayers((scene.render_h, scene.render_w))
    ox, oy, orad = scene.optic_disc

    for _ in range(_count(rng, cfg.microaneurysms[grade])):
        centre = _sample_point(rng, scene, scene.fovea, cfg.microaneurysm_spread * R, cfg)
        r = _uniform(rng, cfg.microaneurysm_radius) * R
        layers.ellipse("haemorrhage", centre, (r, r), 0.0)

    for _ in range(_count(rng, cfg.haemorrhages[grade])):
        centre = _sample_point(rng, scene, (scene.cx, scene.cy), cfg.lesion_max_radius * R, cfg)
        _haemorrhage(rng, layers, centre, (ox, oy), R, cfg)

    for _ in range(_count(rng, cfg.exudate_clusters[grade])):
        around = _sample_point(rng, scene, scene.fovea, cfg.exudate_cluster_distance[1] * R, cfg,
                               min_distance=cfg.exudate_cluster_distance[0] * R)
        spread = _uniform(rng, cfg.exudate_cluster_radius) * R
        for _ in range(_count(rng, cfg.exudates_per_cluster)):
            centre = _sample_point(rng, scene, around, spread, cfg)
            r = _uniform(rng, cfg.exudate_radius) * R
            axes = (r * _uniform(rng, (0.7, 1.0)), r * _uniform(rng, (0.7, 1.0)))
            layers.ellipse("exudate", centre, axes, _uniform(rng, (0, 180)))

    for _ in range(_count(rng, cfg.cotton_wool_spots[grade])):
        centre = _sample_point(rng, scene, (ox, oy), cfg.cotton_wool_distance[1] * R, cfg,
                               min_distance=cfg.cotton_wool_distance[0] * R)
        r = _uniform(rng, cfg.cotton_wool_radius) * R
        axes = (r, r * _uniform(rng, (0.5, 0.9)))
        layers.ellipse("cotton_wool", centre, axes, _uniform(rng, (0, 180)),
                       _uniform(rng, cfg.cotton_wool_opacity))

    # Beading affects the large veins: the arcades and the nasal trunks, not the macular twigs.
    trunks = [v for v in scene.vessels if v.kind == "vein" and v.depth == 0 and len(v.points) > 1]
    largest = max((v.widths[0] for v in trunks), default=0.0)
    main_veins = [v for v in trunks if v.widths[0] >= 0.8 * largest]
    for _ in range(_count(rng, cfg.beaded_veins[grade]) if main_veins else 0):
        _beading(rng, layers, main_veins[int(rng.integers(len(main_veins)))], scene, cfg)

    for _ in range(_count(rng, cfg.new_vessel_tufts[grade])):
        if rng.random() < cfg.new_vessel_at_disc:
            a = _uniform(rng, (0, 2 * math.pi))
            centre = (ox + orad * math.cos(a), oy + orad * math.sin(a))
        else:
            centre = _sample_point(rng, scene, (ox, oy), cfg.new_vessel_distance[1] * R, cfg,
                                   min_distance=cfg.new_vessel_distance[0] * R)
        _new_vessel_tuft(rng, layers, centre, scene, cfg)

    if rng.random() < cfg.preretinal_probability[grade]:
        centre = _sample_point(rng, scene, (ox, oy), cfg.preretinal_distance[1] * R, cfg,
                               min_distance=cfg.preretinal_distance[0] * R)
        axes = tuple(_uniform(rng, axis) * R for axis in cfg.preretinal_axes)
        layers.ellipse("haemorrhage", centre, axes, _uniform(rng, (-20, 20)))
    return layers


def _sample_point(rng, scene: _Scene, around, max_distance, cfg, min_distance=0.0, tries=64):
    """A point uniform in an annulus round ``around``, inside the lesion zone and the frame.

    Lesions stay off the optic disc (new vessels are placed separately) and inside the visible
    part of the disc, so the mask never counts pixels the frame has cut off.
    """
    ox, oy, orad = scene.optic_disc
    for _ in range(tries):
        rho = math.sqrt(_uniform(rng, (min_distance**2, max_distance**2)))
        a = _uniform(rng, (0, 2 * math.pi))
        x, y = around[0] + rho * math.cos(a), around[1] + rho * math.sin(a)
        off_disc = math.hypot(x - ox, y - oy) > cfg.lesion_disc_clearance * orad
        if off_disc and _in_lesion_zone(scene, x, y, cfg):
            return x, y
    return scene.fovea  # always visible; reached only with absurd settings


def _in_lesion_zone(scene: _Scene, x: float, y: float, cfg) -> bool:
    """Inside ``lesion_max_radius`` and at least two pixels inside the frame's top and bottom."""
    inside = math.hypot(x - scene.cx, y - scene.cy) < cfg.lesion_max_radius * scene.radius
    return inside and 2 <= y < scene.render_h - 2


def _haemorrhage(rng, layers, centre, optic_disc, R, cfg) -> None:
    r = _uniform(rng, cfg.haemorrhage_radius) * R
    shape = rng.choice(3, p=cfg.haemorrhage_shapes)
    if shape == 0:  # blot: a few overlapping ellipses of different sizes and densities
        for _ in range(_count(rng, cfg.blot_parts)):
            a, d = _uniform(rng, (0, 2 * math.pi)), _uniform(rng, (0.0, 0.6)) * r
            axes = (r * _uniform(rng, (0.4, 0.9)), r * _uniform(rng, (0.4, 0.9)))
            part = (centre[0] + d * math.cos(a), centre[1] + d * math.sin(a))
            layers.ellipse("haemorrhage", part, axes, _uniform(rng, (0, 180)),
                           _uniform(rng, (0.7, 1.0)))
    elif shape == 1:  # flame: streaks along the nerve fibres, which run away from the disc
        along = math.atan2(centre[1] - optic_disc[1], centre[0] - optic_disc[0])
        e = _uniform(rng, cfg.flame_elongation)
        for _ in range(_count(rng, cfg.flame_strands)):
            angle = along + _uniform(rng, (-0.25, 0.25))
            d, side = _uniform(rng, (-0.5, 0.5)) * r, _uniform(rng, (-0.4, 0.4)) * r
            c = (centre[0] + d * math.cos(along) - side * math.sin(along),
                 centre[1] + d * math.sin(along) + side * math.cos(along))
            axes = (r * math.sqrt(e) * _uniform(rng, (0.6, 1.0)),
                    r / math.sqrt(e) * _uniform(rng, (0.5, 0.9)))
            layers.ellipse("haemorrhage", c, axes, math.degrees(angle), _uniform(rng, (0.6, 0.9)))
    else:  # dot
        layers.ellipse("haemorrhage", centre, (cfg.dot_size * r, cfg.dot_size * r), 0.0)


def _beading(rng, layers, vein: _Vessel, scene: _Scene, cfg) -> None:
    """Sausage-like swellings along a stretch of a main vein."""
    seg = np.linalg.norm(np.diff(vein.points, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    stretch = _uniform(rng, cfg.beaded_length) * scene.radius
    first, last = cfg.beaded_position
    start = _uniform(rng, (first, max(first, last - stretch / max(arc[-1], 1e-6)))) * arc[-1]
    calibre = float(np.interp(start, arc, vein.widths))
    s = start
    while s < min(start + stretch, arc[-1]):
        x = float(np.interp(s, arc, vein.points[:, 0]))
        y = float(np.interp(s, arc, vein.points[:, 1]))
        if _in_lesion_zone(scene, x, y, cfg):
            r = 0.5 * calibre * _uniform(rng, cfg.bead_radius)
            axes = (r, r * _uniform(rng, (0.8, 1.0)))
            layers.ellipse("vein", (x, y), axes, _uniform(rng, (0, 180)))
        s += cfg.bead_spacing * max(calibre, 1.0)


def _new_vessel_tuft(rng, layers, centre, scene: _Scene, cfg) -> None:
    """A tangle of fine tortuous loops: neovascularisation on the disc or elsewhere."""
    R = scene.radius
    spread = _uniform(rng, cfg.new_vessel_tuft_radius) * R
    thickness = cfg.new_vessel_width * R
    for _ in range(_count(rng, cfg.new_vessel_loops)):
        rho, a = spread * math.sqrt(rng.random()), _uniform(rng, (0, 2 * math.pi))
        pos = np.array([centre[0] + rho * math.cos(a), centre[1] + rho * math.sin(a)])
        heading = _uniform(rng, (0, 2 * math.pi))
        pts = [pos.copy()]
        for _ in range(_count(rng, cfg.new_vessel_loop_steps)):
            heading += rng.normal(0.0, cfg.new_vessel_turn)
            length = _uniform(rng, cfg.new_vessel_step) * R
            pos = pos + length * np.array([math.cos(heading), math.sin(heading)])
            if not _in_lesion_zone(scene, pos[0], pos[1], cfg):
                break
            pts.append(pos.copy())
        if len(pts) > 1 and _in_lesion_zone(scene, pts[0][0], pts[0][1], cfg):
            layers.polyline("new_vessel", np.array(pts), thickness)


def _composite_lesions(refl: np.ndarray, layers: _LesionLayers, scene: _Scene, cfg) -> None:
    """Paints the lesion layers over the retina: bright lesions first, blood on top."""
    R = scene.radius
    _blend_colour(refl, *_soft(layers.alpha["exudate"], cfg.edge_blur_px), cfg.exudate_colour)
    fluff = cfg.cotton_wool_softness * cfg.cotton_wool_radius[0] * R
    _blend_colour(refl, *_soft(layers.alpha["cotton_wool"], fluff), cfg.cotton_wool_colour)
    _blend_shade(refl, *_soft(layers.alpha["vein"], cfg.edge_blur_px), cfg.vein_shade)
    edge = cfg.haemorrhage_edge * cfg.haemorrhage_radius[0] * R
    _blend_shade(refl, *_soft(layers.alpha["haemorrhage"], edge), cfg.haemorrhage_shade)
    _blend_shade(refl, *_soft(layers.alpha["new_vessel"], cfg.edge_blur_px), cfg.new_vessel_shade)


# ---------------------------------------------------------------------------------------------
# The photograph: light, lens, frame, sensor, JPEG.


def _photograph(refl: np.ndarray, scene: _Scene, cfg: SyntheticConfig) -> np.ndarray:
    """Lights the reflectance like a fundus camera and returns the uint8 RGB render-size image."""
    light = scene.light
    h, w, R = scene.render_h, scene.render_w, scene.radius

    # The rim must stay min_rim_level above black in its brightest channel: soften the
    # vignetting (or, failing that, raise the exposure) when the draws would make it darker.
    # The mottling can darken a pixel by up to ~3 σ of its octaves.
    mottling = 1.0 - 3.0 * sum(strength[1] for _, strength in cfg.texture_octaves)
    peak = 255.0 * light["exposure"] * float(np.max(np.asarray(cfg.background) * light["gains"]))
    peak *= (1.0 - light["tilt"]) * mottling
    vignetting = min(light["vignetting"], 1.0 - cfg.min_rim_level / peak)
    exposure = light["exposure"] * max(1.0, cfg.min_rim_level / (peak * (1.0 - vignetting)))

    # Illumination and glare are smooth: computed on a coarse grid and resized up.
    coarse = _COARSE_LIGHT_GRID
    # Sample k sits at pixel k·coarse + (coarse − 1)/2, where cv2.resize puts it.
    centre = (coarse - 1) / 2
    gx = (np.arange(w // coarse + 2, dtype=np.float32) * coarse + centre - scene.cx) / R
    gy = (np.arange(h // coarse + 2, dtype=np.float32) * coarse + centre - scene.cy) / R
    r = np.minimum(np.hypot(gx[None, :], gy[:, None]), 1.0)
    cos_t, sin_t = math.cos(light["tilt_angle"]), math.sin(light["tilt_angle"])
    along = gx[None, :] * cos_t + gy[:, None] * sin_t
    tilt = light["tilt"] * along
    illumination = (1.0 - vignetting * r ** light["vignetting_power"]) * (1.0 + tilt)
    size = (gx.size * coarse, gy.size * coarse)
    illumination = cv2.resize(illumination, size, interpolation=cv2.INTER_LINEAR)[:h, :w]
    refl *= illumination[None]
    refl *= (255.0 * exposure) * _planes(light["gains"])
    if light["haze"] > 0:
        ramp = np.clip((r - cfg.haze_start) / (1.0 - cfg.haze_start), 0.0, 1.0) ** 2
        ramp = cv2.resize(ramp * (255.0 * light["haze"]), size, interpolation=cv2.INTER_LINEAR)
        refl += ramp[None, :h, :w] * _planes(cfg.haze_colour)

    # The aperture: a clean circle whose edge is a fraction of a percent of R wide, on a frame
    # of near-black noise.
    rows, cols = np.ogrid[:h, :w]
    radius = np.hypot(cols.astype(np.float32) - scene.cx, rows.astype(np.float32) - scene.cy)
    inside = np.clip((R - radius) / (cfg.fov_edge_width * R) + 0.5, 0.0, 1.0)
    # One noise field serves the frame and the sensor, which never overlap. Uniform noise of the
    # wanted σ: three times cheaper to draw than Gaussian, and indistinguishable after JPEG.
    noise = np.random.default_rng(light["noise_seed"]).random((h, w), np.float32) - 0.5
    noise *= math.sqrt(12.0)  # unit variance
    frame = np.clip(light["frame_level"] + cfg.frame_noise * noise, 0.0, cfg.frame_max)
    refl -= frame
    refl *= inside
    refl += frame

    sigma = light["blur"] * R
    sensor = (light["noise"] * inside) * noise  # luminance only: JPEG drops most chroma noise
    planes = []
    for plane in refl:
        if sigma >= 0.3:
            plane = cv2.GaussianBlur(plane, (0, 0), sigma)
        planes.append(plane + sensor)
    levels = np.clip(cv2.merge(planes) + 0.5, 0, _TONE_RANGE - 1).astype(np.uint16)
    image = _tone_curve(cfg.highlight_knee)[levels]

    # JPEG as the cameras save it (chroma subsampling blurs colour edges, as in EyePACS files).
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, light["jpeg_quality"]])
    if not ok:
        raise RuntimeError("OpenCV could not JPEG-encode a synthetic photograph")
    return cv2.cvtColor(cv2.imdecode(encoded, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@functools.lru_cache(maxsize=4)
def _tone_curve(knee: float) -> np.ndarray:
    """uint8 look-up table over 0 … _TONE_RANGE − 1.

    Identity up to ``knee``, then a tanh shoulder that approaches 255.
    """
    x = np.arange(_TONE_RANGE, dtype=np.float64)
    span = 255.0 - knee
    y = np.where(x <= knee, x, knee + span * np.tanh((x - knee) / span))
    return np.round(y).astype(np.uint8)
