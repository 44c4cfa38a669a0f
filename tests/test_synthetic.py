"""Synthetic fundus photographs: shape, frame, geometry, determinism, and honesty of the grade."""

import time

import cv2
import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import cohen_kappa_score
from sklearn.model_selection import cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from m2cnn_tf.data import synthetic
from m2cnn_tf.data.synthetic import SYNTHETIC, SyntheticFundus, make_dataset, make_fundus

# Reduced widths keep the suite fast; the geometry is relative to the disc, so it is the same
# picture as at camera size.
SMALL = 320
HONESTY_WIDTH = 600
HONESTY_IMAGES = 500


def _radius_map(fundus: SyntheticFundus) -> np.ndarray:
    """Distance of every pixel from the disc centre, in disc radii."""
    cx, cy, r = fundus.disc
    rows, cols = np.ogrid[: fundus.image.shape[0], : fundus.image.shape[1]]
    return np.hypot(cols - cx, rows - cy) / r


def _is_clipped(fundus: SyntheticFundus) -> bool:
    _, cy, r = fundus.disc
    return cy - r < 0 or cy + r > fundus.image.shape[0]


def test_default_photograph_is_camera_sized_rgb_uint8():
    for seed in range(2):
        f = make_fundus(2, seed)
        h, w = f.image.shape[:2]
        assert f.image.dtype == np.uint8 and f.image.ndim == 3 and f.image.shape[2] == 3
        assert SYNTHETIC.camera_width[0] <= w <= SYNTHETIC.camera_width[1]
        assert SYNTHETIC.aspect_ratio[0] - 0.01 <= w / h <= SYNTHETIC.aspect_ratio[1] + 0.01
        assert f.lesion_mask.shape == (h, w) and f.lesion_mask.dtype == bool
        assert f.grade == 2 and f.eye in ("left", "right")


def test_camera_sized_photograph_is_fast():
    make_fundus(4, 0)  # warm-up: imports, OpenCV's thread pool
    start = time.process_time()
    for seed in range(3):
        make_fundus(4, seed)
    per_image = (time.process_time() - start) / 3
    # Typically ~0.1 s of CPU; the bound only catches drawing at full resolution by mistake.
    assert per_image < 1.0, f"{per_image:.2f} s of CPU per camera-sized photograph"


def test_requested_width_and_relative_geometry():
    small, large = make_fundus(3, 5, width=SMALL), make_fundus(3, 5, width=4 * SMALL)
    assert small.image.shape[1] == SMALL and large.image.shape[1] == 4 * SMALL
    assert small.eye == large.eye
    np.testing.assert_allclose(np.array(large.disc) / 4, small.disc, atol=1.0)


def test_black_frame_and_bright_rim():
    for seed in range(12):
        f = make_fundus(seed % 5, seed, width=SMALL * 2)
        corners = [f.image[:5, :5], f.image[:5, -5:], f.image[-5:, :5], f.image[-5:, -5:]]
        assert max(int(c.max()) for c in corners) <= SYNTHETIC.frame_max
        r = _radius_map(f)
        # Away from the aperture's edge (JPEG rings within a block of it) the frame is 0–10.
        assert np.percentile(f.image[r > 1.05], 99.9) <= SYNTHETIC.frame_max
        # The fundus stays well above the frame up to its rim, as find_fundus needs.
        rim = f.image[(r > 0.95) & (r < 0.98)].max(axis=1)
        assert np.percentile(rim, 1) >= 25, f"seed {seed}: rim too dark"


def test_some_discs_clipped_and_both_eyes_occur():
    photos = [make_fundus(0, seed, width=128) for seed in range(40)]
    clipped = sum(_is_clipped(f) for f in photos)
    assert 0.2 * len(photos) <= clipped <= 0.8 * len(photos)
    eyes = [f.eye for f in photos]
    assert 0.2 * len(photos) <= eyes.count("left") <= 0.8 * len(photos)
    # The disc always fits horizontally.
    for f in photos:
        cx, _, r = f.disc
        assert cx - r >= 0 and cx + r <= f.image.shape[1]


def test_optic_disc_is_on_the_nasal_side():
    # The optic disc is the brightest blob: in a left eye it lies right of the centre (EyePACS).
    for seed in range(8):
        f = make_fundus(0, seed, width=SMALL)
        luminance = cv2.GaussianBlur(f.image.astype(np.float32).sum(axis=2), (0, 0), 3)
        _, _, _, (x, _) = cv2.minMaxLoc(luminance)
        assert (x > f.disc[0]) == (f.eye == "left"), f"seed {seed}"


