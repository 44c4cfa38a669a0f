"""Evaluate a trained M²CNN: quadratic kappa, accuracy, recall, referable-DR screening.

    # on a built split (TFRecords), from a training run or an export
    python evaluate.py --model=runs/m2cnn_720 --data_dir=tfrecords/eyepacs --split=test
    # on raw photographs with Kaggle-style labels
    python evaluate.py --model=exported/m2cnn --images_dir=test/ --labels_csv=solution.csv
    # fit the four score thresholds on validation (written where export.py reads them)
    python evaluate.py --model=runs/m2cnn_720 --data_dir=tfrecords/eyepacs --fit_thresholds
    # test-time augmentation: each image in 8 orientations, outputs averaged
    python evaluate.py --model=runs/m2cnn_720 --data_dir=tfrecords/eyepacs --split=test --tta=8
    # two-eye fusion (after fuse.py): per-eye and fused kappa side by side
    python evaluate.py --model=runs/m2cnn_720 --data_dir=tfrecords/eyepacs --split=test --fusion
    # external validation on a public dataset's build, then several evaluations side by side
    python evaluate.py --model=runs/m2cnn_720 --data_dir=tfrecords/messidor2 --split=test \
        --output_dir=evaluation_messidor2
    python evaluate.py --compare=evaluation_messidor2,evaluation_idrid --output_dir=comparison

The primary kappa (report.json's "primary") is the one of the head the model is read by: the
score's, or the probabilities' for a run trained with cross-entropy only (its config.json or the
export's metadata says which: "prediction").

Writes to --output_dir: report.json (kappa with a bootstrap 95 % interval over patients,
referable-DR ROC AUC, sensitivity/specificity at the fitted cut), report.md linking
confusion_{score,probabilities}.png, roc.png and calibration.png, and predictions.csv (one row
per image; with --tta its score_std column is the score's spread over the views). On a build of
a public dataset (build_tfrecords.py --source=messidor2, …) the report also names the dataset
and its caveats, and its intervals resample images where the dataset has no patient ids.
Kappa, AUC and the confusion matrix are also given on the gradable photographs alone, side by
side with all: from --images_dir gradability is the model's quality assessor (quality.py fit),
from --data_dir the quality labels the records store (build_tfrecords.py --quality_csv).
With --compare: comparison.md (one table) and comparison_roc.png (one ROC plot).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from m2cnn_tf import fusion  # noqa: E402
from m2cnn_tf.data import sources  # noqa: E402
from m2cnn_tf.grading import stats, thresholds  # noqa: E402
from m2cnn_tf.serving import tta  # noqa: E402
from m2cnn_tf.grading import assessment  # noqa: E402
from m2cnn_tf.evaluate import collect, compare  # noqa: E402
from m2cnn_tf.evaluate import reporting  # noqa: E402
from m2cnn_tf.serving import predictor as predictors  # noqa: E402
from m2cnn_tf.serving import signatures  # noqa: E402
from m2cnn_tf.util import memory  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "An export (version folder or base path) or a training run's "
                    "--model_dir (required unless --compare).")
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
flags.DEFINE_integer("tta", 1, "Test-time augmentation: grade each image in this many "
                     "orientations and average (1, 2, 4 or 8: the disc's 90° rotations and "
                     "mirror); the score's spread over them goes into the report.")
flags.DEFINE_integer("bootstrap", stats.NUM_RESAMPLES, "Bootstrap resamples (of patients) for "
                     "the 95 % intervals of kappa and AUC; 0 for none.")
flags.DEFINE_bool("fusion", False, "Also grade each eye with the run's two-eye fusion head "
                  "(fuse.py): per-eye and fused kappa side by side, with bootstrap intervals "
                  "over patients (a training run and --data_dir only; no --tta).")
flags.DEFINE_list("compare", None, "Put these evaluations (their report.json, or the folders "
                  "holding it) side by side: one Markdown table and one ROC plot in --output_dir "
                  "(default ./comparison); nothing is graded.")
flags.DEFINE_bool("quiet", False, "No progress bar.")


def collect_predictions(model, quiet: bool = False):
    """Grades the data the flags name: (Predictions, skipped, name of the evaluated set)."""
    if FLAGS.data_dir:
        predictions, skipped = collect.predictions_from_records(
            model, FLAGS.data_dir, FLAGS.split, FLAGS.batch_size, quiet)
        return predictions, skipped, FLAGS.split
    predictions, skipped = collect.predictions_from_images(
        model, FLAGS.images_dir, FLAGS.labels_csv, FLAGS.batch_size, quiet)
    return predictions, skipped, "images"


def fusion_predictions(model):
    """Per-eye and fused predictions (``fusion.evaluate_split``) on --data_dir's --split."""
    if not isinstance(model, predictors.ModelDirPredictor) or not FLAGS.data_dir:
        raise ValueError("--fusion needs a training run with a fusion head (fuse.py) as "
                         "--model, and --data_dir")
    if FLAGS.tta != 1:
        raise ValueError("--fusion with --tta: the fusion head reads un-augmented features")
    return fusion.evaluate_split(FLAGS.model, FLAGS.data_dir, FLAGS.split, FLAGS.checkpoint,
                                 FLAGS.batch_size, model=model.model, info=model.metadata)[0]


