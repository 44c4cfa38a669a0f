"""Moving weights between networks: stage to stage, and from Keras' notop file into BaseNet.

* ``transfer_weights`` (paper II-C staging): a model trained at a lower resolution initialises
  one at a higher resolution; shared blocks are copied bit-exactly, the cells new at the higher
  resolution keep their initial values, and a ``TransferReport`` lists both, so that training
  can give them the two learning rates (LR1 restored, LR2 new).
* ``load_notop_units``: Keras' Inception-ResNet-v2 notop weights (ImageNet or a local file) into
  a BaseNet with fewer repeats (the tiny variant), unit by unit.

Both pair variables one to one and check names and shapes before assigning anything.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterable

import keras

from m2cnn_tf import config
from m2cnn_tf.model.blocks import block_variables


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


def transfer_weights(source_model: keras.Model, target_model: keras.Model,
                     new_blocks: Iterable[str] = ()) -> TransferReport:
    """Initialises a model from one trained at a lower resolution (paper II-C staging).

    Every block the two models share (BaseNet, heads, and medial cells when both have them) is
    copied bit-exactly, but those named in ``new_blocks``; blocks only the target has (the cells
    new at its resolution) and those keep their initial values. Everything is checked before
    anything is assigned, so on error the target is unchanged.

    Args:
        source_model: a ``build_m2cnn`` model, e.g. trained at 224.
        target_model: a ``build_m2cnn`` model of the same variant, e.g. at 448.
        new_blocks: shared blocks to leave as initialised and report as new (e.g. "heads", to
            train fresh heads on the new cells' features).

    Returns:
        A ``TransferReport`` listing restored and new target variables by block.

    Raises:
        ValueError: naming the variable, if a shared block's variables differ in number, name or
            shape (e.g. another variant, or another number of grades).
    """
    source_blocks = block_variables(source_model)
    target_blocks = block_variables(target_model)
    new_blocks = set(new_blocks)
    pairs, restored, new = [], {}, {}
    for block, target_vars in target_blocks.items():
        if block not in source_blocks or block in new_blocks:
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


def load_notop_units(basenet: keras.Model, weights) -> None:
    """Loads a notop weights file (or ImageNet) into a reduced BaseNet, unit by unit.

    Keras' file is for the full network, so it goes into a full BaseNet first (built at the
    smallest size: weight shapes do not depend on it); then every unit of ``basenet`` takes the
    weights of the unit of the same name (the stem, mixed_5b/6a/7a, block35_1, block17_1,
    block8_10 with conv_7b, …). Every unit of a reduced BaseNet exists in the full one.

    Args:
        basenet: a BaseNet built by ``irv2.inception_resnet_v2_notop`` (any repeats).
        weights: "imagenet" or the path of a Keras Inception-ResNet-v2 notop weights file
            (legacy ``.h5`` or ``.weights.h5``), as ``keras.applications.InceptionResNetV2``
            takes them.

    Raises:
        ValueError: naming the unit or variable, if ``basenet`` has a unit the full network
            lacks, or a unit's variables differ in number, name or shape.
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
