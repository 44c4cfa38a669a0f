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

import shlex

import pytest

from conftest import REPO_ROOT
from readme_commands import make_kaggle, readme_commands, run


@pytest.fixture(scope="module")
def kaggle(tmp_path_factory, eyepacs_1024):
    """train/ (6 patients) and trainLabels.csv: the commands here read train/ only (the demo
    builds and trains at 720 px from it, so it holds few photographs)."""
    return make_kaggle(tmp_path_factory.mktemp("kaggle"), eyepacs_1024, train_patients=6,
                       test_patients=0)


def test_the_inline_commands_run(kaggle, tmp_path):
    _, inline = readme_commands()
    # the plain `python demo.py` is the quick start (tests/test_demo.py); here the paper's one
    by_start = {c.split()[1] if c.split()[1] != "-m" else c.split()[2]: c for c in inline
                if c != "python demo.py"}
    assert set(by_start) >= {"m2cnn_tf.preprocess.preview", "m2cnn_tf.model", "demo.py"}, by_start
    photo = sorted((kaggle / "train").iterdir())[0]
    preview = shlex.split(by_start["m2cnn_tf.preprocess.preview"])[1:]
    preview = [str(photo) if a == "photo.jpeg" else a for a in preview]
    run(preview, cwd=tmp_path)
    assert (tmp_path / "preview.png").is_file()
    result = run(shlex.split(by_start["m2cnn_tf.model"])[1:], cwd=tmp_path)
    assert "21" in result.stdout and "4" in result.stdout
    demo = shlex.split(by_start["demo.py"])[1:]
    demo = [f"--images_dir={kaggle / 'train'}" if a.startswith("--images_dir") else
            f"--labels_csv={kaggle / 'trainLabels.csv'}" if a.startswith("--labels_csv") else a
            for a in demo]
    demo[0] = str(REPO_ROOT / demo[0])
    # the presets' network and schedule, shrunk for a CPU without internet
    result = run(demo + ["--variant=tiny", "--steps=1", "--init=none", "--batch_size=2",
                          "--quiet", f"--output_dir={tmp_path / 'demo'}"], cwd=tmp_path)
    assert "train 720" in result.stdout and "graded through the export" in result.stdout
