"""Writes notebooks/m2cnn_colab.ipynb from the cells below (edit here, then run this file).

Keeping the notebook's source as Python makes review and diffs readable; the test executes the
written notebook itself (SMOKE mode), so the two cannot drift apart unnoticed.
"""

import pathlib

import nbformat

CELLS = [
    ("markdown", """# M²CNN on EyePACS — the Colab path

Multi-Cell Multi-Task CNNs for diabetic-retinopathy grading (Zhou et al.) with **m2cnn-tf**:
normalised TFRecords → training 224 → 448 → 720 → quadratic-weighted kappa → a TF Serving
SavedModel that grades a raw photograph.

Set `SMOKE = False` below for the real run (a GPU runtime and the Kaggle data). With
`SMOKE = True` (the default, and how CI runs this notebook) everything runs on built-in synthetic
photographs with the tiny variant in a few minutes on a CPU."""),
    ("code", """# Parameters
SMOKE = True                      # True: synthetic data + tiny variant (CI, CPU); False: the paper
REPO_URL = "https://github.com/YOUR_ACCOUNT/m2cnn-tf.git"   # where you cloned/forked m2cnn-tf
KAGGLE_DIR = "/content/kaggle"    # the Kaggle files (see "Data" below)
# The training stages: presets of m2cnn_tf/config.py (resolution, starting weights, steps, rates).
# SMOKE: the tiny variant for a few steps a stage; otherwise the paper's three stages.
STAGES = ["rehearsal_224", "rehearsal_448"] if SMOKE else ["paper_224", "paper_448", "paper_720"]"""),
    ("markdown", "## Install\nIn Colab this clones the repository and installs it; anywhere the "
                 "package is already importable (CI, a local clone) it does nothing."),
    ("code", """import importlib.util, os, subprocess, sys
if importlib.util.find_spec("m2cnn_tf") is None:
    subprocess.run(["git", "clone", "--depth", "1", REPO_URL, "/content/m2cnn-tf"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "/content/m2cnn-tf"],
                   check=True)
    os.chdir("/content/m2cnn-tf")
import m2cnn_tf
from m2cnn_tf import config
REPO = os.path.dirname(os.path.dirname(m2cnn_tf.__file__))
WORK = os.environ.get("M2CNN_NOTEBOOK_WORKDIR", os.path.join(REPO, "notebook_output"))
os.makedirs(WORK, exist_ok=True)
print("m2cnn-tf", m2cnn_tf.__version__, "from", REPO, "; outputs in", WORK)

def run(*args):
    \"\"\"Runs one of the repository's commands and shows its output; stops the notebook on error.\"\"\"
    result = subprocess.run([sys.executable, os.path.join(REPO, args[0]), *args[1:]],
                            capture_output=True, text=True, cwd=WORK)
    print(result.stdout[-4000:])
    if result.returncode:
        print(result.stderr[-4000:])
        raise RuntimeError(f"{args[0]} failed with exit code {result.returncode}")"""),
    ("markdown", "## GPU\nThe real run needs one (Runtime → Change runtime type → GPU)."),
    ("code", """import tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
print("TensorFlow", tf.__version__, "GPUs:", gpus or "none")
if not SMOKE and not gpus:
    print("No GPU: the paper's schedule would take weeks on a CPU. Switch the runtime type.")"""),
    ("markdown", """## Data

Kaggle's *Diabetic Retinopathy Detection* files, either with the Kaggle API
(`kaggle competitions download -c diabetic-retinopathy-detection`, after accepting the rules and
putting `kaggle.json` in `~/.kaggle/`) or copied from your Google Drive:

| file | what |
|---|---|
| `train.zip.001` … `train.zip.005` | 35,126 training photographs (`train/<id>.jpeg`) |
| `trainLabels.csv.zip` | `image,level` for them |
| `test.zip.001` … `test.zip.007` | 53,576 test photographs (`test/<id>.jpeg`) |
| `retinopathy_solution.csv` | `image,level,Usage` for the test photographs (Public = validation, Private = test) |

Unzip into `KAGGLE_DIR` so that it holds `train/`, `test/`, `trainLabels.csv` and
`retinopathy_solution.csv`. The builder then uses the official splits."""),
    ("code", """DATA = os.path.join(WORK, "tfrecords")
sizes = ",".join(str(config.preset(name).config.resolution) for name in STAGES)
if SMOKE:
    run("build_tfrecords.py", "--source=synthetic", "--num_images=30", "--synthetic_width=800",
        f"--resolutions={sizes}", "--val_fraction=0.3", f"--output_dir={DATA}", "--quiet")
else:
    # from google.colab import drive; drive.mount("/content/drive")   # if the data is on Drive
    run("build_tfrecords.py", "--source=kaggle",
        f"--images_dir={KAGGLE_DIR}/train,{KAGGLE_DIR}/test",
        f"--labels_csv={KAGGLE_DIR}/trainLabels.csv,{KAGGLE_DIR}/retinopathy_solution.csv",
        f"--resolutions={sizes}", f"--output_dir={DATA}")"""),
    ("markdown", "## Training: 224 → 448 → 720\nEach stage is a preset and starts from the one "
                 "before (its `--init`, `runs/<preset>`): restored weights train at LR1 = 1e-4, "
                 "the new cells at LR2 = 1e-3. Re-running a cell resumes from its last "
                 "checkpoint. TensorBoard shows the loss terms, both learning rates and "
                 "validation kappa."),
    ("code", """if not SMOKE:
    %load_ext tensorboard
    %tensorboard --logdir {WORK}/runs"""),
    ("code", """for name in STAGES:   # each in WORK/runs/<name>
    run("train.py", f"--preset={name}", f"--data_dir={DATA}", "--quiet" if SMOKE else "--noquiet")
FINAL = os.path.join(WORK, config.preset(STAGES[-1]).config.model_dir)"""),
    ("markdown", "## Evaluation\nThresholds on the score fitted on validation, then the report "
                 "(on `test` for the real run: Kaggle's Private split)."),
    ("code", """from IPython.display import Image, display
run("evaluate.py", f"--model={FINAL}", f"--data_dir={DATA}", "--split=validation",
    "--fit_thresholds", "--quiet")
split = "validation" if SMOKE else "test"
run("evaluate.py", f"--model={FINAL}", f"--data_dir={DATA}", f"--split={split}", "--quiet",
    f"--output_dir={WORK}/evaluation_{split}")
display(Image(filename=f"{WORK}/evaluation_{split}/confusion_score.png"))"""),
    ("markdown", "## Export for TF Serving\n`docker run -p 8501:8501 -v $PWD/exported/m2cnn:/models/m2cnn "
                 "-e MODEL_NAME=m2cnn tensorflow/serving`, then POST `{\"instances\": "
                 "[{\"image_bytes\": {\"b64\": \"…\"}}]}` to "
                 "`http://localhost:8501/v1/models/m2cnn:predict`."),
    ("code", """EXPORT = os.path.join(WORK, "exported", "m2cnn")
run("export.py", f"--model_dir={FINAL}", f"--export_dir={EXPORT}")"""),
    ("markdown", "## Grade a photograph\nIn Colab you are asked to upload one; in SMOKE mode a "
                 "synthetic photograph is used."),
    ("code", """import base64, json
if SMOKE:
    from m2cnn_tf.preprocess import image_io
    from m2cnn_tf.data import synthetic
    photo_path = os.path.join(WORK, "photo.jpeg")
    with open(photo_path, "wb") as f:
        f.write(image_io.encode_jpeg(synthetic.make_fundus(3, seed=5, width=1200).image, 92))
else:
    from google.colab import files
    uploaded = files.upload()
    photo_path = os.path.join(WORK, next(iter(uploaded)))
    with open(photo_path, "wb") as f:
        f.write(uploaded[os.path.basename(photo_path)])
from m2cnn_tf.serving import predictor
exported = predictor.open_predictor(EXPORT)
(path, outputs, error), = exported.predict_files([photo_path])
print(error or {k: v.tolist() for k, v in outputs.items()})
request = {"signature_name": "serving_default",
           "instances": [{"image_bytes": {"b64": base64.b64encode(open(photo_path, "rb").read()).decode()}}]}
print("TF Serving REST body:", json.dumps(request)[:120], "…")"""),
]


def main(argv=None):
    import sys

    argv = sys.argv[1:] if argv is None else argv
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    notebook.metadata["colab"] = {"provenance": []}
    notebook.metadata["accelerator"] = "GPU"
    for i, (kind, source) in enumerate(CELLS):
        cell = (nbformat.v4.new_markdown_cell(source) if kind == "markdown"
                else nbformat.v4.new_code_cell(source))
        cell.id = f"cell-{i:02d}"  # stable ids: the file only changes when a cell does
        if kind == "code" and source.startswith("# Parameters"):
            cell.metadata["tags"] = ["parameters"]
        notebook.cells.append(cell)
    path = pathlib.Path(argv[0]) if argv else pathlib.Path(__file__).with_name("m2cnn_colab.ipynb")
    nbformat.validate(notebook)
    path.write_text(nbformat.writes(notebook))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
