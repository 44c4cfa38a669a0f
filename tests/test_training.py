"""Training (issue 5): loss and kappa by hand, staged 224 → 448 → 720 fine-tuning with two learning
rates, resume after SIGKILL, failure behaviour, tf.distribute (mirrored, multi-worker), mixed
precision.

Everything runs the real code on a shrunken configuration: the "tiny" variant, batches of 2–4,
1–3 steps per stage, on 40 synthetic photographs built once for the module. Training runs
in-process (``training.train_and_evaluate``) except where a process is the point: the command
line, SIGKILL and resume, two logical CPUs, two workers.
"""

import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import cohen_kappa_score

from conftest import REPO_ROOT
from conftest import tiny_train_config as tiny
from m2cnn_tf import config
from m2cnn_tf.util import locking
from m2cnn_tf.data import builder, input_pipeline, sources
from m2cnn_tf.grading import agreement, metrics, rule
from m2cnn_tf.train import checkpoints, losses, optimizers, summaries, loop as training
from m2cnn_tf import model as m2cnn

TRAIN_PY = [sys.executable, str(REPO_ROOT / "train.py")]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
SYNTHETIC_IMAGES = 40
# Keras' own weight saving trips numpy 2's __array__(copy=...) deprecation; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "synthetic"
    inputs, skipped = sources.synthetic_inputs(SYNTHETIC_IMAGES, seed=0, width=640)
    builder.build(inputs, skipped, str(out),
                  config.BuilderConfig(resolutions=(224, 448, 720), num_workers=1),
                  {"kind": "synthetic"}, quiet=True)
    return str(out)


def command(cfg):
    """train.py's command line for a TrainConfig made by ``tiny``."""
    return TRAIN_PY + [
        f"--resolution={cfg.resolution}", f"--init={cfg.init}", f"--data_dir={cfg.data_dir}",
        f"--model_dir={cfg.model_dir}", f"--variant={cfg.variant}",
        f"--batch_size={cfg.batch_size}", f"--train_steps={cfg.train_steps}",
        f"--eval_every_steps={cfg.eval_every_steps}",
        f"--checkpoint_every_steps={cfg.checkpoint_every_steps}",
        f"--log_every_steps={cfg.log_every_steps}"]


def block_values(model_dir_or_path, resolution=None, variant="tiny"):
    """{block: [numpy values]} of a run's best checkpoint, or of one checkpoint prefix."""
    if resolution is None:
        model, _ = checkpoints.load_trained_model(model_dir_or_path, "best")
    else:
        model = m2cnn.build_m2cnn(resolution, variant)
        checkpoints.restore_model(model, model_dir_or_path)
    return {b: [v.numpy() for v in vs] for b, vs in m2cnn.block_variables(model).items()}


# --------------------------------------------------------------------------------------------
# Loss and metrics: pure functions against computations by hand
# --------------------------------------------------------------------------------------------


def test_loss_is_cross_entropy_plus_mse_plus_weight_decay_by_hand():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 5)).astype(np.float32)
    scores = rng.normal(2.0, 1.5, size=6).astype(np.float32)
    grades = np.array([0, 1, 2, 3, 4, 2], np.int32)
    kernels = [rng.normal(size=(3, 3, 4, 8)).astype(np.float32),
               rng.normal(size=(16, 5)).astype(np.float32)]
    weight_decay, w_ce, w_mse = 0.01, 0.7, 1.3

    shifted = logits - logits.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    ce = -log_softmax[np.arange(6), grades].mean()
    mse = ((scores - grades) ** 2).mean()
    l_reg = weight_decay * 0.5 * sum((k.astype(np.float64) ** 2).sum() for k in kernels)

    terms = losses.multitask_loss(grades, logits, scores, kernels, loss_weights=(w_ce, w_mse),
                                  weight_decay=weight_decay)
    assert float(terms["cross_entropy"]) == pytest.approx(w_ce * ce, rel=1e-5)
    assert float(terms["mse"]) == pytest.approx(w_mse * mse, rel=1e-5)
    assert float(terms["weight_decay"]) == pytest.approx(l_reg, rel=1e-5)
    assert float(terms["total"]) == pytest.approx(w_ce * ce + w_mse * mse + l_reg, rel=1e-5)

    # The paper's weights are 1 and 1.
    default = losses.multitask_loss(grades, logits, scores, kernels, weight_decay=weight_decay)
    assert float(default["total"]) == pytest.approx(ce + mse + l_reg, rel=1e-5)

    # Two replicas' shares of a global batch of 6 add up to the loss of the whole batch.
    halves = [losses.multitask_loss(grades[s], logits[s], scores[s], kernels, (w_ce, w_mse),
                                    weight_decay, global_batch_size=6, num_replicas=2)
              for s in (slice(0, 3), slice(3, 6))]
    for name in losses.TERMS:
        assert float(halves[0][name] + halves[1][name]) == pytest.approx(float(terms[name]),
                                                                          rel=1e-5)


