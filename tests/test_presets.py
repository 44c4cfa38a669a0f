"""Presets and schedules (issue 16): every preset resolves to one valid TrainConfig, the paper's
experiments name known presets, README/demo/notebook keep no schedule of their own, train.py's
--preset yields to explicit flags, and each learning-rate schedule follows its formula — also
across a resume.

No training here: the schedules run on a few toy variables, the flags on their own registry.
"""

import dataclasses
import math
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from conftest import REPO_ROOT
from m2cnn_tf import config
from m2cnn_tf.config import TRAIN, TrainConfig
from m2cnn_tf.train import loop as training, optimizers
from m2cnn_tf.util import config_flags

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
IDENTITY = ("variant", "resolution", "init", "mixed_precision", "optimizer", "multicell", "heads",
            "lr_schedule", "warmup_steps", "loss_weights", "lr_finetune", "lr_new", "seed")


# --------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------


def test_every_preset_resolves_to_one_valid_config():
    folders = [p.config.model_dir for p in config.PRESETS.values()]
    assert len(set(folders)) == len(folders)  # no two presets share a run folder
    for name, preset in config.PRESETS.items():
        c = config.preset_config(name)
        assert isinstance(c, TrainConfig) and c is preset.config and preset.name == name
        training.check_config(c)  # raises TrainingError naming what is wrong
        assert c.model_dir == f"{config.PRESET_RUNS_DIR}/{name}" and c.data_dir == ""
        if not preset.parent:
            assert preset.relation == "" and c.init in ("none", "imagenet"), name
            continue
        parent = config.preset(preset.parent).config
        if preset.relation == config.RELATION_INIT:  # a new stage from the parent's run
            assert c.init == parent.model_dir and c.variant == parent.variant, name
            assert c.resolution >= parent.resolution, name
        else:  # the parent's run trained on: it must be resumable with these settings
            assert preset.relation == config.RELATION_CONTINUE, name
            assert all(getattr(c, f) == getattr(parent, f) for f in IDENTITY), name
            assert c.train_steps > parent.train_steps, name
    moved = config.preset_config("paper_448", "out/runs")
    assert moved.model_dir == os.path.join("out/runs", "paper_448")
    assert moved.init == os.path.join("out/runs", "paper_224")
    assert config.preset_config("paper_224", "out/runs").init == "imagenet"
    with pytest.raises(ValueError, match="unknown preset 'paper_999'; known: paper_224"):
        config.preset("paper_999")


def test_the_paper_stages_and_baselines_say_what_the_paper_does():
    stages = [config.preset(f"paper_{r}").config for r in (224, 448, 720)]
    assert [s.resolution for s in stages] == [224, 448, 720]
    assert [s.init for s in stages] == ["imagenet", "runs/paper_224", "runs/paper_448"]
    assert [s.train_steps for s in stages] == [20_000, 12_000, config.PAPER_STEPS_720]
    assert all(s.loss_weights == (1.0, 1.0) and s.multicell == "auto" and s.variant == "m2cnn"
               and (s.lr_finetune, s.lr_new) == (1e-4, 1e-3) for s in stages)
    for loss, weights, prediction in (("mse", (0.0, 1.0), "score"),
                                      ("ce", (1.0, 0.0), "probabilities"),
                                      ("mt", (1.0, 1.0), "score")):
        for resolution in (448, 720):
            c = config.preset(f"basenet_{loss}_{resolution}").config
            assert (c.multicell, c.init, c.resolution, c.loss_weights, c.prediction) == (
                "off", "imagenet", resolution, weights, prediction)


def test_the_experiments_name_known_presets_and_the_paper_numbers():
    table2 = {(r.row, r.column): r for r in config.PAPER_EXPERIMENTS["table2"]}
    assert len(table2) == 4 * 3 + 2 * 2  # Table II: no M²CNN entry at 224
    for result in config.PAPER_EXPERIMENTS["table2"] + config.PAPER_EXPERIMENTS["table3"]:
        preset = config.preset(result.preset).config
        # a number read by the probabilities comes from a run that trains them, and so on
        assert preset.loss_weights[0 if result.prediction == "probabilities" else 1] > 0, result
    # Table III's rows are Table II's cells at 720 (validation, by the score)
    table3 = {(r.row, r.split): r for r in config.PAPER_EXPERIMENTS["table3"]}
    for row, column in (("BaseNet", "MSE scores"), ("BaseNet+MT", "multi-task scores"),
                        ("M²CNN", "M²CNN scores")):
        cell, validation = table2[("720×720", column)], table3[(row, "validation")]
        assert (cell.preset, cell.kappa) == (validation.preset, validation.kappa)
    assert [table3[(r, "test")].kappa for r in ("BaseNet", "BaseNet+MT", "M²CNN")] == [
        0.828, 0.838, 0.841]
    # Fig. 4's labels count steps over the stages a run started from: 448*@32k = 20k + 12k
    for point in config.PAPER_EXPERIMENTS["fig4"]:
        thousands = int(re.search(r"@(\d+)k", point.label).group(1))
        assert config.preset_step_offset(point.preset) + point.step == thousands * 1000, point
        assert point.step <= config.preset(point.preset).config.train_steps, point
    assert config.experiment_presets("table3")[-3:] == ["paper_224", "paper_448", "paper_720"]
    order = config.experiment_presets("fig4")
    assert order.index("paper_448") < order.index("fig4_448ft_40k")  # parents first


