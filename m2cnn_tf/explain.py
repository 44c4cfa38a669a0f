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
export carries it as the ``explain_normalized`` signature (``serving``), so a SavedModel, which
has no Keras graph to differentiate, explains itself, and a training run's folder runs the same
code on its Keras model. ``open_explainer`` opens either; ``explain_files`` writes one PNG per
photograph (normalised photograph | Grad-CAM of score and class | the same × gradient × input,
titled with grade and score, with a colour legend), a contact sheet of them all and
``explanations.csv`` (``python explain.py``).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from typing import Dict, List, Optional, Sequence

import cv2
import keras
import numpy as np
import tensorflow as tf

from m2cnn_tf import checkpoints, fundus, image_io, serving, thresholds
from m2cnn_tf import model as m2cnn
from m2cnn_tf import predictor as predictors
from m2cnn_tf.config import NUM_GRADES, PREPROCESS

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

# Rendering.
CAM_ALPHA = 0.5  # weight of the heat map over the photograph
COLORMAP = cv2.COLORMAP_JET
TITLE_HEIGHT = 30  # px: the bar above the panels naming file, grade and score
LABEL_HEIGHT = 24  # px: the bar above each panel
LEGEND_HEIGHT = 34  # px: the colour bar below the panels
LEGEND_MARGIN = 10  # px: its inset from the panel edges
FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.5
TEXT_INSET = 6  # px from the left edge of a bar
BACKGROUND = 255  # white bars
TEXT_COLOUR = (0, 0, 0)
CONTACT_COLUMNS = 4  # explanations per row of the contact sheet
CONTACT_TILE_WIDTH = 480  # px: each explanation is shrunk to this width on the sheet
CONTACT_PER_SHEET = 64  # more photographs than this go onto several sheets
CONTACT_SHEET = "contact_sheet"
PNG_SUFFIX = "_gradcam.png"
CSV_NAME = "explanations.csv"
CSV_COLUMNS = ("image", "png", "grade", "score", "predicted_class", "class_probability",
               "error")


class ExplainError(RuntimeError):
    """The model cannot be explained (e.g. an export without the explain signature)."""


# --------------------------------------------------------------------------------------------
# The computation
# --------------------------------------------------------------------------------------------


def last_feature_block(model: keras.Model) -> str:
    """The block whose output is the last feature map: the last cell group on the model's path.

    Args:
        model: a model built by ``model.build_m2cnn``.

    Returns:
        "basenet" (small path, < 350 px), "medial_cells" (medium) or "large_cells" (large).
    """
    resolution = int(model.input.shape[1])
    return ((m2cnn.BASENET,) + m2cnn.CELLS_ON_PATH[m2cnn.multicell_path(resolution)])[-1]


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
        if features is not model.get_layer(self.block)._inbound_nodes[-1].output_tensors[0]:
            raise ValueError(f"{model.name!r}: global pooling does not read the output of "
                             f"{self.block!r}, the last block on its path")
        self.trunk = keras.Model(model.input, features, name=f"{model.name}_trunk")
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
            cuts: (4,) float32 score thresholds (``thresholds``), for ``grade``.

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

        def nothing():  # oneDNN's batch norm fails on an empty batch (see serving)
            empty = tf.zeros([0, r, r], tf.float32)
            return (empty, empty, empty, empty, tf.zeros([0], tf.int32),
                    tf.zeros([0, NUM_GRADES], tf.float32), tf.zeros([0], tf.float32))

        *maps, predicted, probabilities, score = tf.cond(tf.shape(images)[0] > 0, run, nothing)
        grade = tf.reduce_sum(tf.cast(score[:, None] > cuts[None, :], tf.int32), axis=1)
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


# --------------------------------------------------------------------------------------------
# Opening a model
# --------------------------------------------------------------------------------------------


def _numpy(outputs) -> Dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in outputs.items()}


