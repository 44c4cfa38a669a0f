"""A run's folder on disk, its checkpoints, and how a later stage or an export finds them.

Layout of a model directory (``--model_dir``)::

    config.json          flags, variant, resolution, data checksum, init (written at the start)
    init_report.json     variables restored / new, by block (TransferReport.to_dict())
    metrics.jsonl        one JSON object a line: kind "train" | "eval" | "final" | "error"
    checkpoint           tf.train.CheckpointManager's index of the rolling checkpoints
    ckpt-<step>.*        rolling checkpoints: model, both optimisers (in one), step
    best/ckpt-<step>.*   the checkpoint of the best validation kappa (of the score, or of the
                         probabilities for a CE-only run: config.json's "selected_by"): model, step
    best/best.json       its step, validation metrics and the metric it was selected by
    train/, validation/  TensorBoard event files
    .lock                held while a training process writes here

``load_trained_model`` rebuilds the network from config.json (``build_run_model``: variant,
resolution and Multi-Cell switch) and restores best or latest.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
import shutil
from typing import Dict, Optional, Tuple

import keras
import tensorflow as tf

from m2cnn_tf import config
from m2cnn_tf.util import atomic, faults
from m2cnn_tf import model as m2cnn

CONFIG_JSON = "config.json"
INIT_REPORT_JSON = "init_report.json"
BEST_DIR = "best"
BEST_JSON = "best.json"
CHECKPOINT_NAME = "ckpt"
LOCK = ".lock"
BEST, LATEST = "best", "latest"
_STEP = re.compile(rf"{CHECKPOINT_NAME}-(\d+)$")


def _contents(folder: str) -> str:
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return "nothing (not a folder)"
    return ", ".join(names[:12]) + (" …" if len(names) > 12 else "") if names else "nothing"


def checkpoint_step(path: str) -> int:
    """The step number in a checkpoint prefix such as ``runs/m2cnn_224/ckpt-2000``."""
    match = _STEP.search(path)
    if not match:
        raise ValueError(f"{path!r} is not a checkpoint prefix ending in {CHECKPOINT_NAME}-<step>")
    return int(match.group(1))


def latest_checkpoint(model_dir: str) -> Optional[str]:
    """The newest rolling checkpoint prefix of a run, or None."""
    return tf.train.latest_checkpoint(model_dir)


def best_checkpoint(model_dir: str) -> Optional[str]:
    """The best checkpoint prefix of a run (``best/``), or None."""
    return tf.train.latest_checkpoint(os.path.join(model_dir, BEST_DIR))


def read_json(path: str) -> Dict:
    with open(path) as f:
        return json.load(f)


def write_json(path: str, value: Dict) -> None:
    """Writes a run's JSON file (indent 1, sorted keys) atomically: a killed process leaves the
    old file or the new one, never half. Raises the OSError of a failed write."""
    atomic.write_json(path, value, indent=1, sort_keys=True, end="\n")


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written (a full disk, say); the message names it and the last
    complete checkpoint, which is untouched."""


def _files_of(prefix: str):
    """The files of one checkpoint prefix (``.index``, ``.data-*``) and its ``_temp`` folder."""
    return sorted(glob.glob(glob.escape(prefix) + ".*") + glob.glob(glob.escape(prefix) + "_temp*"))


def _remove(paths) -> None:
    for path in paths:
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.exists(path):
            os.remove(path)


def remove_incomplete(folder: str) -> list:
    """Deletes checkpoint files newer than the newest recorded checkpoint of ``folder``.

    A process killed while writing ``ckpt-N`` leaves its files (whole or cut short) without
    recording them in ``checkpoint``; they are never restored, and the resumed run would write
    ``ckpt-N`` again, but until then they look like a checkpoint. Returns what was deleted.
    """
    latest = tf.train.latest_checkpoint(folder)
    newest = checkpoint_step(latest) if latest else -1
    leftovers = []
    for path in glob.glob(os.path.join(glob.escape(folder), f"{CHECKPOINT_NAME}-*")):
        match = re.match(rf"{CHECKPOINT_NAME}-(\d+)(\.|_temp)", os.path.basename(path))
        if match and int(match.group(1)) > newest:
            leftovers.append(path)
    _remove(leftovers)
    return sorted(leftovers)


