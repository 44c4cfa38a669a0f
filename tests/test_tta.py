"""Test-time augmentation: averages of the views, invariance to the group, predict/evaluate CLIs.

The model is the tiny variant at 224, randomly initialised (no training): its outputs depend on
the orientation of the disc, which is all these tests need. Thresholds are set between its
TTA-8 scores so that the four photographs get different grades.
"""

import csv
import json
import os
import subprocess
import sys

import cv2
import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import roc_auc_score

from conftest import REPO_ROOT
from m2cnn_tf.preprocess import fundus, image_io
from m2cnn_tf.data import synthetic
from m2cnn_tf.grading import thresholds
from m2cnn_tf.train import checkpoints
from m2cnn_tf.serving import export, tta
from m2cnn_tf import model as m2cnn
from m2cnn_tf.serving import predictor as predictors

RESOLUTION = 224
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
GRADES = {"1_left": 0, "1_right": 2, "2_left": 1, "2_right": 4}  # two patients, both eyes


def _random_run(model_dir: str, images: np.ndarray) -> list:
    """A training run's folder holding a randomly initialised tiny model as its best checkpoint,
    with score thresholds between its TTA-8 scores of ``images`` (so they get several grades).
    Returns the thresholds."""
    os.makedirs(model_dir)
    keras.utils.set_random_seed(0)  # the same random weights on every run
    keras_model = m2cnn.build_m2cnn(RESOLUTION, "tiny")
    checkpoints.write_json(os.path.join(model_dir, checkpoints.CONFIG_JSON),
                           {"resolution": RESOLUTION, "variant": "tiny"})
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(model=keras_model), os.path.join(model_dir, checkpoints.BEST_DIR),
        max_to_keep=1, checkpoint_name=checkpoints.CHECKPOINT_NAME)
    manager.save(checkpoint_number=1)
    views = np.concatenate(_views_by_hand(images))
    scores = keras_model(views, training=False)["score"].numpy().reshape(8, len(images))
    scores = np.sort(scores.mean(axis=0))
    cuts = [float((a + b) / 2) for a, b in zip(scores[:-1], scores[1:])]
    cuts = cuts + [scores[-1] + 1.0 + i for i in range(4 - len(cuts))]
    thresholds.save_thresholds(model_dir, cuts, 0.0, 0.0, "test cuts")
    return cuts


def _views_by_hand(images):
    """The eight dihedral views, written out independently of tta.apply_view."""
    views = []
    for mirrored in (images, images[:, :, ::-1]):
        for k in range(4):
            views.append(np.rot90(mirrored, k, axes=(1, 2)))
    return views


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("tta")
    photos = root / "photos"
    photos.mkdir()
    for i, (image_id, grade) in enumerate(GRADES.items()):
        eye = image_id.split("_")[1]
        picture = synthetic.make_fundus(grade, seed=100 + i, width=640, eye=eye).image
        (photos / f"{image_id}.jpeg").write_bytes(image_io.encode_jpeg(picture, 92))
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "level"])
        writer.writerows(GRADES.items())
    paths = sorted(str(p) for p in photos.iterdir())
    images = np.stack([fundus.load_normalized(p, (RESOLUTION,)).images[RESOLUTION]
                       for p in paths])
    model_dir = str(root / "run")
    cuts = _random_run(model_dir, images)
    export_dir = str(root / "exported")
    export.export_saved_model(model_dir, export_dir)
    return {"root": root, "model_dir": model_dir, "export_dir": export_dir, "paths": paths,
            "images": images, "cuts": cuts, "run": predictors.open_predictor(model_dir),
            "export": predictors.open_predictor(export_dir)}


def test_the_view_sets_are_groups_and_other_counts_are_refused():
    x = np.arange(2 * 5 * 5 * 3).reshape(2, 5, 5, 3)
    for n, views in tta.VIEWS.items():
        results = [tta.apply_view(x, v).tobytes() for v in views]
        assert len(set(results)) == n  # distinct views
        for a in views:  # closed under composition
            for b in views:
                assert tta.apply_view(tta.apply_view(x, a), b).tobytes() in results
    for bad in (3, 0, 16, -8, 2.0):
        with pytest.raises(ValueError, match=rf"--tta={bad!r} is not supported.*1, 2, 4, 8"):
            tta.check_num_views(bad)


