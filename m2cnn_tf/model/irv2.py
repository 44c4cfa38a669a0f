"""Inception-ResNet-v2's building blocks, as Keras' applications build them, in our own code.

Keras' ``keras.applications.InceptionResNetV2`` is public, but the pieces it is made of
(``conv2d_bn``, ``inception_resnet_block`` and the residual scale layer) live in ``keras.src``,
which a Keras release may change at any time. The tiny BaseNet and the extra cells need those
pieces, so here they are: the same layers, in the same order, with the same names and weight
shapes as Keras' (tests/test_model.py builds the whole network from them and compares it with
Keras' own, layer by layer and output by output). Same order matters: Keras names unnamed layers
from per-class counters ("conv2d_7"), and those names are part of every variable's path, hence
of every checkpoint.

The one difference: the residual ``shortcut + scale · residual`` is ``ResidualScale``, a public
layer with ``get_config`` named after its block ("block8_medial_1_scale"); Keras' is an unnamed
``CustomScaleLayer``. Neither has weights, so no variable path depends on it.

    input (s × s × 3)
      → stem: 3 conv_bn, max-pool, 2 conv_bn, max-pool     35 × 35 × 192 at 299
      → mixed_5b (Inception-A)                             35 × 35 × 320
      → N1 × Block35                                       35 × 35 × 320
      → mixed_6a (Reduction-A)                             17 × 17 × 1088
      → N2 × Block17                                       17 × 17 × 1088
      → mixed_7a (Reduction-B)                              8 × 8 × 2080
      → Block8 × (n − 1), then block8_10 without ReLU       8 × 8 × 2080
      → conv_7b (1×1 conv_bn)                               8 × 8 × 1536
"""

from __future__ import annotations

from typing import Sequence

import keras

from m2cnn_tf import config

# Channels-last, as every input here is (h, w, 3); Keras' concatenations use the same axis 3.
CHANNEL_AXIS = 3

# Branch kernels of each Inception-ResNet block (Keras' architecture): one tuple per branch, one
# kernel per conv_bn of it. The Block8 filters are ``config.MODEL.block8_branch_filters`` (the
# extra cells are Block8s, and the parameter arithmetic reads them); Block35 and Block17 exist
# only inside BaseNet, so their filters are Keras' numbers, written here like the stem's.
BRANCH_KERNELS = {
    "block35": ((1,), (1, 3), (1, 3, 3)),
    "block17": ((1,), (1, (1, 7), (7, 1))),
    "block8": ((1,), (1, (1, 3), (3, 1))),
}
_BRANCH_FILTERS = {
    "block35": ((32,), (32, 32), (32, 48, 64)),
    "block17": ((192,), (128, 160, 192)),
}


@keras.saving.register_keras_serializable(package="m2cnn_tf")
class ResidualScale(keras.layers.Layer):
    """``shortcut + scale · residual``: how an Inception-ResNet block adds its branches.

    Scaling the residual down (0.1–0.3) keeps very deep Inception-ResNets stable in training
    (Szegedy et al. 2016, section 3.3).

    Args:
        scale: the factor on the residual.
        **kwargs: Keras layer arguments (``name``, ``dtype``, …).
    """

    def __init__(self, scale: float, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, inputs):
        shortcut, residual = inputs
        return shortcut + residual * self.scale

    def get_config(self) -> dict:
        return {**super().get_config(), "scale": self.scale}


