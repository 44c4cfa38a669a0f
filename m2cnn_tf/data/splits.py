"""Patient-level train/validation splitting.

Left and right eyes of one patient look alike (same camera, same retina, usually the same grade),
so a patient split between train and validation would inflate validation kappa: every patient
lands in exactly one split. Validation takes ``val_fraction`` of all patients (at least one when
the fraction is above 0), shared out over the grade strata (the patient's worst eye) in
proportion to their sizes, so validation has the dataset's grade mix as nearly as whole patients
allow.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import math
from typing import Dict, List, Sequence

from m2cnn_tf.data.sources import InputRecord


def _rank(seed: int, patient: str) -> str:
    return hashlib.sha256(f"{seed}:{patient}".encode("utf-8")).hexdigest()


def validation_counts(stratum_sizes: Dict[int, int], val_fraction: float) -> Dict[int, int]:
    """How many patients of each grade stratum go to validation.

    The total is ``val_fraction`` of all patients, rounded half up, at least one when the
    fraction is above 0 and at most all but one. It is shared out over the strata by largest
    remainder (Hamilton's method; ties go to the lower grade), so the counts add up to the
    total however small the strata are: rounding each stratum on its own gave 12 photographs
    of 6 patients in 5 strata no validation patient at --val_fraction=0.25.
    """
    total = sum(stratum_sizes.values())
    target = min(math.floor(val_fraction * total + 0.5), total - 1)
    if val_fraction > 0 and total >= 2:
        target = max(target, 1)
    if not total or not target:
        return {grade: 0 for grade in stratum_sizes}
    shares = {grade: target * size / total for grade, size in stratum_sizes.items()}
    counts = {grade: math.floor(share) for grade, share in shares.items()}
    by_remainder = sorted(shares, key=lambda grade: (counts[grade] - shares[grade], grade))
    for grade in by_remainder[:target - sum(counts.values())]:
        counts[grade] += 1
    return counts


def assign_splits(inputs: Sequence[InputRecord], val_fraction: float, seed: int
                  ) -> List[InputRecord]:
    """Gives every input a split; inputs whose source fixed one keep it.

    Args:
      inputs: records, some with ``split`` already set (Kaggle's Public/Private, TFDS).
      val_fraction: share of patients for validation (``validation_counts``), used only when
        no input already belongs to the validation split.
      seed: chooses which patients; the same seed always gives the same split.

    Returns:
      The records with ``split`` set, in the input order.

    Raises:
      ValueError: ``val_fraction`` outside [0, 1), or one patient's images fixed to two splits.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    fixed: Dict[str, str] = {}
    for record in inputs:
        if record.split is None:
            continue
        previous = fixed.setdefault(record.patient_id, record.split)
        if previous != record.split:
            raise ValueError(f"patient {record.patient_id} has images in both the {previous} "
                             f"and the {record.split} split of the source; splits must be "
                             "patient-level")
    has_validation = "validation" in fixed.values()
    worst: Dict[str, int] = collections.defaultdict(int)
    for record in inputs:
        if record.patient_id not in fixed:
            worst[record.patient_id] = max(worst[record.patient_id], record.grade)
    chosen: Dict[str, str] = dict(fixed)
    strata: Dict[int, List[str]] = collections.defaultdict(list)
    for patient, grade in worst.items():
        strata[grade].append(patient)
    take = validation_counts({grade: len(p) for grade, p in strata.items()},
                             0.0 if has_validation else val_fraction)
    for grade in sorted(strata):
        patients = sorted(strata[grade], key=lambda p: _rank(seed, p))
        for i, patient in enumerate(patients):
            chosen[patient] = "validation" if i < take[grade] else "train"
    return [dataclasses.replace(r, split=chosen[r.patient_id]) for r in inputs]
