"""Hostile label files and paths: each bad row or path is refused by name; the rest is built."""

import json
import os

import pytest

from m2cnn_tf.data import builder, sources
from m2cnn_tf.config import BuilderConfig

from . import hostile
from .conftest import built_grades, error_rows


def _photos(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        (folder / f"{name}.jpeg").write_bytes(hostile.fundus_jpeg(seed=100 + i, width=320))


def _build(inputs, skipped, out):
    manifest = builder.build(inputs, skipped, str(out),
                             BuilderConfig(resolutions=(224,), num_workers=1,
                                           val_fraction=0.0, max_error_fraction=1.0),
                             {"kind": "test"}, quiet=True)
    return built_grades(out, manifest), error_rows(out)


def test_missing_columns_and_a_csv_that_is_not_utf8(tmp_path, reliability):
    (tmp_path / "images").mkdir()
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("name,grade\n1_left,0\n")
    with pytest.raises(sources.SourceError) as kaggle:
        sources.kaggle_inputs([str(tmp_path / "images")], [str(wrong)])
    assert "missing column(s) image, level" in str(kaggle.value) and "name, grade" in str(
        kaggle.value)
    with pytest.raises(sources.SourceError, match="missing column.*path; it has name, grade"):
        sources.csv_inputs(str(tmp_path / "images"), str(wrong), "path", "grade")
    reliability("labels.missing_columns", f"SourceError: {kaggle.value}")

    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("image,level\nsœur_left,0\n".encode("cp1252"))
    with pytest.raises(sources.SourceError, match=r"not UTF-8 text .* at byte \d+") as info:
        sources.kaggle_inputs([str(tmp_path / "images")], [str(latin1)])
    assert str(latin1) in str(info.value)
    reliability("labels.non_utf8_csv", f"SourceError: {info.value}")


def test_bad_grades_duplicates_bom_and_crlf(tmp_path, reliability):
    good = [f"{p}_{e}" for p in range(3) for e in ("left", "right")]
    bad = {"10_left": "2.0", "10_right": "two", "11_left": "", "11_right": "7", "12_left": "-1"}
    _photos(tmp_path / "images", good + list(bad))
    rows = [f"{name},{i % 5}" for i, name in enumerate(good)]
    rows += [f"{name},{grade}" for name, grade in bad.items()]
    rows.append(f"{good[1]},4")  # duplicate id, other grade
    labels = tmp_path / "labels.csv"
    labels.write_bytes(("\ufeffimage,level\r\n" + "\r\n".join(rows) + "\r\n").encode("utf-8"))

    inputs, skipped = sources.kaggle_inputs([str(tmp_path / "images")], [str(labels)])
    built, errors = _build(inputs, skipped, tmp_path / "out")
    assert built == {name: i % 5 for i, name in enumerate(good)}  # BOM, CRLF: every good row
    reasons = {os.path.basename(f).split(".")[0]: r for f, r in errors}
    expected = {"10_left": "grade '2.0' is not an integer", "10_right": "grade 'two' is not",
                "11_left": "label missing", "11_right": "grade 7 is outside 0–4",
                "12_left": "grade -1 is outside 0–4"}
    for name, text in expected.items():
        assert text in reasons[name] and str(labels) in reasons[name], (name, reasons[name])
    reliability("labels.bad_grades", "; ".join(f"{n}: {reasons[n]}" for n in expected)[:400],
                lost="only the 5 bad rows (each listed in errors.csv)")

    duplicates = [r for f, r in errors if "duplicate id" in r]
    assert len(duplicates) == 1 and f"first at {labels}:3" in duplicates[0], duplicates
    assert built[good[1]] == 1  # the first row's grade, not the duplicate's 4
    reliability("labels.duplicate_ids", f"errors.csv: {duplicates[0]}; the first row built "
                f"once with its grade", lost="the duplicate row (listed)")
    assert len(errors) == len(bad) + 1
    reliability("labels.bom_crlf", f"header read despite the BOM, no '\\r' in ids or grades: "
                f"{len(built)} of {len(good)} good rows built")


def test_paths_escaping_the_images_folder_are_refused(tmp_path, reliability):
    _photos(tmp_path / "images", ["0_left", "0_right"])
    _photos(tmp_path, ["outside"])
    os.symlink(tmp_path / "outside.jpeg", tmp_path / "images" / "link.jpeg")
    labels = tmp_path / "labels.csv"
    labels.write_text("path,grade\n0_left.jpeg,1\n0_right,2\n../outside.jpeg,3\n"
                      f"{tmp_path / 'outside.jpeg'},3\nlink.jpeg,3\nsub/../../outside,3\n")
    inputs, skipped = sources.csv_inputs(str(tmp_path / "images"), str(labels), "path", "grade")
    built, errors = _build(inputs, skipped, tmp_path / "out")
    assert built == {"0_left": 1, "0_right": 2}
    refused = {f: r for f, r in errors}
    assert set(refused) == {"../outside.jpeg", str(tmp_path / "outside.jpeg"), "link.jpeg",
                            "sub/../../outside"}, refused
    assert all("leaves --images_dir" in r and "refused" in r for r in refused.values())
    reliability("paths.escape_images_dir", f"4 of 4 refused, e.g. '../outside.jpeg': "
                f"{refused['../outside.jpeg']}", lost="no (refused by design, listed)")


def test_file_names_that_are_not_utf8(tmp_path, reliability):
    classes = tmp_path / "classes"
    _photos(classes / "2", ["ok_left", "ok_right"])
    bad_name = b"\xff\xfe_left.jpeg"
    with open(os.path.join(os.fsencode(classes / "2"), bad_name), "wb") as f:
        f.write(hostile.fundus_jpeg(seed=7, width=320))
    inputs, skipped = sources.folder_inputs(str(classes))
    built, errors = _build(inputs, skipped, tmp_path / "out_folders")
    assert set(built) == {"ok_left", "ok_right"}
    assert len(errors) == 1 and "not valid UTF-8" in errors[0][1], errors
    assert os.fsencode(errors[0][0]).endswith(bad_name)  # errors.csv keeps the file's bytes

    kaggle = tmp_path / "kaggle"
    _photos(kaggle, ["1_left"])
    with open(os.path.join(os.fsencode(kaggle), bad_name), "wb") as f:
        f.write(hostile.fundus_jpeg(seed=8, width=320))
    labels = tmp_path / "labels.csv"
    labels.write_text("image,level\n1_left,3\n")
    inputs, skipped = sources.kaggle_inputs([str(kaggle)], [str(labels)])
    built_kaggle, errors_kaggle = _build(inputs, skipped, tmp_path / "out_kaggle")
    assert built_kaggle == {"1_left": 3}
    assert len(errors_kaggle) == 1 and "not valid UTF-8" in errors_kaggle[0][1]
    manifest = json.loads((tmp_path / "out_kaggle" / builder.MANIFEST).read_text())
    assert manifest["skipped"] == 1
    reliability("paths.non_utf8_names", f"folders and kaggle sources: skipped, errors.csv: "
                f"{errors[0][1]}; the other photographs built",
                lost="the photograph with that name (listed, with how to fix it)")
