"""stats: bootstrap intervals over patients, referable ROC/AUC, calibration; the written report."""

import json

import cv2
import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, roc_auc_score
from sklearn.metrics import roc_curve as sklearn_roc_curve

from m2cnn_tf.grading import stats, thresholds
from m2cnn_tf.evaluate import collect
from m2cnn_tf.evaluate import reporting


def _graded(n, seed=0, noise=0.8):
    """Grades, noisy scores, the score's grades and two eyes per patient."""
    rng = np.random.default_rng(seed)
    grades = rng.integers(0, 5, n)
    scores = grades + rng.normal(0.0, noise, n)
    patients = np.repeat(np.arange((n + 1) // 2), 2)[:n].astype(str)
    return grades, scores, thresholds.apply_thresholds(scores), patients


def test_kappa_interval_contains_the_point_and_narrows_as_the_sample_grows():
    widths = []
    for n in (100, 2000):
        grades, _, predicted, patients = _graded(n, seed=n)
        interval = stats.kappa_interval(grades, predicted, patients, num_resamples=300)
        assert interval.point == pytest.approx(cohen_kappa_score(grades, predicted,
                                                                 weights="quadratic"))
        assert interval.low < interval.point < interval.high
        assert interval.num_resamples == 300 and interval.confidence == 0.95
        widths.append(interval.high - interval.low)
    # the width falls like 1/sqrt(n): 20× the data, about 4.5× narrower
    assert widths[1] < widths[0] / 2.5, widths


def test_the_interval_is_reproducible_and_its_level_matters():
    grades, _, predicted, patients = _graded(300)
    a = stats.kappa_interval(grades, predicted, patients, num_resamples=200, seed=3)
    b = stats.kappa_interval(grades, predicted, patients, num_resamples=200, seed=3)
    c = stats.kappa_interval(grades, predicted, patients, num_resamples=200, seed=4)
    assert a == b and (a.low, a.high) != (c.low, c.high)
    narrow = stats.kappa_interval(grades, predicted, patients, num_resamples=200, seed=3,
                                  confidence=0.5)
    assert a.low < narrow.low < narrow.high < a.high


def test_patient_resampling_keeps_both_eyes_together():
    n = 41  # 20 patients with two eyes and one with one
    _, _, _, patients = _graded(n)
    eyes = np.array(["left", "right"] * 21)[:n]
    draws = []

    def record(patient, eye):
        draws.append((patient.copy(), eye.copy()))
        return 0.0

    stats.bootstrap_interval(record, (patients, eyes), groups=patients, num_resamples=50)
    for patient, eye in draws[1:]:  # the first call is the full sample
        for p in np.unique(patient):
            left, right = np.sum((patient == p) & (eye == "left")), np.sum(
                (patient == p) & (eye == "right"))
            assert left == right or p == patients[-1], (p, left, right)
    assert len({len(p) for p, _ in draws[1:]}) > 1  # the one-eyed patient varies the size
    # and resampling rows instead separates eyes: the check above would fail
    draws.clear()
    stats.bootstrap_interval(record, (patients, eyes), num_resamples=50)
    separated = sum(np.sum((p_ == p) & (e == "left")) != np.sum((p_ == p) & (e == "right"))
                    for p_, e in draws[1:] for p in np.unique(p_) if p != patients[-1])
    assert separated > 0


def test_undefined_resamples_are_skipped_and_counted():
    grades = np.array([0, 0, 0, 0, 0, 0, 0, 3])  # one referable eye: many resamples lack it
    scores = np.linspace(0.0, 3.0, 8)
    interval = stats.bootstrap_interval(stats.referable_auc, (grades, scores), num_resamples=200)
    assert 0 < interval.skipped < 200
    assert interval.point == pytest.approx(roc_auc_score(grades >= 2, scores))
    with pytest.raises(stats.UndefinedStatisticError, match="full sample"):
        stats.bootstrap_interval(stats.referable_auc, (np.zeros(5, int), scores[:5]))


def test_referable_auc_and_roc_equal_sklearn_with_ties():
    grades, scores, _, _ = _graded(500, seed=7, noise=1.2)
    for values in (scores, np.round(scores)):  # continuous and heavily tied
        assert stats.referable_auc(grades, values) == pytest.approx(
            roc_auc_score(grades >= stats.REFERABLE_GRADE, values), abs=1e-12)
        curve = stats.roc_curve(grades, values)
        fpr, tpr, _ = sklearn_roc_curve(grades >= 2, values, drop_intermediate=False)
        np.testing.assert_allclose(curve.false_positive_rate, fpr)
        np.testing.assert_allclose(curve.true_positive_rate, tpr)
    with pytest.raises(stats.UndefinedStatisticError, match="both classes"):
        stats.referable_auc([0, 1, 1], [0.1, 0.5, 0.9])


def test_sensitivity_specificity_at_the_fitted_cut():
    grades, scores, _, _ = _graded(400, seed=2)
    cuts = (0.6, 1.3, 2.4, 3.7)
    screening = stats.sensitivity_specificity(grades, thresholds.apply_thresholds(scores, cuts))
    truth, called = grades >= 2, scores > cuts[1]  # referable ⇔ above the cut between 1 and 2
    assert screening.sensitivity == pytest.approx(np.mean(called[truth]))
    assert screening.specificity == pytest.approx(np.mean(~called[~truth]))
    assert screening.true_positives + screening.false_negatives == truth.sum()


def test_bad_inputs_name_the_value():
    with pytest.raises(ValueError, match="7"):
        stats.kappa_interval([0, 7], [0, 1])
    with pytest.raises(ValueError, match="unequal length"):
        stats.bootstrap_interval(np.mean, ([1, 2, 3], [1, 2]))
    with pytest.raises(ValueError, match="1.5"):
        stats.bootstrap_interval(np.mean, ([1.0, 2.0],), confidence=1.5)
    with pytest.raises(ValueError, match="3 entries for 2 rows"):
        stats.bootstrap_interval(np.mean, ([1.0, 2.0],), groups=["a", "b", "c"])
    with pytest.raises(ValueError, match="finite"):
        stats.referable_auc([0, 2], [0.0, float("nan")])


def test_calibration_table():
    outcomes = np.array([0, 0, 1, 1, 1, 0])
    predicted = np.array([0.05, 0.15, 0.95, 0.85, 0.92, 0.5])
    table = stats.calibration(outcomes, predicted, num_bins=2)
    np.testing.assert_array_equal(table.count, [2, 4])
    np.testing.assert_allclose(table.observed_fraction, [0.0, 0.75])
    np.testing.assert_allclose(table.mean_predicted, [0.1, (0.95 + 0.85 + 0.92 + 0.5) / 4])
    expected = (2 * 0.1 + 4 * abs(0.75 - 0.805)) / 6
    assert table.expected_calibration_error == pytest.approx(expected)


def test_report_files_keep_the_old_keys_and_link_the_pictures(tmp_path):
    grades, scores, _, patients = _graded(120, seed=5)
    rng = np.random.default_rng(5)
    logits = 2.0 * np.eye(5)[grades] + rng.normal(0, 1, (120, 5))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    predictions = collect.Predictions(grades, scores, probabilities,
                                         np.array([f"{p}_{e}" for p, e in zip(
                                             patients, ["left", "right"] * 60)]), patients,
                                         np.abs(rng.normal(0, 0.1, 120)))
    cuts = (0.5, 1.5, 2.5, 3.5)
    report = collect.evaluate_predictions(predictions, cuts, num_resamples=100)
    paths = reporting.write_report(report, str(tmp_path), "validation", predictions)
    saved = json.loads((tmp_path / "report.json").read_text())
    for key in ("count", "grade_counts", "thresholds", "score", "probabilities", "mse"):
        assert key in saved
    assert set(saved["score"]) >= {"kappa", "accuracy", "recall_per_grade", "confusion",
                                   "referable_sensitivity", "referable_specificity",
                                   "kappa_interval"}
    assert saved["num_patients"] == 60 and saved["bootstrap"]["resampled"] == "patients"
    assert saved["referable"]["auc"] == pytest.approx(roc_auc_score(grades >= 2, scores))
    assert saved["referable"]["sensitivity"] == saved["score"]["referable_sensitivity"]
    markdown = (tmp_path / "report.md").read_text()
    for name in ("confusion_score.png", "confusion_probabilities.png", "roc.png",
                 "calibration.png"):
        assert f"]({name})" in markdown
        image = cv2.imread(str(tmp_path / name))
        assert image is not None and image.shape[0] > 200 and image.std() > 10, name
    assert f"{saved['score']['kappa_interval']['low']:.4f}" in markdown
    rows = (tmp_path / "predictions.csv").read_text().splitlines()
    assert rows[0].split(",")[:7] == ["image_id", "patient_id", "grade", "grade_from_score",
                                      "grade_from_probabilities", "score", "score_std"]
    assert len(rows) == 121 and paths["markdown"].endswith("report.md")
    assert not [p for p in tmp_path.iterdir() if "incomplete" in p.name or ".tmp" in p.name]


def test_sensitivity_and_specificity_at_the_cut_come_with_intervals_over_patients():
    from m2cnn_tf.grading import assessment

    rng = np.random.default_rng(3)
    grades = rng.integers(0, 5, 400)
    scores = grades + rng.normal(0, 0.9, 400)
    patients = np.repeat(np.arange(200), 2)
    report = assessment.referable_report(grades, scores, np.full((400, 5), 0.2),
                                         (0.5, 1.5, 2.5, 3.5), patients, num_resamples=200)
    for what in ("sensitivity", "specificity"):
        interval = report[f"{what}_interval"]
        assert interval["point"] == report[what]
        assert interval["low"] < report[what] < interval["high"] < 1.0, (what, interval)
    assert assessment.referable_report(grades, scores, np.full((400, 5), 0.2),
                                       (0.5, 1.5, 2.5, 3.5), num_resamples=0
                                       )["sensitivity_interval"] is None
