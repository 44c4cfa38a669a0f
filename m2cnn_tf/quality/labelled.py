"""Labelled photographs for fitting and reporting: a folder of photographs, an EyeQ-format
quality CSV (``data.sources.read_eyeq_quality``), optional Kaggle DR grades, and the photographs'
measures — computed once by ``measures.measure_encoded`` and cached beside the assessor."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from m2cnn_tf.config import PREPROCESS, PreprocessConfig
from m2cnn_tf.data import sources
from m2cnn_tf.preprocess import image_io
from m2cnn_tf.quality import measures as quality_measures
from m2cnn_tf.config import QUALITY, QualityConfig
from m2cnn_tf.util import atomic, progress


@dataclasses.dataclass
class Labelled:
    """Photographs with their EyeQ quality (and DR grade where known), one row each."""

    image_ids: np.ndarray  # (N,) str
    paths: List[str]
    quality: np.ndarray  # (N,) int64 0–2
    patients: np.ndarray  # (N,) str: both eyes of a patient share it
    dr_grades: Optional[np.ndarray] = None  # (N,) int64, or None without --labels_csv
    skipped: List[Tuple[str, str]] = dataclasses.field(default_factory=list)  # (what, why)

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, rows) -> "Labelled":
        rows = np.asarray(rows)
        return Labelled(self.image_ids[rows], [self.paths[i] for i in rows], self.quality[rows],
                        self.patients[rows],
                        None if self.dr_grades is None else self.dr_grades[rows], self.skipped)


def _image_files(images_dir: str) -> Dict[str, str]:
    """{id (file name without extension): path} of the photographs in a folder."""
    if not os.path.isdir(images_dir):
        raise sources.SourceError(f"--images_dir={images_dir}: no such folder")
    found = {}
    for name in sorted(os.listdir(images_dir)):
        stem, ext = os.path.splitext(name)
        if ext.lower() in sources.IMAGE_EXTENSIONS:
            found.setdefault(stem, os.path.join(images_dir, name))
    return found


def read_dr_grades(labels_csv: str) -> Dict[str, int]:
    """Kaggle-style DR grades (``image,level``) by image id; a bad grade is an error naming the
    line."""
    if not os.path.isfile(labels_csv):
        raise sources.SourceError(f"labels CSV {labels_csv}: no such file")
    grades = {}
    with open(labels_csv, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        for column in (sources.KAGGLE_IMAGE_COLUMN, sources.KAGGLE_LABEL_COLUMN):
            if column not in (reader.fieldnames or []):
                raise sources.SourceError(f"labels CSV {labels_csv}: no {column!r} column; it "
                                          f"has {reader.fieldnames}")
        for line, row in enumerate(reader, start=2):
            try:
                grade = sources.parse_grade(row[sources.KAGGLE_LABEL_COLUMN])
            except ValueError as e:
                raise sources.SourceError(f"labels CSV {labels_csv}, line {line}: {e}") from None
            grades[os.path.splitext(row[sources.KAGGLE_IMAGE_COLUMN].strip())[0]] = grade
    return grades


def labelled_photographs(images_dir: str, quality_csv: str,
                         labels_csv: Optional[str] = None) -> Labelled:
    """The photographs of ``images_dir`` that ``quality_csv`` grades.

    Args:
      images_dir: a folder of ``<id>.jpeg`` (or .jpg/.png) photographs.
      quality_csv: EyeQ-format quality labels (``image,quality``; EyeQ's files as published).
      labels_csv: optional Kaggle DR grades (``image,level``), to say what the operating point
        costs in referable-DR photographs.

    Returns:
      A ``Labelled``; ids the CSV lists without a photograph in the folder are in ``skipped``.

    Raises:
      SourceError: a missing folder or file, a malformed CSV, or no photograph matched.
    """
    quality = sources.read_eyeq_quality(quality_csv)
    files = _image_files(images_dir)
    ids = [i for i in quality if i in files]
    skipped = [(i, f"no photograph {i}.* in {images_dir}") for i in quality if i not in files]
    if not ids:
        raise sources.SourceError(f"none of the {len(quality)} images {quality_csv} lists is in "
                                  f"{images_dir} (expected files named <id>.jpeg)")
    grades = read_dr_grades(labels_csv) if labels_csv else None
    dr = None
    if grades is not None:
        dr = np.asarray([grades.get(i, -1) for i in ids], np.int64)
    return Labelled(np.asarray(ids, str), [files[i] for i in ids],
                    np.asarray([quality[i] for i in ids], np.int64),
                    np.asarray([sources.parse_image_id(i)[0] for i in ids], str), dr, skipped)


def _read_checked(paths: Sequence[str], config: PreprocessConfig):
    readable, errors = [], {}
    for path in paths:
        try:
            data = image_io.read_file_bytes(path)
            image_io.check_image_bytes(data, path, config)
            readable.append((path, data))
        except image_io.ImageReadError as e:
            errors[path] = e.problem
    return readable, errors


def _measure_chunk(readable, config, settings, errors):
    """Measures of the readable files of a chunk; a file the decoder refuses fails alone."""
    try:
        return [p for p, _ in readable], *quality_measures.measure_encoded(
            [d for _, d in readable], config, settings)
    except tf.errors.InvalidArgumentError:
        kept, rows, found = [], [], []
        for path, data in readable:
            try:
                m, f = quality_measures.measure_encoded([data], config, settings)
            except tf.errors.InvalidArgumentError:
                errors[path] = "could not be decoded"
                continue
            kept.append(path)
            rows.append(m[0])
            found.append(f[0])
        shape = (len(kept), quality_measures.NUM_MEASURES)
        return kept, np.asarray(rows, np.float32).reshape(shape), np.asarray(found, bool)


def measure_files(paths: Sequence[str], batch_size: int = 16, quiet: bool = True,
                  config: PreprocessConfig = PREPROCESS, settings: QualityConfig = QUALITY):
    """The measures of photograph files.

    Returns:
      (measures (N, F) float32, found (N,) bool, errors {path: reason}); rows of files in
      ``errors`` are zeros with found False.
    """
    paths = list(paths)
    result = np.zeros((len(paths), quality_measures.NUM_MEASURES), np.float32)
    found = np.zeros(len(paths), bool)
    row_of = {p: i for i, p in enumerate(paths)}
    errors: Dict[str, str] = {}
    bar = progress.progress(total=len(paths), desc="measuring", unit="img", quiet=quiet)
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        readable, chunk_errors = _read_checked(chunk, config)
        errors.update(chunk_errors)
        if readable:
            kept, values, flags = _measure_chunk(readable, config, settings, errors)
            rows = [row_of[p] for p in kept]
            result[rows], found[rows] = values, flags
        bar.update(len(chunk))
    bar.close()
    return result, found, errors


def _cache_key(paths: Sequence[str], config: PreprocessConfig, settings: QualityConfig) -> str:
    stamp = hashlib.sha256()
    for path in paths:
        st = os.stat(path)
        stamp.update(f"{os.path.abspath(path)}\t{st.st_size}\t{st.st_mtime_ns}\n".encode(
            "utf-8", errors="surrogateescape"))
    return json.dumps({"files": stamp.hexdigest(), "measures": quality_measures.MEASURE_NAMES,
                       "preprocessing": dataclasses.asdict(config),
                       "settings": dataclasses.asdict(settings)}, sort_keys=True, default=str)


def cached_measures(paths: Sequence[str], cache_path: Optional[str], batch_size: int = 16,
                    quiet: bool = True, config: PreprocessConfig = PREPROCESS,
                    settings: QualityConfig = QUALITY):
    """``measure_files``, read from / written to ``cache_path`` (an .npz) when it was written
    for the same files (paths, sizes, times), measures and settings."""
    key = _cache_key(paths, config, settings) if cache_path else None
    if cache_path and os.path.isfile(cache_path):
        with np.load(cache_path, allow_pickle=False) as cached:
            if str(cached["key"]) == key:
                errors = json.loads(str(cached["errors"]))
                return cached["measures"], cached["found"], errors
    values, found, errors = measure_files(paths, batch_size, quiet, config, settings)
    if cache_path:
        os.makedirs(os.path.dirname(os.path.abspath(cache_path)), exist_ok=True)
        atomic.save_npz(cache_path, {"key": np.asarray(key), "measures": values,
                                     "found": found, "errors": np.asarray(json.dumps(errors))})
    return values, found, errors