def test_weight_decay_covers_kernels_only():
    model = m2cnn.build_m2cnn(224, "tiny")
    decayed = [v.path for v in model.trainable_variables if losses.is_decayed(v)]
    assert decayed and all(p.endswith("/kernel") for p in decayed)
    assert "heads/head_logits/kernel" in decayed
    assert not any(p.endswith(("/bias", "/beta", "/gamma")) for p in decayed)


@pytest.mark.parametrize("seed", range(5))
def test_kappa_from_accumulated_confusion_equals_sklearn(seed):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 5, 200)
    predicted = np.clip(truth + rng.integers(-2, 3, 200), 0, 4)
    totals = metrics.zero_statistics()["confusion_score"]
    for start in range(0, 200, 32):  # batch by batch, as evaluation accumulates
        totals = totals + metrics.confusion_counts(truth[start:start + 32],
                                                   predicted[start:start + 32]).numpy()
    expected = cohen_kappa_score(truth, predicted, weights="quadratic", labels=list(range(5)))
    assert agreement.kappa_from_counts(totals) == pytest.approx(expected, abs=1e-12)
    assert agreement.accuracy(totals) == pytest.approx(np.mean(truth == predicted))


def test_kappa_edge_cases():
    # sklearn's own label set is the grades present; with all five present it agrees too.
    truth, predicted = [0, 1, 2, 3, 4, 4], [0, 2, 2, 3, 3, 4]
    confusion = metrics.confusion_counts(truth, predicted).numpy()
    assert agreement.kappa_from_counts(confusion) == pytest.approx(
        cohen_kappa_score(truth, predicted, weights="quadratic"))
    assert agreement.kappa_from_counts(np.eye(5) * 3) == 1.0
    undefined = agreement.KAPPA_WHEN_UNDEFINED
    assert agreement.kappa_from_counts(np.zeros((5, 5)), undefined) == 0.0  # no examples
    constant = np.zeros((5, 5)); constant[2, 2] = 7  # both raters constant: undefined → 0
    assert agreement.kappa_from_counts(constant, undefined) == 0.0


def test_score_is_cut_at_the_rounding_cuts_and_argmax_reads_probabilities():
    scores = tf.constant([-3.0, 0.49, 0.5, 1.5, 1.51, 3.5, 3.6, 9.0])
    # the rule evaluation and serving use (1.5 → 1, where tf.round's halves to even gave 2)
    assert rule.apply_thresholds_tf(scores, rule.ROUNDING).numpy().tolist() == [
        0, 0, 0, 1, 2, 3, 4, 4]
    logits = tf.one_hot([3, 0], 5)
    assert metrics.logits_to_grade(logits).numpy().tolist() == [3, 0]
    stats = metrics.batch_statistics(tf.constant([3, 1]), logits, tf.constant([2.6, 1.2]))
    summary = metrics.summarize(metrics.accumulate(metrics.zero_statistics(),
                                                   {k: v.numpy() for k, v in stats.items()}))
    assert summary["count"] == 2
    assert summary["accuracy_score"] == 1.0 and summary["accuracy_argmax"] == 0.5
    assert summary["mse"] == pytest.approx((0.4 ** 2 + 0.2 ** 2) / 2, rel=1e-5)
    image = summaries.confusion_matrix_image(summary["confusion_score"], "test")
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


