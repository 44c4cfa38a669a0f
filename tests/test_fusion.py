"""Two-eye fusion: pairing, the one-eye fallback, training the head, fuse.py and grade_patient."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO_ROOT
from m2cnn_tf import fusion
from m2cnn_tf.preprocess import graph as graph_preprocess, image_io
from m2cnn_tf.data import builder, sources, synthetic
from m2cnn_tf.grading import thresholds
from m2cnn_tf.grading.agreement import KAPPA_WHEN_UNDEFINED
from m2cnn_tf.train import checkpoints
from m2cnn_tf.serving import export, signatures
from m2cnn_tf import model as m2cnn
from m2cnn_tf.config import NUM_GRADES, BuilderConfig

RESOLUTION = 224
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


# --------------------------------------------------------------------------------------------
# Pairing
# --------------------------------------------------------------------------------------------


def test_pairing_by_kaggle_ids():
    ids = np.array([b"10_right", b"7_left", b"10_left", b"3_right", b"7_right"], dtype=object)
    partner, eye, patient = fusion.pair_eyes(ids)
    assert partner.tolist() == [2, 4, 0, fusion.NO_PARTNER, 1]
    assert eye.tolist() == [1, 0, 0, 1, 1]
    assert patient.tolist() == ["10", "7", "10", "3", "7"]


def test_pairing_by_patient_column():
    ids = ["scan_001_left", "scan_002_right", "scan_003_left", "scan_004_right"]
    partner, eye, _ = fusion.pair_eyes(ids, patients=["P1", "P1", "P2", "P3"])
    assert partner.tolist() == [1, 0, fusion.NO_PARTNER, fusion.NO_PARTNER]
    assert eye.tolist() == [0, 1, 0, 1]


@pytest.mark.parametrize("ids,patients,message", [
    (["10_left", "10_centre"], None, "'10_centre' names no eye"),
    (["10_left", "10-right"], None, "'10-right' names no eye"),
    (["10_left", "10_Left"], None, "'10_Left' names no eye"),
    (["a_left", "b_left"], ["P1", "P1"], "patient 'P1' has two left eyes: images 'a_left' and "
                                         "'b_left'"),
    (["a_left", "b_right"], ["P1"], "2 image ids but 1 patients"),
    (["a_left", "b_right"], ["P1", " "], "'b_right' has an empty patient id"),
])
def test_odd_ids_are_rejected_naming_them(ids, patients, message):
    with pytest.raises(fusion.FusionError, match=message):
        fusion.pair_eyes(ids, patients)


# --------------------------------------------------------------------------------------------
# The head on a synthetic toy problem
# --------------------------------------------------------------------------------------------

TOY_DIM = 12


def _toy(patients, seed, one_eyed=0):
    """Grade in feature 0 under heavy noise; the other eye has the same grade 95 % of the
    time, so averaging both eyes' evidence beats one eye alone."""
    rng = np.random.default_rng(seed)
    worst = rng.choice(NUM_GRADES, size=patients, p=[0.45, 0.2, 0.15, 0.12, 0.08])
    ids, grades, features = [], [], []
    for p in range(patients):
        for eye in ("left", "right")[:1 if p < one_eyed else 2]:
            grade = worst[p] if rng.random() < 0.95 else rng.integers(NUM_GRADES)
            f = rng.normal(0.0, 1.0, TOY_DIM)
            f[0] = grade + rng.normal(0.0, 1.5)
            ids.append(f"{p}_{eye}")
            grades.append(grade)
            features.append(f)
    features = np.asarray(features, np.float32)
    return {"image_id": np.asarray(ids, dtype=object), "grade": np.asarray(grades),
            "features": features, "score": features[:, 0].copy(),
            "logits": np.zeros((len(grades), NUM_GRADES), np.float32)}


def _toy_base():
    """A per-eye 'main model': score = feature 0, uniform probabilities."""
    kernel = np.zeros((TOY_DIM, 1), np.float32)
    kernel[0, 0] = 1.0
    return {"logits": [np.zeros((TOY_DIM, NUM_GRADES), np.float32),
                       np.zeros(NUM_GRADES, np.float32)],
            "score": [kernel, np.zeros(1, np.float32)]}


@pytest.fixture(scope="module")
def toy_head():
    train, validation = _toy(300, 1), _toy(100, 2)
    head, history = fusion.train_head(train, validation, _toy_base())
    return head, history, validation


