"""The training step: gradients (in micro-batches if asked), one optimiser step, and the
window of loss terms and counts kept on the device.

``make_train_function`` returns one ``tf.function`` per run that, for one global batch:

1. on every replica, computes the gradients of the multi-task loss through
   ``model.training_forward`` (recompute, frozen batch norm), in ``accumulate_steps``
   micro-batches summed in a loop (``accumulated_gradients``);
2. under float16 loss scaling with several replicas, makes the replicas agree on an overflow
   (``agree_on_overflow``): Keras' ``LossScaleOptimizer`` decides "finite" from one replica's
   gradients before they are summed, so an overflow on another device would be applied;
3. applies them with the one optimiser (both learning-rate groups, loss scale, step counter);
4. adds the loss terms and the training confusion counts to a ``TrainWindow``, on the device.

Nothing is copied to the host: the loop reads the window at log, checkpoint and evaluation steps
only, so a GPU is never stalled between ordinary steps. The window also remembers the first step
whose loss was not finite, so that the loop can name it when it next reads.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np
import tensorflow as tf

from m2cnn_tf import config
from m2cnn_tf import model as m2cnn
from m2cnn_tf.grading import metrics
from m2cnn_tf.train import losses
from m2cnn_tf.util import faults

# The train step's per-batch statistics kept for the training kappa (the rest are eval-only).
TRAIN_STATISTICS = ("confusion_score", "count")
GRADIENT_FAULT = "train.gradients"


def sum_over_replicas(strategy, per_replica):
    """Each value of a per-replica nest summed over the replicas (cross-replica context)."""
    return tf.nest.map_structure(
        lambda t: strategy.reduce(tf.distribute.ReduceOp.SUM, t, axis=None), per_replica)


class TrainWindow:
    """Sums of the loss terms and training counts since the last read, kept in variables on the
    device, with the step counter and the first step whose loss was not finite.

    Args:
        start_step: the step the run starts from (the counter's value before the first step).
    """

    def __init__(self, start_step: int = 0):
        def variable(value, dtype):
            return tf.Variable(value, dtype=dtype, trainable=False)

        self.step = variable(start_step, tf.int64)
        self.steps = variable(0, tf.int64)
        self.terms = variable(tf.zeros([len(losses.TERMS)]), tf.float32)
        self.confusion = variable(tf.zeros([config.NUM_GRADES] * 2, tf.int32), tf.int32)
        self.non_finite_step = variable(-1, tf.int64)
        self.non_finite_terms = variable(tf.zeros([len(losses.TERMS)]), tf.float32)

    def add(self, step, terms: Dict[str, tf.Tensor], statistics: Dict[str, tf.Tensor]) -> None:
        """Adds one step's summed terms and counts (in the graph, cross-replica context)."""
        values = tf.stack([terms[name] for name in losses.TERMS])
        self.step.assign(step)
        self.steps.assign_add(1)
        self.terms.assign_add(values)
        self.confusion.assign_add(statistics["confusion_score"])
        first_bad = tf.logical_and(self.non_finite_step < 0,
                                   tf.logical_not(tf.math.is_finite(terms[losses.TOTAL])))
        self.non_finite_step.assign(tf.where(first_bad, step, self.non_finite_step))
        self.non_finite_terms.assign(tf.where(first_bad, values, self.non_finite_terms))

    def non_finite(self) -> Optional[tuple]:
        """``(step, {term: value})`` of the first step with a non-finite loss, or None (a read)."""
        step = int(self.non_finite_step.numpy())
        if step < 0:
            return None
        return step, dict(zip(losses.TERMS, self.non_finite_terms.numpy().tolist()))

    def read(self) -> Dict:
        """``{"steps", "terms": {name: sum}, "confusion": int64 (5, 5)}`` since the last reset."""
        return {"steps": int(self.steps.numpy()),
                "terms": dict(zip(losses.TERMS, self.terms.numpy().tolist())),
                "confusion": self.confusion.numpy().astype(np.int64)}

    def reset(self) -> None:
        """Starts a new window (the step counter and the non-finite record stay)."""
        self.steps.assign(0)
        self.terms.assign(tf.zeros_like(self.terms))
        self.confusion.assign(tf.zeros_like(self.confusion))


def micro_batch_gradients(forward, optimizer, variables, kernels, images, grades,
                          loss_config: Dict, unconnected=tf.UnconnectedGradients.NONE):
    """Gradients of one (micro-)batch's share of the loss, scaled if the optimiser scales.

    Args:
        forward: ``model.training_forward(...)``: images → {"logits", "score"}.
        optimizer: a MultiOptimizer or a LossScaleOptimizer around one.
        variables: the variables to differentiate (the model's trainable ones).
        kernels: the variables under weight decay.
        images: uint8 (b, r, r, 3).
        grades: int32 (b,).
        loss_config: keyword arguments of ``losses.multitask_loss`` besides the tensors.
        unconnected: what a variable the loss does not reach gets (None or zeros).

    Returns:
        ``(gradients, terms, statistics)``.
    """
    with tf.GradientTape() as tape:
        outputs = forward(images)
        terms = losses.multitask_loss(grades, outputs["logits"], outputs["score"], kernels,
                                      **loss_config)
        # Identity unless the optimiser is a LossScaleOptimizer (float16): then loss × scale.
        scaled_loss = optimizer.scale_loss(terms[losses.TOTAL])
    gradients = tape.gradient(scaled_loss, variables, unconnected_gradients=unconnected)
    statistics = metrics.batch_statistics(grades, outputs["logits"], outputs["score"])
    return gradients, terms, {k: statistics[k] for k in TRAIN_STATISTICS}


def accumulated_gradients(forward, optimizer, variables, kernels, images, grades,
                          loss_config: Dict, accumulate_steps: int):
    """The gradients of a batch computed in ``accumulate_steps`` equal micro-batches, summed.

    ``loss_config["global_batch_size"]`` stays the whole global batch, so each micro-batch's
    share of the mean loss (and of its gradient) adds up to the batch's; the weight decay is
    divided by ``accumulate_steps`` as it is by the replicas, so that it counts once. The
    micro-batches run one after the other in a ``tf.while_loop`` (one at a time: the memory is
    that of one micro-batch).

    Args:
        forward, optimizer, variables, kernels, loss_config: as ``micro_batch_gradients``.
        images: uint8 (b, r, r, 3), b a multiple of ``accumulate_steps``.
        grades: int32 (b,).
        accumulate_steps: micro-batches.

    Returns:
        ``(gradients, terms, statistics)`` summed over the micro-batches.
    """
    if accumulate_steps == 1:
        return micro_batch_gradients(forward, optimizer, variables, kernels, images, grades,
                                     loss_config)
    loss_config = dict(loss_config,
                       num_replicas=loss_config.get("num_replicas", 1) * accumulate_steps)
    images = tf.reshape(images, [accumulate_steps, -1, *images.shape[1:]])
    grades = tf.reshape(grades, [accumulate_steps, -1])

    def micro(i):
        return micro_batch_gradients(forward, optimizer, variables, kernels, images[i],
                                     grades[i], loss_config, tf.UnconnectedGradients.ZERO)

    def body(i, totals):
        return i + 1, tf.nest.map_structure(tf.add, totals, micro(i))

    zeros = ([tf.zeros_like(v) for v in variables],
             {name: tf.zeros([], tf.float32) for name in losses.TERMS},
             {"confusion_score": tf.zeros([config.NUM_GRADES] * 2, tf.int32),
              "count": tf.zeros([], tf.int32)})
    _, totals = tf.while_loop(lambda i, _: i < accumulate_steps, body, (tf.constant(0), zeros),
                              parallel_iterations=1)
    return totals


def agree_on_overflow(gradients: list) -> list:
    """Every replica's gradients made NaN when any replica's are not finite.

    Keras' ``LossScaleOptimizer`` (TensorFlow, MirroredStrategy) takes "finite" from the first
    replica's local gradients, which are summed across replicas only later, inside the inner
    optimiser. After this, every replica sees a non-finite gradient when one does, so the step
    is skipped and the loss scale lowered on all of them. Costs one scalar all-reduce per step.

    Args:
        gradients: this replica's gradients (None for a variable without one).

    Returns:
        The gradients, or as many NaN tensors, the same on every replica.
    """
    present = [g for g in gradients if g is not None]
    finite = tf.reduce_all(tf.stack([tf.reduce_all(tf.math.is_finite(g)) for g in present]))
    overflows = tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, tf.cast(tf.logical_not(finite), tf.float32))
    agreed = tf.cond(overflows > 0,
                     lambda: [tf.fill(tf.shape(g), tf.constant(np.nan, g.dtype)) for g in present],
                     lambda: present)
    agreed = iter(agreed)
    return [None if g is None else next(agreed) for g in gradients]


