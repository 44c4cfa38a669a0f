"""The M²CNN Keras model: BaseNet, Multi-Cell switch and multi-task heads (paper II, Fig. 2).

    image (r × r × 3, Eq. 1-normalised, 0–255)
      → rescale to [-1, 1]                              layer "rescale"
      → BaseNet = Inception-ResNet-v2 up to conv_7b_ac  nested model "basenet"
      → r ≥ 350: Reduction-B + N3 Block8 + 1×1 conv     nested model "medial_cells"
      → r ≥ 700: Reduction-B + N4 Block8 + 1×1 conv     nested model "large_cells"
        (multicell="off": neither, at any r — the paper's BaseNet baselines, Table II)
      → global average pooling → dropout
      → {"logits": Dense(5) "head_logits", "score": Dense(1) "head_score", squeezed}

Every variable's path starts with the name of its block (``blocks``: "basenet/…",
"medial_cells/…", "large_cells/…", "heads/…"), so a training loop can tell fine-tuned from new
weights by name, and ``transfer.transfer_weights`` reports what it restored block by block. The
Inception-ResNet-v2 pieces are ``irv2``'s (Keras' layers, our code); the numbers live in
``config``: the repeats per variant in ``config.VARIANTS``, the switch in ``config.MULTICELL``, the
rest in ``config.MODEL`` (including why each cell group ends with a 1×1 projection to 1536
channels). ``accounting`` counts parameters and FLOPs.

Run ``python -m m2cnn_tf.model --resolution=720 --variant=m2cnn`` for the path, feature-map sizes,
parameter counts and FLOPs of one configuration.
"""

from __future__ import annotations

import os
from typing import Sequence

import keras
import numpy as np

from m2cnn_tf import config
from m2cnn_tf.model.irv2 import block8, conv2d_bn, inception_resnet_v2_notop, reduction_b
from m2cnn_tf.model.transfer import load_notop_units
from m2cnn_tf.model.blocks import (BASENET, CELLS_ON_PATH, HEAD_LAYERS, HEADS, LARGE,
                                   LARGE_CELLS, MEDIAL_CELLS, MEDIUM, OUTPUTS, SMALL, all_layers)

# Layer-name prefix of each cell group ("medial_reduction_b", "block8_medial_3_conv", …).
_CELL_PREFIX = {MEDIAL_CELLS: "medial", LARGE_CELLS: "large"}
IMAGENET = "imagenet"


# --------------------------------------------------------------------------------------------
# Argument checking and the switch
# --------------------------------------------------------------------------------------------


def check_resolution(resolution) -> int:
    """Returns ``resolution`` as an int, or raises ValueError saying what is allowed."""
    minimum = config.MULTICELL.min_resolution
    if isinstance(resolution, (bool, np.bool_)) or not isinstance(resolution, (int, np.integer)):
        raise ValueError(
            f"resolution must be an integer number of pixels ≥ {minimum} (the side of the square "
            f"input; Keras' Inception-ResNet-v2 accepts no less), got {resolution!r} "
            f"({type(resolution).__name__})"
        )
    if resolution < minimum:
        raise ValueError(
            f"resolution must be ≥ {minimum} pixels (the smallest input Keras' "
            f"Inception-ResNet-v2 accepts), got {resolution}"
        )
    return int(resolution)


def check_variant(variant) -> config.CellRepeats:
    """The repeats of a variant (a key of ``config.VARIANTS``), or ValueError naming the allowed."""
    if variant not in config.VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; allowed: {sorted(config.VARIANTS)}")
    return config.VARIANTS[variant]


def check_multicell(multicell) -> str:
    """``multicell`` if it is one of ``config.MULTICELL_MODES``, else ValueError naming them."""
    if multicell not in config.MULTICELL_MODES:
        raise ValueError(f"multicell must be one of {', '.join(config.MULTICELL_MODES)}, got "
                         f"{multicell!r}")
    return multicell


