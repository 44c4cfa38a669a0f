"""Export a trained M²CNN as a TF Serving SavedModel that takes a raw fundus photograph.

Every public DR code base preprocesses offline and ships bare weights, so serving drifts from
training. This export carries the preprocessing inside the graph (``preprocess.graph``, the
TensorFlow twin of ``fundus.load_normalized``): a camera JPEG goes in, a grade comes out. The
signatures, their inputs and outputs are the contract in ``serving.signatures``; this module
writes them: ``assets.extra/m2cnn_metadata.json`` records resolution, variant, Multi-Cell switch,
the head ``grade`` reads (``prediction``: the score, cut by the thresholds; or, for a run trained
with cross-entropy only, the argmax of the probabilities — its score head is untrained),
thresholds, preprocessing constants, training-data checksum, validation kappa and package
version. A new
export takes the version one above the highest present and never overwrites one.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, Optional, Sequence, Union

import keras
import tensorflow as tf

from m2cnn_tf import __version__, explain, fusion
from m2cnn_tf.config import MULTICELL_AUTO, PREDICT_BY_SCORE, PREPROCESS
from m2cnn_tf.grading import thresholds
from m2cnn_tf.quality import assessor as quality_assessor
from m2cnn_tf.serving.signatures import (BYTES_INPUT, EXPLAIN_SIGNATURE, METADATA_DIR,
                                         METADATA_FILE, NORMALIZED_INPUT, NORMALIZED_SIGNATURE,
                                         OUTPUTS, PATIENT_INPUTS, PATIENT_SIGNATURE,
                                         SERVING_SIGNATURE, existing_versions, model_outputs,
                                         normalized_images_spec, prediction_of)
from m2cnn_tf.train import checkpoints
from m2cnn_tf.util import atomic


# What the metadata says the ``grade`` output is.
GRADE_BY_SCORE = "the score cut by the thresholds"
GRADE_BY_PROBABILITIES = ("the argmax of the probabilities (the run was trained with "
                          "cross-entropy only: its score head is untrained)")


class ExportError(RuntimeError):
    """The export cannot be written; the message says why."""


class ServingArchive:
    """The SavedModel being written: the tracked variables and the signatures.

    Each endpoint is a ``tf.function`` with a fixed input signature, traced once, by
    ``tf.saved_model.save``. (``keras.export.ExportArchive``, used before, traced every endpoint
    first to list its variables, outside the save, which the save then traced again, and its
    SavedModel held the weights twice: for the tiny variant at 224, 10.0 s and 108 MB of
    variables against 5.3 s and 54 MB now, with equal outputs.) Keras 3 variables are TensorFlow
    trackables under the TensorFlow backend, so tracking a model's ``variables`` is what puts
    them in the SavedModel, the way ``ExportArchive.track`` does.
    """

    def __init__(self):
        self._root = tf.Module()
        self._root.tracked_variables = []
        self._signatures: Dict[str, tf.types.experimental.PolymorphicFunction] = {}

    def track(self, layer: keras.layers.Layer) -> None:
        """Saves ``layer``'s variables with the export (what the endpoints read)."""
        self._root.tracked_variables.extend(layer.variables)

    def add_endpoint(self, name: str, fn, input_signature: Sequence[tf.TensorSpec]) -> None:
        """Adds the signature ``name``: ``fn`` on inputs of ``input_signature``."""
        function = tf.function(fn, input_signature=input_signature, autograph=False)
        setattr(self._root, name, function)
        self._signatures[name] = function

    def write_out(self, path: str) -> None:
        """Writes the SavedModel at ``path``, every endpoint a signature."""
        tf.saved_model.save(self._root, path, signatures=dict(self._signatures))


def add_explain_endpoint(archive: ServingArchive, model: keras.Model,
                         resolution: int, cuts: tf.Tensor) -> None:
    """Adds ``explain_normalized(images: uint8 [None, r, r, 3])``: Grad-CAM in the graph.

    A SavedModel has no Keras graph left to differentiate, so the gradients are taken here, at
    export time: the outputs are ``explain.OUTPUTS`` (the maps ``cam_score``, ``cam_class``,
    ``pixels_score``, ``pixels_class`` [None, r, r] in 0–1, ``predicted_class``,
    ``probabilities``, ``score``, ``grade``).
    """
    gradcam = explain.GradCam(model)

    def explain_normalized(images):
        return gradcam(images, cuts)

    archive.add_endpoint(EXPLAIN_SIGNATURE, explain_normalized, input_signature=[
        normalized_images_spec(resolution)])


