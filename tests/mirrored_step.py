"""One training step under the default strategy and under MirroredStrategy on two logical CPUs.

Run as a script (it must split the CPU before TensorFlow starts, so the test runs it in a fresh
process): ``python tests/mirrored_step.py DATA_DIR OPTIMIZER``. Prints one JSON object comparing,
from the same initial weights and the same global batch of 4 images:

- "mirrored": two replicas of 2 images, synchronised batch norm (what train.py does);
- "permuted": the default strategy on the same 4 images in another order — mathematically the
  same step, so its distance from "default" is the float32 noise floor of this computation;
- "unsynchronised": two replicas with per-replica batch-norm statistics, a different step (the
  negative control: the comparison must be able to tell it apart).

Dropout is switched off because its masks are drawn independently on each replica.
"""

import dataclasses
import json
import sys

from m2cnn_tf.train import distribution

distribution.configure_cpu_devices(2)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from m2cnn_tf import config  # noqa: E402
from m2cnn_tf.data import input_pipeline  # noqa: E402
from m2cnn_tf.train import checkpoints, optimizers, loop as training  # noqa: E402
from m2cnn_tf import model as m2cnn  # noqa: E402

RESOLUTION, BATCH = 224, 4


def one_step(strategy, initial, images, grades, train_config, synchronize=True):
    with strategy.scope():
        model = m2cnn.build_m2cnn(RESOLUTION, train_config.variant)
        model.set_weights(initial)
        model.get_layer("dropout").rate = 0.0
        if synchronize and strategy.num_replicas_in_sync > 1:
            distribution.synchronize_batch_norm(model)
        report = training.initialize_weights(model, checkpoints.InitSource("none"))
        groups = training.learning_rate_groups(model, report)
        optimizer = optimizers.make_optimizer(model.trainable_variables, groups, train_config)
    step = training.make_train_function(strategy, model, optimizer, train_config, BATCH)
    data = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((images, grades)).batch(BATCH))
    terms, _ = step(next(iter(data)))
    return {k: float(v) for k, v in terms.items()}, [w.numpy() for w in model.weights]


def distance(weights, reference, initial):
    """‖w − w_ref‖ / ‖w_ref − w_0‖ over all weights: the difference relative to the update."""
    diff = np.sqrt(sum(np.sum((a - b) ** 2.0) for a, b in zip(weights, reference)))
    move = np.sqrt(sum(np.sum((a - b) ** 2.0) for a, b in zip(reference, initial)))
    return float(diff / move)


def main(data_dir, optimizer):
    keras.utils.set_random_seed(0)
    train_config = dataclasses.replace(config.TRAIN, variant="tiny", optimizer=optimizer,
                                       batch_size=BATCH)
    batch = next(iter(input_pipeline.make_dataset(data_dir, "train", RESOLUTION, BATCH,
                                                  training=False)))
    images, grades = batch["image"], batch["grade"]
    initial = m2cnn.build_m2cnn(RESOLUTION, train_config.variant).get_weights()
    default = tf.distribute.get_strategy()
    mirrored = distribution.make_strategy("mirrored")
    runs = {"default": one_step(default, initial, images, grades, train_config)}
    order = [2, 0, 3, 1]
    runs["permuted"] = one_step(default, initial, tf.gather(images, order),
                                tf.gather(grades, order), train_config)
    runs["mirrored"] = one_step(mirrored, initial, images, grades, train_config)
    runs["unsynchronised"] = one_step(mirrored, initial, images, grades, train_config,
                                      synchronize=False)
    reference = runs["default"][1]
    print(json.dumps({
        "replicas": mirrored.num_replicas_in_sync,
        "grades": grades.numpy().tolist(),
        "loss": {name: terms for name, (terms, _) in runs.items()},
        "distance": {name: distance(weights, reference, initial)
                     for name, (_, weights) in runs.items() if name != "default"},
    }))


if __name__ == "__main__":
    main(*sys.argv[1:])
