"""What the README's tests share: its commands, read from README.md, and a miniature
Kaggle-layout folder made from ../shared/data (see tests/test_readme.py's docstring)."""

import csv
import os
import re
import subprocess
import sys

from conftest import REPO_ROOT, read_labels
from m2cnn_tf import config

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
SCRIPTS = ("build_tfrecords.py", "train.py", "evaluate.py", "fuse.py", "export.py", "predict.py",
           "explain.py")
TRAINING_FOR_CPU = ["--variant=tiny", "--batch_size=2", "--train_steps=2",
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
    commands = [c for b in blocks if not is_cpu_stages(b) for c in b]
    inline = re.findall(r"`(python (?:-m m2cnn_tf\.\w+|demo\.py)[^`]*)`", text)
    return commands, [" ".join(c.split()) for c in inline]


def is_cpu_stages(block):
    return any("--source=synthetic" in c for c in block)


def run(argv, cwd):
    result = subprocess.run([sys.executable] + argv, capture_output=True, text=True, env=ENV,
                            timeout=1200, cwd=cwd)
    assert result.returncode == 0, f"{' '.join(argv)}\n{result.stderr[-3000:]}"
    return result


def offline_init(argv, weights):
    """A train.py command line with ImageNet (named by a flag or by its preset) replaced by a
    local notop weights file."""
    argv = [a.replace("--init=imagenet", f"--init={weights}") for a in argv]
    preset = next((a.split("=", 1)[1] for a in argv if a.startswith("--preset=")), None)
    if preset and config.preset(preset).config.init == "imagenet":
        argv.append(f"--init={weights}")
    return argv


def weights_file(path):
    code = ("import keras, sys; keras.applications.InceptionResNetV2(include_top=False, "
            "weights=None).save_weights(sys.argv[1])")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, env=ENV, timeout=600)


def make_kaggle(root, eyepacs_1024, train_patients, test_patients):
    """train/ (the first ``train_patients`` patients by id), test/ (the next ``test_patients``,
    alternately Private and Public) and both label files."""
    labels = read_labels(eyepacs_1024)
    patients = sorted({i.split("_")[0] for i in labels}, key=int)[:train_patients + test_patients]
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
                folder = "train" if n < train_patients else "test"
                (root / folder / f"{image}.jpeg").symlink_to(eyepacs_1024 / "images" /
                                                            f"{image}.jpeg")
                if folder == "train":
                    train.writerow([image, labels[image]])
                else:
                    solution.writerow([image, labels[image], "Public" if n % 2 else "Private"])
    return root
