"""The public DR datasets, read as they are downloaded.

Each dataset is a small description (``Dataset``): where its label files and photographs lie
relative to the folder the user downloaded, its columns, which rows its own rules leave out
(an "ungradable" label), how its patients and eyes are known, its labels beyond the grade, its
split rule, its quirks and the caveats of validating on it. One reader, ``read_dataset``, turns
any description into ``InputRecord``s and ``SkippedInput``s, and into the facts the manifest
records (``DatasetInputs.info``).

The reader is strict where a download is broken: a missing label file, a renamed column, a grade
outside the scale, a photograph listed but absent, a name listed twice — each is reported with
the file, the line and what was expected, all of them at once, before anything is built.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import os
import re
from typing import Dict, List, Optional, Tuple

from m2cnn_tf.config import NUM_GRADES
from m2cnn_tf.data.inputs import (IMAGE_EXTENSIONS, InputRecord, SkippedInput, SourceError,
                                  is_inside, parse_grade, parse_image_id)

# How a dataset tells which photographs belong to one patient.
PATIENT_PER_IMAGE = "image"  # it does not: each photograph is its own patient
PATIENT_KAGGLE_ID = "kaggle_id"  # the image name is <patient>_<left|right>
PATIENT_COLUMN = "column"  # a column of the label file
PATIENT_EXAM_LIST = "exam_list"  # a separate list of the photographs of each exam

ICDR_SCALE = ("ICDR 0–4: 0 no DR, 1 mild NPDR, 2 moderate NPDR, 3 severe NPDR, 4 PDR")
HELD_OUT = "--val_fraction of its patients held out for validation"
MAX_PROBLEMS_SHOWN = 10  # a broken download can fail on every row; the first ones say why


@dataclasses.dataclass(frozen=True)
class Table:
    """One label file and the folder of the photographs it lists."""

    labels: str  # path of the label file, relative to the dataset folder
    images: str  # folder of its photographs, relative to the dataset folder
    split: Optional[str] = None  # its official split; None: train, with HELD_OUT
    id_prefix: str = ""  # put before each image id (IDRiD reuses its names in both sets)
    alternatives: Tuple[str, ...] = ()  # other places the label file is found in


@dataclasses.dataclass(frozen=True)
class Label:
    """A label beyond the grade: its name in the records, its column, its values."""

    name: str  # a key of records.EXTRA_LABELS
    column: str
    values: Tuple[int, ...]  # the values the dataset uses; any other leaves the label unknown
    scale: str  # what the values mean (recorded in the manifest)


@dataclasses.dataclass(frozen=True)
class Exclusion:
    """Rows the dataset's own rule leaves ungraded: ``column`` holds ``value``."""

    column: str
    value: str
    reason: str


@dataclasses.dataclass(frozen=True)
class ExamList:
    """A file naming the photographs of each exam, one exam a line: ``left;right``."""

    path: str  # relative to the dataset folder
    delimiter: str
    eyes: Tuple[str, ...]  # the eye of each field of a line, in order


@dataclasses.dataclass(frozen=True)
class Dataset:
    """How one public dataset is laid out and read (see the module docstring)."""

    name: str  # the --source name
    title: str
    tables: Tuple[Table, ...]
    image_column: str
    # (eye, column) of the grade: one column for every photograph (eye ""), or one per side, of
    # which each row fills exactly one — the filled one names the photograph's eye.
    grade_columns: Tuple[Tuple[str, str], ...]
    # The photograph's path in its table's folder: {image} is the image cell, {patient} the
    # patient cell. A different letter case or image extension on disk is accepted.
    image_path: str = "{image}"
    # Headerless text files: the names of the whitespace-separated fields of a line. Empty:
    # a CSV with a header.
    fields: Tuple[str, ...] = ()
    patients: str = PATIENT_PER_IMAGE
    patient_column: Optional[str] = None
    exam_list: Optional[ExamList] = None
    # A regular expression whose group "eye" is the side an image name claims (l or r); the
    # reader notes names that disagree with the side of their grade column.
    eye_in_name: Optional[str] = None
    labels: Tuple[Label, ...] = ()
    exclusions: Tuple[Exclusion, ...] = ()
    grade_scale: str = ICDR_SCALE
    split_rule: str = ""
    layout: str = ""  # the folders and files as downloaded, for error messages
    quirks: Tuple[str, ...] = ()
    caveats: Tuple[str, ...] = ()  # what to keep in mind when validating a model on it


