"""Two-eye (patient-level) fusion: a small head that grades each eye knowing the other eye too.

Both eyes of a patient usually have the same grade (417 of the 480 patients in
``../shared/data/eyepacs_1024``), and Kaggle's top entries used the other eye's prediction to
grade each eye. This module does that on top of a trained M²CNN without retraining it:

1. **Features, once.** The frozen network's pooled features (layer "avg_pool", the input of the
   heads) and its per-eye logits and score are computed for every image of a split and cached in
   ``<model_dir>/fusion/features_<split>.npz`` (keyed by the checkpoint and the data's
   checksum), so training the head takes seconds.
2. **Pairing** (``pair_eyes``): Kaggle ids ``<patient>_left`` / ``<patient>_right``, or a given
   patient per image (a CSV's patient column, the records' ``patient_id``) with the eye from the
   id. An id that names no eye, or a patient with two left eyes, is an error naming it.
3. **The head** (``build_head``): for one eye, inputs are its own features, the other eye's
   features and which eye it is (0 left, 1 right). Its outputs have the main model's shape,
   ``{"logits": (B, 5), "score": (B,)}``, and it is the main model's heads plus a correction:
   the own-eye path is a frozen copy of the main model's ``head_logits`` / ``head_score``, and a
   correction — zero at the start — is learnt from (a) both eyes' per-eye predictions
   (probabilities and score, through those frozen heads), the eye, and (b) the other eye's full
   features under an L2 penalty. At step 0 the head therefore equals the main model, and the
   validation split decides (early stopping on its loss, step 0 included) how far to move away.
4. **Grades.** The fused score is cut by four thresholds fitted on validation like
   ``thresholds.fit_thresholds`` does; a patient with one eye only (or, when serving, one eye in
   which no fundus is found) keeps the main model's per-eye grade for that eye. The fusion
   prefers a gradable eye (``m2cnn_tf.quality``): when one eye is ungradable and the other is
   not, the gradable eye keeps its per-eye grade and the ungradable one takes it too.

``<model_dir>/fusion/`` holds ``head.npz`` (the head's weights), ``fusion.json`` (settings,
thresholds, the checkpoint it was trained on and the kappas measured) and the feature caches;
every file is written under a temporary name and renamed. ``serving.export_saved_model`` adds a
``grade_patient`` signature when ``fusion.json`` is there (``patient_outputs`` is its graph).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from m2cnn_tf import model as m2cnn
from m2cnn_tf.config import FUSION, NUM_GRADES, FusionConfig  # noqa: F401 (re-exported)
from m2cnn_tf.data.sources import KAGGLE_ID
from m2cnn_tf.grading import rule
from m2cnn_tf.quality import assessor as quality_assessor
from m2cnn_tf.train import checkpoints
from m2cnn_tf.util import atomic


FUSION_DIR = "fusion"


HEAD_FILE = "head.npz"


FUSION_JSON = "fusion.json"


FEATURES_FILE = "features_{split}.npz"


FEATURE_LAYER = "avg_pool"  # the pooled features the main model's heads read


EYES = ("left", "right")  # eye index 0 and 1


NO_PARTNER = -1


PROBABILITIES, GRADABLE = quality_assessor.PROBABILITIES_OUTPUT, quality_assessor.GRADABLE_OUTPUT


# The head's named inputs (also its layer names).
OWN, OTHER, EYE = "own_features", "other_features", "eye"


# Per-eye prediction summary the correction reads: 5 probabilities and the score, per eye.
_SUMMARY = NUM_GRADES + 1


class FusionError(ValueError):
    """Fusion cannot go on (bad ids, a head that does not fit the model); the message says why."""




def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def pair_eyes(image_ids: Sequence, patients: Optional[Sequence] = None
              ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Finds each image's other eye.

    Args:
      image_ids: (N,) ids; each must end in ``_left`` or ``_right`` (Kaggle's
        ``<patient>_<eye>``), which gives the eye.
      patients: (N,) patient per image (a CSV column, the records' ``patient_id``); default the
        part of the id before ``_left`` / ``_right``.

    Returns:
      ``(partner, eye, patient)``: partner (N,) int64 index of the same patient's other eye or
      ``NO_PARTNER`` (-1); eye (N,) int32, 0 left 1 right; patient (N,) the patient of each image
      (str).

    Raises:
      FusionError: an id that names no eye, a patient with two images of one eye, or
        ``patients`` of another length — naming the id(s).
    """
    ids = [_text(i) for i in image_ids]
    if patients is not None and len(patients) != len(ids):
        raise FusionError(f"{len(ids)} image ids but {len(patients)} patients")
    eye = np.zeros(len(ids), np.int32)
    patient = []
    for i, image_id in enumerate(ids):
        match = KAGGLE_ID.match(image_id)
        if not match:
            raise FusionError(f"image id {image_id!r} names no eye: fusion pairs eyes by ids "
                              f"ending in _left or _right (Kaggle's <patient>_<eye>)")
        eye[i] = EYES.index(match.group("eye"))
        patient.append(_text(patients[i]).strip() if patients is not None
                       else match.group("patient"))
        if not patient[-1]:
            raise FusionError(f"image {image_id!r} has an empty patient id")
    slots: Dict[Tuple[str, int], int] = {}
    for i, key in enumerate(zip(patient, eye.tolist())):
        if key in slots:
            raise FusionError(f"patient {key[0]!r} has two {EYES[key[1]]} eyes: images "
                              f"{ids[slots[key]]!r} and {ids[i]!r}")
        slots[key] = i
    partner = np.array([slots.get((p, 1 - e), NO_PARTNER) for p, e in zip(patient, eye.tolist())],
                       np.int64)
    return partner, eye, np.asarray(patient, dtype=object)


