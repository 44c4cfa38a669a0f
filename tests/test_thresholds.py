"""Score → grade: rounding, fitted thresholds, and their kappa."""

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from m2cnn_tf.grading import thresholds


def _noisy_scores(n, seed, bias=0.0):
    rng = np.random.default_rng(seed)
    grades = rng.choice(5, size=n, p=[0.6, 0.1, 0.15, 0.08, 0.07])
    scores = grades + bias + rng.normal(0, 0.7, n)
    return scores, grades


def test_rounding_is_the_default_and_matches_sklearn():
    scores, grades = _noisy_scores(400, 0)
    predicted = thresholds.apply_thresholds(scores)
    np.testing.assert_array_equal(predicted, np.clip(np.floor(scores + 0.5), 0, 4))
    assert thresholds.kappa_with(scores, grades) == pytest.approx(
        cohen_kappa_score(grades, predicted, weights="quadratic"))


@pytest.mark.parametrize("seed, bias", [(1, 0.0), (2, 0.4), (3, -0.3), (4, 0.0)])
def test_fitted_thresholds_never_lower_kappa_below_rounding(seed, bias):
    scores, grades = _noisy_scores(300, seed, bias)
    rounding = thresholds.kappa_with(scores, grades)
    cuts, kappa = thresholds.fit_thresholds(scores, grades)
    assert kappa >= rounding
    assert kappa == pytest.approx(cohen_kappa_score(
        grades, thresholds.apply_thresholds(scores, cuts), weights="quadratic"))
    assert list(cuts) == sorted(cuts)
    if bias:  # a shifted score is what fitted cuts are for
        assert kappa > rounding + 0.005


def test_thresholds_round_trip_through_the_model_dir(tmp_path):
    assert thresholds.load_thresholds(str(tmp_path)) == (thresholds.ROUNDING, "rounding")
    thresholds.save_thresholds(str(tmp_path), (0.4, 1.6, 2.4, 3.7), 0.8, 0.75, "validation")
    cuts, source = thresholds.load_thresholds(str(tmp_path))
    assert cuts == (0.4, 1.6, 2.4, 3.7) and source.endswith("thresholds.json")


def test_bad_thresholds_are_rejected():
    for bad in ([0.5, 1.5, 2.5], [0.5, 0.5, 2.5, 3.5], [0.5, 1.5, float("nan"), 3.5]):
        with pytest.raises(ValueError, match="threshold"):
            thresholds.apply_thresholds([1.0], bad)