DATASETS: Dict[str, Dataset] = {d.name: d for d in (
    Dataset(
        name="aptos2019",
        title="APTOS 2019 Blindness Detection (Kaggle), labelled training set",
        tables=(Table("train.csv", "train_images"),),
        image_column="id_code",
        grade_columns=(("", "diagnosis"),),
        image_path="{image}.png",
        split_rule=f"no labelled test set: train.csv is split by image, {HELD_OUT}",
        layout="train.csv (id_code,diagnosis) and train_images/<id_code>.png",
        quirks=("no patient ids are published: each photograph is its own patient, so both eyes "
                "of a person may fall into different splits",
                "test.csv has no grades (the competition's test labels were never released) and "
                "is not read"),
        caveats=("APTOS publishes no patient ids: bootstrap intervals resample images, and the "
                 "two eyes of a person count as independent",),
    ),
    Dataset(
        name="messidor2",
        title="Messidor-2 with the adjudicated grades of Krause et al. (2018)",
        tables=(Table("messidor_data.csv", "IMAGES"),),
        image_column="image_id",
        grade_columns=(("", "adjudicated_dr_grade"),),
        patients=PATIENT_EXAM_LIST,
        exam_list=ExamList("messidor-2.csv", ";", ("left", "right")),
        labels=(Label("dme", "adjudicated_dme", (0, 1),
                      "adjudicated_dme: 1 referable diabetic macular oedema, 0 not"),
                Label("gradable", "adjudicated_gradable", (0, 1),
                      "adjudicated_gradable: 1 gradable (0 is excluded, see exclusions)")),
        exclusions=(Exclusion("adjudicated_gradable", "0",
                              "ungradable (adjudicated_gradable = 0): no adjudicated grade"),),
        split_rule=f"no official split: split by exam (both photographs together), {HELD_OUT}; "
                   "with --external_test everything is test",
        layout="messidor_data.csv (image_id,adjudicated_dr_grade,adjudicated_dme,"
               "adjudicated_gradable; from Kaggle's messidor2-dr-grades), messidor-2.csv (the "
               "exams, left;right) and IMAGES/ (from ADCIS)",
        quirks=("image_id carries an extension whose case may differ from the file on disk "
                "(IM000012.jpg in the CSV, IM000012.JPG in IMAGES/): names are matched ignoring "
                "case",
                "the two photographs of an exam (messidor-2.csv, left;right) share a patient id: "
                "the exam's first photograph"),
        caveats=("Referable DR on Messidor-2 in the literature (Abràmoff 2016, Gulshan 2016, "
                 "Krause 2018) is moderate NPDR or worse and/or referable DME; here it is grade "
                 "≥ 2 alone (the adjudicated DME is in the records as dme), so sensitivity and "
                 "specificity are not directly comparable with those papers",),
    ),
    Dataset(
        name="idrid",
        title="IDRiD, B. Disease Grading",
        tables=(
            Table("2. Groundtruths/a. IDRiD_Disease Grading_Training Labels.csv",
                  "1. Original Images/a. Training Set", None, "train/"),
            Table("2. Groundtruths/b. IDRiD_Disease Grading_Testing Labels.csv",
                  "1. Original Images/b. Testing Set", "test", "test/"),
        ),
        image_column="Image name",
        grade_columns=(("", "Retinopathy grade"),),
        image_path="{image}.jpg",
        labels=(Label("dme", "Risk of macular edema", (0, 1, 2),
                      "Risk of macular edema: 0 no hard exudates, 1 exudates outside one disc "
                      "diameter of the macula centre, 2 within it"),),
        split_rule=f"official: a. Training Set → train ({HELD_OUT}), b. Testing Set → test",
        layout="the 'B. Disease Grading' folder: 1. Original Images/{a. Training Set, b. Testing "
               "Set}/IDRiD_NNN.jpg and 2. Groundtruths/{a. IDRiD_Disease Grading_Training "
               "Labels.csv, b. IDRiD_Disease Grading_Testing Labels.csv}",
        quirks=("the same names (IDRiD_001 …) occur in both sets for different photographs: ids "
                "are prefixed train/ and test/",
                "the CSVs have trailing empty columns and a trailing space in 'Risk of macular "
                "edema '; both are ignored",
                "no patient ids are published: each photograph is its own patient"),
        caveats=("IDRiD publishes no patient ids: bootstrap intervals resample images",
                 "IDRiD's photographs were selected for adequate quality and a spread of grades, "
                 "all macula-centred from one camera: not a screening population"),
    ),
    Dataset(
        name="ddr",
        title="DDR (OIA-DDR), DR_grading",
        tables=(Table("DR_grading/train.txt", "DR_grading/train", "train"),
                Table("DR_grading/valid.txt", "DR_grading/valid", "validation"),
                Table("DR_grading/test.txt", "DR_grading/test", "test")),
        image_column="image",
        grade_columns=(("", "grade"),),
        fields=("image", "grade"),
        exclusions=(Exclusion("grade", "5", "ungradable (DDR label 5)"),),
        split_rule="official: train.txt → train, valid.txt → validation, test.txt → test",
        layout="DR_grading/{train,valid,test}/ with DR_grading/{train,valid,test}.txt "
               "('<file> <label>' per line)",
        quirks=("label 5 marks an ungradable photograph: excluded, listed in errors.csv",
                "no patient ids are published: each photograph is its own patient"),
        caveats=("DDR publishes no patient ids: bootstrap intervals resample images",),
    ),
    Dataset(
        name="deepdrid",
        title="DeepDRiD (ISBI 2020), regular fundus images",
        tables=(Table("regular_fundus_images/regular-fundus-training/"
                      "regular-fundus-training.csv",
                      "regular_fundus_images/regular-fundus-training", "train"),
                Table("regular_fundus_images/regular-fundus-validation/"
                      "regular-fundus-validation.csv",
                      "regular_fundus_images/regular-fundus-validation", "validation")),
        image_column="image_id",
        grade_columns=(("left", "left_eye_DR_Level"), ("right", "right_eye_DR_Level")),
        image_path="Images/{patient}/{image}.jpg",
        patients=PATIENT_COLUMN,
        patient_column="patient_id",
        eye_in_name=r"_(?P<eye>[lr])\d+$",
        labels=(Label("patient_grade", "patient_DR_Level", tuple(range(NUM_GRADES)),
                      "patient_DR_Level: the patient's DR grade (ICDR 0–4)"),
                Label("gradable", "Overall quality", (0, 1),
                      "Overall quality: 1 good enough for grading, 0 not (the eye's grade is "
                      "given either way, so these photographs are built)")),
        split_rule="official: regular-fundus-training → train, regular-fundus-validation → "
                   "validation (Online-Challenge1&2-Evaluation has its grades in .xlsx files "
                   "and is not read)",
        layout="regular_fundus_images/regular-fundus-{training,validation}/ each with its "
               "regular-fundus-*.csv and Images/<patient_id>/<image_id>.jpg",
        quirks=("each photograph's grade is in the column of its side (left_eye_DR_Level or "
                "right_eye_DR_Level); the filled column gives its eye",
                "the image_path column (\\regular-fundus-training\\1\\1_l1.jpg) leaves out the "
                "Images folder: photographs are found at Images/<patient_id>/<image_id>.jpg"),
        caveats=("two photographs per eye (optic-disc and macula centred) carry the eye's grade; "
                 "bootstrap intervals resample patients (four photographs each)",),
    ),
    Dataset(
        name="eyeq",
        title="EyeQ (Fu et al., MICCAI 2019): quality grades of Kaggle EyePACS photographs",
        tables=(Table("Label_EyeQ_train.csv", "train", None,
                      alternatives=("data/Label_EyeQ_train.csv",)),
                Table("Label_EyeQ_test.csv", "test", "test",
                      alternatives=("data/Label_EyeQ_test.csv",))),
        image_column="image",
        grade_columns=(("", "DR_grade"),),
        patients=PATIENT_KAGGLE_ID,
        labels=(Label("quality", "quality", (0, 1, 2), "quality: 0 Good, 1 Usable, 2 Reject"),),
        split_rule=f"EyeQ's (= Kaggle's) sets: Label_EyeQ_train.csv → train ({HELD_OUT}), "
                   "Label_EyeQ_test.csv → test",
        layout="Kaggle's train/ and test/ folders (<id>.jpeg) with EyeQ's Label_EyeQ_train.csv "
               "and Label_EyeQ_test.csv (from its repository's data/ folder) beside them or in "
               "data/",
        quirks=("the CSVs start with an unnamed index column (,image,quality,DR_grade) and name "
                "the image <id>.jpeg; EyeQ's own preprocessing writes <id>.png, also found",
                "Reject-quality photographs keep their Kaggle grade and are built (quality = 2)"),
        caveats=("EyeQ is a subset of Kaggle EyePACS: not external to a model trained on "
                 "EyePACS (its train set is Kaggle's train set, its test set Kaggle's test set)",
                 "a third of its photographs are of Usable or Reject quality; compare with "
                 "quality = 0 alone for a clean-image figure"),
    ),
)}
DATASET_NAMES = tuple(DATASETS)


