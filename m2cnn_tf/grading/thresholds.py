"""Turning the regression score into a grade: rounding, or four thresholds fitted for kappa.

The paper grades from the score (Fig. 2, Table II). Rounding puts the cuts at 0.5, 1.5, 2.5 and
3.5; Kaggle's top entries instead fitted the four cuts on validation data to maximise quadratic
kappa. ``fit_thresholds`` does that by coordinate ascent starting from rounding and accepting only
improvements, so a fitted set is never worse than rounding on the data it was fitted on. Scores
become grades by the one rule (``rule``: how many cuts a score exceeds, in float32).
"""

from __future__ import annotations

import json
import os
from typing import Sequence, Tuple

import numpy as np

from m2cnn_tf.grading import agreement
# The rule itself (ROUNDING, check_thresholds, apply_thresholds) lives in ``rule``; it is
# imported here because this module is where callers get, fit, save and load cuts.
from m2cnn_tf.grading.rule import ROUNDING, apply_thresholds, check_thresholds  # noqa: F401
from m2cnn_tf.util import atomic

THRESHOLDS_FILE = "thresholds.json"
_MAX_CANDIDATES = 200  # cut positions tried per threshold and round
_MAX_ROUNDS = 20


def kappa_with(scores, grades, thresholds: Sequence[float] = ROUNDING) -> float:
    """Quadratic kappa of the grades the thresholds give (``agreement.KAPPA_WHEN_UNDEFINED``
    where undefined: one grade throughout, predicted as such)."""
    return agreement.quadratic_kappa(grades, apply_thresholds(scores, thresholds),
                                     agreement.KAPPA_WHEN_UNDEFINED)


def fit_thresholds(scores, grades, initial: Sequence[float] = ROUNDING
                   ) -> Tuple[Tuple[float, ...], float]:
    """Four cuts that maximise quadratic kappa of (grades, cut scores).

    Args:
      scores: (N,) regression scores on validation data.
      grades: (N,) true grades 0–4.
      initial: where to start (rounding by default).

    Returns:
      (thresholds, kappa); kappa is that of the grades ``rule.apply_thresholds`` gives (the
      export's grades) and never below that of ``initial``.
    """
    scores = np.asarray(scores, np.float32)  # the precision the rule compares in
    grades = np.asarray(grades, np.int64)
    if scores.shape != grades.shape or scores.ndim != 1:
        raise ValueError(f"scores and grades must be 1-D of one length, got {scores.shape} and "
                         f"{grades.shape}")
    cuts = list(check_thresholds(initial))
    best = kappa_with(scores, grades, cuts)
    # Only positions between distinct scores change anything: the midpoints are the candidates.
    unique = np.unique(scores).astype(np.float64)
    midpoints = (unique[1:] + unique[:-1]) / 2.0 if unique.size > 1 else unique
    for _ in range(_MAX_ROUNDS):
        improved = False
        for i in range(len(cuts)):
            low = cuts[i - 1] if i > 0 else -np.inf
            high = cuts[i + 1] if i + 1 < len(cuts) else np.inf
            candidates = midpoints[(midpoints > low) & (midpoints < high)]
            if candidates.size > _MAX_CANDIDATES:
                candidates = candidates[np.linspace(0, candidates.size - 1,
                                                    _MAX_CANDIDATES).astype(int)]
            for value in candidates:
                trial = cuts[:i] + [float(value)] + cuts[i + 1:]
                kappa = kappa_with(scores, grades, trial)
                if kappa > best + 1e-12:
                    best, cuts, improved = kappa, trial, True
        if not improved:
            break
    return tuple(cuts), best


def save_thresholds(model_dir: str, thresholds: Sequence[float], kappa: float,
                    rounding_kappa: float, split: str) -> str:
    """Writes ``<model_dir>/thresholds.json`` (where ``export.py`` reads it), atomically."""
    path = os.path.join(model_dir, THRESHOLDS_FILE)
    atomic.write_json(path, {"thresholds": list(check_thresholds(thresholds)), "kappa": kappa,
                             "rounding_kappa": rounding_kappa, "fitted_on": split}, indent=2)
    return path


def load_thresholds(model_dir: str) -> Tuple[Tuple[float, ...], str]:
    """(thresholds, where they came from): the fitted ones if present, else rounding."""
    path = os.path.join(model_dir, THRESHOLDS_FILE)
    if not os.path.isfile(path):
        return ROUNDING, "rounding"
    with open(path) as f:
        data = json.load(f)
    return check_thresholds(data["thresholds"]), path
