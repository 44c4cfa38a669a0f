"""Turning the regression score into a grade: rounding, or four thresholds fitted for kappa.

The paper grades from the score (Fig. 2, Table II). Rounding puts the cuts at 0.5, 1.5, 2.5 and
3.5; Kaggle's top entries instead fitted the four cuts on validation data to maximise quadratic
kappa. ``fit_thresholds`` does that by coordinate ascent starting from rounding and accepting only
improvements, so a fitted set is never worse than rounding on the data it was fitted on.
"""

from __future__ import annotations

import json
import os
from typing import Sequence, Tuple

import numpy as np

from m2cnn_tf.config import NUM_GRADES
from m2cnn_tf.grading.metrics import quadratic_weighted_kappa

ROUNDING = tuple(g + 0.5 for g in range(NUM_GRADES - 1))  # (0.5, 1.5, 2.5, 3.5)
THRESHOLDS_FILE = "thresholds.json"
_MAX_CANDIDATES = 200  # cut positions tried per threshold and round
_MAX_ROUNDS = 20


def check_thresholds(thresholds: Sequence[float]) -> Tuple[float, ...]:
    """Validates four strictly increasing finite cuts; returns them as a tuple of floats."""
    values = tuple(float(t) for t in thresholds)
    if len(values) != NUM_GRADES - 1:
        raise ValueError(f"expected {NUM_GRADES - 1} thresholds, got {len(values)}: {values}")
    if not all(np.isfinite(values)) or any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"thresholds must be finite and strictly increasing, got {values}")
    return values


def apply_thresholds(scores, thresholds: Sequence[float] = ROUNDING) -> np.ndarray:
    """Grade = how many cuts the score exceeds (int64, 0–4)."""
    cuts = np.asarray(check_thresholds(thresholds))
    return np.searchsorted(cuts, np.asarray(scores, np.float64), side="left").astype(np.int64)


def _kappa(grades: np.ndarray, predicted: np.ndarray) -> float:
    confusion = np.bincount(grades * NUM_GRADES + predicted,
                            minlength=NUM_GRADES * NUM_GRADES).reshape(NUM_GRADES, NUM_GRADES)
    return quadratic_weighted_kappa(confusion)


def kappa_with(scores, grades, thresholds: Sequence[float] = ROUNDING) -> float:
    """Quadratic kappa of the grades the thresholds give."""
    return _kappa(np.asarray(grades, np.int64), apply_thresholds(scores, thresholds))


def fit_thresholds(scores, grades, initial: Sequence[float] = ROUNDING
                   ) -> Tuple[Tuple[float, ...], float]:
    """Four cuts that maximise quadratic kappa of (grades, cut scores).

    Args:
      scores: (N,) regression scores on validation data.
      grades: (N,) true grades 0–4.
      initial: where to start (rounding by default).

    Returns:
      (thresholds, kappa); kappa is never below that of ``initial``.
    """
    scores = np.asarray(scores, np.float64)
    grades = np.asarray(grades, np.int64)
    if scores.shape != grades.shape or scores.ndim != 1:
        raise ValueError(f"scores and grades must be 1-D of one length, got {scores.shape} and "
                         f"{grades.shape}")
    cuts = list(check_thresholds(initial))
    best = kappa_with(scores, grades, cuts)
    # Only positions between distinct scores change anything: the midpoints are the candidates.
    unique = np.unique(scores)
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
    tmp = path + ".incomplete"
    with open(tmp, "w") as f:
        json.dump({"thresholds": list(check_thresholds(thresholds)), "kappa": kappa,
                   "rounding_kappa": rounding_kappa, "fitted_on": split}, f, indent=2)
    os.replace(tmp, path)
    return path


def load_thresholds(model_dir: str) -> Tuple[Tuple[float, ...], str]:
    """(thresholds, where they came from): the fitted ones if present, else rounding."""
    path = os.path.join(model_dir, THRESHOLDS_FILE)
    if not os.path.isfile(path):
        return ROUNDING, "rounding"
    with open(path) as f:
        data = json.load(f)
    return check_thresholds(data["thresholds"]), path
