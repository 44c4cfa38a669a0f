"""The experiment runner (issue 16): experiments.py plans the paper's runs, trains the missing
ones in order, resumes an interrupted one without redoing finished ones, and writes Table III
and Fig. 4.

At full scale only the plan is checked (``--dry_run``), against config's presets and constants.
The runs themselves are the real code shrunk: the tiny variant at 80/96/112 px in place of
224/448/720 (``--resolutions``), a few steps each (``--scale``), on 16 synthetic photographs.
"""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from matplotlib import image as mpimg

from conftest import REPO_ROOT
from m2cnn_tf import config
from m2cnn_tf.data import builder, sources
from m2cnn_tf.evaluate import experiment_plan, experiments
from m2cnn_tf.evaluate.experiment_plan import ExperimentConfig

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
SIZES = {224: 80, 448: 96, 720: 112}
# Each paper step count × this, at least 1: 20k steps become 2, Fig. 4's 60k 6.
SCALE = 0.0001
# Two patients of four photographs… per split: patients 0–3 train, 4–5 validation, 6–7 test.
SPLIT_OF_PATIENT = ("train",) * 4 + ("validation",) * 2 + ("test",) * 2


def _flags(experiment, data_dir, output_dir):
    return [f"--experiment={experiment}", f"--data_dir={data_dir}", f"--output_dir={output_dir}",
            "--variant=tiny", "--init=none", f"--scale={SCALE}", "--batch_size=2",
            "--keep_checkpoints=1", "--bootstrap=50", "--quiet",
            "--resolutions=" + ",".join(f"{k}:{v}" for k, v in SIZES.items())]


def _settings(experiment, data_dir, output_dir) -> ExperimentConfig:
    return ExperimentConfig(experiment=experiment, data_dir=str(data_dir),
                            output_dir=str(output_dir), variant="tiny", init="none",
                            scale=SCALE, batch_size=2, keep_checkpoints=1,
                            resolutions=tuple(f"{k}:{v}" for k, v in SIZES.items()))


def _run(argv, faults=None):
    env = dict(ENV, **({"M2CNN_FAULTS": faults} if faults else {}))
    return subprocess.run([sys.executable, str(REPO_ROOT / "experiments.py"), *argv],
                          capture_output=True, text=True, timeout=900, env=env)


def _mtimes(folder):
    return {os.path.relpath(os.path.join(root, name), folder):
            os.stat(os.path.join(root, name)).st_mtime_ns
            for root, _, names in os.walk(folder) for name in names}


