"""The paper's baselines as options, and repeatable runs (issue 16).

``--multicell=off`` builds BaseNet with Table I's "before switch" maps and no cell groups, and
every reader of a run rebuilds it so; ``--heads=new`` trains fresh heads at LR2; a CE-only run
keeps the checkpoint of its best probabilities-kappa and is read by its probabilities;
``--deterministic`` gives bit-identical weights and metrics.

The real code on a shrunken configuration: the tiny variant, batches of 2, a few steps, on 16
synthetic photographs built once for the module.
"""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO_ROOT
from m2cnn_tf import config
from m2cnn_tf import model as m2cnn
from m2cnn_tf.data import builder, input_pipeline, sources
from m2cnn_tf.explain import gradcam
from m2cnn_tf.serving import export, predictor as predictors, signatures
from m2cnn_tf.grading import metrics, rule
from m2cnn_tf.train import checkpoints, distribution, optimizers, summaries, loop as training

# Keras' own weight saving trips numpy 2's __array__(copy=...) deprecation; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# What changes from run to run however deterministic the computation: the clock.
TIMING = ("time", "seconds", "images_per_second")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "synthetic"
    inputs, skipped = sources.synthetic_inputs(16, seed=0, width=480)
    builder.build(inputs, skipped, str(out),
                  config.BuilderConfig(resolutions=(224, 448), num_workers=1, val_fraction=0.25),
                  {"kind": "synthetic"}, quiet=True)
    return str(out)


def tiny(data, model_dir, **overrides):
    settings = dict(variant="tiny", init="none", data_dir=data, model_dir=str(model_dir),
                    batch_size=2, train_steps=1, eval_every_steps=1000,
                    checkpoint_every_steps=1000, log_every_steps=1)
    settings.update(overrides)
    return dataclasses.replace(config.TRAIN, **settings)


def _without_timing(record):
    if isinstance(record, dict):
        return {k: _without_timing(v) for k, v in record.items() if k not in TIMING}
    return record


# --------------------------------------------------------------------------------------------
# --deterministic
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def twin_runs(data_dir, tmp_path_factory):
    """The same deterministic command twice, each in its own process (--deterministic fixes
    TensorFlow's threading before it starts): 3 steps at 224 with augmentation, a cosine
    schedule after one warm-up step, evaluated at steps 2 and 3."""
    root = tmp_path_factory.mktemp("twins")
    cfg = tiny(data_dir, root / "a", deterministic=True, train_steps=3, eval_every_steps=2,
               lr_schedule="cosine", warmup_steps=1)
    flags = [f"--{name}={getattr(cfg, name)}" for name in (
        "variant", "init", "data_dir", "batch_size", "train_steps", "eval_every_steps",
        "log_every_steps", "lr_schedule", "warmup_steps")]
    # side by side: the two compete for the cores, which must not change a bit either
    processes = [subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "train.py"), *flags, f"--model_dir={root / run}",
         "--deterministic", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")) for run in ("a", "b")]
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
    return root, cfg


def test_deterministic_runs_are_bit_identical(twin_runs):
    root, _ = twin_runs
    a, b = (checkpoints.load_trained_model(str(root / run), "latest")[0] for run in ("a", "b"))
    assert len(a.weights) == len(b.weights)
    for x, y in zip(a.weights, b.weights):
        assert np.array_equal(x.numpy(), y.numpy()), x.path
    a, b = (summaries.read_metrics(str(root / run)) for run in ("a", "b"))
    assert [r["kind"] for r in a] == ["train"] * 2 + ["eval"] + ["train", "eval", "final"]
    assert [_without_timing(r) for r in a] == [_without_timing(r) for r in b]
    assert a[-1]["metrics"]["count"] > 0 and a[-1]["step"] == 3


def test_deterministic_needs_a_process_whose_tensorflow_has_not_started(data_dir, tmp_path):
    tf.constant(0)  # this process's runtime runs already
    with pytest.raises(training.TrainingError, match="fresh process"):
        training.train_and_evaluate(tiny(data_dir, tmp_path / "run", deterministic=True),
                                    quiet=True)
    # op determinism is switched on for a run only, never left on in the process
    with distribution.op_determinism(True):
        assert distribution.tf_framework_config.is_op_determinism_enabled()
    assert not distribution.tf_framework_config.is_op_determinism_enabled()


def test_the_same_seed_gives_each_image_the_same_augmentation(data_dir):
    def first_batches():
        dataset = input_pipeline.make_dataset(data_dir, "train", 224, 4, training=True, seed=7,
                                              deterministic=True)
        return [(b["image_id"].numpy().tolist(), b["image"].numpy())
                for b in dataset.take(3)]

    one, two = first_batches(), first_batches()
    for (ids_1, images_1), (ids_2, images_2) in zip(one, two):
        assert ids_1 == ids_2
        np.testing.assert_array_equal(images_1, images_2)