def _injected_faults(gradients: list, step) -> list:
    """The ``train.gradients`` fault hook (``util.faults``): inert unless a rule names it."""
    for n, action, argument in faults.graph_rules(GRADIENT_FAULT):
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        hit = tf.logical_and(tf.equal(step, n), tf.equal(replica, int(argument or 0)))
        factor = tf.where(hit, tf.constant(np.nan), tf.constant(1.0))
        gradients = [None if g is None else g * tf.cast(factor, g.dtype) for g in gradients]
    return gradients


def train_step(forward, optimizer, kernels, variables, images, grades, step, loss_config: Dict,
               accumulate_steps: int = 1, agree: bool = False):
    """One optimisation step on one replica's part of the batch.

    Args:
        forward: ``model.training_forward(...)``.
        optimizer: a MultiOptimizer (or a LossScaleOptimizer around one).
        kernels: the variables under weight decay.
        variables: the trainable variables.
        images: uint8 (b, r, r, 3).
        grades: int32 (b,).
        step: int64, the number of this step (for the fault hook).
        loss_config: keyword arguments of ``losses.multitask_loss`` besides the tensors
            (loss_weights, weight_decay, global_batch_size, num_replicas).
        accumulate_steps: micro-batches (``accumulated_gradients``).
        agree: make the replicas agree on an overflow first (``agree_on_overflow``).

    Returns:
        ``(terms, statistics)``: this replica's loss terms (summing to the global loss over
        replicas) and its training confusion counts.
    """
    gradients, terms, statistics = accumulated_gradients(
        forward, optimizer, variables, kernels, images, grades, loss_config, accumulate_steps)
    gradients = _injected_faults(gradients, step)
    if agree:
        gradients = agree_on_overflow(gradients)
    optimizer.apply(gradients, variables)
    return terms, statistics