def conv2d_bn(x, filters: int, kernel_size, strides=1, padding="same", activation="relu",
              use_bias=False, name=None):
    """Conv2D, then (without a bias) batch norm without scale, then the activation.

    Keras' ``conv2d_bn``: the layers are named ``name``, ``name_bn`` and ``name_ac`` when a name
    is given, else Keras names them.

    Args:
        x: a 4-D channels-last Keras tensor.
        filters: output channels.
        kernel_size: an int or (height, width).
        strides: convolution strides.
        padding: "same" or "valid".
        activation: a Keras activation name, or None for none.
        use_bias: a biased convolution and no batch norm (the blocks' 1×1 "up" convolution).
        name: base name of the layers, or None.

    Returns:
        The output tensor.
    """
    x = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding=padding,
                            use_bias=use_bias, name=name)(x)
    if not use_bias:
        bn_name = None if name is None else f"{name}_bn"
        # scale=False: the ReLU after it makes a per-channel scale redundant.
        x = keras.layers.BatchNormalization(axis=CHANNEL_AXIS, scale=False, name=bn_name)(x)
    if activation is not None:
        ac_name = None if name is None else f"{name}_ac"
        x = keras.layers.Activation(activation, name=ac_name)(x)
    return x


def inception_resnet_block(x, scale: float, block_type: str, block_idx, activation="relu"):
    """An Inception-ResNet block: branches, concatenation, 1×1 conv back to the input width,
    scaled residual added to the input, activation. Layers are named ``{block_type}_{block_idx}_…``.

    Args:
        x: a 4-D channels-last Keras tensor.
        scale: factor on the residual before it is added to ``x``.
        block_type: "block35" (Inception-ResNet-A), "block17" (-B) or "block8" (-C).
        block_idx: the block's number (or label, e.g. "medial_1") in the layer names.
        activation: activation at the end, or None (Keras' last Block8).

    Returns:
        The output tensor, of the shape of ``x``.

    Raises:
        ValueError: for an unknown ``block_type``.
    """
    if block_type not in BRANCH_KERNELS:
        raise ValueError(f"unknown Inception-ResNet block type {block_type!r}; expected one of "
                         f"{sorted(BRANCH_KERNELS)}")
    branches = []
    for filters, kernels in zip(branch_filters(block_type), BRANCH_KERNELS[block_type]):
        y = x
        for f, kernel in zip(filters, kernels):
            y = conv2d_bn(y, f, kernel)
        branches.append(y)
    block_name = f"{block_type}_{block_idx}"
    mixed = keras.layers.Concatenate(axis=CHANNEL_AXIS, name=f"{block_name}_mixed")(branches)
    up = conv2d_bn(mixed, x.shape[CHANNEL_AXIS], 1, activation=None, use_bias=True,
                   name=f"{block_name}_conv")
    x = ResidualScale(scale, name=f"{block_name}_scale")([x, up])
    if activation is not None:
        x = keras.layers.Activation(activation, name=f"{block_name}_ac")(x)
    return x


def branch_filters(block_type: str) -> tuple:
    """Filters of each conv_bn of each branch of a block type (see ``BRANCH_KERNELS``)."""
    if block_type == "block8":
        return config.MODEL.block8_branch_filters
    return _BRANCH_FILTERS[block_type]


def block8(x, block_idx, scale=None, activation="relu"):
    """A Block8 (Normal Cell-C), by default with ``config.MODEL.block8_scale``."""
    scale = config.MODEL.block8_scale if scale is None else scale
    return inception_resnet_block(x, scale=scale, block_type="block8", block_idx=block_idx,
                                  activation=activation)


def reduction_b(x, name: str):
    """Reduction-B with the architecture of Keras' ``mixed_7a``: stride 2, +992 channels.

    Keras builds mixed_7a inline in its constructor, so this is the one transcription; the
    filters come from ``config.MODEL.reduction_b_filters``.

    Args:
        x: a 4-D channels-last Keras tensor.
        name: name of the concatenation layer that ends the cell.

    Returns:
        The cell's output tensor, spatial size (s − 3) // 2 + 1.
    """
    branches = []
    for filters in config.MODEL.reduction_b_filters:
        y = conv2d_bn(x, filters[0], 1)
        for f in filters[1:-1]:
            y = conv2d_bn(y, f, 3)
        branches.append(conv2d_bn(y, filters[-1], 3, strides=2, padding="valid"))
    branches.append(keras.layers.MaxPooling2D(3, strides=2, padding="valid")(x))
    return keras.layers.Concatenate(axis=CHANNEL_AXIS, name=name)(branches)


