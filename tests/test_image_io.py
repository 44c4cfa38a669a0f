"""Reading photographs: header parsing, the pixel limit, and one clear error per kind of bad file."""

import struct
import zlib

import cv2
import numpy as np
import pytest

from m2cnn_tf.preprocess import image_io


def _photo(h=300, w=400):
    rng = np.random.default_rng(1)
    image = np.zeros((h, w, 3), np.uint8)
    cv2.circle(image, (w // 2, h // 2), min(h, w) // 2 - 5, (180, 90, 40), cv2.FILLED)
    return np.clip(image + rng.integers(0, 20, image.shape), 0, 255).astype(np.uint8)


def _png_header_only(width, height):
    """A PNG whose IHDR claims a size: what a decompression bomb looks like before decoding."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (image_io.PNG_MAGIC + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk)) + b"\x00" * 64)


def test_sizes_are_read_from_headers(eyepacs_fullres):
    for path in sorted((eyepacs_fullres / "images").glob("*.jpeg"))[:5]:
        data = path.read_bytes()
        height, width = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape[:2]
        assert image_io.read_image_size(data) == (width, height)
    ok, png = cv2.imencode(".png", _photo(123, 456))
    assert image_io.read_image_size(png.tobytes()) == (456, 123)
    assert image_io.read_image_size(b"GIF89a....") is None


@pytest.mark.parametrize("reduction", [1, 2, 4, 8])
def test_decode_is_rgb_at_the_requested_reduction(reduction):
    image = _photo(320, 480)
    data = image_io.encode_jpeg(image, 95)
    decoded = image_io.decode_image(data, reduction=reduction)
    assert decoded.shape == (320 // reduction, 480 // reduction, 3)
    assert decoded.dtype == np.uint8
    # RGB order kept: the disc is red-dominant as drawn
    centre = decoded[decoded.shape[0] // 2, decoded.shape[1] // 2]
    assert centre[0] > centre[1] > centre[2]


def test_direct_rgb_decode_equals_bgr_decode_then_conversion(eyepacs_fullres):
    """decode_image asks libjpeg for RGB (JPEG_RGB_FLAGS): the same pixels as OpenCV's BGR
    decode followed by cvtColor, at every DCT reduction."""
    if image_io.JPEG_RGB_FLAGS is None:
        pytest.skip("this OpenCV has no IMREAD_COLOR_RGB; decode_image converts BGR itself")
    for path in sorted((eyepacs_fullres / "images").glob("*.jpeg"))[:3]:
        data = path.read_bytes()
        buffer = np.frombuffer(data, np.uint8)
        for reduction, flag in image_io.JPEG_REDUCTION_FLAGS.items():
            bgr = cv2.imdecode(buffer, flag | cv2.IMREAD_IGNORE_ORIENTATION)
            np.testing.assert_array_equal(
                image_io.decode_image(data, path.name, reduction),
                cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), err_msg=f"{path.name} at 1/{reduction}")


def test_other_valid_layouts_become_rgb():
    image = _photo()
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    for layout in (gray, cv2.cvtColor(image, cv2.COLOR_RGB2BGRA),
                   (cv2.cvtColor(image, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)):
        ok, png = cv2.imencode(".png", layout)
        decoded = image_io.decode_image(png.tobytes())
        assert decoded.shape == (300, 400, 3) and decoded.dtype == np.uint8
    sixteen = cv2.cvtColor(image, cv2.COLOR_RGB2BGR).astype(np.uint16) * 257
    ok, png = cv2.imencode(".png", sixteen)
    np.testing.assert_array_equal(image_io.decode_image(png.tobytes()), image)


@pytest.mark.parametrize("data, problem", [
    (b"", "empty"),
    (b"hello, I am a text file\n", "not a JPEG or PNG"),
    (b"\xff\xd8\xff\xe0" + b"\x00" * 10, "header is damaged"),
])
def test_bad_bytes_are_named_and_explained(data, problem):
    with pytest.raises(image_io.ImageReadError) as info:
        image_io.decode_image(data, name="clinic/photo 7.jpeg")
    assert str(info.value).startswith("clinic/photo 7.jpeg: ") and problem in str(info.value)


def test_truncated_files_are_refused_not_painted_grey():
    jpeg = image_io.encode_jpeg(_photo(), 95)
    ok, png = cv2.imencode(".png", _photo())
    for data, kind in ((jpeg[: len(jpeg) * 2 // 3], "JPEG"), (png.tobytes()[:-20], "PNG")):
        with pytest.raises(image_io.ImageReadError, match=f"truncated {kind}"):
            image_io.decode_image(data, name="x")


def test_decompression_bomb_is_refused_before_decoding():
    bomb = _png_header_only(60000, 60000)
    with pytest.raises(image_io.ImageReadError, match="60000x60000.*max_image_pixels"):
        image_io.decode_image(bomb, name="bomb.png")
    # JPEG: patch the start-of-frame size of a real small JPEG
    jpeg = bytearray(image_io.encode_jpeg(_photo(), 90))
    sof = jpeg.find(b"\xff\xc0")
    jpeg[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)
    assert image_io.read_image_size(bytes(jpeg)) == (60000, 60000)
    with pytest.raises(image_io.ImageReadError, match="over the limit"):
        image_io.decode_image(bytes(jpeg), name="bomb.jpeg")


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(image_io.ImageReadError, match="file not found"):
        image_io.read_image(tmp_path / "nope.jpeg")
    with pytest.raises(image_io.ImageReadError, match="is a directory"):
        image_io.read_image(tmp_path)


def test_write_png_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "out.png"
    image_io.write_png(target, _photo())
    assert target.exists() and [p.name for p in tmp_path.iterdir()] == ["out.png"]
    np.testing.assert_array_equal(image_io.read_image(target), _photo())
