"""The 720 px stage on small GPUs (issue 17): recompute, gradient accumulation, frozen batch
norm, float16 across replicas, no host copy on ordinary steps, the profiler.

Everything on the tiny variant with small images; the float16 run on two logical CPUs is a
script in its own process (it must split the CPU before TensorFlow starts).
"""

import dataclasses
import json
import os
import subprocess
import sys
import threading

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import ops as tf_ops

from conftest import REPO_ROOT, tiny_train_config
from m2cnn_tf import config
from m2cnn_tf import model as m2cnn
from m2cnn_tf.data import builder, input_pipeline, sources
from m2cnn_tf.train import checkpoints, losses, optimizers, summaries
from m2cnn_tf.train import loop as training
from m2cnn_tf.train import step as train_step

ENV_SCRIPT = {"TF_CPP_MIN_LOG_LEVEL": "3"}
# Keras' own weight saving trips numpy 2's __array__(copy=...) deprecation; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def random_batch(count, resolution, seed=0):
    rng = np.random.default_rng(seed)
    return (tf.constant(rng.integers(0, 256, (count, resolution, resolution, 3), dtype=np.uint8)),
            tf.constant(rng.integers(0, config.NUM_GRADES, count).astype(np.int32)))


def moving_statistics(model):
    """Every batch-norm layer's moving mean and variance (not the dropout's seed state)."""
    return [v for v in model.non_trainable_variables if "/moving_" in v.path]


def relative(values, reference, origin=None):
    """‖values − reference‖ / ‖reference − origin‖ (origin 0: relative to the reference)."""
    origin = origin or [np.zeros_like(r) for r in reference]
    diff = np.sqrt(sum(np.sum((a - b) ** 2.0) for a, b in zip(values, reference)))
    scale = np.sqrt(sum(np.sum((b - o) ** 2.0) for b, o in zip(reference, origin)))
    return float(diff / scale)


# --------------------------------------------------------------------------------------------
# Recompute and frozen batch norm: the model call
# --------------------------------------------------------------------------------------------


def test_recompute_gives_the_same_gradients_and_updates_batch_norm_once():
    """At 352 px (BaseNet and the medial cells): loss, gradients and the moving statistics after
    one training pass are those of the plain call; without the momentum-1 recomputation the
    statistics would be updated twice (checked: they moved, and equal the plain pass's)."""
    keras.utils.set_random_seed(0)
    model = m2cnn.build_m2cnn(352, "tiny")
    model.get_layer("dropout").rate = 0.0
    initial = model.get_weights()
    images, grades = random_batch(2, 352)

    def one_pass(recompute):
        model.set_weights(initial)
        forward = m2cnn.training_forward(model, recompute)

        @tf.function
        def gradients():
            with tf.GradientTape() as tape:
                outputs = forward(images)
                loss = losses.multitask_loss(grades, outputs["logits"], outputs["score"])
            return loss["total"], tape.gradient(loss["total"], model.trainable_variables)

        loss, grads = gradients()
        return (float(loss), [g.numpy() for g in grads],
                [v.numpy() for v in moving_statistics(model)])

    model.set_weights(initial)
    before = [v.numpy() for v in moving_statistics(model)]
    loss, grads, statistics = one_pass("none")
    assert relative(statistics, before) > 1e-3  # a training pass moves them
    for mode in ("all",):  # "cells" recomputes a subset of these segments the same way
        mode_loss, mode_grads, mode_statistics = one_pass(mode)
        assert mode_loss == pytest.approx(loss, rel=1e-6), mode
        assert relative(mode_grads, grads) <= 1e-5, mode
        for block, variables in m2cnn.block_variables(model).items():
            chosen = [i for i, v in enumerate(model.trainable_variables)
                      if any(v is w for w in variables)]
            assert relative([mode_grads[i] for i in chosen],
                            [grads[i] for i in chosen]) <= 1e-5, (mode, block)
        assert relative(mode_statistics, statistics, before) <= 1e-5, mode


