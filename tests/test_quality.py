"""Image quality: the assessor's arithmetic, fitting and operating point; degraded synthetic
twins; a very dark photograph; quality labels through the build; the export's quality outputs
against the offline computation on camera originals; predict.py --skip_ungradable; evaluate.py's
two kappa columns; two-eye fusion preferring the gradable eye; explain's mark."""

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

from conftest import REPO_ROOT
from m2cnn_tf import fusion
from m2cnn_tf import model as m2cnn
from m2cnn_tf.data import builder, sources
from m2cnn_tf.explain import pictures as explain_pictures
from m2cnn_tf.grading import thresholds
from m2cnn_tf.preprocess import graph as graph_preprocess, image_io
from m2cnn_tf.quality import assessor as assessors, fitting, labelled, measures, workflow
from m2cnn_tf.quality import synthetic as degraded
from m2cnn_tf.config import GOOD, REJECT
from m2cnn_tf.serving import export, signatures
from m2cnn_tf.train import checkpoints
from m2cnn_tf.config import BuilderConfig

RESOLUTION = 96  # the grading network is beside the point here: the smallest tiny model
WIDTH = 640  # synthetic photographs: small, yet the measures see vessels and blur
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
SMALL = degraded.DegradationConfig(photograph_width=WIDTH)


