"""Counting: parameters from the config (to check the built model against), feature-map sizes
and FLOPs.

``python -m m2cnn_tf.model`` prints ``format_summary(summarize(model, variant))``: for each named
block the parameters the built model has next to the ones the configuration implies, and the
multiply-accumulates per image.
"""

from __future__ import annotations

import keras
import numpy as np

from m2cnn_tf import config
from m2cnn_tf.model.irv2 import BRANCH_KERNELS, branch_filters
from m2cnn_tf.model.architecture import check_variant, multicell_path
from m2cnn_tf.model.blocks import (BASENET, CELLS_ON_PATH, HEADS, LARGE_CELLS, MEDIAL_CELLS,
                                   all_layers, block_variables, model_blocks, path_of)


def _conv_bn_parameters(in_channels: int, filters: int, kernel: tuple[int, int]) -> int:
    # conv2d_bn: conv without bias; BN with scale=False has beta, moving mean and variance.
    return kernel[0] * kernel[1] * in_channels * filters + 3 * filters


def _pair(kernel) -> tuple[int, int]:
    return (kernel, kernel) if isinstance(kernel, int) else tuple(kernel)


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
    total, mixed = 0, 0
    for filters, kernels in zip(branch_filters("block8"), BRANCH_KERNELS["block8"]):
        c = channels
        for f, kernel in zip(filters, kernels):
            total += _conv_bn_parameters(c, f, _pair(kernel))
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


def expected_cell_parameters(resolution: int, variant: str = "m2cnn",
                             multicell: str = config.MULTICELL_AUTO) -> dict[str, int]:
    """The extra parameters the Multi-Cell path adds at ``resolution``, by block (arithmetic).

    Args:
        resolution: input side in pixels.
        variant: a key of ``config.VARIANTS``.
        multicell: the switch's mode (``config.MULTICELL_MODES``; "off" adds no cells).

    Returns:
        ``{"medial_cells": n, "large_cells": n}`` for the cell groups on the path ({} if small).
    """
    return _cell_parameters_on_path(multicell_path(resolution, multicell), variant)


def _cell_parameters_on_path(path: str, variant: str) -> dict[str, int]:
    repeats = check_variant(variant)
    counts = {MEDIAL_CELLS: repeats.medial_block8, LARGE_CELLS: repeats.large_block8}
    return {block: cell_group_parameters(counts[block]) for block in CELLS_ON_PATH[path]}


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
        block: sum(_layer_macs(l) for layer in layers for l in all_layers(layer))
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
    path = path_of(model)
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
        "path": path,
        "feature_map_sizes": {k: list(v) for k, v in feature_map_sizes(model).items()},
        "parameters": parameters,
        "total_parameters": sum(p["total"] for p in parameters.values()),
        "cell_parameters_arithmetic": _cell_parameters_on_path(path, variant),
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