@dataclasses.dataclass(frozen=True)
class DatasetInputs:
    """A dataset's photographs: the records to build, the rows left out, what the manifest says
    about the source."""

    inputs: List[InputRecord]
    skipped: List[SkippedInput]
    info: Dict


@dataclasses.dataclass(frozen=True)
class _Row:
    file: str  # the label file
    line: int
    cells: Dict[str, str]

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


class _Problems:
    """Every fault of a download, with its file and line; raised together at the end."""

    def __init__(self):
        self.items: List[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}")

    def raise_if_any(self, dataset: Dataset, dataset_dir: str) -> None:
        if not self.items:
            return
        shown = self.items[:MAX_PROBLEMS_SHOWN]
        more = len(self.items) - len(shown)
        raise SourceError(
            f"{dataset.title} in {dataset_dir}: {len(self.items)} problem(s); nothing was built. "
            f"Expected layout: {dataset.layout}.\n  " + "\n  ".join(shown)
            + (f"\n  … and {more} more" if more else ""))


def _label_file(dataset: Dataset, dataset_dir: str, table: Table) -> str:
    """The path of a table's label file, or a SourceError naming every place looked in."""
    candidates = (table.labels,) + table.alternatives
    for relative in candidates:
        path = os.path.join(dataset_dir, relative)
        if os.path.isfile(path):
            return path
    raise SourceError(
        f"{dataset.title}: label file {os.path.join(dataset_dir, candidates[0])} does not exist"
        + (f" (nor {', '.join(candidates[1:])})" if len(candidates) > 1 else "")
        + f"; expected layout in {dataset_dir}: {dataset.layout}")