def multicell_path(resolution: int, multicell: str = config.MULTICELL_AUTO) -> str:
    """The Multi-Cell path an input of this size takes (paper II-C).

    Args:
        resolution: side of the square input in pixels, an int ≥
            ``config.MULTICELL.min_resolution``.
        multicell: ``config.MULTICELL_AUTO`` (the switch) or ``config.MULTICELL_OFF`` (BaseNet
            only at any size: the paper's BaseNet baselines).

    Returns:
        ``"small"`` (< 350, or the switch off: BaseNet only), ``"medium"`` (350 ≤ r < 700:
        + medial cells) or ``"large"`` (≥ 700: + medial and large cells).

    Raises:
        ValueError: for a non-integer resolution, one below the minimum, or an unknown mode.
    """
    resolution = check_resolution(resolution)
    if check_multicell(multicell) == config.MULTICELL_OFF:
        return SMALL
    if resolution >= config.MULTICELL.large_min_resolution:
        return LARGE
    if resolution >= config.MULTICELL.medium_min_resolution:
        return MEDIUM
    return SMALL


# --------------------------------------------------------------------------------------------
# BaseNet and the cell groups
# --------------------------------------------------------------------------------------------


def _build_cell_group(block: str, input_shape: Sequence[int], num_block8: int) -> keras.Model:
    """One group of extra cells: Reduction-B, ``num_block8`` Block8, 1×1 conv back to 1536.

    The final projection is ours (see ``config.ModelConfig.cell_output_channels``): it keeps the
    width the heads see, and the group's output, equal to BaseNet's.
    """
    prefix = _CELL_PREFIX[block]
    inputs = keras.Input(shape=tuple(input_shape), name=f"{block}_input")
    with keras.name_scope(block):  # variable paths "medial_cells/…"
        x = reduction_b(inputs, name=f"{prefix}_reduction_b")
        for i in range(1, num_block8 + 1):
            x = block8(x, block_idx=f"{prefix}_{i}")
        x = conv2d_bn(x, config.MODEL.cell_output_channels, 1, name=f"{prefix}_conv")
    return keras.Model(inputs, x, name=block)


def _check_weights_argument(weights):
    if weights is None or weights == IMAGENET:
        return weights
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise ValueError(
            f"weights must be None, {IMAGENET!r} or the path of an existing Keras Inception-"
            f"ResNet-v2 notop weights file (.h5 or .weights.h5); no file at {path!r}"
        )
    return path


def _build_basenet(resolution: int, variant: str, weights) -> keras.Model:
    """BaseNet as a nested model named "basenet", its variables under "basenet/…"."""
    repeats = config.VARIANTS[variant]
    shape = (resolution, resolution, 3)
    with keras.name_scope(BASENET):
        if _basenet_repeats(repeats) == _basenet_repeats(_keras_repeats()):
            # The paper's network: Keras' public constructor, which loads "imagenet" (download)
            # or a local notop file itself.
            return keras.applications.InceptionResNetV2(
                include_top=False, weights=weights, input_shape=shape, name=BASENET
            )
        basenet = inception_resnet_v2_notop(shape, repeats, name=BASENET)
    if weights is not None:
        load_notop_units(basenet, weights)
    return basenet


def _keras_repeats() -> config.CellRepeats:
    """The repeats Keras' public constructor builds (and the paper uses) for BaseNet."""
    return config.VARIANTS["m2cnn"]


def _basenet_repeats(repeats: config.CellRepeats) -> tuple[int, int, int]:
    return repeats.block35, repeats.block17, repeats.basenet_block8


def _heads(features):
    """Global average pooling, dropout and the two heads: (logits (B, 5), score (B,))."""
    with keras.name_scope(HEADS):  # variable paths "heads/head_logits/kernel", …
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(features)
        x = keras.layers.Dropout(config.MODEL.dropout_rate, name="dropout")(x)
        logits = keras.layers.Dense(config.NUM_GRADES, name=HEAD_LAYERS[0])(x)
        score = keras.layers.Dense(1, name=HEAD_LAYERS[1])(x)
        score = keras.layers.Reshape((), name="score")(score)  # (B, 1) → (B,)
    return logits, score


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


