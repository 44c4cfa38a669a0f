"""The training loop: staged fine-tuning with two learning rates, multi-task loss, kappa evaluation.

``train_and_evaluate(config)`` is the whole of ``python train.py``. In order:

1. ``check_inputs``: the data has the resolution and non-empty splits, ``--init`` exists — all
   before any model is built, failing with a message that says what exists.
2. The strategy and dtype policy; the model inside the strategy's scope.
3. Resume first: with a checkpoint in ``--model_dir``, restore model, optimisers and step (the
   learning-rate groups come from the run's ``init_report.json``). Otherwise initialise from
   ``--init`` (``initialize_weights``): an earlier stage's checkpoint is restored into a model of
   that stage and transferred block by block (``model.transfer_weights``); the transfer report
   splits the trainable variables into the fine-tune group (LR1) and the new group (LR2).
4. ``step.make_train_function`` (recompute, frozen batch norm, gradient accumulation, float16
   across replicas) and ``eval_step`` under ``tf.function`` and ``strategy.run``; the loss terms
   of ``losses.multitask_loss`` and the training counts add up on the device and are read only at
   log, checkpoint and evaluation steps (so a non-finite loss is noticed at the next of those,
   and named by the step it happened at); evaluation every ``eval_every_steps`` computes kappa
   (score and argmax), accuracy, MSE and confusion matrices once from accumulated counts.
5. Rolling checkpoints, the best one in ``best/`` — by the kappa of the head the run's loss
   trains (``config.prediction_head``: the score's, or the probabilities' for a cross-entropy-only
   run; ``selection_metric``) —, metrics.jsonl, TensorBoard, and a profiler trace of
   ``--profile_steps``.

``--deterministic`` runs TensorFlow one op at a time with its op determinism on, and keeps the
training data in a fixed order, each image with the same augmentation seed every time
(``make_datasets``), so the same command on the same machine gives bit-identical weights and
metrics.

No training state lives at module level: everything is built per call and released at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
import time
from typing import Callable, Dict, Optional

import keras
import numpy as np
import tensorflow as tf

import m2cnn_tf
from m2cnn_tf import config
from m2cnn_tf.util import locking, progress
from m2cnn_tf.data import input_pipeline
from m2cnn_tf.grading import agreement, metrics
from m2cnn_tf.train import checkpoints, distribution, losses, optimizers, summaries
from m2cnn_tf.train.step import TrainWindow, make_train_function, train_step  # noqa: F401
from m2cnn_tf.train.step import sum_over_replicas as _sum_over_replicas
from m2cnn_tf.data import builder
from m2cnn_tf import model as m2cnn

# A resumed or repeated run must agree with the first on these, or it would silently continue
# a different experiment; other settings (train_steps, eval_every_steps, …) may change. The
# value of each for a config.json written before it was recorded (every run then had it):
IDENTITY_FIELDS = {"variant": None, "resolution": None, "init": None, "data_checksum": None,
                   "mixed_precision": None, "optimizer": None,
                   "multicell": config.MULTICELL_AUTO, "heads": config.HEADS_RESTORE,
                   "lr_schedule": config.LR_CONSTANT}


class TrainingError(ValueError):
    """The run cannot start or go on; the message says why and what exists."""


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; nothing was saved after the last good checkpoint."""


# --------------------------------------------------------------------------------------------
# Checks before any work
# --------------------------------------------------------------------------------------------


def model_dir_of(train_config: config.TrainConfig) -> str:
    """``--model_dir``, or the default derived from variant and resolution."""
    return train_config.model_dir or train_config.model_dir_template.format(
        variant=train_config.variant, resolution=train_config.resolution)


def _split_summary(manifest: Dict) -> str:
    splits = manifest.get("splits", {})
    return ", ".join(f"{name} ({entry.get('count', 0)} images)"
                     for name, entry in sorted(splits.items())) or "none"


def check_data(data_dir: str, resolution: int, splits) -> Dict:
    """Checks that a built dataset holds non-empty ``splits`` at ``resolution``.

    Args:
        data_dir: a build_tfrecords.py output folder.
        resolution: the training resolution.
        splits: split names that must exist and have images.

    Returns:
        ``{"manifest": …, "sizes": {split: images}, "shards": {split: files}}``.

    Raises:
        TrainingError: naming the splits and resolutions the folder does have.
    """
    if not data_dir:
        raise TrainingError("--data_dir is required: a folder written by build_tfrecords.py")
    try:
        manifest = builder.read_manifest(data_dir)
    except FileNotFoundError as e:
        raise TrainingError(f"--data_dir: {e}") from None
    built = manifest.get("resolutions", [])
    if resolution not in built:
        raise TrainingError(f"--data_dir={data_dir} has no {resolution} px images; it has "
                            f"{', '.join(f'{r} px' for r in built) or 'none'} (rebuild with "
                            f"build_tfrecords.py --resolutions including {resolution}, or train "
                            "at a resolution it has)")
    sizes, shards = {}, {}
    for split in splits:
        entry = manifest.get("splits", {}).get(split)
        if not entry or entry.get("count", 0) == 0:
            raise TrainingError(
                f"--data_dir={data_dir} has no images in the '{split}' split; it has: "
                f"{_split_summary(manifest)} (build with --val_fraction > 0 for a validation "
                "split, or evaluate on another split)")
        sizes[split] = int(entry["count"])
        shards[split] = len(entry["resolutions"][str(resolution)]["shards"])
    return {"manifest": manifest, "sizes": sizes, "shards": shards}