def _open_text(path: str):
    return open(path, newline="", encoding="utf-8-sig")  # BOM and CRLF tolerated


def _read_rows(dataset: Dataset, path: str) -> List[_Row]:
    """The rows of a label file (blank lines skipped), or a SourceError for a header without
    the columns the description names."""
    try:
        with _open_text(path) as f:
            if dataset.fields:
                return _whitespace_rows(dataset, path, f)
            return _csv_rows(dataset, path, f)
    except UnicodeDecodeError as e:
        raise SourceError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _whitespace_rows(dataset: Dataset, path: str, f) -> List[_Row]:
    rows = []
    for line, text in enumerate(f, start=1):
        values = text.split()
        if not values:
            continue
        if len(values) != len(dataset.fields):
            expected = " ".join(f"<{n}>" for n in dataset.fields)
            raise SourceError(f"{path}:{line}: expected '{expected}', got {text.strip()!r}")
        rows.append(_Row(path, line, dict(zip(dataset.fields, values))))
    return rows


def _needed_columns(dataset: Dataset) -> List[str]:
    columns = [dataset.image_column] + [c for _, c in dataset.grade_columns]
    columns += [dataset.patient_column] if dataset.patient_column else []
    columns += [label.column for label in dataset.labels]
    columns += [rule.column for rule in dataset.exclusions]
    return list(dict.fromkeys(columns))


