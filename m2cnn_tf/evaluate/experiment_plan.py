"""Planning the paper's experiments: which runs, from which parents, how long, at what cost.

An experiment (``config.PAPER_EXPERIMENTS``: Table II, Table III, Fig. 4) needs the runs of
some presets (``config.PRESETS``) and of the presets they start from. The plan is those runs in
an order that trains every parent first, each a ``TrainConfig`` with its folder under the
experiment's output folder, shrunk or changed by the runner's settings (``ExperimentConfig``:
``--scale``, ``--variant``, ``--resolutions``, …), each with its estimated GPU hours (from the
network's FLOPs and an assumed device, ``config.ESTIMATE_GPU_*``) and the paper's hours where
the paper gives them (Fig. 4). ``run_finished`` is the one rule saying a run needs no more
training.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Dict, List, Tuple

from m2cnn_tf import config
from m2cnn_tf import model as m2cnn
from m2cnn_tf.config import TrainConfig, setting
from m2cnn_tf.grading import stats
from m2cnn_tf.model import accounting
from m2cnn_tf.train import checkpoints, summaries

# The step counts of a TrainConfig that --scale multiplies (all in training steps).
SCALED_FIELDS = ("train_steps", "eval_every_steps", "checkpoint_every_steps", "log_every_steps",
                 "warmup_steps")
# The sizes the paper trains at (Table I, Fig. 4); --resolutions maps them to others.
PAPER_RESOLUTIONS = (224, 448, 720)
# Where the experiments' runs live under the output folder.
RUNS_FOLDER = "runs"


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """One experiment run (experiments.py): every flag's default."""

    experiment: str = setting(
        "table3", "Which of the paper's experiments: table2 (BaseNet MSE-only, CE-only and "
        "multi-task at 224, 448 and 720, M²CNN at 448 and 720), table3 (BaseNet, BaseNet+MT and "
        "M²CNN at 720, validation and test) or fig4 (validation kappa against steps and hours).",
        choices=tuple(config.PAPER_EXPERIMENTS))
    data_dir: str = setting(
        "", "A build_tfrecords.py output at the runs' resolutions, with train and validation "
        "splits (and a test split for the tables' test column).")
    output_dir: str = setting(
        "", "Where the runs (runs/<preset>) and the results go (default: "
        "experiments/<experiment>). Runs already there are resumed or, when finished, reused.")
    scale: float = setting(
        1.0, "Multiply every step count of every run (training steps; evaluation, checkpoint "
        "and log intervals; at least 1) by this: 1 is the paper's schedule, 0.01 a CPU "
        "rehearsal.")
    variant: str = setting(
        "", "Network of every run: m2cnn (the paper's) or tiny (one repeat of every cell, for a "
        "CPU); default: the presets' (m2cnn).")
    init: str = setting(
        "", "Starting weights of the runs that the presets start from ImageNet: empty keeps "
        "imagenet (a download), none starts them from random weights (no download), or a Keras "
        "Inception-ResNet-v2 notop weights file.")
    resolutions: Tuple[str, ...] = setting(
        (), "Train at other sizes than the paper's, as PAPER:SIZE pairs (e.g. "
        "224:96,448:112,720:128: a quick check of the runner on a CPU; the data must be built "
        "at those sizes). Below 350 px the Multi-Cell switch adds no cells, so the M²CNN runs "
        "then differ from BaseNet only by their loss and staging.")
    batch_size: int = setting(0, "Global batch of every run (0: the presets').")
    eval_every_steps: int = setting(
        0, "Evaluate every this many steps in every run (0: the presets' interval × --scale).")
    keep_checkpoints: int = setting(0, "Rolling checkpoints kept per run (0: the presets').")
    deterministic: bool = setting(
        True, "Repeatable runs (TensorFlow op determinism, a fixed data order and augmentation; "
        "slower); the tables say whether each run was.")
    only: Tuple[str, ...] = setting(
        (), "Run only these of the experiment's presets (with the runs they start from), e.g. "
        "one column of Table II; the table's other cells stay empty.")
    bootstrap: int = setting(
        stats.NUM_RESAMPLES, "Bootstrap resamples (of patients) for the 95 % intervals of the "
        "tables; 0 for none.")
    dry_run: bool = setting(
        False, "Print the plan — runs, parents, steps, resolution, starting weights, estimated "
        "GPU hours, the paper's hours — and exit without training.")


EXPERIMENT = ExperimentConfig()


