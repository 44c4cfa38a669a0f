"""Grading a data set into ``Predictions``: arrays of true grades, scores and probabilities
with image and patient ids, from built records or from raw photographs.

Evaluating is two steps: ``predictions_from_records`` / ``predictions_from_images`` grade a data
set into ``Predictions``, and ``grading.assessment.evaluate_arrays`` turns arrays into the
report — so anything that combines predictions (per patient, say) fits between.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from m2cnn_tf.config import NUM_GRADES
from m2cnn_tf.data import builder, input_pipeline, sources
from m2cnn_tf.grading import assessment
from m2cnn_tf.quality import assessor as quality_assessor
from m2cnn_tf.util import progress

Skipped = List[Dict[str, str]]  # {"file", "reason"} per input that could not be evaluated
RECORD_LABELS = ("the records' labels: gradable where stored, else quality not Reject "
                 "(build_tfrecords.py --quality_csv)")


@dataclasses.dataclass
class Predictions:
    """What a model said about each image of a data set, with the truth and the ids.

    ``score_std`` is the score's spread over test-time-augmentation views (None without TTA).
    ``gradable`` says which photographs can be graded (1), cannot (0) or is unknown (−1), as
    ``gradability`` names: the quality assessor on raw photographs, or the quality labels stored
    in built records (which hold normalised discs, whose light and focus are gone).
    """

    grades: np.ndarray  # (N,) int64 true grades
    scores: np.ndarray  # (N,) float
    probabilities: np.ndarray  # (N, 5)
    image_ids: np.ndarray  # (N,) str
    patient_ids: np.ndarray  # (N,) str: both eyes of a patient share it
    score_std: Optional[np.ndarray] = None  # (N,) float
    gradable: Optional[np.ndarray] = None  # (N,) int32 1, 0 or −1
    gradability: str = "not assessed"  # where ``gradable`` comes from

    def __len__(self) -> int:
        return len(self.grades)

    def subset(self, rows) -> "Predictions":
        """The predictions of ``rows`` (indices or a boolean mask)."""
        pick = lambda a: None if a is None else a[rows]
        return Predictions(self.grades[rows], self.scores[rows], self.probabilities[rows],
                           self.image_ids[rows], self.patient_ids[rows], pick(self.score_std),
                           pick(self.gradable), self.gradability)


def _predictions(grades, scores, probabilities, image_ids, patient_ids, score_std,
                 gradable=None, gradability: str = "not assessed") -> Predictions:
    return Predictions(np.asarray(grades, np.int64), np.asarray(scores, np.float64),
                       np.asarray(probabilities, np.float64).reshape(-1, NUM_GRADES),
                       np.asarray(image_ids, str), np.asarray(patient_ids, str),
                       np.asarray(score_std, np.float64) if score_std is not None else None,
                       None if gradable is None else np.asarray(gradable, np.int32),
                       gradability)


def predictions_from_records(model, data_dir: str, split: str, batch_size: int = 16,
                             quiet: bool = False) -> Tuple[Predictions, Skipped]:
    """Grades every image of a built split (``build_tfrecords.py`` output).

    Args:
      model: a ``predictor.Predictor`` (optionally wrapped by ``tta.wrap``).
      data_dir, split: the data set.
      batch_size: images per call.
      quiet: no progress bar.

    Returns:
      (Predictions, skipped) — nothing is skipped from built records.
    """
    columns = {k: [] for k in ("grades", "scores", "probabilities", "image_ids", "patient_ids",
                               "score_std", "gradable")}
    total = input_pipeline.split_size(data_dir, split)
    dataset = input_pipeline.make_dataset(data_dir, split, model.resolution, batch_size,
                                          training=False)
    bar = progress.progress(total=total, desc=f"evaluating {split}", unit="img", quiet=quiet)
    for batch in dataset:
        outputs = model.predict_normalized(batch["image"].numpy())
        columns["grades"].append(batch["grade"].numpy())
        columns["gradable"].append(quality_assessor.gradable_from_labels(
            batch["quality"].numpy(), batch["gradable"].numpy()))
        columns["scores"].append(outputs["score"])
        columns["probabilities"].append(outputs["probabilities"])
        columns["image_ids"] += [i.decode() for i in batch["image_id"].numpy()]
        columns["patient_ids"] += [i.decode() for i in batch["patient_id"].numpy()]
        if "score_std" in outputs:
            columns["score_std"].append(outputs["score_std"])
        bar.update(len(batch["grade"]))
    bar.close()
    if not columns["grades"]:
        raise ValueError(f"the '{split}' split of {data_dir} has no image")
    return _predictions(np.concatenate(columns["grades"]), np.concatenate(columns["scores"]),
                        np.concatenate(columns["probabilities"]), columns["image_ids"],
                        columns["patient_ids"],
                        np.concatenate(columns["score_std"]) if columns["score_std"] else None,
                        np.concatenate(columns["gradable"]), RECORD_LABELS), []


def predictions_from_images(model, images_dir: str, labels_csv: str, batch_size: int = 16,
                            quiet: bool = False) -> Tuple[Predictions, Skipped]:
    """Grades raw photographs ``<images_dir>/<id>.jpeg`` labelled by a Kaggle-style CSV.

    Patients come from the Kaggle ids ``<patient>_<left|right>`` (``sources.parse_image_id``).
    A photograph that cannot be read or shows no fundus is skipped, with its reason.

    Returns:
      (Predictions, skipped).
    """

    inputs, skipped_inputs = sources.kaggle_inputs([images_dir], [labels_csv])
    skipped = [{"file": s.file, "reason": s.reason} for s in skipped_inputs]
    record_of = {r.location: r for r in inputs}
    rows = []
    results = progress.progress(
        model.predict_files([r.location for r in inputs], batch_size), total=len(inputs),
        desc="evaluating", unit="img", quiet=quiet)
    for path, outputs, error in results:
        if outputs is None or not bool(outputs["fundus_found"]):
            skipped.append({"file": path, "reason": error or "no fundus found"})
            continue
        rows.append((record_of[path], outputs))
    std = [o["score_std"] for _, o in rows] if rows and "score_std" in rows[0][1] else None
    gradable = [int(o[quality_assessor.GRADABLE_OUTPUT]) for _, o in rows]
    source = (quality_assessor.describe(model.assessor) if getattr(model, "assessor", None)
              is not None else "not assessed (the model has no quality assessor)")
    return _predictions([r.grade for r, _ in rows], [o["score"] for _, o in rows],
                        [o["probabilities"] for _, o in rows], [r.image_id for r, _ in rows],
                        [r.patient_id for r, _ in rows], std, gradable, source), skipped


# What a build's manifest says about a public dataset (data.datasets) that its evaluation reports.
DATASET_FACTS = ("kind", "dataset", "grade_scale", "split_rule", "patient_ids", "exclusions",
                 "caveats")


def dataset_facts(data_dir: str) -> Optional[Dict]:
    """The public dataset a build was made from — its name, grade scale, split rule, whether it
    has patient ids, its exclusions and the caveats of validating on it — or None for a build of
    another source (Kaggle, CSV, …)."""
    source = builder.read_manifest(data_dir).get("source", {})
    if "dataset" not in source:
        return None
    return {key: source.get(key) for key in DATASET_FACTS}


def evaluate_predictions(predictions: Predictions, cuts: Sequence[float],
                         dataset: Optional[Dict] = None, **kw) -> Dict:
    """``evaluate_arrays`` of ``Predictions``, resampling its patients — or its images where the
    dataset (``dataset_facts``) publishes no patient ids, whose records then carry the image as
    the patient; the report then says so, with the dataset's caveats. ``"gradable"``: the same
    report on the photographs known to be gradable (``gradability_report``)."""
    by_image = dataset is not None and not dataset.get("patient_ids", True)
    report = assessment.evaluate_arrays(
        predictions.grades, predictions.scores, predictions.probabilities, cuts,
        patients=None if by_image else predictions.patient_ids, **kw)
    if dataset is not None:
        report["dataset"] = dataset
    report["gradable"] = gradability_report(predictions, cuts, by_image=by_image, **kw)
    return report


def gradability_report(predictions: Predictions, cuts: Sequence[float], by_image: bool = False,
                       **kw) -> Dict:
    """How many photographs are gradable, ungradable and unknown, where that comes from, and
    ``evaluate_arrays`` of the gradable ones (``report``; None when none is known gradable),
    resampling images instead of patients with ``by_image``."""
    gradable = (predictions.gradable if predictions.gradable is not None
                else np.full(len(predictions), quality_assessor.NOT_ASSESSED, np.int32))
    counts = {"gradable": int(np.sum(gradable == quality_assessor.GRADABLE)),
              "ungradable": int(np.sum(gradable == quality_assessor.UNGRADABLE)),
              "unknown": int(np.sum(gradable == quality_assessor.NOT_ASSESSED))}
    subset = predictions.subset(gradable == quality_assessor.GRADABLE)
    report = None
    if counts["gradable"] and counts["gradable"] + counts["ungradable"]:
        report = assessment.evaluate_arrays(subset.grades, subset.scores, subset.probabilities,
                                            cuts, patients=None if by_image else subset.patient_ids,
                                            **kw)
    return {"source": predictions.gradability, **counts, "report": report}
