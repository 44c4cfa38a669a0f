"""Fitting the two-eye fusion head: cached features of the frozen network, training with early
stopping on validation, thresholds, and the whole of ``fuse.py`` (``fit_and_save``)."""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from typing import Dict, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from m2cnn_tf.config import LOSS_WEIGHTS
from m2cnn_tf.data import builder, input_pipeline
from m2cnn_tf.fusion.head import (FUSION, NO_PARTNER, FusionConfig, FusionError, _atomic_savez,
                                  _text, build_head, feature_model, fusion_dir, head_inputs,
                                  load_head, main_heads, pair_eyes, save_head, FUSION_JSON,
                                  FEATURES_FILE)
from m2cnn_tf.fusion.report import kappas
from m2cnn_tf.grading import rule, thresholds
from m2cnn_tf.quality import assessor as quality_assessor
from m2cnn_tf.train import checkpoints


def _data_checksum(data_dir: str) -> str:
    manifest = builder.read_manifest(data_dir)
    return str(manifest.get("inputs_checksum") or manifest.get("checksum") or "")


def extract_features(model: keras.Model, data_dir: str, split: str, resolution: int,
                     batch_size: int = 16) -> Dict[str, np.ndarray]:
    """Features, per-eye logits and score of every image of a split (no augmentation).

    Returns:
      ``{"image_id", "patient_id" (str objects), "grade" (N,), "gradable" (N,) from the
      records' quality labels (``quality.assessor.gradable_from_labels``; −1 unknown),
      "features" (N, C), "logits" (N, 5), "score" (N,)}``.
    """
    features_model = feature_model(model)

    # autograph=False: plain TF code, and autograph would re-read this file's source when it
    # traces (a file edited under a running process then traces the wrong lines).
    @tf.function(reduce_retracing=True, autograph=False)
    def extractor(images):
        return features_model(images, training=False)

    columns = collections.defaultdict(list)
    dataset = input_pipeline.make_dataset(data_dir, split, resolution, batch_size, training=False)
    for batch in dataset:
        out = extractor(tf.cast(batch["image"], tf.float32))
        for key in ("features", "logits", "score"):
            columns[key].append(out[key].numpy().astype(np.float32))
        columns["grade"].append(batch["grade"].numpy())
        columns["gradable"].append(quality_assessor.gradable_from_labels(
            batch["quality"].numpy(), batch["gradable"].numpy()))
        columns["image_id"] += [_text(v) for v in batch["image_id"].numpy()]
        columns["patient_id"] += [_text(v) for v in batch["patient_id"].numpy()]
    if not columns["grade"]:
        raise FusionError(f"the {split!r} split of {data_dir} holds no image")
    result = {k: np.concatenate(columns[k])
              for k in ("features", "logits", "score", "grade", "gradable")}
    result["image_id"] = np.asarray(columns["image_id"], dtype=object)
    result["patient_id"] = np.asarray(columns["patient_id"], dtype=object)
    return result


def cached_features(model: keras.Model, info: Dict, data_dir: str, split: str,
                    batch_size: int = 16, cache_dir: Optional[str] = None,
                    recompute: bool = False) -> Dict[str, np.ndarray]:
    """``extract_features``, read from / written to ``<cache_dir>/features_<split>.npz``.

    The cache is used only when it was written for the same checkpoint, data (manifest
    checksum), data folder and resolution; otherwise it is recomputed and replaced.
    """
    key = {"checkpoint": os.path.abspath(info["checkpoint"]), "data_dir": os.path.abspath(data_dir),
           "data_checksum": _data_checksum(data_dir), "split": split,
           "resolution": int(info["resolution"])}
    path = os.path.join(cache_dir, FEATURES_FILE.format(split=split)) if cache_dir else None
    if path and os.path.isfile(path) and not recompute:
        with np.load(path, allow_pickle=False) as cached:
            if json.loads(str(cached["key"])) == key:
                return {k: (cached[k].astype(object) if k in ("image_id", "patient_id")
                            else cached[k]) for k in cached.files if k != "key"}
    result = extract_features(model, data_dir, split, int(info["resolution"]), batch_size)
    if path:
        os.makedirs(cache_dir, exist_ok=True)
        _atomic_savez(path, key=np.asarray(json.dumps(key, sort_keys=True)),
                      **{k: (v.astype(str) if v.dtype == object else v) for k, v in result.items()})
    return result


