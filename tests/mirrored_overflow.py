"""float16 on two logical CPUs when only one replica overflows (issue 17).

Run as a script (it must split the CPU before TensorFlow starts, so the test runs it in a fresh
process): ``python tests/mirrored_overflow.py``. Three training steps of the tiny variant with
float16 loss scaling under MirroredStrategy, from the same initial weights and batch; the fault
hook ``train.gradients:2:nonfinite:1`` makes step 2's gradients NaN on replica 1 only. Prints one
JSON object with, per run, after each step: the loss scale, whether both replicas hold the same
weights, whether the trained weights changed in that step, and whether all are finite:

- "accumulate_1", "accumulate_2": ``make_train_function`` as train.py builds it, one batch
  (synchronised batch norm) or two micro-batches (frozen batch norm) per step;
- "without_agreement": the same, with the replicas' agreement on an overflow switched off — what
  Keras' LossScaleOptimizer does alone (the negative control: it must show the failure).
"""

import dataclasses
import hashlib
import json

from m2cnn_tf.train import distribution

distribution.configure_cpu_devices(2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from m2cnn_tf import config  # noqa: E402
from m2cnn_tf import model as m2cnn  # noqa: E402
from m2cnn_tf.train import checkpoints, optimizers, step as train_step  # noqa: E402
from m2cnn_tf.train import loop as training  # noqa: E402
from m2cnn_tf.util import faults  # noqa: E402

RESOLUTION, BATCH, STEPS = 96, 4, 3
FAULT = "train.gradients:2:nonfinite:1"  # step 2, replica 1


def replica_digests(strategy, weights):
    """sha256 of ``weights`` as each replica holds them."""
    digests = [hashlib.sha256() for _ in range(strategy.num_replicas_in_sync)]
    for weight in weights:
        for digest, value in zip(digests, strategy.experimental_local_results(weight.value)):
            digest.update(np.ascontiguousarray(value.numpy()).tobytes())
    return [d.hexdigest() for d in digests]


def run(strategy, initial, batch, accumulate_steps, steps=STEPS):
    # Micro-batches run in a loop, where batch norm cannot synchronise across replicas: train.py
    # asks for frozen batch norm with --accumulate_steps > 1 on several replicas.
    train_config = dataclasses.replace(
        config.TRAIN, variant="tiny", batch_size=BATCH, mixed_precision="float16",
        accumulate_steps=accumulate_steps, loss_scale_initial=2.0**8,
        batch_norm="train" if accumulate_steps == 1 else "frozen")
    faults.configure(FAULT)
    with distribution.precision_policy("float16"), strategy.scope():
        model = m2cnn.build_m2cnn(RESOLUTION, "tiny")
        model.set_weights(initial)
        model.get_layer("dropout").rate = 0.0  # masks are drawn per replica
        if accumulate_steps == 1:
            distribution.synchronize_batch_norm(model)
        report = training.initialize_weights(model, checkpoints.InitSource("none"))
        groups = training.learning_rate_groups(model, report)
        optimizer = optimizers.make_optimizer(model.trainable_variables, groups, train_config,
                                              loss_scaling=True)
    with distribution.precision_policy("float16"):
        function = train_step.make_train_function(strategy, model, optimizer, train_config, BATCH)
        before = replica_digests(strategy, model.trainable_weights)
        records = []
        for _ in range(steps):
            terms, _ = function(batch)
            trained = replica_digests(strategy, model.trainable_weights)
            records.append({
                "loss_scale": float(optimizer.dynamic_scale.numpy()),
                "loss": float(terms["total"]),
                # every weight, the batch-norm moving statistics included
                "replicas_equal": len(set(replica_digests(strategy, model.weights))) == 1,
                # the trained weights (a skipped step still updates the moving statistics)
                "trained_changed": trained[0] != before[0],
                "finite": all(np.all(np.isfinite(v.numpy())) for w in model.weights
                              for v in strategy.experimental_local_results(w.value)),
            })
            before = trained
    faults.configure("")
    return {"initial_scale": train_config.loss_scale_initial, "steps": records}


def main():
    keras.utils.set_random_seed(0)
    strategy = distribution.make_strategy("mirrored")
    initial = m2cnn.build_m2cnn(RESOLUTION, "tiny").get_weights()
    rng = np.random.default_rng(0)
    dataset = tf.data.Dataset.from_tensor_slices((
        rng.integers(0, 256, (BATCH, RESOLUTION, RESOLUTION, 3), dtype=np.uint8),
        rng.integers(0, config.NUM_GRADES, BATCH).astype(np.int32))).batch(BATCH)
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
    runs = {f"accumulate_{k}": run(strategy, initial, batch, k) for k in (1, 2)}
    train_step.agree_on_overflow = lambda gradients: gradients  # Keras alone
    runs["without_agreement"] = run(strategy, initial, batch, 1, steps=2)
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "runs": runs}))


if __name__ == "__main__":
    main()
