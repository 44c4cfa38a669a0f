"""The public DR datasets (APTOS 2019, Messidor-2, IDRiD, DDR, DeepDRiD, EyeQ) build from their
download layouts, refuse a broken download before writing anything, and validate a model
externally, side by side.

Every dataset is replicated in miniature (tests/dataset_replicas.py): real photographs from
../shared/data (synthetic ones where it is absent) in the dataset's own folders, file formats,
headers and quirks. One module-scoped fixture builds all six at 96 px.
"""

import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import EYEPACS_1024, REPO_ROOT
import dataset_replicas

from m2cnn_tf import config
from m2cnn_tf.data import builder, datasets, records, sources

RESOLUTION = 96
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
SETTINGS = dataclasses.replace(config.BUILDER, resolutions=(RESOLUTION,), val_fraction=0.34,
                               num_workers=1, seed=0)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory):
    """{dataset: (its --dataset_dir, Expected)} of every replica: real photographs from
    ../shared/data, or synthetic ones standing in where that folder is absent."""
    photos = dataset_replicas.Photos(EYEPACS_1024 if EYEPACS_1024.is_dir() else None)
    return dataset_replicas.make_all(tmp_path_factory.mktemp("downloads"), photos)


@pytest.fixture(scope="module")
def builds(replicas, tmp_path_factory):
    """{dataset: (output folder, manifest)}, each built through sources.select_inputs."""
    out = tmp_path_factory.mktemp("builds")
    made = {}
    for name, (folder, _) in replicas.items():
        options = sources.SourceOptions(source=name, dataset_dir=str(folder))
        selection = sources.select_inputs(options, SETTINGS.seed)
        manifest = builder.build(selection.inputs, selection.skipped, str(out / name), SETTINGS,
                                 selection.info, images_root=selection.images_root, quiet=True)
        made[name] = (out / name, manifest)
    return made


def _records(output_dir, manifest):
    """{image id: parsed record} of every split of a build."""
    import tensorflow as tf

    found = {}
    for split, entry in manifest["splits"].items():
        for shard in entry["resolutions"][str(RESOLUTION)]["shards"]:
            for serialized in tf.data.TFRecordDataset(str(output_dir / shard)).as_numpy_iterator():
                example = records.parse_example_numpy(serialized)
                found[example[records.IMAGE_ID].decode()] = dict(example, split=split)
    return found


def _text(example, key):
    return example[key].decode()


@pytest.mark.parametrize("name", datasets.DATASET_NAMES)
def test_each_dataset_builds_from_its_download_layout(name, replicas, builds):
    _, expected = replicas[name]
    output_dir, manifest = builds[name]
    found = _records(output_dir, manifest)
    assert {i: int(e[records.GRADE]) for i, e in found.items()} == expected.grades
    assert {i: _text(e, records.PATIENT_ID) for i, e in found.items()} == expected.patients
    assert {i: _text(e, records.EYE) for i, e in found.items()} == expected.eyes
    labels = {i: {n: int(e[f]) for n, f in records.EXTRA_LABELS.items() if f in e}
              for i, e in found.items()}
    assert {i: v for i, v in labels.items() if v} == expected.labels
    # official splits kept; the rest assigned, and a patient's photographs in one split
    assert {i: found[i]["split"] for i in expected.splits} == expected.splits
    assert {e["split"] for e in found.values()} <= {"train", "validation", "test"}
    by_patient = {}
    for example in found.values():
        by_patient.setdefault(_text(example, records.PATIENT_ID), set()).add(example["split"])
    assert all(len(s) == 1 for s in by_patient.values()), by_patient
    # exclusions: in errors.csv with their reason, counted in the manifest, not fatal
    with open(output_dir / builder.ERRORS, newline="") as f:
        errors = {os.path.basename(r["file"]): r["reason"] for r in csv.DictReader(f)}
    assert set(errors) == set(expected.excluded)
    for file, word in expected.excluded.items():
        assert word in errors[file] and "(" in errors[file], errors[file]
    assert manifest.get("excluded", 0) == len(expected.excluded) == manifest["skipped"]
    source = manifest["source"]
    assert source["kind"] == name and source["grade_scale"].startswith("ICDR 0–4")
    assert source["split_rule"] and source["caveats"] and source["quirks"]
    assert source["patient_ids"] == (name in ("messidor2", "deepdrid", "eyeq"))
    assert set(source["labels"]) == {n for v in expected.labels.values() for n in v}


def test_quirks_met_in_the_download_are_noted(builds):
    deepdrid = builds["deepdrid"][1]["source"]["notes"]
    assert any("56_r3" in n and "left column" in n for n in deepdrid), deepdrid
    eyeq = builds["eyeq"][1]["source"]["notes"]
    assert any("1 image file(s)" in n and "train" in n for n in eyeq), eyeq