def _loss(grades, outputs) -> tf.Tensor:
    """Eq. 4 without L_reg, as the main model trains: CE of the logits + MSE of the score."""
    ce = keras.losses.sparse_categorical_crossentropy(grades, outputs["logits"], from_logits=True)
    mse = tf.square(outputs["score"] - tf.cast(grades, tf.float32))
    return LOSS_WEIGHTS[0] * tf.reduce_mean(ce) + LOSS_WEIGHTS[1] * tf.reduce_mean(mse)


def _paired(train: Dict[str, np.ndarray], validation: Dict[str, np.ndarray]) -> Dict[str, Tuple]:
    """``{"train", "validation": (head inputs, grades)}`` of the images whose other eye is there.

    Raises:
      FusionError: no pair in a split.
    """
    data = {}
    for name, split in (("train", train), ("validation", validation)):
        partner, eye, _ = pair_eyes(split["image_id"], split.get("patient_id"))
        rows = np.flatnonzero(partner != NO_PARTNER)
        if rows.size == 0:
            raise FusionError(f"the {name} split has no patient with both eyes; nothing to fuse")
        data[name] = (head_inputs(split["features"], partner, eye, rows),
                      np.asarray(split["grade"], np.int32)[rows])
    return data


def _early_stopped_fit(head: keras.Model, data: Dict[str, Tuple], config: FusionConfig) -> Dict:
    """Mini-batch Adam on ``data["train"]`` until the validation loss stops improving; leaves
    ``head`` with the weights of the best epoch (step 0 included).

    Returns:
      ``{"best_epoch", "epochs", "validation_loss_start", "validation_loss_best"}``.
    """
    optimizer = keras.optimizers.Adam(config.learning_rate)
    variables = head.trainable_variables

    @tf.function(reduce_retracing=True, autograph=False)
    def step(inputs, grades):
        with tf.GradientTape() as tape:
            loss = _loss(grades, head(inputs, training=True)) + tf.add_n(head.losses)
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    @tf.function(reduce_retracing=True, autograph=False)
    def validation_loss(inputs, grades):
        return _loss(grades, head(inputs, training=False))

    val_inputs, val_grades = data["validation"]
    train_inputs, train_grades = data["train"]
    best = float(validation_loss(val_inputs, val_grades))
    start, best_epoch, best_weights = best, 0, head.get_weights()
    rng = np.random.default_rng(config.seed)
    epoch = 0
    for epoch in range(1, config.max_epochs + 1):
        order = rng.permutation(len(train_grades))
        for begin in range(0, len(order), config.fusion_batch_size):
            rows = order[begin:begin + config.fusion_batch_size]
            step({k: v[rows] for k, v in train_inputs.items()}, train_grades[rows])
        loss = float(validation_loss(val_inputs, val_grades))
        if loss < best - 1e-6:
            best, best_epoch, best_weights = loss, epoch, head.get_weights()
        elif epoch - best_epoch >= config.patience:
            break
    head.set_weights(best_weights)
    return {"best_epoch": best_epoch, "epochs": epoch, "validation_loss_start": start,
            "validation_loss_best": best}