# --------------------------------------------------------------------------------------------
# Learning-rate groups
# --------------------------------------------------------------------------------------------


def _dense_model():
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, name="a")(inputs)
    return keras.Model(inputs, keras.layers.Dense(2, name="b")(hidden))


def test_every_trainable_variable_is_in_exactly_one_group(tmp_path):
    model = _dense_model()
    variables = model.trainable_variables
    with pytest.raises(ValueError, match="in no learning-rate group: b/bias"):
        optimizers.make_optimizer(variables, {"finetune": variables[:2], "new": variables[2:3]},
                                  config.TRAIN)
    with pytest.raises(ValueError, match="more than one learning-rate group: a/bias"):
        optimizers.make_optimizer(variables, {"finetune": variables[:2], "new": variables[1:]},
                                  config.TRAIN)
    optimizer = optimizers.make_optimizer(
        variables, {"finetune": variables[:2], "new": variables[2:]}, config.TRAIN)
    assert [optimizer.group_of(v) for v in variables] == ["finetune"] * 2 + ["new"] * 2
    assert optimizer.learning_rates() == pytest.approx({"finetune": 1e-4, "new": 1e-3})

    # One checkpoint object holds both groups' optimisers.
    path = tf.train.Checkpoint(optimizer=optimizer).write(str(tmp_path / "optimizer"))
    names = {name for name, _ in tf.train.list_variables(path)}
    assert any("optimizers/finetune" in n for n in names)
    assert any("optimizers/new" in n for n in names)


def test_float16_wraps_the_multi_optimizer_in_one_loss_scale_optimizer():
    model = _dense_model()
    variables = model.trainable_variables
    optimizer = optimizers.make_optimizer(
        variables, {"finetune": variables[:2], "new": variables[2:]}, config.TRAIN,
        loss_scaling=True)
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    multi = optimizers.multi_optimizer(optimizer)
    before = [v.numpy() for v in variables]
    x = tf.ones((4, 3))
    with tf.GradientTape() as tape:
        loss = optimizer.scale_loss(tf.reduce_sum(model(x) ** 2))
    optimizer.apply(tape.gradient(loss, variables), variables)
    steps = [np.abs(v.numpy() - b) for v, b in zip(variables, before)]
    # Gradients were unscaled before Adam's first step, whose size is the group's rate.
    assert float(optimizer.dynamic_scale.numpy()) == config.TRAIN.loss_scale_initial
    for step, v in zip(steps, variables):
        rate = multi.optimizers[multi.group_of(v)].learning_rate.numpy()
        assert np.max(step) == pytest.approx(rate, rel=1e-3)


# --------------------------------------------------------------------------------------------
# Staged training 224 → 448 → 720
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stages(data_dir, tmp_path_factory):
    """224 from scratch (2 steps), then 448 and 720 each initialised from the stage before:
    first with --train_steps=0 (initialisation only, leaving ckpt-0), then resumed for a step."""
    root = tmp_path_factory.mktemp("runs")
    results = {224: training.train_and_evaluate(
        tiny(data_dir, root / "tiny_224", resolution=224, init="none", batch_size=4,
             train_steps=2, eval_every_steps=1), quiet=True)}
    for previous, resolution in ((224, 448), (448, 720)):
        cfg = tiny(data_dir, root / f"tiny_{resolution}", resolution=resolution,
                   init=str(root / f"tiny_{previous}"))
        init_only = training.train_and_evaluate(dataclasses.replace(cfg, train_steps=0),
                                                quiet=True)
        assert init_only["step"] == 0 and not init_only["resumed"]
        results[resolution] = training.train_and_evaluate(cfg, quiet=True)
        assert results[resolution]["resumed"] and results[resolution]["start_step"] == 0
    return root, results


