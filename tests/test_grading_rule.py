"""One of each: the score → grade rule (NumPy = graph), kappa (= scikit-learn), the empty-batch
guard."""

import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import cohen_kappa_score, confusion_matrix

from m2cnn_tf import model as m2cnn
from m2cnn_tf.config import NUM_GRADES
from m2cnn_tf.grading import agreement, metrics, rule, stats, thresholds
from m2cnn_tf.serving import signatures

FITTED = (0.37, 1.21, 2.684, 3.9)  # cuts as fit_thresholds leaves them: not float32 values


def _both(scores, cuts):
    """The rule's grades from NumPy and from the graph."""
    scores = np.asarray(scores, np.float32)
    return (rule.apply_thresholds(scores, cuts),
            rule.apply_thresholds_tf(tf.constant(scores), tf.constant(cuts, tf.float32)).numpy())


@pytest.mark.parametrize("cuts", [rule.ROUNDING, FITTED])
def test_numpy_and_graph_give_the_same_grades_on_random_scores(cuts):
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(2.0, 1.6, 20000),
                             # float64 scores within a float32 step of a cut: the cast decides
                             np.repeat(cuts, 50) + rng.normal(0, 1e-7, 50 * len(cuts))])
    numpy_grades, graph_grades = _both(scores, cuts)
    np.testing.assert_array_equal(numpy_grades, graph_grades)
    assert numpy_grades.dtype == graph_grades.dtype == np.int32
    assert set(np.unique(numpy_grades)) == set(range(NUM_GRADES))
    # the rule as stated: how many cuts the float32 score strictly exceeds
    expected = (scores.astype(np.float32)[:, None]
                > np.asarray(cuts, np.float32)[None, :]).sum(axis=1)
    np.testing.assert_array_equal(numpy_grades, expected)


@pytest.mark.parametrize("cuts", [rule.ROUNDING, FITTED])
def test_a_score_equal_to_a_cut_takes_the_lower_grade(cuts):
    at_cuts = np.asarray(cuts, np.float32)
    numpy_grades, graph_grades = _both(at_cuts, cuts)
    np.testing.assert_array_equal(numpy_grades, [0, 1, 2, 3])
    np.testing.assert_array_equal(graph_grades, [0, 1, 2, 3])
    above = np.nextafter(at_cuts, np.float32(np.inf))
    np.testing.assert_array_equal(rule.apply_thresholds(above, cuts), [1, 2, 3, 4])


def test_halves_go_down_in_training_as_in_evaluation():
    halves = [0.5, 1.5, 2.5, 3.5]
    assert rule.apply_thresholds(halves).tolist() == [0, 1, 2, 3]  # tf.round gave 0, 2, 2, 4
    # training's confusion counts read the score through the same rule
    statistics = metrics.batch_statistics(tf.constant([0, 1, 2, 3]), tf.zeros([4, NUM_GRADES]),
                                          tf.constant(halves))
    np.testing.assert_array_equal(np.diag(statistics["confusion_score"].numpy()), [1, 1, 1, 1, 0])


def test_non_finite_scores():
    scores = [float("nan"), float("inf"), -float("inf")]
    numpy_grades, graph_grades = _both(scores, rule.ROUNDING)
    assert numpy_grades.tolist() == graph_grades.tolist() == [0, 4, 0]


def test_the_cuts_are_checked_in_one_place():
    for bad in ([0.5, 1.5, 2.5], [0.5, 0.5, 2.5, 3.5], [0.5, 1.5, float("nan"), 3.5]):
        for apply in (rule.apply_thresholds, thresholds.apply_thresholds,
                      lambda s, c: rule.apply_thresholds_tf(tf.constant(s), c)):
            with pytest.raises(ValueError, match="threshold"):
                apply([1.0], bad)
    assert thresholds.check_thresholds is rule.check_thresholds