def train_head(train: Dict[str, np.ndarray], validation: Dict[str, np.ndarray],
               base_heads: Dict[str, Sequence[np.ndarray]], config: FusionConfig = FUSION,
               log=None) -> Tuple[keras.Model, Dict]:
    """Trains the head on paired features; keeps the epoch of lowest validation loss.

    Args:
      train, validation: ``{"features" (N, C), "grade" (N,), "image_id" (N,)[, "patient_id"]}``
        (``cached_features`` output); only images whose other eye is present are used.
      base_heads: the main model's heads (``main_heads``).
      config: optimiser, schedule and regularisation.
      log: optional callable taking a line of text.

    Returns:
      ``(head, history)``: history has ``best_epoch`` (0 = the main model's heads unchanged),
      ``epochs``, ``validation_loss_start``, ``validation_loss_best``, ``train_pairs``,
      ``validation_pairs`` (images with a partner).

    Raises:
      FusionError: no pair in the training or validation split.
    """
    keras.utils.set_random_seed(config.seed)
    data = _paired(train, validation)
    head = build_head(train["features"].shape[1], base_heads, config)
    history = _early_stopped_fit(head, data, config)
    history.update(train_pairs=int(len(data["train"][1])),
                   validation_pairs=int(len(data["validation"][1])))
    if log:
        log(f"fusion head: best epoch {history['best_epoch']} of {history['epochs']} "
            f"(validation loss {history['validation_loss_start']:.4f} → "
            f"{history['validation_loss_best']:.4f}; {history['train_pairs']} training and "
            f"{history['validation_pairs']} validation eyes with a partner)")
    return head, history


def _gradable_partners(partner: np.ndarray, gradable) -> Tuple[np.ndarray, np.ndarray]:
    """(fuse, takes_over) per image: fused from both eyes (a partner, and both eyes equally
    gradable), or ungradable with a gradable partner (it takes the partner's grade)."""
    paired = partner != NO_PARTNER
    if gradable is None:
        return paired, np.zeros(len(partner), bool)
    ungradable = np.asarray(gradable) == quality_assessor.UNGRADABLE
    other = np.where(paired, ungradable[np.where(paired, partner, 0)], False)
    takes_over = paired & ungradable & ~other
    gives = paired & ~ungradable & other
    return paired & ~takes_over & ~gives, takes_over


def fuse(features: Dict[str, np.ndarray], head: keras.Model, main_cuts: Sequence[float],
         fused_cuts: Sequence[float], gradable=None) -> Dict[str, np.ndarray]:
    """Per-eye and fused predictions for every image of a split (one-eye patients fall back).

    Args:
      features: ``cached_features`` output (with ``logits`` and ``score`` of the main model).
      head: the trained fusion head.
      main_cuts: the main model's thresholds (per-eye grades).
      fused_cuts: the head's thresholds.
      gradable: optional (N,) int per image, 1 gradable, 0 not, −1 unknown
        (``quality.assessor``); default ``features["gradable"]`` when present. A patient with
        one ungradable eye is not fused: the gradable eye keeps its per-eye grade and the
        ungradable one takes it (``from_other_eye``).

    Returns:
      ``{"image_id", "patient_id", "grade", "eye", "paired" (bool: fused from both eyes),
      "from_other_eye", "per_eye_score", "per_eye_grade", "per_eye_probabilities",
      "fused_score", "fused_grade", "fused_probabilities"}``; where ``paired`` is False the fused
      values equal the per-eye ones (or the other eye's, where ``from_other_eye``).
    """
    partner, eye, patient = pair_eyes(features["image_id"], features.get("patient_id"))
    if gradable is None:
        gradable = features.get("gradable")
    fused_rows, takes_over = _gradable_partners(partner, gradable)
    per_score = np.asarray(features["score"], np.float32)
    per_prob = tf.nn.softmax(features["logits"]).numpy()
    fused_score, fused_prob = per_score.copy(), per_prob.copy()
    fused_grade = rule.apply_thresholds(per_score, main_cuts)
    rows = np.flatnonzero(fused_rows)
    if rows.size:
        out = head(head_inputs(features["features"], partner, eye, rows), training=False)
        fused_score[rows] = out["score"].numpy()
        fused_prob[rows] = tf.nn.softmax(out["logits"]).numpy()
        fused_grade[rows] = rule.apply_thresholds(fused_score[rows], fused_cuts)
    over = np.flatnonzero(takes_over)
    for values in (fused_score, fused_prob, fused_grade):
        values[over] = values[partner[over]]
    return {"image_id": features["image_id"], "patient_id": patient,
            "grade": np.asarray(features["grade"], np.int64), "eye": eye,
            "paired": fused_rows, "from_other_eye": takes_over, "per_eye_score": per_score,
            "per_eye_grade": rule.apply_thresholds(per_score, main_cuts),
            "per_eye_probabilities": per_prob, "fused_score": fused_score,
            "fused_grade": fused_grade, "fused_probabilities": fused_prob}