def _check_usage(argv):
    """Raises app.UsageError for a command line that names no data set, or two."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS.model:
        raise app.UsageError("--model is required (an export or a training run), unless "
                             "--compare")
    if bool(FLAGS.data_dir) == bool(FLAGS.images_dir):
        raise app.UsageError("give either --data_dir (with --split) or --images_dir with "
                             "--labels_csv")
    if FLAGS.images_dir and not FLAGS.labels_csv:
        raise app.UsageError("--images_dir needs --labels_csv")
    if FLAGS.bootstrap < 0:
        raise app.UsageError(f"--bootstrap={FLAGS.bootstrap}: give 0 (no intervals) or more")


def compare_main() -> int:
    """--compare: the evaluations side by side (comparison.md, comparison_roc.png)."""
    try:
        paths = compare.write_comparison(FLAGS.compare, FLAGS.output_dir or "comparison")
    except (FileNotFoundError, ValueError) as e:
        print(f"evaluate: error: {e}", file=sys.stderr)
        return 1
    print(paths["markdown_text"])
    print(f"wrote {paths['markdown']} and {paths['roc']}")
    return 0


def main(argv):
    if FLAGS.compare:
        return compare_main()
    _check_usage(argv)
    memory.configure_process_for_image_work()  # as every script that runs the input pipeline
    try:
        tta.check_num_views(FLAGS.tta)
        model = predictors.open_predictor(FLAGS.model, FLAGS.checkpoint)
        is_run = isinstance(model, predictors.ModelDirPredictor)
        if FLAGS.fit_thresholds and not is_run:
            raise ValueError("--fit_thresholds needs a training run's folder as --model: an "
                             "export carries its thresholds; fit them on the run, then export")
        if FLAGS.fit_thresholds and FLAGS.split == "test":
            raise ValueError("--fit_thresholds on the test split would leak it; use validation")
        if FLAGS.fit_thresholds and FLAGS.tta != 1:
            raise ValueError(f"--fit_thresholds with --tta={FLAGS.tta}: fit the thresholds on "
                             "the plain model's scores (the export grades without TTA)")
        fused = fusion_predictions(model) if FLAGS.fusion else None
        model = tta.wrap(model, FLAGS.tta)
        predictions, skipped, name = collect_predictions(model, FLAGS.quiet)
    except (FileNotFoundError, ValueError, sources.SourceError) as e:
        print(f"evaluate: error: {e}", file=sys.stderr)
        return 1
    if len(predictions) == 0:
        print("evaluate: error: no image could be evaluated", file=sys.stderr)
        return 1
    grades, scores = predictions.grades, predictions.scores
    cuts = tuple(model.metadata["thresholds"])
    dataset = collect.dataset_facts(FLAGS.data_dir) if FLAGS.data_dir else None
    report = collect.evaluate_predictions(predictions, cuts, dataset,
                                          num_resamples=FLAGS.bootstrap)
    primary = signatures.prediction_of(model.metadata)
    report.update(model=model.description, data=FLAGS.data_dir or FLAGS.images_dir, split=name,
                  skipped=skipped, primary=primary)
    if FLAGS.tta != 1:
        report["tta"] = {"views": FLAGS.tta, "view_names": [v.name for v in tta.VIEWS[FLAGS.tta]],
                         **assessment.uncertainty_summary(predictions, cuts)}
    if fused is not None:
        report["fusion"] = fusion.interval_report(fused, num_resamples=FLAGS.bootstrap)
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
    paths = reporting.write_report(report, output_dir, title=name, predictions=predictions)
    print(f"{model.description}, {name}:")
    print(reporting.format_report(report))
    print(f"  primary: kappa from the {primary} {report[primary]['kappa']:.4f} (the head this "
          "model is read by)")
    if fused is not None:
        print(fusion.format_interval_report(report["fusion"]))
    if skipped:
        print(f"  skipped {len(skipped)} file(s); see {paths['report']}")
    print(f"wrote {paths['report']} and {paths['markdown']} (with "
          f"{', '.join(os.path.basename(p) for p in paths.values() if p.endswith('.png'))}) "
          f"to {output_dir}")
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
