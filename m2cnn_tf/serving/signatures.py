"""The export's contract: signature and input names, the serving outputs, finding an export.

What every reader of an export needs (``predictor``, ``explainer``, ``tta``, evaluate.py) and
what the writer (``serving.export``) promises, kept apart from the writer so that readers do not
import the graphs the writer assembles (Grad-CAM, two-eye fusion).

Layout (TF Serving's): ``EXPORT_DIR/<version>/saved_model.pb``, ``variables/``, and
``assets.extra/m2cnn_metadata.json``. Versions are integers.

Signatures:
  serving_default(image_bytes: string [None]) — raw JPEG/PNG files, preprocessed in the graph;
  predict_normalized(images: uint8 [None, r, r, 3]) — images already normalised at r.
Both return ``probabilities`` [None, 5], ``score`` [None], ``grade`` [None] int32 (the score cut
by the exported thresholds: ``grading.rule``; for a run trained with cross-entropy only, whose
score head is untrained, the argmax of the probabilities — the metadata's ``prediction`` says
which), ``grade_from_probabilities`` [None] int32, ``fundus_found`` [None] bool,
``quality_probabilities`` [None, 3] (P(Good), P(Usable), P(Reject), EyeQ's scale) and
``gradable`` [None] int32. A photograph in which no fundus is found is not an error (one bad
photograph must not fail a batch): its ``fundus_found`` is False, both grades are −1 and
``score`` and ``probabilities`` are NaN.
  Quality (``m2cnn_tf.quality``): ``gradable`` is 1 when the export's quality assessor puts
P(Reject) below its operating point (recorded in the metadata), 0 when not — and 0 for a
photograph without a fundus, whose ``quality_probabilities`` are (0, 0, 1) — and −1 (not
assessed) when the export has no assessor (then ``quality_probabilities`` are NaN) or the input
was already normalised (``predict_normalized``: the light and focus of the photograph are gone).
The grade is given whatever the quality: a client that wants to skip ungradable photographs
skips ``gradable == 0``.
  explain_normalized(images: uint8 [None, r, r, 3]) — Grad-CAM maps of normalised images
(``explain.OUTPUTS``; ``python explain.py``).
  grade_patient(left_image_bytes, right_image_bytes: string [None]) — only when the run has a
two-eye fusion head (``fuse.py``).
"""

from __future__ import annotations

import json
import os
import re
from typing import Dict, Optional

import keras
import tensorflow as tf

from m2cnn_tf import model as m2cnn
from m2cnn_tf.config import NUM_GRADES, PREDICT_BY_PROBABILITIES, PREDICT_BY_SCORE
from m2cnn_tf.grading import rule
from m2cnn_tf.quality import assessor as quality_assessor
from m2cnn_tf.train import checkpoints


SERVING_SIGNATURE = "serving_default"


NORMALIZED_SIGNATURE = "predict_normalized"


EXPLAIN_SIGNATURE = "explain_normalized"  # Grad-CAM maps (m2cnn_tf.explain) of normalised images


# Both eyes of B patients through the two-eye fusion head (m2cnn_tf.fusion), when the run has one.
PATIENT_SIGNATURE = "grade_patient"


PATIENT_INPUTS = ("left_image_bytes", "right_image_bytes")


BYTES_INPUT = "image_bytes"


NORMALIZED_INPUT = "images"


def normalized_images_spec(resolution: int) -> tf.TensorSpec:
    """Normalised images as every normalised-image function takes them: uint8
    [None, r, r, 3], the batch dimension free (one trace serves every batch size)."""
    return tf.TensorSpec([None, resolution, resolution, 3], tf.uint8, name=NORMALIZED_INPUT)


OUTPUTS = ("probabilities", "score", "grade", "grade_from_probabilities", "fundus_found",
           quality_assessor.PROBABILITIES_OUTPUT, quality_assessor.GRADABLE_OUTPUT)


METADATA_DIR = "assets.extra"  # TF Serving's place for files that travel with a model


METADATA_FILE = "m2cnn_metadata.json"


NOT_GRADED = -1  # grade of a photograph without a fundus