def check_config(train_config: config.TrainConfig) -> None:
    """Checks the values of the flags that need no files (raises TrainingError)."""
    c = train_config
    problems = []
    if c.variant not in config.VARIANTS:
        problems.append(f"--variant={c.variant!r} is not one of {sorted(config.VARIANTS)}")
    try:
        m2cnn.multicell_path(c.resolution, c.multicell)
    except ValueError as e:
        problems.append(f"--resolution/--multicell: {e}")
    for name, allowed in (("heads", config.HEADS_MODES), ("lr_schedule", config.LR_SCHEDULES)):
        if getattr(c, name) not in allowed:
            problems.append(f"--{name}={getattr(c, name)!r} is not one of {', '.join(allowed)}")
    if c.strategy not in distribution.STRATEGIES:
        problems.append(f"--strategy={c.strategy!r} is not one of {distribution.STRATEGIES}")
    if c.mixed_precision not in distribution.PRECISION_POLICIES:
        problems.append(f"--mixed_precision={c.mixed_precision!r} is not one of "
                        f"{tuple(distribution.PRECISION_POLICIES)}")
    for name in ("batch_size", "eval_every_steps", "checkpoint_every_steps", "log_every_steps",
                 "keep_checkpoints", "accumulate_steps"):
        if getattr(c, name) < 1:
            problems.append(f"--{name} must be ≥ 1, got {getattr(c, name)}")
    if c.train_steps < 0:
        problems.append(f"--train_steps must be ≥ 0, got {c.train_steps}")
    if (len(c.loss_weights) != 2 or any(w < 0 for w in c.loss_weights)
            or not any(c.loss_weights)):
        problems.append(f"--loss_weights must be two non-negative numbers (CE, MSE), not both 0, "
                        f"got {c.loss_weights}")
    for name in ("lr_finetune", "lr_new", "weight_decay", "warmup_steps"):
        if getattr(c, name) < 0:
            problems.append(f"--{name} must be ≥ 0, got {getattr(c, name)}")
    problems += _schedule_problems(c)
    problems += _memory_problems(c)
    if problems:
        raise TrainingError("; ".join(problems))


def _schedule_problems(c: config.TrainConfig) -> list:
    fractions = c.lr_step_fractions
    if c.lr_schedule == config.LR_STEP and (
            any(not 0 < f < 1 for f in fractions) or list(fractions) != sorted(fractions)):
        return [f"--lr_step_fractions must be ascending numbers between 0 and 1, got "
                f"{','.join(map(str, fractions))}"]
    if c.lr_schedule == config.LR_STEP and c.lr_step_factor <= 0:
        return [f"--lr_step_factor must be > 0, got {c.lr_step_factor}"]
    return []


def selection_metric(train_config: config.TrainConfig) -> str:
    """The validation metric that picks a run's best checkpoint: "kappa_score", or
    "kappa_argmax" (the probabilities') for a run whose loss trains no score (CE only)."""
    how = (metrics.ARGMAX if train_config.prediction == config.PREDICT_BY_PROBABILITIES
           else metrics.SCORE)
    return f"kappa_{how}"


def _memory_problems(c: config.TrainConfig) -> list:
    """What is wrong with --recompute, --batch_norm, --accumulate_steps and --profile_steps."""
    problems = []
    for name, allowed in (("recompute", m2cnn.RECOMPUTE), ("batch_norm", m2cnn.BATCH_NORMS)):
        if getattr(c, name) not in allowed:
            problems.append(f"--{name}={getattr(c, name)!r} is not one of {allowed}")
    if c.accumulate_steps >= 1 and c.batch_size % c.accumulate_steps:
        problems.append(f"--batch_size={c.batch_size} must be a multiple of --accumulate_steps="
                        f"{c.accumulate_steps} (the images of one step are split evenly)")
    steps = tuple(c.profile_steps)
    if steps and (len(steps) != 2 or not 1 <= steps[0] <= steps[1]):
        problems.append(f"--profile_steps must be two steps A,B with 1 ≤ A ≤ B (e.g. 5,8), got "
                        f"{','.join(map(str, steps))}")
    return problems


