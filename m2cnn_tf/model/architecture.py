"""The M²CNN Keras model: BaseNet, Multi-Cell switch and multi-task heads (paper II, Fig. 2).

    image (r × r × 3, Eq. 1-normalised, 0–255)
      → rescale to [-1, 1]                              layer "rescale"
      → BaseNet = Inception-ResNet-v2 up to conv_7b_ac  nested model "basenet"
      → r ≥ 350: Reduction-B + N3 Block8 + 1×1 conv     nested model "medial_cells"
      → r ≥ 700: Reduction-B + N4 Block8 + 1×1 conv     nested model "large_cells"
      → global average pooling → dropout
      → {"logits": Dense(5) "head_logits", "score": Dense(1) "head_score", squeezed}

Every variable's path starts with the name of its block ("basenet/…", "medial_cells/…",
"large_cells/…", "heads/…"), so a training loop can tell fine-tuned from new weights by name, and
`transfer_weights` reports what it restored block by block. Numbers live in ``config``: the repeats
per variant in ``config.VARIANTS``, the switch in ``config.MULTICELL``, the rest in
``config.MODEL`` (including why each cell group ends with a 1×1 projection to 1536 channels).

Run ``python -m m2cnn_tf.model --resolution=720 --variant=m2cnn`` for the path, feature-map sizes,
parameter counts and FLOPs of one configuration.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Iterable, Sequence

import keras
import numpy as np
from keras.src.applications import inception_resnet_v2 as keras_irv2

from m2cnn_tf import config

# Named blocks, in the order the data flows through them. Each is one unit for freezing,
# per-group learning rates and weight transfer.
BASENET = "basenet"
MEDIAL_CELLS = "medial_cells"
LARGE_CELLS = "large_cells"
HEADS = "heads"
BLOCKS = (BASENET, MEDIAL_CELLS, LARGE_CELLS, HEADS)

# The Multi-Cell paths (paper II-C) and the cell groups each one adds after BaseNet.
SMALL, MEDIUM, LARGE = "small", "medium", "large"
CELLS_ON_PATH = {SMALL: (), MEDIUM: (MEDIAL_CELLS,), LARGE: (MEDIAL_CELLS, LARGE_CELLS)}
# Layer-name prefix of each cell group ("medial_reduction_b", "block8_medial_3_conv", …).
_CELL_PREFIX = {MEDIAL_CELLS: "medial", LARGE_CELLS: "large"}
# Layers of the heads block, and the names of the model's outputs.
HEAD_LAYERS = ("head_logits", "head_score")
OUTPUTS = ("logits", "score")

IMAGENET = "imagenet"
# Channels-last, as every input here is (h, w, 3); Keras' concatenations use the same axis 3.
_CHANNEL_AXIS = 3


# --------------------------------------------------------------------------------------------
# Argument checking and the switch
# --------------------------------------------------------------------------------------------


def _check_resolution(resolution) -> int:
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


def _check_variant(variant) -> config.CellRepeats:
    if variant not in config.VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; allowed: {sorted(config.VARIANTS)}")
    return config.VARIANTS[variant]


def multicell_path(resolution: int) -> str:
    """The Multi-Cell path an input of this size takes (paper II-C).

    Args:
        resolution: side of the square input in pixels, an int ≥
            ``config.MULTICELL.min_resolution``.

    Returns:
        ``"small"`` (< 350: BaseNet only), ``"medium"`` (350 ≤ r < 700: + medial cells) or
        ``"large"`` (≥ 700: + medial and large cells).

    Raises:
        ValueError: for a non-integer resolution or one below the minimum.
    """
    resolution = _check_resolution(resolution)
    if resolution >= config.MULTICELL.large_min_resolution:
        return LARGE
    if resolution >= config.MULTICELL.medium_min_resolution:
        return MEDIUM
    return SMALL


# --------------------------------------------------------------------------------------------
# Building blocks (Keras' own pieces)
# --------------------------------------------------------------------------------------------


def reduction_b(x, name: str):
    """Reduction-B with the architecture of Keras' ``mixed_7a``: stride 2, +992 channels.

    Keras builds mixed_7a inline in its constructor, so this is the one transcription; the
    filters come from ``config.MODEL.reduction_b_filters`` and a test compares the result with
    the mixed_7a inside Keras' network (layer types, kernel shapes, parameter counts).

    Args:
        x: a 4-D channels-last Keras tensor.
        name: name of the concatenation layer that ends the cell.

    Returns:
        The cell's output tensor, spatial size (s − 3) // 2 + 1.
    """
    branches = []
    for filters in config.MODEL.reduction_b_filters:
        y = keras_irv2.conv2d_bn(x, filters[0], 1)
        for f in filters[1:-1]:
            y = keras_irv2.conv2d_bn(y, f, 3)
        branches.append(keras_irv2.conv2d_bn(y, filters[-1], 3, strides=2, padding="valid"))
    branches.append(keras.layers.MaxPooling2D(3, strides=2, padding="valid")(x))
    return keras.layers.Concatenate(axis=_CHANNEL_AXIS, name=name)(branches)


def _block8(x, block_idx, scale=None, activation="relu"):
    """Keras' own Block8 (Inception-ResNet-C); layers are named ``block8_{block_idx}_…``."""
    scale = config.MODEL.block8_scale if scale is None else scale
    return keras_irv2.inception_resnet_block(
        x, scale=scale, block_type="block8", block_idx=block_idx, activation=activation
    )


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
            x = _block8(x, block_idx=f"{prefix}_{i}")
        x = keras_irv2.conv2d_bn(x, config.MODEL.cell_output_channels, 1, name=f"{prefix}_conv")
    return keras.Model(inputs, x, name=block)