@dataclasses.dataclass(frozen=True)
class PlannedRun:
    """One run of an experiment's plan.

    Attributes:
      name: its preset (``config.PRESETS``); its folder is ``<output_dir>/runs/<name>``.
      summary: the preset's one-line description.
      parent: the run it starts from ("" for none).
      relation: ``config.RELATION_INIT`` (a new run initialised from the parent's best
        checkpoint), ``config.RELATION_CONTINUE`` (the parent's run trained on, in a copy of
        its folder) or "".
      config: the run's settings as it will be trained (``data_dir`` and folders set).
      step_offset: steps trained before the run began, over the runs it was initialised from
        (``config.preset_step_offset``): what Fig. 4's cumulative labels add.
      fig4_points: the paper's labelled Fig. 4 points on this run (steps scaled as the run).
    """

    name: str
    summary: str
    parent: str
    relation: str
    config: TrainConfig
    step_offset: int
    fig4_points: Tuple[config.Fig4Point, ...] = ()


def output_dir_of(c: ExperimentConfig) -> str:
    """``--output_dir``, or ``experiments/<experiment>``."""
    return c.output_dir or os.path.join("experiments", c.experiment)


def scaled_steps(steps: int, scale: float) -> int:
    """``steps × scale`` rounded, at least 1 (0 stays 0: an interval or warm-up not used)."""
    if scale == 1 or steps == 0:
        return steps
    return max(1, round(steps * scale))


def resolution_map(pairs) -> Dict[int, int]:
    """``--resolutions`` ("224:96", …) as {paper size: size}.

    Raises:
      ValueError: a pair that is not PAPER:SIZE, a paper size not among the paper's, a size
        below the network's minimum.
    """
    mapping = {}
    for pair in pairs:
        try:
            paper, size = (int(v) for v in pair.split(":"))
        except ValueError:
            raise ValueError(f"--resolutions: {pair!r} is not PAPER:SIZE (e.g. 720:128)") from None
        if paper not in PAPER_RESOLUTIONS:
            raise ValueError(f"--resolutions: {paper} is not one of the paper's sizes "
                             f"{', '.join(map(str, PAPER_RESOLUTIONS))}")
        if size < config.MULTICELL.min_resolution:
            raise ValueError(f"--resolutions: {size} px is below the network's smallest input, "
                             f"{config.MULTICELL.min_resolution} px")
        mapping[paper] = size
    return mapping


def check_experiment_config(c: ExperimentConfig) -> None:
    """Raises ValueError naming the first setting the runner cannot use."""
    if c.experiment not in config.PAPER_EXPERIMENTS:
        raise ValueError(f"--experiment={c.experiment!r}: known are "
                         f"{', '.join(config.PAPER_EXPERIMENTS)}")
    if not c.scale > 0:
        raise ValueError(f"--scale must be > 0, got {c.scale}")
    if c.variant and c.variant not in config.VARIANTS:
        raise ValueError(f"--variant={c.variant!r}: known are {', '.join(config.VARIANTS)}")
    for name in ("batch_size", "eval_every_steps", "keep_checkpoints", "bootstrap"):
        if getattr(c, name) < 0:
            raise ValueError(f"--{name} must be ≥ 0, got {getattr(c, name)}")
    if not c.dry_run and not c.data_dir:
        raise ValueError("--data_dir is required (a build_tfrecords.py output), unless --dry_run")
    resolution_map(c.resolutions)


def run_config(name: str, c: ExperimentConfig) -> TrainConfig:
    """A preset's TrainConfig as the experiment trains it: its folders under the output
    folder, its step counts scaled, and the runner's settings applied.

    Args:
      name: a key of ``config.PRESETS``.
      c: the runner's settings.

    Returns:
      The TrainConfig.
    """
    base = config.preset_config(name, os.path.join(output_dir_of(c), RUNS_FOLDER))
    changes = {f: scaled_steps(getattr(base, f), c.scale) for f in SCALED_FIELDS}
    changes.update(resolution=resolution_map(c.resolutions).get(base.resolution, base.resolution),
                   deterministic=c.deterministic, data_dir=c.data_dir)
    if c.init and base.init == m2cnn.IMAGENET:
        changes["init"] = c.init
    optional = {"variant": c.variant, "batch_size": c.batch_size,
                "eval_every_steps": c.eval_every_steps, "keep_checkpoints": c.keep_checkpoints}
    changes.update({k: v for k, v in optional.items() if v})
    return dataclasses.replace(base, **changes)