def check_inputs(train_config: config.TrainConfig) -> Dict:
    """Everything that can fail without building a model: flags, data, ``--init``.

    Returns:
        ``{"data": check_data(...), "init": checkpoints.InitSource}``.

    Raises:
        TrainingError: one message naming what is wrong and what exists.
    """
    check_config(train_config)
    data = check_data(train_config.data_dir, train_config.resolution,
                      sorted({train_config.train_split, train_config.eval_split}))
    try:
        init = checkpoints.resolve_init(train_config.init)
    except ValueError as e:
        raise TrainingError(str(e)) from None
    if init.kind == "stage":
        variant = init.run_config.get("variant")
        if variant != train_config.variant:
            raise TrainingError(f"--init={train_config.init} is a {variant!r} run; this run is "
                                f"--variant={train_config.variant} (stages must share a variant)")
    return {"data": data, "init": init}


# --------------------------------------------------------------------------------------------
# Initial weights and learning-rate groups
# --------------------------------------------------------------------------------------------


def report_for_blocks(model: keras.Model, source: str, restored_blocks) -> m2cnn.TransferReport:
    """A transfer report that counts whole blocks of ``model`` as restored (from ``source``).

    Args:
        model: a ``build_m2cnn`` model.
        source: what the restored blocks came from ("imagenet", a file, "none").
        restored_blocks: names of the blocks that are restored; every other block is new.

    Returns:
        The ``TransferReport`` (for ``learning_rate_groups`` and init_report.json).
    """
    blocks = m2cnn.block_variables(model)
    return m2cnn.TransferReport(
        source=source, target=model.name,
        restored={b: tuple(v.path for v in vs) for b, vs in blocks.items() if b in restored_blocks},
        new={b: tuple(v.path for v in vs) for b, vs in blocks.items() if b not in restored_blocks})


def initialize_weights(model: keras.Model, init: checkpoints.InitSource,
                       heads: str = config.HEADS_RESTORE) -> m2cnn.TransferReport:
    """Gives ``model`` its starting weights from ``--init``; returns what was restored.

    ImageNet and weight files were already loaded into BaseNet by ``build_m2cnn(weights=…)``;
    an earlier stage is rebuilt as it was trained (resolution, variant, Multi-Cell switch), its
    checkpoint restored (every variable must match) and its blocks copied by
    ``model.transfer_weights`` — but the heads with ``heads="new"``, which keep their initial
    values and are reported new.

    Args:
        model: the freshly built model of this stage.
        init: the resolved ``--init``.
        heads: ``config.HEADS_RESTORE`` or ``config.HEADS_NEW`` (``--heads``).

    Returns:
        The transfer report: restored blocks (fine-tune group) and new blocks.
    """
    if init.kind == "none":
        return report_for_blocks(model, "none", ())
    if init.kind in ("imagenet", "weights_file"):
        return report_for_blocks(model, init.path or init.kind, (m2cnn.BASENET,))
    source = checkpoints.build_run_model(init.run_config)
    checkpoints.restore_model(source, init.path)
    report = m2cnn.transfer_weights(
        source, model, new_blocks=(m2cnn.HEADS,) if heads == config.HEADS_NEW else ())
    del source
    return report


def _weights_argument(init: checkpoints.InitSource):
    return {"imagenet": m2cnn.IMAGENET, "weights_file": init.path}.get(init.kind)


def learning_rate_groups(model: keras.Model, report: m2cnn.TransferReport) -> Dict[str, list]:
    """Trainable variables by learning-rate group: restored → "finetune", others → "new".

    Groups are whole blocks, so they are found by block and checked against the report's own
    partition (its variable paths are those of the model the report was made for).

    Args:
        model: the model being trained.
        report: its transfer report (or one read back from init_report.json on resume).

    Returns:
        ``{"finetune": [...], "new": [...]}``, together every trainable variable exactly once.

    Raises:
        AssertionError: if a trainable variable is in no group or in both.
    """
    trainable = {id(v) for v in model.trainable_variables}
    restored_blocks = set(report.restored)
    groups = {optimizers.FINETUNE: [], optimizers.NEW: []}
    for block, variables in m2cnn.block_variables(model).items():
        group = optimizers.FINETUNE if block in restored_blocks else optimizers.NEW
        groups[group] += [v for v in variables if id(v) in trainable]
    members = [id(v) for vs in groups.values() for v in vs]
    assert len(members) == len(set(members)) == len(trainable) and set(members) == trainable, (
        f"learning-rate groups cover {len(set(members))} of {len(trainable)} trainable variables "
        f"({len(members) - len(set(members))} twice)")
    return groups


def report_from_dict(value: Dict) -> m2cnn.TransferReport:
    """A TransferReport back from ``to_dict()`` (init_report.json)."""
    return m2cnn.TransferReport(
        source=value["source"], target=value["target"],
        restored={b: tuple(p) for b, p in value["restored"].items()},
        new={b: tuple(p) for b, p in value["new"].items()},
        source_only=tuple(value.get("source_only", ())))


# --------------------------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------------------------


def eval_step(model: keras.Model, images, grades) -> Dict[str, tf.Tensor]:
    """Sufficient statistics of one replica's evaluation batch (``metrics.batch_statistics``)."""
    outputs = model(images, training=False)
    return metrics.batch_statistics(grades, outputs["logits"], outputs["score"])


