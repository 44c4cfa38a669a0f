"""One way to grade photographs, whether the model is an export or a training run's folder.

``open_predictor(path)`` returns a Predictor:
- for a SavedModel export (``export.py`` output), photographs go through its
  ``serving_default`` signature (preprocessing inside the graph) and normalised images through
  ``predict_normalized``;
- for a training run (``--model_dir``), the Keras model is rebuilt from its best checkpoint and
  photographs are preprocessed in Python by ``fundus.load_normalized`` — the builder's own path.

Both give the serving outputs (``signatures.OUTPUTS``) as NumPy arrays, and both turn an unreadable
file into an error for that file alone. ``normalized_files`` gives the normalised discs
themselves (the model's input), each predictor by its own preprocessing — the export's in-graph
twin, with the constants it was exported with, or the builder's OpenCV code — so that anything
working on the model input (test-time augmentation, ``tta``) keeps each one's parity.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from m2cnn_tf.preprocess import fundus, graph as graph_preprocess, image_io
from m2cnn_tf.grading import thresholds
from m2cnn_tf.quality import assessor as quality_assessor, measures as quality_measures
from m2cnn_tf.train import checkpoints
from m2cnn_tf.serving import signatures
from m2cnn_tf.config import PreprocessConfig

FileResult = Tuple[str, Optional[Dict[str, np.ndarray]], Optional[str]]  # path, outputs, error


def _unbatch(outputs: Dict[str, np.ndarray], i: int) -> Dict[str, np.ndarray]:
    return {k: np.asarray(v)[i] for k, v in outputs.items()}


def _numpy(outputs) -> Dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in outputs.items()}


def _decoder_error(error: tf.errors.OpError) -> str:
    """The line of a graph error that says what is wrong, without the graph's node trace."""
    lines = [line.strip() for line in error.message.splitlines() if line.strip()]
    return next((line for line in lines if "assertion failed" in line or "failed." in line),
                lines[0] if lines else "")


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


QUALITY_OUTPUTS = (quality_assessor.PROBABILITIES_OUTPUT, quality_assessor.GRADABLE_OUTPUT)


def mask_not_found(outputs: Dict[str, np.ndarray], found) -> Dict[str, np.ndarray]:
    """The serving convention for photographs without a fundus, in NumPy: grades −1, score and
    probabilities NaN, ``fundus_found`` False (``signatures.model_outputs`` does it in the graph).
    The quality outputs keep their own convention (``quality.assessor``) and are left as given."""
    found = np.asarray(found, bool)
    outputs = dict(outputs)
    for key, value in outputs.items():
        if key in QUALITY_OUTPUTS:
            continue
        value = np.asarray(value)
        where = found.reshape((-1,) + (1,) * (value.ndim - 1))
        if key == "fundus_found":
            outputs[key] = value & found
        elif np.issubdtype(value.dtype, np.floating):
            outputs[key] = np.where(where, value, np.nan).astype(value.dtype)
        elif np.issubdtype(value.dtype, np.integer):
            outputs[key] = np.where(where, value, signatures.NOT_GRADED).astype(value.dtype)
    return outputs


@dataclasses.dataclass
class NormalizedChunk:
    """Photographs preprocessed into the model's input, a chunk at a time.

    ``images[i]`` (with ``found[i]``) is the normalised disc of ``readable[i]``; every other
    path of the chunk has its reason in ``errors``; ``paths`` keeps the chunk's order.
    ``quality`` holds the photographs' quality outputs (``quality.assessor``), measured on the
    photographs themselves — the normalised discs no longer show their light and focus.
    """

    paths: List[str]
    readable: List[str]
    images: np.ndarray  # (k, r, r, 3) uint8
    found: np.ndarray  # (k,) bool: False when the photograph shows no fundus (export only)
    errors: Dict[str, str]
    quality: Optional[Dict[str, np.ndarray]] = None  # {output: (k, …)}; None: not assessed


