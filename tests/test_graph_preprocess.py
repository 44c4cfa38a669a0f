"""The in-graph preprocessing for serving (graph_preprocess) against fundus.load_normalized.

Serving must feed the network the pictures it was trained on: the TF graph, given the encoded
photograph, has to reproduce the offline NumPy/OpenCV preprocessing. Also checked: the OpenCV
arithmetic it re-implements, bad input, batches, and that it survives a SavedModel round trip
(so no Python op hides in it).
"""

import dataclasses
import time

import cv2
import numpy as np
import pytest
import tensorflow as tf

from m2cnn_tf.preprocess import fundus, graph as graph_preprocess, image_io
from m2cnn_tf.config import PREPROCESS

SIZES = (224, 448, 720)
MAX_MEAN_DIFF = 2.0  # grey levels inside the circular mask (the acceptance bound)
MAX_CIRCLE_ERROR = 0.005  # of the radius
GAMMA = int(round(PREPROCESS.gamma))
_PY_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}


def _files(folder):
    return sorted((folder / "images").glob("*.jpeg"))


def _compare(data: bytes):
    """Graph vs fundus.load_normalized(data, (s,)) at every size: ({size: mean diff}, circle error)."""
    result = graph_preprocess.preprocess_details(data, SIZES)
    assert bool(result.found)
    diffs = {}
    for size in SIZES:
        expected = fundus.load_normalized(data, (size,))
        got = result.images[size].numpy()
        assert got.shape == (size, size, 3) and got.dtype == np.uint8
        diffs[size] = float(np.abs(got.astype(np.int16) - expected.images[size])[
            fundus.circular_mask(size)].mean())
    assert int(result.reduction) == expected.reduction
    c = expected.circle
    error = float(np.max(np.abs(result.circle.numpy() - [c.cx, c.cy, c.radius]))) / c.radius
    return diffs, error


def _check_and_report(named_results, label):
    for name, (diffs, error) in named_results.items():
        assert all(d <= MAX_MEAN_DIFF for d in diffs.values()), f"{name}: {diffs}"
        assert error <= MAX_CIRCLE_ERROR, f"{name}: circle off by {error:.3%} of the radius"
    for size in SIZES:
        values = {name: r[0][size] for name, r in named_results.items()}
        worst = max(values, key=values.get)
        print(f"{label} {size}px: mean |graph - load_normalized| inside the mask "
              f"{np.mean(list(values.values())):.5f}, worst {values[worst]:.5f} ({worst})")
    worst_circle = max(r[1] for r in named_results.values())
    print(f"{label}: worst circle disagreement {worst_circle:.2e} of the radius")


# --- parity with fundus.load_normalized --------------------------------------------------------


@pytest.mark.slow
def test_camera_originals_match_load_normalized(eyepacs_fullres):
    files = _files(eyepacs_fullres)
    assert len(files) == 30
    _check_and_report({f.name: _compare(f.read_bytes()) for f in files}, "camera originals")


def test_1024_photographs_match_load_normalized(eyepacs_1024):
    # 492_right: half a disc; 766_left: extremely dark; 622_left: ordinary.
    names = ["492_right.jpeg", "766_left.jpeg", "622_left.jpeg"]
    names += [f.name for f in _files(eyepacs_1024)[:4]]
    results = {n: _compare((eyepacs_1024 / "images" / n).read_bytes()) for n in names}
    _check_and_report(results, "1024 px")


def test_png_photographs_match(eyepacs_1024):
    rgb = image_io.read_image(eyepacs_1024 / "images" / "622_left.jpeg")
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    bgra = cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA)
    bgra[:, :, 3] = 200
    variants = {
        "RGB PNG": bgr,
        "grayscale PNG": gray,
        "16-bit grayscale PNG": gray.astype(np.uint16) * 257,
        "RGBA PNG": bgra,
    }
    results = {}
    for name, pixels in variants.items():
        data = cv2.imencode(".png", pixels)[1].tobytes()
        assert data.startswith(image_io.PNG_MAGIC)
        results[name] = _compare(data)
    _check_and_report(results, "PNG")


# --- the OpenCV arithmetic it re-implements ----------------------------------------------------


def test_decode_jpeg_is_pixel_identical_to_opencv_at_every_reduction(eyepacs_fullres):
    data = (eyepacs_fullres / "images" / "15_left.jpeg").read_bytes()
    for ratio in (1, 2, 4, 8):
        expected = image_io.decode_image(data, reduction=ratio)
        got = tf.io.decode_jpeg(data, channels=3, ratio=ratio,
                                dct_method="INTEGER_ACCURATE").numpy()
        np.testing.assert_array_equal(got, expected, err_msg=f"ratio {ratio}")