def _copy(replicas, name, tmp_path):
    folder, _ = replicas[name]
    top = folder if folder.name == name else folder.parent
    shutil.copytree(top, tmp_path / name)
    return tmp_path / name / os.path.relpath(folder, top)


def _missing_labels(folder):
    os.remove(folder / "train.csv")
    return "train.csv", "does not exist"


def _renamed_column(folder):
    path = folder / dataset_replicas.IDRID_LABELS.format("a.", "Training")
    path.write_text(path.read_text().replace("Retinopathy grade", "DR grade", 1))
    return "Training Labels.csv:1", "'Retinopathy grade'"


def _grade_off_the_scale(folder):
    path = folder / "DR_grading" / "valid.txt"
    lines = path.read_text().splitlines()
    lines[1] = lines[1].rsplit(" ", 1)[0] + " 7"
    path.write_text("\n".join(lines) + "\n")
    return "valid.txt:2", "grade 7 is outside 0–4"


def _listed_but_absent(folder):
    image = next((folder / "regular_fundus_images" / "regular-fundus-validation" / "Images"
                  ).glob("*/*.jpg"))
    os.remove(image)
    return "regular-fundus-validation.csv:", f"{image.stem} is listed but absent"


BREAKAGES = {"aptos2019": _missing_labels, "idrid": _renamed_column,
             "ddr": _grade_off_the_scale, "deepdrid": _listed_but_absent}


@pytest.mark.parametrize("name", sorted(BREAKAGES))
def test_a_broken_download_is_refused_naming_file_line_and_expectation(name, replicas, tmp_path):
    folder = _copy(replicas, name, tmp_path)
    where, what = BREAKAGES[name](folder)
    with pytest.raises(sources.SourceError) as error:
        sources.select_inputs(sources.SourceOptions(source=name, dataset_dir=str(folder)))
    message = str(error.value)
    assert where in message and what in message and "expected" in message, message


def test_build_tfrecords_writes_nothing_for_a_broken_download(replicas, tmp_path):
    folder = _copy(replicas, "ddr", tmp_path)
    _, what = _grade_off_the_scale(folder)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "build_tfrecords.py"), "--source=ddr",
         f"--dataset_dir={folder}", f"--output_dir={out}", f"--resolutions={RESOLUTION}",
         "--quiet"], capture_output=True, text=True, env=ENV, timeout=600)
    assert result.returncode == 1, result.stderr
    assert what in result.stderr and "valid.txt:2" in result.stderr, result.stderr
    assert not out.exists()


def test_read_eyeq_quality_reads_the_published_and_the_plain_csv(tmp_path):
    published = tmp_path / "Label_EyeQ_test.csv"
    published.write_text(",image,quality,DR_grade\n0,1_right.jpeg,1,0\n1,10001_right.jpeg,0,2\n")
    plain = tmp_path / "eyeq_quality.csv"
    plain.write_text("image,quality\n13_left,2\n")
    assert sources.read_eyeq_quality(str(published)) == {"1_right": 1, "10001_right": 0}
    assert sources.read_eyeq_quality(str(plain)) == {"13_left": 2}
    plain.write_text("image,quality\n13_left,3\n")
    with pytest.raises(sources.SourceError, match=r"eyeq_quality.csv, line 2: quality '3'"):
        sources.read_eyeq_quality(str(plain))


def _run(argv, cwd):
    result = subprocess.run([sys.executable] + argv, capture_output=True, text=True, env=ENV,
                            timeout=900, cwd=cwd)
    assert result.returncode == 0, f"{' '.join(argv)}\n{result.stderr[-3000:]}"
    return result


def _train(data_dir, model_dir):
    from m2cnn_tf.train import loop

    loop.train_and_evaluate(dataclasses.replace(
        config.TRAIN, resolution=RESOLUTION, variant="tiny", init="none", data_dir=str(data_dir),
        model_dir=str(model_dir), batch_size=2, train_steps=2, eval_every_steps=2,
        checkpoint_every_steps=2, augment=False), quiet=True)


def _evaluate_in_process(model_dir, data_dir, output_dir):
    """What evaluate.py does for --model --data_dir --split=test, through the library."""
    from m2cnn_tf.evaluate import collect, reporting
    from m2cnn_tf.serving import predictor

    model = predictor.open_predictor(str(model_dir), "best")
    predictions, _ = collect.predictions_from_records(model, str(data_dir), "test", 4, quiet=True)
    report = collect.evaluate_predictions(predictions, tuple(model.metadata["thresholds"]),
                                          collect.dataset_facts(str(data_dir)),
                                          num_resamples=50)
    report.update(model=model.description, data=str(data_dir), split="test")
    reporting.write_report(report, str(output_dir), title="test", predictions=predictions)
    return report