@pytest.mark.parametrize("resolution,new_blocks,restored_blocks", [
    (224, {"basenet", "heads"}, set()),
    (448, {"medial_cells"}, {"basenet", "heads"}),
    (720, {"large_cells"}, {"basenet", "medial_cells", "heads"}),
])
def test_init_report_lists_the_new_cells_of_each_stage(stages, resolution, new_blocks,
                                                        restored_blocks):
    root, _ = stages
    report = checkpoints.read_json(root / f"tiny_{resolution}" / checkpoints.INIT_REPORT_JSON)
    assert set(report["new"]) == new_blocks
    assert set(report["restored"]) == restored_blocks
    model = m2cnn.build_m2cnn(resolution, "tiny")
    for block, variables in m2cnn.block_variables(model).items():
        listed = report["new"].get(block) or report["restored"].get(block)
        assert len(listed) == len(variables) and report["counts"][
            "new" if block in new_blocks else "restored"][block] == len(variables)


@pytest.mark.parametrize("previous,resolution", [(224, 448), (448, 720)])
def test_restored_variables_start_bit_identical_to_the_earlier_stage(stages, previous,
                                                                      resolution):
    root, _ = stages
    source = block_values(str(root / f"tiny_{previous}"))
    start = block_values(str(root / f"tiny_{resolution}" / "ckpt-0"), resolution)
    report = checkpoints.read_json(root / f"tiny_{resolution}" / checkpoints.INIT_REPORT_JSON)
    for block in report["restored"]:
        assert len(source[block]) == len(start[block])
        for a, b in zip(source[block], start[block]):
            assert a.dtype == b.dtype and np.array_equal(a, b), block
    # ...and training then moved them (the resumed step ran).
    trained = block_values(str(root / f"tiny_{resolution}"))
    assert not all(np.array_equal(a, b) for a, b in zip(start["basenet"], trained["basenet"]))


def test_run_directory_holds_config_metrics_summaries_and_checkpoints(stages, data_dir):
    root, results = stages
    run = root / "tiny_448"
    cfg = checkpoints.read_run_config(str(run))
    assert cfg["variant"] == "tiny" and cfg["resolution"] == 448
    assert cfg["init"] == str(root / "tiny_224")
    assert cfg["init_source"]["resolution"] == 224
    assert cfg["data_checksum"] == builder.read_manifest(data_dir)["inputs_checksum"]
    assert cfg["flags"]["lr_finetune"] == 1e-4 and cfg["flags"]["lr_new"] == 1e-3
    assert cfg["flags"]["train_steps"] == 1 and cfg["earlier_flags"][0]["train_steps"] == 0

    kinds = [r["kind"] for r in summaries.read_metrics(str(run))]
    assert kinds == ["train", "eval", "final"]
    train = summaries.read_metrics(str(run), "train")[0]
    assert {"loss/total", "loss/cross_entropy", "loss/mse", "loss/weight_decay",
            "learning_rate/finetune", "learning_rate/new", "images_per_second"} <= set(train)
    assert train["learning_rate/finetune"] == pytest.approx(1e-4)
    assert train["learning_rate/new"] == pytest.approx(1e-3)
    assert train["loss/total"] == pytest.approx(
        train["loss/cross_entropy"] + train["loss/mse"] + train["loss/weight_decay"], rel=1e-5)
    final = summaries.read_metrics(str(run), "final")[0]
    validation = input_pipeline.split_size(data_dir, "validation")
    assert final["metrics"]["count"] == validation
    assert final["best_kappa_score"] == results[448]["best"]["metrics"]["kappa_score"]
    best = checkpoints.read_json(run / checkpoints.BEST_DIR / checkpoints.BEST_JSON)
    assert best["step"] == 1 and np.sum(best["metrics"]["confusion_score"]) == validation

    tags = {}
    for kind in (summaries.TRAIN_LOGS, summaries.EVAL_LOGS):
        for path in tf.io.gfile.glob(str(run / kind / "events.*")):
            for event in tf.compat.v1.train.summary_iterator(path):
                for value in event.summary.value:
                    tags.setdefault(kind, set()).add(value.tag)
    assert {"loss/cross_entropy", "loss/mse", "loss/weight_decay", "learning_rate/finetune",
            "learning_rate/new", "images_per_second"} <= tags["train"]
    assert {"kappa_score", "kappa_argmax", "accuracy_score", "mse", "confusion_score",
            "confusion_argmax"} <= tags["validation"]

    assert checkpoints.checkpoint_step(checkpoints.latest_checkpoint(str(run))) == 1
    assert not (run / checkpoints.LOCK).exists()