def read_run_config(model_dir: str) -> Dict:
    """The config.json of a run.

    Raises:
        FileNotFoundError: naming what the folder holds instead.
    """
    path = os.path.join(model_dir, CONFIG_JSON)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{model_dir} is not a training run: it has no {CONFIG_JSON} "
                                f"(it holds: {_contents(model_dir)})")
    return read_json(path)


def build_run_model(run_config: Dict) -> keras.Model:
    """A fresh network of the kind a run trained, from its config.json contents: its resolution,
    variant and Multi-Cell switch ("auto" for runs from before the switch could be turned off)."""
    return m2cnn.build_m2cnn(int(run_config["resolution"]), run_config["variant"],
                             multicell=run_config.get("multicell", config.MULTICELL_AUTO))


def restore_model(model: keras.Model, path: str) -> None:
    """Restores the model part of a checkpoint and checks that every model variable matched.

    Args:
        model: built with the variant and resolution the checkpoint was written for.
        path: a checkpoint prefix (rolling or best).

    Raises:
        AssertionError: if some variable of ``model`` found no value in the checkpoint.
    """
    status = tf.train.Checkpoint(model=model).read(path)
    status.expect_partial()  # the optimisers' slots in a rolling checkpoint are not needed here
    status.assert_existing_objects_matched()


@dataclasses.dataclass(frozen=True)
class InitSource:
    """Where ``--init`` takes the starting weights from.

    Attributes:
        kind: "none", "imagenet", "weights_file" (a Keras notop .h5) or "stage" (a checkpoint of
            an earlier training run).
        path: the file or checkpoint prefix ("" for none/imagenet).
        run_config: for "stage", the earlier run's config.json.
    """

    kind: str
    path: str = ""
    run_config: Optional[Dict] = None

    def describe(self) -> Dict:
        result = {"kind": self.kind, "path": self.path}
        if self.run_config:
            result.update(variant=self.run_config.get("variant"),
                          resolution=self.run_config.get("resolution"),
                          model_dir=self.run_config.get("model_dir"))
        return result


_INIT_HELP = ("--init must be none, imagenet, a Keras Inception-ResNet-v2 notop weights file "
              "(.h5), the model directory of an earlier stage (holding config.json and "
              "checkpoints, e.g. runs/m2cnn_224) or one checkpoint in it (e.g. "
              "runs/m2cnn_224/ckpt-2000)")


def resolve_init(init: str) -> InitSource:
    """Checks ``--init`` and finds what it points to, before any work is done.

    A model directory gives its best checkpoint, or its latest when it has no best yet.

    Args:
        init: the flag's value.

    Returns:
        An ``InitSource``.

    Raises:
        ValueError: saying what was expected and what exists at the path.
    """
    if init in ("", "none"):
        return InitSource("none")
    if init == m2cnn.IMAGENET:
        return InitSource("imagenet")
    path = os.path.normpath(init)
    if os.path.isfile(path) and path.endswith(".h5"):
        return InitSource("weights_file", path)
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, CONFIG_JSON)):
            raise ValueError(f"{_INIT_HELP}; {init} is a folder without {CONFIG_JSON} (it holds: "
                             f"{_contents(path)})")
        checkpoint = best_checkpoint(path) or latest_checkpoint(path)
        if checkpoint is None:
            raise ValueError(f"--init={init}: that run has no checkpoint yet (it holds: "
                             f"{_contents(path)}); train it first")
        return InitSource("stage", checkpoint, read_run_config(path))
    if os.path.isfile(path + ".index"):
        folder = os.path.dirname(path)
        for candidate in (folder, os.path.dirname(folder)):  # ckpt-N, or best/ckpt-N
            if os.path.isfile(os.path.join(candidate, CONFIG_JSON)):
                return InitSource("stage", path, read_run_config(candidate))
        raise ValueError(f"--init={init}: found the checkpoint but no {CONFIG_JSON} next to it or "
                         "one folder up, so its variant and resolution are unknown")
    parent = os.path.dirname(path) or "."
    raise ValueError(f"{_INIT_HELP}; nothing exists at {init} ({parent} holds: "
                     f"{_contents(parent)})")


