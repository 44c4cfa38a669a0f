"""The multi-task loss of Eq. 2–4: L = L1 (cross-entropy) + L2 (MSE of the score) + L_reg.

Pure functions of tensors: no model, no optimiser, no global state. ``multitask_loss`` returns each
term separately so that the loop can log them apart, and takes the global batch size so that under
a distribution strategy each replica's share sums (across replicas, as gradients are summed) to
the loss of the whole batch.
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence

import tensorflow as tf

from m2cnn_tf.config import LOSS_WEIGHTS

TOTAL = "total"
CROSS_ENTROPY = "cross_entropy"  # L1, Eq. 2
MSE = "mse"  # L2, Eq. 3
WEIGHT_DECAY = "weight_decay"  # L_reg, Eq. 4
TERMS = (TOTAL, CROSS_ENTROPY, MSE, WEIGHT_DECAY)


def cross_entropy(grades: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Softmax cross-entropy of each example against its grade as a class (Eq. 2).

    Args:
        grades: int (B,) grades 0–4.
        logits: (B, 5) unnormalised scores, any float dtype (computed in float32).

    Returns:
        float32 (B,).
    """
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(grades, tf.int32), logits=tf.cast(logits, tf.float32))


def squared_error(grades: tf.Tensor, scores: tf.Tensor) -> tf.Tensor:
    """Squared distance of the regressed score from the grade as a number (Eq. 3).

    Args:
        grades: int (B,) grades 0–4.
        scores: (B,) the score head's output, any float dtype (computed in float32).

    Returns:
        float32 (B,).
    """
    return tf.square(tf.cast(scores, tf.float32) - tf.cast(grades, tf.float32))


def is_decayed(variable) -> bool:
    """Whether L_reg covers ``variable``: convolution and dense kernels, not biases or BN."""
    return variable.path.endswith("/kernel")


def l2_penalty(kernels: Iterable[tf.Tensor]) -> tf.Tensor:
    """½ Σ w² over all given tensors (``tf.nn.l2_loss`` summed), in float32.

    Args:
        kernels: the weights under decay (see ``is_decayed``).

    Returns:
        A float32 scalar (0 for none).
    """
    terms = [tf.nn.l2_loss(tf.cast(k, tf.float32)) for k in kernels]
    return tf.add_n(terms) if terms else tf.constant(0.0, tf.float32)


def multitask_loss(
    grades: tf.Tensor,
    logits: tf.Tensor,
    scores: tf.Tensor,
    kernels: Sequence[tf.Tensor] = (),
    loss_weights: Sequence[float] = LOSS_WEIGHTS,
    weight_decay: float = 0.0,
    global_batch_size: Optional[int] = None,
    num_replicas: int = 1,
) -> Dict[str, tf.Tensor]:
    """Eq. 4: w_ce · mean CE + w_mse · mean squared error + weight_decay · ½ Σ‖W‖².

    Args:
        grades: int (B,) grades of this (replica's part of the) batch.
        logits: (B, 5) classification head.
        scores: (B,) regression head.
        kernels: weights under decay (``is_decayed``).
        loss_weights: (w_ce, w_mse); the paper's are (1, 1).
        weight_decay: coefficient of L_reg.
        global_batch_size: examples in the global batch; means are sums divided by this, so the
            replicas' losses add up to the global mean. None: this batch's own size.
        num_replicas: replicas in sync; L_reg is divided by it so that it counts once in the sum.

    Returns:
        ``{"total", "cross_entropy", "mse", "weight_decay"}`` float32 scalars, each already
        weighted and scaled as it enters the total (so they add up to "total").
    """
    w_ce, w_mse = (float(w) for w in loss_weights)
    ce = cross_entropy(grades, logits)
    se = squared_error(grades, scores)
    if global_batch_size is None:
        denominator = tf.cast(tf.shape(ce)[0], tf.float32)
    else:
        denominator = tf.constant(float(global_batch_size), tf.float32)
    terms = {
        CROSS_ENTROPY: w_ce * tf.reduce_sum(ce) / denominator,
        MSE: w_mse * tf.reduce_sum(se) / denominator,
        WEIGHT_DECAY: float(weight_decay) * l2_penalty(kernels) / float(num_replicas),
    }
    terms[TOTAL] = terms[CROSS_ENTROPY] + terms[MSE] + terms[WEIGHT_DECAY]
    return {name: terms[name] for name in TERMS}