def test_untrained_head_equals_the_main_model():
    test = _toy(20, 5)
    head = fusion.build_head(TOY_DIM, _toy_base())
    partner, eye, _ = fusion.pair_eyes(test["image_id"])
    out = head(fusion.head_inputs(test["features"], partner, eye), training=False)
    np.testing.assert_allclose(out["score"].numpy(), test["score"], atol=1e-6)
    np.testing.assert_allclose(out["logits"].numpy(), 0.0, atol=1e-6)


def test_head_learns_what_the_other_eye_adds(toy_head):
    head, history, validation = toy_head
    assert history["best_epoch"] > 0
    assert history["validation_loss_best"] < history["validation_loss_start"]
    # thresholds for both gradings fitted on validation, compared on unseen patients
    fitted = fusion.fuse(validation, head, thresholds.ROUNDING, thresholds.ROUNDING)
    main_cuts, _ = thresholds.fit_thresholds(fitted["per_eye_score"], fitted["grade"])
    fused_cuts, _ = thresholds.fit_thresholds(fitted["fused_score"], fitted["grade"])
    result = fusion.kappas(fusion.fuse(_toy(300, 3), head, main_cuts, fused_cuts))
    print(result)
    assert result["kappa_fused"] > result["kappa_per_eye"] + 0.04


def test_one_eyed_patients_keep_the_main_model_grade(toy_head):
    head, _, _ = toy_head
    test = _toy(40, 4, one_eyed=15)
    main_cuts, fused_cuts = (0.4, 1.3, 2.6, 3.4), (0.6, 1.5, 2.4, 3.6)
    predictions = fusion.fuse(test, head, main_cuts, fused_cuts)
    alone = ~predictions["paired"]
    assert alone.sum() == 15 and predictions["paired"].sum() == 50
    expected = thresholds.apply_thresholds(test["score"], main_cuts)
    np.testing.assert_array_equal(predictions["per_eye_grade"], expected)
    np.testing.assert_array_equal(predictions["fused_grade"][alone], expected[alone])
    np.testing.assert_array_equal(predictions["fused_score"][alone], test["score"][alone])
    assert not np.array_equal(predictions["fused_score"][~alone], test["score"][~alone])


def test_interval_report_over_patients(toy_head):
    head, _, _ = toy_head
    predictions = fusion.fuse(_toy(60, 6, one_eyed=10), head, thresholds.ROUNDING,
                              thresholds.ROUNDING)
    report = fusion.interval_report(predictions, num_resamples=200, seed=1)
    assert (report["images"], report["paired_images"], report["patients"]) == (110, 100, 60)
    summary = fusion.kappas(predictions)
    for key in ("per_eye", "fused"):
        r = report[key]
        assert r["kappa"] == pytest.approx(summary[f"kappa_{key}"])
        assert r["low"] <= r["kappa"] <= r["high"]
    d = report["difference"]
    assert d["kappa"] == pytest.approx(summary["kappa_fused"] - summary["kappa_per_eye"])
    assert "fused − per-eye" in fusion.format_interval_report(report)


def test_interval_report_when_kappa_is_undefined(toy_head):
    """Every photograph of grade 0 and graded 0 (a small test split can be): kappa is
    undefined; the report gives the reports' value for it and no interval, and does not fail
    (it did: evaluate.py --fusion stopped with UndefinedStatisticError)."""
    head, _, _ = toy_head
    predictions = fusion.fuse(_toy(20, 6, one_eyed=4), head, thresholds.ROUNDING,
                              thresholds.ROUNDING)
    for key in ("grade", "per_eye_grade", "fused_grade"):
        predictions[key] = np.zeros_like(predictions[key])
    report = fusion.interval_report(predictions, num_resamples=50, seed=1)
    for key in ("per_eye", "fused", "difference"):
        assert report[key]["low"] is None and report[key]["high"] is None, key
    assert report["per_eye"]["kappa"] == report["fused"]["kappa"] == KAPPA_WHEN_UNDEFINED
    assert report["difference"]["kappa"] == 0.0
    assert "fused − per-eye" in fusion.format_interval_report(report)