class Explainer:
    """Grad-CAM of normalised images, from an export or a training run."""

    resolution: int
    description: str

    def explain_normalized(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        """``GradCam`` outputs (see ``OUTPUTS``) as NumPy arrays for (B, r, r, 3) uint8 images."""
        raise NotImplementedError


class ModelDirExplainer(Explainer):
    """A training run's checkpoint: ``GradCam`` on the rebuilt Keras model."""

    def __init__(self, model_dir: str, checkpoint: str = checkpoints.BEST):
        model, info = checkpoints.load_trained_model(model_dir, checkpoint)
        self.resolution = int(info["resolution"])
        self.description = f"model_dir {model_dir} ({os.path.basename(info['checkpoint'])})"
        cuts = tf.constant(thresholds.load_thresholds(model_dir)[0], tf.float32)
        self.gradcam = GradCam(model)
        self._explain = tf.function(lambda images: self.gradcam(images, cuts),
                                    reduce_retracing=True)

    def explain_normalized(self, images):
        return _numpy(self._explain(tf.convert_to_tensor(np.asarray(images, np.uint8))))


class ExportExplainer(Explainer):
    """A SavedModel export, through its ``explain_normalized`` signature."""

    def __init__(self, path: str):
        self.path = serving.resolve_export(path)
        loaded = tf.saved_model.load(self.path)
        if serving.EXPLAIN_SIGNATURE not in loaded.signatures:
            raise ExplainError(
                f"{self.path} has no {serving.EXPLAIN_SIGNATURE!r} signature (it has "
                f"{sorted(loaded.signatures)}): it was exported before Grad-CAM was; export the "
                "training run again with export.py, or pass the run's folder as --model")
        self._signature = loaded.signatures[serving.EXPLAIN_SIGNATURE]
        self._loaded = loaded  # the signature needs its object alive
        self.resolution = int(serving.read_metadata(self.path)["resolution"])
        self.description = f"export {self.path}"

    def explain_normalized(self, images):
        images = tf.convert_to_tensor(np.asarray(images, np.uint8))
        return _numpy(self._signature(**{serving.NORMALIZED_INPUT: images}))


def open_explainer(path: str, checkpoint: str = checkpoints.BEST) -> Explainer:
    """An export (version folder or base path) or a training run's folder.

    Raises:
        FileNotFoundError: ``path`` is neither (naming what it holds, or that it is absent).
        ExplainError: an export written before the explain signature existed.
    """
    if predictors.model_kind(path) == predictors.EXPORT:
        return ExportExplainer(path)
    return ModelDirExplainer(path, checkpoint)


# --------------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------------


def overlay(image: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """A 0–1 map as a colour heat map over an RGB uint8 image of the same size."""
    heat = cv2.applyColorMap(np.round(np.clip(cam, 0, 1) * 255).astype(np.uint8), COLORMAP)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(image, 1.0 - CAM_ALPHA, heat, CAM_ALPHA, 0.0)


def _bar(width: int, height: int, text: str = "") -> np.ndarray:
    bar = np.full((height, width, 3), BACKGROUND, np.uint8)
    if text:
        (_, text_height), _ = cv2.getTextSize(text, FONT, FONT_SCALE, 1)
        cv2.putText(bar, text, (TEXT_INSET, (height + text_height) // 2), FONT, FONT_SCALE,
                    TEXT_COLOUR, 1, cv2.LINE_AA)
    return bar


def _legend(width: int) -> np.ndarray:
    """A colour bar from 0 (left) to 1 (right) with its meaning."""
    bar = _bar(width, LEGEND_HEIGHT)
    low, high = "0", "1: strongest evidence for the target (Grad-CAM, relative)"
    (low_width, text_height), _ = cv2.getTextSize(low, FONT, FONT_SCALE, 1)
    (high_width, _), _ = cv2.getTextSize(high, FONT, FONT_SCALE, 1)
    x0 = LEGEND_MARGIN + low_width + TEXT_INSET
    x1 = width - LEGEND_MARGIN - high_width - TEXT_INSET
    if x1 > x0:
        ramp = np.linspace(0, 255, x1 - x0).astype(np.uint8)[None, :]
        colours = cv2.cvtColor(cv2.applyColorMap(ramp, COLORMAP), cv2.COLOR_BGR2RGB)
        bar[LEGEND_MARGIN:LEGEND_HEIGHT - LEGEND_MARGIN, x0:x1] = colours
    baseline = (LEGEND_HEIGHT + text_height) // 2
    cv2.putText(bar, low, (LEGEND_MARGIN, baseline), FONT, FONT_SCALE, TEXT_COLOUR, 1,
                cv2.LINE_AA)
    cv2.putText(bar, high, (width - LEGEND_MARGIN - high_width, baseline), FONT, FONT_SCALE,
                TEXT_COLOUR, 1, cv2.LINE_AA)
    return bar


# Panel order after the photograph: (map, label); {c} is the predicted class.
PANELS = (("cam_score", "Grad-CAM: score"), ("cam_class", "Grad-CAM: class {c}"),
          ("pixels_score", "x grad*input: score"), ("pixels_class", "x grad*input: class {c}"))
# The pixel maps are sparse (lesions are a few pixels): for display only they are smoothed by
# this σ (px) and scaled so that this percentile of the map is full scale.
PIXEL_DISPLAY_SIGMA = 1.0
PIXEL_DISPLAY_PERCENTILE = 99.5


def panel_size(resolution: int) -> tuple:
    """(width, height) in pixels of one explanation PNG at ``resolution``."""
    panels = 1 + len(PANELS)
    return panels * resolution, TITLE_HEIGHT + LABEL_HEIGHT + resolution + LEGEND_HEIGHT


def _display(name: str, cam: np.ndarray) -> np.ndarray:
    if not name.startswith("pixels"):
        return cam
    cam = cv2.GaussianBlur(np.asarray(cam, np.float32), (0, 0), PIXEL_DISPLAY_SIGMA)
    top = np.percentile(cam, PIXEL_DISPLAY_PERCENTILE)
    return np.clip(cam / top, 0, 1) if top > 0 else cam


def explanation_image(image: np.ndarray, outputs: Dict[str, np.ndarray], name: str
                      ) -> np.ndarray:
    """photograph | Grad-CAM score | Grad-CAM class | × gradient×input score | … class.

    Args:
        image: (r, r, 3) uint8, the normalised photograph.
        outputs: one image's ``GradCam`` outputs (unbatched).
        name: shown in the title (usually the file name).

    Returns:
        (height, width, 3) uint8 RGB, of size ``panel_size(r)``, with a colour legend below.
    """
    predicted = int(outputs["predicted_class"])
    probability = float(outputs["probabilities"][predicted])
    tiles = [(image, "normalised photograph")] + [
        (overlay(image, _display(key, outputs[key])), label.format(c=predicted))
        for key, label in PANELS]
    row = np.concatenate([np.concatenate([_bar(t.shape[1], LABEL_HEIGHT, label), t], axis=0)
                          for t, label in tiles], axis=1)
    title = (f"{name}: grade {int(outputs['grade'])} (score {float(outputs['score']):.2f}); "
             f"predicted class {predicted} (p = {probability:.2f})")
    width = row.shape[1]
    return np.concatenate([_bar(width, TITLE_HEIGHT, title), row, _legend(width)], axis=0)


def contact_sheet(images: Sequence[np.ndarray]) -> np.ndarray:
    """Explanations side by side, ``CONTACT_COLUMNS`` a row, each shrunk to one width."""
    tiles = []
    for image in images:
        h, w = image.shape[:2]
        height = max(1, round(h * CONTACT_TILE_WIDTH / w))
        tiles.append(cv2.resize(image, (CONTACT_TILE_WIDTH, height),
                                interpolation=cv2.INTER_AREA))
    tile_height = max(t.shape[0] for t in tiles)
    columns = min(CONTACT_COLUMNS, len(tiles))
    rows = math.ceil(len(tiles) / columns)
    sheet = np.full((rows * tile_height, columns * CONTACT_TILE_WIDTH, 3), BACKGROUND, np.uint8)
    for i, tile in enumerate(tiles):
        y, x = (i // columns) * tile_height, (i % columns) * CONTACT_TILE_WIDTH
        sheet[y:y + tile.shape[0], x:x + CONTACT_TILE_WIDTH] = tile
    return sheet


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class FileExplanation:
    """One photograph's result: the PNG written and the outputs, or the error."""

    path: str
    png: Optional[str] = None
    outputs: Optional[Dict[str, np.ndarray]] = None
    error: Optional[str] = None


def _png_name(path: str, taken: set) -> str:
    """``<stem>_gradcam.png``, with a counter when two photographs share a stem."""
    stem = os.path.splitext(os.path.basename(path))[0] or "image"
    name, n = f"{stem}{PNG_SUFFIX}", 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}{PNG_SUFFIX}"
    taken.add(name)
    return name


def _load(path: str, resolution: int):
    """(normalised image, None) or (None, the reason it failed)."""
    try:
        return fundus.load_normalized(path, (resolution,)).images[resolution], None
    except image_io.ImageReadError as e:
        return None, e.problem
    except fundus.NoFundusError as e:
        return None, str(e).replace(f"{path}: ", "", 1)


def _explain_chunks(explainer: Explainer, paths: Sequence[str], batch_size: int):
    """Yields (path, normalised image or None, one image's outputs or None, error or None)."""
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        loaded = [(path, *_load(path, explainer.resolution)) for path in chunk]
        good = [image for _, image, _ in loaded if image is not None]
        outputs = explainer.explain_normalized(np.stack(good)) if good else {}
        i = 0
        for path, image, error in loaded:
            if image is None:
                yield path, None, None, error
            else:
                yield path, image, {k: v[i] for k, v in outputs.items()}, None
                i += 1


def sheet_names(count: int) -> List[str]:
    """File names of the contact sheets for ``count`` explanations (none for 0)."""
    sheets = math.ceil(count / CONTACT_PER_SHEET)
    if sheets <= 1:
        return [f"{CONTACT_SHEET}.png"] * sheets
    return [f"{CONTACT_SHEET}_{i + 1}.png" for i in range(sheets)]


def explain_files(explainer: Explainer, paths: Sequence[str], output_dir: str,
                  batch_size: int = 8, quiet: bool = False) -> List[FileExplanation]:
    """Explains photographs: one PNG each, contact sheets and ``explanations.csv``.

    Photographs are normalised offline (``fundus.load_normalized``, the builder's path). A file
    that cannot be read, or shows no fundus, gets its reason in the result and the CSV and
    never stops the others. Every file is written under a temporary name and renamed.

    Args:
        explainer: from ``open_explainer``.
        paths: photograph files.
        output_dir: created if needed.
        batch_size: photographs explained at once.
        quiet: no progress bar.

    Returns:
        One ``FileExplanation`` per path, in order.
    """
    os.makedirs(output_dir, exist_ok=True)
    results, thumbnails, taken = [], [], set()
    progress = predictors.iter_with_progress(
        _explain_chunks(explainer, list(paths), batch_size), len(paths), "explaining", quiet)
    for path, image, outputs, error in progress:
        if outputs is None:
            results.append(FileExplanation(path, error=error))
            continue
        png = os.path.join(output_dir, _png_name(path, taken))
        picture = explanation_image(image, outputs, os.path.basename(path))
        image_io.write_png(png, picture)
        thumbnails.append(picture)
        results.append(FileExplanation(path, png=png, outputs=outputs))
    for i, name in enumerate(sheet_names(len(thumbnails))):
        page = thumbnails[i * CONTACT_PER_SHEET:(i + 1) * CONTACT_PER_SHEET]
        image_io.write_png(os.path.join(output_dir, name), contact_sheet(page))
    _write_csv(os.path.join(output_dir, CSV_NAME), results)
    return results


def _write_csv(path: str, results: Sequence[FileExplanation]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in results:
        row = {"image": r.path, "png": r.png or "", "error": r.error or ""}
        if r.outputs is not None:
            predicted = int(r.outputs["predicted_class"])
            row.update(grade=int(r.outputs["grade"]), score=f"{float(r.outputs['score']):.4f}",
                       predicted_class=predicted,
                       class_probability=f"{float(r.outputs['probabilities'][predicted]):.4f}")
        writer.writerow(row)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", newline="") as f:
        f.write(buffer.getvalue())
    os.replace(tmp, path)
