"""What a run reports: metrics.jsonl lines, TensorBoard scalars, the confusion matrix as an image.

Only the chief process writes (``Reporter(enabled=False)`` everywhere else), so a multi-worker run
leaves one set of logs.
"""

from __future__ import annotations

import errno
import json
import math
import os
import time
from typing import Dict, Optional

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from m2cnn_tf.util import faults, plots


METRICS_JSONL = "metrics.jsonl"
TRAIN_LOGS = "train"  # TensorBoard folders under the model directory
EVAL_LOGS = "validation"


def confusion_matrix_image(confusion, title: str = "") -> np.ndarray:
    """A confusion matrix as a picture for TensorBoard (``util.plots.confusion_figure``: rows
    the true grade, columns the predicted one, shade = share of the row).

    Args:
        confusion: (K, K) counts.
        title: drawn above the matrix.

    Returns:
        uint8 RGB image (H, W, 3).
    """
    return plots.to_rgb(plots.confusion_figure(confusion, title))


# TensorFlow 2.21 no longer installs TensorBoard, and tf.summary.scalar/image are TensorBoard's
# code; the summary op itself (tf.summary.write) is TensorFlow's. So the two kinds we log are
# written directly, with the plugin metadata TensorBoard's scalar and image dashboards read
# (their plugin-data protos at version 0 serialise to empty content).
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
    data_class=summary_pb2.DATA_CLASS_SCALAR)
_IMAGE_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="images"),
    data_class=summary_pb2.DATA_CLASS_BLOB_SEQUENCE)


def write_scalar(name: str, value: float, step: int) -> None:
    """A TensorBoard scalar on the default summary writer."""
    tf.summary.write(name, tf.constant(float(value), tf.float32), step=step,
                     metadata=_SCALAR_METADATA)


def write_image(name: str, image: np.ndarray, step: int) -> None:
    """A TensorBoard image (uint8 RGB, (H, W, 3)) on the default summary writer."""
    encoded = tf.io.encode_png(tf.constant(image, tf.uint8))
    height, width = image.shape[:2]
    tensor = tf.stack([tf.constant(str(width)), tf.constant(str(height)), encoded])
    tf.summary.write(name, tensor, step=step, metadata=_IMAGE_METADATA)


class ReportWriteError(RuntimeError):
    """metrics.jsonl or a TensorBoard log could not be written (a full disk, say); the message
    names the file. What the file held before is intact."""


_TAIL = 1 << 16  # bytes searched back for the end of the last complete line


def _append_line(path: str, line: str) -> None:
    """Appends one line to ``path`` in a single write; all or nothing.

    A line cut short by a process killed while appending (no newline at the end of the file) is
    dropped first, so it cannot fuse with the next one. When the write fails the file is cut back
    to its complete lines and ReportWriteError names it.
    """
    data = (line + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    size = 0
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            start = max(0, size - _TAIL)
            end = os.pread(fd, size - start, start).rfind(b"\n")
            if end >= 0 or start == 0:
                size = start + end + 1
                os.ftruncate(fd, size)
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(errno.ENOSPC, f"only {written} of {len(data)} bytes written")
        faults.point("report.jsonl", [path])
    except OSError as e:
        try:
            os.ftruncate(fd, size)
        except OSError:
            pass
        raise ReportWriteError(f"appending to {path} failed: {e.strerror or e}; its earlier "
                               "lines are intact") from None
    finally:
        os.close(fd)


def _json_value(value):
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan"/"inf": JSON has no literal for them
    return value


class Reporter:
    """metrics.jsonl plus TensorBoard writers for one model directory.

    Args:
        model_dir: the run's folder.
        enabled: False on every process but the chief: then nothing is written.
    """

    def __init__(self, model_dir: str, enabled: bool = True):
        self.model_dir = model_dir
        self.enabled = enabled
        self._writers: Dict[str, tf.summary.SummaryWriter] = {}

    def _writer(self, kind: str) -> tf.summary.SummaryWriter:
        if kind not in self._writers:
            self._writers[kind] = tf.summary.create_file_writer(
                os.path.join(self.model_dir, kind))
        return self._writers[kind]

    def jsonl(self, record: Dict) -> None:
        """Appends one line to metrics.jsonl (with the wall time)."""
        if not self.enabled:
            return
        record = {"time": round(time.time(), 3), **record}
        line = json.dumps({k: _json_value(v) for k, v in record.items()})
        _append_line(os.path.join(self.model_dir, METRICS_JSONL), line)

    def _tensorboard(self, kind: str, step: int, write) -> None:
        """Runs ``write()`` on the ``kind`` writer; a failed write becomes ReportWriteError."""
        try:
            faults.point("report.tensorboard")
            with self._writer(kind).as_default(step=step):
                write()
        except (OSError, tf.errors.OpError) as e:
            raise self._error(kind, e) from None

    def _error(self, kind: str, error: Exception) -> ReportWriteError:
        reason = getattr(error, "strerror", None) or getattr(error, "message", None) or error
        return ReportWriteError(f"writing TensorBoard logs to {os.path.join(self.model_dir, kind)}"
                                f" failed: {reason}")

    def scalars(self, kind: str, step: int, values: Dict[str, float]) -> None:
        """TensorBoard scalars under ``model_dir/kind``."""
        if not self.enabled:
            return
        self._tensorboard(kind, step, lambda: [write_scalar(name, value, step)
                                               for name, value in values.items()])

    def confusion(self, kind: str, step: int, name: str, confusion) -> None:
        """A confusion matrix as a TensorBoard image."""
        if not self.enabled:
            return
        image = confusion_matrix_image(confusion, title=f"{name}, step {step}")
        self._tensorboard(kind, step, lambda: write_image(name, image, step))

    def flush(self) -> None:
        for kind, writer in self._writers.items():
            try:
                writer.flush()
            except (OSError, tf.errors.OpError) as e:
                raise self._error(kind, e) from None

    def close(self, ignore_errors: bool = False) -> None:
        """Closes the TensorBoard writers; ``ignore_errors`` when another error is on its way."""
        writers, self._writers = self._writers, {}
        for kind, writer in writers.items():
            try:
                writer.close()
            except (OSError, tf.errors.OpError) as e:
                if not ignore_errors:
                    raise self._error(kind, e) from None


def read_metrics(model_dir: str, kind: Optional[str] = None) -> list:
    """The records of a run's metrics.jsonl, optionally only those of one ``kind``."""
    path = os.path.join(model_dir, METRICS_JSONL)
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        text = f.read()
    lines = text.split("\n")
    if not text.endswith("\n"):
        lines = lines[:-1]  # cut short by a killed process; the next append drops it too
    records = [json.loads(line) for line in lines if line.strip()]
    return [r for r in records if kind is None or r.get("kind") == kind]