def _stem_and_mixed_5b(inputs):
    """Keras' stem and Inception-A (mixed_5b): 35 × 35 × 320 at 299."""
    x = conv2d_bn(inputs, 32, 3, strides=2, padding="valid")
    x = conv2d_bn(x, 32, 3, padding="valid")
    x = conv2d_bn(x, 64, 3)
    x = keras.layers.MaxPooling2D(3, strides=2)(x)
    x = conv2d_bn(x, 80, 1, padding="valid")
    x = conv2d_bn(x, 192, 3, padding="valid")
    x = keras.layers.MaxPooling2D(3, strides=2)(x)
    branch_0 = conv2d_bn(x, 96, 1)
    branch_1 = conv2d_bn(conv2d_bn(x, 48, 1), 64, 5)
    branch_2 = conv2d_bn(conv2d_bn(conv2d_bn(x, 64, 1), 96, 3), 96, 3)
    branch_pool = conv2d_bn(keras.layers.AveragePooling2D(3, strides=1, padding="same")(x), 64, 1)
    return keras.layers.Concatenate(axis=CHANNEL_AXIS, name="mixed_5b")(
        [branch_0, branch_1, branch_2, branch_pool])


def _reduction_a(x):
    """Keras' mixed_6a (Reduction-A): 17 × 17 × 1088 at 299."""
    branch_0 = conv2d_bn(x, 384, 3, strides=2, padding="valid")
    branch_1 = conv2d_bn(conv2d_bn(conv2d_bn(x, 256, 1), 256, 3), 384, 3, strides=2,
                         padding="valid")
    branch_pool = keras.layers.MaxPooling2D(3, strides=2, padding="valid")(x)
    return keras.layers.Concatenate(axis=CHANNEL_AXIS, name="mixed_6a")(
        [branch_0, branch_1, branch_pool])


def inception_resnet_v2_notop(input_shape: Sequence[int], repeats: config.CellRepeats,
                              name: str = "inception_resnet_v2") -> keras.Model:
    """Keras' ``InceptionResNetV2(include_top=False)`` body with the repeat counts of ``repeats``.

    Keras' public constructor hard-codes 10/20/10 repeats; the tiny variant needs fewer. This is
    a transcription of that constructor (same order, same layer names; the filter numbers are
    Keras' architecture, not tunables). With the m2cnn repeats it is the very network of the
    public constructor, which a test checks layer by layer and output by output.

    Args:
        input_shape: (height, width, 3).
        repeats: N1 (Block35), N2 (Block17) and the Block8s closing BaseNet.
        name: the model's name.

    Returns:
        A functional model from the image to conv_7b_ac.
    """
    model_cfg = config.MODEL
    inputs = keras.Input(shape=tuple(input_shape))
    x = _stem_and_mixed_5b(inputs)
    for i in range(1, repeats.block35 + 1):  # Normal Cell-A: 35 × 35 × 320
        x = inception_resnet_block(x, model_cfg.block35_scale, "block35", block_idx=i)
    x = _reduction_a(x)
    for i in range(1, repeats.block17 + 1):  # Normal Cell-B: 17 × 17 × 1088
        x = inception_resnet_block(x, model_cfg.block17_scale, "block17", block_idx=i)
    x = reduction_b(x, name="mixed_7a")  # 8 × 8 × 2080
    # Block8 (Normal Cell-C) × (n − 1) with ReLU, then the activation-less block8_10
    for i in range(1, repeats.basenet_block8):
        x = block8(x, block_idx=i)
    x = block8(x, block_idx=model_cfg.final_block8_index, scale=model_cfg.final_block8_scale,
               activation=None)
    x = conv2d_bn(x, model_cfg.basenet_channels, 1, name="conv_7b")  # 8 × 8 × 1536
    return keras.Model(inputs, x, name=name)