# --------------------------------------------------------------------------------------------
# A tiny run: fuse.py, the saved head, and the export's grade_patient
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A random-init tiny model at 224 saved as a training run, and 16 synthetic photographs
    (8 patients, both eyes) built as TFRecords."""
    root = tmp_path_factory.mktemp("fusion")
    inputs, skipped = sources.synthetic_inputs(16, seed=3, width=640)
    data_dir = str(root / "data")
    builder.build(inputs, skipped, data_dir, BuilderConfig(
        resolutions=(RESOLUTION,), val_fraction=0.25, num_workers=1), {"kind": "synthetic"},
        quiet=True)
    model_dir = root / "run"
    (model_dir / checkpoints.BEST_DIR).mkdir(parents=True)
    model = m2cnn.build_m2cnn(RESOLUTION, "tiny")
    checkpoints.write_json(str(model_dir / checkpoints.CONFIG_JSON),
                           {"variant": "tiny", "resolution": RESOLUTION, "data_dir": data_dir})
    tf.train.CheckpointManager(
        tf.train.Checkpoint(model=model, step=tf.Variable(1, dtype=tf.int64)),
        str(model_dir / checkpoints.BEST_DIR), max_to_keep=1,
        checkpoint_name=checkpoints.CHECKPOINT_NAME).save(checkpoint_number=1)
    return {"root": root, "data_dir": data_dir, "model_dir": str(model_dir), "model": model}


def test_fuse_py_trains_saves_and_reports(tiny_run):
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "fuse.py"), f"--model={tiny_run['model_dir']}",
         f"--data_dir={tiny_run['data_dir']}", "--max_epochs=5"],
        capture_output=True, text=True, env=ENV, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "kappa per eye" in result.stdout and "fused" in result.stdout
    assert "note: the per-eye grades use rounding" in result.stdout  # no thresholds.json here
    folder = os.path.join(tiny_run["model_dir"], fusion.FUSION_DIR)
    assert sorted(os.listdir(folder)) == ["features_train.npz", "features_validation.npz",
                                          "fusion.json", "head.npz"]
    record = json.loads(open(os.path.join(folder, "fusion.json")).read())
    assert set(record["kappa"]) == {"train", "validation"}
    assert record["checkpoint"] == "ckpt-1" and record["thresholds_fitted_on"] == "validation"
    # the library's evaluation reads the head and the cached features back
    predictions, summary = fusion.evaluate_split(tiny_run["model_dir"], tiny_run["data_dir"],
                                                 "validation")
    assert summary["kappa_fused"] == pytest.approx(record["kappa"]["validation"]["kappa_fused"])
    assert predictions["paired"].all() and len(set(predictions["patient_id"])) == 2
    # evaluate.py --fusion: per-eye and fused kappa side by side, with intervals over patients
    out = tiny_run["root"] / "evaluation"
    evaluated = subprocess.run(
        [sys.executable, str(REPO_ROOT / "evaluate.py"), f"--model={tiny_run['model_dir']}",
         f"--data_dir={tiny_run['data_dir']}", "--split=validation", "--fusion",
         "--bootstrap=50", "--quiet", f"--output_dir={out}"],
        capture_output=True, text=True, env=ENV, timeout=600)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "per-eye kappa" in evaluated.stdout and "fused kappa" in evaluated.stdout
    fused = json.loads((out / "report.json").read_text())["fusion"]
    assert fused["fused"]["kappa"] == pytest.approx(summary["kappa_fused"])
    assert fused["patients"] == 2 and fused["num_resamples"] == 50
    # a head does not fit another checkpoint
    other = m2cnn.build_m2cnn(RESOLUTION, "tiny")
    with pytest.raises(fusion.FusionError, match="another checkpoint"):
        fusion.load_head(tiny_run["model_dir"], other)
    bad = subprocess.run([sys.executable, str(REPO_ROOT / "fuse.py"),
                          f"--model={tiny_run['model_dir']}", "--data_dir=/nonexistent"],
                         capture_output=True, text=True, env=ENV, timeout=300)
    assert bad.returncode == 1 and "/nonexistent" in bad.stderr


def _photographs(count):
    return [image_io.encode_jpeg(synthetic.make_fundus(g % NUM_GRADES, 100 + g, width=640).image,
                                 90) for g in range(count)]


def test_export_grade_patient_equals_the_python_path(tiny_run, tmp_path):
    model = tiny_run["model"]
    model_dir = str(tmp_path / "run")
    shutil.copytree(tiny_run["model_dir"], model_dir,
                    ignore=shutil.ignore_patterns(fusion.FUSION_DIR))
    # a head whose correction is not zero, so that a swapped eye or input would show
    head = fusion.build_head(m2cnn.config.MODEL.basenet_channels, fusion.main_heads(model))
    rng = np.random.default_rng(0)
    head.set_weights([w if name.startswith("base_") else
                      rng.normal(0.0, 0.05, w.shape).astype(np.float32)
                      for name, w in zip([v.path for v in head.weights], head.get_weights())])
    fused_cuts = (-0.3, -0.1, 0.1, 0.3)
    fusion.save_head(model_dir, head, fused_cuts, {"checkpoint": "ckpt-1"})
    version = export.export_saved_model(model_dir, str(tmp_path / "exported"))
    metadata = signatures.read_metadata(version)
    assert metadata["signatures"][signatures.PATIENT_SIGNATURE] == list(signatures.PATIENT_INPUTS)

    loaded = tf.saved_model.load(version)
    assert {signatures.SERVING_SIGNATURE, signatures.NORMALIZED_SIGNATURE,
            signatures.PATIENT_SIGNATURE} <= set(loaded.signatures)
    signature = loaded.signatures[signatures.PATIENT_SIGNATURE]
    photos = _photographs(4)
    black = image_io.encode_jpeg(np.zeros((480, 640, 3), np.uint8), 90)
    left, right = [photos[0], photos[2], black], [photos[1], photos[3], photos[1]]
    out = {k: v.numpy() for k, v in signature(left_image_bytes=tf.constant(left),
                                              right_image_bytes=tf.constant(right)).items()}
    assert set(out) == set(fusion.PATIENT_OUTPUTS)

    # the Python path: the same in-graph preprocessing, then fusion.fuse on the features
    images, found = graph_preprocess.preprocess_batch(tf.constant(left + right), RESOLUTION)
    assert found.numpy().tolist() == [True, True, False, True, True, True]
    keep = np.flatnonzero(found.numpy())
    computed = fusion.feature_model(model)(tf.cast(tf.gather(images, keep), tf.float32),
                                           training=False)
    ids = np.asarray([f"{p}_{e}" for e in ("left", "right") for p in range(3)], dtype=object)
    main_cuts = thresholds.ROUNDING
    python = fusion.fuse({"image_id": ids[keep], "grade": np.zeros(len(keep), np.int64),
                          **{k: v.numpy() for k, v in computed.items()}},
                         head, main_cuts, fused_cuts)
    served_score = np.concatenate([out["left_score"], out["right_score"]])[keep]
    served_grade = np.concatenate([out["left_grade"], out["right_grade"]])[keep]
    served_fused = np.concatenate([out["left_fused"], out["right_fused"]])[keep]
    np.testing.assert_allclose(served_score, python["fused_score"], atol=1e-4)
    np.testing.assert_array_equal(served_grade, python["fused_grade"])
    np.testing.assert_array_equal(served_fused, python["paired"])
    np.testing.assert_allclose(
        np.concatenate([out["left_probabilities"], out["right_probabilities"]])[keep],
        python["fused_probabilities"], atol=1e-4)
    assert served_fused.tolist() == [True, True, True, True, False]
    assert not np.allclose(python["fused_score"][python["paired"]],
                           python["per_eye_score"][python["paired"]], atol=1e-3)

    # no fundus in patient 2's left eye: -1 there, and the right eye keeps its per-eye grade,
    # the one serving_default gives the same photograph
    assert not out["left_fundus_found"][2] and out["left_grade"][2] == signatures.NOT_GRADED
    assert np.isnan(out["left_score"][2]) and np.isnan(out["left_probabilities"][2]).all()
    single = loaded.signatures[signatures.SERVING_SIGNATURE](image_bytes=tf.constant([right[2]]))
    assert out["right_grade"][2] == int(single["grade"][0])
    assert out["right_score"][2] == pytest.approx(float(single["score"][0]), abs=1e-5)
    empty = signature(left_image_bytes=tf.constant([], tf.string),
                      right_image_bytes=tf.constant([], tf.string))
    assert empty["left_grade"].shape == (0,) and empty["right_probabilities"].shape == (0, 5)


def test_export_without_a_head_has_no_grade_patient(tiny_run, tmp_path):
    model_dir = str(tmp_path / "run")
    shutil.copytree(tiny_run["model_dir"], model_dir,
                    ignore=shutil.ignore_patterns(fusion.FUSION_DIR))
    assert fusion.load_head(model_dir) is None
    head, note = export._fusion_head(model_dir, tiny_run["model"])
    assert head is None and "no fusion head" in note
