"""Labels beyond the DR grade (quality, gradability, DME, the patient's grade) travel from a
source's InputRecords into the records, the manifest and the input pipeline; a build without
them keeps its bytes and checksum."""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from m2cnn_tf import config
from m2cnn_tf.data import builder, input_pipeline, records, sources


def _inputs():
    inputs, skipped = sources.synthetic_inputs(6, seed=1, width=320)
    labelled = {inputs[0].image_id: (("dme", 1), ("quality", 2)),
                inputs[3].image_id: (("quality", 0),)}
    with_labels = [dataclasses.replace(r, labels=labelled.get(r.image_id, ())) for r in inputs]
    return inputs, with_labels, skipped, labelled


def _build(inputs, skipped, out):
    settings = dataclasses.replace(config.BUILDER, resolutions=(96,), val_fraction=0.0,
                                   num_workers=1)
    return builder.build(inputs, skipped, str(out), settings, {"kind": "synthetic"}, quiet=True)


def test_extra_labels_reach_records_manifest_and_pipeline(tmp_path):
    plain, labelled_inputs, skipped, labelled = _inputs()
    assert builder.inputs_checksum(plain, skipped) != builder.inputs_checksum(labelled_inputs,
                                                                              skipped)
    manifest = _build(labelled_inputs, skipped, tmp_path / "labelled")
    counts = manifest["splits"]["train"]["labels"]
    assert counts["quality"] == {"known": 2, "unknown": 4, "values": {"0": 1, "2": 1}}
    assert counts["dme"] == {"known": 1, "unknown": 5, "values": {"1": 1}}
    assert manifest["features"]["quality"] == records.EXTRA_LABELS["quality"]
    assert "gradable" not in counts and "gradable" not in manifest["features"]

    batch = next(iter(input_pipeline.make_dataset(str(tmp_path / "labelled"), "train", 96, 6,
                                                  training=False)))
    ids = [i.decode() for i in batch["image_id"].numpy()]
    for name in records.EXTRA_LABELS:
        got = dict(zip(ids, batch[name].numpy().tolist()))
        want = {i: dict(labelled.get(i, ())).get(name, records.UNLABELLED) for i in ids}
        assert got == want, name


def test_a_build_without_extra_labels_keeps_its_bytes(tmp_path):
    plain, _, skipped, _ = _inputs()
    manifest = _build(plain, skipped, tmp_path / "plain")
    assert "labels" not in manifest["splits"]["train"]
    assert set(manifest["features"]) == {"image", "grade", "id", "patient_id", "eye", "source"}
    shard = os.path.join(tmp_path / "plain", manifest["splits"]["train"]["resolutions"]["96"]
                         ["shards"][0])
    for serialized in tf.data.TFRecordDataset(shard).as_numpy_iterator():
        example = records.parse_example_numpy(serialized)
        assert not set(records.EXTRA_LABELS.values()) & set(example)
        # the same record written by make_example without labels is the same bytes
        again = records.make_example(example[records.IMAGE_ENCODED], 96,
                                     example[records.GRADE], example[records.IMAGE_ID].decode(),
                                     example[records.PATIENT_ID].decode(),
                                     example[records.EYE].decode(),
                                     example[records.SOURCE].decode())
        assert again == serialized


def test_unknown_label_name_is_refused():
    try:
        records.make_example(b"x", 8, 0, "a", "a", "", "s", {"qualty": 1})
    except KeyError as e:
        assert "qualty" in str(e)
    else:
        raise AssertionError("an unknown label name was written")
    assert np.int64(records.UNLABELLED) == -1
