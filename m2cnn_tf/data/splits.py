"""Patient-level train/validation splitting.

Left and right eyes of one patient look alike (same camera, same retina, usually the same grade),
so a patient split between train and validation would inflate validation kappa: every patient
lands in exactly one split. Validation patients are chosen per grade stratum (the patient's worst
eye), so even a small dataset gets every grade in validation.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
from typing import Dict, List, Sequence

from m2cnn_tf.data.sources import InputRecord


def _rank(seed: int, patient: str) -> str:
    return hashlib.sha256(f"{seed}:{patient}".encode("utf-8")).hexdigest()


def assign_splits(inputs: Sequence[InputRecord], val_fraction: float, seed: int
                  ) -> List[InputRecord]:
    """Gives every input a split; inputs whose source fixed one keep it.

    Args:
      inputs: records, some with ``split`` already set (Kaggle's Public/Private, TFDS).
      val_fraction: share of patients (per grade stratum) for validation, used only when no
        input already belongs to the validation split.
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
    for grade in sorted(strata):
        patients = sorted(strata[grade], key=lambda p: _rank(seed, p))
        take = 0 if has_validation else int(round(val_fraction * len(patients)))
        for i, patient in enumerate(patients):
            chosen[patient] = "validation" if i < take else "train"
    return [dataclasses.replace(r, split=chosen[r.patient_id]) for r in inputs]