def test_init_accepts_a_run_or_one_checkpoint_in_it(stages):
    root, _ = stages
    run = root / "tiny_224"
    best = checkpoints.best_checkpoint(str(run))
    latest = checkpoints.latest_checkpoint(str(run))
    assert checkpoints.resolve_init(str(run)).path == best  # a run gives its best checkpoint
    for prefix in (best, latest):  # best/ckpt-N finds config.json one folder up
        source = checkpoints.resolve_init(prefix)
        assert source.kind == "stage" and source.path == os.path.normpath(prefix)
        assert source.run_config["resolution"] == 224
    assert checkpoints.resolve_init("none").kind == "none"
    assert checkpoints.resolve_init("imagenet").kind == "imagenet"


def test_load_trained_model_rebuilds_best_and_latest(stages, tmp_path):
    root, _ = stages
    run = str(root / "tiny_720")
    model, info = checkpoints.load_trained_model(run, "best")
    assert model.name == "m2cnn_tiny_720" and info["step"] == 1
    assert isinstance(info["validation"]["kappa_score"], float)
    outputs = model(np.zeros((1, 720, 720, 3), np.uint8), training=False)
    assert outputs["logits"].shape == (1, 5) and outputs["score"].shape == (1,)
    latest, latest_info = checkpoints.load_trained_model(run, "latest")
    assert latest_info["step"] == 1 and latest_info["validation"] is not None
    for a, b in zip(model.weights, latest.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    half = tmp_path / "no_best"
    half.mkdir()
    shutil.copy(os.path.join(run, checkpoints.CONFIG_JSON), half)
    with pytest.raises(FileNotFoundError, match="no best checkpoint"):
        checkpoints.load_trained_model(str(half), "best")
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        checkpoints.load_trained_model(str(tmp_path), "best")


def test_each_group_moves_at_its_own_learning_rate(stages, data_dir):
    """One step at 448 from the 224 run, against Adam's first step computed here by hand:
    Δw = −lr · g / (|g| + ε/√(1 − β₂)) with lr = LR1 for restored and LR2 for new variables."""
    root, _ = stages
    cfg = tiny(data_dir, root / "unused", resolution=448, init=str(root / "tiny_224"))
    model = m2cnn.build_m2cnn(448, "tiny")
    model.get_layer("dropout").rate = 0.0  # the reference gradient must see the same network
    report = training.initialize_weights(model, checkpoints.resolve_init(cfg.init))
    groups = training.learning_rate_groups(model, report)
    optimizer = optimizers.make_optimizer(model.trainable_variables, groups, cfg)
    step = training.make_train_function(tf.distribute.get_strategy(), model, optimizer, cfg, 2)
    batch = next(iter(input_pipeline.make_dataset(data_dir, "train", 448, 2, training=False)))

    variables = model.trainable_variables
    kernels = [v for v in variables if losses.is_decayed(v)]
    moving = [(v, v.numpy()) for v in model.non_trainable_variables]
    with tf.GradientTape() as tape:
        outputs = model(batch["image"], training=True)
        loss = losses.multitask_loss(batch["grade"], outputs["logits"], outputs["score"],
                                     kernels, weight_decay=cfg.weight_decay)["total"]
    gradients = {id(v): g.numpy() for v, g in zip(variables, tape.gradient(loss, variables))}
    for v, value in moving:  # undo the reference pass's batch-norm statistics update
        v.assign(value)
    before = {id(v): v.numpy() for v in variables}
    step((batch["image"], batch["grade"]))

    floor = cfg.adam_epsilon / np.sqrt(1.0 - cfg.adam_beta_2)
    for group, rate in ((optimizers.FINETUNE, cfg.lr_finetune), (optimizers.NEW, cfg.lr_new)):
        assert groups[group], group
        delta = np.concatenate([(v.numpy() - before[id(v)]).ravel() for v in groups[group]])
        g = np.concatenate([gradients[id(v)].ravel() for v in groups[group]])
        expected = -rate * g / (np.abs(g) + floor)
        close = np.abs(delta - expected) <= 0.01 * rate
        # Adam's first step is ≈ ±lr: only gradients at float-noise level (whose sign two
        # computations may disagree on) can differ, and by at most 2·lr.
        assert close.mean() > 0.99, (group, close.mean())
        assert np.max(np.abs(delta)) <= rate * 1.001
        assert np.median(np.abs(delta)) == pytest.approx(rate, rel=0.1)


def test_init_from_a_local_weights_file_fine_tunes_basenet_only(data_dir, tmp_path):
    """--init=<notop .h5> (the offline stand-in for --init=imagenet): BaseNet restored, heads new."""
    source = keras.applications.InceptionResNetV2(include_top=False, weights=None,
                                                   input_shape=(75, 75, 3))  # any size
    weights = str(tmp_path / "notop.weights.h5")
    source.save_weights(weights)
    model_dir = tmp_path / "run"
    training.train_and_evaluate(tiny(data_dir, model_dir, init=weights, train_steps=0),
                                quiet=True)
    report = checkpoints.read_json(model_dir / checkpoints.INIT_REPORT_JSON)
    assert set(report["restored"]) == {"basenet"} and set(report["new"]) == {"heads"}
    assert checkpoints.read_run_config(str(model_dir))["init_source"]["kind"] == "weights_file"
    start = block_values(str(model_dir / "ckpt-0"), 224)["basenet"]
    stem = next(l for l in source.layers if isinstance(l, keras.layers.Conv2D)).kernel.numpy()
    assert any(a.shape == stem.shape and np.array_equal(a, stem) for a in start)


# --------------------------------------------------------------------------------------------
# Failure behaviour
# --------------------------------------------------------------------------------------------


def test_bad_inputs_fail_before_any_work_saying_what_exists(data_dir, tmp_path):
    model_dir = tmp_path / "never"
    cases = [
        (dict(init=str(tmp_path / "no_such_run")), r"nothing exists at .*no_such_run"),
        (dict(init=str(tmp_path)), r"without config.json \(it holds: "),
        (dict(resolution=299), r"has no 299 px images; it has 224 px, 448 px, 720 px"),
        (dict(eval_split="test"), r"no images in the 'test' split; it has: train \(36 images\), "
                                  r"validation \(4 images\)"),
        (dict(data_dir=str(tmp_path / "nothing")), r"does not exist"),
        (dict(batch_size=0), r"--batch_size must be ≥ 1"),
    ]
    for overrides, message in cases:
        with pytest.raises(training.TrainingError, match=message):
            training.train_and_evaluate(tiny(data_dir, model_dir, **overrides), quiet=True)
    # An empty split in the manifest (a build whose split has no images).
    empty = tmp_path / "empty"
    shutil.copytree(data_dir, empty)
    manifest = builder.read_manifest(str(empty))
    manifest["splits"]["validation"]["count"] = 0
    (empty / builder.MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(training.TrainingError, match="no images in the 'validation' split"):
        training.train_and_evaluate(tiny(str(empty), model_dir), quiet=True)
    assert not model_dir.exists()


def test_a_stage_of_another_variant_is_refused(stages, data_dir, tmp_path):
    root, _ = stages
    with pytest.raises(training.TrainingError, match="is a 'tiny' run"):
        training.train_and_evaluate(
            tiny(data_dir, tmp_path / "m", variant="m2cnn", init=str(root / "tiny_224")),
            quiet=True)


def test_a_model_dir_of_another_run_is_refused(stages, data_dir):
    root, _ = stages
    with pytest.raises(training.TrainingError, match=r"holds checkpoints of another run "
                                                     r"\(resolution: 224 then, 448 now"):
        training.train_and_evaluate(tiny(data_dir, root / "tiny_224", resolution=448),
                                    quiet=True)


def test_two_trainings_on_one_model_dir_refuse(data_dir, tmp_path):
    model_dir = tmp_path / "run"
    with locking.DirectoryLock(str(model_dir / checkpoints.LOCK), "training"):
        with pytest.raises(locking.LockedError, match=f"is locked by pid {os.getpid()}"):
            training.train_and_evaluate(tiny(data_dir, model_dir), quiet=True)


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(data_dir,
                                                                                    tmp_path):
    model_dir = tmp_path / "run"
    good = training.train_and_evaluate(tiny(data_dir, model_dir, train_steps=1,
                                            checkpoint_every_steps=1), quiet=True)
    # Loss weights near float32's maximum (3.4e38) overflow the loss at the next step: its
    # cross-entropy alone is still ≈ ln 5 ≈ 1.6 there, and 1.6 × 3e38 is inf.
    with pytest.raises(training.NonFiniteLossError,
                       match=r"the loss is inf at step 2 .*last good checkpoint .*ckpt-1 \(step 1\)"):
        training.train_and_evaluate(tiny(data_dir, model_dir, train_steps=3,
                                         loss_weights=(3e38, 3e38)), quiet=True)
    assert checkpoints.checkpoint_step(checkpoints.latest_checkpoint(str(model_dir))) == 1
    model, info = checkpoints.load_trained_model(str(model_dir), "latest")
    assert training.weights_digest(model) == good["weights_sha256"]
    assert summaries.read_metrics(str(model_dir))[-1]["kind"] == "error"
    assert not (model_dir / checkpoints.LOCK).exists()


def test_command_line_help_and_an_error_before_any_work(data_dir, tmp_path):
    result = subprocess.run(TRAIN_PY + ["--help"], capture_output=True, text=True, env=ENV,
                            timeout=300)  # absl's --help exits with status 1
    for flag in ("resolution", "init", "data_dir", "model_dir", "variant", "batch_size",
                 "train_steps", "eval_every_steps", "lr_finetune", "lr_new", "weight_decay",
                 "loss_weights", "strategy", "mixed_precision", "jit_compile", "seed"):
        assert re.search(rf"--(\[no\])?{flag}\b", result.stdout), flag
    model_dir = tmp_path / "run"
    result = subprocess.run(
        command(tiny(data_dir, model_dir, resolution=720, init=str(tmp_path / "ckpt_448"))),
        capture_output=True, text=True, env=ENV, timeout=300)
    assert result.returncode != 0
    assert "nothing exists at" in result.stderr and "ckpt_448" in result.stderr
    assert not model_dir.exists()


# --------------------------------------------------------------------------------------------
# Resume after SIGKILL
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_resume_after_sigkill_continues_from_the_checkpoint(data_dir, tmp_path):
    model_dir = tmp_path / "run"
    cfg = tiny(data_dir, model_dir, train_steps=12, checkpoint_every_steps=1)
    process = subprocess.Popen(command(cfg), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=ENV)
    deadline = time.time() + 300
    try:
        while time.time() < deadline:
            latest = checkpoints.latest_checkpoint(str(model_dir))
            if latest and checkpoints.checkpoint_step(latest) >= 2:
                break
            assert process.poll() is None, "train.py ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("no checkpoint at step ≥ 2 within 300 s")
    finally:
        process.send_signal(signal.SIGKILL)
        process.communicate()
    killed_at = checkpoints.checkpoint_step(checkpoints.latest_checkpoint(str(model_dir)))
    assert 2 <= killed_at < cfg.train_steps
    assert (model_dir / checkpoints.LOCK).exists()  # the killed process never released it

    result = subprocess.run(command(cfg), capture_output=True, text=True, env=ENV, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "cleared a stale lock" in result.stderr
    assert f"resuming from step {killed_at} " in result.stderr
    final = summaries.read_metrics(str(model_dir), "final")
    assert [(r["start_step"], r["step"]) for r in final] == [(killed_at, cfg.train_steps)]
    steps = [r["step"] for r in summaries.read_metrics(str(model_dir), "train")]
    assert steps[-(cfg.train_steps - killed_at):] == list(range(killed_at + 1,
                                                               cfg.train_steps + 1))
    model, info = checkpoints.load_trained_model(str(model_dir), "latest")
    assert info["step"] == cfg.train_steps
    assert checkpoints.load_trained_model(str(model_dir), "best")[1]["step"] == cfg.train_steps


# --------------------------------------------------------------------------------------------
# Distribution and mixed precision
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_mirrored_on_two_cpus_equals_the_default_strategy(data_dir):
    """Loss and updated weights of one step on 2 replicas × 2 images against 1 device × 4.

    float32 rounding alone moves a step: the same 4 images in another order (the same step
    mathematically) land ≈ 0.4 % (SGD) to ≈ 8 % (Adam, whose first step is g/|g| and so turns the
    rounding of near-zero gradients into ±lr) of the update away. The mirrored step must be
    within a few times that noise floor, while per-replica batch norm (a different step) is not.
    The loss agrees to 1e-4: Keras' synchronised batch norm computes the variance as
    E[x²] − E[x]², which rounds differently (≈ 1e-5 here); per-replica statistics are 1e-2 off.
    """
    result = subprocess.run([sys.executable, str(REPO_ROOT / "tests" / "mirrored_step.py"),
                             data_dir, config.TRAIN.optimizer],
                            capture_output=True, text=True, env=ENV, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    default, mirrored = report["loss"]["default"], report["loss"]["mirrored"]
    for name in losses.TERMS:
        assert mirrored[name] == pytest.approx(default[name], rel=1e-4), name
    unsynchronised = report["loss"]["unsynchronised"]["total"]
    assert unsynchronised != pytest.approx(default["total"], rel=1e-3)
    noise = report["distance"]["permuted"]
    assert report["distance"]["mirrored"] <= 3 * noise + 1e-6, report["distance"]
    assert report["distance"]["unsynchronised"] > 5 * noise, report["distance"]


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_multiworker_runs_as_two_processes_with_identical_weights(data_dir, tmp_path):
    model_dir = tmp_path / "run"
    cfg = tiny(data_dir, model_dir, batch_size=4, train_steps=3, eval_every_steps=2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    workers = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        workers.append(subprocess.Popen(command(cfg) + ["--strategy=multiworker"],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, env=dict(ENV, TF_CONFIG=tf_config)))
    outputs = []
    try:
        for worker in workers:
            outputs.append(worker.communicate(timeout=600))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
    digests = {}
    for index, (worker, (_, stderr)) in enumerate(zip(workers, outputs)):
        assert worker.returncode == 0, stderr[-3000:]
        match = re.search(rf"worker {index}: step 3, weights sha256 ([0-9a-f]{{64}})", stderr)
        assert match, stderr[-3000:]
        digests[index] = match.group(1)
    assert digests[0] == digests[1]
    cfg_json = checkpoints.read_run_config(str(model_dir))
    assert cfg_json["replicas"] == 2 and cfg_json["strategy"] == "multiworker"
    final = summaries.read_metrics(str(model_dir), "final")
    assert len(final) == 1 and final[0]["step"] == 3  # one writer: the chief
    assert final[0]["metrics"]["count"] == input_pipeline.split_size(data_dir, "validation")
    model, _ = checkpoints.load_trained_model(str(model_dir), "latest")
    assert training.weights_digest(model) == digests[0]
    assert not list(model_dir.glob(".worker_*"))  # the other worker's scratch saves are gone


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_mixed_precision_trains_on_cpu(data_dir, tmp_path, precision):
    model_dir = tmp_path / precision
    result = training.train_and_evaluate(
        tiny(data_dir, model_dir, mixed_precision=precision, train_steps=2), quiet=True)
    assert keras.config.dtype_policy().name == "float32"  # restored after the run
    records = summaries.read_metrics(str(model_dir), "train")
    assert all(np.isfinite(r["loss/total"]) for r in records)
    assert ("loss_scale" in records[0]) == (precision == "float16")
    model, _ = checkpoints.load_trained_model(str(model_dir), "latest")
    assert {w.dtype for w in model.weights} <= {"float32", "int64", "uint32"}
    assert result["step"] == 2
