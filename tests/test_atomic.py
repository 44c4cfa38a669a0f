"""util.atomic: a file or folder is replaced whole or not at all, and no temporary is left."""

import json
import os

import numpy as np
import pytest

from m2cnn_tf.util import atomic


def _names(folder):
    return sorted(os.listdir(folder))


def test_write_bytes_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.bin"
    atomic.write_bytes(path, b"old")
    atomic.write_bytes(str(path), b"new bytes", fsync=False)
    assert path.read_bytes() == b"new bytes"
    assert _names(tmp_path) == ["a.bin"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "a.txt"
    atomic.write_text(path, "old\n")
    with pytest.raises(RuntimeError, match="midway"):
        with atomic.replacing(path) as f:
            f.write(b"half of the new")
            raise RuntimeError("midway")
    assert path.read_text() == "old\n"
    assert _names(tmp_path) == ["a.txt"]
    with pytest.raises(UnicodeEncodeError):  # the encoding fails before anything is opened
        atomic.write_text(path, "\udcff")
    assert path.read_text() == "old\n" and _names(tmp_path) == ["a.txt"]


def test_a_write_into_a_missing_folder_raises_oserror(tmp_path):
    with pytest.raises(OSError):
        atomic.write_bytes(tmp_path / "missing" / "a.bin", b"x")
    assert _names(tmp_path) == []


def test_a_leftover_temporary_is_overwritten_by_the_next_write(tmp_path):
    path = tmp_path / "a.json"
    (tmp_path / ("a.json" + atomic.TMP_SUFFIX)).write_bytes(b"left by a killed writer")
    atomic.write_json(path, {"b": 1, "a": [1, 2]}, indent=1, sort_keys=True, end="\n")
    assert path.read_text() == '{\n "a": [\n  1,\n  2\n ],\n "b": 1\n}\n'
    assert _names(tmp_path) == ["a.json"]


def test_write_json_is_json_dumps_byte_for_byte(tmp_path):
    value = {"z": 1.5, "a": "≥ 2", "m": [None, True]}
    atomic.write_json(tmp_path / "r.json", value, indent=2)
    assert (tmp_path / "r.json").read_bytes() == json.dumps(value, indent=2).encode()


def test_write_text_keeps_undecodable_names_with_surrogateescape(tmp_path):
    name = b"caf\xe9.jpeg".decode("utf-8", "surrogateescape")
    atomic.write_text(tmp_path / "p.csv", f"{name}\r\n", errors="surrogateescape")
    assert (tmp_path / "p.csv").read_bytes() == b"caf\xe9.jpeg\r\n"


def test_save_npz_keeps_the_name_and_the_arrays(tmp_path):
    path = tmp_path / "features"  # no .npz: NumPy's own savez would append it
    arrays = {"w0": np.arange(6, dtype=np.float32).reshape(2, 3), "key": np.asarray("k")}
    atomic.save_npz(path, arrays)
    assert _names(tmp_path) == ["features"]
    with np.load(path) as loaded:
        np.testing.assert_array_equal(loaded["w0"], arrays["w0"])
        assert str(loaded["key"]) == "k"


def test_staged_directory_appears_whole_or_not_at_all(tmp_path):
    target = tmp_path / "1"
    with atomic.staged_directory(target) as staging:
        assert os.path.basename(staging).startswith(atomic.STAGING_PREFIX)
        (tmp_path / staging / "saved_model.pb").write_bytes(b"graph")
        assert not target.exists()
    assert (target / "saved_model.pb").read_bytes() == b"graph"
    with pytest.raises(ValueError):
        with atomic.staged_directory(tmp_path / "2") as staging:
            (tmp_path / staging / "half").write_bytes(b"x")
            raise ValueError("export failed")
    assert _names(tmp_path) == ["1"]
    (tmp_path / "3").mkdir()
    (tmp_path / "3" / "kept").write_bytes(b"x")
    with pytest.raises(OSError):  # an existing non-empty version is never replaced
        with atomic.staged_directory(tmp_path / "3") as staging:
            (tmp_path / staging / "new").write_bytes(b"y")
    assert _names(tmp_path / "3") == ["kept"] and _names(tmp_path) == ["1", "3"]
