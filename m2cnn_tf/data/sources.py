"""Where photographs come from: list every input of a dataset, and every input that must be skipped.

A source turns what the user has (the Kaggle download, a CSV, class folders, a TFDS copy, the
built-in synthetic generator, or one of the public DR datasets of ``datasets``) into
``InputRecord``s — one photograph with its grade, patient and
(for Kaggle's Public/Private test labels) its fixed split — plus ``SkippedInput``s for every row or
file that cannot be used, each with a reason. Nothing is dropped silently.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from typing import Dict, List, Optional, Sequence, Tuple

from m2cnn_tf.config import NUM_GRADES, QUALITY_NAMES, setting
from m2cnn_tf.data import datasets
# The types and rules every source shares, re-exported: callers name them sources.InputRecord …
from m2cnn_tf.data.inputs import (  # noqa: F401
    IMAGE_EXTENSIONS, KAGGLE_ID, InputRecord, SkippedInput, SourceError, is_inside, parse_grade,
    parse_image_id)

# Kaggle's retinopathy_solution.csv: "Usage" says which leaderboard an image scored on.
KAGGLE_USAGE_SPLITS = {"Public": "validation", "Private": "test"}
KAGGLE_IMAGE_COLUMN = "image"
KAGGLE_LABEL_COLUMN = "level"
KAGGLE_USAGE_COLUMN = "Usage"
SPLITS = ("train", "validation", "test")
SOURCES = ("kaggle", "csv", "folders", "tfds", "synthetic") + datasets.DATASET_NAMES


def _require_dir(path: str, flag: str) -> str:
    if not path:
        raise SourceError(f"{flag} is required for this source")
    if not os.path.isdir(path):
        raise SourceError(f"{flag}={path}: no such folder")
    return path


def _read_csv(path: str, required: Sequence[str], what: str = "labels CSV"
              ) -> Tuple[List[Dict[str, str]], List[str]]:
    """Rows of a CSV (BOM and CRLF tolerated); raises SourceError naming missing columns."""
    if not os.path.isfile(path):
        raise SourceError(f"{what} {path}: no such file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            rows = [{(k or "").strip(): (v or "") for k, v in row.items()} for row in reader]
    except UnicodeDecodeError as e:
        raise SourceError(f"{what} {path}: not UTF-8 text ({e.reason} at byte {e.start})")
    missing = [c for c in required if c not in columns]
    if missing:
        raise SourceError(f"{what} {path}: missing column(s) {', '.join(missing)}; "
                          f"it has {', '.join(columns) or 'no header'}")
    return rows, columns


# EyeQ (Fu et al., MICCAI 2019) image-quality grades: its published Label_EyeQ_train.csv and
# Label_EyeQ_test.csv have the columns ",image,quality,DR_grade" (an unnamed index first) with
# image = "<id>.jpeg"; a copy may keep the image without its extension ("image,quality").
EYEQ_IMAGE_COLUMN = "image"
EYEQ_QUALITY_COLUMN = "quality"


def read_eyeq_quality(path: str) -> Dict[str, int]:
    """EyeQ's quality grade of every image an EyeQ-format CSV lists.

    Args:
      path: a CSV with columns ``image`` and ``quality`` (others, like EyeQ's unnamed index and
        ``DR_grade``, are ignored); ``image`` is an id with or without an image extension
        (``10_left.jpeg`` or ``10_left``), ``quality`` is 0 (Good), 1 (Usable) or 2 (Reject).

    Returns:
      ``{image_id: quality}`` with ids without extension.

    Raises:
      SourceError: no such file, a missing column, or a malformed row (an empty id, a quality
        that is not 0, 1 or 2, an id listed twice with different grades) — naming the file, the
        line and what was expected.
    """
    rows, _ = _read_csv(path, [EYEQ_IMAGE_COLUMN, EYEQ_QUALITY_COLUMN], "quality CSV")
    quality: Dict[str, int] = {}
    first_line: Dict[str, int] = {}
    expected = ", ".join(f"{q} ({name})" for q, name in enumerate(QUALITY_NAMES))
    for line, row in enumerate(rows, start=2):
        name = row[EYEQ_IMAGE_COLUMN].strip()
        stem, ext = os.path.splitext(name)
        image_id = stem if ext.lower() in IMAGE_EXTENSIONS else name
        value = row[EYEQ_QUALITY_COLUMN].strip()
        if not image_id:
            raise SourceError(f"quality CSV {path}, line {line}: the image column is empty; "
                              "expected an image id such as 10_left or 10_left.jpeg")
        if value not in {str(q) for q in range(len(QUALITY_NAMES))}:
            raise SourceError(f"quality CSV {path}, line {line}: quality {value!r} for "
                              f"{image_id}; expected one of {expected}")
        if image_id in quality and quality[image_id] != int(value):
            raise SourceError(f"quality CSV {path}, line {line}: {image_id} has quality "
                              f"{value} here but {quality[image_id]} on line "
                              f"{first_line[image_id]}; expected one grade per image")
        quality.setdefault(image_id, int(value))
        first_line.setdefault(image_id, line)
    return quality


def with_quality(inputs: Sequence[InputRecord], quality: Dict[str, int]) -> List[InputRecord]:
    """``inputs`` with the ``quality`` label added to each whose id ``quality`` lists.

    An input is matched by its image id, or by the last part of it (a ``csv`` source's id keeps
    the sub-folders of its path); inputs not listed keep their labels unchanged.
    """
    out = []
    for record in inputs:
        value = quality.get(record.image_id, quality.get(record.image_id.rsplit("/", 1)[-1]))
        if value is not None:
            labels = {**record.label_dict(), "quality": value}
            record = dataclasses.replace(record, labels=tuple(sorted(labels.items())))
        out.append(record)
    return out


def _not_utf8(name: str) -> Optional[str]:
    """Why a file name cannot become an image id (ids are stored as UTF-8 text), or None.

    Python lists a file name that is not valid UTF-8 with surrogate escapes in place of the bad
    bytes; such a name cannot be written into a record or matched to a row of a text CSV.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raw = os.fsencode(name)
        return f"file name {raw!r} is not valid UTF-8; rename the file (ids are stored as text)"
    return None