def plan_experiment(c: ExperimentConfig) -> List[PlannedRun]:
    """The runs of ``c.experiment``, parents first (``config.experiment_presets``).

    Raises:
      ValueError: bad settings (``check_experiment_config``), or a scale so small that a
        continued run would train no step beyond its parent.
    """
    check_experiment_config(c)
    names = config.experiment_presets(c.experiment)
    unknown = [name for name in c.only if name not in names]
    if unknown:
        raise ValueError(f"--only: {', '.join(unknown)} not in {c.experiment}, whose runs are "
                         f"{', '.join(names)}")
    if c.only:
        names = config.preset_lineage(c.only)
    configs = {name: run_config(name, c) for name in names}
    points = config.PAPER_EXPERIMENTS["fig4"]
    plan = []
    for name in names:
        preset = config.preset(name)
        if (preset.relation == config.RELATION_CONTINUE
                and configs[name].train_steps <= configs[preset.parent].train_steps):
            raise ValueError(
                f"--scale={c.scale:g} leaves {name} {configs[name].train_steps} steps, no more "
                f"than the {configs[preset.parent].train_steps} of {preset.parent}, which it "
                "continues; use a larger --scale")
        plan.append(PlannedRun(
            name, preset.summary, preset.parent, preset.relation, configs[name],
            config.preset_step_offset(name, lambda n: configs[n].train_steps),
            tuple(dataclasses.replace(p, step=scaled_steps(p.step, c.scale))
                  for p in points if p.preset == name)))
    return plan


def run_finished(model_dir: str, train_steps: int) -> bool:
    """Whether a run needs no more training: its metrics.jsonl has a final record (written when
    a training session ends) at ``train_steps`` or beyond. The one rule of the runner."""
    return any(r.get("step", 0) >= train_steps
               for r in summaries.read_metrics(model_dir, "final"))


def run_status(run: PlannedRun) -> str:
    """"finished", "step N of M" (a checkpoint to resume from) or "to do"."""
    c = run.config
    if run_finished(c.model_dir, c.train_steps):
        return "finished"
    latest = checkpoints.latest_checkpoint(c.model_dir) if os.path.isdir(c.model_dir) else None
    if latest:
        return f"step {checkpoints.checkpoint_step(latest)} of {c.train_steps}"
    return "to do"


# --------------------------------------------------------------------------------------------
# Estimated GPU hours
# --------------------------------------------------------------------------------------------


def sustained_tflops() -> float:
    """The assumed device's sustained rate (``config.ESTIMATE_GPU_*``), TFLOP/s."""
    return config.ESTIMATE_GPU_PEAK_TFLOPS * config.ESTIMATE_GPU_UTILISATION


@functools.lru_cache(maxsize=None)
def forward_flops(resolution: int, variant: str, multicell: str) -> int:
    """FLOPs of one image's forward pass (conv and dense layers, ``accounting.block_macs``);
    builds the network once per configuration."""
    network = m2cnn.build_m2cnn(resolution, variant, multicell=multicell)
    flops = 2 * sum(accounting.block_macs(network).values())
    del network
    return flops


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A run's estimated GPU time: ``hours_at(step)`` from ImageNet (or random) weights."""

    flops_per_image: int
    hours_per_step: float
    base_hours: float  # the hours of the runs it starts from, before its own step 0

    def hours_at(self, step: int) -> float:
        """Hours from the start of the first run of its lineage to ``step`` of this run."""
        return self.base_hours + self.hours_per_step * step


def estimate_hours(plan: List[PlannedRun]) -> Dict[str, Estimate]:
    """Each run's ``Estimate``: 3 forward passes per image (``config.TRAINING_FLOPS_PER_FORWARD``)
    × batch per step, at ``sustained_tflops``; training steps only (evaluation not counted).
    A continued run counts its steps inside the run it continues, from that run's base."""
    estimates: Dict[str, Estimate] = {}
    for run in plan:
        c = run.config
        flops = forward_flops(c.resolution, c.variant, c.multicell)
        per_step = (config.TRAINING_FLOPS_PER_FORWARD * flops * c.batch_size
                    / (sustained_tflops() * 1e12) / 3600.0)
        base = 0.0
        if run.relation == config.RELATION_INIT:
            parent = estimates[run.parent]
            base = parent.hours_at(_config_of(plan, run.parent).train_steps)
        elif run.relation == config.RELATION_CONTINUE:
            base = estimates[run.parent].base_hours
        estimates[run.name] = Estimate(flops, per_step, base)
    return estimates