def feature_model(model: keras.Model) -> keras.Model:
    """The main model with its pooled features as an extra output: ``{"features", "logits",
    "score"}`` from one pass (same layers, same variables)."""
    return keras.Model(model.inputs, {"features": model.get_layer(FEATURE_LAYER).output,
                                      "logits": model.get_layer(m2cnn.HEAD_LAYERS[0]).output,
                                      "score": model.get_layer("score").output},
                       name=f"{model.name}_features")


def _atomic_savez(path: str, **arrays) -> None:
    """``np.savez`` through the one atomic write (``util.atomic.save_npz``)."""
    atomic.save_npz(path, arrays)


def _summary(logits, score):
    return keras.ops.concatenate([keras.ops.softmax(logits, axis=-1),
                                  keras.ops.expand_dims(score, -1)], axis=-1)


def build_head(feature_dim: int, base_heads: Optional[Dict[str, Sequence[np.ndarray]]] = None,
               config: FusionConfig = FUSION) -> keras.Model:
    """The fusion head (module docstring, point 3).

    Args:
      feature_dim: width of the pooled features (1536 for M²CNN).
      base_heads: ``{"logits": [kernel (C, 5), bias (5,)], "score": [kernel (C, 1), bias (1,)]}``
        — the main model's heads (``main_heads``), copied frozen into the own-eye path; random
        when None (loading saved weights afterwards).
      config: dropout and L2.

    Returns:
      A Keras model: inputs ``own_features`` (B, C), ``other_features`` (B, C), ``eye`` (B,)
      float 0/1; outputs ``{"logits": (B, 5), "score": (B,)}``.
    """
    own = keras.Input((feature_dim,), name=OWN)
    other = keras.Input((feature_dim,), name=OTHER)
    eye = keras.Input((), name=EYE)
    base = {name: keras.layers.Dense(units, trainable=False, name=f"base_{name}")
            for name, units in (("logits", NUM_GRADES), ("score", 1))}
    own_out = {name: layer(own) for name, layer in base.items()}
    other_out = {name: layer(other) for name, layer in base.items()}
    summary = keras.layers.Concatenate(name="summaries")([
        _summary(own_out["logits"], own_out["score"][:, 0]),
        _summary(other_out["logits"], other_out["score"][:, 0]),
        keras.ops.expand_dims(eye, -1)])
    other_dropped = keras.layers.Dropout(config.dropout, name="other_dropout")(other)
    outputs = {}
    for name, units in (("logits", NUM_GRADES), ("score", 1)):
        from_summary = keras.layers.Dense(units, kernel_initializer="zeros",
                                          name=f"summary_{name}")(summary)
        from_features = keras.layers.Dense(
            units, use_bias=False, kernel_initializer="zeros",
            kernel_regularizer=keras.regularizers.L2(config.l2),
            name=f"other_{name}")(other_dropped)
        outputs[name] = keras.layers.Add(name=f"fused_{name}")(
            [own_out[name], from_summary, from_features])
    outputs["score"] = keras.layers.Reshape((), name="score")(outputs["score"])
    head = keras.Model([own, other, eye], outputs, name="fusion_head")
    if base_heads is not None:
        for name, layer in base.items():
            layer.set_weights([np.asarray(w, np.float32) for w in base_heads[name]])
    return head


