"""The TFRecord builder on real photographs: layout, counts, splits, pixels, resume, bad inputs."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO_ROOT, read_labels
from m2cnn_tf.util import locking
from m2cnn_tf.preprocess import fundus, image_io
from m2cnn_tf.data import builder, records, sources, splits
from m2cnn_tf.config import BuilderConfig

BUILD = [sys.executable, str(REPO_ROOT / "build_tfrecords.py")]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def _mini_kaggle(tmp_path, eyepacs_1024, count, name="images"):
    """A Kaggle-layout folder of symlinks to the first ``count`` patients' photographs."""
    labels = read_labels(eyepacs_1024)
    ids = sorted(labels)[: count]
    folder = tmp_path / name
    folder.mkdir()
    for image_id in ids:
        (folder / f"{image_id}.jpeg").symlink_to(eyepacs_1024 / "images" / f"{image_id}.jpeg")
    csv_path = tmp_path / f"{name}.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "level"])
        for image_id in ids:
            writer.writerow([image_id, labels[image_id]])
    return folder, csv_path, {i: labels[i] for i in ids}


def _run(args, check=True, **kwargs):
    result = subprocess.run(BUILD + args, capture_output=True, text=True, env=ENV, timeout=900,
                            **kwargs)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def _read_records(path):
    return [records.parse_example_numpy(r.numpy()) for r in tf.data.TFRecordDataset(str(path))]


def _all_files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and builder.STATE_DIR not in p.parts}