def add_patient_endpoint(archive: ServingArchive, model: keras.Model,
                         resolution: int, cuts: tf.Tensor, fusion_head,
                         assessor: Optional[quality_assessor.Assessor] = None) -> None:
    """Adds ``grade_patient(left_image_bytes, right_image_bytes: string [None])``.

    Both photographs of B patients are preprocessed (and assessed) in the graph as in
    ``serving_default``; each eye is graded by the two-eye fusion head
    (``fusion.patient_outputs``: outputs ``fusion.PATIENT_OUTPUTS``, ``left_*`` and
    ``right_*``), or by the main model alone when no fundus is found in the other eye; an
    ungradable eye of a patient whose other eye is gradable takes the other eye's grade.

    Args:
      fusion_head: a ``fusion.FusionHead`` trained on this model's checkpoint.
      assessor: the quality assessor, or None (eyes not assessed).
    """
    features_model = fusion.feature_model(model)
    archive.track(fusion_head.head)
    fused_cuts = tf.constant(fusion_head.thresholds, tf.float32)

    def grade_patient(left_image_bytes, right_image_bytes):
        left, left_found, left_quality = quality_assessor.preprocess_and_assess(
            left_image_bytes, resolution, assessor)
        right, right_found, right_quality = quality_assessor.preprocess_and_assess(
            right_image_bytes, resolution, assessor)
        return fusion.patient_outputs(features_model, fusion_head.head, cuts, fused_cuts,
                                      left, right, left_found, right_found, left_quality,
                                      right_quality)

    archive.add_endpoint(PATIENT_SIGNATURE, grade_patient, input_signature=[
        tf.TensorSpec([None], tf.string, name=name) for name in PATIENT_INPUTS])


def build_archive(model: keras.Model, resolution: int, cuts: Sequence[float],
                  fusion_head=None, prediction: str = PREDICT_BY_SCORE,
                  assessor: Optional[quality_assessor.Assessor] = None,
                  archive=None) -> ServingArchive:
    """A ServingArchive with both signatures around ``model``, grading by ``prediction``;
    ``serving_default`` assesses each photograph's quality with ``assessor`` (when given) from
    the same decode. ``archive``: the empty archive to fill (default a new ServingArchive; any
    object with ``track`` and ``add_endpoint``, e.g. ``keras.export.ExportArchive`` in
    bench/export.py)."""
    cuts_tensor = tf.constant(thresholds.check_thresholds(cuts), tf.float32)
    archive = ServingArchive() if archive is None else archive
    archive.track(model)

    def predict_normalized(images):
        return model_outputs(model, images, cuts_tensor, prediction=prediction)

    def serve_bytes(image_bytes):
        images, found, quality = quality_assessor.preprocess_and_assess(image_bytes,
                                                                        resolution, assessor)
        return model_outputs(model, images, cuts_tensor, found, quality=quality,
                             prediction=prediction)

    archive.add_endpoint(NORMALIZED_SIGNATURE, predict_normalized, input_signature=[
        normalized_images_spec(resolution)])
    archive.add_endpoint(SERVING_SIGNATURE, serve_bytes, input_signature=[
        tf.TensorSpec([None], tf.string, name=BYTES_INPUT)])
    add_explain_endpoint(archive, model, resolution, cuts_tensor)
    if fusion_head is not None:
        add_patient_endpoint(archive, model, resolution, cuts_tensor, fusion_head, assessor)
    return archive


def _fusion_head(model_dir: str, model: keras.Model):
    """(the run's fusion head or None, what the metadata says about it).

    A head trained on another checkpoint than the one exported (say ``--checkpoint=latest``
    after fuse.py used best) is left out, and the metadata says why, rather than failing the
    export.
    """
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


