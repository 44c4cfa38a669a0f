"""Hostile files through the builder, predict.py, the predictor API and serving_default.

One folder holds every hostile file of ``hostile.HOSTILE_FILES`` beside four good synthetic
photographs; each component reads the whole folder once (module fixtures), and one test per
(file, component) checks and records the outcome. Processes that read files run with timeouts,
so a hang fails the test instead of stalling CI.
"""

import csv
import json
import os
import re
import subprocess
import sys

import pytest
import tensorflow as tf

from m2cnn_tf.data import builder
from m2cnn_tf.serving import signatures
from m2cnn_tf.serving import predictor as predictors

from . import hostile
from .cases import FILE_COMPONENTS
from .conftest import ENV, REPO_ROOT, built_grades, error_rows

GOOD = [f"good_{i}" for i in range(4)]
NON_UTF8_NAME = b"\xff\xfe_fundus.jpg"
TIMEOUT = 600


def _stem(name):
    return os.path.splitext(name)[0]


def tf_error(error):
    """The line of an InvalidArgumentError that says what is wrong, brackets removed."""
    lines = [l.strip() for l in error.message.splitlines() if l.strip()]
    line = next((l for l in lines if "assertion failed:" in l or "failed." in l), lines[0])
    line = line.split("assertion failed: ")[-1]
    return re.sub(r"\]? ?\[", " ", line).replace("]", "").strip()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    photos = root / "photos"
    photos.mkdir()
    for i, name in enumerate(GOOD):
        (photos / f"{name}.jpeg").write_bytes(hostile.fundus_jpeg(seed=10 + i, grade=i % 5))
    for file_name, make, _, _ in hostile.HOSTILE_FILES.values():
        (photos / file_name).write_bytes(make())
    with open(os.path.join(os.fsencode(photos), NON_UTF8_NAME), "wb") as f:
        f.write(hostile.fundus_jpeg(seed=20))
    labels = root / "labels.csv"
    with open(labels, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "level"])
        for name in GOOD + [_stem(v[0]) for v in hostile.HOSTILE_FILES.values()]:
            writer.writerow([name, 1])
    return root


def _outcome(graded, error=None, grade=None):
    return {"graded": graded, "error": error, "grade": grade}


@pytest.fixture(scope="module")
def outcomes(folder, exported):
    """{component: {file stem: outcome}} for every component, each run once over the folder."""
    photos = folder / "photos"
    result = {}

    # build_tfrecords.py, Kaggle layout, in a subprocess with a timeout
    out = folder / "built"
    run = subprocess.run(
        [sys.executable, str(REPO_ROOT / "build_tfrecords.py"), "--source=kaggle",
         f"--images_dir={photos}", f"--labels_csv={folder / 'labels.csv'}",
         f"--output_dir={out}", "--resolutions=224", "--max_error_fraction=1",
         "--num_workers=1", "--quiet"], capture_output=True, text=True, env=ENV, timeout=TIMEOUT)
    assert run.returncode == 0, run.stderr[-3000:]
    manifest = json.loads((out / builder.MANIFEST).read_text())
    built = built_grades(out, manifest)
    errors = {_stem(os.path.basename(file)): reason for file, reason in error_rows(out)}
    result["builder"] = {stem: _outcome(True, grade=built[stem]) if stem in built
                         else _outcome(False, errors.get(stem, "(not listed)"))
                         for stem in set(built) | set(errors)}

    # predict.py with the export, in a subprocess with a timeout
    predictions = folder / "predictions.csv"
    run = subprocess.run(
        [sys.executable, str(REPO_ROOT / "predict.py"), f"--model={exported['export_dir']}",
         f"--images={photos}", f"--output={predictions}", "--batch_size=4", "--quiet"],
        capture_output=True, text=True, env=ENV, timeout=TIMEOUT)
    assert run.returncode == 0, run.stderr[-3000:]
    with open(predictions, newline="", encoding="utf-8", errors="surrogateescape") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(os.listdir(photos)), "predict.py lost rows"
    result["predict"] = {
        _stem(os.path.basename(r["image"])): _outcome(not r["error"], r["error"] or None,
                                                      int(r["grade"]) if r["grade"] else None)
        for r in rows}

    # the predictor API on the training run (Python preprocessing), in this process
    model = predictors.open_predictor(exported["model_dir"], "latest")
    paths = sorted(os.path.join(photos, n) for n in os.listdir(photos))
    result["predictor"] = {}
    for path, out_, error in model.predict_files(paths, batch_size=4):
        graded = out_ is not None and bool(out_["fundus_found"])
        result["predictor"][_stem(os.path.basename(path))] = _outcome(
            graded, error, int(out_["grade"]) if graded else None)

    # serving_default, one request per file, in this process
    signature = tf.saved_model.load(exported["version"]).signatures[signatures.SERVING_SIGNATURE]
    result["serving"] = {}
    for path in paths:
        data = open(path, "rb").read()
        try:
            got = signature(image_bytes=tf.constant([data]))
        except tf.errors.InvalidArgumentError as e:
            result["serving"][_stem(os.path.basename(path))] = _outcome(False, tf_error(e))
            continue
        found = bool(got["fundus_found"][0])
        result["serving"][_stem(os.path.basename(path))] = _outcome(
            found, None if found else "fundus_found=False, grade −1, score NaN",
            int(got["grade"][0]))
    result["signature"] = signature
    return result


def _good_ones_graded(component_outcomes):
    return all(component_outcomes[name]["graded"] for name in GOOD)


