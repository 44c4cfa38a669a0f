"""How a training step calls the network: whole, or block by block — recomputing activations in
the backward pass (gradient checkpointing) and/or with frozen batch-norm statistics.

Both options change how the model is *called*, never the model: the same layers and variables
run, no layer is wrapped or replaced, and the model's tracked objects (hence every variable path
and every checkpoint) are the same whatever the setting, so a run may resume or fine-tune with a
different one. ``training_forward(model, recompute, batch_norm)`` returns the function a train
step calls in place of ``model(images, training=True)``; with the defaults it is exactly that.

    images → "rescale" → body blocks ("basenet", "medial_cells", "large_cells") → heads
                          each body run whole, or as segments (below)

**Segments.** A body block is a Keras functional model whose graph is a chain of units: the stem's
convolutions, then Inception-ResNet cells (Block35/17/8, the reductions), then a 1×1 convolution.
``body_segments`` cuts it where exactly one tensor is alive — where everything after depends on
that tensor alone — and keeps a cut at each activation output (so a convolution, its batch norm
and its ReLU stay together) and after each multi-branch cell; every segment is a small functional
model built on the body's own layers. A segment holding a layer with several inputs (a
concatenation or a residual sum) is a *cell*.

**Recompute** (``RECOMPUTE``): "cells" wraps every cell segment in ``tf.recompute_grad``, "all"
every segment. A recomputed segment keeps only its input for the backward pass and runs its
forward again there, so the memory of the activations drops to the segment boundaries plus one
segment's inside, for about one more forward pass of compute. The gradients are those of the
plain call. Batch norm in training mode updates its moving statistics as a side effect of the
forward pass, and the recomputation must not update them a second time: during the
recomputation every batch-norm layer of the segment runs with momentum 1, so its update writes
back the value it read (m·1 + μ·0 = m exactly) while normalising with the same batch statistics.

**Frozen batch norm** (``BATCH_NORMS``): "frozen" calls the body blocks in inference mode, so every
batch-norm layer normalises with its moving statistics and leaves them unchanged, while its β
(a trainable variable like any other) still receives gradients; the heads, whose dropout must
stay active, are called in training mode. The usual choice when fine-tuning on a few images per
device, where batch statistics are noise.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Callable, Sequence

import keras
import tensorflow as tf

from m2cnn_tf.config import (BATCH_NORM_FROZEN, BATCH_NORM_MODES, BATCH_NORM_TRAIN,
                             RECOMPUTE_ALL, RECOMPUTE_CELLS, RECOMPUTE_MODES, RECOMPUTE_NONE)
from m2cnn_tf.model.blocks import HEADS, POOLING, RESCALE, model_blocks

NONE, CELLS, ALL = RECOMPUTE_NONE, RECOMPUTE_CELLS, RECOMPUTE_ALL
RECOMPUTE = RECOMPUTE_MODES
TRAIN, FROZEN = BATCH_NORM_TRAIN, BATCH_NORM_FROZEN
BATCH_NORMS = BATCH_NORM_MODES
# Layers whose training-mode behaviour differs from inference beside batch norm: frozen batch
# norm calls the body blocks in inference mode, so none of these may live there.
_TRAINING_DEPENDENT = (keras.layers.Dropout, keras.layers.GaussianDropout,
                       keras.layers.GaussianNoise, keras.layers.AlphaDropout)


@dataclasses.dataclass(frozen=True)
class Segment:
    """A run of consecutive layers of a body block, as a functional model on the same layers.

    Attributes:
        model: input = the tensor at the segment's start, output = the one at its end.
        cell: whether it holds a layer with several inputs (an Inception-ResNet cell).
        batch_norm_layers: its BatchNormalization layers.
        layer_names: its layers, in order (for messages and tests).
    """

    model: keras.Model
    cell: bool
    batch_norm_layers: tuple
    layer_names: tuple


def _tensors(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _segment_ends(operations: Sequence) -> list:
    """Indices (in ``operations``) of the layers that end a segment; see the module docstring."""
    position = {}
    last_use = {}
    for i, op in enumerate(operations):
        if not isinstance(op, keras.layers.InputLayer):
            for tensor in _tensors(op.input):
                if id(tensor) not in position:
                    raise ValueError(f"layer {op.name!r} uses a tensor made after it: the layers "
                                     "are not in the order of the data flow")
                last_use[id(tensor)] = i
        outputs = _tensors(op.output)
        if len(outputs) != 1:
            raise ValueError(f"layer {op.name!r} has {len(outputs)} outputs; segments need one")
        position[id(outputs[0])] = i
    ends, alive = [], set()
    for i, op in enumerate(operations):
        out = id(op.output)
        alive = {t for t in alive | {out} if last_use.get(t, len(operations)) > i}
        if alive != {out} or isinstance(op, keras.layers.InputLayer):
            continue  # not a cut: other tensors are still needed later
        following = operations[i + 1] if i + 1 < len(operations) else None
        merges = len(_tensors(op.input)) > 1
        if (following is None or isinstance(op, keras.layers.Activation)
                or (merges and not isinstance(following, keras.layers.Activation))):
            ends.append(i)
    return ends


def body_segments(body: keras.Model) -> list:
    """A body block (a functional model) cut into segments that run one after the other.

    Args:
        body: "basenet", "medial_cells" or "large_cells" of a ``build_m2cnn`` model (any
            single-input, single-output functional model whose layers are each called once).

    Returns:
        ``[Segment]`` in data-flow order; chained, they compute ``body``.

    Raises:
        ValueError: for a graph that cannot be cut (a layer with several outputs).
    """
    operations = list(body.operations)
    segments, start = [], 0
    for end in _segment_ends(operations):
        layers = [op for op in operations[start:end + 1]
                  if not isinstance(op, keras.layers.InputLayer)]
        source = operations[start - 1].output if start else operations[0].output
        segments.append(Segment(
            model=keras.Model(source, operations[end].output,
                              name=f"{body.name}_segment_{len(segments)}"),
            cell=any(len(_tensors(op.input)) > 1 for op in layers),
            batch_norm_layers=tuple(op for op in layers
                                    if isinstance(op, keras.layers.BatchNormalization)),
            layer_names=tuple(op.name for op in layers)))
        start = end + 1
    return segments


@contextlib.contextmanager
def _statistics_held(batch_norm_layers):
    """Momentum 1 on these layers while a recomputation is traced: their moving-statistics
    update writes back the value it read."""
    momenta = [layer.momentum for layer in batch_norm_layers]
    for layer in batch_norm_layers:
        layer.momentum = 1.0
    try:
        yield
    finally:
        for layer, momentum in zip(batch_norm_layers, momenta):
            layer.momentum = momentum


def _recomputed(segment: Segment, training: bool) -> Callable:
    """``segment.model`` under ``tf.recompute_grad``, the recomputation not updating batch norm."""

    def run(x):
        calls = []

        def call(y):
            calls.append(y)
            if len(calls) == 1 or not training:  # the forward pass (tf.recompute_grad's first)
                return segment.model(y, training=training)
            with _statistics_held(segment.batch_norm_layers):
                return segment.model(y, training=training)

        return tf.recompute_grad(call)(x)

    return run


def _body_runner(body: keras.Model, recompute: str, training: bool) -> Callable:
    if recompute == NONE:
        return lambda x: body(x, training=training)
    steps = [_recomputed(s, training) if recompute == ALL or s.cell
             else (lambda x, m=s.model: m(x, training=training))
             for s in body_segments(body)]

    def run(x):
        for step in steps:
            x = step(x)
        return x

    return run


def _check_layers(bodies, heads: keras.Model) -> None:
    """Frozen batch norm calls the bodies in inference mode and the heads in training mode."""
    for body in bodies:
        bad = [layer.name for layer in body.layers if isinstance(layer, _TRAINING_DEPENDENT)]
        if bad:
            raise ValueError(f"frozen batch norm runs {body.name!r} in inference mode, which "
                             f"would also switch off its layers {bad}")
    bad = [layer.name for layer in heads.layers
           if isinstance(layer, keras.layers.BatchNormalization)]
    if bad:
        raise ValueError(f"the heads run in training mode; their batch norm {bad} would train")


def training_forward(model: keras.Model, recompute: str = NONE,
                     batch_norm: str = TRAIN) -> Callable:
    """The function a train step calls on a batch of images in place of ``model(...)``.

    Args:
        model: a ``build_m2cnn`` model.
        recompute: "none", "cells" (recompute every Inception-ResNet cell in the backward pass)
            or "all" (every segment of every body block); see the module docstring.
        batch_norm: "train" (batch statistics, moving statistics updated) or "frozen" (moving
            statistics, unchanged; β still trains).

    Returns:
        ``forward(images) → {"logits", "score"}`` in training mode. With "none" and "train" it is
        ``model(images, training=True)`` itself.

    Raises:
        ValueError: for an unknown setting, or a model these settings cannot run.
    """
    if recompute not in RECOMPUTE:
        raise ValueError(f"unknown recompute setting {recompute!r}; allowed: {RECOMPUTE}")
    if batch_norm not in BATCH_NORMS:
        raise ValueError(f"unknown batch_norm setting {batch_norm!r}; allowed: {BATCH_NORMS}")
    if recompute == NONE and batch_norm == TRAIN:
        return lambda images: model(images, training=True)
    blocks = model_blocks(model)
    bodies = [layers[0] for block, layers in blocks.items() if block != HEADS]
    # The prefix (input → rescale) and the heads (pooling → outputs) as models on the same
    # layers; the bodies between them are the nested models themselves.
    prefix = keras.Model(model.inputs, model.get_layer(RESCALE).output)
    heads = keras.Model(model.get_layer(POOLING).input, model.output)
    training = batch_norm == TRAIN
    if not training:
        _check_layers(bodies, heads)
    runners = [_body_runner(body, recompute, training) for body in bodies]

    def forward(images):
        x = prefix(images, training=True)
        for run in runners:
            x = run(x)
        return heads(x, training=True)

    return forward