def load_trained_model(model_dir: str, checkpoint: str = BEST) -> Tuple[keras.Model, Dict]:
    """Rebuilds a trained network from its model directory and restores a checkpoint.

    Args:
        model_dir: a training run's folder (with config.json).
        checkpoint: "best" (best validation kappa) or "latest" (newest rolling checkpoint).

    Returns:
        ``(model, info)``: the Keras model (built under the current dtype policy), and the run's
        config.json contents plus ``"checkpoint"`` (the prefix restored), ``"step"``,
        ``"validation"`` (that checkpoint's validation metrics, with ``kappa_score``, or None
        when it was not evaluated) and ``"prediction"`` (the head the run is read by:
        ``config.PREDICT_BY_SCORE``, or ``PREDICT_BY_PROBABILITIES`` for a CE-only run).

    Raises:
        FileNotFoundError: no config.json, or no checkpoint of that kind (naming what exists).
        ValueError: ``checkpoint`` is neither "best" nor "latest".
        AssertionError: the checkpoint does not cover every variable of the model.
    """
    if checkpoint not in (BEST, LATEST):
        raise ValueError(f"checkpoint must be {BEST!r} or {LATEST!r}, got {checkpoint!r}")
    info = read_run_config(model_dir)
    path = best_checkpoint(model_dir) if checkpoint == BEST else latest_checkpoint(model_dir)
    if path is None:
        where = os.path.join(model_dir, BEST_DIR) if checkpoint == BEST else model_dir
        raise FileNotFoundError(f"{model_dir} has no {checkpoint} checkpoint ({where} holds: "
                                f"{_contents(where)})")
    model = build_run_model(info)
    restore_model(model, path)
    step = checkpoint_step(path)
    validation = None
    best_record = read_best_record(model_dir) if checkpoint == BEST else None
    if best_record is not None and best_record.get("step") == step:
        validation = best_record.get("metrics")
    else:
        from m2cnn_tf.train import summaries  # only here: summaries pulls in matplotlib

        evals = [r for r in summaries.read_metrics(model_dir, "eval") if r.get("step") == step]
        validation = evals[-1]["metrics"] if evals else None
    return model, {**info, "checkpoint": path, "step": step, "validation": validation,
                   "prediction": info.get("prediction", config.PREDICT_BY_SCORE)}


def read_best_record(model_dir: str, repair: bool = False) -> Optional[Dict]:
    """best/best.json of a run — the best checkpoint's step and validation metrics — or None.

    A process killed between saving a new best checkpoint and writing best.json leaves a
    best.json of the previous best (or none); then the record is rebuilt from the evaluation of
    the best checkpoint's step in metrics.jsonl, so that a later, worse evaluation is not taken
    for an improvement and allowed to replace the best checkpoint.

    Args:
        model_dir: the run's folder.
        repair: write the rebuilt record back to best/best.json.

    Returns:
        ``{"step", "checkpoint", "metrics"}`` or None.
    """
    path = os.path.join(model_dir, BEST_DIR, BEST_JSON)
    record = read_json(path) if os.path.isfile(path) else None
    checkpoint = best_checkpoint(model_dir)
    if checkpoint is None:
        return record
    step = checkpoint_step(checkpoint)
    if record is not None and record.get("step") == step:
        return record
    from m2cnn_tf.train import summaries  # only here: summaries pulls in matplotlib

    evals = [r for r in summaries.read_metrics(model_dir, "eval") if r.get("step") == step]
    if not evals:
        return record
    record = {"step": step, "checkpoint": os.path.basename(checkpoint),
              "metrics": evals[-1]["metrics"]}
    if repair:
        write_json(path, record)
    return record


