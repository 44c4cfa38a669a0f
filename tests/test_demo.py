"""The README's first command: the built-in demo runs with no downloads and writes its outputs."""

import subprocess
import sys

from conftest import REPO_ROOT
from m2cnn_tf import image_io


def test_demo_runs_end_to_end_on_builtin_data(tmp_path):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "demo.py"),
                             f"--output_dir={tmp_path}"], capture_output=True, text=True,
                            timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    preview = image_io.read_image(tmp_path / "preview.png")
    assert preview.shape[0] > 5 * 300  # one row per grade
    for grade in range(5):
        assert f"\n{grade:>5}  " in result.stdout
