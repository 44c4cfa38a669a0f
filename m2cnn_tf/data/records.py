"""The TFRecord format of a built dataset: feature names, writing and parsing one example.

Every name is defined here once; the builder writes with ``make_example`` and the input pipeline
reads with ``parse_example``, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional

IMAGE_ENCODED = "image/encoded"  # JPEG bytes of the normalised fundus, (r, r, 3) uint8 RGB
IMAGE_FORMAT = "image/format"  # b"jpeg"
IMAGE_HEIGHT = "image/height"  # r
IMAGE_WIDTH = "image/width"  # r
GRADE = "image/grade"  # 0–4, or UNLABELLED
IMAGE_ID = "image/id"  # e.g. b"10_left" (Kaggle ids: <patient>_<left|right>)
PATIENT_ID = "image/patient_id"  # e.g. b"10"; both eyes of a patient share it
EYE = "image/eye"  # b"left", b"right" or b""
SOURCE = "image/source"  # where the photograph came from (path relative to the images folder)

UNLABELLED = -1
ENCODING_FORMAT = b"jpeg"

# Labels beyond the DR grade, under stable names (the key a source and a reader use → the
# feature). Each is written only into the records whose source knows it, and reads back as
# UNLABELLED where absent, so a build without them keeps its bytes.
EXTRA_LABELS = {
    "quality": "image/quality",  # image quality, EyeQ's scale: 0 Good, 1 Usable, 2 Reject
    "gradable": "image/gradable",  # 1 gradable, 0 ungradable (as the dataset's graders said)
    "dme": "image/dme",  # diabetic macular oedema (risk) grade, on the dataset's own scale
    "patient_grade": "image/patient_grade",  # the patient's DR grade (both eyes), 0–4
}


def make_example(
    encoded: bytes,
    size: int,
    grade: int,
    image_id: str,
    patient_id: str,
    eye: str,
    source: str,
    labels: Optional[Mapping[str, int]] = None,
) -> bytes:
    """Serialises one normalised photograph at one resolution as a ``tf.train.Example``.

    Args:
        labels: known labels beyond the grade, by their names in ``EXTRA_LABELS``; the others
            are left out of the record.

    Raises:
        KeyError: a label name that is not in ``EXTRA_LABELS``.
    """
    from tensorflow.core.example import example_pb2, feature_pb2  # protobuf only, no TF runtime

    def _bytes(value: bytes) -> feature_pb2.Feature:
        return feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[value]))

    def _int(value: int) -> feature_pb2.Feature:
        return feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=[int(value)]))

    features = {
        IMAGE_ENCODED: _bytes(encoded),
        IMAGE_FORMAT: _bytes(ENCODING_FORMAT),
        IMAGE_HEIGHT: _int(size),
        IMAGE_WIDTH: _int(size),
        GRADE: _int(grade),
        IMAGE_ID: _bytes(image_id.encode("utf-8")),
        PATIENT_ID: _bytes(patient_id.encode("utf-8")),
        EYE: _bytes(eye.encode("utf-8")),
        SOURCE: _bytes(source.encode("utf-8", errors="surrogateescape")),
    }
    for name, value in (labels or {}).items():
        features[EXTRA_LABELS[name]] = _int(value)
    return example_pb2.Example(
        features=feature_pb2.Features(feature=features)).SerializeToString(deterministic=True)


def feature_spec() -> Dict[str, object]:
    """``tf.io.parse_single_example`` spec of every feature."""
    import tensorflow as tf

    return {
        IMAGE_ENCODED: tf.io.FixedLenFeature([], tf.string),
        IMAGE_FORMAT: tf.io.FixedLenFeature([], tf.string),
        IMAGE_HEIGHT: tf.io.FixedLenFeature([], tf.int64),
        IMAGE_WIDTH: tf.io.FixedLenFeature([], tf.int64),
        GRADE: tf.io.FixedLenFeature([], tf.int64),
        IMAGE_ID: tf.io.FixedLenFeature([], tf.string),
        PATIENT_ID: tf.io.FixedLenFeature([], tf.string),
        EYE: tf.io.FixedLenFeature([], tf.string),
        SOURCE: tf.io.FixedLenFeature([], tf.string),
        **{feature: tf.io.FixedLenFeature([], tf.int64, default_value=UNLABELLED)
           for feature in EXTRA_LABELS.values()},
    }


def parse_example(serialized):
    """A serialised example → dict of tensors (the image still encoded)."""
    import tensorflow as tf

    return tf.io.parse_single_example(serialized, feature_spec())


def parse_example_numpy(serialized: bytes) -> Dict[str, object]:
    """A serialised example → plain Python values, for tests and tools (no TF graph)."""
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example.FromString(serialized)
    out = {}
    for key, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        values = list(getattr(feature, kind).value)
        out[key] = values[0] if len(values) == 1 else values
    return out