def make_train_function(strategy, model, optimizer, train_config: config.TrainConfig,
                        global_batch_size: int, window: Optional[TrainWindow] = None) -> Callable:
    """``train_step`` on every replica under one ``tf.function``, adding to ``window``.

    Args:
        strategy: the tf.distribute strategy.
        model: the network (built in the strategy's scope).
        optimizer: built in the strategy's scope.
        train_config: loss weights, weight decay, jit_compile, recompute, batch_norm,
            accumulate_steps, mixed_precision.
        global_batch_size: images per step over all replicas.
        window: where the terms and counts go (a new ``TrainWindow`` from step 0 if None);
            it is the returned function's ``window`` attribute.

    Returns:
        A function of one distributed batch ``(images, grades)`` returning the step's terms and
        counts summed over replicas, as device tensors (reading them is a host copy; the
        training loop reads the window instead).
    """
    window = TrainWindow() if window is None else window
    variables = model.trainable_variables
    kernels = [v for v in variables if losses.is_decayed(v)]
    forward = m2cnn.training_forward(model, train_config.recompute, train_config.batch_norm)
    loss_config = dict(loss_weights=train_config.loss_weights,
                       weight_decay=train_config.weight_decay,
                       global_batch_size=global_batch_size,
                       num_replicas=strategy.num_replicas_in_sync)
    agree = (train_config.mixed_precision == "float16" and strategy.num_replicas_in_sync > 1)

    def replica_step(images, grades, step):
        return train_step(forward, optimizer, kernels, variables, images, grades, step,
                          loss_config, train_config.accumulate_steps, agree)

    if train_config.jit_compile:
        replica_step = tf.function(replica_step, jit_compile=True, autograph=False)

    @tf.function(autograph=False)
    def distributed_train_step(batch):
        step = window.step + 1
        images, grades = batch
        terms, statistics = sum_over_replicas(
            strategy, strategy.run(replica_step, args=(images, grades, step)))
        window.add(step, terms, statistics)
        return terms, statistics

    distributed_train_step.window = window
    return distributed_train_step
