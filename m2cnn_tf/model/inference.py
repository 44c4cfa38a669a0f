"""Running the network in a graph on a batch that may be empty.

oneDNN's batch normalisation fails on a batch of zero images, and TF Serving may send one (so may
a grade_patient request without patients). Every graph that calls the network — the serving
outputs, the two-eye fusion endpoint, Grad-CAM — goes through ``unless_empty``, which skips the
network for an empty batch and returns zero-row outputs of the right shapes instead.
"""

from __future__ import annotations

from typing import Any, Callable

import tensorflow as tf


def unless_empty(batch: tf.Tensor, run: Callable[[], Any], outputs: Any) -> Any:
    """``run()`` for a batch of at least one element, zero-row tensors for an empty one.

    Args:
      batch: the batch whose first dimension decides (the images given to the network).
      run: computes the outputs from the batch (calls the network).
      outputs: what ``run`` returns, as a nest of ``tf.TensorSpec`` whose first dimension is
        the batch (any size; only the other dimensions and the dtype are used).

    Returns:
      ``run()``'s nest of tensors, or for an empty batch the same nest of zero-row tensors.
    """
    def nothing():
        return tf.nest.map_structure(lambda spec: tf.zeros([0, *spec.shape[1:]], spec.dtype),
                                     outputs)

    return tf.cond(tf.shape(batch)[0] > 0, run, nothing)