def test_both_learning_rates_follow_the_schedule_in_the_log(twin_runs):
    root, cfg = twin_runs
    train = summaries.read_metrics(str(root / "a"), "train")
    schedules = {g: optimizers.group_schedule(rate, cfg) for g, rate in
                 ((optimizers.FINETUNE, cfg.lr_finetune), (optimizers.NEW, cfg.lr_new))}
    for record in train:  # step n logs the rate step n ran at: the schedule at n − 1
        for group, schedule in schedules.items():
            assert record[f"learning_rate/{group}"] == pytest.approx(
                float(schedule(record["step"] - 1)), rel=1e-6, abs=1e-12)
    # one warm-up step (at the full rate already), then the cosine over the 2 steps after it
    assert [r["learning_rate/new"] for r in train] == pytest.approx([1e-3, 1e-3, 5e-4],
                                                                     rel=1e-6)
    assert [r["learning_rate/finetune"] for r in train] == pytest.approx([1e-4, 1e-4, 5e-5],
                                                                          rel=1e-6)
    run = checkpoints.read_run_config(str(root / "a"))
    assert run["lr_schedule"] == "cosine+warmup" and run["deterministic"] is True


# --------------------------------------------------------------------------------------------
# --multicell=off and --heads=new
# --------------------------------------------------------------------------------------------


def _assert_basenet_only(model, resolution, before_switch):
    assert set(m2cnn.model_blocks(model)) == {m2cnn.BASENET, m2cnn.HEADS}
    assert model.name == f"basenet_tiny_{resolution}"
    sizes = m2cnn.feature_map_sizes(model)
    assert sizes["before_switch"] == sizes["after_multicell"] == (before_switch, before_switch)


def test_multicell_off_builds_basenet_alone_and_every_reader_rebuilds_it(twin_runs, data_dir,
                                                                         tmp_path):
    """448 off, initialised from the 224 run (every block restored), then read back by
    load_trained_model, the predictor, the export's metadata, Grad-CAM and the next stage."""
    root, _ = twin_runs
    run = tmp_path / "basenet_448"
    training.train_and_evaluate(tiny(data_dir, run, resolution=448, multicell="off",
                                     init=str(root / "a"), train_steps=0), quiet=True)
    report = checkpoints.read_json(run / checkpoints.INIT_REPORT_JSON)
    assert set(report["restored"]) == {"basenet", "heads"} and report["new"] == {}
    model, info = checkpoints.load_trained_model(str(run), "latest")
    _assert_basenet_only(model, 448, 12)
    assert info["multicell"] == "off" and gradcam.last_feature_block(model) == m2cnn.BASENET
    assert m2cnn.summarize(model, "tiny")["path"] == "small"
    assert export.export_metadata(info, (0.5, 1.5, 2.5, 3.5), "rounding", "")["multicell"] == "off"

    # the next stage: 720 with the switch off too, from this run (rebuilt off to be restored)
    target = m2cnn.build_m2cnn(720, "tiny", multicell="off")
    _assert_basenet_only(target, 720, 21)
    moved = training.initialize_weights(target, checkpoints.resolve_init(str(run)))
    assert set(moved.restored) == {"basenet", "heads"}
    np.testing.assert_array_equal(target.get_layer("head_score").kernel.numpy(),
                                  model.get_layer("head_score").kernel.numpy())
    with pytest.raises(ValueError, match="multicell must be one of auto, off"):
        m2cnn.build_m2cnn(448, "tiny", multicell="on")


def test_heads_new_lists_them_new_and_trains_them_at_lr2(twin_runs, data_dir, tmp_path):
    root, _ = twin_runs
    cfg = tiny(data_dir, tmp_path / "fresh_heads", resolution=448, init=str(root / "a"),
               heads="new", train_steps=0)
    training.train_and_evaluate(cfg, quiet=True)
    report = checkpoints.read_json(tmp_path / "fresh_heads" / checkpoints.INIT_REPORT_JSON)
    assert set(report["new"]) == {"medial_cells", "heads"}
    assert set(report["restored"]) == {"basenet"}
    assert checkpoints.read_run_config(str(tmp_path / "fresh_heads"))["heads"] == "new"

    # one step from that run's start (ckpt-0, its groups from init_report.json, as a resumed run
    # takes them) against Adam's first step (as tests/test_training.py checks the cells):
    # |Δw| ≈ LR2 on the heads, ≈ LR1 on BaseNet
    model = m2cnn.build_m2cnn(448, "tiny")
    model.get_layer("dropout").rate = 0.0
    checkpoints.restore_model(model, str(tmp_path / "fresh_heads" / "ckpt-0"))
    groups = training.learning_rate_groups(model, training.report_from_dict(report))
    heads = {id(v) for v in m2cnn.block_variables(model)[m2cnn.HEADS]}
    assert heads <= {id(v) for v in groups[optimizers.NEW]}
    optimizer = optimizers.make_optimizer(model.trainable_variables, groups, cfg)
    step = training.make_train_function(tf.distribute.get_strategy(), model, optimizer, cfg, 2)
    batch = next(iter(input_pipeline.make_dataset(data_dir, "train", 448, 2, training=False)))
    before = {id(v): v.numpy() for v in model.trainable_variables}
    step((batch["image"], batch["grade"]))
    for block, rate in ((m2cnn.HEADS, cfg.lr_new), (m2cnn.BASENET, cfg.lr_finetune)):
        delta = np.concatenate([(v.numpy() - before[id(v)]).ravel()
                                for v in m2cnn.block_variables(model)[block] if v.trainable])
        assert np.max(np.abs(delta)) <= rate * 1.001, block
        assert np.median(np.abs(delta)) == pytest.approx(rate, rel=0.1), block