def _basenet_from_keras_blocks(input_shape, repeats: config.CellRepeats, name=BASENET):
    """Keras' ``InceptionResNetV2(include_top=False)`` body, with the repeat counts of ``repeats``.

    The public constructor hard-codes 10/20/10 repeats, so the tiny variant needs this. It is a
    transcription of Keras' constructor (same order, same layer names; the filter numbers below
    are Keras' architecture, not tunables) using Keras' ``conv2d_bn`` and
    ``inception_resnet_block``. With the m2cnn repeats it gives the very network of the public
    constructor, which a test checks layer by layer and output by output.
    """
    conv_bn = keras_irv2.conv2d_bn
    block = keras_irv2.inception_resnet_block
    model_cfg = config.MODEL
    inputs = keras.Input(shape=tuple(input_shape))
    # Stem: 35 x 35 x 192 at 299
    x = conv_bn(inputs, 32, 3, strides=2, padding="valid")
    x = conv_bn(x, 32, 3, padding="valid")
    x = conv_bn(x, 64, 3)
    x = keras.layers.MaxPooling2D(3, strides=2)(x)
    x = conv_bn(x, 80, 1, padding="valid")
    x = conv_bn(x, 192, 3, padding="valid")
    x = keras.layers.MaxPooling2D(3, strides=2)(x)
    # Mixed 5b (Inception-A): 35 x 35 x 320
    branch_0 = conv_bn(x, 96, 1)
    branch_1 = conv_bn(conv_bn(x, 48, 1), 64, 5)
    branch_2 = conv_bn(conv_bn(conv_bn(x, 64, 1), 96, 3), 96, 3)
    branch_pool = conv_bn(keras.layers.AveragePooling2D(3, strides=1, padding="same")(x), 64, 1)
    x = keras.layers.Concatenate(axis=_CHANNEL_AXIS, name="mixed_5b")(
        [branch_0, branch_1, branch_2, branch_pool]
    )
    # N1 x Block35 (Normal Cell-A): 35 x 35 x 320
    for i in range(1, repeats.block35 + 1):
        x = block(x, scale=model_cfg.block35_scale, block_type="block35", block_idx=i)
    # Mixed 6a (Reduction-A): 17 x 17 x 1088
    branch_0 = conv_bn(x, 384, 3, strides=2, padding="valid")
    branch_1 = conv_bn(conv_bn(conv_bn(x, 256, 1), 256, 3), 384, 3, strides=2, padding="valid")
    branch_pool = keras.layers.MaxPooling2D(3, strides=2, padding="valid")(x)
    x = keras.layers.Concatenate(axis=_CHANNEL_AXIS, name="mixed_6a")(
        [branch_0, branch_1, branch_pool]
    )
    # N2 x Block17 (Normal Cell-B): 17 x 17 x 1088
    for i in range(1, repeats.block17 + 1):
        x = block(x, scale=model_cfg.block17_scale, block_type="block17", block_idx=i)
    # Mixed 7a (Reduction-B): 8 x 8 x 2080
    x = reduction_b(x, name="mixed_7a")
    # Block8 (Normal Cell-C) x (n - 1) with ReLU, then the activation-less block8_10: 8 x 8 x 2080
    for i in range(1, repeats.basenet_block8):
        x = _block8(x, block_idx=i)
    x = _block8(
        x,
        block_idx=model_cfg.final_block8_index,
        scale=model_cfg.final_block8_scale,
        activation=None,
    )
    # Final convolution: 8 x 8 x 1536
    x = conv_bn(x, model_cfg.basenet_channels, 1, name="conv_7b")
    return keras.Model(inputs, x, name=name)