def make_eval_function(strategy, model, element_spec) -> Callable:
    """``eval_step`` on every replica under one ``tf.function``.

    Args:
        strategy: the tf.distribute strategy.
        model: the network.
        element_spec: the distributed evaluation set's ``element_spec`` (its batch dimension
            free): the function is traced once for it, the last, smaller batch included.

    Returns:
        A function of one distributed batch ``(images, grades)`` returning the statistics of
        ``metrics.batch_statistics`` summed over replicas.
    """

    @tf.function(autograph=False, input_signature=[element_spec])
    def distributed_eval_step(batch):
        return _sum_over_replicas(strategy, strategy.run(lambda i, g: eval_step(model, i, g),
                                                         args=batch))

    return distributed_eval_step


def evaluate(eval_function: Callable, dataset) -> Dict:
    """Runs ``eval_function`` over a whole (distributed, finite) dataset.

    Args:
        eval_function: from ``make_eval_function``.
        dataset: the distributed evaluation set (one pass).

    Returns:
        ``metrics.summarize`` of the statistics accumulated over every batch.
    """
    totals = metrics.zero_statistics()
    for batch in dataset:
        totals = metrics.accumulate(
            totals, {k: v.numpy() for k, v in eval_function(batch).items()})
    return metrics.summarize(totals)


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def _images_and_grades(batch):
    # Only tensors the model needs cross to the devices (TPUs take no strings).
    return batch["image"], batch["grade"]


def make_datasets(strategy, train_config: config.TrainConfig, data: Dict, global_batch_size: int,
                  start_step: int):
    """The distributed training stream (infinite) and evaluation set (one pass).

    The training seed is offset by the step a run starts from, so a resumed run draws new
    batches instead of replaying the ones it already trained on.

    Args:
        strategy: the tf.distribute strategy (it splits each global batch over replicas).
        train_config: data folder, splits, resolution, augmentation, seed.
        data: ``check_data``'s result (shards per split, for the sharding policy).
        global_batch_size: images per step over all replicas.
        start_step: the step the run starts from.

    Returns:
        ``(train, evaluation)`` distributed datasets of ``(images uint8, grades int32)``.
    """
    c = train_config
    workers = distribution.num_workers(strategy)
    # deterministic: a fixed record order, so that the i-th record always meets the i-th
    # augmentation seed (otherwise parallel parsing may reorder them between runs).
    train = input_pipeline.make_dataset(
        c.data_dir, c.train_split, c.resolution, global_batch_size, training=True,
        seed=c.seed + start_step, deterministic=c.deterministic,
        class_balanced=c.class_balanced, augment=c.augment)
    evaluation = input_pipeline.make_dataset(
        c.data_dir, c.eval_split, c.resolution, global_batch_size, training=False)
    result = []
    for dataset, split in ((train, c.train_split), (evaluation, c.eval_split)):
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = distribution.auto_shard_policy(
            data["shards"][split], workers)
        dataset = dataset.map(_images_and_grades).with_options(options)
        result.append(strategy.experimental_distribute_dataset(dataset))
    return tuple(result)


# --------------------------------------------------------------------------------------------
# Run configuration on disk
# --------------------------------------------------------------------------------------------


def run_config(train_config: config.TrainConfig, model_dir: str, data: Dict,
               init: checkpoints.InitSource, strategy) -> Dict:
    """What config.json records about a run.

    Args:
        train_config: the run's settings.
        model_dir: its folder.
        data: ``check_data``'s result.
        init: the resolved ``--init``.
        strategy: the strategy (for the number of replicas).

    Returns:
        A JSON-serialisable dict: variant, resolution, Multi-Cell switch, heads, init, data
        checksum and split sizes, precision, optimiser and schedule, the head the run is
        selected and evaluated by ("prediction", "selected_by"), determinism, strategy,
        replicas, every flag and the library versions.
    """
    manifest = data["manifest"]
    return {
        "variant": train_config.variant,
        "resolution": train_config.resolution,
        "multicell": train_config.multicell,
        "heads": train_config.heads,
        "prediction": train_config.prediction,
        "selected_by": selection_metric(train_config),
        "lr_schedule": optimizers.schedule_description(train_config),
        "deterministic": train_config.deterministic,
        "model_dir": model_dir,
        "init": train_config.init,
        "init_source": init.describe(),
        "data_dir": train_config.data_dir,
        "data_checksum": manifest.get("inputs_checksum"),
        "data_splits": data["sizes"],
        "mixed_precision": train_config.mixed_precision,
        "optimizer": train_config.optimizer,
        "strategy": train_config.strategy,
        "replicas": strategy.num_replicas_in_sync,
        "flags": json.loads(json.dumps(dataclasses.asdict(train_config))),  # as read back
        "versions": {"m2cnn_tf": m2cnn_tf.__version__, "tensorflow": tf.__version__,
                     "keras": keras.__version__},
    }