def test_kaggle_layout_builds_every_resolution_with_the_preprocessed_pixels(tmp_path,
                                                                           eyepacs_1024):
    images, labels_csv, labels = _mini_kaggle(tmp_path, eyepacs_1024, 24)
    out = tmp_path / "out"
    _run(["--source=kaggle", f"--images_dir={images}", f"--labels_csv={labels_csv}",
          f"--output_dir={out}", "--resolutions=224,448,720", "--val_fraction=0.25",
          "--examples_per_shard=8", "--quiet"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"] == 24 and manifest["skipped"] == 0
    assert (out / "errors.csv").read_text().strip() == "file,reason"
    total = [0] * 5
    for split in manifest["splits"].values():
        total = [a + b for a, b in zip(total, split["grades"])]
    assert total == list(np.bincount(list(labels.values()), minlength=5))
    assert set(manifest["splits"]) == {"train", "validation"}
    assert manifest["preprocessing"]["alpha"] == 4.0 and manifest["jpeg_quality"] == 95
    patients = {}
    worst_error = 0.0
    for split, entry in manifest["splits"].items():
        for resolution in (224, 448, 720):
            shards = entry["resolutions"][str(resolution)]["shards"]
            assert all(s.startswith(f"{resolution}/{split}-") and s.endswith(".tfrecord")
                       for s in shards)
            examples = [e for s in shards for e in _read_records(out / s)]
            assert len(examples) == entry["count"]
            for e in examples[:6] if resolution == 720 else examples[:3]:
                image = tf.io.decode_jpeg(e[records.IMAGE_ENCODED]).numpy()
                assert image.shape == (resolution, resolution, 3) and image.dtype == np.uint8
                image_id = e[records.IMAGE_ID].decode()
                assert e[records.GRADE] == labels[image_id]
                assert e[records.SOURCE].decode() == f"{image_id}.jpeg"
                expected = fundus.load_normalized(images / f"{image_id}.jpeg",
                                                  (224, 448, 720)).images[resolution]
                error = np.abs(image.astype(int) - expected.astype(int)).mean()
                worst_error = max(worst_error, error)
                assert error <= 2.0, (image_id, resolution, error)  # JPEG q95 round trip
                patients.setdefault(e[records.PATIENT_ID].decode(), set()).add(split)
    assert all(len(s) == 1 for s in patients.values()), "a patient is in two splits"
    print(f"worst mean |stored − normalize_fundus| = {worst_error:.2f} grey levels (JPEG q95)")


@pytest.mark.slow
def test_full_eyepacs_1024_build_counts(tmp_path, eyepacs_1024):
    """The README's command on all 960 photographs."""
    out = tmp_path / "eyepacs"
    result = _run(["--source=kaggle", f"--images_dir={eyepacs_1024 / 'images'}",
                   f"--labels_csv={eyepacs_1024 / 'trainLabels.csv'}", f"--output_dir={out}",
                   "--resolutions=224,448,720"])
    manifest = json.loads((out / "manifest.json").read_text())
    grades = np.sum([s["grades"] for s in manifest["splits"].values()], axis=0).tolist()
    assert grades == [711, 59, 142, 22, 26]
    assert sum(s["count"] for s in manifest["splits"].values()) == 960
    assert sum(s["patients"] for s in manifest["splits"].values()) == 480
    assert (out / "errors.csv").read_text().strip() == "file,reason"
    assert "train" in result.stdout and "skipped: 0 of 960" in result.stdout


def test_usage_column_routes_public_and_private(tmp_path, eyepacs_1024):
    labels = read_labels(eyepacs_1024)
    ids = sorted(labels)[:16]
    folder = tmp_path / "images"
    folder.mkdir()
    for image_id in ids:
        (folder / f"{image_id}.jpeg").symlink_to(eyepacs_1024 / "images" / f"{image_id}.jpeg")
    train_csv, solution_csv = tmp_path / "trainLabels.csv", tmp_path / "retinopathy_solution.csv"
    usage = {}
    with open(train_csv, "w") as t, open(solution_csv, "w") as s:
        t.write("image,level\n")
        s.write("image,level,Usage\n")
        for n, image_id in enumerate(ids):
            patient = n // 2  # both eyes of a patient together
            if patient < 4:
                t.write(f"{image_id},{labels[image_id]}\n")
                usage[image_id] = "train"
            else:
                kind = "Public" if patient % 2 == 0 else "Private"
                s.write(f"{image_id},{labels[image_id]},{kind}\n")
                usage[image_id] = {"Public": "validation", "Private": "test"}[kind]
    out = tmp_path / "out"
    _run(["--source=kaggle", f"--images_dir={folder}",
          f"--labels_csv={train_csv},{solution_csv}", f"--output_dir={out}",
          "--resolutions=224", "--quiet"])
    manifest = json.loads((out / "manifest.json").read_text())
    for split, entry in manifest["splits"].items():
        for shard in entry["resolutions"]["224"]["shards"]:
            for e in _read_records(out / shard):
                assert usage[e[records.IMAGE_ID].decode()] == split
    assert {k: v["count"] for k, v in manifest["splits"].items()} == {
        "train": 8, "validation": 4, "test": 4}


def test_tfds_source_with_tfds_mock_data(tmp_path, eyepacs_1024):
    import tensorflow_datasets as tfds

    labels = read_labels(eyepacs_1024)
    ids = sorted(labels)[:6]
    encoded = {i: (eyepacs_1024 / "images" / f"{i}.jpeg").read_bytes() for i in ids}

    def as_dataset(self, split, *args, **kwargs):
        chosen = {"train": ids[:4], "validation": ids[4:], "test": []}[str(split)]
        return tf.data.Dataset.from_tensor_slices({
            "name": tf.constant(chosen or [""], tf.string)[: len(chosen)],
            "image": tf.constant([encoded[i] for i in chosen] or [b""], tf.string)[: len(chosen)],
            "label": tf.constant([labels[i] for i in chosen] or [0], tf.int64)[: len(chosen)]})

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        inputs, skipped, payloads = sources.tfds_inputs(str(tmp_path / "tfds"), None)
    assert sorted(r.image_id for r in inputs) == ids and not skipped
    assert {r.split for r in inputs} == {"train", "validation"}
    manifest = builder.build(inputs, skipped, str(tmp_path / "out"),
                             BuilderConfig(resolutions=(224,), num_workers=1),
                             {"kind": "tfds"}, payloads, quiet=True)
    assert manifest["splits"]["train"]["count"] == 4
    assert manifest["splits"]["validation"]["count"] == 2


def _kill_after_shards(command, state_dir, shards, timeout=600):
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline:
        done = list(state_dir.glob("*-of-*.json")) if state_dir.exists() else []
        if len(done) >= shards or process.poll() is not None:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the build finished before it could be interrupted"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def test_sigkill_then_rerun_gives_the_uninterrupted_result(tmp_path, eyepacs_1024):
    images, labels_csv, _ = _mini_kaggle(tmp_path, eyepacs_1024, 20)
    common = ["--source=kaggle", f"--images_dir={images}", f"--labels_csv={labels_csv}",
              "--resolutions=224,448", "--examples_per_shard=3", "--num_workers=1", "--quiet"]
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    _run(common + [f"--output_dir={reference}"])
    _kill_after_shards(BUILD + common + [f"--output_dir={interrupted}"],
                       interrupted / builder.STATE_DIR, shards=2)
    assert not (interrupted / "manifest.json").exists()
    # nothing half-written is visible as a shard
    for path in interrupted.rglob("*.tfrecord"):
        assert len(_read_records(path)) > 0
    # the lock of the killed build is stale and gets cleared
    result = _run(common + [f"--output_dir={interrupted}"])
    assert "resuming" in result.stderr or "stale lock" in result.stderr
    assert _all_files(interrupted) == _all_files(reference)
    assert not list(interrupted.rglob("*" + builder.TMP_SUFFIX))


def _write_bad_inputs(folder, source_jpeg):
    data = source_jpeg.read_bytes()
    (folder / "900_left.jpeg").write_bytes(b"")  # zero bytes
    (folder / "900_right.jpeg").write_bytes(data[: len(data) // 3])  # truncated
    (folder / "901_left.jpeg").write_text("not an image at all\n")  # text named .jpeg
    black = np.zeros((600, 800, 3), np.uint8)
    (folder / "901_right.jpeg").write_bytes(image_io.encode_jpeg(black, 90))  # no fundus
    for name in ("902_left", "902_right", "903_left", "903_right"):
        (folder / f"{name}.jpeg").symlink_to(source_jpeg)
    return {
        "900_left": "0", "900_right": "1", "901_left": "2", "901_right": "0",
        "902_left": "7",  # outside 0–4
        "902_right": "",  # label missing
        "904_left": "1",  # image missing for this row
    }


def test_bad_inputs_are_reported_and_counted(tmp_path, eyepacs_1024):
    images, labels_csv, _ = _mini_kaggle(tmp_path, eyepacs_1024, 30)
    bad = _write_bad_inputs(images, eyepacs_1024 / "images" / "1000_left.jpeg")
    with open(labels_csv, "a") as f:
        for image_id, level in bad.items():
            f.write(f"{image_id},{level}\n")
        f.write("903_left,2\n903_left,3\n")  # duplicate id
    # 903_right has a file but no row
    common = ["--source=kaggle", f"--images_dir={images}", f"--labels_csv={labels_csv}",
              "--resolutions=224", "--examples_per_shard=8", "--quiet"]
    strict = tmp_path / "strict"
    result = _run(common + [f"--output_dir={strict}", "--max_error_fraction=0.05"], check=False)
    assert result.returncode == 1
    assert "more than --max_error_fraction=0.05" in result.stderr
    assert not (strict / "manifest.json").exists()
    assert not list(strict.rglob("*" + builder.TMP_SUFFIX))

    out = tmp_path / "lenient"
    _run(common + [f"--output_dir={out}", "--max_error_fraction=0.5"])
    with open(out / "errors.csv", newline="") as f:
        errors = {os.path.basename(row["file"]).split(".")[0]: row["reason"]
                  for row in csv.DictReader(f)}
    expected = {
        "900_left": "empty", "900_right": "truncated JPEG", "901_left": "not a JPEG or PNG",
        "901_right": "no fundus found", "902_left": "outside 0–4", "902_right": "label missing",
        "904_left": "image missing", "903_left": "duplicate id", "903_right": "no row",
    }
    assert set(errors) == set(expected), errors
    for image_id, reason in expected.items():
        assert reason in errors[image_id], (image_id, errors[image_id])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["skipped"] == len(expected)
    assert sum(s["count"] for s in manifest["splits"].values()) == 30 + 1  # + first 903_left


def test_different_inputs_into_the_same_folder_are_refused(tmp_path, eyepacs_1024):
    images, labels_csv, _ = _mini_kaggle(tmp_path, eyepacs_1024, 6)
    out = tmp_path / "out"
    common = ["--source=kaggle", f"--images_dir={images}", f"--labels_csv={labels_csv}",
              f"--output_dir={out}", "--quiet"]
    _run(common + ["--resolutions=224"])
    result = _run(common + ["--resolutions=224,448"], check=False)
    assert result.returncode == 1 and "different inputs or settings" in result.stderr


def test_a_second_builder_is_refused_while_the_first_holds_the_lock(tmp_path):
    lock_path = tmp_path / builder.STATE_DIR / builder.LOCK
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock_path.parent.mkdir(parents=True)
        lock_path.write_text(json.dumps({"pid": holder.pid, "host": os.uname().nodename,
                                         "since": time.time(), "activity": "building"}))
        with pytest.raises(locking.LockedError, match=f"locked by pid {holder.pid}"):
            with locking.DirectoryLock(str(lock_path), "building"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with locking.DirectoryLock(str(lock_path), "building") as lock:  # holder gone: stale
        assert lock.stale_cleared["pid"] == holder.pid
    assert not lock_path.exists()


def test_splits_are_patient_level_stratified_and_seeded():
    inputs = []
    for patient in range(200):
        grade = patient % 5
        for eye in ("left", "right"):
            inputs.append(sources.InputRecord(f"{patient}_{eye}", str(patient), eye, grade,
                                              "file", f"{patient}_{eye}.jpeg"))
    a = splits.assign_splits(inputs, 0.2, seed=3)
    b = splits.assign_splits(inputs, 0.2, seed=3)
    c = splits.assign_splits(inputs, 0.2, seed=4)
    assert [r.split for r in a] == [r.split for r in b]
    assert [r.split for r in a] != [r.split for r in c]
    by_patient = {}
    for r in a:
        by_patient.setdefault(r.patient_id, set()).add(r.split)
    assert all(len(s) == 1 for s in by_patient.values())
    validation = [r for r in a if r.split == "validation"]
    assert len(validation) == 80
    assert np.bincount([r.grade for r in validation], minlength=5).tolist() == [16] * 5
    with pytest.raises(ValueError, match="val_fraction"):
        splits.assign_splits(inputs, 1.0, seed=0)


def test_validation_takes_the_fraction_of_all_patients_however_small_the_strata():
    # 6 patients in 5 grade strata: rounding each stratum alone gave none at 0.25
    counts = splits.validation_counts({0: 2, 1: 1, 2: 1, 3: 1, 4: 1}, 0.25)
    assert sum(counts.values()) == 2 and counts[0] == 1  # 1.5 → 2, the largest stratum first
    assert sum(splits.validation_counts({0: 3, 4: 1}, 0.1).values()) == 1  # at least one
    assert sum(splits.validation_counts({0: 1, 1: 1}, 0.9).values()) == 1  # train keeps one
    assert splits.validation_counts({0: 5, 1: 5}, 0.0) == {0: 0, 1: 0}
    assert splits.validation_counts({0: 1}, 0.5) == {0: 0}  # one patient: nothing to hold out
    rng = np.random.default_rng(0)
    for _ in range(200):
        sizes = {g: int(n) for g, n in enumerate(rng.integers(0, 40, 5))}
        fraction = float(rng.uniform(0.01, 0.9))
        counts = splits.validation_counts(sizes, fraction)
        total = sum(sizes.values())
        assert sum(counts.values()) == (min(max(int(fraction * total + 0.5), 1), total - 1)
                                        if total >= 2 else 0)
        for g, n in sizes.items():  # each stratum within one patient of its proportional share
            share = sum(counts.values()) * n / total if total else 0
            assert 0 <= counts[g] <= n and abs(counts[g] - share) < 1
    inputs = [sources.InputRecord(f"{p}_left", str(p), "left", grade, "file", f"{p}.jpeg")
              for p, grade in enumerate([0, 0, 1, 2, 3, 4])]
    assigned = splits.assign_splits(inputs, 0.25, seed=0)
    assert sum(r.split == "validation" for r in assigned) == 2


def test_source_errors_name_what_is_wrong(tmp_path):
    bad_csv = tmp_path / "labels.csv"
    bad_csv.write_text("\ufeffname,grade\r\n1_left,0\r\n")
    (tmp_path / "images").mkdir()
    with pytest.raises(sources.SourceError, match="missing column.*image, level.*name, grade"):
        sources.kaggle_inputs([str(tmp_path / "images")], [str(bad_csv)])
    with pytest.raises(sources.SourceError, match="no such folder"):
        sources.kaggle_inputs([str(tmp_path / "nope")], [str(bad_csv)])
    # BOM and CRLF are fine; a path escaping the images folder is refused
    ok_csv = tmp_path / "ok.csv"
    ok_csv.write_text("\ufeffimage,level\r\n../secret,1\r\n")
    inputs, skipped = sources.csv_inputs(str(tmp_path / "images"), str(ok_csv), "image", "level")
    assert not inputs and "leaves --images_dir" in skipped[0].reason


def test_folders_source(tmp_path, eyepacs_1024):
    labels = read_labels(eyepacs_1024)
    for image_id in sorted(labels)[:10]:
        grade_dir = tmp_path / "classes" / str(labels[image_id])
        grade_dir.mkdir(parents=True, exist_ok=True)
        (grade_dir / f"{image_id}.jpeg").symlink_to(eyepacs_1024 / "images" / f"{image_id}.jpeg")
    (tmp_path / "classes" / "notes").mkdir()
    inputs, skipped = sources.folder_inputs(str(tmp_path / "classes"))
    assert len(inputs) == 10 and all(labels[r.image_id] == r.grade for r in inputs)
    assert len(skipped) == 1 and "not a grade" in skipped[0].reason



def test_build_workers_keep_freed_image_memory(eyepacs_fullres):
    """A build worker (set up by build_worker.init_worker, as the pool does) reuses the memory
    of each photograph's camera-sized buffers for the next one: counted page faults per
    photograph stay far below one decoded image's pages (≈ 1,800 at 1944 × 1296). Measured
    without the malloc setting: ≈ 2,700 faults and 6 ms of kernel time per photograph. Run in a
    fresh interpreter, because the setting is process-wide."""
    photos = sorted(str(p) for p in (eyepacs_fullres / "images").glob("*.jpeg"))[:8]
    code = f"""
import resource
from m2cnn_tf.data import build_worker
build_worker.init_worker()
photos = {photos!r}
def run(paths):
    for path in paths:
        result = build_worker.process(build_worker.Task(0, "file", path, 0, (224, 448, 720), 95))
        assert result.error is None, result.error
run(photos[:4])
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
run(photos[4:])
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO_ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    faults_per_photo = float(out.stdout.strip().splitlines()[-1])
    assert faults_per_photo < 300, f"{faults_per_photo:.0f} page faults per photograph"


def test_a_script_without_a_main_guard_gets_told_why_workers_cannot_start(tmp_path):
    """Spawned workers import the calling script; unguarded, each one starts a build of its
    own and dies. The builder says so at once instead of failing photograph by photograph."""
    script = tmp_path / "my_build.py"
    out = tmp_path / "out"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(REPO_ROOT)!r})\n"
        "from m2cnn_tf.config import BuilderConfig\n"
        "from m2cnn_tf.data import builder, sources\n"
        "inputs, skipped = sources.synthetic_inputs(4, seed=0, width=320)\n"
        f"builder.build(inputs, skipped, {str(out)!r},\n"
        "              BuilderConfig(resolutions=(224,), num_workers=2),\n"
        "              {'kind': 'synthetic'}, quiet=True)\n")
    start = time.monotonic()
    process = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                             env=ENV, timeout=300)
    assert process.returncode != 0
    assert "BuildError" in process.stderr and 'if __name__ == "__main__":' in process.stderr, \
        process.stderr[-3000:]
    assert not (out / builder.MANIFEST).exists() and not list(out.rglob("*.tfrecord*"))
    assert time.monotonic() - start < 120  # one failed start, not one per photograph
