"""Evaluate a trained M²CNN: quadratic kappa, accuracy, recall, referable-DR screening.

    # on a built split (TFRecords), from a training run or an export
    python evaluate.py --model=runs/m2cnn_720 --data_dir=tfrecords/eyepacs --split=test
    # on raw photographs with Kaggle-style labels
    python evaluate.py --model=exported/m2cnn --images_dir=test/ --labels_csv=solution.csv
    # fit the four score thresholds on validation (written where export.py reads them)
    python evaluate.py --model=runs/m2cnn_720 --data_dir=tfrecords/eyepacs --fit_thresholds

Writes report.json and confusion_{score,probabilities}.png to --output_dir.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from m2cnn_tf import evaluation, input_pipeline, sources, thresholds  # noqa: E402
from m2cnn_tf import predictor as predictors  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "An export (version folder or base path) or a training run's "
                    "--model_dir.", required=True)
flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "For a training run: which one.")
flags.DEFINE_string("data_dir", None, "A build_tfrecords.py output to evaluate on.")
flags.DEFINE_string("split", "validation", "Split of --data_dir: train, validation or test.")
flags.DEFINE_string("images_dir", None, "Raw photographs (<id>.jpeg), with --labels_csv.")
flags.DEFINE_string("labels_csv", None, "Kaggle-style labels (image,level) for --images_dir.")
flags.DEFINE_integer("batch_size", 16, "Images per batch.")
flags.DEFINE_string("output_dir", None, "Where report.json and the PNGs go (default: "
                    "<model_dir>/evaluation_<split> for a run, ./evaluation for an export).")
flags.DEFINE_bool("fit_thresholds", False, "Fit the four score thresholds that maximise kappa "
                  "on this split and save them to <model_dir>/thresholds.json (training runs "
                  "only; fit on validation, never on test).")
flags.DEFINE_bool("quiet", False, "No progress bar.")


def _from_records(model, data_dir, split, batch_size, quiet):
    grades, scores, probabilities = [], [], []
    total = input_pipeline.split_size(data_dir, split)
    dataset = input_pipeline.make_dataset(data_dir, split, model.resolution, batch_size,
                                          training=False)
    progress = predictors.iter_with_progress(None, total, f"evaluating {split}", quiet)
    for batch in dataset:
        outputs = model.predict_normalized(batch["image"].numpy())
        grades.append(batch["grade"].numpy())
        scores.append(outputs["score"])
        probabilities.append(outputs["probabilities"])
        progress.update(len(batch["grade"]))
    progress.close()
    return np.concatenate(grades), np.concatenate(scores), np.concatenate(probabilities), []


def _from_images(model, images_dir, labels_csv, batch_size, quiet):
    inputs, skipped = sources.kaggle_inputs([images_dir], [labels_csv])
    skipped = [{"file": s.file, "reason": s.reason} for s in skipped]
    grade_of = {r.location: r.grade for r in inputs}
    grades, scores, probabilities = [], [], []
    results = predictors.iter_with_progress(
        model.predict_files([r.location for r in inputs], batch_size), len(inputs),
        "evaluating", quiet)
    for path, outputs, error in results:
        if outputs is None or not bool(outputs["fundus_found"]):
            skipped.append({"file": path, "reason": error or "no fundus found"})
            continue
        grades.append(grade_of[path])
        scores.append(outputs["score"])
        probabilities.append(outputs["probabilities"])
    return np.asarray(grades), np.asarray(scores), np.asarray(probabilities), skipped


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if bool(FLAGS.data_dir) == bool(FLAGS.images_dir):
        raise app.UsageError("give either --data_dir (with --split) or --images_dir with "
                             "--labels_csv")
    if FLAGS.images_dir and not FLAGS.labels_csv:
        raise app.UsageError("--images_dir needs --labels_csv")
    try:
        model = predictors.open_predictor(FLAGS.model, FLAGS.checkpoint)
        is_run = isinstance(model, predictors.ModelDirPredictor)
        if FLAGS.fit_thresholds and not is_run:
            raise ValueError("--fit_thresholds needs a training run's folder as --model: an "
                             "export carries its thresholds; fit them on the run, then export")
        if FLAGS.fit_thresholds and FLAGS.split == "test":
            raise ValueError("--fit_thresholds on the test split would leak it; use validation")
        if FLAGS.data_dir:
            grades, scores, probabilities, skipped = _from_records(
                model, FLAGS.data_dir, FLAGS.split, FLAGS.batch_size, FLAGS.quiet)
            name = FLAGS.split
        else:
            grades, scores, probabilities, skipped = _from_images(
                model, FLAGS.images_dir, FLAGS.labels_csv, FLAGS.batch_size, FLAGS.quiet)
            name = "images"
    except (FileNotFoundError, ValueError, sources.SourceError) as e:
        print(f"evaluate: error: {e}", file=sys.stderr)
        return 1
    if len(grades) == 0:
        print("evaluate: error: no image could be evaluated", file=sys.stderr)
        return 1
    cuts = tuple(model.metadata["thresholds"])
    report = evaluation.evaluate_arrays(grades, scores, probabilities, cuts)
    report.update(model=model.description, data=FLAGS.data_dir or FLAGS.images_dir, split=name,
                  skipped=skipped)
    if FLAGS.fit_thresholds:
        rounding = thresholds.kappa_with(scores, grades)
        fitted, kappa = thresholds.fit_thresholds(scores, grades)
        path = thresholds.save_thresholds(FLAGS.model, fitted, kappa, rounding, name)
        report["fitted_thresholds"] = {"thresholds": list(fitted), "kappa": kappa,
                                       "rounding_kappa": rounding, "written_to": path}
        print(f"thresholds fitted on {name}: {', '.join(f'{t:.3f}' for t in fitted)} — kappa "
              f"{kappa:.4f} (rounding: {rounding:.4f}); saved to {path}")
    output_dir = FLAGS.output_dir or (os.path.join(FLAGS.model, f"evaluation_{name}") if is_run
                                      else "evaluation")
    paths = evaluation.write_report(report, output_dir, title=name)
    print(f"{model.description}, {name}:")
    print(evaluation.format_report(report))
    if skipped:
        print(f"  skipped {len(skipped)} file(s); see {paths['report']}")
    print(f"wrote {paths['report']}, {paths['confusion_score']}, {paths['confusion_probabilities']}")
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