def _check_same_run(previous: Dict, current: Dict, model_dir: str) -> list:
    """Raises if identity fields differ; returns the flags that changed (for a note)."""
    different = [f"{k}: {previous.get(k, old)!r} then, {current.get(k)!r} now"
                 for k, old in IDENTITY_FIELDS.items() if previous.get(k, old) != current.get(k)]
    if different:
        raise TrainingError(f"{model_dir} holds checkpoints of another run ({'; '.join(different)})"
                            "; give another --model_dir, or the original flags to resume it")
    before, now = previous.get("flags", {}), current["flags"]
    return [f"{k}={before.get(k)!r}→{now[k]!r}" for k in now
            if k in before and before[k] != now[k] and k not in ("model_dir",)]


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def _log_function(chief: bool, quiet: bool) -> Callable[[str], None]:
    def log(message: str) -> None:
        if chief and not quiet:
            progress.write(message)
    return log


def _loss_scale(optimizer) -> Optional[float]:
    scale = getattr(optimizer, "dynamic_scale", None)
    return None if scale is None else float(keras.ops.convert_to_numpy(scale))


def _eval_scalars(result: Dict) -> Dict[str, float]:
    names = ("kappa_score", "kappa_argmax", "accuracy_score", "accuracy_argmax", "mse",
             "cross_entropy")
    return {name: result[name] for name in names}


def _run_eval(step, eval_function, eval_data, reporter, keeper, best_record, log):
    started = time.time()
    result = evaluate(eval_function, eval_data)
    result["seconds"] = round(time.time() - started, 3)
    reporter.jsonl({"kind": "eval", "step": step, "metrics": result})
    reporter.scalars(summaries.EVAL_LOGS, step, _eval_scalars(result))
    for how in metrics.PREDICTIONS:
        reporter.confusion(summaries.EVAL_LOGS, step, f"confusion_{how}", result[f"confusion_{how}"])
    reporter.flush()
    metric = keeper.selected_by
    improved = best_record is None or result[metric] > best_record["metrics"][metric]
    if improved:
        keeper.save_best_checkpoint(step, result)
        best_record = {"step": step, "metrics": result}
    log(f"step {step}: validation kappa {result['kappa_score']:.4f} (score), "
        f"{result['kappa_argmax']:.4f} (argmax), accuracy {result['accuracy_score']:.3f}, "
        f"MSE {result['mse']:.3f} on {result['count']} images"
        + (" — new best" if improved else f" (best {metric} {best_record['metrics'][metric]:.4f} "
                                           f"at step {best_record['step']})"))
    return result, best_record


def _check_replica_batch(c: config.TrainConfig, replicas: int) -> None:
    """TrainingError unless the global batch splits over ``replicas`` × --accumulate_steps, and
    unless accumulation on several replicas has frozen (or unsynchronised) batch norm."""
    if c.batch_size % (replicas * c.accumulate_steps):
        raise TrainingError(f"--batch_size={c.batch_size} (the global batch) must be a multiple "
                            f"of the {replicas} replicas" + (
                                f" × --accumulate_steps={c.accumulate_steps}"
                                if c.accumulate_steps > 1 else ""))
    if replicas > 1 and c.accumulate_steps > 1 and c.batch_norm == "train" and c.sync_batch_norm:
        # Synchronised batch norm all-reduces inside the micro-batch loop, which MirroredStrategy
        # cannot do; per-replica statistics would let the replicas' moving averages drift apart.
        raise TrainingError(f"--accumulate_steps={c.accumulate_steps} on {replicas} replicas "
                            "needs --batch_norm=frozen (batch norm in training mode would have to "
                            "synchronise its statistics inside the micro-batch loop); or use "
                            "--accumulate_steps=1 with a batch that fits")


def train_and_evaluate(train_config: config.TrainConfig, quiet: bool = False) -> Dict:
    """Trains (or resumes) one stage and evaluates it; the whole of ``python train.py``.

    Args:
        train_config: the run's settings (train.py's flags).
        quiet: no progress bar or messages (tests).

    Returns:
        ``{"model_dir", "start_step", "step", "resumed", "last_eval", "best"}``: where the run
        lives, the step it started from and reached, whether it resumed, the last validation
        metrics (None if none ran) and best/best.json.

    Raises:
        TrainingError: bad flags, data or ``--init`` (before any work), a model directory
            holding another run, a checkpoint that could not be written (a full disk; the
            message names it and the last complete checkpoint), or ``--deterministic`` in a
            process whose TensorFlow runtime had started already.
        NonFiniteLossError: the loss became NaN/inf; the message names the step.
        locking.LockedError: another process is training in the same model directory.
    """
    c = train_config
    checked = check_inputs(c)
    data, init = checked["data"], checked["init"]
    model_dir = model_dir_of(c)
    if c.cpu_devices:
        distribution.configure_cpu_devices(c.cpu_devices)
    if c.deterministic:
        try:
            distribution.run_ops_one_at_a_time()
        except RuntimeError as e:
            raise TrainingError(str(e)) from None
    strategy = distribution.make_strategy(c.strategy, c.tpu)
    chief = distribution.is_chief(strategy)
    task_type, task_id = distribution.task_of(strategy)
    _check_replica_batch(c, strategy.num_replicas_in_sync)
    log = _log_function(chief, quiet)
    os.makedirs(model_dir, exist_ok=True)
    lock_name = checkpoints.LOCK if chief else f"{checkpoints.LOCK}.{task_type}{task_id}"
    with locking.DirectoryLock(os.path.join(model_dir, lock_name), "training") as lock:
        if lock.stale_cleared:
            log(f"note: cleared a stale lock left by pid {lock.stale_cleared.get('pid')}")
        with distribution.precision_policy(c.mixed_precision), \
                distribution.op_determinism(c.deterministic):
            try:
                return _train_locked(c, data, init, model_dir, strategy, chief, task_id, log,
                                     quiet)
            except checkpoints.CheckpointWriteError as e:
                raise TrainingError(str(e)) from None
            except summaries.ReportWriteError as e:
                latest = checkpoints.latest_checkpoint(model_dir)
                raise TrainingError(
                    f"{e}. Training stopped; the last complete checkpoint "
                    f"{latest or '(none yet)'} is intact: free some space and run the same "
                    "command again to resume from it") from None