# BaseNet is cut into units at these layers (each ends a unit); units with the same name have the
# same architecture in the m2cnn and tiny BaseNets, which is how the tiny one takes weights from
# Keras' full network. "mixed_5b" includes the stem, "conv_7b_ac" the final block8_10.
_UNIT_END = re.compile(r"^(mixed_5b|mixed_6a|mixed_7a|block(35|17|8)_\d+_ac|conv_7b_ac)$")


def _basenet_units(basenet: keras.Model) -> dict[str, list]:
    """BaseNet's weighted layers, grouped into named units in the order of ``basenet.layers``."""
    units, current = {}, []
    for layer in basenet.layers:
        current.append(layer)
        if _UNIT_END.match(layer.name):
            units[layer.name] = [l for l in current if l.weights]
            current = []
    leftover = [l.name for l in current if l.weights]
    if leftover:
        raise ValueError(
            f"BaseNet {basenet.name!r} has weighted layers after conv_7b_ac: {leftover}"
        )
    return units


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
        basenet = _basenet_from_keras_blocks(shape, repeats)
    if weights is not None:
        _load_units_from_keras_weights(basenet, weights)
    return basenet


def _keras_repeats() -> config.CellRepeats:
    """The repeats Keras' public constructor builds (and the paper uses) for BaseNet."""
    return config.VARIANTS["m2cnn"]


def _basenet_repeats(repeats: config.CellRepeats) -> tuple[int, int, int]:
    return repeats.block35, repeats.block17, repeats.basenet_block8


def _load_units_from_keras_weights(basenet: keras.Model, weights) -> None:
    """Loads a notop weights file (or ImageNet) into a reduced BaseNet, unit by unit.

    Keras' file is for the full network, so it goes into a full BaseNet first (built at the
    smallest size: weight shapes do not depend on it); then every unit of ``basenet`` takes the
    weights of the unit of the same name (the stem, mixed_5b/6a/7a, block35_1, block17_1,
    block8_10 with conv_7b, …). Every unit of a reduced BaseNet exists in the full one.
    """
    size = config.MULTICELL.min_resolution
    full = keras.applications.InceptionResNetV2(
        include_top=False, weights=weights, input_shape=(size, size, 3), name="keras_basenet"
    )
    source_units = _basenet_units(full)
    for unit, layers in _basenet_units(basenet).items():
        if unit not in source_units:
            raise ValueError(f"unit {unit!r} of {basenet.name!r} has no counterpart in {weights!r}")
        pairs = _pair_variables(
            [w for l in source_units[unit] for w in l.weights],
            [w for l in layers for w in l.weights],
            what=f"BaseNet unit {unit!r}",
        )
        for source, target in pairs:
            target.assign(source)
    del full


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