def _index_images(images_dir: str) -> Dict[str, str]:
    """{file name without extension: file name} for every image file in a folder."""
    index = {}
    for name in sorted(os.listdir(images_dir)):
        stem, ext = os.path.splitext(name)
        if ext.lower() in IMAGE_EXTENSIONS and stem not in index:
            index[stem] = name
    return index


def kaggle_inputs(
    images_dirs: Sequence[str], labels_csvs: Sequence[str]
) -> Tuple[List[InputRecord], List[SkippedInput]]:
    """The Kaggle EyePACS layout: ``<id>.jpeg`` files and ``image,level[,Usage]`` CSVs.

    Args:
      images_dirs: one folder per CSV (``train/``, ``test/``), or one folder for all.
      labels_csvs: ``trainLabels.csv`` and/or ``retinopathy_solution.csv``; rows with a
        ``Usage`` of Public go to the validation split, Private to test, others are assigned.

    Returns:
      (inputs, skipped).
    """
    if not labels_csvs:
        raise SourceError("--labels_csv is required for --source=kaggle")
    if len(images_dirs) == 1 and len(labels_csvs) > 1:
        images_dirs = list(images_dirs) * len(labels_csvs)
    if len(images_dirs) != len(labels_csvs):
        raise SourceError(f"give one --images_dir per --labels_csv (got {len(images_dirs)} "
                          f"folders for {len(labels_csvs)} CSVs)")
    inputs: List[InputRecord] = []
    skipped: List[SkippedInput] = []
    seen: Dict[str, str] = {}
    indexes: Dict[str, Dict[str, str]] = {}
    labelled: Dict[str, set] = {}
    csvs_of: Dict[str, List[str]] = {}
    for images_dir, labels_csv in zip(images_dirs, labels_csvs):
        _require_dir(images_dir, "--images_dir")
        rows, columns = _read_csv(labels_csv, [KAGGLE_IMAGE_COLUMN, KAGGLE_LABEL_COLUMN])
        if images_dir not in indexes:
            indexes[images_dir] = _index_images(images_dir)
        labelled.setdefault(images_dir, set())
        csvs_of.setdefault(images_dir, []).append(labels_csv)
        for line, row in enumerate(rows, start=2):
            where = f"{labels_csv}:{line}"
            image_id = row[KAGGLE_IMAGE_COLUMN].strip()
            if not image_id:
                skipped.append(SkippedInput(where, "row has no image id"))
                continue
            labelled[images_dir].add(image_id)
            record = _kaggle_record(image_id, row, where, images_dir, indexes[images_dir],
                                    KAGGLE_USAGE_COLUMN in columns, seen, skipped)
            if record is not None:
                inputs.append(record)
    for images_dir, index in indexes.items():
        for stem, name in index.items():
            if stem not in labelled[images_dir]:
                skipped.append(SkippedInput(os.path.join(images_dir, name), _not_utf8(name) or (
                    f"no row for this image in {', '.join(csvs_of[images_dir])}")))
    return inputs, skipped


