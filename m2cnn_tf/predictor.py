"""One way to grade photographs, whether the model is an export or a training run's folder.

``open_predictor(path)`` returns a Predictor:
- for a SavedModel export (``export.py`` output), photographs go through its
  ``serving_default`` signature (preprocessing inside the graph) and normalised images through
  ``predict_normalized``;
- for a training run (``--model_dir``), the Keras model is rebuilt from its best checkpoint and
  photographs are preprocessed in Python by ``fundus.load_normalized`` — the builder's own path.

Both give the serving outputs (``serving.OUTPUTS``) as NumPy arrays, and both turn an unreadable
file into an error for that file alone.
"""

from __future__ import annotations

import os
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from m2cnn_tf import checkpoints, fundus, image_io, serving, thresholds

FileResult = Tuple[str, Optional[Dict[str, np.ndarray]], Optional[str]]  # path, outputs, error


def _unbatch(outputs: Dict[str, np.ndarray], i: int) -> Dict[str, np.ndarray]:
    return {k: np.asarray(v)[i] for k, v in outputs.items()}


def _numpy(outputs) -> Dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in outputs.items()}


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class Predictor:
    """Grades normalised images or photograph files."""

    resolution: int
    description: str
    metadata: Dict

    def predict_normalized(self, images: np.ndarray) -> Dict[str, np.ndarray]:
        raise NotImplementedError

    def predict_files(self, paths: Sequence[str], batch_size: int = 8) -> Iterator[FileResult]:
        raise NotImplementedError


class ExportPredictor(Predictor):
    """A loaded SavedModel export."""

    def __init__(self, path: str):
        self.path = serving.resolve_export(path)
        self.loaded = tf.saved_model.load(self.path)
        self.metadata = serving.read_metadata(self.path)
        self.resolution = int(self.metadata["resolution"])
        self.description = f"export {self.path}"
        self._bytes = self.loaded.signatures[serving.SERVING_SIGNATURE]
        self._normalized = self.loaded.signatures[serving.NORMALIZED_SIGNATURE]

    def predict_normalized(self, images):
        images = tf.convert_to_tensor(np.asarray(images, np.uint8))
        return _numpy(self._normalized(**{serving.NORMALIZED_INPUT: images}))

    def predict_bytes(self, encoded: List[bytes]) -> Dict[str, np.ndarray]:
        return _numpy(self._bytes(**{serving.BYTES_INPUT: tf.constant(encoded, tf.string)}))

    def predict_files(self, paths, batch_size=8):
        for chunk in _chunks(list(paths), batch_size):
            readable, results = [], {}
            for path in chunk:
                try:
                    data = image_io.read_file_bytes(path)
                    image_io.check_image_bytes(data, path)
                    readable.append((path, data))
                except image_io.ImageReadError as e:
                    results[path] = (None, e.problem)
            if readable:
                try:
                    outputs = self.predict_bytes([d for _, d in readable])
                    for i, (path, _) in enumerate(readable):
                        results[path] = (_unbatch(outputs, i), None)
                except tf.errors.InvalidArgumentError:
                    # One file the header checks passed but the decoder refused: grade the rest
                    # one by one so it fails alone.
                    for path, data in readable:
                        try:
                            results[path] = (_unbatch(self.predict_bytes([data]), 0), None)
                        except tf.errors.InvalidArgumentError as e:
                            results[path] = (None, f"could not be decoded ({e.message.strip()})")
            for path in chunk:
                outputs, error = results[path]
                yield path, outputs, error


class ModelDirPredictor(Predictor):
    """A training run's checkpoint with the offline (builder) preprocessing."""

    def __init__(self, model_dir: str, checkpoint: str = checkpoints.BEST):
        self.model, info = checkpoints.load_trained_model(model_dir, checkpoint)
        self.resolution = int(info["resolution"])
        cuts, source = thresholds.load_thresholds(model_dir)
        self.metadata = {**info, "thresholds": list(cuts), "thresholds_source": source}
        self.description = f"model_dir {model_dir} ({os.path.basename(info['checkpoint'])})"
        self._cuts = tf.constant(cuts, tf.float32)
        self._predict = tf.function(
            lambda images, found: serving.model_outputs(self.model, images, self._cuts, found),
            reduce_retracing=True)

    def predict_normalized(self, images, found=None):
        images = tf.convert_to_tensor(np.asarray(images, np.uint8))
        if found is None:
            found = tf.ones([tf.shape(images)[0]], tf.bool)
        return _numpy(self._predict(images, tf.convert_to_tensor(found)))

    def predict_files(self, paths, batch_size=8):
        for chunk in _chunks(list(paths), batch_size):
            images, ok, results = [], [], {}
            for path in chunk:
                try:
                    images.append(fundus.load_normalized(path, (self.resolution,))
                                  .images[self.resolution])
                    ok.append(path)
                except image_io.ImageReadError as e:
                    results[path] = (None, e.problem)
                except fundus.NoFundusError as e:
                    results[path] = (None, str(e).replace(f"{path}: ", "", 1))
            if ok:
                outputs = self.predict_normalized(np.stack(images))
                for i, path in enumerate(ok):
                    results[path] = (_unbatch(outputs, i), None)
            for path in chunk:
                outputs, error = results[path]
                yield path, outputs, error


def open_predictor(path: str, checkpoint: str = checkpoints.BEST) -> Predictor:
    """An export (a version folder or a base path) or a training run's folder."""
    if serving.is_export(path):
        return ExportPredictor(path)
    if os.path.isfile(os.path.join(path, checkpoints.CONFIG_JSON)):
        return ModelDirPredictor(path, checkpoint)
    contents = ", ".join(sorted(os.listdir(path))[:10]) if os.path.isdir(path) else "no such folder"
    raise FileNotFoundError(f"--model={path} is neither an export (saved_model.pb or integer "
                            f"version folders) nor a training run (config.json); it holds: "
                            f"{contents}")


def list_images(spec: str) -> List[str]:
    """``--images``: a folder, a glob pattern, a text file with one path a line, or a
    comma-separated list of files."""
    import glob

    if os.path.isdir(spec):
        return sorted(os.path.join(spec, n) for n in os.listdir(spec)
                      if not n.startswith(".") and os.path.isfile(os.path.join(spec, n)))
    if any(c in spec for c in "*?["):
        found = sorted(glob.glob(spec))
        if not found:
            raise FileNotFoundError(f"--images={spec}: the pattern matches no file")
        return found
    if os.path.isfile(spec) and os.path.splitext(spec)[1].lower() in (".txt", ".lst", ".list"):
        with open(spec) as f:
            return [line.strip() for line in f if line.strip() and not line.startswith("#")]
    paths = [p for p in spec.split(",") if p]
    if not paths:
        raise FileNotFoundError(f"--images={spec!r} names no image")
    return paths


def iter_with_progress(items: Iterable, total: int, description: str, quiet: bool = False):
    from tqdm import tqdm

    return tqdm(items, total=total, desc=description, unit="img", disable=quiet)