def evaluate_split(model_dir: str, data_dir: str, split: str,
                   checkpoint: str = checkpoints.BEST, batch_size: int = 16,
                   model=None, info=None) -> Tuple[Dict[str, np.ndarray], Dict]:
    """Per-eye and fused predictions and kappa of a run with a fusion head on one split.

    Args:
      model_dir: a training run with ``fusion/`` (fuse.py output).
      data_dir: a build_tfrecords.py output.
      split: which split.
      checkpoint: "best" or "latest" (the head must have been trained on it).
      batch_size: images per batch when features are extracted.
      model, info: an already loaded ``checkpoints.load_trained_model`` result (optional).

    Returns:
      ``(predictions, summary)``: ``fuse`` output (with ``patient_id`` for bootstrap intervals
      over patients) and ``kappas`` of it.

    Raises:
      FusionError: the run has no fusion head, or the head belongs to another checkpoint.
    """
    if model is None:
        model, info = checkpoints.load_trained_model(model_dir, checkpoint)
    fusion_head = load_head(model_dir, model)
    if fusion_head is None:
        raise FusionError(f"{model_dir} has no fusion head ({fusion_dir(model_dir)}/{FUSION_JSON}"
                          f"); train one with fuse.py --model={model_dir}")
    features = cached_features(model, info, data_dir, split, batch_size, fusion_dir(model_dir))
    main_cuts, _ = thresholds.load_thresholds(model_dir)
    predictions = fuse(features, fusion_head.head, main_cuts, fusion_head.thresholds)
    return predictions, kappas(predictions)


def fit_and_save(model_dir: str, data_dir: str, train_split: str = "train",
                 validation_split: str = "validation", report_splits: Sequence[str] = (),
                 checkpoint: str = checkpoints.BEST, batch_size: int = 16,
                 config: FusionConfig = FUSION, recompute_features: bool = False,
                 log=print) -> Dict:
    """Trains a fusion head for a run and saves it under ``<model_dir>/fusion/`` (fuse.py).

    Features of the splits are extracted once (cached), the head is trained on
    ``train_split`` and early-stopped on ``validation_split``, its score thresholds are fitted on
    ``validation_split`` (``thresholds.fit_thresholds``, starting from the main model's), and
    per-eye and fused kappa are measured on the validation split and on ``report_splits``.

    Returns:
      The record written to fusion.json: ``{"checkpoint", "step", "config", "history",
      "thresholds_fitted_on", "kappa": {split: kappas(...)}}``.
    """
    model, info = checkpoints.load_trained_model(model_dir, checkpoint)
    cache = fusion_dir(model_dir)
    features = {}
    for split in dict.fromkeys([train_split, validation_split, *report_splits]):
        features[split] = cached_features(model, info, data_dir, split, batch_size, cache,
                                          recompute_features)
    head, history = train_head(features[train_split], features[validation_split],
                               main_heads(model), config, log)
    main_cuts, _ = thresholds.load_thresholds(model_dir)
    validation = features[validation_split]
    partner, _, _ = pair_eyes(validation["image_id"], validation.get("patient_id"))
    rows = np.flatnonzero(partner != NO_PARTNER)
    unfitted = fuse(validation, head, main_cuts, main_cuts)
    fused_cuts, _ = thresholds.fit_thresholds(unfitted["fused_score"][rows],
                                              unfitted["grade"][rows], main_cuts)
    record = {"checkpoint": os.path.basename(info["checkpoint"]), "step": int(info["step"]),
              "data_dir": os.path.abspath(data_dir), "config": dataclasses.asdict(config),
              "history": history, "thresholds_fitted_on": validation_split,
              "main_thresholds": list(main_cuts), "kappa": {}}
    for split in dict.fromkeys([train_split, validation_split, *report_splits]):
        record["kappa"][split] = kappas(fuse(features[split], head, main_cuts, fused_cuts))
    save_head(model_dir, head, fused_cuts, record)
    return record
