"""Export, serving signatures, train/serve parity on camera photographs, predict.py, evaluate.py."""

import base64
import csv
import dataclasses
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import cohen_kappa_score

from conftest import REPO_ROOT
from m2cnn_tf.preprocess import fundus, image_io
from m2cnn_tf.data import builder, sources
from m2cnn_tf.train import checkpoints, loop as training
from m2cnn_tf.serving import export, signatures
from m2cnn_tf.serving import predictor as predictors
from m2cnn_tf.config import TRAIN, BuilderConfig

RESOLUTION = 224
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
DOCUMENTED_OUTPUTS = {"probabilities": ("DT_FLOAT", "(-1, 5)"), "score": ("DT_FLOAT", "(-1)"),
                      "grade": ("DT_INT32", "(-1)"),
                      "grade_from_probabilities": ("DT_INT32", "(-1)"),
                      "fundus_found": ("DT_BOOL", "(-1)"),
                      "quality_probabilities": ("DT_FLOAT", "(-1, 3)"),
                      "gradable": ("DT_INT32", "(-1)")}


def _run(script, *args):
    result = subprocess.run([sys.executable, str(REPO_ROOT / script), *args], capture_output=True,
                            text=True, env=ENV, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def run(tmp_path_factory, eyepacs_fullres):
    """A tiny model trained briefly on the 30 camera originals, thresholds fitted, exported."""
    root = tmp_path_factory.mktemp("serving")
    inputs, skipped = sources.kaggle_inputs([str(eyepacs_fullres / "images")],
                                            [str(eyepacs_fullres / "trainLabels.csv")])
    data_dir = str(root / "data")
    builder.build(inputs, skipped, data_dir, BuilderConfig(
        resolutions=(RESOLUTION,), val_fraction=0.2, num_workers=1), {"kind": "kaggle"},
        quiet=True)
    model_dir = str(root / "run")
    training.train_and_evaluate(dataclasses.replace(
        TRAIN, resolution=RESOLUTION, variant="tiny", data_dir=data_dir, model_dir=model_dir,
        batch_size=6, train_steps=12, eval_every_steps=12, checkpoint_every_steps=12,
        augment=False), quiet=True)
    # Thresholds fitted on the training split: a 12-step model's scores differ little, and the
    # fitted cuts separate them, so the grades below are not all equal.
    _run("evaluate.py", f"--model={model_dir}", f"--data_dir={data_dir}", "--split=train",
         "--fit_thresholds", "--quiet", f"--output_dir={root / 'fit'}")
    export_dir = str(root / "exported")
    version = export.export_saved_model(model_dir, export_dir)
    photos = sorted(str(p) for p in (eyepacs_fullres / "images").glob("*.jpeg"))
    return {"root": root, "data_dir": data_dir, "model_dir": model_dir,
            "export_dir": export_dir, "version": version, "photos": photos}


def test_saved_model_cli_lists_both_signatures(run):
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run([cli, "show", "--dir", run["version"], "--all"],
                           capture_output=True, text=True, env=ENV, timeout=300).stdout
    listed = {}
    for name, body in re.findall(r"signature_def\['(\w+)'\]:(.*?)Method name is", shown, re.S):
        inputs = dict((k, (d, s)) for k, d, s in re.findall(
            r"inputs\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: (\([^)]*\))", body))
        outputs = dict((k, (d, s)) for k, d, s in re.findall(
            r"outputs\['(\w+)'\] tensor_info:\s+dtype: (\w+)\s+shape: (\([^)]*\))", body))
        listed[name] = (inputs, outputs)
    assert listed["serving_default"][0] == {"image_bytes": ("DT_STRING", "(-1)")}
    assert listed["predict_normalized"][0] == {
        "images": ("DT_UINT8", f"(-1, {RESOLUTION}, {RESOLUTION}, 3)")}
    for name in ("serving_default", "predict_normalized"):
        assert listed[name][1] == DOCUMENTED_OUTPUTS, name
    metadata = signatures.read_metadata(run["version"])
    assert metadata["resolution"] == RESOLUTION and metadata["variant"] == "tiny"
    assert metadata["thresholds_source"] == "fitted on train"
    fitted = json.loads(open(os.path.join(run["model_dir"], "thresholds.json")).read())
    assert metadata["thresholds"] == fitted["thresholds"]
    assert metadata["preprocessing"]["gamma"] == 128.0
    assert metadata["training_data_checksum"].startswith("sha256:")


def test_fresh_process_export_equals_the_keras_model(run, tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, RESOLUTION, RESOLUTION, 3), dtype=np.uint8)
    np.save(tmp_path / "in.npy", images)
    code = ("import sys, numpy as np, tensorflow as tf; "
            "f = tf.saved_model.load(sys.argv[1]).signatures['predict_normalized']; "
            "o = f(images=tf.constant(np.load(sys.argv[2]))); "
            "np.savez(sys.argv[3], **{k: v.numpy() for k, v in o.items()})")
    subprocess.run([sys.executable, "-c", code, run["version"], str(tmp_path / "in.npy"),
                    str(tmp_path / "out.npz")], check=True, env=ENV, timeout=300)
    exported = np.load(tmp_path / "out.npz")
    model, _ = checkpoints.load_trained_model(run["model_dir"])
    expected = model(images, training=False)
    np.testing.assert_allclose(exported["score"], expected["score"].numpy(), atol=1e-4)
    np.testing.assert_allclose(exported["probabilities"],
                               tf.nn.softmax(expected["logits"]).numpy(), atol=1e-4)


