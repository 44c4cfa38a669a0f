"""The quality assessor: P(Good), P(Usable), P(Reject) from a photograph's measures, and the
``gradable`` decision at a stated operating point.

A multinomial logistic regression on the standardised measures (``measures.MEASURE_NAMES``):
``p = softmax(((x − mean) / scale) · W + b)``, and gradable when ``P(Reject) <
reject_threshold``. It is applied by one NumPy function offline (``Assessor.probabilities``)
and one TensorFlow function in the export (``Assessor.outputs``) — the same few lines of
arithmetic, tested equal. A photograph in which no fundus is found has no measures: it is
Reject with certainty (probabilities 0, 0, 1) and not gradable.

``gradable`` is an int: 1 gradable, 0 not (``UNGRADABLE``), −1 not assessed (``NOT_ASSESSED``:
no assessor was given, or the input was an already normalised image). Without an assessor the
probabilities are NaN; a photograph without a fundus is ungradable (0) all the same.

No assessor ships with the package: one fitted on the shared EyePACS photographs may not be
committed, and one fitted on synthetic photographs ranks real ones fairly (Reject AUC 0.86 on
the 253 labelled EyePACS photographs) but puts its operating point where it would call 83 % of
them ungradable. ``python quality.py fit`` fits one on labelled photographs and saves it as a
small JSON file (``save`` / ``load``) recording how it was fitted; a training run keeps its own
as ``<run>/quality.json`` (``for_run``), which ``export.py`` builds into the export.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from m2cnn_tf.preprocess import graph as graph_preprocess
from m2cnn_tf.quality import measures
from m2cnn_tf.quality.measures import MEASURE_NAMES
from m2cnn_tf.config import NUM_QUALITIES, QUALITY_NAMES, REJECT
from m2cnn_tf.util import atomic

FORMAT = "m2cnn-quality-assessor/1"
# Where a training run keeps its assessor (``quality.py fit --output=<run>/quality.json``):
# ``export.py`` builds it into the export, the run's predictor applies it.
RUN_FILE = "quality.json"
# What a photograph without a fundus gets: Reject, with certainty.
NO_FUNDUS = tuple(1.0 if q == REJECT else 0.0 for q in range(NUM_QUALITIES))
GRADABLE, UNGRADABLE, NOT_ASSESSED = 1, 0, -1
PROBABILITIES_OUTPUT, GRADABLE_OUTPUT = "quality_probabilities", "gradable"


class AssessorError(ValueError):
    """An assessor file that cannot be used; the message says why and what to do."""


@dataclasses.dataclass(frozen=True, eq=False)
class Assessor:
    """A fitted quality assessor (see the module docstring)."""

    measure_names: tuple  # the measures it reads, in order
    mean: np.ndarray  # (F,) standardisation
    scale: np.ndarray  # (F,)
    weights: np.ndarray  # (F, 3)
    bias: np.ndarray  # (3,)
    reject_threshold: float  # gradable = P(Reject) < reject_threshold
    record: Dict = dataclasses.field(default_factory=dict)  # how it was fitted

    def probabilities(self, measures, found=None) -> np.ndarray:
        """(N, 3) float32 P(Good), P(Usable), P(Reject); rows whose ``found`` is False get
        ``NO_FUNDUS``."""
        measures = np.asarray(measures, np.float32).reshape(-1, len(self.measure_names))
        logits = ((measures - self.mean) / self.scale) @ self.weights + self.bias
        logits = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        result = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
        if found is not None:
            result[~np.asarray(found, bool)] = NO_FUNDUS
        return result

    def gradable(self, probabilities) -> np.ndarray:
        """(N,) int32: 1 where P(Reject) is below the operating point, else 0."""
        return (np.asarray(probabilities)[:, REJECT] < self.reject_threshold).astype(np.int32)

    def assess(self, measures, found) -> Dict[str, np.ndarray]:
        """The quality outputs offline: ``{"quality_probabilities", "gradable"}``."""
        probabilities = self.probabilities(measures, found)
        return {PROBABILITIES_OUTPUT: probabilities, GRADABLE_OUTPUT: self.gradable(probabilities)}

    def outputs(self, measures: tf.Tensor, found: tf.Tensor) -> Dict[str, tf.Tensor]:
        """The quality outputs in the graph (the export's): ``quality_probabilities`` (B, 3)
        float32 and ``gradable`` (B,) int32 1 or 0."""
        standardised = (measures - tf.constant(self.mean, tf.float32)) / tf.constant(
            self.scale, tf.float32)
        logits = tf.matmul(standardised, tf.constant(self.weights, tf.float32)) + tf.constant(
            self.bias, tf.float32)
        probabilities = tf.where(found[:, None], tf.nn.softmax(logits, axis=-1),
                                 tf.constant(NO_FUNDUS, tf.float32))
        gradable = tf.cast(probabilities[:, REJECT] < self.reject_threshold, tf.int32)
        return {PROBABILITIES_OUTPUT: probabilities, GRADABLE_OUTPUT: gradable}

    def to_json(self) -> Dict:
        return {"format": FORMAT, "measure_names": list(self.measure_names),
                "classes": list(QUALITY_NAMES), "mean": self.mean.tolist(),
                "scale": self.scale.tolist(), "weights": self.weights.tolist(),
                "bias": self.bias.tolist(), "reject_threshold": float(self.reject_threshold),
                "record": self.record}


def make_assessor(mean, scale, weights, bias, reject_threshold: float,
                  record: Optional[Dict] = None,
                  measure_names: Sequence[str] = MEASURE_NAMES) -> Assessor:
    """An ``Assessor`` with its arrays checked against each other.

    Raises:
      AssessorError: shapes that do not fit, a non-positive scale, a threshold outside (0, 1].
    """
    names = tuple(measure_names)
    arrays = {"mean": np.asarray(mean, np.float32), "scale": np.asarray(scale, np.float32),
              "weights": np.asarray(weights, np.float32), "bias": np.asarray(bias, np.float32)}
    f = len(names)
    expected = {"mean": (f,), "scale": (f,), "weights": (f, NUM_QUALITIES),
                "bias": (NUM_QUALITIES,)}
    for key, shape in expected.items():
        if arrays[key].shape != shape or not np.all(np.isfinite(arrays[key])):
            raise AssessorError(f"assessor {key} has shape {arrays[key].shape} (or a "
                                f"non-finite value); expected finite values of shape {shape}")
    if np.any(arrays["scale"] <= 0):
        raise AssessorError("assessor scale must be positive")
    if not 0.0 < float(reject_threshold) <= 1.0:
        raise AssessorError(f"reject_threshold {reject_threshold!r} must lie in (0, 1]")
    return Assessor(names, arrays["mean"], arrays["scale"], arrays["weights"], arrays["bias"],
                    float(reject_threshold), dict(record or {}))


def save(assessor: Assessor, path: str) -> str:
    """Writes the assessor as JSON (atomically); returns the path."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    atomic.write_json(path, assessor.to_json(), indent=1)
    return path


def load(path: str) -> Assessor:
    """An assessor file written by ``save``.

    Raises:
      AssessorError: no such file, not an assessor, or fitted on other measures than this
        version computes (then refit it).
    """
    if not os.path.isfile(path):
        raise AssessorError(f"quality assessor {path}: no such file (fit one with "
                            "python quality.py fit)")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise AssessorError(f"quality assessor {path}: not readable JSON ({e})") from None
    return from_json(data, path)


def from_json(data, where: str) -> Assessor:
    """An assessor from its ``to_json`` form (a file's, or an export's metadata).

    Raises:
      AssessorError: not an assessor, or fitted on other measures than this version computes.
    """
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise AssessorError(f"quality assessor {where}: not an assessor (expected format "
                            f"{FORMAT!r})")
    if tuple(data.get("measure_names", ())) != MEASURE_NAMES:
        raise AssessorError(f"quality assessor {where} reads the measures "
                            f"{data.get('measure_names')}, but this version computes "
                            f"{list(MEASURE_NAMES)}; fit it again with python quality.py fit")
    try:
        return make_assessor(data["mean"], data["scale"], data["weights"], data["bias"],
                             data["reject_threshold"], data.get("record"))
    except (KeyError, TypeError, AssessorError) as e:
        raise AssessorError(f"quality assessor {where}: {e}") from None


def for_run(model_dir: Optional[str]) -> Optional[Assessor]:
    """A training run's assessor (``<model_dir>/quality.json``), or None when it has none."""
    if model_dir and os.path.isfile(os.path.join(model_dir, RUN_FILE)):
        return load(os.path.join(model_dir, RUN_FILE))
    return None


def unassessed_outputs(found: tf.Tensor) -> Dict[str, tf.Tensor]:
    """The quality outputs in the graph without an assessor: NaN probabilities; ``gradable``
    −1 (not assessed), 0 where no fundus is found."""
    size = tf.shape(found)[0]
    return {PROBABILITIES_OUTPUT: tf.fill([size, NUM_QUALITIES], float("nan")),
            GRADABLE_OUTPUT: tf.where(found, NOT_ASSESSED, UNGRADABLE)}


def preprocess_and_assess(image_bytes: tf.Tensor, size: int, assessor: Optional[Assessor]):
    """In the graph: (normalised images (B, size, size, 3), found (B,), quality outputs) of a
    batch of encoded photographs — one decode for both; without an assessor the photographs are
    not measured at all (``preprocess.graph.preprocess_batch``)."""
    if assessor is None:
        images, found = graph_preprocess.preprocess_batch(image_bytes, size)
        return images, found, unassessed_outputs(found)
    images, found, values = measures.preprocess_and_measure(image_bytes, size)
    return images, found, assessor.outputs(values, found)


def assess(assessor: Optional[Assessor], values, found) -> Dict[str, np.ndarray]:
    """``unassessed_outputs`` / ``Assessor.assess`` offline, whichever applies."""
    found = np.asarray(found, bool)
    if assessor is not None:
        return assessor.assess(values, found)
    return {PROBABILITIES_OUTPUT: np.full((len(found), NUM_QUALITIES), np.nan, np.float32),
            GRADABLE_OUTPUT: np.where(found, NOT_ASSESSED, UNGRADABLE).astype(np.int32)}


def describe(assessor: Optional[Assessor]) -> str:
    """One line: what the assessor was fitted on and its operating point."""
    if assessor is None:
        return "no quality assessor (quality.py fit makes one)"
    fitted_on = assessor.record.get("fitted_on", "unknown photographs")
    return (f"quality assessor fitted on {fitted_on}; gradable when P(Reject) < "
            f"{assessor.reject_threshold:.3f}")


def gradable_from_labels(quality, gradable) -> np.ndarray:
    """Gradability from labels stored in records (``data.records.EXTRA_LABELS``; −1 unknown):
    the ``gradable`` label where known, else quality ≠ Reject where the quality is known, else
    ``NOT_ASSESSED``."""
    quality = np.asarray(quality, np.int64)
    gradable = np.asarray(gradable, np.int64)
    from_quality = np.where(quality < 0, NOT_ASSESSED, (quality != REJECT).astype(np.int64))
    return np.where(gradable >= 0, gradable, from_quality).astype(np.int32)
