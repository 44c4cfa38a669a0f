"""The named blocks of an M²CNN model: their names, the cell groups of each Multi-Cell path,
and finding their layers and variables in a built model.

A block is one unit for freezing, per-group learning rates and weight transfer. Every variable's
path starts with the name of its block ("basenet/…", "medial_cells/…", "large_cells/…",
"heads/…"), so a training loop can tell fine-tuned from new weights by name. This module is the
bottom of the model package: building (``architecture``), weight transfer (``transfer``) and
accounting (``accounting``) all name and find blocks through it.
"""

from __future__ import annotations

import keras

# Named blocks, in the order the data flows through them.
BASENET = "basenet"
MEDIAL_CELLS = "medial_cells"
LARGE_CELLS = "large_cells"
HEADS = "heads"
BLOCKS = (BASENET, MEDIAL_CELLS, LARGE_CELLS, HEADS)

# The Multi-Cell paths (paper II-C) and the cell groups each one adds after BaseNet.
SMALL, MEDIUM, LARGE = "small", "medium", "large"
CELLS_ON_PATH = {SMALL: (), MEDIUM: (MEDIAL_CELLS,), LARGE: (MEDIAL_CELLS, LARGE_CELLS)}
# Layers of the heads block, and the names of the model's outputs.
HEAD_LAYERS = ("head_logits", "head_score")
OUTPUTS = ("logits", "score")
# The unnamed-block layers around the blocks: the input's rescaling to [-1, 1] before BaseNet,
# and the global pooling whose input is the last cell group's output (the heads read its output).
RESCALE = "rescale"
POOLING = "avg_pool"


# --------------------------------------------------------------------------------------------
# Blocks of a built model
# --------------------------------------------------------------------------------------------


def all_layers(layer) -> list:
    """``layer`` and, when it is a model, every layer nested in it, depth first.

    Args:
        layer: a Keras layer or model.

    Returns:
        A list starting with ``layer``; a nested model is followed by its own layers.
    """
    found = [layer]
    if isinstance(layer, keras.Model):
        for sub in layer.layers:
            found += all_layers(sub)
    return found


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


def path_of(model: keras.Model) -> str:
    """The Multi-Cell path a built model takes, read from the cell groups it has (so a model
    built with the switch off is "small" at any resolution).

    Args:
        model: a model built by ``build_m2cnn``.

    Returns:
        "small", "medium" or "large" (a key of ``CELLS_ON_PATH``).
    """
    blocks = model_blocks(model)
    cells = tuple(b for b in (MEDIAL_CELLS, LARGE_CELLS) if b in blocks)
    return next(path for path, on_path in CELLS_ON_PATH.items() if on_path == cells)