def _run(script, *args):
    result = subprocess.run([sys.executable, str(REPO_ROOT / script), *args],
                            capture_output=True, text=True, env=ENV, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _write_labelled(folder, encoded, quality, prefix):
    """Photographs ``<prefix><i>.jpeg`` and an EyeQ-format CSV as published."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = []
    for i, data in enumerate(encoded):
        image_id = f"{prefix}{i}"
        (folder / f"{image_id}.jpeg").write_bytes(data)
        ids.append(image_id)
    with open(folder / "eyeq.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["", "image", "quality", "DR_grade"])
        for i, (image_id, q) in enumerate(zip(ids, quality)):
            writer.writerow([i, f"{image_id}.jpeg", int(q), 0])
    return ids


@pytest.fixture(scope="module")
def synthetic_assessor(tmp_path_factory):
    """An assessor fitted by ``quality.py fit``'s code on synthetic photographs: each retina
    clean (Good), mildly degraded (Usable) and strongly degraded (Reject)."""
    root = tmp_path_factory.mktemp("quality_fit")
    encoded, quality, _ = degraded.training_set(20, seed=7, config=SMALL)
    _write_labelled(root / "photos", encoded, quality, "s")
    output = str(root / "quality.json")
    lines = []
    assessor = workflow.fit(str(root / "photos"), str(root / "photos" / "eyeq.csv"), output,
                            num_resamples=50, log=lines.append)
    return {"assessor": assessor, "path": output, "root": root, "log": lines}


@pytest.fixture(scope="module")
def real_assessor(eyepacs_1024):
    """An assessor fitted on EyeQ-labelled shared photographs (never written to the
    repository): every Usable and Reject one and the first 60 Good ones (149 of the 253, to
    keep the test short; bench/quality.py fits on all)."""
    data = labelled.labelled_photographs(str(eyepacs_1024 / "images"),
                                         str(eyepacs_1024 / "eyeq_quality.csv"))
    rows = np.flatnonzero((data.quality != GOOD) | (np.cumsum(data.quality == GOOD) <= 60))
    data = data.subset(rows)
    values, found, errors = labelled.measure_files(data.paths)
    assert not errors
    assessor, _ = fitting.fit_assessor(values, data.quality, found, data.patients,
                                       "the shared EyeQ labels")
    return {"assessor": assessor, "data": data}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, synthetic_assessor):
    """A randomly initialised tiny model's run with the synthetic assessor as its quality.json,
    exported; and a folder of clean and degraded photographs with DR labels."""
    root = tmp_path_factory.mktemp("quality_export")
    model_dir = str(root / "run")
    os.makedirs(model_dir)
    keras.utils.set_random_seed(0)
    network = m2cnn.build_m2cnn(RESOLUTION, "tiny")
    checkpoints.write_json(os.path.join(model_dir, checkpoints.CONFIG_JSON),
                           {"resolution": RESOLUTION, "variant": "tiny"})
    tf.train.CheckpointManager(tf.train.Checkpoint(model=network),
                               os.path.join(model_dir, checkpoints.BEST_DIR), max_to_keep=1,
                               checkpoint_name=checkpoints.CHECKPOINT_NAME).save(1)
    thresholds.save_thresholds(model_dir, [-0.5, 0.0, 0.5, 1.0], 0.0, 0.0, "test cuts")
    assessors.save(synthetic_assessor["assessor"], os.path.join(model_dir, assessors.RUN_FILE))
    version = export.export_saved_model(model_dir, str(root / "exported"))
    photos = root / "photos"
    photos.mkdir()
    with open(root / "labels.csv", "w", newline="") as f:
        f.write("image,level\n")
        for i, (kind, clean, worse) in enumerate(degraded.twins([9000, 9001], config=SMALL)):
            for eye, data in (("left", clean), ("right", worse)):
                (photos / f"{i}_{eye}.jpeg").write_bytes(data)
                f.write(f"{i}_{eye},{i % 5}\n")
    return {"root": root, "model_dir": model_dir, "version": version, "photos": photos}


# --- the assessor's arithmetic, fitting and operating point ---------------------------------


def test_numpy_and_graph_assessors_agree_and_files_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    f = measures.NUM_MEASURES
    assessor = assessors.make_assessor(rng.normal(size=f), rng.uniform(0.5, 2, f),
                                       rng.normal(size=(f, 3)), rng.normal(size=3), 0.3,
                                       {"fitted_on": "random numbers"})
    values = rng.normal(size=(7, f)).astype(np.float32)
    found = np.array([True] * 6 + [False])
    offline = assessor.assess(values, found)
    graph = assessor.outputs(tf.constant(values), tf.constant(found))
    np.testing.assert_allclose(graph["quality_probabilities"].numpy(),
                               offline["quality_probabilities"], atol=1e-6)
    np.testing.assert_array_equal(graph["gradable"].numpy(), offline["gradable"])
    assert offline["quality_probabilities"][-1].tolist() == [0.0, 0.0, 1.0]  # no fundus
    assert offline["gradable"][-1] == assessors.UNGRADABLE
    np.testing.assert_allclose(offline["quality_probabilities"].sum(axis=1), 1.0, atol=1e-6)
    path = assessors.save(assessor, str(tmp_path / "a.json"))
    again = assessors.load(path)
    np.testing.assert_array_equal(again.weights, assessor.weights)
    assert again.reject_threshold == 0.3 and again.record["fitted_on"] == "random numbers"
    data = json.loads(open(path).read())
    data["measure_names"] = data["measure_names"][:-1]
    (tmp_path / "old.json").write_text(json.dumps(data))
    with pytest.raises(assessors.AssessorError, match="fit it again"):
        assessors.load(str(tmp_path / "old.json"))
    unassessed = assessors.assess(None, None, found)
    assert np.isnan(unassessed["quality_probabilities"]).all()
    assert unassessed["gradable"].tolist() == [-1] * 6 + [0]


def test_operating_point_reaches_the_target_sensitivity():
    rng = np.random.default_rng(1)
    quality = rng.integers(0, 3, 400)
    p_reject = np.clip(rng.normal(0.3 + 0.3 * (quality == REJECT), 0.2), 0.001, 1)
    for target in (0.5, 0.8, 0.9, 0.95, 1.0):
        t = fitting.choose_threshold(p_reject, quality, target)
        rejects = p_reject[quality == REJECT]
        assert np.mean(rejects >= t) >= target
        # the highest such threshold: any higher one misses the target
        assert np.mean(rejects >= np.nextafter(t, 2.0)) < target or t == rejects.max()


def test_gradable_from_stored_labels():
    quality = np.array([0, 1, 2, -1, -1, 2])
    gradable = np.array([-1, -1, -1, -1, 0, 1])
    assert assessors.gradable_from_labels(quality, gradable).tolist() == [1, 1, 0, -1, 0, 1]


def test_fit_command_reports_cross_validation_against_the_best_measure(synthetic_assessor):
    log = "\n".join(synthetic_assessor["log"])
    assert "assessor" in log and "best single measure" in log and "operating point" in log
    record = assessors.load(synthetic_assessor["path"]).record
    cv = record["cross_validation"]
    assert cv["photographs"] == 60 and cv["quality_counts"] == {"Good": 20, "Usable": 20,
                                                                "Reject": 20}
    assert cv["operating_point"]["reject_sensitivity"] >= 0.9
    assert cv["assessor"]["reject_auc"]["point"] > cv["baseline"]["reject_auc"]["point"]
    # the measures were cached beside the assessor, for report
    assert os.path.isfile(workflow.default_cache(synthetic_assessor["path"]))


def test_report_command_draws_roc_confusion_and_grids(synthetic_assessor):
    root = synthetic_assessor["root"]
    lines = []
    paths = workflow.report(str(root / "photos"), str(root / "photos" / "eyeq.csv"),
                            str(root / "report"), synthetic_assessor["path"],
                            cache=workflow.default_cache(synthetic_assessor["path"]),
                            num_resamples=20, log=lines.append)
    for name in ("roc", "confusion", "most_gradable", "least_gradable"):
        picture = cv2.imread(paths[name])
        assert picture is not None and picture.shape[0] > 200 and picture.std() > 10, name
    report = json.loads(open(paths["report"]).read())
    assert report["photographs"] == 60 and "the assessor" in report["scored_by"]
    assert 0.5 < report["metrics"]["reject_auc"]["point"] <= 1.0
    assert any("operating point" in line for line in lines)


# --- degradations and dark photographs ------------------------------------------------------


def test_degraded_twins_are_called_less_gradable(synthetic_assessor):
    """Every kind of degradation, ten retinas each (seeds apart from the fitting set's): the
    degraded twin's P(Reject) must exceed the clean one's in ≥ 95 % of the pairs of each kind.
    By chance a pair goes either way, so passing by accident has odds below 2⁻³⁰."""
    pairs = degraded.twins(range(5000, 5010), config=SMALL)
    values, found = measures.measure_encoded([c for _, c, _ in pairs] + [d for _, _, d in pairs])
    p = synthetic_assessor["assessor"].probabilities(values, found)[:, REJECT]
    clean, worse = p[:len(pairs)], p[len(pairs):]
    for kind in degraded.KINDS:
        rows = [i for i, (k, _, _) in enumerate(pairs) if k == kind]
        share = np.mean(worse[rows] > clean[rows])
        print(f"{kind}: degraded twin less gradable in {share:.0%} of {len(rows)} pairs")
        assert share >= 0.95, kind


def test_a_very_dark_photograph_is_reject(real_assessor, eyepacs_1024):
    """Good photographs darkened until the rim stands a few grey levels above the black frame
    are called Reject and ungradable, whatever circle the preprocessing then finds."""
    data = real_assessor["data"]
    good = [p for p, q in zip(data.paths, data.quality) if q == GOOD][:8]
    encoded = []
    for path in good:
        image = image_io.read_image(path)
        # the retina's median (brightest channel) brought to 4 grey levels; the rim, darker
        # than the median, ends up 1–4 levels above the frame
        level = np.median(image[image.max(axis=2) > 30], axis=0).max()
        dark = np.clip(np.round(image * (4.0 / level)), 0, 255).astype(np.uint8)
        encoded.append(image_io.encode_jpeg(dark, 90))
    values, found = measures.measure_encoded(encoded)
    outputs = real_assessor["assessor"].assess(values, found)
    print("found:", found.tolist(), "P(Reject):", outputs["quality_probabilities"][:, REJECT])
    assert (outputs["quality_probabilities"].argmax(axis=1) == REJECT).all()
    assert (outputs["gradable"] == assessors.UNGRADABLE).all()
    # and the photographs they came from are gradable
    values, found = measures.measure_encoded([open(p, "rb").read() for p in good])
    assert (real_assessor["assessor"].assess(values, found)["gradable"] == assessors.GRADABLE).mean() >= 0.75
    # and with the disc's circle 6 % too small, too large or off centre
    for path, data in zip(good[:3], encoded[:3]):
        dark = image_io.read_image(data)
        cx, cy, r = graph_preprocess.preprocess_details(open(path, "rb").read(),
                                                        (8,)).circle.numpy()
        for circle in ((cx, cy, 0.94 * r), (cx, cy, 1.06 * r), (cx + 0.06 * r, cy, r)):
            disc, inside = _disc_square(dark, *circle)
            p = real_assessor["assessor"].probabilities(
                measures.disc_measures(tf.constant(disc), tf.constant(inside)).numpy())
            assert p.argmax() == REJECT, (path, circle, p)


def _disc_square(image, cx, cy, r, size=720):
    """The photograph in the square around a given circle, at ``size`` (black outside the
    photograph), and which of its pixels lie inside the photograph."""
    x0, y0, side = int(round(cx - r)), int(round(cy - r)), int(round(2 * r))
    h, w = image.shape[:2]
    padded = np.zeros((side, side, 3), np.uint8)
    inside = np.zeros((side, side), np.uint8)
    xs, ys = max(x0, 0), max(y0, 0)
    xe, ye = min(x0 + side, w), min(y0 + side, h)
    padded[ys - y0:ye - y0, xs - x0:xe - x0] = image[ys:ye, xs:xe]
    inside[ys - y0:ye - y0, xs - x0:xe - x0] = 1
    return (cv2.resize(padded, (size, size), interpolation=cv2.INTER_AREA),
            cv2.resize(inside, (size, size), interpolation=cv2.INTER_NEAREST) > 0)


# --- labels through the build ---------------------------------------------------------------


def test_quality_csv_labels_the_records_it_lists(tmp_path):
    csv_path = tmp_path / "Label_EyeQ_train.csv"
    csv_path.write_text(",image,quality,DR_grade\n0,0_left.jpeg,0,0\n1,1_right.jpeg,2,3\n"
                        "2,77_left.jpeg,1,0\n")
    options = sources.SourceOptions(source="synthetic", num_images=4, synthetic_width=200,
                                    quality_csv=str(csv_path))
    selection = sources.select_inputs(options)
    labels = {r.image_id: r.label_dict().get("quality") for r in selection.inputs}
    assert labels == {"0_left": 0, "0_right": None, "1_left": None, "1_right": 2}
    assert selection.info["quality_matched"] == 2 and selection.info["quality_listed"] == 3
    manifest = builder.build(selection.inputs, selection.skipped, str(tmp_path / "out"),
                             BuilderConfig(resolutions=(64,), val_fraction=0.0, num_workers=1),
                             selection.info, quiet=True)
    assert manifest["splits"]["train"]["labels"]["quality"] == {
        "known": 2, "unknown": 2, "values": {"0": 1, "2": 1}}
    assert sources.read_eyeq_quality(str(csv_path))["77_left"] == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("image,quality\n3_left,0\n3_right,good\n")
    with pytest.raises(sources.SourceError, match=r"bad\.csv, line 3: quality 'good'.*0 \(Good\)"):
        sources.read_eyeq_quality(str(bad))
    (tmp_path / "nocol.csv").write_text("image,level\n3_left,0\n")
    with pytest.raises(sources.SourceError, match="missing column"):
        sources.read_eyeq_quality(str(tmp_path / "nocol.csv"))


# --- served with the grade ------------------------------------------------------------------


def test_export_quality_equals_the_offline_computation(exported, synthetic_assessor,
                                                      eyepacs_fullres):
    """serving_default's quality outputs on the 30 camera originals against measures computed
    offline by the fitting path and the NumPy assessor."""
    photos = sorted((eyepacs_fullres / "images").glob("*.jpeg"))
    loaded = tf.saved_model.load(exported["version"])
    signature = loaded.signatures["serving_default"]
    served_p, served_g = [], []
    for start in range(0, len(photos), 10):
        batch = [p.read_bytes() for p in photos[start:start + 10]]
        out = signature(image_bytes=tf.constant(batch))
        served_p.append(out["quality_probabilities"].numpy())
        served_g.append(out["gradable"].numpy())
    values, found = measures.measure_encoded([p.read_bytes() for p in photos])
    offline = synthetic_assessor["assessor"].assess(values, found)
    difference = np.abs(np.concatenate(served_p) - offline["quality_probabilities"]).max()
    print(f"largest difference of the quality probabilities over {len(photos)} originals: "
          f"{difference:.2e}")
    assert difference <= 1e-4
    np.testing.assert_array_equal(np.concatenate(served_g), offline["gradable"])
    metadata = signatures.read_metadata(exported["version"])
    assert metadata["quality"]["assessor"]["reject_threshold"] == pytest.approx(
        synthetic_assessor["assessor"].reject_threshold)
    normalized = loaded.signatures["predict_normalized"]
    out = normalized(images=tf.zeros([2, RESOLUTION, RESOLUTION, 3], tf.uint8))
    assert out["gradable"].numpy().tolist() == [-1, -1]  # normalised images: not assessed
    # measuring does not touch the grading: the images are preprocess_batch's
    few = tf.constant([p.read_bytes() for p in photos[:3]])
    images, _ = graph_preprocess.preprocess_batch(few, RESOLUTION)
    np.testing.assert_allclose(signature(image_bytes=few)["score"].numpy(),
                               normalized(images=images)["score"].numpy(), atol=1e-6)


def test_predict_skip_ungradable_empties_exactly_the_ungradable_rows(exported):
    output = exported["root"] / "predictions.csv"
    _run("predict.py", f"--model={exported['version']}", f"--images={exported['photos']}",
         f"--output={output}", "--skip_ungradable", "--quiet")
    with open(output, newline="") as f:
        rows = {os.path.basename(r["image"]): r for r in csv.DictReader(f)}
    assert set(rows) == {p.name for p in exported["photos"].iterdir()} and len(rows) == 16
    threshold = signatures.read_metadata(exported["version"])["quality"]["assessor"][
        "reject_threshold"]
    # below the operating point (4-decimal CSV values: a row within 1e-4 of it is ambiguous)
    assert all(abs(float(r["p_reject"]) - threshold) > 1e-4 for r in rows.values())
    ungradable = {n for n, r in rows.items() if float(r["p_reject"]) >= threshold}
    assert 0 < len(ungradable) < len(rows), "the folder should mix gradable and ungradable"
    for name, row in rows.items():
        assert row["p_good"] and row["p_usable"] and row["p_reject"] and row["gradable"]
        probabilities = [float(row[k]) for k in ("p_good", "p_usable", "p_reject")]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-3)
        if name in ungradable:
            assert row["gradable"] == "0" and row["grade"] == "" and row["score"] == ""
            assert "ungradable" in row["error"], row
        else:
            assert row["gradable"] == "1" and row["grade"] != "" and row["error"] == "", row
    # the clean photographs (left) are mostly gradable, their degraded twins (right) mostly not
    assert sum(n.endswith("_left.jpeg") for n in ungradable) <= 2
    assert sum(n.endswith("_right.jpeg") for n in ungradable) >= 6


def test_evaluate_prints_all_and_gradable_side_by_side(exported):
    out = exported["root"] / "evaluation"
    result = _run("evaluate.py", f"--model={exported['version']}",
                  f"--images_dir={exported['photos']}",
                  f"--labels_csv={exported['root'] / 'labels.csv'}", "--bootstrap=20",
                  f"--output_dir={out}", "--quiet")
    report = json.loads((out / "report.json").read_text())
    counts = report["gradable"]
    assert counts["gradable"] + counts["ungradable"] == report["count"] == 16
    assert counts["report"]["count"] == counts["gradable"] > 0
    text = result.stdout
    assert f"{counts['gradable']} gradable, {counts['ungradable']} ungradable" in text
    assert "all" in text and "kappa (score)" in text
    line = next(l for l in text.splitlines() if "kappa (score)" in l)
    assert f"{report['score']['kappa']:.4f}" in line
    assert f"{counts['report']['score']['kappa']:.4f}" in line
    assert (out / "confusion_score_gradable.png").is_file()


# --- two-eye fusion and explanations --------------------------------------------------------


def _fusion_pieces(feature_dim=4):
    """A stand-in network (pooled features → heads) and a fusion head whose correction is not
    zero, so a fused grade differs from the per-eye one."""
    keras.utils.set_random_seed(3)
    images = keras.Input((8, 8, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(images)
    features = keras.layers.Dense(feature_dim, name="avg_pool")(pooled)
    logits = keras.layers.Dense(5, name="logits")(features)
    score = keras.layers.Reshape(())(keras.layers.Dense(1, name="score_dense")(features))
    network = keras.Model(images, {"features": features, "logits": logits, "score": score})
    base = {"logits": network.get_layer("logits").get_weights(),
            "score": network.get_layer("score_dense").get_weights()}
    head = fusion.build_head(feature_dim, base)
    for name in ("summary_logits", "summary_score"):
        layer = head.get_layer(name)
        layer.set_weights([w + 3.0 for w in layer.get_weights()])
    return network, head


def test_fusion_gives_an_ungradable_eye_the_other_eyes_grade():
    network, head = _fusion_pieces()
    rng = np.random.default_rng(0)
    ids = ["1_left", "1_right", "2_left", "2_right"]
    features = {"image_id": np.array(ids, object), "grade": np.zeros(4, np.int64),
                "features": rng.normal(size=(4, 4)).astype(np.float32),
                "logits": rng.normal(size=(4, 5)).astype(np.float32),
                "score": np.array([0.2, 3.1, 1.4, 2.6], np.float32)}
    cuts, fused_cuts = (0.5, 1.5, 2.5, 3.5), (0.5, 1.5, 2.5, 3.5)
    plain = fusion.fuse(features, head, cuts, fused_cuts)
    assert plain["paired"].all() and not np.array_equal(plain["fused_score"],
                                                        plain["per_eye_score"])
    # patient 1: left ungradable, right gradable; patient 2: both gradable
    out = fusion.fuse(features, head, cuts, fused_cuts, gradable=np.array([0, 1, 1, 1]))
    assert out["from_other_eye"].tolist() == [True, False, False, False]
    assert out["fused_grade"][0] == out["fused_grade"][1] == out["per_eye_grade"][1] == 3
    assert out["fused_score"][1] == pytest.approx(features["score"][1])
    np.testing.assert_allclose(out["fused_score"][2:], plain["fused_score"][2:])

    # the same in the graph (grade_patient's)
    left = tf.constant(rng.integers(0, 255, (2, 8, 8, 3)), tf.uint8)
    right = tf.constant(rng.integers(0, 255, (2, 8, 8, 3)), tf.uint8)
    found = tf.constant([True, True])
    quality = lambda g: {"quality_probabilities": tf.zeros([2, 3]),
                         "gradable": tf.constant(g, tf.int32)}
    served = fusion.patient_outputs(network, head, tf.constant(cuts), tf.constant(fused_cuts),
                                    left, right, found, found, quality([0, 1]), quality([1, 1]))
    per_eye = network(tf.concat([left, right], 0))
    right_grade = int(thresholds.apply_thresholds(per_eye["score"].numpy()[2:3], cuts)[0])
    assert served["left_from_other_eye"].numpy().tolist() == [True, False]
    assert int(served["left_grade"][0]) == int(served["right_grade"][0]) == right_grade
    assert served["left_fused"].numpy().tolist() == [False, True]
    assert served["right_gradable"].numpy().tolist() == [1, 1]


def test_explanation_of_an_ungradable_photograph_is_framed():
    image = np.full((64, 64, 3), 128, np.uint8)
    outputs = {"predicted_class": 1, "probabilities": np.full(5, 0.2), "grade": 1,
               "score": 1.0, **{key: np.zeros((64, 64)) for key, _ in explain_pictures.PANELS}}
    plain = explain_pictures.explanation_image(image, {**outputs, "gradable": 1}, "a.jpeg")
    marked = explain_pictures.explanation_image(
        image, {**outputs, "gradable": 0, "quality_probabilities": np.array([0, 0.1, 0.9])},
        "a.jpeg")
    red = np.array(explain_pictures.UNGRADABLE_COLOUR)
    assert (marked[0, :] == red).all() and (marked[:, -1] == red).all()
    assert not (plain[0, :] == red).all(axis=1).any()
    sheet = explain_pictures.contact_sheet([plain, marked])
    assert (sheet[:, sheet.shape[1] // 2 + 5] == red).all(axis=1).mean() > 0.5