def _new_version_folder(export_dir: str, version: Optional[int]) -> str:
    """``export_dir/<version>``, by default one above the highest version present.

    Raises:
      ExportError: ``version`` is not a positive integer, or that version exists already.
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
    return target


def export_metadata(info: Dict, cuts: Sequence[float], cuts_source: str,
                    fusion_info: Union[Dict, str],
                    assessor: Optional[quality_assessor.Assessor] = None) -> Dict:
    """What ``assets.extra/m2cnn_metadata.json`` records about an export.

    Args:
      info: the trained model's description (``checkpoints.load_trained_model``).
      cuts: the thresholds the export grades with.
      cuts_source: the thresholds file they came from, or "rounding".
      fusion_info: the fusion head's description (a dict: the export has ``grade_patient``)
        or why there is none (a string).
      assessor: the quality assessor built into ``serving_default``, or None.

    Returns:
      The metadata, JSON-serialisable.
    """
    validation = info.get("validation") or {}
    signatures = {SERVING_SIGNATURE: BYTES_INPUT, NORMALIZED_SIGNATURE: NORMALIZED_INPUT,
                  EXPLAIN_SIGNATURE: NORMALIZED_INPUT}
    if isinstance(fusion_info, dict):
        signatures[PATIENT_SIGNATURE] = list(PATIENT_INPUTS)
    prediction = prediction_of(info)
    return {
        "resolution": int(info["resolution"]),
        "variant": info["variant"],
        "multicell": info.get("multicell", MULTICELL_AUTO),
        "prediction": prediction,
        "grade": (GRADE_BY_SCORE if prediction == PREDICT_BY_SCORE else GRADE_BY_PROBABILITIES),
        "thresholds": list(cuts),
        "thresholds_source": (f"fitted on {checkpoints.read_json(cuts_source)['fitted_on']}"
                              if cuts_source != "rounding" else "rounding"),
        "preprocessing": dataclasses.asdict(PREPROCESS),
        "training_data_checksum": info.get("data_checksum"),
        "validation_kappa_score": validation.get("kappa_score"),
        "validation_kappa_argmax": validation.get("kappa_argmax"),
        "selected_by": info.get("selected_by", "kappa_score"),
        "checkpoint": os.path.basename(info["checkpoint"]),
        "step": info["step"],
        "package_version": __version__,
        "signatures": signatures,
        "outputs": list(OUTPUTS),
        "no_fundus": "fundus_found False, grades -1, score and probabilities NaN",
        "fusion": fusion_info,
        "quality": {"description": quality_assessor.describe(assessor),
                    "gradable": "1 when P(Reject) < reject_threshold, 0 when not or without a "
                                "fundus, -1 not assessed",
                    "assessor": assessor.to_json() if assessor is not None else None},
    }


def write_export(archive: ServingArchive, metadata: Dict, target: str) -> None:
    """Writes the SavedModel and its metadata file as the folder ``target``, whole or not at all.

    The folder is written under a hidden name and renamed (``atomic.staged_directory``): TF
    Serving polls the base path and must never load a half-written version.
    """
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    with atomic.staged_directory(target) as staging:
        archive.write_out(staging)
        os.makedirs(os.path.join(staging, METADATA_DIR), exist_ok=True)
        atomic.write_json(os.path.join(staging, METADATA_DIR, METADATA_FILE), metadata,
                          indent=2, sort_keys=True)


def export_saved_model(model_dir: str, export_dir: str, version: Optional[int] = None,
                       checkpoint: str = checkpoints.BEST,
                       quality_model: Optional[str] = None) -> str:
    """Exports a training run's checkpoint as ``export_dir/<version>``.

    Args:
      model_dir: the training run (config.json, checkpoints, optional thresholds.json and
        quality.json).
      export_dir: TF Serving's base path for this model.
      version: integer version; default one above the highest present.
      checkpoint: "best" or "latest".
      quality_model: a quality assessor file (``quality.py fit``); default the run's
        ``quality.json`` if it has one, else the export does not assess quality.

    Returns:
      The written version folder.

    Raises:
      ExportError: the version exists already, or ``version`` is not a positive integer.
      FileNotFoundError: no such run or checkpoint (naming what exists).
      quality.assessor.AssessorError: an unusable quality assessor file.
    """
    target = _new_version_folder(export_dir, version)
    assessor = (quality_assessor.load(quality_model) if quality_model
                else quality_assessor.for_run(model_dir))
    model, info = checkpoints.load_trained_model(model_dir, checkpoint)
    cuts, cuts_source = thresholds.load_thresholds(model_dir)
    fusion_head, fusion_info = _fusion_head(model_dir, model)
    metadata = export_metadata(info, cuts, cuts_source, fusion_info, assessor)
    write_export(build_archive(model, int(info["resolution"]), cuts, fusion_head,
                               metadata["prediction"], assessor), metadata, target)
    return target