def test_train_serve_parity_on_camera_originals(run):
    exported = predictors.open_predictor(run["export_dir"])
    offline = predictors.open_predictor(run["model_dir"])
    assert exported.metadata["thresholds"] == offline.metadata["thresholds"]
    served = {p: o for p, o, e in exported.predict_files(run["photos"], batch_size=6)}
    local = {p: o for p, o, e in offline.predict_files(run["photos"], batch_size=6)}
    grades_served = [int(served[p]["grade"]) for p in run["photos"]]
    grades_local = [int(local[p]["grade"]) for p in run["photos"]]
    same = sum(a == b for a, b in zip(grades_served, grades_local))
    print(f"same grade on {same}/30; grades seen {sorted(set(grades_served))}; worst score "
          f"difference {max(abs(served[p]['score'] - local[p]['score']) for p in run['photos'])}")
    assert len(set(grades_local)) > 1, "the model grades every photograph the same"
    assert same >= 29
    # and the pictures themselves: in-graph vs builder preprocessing inside the disc
    from m2cnn_tf.preprocess import graph as graph_preprocess

    inside = fundus.circular_mask(RESOLUTION)
    for path in run["photos"][::5]:
        graph_image, found = graph_preprocess.preprocess_image_bytes(
            tf.constant(open(path, "rb").read()), RESOLUTION)
        offline_image = fundus.load_normalized(path, (RESOLUTION,)).images[RESOLUTION]
        assert bool(found)
        assert np.abs(graph_image.numpy().astype(int) - offline_image)[inside].mean() <= 2.0


def test_tf_serving_rest_body(run, eyepacs_fullres):
    photo = (eyepacs_fullres / "images" / "15_left.jpeg").read_bytes()
    body = json.dumps({"signature_name": "serving_default",
                       "instances": [{"image_bytes": {"b64": base64.b64encode(photo).decode()}}]})
    # What TF Serving does with a REST "instances" body: {"b64": …} becomes the raw bytes of a
    # DT_STRING element, the instances are stacked into the batch, the named signature is run.
    request = json.loads(body)
    batch = [base64.b64decode(instance["image_bytes"]["b64"]) for instance in request["instances"]]
    signature = tf.saved_model.load(run["version"]).signatures[request["signature_name"]]
    outputs = signature(image_bytes=tf.constant(batch))
    assert set(outputs) == set(DOCUMENTED_OUTPUTS)
    assert outputs["probabilities"].shape == (1, 5) and outputs["grade"].dtype == tf.int32
    assert bool(outputs["fundus_found"][0]) and 0 <= int(outputs["grade"][0]) <= 4
    assert abs(float(tf.reduce_sum(outputs["probabilities"][0])) - 1.0) < 1e-5


def test_bad_requests(run):
    signature = tf.saved_model.load(run["version"]).signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="could not be decoded"):
        signature(image_bytes=tf.constant([b"this is not an image"]))
    black = image_io.encode_jpeg(np.zeros((600, 800, 3), np.uint8), 90)
    outputs = signature(image_bytes=tf.constant([black]))
    assert not bool(outputs["fundus_found"][0])
    assert int(outputs["grade"][0]) == signatures.NOT_GRADED
    assert int(outputs["grade_from_probabilities"][0]) == signatures.NOT_GRADED
    assert np.isnan(outputs["score"][0].numpy())
    empty = signature(image_bytes=tf.constant([], tf.string))
    assert empty["probabilities"].shape == (0, 5) and empty["grade"].shape == (0,)


def test_versions_are_never_overwritten(run):
    with pytest.raises(export.ExportError, match="never overwritten"):
        export.export_saved_model(run["model_dir"], run["export_dir"], version=1)
    assert signatures.existing_versions(run["export_dir"]) == [1]
    assert not [n for n in os.listdir(run["export_dir"]) if n.startswith(".")]