@dataclasses.dataclass
class _RunState:
    """What one run trains and where it writes; built by ``_build_state``."""

    model: keras.Model
    optimizer: keras.optimizers.Optimizer  # MultiOptimizer, or a LossScaleOptimizer around one
    keeper: checkpoints.CheckpointKeeper
    reporter: summaries.Reporter
    start_step: int
    resumed: bool

    @property
    def multi(self) -> optimizers.MultiOptimizer:
        return optimizers.multi_optimizer(self.optimizer)


def _train_locked(c, data, init, model_dir, strategy, chief, task_id, log, quiet) -> Dict:
    state = _build_state(c, data, init, model_dir, strategy, chief, task_id, log)
    try:
        best_record = state.keeper.best_record()
        result = {"model_dir": model_dir, "start_step": state.start_step,
                  "step": state.start_step, "resumed": state.resumed, "last_eval": None,
                  "best": best_record}
        if state.start_step >= c.train_steps:
            log(f"{model_dir} is already trained to step {state.start_step} (--train_steps="
                f"{c.train_steps}); nothing to do")
        else:
            result.update(_train_loop(c, data, state, strategy, model_dir, log, quiet,
                                      best_record))
            if distribution.num_workers(strategy) > 1 and not quiet:
                # Every worker reports, so that a cluster's replicas can be checked for identity.
                print(f"worker {task_id}: step {result['step']}, weights sha256 "
                      f"{result['weights_sha256']}", file=sys.stderr, flush=True)
    except BaseException:
        state.reporter.close(ignore_errors=True)  # the error on its way says more
        raise
    state.reporter.close()
    return result


def _build_state(c, data, init, model_dir, strategy, chief, task_id, log) -> _RunState:
    """Resume first: restores model, optimisers and step from model_dir's latest checkpoint;
    otherwise initialises from --init, writes config.json and init_report.json, saves ckpt-0."""
    current = run_config(c, model_dir, data, init, strategy)
    config_path = os.path.join(model_dir, checkpoints.CONFIG_JSON)
    report_path = os.path.join(model_dir, checkpoints.INIT_REPORT_JSON)
    if chief:  # files of a checkpoint whose write was killed are never restored: drop them
        for folder in (model_dir, os.path.join(model_dir, checkpoints.BEST_DIR)):
            for path in checkpoints.remove_incomplete(folder):
                log(f"note: removed {path}, left by a checkpoint write that did not finish")
    resuming = distribution.all_workers(
        strategy, checkpoints.latest_checkpoint(model_dir) is not None)
    if resuming:
        previous = checkpoints.read_run_config(model_dir)
        changed = _check_same_run(previous, current, model_dir)
        if changed:
            log(f"note: settings changed since the last start: {', '.join(changed)}")
            if chief:  # config.json holds the flags in force, and those of earlier starts
                current["earlier_flags"] = previous.get("earlier_flags", []) + [previous["flags"]]
                checkpoints.write_json(config_path, current)
    keras.utils.set_random_seed(c.seed)

    with strategy.scope():
        model = m2cnn.build_m2cnn(c.resolution, c.variant,
                                  weights=None if resuming else _weights_argument(init),
                                  multicell=c.multicell)
        if c.sync_batch_norm and strategy.num_replicas_in_sync > 1:
            distribution.synchronize_batch_norm(model)
        if resuming:
            report = report_from_dict(checkpoints.read_json(report_path))
        else:
            report = initialize_weights(model, init, c.heads)
        groups = learning_rate_groups(model, report)
        if not resuming:  # the report's own partition (by variable path) must agree
            restored, _ = report.partition(model.trainable_variables)
            assert {id(v) for v in restored} == {id(v) for v in groups[optimizers.FINETUNE]}
        optimizer = optimizers.make_optimizer(model.trainable_variables, groups, c,
                                              loss_scaling=c.mixed_precision == "float16")
    step_variable = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    keeper = checkpoints.CheckpointKeeper(model_dir, model, optimizer, step_variable,
                                          c.keep_checkpoints, chief, task_id,
                                          selected_by=selection_metric(c))
    state = _RunState(model, optimizer, keeper, summaries.Reporter(model_dir, enabled=chief),
                      start_step=0, resumed=resuming)
    if resuming:
        return _resume(state, c, model_dir, log)
    if chief:
        checkpoints.write_json(config_path, current)
        checkpoints.write_json(report_path, report.to_dict())
    counts = {g: sum(int(np.prod(v.shape)) for v in vs) for g, vs in groups.items()}
    log(f"{model.name}: init {init.kind} {init.path}".rstrip() + f"; {counts['finetune']:,} "
        f"parameters fine-tuned at {c.lr_finetune:g}, {counts['new']:,} new at {c.lr_new:g} "
        f"(new blocks: {', '.join(report.new) or 'none'})")
    keeper.save_checkpoint(0)
    return state