def _csv_rows(dataset: Dataset, path: str, f) -> List[_Row]:
    reader = csv.reader(f)
    header = [c.strip() for c in next(reader, [])]
    missing = [c for c in _needed_columns(dataset) if c not in header]
    if missing:
        raise SourceError(f"{path}:1: no column {', '.join(repr(c) for c in missing)} in the "
                          f"header; expected the columns {', '.join(_needed_columns(dataset))}; "
                          f"it has {', '.join(repr(c) for c in header if c) or 'no header'}")
    rows = []
    for values in reader:
        if not any(v.strip() for v in values):
            continue  # blank lines (IDRiD's CSVs end with some)
        cells = {name: value.strip() for name, value in zip(header, values) if name}
        rows.append(_Row(path, reader.line_num, cells))
    return rows


def _fold(name: str) -> str:
    return name.casefold()


class _Folders:
    """Finds photographs by name, ignoring letter case and (if need be) the image extension,
    and remembers which files were used, so that unlisted ones can be counted."""

    def __init__(self):
        self.listing: Dict[str, Dict[str, str]] = {}  # folder → {folded name: name on disk}
        self.used: Dict[str, set] = collections.defaultdict(set)

    def _names(self, folder: str) -> Dict[str, str]:
        if folder not in self.listing:
            names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
            self.listing[folder] = {_fold(n): n for n in names
                                    if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS}
        return self.listing[folder]

    def find(self, path: str) -> Optional[str]:
        """The file ``path`` names, or None."""
        folder, name = os.path.split(path)
        names = self._names(folder)
        found = names.get(_fold(name))
        if found is None:
            stem = _fold(os.path.splitext(name)[0])
            found = next((names[stem + ext] for ext in IMAGE_EXTENSIONS if stem + ext in names),
                         None)
        if found is None:
            return None
        self.used[folder].add(found)
        return os.path.join(folder, found)

    def unlisted(self) -> Dict[str, int]:
        """{folder: image files in it that no row named}."""
        return {folder: len(names) - len(self.used[folder])
                for folder, names in self.listing.items() if len(names) > len(self.used[folder])}


def _stem(name: str) -> str:
    return os.path.splitext(os.path.basename(name.replace("\\", "/")))[0]


def _read_exam_list(dataset: Dataset, dataset_dir: str,
                    problems: _Problems) -> Dict[str, Tuple[str, str]]:
    """{folded image stem: (exam id, eye)} from the dataset's exam list; the exam id is the
    stem of the exam's first photograph."""
    exam_list = dataset.exam_list
    path = os.path.join(dataset_dir, exam_list.path)
    if not os.path.isfile(path):
        raise SourceError(f"{dataset.title}: exam list {path} does not exist (it pairs the two "
                          "photographs of each exam, and comes with the images); expected layout "
                          f"in {dataset_dir}: {dataset.layout}")
    exams: Dict[str, Tuple[str, str]] = {}
    with _open_text(path) as f:
        for line, text in enumerate(f, start=1):
            names = [n.strip() for n in text.strip().split(exam_list.delimiter)]
            if not any(names):
                continue
            if line == 1 and not any(re.search(r"\d", n) for n in names):
                continue  # the header (left;right): image names all have digits
            if len(names) > len(exam_list.eyes):
                problems.add(f"{path}:{line}", f"expected at most {len(exam_list.eyes)} names "
                             f"separated by {exam_list.delimiter!r}, got {text.strip()!r}")
                continue
            exam = _stem(next(n for n in names if n))
            for name, eye in zip(names, exam_list.eyes):
                if name and _fold(_stem(name)) in exams:
                    problems.add(f"{path}:{line}", f"{name} is in an earlier exam already")
                elif name:
                    exams[_fold(_stem(name))] = (exam, eye)
    return exams