def prediction_of(metadata: Dict) -> str:
    """The head a model is read by, from a run's info or an export's metadata: its
    ``prediction``, or the score for models from before it was recorded."""
    return metadata.get("prediction", PREDICT_BY_SCORE)


def model_outputs(model: keras.Model, images: tf.Tensor, cuts: tf.Tensor,
                  found: Optional[tf.Tensor] = None,
                  quality: Optional[Dict[str, tf.Tensor]] = None,
                  prediction: str = PREDICT_BY_SCORE) -> Dict[str, tf.Tensor]:
    """The serving outputs for a batch of normalised images (see the module docstring).

    Args:
      quality: the photographs' quality outputs (``quality.assessor``); without them the
        images are not assessed (NaN, −1).
      prediction: ``grade`` is the score cut by ``cuts``, or with
        ``PREDICT_BY_PROBABILITIES`` the argmax of the probabilities.
    """
    def run():
        out = model(images, training=False)
        return tf.cast(out["logits"], tf.float32), tf.cast(out["score"], tf.float32)

    logits, score = m2cnn.unless_empty(images, run, (
        tf.TensorSpec([None, NUM_GRADES], tf.float32), tf.TensorSpec([None], tf.float32)))
    probabilities = tf.nn.softmax(logits, axis=-1)
    grade = rule.apply_thresholds_tf(score, cuts)
    from_probabilities = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
    if prediction == PREDICT_BY_PROBABILITIES:
        grade = from_probabilities
    if found is None:
        found = tf.ones_like(grade, dtype=tf.bool)
    if quality is None:
        quality = quality_assessor.unassessed_outputs(found)
    nan = tf.constant(float("nan"), tf.float32)
    return {
        "probabilities": tf.where(found[:, None], probabilities, nan),
        "score": tf.where(found, score, nan),
        "grade": tf.where(found, grade, NOT_GRADED),
        "grade_from_probabilities": tf.where(found, from_probabilities, NOT_GRADED),
        "fundus_found": found,
        **quality,
    }


def existing_versions(export_dir: str) -> list:
    """Integer version folders under an export base directory, ascending."""
    if not os.path.isdir(export_dir):
        return []
    return sorted(int(n) for n in os.listdir(export_dir)
                  if re.fullmatch(r"\d+", n) and os.path.isdir(os.path.join(export_dir, n)))


def resolve_export(path: str) -> str:
    """A version folder from either a version folder or a base path (highest version)."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    versions = existing_versions(path)
    if versions:
        return os.path.join(path, str(versions[-1]))
    raise FileNotFoundError(f"{path} is neither a SavedModel (no saved_model.pb) nor an export "
                            "base path with integer version folders")


def read_metadata(version_dir: str) -> Dict:
    with open(os.path.join(version_dir, METADATA_DIR, METADATA_FILE)) as f:
        return json.load(f)


def export_assessor(metadata: Dict, version_dir: str) -> Optional[quality_assessor.Assessor]:
    """The quality assessor an export was built with (its metadata's), or None."""
    data = (metadata.get("quality") or {}).get("assessor")
    return quality_assessor.from_json(data, f"in {version_dir}") if data else None


def is_export(path: str) -> bool:
    try:
        resolve_export(path)
        return True
    except FileNotFoundError:
        return False


EXPORT, TRAINING_RUN = "export", "training run"


def model_kind(path: str) -> str:
    """``EXPORT`` or ``TRAINING_RUN`` for a ``--model`` path.

    Raises:
        FileNotFoundError: ``path`` is neither, naming what it holds (or that it is absent).
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"--model={path} does not exist")
    if is_export(path):
        return EXPORT
    if os.path.isfile(os.path.join(path, checkpoints.CONFIG_JSON)):
        return TRAINING_RUN
    contents = ", ".join(sorted(os.listdir(path))[:10]) if os.path.isdir(path) else "a file"
    raise FileNotFoundError(f"--model={path} is neither an export (saved_model.pb or integer "
                            f"version folders) nor a training run (config.json); it holds: "
                            f"{contents}")
