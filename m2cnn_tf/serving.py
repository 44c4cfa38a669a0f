"""Export a trained M²CNN as a TF Serving SavedModel that takes a raw fundus photograph.

Every public DR code base preprocesses offline and ships bare weights, so serving drifts from
training. This export carries the preprocessing inside the graph (``graph_preprocess``, the
TensorFlow twin of ``fundus.load_normalized``): a camera JPEG goes in, a grade comes out.

Layout (TF Serving's): ``EXPORT_DIR/<version>/saved_model.pb``, ``variables/``, and
``assets.extra/m2cnn_metadata.json`` (resolution, variant, thresholds, preprocessing constants,
training-data checksum, validation kappa, package version). Versions are integers; a new export
takes one above the highest present and never overwrites one.

Signatures:
  serving_default(image_bytes: string [None]) — raw JPEG/PNG files, preprocessed in the graph;
  predict_normalized(images: uint8 [None, r, r, 3]) — images already normalised at r.
Both return ``probabilities`` [None, 5], ``score`` [None], ``grade`` [None] int32 (the score cut
by the exported thresholds), ``grade_from_probabilities`` [None] int32 and ``fundus_found``
[None] bool. A photograph in which no fundus is found is not an error (one bad photograph must
not fail a batch): its ``fundus_found`` is False, both grades are −1 and ``score`` and
``probabilities`` are NaN.
  explain_normalized(images: uint8 [None, r, r, 3]) — Grad-CAM maps of normalised images
(``explain.OUTPUTS``; ``python explain.py``).
  grade_patient(left_image_bytes, right_image_bytes: string [None]) — only when the run has a
two-eye fusion head (``fuse.py``): both photographs of B patients, each eye graded knowing the
other (``fusion.PATIENT_OUTPUTS``: ``left_*`` / ``right_*`` as above plus ``*_fused``); an eye
whose partner has no fundus keeps its per-eye grade.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from typing import Dict, Optional, Sequence

import keras
import tensorflow as tf

from m2cnn_tf import __version__, checkpoints, graph_preprocess, thresholds
from m2cnn_tf.config import NUM_GRADES, PREPROCESS

SERVING_SIGNATURE = "serving_default"
NORMALIZED_SIGNATURE = "predict_normalized"
EXPLAIN_SIGNATURE = "explain_normalized"  # Grad-CAM maps (m2cnn_tf.explain) of normalised images
# Both eyes of B patients through the two-eye fusion head (m2cnn_tf.fusion), when the run has one.
PATIENT_SIGNATURE = "grade_patient"
PATIENT_INPUTS = ("left_image_bytes", "right_image_bytes")
BYTES_INPUT = "image_bytes"
NORMALIZED_INPUT = "images"
OUTPUTS = ("probabilities", "score", "grade", "grade_from_probabilities", "fundus_found")
METADATA_DIR = "assets.extra"  # TF Serving's place for files that travel with a model
METADATA_FILE = "m2cnn_metadata.json"
NOT_GRADED = -1  # grade of a photograph without a fundus


class ExportError(RuntimeError):
    """The export cannot be written; the message says why."""


def model_outputs(model: keras.Model, images: tf.Tensor, cuts: tf.Tensor,
                  found: Optional[tf.Tensor] = None) -> Dict[str, tf.Tensor]:
    """The serving outputs for a batch of normalised images (see the module docstring)."""
    def run():
        out = model(images, training=False)
        return tf.cast(out["logits"], tf.float32), tf.cast(out["score"], tf.float32)

    def nothing():  # oneDNN's batch norm fails on an empty batch; TF Serving may send one
        return tf.zeros([0, NUM_GRADES], tf.float32), tf.zeros([0], tf.float32)

    logits, score = tf.cond(tf.shape(images)[0] > 0, run, nothing)
    probabilities = tf.nn.softmax(logits, axis=-1)
    grade = tf.reduce_sum(tf.cast(score[:, None] > cuts[None, :], tf.int32), axis=1)
    from_probabilities = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
    if found is None:
        found = tf.ones_like(grade, dtype=tf.bool)
    nan = tf.constant(float("nan"), tf.float32)
    return {
        "probabilities": tf.where(found[:, None], probabilities, nan),
        "score": tf.where(found, score, nan),
        "grade": tf.where(found, grade, NOT_GRADED),
        "grade_from_probabilities": tf.where(found, from_probabilities, NOT_GRADED),
        "fundus_found": found,
    }


def add_explain_endpoint(archive: keras.export.ExportArchive, model: keras.Model,
                         resolution: int, cuts: tf.Tensor) -> None:
    """Adds ``explain_normalized(images: uint8 [None, r, r, 3])``: Grad-CAM in the graph.

    A SavedModel has no Keras graph left to differentiate, so the gradients are taken here, at
    export time: the outputs are ``explain.OUTPUTS`` (the maps ``cam_score``, ``cam_class``,
    ``pixels_score``, ``pixels_class`` [None, r, r] in 0–1, ``predicted_class``,
    ``probabilities``, ``score``, ``grade``).
    """
    from m2cnn_tf import explain  # imported here: explain imports this module

    gradcam = explain.GradCam(model)

    def explain_normalized(images):
        return gradcam(images, cuts)

    archive.add_endpoint(EXPLAIN_SIGNATURE, explain_normalized, input_signature=[
        tf.TensorSpec([None, resolution, resolution, 3], tf.uint8, name=NORMALIZED_INPUT)])


def add_patient_endpoint(archive: keras.export.ExportArchive, model: keras.Model,
                         resolution: int, cuts: tf.Tensor, fusion_head) -> None:
    """Adds ``grade_patient(left_image_bytes, right_image_bytes: string [None])``.

    Both photographs of B patients are preprocessed in the graph as in ``serving_default``; each
    eye is graded by the two-eye fusion head (``fusion.patient_outputs``: outputs
    ``fusion.PATIENT_OUTPUTS``, ``left_*`` and ``right_*``), or by the main model alone when no
    fundus is found in the other eye.

    Args:
      fusion_head: a ``fusion.FusionHead`` trained on this model's checkpoint.
    """
    from m2cnn_tf import fusion  # imported here: fusion is needed only when a run has a head

    features_model = fusion.feature_model(model)
    archive.track(fusion_head.head)
    fused_cuts = tf.constant(fusion_head.thresholds, tf.float32)

    def grade_patient(left_image_bytes, right_image_bytes):
        left, left_found = graph_preprocess.preprocess_batch(left_image_bytes, resolution)
        right, right_found = graph_preprocess.preprocess_batch(right_image_bytes, resolution)
        return fusion.patient_outputs(features_model, fusion_head.head, cuts, fused_cuts,
                                      left, right, left_found, right_found)

    archive.add_endpoint(PATIENT_SIGNATURE, grade_patient, input_signature=[
        tf.TensorSpec([None], tf.string, name=name) for name in PATIENT_INPUTS])


def build_archive(model: keras.Model, resolution: int, cuts: Sequence[float],
                  fusion_head=None) -> keras.export.ExportArchive:
    """An ExportArchive with both signatures around ``model``."""
    cuts_tensor = tf.constant(thresholds.check_thresholds(cuts), tf.float32)
    archive = keras.export.ExportArchive()
    archive.track(model)

    def predict_normalized(images):
        return model_outputs(model, images, cuts_tensor)

    def serve_bytes(image_bytes):
        images, found = graph_preprocess.preprocess_batch(image_bytes, resolution)
        return model_outputs(model, images, cuts_tensor, found)

    archive.add_endpoint(NORMALIZED_SIGNATURE, predict_normalized, input_signature=[
        tf.TensorSpec([None, resolution, resolution, 3], tf.uint8, name=NORMALIZED_INPUT)])
    archive.add_endpoint(SERVING_SIGNATURE, serve_bytes, input_signature=[
        tf.TensorSpec([None], tf.string, name=BYTES_INPUT)])
    add_explain_endpoint(archive, model, resolution, cuts_tensor)
    if fusion_head is not None:
        add_patient_endpoint(archive, model, resolution, cuts_tensor, fusion_head)
    return archive


def _fusion_head(model_dir: str, model: keras.Model):
    """(the run's fusion head or None, what the metadata says about it).

    A head trained on another checkpoint than the one exported (say ``--checkpoint=latest``
    after fuse.py used best) is left out, and the metadata says why, rather than failing the
    export.
    """
    from m2cnn_tf import fusion

    if not fusion.has_head(model_dir):
        return None, f"no {PATIENT_SIGNATURE}: the run has no fusion head (fuse.py)"
    try:
        head = fusion.load_head(model_dir, model)
    except fusion.FusionError as e:
        return None, f"no {PATIENT_SIGNATURE}: {e}"
    return head, {"signature": PATIENT_SIGNATURE, "thresholds": list(head.thresholds),
                  "trained_on": head.record.get("checkpoint"),
                  "kappa": head.record.get("kappa"),
                  "one_eye": "a patient with one fundus found keeps the per-eye grade"}


def existing_versions(export_dir: str) -> list:
    """Integer version folders under an export base directory, ascending."""
    if not os.path.isdir(export_dir):
        return []
    return sorted(int(n) for n in os.listdir(export_dir)
                  if re.fullmatch(r"\d+", n) and os.path.isdir(os.path.join(export_dir, n)))


def export_saved_model(model_dir: str, export_dir: str, version: Optional[int] = None,
                       checkpoint: str = checkpoints.BEST) -> str:
    """Exports a training run's checkpoint as ``export_dir/<version>``.

    Args:
      model_dir: the training run (config.json, checkpoints, optional thresholds.json).
      export_dir: TF Serving's base path for this model.
      version: integer version; default one above the highest present.
      checkpoint: "best" or "latest".

    Returns:
      The written version folder.

    Raises:
      ExportError: the version exists already, or ``version`` is not a positive integer.
      FileNotFoundError: no such run or checkpoint (naming what exists).
    """
    versions = existing_versions(export_dir)
    if version is None:
        version = (versions[-1] + 1) if versions else 1
    if not isinstance(version, int) or version < 1:
        raise ExportError(f"--version must be a positive integer, got {version!r}")
    target = os.path.join(export_dir, str(version))
    if os.path.exists(target):
        raise ExportError(f"{target} exists already; exports are never overwritten (versions "
                          f"present: {versions}); choose another --version or leave it unset")
    model, info = checkpoints.load_trained_model(model_dir, checkpoint)
    resolution = int(info["resolution"])
    cuts, cuts_source = thresholds.load_thresholds(model_dir)
    validation = info.get("validation") or {}
    metadata = {
        "resolution": resolution,
        "variant": info["variant"],
        "thresholds": list(cuts),
        "thresholds_source": (f"fitted on {checkpoints.read_json(cuts_source)['fitted_on']}"
                              if cuts_source != "rounding" else "rounding"),
        "preprocessing": dataclasses.asdict(PREPROCESS),
        "training_data_checksum": info.get("data_checksum"),
        "validation_kappa_score": validation.get("kappa_score"),
        "validation_kappa_argmax": validation.get("kappa_argmax"),
        "checkpoint": os.path.basename(info["checkpoint"]),
        "step": info["step"],
        "package_version": __version__,
        "signatures": {SERVING_SIGNATURE: BYTES_INPUT, NORMALIZED_SIGNATURE: NORMALIZED_INPUT,
                       EXPLAIN_SIGNATURE: NORMALIZED_INPUT},
        "outputs": list(OUTPUTS),
        "no_fundus": "fundus_found False, grades -1, score and probabilities NaN",
    }
    fusion_head, metadata["fusion"] = _fusion_head(model_dir, model)
    if fusion_head is not None:
        metadata["signatures"][PATIENT_SIGNATURE] = list(PATIENT_INPUTS)
    os.makedirs(export_dir, exist_ok=True)
    # Written under a hidden name and renamed: TF Serving polls the base path and must never
    # load a half-written version.
    staging = os.path.join(export_dir, f".incomplete-{version}-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        build_archive(model, resolution, cuts, fusion_head).write_out(staging, verbose=False)
        os.makedirs(os.path.join(staging, METADATA_DIR), exist_ok=True)
        with open(os.path.join(staging, METADATA_DIR, METADATA_FILE), "w") as f:
            json.dump(metadata, f, indent=2, sort_keys=True)
        os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


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


def is_export(path: str) -> bool:
    try:
        resolve_export(path)
        return True
    except FileNotFoundError:
        return False