@pytest.mark.parametrize("component", list(FILE_COMPONENTS))
@pytest.mark.parametrize("name", list(hostile.HOSTILE_FILES))
def test_hostile_file(outcomes, reliability, name, component):
    file_name, _, kind, text = hostile.HOSTILE_FILES[name]
    got = outcomes[component].get(_stem(file_name))
    assert got is not None, f"{component} gave no outcome at all for {file_name}"
    assert _good_ones_graded(outcomes[component]), "a hostile file cost a good photograph"
    if kind == "graded":
        assert got["graded"] and 0 <= got["grade"] <= 4, got
        observed = f"processed: graded {got['grade']}"
    else:
        assert not got["graded"], got
        message = got["error"]
        if component == "serving" and kind == "error":
            # the graph's own checks say "could not be decoded"; libjpeg's refusal of a bad
            # Huffman table comes from the decoder op itself
            assert "could not be decoded" in message or "Invalid JPEG data" in message, message
            if "bomb" in name:
                assert "max_image_pixels" in message, message
        elif component == "serving":
            assert message.startswith("fundus_found=False"), message
        elif component == "predict" and kind == "no_fundus":
            assert "no fundus" in message, message
        else:
            assert text in message, (text, message)
        observed = ("error: " if kind == "error" else "no fundus: ") + message
        if component == "serving" and kind == "error":
            observed = "InvalidArgumentError: " + message
    reliability(f"file.{name}.{component}", observed[:220],
                lost="no (the 4 good photographs beside it were graded)")


def test_non_utf8_file_name_through_predict(outcomes, reliability):
    stem = _stem(os.fsdecode(NON_UTF8_NAME))
    got = outcomes["predict"][stem]
    assert got["graded"], got
    reliability("file.non_utf8_name.predict", f"graded {got['grade']}; the row names the file "
                f"with its bytes as written (surrogate-escaped)")


def test_a_hostile_file_in_a_request_fails_that_request(outcomes, folder, reliability):
    photos = folder / "photos"
    good = (photos / f"{GOOD[0]}.jpeg").read_bytes()
    with pytest.raises(tf.errors.InvalidArgumentError, match="could not be decoded") as info:
        outcomes["signature"](image_bytes=tf.constant([good, hostile.text_as_jpeg(), good]))
    message = tf_error(info.value)
    reliability("file.mixed_batch.serving", f"InvalidArgumentError: {message[:150]}; "
                "predict.py re-sends such a batch one file at a time (see file.*.predict)",
                lost="the request's other files are not graded in that request")


# --------------------------------------------------------------------------------------------
# Memory: decompression bombs are refused before anything is allocated
# --------------------------------------------------------------------------------------------

_WORKER_SCRIPT = r"""
import json, resource, sys
limit = 2 << 30  # 2 GB of address space: a decoded 60000x60000 image (3.6 GB) cannot fit
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from m2cnn_tf.data import build_worker

def status(field):
    with open("/proc/self/status") as f:
        return int(next(l for l in f if l.startswith(field)).split()[1]) // 1024

out = {}
good = build_worker.process(build_worker.Task(0, "file", sys.argv[1], 1, (224,), 95))
out["good_error"], out["baseline_mb"] = good.error, status("VmHWM:")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # restart the high-water mark from the current resident size
for i, path in enumerate(sys.argv[2:]):
    out[path] = build_worker.process(build_worker.Task(i, "file", path, 1, (224,), 95)).error
out["peak_mb"] = status("VmHWM:")
print(json.dumps(out))
"""


def test_bombs_in_a_build_worker_stay_small(folder, reliability):
    photos = folder / "photos"
    bombs = [str(photos / hostile.HOSTILE_FILES[n][0]) for n in ("bomb_png", "bomb_jpeg")]
    run = subprocess.run([sys.executable, "-c", _WORKER_SCRIPT, str(photos / "good_0.jpeg")]
                         + bombs, capture_output=True, text=True, env=ENV, timeout=TIMEOUT)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["good_error"] is None
    for path in bombs:
        assert "max_image_pixels" in out[path], out[path]
    assert out["peak_mb"] <= out["baseline_mb"] + 64, out
    reliability("memory.bomb.worker", f"both refused ('{out[bombs[0]][:60]}…'); peak RSS "
                f"{out['peak_mb']} MB while reading the bombs, {out['baseline_mb']} MB while "
                "reading one good photograph")


def _rss_kb(field):
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith(field)).split()[1])


def _peak_growth_mb(function):
    """Peak resident memory during ``function()`` above the resident memory before it (Linux:
    the high-water mark is reset through /proc/self/clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _rss_kb("VmRSS:")
    function()
    return (_rss_kb("VmHWM:") - before) / 1024


def test_bombs_through_serving_and_the_predictor_stay_small(outcomes, folder, exported,
                                                            reliability):
    photos = folder / "photos"
    bombs = [str(photos / hostile.HOSTILE_FILES[n][0]) for n in ("bomb_png", "bomb_jpeg")]
    signature = outcomes["signature"]
    messages = []

    def serve():
        for path in bombs:
            with pytest.raises(tf.errors.InvalidArgumentError, match="max_image_pixels") as info:
                signature(image_bytes=tf.constant([open(path, "rb").read()]))
            messages.append(info.value.message)

    growth = _peak_growth_mb(serve)
    assert growth < 64, growth
    reliability("memory.bomb.serving", f"both refused with InvalidArgumentError naming "
                f"max_image_pixels; peak RSS grew {growth:.0f} MB")

    model = predictors.open_predictor(exported["model_dir"], "latest")
    errors = []
    growth = _peak_growth_mb(lambda: errors.extend(e for _, _, e in model.predict_files(bombs)))
    assert all("max_image_pixels" in e for e in errors) and len(errors) == 2, errors
    assert growth < 64, growth
    reliability("memory.bomb.predictor", f"both refused per file ('{errors[0][:70]}…'); peak RSS "
                f"grew {growth:.0f} MB")
