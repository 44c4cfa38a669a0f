"""The built-in demo, end to end: ``python demo.py`` (no downloads, no arguments, a CPU is enough).

What it does, in order (everything lands in --output_dir, default demo_output/):
  1. draws synthetic camera-sized fundus photographs of all five grades (or reads yours:
     --images_dir/--labels_csv, or a built --data_dir) and builds TFRecords at each resolution;
  2. trains the stages named by --presets (config.PRESETS; by default demo_224 and demo_448: the
     tiny variant at 224 from scratch, then at 448), each after the first from the stage before
     (--init, the paper's multi-cell fine-tuning: new cells at LR2);
  3. fits the score thresholds on validation, evaluates, exports a TF Serving SavedModel;
  4. grades three raw photographs through the export, and prints a summary table.

The paper's three stages on a GPU, with their schedule from the presets:
  python demo.py --presets=paper_224,paper_448,paper_720 --images_dir=train \
      --labels_csv=trainLabels.csv
"""

import dataclasses
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "demo_output", "Folder for everything the demo writes.")
flags.DEFINE_list("presets", ["demo_224", "demo_448"], "Training stages, smallest first: names "
                  "of config presets (python train.py --list_presets); each after the first "
                  "fine-tunes the one before.")
flags.DEFINE_list("steps", [], "Training steps per stage (one value: all stages); default: each "
                  "preset's.")
flags.DEFINE_enum("variant", None, ["tiny", "m2cnn"], "tiny (CPU) or m2cnn (the paper); "
                  "default: each preset's.")
flags.DEFINE_integer("batch_size", None, "Training batch; default: each preset's.")
flags.DEFINE_string("init", None, "Starting weights of the first stage (none, imagenet, a "
                    "weights file); default: its preset's.")
flags.DEFINE_integer("num_images", 300, "Synthetic photographs to draw (all grades, both eyes).")
flags.DEFINE_string("data_dir", None, "Use this build_tfrecords.py output instead of building.")
flags.DEFINE_string("images_dir", None, "Real photographs (<id>.jpeg) to build from, with "
                    "--labels_csv (Kaggle format).")
flags.DEFINE_string("labels_csv", None, "Kaggle-style labels for --images_dir.")
flags.DEFINE_integer("seed", 0, "Seed of the photographs, the split and the training.")
flags.DEFINE_bool("quiet", False, "No progress bars.")

# A fifth of the patients held out (the builder's default is a tenth): the demo's few hundred
# photographs need a validation split big enough to fit the thresholds and measure kappa on.
DEMO_VAL_FRACTION = 0.2


