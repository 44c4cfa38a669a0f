"""What a source hands the builder: one ``InputRecord`` per photograph to build, one
``SkippedInput`` per input it will not build (with the reason), and ``SourceError`` when the
source as a whole cannot be read — plus the rules every source shares (the grade cell, the image
extensions, paths that must stay inside their folder).

``sources`` (Kaggle, CSV, folders, TFDS, synthetic) and ``datasets`` (the public DR datasets)
both build on these; ``sources`` re-exports them, so ``sources.InputRecord`` stays the name
callers use.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Dict, Optional, Tuple

from m2cnn_tf.config import NUM_GRADES

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")
KAGGLE_ID = re.compile(r"^(?P<patient>.+)_(?P<eye>left|right)$")  # Kaggle EyePACS image ids


@dataclasses.dataclass(frozen=True)
class InputRecord:
    """One photograph to build."""

    image_id: str  # unique within the dataset, e.g. "10_left"
    patient_id: str  # both eyes of a patient share it
    eye: str  # "left", "right" or ""
    grade: int  # 0–4
    kind: str  # "file", "synthetic" or "tfds"
    location: str  # file path, "synthetic:<seed>:<width>:<eye>" or "tfds:<split>:<name>"
    split: Optional[str] = None  # fixed by the source (Kaggle Usage, TFDS split), else assigned
    # Known labels beyond the grade, as sorted (name, value) pairs; names are the keys of
    # ``records.EXTRA_LABELS`` ("quality", "gradable", "dme", "patient_grade").
    labels: Tuple[Tuple[str, int], ...] = ()

    def label_dict(self) -> Dict[str, int]:
        """The known extra labels, ``{name: value}``."""
        return dict(self.labels)


@dataclasses.dataclass(frozen=True)
class SkippedInput:
    """One input that is not built, and why.

    ``excluded`` marks an input left out by the dataset's own rule (an "ungradable" label, say)
    rather than by a fault: it is listed in errors.csv like every skipped input, counted apart
    in the manifest, and does not count against ``--max_error_fraction``.
    """

    file: str
    reason: str
    excluded: bool = False


class SourceError(ValueError):
    """The source as a whole cannot be read (missing folder, CSV without the needed columns)."""


def parse_image_id(image_id: str) -> Tuple[str, str]:
    """(patient_id, eye) from a Kaggle-style id ``<patient>_<left|right>``; else (id, "")."""
    match = KAGGLE_ID.match(image_id)
    if match:
        return match.group("patient"), match.group("eye")
    return image_id, ""


def parse_grade(text: object) -> int:
    """A grade cell → 0–4; raises ValueError with the reason otherwise."""
    value = str(text if text is not None else "").strip()
    if value == "":
        raise ValueError("label missing")
    if not re.fullmatch(r"[+-]?\d+", value):
        raise ValueError(f"grade {value!r} is not an integer 0–{NUM_GRADES - 1}")
    grade = int(value)
    if not 0 <= grade < NUM_GRADES:
        raise ValueError(f"grade {grade} is outside 0–{NUM_GRADES - 1}")
    return grade


def is_inside(base: str, path: str) -> bool:
    """Whether ``path`` (symbolic links resolved) lies inside the folder ``base``."""
    base_real = os.path.realpath(base)
    return os.path.commonpath([base_real, os.path.realpath(path)]) == base_real
