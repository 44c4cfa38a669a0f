"""The Colab notebook runs end to end in SMOKE mode (synthetic data, tiny variant)."""

import os
import subprocess
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO_ROOT

NOTEBOOK = REPO_ROOT / "notebooks" / "m2cnn_colab.ipynb"


def test_notebook_is_generated_from_its_source(tmp_path):
    """notebooks/make_notebook.py is the source; the committed .ipynb must be its output."""
    fresh = tmp_path / "fresh.ipynb"
    subprocess.run([sys.executable, str(REPO_ROOT / "notebooks" / "make_notebook.py"),
                    str(fresh)], check=True, capture_output=True)
    assert fresh.read_text() == NOTEBOOK.read_text(), "run python notebooks/make_notebook.py"


@pytest.mark.slow
def test_notebook_runs_in_smoke_mode(tmp_path, monkeypatch):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    parameters = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1 and "SMOKE = True" in parameters[0].source
    monkeypatch.setenv("M2CNN_NOTEBOOK_WORKDIR", str(tmp_path))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    client = NotebookClient(notebook, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the failing cell
    outputs = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "exported" in outputs and "grade" in outputs
    assert os.path.isfile(tmp_path / "evaluation_validation" / "confusion_score.png")
    assert any(n.isdigit() for n in os.listdir(tmp_path / "exported" / "m2cnn"))