def test_uint8_resizes_are_bit_exact_with_opencv():
    rng = np.random.default_rng(0)
    for (h, w), (out_h, out_w) in [((1237, 1237), (720, 720)), ((600, 610), (720, 720)),
                                   ((720, 720), (448, 448)), ((240, 240), (224, 224)),
                                   ((37, 53), (20, 41)), ((100, 80), (50, 40))]:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        expected = cv2.resize(image, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
        got = graph_preprocess._linear_u8(tf.constant(image), out_h, out_w).numpy()
        np.testing.assert_array_equal(got, expected, err_msg=f"{(h, w)} -> {(out_h, out_w)}")
    for k in (2, 3, 4, 6):
        image = rng.integers(0, 256, (37 * k + 1, 29 * k, 3), dtype=np.uint8)
        h, w = image.shape[:2]
        expected = cv2.resize(image[: h // k * k, : w // k * k], (w // k, h // k),
                              interpolation=cv2.INTER_AREA)
        got = graph_preprocess._area_shrink_u8(tf.constant(image), tf.constant(k)).numpy()
        np.testing.assert_array_equal(got, expected, err_msg=f"area k={k}")
    for k in range(1, 10):  # find_fundus's detection picture: one row in k, area along it
        image = rng.integers(0, 256, (37 * k + k - 1, 29 * k + 1, 3), dtype=np.uint8)
        h, w = image.shape[:2]
        expected = cv2.resize(image[(k - 1) // 2: h // k * k: k, : w // k * k], (w // k, h // k),
                              interpolation=cv2.INTER_AREA)
        got = graph_preprocess._row_sampled_shrink_u8(tf.constant(image), tf.constant(k)).numpy()
        np.testing.assert_array_equal(got, expected, err_msg=f"row-sampled k={k}")


def test_median_network_and_gaussian_kernel_match_opencv():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (41, 57), dtype=np.uint8)
    got = graph_preprocess._median5(tf.constant(image, tf.int32)).numpy()
    np.testing.assert_array_equal(got, cv2.medianBlur(image, 5))
    for sigma in (3.0, 1.7, 4.27):
        kernel = graph_preprocess._gaussian_kernel(sigma)
        np.testing.assert_array_equal(
            kernel, cv2.getGaussianKernel(kernel.size, sigma, cv2.CV_32F)[:, 0])


# --- bad input, no fundus, batches, serving ----------------------------------------------------


def _jpeg(image):
    return image_io.encode_jpeg(image, 95)


def test_non_image_bytes_raise_could_not_be_decoded(eyepacs_1024):
    good = (eyepacs_1024 / "images" / "622_left.jpeg").read_bytes()
    oversized = bytearray(good)
    pos = 2  # patch the frame size in the start-of-frame marker to 65000 x 65000
    while not (0xC0 <= oversized[pos + 1] <= 0xCF and oversized[pos + 1] not in (0xC4, 0xC8, 0xCC)):
        pos += 2 + (oversized[pos + 2] << 8 | oversized[pos + 3])
    oversized[pos + 5 : pos + 9] = bytes([0xFD, 0xE8, 0xFD, 0xE8])
    cases = {
        "text": b"this is not a photograph",
        "empty": b"",
        "JPEG magic only": image_io.JPEG_MAGIC,
        "truncated JPEG": good[: len(good) // 2],
        "header over the pixel limit": bytes(oversized),
    }
    for name, data in cases.items():
        with pytest.raises(tf.errors.InvalidArgumentError, match="could not be decoded"):
            graph_preprocess.preprocess_image_bytes(tf.constant(data), 720)
        with pytest.raises(image_io.ImageReadError):  # the Python side refuses them too
            image_io.check_image_bytes(data)


def test_black_jpeg_gives_found_false_and_gamma_everywhere():
    image, found = graph_preprocess.preprocess_image_bytes(
        tf.constant(_jpeg(np.zeros((600, 800, 3), np.uint8))), 720)
    assert not bool(found)
    assert image.shape == (720, 720, 3) and image.dtype == tf.uint8
    assert np.all(image.numpy() == GAMMA)


def test_graph_reads_the_detection_constants_from_the_config_it_is_given():
    """Non-default RANSAC budgets and levels: the same circle as fundus with the same config;
    too many edge points required: not found, where fundus raises."""
    image = np.zeros((600, 800, 3), np.uint8)
    cv2.circle(image, (390, 310), 330, (150, 80, 40), thickness=cv2.FILLED)
    cv2.circle(image, (300, 260), 60, (190, 120, 60), thickness=cv2.FILLED)  # an optic disc
    config = dataclasses.replace(PREPROCESS, ransac_trials=9, ransac_scoring_points=40,
                                 background_percentile=2.0, foreground_percentile=80.0)
    expected = fundus.find_fundus(image, config)
    found, *circle = graph_preprocess._find_fundus(tf.constant(image), config)  # eager: no trace
    assert bool(found)
    np.testing.assert_allclose([float(v) for v in circle],
                               [expected.cx, expected.cy, expected.radius],
                               rtol=0, atol=MAX_CIRCLE_ERROR * expected.radius)
    needy = dataclasses.replace(PREPROCESS, min_edge_points=100_000)
    with pytest.raises(fundus.NoFundusError, match="no dark border"):
        fundus.find_fundus(image, needy)
    assert not bool(graph_preprocess._find_fundus(tf.constant(image), needy)[0])


def test_batches_in_a_tf_function(eyepacs_1024):
    batch_fn = tf.function(lambda batch: graph_preprocess.preprocess_batch(batch, 224),
                           input_signature=[tf.TensorSpec([None], tf.string)])
    images, found = batch_fn(tf.constant([], tf.string))
    assert images.shape == (0, 224, 224, 3) and images.dtype == tf.uint8
    assert found.shape == (0,)

    photo = (eyepacs_1024 / "images" / "622_left.jpeg").read_bytes()
    png = cv2.imencode(".png", cv2.imread(str(eyepacs_1024 / "images" / "492_right.jpeg")))[1]
    batch = [photo, png.tobytes(), _jpeg(np.zeros((500, 700, 3), np.uint8))]
    images, found = batch_fn(tf.constant(batch))
    assert images.shape == (3, 224, 224, 3)
    assert found.numpy().tolist() == [True, True, False]
    for i in range(2):  # each element is what the single-photograph graph gives
        single = graph_preprocess.preprocess_details(batch[i], SIZES).images[224].numpy()
        np.testing.assert_array_equal(images[i].numpy(), single)
    assert np.all(images[2].numpy() == GAMMA)


class _Serving(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def __call__(self, image_bytes):
        images, found = graph_preprocess.preprocess_batch(image_bytes, 224)
        return {"images": images, "found": found}


def _op_types(saved_model_dir):
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((saved_model_dir / "saved_model.pb").read_bytes())
    types = set()
    for meta in proto.meta_graphs:
        types |= {node.op for node in meta.graph_def.node}
        for function in meta.graph_def.library.function:
            types |= {node.op for node in function.node_def}
    return types


def test_survives_a_saved_model_round_trip(tmp_path, eyepacs_1024):
    export = tmp_path / "serving"
    tf.saved_model.save(_Serving(), str(export))
    types = _op_types(export)
    assert {"DecodeJpeg", "DecodePng", "While"} & types
    assert not types & _PY_OPS, types & _PY_OPS
    loaded = tf.saved_model.load(str(export))
    photo = (eyepacs_1024 / "images" / "766_left.jpeg").read_bytes()
    out = loaded(tf.constant([photo, _jpeg(np.zeros((300, 300, 3), np.uint8))]))
    assert out["found"].numpy().tolist() == [True, False]
    expected = fundus.load_normalized(photo, (224,)).images[224]
    diff = np.abs(out["images"][0].numpy().astype(np.int16) - expected)
    assert diff[fundus.circular_mask(224)].mean() <= MAX_MEAN_DIFF


def test_latency_at_720(eyepacs_fullres):
    files = _files(eyepacs_fullres)[::5]
    data = [f.read_bytes() for f in files]
    graph_preprocess.preprocess_image_bytes(tf.constant(data[0]), 720)  # trace once
    start = time.perf_counter()
    for d in data:
        image, found = graph_preprocess.preprocess_image_bytes(tf.constant(d), 720)
        assert bool(found) and image.shape == (720, 720, 3)
    per_image = (time.perf_counter() - start) / len(data)
    print(f"in-graph preprocessing at 720 px: {per_image * 1000:.0f} ms per camera original "
          f"({len(data)} photographs, 3-16 MP)")
    assert per_image < 5.0  # only a guard against a pathological slowdown