def _registry(argv):
    registry = flags.FlagValues()
    config_flags.define_flags(TrainConfig, TRAIN, flag_values=registry)
    registry(["train.py", *argv])
    return registry


def test_a_preset_yields_to_the_flags_given_explicitly():
    base = config.preset_config("paper_448")
    given = config_flags.config_from_flags(
        TrainConfig, TRAIN, base=base,
        flag_values=_registry(["--batch_size=8", "--train_steps=20000", "--deterministic"]))
    # --train_steps=20000 is TRAIN's default, yet given explicitly it wins over the preset's
    assert given == dataclasses.replace(base, batch_size=8, train_steps=20000,
                                        deterministic=True)
    assert config_flags.config_from_flags(TrainConfig, TRAIN, base=base,
                                          flag_values=_registry([])) == base


def test_train_py_lists_the_presets_and_refuses_an_unknown_one():
    listed = subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), "--list_presets"],
                            capture_output=True, text=True, timeout=120, env=ENV)
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == list(config.PRESETS)
    assert "continue paper_448" in listed.stdout
    bad = subprocess.run([sys.executable, str(REPO_ROOT / "train.py"), "--preset=paper_999",
                          "--data_dir=x"], capture_output=True, text=True, timeout=120, env=ENV)
    assert bad.returncode != 0 and "paper_224" in bad.stderr and "paper_999" in bad.stderr


# A step count written into a command or a source: --train_steps=20000, --steps=1,2,
# train_steps=3, STEPS = {224: 6, …}, flags.DEFINE_list("steps", ["120", …]).
STEP_COUNT = re.compile(r"""steps["']?\s*[=:,]\s*[\[{(]?\s*["']?(\d+\s*:\s*)?\d""", re.I)


def _commands_of_readme(text):
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    inline = re.findall(r"`(python [^`]*)`", text)
    return "\n".join(blocks + inline)


def test_readme_demo_and_notebook_carry_no_step_counts_of_their_own():
    for bad in ("--train_steps=20000", "--steps=20000,12000,8000", "STEPS = {224: 6, 448: 3}",
                'flags.DEFINE_list("steps", ["120", "40"], ""', "train_steps=steps"):
        assert STEP_COUNT.search(bad) or "=steps" in bad, bad  # the pattern catches them…
    assert not STEP_COUNT.search("train_steps=steps[i]")  # …and not a name passed on
    readme = (REPO_ROOT / "README.md").read_text()
    sources = {"README.md commands": _commands_of_readme(readme),
               "demo.py": (REPO_ROOT / "demo.py").read_text(),
               "notebooks/make_notebook.py": (REPO_ROOT / "notebooks" / "make_notebook.py")
               .read_text(),
               "notebooks/m2cnn_colab.ipynb": (REPO_ROOT / "notebooks" / "m2cnn_colab.ipynb")
               .read_text()}
    schedule = {str(n) for n in (config.PAPER_STEPS_224, config.PAPER_STEPS_448,
                                 config.PAPER_STEPS_720, 15000, 10000, 8000, 5000)}
    for where, text in sources.items():
        match = STEP_COUNT.search(text)
        assert match is None, f"{where}: {text[max(0, match.start() - 60):match.end() + 20]!r}"
        numbers = set(re.findall(r"\b\d{4,5}\b", re.sub(r"(\d),(\d{3})\b", r"\1\2", text)))
        assert not numbers & schedule, (where, numbers & schedule)
    # …and they do name presets, each a known one
    named = set(re.findall(r"--presets?=([\w,]+)", sources["README.md commands"]))
    named |= set(re.findall(r'"((?:paper|demo|rehearsal)_\d+)"', sources["demo.py"]
                            + sources["notebooks/make_notebook.py"]))
    names = {n for group in named for n in group.split(",")}
    assert {"paper_224", "paper_448", "paper_720", "rehearsal_224", "demo_224"} <= names
    assert names <= set(config.PRESETS), names - set(config.PRESETS)


# --------------------------------------------------------------------------------------------
# Learning-rate schedules
# --------------------------------------------------------------------------------------------


def _formula(base, t, shape, total, warmup=0, fractions=(0.5, 0.75), factor=0.1):
    """The documented schedule, written out: warm-up × decay over the steps after warm-up."""
    warm = min(1.0, (t + 1) / warmup) if warmup else 1.0
    span, after = max(1, total - warmup), max(0, t - warmup)
    if shape == "cosine":
        return base * warm * 0.5 * (1 + math.cos(math.pi * min(after, span) / span))
    if shape == "step":
        return base * warm * factor ** sum(after >= f * span for f in fractions)
    return base * warm


