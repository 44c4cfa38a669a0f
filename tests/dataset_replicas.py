"""Miniature replicas of the public DR datasets' download layouts, made from real photographs.

Each ``make_<dataset>`` writes, under a folder, the dataset's folders and label files exactly as
they are downloaded — its file names, its image format (PNG for APTOS, upper-case .JPG beside
.png for Messidor-2, …), its CSV/TXT headers and its quirks — with a handful of photographs
from ../shared/data/eyepacs_1024, shrunk to ``WIDTH`` pixels so that tests stay fast. Each
returns what a correct reader must find (``Expected``); tests compare the builds against it.

The photographs and their Kaggle grades come from ``Photos``; nothing here is committed data.
"""

from __future__ import annotations

import csv
import dataclasses
import pathlib
from typing import Dict, List, Optional, Tuple

import cv2

WIDTH = 320  # pixels: the disc is still found, and decoding costs little


@dataclasses.dataclass
class Expected:
    """What a reader must produce from a replica."""

    grades: Dict[str, int]  # image id → grade, of every photograph to build
    patients: Dict[str, str]  # image id → patient id
    eyes: Dict[str, str]  # image id → "left", "right" or ""
    splits: Dict[str, str]  # image id → official split (only where the dataset fixes one)
    labels: Dict[str, Dict[str, int]]  # image id → extra labels
    excluded: Dict[str, str]  # image file name → a word of the exclusion reason
    label_files: List[str]  # relative paths of the label files


class Photos:
    """Real photographs (Kaggle ids with both eyes), their grades, EyeQ qualities, encoded on
    demand at ``WIDTH`` — or, without ``eyepacs_1024`` (../shared/data absent), synthetic
    photographs standing in, with the grades they were drawn at."""

    SYNTHETIC_PATIENTS = 40  # enough for every replica

    def __init__(self, eyepacs_1024: Optional[pathlib.Path]):
        self.folder = eyepacs_1024
        if eyepacs_1024 is None:
            self.grades = {f"{p}_{eye}": (p * 7 + (eye == "right")) % 5
                           for p in range(1, self.SYNTHETIC_PATIENTS + 1)
                           for eye in ("left", "right")}
            self.quality = {image: n % 3 for n, image in enumerate(self.grades)}
        else:
            with open(eyepacs_1024 / "trainLabels.csv", newline="") as f:
                self.grades = {r["image"]: int(r["level"]) for r in csv.DictReader(f)}
            with open(eyepacs_1024 / "eyeq_quality.csv", newline="") as f:
                self.quality = {r["image"]: int(r["quality"]) for r in csv.DictReader(f)}
        patients = sorted({i.rsplit("_", 1)[0] for i in self.grades}, key=int)
        self.pairs = [p for p in patients if f"{p}_left" in self.grades
                      and f"{p}_right" in self.grades]
        self.eyeq_pairs = [p for p in self.pairs if f"{p}_left" in self.quality
                           and f"{p}_right" in self.quality]
        self.used = 0
        self.cache: Dict[Tuple[str, str], bytes] = {}

    def take(self, n: int) -> List[str]:
        """The next ``n`` image ids (both eyes of each patient, in order)."""
        ids = []
        while len(ids) < n:
            patient = self.pairs[self.used]
            self.used += 1
            ids += [f"{patient}_left", f"{patient}_right"]
        return ids[:n]

    def encoded(self, image_id: str, extension: str) -> bytes:
        """The photograph shrunk to WIDTH and encoded as ``extension`` (.png, .jpg, …)."""
        key = (image_id, extension.lower())
        if key not in self.cache:
            image = self._image(image_id)
            height = round(image.shape[0] * WIDTH / image.shape[1])
            small = cv2.resize(image, (WIDTH, height), interpolation=cv2.INTER_AREA)
            ok, data = cv2.imencode(".png" if extension.lower() == ".png" else ".jpg", small)
            assert ok
            self.cache[key] = data.tobytes()
        return self.cache[key]

    def _image(self, image_id: str):
        """The photograph as BGR, from ../shared/data or drawn."""
        if self.folder is not None:
            return cv2.imread(str(self.folder / "images" / f"{image_id}.jpeg"))
        from m2cnn_tf.data import synthetic

        patient, eye = image_id.rsplit("_", 1)
        drawn = synthetic.make_fundus(self.grades[image_id], seed=1000 + int(patient),
                                      width=WIDTH, eye=eye)
        return cv2.cvtColor(drawn.image, cv2.COLOR_RGB2BGR)

    def write(self, image_id: str, path: pathlib.Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.encoded(image_id, path.suffix))


