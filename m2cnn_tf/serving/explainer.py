"""Opening a model for Grad-CAM: an export (its ``explain_normalized`` signature) or a
training run's checkpoint (``explain.GradCam`` on the rebuilt Keras model)."""

from __future__ import annotations

import os
from typing import Dict

import numpy as np
import tensorflow as tf

from m2cnn_tf.explain import ExplainError, GradCam
from m2cnn_tf.grading import thresholds
from m2cnn_tf.quality import assessor as quality_assessor
from m2cnn_tf.serving import signatures
from m2cnn_tf.train import checkpoints


def _numpy(outputs) -> Dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in outputs.items()}


class Explainer:
    """Grad-CAM of normalised images, from an export or a training run."""

    resolution: int
    description: str
    assessor = None  # the model's quality assessor (``quality.assessor``), if it has one

    def explain_normalized(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        """``GradCam`` outputs (see ``OUTPUTS``) as NumPy arrays for (B, r, r, 3) uint8 images."""
        raise NotImplementedError


class ModelDirExplainer(Explainer):
    """A training run's checkpoint: ``GradCam`` on the rebuilt Keras model."""

    def __init__(self, model_dir: str, checkpoint: str = checkpoints.BEST):
        self.assessor = quality_assessor.for_run(model_dir)
        model, info = checkpoints.load_trained_model(model_dir, checkpoint)
        self.resolution = int(info["resolution"])
        self.description = f"model_dir {model_dir} ({os.path.basename(info['checkpoint'])})"
        cuts = tf.constant(thresholds.load_thresholds(model_dir)[0], tf.float32)
        self.gradcam = GradCam(model)
        self._explain = tf.function(
            lambda images: self.gradcam(images, cuts), autograph=False,
            input_signature=[signatures.normalized_images_spec(self.resolution)])

    def explain_normalized(self, images):
        return _numpy(self._explain(tf.convert_to_tensor(np.asarray(images, np.uint8))))


class ExportExplainer(Explainer):
    """A SavedModel export, through its ``explain_normalized`` signature."""

    def __init__(self, path: str):
        self.path = signatures.resolve_export(path)
        loaded = tf.saved_model.load(self.path)
        if signatures.EXPLAIN_SIGNATURE not in loaded.signatures:
            raise ExplainError(
                f"{self.path} has no {signatures.EXPLAIN_SIGNATURE!r} signature (it has "
                f"{sorted(loaded.signatures)}): it was exported before Grad-CAM was; export the "
                "training run again with export.py, or pass the run's folder as --model")
        self._signature = loaded.signatures[signatures.EXPLAIN_SIGNATURE]
        self._loaded = loaded  # the signature needs its object alive
        metadata = signatures.read_metadata(self.path)
        self.resolution = int(metadata["resolution"])
        self.assessor = signatures.export_assessor(metadata, self.path)
        self.description = f"export {self.path}"

    def explain_normalized(self, images):
        images = tf.convert_to_tensor(np.asarray(images, np.uint8))
        return _numpy(self._signature(**{signatures.NORMALIZED_INPUT: images}))


def open_explainer(path: str, checkpoint: str = checkpoints.BEST) -> Explainer:
    """An export (version folder or base path) or a training run's folder.

    Raises:
        FileNotFoundError: ``path`` is neither (naming what it holds, or that it is absent).
        ExplainError: an export written before the explain signature existed.
    """
    if signatures.model_kind(path) == signatures.EXPORT:
        return ExportExplainer(path)
    return ModelDirExplainer(path, checkpoint)