def _kaggle_record(image_id: str, row: Dict[str, str], where: str, images_dir: str,
                   index: Dict[str, str], has_usage: bool, seen: Dict[str, str],
                   skipped: List[SkippedInput]) -> Optional[InputRecord]:
    """The input of one Kaggle label row, or None with the reason added to ``skipped``.

    Args:
      image_id: the row's image id; where: ``<csv>:<line>``, for messages.
      row: the CSV row; has_usage: whether the CSV has Kaggle's Usage column.
      images_dir: the folder of the row's photographs; index: its ``_index_images``.
      seen: ids met so far, with the row that first had them; skipped: the list to add to.
    """
    name = index.get(image_id)
    file = os.path.join(images_dir, name) if name else os.path.join(images_dir, image_id)
    grade = _grade_of_new_id(image_id, file, where, row[KAGGLE_LABEL_COLUMN], seen, skipped)
    if grade is None:
        return None
    split = None
    if has_usage:
        usage = row[KAGGLE_USAGE_COLUMN].strip()
        if usage not in KAGGLE_USAGE_SPLITS:
            skipped.append(SkippedInput(file, f"Usage {usage!r} is not one of "
                                              f"{', '.join(KAGGLE_USAGE_SPLITS)} ({where})"))
            return None
        split = KAGGLE_USAGE_SPLITS[usage]
    if name is None:
        skipped.append(SkippedInput(file, f"image missing: no {image_id}"
                                          f"{{{','.join(IMAGE_EXTENSIONS)}}} in "
                                          f"{images_dir} for {where}"))
        return None
    patient, eye = parse_image_id(image_id)
    return InputRecord(image_id, patient, eye, grade, "file", file, split)


def _grade_of_new_id(image_id: str, file: str, where: str, label: str, seen: Dict[str, str],
                     skipped: List[SkippedInput]) -> Optional[int]:
    """The grade of a label row, or None with the reason added to ``skipped``: a repeated id
    (``seen`` maps ids to the row that first had them) or a label that is not a grade."""
    if image_id in seen:
        skipped.append(SkippedInput(file, f"duplicate id {image_id} ({where}; first at "
                                          f"{seen[image_id]})"))
        return None
    seen[image_id] = where
    try:
        return parse_grade(label)
    except ValueError as e:
        skipped.append(SkippedInput(file, f"{e} ({where})"))
        return None


