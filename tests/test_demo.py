"""The README's first command, `python demo.py`, shrunk to a few steps: it runs end to end with no
downloads and writes what it says (the full-size run is timed by hand; see BENCHMARKS.md)."""

import os
import subprocess
import sys

from conftest import REPO_ROOT


def test_demo_runs_end_to_end_on_builtin_data(tmp_path):
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "demo.py"), f"--output_dir={tmp_path}",
         "--num_images=20", "--steps=2,1", "--batch_size=4", "--quiet"],
        capture_output=True, text=True, timeout=900, cwd=tmp_path,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for stage in ("data", "train 224", "train 448", "evaluate+export"):
        assert f"\n{stage}" in out, out
    assert "graded through the export" in out
    assert out.count("synthetic_grade") == 3
    assert (tmp_path / "exported" / "m2cnn" / "1" / "saved_model.pb").is_file()
    assert (tmp_path / "runs" / "demo_448" / "init_report.json").is_file()
    assert (tmp_path / "runs" / "demo_448" / "evaluation_validation" / "confusion_score.png").is_file()