def test_predict_writes_one_row_per_photograph_and_errors_for_bad_files(run, eyepacs_1024,
                                                                          tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for path in sorted((eyepacs_1024 / "images").glob("*.jpeg"))[:8]:
        (folder / path.name).symlink_to(path)
    (folder / "empty.jpeg").write_bytes(b"")
    (folder / "notes.jpeg").write_text("not a photograph")
    (folder / "cut.jpeg").write_bytes((eyepacs_1024 / "images" / "1000_left.jpeg")
                                      .read_bytes()[:5000])
    output = tmp_path / "predictions.csv"
    for model in (run["export_dir"], run["model_dir"]):
        _run("predict.py", f"--model={model}", f"--images={folder}", f"--output={output}",
             "--quiet")
        with open(output, newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 11
        errors = {os.path.basename(r["image"]): r["error"] for r in rows if r["error"]}
        assert set(errors) == {"empty.jpeg", "notes.jpeg", "cut.jpeg"}, errors
        assert "empty" in errors["empty.jpeg"] and "truncated" in errors["cut.jpeg"]
        for row in rows:
            if not row["error"]:
                assert 0 <= int(row["grade"]) <= 4
                assert abs(sum(float(row[f"p{g}"]) for g in range(5)) - 1) < 1e-3


def test_evaluate_kappa_equals_sklearn_and_fitting_never_lowers_it(run, tmp_path):
    out = tmp_path / "eval"
    _run("evaluate.py", f"--model={run['export_dir']}", f"--data_dir={run['data_dir']}",
         "--split=train", f"--output_dir={out}", "--quiet")
    report = json.loads((out / "report.json").read_text())
    assert (out / "confusion_score.png").is_file() and (out / "confusion_probabilities.png").is_file()
    model = predictors.open_predictor(run["export_dir"])
    from m2cnn_tf.data import input_pipeline
    from m2cnn_tf.grading import thresholds

    grades, scores, argmax = [], [], []
    for batch in input_pipeline.make_dataset(run["data_dir"], "train", RESOLUTION, 8,
                                             training=False):
        outputs = model.predict_normalized(batch["image"].numpy())
        grades += batch["grade"].numpy().tolist()
        scores += outputs["score"].tolist()
        argmax += outputs["probabilities"].argmax(axis=1).tolist()
    cuts = model.metadata["thresholds"]
    assert report["score"]["kappa"] == pytest.approx(cohen_kappa_score(
        grades, thresholds.apply_thresholds(scores, cuts), weights="quadratic"))
    assert report["probabilities"]["kappa"] == pytest.approx(
        cohen_kappa_score(grades, argmax, weights="quadratic"))
    fitted = json.loads((run["root"] / "fit" / "report.json").read_text())["fitted_thresholds"]
    assert fitted["kappa"] >= fitted["rounding_kappa"]


def test_bad_model_paths_say_what_is_there(tmp_path):
    (tmp_path / "nothing").mkdir()
    with pytest.raises(FileNotFoundError, match="neither an export"):
        predictors.open_predictor(str(tmp_path / "nothing"))
    with pytest.raises(FileNotFoundError, match="no config.json"):
        export.export_saved_model(str(tmp_path / "nothing"), str(tmp_path / "out"))


def test_an_export_traces_each_signature_once_and_stores_each_variable_once(tmp_path):
    """The writer traces every endpoint once, inside the save, and the SavedModel's variables
    take the bytes of the model's weights once (keras.export.ExportArchive traced each endpoint
    twice and stored the weights twice)."""
    from m2cnn_tf import model as m2cnn

    model = m2cnn.build_m2cnn(RESOLUTION, "tiny")
    archive = export.build_archive(model, RESOLUTION, [0.5, 1.5, 2.5, 3.5])
    traces = []

    def counted(images):
        traces.append(images.shape)
        return {"mean": tf.reduce_mean(tf.cast(images, tf.float32), axis=[1, 2, 3])}

    archive.add_endpoint("counted", counted, input_signature=[
        tf.TensorSpec([None, RESOLUTION, RESOLUTION, 3], tf.uint8, name="images")])
    path = tmp_path / "export"
    archive.write_out(str(path))
    assert len(traces) == 1
    weights = sum(v.numpy().nbytes for v in model.variables)
    stored = sum(f.stat().st_size for f in (path / "variables").iterdir())
    assert weights <= stored < 1.05 * weights, (stored, weights)
    loaded = tf.saved_model.load(str(path))
    assert {signatures.SERVING_SIGNATURE, signatures.NORMALIZED_SIGNATURE,
            signatures.EXPLAIN_SIGNATURE, "counted"} <= set(loaded.signatures)
    images = np.random.default_rng(0).integers(0, 256, (2, RESOLUTION, RESOLUTION, 3), np.uint8)
    served = loaded.signatures[signatures.NORMALIZED_SIGNATURE](images=tf.constant(images))
    np.testing.assert_allclose(served["score"].numpy(),
                               model(images, training=False)["score"].numpy(), atol=1e-5)