def _finals(model_dir):
    with open(os.path.join(model_dir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["kind"] == "final"]


# --------------------------------------------------------------------------------------------
# The plan at full scale
# --------------------------------------------------------------------------------------------


def _plan(experiment):
    return {r.name: r for r in experiment_plan.plan_experiment(
        ExperimentConfig(experiment=experiment, dry_run=True))}


def test_the_full_scale_plans_are_the_papers():
    table3 = _plan("table3")
    assert list(table3) == ["basenet_mse_720", "basenet_mt_720", "paper_224", "paper_448",
                            "paper_720"]
    table2 = _plan("table2")
    basenets = {f"basenet_{loss}_{r}" for loss in ("mse", "ce", "mt") for r in (224, 448, 720)}
    assert set(table2) == (basenets - {"basenet_mt_224"}) | {"paper_224", "paper_448",
                                                             "paper_720"}
    for experiment, plan in (("table2", table2), ("table3", table3)):
        for name, run in plan.items():
            # at full scale a run is its preset, in the experiment's folder, deterministic
            preset = config.preset_config(name, os.path.join("experiments", experiment, "runs"))
            c = run.config
            assert c.deterministic and dataclasses.replace(c, deterministic=False) == preset, name
            assert c.model_dir == os.path.join("experiments", experiment, "runs", name)
            if name.startswith("basenet"):  # single-resolution BaseNet from ImageNet
                assert (c.multicell, c.init, run.parent, c.train_steps) == (
                    "off", "imagenet", "", config.PAPER_STEPS_DIRECT), name
        # M²CNN staged: 224 from ImageNet, 448 from 224's best, 720 from 448's best
        assert [(plan[f"paper_{r}"].parent, plan[f"paper_{r}"].config.train_steps)
                for r in (224, 448, 720)] == [("", config.PAPER_STEPS_224),
                                              ("paper_224", config.PAPER_STEPS_448),
                                              ("paper_448", config.PAPER_STEPS_720)]
        assert plan["paper_720"].config.init == plan["paper_448"].config.model_dir
    fig4 = _plan("fig4")
    assert {n: (r.parent, r.relation, r.config.resolution, r.config.train_steps)
            for n, r in fig4.items()} == {
        "paper_224": ("", "", 224, config.PAPER_STEPS_224),
        "fig4_224_60k": ("paper_224", "continue", 224, config.FIG4_STEPS_224_LONG),
        "fig4_448_direct": ("", "", 448, config.FIG4_STEPS_448_DIRECT),
        "paper_448": ("paper_224", "init", 448, config.PAPER_STEPS_448),
        "fig4_448ft_40k": ("paper_448", "continue", 448, config.FIG4_STEPS_448_FINETUNE_LONG)}
    labels = [(p.label, r.step_offset + p.step) for r in fig4.values() for p in r.fig4_points]
    assert sorted(labels) == sorted((p.label, int(re.search(r"@(\d+)k", p.label).group(1)) * 1000)
                                    for p in config.PAPER_EXPERIMENTS["fig4"])


def test_dry_run_prints_each_plan_with_estimated_and_paper_hours():
    rate = (config.ESTIMATE_GPU_PEAK_TFLOPS * config.ESTIMATE_GPU_UTILISATION) * 1e12
    for experiment in config.PAPER_EXPERIMENTS:
        printed = []
        result = experiments.run_experiment(ExperimentConfig(experiment=experiment,
                                                             dry_run=True), echo=printed.append)
        text = "\n".join(printed)
        assert "estimate" in text and f"{rate / 1e12:.1f} TFLOP/s" in text, text
        rows = {row["run"]: row for row in result["plan"]}
        assert list(rows) == config.experiment_presets(experiment)
        for name, row in rows.items():
            line = next(l for l in text.splitlines() if l.startswith(name + " "))
            start = (f"{row['relation']} {row['parent']}" if row["parent"]
                     else f"init {config.preset(name).config.init}")
            assert start in line and f" {row['train_steps']} " in line and "to do" in line, line
            # GPU hours: 3 forward passes × FLOPs × batch × own steps at the assumed rate
            hours = (config.TRAINING_FLOPS_PER_FORWARD * row["gflops_per_image"] * 1e9
                     * row["batch_size"] * row["own_steps"] / rate / 3600)
            assert row["estimated_gpu_hours"] == pytest.approx(hours)
            assert f"{hours:.2f}" in line
            for point in row["fig4_points"]:  # the paper's hours beside ours
                assert f"{point['label']} (step {point['step']})" in line
                assert f"paper {point['paper_hours']:.1f} h" in line
    # 720 px with the large cells costs more than without, and more than 448
    table2 = {r["run"]: r for r in experiments.run_experiment(
        ExperimentConfig(experiment="table2", dry_run=True), echo=lambda _: None)["plan"]}
    assert (table2["paper_720"]["gflops_per_image"] > table2["basenet_mt_720"]["gflops_per_image"]
            > table2["basenet_mt_448"]["gflops_per_image"])


def test_only_plans_the_runs_named_and_those_they_start_from():
    plan = experiment_plan.plan_experiment(ExperimentConfig(
        experiment="table2", only=("basenet_mt_720", "paper_448"), dry_run=True))
    assert [r.name for r in plan] == ["basenet_mt_720", "paper_224", "paper_448"]


def test_bad_settings_are_named():
    for changes, message in (({"scale": 0.0}, "--scale must be > 0"),
                             ({"resolutions": ("720-128",)}, "is not PAPER:SIZE"),
                             ({"resolutions": ("300:128",)}, "not one of the paper's sizes"),
                             ({"variant": "huge"}, "--variant='huge'"),
                             ({"experiment": "fig4", "scale": 1e-5}, "use a larger --scale"),
                             ({"dry_run": False}, "--data_dir is required"),
                             ({"only": ("basenet_ce_720",)}, "--only: basenet_ce_720 not in "
                                                             "table3")):
        settings = dataclasses.replace(ExperimentConfig(dry_run=True), **changes)
        with pytest.raises(experiments.ExperimentError, match=re.escape(message)):
            experiments.run_experiment(settings, echo=lambda _: None)


# --------------------------------------------------------------------------------------------
# Running: Table III killed in its last run and resumed, then Fig. 4 beside it
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("experiment_data") / "synthetic"
    inputs, skipped = sources.synthetic_inputs(16, seed=0, width=480)
    inputs = [dataclasses.replace(r, split=SPLIT_OF_PATIENT[int(r.patient_id)]) for r in inputs]
    builder.build(inputs, skipped, str(out),
                  config.BuilderConfig(resolutions=tuple(SIZES.values()), num_workers=1),
                  {"kind": "synthetic"}, quiet=True)
    return str(out)


@pytest.fixture(scope="module")
def table3(data_dir, tmp_path_factory):
    """Table III run once, killed in its second run right after that run's checkpoint of step
    1 (of 2), then run again: {"out", "plan", "first", "second", "before", "after"} (the last
    two: mtimes of every file before and after the second run)."""
    out = tmp_path_factory.mktemp("experiments")
    plan = experiment_plan.plan_experiment(_settings("table3", data_dir, out))
    assert all(r.config.checkpoint_every_steps == 1 for r in plan)
    # one checkpoint at step 0 and one at every step: the kill comes after basenet_mt_720's
    # ckpt-1, once basenet_mse_720 has finished and been evaluated
    kill_at = plan[0].config.train_steps + 1 + 2
    assert plan[1].name == "basenet_mt_720" and plan[1].config.train_steps == 2
    first = _run(_flags("table3", data_dir, out), faults=f"checkpoint.saved:{kill_at}:kill")
    assert first.returncode == -9, first.stderr[-3000:]
    before = _mtimes(out / "runs")
    second = _run(_flags("table3", data_dir, out))
    assert second.returncode == 0, second.stderr[-3000:]
    yield {"out": out, "plan": plan, "first": first, "second": second, "before": before,
           "after": _mtimes(out / "runs")}
    shutil.rmtree(out, ignore_errors=True)  # ~1.5 GB of checkpoints


def test_table3_is_written_with_every_row_after_a_kill_and_a_rerun(table3):
    out = table3["out"]
    assert "experiment table3: 5 runs" in table3["first"].stdout
    text = (out / "table3.md").read_text()
    for row in ("BaseNet", "BaseNet+MT", "M²CNN"):
        line = next(l for l in text.splitlines() if l.startswith(f"| {row} |"))
        cells = line.strip("|").split("|")[1:]
        assert len(cells) == 2 and all(re.search(r"\*\*-?\d\.\d{3}\*\* \[", c) for c in cells), line
        paper = [r.kappa for r in config.PAPER_EXPERIMENTS["table3"] if r.row == row]
        assert all(f"paper {k:.3f}" in line for k in paper), line
    assert "every run deterministic" in text
    results = json.loads((out / "results.json").read_text())
    assert len(results["cells"]) == 6 and all(
        c["kappa"] is not None and c["interval"]["num_resamples"] == 50 for c in results["cells"])
    assert all(run["deterministic"] for run in results["runs"].values())


def test_the_rerun_finished_the_killed_run_and_redid_nothing(table3):
    before, after = table3["before"], table3["after"]
    finished, killed, *rest = table3["plan"]
    # the run finished before the kill: not a file rewritten, none added (its evaluation kept)
    files = {k: v for k, v in before.items() if k.startswith(finished.name + os.sep)}
    assert os.path.join(finished.name, experiments.EVALUATION_JSON) in files
    assert {k: v for k, v in after.items() if k.startswith(finished.name + os.sep)} == files
    # the killed run resumed from its step-1 checkpoint and trained its second step only
    assert [(f["start_step"], f["step"]) for f in _finals(killed.config.model_dir)] == [(1, 2)]
    assert not any(k.startswith(tuple(r.name + os.sep for r in rest)) for k in before)
    for run in rest:  # the others, never started before the kill, trained once from step 0
        assert [(f["start_step"], f["step"]) for f in _finals(run.config.model_dir)] == [
            (0, run.config.train_steps)], run.name


@pytest.fixture(scope="module")
def fig4(table3, data_dir):
    out = table3["out"]
    for name in ("basenet_mse_720", "basenet_mt_720", "paper_720"):  # not Fig. 4's: free disk
        shutil.rmtree(out / "runs" / name)
    before = _mtimes(out / "runs")
    result = _run(_flags("fig4", data_dir, out))
    assert result.returncode == 0, result.stderr[-3000:]
    return {"out": out, "before": before, "after": _mtimes(out / "runs"), "result": result}


def test_fig4_reuses_the_finished_stages_and_draws_every_run(fig4, data_dir):
    out, before, after = fig4["out"], fig4["before"], fig4["after"]
    for name in ("paper_224", "paper_448"):  # finished in Table III's runs: reused as they are
        files = {k: v for k, v in before.items() if k.startswith(name + os.sep)}
        assert files and all(after[k] == v for k, v in files.items()), name
    plan = {r.name: r for r in experiment_plan.plan_experiment(
        _settings("fig4", data_dir, out))}
    # the continued run is paper_224's run trained on: its log starts with paper_224's
    long = plan["fig4_224_60k"].config
    assert [(f["start_step"], f["step"]) for f in _finals(long.model_dir)] == [
        (0, plan["paper_224"].config.train_steps), (plan["paper_224"].config.train_steps,
                                                    long.train_steps)]
    picture = mpimg.imread(out / "fig4.png")
    assert picture.shape[1] > picture.shape[0] >= 300  # two panels side by side
    colours = np.unique((picture[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) > 50 and picture[..., :3].std() > 0.05  # drawn, not blank
    results = json.loads((out / "results.json").read_text())
    assert set(results["fig4"]["curves"]) == set(plan)
    points = {p["label"]: p for p in results["fig4"]["points"]}
    assert set(points) == {p.label for p in config.PAPER_EXPERIMENTS["fig4"]}
    for point in points.values():
        run = plan[point["run"]]
        assert point["cumulative_step"] == run.step_offset + point["step"]
        assert point["evaluated_step"] == point["step"] and point["kappa"] is not None
        assert point["hours"] > 0
    # 448*@32k counts the 224 stage before it, in steps and in hours
    assert points["448*@32k"]["cumulative_step"] == (plan["paper_224"].config.train_steps
                                                     + plan["paper_448"].config.train_steps)
    assert points["448*@32k"]["hours"] > points["224@20k"]["hours"]
    assert "| 448*@32k | paper_448 |" in (out / "fig4.md").read_text()