def _csv(path: pathlib.Path, header: List[str], rows: List[List[object]],
         trailer: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\r\n")
        writer.writerow(header)
        writer.writerows(rows)
        f.write(trailer)


def _expected(label_files: List[str]) -> Expected:
    return Expected({}, {}, {}, {}, {}, {}, label_files)


def make_aptos2019(root: pathlib.Path, photos: Photos) -> Expected:
    """train.csv (id_code,diagnosis), train_images/<id_code>.png; test.csv without grades."""
    expected = _expected(["train.csv"])
    rows = []
    for n, image in enumerate(photos.take(6)):
        code = f"{0x5e1f00 + n * 0x1357:x}d8d7"  # hexadecimal ids like APTOS' own
        photos.write(image, root / "train_images" / f"{code}.png")
        rows.append([code, photos.grades[image]])
        expected.grades[code] = photos.grades[image]
        expected.patients[code], expected.eyes[code] = code, ""
    _csv(root / "train.csv", ["id_code", "diagnosis"], rows)
    _csv(root / "test.csv", ["id_code"], [["0005cfc8afb6"]])
    return expected


def make_messidor2(root: pathlib.Path, photos: Photos) -> Expected:
    """IMAGES/ (.png of the Messidor part, .JPG of the Brest part), messidor-2.csv (left;right
    exams) and Kaggle's messidor_data.csv, whose image_id says .jpg for the .JPG files; the
    last exam's right photograph is ungradable."""
    expected = _expected(["messidor_data.csv"])
    names = ["20051020_43808_0100_PP.png", "20051020_43832_0100_PP.png",
             "20051021_51010_0100_PP.png", "20051021_51036_0100_PP.png",
             "IM000001.JPG", "IM000002.JPG", "IM000021.JPG", "IM000022.JPG"]
    exams, rows = [], []
    for n, (image, name) in enumerate(zip(photos.take(8), names)):
        photos.write(image, root / "IMAGES" / name)
        listed = name[:-4] + ".jpg" if name.endswith(".JPG") else name  # Kaggle's spelling
        stem = name[:-4]
        if n % 2 == 0:
            exams.append([name])
        else:
            exams[-1].append(name)
        exam, eye = exams[-1][0][:-4], ("left", "right")[n % 2]
        if n == 7:
            rows.append([listed, "", "", 0])
            expected.excluded[name] = "ungradable"
            continue
        dme = int(photos.grades[image] >= 3)
        rows.append([listed, photos.grades[image], dme, 1])
        expected.grades[stem] = photos.grades[image]
        expected.patients[stem], expected.eyes[stem] = exam, eye
        expected.labels[stem] = {"dme": dme, "gradable": 1}
    with open(root / "messidor-2.csv", "w", newline="") as f:
        f.write("left;right\r\n" + "".join(f"{a};{b}\r\n" for a, b in exams))
    _csv(root / "messidor_data.csv", ["image_id", "adjudicated_dr_grade", "adjudicated_dme",
                                      "adjudicated_gradable"], rows)
    return expected


IDRID_LABELS = "2. Groundtruths/{} IDRiD_Disease Grading_{} Labels.csv"


def make_idrid(root: pathlib.Path, photos: Photos) -> Expected:
    """The 'B. Disease Grading' folder: IDRiD_001… in both sets (different photographs), CSVs
    with a trailing space in 'Risk of macular edema ', trailing empty columns and blank lines."""
    train_csv, test_csv = IDRID_LABELS.format("a.", "Training"), IDRID_LABELS.format("b.",
                                                                                     "Testing")
    expected = _expected([train_csv, test_csv])
    header = ["Image name", "Retinopathy grade", "Risk of macular edema ", "", "", ""]
    sets = (("a. Training Set", train_csv, "train", 4), ("b. Testing Set", test_csv, "test", 3))
    for folder, label_file, split, count in sets:
        rows = []
        for n, image in enumerate(photos.take(count), start=1):
            name, grade = f"IDRiD_{n:03d}", photos.grades[image]
            photos.write(image, root / "1. Original Images" / folder / f"{name}.jpg")
            dme = min(grade, 2)
            rows.append([name, grade, dme, "", "", ""])
            image_id = f"{split}/{name}"
            expected.grades[image_id], expected.labels[image_id] = grade, {"dme": dme}
            expected.patients[image_id], expected.eyes[image_id] = image_id, ""
            if split == "test":
                expected.splits[image_id] = "test"
        _csv(root / label_file, header, rows, trailer=",,,,,\r\n\r\n")
    return expected


def make_ddr(root: pathlib.Path, photos: Photos) -> Expected:
    """DR_grading/{train,valid,test}/ and their .txt ('<file> <label>'); one label 5 in train."""
    expected = _expected([f"DR_grading/{s}.txt" for s in ("train", "valid", "test")])
    for folder, split, count in (("train", "train", 4), ("valid", "validation", 2),
                                 ("test", "test", 2)):
        lines = []
        for n, image in enumerate(photos.take(count)):
            name = f"007-{3000 + photos.used:04d}-{n:03d}.jpg"
            photos.write(image, root / "DR_grading" / folder / name)
            stem = name[:-4]
            if folder == "train" and n == 0:
                lines.append(f"{name} 5")
                expected.excluded[name] = "ungradable"
                continue
            lines.append(f"{name} {photos.grades[image]}")
            expected.grades[stem], expected.splits[stem] = photos.grades[image], split
            expected.patients[stem], expected.eyes[stem] = stem, ""
        (root / "DR_grading" / f"{folder}.txt").write_text("\n".join(lines) + "\n")
    return expected


DEEPDRID_HEADER = ["patient_id", "image_id", "image_path", "Overall quality",
                   "left_eye_DR_Level", "right_eye_DR_Level", "patient_DR_Level", "Clarity",
                   "Field definition", "Artifact"]


def make_deepdrid(root: pathlib.Path, photos: Photos) -> Expected:
    """regular_fundus_images/regular-fundus-{training,validation}/ with their CSVs (the grade in
    the column of the eye's side) and Images/<patient>/<image>.jpg; patient 56's names claim the
    other eye than their grade column, as in the real training CSV."""
    base = "regular_fundus_images/regular-fundus-{0}/regular-fundus-{0}.csv"
    expected = _expected([base.format("training"), base.format("validation")])
    for folder, split, patients in (("training", "train", (1, 56)), ("validation", "validation",
                                                                     (265,))):
        rows = []
        for patient in patients:
            # (name, the side of its grade column): 56_r3 has its grade in the left column
            named = ([("56_l1", "left"), ("56_r3", "left"), ("56_l3", "right"),
                      ("56_r2", "right")] if patient == 56 else
                     [(f"{patient}_{s[0]}{n}", s) for n in (1, 2) for s in ("left", "right")])
            images = photos.take(4)
            eye_grades = {side: max(photos.grades[i] for i, (_, s) in zip(images, named)
                                    if s == side) for side in ("left", "right")}
            for n, (image, (name, side)) in enumerate(zip(images, named)):
                quality = n % 2
                path = f"\\regular-fundus-{folder}\\{patient}\\{name}.jpg"
                columns = ([eye_grades[side], ""] if side == "left" else ["", eye_grades[side]])
                rows.append([patient, name, path, quality] + columns
                            + [max(eye_grades.values()), 8, 8, 4])
                photos.write(image, root / f"regular_fundus_images/regular-fundus-{folder}"
                             / "Images" / str(patient) / f"{name}.jpg")
                expected.grades[name], expected.splits[name] = eye_grades[side], split
                expected.patients[name], expected.eyes[name] = str(patient), side
                expected.labels[name] = {"gradable": quality,
                                         "patient_grade": max(eye_grades.values())}
        _csv(root / base.format(folder), DEEPDRID_HEADER, rows)
    return expected


def make_eyeq(root: pathlib.Path, photos: Photos) -> Expected:
    """Kaggle's train/ and test/ (<id>.jpeg; one photograph in train/ that EyeQ does not list),
    Label_EyeQ_train.csv beside them and Label_EyeQ_test.csv in data/, as in EyeQ's repository:
    ',image,quality,DR_grade' with image = <id>.jpeg."""
    expected = _expected(["Label_EyeQ_train.csv", "data/Label_EyeQ_test.csv"])
    chosen = [p for p in photos.eyeq_pairs if p not in photos.pairs[:photos.used]][:4]
    for folder, label_file, split, patients in (("train", "Label_EyeQ_train.csv", None,
                                                  chosen[:2]),
                                                 ("test", "data/Label_EyeQ_test.csv", "test",
                                                  chosen[2:])):
        rows = []
        for patient in patients:
            for eye in ("left", "right"):
                image = f"{patient}_{eye}"
                photos.write(image, root / folder / f"{image}.jpeg")
                rows.append([len(rows), f"{image}.jpeg", photos.quality[image],
                             photos.grades[image]])
                expected.grades[image], expected.labels[image] = (photos.grades[image],
                                                                  {"quality":
                                                                   photos.quality[image]})
                expected.patients[image], expected.eyes[image] = patient, eye
                if split:
                    expected.splits[image] = split
        _csv(root / label_file, ["", "image", "quality", "DR_grade"], rows)
    photos.write(photos.take(1)[0], root / "train" / "99999_left.jpeg")  # not in EyeQ
    return expected


MAKERS = {"aptos2019": make_aptos2019, "messidor2": make_messidor2, "idrid": make_idrid,
          "ddr": make_ddr, "deepdrid": make_deepdrid, "eyeq": make_eyeq}
# The folder a user passes as --dataset_dir, under the folder a replica is made in.
DATASET_DIRS = {"idrid": "B. Disease Grading", "ddr": "DDR-dataset"}


def make_all(root: pathlib.Path, photos: Photos,
             names: Optional[List[str]] = None) -> Dict[str, Tuple[pathlib.Path, Expected]]:
    """{dataset: (its --dataset_dir, what a reader must find)} for every replica made."""
    made = {}
    for name in names or list(MAKERS):
        folder = root / name / DATASET_DIRS.get(name, "")
        folder.mkdir(parents=True, exist_ok=True)
        made[name] = (folder, MAKERS[name](folder, photos))
    return made