def test_eye_can_be_imposed_without_changing_the_rest():
    drawn = make_fundus(2, 9, width=SMALL)
    other = "left" if drawn.eye == "right" else "right"
    same = make_fundus(2, 9, width=SMALL, eye=drawn.eye)
    mirrored = make_fundus(2, 9, width=SMALL, eye=other)
    assert np.array_equal(same.image, drawn.image) and mirrored.eye == other
    assert mirrored.disc == drawn.disc and not np.array_equal(mirrored.image, drawn.image)
    with pytest.raises(ValueError, match="left"):
        make_fundus(2, 9, width=SMALL, eye="both")


def test_lesion_mask_empty_at_grade_0_and_present_from_grade_1():
    for seed in range(5):
        for width in (128, SMALL):
            masks = [make_fundus(g, seed, width=width).lesion_mask for g in synthetic.GRADES]
            assert not masks[0].any()
            assert all(m.any() for m in masks[1:]), f"seed {seed}, width {width}"


def test_lesions_stay_inside_the_field_of_view():
    for seed in range(5):
        f = make_fundus(4, seed, width=SMALL)
        assert (_radius_map(f)[f.lesion_mask] < 0.9).all()


@pytest.mark.parametrize("grade", [-1, 5, 2.0, "3", None, True])
def test_invalid_grade_names_the_allowed_values(grade):
    with pytest.raises(ValueError, match=r"0, 1, 2, 3, 4"):
        make_fundus(grade, 0, width=SMALL)


@pytest.mark.parametrize(
    "kwargs", [dict(seed=-1), dict(seed=1.5), dict(width=10), dict(width=300.0)]
)
def test_invalid_seed_or_width_is_refused(kwargs):
    with pytest.raises(ValueError, match="seed|width"):
        make_fundus(**{"grade": 1, "seed": 0, "width": SMALL, **kwargs})


def test_same_seed_same_photograph_different_seed_different():
    a, b = make_fundus(3, 11, width=SMALL), make_fundus(3, 11, width=SMALL)
    c = make_fundus(3, 12, width=SMALL)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.lesion_mask, b.lesion_mask)
    assert (a.eye, a.disc) == (b.eye, b.disc)
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.lesion_mask, c.lesion_mask)


def test_nuisance_does_not_depend_on_the_grade():
    # One seed is one photograph of one retina: grades differ only around their lesions
    # (up to a JPEG block and the lesions' soft edges).
    for seed in range(4):
        healthy = make_fundus(0, seed, width=SMALL * 2)
        for grade in (1, 4):
            sick = make_fundus(grade, seed, width=SMALL * 2)
            assert (sick.eye, sick.disc) == (healthy.eye, healthy.disc)
            near = cv2.dilate(sick.lesion_mask.astype(np.uint8), np.ones((41, 41), np.uint8)) > 0
            assert near.mean() < 0.9
            assert np.array_equal(sick.image[~near], healthy.image[~near])


def test_dataset_is_balanced_and_deterministic():
    first = list(make_dataset(12, seed=3, width=128))
    again = list(make_dataset(12, seed=3, width=128))
    assert [f.grade for f in first] == [f.grade for f in again]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(first, again))
    counts = np.bincount([f.grade for f in first], minlength=5)
    assert counts.max() - counts.min() <= 1
    only = [f.grade for f in make_dataset(10, seed=3, width=128, grades=[0, 4])]
    assert sorted(only) == [0] * 5 + [4] * 5
    assert [f.grade for f in make_dataset(12, seed=4, width=128)] != [f.grade for f in first]


def test_dataset_arguments_are_checked_at_the_call():
    with pytest.raises(ValueError, match="0, 1, 2, 3, 4"):
        make_dataset(3, seed=0, grades=[1, 7])
    with pytest.raises(ValueError, match="at least one"):
        make_dataset(3, seed=0, grades=[])
    with pytest.raises(ValueError, match="num_images"):
        make_dataset(-1, seed=0)


def test_global_colour_statistics_do_not_predict_the_grade_but_lesions_grow_with_it():
    features, grades, lesion_pixels = [], [], []
    for f in make_dataset(HONESTY_IMAGES, seed=2024, width=HONESTY_WIDTH):
        means, stds = cv2.meanStdDev(f.image)  # per channel
        features.append(np.concatenate([means.ravel(), stds.ravel()]))
        grades.append(f.grade)
        lesion_pixels.append(int(f.lesion_mask.sum()))
    grades = np.array(grades)
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    predicted = cross_val_predict(classifier, np.array(features), grades, cv=5)
    kappa = cohen_kappa_score(grades, predicted, weights="quadratic")
    assert kappa <= 0.2, f"channel means and stds predict the grade: quadratic kappa {kappa:.3f}"
    rho = spearmanr(grades, lesion_pixels).statistic
    assert rho >= 0.8, f"lesion pixel count vs grade: Spearman rho {rho:.3f}"