def _resume(state: _RunState, c, model_dir, log) -> _RunState:
    """Restores ``state`` from model_dir's latest checkpoint, with the flags' fixed rates."""
    state.start_step = state.keeper.restore_latest()
    if not optimizers.uses_schedule(c):
        # Fixed rates are optimiser variables, restored with it; the flags may have changed.
        # (A schedule is rebuilt from the flags; its position, the step counter, restored.)
        state.multi.optimizers[optimizers.FINETUNE].learning_rate.assign(c.lr_finetune)
        state.multi.optimizers[optimizers.NEW].learning_rate.assign(c.lr_new)
    log(f"resuming from step {state.start_step} ({checkpoints.latest_checkpoint(model_dir)})")
    return state


def _train_loop(c, data, state: _RunState, strategy, model_dir, log, quiet, best_record) -> Dict:
    """Steps from ``state.start_step`` to ``c.train_steps``: log, checkpoint, evaluate.

    An ordinary step copies nothing to the host: the window of loss terms and counts is read
    (and the loss checked for NaN/inf) only at log, checkpoint and evaluation steps."""
    global_batch = c.batch_size
    train_data, eval_data = make_datasets(strategy, c, data, global_batch, state.start_step)
    window = TrainWindow(state.start_step)
    train_function = make_train_function(strategy, state.model, state.optimizer, c, global_batch,
                                          window)
    eval_function = make_eval_function(strategy, state.model, eval_data.element_spec)
    chief = state.reporter.enabled
    iterator = iter(train_data)
    stopwatch = _Stopwatch()
    profiler = _StepProfiler(c.profile_steps, os.path.join(model_dir, summaries.TRAIN_LOGS),
                             chief, state.start_step, log)
    bar = progress.progress(total=c.train_steps, initial=state.start_step, unit="step",
                            desc=f"{c.variant} {c.resolution}px", quiet=quiet or not chief)
    step, last_eval = state.start_step, None
    try:
        while step < c.train_steps:
            with profiler.step(step + 1):
                train_function(next(iterator))  # enqueued; nothing comes back
            step += 1
            bar.update(1)
            profiler.after(step, window)
            due = {name: step % every == 0 or step == c.train_steps for name, every in (
                ("log", c.log_every_steps), ("save", c.checkpoint_every_steps),
                ("eval", c.eval_every_steps))}
            if any(due.values()):
                _check_finite(window, step, model_dir, state.reporter)
            if due["log"]:
                values = _log_train_window(step, window, stopwatch.lap(), global_batch,
                                           state, state.reporter)
                bar.set_postfix(loss=f"{values['loss/total']:.4f}",
                                img_s=f"{values['images_per_second']:.1f}")
            with stopwatch.excluded():
                if due["save"]:
                    state.keeper.save_checkpoint(step)
                if due["eval"]:
                    last_eval, best_record = _run_eval(step, eval_function, eval_data,
                                                       state.reporter, state.keeper,
                                                       best_record, log)
    finally:
        profiler.close()
        bar.close()
        # A live training iterator (augmentation runs in tf.numpy_function) aborts the
        # interpreter at exit; release it while the process is still healthy.
        del iterator
    return _finish(state, step, best_record, last_eval, model_dir, log)


def _finish(state: _RunState, step: int, best_record, last_eval, model_dir, log) -> Dict:
    """The run's final metrics.jsonl record and log line, and what ``train_and_evaluate``
    returns."""
    state.reporter.jsonl({"kind": "final", "step": step, "start_step": state.start_step,
                          "best_step": best_record["step"] if best_record else None,
                          "best_kappa_score": (best_record["metrics"]["kappa_score"]
                                               if best_record else None),
                          "selected_by": state.keeper.selected_by,
                          "best_kappa": (best_record["metrics"][state.keeper.selected_by]
                                         if best_record else None),
                          "metrics": last_eval})
    log(f"done: step {step}; best validation {state.keeper.selected_by} "
        + (f"{best_record['metrics'][state.keeper.selected_by]:.4f} at step {best_record['step']} "
           f"({os.path.join(model_dir, checkpoints.BEST_DIR)})" if best_record else "n/a"))
    return {"step": step, "best": best_record, "last_eval": last_eval,
            "weights_sha256": weights_digest(state.model)}