class _Reader:
    """Reads the rows of one dataset into records, exclusions, problems and notes."""

    def __init__(self, dataset: Dataset, dataset_dir: str, external_test: bool):
        self.dataset = dataset
        self.dataset_dir = dataset_dir
        self.external_test = external_test
        self.problems = _Problems()
        self.folders = _Folders()
        self.exams = (_read_exam_list(dataset, dataset_dir, self.problems)
                      if dataset.exam_list else {})
        self.inputs: List[InputRecord] = []
        self.skipped: List[SkippedInput] = []
        self.seen: Dict[str, str] = {}  # image id → where it was listed first
        self.notes: Dict[str, List[str]] = collections.defaultdict(list)  # note → rows

    def read_table(self, table: Table) -> None:
        path = _label_file(self.dataset, self.dataset_dir, table)
        images = os.path.join(self.dataset_dir, table.images)
        if not os.path.isdir(images):
            raise SourceError(f"{self.dataset.title}: image folder {images} (for {path}) does "
                              f"not exist; expected layout in {self.dataset_dir}: "
                              f"{self.dataset.layout}")
        for row in _read_rows(self.dataset, path):
            self.read_row(table, images, row)

    def read_row(self, table: Table, images: str, row: _Row) -> None:
        """Adds the row's record, its exclusion or its problem."""
        name = row.cells.get(self.dataset.image_column, "")
        if not name:
            self.problems.add(row.where, f"no image name in column {self.dataset.image_column!r}")
            return
        file = self.locate(images, name, row)
        if file is None:
            return
        image_id = table.id_prefix + _stem(name)
        if image_id in self.seen:
            self.problems.add(row.where, f"{name} is listed again (first at "
                                         f"{self.seen[image_id]}); expected each photograph once")
            return
        self.seen[image_id] = row.where
        rule = next((r for r in self.dataset.exclusions
                     if row.cells.get(r.column, "") == r.value), None)
        if rule is not None:
            self.skipped.append(SkippedInput(file, f"{rule.reason} ({row.where})", excluded=True))
            return
        graded = self.grade_and_side(row)
        if graded is None:
            return
        patient, eye = self.patient_and_eye(image_id, name, graded[1], row)
        split = "test" if self.external_test else table.split
        self.inputs.append(InputRecord(image_id, patient, eye, graded[0], "file", file, split,
                                       self.extra_labels(row)))

    def locate(self, images: str, name: str, row: _Row) -> Optional[str]:
        """The photograph a row names, or None with the problem added."""
        fields = {"image": name, "patient": row.cells.get(self.dataset.patient_column or "", "")}
        path = os.path.normpath(os.path.join(images, self.dataset.image_path.format(**fields)))
        if not is_inside(images, path):
            self.problems.add(row.where, f"{name!r} names a file outside {images}")
            return None
        found = self.folders.find(path)
        if found is None:
            self.problems.add(row.where, f"{name} is listed but absent: expected {path} (in "
                                         f"any letter case, or as {'/'.join(IMAGE_EXTENSIONS)})")
        return found

    def grade_and_side(self, row: _Row) -> Optional[Tuple[int, str]]:
        """(grade, eye of the grade column), or None with the problem added."""
        filled = [(eye, column) for eye, column in self.dataset.grade_columns
                  if row.cells.get(column, "") != ""]
        columns = [c for _, c in self.dataset.grade_columns]
        if len(filled) != 1:
            where = f"exactly one of {', '.join(columns)}" if len(columns) > 1 else columns[0]
            self.problems.add(row.where, f"expected a grade in {where}; found "
                                         f"{len(filled) or 'none'}")
            return None
        eye, column = filled[0]
        try:
            return parse_grade(row.cells[column]), eye
        except ValueError as e:
            self.problems.add(row.where, f"{column}: {e}; expected the scale "
                                         f"{self.dataset.grade_scale}")
            return None

    def patient_and_eye(self, image_id: str, name: str, side: str, row: _Row) -> Tuple[str, str]:
        """The photograph's patient and eye, by the dataset's patient rule."""
        rule = self.dataset.patients
        if rule == PATIENT_KAGGLE_ID:
            return parse_image_id(_stem(name))
        if rule == PATIENT_COLUMN:
            patient = row.cells.get(self.dataset.patient_column, "")
            self.check_name_side(name, side, row)
            return patient or image_id, side
        if rule == PATIENT_EXAM_LIST:
            exam = self.exams.get(_fold(_stem(name)))
            if exam is None:
                self.notes["not in the exam list: its own patient, eye unknown"].append(
                    f"{name} ({row.where})")
                return image_id, side
            return exam[0], side or exam[1]
        return image_id, side

    def check_name_side(self, name: str, side: str, row: _Row) -> None:
        """Notes a name that claims the other eye than its grade column (DeepDRiD 56_r3)."""
        pattern = self.dataset.eye_in_name
        claimed = re.search(pattern, _stem(name)) if pattern and side else None
        if claimed and claimed.group("eye") != side[0]:
            other = "right" if side == "left" else "left"
            self.notes[f"the name says {other} but the grade is in the {side} column; the eye "
                       "is taken from the column"].append(f"{name} ({row.where})")

    def extra_labels(self, row: _Row) -> Tuple[Tuple[str, int], ...]:
        """The row's known labels beyond the grade; a value off the dataset's scale leaves the
        label unknown (and is noted)."""
        known = []
        for label in self.dataset.labels:
            text = row.cells.get(label.column, "")
            if text == "":
                continue
            if re.fullmatch(r"[+-]?\d+", text) and int(text) in label.values:
                known.append((label.name, int(text)))
            else:
                self.notes[f"{label.column} {text!r} is not one of "
                           f"{', '.join(map(str, label.values))}: {label.name} left unknown"
                           ].append(row.where)
        return tuple(sorted(known))