def csv_inputs(
    images_dir: str,
    labels_csv: str,
    image_column: str,
    label_column: str,
    patient_column: Optional[str] = None,
) -> Tuple[List[InputRecord], List[SkippedInput]]:
    """Any CSV of (image path, grade[, patient]); paths relative to ``images_dir``.

    A path may omit its extension; a path that resolves outside ``images_dir`` is refused.
    """
    _require_dir(images_dir, "--images_dir")
    required = [image_column, label_column] + ([patient_column] if patient_column else [])
    rows, _ = _read_csv(labels_csv, required)
    inputs, skipped, seen = [], [], {}
    for line, row in enumerate(rows, start=2):
        where = f"{labels_csv}:{line}"
        relative = row[image_column].strip()
        if not relative:
            skipped.append(SkippedInput(where, "row has no image path"))
            continue
        path = os.path.join(images_dir, relative)
        if os.path.isabs(relative) or not is_inside(images_dir, path):
            skipped.append(SkippedInput(relative, f"path leaves --images_dir={images_dir} "
                                                  f"({where}); refused"))
            continue
        if not os.path.splitext(path)[1]:
            path = next((path + ext for ext in IMAGE_EXTENSIONS if os.path.isfile(path + ext)),
                        path)
        image_id = os.path.splitext(os.path.normpath(relative))[0].replace(os.sep, "/")
        grade = _grade_of_new_id(image_id, path, where, row[label_column], seen, skipped)
        if grade is None:
            continue
        if not os.path.isfile(path):
            skipped.append(SkippedInput(path, f"image missing for {where}"))
            continue
        patient, eye = parse_image_id(os.path.basename(image_id))
        if patient_column:
            patient = row[patient_column].strip() or patient
        inputs.append(InputRecord(image_id, patient, eye, grade, "file", path))
    return inputs, skipped


def folder_inputs(images_dir: str) -> Tuple[List[InputRecord], List[SkippedInput]]:
    """Class folders ``images_dir/0`` … ``images_dir/4`` holding photographs of each grade."""
    _require_dir(images_dir, "--images_dir")
    inputs, skipped, seen = [], [], {}
    grade_dirs = [str(g) for g in range(NUM_GRADES)]
    present = [d for d in grade_dirs if os.path.isdir(os.path.join(images_dir, d))]
    if not present:
        raise SourceError(f"--images_dir={images_dir} has none of the class folders "
                          f"{', '.join(grade_dirs)}")
    for entry in sorted(os.listdir(images_dir)):
        if os.path.isdir(os.path.join(images_dir, entry)) and entry not in grade_dirs:
            skipped.append(SkippedInput(os.path.join(images_dir, entry),
                                        f"folder is not a grade 0–{NUM_GRADES - 1}; not read"))
    for grade_dir in present:
        folder = os.path.join(images_dir, grade_dir)
        for name in sorted(os.listdir(folder)):
            path = os.path.join(folder, name)
            stem, ext = os.path.splitext(name)
            if ext.lower() not in IMAGE_EXTENSIONS or not os.path.isfile(path):
                skipped.append(SkippedInput(path, "not a .jpeg/.jpg/.png file"))
                continue
            if _not_utf8(name):
                skipped.append(SkippedInput(path, _not_utf8(name)))
                continue
            if stem in seen:
                skipped.append(SkippedInput(path, f"duplicate id {stem} (also {seen[stem]})"))
                continue
            seen[stem] = path
            patient, eye = parse_image_id(stem)
            inputs.append(InputRecord(stem, patient, eye, int(grade_dir), "file", path))
    return inputs, skipped