class _Stopwatch:
    """Training time since the last lap, without the checkpoint and evaluation time in it."""

    def __init__(self):
        self.started, self.other = time.time(), 0.0

    @contextlib.contextmanager
    def excluded(self):
        started = time.time()
        try:
            yield
        finally:
            self.other += time.time() - started

    def lap(self) -> float:
        now = time.time()
        seconds = now - self.started - self.other
        self.started, self.other = now, 0.0
        return seconds


class _StepProfiler:
    """A TensorBoard profiler trace of steps A..B (``--profile_steps``), on the chief.

    ``tf.profiler.experimental`` writes ``<logdir>/plugins/profile/<time>/<host>.xplane.pb``
    itself; TensorBoard needs its profile plugin only to show it."""

    def __init__(self, steps, logdir: str, enabled: bool, start_step: int, log):
        self.first, self.last = tuple(steps) if steps else (0, -1)
        self.enabled = enabled and bool(steps) and self.last > start_step
        self.logdir, self.running = logdir, False
        if enabled and steps and not self.enabled:
            log(f"note: --profile_steps={self.first},{self.last}: the run starts after step "
                f"{self.last}, so nothing is profiled")
        self.first = max(self.first, start_step + 1)

    def step(self, step: int):
        """The context of one step: starts the profiler at A, marks the step while it runs."""
        if self.enabled and step == self.first:
            try:
                tf.profiler.experimental.start(self.logdir)
            except (tf.errors.OpError, RuntimeError) as e:
                raise TrainingError(f"--profile_steps: the TensorFlow profiler did not start "
                                    f"({e}); run without --profile_steps, or stop the other "
                                    "profiler in this process") from None
            self.running = True
        if not self.running:
            return contextlib.nullcontext()
        return tf.profiler.experimental.Trace("train", step_num=step, _r=1)

    def after(self, step: int, window: TrainWindow) -> None:
        if self.running and step == self.last:
            window.non_finite()  # a read: waits for the device to finish the profiled steps
            self.close()

    def close(self) -> None:
        if self.running:
            self.running = False
            tf.profiler.experimental.stop()


def weights_digest(model: keras.Model) -> str:
    """sha256 of every weight of ``model`` (trainable or not) in order: equal digests on two
    workers mean bit-identical models."""
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()


def _log_train_window(step, window: TrainWindow, seconds: float, global_batch: int,
                      state: "_RunState", reporter) -> Dict:
    """Reads the window (a host copy), writes its means and the learning rates, resets it."""
    read = window.read()
    values = {f"loss/{k}": v / read["steps"] for k, v in read["terms"].items()}
    values["images_per_second"] = read["steps"] * global_batch / seconds if seconds > 0 else 0.0
    values["train_kappa_score"] = agreement.kappa_from_counts(
        read["confusion"], agreement.KAPPA_WHEN_UNDEFINED)
    values.update({f"learning_rate/{g}": r for g, r in state.multi.learning_rates().items()})
    scale = _loss_scale(state.optimizer)
    if scale is not None:
        values["loss_scale"] = scale
    reporter.scalars(summaries.TRAIN_LOGS, step, values)
    reporter.jsonl({"kind": "train", "step": step, "steps": read["steps"], **values,
                    "train_confusion_score": read["confusion"].tolist()})
    window.reset()
    return values


def _check_finite(window: TrainWindow, step: int, model_dir: str, reporter) -> None:
    """Stops the run if any step up to ``step`` had a non-finite loss (before anything is saved)."""
    found = window.non_finite()
    if found is not None:
        _stop_on_non_finite(found[0], found[1], step, model_dir, reporter)


def _stop_on_non_finite(step, terms, noticed_at, model_dir, reporter) -> None:
    latest = checkpoints.latest_checkpoint(model_dir)
    reporter.jsonl({"kind": "error", "step": step, "noticed_at_step": noticed_at,
                    "error": "non-finite loss", **terms})
    late = (f"; noticed at step {noticed_at}, the first log, checkpoint or evaluation step since "
            "(the loss is read only at those)" if noticed_at != step else "")
    raise NonFiniteLossError(
        f"the loss is {terms[losses.TOTAL]} at step {step} (cross-entropy {terms['cross_entropy']}, "
        f"MSE {terms['mse']}, weight decay {terms['weight_decay']}){late}; training stopped and "
        f"saved nothing after the last good checkpoint "
        f"{latest or '(none)'}" + (f" (step {checkpoints.checkpoint_step(latest)})" if latest
                                   else "") + "; lower the learning rates or check the data")