# --------------------------------------------------------------------------------------------
# The head a run is selected and read by follows its loss
# --------------------------------------------------------------------------------------------


class _Recorder:
    """Stands in for the reporter and the checkpoint keeper of ``loop._run_eval``."""

    def __init__(self, selected_by):
        self.selected_by, self.saved = selected_by, []

    def jsonl(self, *_):
        pass

    scalars = confusion = flush = jsonl

    def save_best_checkpoint(self, step, _):
        self.saved.append(step)


def _scripted_evaluations(monkeypatch, kappas):
    """Makes ``loop.evaluate`` return real statistics with these (score, argmax) kappas."""
    real, script = training.evaluate, iter(kappas)

    def scripted(function, data):
        result = (real(function, data) if data is not None
                  else metrics.summarize(metrics.zero_statistics()))
        result["kappa_score"], result["kappa_argmax"] = next(script)
        return result

    monkeypatch.setattr(training, "evaluate", scripted)


@pytest.mark.parametrize("loss_weights,metric,best_steps", [
    ((1.0, 0.0), "kappa_argmax", [1, 2]), ((1.0, 1.0), "kappa_score", [1]),
    ((0.0, 1.0), "kappa_score", [1])])
def test_the_best_checkpoint_follows_the_head_the_loss_trains(monkeypatch, loss_weights, metric,
                                                              best_steps):
    assert training.selection_metric(dataclasses.replace(
        config.TRAIN, loss_weights=loss_weights)) == metric
    _scripted_evaluations(monkeypatch, [(0.5, 0.1), (0.2, 0.6)])
    recorder, best = _Recorder(metric), None
    for step in (1, 2):
        _, best = training._run_eval(step, None, None, recorder, recorder, best, lambda _: None)
    assert recorder.saved == best_steps


def test_a_ce_only_run_keeps_its_best_probabilities_kappa_and_is_read_by_them(
        monkeypatch, data_dir, tmp_path):
    # the score's kappa falls while the probabilities' rises: selected by the score, step 1
    # would be kept
    _scripted_evaluations(monkeypatch, [(0.5, 0.1), (0.2, 0.6)])
    run = tmp_path / "ce_only"
    result = training.train_and_evaluate(tiny(data_dir, run, loss_weights=(1.0, 0.0),
                                              train_steps=2, eval_every_steps=1), quiet=True)
    assert result["best"]["step"] == 2
    best = checkpoints.read_json(run / checkpoints.BEST_DIR / checkpoints.BEST_JSON)
    assert best["selected_by"] == "kappa_argmax" and best["step"] == 2
    assert checkpoints.checkpoint_step(checkpoints.best_checkpoint(str(run))) == 2
    final = summaries.read_metrics(str(run), "final")[0]
    assert final["selected_by"] == "kappa_argmax" and final["best_kappa"] == 0.6
    run_config = checkpoints.read_run_config(str(run))
    assert (run_config["prediction"], run_config["selected_by"]) == ("probabilities",
                                                                     "kappa_argmax")

    # read back: by its probabilities, in the predictor and in the export's metadata
    model = predictors.open_predictor(str(run))
    assert signatures.prediction_of(model.metadata) == "probabilities"
    images = next(iter(input_pipeline.make_dataset(data_dir, "validation", 224, 4,
                                                   training=False)))["image"].numpy()
    outputs = model.predict_normalized(images)
    np.testing.assert_array_equal(outputs["grade"], outputs["grade_from_probabilities"])
    metadata = export.export_metadata(model.metadata, (0.5, 1.5, 2.5, 3.5), "rounding", "")
    assert metadata["prediction"] == "probabilities"
    assert metadata["grade"] == export.GRADE_BY_PROBABILITIES
    assert metadata["validation_kappa_argmax"] == 0.6
    # the run cannot be resumed as another experiment: a new schedule or switch is refused
    for change in ({"lr_schedule": "cosine"}, {"multicell": "off"}, {"heads": "new"}):
        with pytest.raises(training.TrainingError, match=f"another run.*{next(iter(change))}"):
            training.train_and_evaluate(tiny(data_dir, run, loss_weights=(1.0, 0.0),
                                             train_steps=3, **change), quiet=True)
    # the multi-task default grades by the score, as before
    score_outputs = signatures.model_outputs(model.model, tf.constant(images),
                                             tf.constant([0.5, 1.5, 2.5, 3.5]))
    np.testing.assert_array_equal(score_outputs["grade"].numpy(), rule.apply_thresholds(
        score_outputs["score"].numpy(), (0.5, 1.5, 2.5, 3.5)))
