"""Every command the README prints runs, on a miniature Kaggle-layout folder made from
../shared/data (train/ and test/ folders, trainLabels.csv and a retinopathy_solution.csv with
Public and Private rows).

The commands are taken from README.md itself and run as written except for: paths (into a
temporary folder), step counts, and what a 2-core CPU without internet needs — the `tiny`
variant and a small batch for training, and a local Keras notop weights file in place of
ImageNet (`--init=imagenet`, which the `paper_224` preset names; the README's troubleshooting
gives that same substitution for offline machines). `docker run` needs a Docker engine, which this machine lacks: its mount and model name
are checked against what export.py wrote, and the `curl` body is decoded as TF Serving does and
fed to the exported signature. The two quick-start commands are run by .ci/run and
tests/test_demo.py.
"""

import base64
import csv
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, read_labels
from m2cnn_tf import config

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
SCRIPTS = ("build_tfrecords.py", "train.py", "evaluate.py", "fuse.py", "export.py", "predict.py",
           "explain.py")
TRAINING_FOR_CPU = ["--variant=tiny", "--batch_size=4", "--train_steps=2",
                    "--eval_every_steps=2", "--quiet"]


def readme_blocks():
    """Commands of each bash block of README.md, continuation lines joined."""
    text = (REPO_ROOT / "README.md").read_text()
    blocks = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        blocks.append([line.strip() for line in joined.splitlines() if line.strip()])
    return blocks


def readme_commands():
    """(commands of the EyePACS recipe blocks, inline `python …` commands of the prose)."""
    text = (REPO_ROOT / "README.md").read_text()
    blocks = readme_blocks()[1:]  # the first is the quick start (.ci/run, test_demo.py)
    commands = [c for b in blocks if not _is_cpu_stages(b) for c in b]
    inline = re.findall(r"`(python (?:-m m2cnn_tf\.\w+|demo\.py)[^`]*)`", text)
    return commands, [" ".join(c.split()) for c in inline]


def _is_cpu_stages(block):
    return any("--source=synthetic" in c for c in block)


def test_the_cpu_stages_run_as_printed(tmp_path):
    block = next(b for b in readme_blocks() if _is_cpu_stages(b))
    assert [c.split()[1] for c in block] == ["build_tfrecords.py"] + ["train.py"] * 3
    for command in block:
        argv = shlex.split(command)[1:]
        argv[0] = str(REPO_ROOT / argv[0])
        _run(argv + (["--quiet"] if "--quiet" not in argv else []), cwd=tmp_path)
    for resolution, new in ((448, ["medial_cells"]), (720, ["large_cells"])):
        report = json.loads((tmp_path / "runs" / f"rehearsal_{resolution}" / "init_report.json")
                            .read_text())
        assert sorted(b for b, v in report["new"].items() if v) == new, report["new"]


@pytest.fixture(scope="module")
def kaggle(tmp_path_factory, eyepacs_1024):
    """train/ (10 patients), test/ (12 patients: 6 Public, 6 Private) and both label files."""
    root = tmp_path_factory.mktemp("kaggle")
    labels = read_labels(eyepacs_1024)
    patients = sorted({i.split("_")[0] for i in labels}, key=int)[:22]
    (root / "train").mkdir()
    (root / "test").mkdir()
    with open(root / "trainLabels.csv", "w", newline="") as t, \
            open(root / "retinopathy_solution.csv", "w", newline="") as s:
        train, solution = csv.writer(t), csv.writer(s)
        train.writerow(["image", "level"])
        solution.writerow(["image", "level", "Usage"])
        for n, patient in enumerate(patients):
            for eye in ("left", "right"):
                image = f"{patient}_{eye}"
                folder = "train" if n < 10 else "test"
                (root / folder / f"{image}.jpeg").symlink_to(eyepacs_1024 / "images" /
                                                            f"{image}.jpeg")
                if folder == "train":
                    train.writerow([image, labels[image]])
                else:
                    solution.writerow([image, labels[image], "Public" if n % 2 else "Private"])
    return root


def _run(argv, cwd):
    result = subprocess.run([sys.executable] + argv, capture_output=True, text=True, env=ENV,
                            timeout=1200, cwd=cwd)
    assert result.returncode == 0, f"{' '.join(argv)}\n{result.stderr[-3000:]}"
    return result


def _offline_init(argv, weights):
    """A train.py command line with ImageNet (named by a flag or by its preset) replaced by a
    local notop weights file."""
    argv = [a.replace("--init=imagenet", f"--init={weights}") for a in argv]
    preset = next((a.split("=", 1)[1] for a in argv if a.startswith("--preset=")), None)
    if preset and config.preset(preset).config.init == "imagenet":
        argv.append(f"--init={weights}")
    return argv


def _weights_file(path):
    code = ("import keras, sys; keras.applications.InceptionResNetV2(include_top=False, "
            "weights=None).save_weights(sys.argv[1])")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, env=ENV, timeout=600)


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
    _weights_file(weights)
    photos = work / "clinic_photos"
    photos.mkdir()
    for image in sorted(os.listdir(kaggle / "test"))[:3]:
        (photos / image).symlink_to(kaggle / "test" / image)
    for command in recipe:
        argv = shlex.split(command)[1:]
        if argv[0] == "train.py":
            argv = _offline_init(argv, weights) + TRAINING_FOR_CPU
        if argv[0] in ("build_tfrecords.py", "evaluate.py", "predict.py", "explain.py"):
            argv.append("--quiet")
        argv[0] = str(REPO_ROOT / argv[0])
        _run(argv, cwd=work)
    manifest = json.loads((work / "tfrecords" / "eyepacs" / "manifest.json").read_text())
    assert {k: v["count"] for k, v in manifest["splits"].items()} == {
        "train": 20, "validation": 12, "test": 12}
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


def test_the_inline_commands_run(kaggle, tmp_path):
    _, inline = readme_commands()
    # the plain `python demo.py` is the quick start (tests/test_demo.py); here the paper's one
    by_start = {c.split()[1] if c.split()[1] != "-m" else c.split()[2]: c for c in inline
                if c != "python demo.py"}
    assert set(by_start) >= {"m2cnn_tf.preprocess.preview", "m2cnn_tf.model", "demo.py"}, by_start
    photo = sorted((kaggle / "train").iterdir())[0]
    preview = shlex.split(by_start["m2cnn_tf.preprocess.preview"])[1:]
    preview = [str(photo) if a == "photo.jpeg" else a for a in preview]
    _run(preview, cwd=tmp_path)
    assert (tmp_path / "preview.png").is_file()
    result = _run(shlex.split(by_start["m2cnn_tf.model"])[1:], cwd=tmp_path)
    assert "21" in result.stdout and "4" in result.stdout
    demo = shlex.split(by_start["demo.py"])[1:]
    demo = [f"--images_dir={kaggle / 'train'}" if a.startswith("--images_dir") else
            f"--labels_csv={kaggle / 'trainLabels.csv'}" if a.startswith("--labels_csv") else a
            for a in demo]
    demo[0] = str(REPO_ROOT / demo[0])
    # the presets' network and schedule, shrunk for a CPU without internet
    result = _run(demo + ["--variant=tiny", "--steps=1", "--init=none", "--batch_size=2",
                          "--quiet", f"--output_dir={tmp_path / 'demo'}"], cwd=tmp_path)
    assert "train 720" in result.stdout and "graded through the export" in result.stdout