def synthetic_inputs(num_images: int, seed: int, width: int = 0) -> Tuple[List[InputRecord], List[SkippedInput]]:
    """``num_images`` synthetic photographs, both eyes of each patient, grades balanced.

    The photograph itself is drawn by the worker that preprocesses it
    (``synthetic:<seed>:<width>:<eye>``, width 0 = camera size).
    """
    if num_images < 1:
        raise SourceError(f"--num_images must be at least 1, got {num_images}")
    inputs = []
    for i in range(num_images):
        patient, eye = str(i // 2), ("left", "right")[i % 2]
        grade = (i * 7 + seed) % NUM_GRADES  # every grade, spread over patients
        inputs.append(InputRecord(f"{patient}_{eye}", patient, eye, grade, "synthetic",
                                  f"synthetic:{seed * 1_000_003 + i}:{width}:{eye}"))
    return inputs, []


TFDS_NAME = "diabetic_retinopathy_detection/original"
TFDS_SPLITS = ("train", "validation", "test")


def tfds_inputs(data_dir: Optional[str], manual_dir: Optional[str]
                ) -> Tuple[List[InputRecord], List[SkippedInput], Dict[str, bytes]]:
    """Kaggle EyePACS through ``tensorflow_datasets`` (its train/validation/test splits).

    TFDS needs the Kaggle files in ``manual_dir`` the first time (it cannot download them).
    The encoded photographs are returned in memory, keyed by location.
    """
    import tensorflow_datasets as tfds

    builder = tfds.builder(TFDS_NAME, data_dir=data_dir)
    download_config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
    try:
        builder.download_and_prepare(download_config=download_config)
    except Exception as e:  # TFDS raises several types for a missing manual download
        raise SourceError(f"TFDS could not prepare {TFDS_NAME}: {e}") from None
    inputs, skipped, payloads = [], [], {}
    known = set(builder.info.splits.keys())  # empty when mocked (tfds.testing.mock_data)
    for split in TFDS_SPLITS:
        if known and split not in known:
            continue
        dataset = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()})
        for example in tfds.as_numpy(dataset):
            name = example["name"]
            image_id = name.decode("utf-8") if isinstance(name, bytes) else str(name)
            location = f"tfds:{split}:{image_id}"
            try:
                grade = parse_grade(example["label"])
            except ValueError as e:
                skipped.append(SkippedInput(location, str(e)))
                continue
            patient, eye = parse_image_id(image_id)
            payloads[location] = bytes(example["image"])
            inputs.append(InputRecord(image_id, patient, eye, grade, "tfds", location, split))
    return inputs, skipped, payloads


@dataclasses.dataclass(frozen=True)
class SourceOptions:
    """Which photographs a build reads (build_tfrecords.py's source flags; ``select_inputs``)."""

    source: Optional[str] = setting(
        None, "Where the photographs come from: kaggle (<id>.jpeg files + Kaggle label CSVs), "
        "csv (any CSV of image path and grade), folders (class sub-folders 0…4), tfds "
        "(tensorflow_datasets' diabetic_retinopathy_detection), synthetic (built-in generator, "
        "no download); or a public DR dataset read from --dataset_dir as downloaded: "
        + ", ".join(datasets.DATASET_NAMES) + " (README: 'Other public datasets').",
        choices=SOURCES)
    dataset_dir: Optional[str] = setting(
        None, "The public datasets: the folder as downloaded (aptos2019: holds train.csv; "
        "messidor2: messidor_data.csv, messidor-2.csv, IMAGES/; idrid: the 'B. Disease Grading' "
        "folder; ddr: holds DR_grading/; deepdrid: holds regular_fundus_images/; eyeq: Kaggle's "
        "train/ and test/ with Label_EyeQ_{train,test}.csv).")
    external_test: bool = setting(
        False, "The public datasets: put every photograph in the test split, whatever the "
        "dataset's own split — for a dataset that only validates a model trained elsewhere.")
    images_dir: tuple[str, ...] = setting(
        (), "Folder(s) of photographs. kaggle: one per --labels_csv (e.g. train,test), or one "
        "for all; csv: paths in the CSV are relative to it; folders: holds the sub-folders 0…4.")
    labels_csv: tuple[str, ...] = setting(
        (), "kaggle: trainLabels.csv and/or retinopathy_solution.csv (image,level[,Usage]; "
        "Usage Public → validation, Private → test); csv: one CSV with --image_column and "
        "--label_column.")
    image_column: str = setting(
        KAGGLE_IMAGE_COLUMN, "csv: column holding the image path (extension optional), "
        "relative to --images_dir.")
    label_column: str = setting(KAGGLE_LABEL_COLUMN, "csv: column holding the grade 0–4.")
    patient_column: Optional[str] = setting(
        None, "csv: optional column holding the patient id (default: parsed from "
        "<patient>_<left|right> file names, else the image).")
    tfds_data_dir: Optional[str] = setting(None, "tfds: TFDS data_dir (default: TFDS's own).")
    tfds_manual_dir: Optional[str] = setting(
        None, "tfds: folder with the Kaggle download, needed the first time TFDS prepares "
        "diabetic_retinopathy_detection.")
    num_images: int = setting(100, "synthetic: how many photographs to draw.")
    synthetic_width: int = setting(
        0, "synthetic: photograph width in pixels (0: camera-sized, 2000–3500).")
    quality_csv: Optional[str] = setting(
        None, "Any source: an EyeQ-format quality CSV (image,quality with 0 Good, 1 Usable, "
        "2 Reject; EyeQ's Label_EyeQ_*.csv as published). Each record whose image it lists "
        "stores its quality label; the manifest counts known and unknown.")