def _stage_configs(out):
    """The TrainConfig of each stage: its preset with runs under <out>/runs, each after the
    first initialised from the stage before, and the flags given here (data_dir still unset)."""
    from m2cnn_tf import config

    steps = [int(s) for s in FLAGS.steps]
    if len(steps) == 1:
        steps *= len(FLAGS.presets)
    if steps and len(steps) != len(FLAGS.presets):
        raise app.UsageError(f"--steps has {len(steps)} values for {len(FLAGS.presets)} stages")
    stages = []
    for i, name in enumerate(FLAGS.presets):
        try:
            stage = config.preset_config(name, os.path.join(out, "runs"))
        except ValueError as e:
            raise app.UsageError(f"--presets: {e}")
        changes = {"seed": FLAGS.seed}
        if stages or FLAGS.init:
            changes["init"] = stages[-1].model_dir if stages else FLAGS.init
        if FLAGS.variant:
            changes["variant"] = FLAGS.variant
        if FLAGS.batch_size:
            changes["batch_size"] = FLAGS.batch_size
        if steps:  # evaluate and checkpoint half-way and at the end
            every = max(1, steps[i] // 2)
            changes.update(train_steps=steps[i], eval_every_steps=every,
                           checkpoint_every_steps=every)
        stages.append(dataclasses.replace(stage, **changes))
    return stages


def _build_data(out, resolutions):
    from m2cnn_tf.config import BUILDER
    from m2cnn_tf.data import builder, sources

    if FLAGS.data_dir:
        return FLAGS.data_dir, "given"
    data_dir = os.path.join(out, "tfrecords")
    if FLAGS.images_dir:
        options = sources.SourceOptions(source="kaggle", images_dir=(FLAGS.images_dir,),
                                        labels_csv=(FLAGS.labels_csv,))
    else:
        options = sources.SourceOptions(source="synthetic", num_images=FLAGS.num_images)
    selection = sources.select_inputs(options, FLAGS.seed)
    config = dataclasses.replace(BUILDER, resolutions=tuple(resolutions), seed=FLAGS.seed,
                                 val_fraction=DEMO_VAL_FRACTION)
    manifest = builder.build(selection.inputs, selection.skipped, data_dir, config,
                             selection.info, selection.payloads, selection.images_root,
                             quiet=FLAGS.quiet)
    print(builder.summary_table(manifest))
    return data_dir, options.source


def _demo_photographs(out, count=3):
    """Raw photographs to grade through the export: synthetic JPEGs, or the first real ones."""
    from m2cnn_tf.preprocess import image_io
    from m2cnn_tf.data import synthetic

    if FLAGS.images_dir:
        names = sorted(n for n in os.listdir(FLAGS.images_dir)
                       if n.lower().endswith((".jpeg", ".jpg", ".png")))[:count]
        return [os.path.join(FLAGS.images_dir, n) for n in names]
    folder = os.path.join(out, "photographs")
    os.makedirs(folder, exist_ok=True)
    paths = []
    for i, grade in enumerate((0, 2, 4)[:count]):
        photo = synthetic.make_fundus(grade, seed=10_000 + FLAGS.seed * 10 + i)
        path = os.path.join(folder, f"synthetic_grade{grade}_{photo.eye}.jpeg")
        with open(path, "wb") as f:
            f.write(image_io.encode_jpeg(photo.image, 92))
        paths.append(path)
    return paths


def _train_stages(stages, data_dir, rows):
    """Trains each stage (``_stage_configs``) in order; returns the last run's folder."""
    from m2cnn_tf.train import loop as training

    for stage in stages:
        print(f"[2/4] training {stage.variant} at {stage.resolution} px for {stage.train_steps} "
              f"steps (init: {stage.init})")
        t = time.time()
        result = training.train_and_evaluate(dataclasses.replace(stage, data_dir=data_dir),
                                             quiet=FLAGS.quiet)
        best = (result.get("best") or {}).get("metrics") or result.get("last_eval") or {}
        rows.append((f"train {stage.resolution}", stage.model_dir, result["step"],
                     time.time() - t, best.get("kappa_score"), best.get("kappa_argmax")))
    return stages[-1].model_dir


def _evaluate_and_export(model_dir, data_dir, out, rows):
    """Fits the thresholds on validation, evaluates there and exports; returns
    (validation report, rounding kappa, report paths, export version folder, resolution)."""
    from m2cnn_tf.data import input_pipeline
    from m2cnn_tf.evaluate import reporting
    from m2cnn_tf.grading import assessment, thresholds
    from m2cnn_tf.serving import export
    from m2cnn_tf.serving import predictor as predictors

    t = time.time()
    model = predictors.open_predictor(model_dir)
    grades, scores, probabilities = [], [], []
    for batch in input_pipeline.make_dataset(data_dir, "validation", model.resolution, 16,
                                             training=False):
        outputs = model.predict_normalized(batch["image"].numpy())
        grades += batch["grade"].numpy().tolist()
        scores += outputs["score"].tolist()
        probabilities += outputs["probabilities"].tolist()
    rounding = thresholds.kappa_with(scores, grades)
    cuts, fitted = thresholds.fit_thresholds(scores, grades)
    thresholds.save_thresholds(model_dir, cuts, fitted, rounding, "validation")
    report = assessment.evaluate_arrays(grades, scores, probabilities, cuts)
    paths = reporting.write_report(report, os.path.join(model_dir, "evaluation_validation"),
                                    "validation")
    version = export.export_saved_model(model_dir, os.path.join(out, "exported", "m2cnn"))
    rows.append(("evaluate+export", version, "", time.time() - t, rounding,
                 report["probabilities"]["kappa"]))
    return report, rounding, paths, version, model.resolution


def _print_summary(rows, report, rounding, resolution, graded):
    """The closing table: time and kappa per stage, the validation report, the graded
    photographs."""
    from m2cnn_tf.evaluate import reporting

    print(f"\n{'stage':<16}{'steps':>6}{'time':>8}{'kappa (score)':>15}{'kappa (prob.)':>15}"
          "  output")
    for stage, where, steps, seconds, k_score, k_prob in rows:
        fmt = lambda k: f"{k:.3f}" if k is not None else "-"  # noqa: E731
        print(f"{stage:<16}{str(steps):>6}{seconds:>7.0f}s{fmt(k_score):>15}{fmt(k_prob):>15}"
              f"  {where}")
    print(f"\nvalidation at {resolution} px ({report['count']} images): kappa from the score "
          f"{rounding:.3f} (rounded), from the probabilities "
          f"{report['probabilities']['kappa']:.3f}; with the score thresholds fitted on this same "
          f"split {report['score']['kappa']:.3f} (optimistic: fitted and measured on one split; "
          "the export uses them)")
    print(reporting.format_report(report))
    print("\ngraded through the export (serving_default, raw JPEG in):")
    for path, outputs, error in graded:
        shown = (f"grade {int(outputs['grade'])}, score {float(outputs['score']):.2f}"
                 if outputs is not None and bool(outputs["fundus_found"]) else f"error: {error}")
        print(f"  {os.path.basename(path):<40} {shown}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if bool(FLAGS.images_dir) != bool(FLAGS.labels_csv):
        raise app.UsageError("--images_dir and --labels_csv go together")
    logging.set_verbosity(logging.WARNING)  # TensorFlow's checkpoint chatter
    from m2cnn_tf.serving import predictor as predictors
    from m2cnn_tf.util import memory

    memory.configure_process_for_image_work()  # for the augmenting input pipeline
    out = FLAGS.output_dir
    stages = _stage_configs(out)
    os.makedirs(out, exist_ok=True)
    started = time.time()
    rows = []

    print(f"[1/4] data ({'synthetic' if not (FLAGS.data_dir or FLAGS.images_dir) else 'yours'})")
    t = time.time()
    data_dir, kind = _build_data(out, sorted({s.resolution for s in stages}))
    rows.append(("data", f"{kind} → {data_dir}", "", time.time() - t, None, None))
    model_dir = _train_stages(stages, data_dir, rows)

    print("[3/4] thresholds, evaluation and export")
    report, rounding, paths, version, resolution = _evaluate_and_export(model_dir, data_dir, out,
                                                                        rows)

    print("[4/4] grading raw photographs through the export")
    exported = predictors.open_predictor(version)
    photographs = _demo_photographs(out)
    graded = list(exported.predict_files(photographs, batch_size=len(photographs)))

    _print_summary(rows, report, rounding, resolution, graded)
    print(f"\nwrote: data {data_dir}; runs {os.path.join(out, 'runs')}; report {paths['report']}"
          f" and {paths['confusion_score']}; export {version}")
    print(f"total {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    app.run(lambda argv: sys.exit(main(argv)))