def test_segments_chain_to_the_body_and_cells_are_the_inception_resnet_blocks():
    model = m2cnn.build_m2cnn(352, "tiny")
    body = model.get_layer(m2cnn.MEDIAL_CELLS)
    segments = m2cnn.body_segments(body)
    assert [s.layer_names[-1] for s in segments] == [
        "medial_reduction_b", "block8_medial_1_ac", "medial_conv_ac"]
    assert [s.cell for s in segments] == [True, True, False]
    x = tf.random.stateless_uniform((1, *body.input.shape[1:]), seed=(1, 2))
    chained = x
    for segment in segments:
        chained = segment.model(chained, training=False)
    np.testing.assert_array_equal(chained.numpy(), body(x, training=False).numpy())
    basenet = m2cnn.body_segments(model.get_layer(m2cnn.BASENET))
    cells = [s.layer_names[-1] for s in basenet if s.cell]
    assert cells == ["mixed_5b", "block35_1_ac", "mixed_6a", "block17_1_ac", "mixed_7a",
                     "block8_10_scale"]
    assert sum(len(s.layer_names) for s in basenet) == len(model.get_layer("basenet").layers) - 1


def test_frozen_batch_norm_normalises_with_moving_statistics_and_trains_beta():
    """Outputs are the inference-mode ones (dropout off), the moving statistics stay, and every
    batch norm's β gets a gradient — with and without recompute."""
    keras.utils.set_random_seed(0)
    model = m2cnn.build_m2cnn(96, "tiny")
    model.get_layer("dropout").rate = 0.0
    for variable in moving_statistics(model):  # statistics unlike any batch's
        low, high = (0.5, 1.5) if variable.path.endswith("variance") else (-0.1, 0.1)
        variable.assign(tf.random.uniform(variable.shape, low, high))
    statistics = [v.numpy() for v in moving_statistics(model)]
    images, grades = random_batch(4, 96)
    inference = model(images, training=False)["score"].numpy()
    betas = [v for v in model.trainable_variables if v.path.endswith("/beta")]
    gradients = {}
    for recompute in ("none", "all"):
        forward = m2cnn.training_forward(model, recompute, "frozen")
        with tf.GradientTape() as tape:
            outputs = forward(images)
            loss = losses.multitask_loss(grades, outputs["logits"], outputs["score"])["total"]
        np.testing.assert_allclose(outputs["score"], inference, rtol=1e-5)
        gradients[recompute] = [g.numpy() for g in tape.gradient(loss, betas)]
        assert relative([v.numpy() for v in moving_statistics(model)], statistics) == 0.0
    # (a β whose ReLU is dead for all four images has a zero gradient, hence "most")
    assert np.mean([np.any(g) for g in gradients["none"]]) > 0.8
    assert relative(gradients["all"], gradients["none"]) <= 1e-5
    assert not np.allclose(model(images, training=True)["score"], inference, rtol=1e-3)


# --------------------------------------------------------------------------------------------
# Gradient accumulation
# --------------------------------------------------------------------------------------------


def _one_step(initial, images, grades, accumulate_steps, batch_norm):
    """One optimiser step (SGD) of make_train_function from ``initial``: the weights after it."""
    train_config = dataclasses.replace(config.TRAIN, variant="tiny", optimizer="sgd",
                                       batch_size=8, accumulate_steps=accumulate_steps,
                                       batch_norm=batch_norm)
    model = m2cnn.build_m2cnn(96, "tiny")
    model.set_weights(initial)
    model.get_layer("dropout").rate = 0.0
    report = training.report_for_blocks(model, "test", (m2cnn.BASENET,))  # both groups
    groups = training.learning_rate_groups(model, report)
    optimizer = optimizers.make_optimizer(model.trainable_variables, groups, train_config)
    function = train_step.make_train_function(tf.distribute.get_strategy(), model, optimizer,
                                              train_config, 8)
    terms, _ = function((images, grades))
    multi = optimizers.multi_optimizer(optimizer)
    return {"terms": {k: float(v) for k, v in terms.items()},
            "trainable": [v.numpy() for v in model.trainable_variables],
            "statistics": [v.numpy() for v in moving_statistics(model)],
            "iterations": [int(multi.iterations.numpy())] + [
                int(o.iterations.numpy()) for o in multi.optimizers.values()],
            "window_step": int(function.window.step.numpy())}