def test_external_validation_on_two_builds_side_by_side(replicas, builds, tmp_path):
    # Messidor-2 as an external test set, built by the command line
    messidor = tmp_path / "messidor2"
    _run(["build_tfrecords.py", "--source=messidor2",
          f"--dataset_dir={replicas['messidor2'][0]}", "--external_test",
          f"--output_dir={messidor}", f"--resolutions={RESOLUTION}", "--quiet"], REPO_ROOT)
    manifest = builder.read_manifest(str(messidor))
    assert set(manifest["splits"]) == {"test"} and manifest["excluded"] == 1
    assert "--external_test" in manifest["source"]["split_rule"]
    run = tmp_path / "run"
    _train(builds["aptos2019"][0], run)
    # evaluate.py on it: intervals over patients (the exams), Messidor-2's referable caveat
    _run(["evaluate.py", f"--model={run}", f"--data_dir={messidor}", "--split=test",
          "--bootstrap=50", f"--output_dir={tmp_path / 'eval_messidor2'}", "--quiet"], REPO_ROOT)
    report = json.loads((tmp_path / "eval_messidor2" / "report.json").read_text())
    assert report["bootstrap"]["resampled"] == "patients" and report["num_patients"] == 4
    assert any("DME" in c for c in report["dataset"]["caveats"])
    referable = report["referable"]
    assert referable["sensitivity_interval"]["point"] == referable["sensitivity"]
    assert referable["specificity_interval"]["point"] == referable["specificity"]
    assert "## Dataset" in (tmp_path / "eval_messidor2" / "report.md").read_text()
    # DDR's test split: no patient ids, so the intervals resample images
    ddr = _evaluate_in_process(run, builds["ddr"][0], tmp_path / "eval_ddr")
    assert ddr["bootstrap"]["resampled"] == "images" and ddr["num_patients"] is None
    result = _run(["evaluate.py", f"--compare={tmp_path / 'eval_messidor2'},"
                   f"{tmp_path / 'eval_ddr' / 'report.json'}",
                   f"--output_dir={tmp_path / 'comparison'}"], REPO_ROOT)
    table = (tmp_path / "comparison" / "comparison.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| messidor2")
            or line.startswith("| ddr")]
    assert len(rows) == 2 and "| patients |" in rows[0] and "| images |" in rows[1], table
    assert "![ROC curves](comparison_roc.png)" in table and "DME" in table
    assert (tmp_path / "comparison" / "comparison_roc.png").read_bytes()[:4] == b"\x89PNG"
    assert "| messidor2 / test |" in result.stdout


def test_every_description_is_complete():
    for dataset in datasets.DATASETS.values():
        assert {label.name for label in dataset.labels} <= set(records.EXTRA_LABELS), dataset.name
        assert {t.split for t in dataset.tables} <= {None, "train", "validation", "test"}
        assert dataset.layout and dataset.split_rule and dataset.caveats, dataset.name
        assert dataset.patients in (datasets.PATIENT_PER_IMAGE, datasets.PATIENT_KAGGLE_ID,
                                    datasets.PATIENT_COLUMN, datasets.PATIENT_EXAM_LIST)
        assert (dataset.patients == datasets.PATIENT_COLUMN) == bool(dataset.patient_column)
        assert (dataset.patients == datasets.PATIENT_EXAM_LIST) == bool(dataset.exam_list)
    assert set(datasets.DATASET_NAMES) <= set(sources.SOURCES)


def test_external_test_is_for_the_public_datasets_only():
    with pytest.raises(sources.SourceError, match="--external_test applies to the public"):
        sources.select_inputs(sources.SourceOptions(source="synthetic", external_test=True))


def test_a_label_off_its_scale_is_left_unknown_and_noted(replicas, tmp_path):
    folder = _copy(replicas, "messidor2", tmp_path)
    path = folder / "messidor_data.csv"
    lines = path.read_text().splitlines()
    name, grade, _, gradable = lines[1].split(",")
    lines[1] = ",".join([name, grade, "7", gradable])
    path.write_text("\r\n".join(lines) + "\r\n")
    selection = sources.select_inputs(sources.SourceOptions(source="messidor2",
                                                            dataset_dir=str(folder)))
    record = next(r for r in selection.inputs if r.image_id == name[:-4])
    assert record.label_dict() == {"gradable": 1} and record.grade == int(grade)
    assert any("adjudicated_dme '7' is not one of 0, 1" in n and "messidor_data.csv:2" in n
               for n in selection.info["notes"]), selection.info["notes"]