@pytest.mark.parametrize("shape", config.LR_SCHEDULES)
@pytest.mark.parametrize("warmup", [0, 10])
def test_each_schedule_gives_its_formula_at_chosen_steps(shape, warmup):
    schedule = optimizers.GroupSchedule(1e-3, shape, total_steps=100, warmup_steps=warmup,
                                        step_fractions=(0.5, 0.75), step_factor=0.1)
    for t in (0, 4, 9, 10, 11, 49, 50, 54, 55, 77, 78, 99, 100, 150):
        # computed in float32 on the device: within float32 rounding of the base rate
        assert float(schedule(t)) == pytest.approx(_formula(1e-3, t, shape, 100, warmup),
                                                   rel=1e-5, abs=1e-3 * 1e-6), (shape, warmup, t)
    # a few values by hand: half the rate at 5 of 10 warm-up steps, half-way down the cosine,
    # both drops (×0.01) from 3/4 of the steps after warm-up on
    if warmup:
        assert float(schedule(4)) == pytest.approx(0.5e-3)
    if shape == "cosine":
        assert float(schedule(warmup + (100 - warmup) // 2)) == pytest.approx(0.5e-3, rel=1e-5)
        assert float(schedule(100)) == pytest.approx(0.0, abs=1e-12)
    if shape == "step":
        assert float(schedule(99)) == pytest.approx(1e-5)


def _sgd_config(**changes):
    # plain SGD (no momentum), so each update is exactly −rate · gradient
    return dataclasses.replace(TRAIN, optimizer="sgd", sgd_momentum=0.0, lr_finetune=0.1,
                               lr_new=1.0, train_steps=6, **changes)


def _step_and_check(optimizer, variables, steps, train_config):
    for t in steps:
        before = [v.numpy().copy() for v in variables]
        optimizer.apply([np.ones(v.shape, np.float32) for v in variables], variables)
        for v, old, base in zip(variables, before, (0.1, 1.0)):
            rate = _formula(base, t, train_config.lr_schedule, 6, train_config.warmup_steps,
                            train_config.lr_step_fractions, train_config.lr_step_factor)
            np.testing.assert_allclose(old - v.numpy(), rate, rtol=1e-5, atol=1e-7,
                                       err_msg=f"step {t}")
        rates = optimizer.learning_rates()  # what the log shows: the step just taken
        assert rates[optimizers.FINETUNE] == pytest.approx(
            _formula(0.1, t, train_config.lr_schedule, 6, train_config.warmup_steps,
                     train_config.lr_step_fractions, train_config.lr_step_factor), abs=1e-7)


@pytest.mark.parametrize("shape", ["cosine", "step"])
def test_both_groups_follow_the_schedule_and_a_resume_keeps_its_position(shape, tmp_path):
    c = _sgd_config(lr_schedule=shape, warmup_steps=2, lr_step_fractions=(0.5,))
    finetune, new = keras.Variable(np.zeros(3, np.float32)), keras.Variable(np.zeros(2, np.float32))
    groups = {optimizers.FINETUNE: [finetune], optimizers.NEW: [new]}
    optimizer = optimizers.make_optimizer([finetune, new], groups, c)
    _step_and_check(optimizer, [finetune, new], range(3), c)
    saved = tf.train.Checkpoint(optimizer=optimizer).save(str(tmp_path / "ckpt"))

    # a new process: fresh optimiser, restored from the checkpoint, goes on at step 3
    resumed = optimizers.make_optimizer([finetune, new], groups, c)
    assert resumed.learning_rates()[optimizers.NEW] == pytest.approx(_formula(1.0, 0, shape, 6, 2))
    tf.train.Checkpoint(optimizer=resumed).restore(saved).assert_consumed()
    assert resumed.learning_rates()[optimizers.NEW] == pytest.approx(
        _formula(1.0, 2, shape, 6, 2, (0.5,)), abs=1e-7)
    _step_and_check(resumed, [finetune, new], range(3, 6), c)


def test_constant_without_warmup_keeps_a_plain_rate_and_names_its_schedule():
    c = _sgd_config()
    assert not optimizers.uses_schedule(c) and optimizers.schedule_description(c) == "constant"
    assert optimizers.uses_schedule(dataclasses.replace(c, warmup_steps=5))
    assert optimizers.schedule_description(
        dataclasses.replace(c, lr_schedule="cosine", warmup_steps=5)) == "cosine+warmup"
    with pytest.raises(training.TrainingError, match="lr_step_fractions"):
        training.check_config(dataclasses.replace(c, lr_schedule="step",
                                                  lr_step_fractions=(0.75, 0.5)))
    with pytest.raises(training.TrainingError, match="not both 0"):
        training.check_config(dataclasses.replace(c, loss_weights=(0.0, 0.0)))