def _config_of(plan: List[PlannedRun], name: str) -> TrainConfig:
    return next(r.config for r in plan if r.name == name)


def own_steps(plan: List[PlannedRun], run: PlannedRun) -> int:
    """Steps a run trains itself: a continued run's beyond those of the run it continues."""
    if run.relation == config.RELATION_CONTINUE:
        return run.config.train_steps - _config_of(plan, run.parent).train_steps
    return run.config.train_steps


# --------------------------------------------------------------------------------------------
# The printed plan
# --------------------------------------------------------------------------------------------


def _start_of(run: PlannedRun) -> str:
    if run.relation == config.RELATION_INIT:
        return f"init {run.parent} (best)"
    if run.relation == config.RELATION_CONTINUE:
        return f"continue {run.parent}"
    return f"init {run.config.init}"


def _loss_of(c: TrainConfig) -> str:
    ce, mse = c.loss_weights
    return "multi-task" if ce and mse else "CE only" if ce else "MSE only"


def plan_rows(plan: List[PlannedRun], estimates: Dict[str, Estimate]) -> List[Dict]:
    """One dict per run with everything the printed plan and results.json say about it."""
    rows = []
    for run in plan:
        c, e = run.config, estimates[run.name]
        rows.append({
            "run": run.name, "start": _start_of(run), "parent": run.parent,
            "relation": run.relation, "resolution": c.resolution, "variant": c.variant,
            "multicell": c.multicell, "loss": _loss_of(c), "prediction": c.prediction,
            "init": c.init, "train_steps": c.train_steps, "own_steps": own_steps(plan, run),
            "step_offset": run.step_offset, "batch_size": c.batch_size,
            "eval_every_steps": c.eval_every_steps, "model_dir": c.model_dir,
            "gflops_per_image": e.flops_per_image / 1e9,
            "estimated_gpu_hours": e.hours_per_step * own_steps(plan, run),
            "estimated_gpu_hours_from_start": e.hours_at(c.train_steps),
            "fig4_points": [{"label": p.label, "step": p.step, "paper_hours": p.hours,
                             "estimated_gpu_hours": e.hours_at(p.step)}
                            for p in run.fig4_points],
            "status": run_status(run)})
    return rows


def format_plan(c: ExperimentConfig, plan: List[PlannedRun],
                estimates: Dict[str, Estimate]) -> str:
    """The plan as printed: a header (experiment, data, scale, the estimate's assumptions) and
    one line per run."""
    lines = [
        f"experiment {c.experiment}: {len(plan)} runs in "
        f"{os.path.join(output_dir_of(c), RUNS_FOLDER)} (data: {c.data_dir or '—'}; scale "
        f"{c.scale:g} of the paper's steps; "
        f"{'deterministic' if c.deterministic else 'not deterministic'})",
        f"GPU hours are an estimate: {config.TRAINING_FLOPS_PER_FORWARD:g} × forward FLOPs per "
        f"image × batch × steps at an assumed {sustained_tflops():.1f} TFLOP/s sustained "
        f"({config.ESTIMATE_GPU_NAME}: {config.ESTIMATE_GPU_PEAK_TFLOPS:g} TFLOP/s float32 peak "
        f"× {config.ESTIMATE_GPU_UTILISATION:.0%}), training steps only; 'from start' adds the "
        "runs it starts from. The paper's hours (Fig. 4; its GPU) are beside them.",
        "",
        f"{'run':<17}{'starts from':<26}{'res':>5} {'cells':<6}{'loss':<11}{'steps':>7}"
        f"{'batch':>6}{'GFLOPs':>8}{'est. GPU h':>11}{'from start':>11}  status; Fig. 4 points",
    ]
    for row in plan_rows(plan, estimates):
        lines.append(
            f"{row['run']:<17}{row['start']:<26}{row['resolution']:>5} {row['multicell']:<6}"
            f"{row['loss']:<11}{row['train_steps']:>7}{row['batch_size']:>6}"
            f"{row['gflops_per_image']:>8.1f}{row['estimated_gpu_hours']:>11.2f}"
            f"{row['estimated_gpu_hours_from_start']:>11.2f}  {row['status']}"
            + (f"; {_paper_hours_text(row)}" if row["fig4_points"] else ""))
    return "\n".join(lines)


def _paper_hours_text(row: Dict) -> str:
    return "; ".join(f"{p['label']} (step {p['step']}): est. {p['estimated_gpu_hours']:.1f} h, "
                     f"paper {p['paper_hours']:.1f} h" for p in row["fig4_points"])