def model_name(resolution: int, variant: str, multicell: str = config.MULTICELL_AUTO) -> str:
    """``m2cnn_{variant}_{resolution}``, or ``basenet_…`` with the Multi-Cell switch off."""
    network = "basenet" if multicell == config.MULTICELL_OFF else "m2cnn"
    return f"{network}_{variant}_{resolution}"


def build_m2cnn(resolution: int, variant: str = "m2cnn", weights=None,
                multicell: str = config.MULTICELL_AUTO) -> keras.Model:
    """Builds M²CNN for square inputs of side ``resolution``.

    Args:
        resolution: input side in pixels (int ≥ 75); chooses the Multi-Cell path (< 350 small,
            < 700 medium, else large).
        variant: a key of ``config.VARIANTS``: "m2cnn" (the paper, N1..N4 = 10, 20, 10, 5) or
            "tiny" (one repeat of every cell, same geometry) for tests and CPU demos.
        weights: None (random init), "imagenet" (Keras' ImageNet weights, downloaded), or the
            path of a local Keras Inception-ResNet-v2 notop weights file (the legacy ``.h5`` that
            Keras downloads, or a ``.weights.h5`` saved from
            ``InceptionResNetV2(include_top=False)``). Only BaseNet is loaded; cells and heads
            start fresh. For the tiny variant the file's weights go in by unit name
            (``transfer.load_notop_units``).
        multicell: ``config.MULTICELL_AUTO`` (the switch above) or ``config.MULTICELL_OFF``:
            BaseNet and the heads at any resolution, pooling Table I's "before switch" map
            (12×12 at 448, 21×21 at 720) — the paper's BaseNet baselines (Table II).

    Returns:
        A functional Keras model named ``model_name(...)`` (``m2cnn_{variant}_{resolution}``,
        ``basenet_…`` with the switch off): input ``image``
        (B, r, r, 3) holding Eq. 1-normalised pixels in 0–255 (uint8 or float; the model rescales
        to [-1, 1] itself), outputs ``{"logits": (B, 5), "score": (B,)}``. Nested models
        "basenet", "medial_cells", "large_cells" (as the path needs) and layers "head_logits",
        "head_score" are the named blocks (see ``model_blocks``).

    Raises:
        ValueError: bad resolution (non-integer or < 75), unknown variant or multicell mode, a
            weights path that does not exist, or a Keras configured for channels-first images.
    """
    resolution = check_resolution(resolution)
    repeats = check_variant(variant)
    path = multicell_path(resolution, multicell)
    weights = _check_weights_argument(weights)
    if keras.backend.image_data_format() != "channels_last":
        raise ValueError(
            f"build_m2cnn needs keras.backend.image_data_format() == 'channels_last', "
            f"got {keras.backend.image_data_format()!r}"
        )
    inputs = keras.Input(shape=(resolution, resolution, 3), dtype="float32", name="image")
    # Inception-ResNet-v2's input range (its preprocess_input, mode "tf"); a layer, so that
    # training, evaluation and the exported model all feed the same 0–255 pixels.
    x = keras.layers.Rescaling(scale=1.0 / 127.5, offset=-1.0, name="rescale")(inputs)
    x = _build_basenet(resolution, variant, weights)(x)
    cell_repeats = {MEDIAL_CELLS: repeats.medial_block8, LARGE_CELLS: repeats.large_block8}
    for block in CELLS_ON_PATH[path]:
        x = _build_cell_group(block, x.shape[1:], cell_repeats[block])(x)
    model = keras.Model(inputs, dict(zip(OUTPUTS, _heads(x))),
                        name=model_name(resolution, variant, multicell))
    momentum = config.BATCH_NORM_MOMENTUM[variant]
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
    return model
