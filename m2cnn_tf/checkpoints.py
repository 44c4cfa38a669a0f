"""A run's folder on disk, its checkpoints, and how a later stage or an export finds them.

Layout of a model directory (``--model_dir``)::

    config.json          flags, variant, resolution, data checksum, init (written at the start)
    init_report.json     variables restored / new, by block (TransferReport.to_dict())
    metrics.jsonl        one JSON object a line: kind "train" | "eval" | "final" | "error"
    checkpoint           tf.train.CheckpointManager's index of the rolling checkpoints
    ckpt-<step>.*        rolling checkpoints: model, both optimisers (in one), step
    best/ckpt-<step>.*   the checkpoint of the best validation kappa (score): model and step
    best/best.json       its step and validation metrics
    train/, validation/  TensorBoard event files
    .lock                held while a training process writes here

``load_trained_model`` rebuilds the network from config.json and restores best or latest.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from typing import Dict, Optional, Tuple

import keras
import tensorflow as tf

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
    """Writes atomically (a killed process leaves the old file or the new one, never half)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


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
        config.json contents plus ``"checkpoint"`` (the prefix restored), ``"step"`` and
        ``"validation"`` (that checkpoint's validation metrics, with ``kappa_score``, or None
        when it was not evaluated).

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
    model = m2cnn.build_m2cnn(int(info["resolution"]), info["variant"])
    restore_model(model, path)
    step = checkpoint_step(path)
    validation = None
    best_json = os.path.join(model_dir, BEST_DIR, BEST_JSON)
    if checkpoint == BEST and os.path.isfile(best_json):
        validation = read_json(best_json).get("metrics")
    else:
        from m2cnn_tf import summaries  # only here: summaries pulls in OpenCV

        evals = [r for r in summaries.read_metrics(model_dir, "eval") if r.get("step") == step]
        validation = evals[-1]["metrics"] if evals else None
    return model, {**info, "checkpoint": path, "step": step, "validation": validation}


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
    """

    def __init__(self, model_dir: str, model, optimizer, step: tf.Variable, keep: int,
                 chief: bool = True, task_id: int = 0):
        self.model_dir = model_dir
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

    def save_checkpoint(self, step: int) -> str:
        """Saves a rolling checkpoint numbered ``step``; returns its prefix (the chief's)."""
        self.step.assign(step)
        path = self._rolling.save(checkpoint_number=step)
        self._scratch_done()
        return path

    def save_best_checkpoint(self, step: int, metrics: Dict) -> str:
        """Replaces best/ with the checkpoint of ``step`` and writes best/best.json."""
        self.step.assign(step)
        path = self._best.save(checkpoint_number=step)
        if self.chief:
            write_json(os.path.join(self.model_dir, BEST_DIR, BEST_JSON),
                       {"step": step, "checkpoint": os.path.basename(path), "metrics": metrics})
        self._scratch_done()
        return path

    def best_record(self) -> Optional[Dict]:
        """best/best.json of this run, or None before the first evaluation."""
        path = os.path.join(self.model_dir, BEST_DIR, BEST_JSON)
        return read_json(path) if os.path.isfile(path) else None

    def restore_latest(self) -> Optional[int]:
        """Restores the newest rolling checkpoint of the chief's folder, checking that it covered
        the model, both optimisers and the step; returns its step, or None if there is none."""
        path = latest_checkpoint(self.model_dir)
        if path is None:
            return None
        self.rolling_checkpoint.restore(path).assert_consumed()
        return int(self.step.numpy())