def main_heads(model: keras.Model) -> Dict[str, List[np.ndarray]]:
    """The main model's head weights, ``{"logits": [kernel, bias], "score": [kernel, bias]}``."""
    return {name: [np.asarray(w) for w in model.get_layer(layer).get_weights()]
            for name, layer in zip(m2cnn.OUTPUTS, m2cnn.HEAD_LAYERS)}


def head_inputs(features: np.ndarray, partner: np.ndarray, eye: np.ndarray,
                rows: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
    """The head's inputs for the images ``rows`` (default: every image with a partner)."""
    if rows is None:
        rows = np.flatnonzero(partner != NO_PARTNER)
    if np.any(partner[rows] == NO_PARTNER):
        raise FusionError("head_inputs: some rows have no other eye")
    return {OWN: features[rows], OTHER: features[partner[rows]],
            EYE: eye[rows].astype(np.float32)}


def _other_eye_takes_over(found: tf.Tensor, quality: Dict[str, tf.Tensor],
                          other_found: tf.Tensor, other_quality: Dict[str, tf.Tensor]):
    """(B,) bool: an eye whose fundus was found but assessed ungradable, while the other eye's
    was found and not called ungradable — that eye takes the other eye's grade."""
    ungradable = found & tf.equal(quality[GRADABLE], quality_assessor.UNGRADABLE)
    other_ungradable = other_found & tf.equal(other_quality[GRADABLE],
                                              quality_assessor.UNGRADABLE)
    return ungradable & other_found & ~other_ungradable


def patient_outputs(features_model: keras.Model, head: keras.Model, main_cuts: tf.Tensor,
                    fused_cuts: tf.Tensor, left_images: tf.Tensor, right_images: tf.Tensor,
                    left_found: tf.Tensor, right_found: tf.Tensor,
                    left_quality: Optional[Dict[str, tf.Tensor]] = None,
                    right_quality: Optional[Dict[str, tf.Tensor]] = None
                    ) -> Dict[str, tf.Tensor]:
    """The ``grade_patient`` outputs for B patients, in the graph (serving.py's endpoint).

    Both eyes go through the network as one batch of 2B; where both fundi were found each eye's
    outputs come from the fusion head (``left_fused`` / ``right_fused`` True), where only one
    was found that eye keeps the main model's per-eye outputs and grade, and an eye without a
    fundus has grades −1 and NaN score and probabilities (as ``serving_default``). The fusion
    prefers a gradable eye: when one eye is assessed ungradable (``gradable`` 0) and the other
    is not, neither is fused — the gradable eye keeps its per-eye outputs, and the ungradable
    eye takes them too (``{e}_from_other_eye`` True), so the patient gets the grade of the eye
    that can be graded.

    Args:
      left_quality, right_quality: each eye's quality outputs (``quality.assessor``:
        ``quality_probabilities``, ``gradable``); None: not assessed.

    Returns:
      For each eye ``e`` in left, right: ``{e}_probabilities`` (B, 5), ``{e}_score`` (B,),
      ``{e}_grade`` (B,) int32, ``{e}_grade_from_probabilities`` (B,) int32,
      ``{e}_fundus_found`` (B,) bool, ``{e}_fused`` (B,) bool, ``{e}_from_other_eye`` (B,) bool,
      ``{e}_quality_probabilities`` (B, 3), ``{e}_gradable`` (B,) int32.
    """
    per_eye = _network_outputs(features_model, head, left_images, right_images)
    size = tf.shape(left_images)[0]
    quality = {"left": left_quality or quality_assessor.unassessed_outputs(left_found),
               "right": right_quality or quality_assessor.unassessed_outputs(right_found)}
    found = {"left": left_found, "right": right_found}
    takes_over = {e: _other_eye_takes_over(found[e], quality[e], found[o], quality[o])
                  for e, o in (("left", "right"), ("right", "left"))}
    both = left_found & right_found & ~takes_over["left"] & ~takes_over["right"]
    graded = {}
    for index, (name, other) in enumerate((("left", "right"), ("right", "left"))):
        own_features, own_logits, own_score = per_eye[name]
        fused = head({OWN: own_features, OTHER: per_eye[other][0],
                      EYE: tf.fill([size], float(index))}, training=False)
        fused_score = tf.cast(fused["score"], tf.float32)
        graded[name] = (tf.where(both[:, None], tf.cast(fused["logits"], tf.float32), own_logits),
                        tf.where(both, fused_score, own_score),
                        tf.where(both, rule.apply_thresholds_tf(fused_score, fused_cuts),
                                 rule.apply_thresholds_tf(own_score, main_cuts)))
    result = {}
    for name, other in (("left", "right"), ("right", "left")):
        result.update(_eye_outputs(name, graded[name], graded[other], takes_over[name],
                                   found[name], both, quality[name]))
    return result


def _network_outputs(features_model: keras.Model, head: keras.Model, left_images: tf.Tensor,
                     right_images: tf.Tensor) -> Dict[str, tuple]:
    """{eye: (features, logits, score)} in float32, both eyes through the network as one batch
    of 2B (none when B is 0)."""
    images = tf.concat([left_images, right_images], axis=0)
    size = tf.shape(left_images)[0]

    def run():
        out = features_model(tf.cast(images, tf.float32), training=False)
        return (tf.cast(out["features"], tf.float32), tf.cast(out["logits"], tf.float32),
                tf.cast(out["score"], tf.float32))

    features, logits, score = m2cnn.unless_empty(images, run, (
        tf.TensorSpec([None, head.inputs[0].shape[-1]], tf.float32),
        tf.TensorSpec([None, NUM_GRADES], tf.float32), tf.TensorSpec([None], tf.float32)))
    return {"left": (features[:size], logits[:size], score[:size]),
            "right": (features[size:], logits[size:], score[size:])}


def _eye_outputs(name: str, own, other, over: tf.Tensor, found: tf.Tensor, both: tf.Tensor,
                 quality: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """One eye's ``grade_patient`` outputs: its own (logits, score, grade), or the other eye's
    where it takes over (``over``); grades −1 and NaN where no fundus was found."""
    nan = tf.constant(float("nan"), tf.float32)
    logits_out, score_out, grade = (tf.where(over[:, None] if a.shape.rank == 2 else over, b, a)
                                    for a, b in zip(own, other))
    probabilities = tf.nn.softmax(logits_out, axis=-1)
    from_probabilities = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
    return {
        f"{name}_probabilities": tf.where(found[:, None], probabilities, nan),
        f"{name}_score": tf.where(found, score_out, nan),
        f"{name}_grade": tf.where(found, grade, -1),
        f"{name}_grade_from_probabilities": tf.where(found, from_probabilities, -1),
        f"{name}_fundus_found": found,
        f"{name}_fused": both,
        f"{name}_from_other_eye": over,
        f"{name}_quality_probabilities": quality[PROBABILITIES],
        f"{name}_gradable": quality[GRADABLE],
    }


PATIENT_OUTPUTS = tuple(f"{eye}_{name}" for eye in EYES for name in (
    "probabilities", "score", "grade", "grade_from_probabilities", "fundus_found", "fused",
    "from_other_eye", "quality_probabilities", "gradable"))


@dataclasses.dataclass
class FusionHead:
    """A trained head with what it needs: its thresholds and the record of its training."""

    head: keras.Model
    thresholds: Tuple[float, ...]
    record: Dict


def fusion_dir(model_dir: str) -> str:
    return os.path.join(model_dir, FUSION_DIR)


def save_head(model_dir: str, head: keras.Model, fused_cuts: Sequence[float], record: Dict
              ) -> str:
    """Writes ``head.npz`` then ``fusion.json`` (each atomically; json last, so a head is
    complete whenever fusion.json exists). Returns the fusion folder."""
    folder = fusion_dir(model_dir)
    os.makedirs(folder, exist_ok=True)
    _atomic_savez(os.path.join(folder, HEAD_FILE),
                  **{f"w{i}": w for i, w in enumerate(head.get_weights())})
    checkpoints.write_json(os.path.join(folder, FUSION_JSON), {
        **record, "thresholds": list(rule.check_thresholds(fused_cuts)),
        "feature_dim": int(head.inputs[0].shape[-1]), "head_file": HEAD_FILE})
    return folder


def has_head(model_dir: str) -> bool:
    return os.path.isfile(os.path.join(fusion_dir(model_dir), FUSION_JSON))


def load_head(model_dir: str, model: Optional[keras.Model] = None) -> Optional[FusionHead]:
    """The run's fusion head, or None when it has none.

    Args:
      model_dir: the training run.
      model: when given, the head's frozen own-eye heads must equal this model's heads (the head
        belongs to the checkpoint it was trained on).

    Raises:
      FusionError: head.npz missing or not matching, or trained on another checkpoint.
    """
    folder = fusion_dir(model_dir)
    if not has_head(model_dir):
        return None
    record = checkpoints.read_json(os.path.join(folder, FUSION_JSON))
    path = os.path.join(folder, record.get("head_file", HEAD_FILE))
    if not os.path.isfile(path):
        raise FusionError(f"{folder}/{FUSION_JSON} exists but {path} does not; run fuse.py again")
    config = dataclasses.replace(FUSION, **{k: v for k, v in record.get("config", {}).items()
                                            if k in {f.name for f in dataclasses.fields(FUSION)}})
    head = build_head(int(record["feature_dim"]), None, config)
    with np.load(path) as weights:
        values = [weights[f"w{i}"] for i in range(len(weights.files))]
    try:
        head.set_weights(values)
    except ValueError as e:
        raise FusionError(f"{path} does not fit a fusion head with {record['feature_dim']} "
                          f"features: {e}") from None
    if model is not None:
        for name, (kernel, bias) in main_heads(model).items():
            base = head.get_layer(f"base_{name}").get_weights()
            if base[0].shape != kernel.shape or not (np.allclose(base[0], kernel)
                                                     and np.allclose(base[1], bias)):
                raise FusionError(
                    f"the fusion head in {folder} was trained on another checkpoint "
                    f"({record.get('checkpoint')}) than the model given; run fuse.py again")
    return FusionHead(head, rule.check_thresholds(record["thresholds"]), record)