def _note_lines(notes: Dict[str, List[str]], unlisted: Dict[str, int]) -> List[str]:
    lines = [f"{len(rows)}× {note} (e.g. {', '.join(rows[:3])})" for note, rows in notes.items()]
    lines += [f"{n} image file(s) in {folder} are in no label file and were not read"
              for folder, n in sorted(unlisted.items())]
    return lines


def _info(dataset: Dataset, dataset_dir: str, external_test: bool, notes: List[str]) -> Dict:
    """What the manifest records about the source."""
    split_rule = dataset.split_rule
    if external_test:
        split_rule = ("every photograph in test (--external_test: the dataset validates a model "
                      f"trained elsewhere); without it: {split_rule}")
    return {
        "kind": dataset.name,
        "dataset": dataset.title,
        "dataset_dir": dataset_dir,
        "grade_scale": dataset.grade_scale,
        "labels": {label.name: label.scale for label in dataset.labels},
        "split_rule": split_rule,
        "external_test": external_test,
        "patient_ids": dataset.patients != PATIENT_PER_IMAGE,
        "exclusions": [rule.reason for rule in dataset.exclusions],
        "quirks": list(dataset.quirks),
        "notes": notes,
        "caveats": list(dataset.caveats),
    }


def read_dataset(name: str, dataset_dir: str, external_test: bool = False) -> DatasetInputs:
    """Every photograph of a public dataset, read from the folder as downloaded.

    Args:
      name: a key of ``DATASETS`` (the --source name).
      dataset_dir: the folder the user downloaded (see each description's ``layout``).
      external_test: put every photograph in the test split (a dataset that only validates a
        model trained elsewhere), whatever its official split.

    Returns:
      DatasetInputs: records (splits set where the dataset fixes them), the rows its rules
      exclude (``SkippedInput.excluded``), and the manifest's facts about the source.

    Raises:
      SourceError: an unknown name, a missing folder or label file, a header without the needed
        columns; or, after reading every row, the rows that are broken (a grade off the scale, a
        photograph listed but absent, a name listed twice), each with its file and line.
    """
    if name not in DATASETS:
        raise SourceError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    dataset = DATASETS[name]
    if not dataset_dir or not os.path.isdir(dataset_dir):
        raise SourceError(f"--source={name} needs --dataset_dir, the downloaded folder that "
                          f"holds {dataset.layout}" + (f"; {dataset_dir} is not a folder"
                                                       if dataset_dir else ""))
    reader = _Reader(dataset, dataset_dir, external_test)
    for table in dataset.tables:
        reader.read_table(table)
    reader.problems.raise_if_any(dataset, dataset_dir)
    notes = _note_lines(reader.notes, reader.folders.unlisted())
    return DatasetInputs(reader.inputs, reader.skipped,
                         _info(dataset, dataset_dir, external_test, notes))
