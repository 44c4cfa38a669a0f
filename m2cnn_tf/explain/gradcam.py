"""Grad-CAM explanations: where in a photograph the network sees the grade it gives.

Grad-CAM (Selvaraju et al., 2017) at the *last feature map* — the output of the last cell group
before global average pooling, which depends on the Multi-Cell path (224 → ``basenet``, 448 →
``medial_cells``, 720 → ``large_cells``; 5×5, 5×5 and 4×4 cells). For a target y, with A^k the
feature map's channels::

    α_k = mean_ij ∂y/∂A^k_ij,     CAM = ReLU(Σ_k α_k A^k)

computed for two targets: the ``score`` head (the regressed grade) and the logit of the
predicted class (argmax), and upsampled bilinearly to the input size (``cam_score``,
``cam_class``).

A 5×5 map cannot outline lesions a few pixels wide: even a map that put all its weight on the
cell densest in lesions would place only about 2.4× the lesion area fraction on lesion pixels
(measured on synthetic photographs, tests/test_explain.py). So each Grad-CAM map is also
multiplied, pixel by pixel, by gradient × input, |Σ_colour ∂y/∂x · (x − γ)|, γ being Eq. 1's
grey level (``pixels_score``, ``pixels_class``) — the pixel-level refinement of Guided
Grad-CAM, with gradient × input in place of guided back-propagation: Grad-CAM says where,
gradient × input which pixels there. Every map is divided by its maximum, so it lies in 0–1
(all zeros when nothing speaks for the target).

``GradCam(model)`` is the computation itself, a TensorFlow function of normalised images; the
export carries it as the ``explain_normalized`` signature (``serving.export``), so a SavedModel,
which has no Keras graph to differentiate, explains itself, and a training run's folder runs the
same code on its Keras model (``serving.explainer`` opens either). ``explain.pictures`` draws
the maps and ``explain.files`` writes them (``python explain.py``).
"""

from __future__ import annotations

from typing import Dict

import keras
import tensorflow as tf

from m2cnn_tf import model as m2cnn
from m2cnn_tf.config import NUM_GRADES, PREPROCESS
from m2cnn_tf.grading import rule


# The heads start at global average pooling: its input is the last feature map.
POOLING_LAYER = "avg_pool"


# The layers between the feature map and the outputs, in order (see model.build_m2cnn).
DROPOUT_LAYER = "dropout"


LOGITS_LAYER, SCORE_LAYER = m2cnn.HEAD_LAYERS


SCORE_RESHAPE_LAYER = "score"


# What GradCam returns (and the export's explain_normalized signature).
# The maps, (B, r, r) in 0–1: Grad-CAM of each target, then Grad-CAM × |gradient × input|.
MAPS = ("cam_score", "pixels_score", "cam_class", "pixels_class")


OUTPUTS = MAPS + ("predicted_class", "probabilities", "score", "grade")


class ExplainError(RuntimeError):
    """The model cannot be explained (e.g. an export without the explain signature)."""


def last_feature_block(model: keras.Model) -> str:
    """The block whose output is the last feature map: the last cell group on the model's path.

    Args:
        model: a model built by ``model.build_m2cnn``.

    Returns:
        "basenet" (small path: < 350 px, or any size with the Multi-Cell switch off),
        "medial_cells" (medium) or "large_cells" (large).
    """
    return ((m2cnn.BASENET,) + m2cnn.CELLS_ON_PATH[m2cnn.path_of(model)])[-1]