class Predictor:
    """Grades normalised images or photograph files."""

    resolution: int
    description: str
    metadata: Dict
    assessor: Optional[quality_assessor.Assessor] = None  # assesses photographs' quality

    def predict_normalized(self, images: np.ndarray, found=None) -> Dict[str, np.ndarray]:
        """The serving outputs for (B, r, r, 3) uint8 normalised discs; rows whose ``found`` is
        False get the no-fundus outputs."""
        raise NotImplementedError

    def normalized_files(self, paths: Sequence[str], batch_size: int = 8
                         ) -> Iterator[NormalizedChunk]:
        """The photographs as the model sees them, ``batch_size`` at a time."""
        raise NotImplementedError

    def predict_files(self, paths: Sequence[str], batch_size: int = 8) -> Iterator[FileResult]:
        """(path, outputs or None, error or None) for every path, in order."""
        for chunk in self.normalized_files(paths, batch_size):
            yield from self._file_results(chunk)

    def _file_results(self, chunk: NormalizedChunk) -> Iterator[FileResult]:
        results = {path: (None, error) for path, error in chunk.errors.items()}
        if chunk.readable:
            outputs = self.predict_normalized(chunk.images, chunk.found)
            outputs.update(chunk.quality or quality_assessor.assess(None, None, chunk.found))
            for i, path in enumerate(chunk.readable):
                results[path] = (_unbatch(outputs, i), None)
        for path in chunk.paths:
            outputs, error = results[path]
            yield path, outputs, error


class ExportPredictor(Predictor):
    """A loaded SavedModel export."""

    def __init__(self, path: str):
        self.path = signatures.resolve_export(path)
        self.loaded = tf.saved_model.load(self.path)
        self.metadata = signatures.read_metadata(self.path)
        self.metadata["prediction"] = signatures.prediction_of(self.metadata)
        self.resolution = int(self.metadata["resolution"])
        self.description = f"export {self.path}"
        self._bytes = self.loaded.signatures[signatures.SERVING_SIGNATURE]
        self._normalized = self.loaded.signatures[signatures.NORMALIZED_SIGNATURE]
        # The preprocessing constants the export was made with (its metadata), so that
        # ``normalized_files`` gives what its serving_default signature feeds the model.
        known = {f.name for f in dataclasses.fields(PreprocessConfig)}
        self.preprocess_config = PreprocessConfig(**{
            k: v for k, v in self.metadata.get("preprocessing", {}).items() if k in known})
        # The assessor built into serving_default, for the photographs ``normalized_files``
        # preprocesses (test-time augmentation) — the same measures, the same arithmetic.
        self.assessor = signatures.export_assessor(self.metadata, self.path)

    def predict_normalized(self, images, found=None):
        images = tf.convert_to_tensor(np.asarray(images, np.uint8))
        outputs = _numpy(self._normalized(**{signatures.NORMALIZED_INPUT: images}))
        return outputs if found is None else mask_not_found(outputs, found)

    def _read(self, chunk) -> Tuple[List[Tuple[str, bytes]], Dict[str, str]]:
        readable, errors = [], {}
        for path in chunk:
            try:
                data = image_io.read_file_bytes(path)
                image_io.check_image_bytes(data, path, self.preprocess_config)
                readable.append((path, data))
            except image_io.ImageReadError as e:
                errors[path] = e.problem
        return readable, errors

    def _preprocess(self, encoded: List[bytes]):
        """(images, found, quality outputs) of encoded photographs, as serving_default sees
        them (the in-graph preprocessing; measured when the export has an assessor)."""
        batch = tf.constant(encoded, tf.string)
        if self.assessor is None:
            images, found = graph_preprocess.preprocess_batch(batch, self.resolution,
                                                              self.preprocess_config)
            return images.numpy(), found.numpy(), quality_assessor.assess(None, None,
                                                                          found.numpy())
        images, found, values = quality_measures.preprocess_and_measure(
            batch, self.resolution, self.preprocess_config)
        return images.numpy(), found.numpy(), self.assessor.assess(values.numpy(),
                                                                   found.numpy())

    def _preprocess_each(self, readable, errors):
        """``_preprocess`` one file at a time, so the one the decoder refuses fails alone."""
        kept, parts = [], []
        for path, data in readable:
            try:
                parts.append(self._preprocess([data]))
                kept.append((path, data))
            except tf.errors.InvalidArgumentError as e:
                errors[path] = f"could not be decoded ({_decoder_error(e)})"
        if not parts:
            return kept, None
        images, found = (np.concatenate([p[i] for p in parts]) for i in range(2))
        quality = {k: np.concatenate([p[2][k] for p in parts]) for k in parts[0][2]}
        return kept, (images, found, quality)

    def normalized_files(self, paths, batch_size=8):
        """The in-graph preprocessing (``graph_preprocess``, what serving_default runs)."""
        size = self.resolution
        for chunk in _chunks(list(paths), batch_size):
            readable, errors = self._read(chunk)
            result = None
            if readable:
                try:
                    result = self._preprocess([d for _, d in readable])
                except tf.errors.InvalidArgumentError:
                    readable, result = self._preprocess_each(readable, errors)
            if result is None:
                result = (np.zeros((0, size, size, 3), np.uint8), np.zeros((0,), bool),
                          quality_assessor.assess(None, None, np.zeros((0,), bool)))
            images, found, quality = result
            yield NormalizedChunk(list(chunk), [p for p, _ in readable], images, found, errors,
                                  quality)

    def predict_bytes(self, encoded: List[bytes]) -> Dict[str, np.ndarray]:
        return _numpy(self._bytes(**{signatures.BYTES_INPUT: tf.constant(encoded, tf.string)}))

    def predict_files(self, paths, batch_size=8):
        """Through the serving_default signature: the raw bytes go in, as TF Serving gets them."""
        for chunk in _chunks(list(paths), batch_size):
            readable, errors = self._read(chunk)
            results = {path: (None, error) for path, error in errors.items()}
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
                            results[path] = (None, f"could not be decoded ({_decoder_error(e)})")
            for path in chunk:
                outputs, error = results[path]
                yield path, outputs, error