@dataclasses.dataclass(frozen=True)
class Selection:
    """A source's photographs, ready for ``builder.build``."""

    inputs: List[InputRecord]
    skipped: List[SkippedInput]  # rejected already (label errors, missing files...)
    payloads: Dict[str, bytes]  # encoded photographs held in memory (tfds), by location
    images_root: Optional[str]  # the records store file paths relative to this folder
    info: Dict  # how the source was given, recorded in the manifest


def select_inputs(options: SourceOptions, seed: int = 0) -> Selection:
    """The inputs of the source ``options`` name — the one way every script picks a source.

    Args:
      options: the source and its options (unused options of other sources are ignored).
      seed: the build's seed; the synthetic source draws its photographs from it.

    Returns:
      A Selection.

    Raises:
      SourceError: an unknown source, or options the source cannot use (missing folder or
        column, the wrong number of folders or CSVs).
    """
    source, images_dir, labels_csv = options.source, list(options.images_dir), list(
        options.labels_csv)
    if options.external_test and source not in datasets.DATASETS:
        raise SourceError(f"--external_test applies to the public datasets "
                          f"({', '.join(datasets.DATASET_NAMES)}), not --source={source}")
    info: Dict = {"kind": source}
    payloads: Dict[str, bytes] = {}
    images_root = images_dir[0] if images_dir else None
    if source == "kaggle":
        inputs, skipped = kaggle_inputs(images_dir, labels_csv)
        info.update(images_dir=images_dir, labels_csv=labels_csv)
        if len(set(images_dir)) > 1:
            images_root = os.path.commonpath([os.path.abspath(d) for d in images_dir])
    elif source == "csv":
        if len(images_dir) != 1 or len(labels_csv) != 1:
            raise SourceError("--source=csv needs one --images_dir and one --labels_csv")
        inputs, skipped = csv_inputs(images_dir[0], labels_csv[0], options.image_column,
                                     options.label_column, options.patient_column)
        info.update(images_dir=images_dir, labels_csv=labels_csv,
                    image_column=options.image_column, label_column=options.label_column)
    elif source == "folders":
        if len(images_dir) != 1:
            raise SourceError("--source=folders needs one --images_dir")
        inputs, skipped = folder_inputs(images_dir[0])
        info.update(images_dir=images_dir)
    elif source == "tfds":
        inputs, skipped, payloads = tfds_inputs(options.tfds_data_dir, options.tfds_manual_dir)
        info.update(name=TFDS_NAME)
    elif source == "synthetic":
        inputs, skipped = synthetic_inputs(options.num_images, seed, options.synthetic_width)
        info.update(num_images=options.num_images, synthetic_width=options.synthetic_width)
    elif source in datasets.DATASETS:
        read = datasets.read_dataset(source, options.dataset_dir, options.external_test)
        inputs, skipped, info, images_root = read.inputs, read.skipped, read.info, \
            options.dataset_dir
    else:
        raise SourceError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    if options.quality_csv:
        quality = read_eyeq_quality(options.quality_csv)
        inputs = with_quality(inputs, quality)
        info.update(quality_csv=options.quality_csv, quality_listed=len(quality),
                    quality_matched=sum("quality" in r.label_dict() for r in inputs))
    return Selection(inputs, skipped, payloads, images_root, info)