class GradCam:
    """Grad-CAM maps of a ``build_m2cnn`` model for the score and for the predicted class.

    The model is split at global average pooling: ``trunk`` (image → last feature map, the
    output of ``block``) and the heads, applied layer by layer to the feature map so that the
    gradients of both targets with respect to it come from one tape.

    Args:
        model: a model built by ``model.build_m2cnn`` (trained or not).
    """

    def __init__(self, model: keras.Model):
        self.model = model
        self.resolution = int(model.input.shape[1])
        self.block = last_feature_block(model)
        features = model.get_layer(POOLING_LAYER).input
        self.trunk = keras.Model(model.input, features, name=f"{model.name}_trunk")
        # The trunk holds exactly the layers that compute the pooling's input, in topological
        # order, so its last layer is the one that outputs the feature map.
        if self.trunk.layers[-1] is not model.get_layer(self.block):
            raise ValueError(f"{model.name!r}: global pooling does not read the output of "
                             f"{self.block!r}, the last block on its path (it reads the output "
                             f"of {self.trunk.layers[-1].name!r})")
        self._heads = [model.get_layer(n) for n in
                       (POOLING_LAYER, DROPOUT_LAYER, LOGITS_LAYER, SCORE_LAYER,
                        SCORE_RESHAPE_LAYER)]

    def heads(self, features: tf.Tensor):
        """(logits (B, 5), score (B,)) from the last feature map, as the model computes them."""
        pool, dropout, head_logits, head_score, reshape = self._heads
        pooled = dropout(pool(features), training=False)
        return head_logits(pooled), reshape(head_score(pooled))

    def __call__(self, images: tf.Tensor, cuts: tf.Tensor) -> Dict[str, tf.Tensor]:
        """Grad-CAM maps and predictions for a batch of normalised images.

        Args:
            images: (B, r, r, 3) Eq. 1-normalised pixels (uint8 or float, 0–255).
            cuts: (4,) float32 score thresholds, for ``grade`` (``grading.rule``).

        Returns:
            the ``MAPS`` (B, r, r) float32 in 0–1, ``predicted_class`` (B,)
            int32 (argmax of the logits), ``probabilities`` (B, 5), ``score`` (B,) float32 and
            ``grade`` (B,) int32 (the score cut by ``cuts``).
        """
        images = tf.cast(images, tf.float32)
        r = self.resolution

        def run():
            with tf.GradientTape(persistent=True) as tape:
                tape.watch(images)
                features = tf.cast(self.trunk(images, training=False), tf.float32)
                logits, score = self.heads(features)
                logits, score = tf.cast(logits, tf.float32), tf.cast(score, tf.float32)
                predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
                class_logit = tf.gather(logits, predicted, batch_dims=1)
            maps = []
            for target in (score, class_logit):
                # Each image's targets depend on its own pixels only, so the gradient of the
                # batch sum is every image's own gradient.
                on_features, on_pixels = tape.gradient(target, [features, images])
                cam = _cam(features, on_features, r)
                maps += [_normalize(cam), _normalize(cam * _pixel_saliency(on_pixels, images))]
            del tape
            return (*maps, predicted, tf.nn.softmax(logits, axis=-1), score)

        map_spec = tf.TensorSpec([None, r, r], tf.float32)
        *maps, predicted, probabilities, score = m2cnn.unless_empty(images, run, (
            *[map_spec] * len(MAPS), tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([None, NUM_GRADES], tf.float32), tf.TensorSpec([None], tf.float32)))
        grade = rule.apply_thresholds_tf(score, cuts)
        return {**dict(zip(MAPS, maps)), "predicted_class": predicted,
                "probabilities": probabilities, "score": score, "grade": grade}


def _cam(features: tf.Tensor, gradients: tf.Tensor, size: int) -> tf.Tensor:
    """ReLU(Σ_k α_k A^k) of (B, h, w, C) features, upsampled bilinearly to (B, size, size)."""
    weights = tf.reduce_mean(gradients, axis=[1, 2], keepdims=True)  # α_k, (B, 1, 1, C)
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))  # (B, h, w)
    return tf.image.resize(cam[..., None], [size, size], method="bilinear")[..., 0]


def _pixel_saliency(gradients: tf.Tensor, images: tf.Tensor) -> tf.Tensor:
    """|Σ_colour ∂target/∂pixel · (pixel − γ)|: (B, r, r, 3) → (B, r, r).

    Gradient × input against Eq. 1's grey level γ, which is what featureless retina becomes:
    the first-order share of the target that each pixel's local contrast carries.
    """
    return tf.abs(tf.reduce_sum(gradients * (images - PREPROCESS.gamma), axis=-1))


def _normalize(maps: tf.Tensor) -> tf.Tensor:
    """Each (B, r, r) map divided by its maximum: 0–1, all zeros when the map is."""
    peak = tf.reduce_max(maps, axis=[1, 2], keepdims=True)
    return tf.math.divide_no_nan(maps, peak)