class ModelDirPredictor(Predictor):
    """A training run's checkpoint with the offline (builder) preprocessing."""

    def __init__(self, model_dir: str, checkpoint: str = checkpoints.BEST):
        self.assessor = quality_assessor.for_run(model_dir)
        self.model, info = checkpoints.load_trained_model(model_dir, checkpoint)
        self.resolution = int(info["resolution"])
        cuts, source = thresholds.load_thresholds(model_dir)
        self.metadata = {**info, "thresholds": list(cuts), "thresholds_source": source}
        self.description = f"model_dir {model_dir} ({os.path.basename(info['checkpoint'])})"
        self._cuts = tf.constant(cuts, tf.float32)
        prediction = signatures.prediction_of(info)
        self._predict = tf.function(
            lambda images, found: signatures.model_outputs(self.model, images, self._cuts, found,
                                                           prediction=prediction),
            input_signature=[signatures.normalized_images_spec(self.resolution),
                             tf.TensorSpec([None], tf.bool)], autograph=False)

    def predict_normalized(self, images, found=None):
        images = tf.convert_to_tensor(np.asarray(images, np.uint8))
        found = np.ones(len(images), bool) if found is None else np.asarray(found, bool)
        return _numpy(self._predict(images, tf.convert_to_tensor(found)))

    def normalized_files(self, paths, batch_size=8):
        """The builder's preprocessing (``fundus.load_normalized``); a photograph without a
        fundus is an error for that file. With the run's quality assessor, the photographs
        are measured by the export's graph (``quality.measures``)."""
        size = self.resolution
        for chunk in _chunks(list(paths), batch_size):
            images, ok, errors = [], [], {}
            for path in chunk:
                try:
                    images.append(fundus.load_normalized(path, (size,)).images[size])
                    ok.append(path)
                except image_io.ImageReadError as e:
                    errors[path] = e.problem
                except fundus.NoFundusError as e:
                    errors[path] = str(e).replace(f"{path}: ", "", 1)
            stacked = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
            found = np.ones(len(ok), bool)
            yield NormalizedChunk(list(chunk), ok, stacked, found, errors,
                                  self._assess(ok, found))

    def _assess(self, paths: Sequence[str], found) -> Dict[str, np.ndarray]:
        """The quality outputs of photograph files (not assessed without an assessor)."""
        if self.assessor is None or not len(paths):
            return quality_assessor.assess(None, None, found)
        encoded = [image_io.read_file_bytes(p) for p in paths]
        try:
            values, measured = quality_measures.measure_encoded(encoded)
        except tf.errors.InvalidArgumentError:
            # OpenCV read it but TensorFlow's decoder refuses it: graded, not assessed
            return quality_assessor.assess(None, None, found)
        return self.assessor.assess(values, measured)


def open_predictor(path: str, checkpoint: str = checkpoints.BEST) -> Predictor:
    """An export (a version folder or a base path) or a training run's folder."""
    if signatures.model_kind(path) == signatures.EXPORT:
        return ExportPredictor(path)
    return ModelDirPredictor(path, checkpoint)


def list_images(spec: str) -> List[str]:
    """``--images``: a folder, a glob pattern, a text file with one path a line, or a
    comma-separated list of files."""
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
