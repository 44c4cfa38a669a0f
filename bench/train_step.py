"""Benchmark: training images/s of our loop against Keras' ``model.fit``, same everything else.

Baseline (named): ``model.fit`` on the same network (same initial weights), the same optimiser
(our ``MultiOptimizer``: BaseNet at LR1, heads at LR2, as at the 224 stage from ImageNet), the same
loss (cross-entropy + MSE with the paper's weights, plus L_reg as Keras kernel regularisers of
the same value), the same batch and the same tf.data pipeline (augmented synthetic photographs).
Ours: ``training.make_train_function`` driven as ``train.py`` drives it (one distributed
``tf.function`` per step; loss terms and training counts summed on the device and read once per
round, as the loop reads them at its log steps). XLA off for both. At 224 for both variants, in one run; the two loops alternate ``--rounds`` times so that
the machine's load drifts over both alike, and each reports the median step time.

    python bench/train_step.py [--variants=tiny,m2cnn] [--batch_size=8] [--steps=5] [--rounds=4]
"""

from absl import app, flags
import dataclasses
import os
import platform
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from m2cnn_tf import config  # noqa: E402
from m2cnn_tf.data import builder, input_pipeline, sources  # noqa: E402
from m2cnn_tf.train import losses, optimizers  # noqa: E402
from m2cnn_tf.train import loop as training  # noqa: E402
from m2cnn_tf import model as m2cnn  # noqa: E402

RESOLUTION = 224


flags.DEFINE_list("variants", ["tiny", "m2cnn"], "Model variants to time.")
flags.DEFINE_integer("batch_size", 8, "Images per step.")
flags.DEFINE_integer("steps", 5, "Timed steps per round and loop.")
flags.DEFINE_integer("warmup", 2, "Untimed steps first (tracing).")
flags.DEFINE_integer("rounds", 4, "Rounds, alternating the two loops.")
flags.DEFINE_string("data_dir", "", "A build with 224 px images (default: 64 synthetic "
                    "photographs built in a temporary folder).")
FLAGS = flags.FLAGS


def _build_data(folder, count):
    inputs, skipped = sources.synthetic_inputs(count, seed=0, width=640)
    builder.build(inputs, skipped, folder,
                  config.BuilderConfig(resolutions=(RESOLUTION,), num_workers=0),
                  {"kind": "synthetic"}, quiet=True)
    return folder


def _model_and_optimizer(variant, initial, train_config):
    model = m2cnn.build_m2cnn(RESOLUTION, variant)
    model.set_weights(initial)
    report = training.report_for_blocks(model, "bench", (m2cnn.BASENET,))
    groups = training.learning_rate_groups(model, report)
    return model, optimizers.make_optimizer(model.trainable_variables, groups, train_config)


class OursLoop:
    """Our loop's step, driven as train.py drives it; ``run(n)`` returns n step times."""

    def __init__(self, model, optimizer, dataset, train_config):
        strategy = tf.distribute.get_strategy()
        self.step = training.make_train_function(strategy, model, optimizer, train_config,
                                                 train_config.batch_size)
        self.iterator = iter(strategy.experimental_distribute_dataset(
            dataset.map(lambda b: (b["image"], b["grade"]))))

    def run(self, steps):
        """Step times: the time to the end of the round (the window read waits for the device)
        spread over its steps, as fit's times come from batch ends that also wait."""
        start = time.perf_counter()
        ends = []
        for _ in range(steps):
            self.step(next(self.iterator))
            ends.append(time.perf_counter())
        self.step.window.read()  # as the loop does at a log step
        self.step.window.reset()
        ends[-1] = time.perf_counter()
        return list(np.diff([start] + ends))

    def close(self):
        del self.iterator  # a live training iterator aborts the interpreter at exit


class _StepClock(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.ends = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())


class FitLoop:
    """``model.fit`` with the same optimiser, loss, batch and data; ``run(n)`` returns n step
    times, the differences between n + 1 batch ends (so fit's per-call set-up, a new iterator
    included, is not counted against it)."""

    def __init__(self, model, optimizer, dataset, train_config):
        regulariser = keras.regularizers.L2(train_config.weight_decay / 2)  # = wd · ½ Σ w²
        for variable in model.trainable_variables:
            if losses.is_decayed(variable):
                variable.regularizer = regulariser
        w_ce, w_mse = train_config.loss_weights
        model.compile(
            optimizer=optimizer,
            loss={"logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  "score": keras.losses.MeanSquaredError()},
            loss_weights={"logits": w_ce, "score": w_mse}, jit_compile=False)
        self.model = model
        self.data = dataset.map(lambda b: (b["image"], {"logits": b["grade"],
                                                        "score": tf.cast(b["grade"],
                                                                         tf.float32)}))

    def run(self, steps):
        clock = _StepClock()
        self.model.fit(self.data, steps_per_epoch=steps + 1, epochs=1, verbose=0,
                       callbacks=[clock])
        return list(np.diff(clock.ends))

    def close(self):
        pass


def main(argv):
    del argv
    train_config = dataclasses.replace(config.TRAIN, batch_size=FLAGS.batch_size)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {load:.1f}, "
          f"TF {tf.__version__}, Keras {keras.__version__}; {RESOLUTION} px, batch "
          f"{FLAGS.batch_size}, {FLAGS.rounds} × {FLAGS.steps} timed steps per loop")
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        data_dir = FLAGS.data_dir or _build_data(os.path.join(tmp, "data"), 64)
        dataset = input_pipeline.make_dataset(data_dir, "train", RESOLUTION, FLAGS.batch_size,
                                              training=True, seed=0)
        print(f"\n{'variant':<8} {'model.fit img/s':>16} {'ours img/s':>11} {'ratio':>6}")
        for variant in FLAGS.variants:
            keras.utils.set_random_seed(0)
            initial = m2cnn.build_m2cnn(RESOLUTION, variant).get_weights()
            ours_model, ours_optimizer = _model_and_optimizer(variant, initial, train_config)
            fit_model, fit_optimizer = _model_and_optimizer(variant, initial, train_config)
            loops = {"ours": OursLoop(ours_model, ours_optimizer, dataset, train_config),
                     "fit": FitLoop(fit_model, fit_optimizer, dataset, train_config)}
            times = {name: [] for name in loops}
            for name, loop in loops.items():
                loop.run(FLAGS.warmup)  # tracing
            for _ in range(FLAGS.rounds):
                for name, loop in loops.items():
                    times[name] += loop.run(FLAGS.steps)
            for loop in loops.values():
                loop.close()
            ours, fit = times["ours"], times["fit"]
            ours_rate = FLAGS.batch_size / statistics.median(ours)
            fit_rate = FLAGS.batch_size / statistics.median(fit)
            print(f"{variant:<8} {fit_rate:>16.2f} {ours_rate:>11.2f} {ours_rate / fit_rate:>6.3f}",
                  flush=True)
            del loops, ours_model, fit_model, ours_optimizer, fit_optimizer


if __name__ == "__main__":
    app.run(main)