def test_the_serving_outputs_grade_by_the_rule_and_skip_the_network_on_an_empty_batch():
    calls = []

    def network(images, training):  # stands in for the Keras model: the score is pixel (0, 0)
        calls.append(int(images.shape[0]))
        assert images.shape[0] > 0, "the network ran on an empty batch"
        score = tf.cast(images[:, 0, 0, 0], tf.float32) / 10.0
        return {"logits": tf.zeros([tf.shape(images)[0], NUM_GRADES]), "score": score}

    pixels = np.array([0, 5, 15, 16, 25, 35, 36, 60], np.uint8)  # scores 0.0 … 6.0, halves too
    images = np.zeros((len(pixels), 2, 2, 3), np.uint8)
    images[:, 0, 0, 0] = pixels
    cuts = tf.constant(rule.ROUNDING, tf.float32)
    out = signatures.model_outputs(network, tf.constant(images), cuts)
    np.testing.assert_array_equal(out["grade"].numpy(),
                                  rule.apply_thresholds(out["score"].numpy()))
    assert out["grade"].numpy().tolist() == [0, 0, 1, 2, 2, 3, 4, 4]
    empty = signatures.model_outputs(network, tf.zeros([0, 2, 2, 3], tf.uint8), cuts)
    assert calls == [len(pixels)]
    assert empty["probabilities"].shape == (0, NUM_GRADES) and empty["grade"].shape == (0,)


def test_unless_empty_returns_zero_rows_of_the_declared_shapes():
    specs = (tf.TensorSpec([None, 3, 3], tf.float32), tf.TensorSpec([None], tf.int32))

    @tf.function
    def guarded(batch):
        return m2cnn.unless_empty(batch, lambda: (batch * 2.0, tf.ones([tf.shape(batch)[0]],
                                                                       tf.int32)), specs)

    full = guarded(tf.ones([2, 3, 3]))
    assert full[0].numpy().tolist() == (2 * np.ones((2, 3, 3))).tolist()
    empty = guarded(tf.zeros([0, 3, 3]))
    assert empty[0].shape == (0, 3, 3) and empty[0].dtype == tf.float32
    assert empty[1].shape == (0,) and empty[1].dtype == tf.int32


@pytest.mark.parametrize("seed", range(4))
def test_kappa_equals_sklearn_from_labels_and_from_counts(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    truth = rng.integers(0, NUM_GRADES, n)
    predicted = np.clip(truth + rng.integers(-2, 3, n), 0, 4)
    if seed == 3:  # grades missing on both sides: the weights still use 0–4
        truth, predicted = truth % 3 * 2, predicted % 2 * 4
    labels = list(range(NUM_GRADES))
    counts = agreement.confusion(truth, predicted)
    np.testing.assert_array_equal(counts, confusion_matrix(truth, predicted, labels=labels))
    np.testing.assert_array_equal(counts, metrics.confusion_counts(truth, predicted).numpy())
    expected = cohen_kappa_score(truth, predicted, weights="quadratic", labels=labels)
    assert agreement.quadratic_kappa(truth, predicted) == pytest.approx(expected, abs=1e-12)
    assert agreement.kappa_from_counts(counts) == agreement.quadratic_kappa(truth, predicted)
    assert stats.quadratic_kappa is agreement.quadratic_kappa
    assert thresholds.kappa_with(truth + 0.2, truth) == 1.0


def test_undefined_kappa_raises_or_gives_the_value_asked_for():
    assert stats.UndefinedStatisticError is agreement.UndefinedStatisticError
    for truth, predicted in (([2, 2, 2], [2, 2, 2]), ([], [])):
        with pytest.raises(stats.UndefinedStatisticError, match="constant"):
            agreement.quadratic_kappa(truth, predicted)
        assert agreement.quadratic_kappa(truth, predicted, undefined=0.0) == 0.0
    # one true grade, predictions spread: defined, and 0 whatever the predictions
    assert agreement.quadratic_kappa([2, 2, 2, 2], [0, 2, 3, 2]) == 0.0
    with pytest.raises(ValueError, match="predicted grades must be 0–4, got 5"):
        agreement.confusion([0, 1], [0, 5])
    with pytest.raises(ValueError, match="3 true grades but 2"):
        agreement.confusion([0, 1, 2], [0, 1])
