"""Where the training runs: tf.distribute strategies, mixed precision, logical CPU devices, op
determinism.

One code path for every setup: ``--strategy=default`` (one device), ``mirrored`` (all GPUs of one
host, or logical CPU devices for tests), ``multiworker`` (several hosts, or several processes on one,
described by the ``TF_CONFIG`` environment variable) and ``tpu``.
"""

from __future__ import annotations

import contextlib
import json
import os

import keras
import tensorflow as tf
# TensorFlow exports enable_op_determinism only; switching it back off (and asking whether it is
# on) lives next to it in the framework's config module.
from tensorflow.python.framework import config as tf_framework_config

from m2cnn_tf import model as m2cnn

STRATEGIES = ("default", "mirrored", "multiworker", "tpu")
# --mixed_precision value → Keras dtype policy (variables stay float32 in both mixed policies).
PRECISION_POLICIES = {"none": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}


def configure_cpu_devices(count: int) -> None:
    """Splits the CPU into ``count`` logical devices, so that ``mirrored`` has replicas on CPU.

    Must run before TensorFlow initialises its devices (before the first op).

    Args:
        count: logical devices wanted (≥ 1).

    Raises:
        RuntimeError: if TensorFlow already initialised a different device layout.
    """
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError as e:
        have = len(tf.config.list_logical_devices("CPU"))
        if have != count:
            raise RuntimeError(f"cannot split the CPU into {count} logical devices: TensorFlow is "
                               f"already initialised with {have} ({e})") from None


def make_strategy(name: str, tpu: str = "") -> tf.distribute.Strategy:
    """The tf.distribute strategy of ``--strategy``.

    Args:
        name: "default" (the current one-device strategy), "mirrored" (every GPU of this host;
            without GPUs, every logical CPU device), "multiworker" (``TF_CONFIG`` names the cluster
            and this process's task), or "tpu".
        tpu: TPU name or address for "tpu" ("" = the TPU of this VM).

    Returns:
        The strategy. Create models and optimisers inside its ``scope()``.

    Raises:
        ValueError: for an unknown name, or "multiworker" without a usable ``TF_CONFIG``.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        if not devices:
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multiworker":
        tf_config = os.environ.get("TF_CONFIG", "")
        try:
            cluster = json.loads(tf_config)["cluster"] if tf_config else None
        except (ValueError, KeyError):
            cluster = None
        if not cluster:
            raise ValueError(
                "--strategy=multiworker needs the TF_CONFIG environment variable describing the "
                'cluster and this task, e.g. {"cluster": {"worker": ["host1:12345", '
                '"host2:12345"]}, "task": {"type": "worker", "index": 0}}; got '
                f"{tf_config or 'nothing'}")
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"unknown strategy {name!r}; allowed: {', '.join(STRATEGIES)}")


def task_of(strategy: tf.distribute.Strategy) -> tuple:
    """``(task_type, task_id)`` of this process in a multi-worker cluster, else ``(None, 0)``."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return None, 0
    return resolver.task_type, int(resolver.task_id or 0)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes logs, metrics and the real checkpoints.

    The chief is the "chief" task if the cluster has one, else worker 0; a single process always
    is. Every worker still takes part in saving (variables may need collectives to read), but
    the others save into a scratch folder they delete.
    """
    task_type, task_id = task_of(strategy)
    if task_type is None or task_type == "chief":
        return True
    cluster = strategy.cluster_resolver.cluster_spec().as_dict()
    return task_type == "worker" and task_id == 0 and "chief" not in cluster


@contextlib.contextmanager
def precision_policy(mixed_precision: str):
    """Sets Keras' global dtype policy for ``--mixed_precision`` and restores the old one after.

    Args:
        mixed_precision: "none", "float16" or "bfloat16".

    Yields:
        The policy name in force ("float32", "mixed_float16" or "mixed_bfloat16").
    """
    if mixed_precision not in PRECISION_POLICIES:
        raise ValueError(f"unknown mixed_precision {mixed_precision!r}; allowed: "
                         f"{', '.join(PRECISION_POLICIES)}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(PRECISION_POLICIES[mixed_precision])
    try:
        yield PRECISION_POLICIES[mixed_precision]
    finally:
        keras.config.set_dtype_policy(previous)


def run_ops_one_at_a_time() -> None:
    """TensorFlow runs one op at a time (inter-op parallelism 1); each op still uses every core.

    Op determinism alone does not make a CPU run repeatable: ops running side by side change how
    a kernel splits its work between threads, and with it the rounding of its sums (measured
    here, TF 2.21 on 2 cores: the tiny network's weights after 3 steps differed in 1 to 3 of 4
    repetitions; with one op at a time, 0 of 6). Must run before TensorFlow starts its runtime
    (the first op), as train.py does.

    Raises:
        RuntimeError: TensorFlow has started already with another setting.
    """
    if tf.config.threading.get_inter_op_parallelism_threads() == 1:
        return
    try:
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        raise RuntimeError(
            "--deterministic runs TensorFlow one op at a time, which must be set before "
            "TensorFlow starts, and this process has started it already; run the training in a "
            "fresh process (python train.py --deterministic …)") from None


@contextlib.contextmanager
def op_determinism(enabled: bool):
    """TensorFlow's op determinism (``tf.config.experimental.enable_op_determinism``) while the
    block runs, when ``enabled``; restored to its previous state afterwards.

    The switch is process-wide and, while on, makes every unseeded TensorFlow random op raise,
    so a process that trains more than once (tests, a notebook) must not keep it.

    Args:
        enabled: turn it on (``--deterministic``); False leaves everything as it is.
    """
    was_enabled = tf_framework_config.is_op_determinism_enabled()
    if enabled and not was_enabled:
        tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if enabled and not was_enabled:
            tf_framework_config.disable_op_determinism()


def synchronize_batch_norm(model: keras.Model) -> int:
    """Makes every BatchNormalization layer of ``model`` average its statistics over replicas.

    Keras reads ``synchronized`` at call time, so setting it on built layers is enough.

    Args:
        model: any Keras model.

    Returns:
        The number of layers changed.
    """
    changed = 0
    for layer in m2cnn.all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True
            changed += 1
    return changed


def num_workers(strategy: tf.distribute.Strategy) -> int:
    """Processes taking part in training (1 unless multi-worker)."""
    if task_of(strategy)[0] is None:
        return 1
    cluster = strategy.cluster_resolver.cluster_spec()
    return sum(cluster.num_tasks(job) for job in ("chief", "worker") if job in cluster.jobs)


def all_workers(strategy: tf.distribute.Strategy, condition: bool) -> bool:
    """Whether ``condition`` holds on every worker (a collective; ``condition`` with one worker).

    Used for decisions every worker must take alike, such as whether to resume: a worker that
    looks at the shared folder a moment after the chief wrote its first checkpoint would
    otherwise resume while the chief initialises.
    """
    if num_workers(strategy) == 1:
        return condition

    @tf.function
    def share():
        return strategy.run(lambda: tf.constant(1.0 if condition else 0.0))

    # ReduceOp has only SUM and MEAN: the mean of 0/1 flags is 1 exactly when all are 1.
    return float(strategy.reduce(tf.distribute.ReduceOp.MEAN, share(), axis=None)) == 1.0


def auto_shard_policy(num_files: int, num_workers: int) -> tf.data.experimental.AutoShardPolicy:
    """FILE sharding when every worker gets at least one file, else DATA (all read, each keeps
    its share): a small split in a few shards still trains on several workers."""
    policy = tf.data.experimental.AutoShardPolicy
    return policy.FILE if num_files >= num_workers else policy.DATA