class CheckpointKeeper:
    """Rolling checkpoints (model, optimiser, step) and the best one (model, step).

    Under a multi-worker strategy every worker must take part in a save; only the chief writes
    into the model directory, the others into a scratch folder they delete right after.

    Args:
        model_dir: the run's folder.
        model: the network.
        optimizer: the training optimiser (a MultiOptimizer, possibly loss-scaled): its children
            are both groups' optimisers, so one object saves both.
        step: an int64 tf.Variable holding the number of steps done.
        keep: how many rolling checkpoints to keep.
        chief: whether this process is the chief.
        task_id: this worker's index (names the scratch folder of a non-chief worker).
        selected_by: the validation metric a better checkpoint must beat to become the best
            ("kappa_score" or "kappa_argmax"); written into best.json.
    """

    def __init__(self, model_dir: str, model, optimizer, step: tf.Variable, keep: int,
                 chief: bool = True, task_id: int = 0, selected_by: str = "kappa_score"):
        self.model_dir = model_dir
        self.selected_by = selected_by
        self.chief = chief
        self.step = step
        self._root = model_dir if chief else os.path.join(model_dir, f".worker_{task_id}")
        self.rolling_checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)
        self.best_checkpoint = tf.train.Checkpoint(model=model, step=step)
        self._rolling = tf.train.CheckpointManager(self.rolling_checkpoint, self._root,
                                                   max_to_keep=keep, checkpoint_name=CHECKPOINT_NAME)
        self._best = tf.train.CheckpointManager(self.best_checkpoint,
                                                os.path.join(self._root, BEST_DIR), max_to_keep=1,
                                                checkpoint_name=CHECKPOINT_NAME)

    def _scratch_done(self) -> None:
        if not self.chief:
            shutil.rmtree(self._root, ignore_errors=True)

    def _save(self, manager, folder: str, step: int, written_point: Optional[str] = None) -> str:
        """One save through ``manager``; a failed write removes what it wrote and raises
        CheckpointWriteError, leaving the checkpoints recorded before it as they were."""
        prefix = os.path.join(folder, f"{CHECKPOINT_NAME}-{step}")
        # Runs once the files are complete, before the manager records them as the latest.
        options = tf.train.CheckpointOptions(experimental_write_callbacks=[
            lambda path: faults.point(written_point, _files_of(path))] if written_point else None)
        try:
            return manager.save(checkpoint_number=step, options=options)
        except (OSError, tf.errors.OpError) as e:
            if manager.latest_checkpoint != prefix:  # not recorded: never restorable
                _remove(_files_of(prefix))
            reason = getattr(e, "strerror", None) or getattr(e, "message", None) or str(e)
            raise CheckpointWriteError(
                f"writing checkpoint {prefix} failed: {reason}; the last complete checkpoint "
                f"{manager.latest_checkpoint or '(none)'} is intact — free space and run the "
                "same command again to resume from it") from None

    def save_checkpoint(self, step: int) -> str:
        """Saves a rolling checkpoint numbered ``step``; returns its prefix (the chief's).

        Raises:
            CheckpointWriteError: the write failed; earlier checkpoints are untouched.
        """
        self.step.assign(step)
        path = self._save(self._rolling, self._root, step, "checkpoint.written")
        self._scratch_done()
        faults.point("checkpoint.saved")
        return path

    def save_best_checkpoint(self, step: int, metrics: Dict) -> str:
        """Replaces best/ with the checkpoint of ``step`` and writes best/best.json."""
        self.step.assign(step)
        path = self._save(self._best, os.path.join(self._root, BEST_DIR), step)
        faults.point("checkpoint.best_written")
        if self.chief:
            try:
                write_json(os.path.join(self.model_dir, BEST_DIR, BEST_JSON),
                           {"step": step, "checkpoint": os.path.basename(path),
                            "selected_by": self.selected_by, "metrics": metrics})
            except OSError as e:
                raise CheckpointWriteError(
                    f"writing {os.path.join(self.model_dir, BEST_DIR, BEST_JSON)} failed: "
                    f"{e.strerror or e}; the best checkpoint {path} itself is complete") from None
        self._scratch_done()
        return path

    def best_record(self) -> Optional[Dict]:
        """best/best.json of this run, or None before the first evaluation (see
        ``read_best_record``)."""
        return read_best_record(self.model_dir, repair=self.chief)

    def restore_latest(self) -> Optional[int]:
        """Restores the newest rolling checkpoint of the chief's folder, checking that it covered
        the model, both optimisers and the step; returns its step, or None if there is none."""
        path = latest_checkpoint(self.model_dir)
        if path is None:
            return None
        self.rolling_checkpoint.restore(path).assert_consumed()
        return int(self.step.numpy())
