"""README's EyePACS recipe runs as printed, build to served model, on a miniature Kaggle-layout
folder (tests/test_readme.py's docstring says what is changed to run on a CPU)."""

import base64
import csv
import json
import os
import re
import shlex

import pytest

from conftest import REPO_ROOT
from readme_commands import (SCRIPTS, TRAINING_FOR_CPU, make_kaggle, offline_init,
                             readme_commands, run, weights_file)


@pytest.fixture(scope="module")
def kaggle(tmp_path_factory, eyepacs_1024):
    """train/ (6 patients), test/ (8 patients: 4 Public, 4 Private) and both label files: every
    command at 720 px reads each photograph of its split (TTA eight times), so few of them."""
    return make_kaggle(tmp_path_factory.mktemp("kaggle"), eyepacs_1024, train_patients=6,
                       test_patients=8)


def test_the_eyepacs_recipe_runs_as_printed(kaggle, tmp_path, eyepacs_1024):
    commands, _ = readme_commands()
    recipe = [c for c in commands if c.startswith(tuple(f"python {s}" for s in SCRIPTS))]
    kinds = [c.split()[1] for c in recipe]
    assert kinds == ["build_tfrecords.py", "train.py", "train.py", "train.py", "evaluate.py",
                     "fuse.py", "evaluate.py", "export.py", "predict.py", "evaluate.py",
                     "predict.py", "explain.py"], kinds
    work = tmp_path / "work"
    work.mkdir()
    for name in ("train", "test", "trainLabels.csv", "retinopathy_solution.csv"):
        (work / name).symlink_to(kaggle / name)  # the README's relative paths, as a user has them
    weights = tmp_path / "inception_resnet_v2_notop.weights.h5"
    weights_file(weights)
    photos = work / "clinic_photos"
    photos.mkdir()
    for image in sorted(os.listdir(kaggle / "test"))[:3]:
        (photos / image).symlink_to(kaggle / "test" / image)
    for command in recipe:
        argv = shlex.split(command)[1:]
        if argv[0] == "train.py":
            argv = offline_init(argv, weights) + TRAINING_FOR_CPU
        if argv[0] in ("build_tfrecords.py", "evaluate.py", "predict.py", "explain.py"):
            argv.append("--quiet")
        argv[0] = str(REPO_ROOT / argv[0])
        run(argv, cwd=work)
    manifest = json.loads((work / "tfrecords" / "eyepacs" / "manifest.json").read_text())
    assert {k: v["count"] for k, v in manifest["splits"].items()} == {
        "train": 12, "validation": 8, "test": 8}
    assert (work / "runs" / "paper_720" / "thresholds.json").is_file()
    assert (work / "runs" / "paper_720" / "evaluation_test" / "report.json").is_file()
    with open(work / "predictions.csv") as f:
        assert len(list(csv.DictReader(f))) == 3
    # the closer look: fusion in the test report, TTA's uncertainty column, Grad-CAM PNGs
    test_report = json.loads((work / "runs" / "paper_720" / "evaluation_test" / "report.json")
                             .read_text())
    assert "fusion" in test_report, sorted(test_report)
    assert (work / "evaluation_tta" / "report.md").is_file()
    with open(work / "predictions_tta.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(r["score_std"] for r in rows)
    assert len(list((work / "explanations").glob("*.png"))) >= 3
    _check_docker_and_curl(commands, work, kaggle)
    _check_explain_export_matches_its_run(work)


def _check_explain_export_matches_its_run(work):
    """The export's explain_normalized signature at 720 px (large cells) gives the maps its
    training run gives (tests/test_explain.py checks the same at 224)."""
    import numpy as np

    from m2cnn_tf import explain
    from m2cnn_tf.preprocess import fundus
    from m2cnn_tf.serving import explainer as explainers

    photo = sorted((work / "clinic_photos").iterdir())[0]
    image = fundus.load_normalized(str(photo), (720,)).images[720][None]
    local = explainers.open_explainer(str(work / "runs" / "paper_720")).explain_normalized(image)
    served = explainers.open_explainer(str(work / "exported" / "m2cnn")).explain_normalized(image)
    for key in explain.MAPS:
        assert served[key].shape == (1, 720, 720), key
        np.testing.assert_allclose(served[key], local[key], atol=1e-3, err_msg=key)
    np.testing.assert_array_equal(served["predicted_class"], local["predicted_class"])


def _check_docker_and_curl(commands, work, kaggle):
    import tensorflow as tf

    docker = next(c for c in commands if c.startswith("docker run"))
    mount = re.search(r'-v "\$PWD/([^:]+):/models/(\w+)"', docker)
    model_name = re.search(r"MODEL_NAME=(\w+)", docker).group(1)
    assert mount and mount.group(2) == model_name
    base = work / mount.group(1)
    assert [n for n in os.listdir(base) if n.isdigit()] == ["1"]  # TF Serving's layout
    curl = next(c for c in commands if c.startswith("curl"))
    assert f"/v1/models/{model_name}:predict" in curl
    template = re.search(r'-d\s+"(.*)"$', curl).group(1).replace('\\"', '"')
    photo = sorted((kaggle / "test").iterdir())[0].read_bytes()
    body = json.loads(template.replace("$(base64 -w0 photo.jpeg)",
                                       base64.b64encode(photo).decode()))
    batch = [base64.b64decode(i["image_bytes"]["b64"]) for i in body["instances"]]
    loaded = tf.saved_model.load(str(base / "1"))
    assert {"grade_patient", "explain_normalized"} <= set(loaded.signatures), list(loaded.signatures)
    signature = loaded.signatures[body["signature_name"]]
    outputs = signature(image_bytes=tf.constant(batch))
    assert bool(outputs["fundus_found"][0]) and 0 <= int(outputs["grade"][0]) <= 4