def test_four_micro_batches_of_two_are_one_batch_of_eight():
    """With frozen batch norm the updated weights agree to float32 noise (SGD: Adam's first step
    is ±lr whatever the gradient's size, which turns rounding near zero into ±lr). With batch
    norm in training mode each micro-batch is normalised by its own statistics — a different
    step — and the moving statistics move once per micro-batch: checked on the first layer."""
    keras.utils.set_random_seed(0)
    reference = m2cnn.build_m2cnn(96, "tiny")
    initial = reference.get_weights()
    initial_trainable = [v.numpy() for v in reference.trainable_variables]
    images, grades = random_batch(8, 96)
    whole, parts = (_one_step(initial, images, grades, k, "frozen") for k in (1, 4))
    assert relative(parts["trainable"], whole["trainable"], initial_trainable) <= 1e-5
    assert relative(parts["statistics"], whole["statistics"]) == 0.0  # frozen: unchanged
    for name in losses.TERMS:
        assert parts["terms"][name] == pytest.approx(whole["terms"][name], rel=1e-5), name
    assert whole["iterations"] == parts["iterations"] == [1, 1, 1]
    assert whole["window_step"] == parts["window_step"] == 1

    whole, parts = (_one_step(initial, images, grades, k, "train") for k in (1, 4))
    assert relative(parts["trainable"], whole["trainable"], initial_trainable) > 1e-2
    # The first batch norm's input, from the weights before the step, micro-batch by micro-batch.
    basenet = reference.get_layer(m2cnn.BASENET)
    first = m2cnn.body_segments(basenet)[0].batch_norm_layers[0]
    conv = keras.Model(basenet.input, first.input)
    pixels = reference.get_layer(m2cnn.RESCALE)(tf.cast(images, tf.float32))
    expected = {}
    for k in (1, 4):
        moving = first.moving_mean.numpy()
        for part in np.split(np.arange(8), k):
            mean = np.mean(conv(tf.gather(pixels, part)).numpy(), axis=(0, 1, 2))
            moving = moving * first.momentum + mean * (1 - first.momentum)
        expected[k] = moving
    index = [v.path for v in moving_statistics(reference)].index(first.moving_mean.path)
    np.testing.assert_allclose(whole["statistics"][index], expected[1], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(parts["statistics"][index], expected[4], rtol=1e-4, atol=1e-7)
    assert not np.allclose(expected[1], expected[4], rtol=1e-2)


# --------------------------------------------------------------------------------------------
# The loop: no host copy on ordinary steps, settings that change on resume, the profiler
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "synthetic"
    inputs, skipped = sources.synthetic_inputs(24, seed=500, width=640)
    builder.build(inputs, skipped, str(out),
                  config.BuilderConfig(resolutions=(224,), num_workers=1, val_fraction=0.25),
                  {"kind": "synthetic"}, quiet=True)
    return str(out)


def tiny(data, model_dir, **overrides):
    """conftest's tiny_train_config, logging only at the end (the host-copy counts exclude it)."""
    return tiny_train_config(data, model_dir, **{"log_every_steps": 1000, **overrides})


class FetchCounter:
    """Counts tensor values copied to the host (``EagerTensor._numpy``: ``.numpy()``,
    ``float()``, ``bool()``, ``np.asarray``…) on the main thread."""

    def __init__(self, monkeypatch):
        self.count = 0
        original = tf_ops._EagerTensorBase._numpy
        main = threading.get_ident()

        def counted(tensor):
            if threading.get_ident() == main:
                self.count += 1
            return original(tensor)

        monkeypatch.setattr(tf_ops._EagerTensorBase, "_numpy", counted)


def test_ordinary_steps_copy_nothing_to_the_host(data_dir, tmp_path, monkeypatch):
    """A run trained with the defaults resumes with recompute, frozen batch norm, accumulation
    and a profile of steps 2–3 (the checkpoint is the same object graph); between one step's
    call and the next, nothing is read, except after step 3 (the profile's end waits for the
    device) and after the last step (log, checkpoint, evaluation)."""
    model_dir = tmp_path / "run"
    training.train_and_evaluate(tiny(data_dir, model_dir), quiet=True)
    counter = FetchCounter(monkeypatch)
    fetched_before_call = []
    original = training.make_train_function

    def counting_make_train_function(*args, **kwargs):
        function = original(*args, **kwargs)

        def call(batch):
            fetched_before_call.append(counter.count)
            return function(batch)

        return call

    monkeypatch.setattr(training, "make_train_function", counting_make_train_function)
    result = training.train_and_evaluate(
        tiny(data_dir, model_dir, train_steps=6, batch_size=4, recompute="all",
             batch_norm="frozen", accumulate_steps=2, profile_steps=(2, 3)), quiet=True)
    assert result["resumed"] and result["start_step"] == 1 and result["step"] == 6
    between = dict(zip((2, 3, 4), np.diff(fetched_before_call)))  # after step 2, 3, 4
    assert between[2] == 0 and between[4] == 0, between
    assert between[3] > 0, between  # the profiler waited for steps 2–3
    train_records = summaries.read_metrics(str(model_dir), "train")
    assert [(r["step"], r["steps"]) for r in train_records] == [(1, 1), (6, 5)]
    assert np.isfinite(train_records[-1]["loss/total"])
    traces = list((model_dir / summaries.TRAIN_LOGS / "plugins" / "profile").glob("*/*.xplane.pb"))
    assert traces and all(p.stat().st_size > 0 for p in traces), traces


def test_a_non_finite_loss_is_named_by_its_step_when_next_read(data_dir, tmp_path, monkeypatch):
    original = input_pipeline.make_dataset

    def poisoned(*args, training=False, **kwargs):  # NaN pixels in the second training batch
        dataset = original(*args, training=training, **kwargs)
        if not training:
            return dataset
        return dataset.enumerate().map(lambda i, b: {**b, "image": tf.where(
            tf.equal(i, 1), tf.fill(tf.shape(b["image"]), np.nan),
            tf.cast(b["image"], tf.float32))})

    monkeypatch.setattr(input_pipeline, "make_dataset", poisoned)
    model_dir = tmp_path / "run"
    with pytest.raises(training.NonFiniteLossError,
                       match=r"the loss is nan at step 2 .*; noticed at step 3, the first log, "
                             r"checkpoint or evaluation step since .*last good checkpoint "
                             r".*ckpt-0 \(step 0\)"):
        training.train_and_evaluate(tiny(data_dir, model_dir, train_steps=3), quiet=True)
    error = summaries.read_metrics(str(model_dir))[-1]
    assert (error["kind"], error["step"], error["noticed_at_step"]) == ("error", 2, 3)
    assert checkpoints.checkpoint_step(checkpoints.latest_checkpoint(str(model_dir))) == 0


def test_memory_flags_are_checked_before_any_work(data_dir, tmp_path):
    bad = {"accumulate_steps": (dict(batch_size=4, accumulate_steps=3), "multiple of "
                                "--accumulate_steps=3"),
           "accumulate_zero": (dict(accumulate_steps=0), "--accumulate_steps must be ≥ 1"),
           "profile": (dict(profile_steps=(5, 2)), "--profile_steps must be two steps A,B"),
           "recompute": (dict(recompute="some"), "--recompute='some' is not one of"),
           "batch_norm": (dict(batch_norm="off"), "--batch_norm='off' is not one of")}
    for name, (overrides, message) in bad.items():
        with pytest.raises(training.TrainingError, match=message):
            training.train_and_evaluate(tiny(data_dir, tmp_path / name, **overrides), quiet=True)
        assert not (tmp_path / name).exists(), name


# --------------------------------------------------------------------------------------------
# float16 on two replicas
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_overflow_on_one_replica_skips_the_step_on_both():
    """Step 2's gradients are NaN on replica 1 only (fault hook): with one batch and with two
    micro-batches, both replicas skip the step (trained weights unchanged and identical), the
    loss scale halves, and step 3 trains again."""
    result = subprocess.run([sys.executable, str(REPO_ROOT / "tests" / "mirrored_overflow.py")],
                            capture_output=True, text=True, timeout=600,
                            env={**os.environ, **ENV_SCRIPT})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    for name in ("accumulate_1", "accumulate_2"):
        run = report["runs"][name]
        first, faulted, after = run["steps"]
        assert all(s["replicas_equal"] and s["finite"] for s in run["steps"]), name
        assert first["trained_changed"] and first["loss_scale"] == run["initial_scale"], name
        assert not faulted["trained_changed"], name
        assert faulted["loss_scale"] == run["initial_scale"] / 2, name
        assert after["trained_changed"] and after["loss_scale"] == faulted["loss_scale"], name