def build_m2cnn(resolution: int, variant: str = "m2cnn", weights=None) -> keras.Model:
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
            start fresh. For the tiny variant the file's weights go in by unit name: each of the
            tiny BaseNet's units (stem, mixed_5b/6a/7a, block35_1, block17_1, block8_10 + conv_7b)
            takes the weights of the unit of the same name in the full network.

    Returns:
        A functional Keras model named ``m2cnn_{variant}_{resolution}``: input ``image``
        (B, r, r, 3) holding Eq. 1-normalised pixels in 0–255 (uint8 or float; the model rescales
        to [-1, 1] itself), outputs ``{"logits": (B, 5), "score": (B,)}``. Nested models
        "basenet", "medial_cells", "large_cells" (as the path needs) and layers "head_logits",
        "head_score" are the named blocks (see ``model_blocks``).

    Raises:
        ValueError: bad resolution (non-integer or < 75), unknown variant, or a weights path that
            does not exist.
    """
    resolution = _check_resolution(resolution)
    repeats = _check_variant(variant)
    weights = _check_weights_argument(weights)
    path = multicell_path(resolution)
    if keras.backend.image_data_format() != "channels_last":
        raise ValueError(
            f"build_m2cnn needs keras.backend.image_data_format() == 'channels_last', "
            f"got {keras.backend.image_data_format()!r}"
        )

    inputs = keras.Input(shape=(resolution, resolution, 3), dtype="float32", name="image")
    # Inception-ResNet-v2's input range (its preprocess_input, mode "tf"); a layer, so that
    # training, evaluation and the exported model all feed the same 0–255 pixels.
    x = keras.layers.Rescaling(scale=1.0 / 127.5, offset=-1.0, name="rescale")(inputs)
    basenet = _build_basenet(resolution, variant, weights)
    x = basenet(x)
    cell_repeats = {MEDIAL_CELLS: repeats.medial_block8, LARGE_CELLS: repeats.large_block8}
    for block in CELLS_ON_PATH[path]:
        x = _build_cell_group(block, x.shape[1:], cell_repeats[block])(x)
    with keras.name_scope(HEADS):  # variable paths "heads/head_logits/kernel", …
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = keras.layers.Dropout(config.MODEL.dropout_rate, name="dropout")(x)
        logits = keras.layers.Dense(config.NUM_GRADES, name=HEAD_LAYERS[0])(x)
        score = keras.layers.Dense(1, name=HEAD_LAYERS[1])(x)
        score = keras.layers.Reshape((), name="score")(score)  # (B, 1) → (B,)
    model = keras.Model(
        inputs, dict(zip(OUTPUTS, (logits, score))), name=f"m2cnn_{variant}_{resolution}"
    )
    momentum = config.BATCH_NORM_MOMENTUM[variant]
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
    return model


def model_blocks(model: keras.Model) -> dict[str, list]:
    """The named blocks of a model from ``build_m2cnn``, in data-flow order.

    Args:
        model: a model built by ``build_m2cnn``.

    Returns:
        ``{block: [layers]}`` for the blocks the model has: "basenet", "medial_cells",
        "large_cells" (each one nested model) and "heads" ([head_logits, head_score]). Set
        ``layer.trainable`` on these to freeze a block.

    Raises:
        ValueError: if a weighted layer of the model belongs to no block.
    """
    names = {layer.name for layer in model.layers}
    blocks = {}
    for block in (BASENET, MEDIAL_CELLS, LARGE_CELLS):
        if block in names:
            blocks[block] = [model.get_layer(block)]
    missing = [name for name in HEAD_LAYERS if name not in names]
    if BASENET not in blocks or missing:
        raise ValueError(f"{model.name!r} is not an M²CNN model: no {BASENET!r} or heads {missing}")
    blocks[HEADS] = [model.get_layer(name) for name in HEAD_LAYERS]
    in_blocks = {id(layer) for layers in blocks.values() for layer in layers}
    stray = [l.name for l in model.layers if l.weights and id(l) not in in_blocks]
    if stray:
        raise ValueError(f"weighted layers of {model.name!r} outside every block: {stray}")
    return blocks


def block_variables(model: keras.Model) -> dict[str, list]:
    """All variables (trainable and not) of each named block, in a fixed order.

    Args:
        model: a model built by ``build_m2cnn``.

    Returns:
        ``{block: [keras.Variable]}``; the order within a block is the layers' order, then each
        layer's own order, so it is the same for any two models of the same variant.
    """
    return {
        block: [w for layer in layers for w in layer.weights]
        for block, layers in model_blocks(model).items()
    }


def feature_map_sizes(model: keras.Model) -> dict[str, tuple[int, int]]:
    """Spatial sizes of the feature maps around the Multi-Cell switch (paper Table I).

    Args:
        model: a model built by ``build_m2cnn``.

    Returns:
        ``{"before_switch": (h, w), "after_multicell": (h, w)}``: BaseNet's output (conv_7b_ac)
        and the input of the global average pooling.
    """
    before = model.get_layer(BASENET).output.shape
    after = model.get_layer("avg_pool").input.shape
    return {"before_switch": tuple(before[1:3]), "after_multicell": tuple(after[1:3])}


# --------------------------------------------------------------------------------------------
# Weight transfer between resolutions
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TransferReport:
    """What ``transfer_weights`` copied, by block, as paths of the target's variables.

    The paths are ``keras.Variable.path`` of the target model ("basenet/conv2d_7/kernel",
    "heads/head_logits/bias", …), unique within a model, so ``partition`` maps them back to
    ``model.trainable_variables`` for the two learning rates (LR1 restored, LR2 new).

    Attributes:
        source: name of the source model.
        target: name of the target model.
        restored: ``{block: (path, …)}`` target variables given the source's values.
        new: ``{block: (path, …)}`` target variables left as initialised (blocks the source lacks).
        source_only: blocks of the source that the target does not have (not copied anywhere).
    """

    source: str
    target: str
    restored: dict
    new: dict
    source_only: tuple = ()

    @property
    def restored_paths(self) -> frozenset:
        return frozenset(p for paths in self.restored.values() for p in paths)

    @property
    def new_paths(self) -> frozenset:
        return frozenset(p for paths in self.new.values() for p in paths)

    def partition(self, variables: Iterable) -> tuple[list, list]:
        """Splits variables of the target model into (restored, new), e.g. for LR1 and LR2.

        Args:
            variables: variables of the target model, e.g. ``model.trainable_variables``.

        Returns:
            ``(restored, new)``, two lists that together hold every given variable once.

        Raises:
            ValueError: if a variable's path is in neither group (it is not from this target).
        """
        restored_paths, new_paths = self.restored_paths, self.new_paths
        restored, new, unknown = [], [], []
        for variable in variables:
            if variable.path in restored_paths:
                restored.append(variable)
            elif variable.path in new_paths:
                new.append(variable)
            else:
                unknown.append(variable.path)
        if unknown:
            raise ValueError(
                f"variables not covered by the transfer report {self.source!r} → {self.target!r} "
                f"(not from that target model?): {unknown[:5]}{' …' if len(unknown) > 5 else ''}"
            )
        return restored, new

    def to_dict(self) -> dict:
        """JSON-serialisable form: lists instead of tuples, plus counts per block."""
        return {
            "source": self.source,
            "target": self.target,
            "restored": {block: list(paths) for block, paths in self.restored.items()},
            "new": {block: list(paths) for block, paths in self.new.items()},
            "source_only": list(self.source_only),
            "counts": {
                "restored": {block: len(paths) for block, paths in self.restored.items()},
                "new": {block: len(paths) for block, paths in self.new.items()},
            },
        }


def _pair_variables(source: list, target: list, what: str) -> list:
    """Pairs two variable lists position by position, or raises naming the first misfit."""
    if len(source) != len(target):
        raise ValueError(
            f"cannot transfer {what}: the source has {len(source)} variables, the target "
            f"{len(target)} (different variants?)"
        )
    for s, t in zip(source, target):
        if s.name != t.name or tuple(s.shape) != tuple(t.shape):
            raise ValueError(
                f"cannot transfer {what}: target variable {t.path!r} {tuple(t.shape)} does not "
                f"match source variable {s.path!r} {tuple(s.shape)}"
            )
    return list(zip(source, target))


def transfer_weights(source_model: keras.Model, target_model: keras.Model) -> TransferReport:
    """Initialises a model from one trained at a lower resolution (paper II-C staging).

    Every block the two models share (BaseNet, heads, and medial cells when both have them) is
    copied bit-exactly; blocks only the target has (the cells new at its resolution) keep their
    initial values. Everything is checked before anything is assigned, so on error the target
    is unchanged.

    Args:
        source_model: a ``build_m2cnn`` model, e.g. trained at 224.
        target_model: a ``build_m2cnn`` model of the same variant, e.g. at 448.

    Returns:
        A ``TransferReport`` listing restored and new target variables by block.

    Raises:
        ValueError: naming the variable, if a shared block's variables differ in number, name or
            shape (e.g. another variant, or another number of grades).
    """
    source_blocks = block_variables(source_model)
    target_blocks = block_variables(target_model)
    pairs, restored, new = [], {}, {}
    for block, target_vars in target_blocks.items():
        if block not in source_blocks:
            new[block] = tuple(v.path for v in target_vars)
            continue
        pairs += _pair_variables(source_blocks[block], target_vars, what=f"block {block!r}")
        restored[block] = tuple(v.path for v in target_vars)
    for source, target in pairs:
        target.assign(source)
    return TransferReport(
        source=source_model.name,
        target=target_model.name,
        restored=restored,
        new=new,
        source_only=tuple(b for b in source_blocks if b not in target_blocks),
    )


# --------------------------------------------------------------------------------------------
# Counting: parameters (from the config, to check the built model) and FLOPs
# --------------------------------------------------------------------------------------------


def _conv_bn_parameters(in_channels: int, filters: int, kernel: tuple[int, int]) -> int:
    # conv2d_bn: conv without bias; BN with scale=False has beta, moving mean and variance.
    return kernel[0] * kernel[1] * in_channels * filters + 3 * filters


def reduction_b_parameters(in_channels: int) -> int:
    """Parameters of one Reduction-B on ``in_channels`` channels, from ``config.MODEL``."""
    total = 0
    for filters in config.MODEL.reduction_b_filters:
        channels = in_channels
        for i, f in enumerate(filters):
            kernel = (1, 1) if i == 0 else (3, 3)
            total += _conv_bn_parameters(channels, f, kernel)
            channels = f
    return total


def block8_parameters(channels: int) -> int:
    """Parameters of one Block8 on ``channels`` channels, from ``config.MODEL``."""
    kernels = {1: [(1, 1)], 3: [(1, 1), (1, 3), (3, 1)]}  # Keras' branch shapes, by length
    total, mixed = 0, 0
    for filters in config.MODEL.block8_branch_filters:
        c = channels
        for f, kernel in zip(filters, kernels[len(filters)]):
            total += _conv_bn_parameters(c, f, kernel)
            c = f
        mixed += filters[-1]
    return total + mixed * channels + channels  # the biased 1×1 "up" conv, no BN


def cell_group_parameters(num_block8: int, in_channels: int | None = None) -> int:
    """Parameters of one cell group: Reduction-B, ``num_block8`` Block8 and the 1×1 projection.

    Args:
        num_block8: Block8 repeats (N3 or N4).
        in_channels: width of the group's input; BaseNet's width by default.

    Returns:
        The parameter count (trainable and not), computed from the config alone.
    """
    cfg = config.MODEL
    in_channels = cfg.basenet_channels if in_channels is None else in_channels
    width = in_channels + sum(f[-1] for f in cfg.reduction_b_filters)
    return (
        reduction_b_parameters(in_channels)
        + num_block8 * block8_parameters(width)
        + _conv_bn_parameters(width, cfg.cell_output_channels, (1, 1))
    )


def expected_cell_parameters(resolution: int, variant: str = "m2cnn") -> dict[str, int]:
    """The extra parameters the Multi-Cell path adds at ``resolution``, by block (arithmetic).

    Args:
        resolution: input side in pixels.
        variant: a key of ``config.VARIANTS``.

    Returns:
        ``{"medial_cells": n, "large_cells": n}`` for the cell groups on the path ({} if small).
    """
    repeats = _check_variant(variant)
    counts = {MEDIAL_CELLS: repeats.medial_block8, LARGE_CELLS: repeats.large_block8}
    return {
        block: cell_group_parameters(counts[block])
        for block in CELLS_ON_PATH[multicell_path(resolution)]
    }


def head_parameters(in_channels: int | None = None) -> int:
    """Parameters of the two heads (Dense 5 and Dense 1, with biases) on the pooled features."""
    c = config.MODEL.cell_output_channels if in_channels is None else in_channels
    return (c + 1) * config.NUM_GRADES + (c + 1) * 1


def _layer_macs(layer) -> int:
    """Multiply-accumulates per image of a Conv2D or Dense layer, 0 for anything else."""
    if isinstance(layer, keras.layers.Conv2D):
        kh, kw, cin_per_group, cout = layer.kernel.shape
        _, h, w, _ = layer.output.shape
        return int(h * w * kh * kw * cin_per_group * cout)
    if isinstance(layer, keras.layers.Dense):
        cin, cout = layer.kernel.shape
        return int(cin * cout)
    return 0


def _all_layers(layer) -> list:
    if isinstance(layer, keras.Model):
        return [l for sub in layer.layers for l in _all_layers(sub)]
    return [layer]


def block_macs(model: keras.Model) -> dict[str, int]:
    """Multiply-accumulates per image of each named block, from its conv and dense shapes.

    Counts ``h_out·w_out·k_h·k_w·c_in·c_out`` per Conv2D and ``c_in·c_out`` per Dense: one MAC is
    one multiply plus one add, so FLOPs ≈ 2 × MACs. Batch norm, activations, pooling, residual
    additions and biases are not counted (well under 1 % here).

    Args:
        model: a model built by ``build_m2cnn``.

    Returns:
        ``{block: MACs}``.
    """
    return {
        block: sum(_layer_macs(l) for layer in layers for l in _all_layers(layer))
        for block, layers in model_blocks(model).items()
    }


def summarize(model: keras.Model, variant: str) -> dict:
    """The numbers ``python -m m2cnn_tf.model`` prints, as a JSON-serialisable dict.

    Args:
        model: a model built by ``build_m2cnn``.
        variant: the variant it was built with (for the cell arithmetic).

    Returns:
        Resolution, path, feature-map sizes, parameters per block (total/trainable/
        non-trainable), the cell arithmetic, MACs and FLOPs (= 2 × MACs) per image and block.
    """
    resolution = int(model.input.shape[1])
    blocks = block_variables(model)
    parameters = {}
    for block, variables in blocks.items():
        trainable = sum(int(np.prod(v.shape)) for v in variables if v.trainable)
        total = sum(int(np.prod(v.shape)) for v in variables)
        parameters[block] = {
            "total": total,
            "trainable": trainable,
            "non_trainable": total - trainable,
        }
    macs = block_macs(model)
    return {
        "model": model.name,
        "variant": variant,
        "resolution": resolution,
        "path": multicell_path(resolution),
        "feature_map_sizes": {k: list(v) for k, v in feature_map_sizes(model).items()},
        "parameters": parameters,
        "total_parameters": sum(p["total"] for p in parameters.values()),
        "cell_parameters_arithmetic": expected_cell_parameters(resolution, variant),
        "heads_parameters_arithmetic": head_parameters(),
        "macs_per_image": macs,
        "total_macs_per_image": sum(macs.values()),
        "total_flops_per_image": 2 * sum(macs.values()),
    }


def format_summary(summary: dict) -> str:
    """Human-readable text of a ``summarize`` dict."""
    fm = summary["feature_map_sizes"]
    lines = [
        f"{summary['model']}: variant {summary['variant']!r}, {summary['resolution']}×"
        f"{summary['resolution']} input, Multi-Cell path {summary['path']!r} "
        f"({' + '.join((BASENET,) + CELLS_ON_PATH[summary['path']] + (HEADS,))})",
        f"feature maps: before switch {fm['before_switch'][0]}×{fm['before_switch'][1]}, "
        f"after multi-cell {fm['after_multicell'][0]}×{fm['after_multicell'][1]}",
        "",
        f"{'block':<14}{'parameters':>14}{'trainable':>14}{'non-train.':>12}{'arithmetic':>14}"
        f"{'GMACs/image':>13}",
    ]
    arithmetic = dict(summary["cell_parameters_arithmetic"])
    arithmetic[HEADS] = summary["heads_parameters_arithmetic"]
    for block, p in summary["parameters"].items():
        expected = arithmetic.get(block)
        check = ""
        if expected is not None:
            check = f"{expected:,}" + (" ✓" if expected == p["total"] else " ✗")
        lines.append(
            f"{block:<14}{p['total']:>14,}{p['trainable']:>14,}{p['non_trainable']:>12,}"
            f"{check:>14}{summary['macs_per_image'][block] / 1e9:>13.3f}"
        )
    lines += [
        f"{'total':<14}{summary['total_parameters']:>14,}{'':>40}"
        f"{summary['total_macs_per_image'] / 1e9:>13.3f}",
        "",
        f"FLOPs per image: {summary['total_flops_per_image'] / 1e9:.2f} G "
        f"(= 2 × {summary['total_macs_per_image']:,} multiply-adds; conv and dense layers only)",
    ]
    return "\n".join(lines)