def test_tta8_outputs_are_the_mean_of_the_eight_views(setup):
    model, images = setup["run"], setup["images"]
    singles = [model.predict_normalized(v) for v in _views_by_hand(images)]
    scores = np.stack([o["score"] for o in singles]).astype(np.float64)
    probabilities = np.stack([o["probabilities"] for o in singles]).astype(np.float64)
    out = tta.wrap(model, 8).predict_normalized(images)
    np.testing.assert_allclose(out["score"], scores.mean(axis=0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(out["probabilities"], probabilities.mean(axis=0), atol=1e-7)
    np.testing.assert_allclose(out["score_std"], scores.std(axis=0), rtol=1e-4, atol=1e-8)
    assert np.all(out["score_std"] > 0)  # the views do disagree
    cuts = np.asarray(setup["cuts"], np.float32)
    np.testing.assert_array_equal(out["grade"], (out["score"][:, None] > cuts).sum(axis=1))
    assert len(set(out["grade"].tolist())) >= 3
    np.testing.assert_array_equal(out["grade_from_probabilities"],
                                  probabilities.mean(axis=0).argmax(axis=1))
    assert tta.wrap(model, 1) is model


@pytest.mark.parametrize("which", ["run", "export"])
def test_a_rotated_disc_grades_the_same_under_tta(setup, which):
    model, images = setup[which], setup["images"][:2]
    turned = np.rot90(images, 1, axes=(1, 2))
    mirrored = images[:, :, ::-1]
    plain = model.predict_normalized(images)["score"]
    # without TTA a quarter turn moves the score well beyond float error …
    change = np.abs(model.predict_normalized(turned)["score"] - plain).max()
    assert change > 1e-4 * max(1.0, np.abs(plain).max()), change
    # … with the whole group (or the rotations alone, or the mirror alone) it does not
    cases = ((8, turned), (4, turned), (2, mirrored)) if which == "run" else ((8, turned),)
    for n, moved in cases:
        wrapped = tta.wrap(model, n)
        a, b = wrapped.predict_normalized(images), wrapped.predict_normalized(moved)
        np.testing.assert_allclose(b["score"], a["score"], rtol=1e-5, atol=1e-6 * change)
        np.testing.assert_allclose(b["probabilities"], a["probabilities"], atol=1e-6)
        np.testing.assert_array_equal(b["grade"], a["grade"])


def test_export_tta_reads_photographs_with_the_exports_own_preprocessing(setup):
    export, paths = setup["export"], setup["paths"]
    served = {p: o for p, o, _ in export.predict_files(paths, batch_size=4)}  # serving_default
    chunk = next(export.normalized_files(paths, batch_size=len(paths)))
    direct = export.predict_normalized(chunk.images, chunk.found)
    np.testing.assert_allclose(direct["score"], [served[p]["score"] for p in chunk.readable],
                               rtol=1e-5, atol=1e-6)
    wrapped = tta.wrap(export, 8)
    by_file = {p: o for p, o, _ in wrapped.predict_files(paths, batch_size=4)}
    expected = wrapped.predict_normalized(chunk.images, chunk.found)
    np.testing.assert_allclose([by_file[p]["score"] for p in chunk.readable], expected["score"],
                               rtol=1e-5, atol=1e-7)
    # the export and the run preprocess differently (graph vs OpenCV) but agree on the disc
    inside = np.abs(chunk.images.astype(int) - setup["images"]).mean()
    assert inside < 2.0, inside


def _run(script, *args, ok=True):
    result = subprocess.run([sys.executable, str(REPO_ROOT / script), *args], capture_output=True,
                            text=True, env=ENV, timeout=600)
    assert (result.returncode == 0) == ok, result.stderr[-3000:]
    return result


def test_predict_tta8_writes_score_std_and_tta3_is_refused(setup, tmp_path):
    output = tmp_path / "predictions.csv"
    _run("predict.py", f"--model={setup['model_dir']}", f"--images={setup['root'] / 'photos'}",
         f"--output={output}", "--tta=8", "--quiet")
    with open(output, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(GRADES) and "score_std" in rows[0]
    expected = tta.wrap(setup["run"], 8).predict_normalized(setup["images"])
    by_name = {os.path.basename(r["image"]): r for r in rows}
    for i, path in enumerate(setup["paths"]):
        row = by_name[os.path.basename(path)]
        assert not row["error"]
        assert float(row["score_std"]) > 0
        assert float(row["score"]) == pytest.approx(float(expected["score"][i]), abs=2e-4)
    refused = _run("predict.py", f"--model={setup['model_dir']}",
                   f"--images={setup['root'] / 'photos'}", f"--output={tmp_path / 'x.csv'}",
                   "--tta=3", ok=False)
    assert "--tta=3 is not supported" in refused.stderr and "1, 2, 4, 8" in refused.stderr
    assert not (tmp_path / "x.csv").exists()


def test_evaluate_tta8_report_with_intervals_and_pictures(setup, tmp_path):
    out = tmp_path / "evaluation"
    result = _run("evaluate.py", f"--model={setup['model_dir']}",
                  f"--images_dir={setup['root'] / 'photos'}",
                  f"--labels_csv={setup['root'] / 'labels.csv'}", "--tta=8", "--bootstrap=200",
                  f"--output_dir={out}", "--quiet")
    assert "CI" in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["count"] == len(GRADES) and report["num_patients"] == 2
    assert report["tta"]["views"] == 8 and report["tta"]["score_std_mean"] > 0
    interval = report["score"]["kappa_interval"]
    assert interval["low"] <= report["score"]["kappa"] <= interval["high"]
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["patient_id"] for r in rows} == {"1", "2"}
    assert all(float(r["score_std"]) > 0 for r in rows)
    by_name = {r["image_id"]: r for r in rows}
    expected = tta.wrap(setup["run"], 8).predict_normalized(setup["images"])["score"]
    truth = [GRADES[os.path.basename(p)[:-len(".jpeg")]] for p in setup["paths"]]
    for path, score in zip(setup["paths"], expected):
        assert float(by_name[os.path.basename(path)[:-len(".jpeg")]]["score"]) == \
            pytest.approx(score, abs=1e-4)
    assert report["referable"]["auc"] == pytest.approx(
        roc_auc_score(np.array(truth) >= 2, expected), abs=1e-6)
    markdown = (out / "report.md").read_text()
    for name in ("confusion_score.png", "roc.png", "calibration.png"):
        assert f"]({name})" in markdown and cv2.imread(str(out / name)) is not None
