"""Reading photographs: bytes or files in, RGB uint8 arrays out, or an error naming the file.

Every decode in the package goes through here, so that a bad file fails the same way in the
builder, in prediction and in tests: an ``ImageReadError`` whose message names the file and says
what is wrong with it (empty, not an image, truncated, too large, ...).
"""

from __future__ import annotations

import os
import struct
from typing import Optional, Tuple, Union

import cv2
import numpy as np

from m2cnn_tf.config import PREPROCESS, PreprocessConfig
from m2cnn_tf.util import atomic

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_END = b"\xff\xd9"
PNG_END_CHUNK = b"IEND"
# libjpeg can decode JPEGs at 1/2, 1/4 and 1/8 scale straight from the DCT coefficients.
JPEG_REDUCTION_FLAGS = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}
# OpenCV ≥ 4.10 can have libjpeg write RGB directly (no BGR → RGB pass over a camera-sized
# image); the reduced flags are IMREAD_REDUCED_GRAYSCALE_r | IMREAD_COLOR, so the colour bit is
# swapped. Older OpenCV decodes BGR and converts.
_IMREAD_COLOR_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)
JPEG_RGB_FLAGS = (
    {r: (flag & ~cv2.IMREAD_COLOR) | _IMREAD_COLOR_RGB for r, flag in JPEG_REDUCTION_FLAGS.items()}
    if _IMREAD_COLOR_RGB is not None else None
)
# Cameras do not rotate fundus photographs, and TF's in-graph decoders ignore EXIF orientation;
# ignoring it here too keeps training and serving on the same pixels.
_DECODE_FLAGS = cv2.IMREAD_IGNORE_ORIENTATION

ImageSource = Union[str, os.PathLike, bytes]


class ImageReadError(ValueError):
    """A file or byte string could not be read as a photograph; the message says why."""

    def __init__(self, name: str, problem: str):
        super().__init__(f"{name}: {problem}")
        self.name = name
        self.problem = problem


def image_format(data: bytes) -> Optional[str]:
    """Returns "jpeg", "png" or None from the first bytes of an encoded image."""
    if data.startswith(JPEG_MAGIC):
        return "jpeg"
    if data.startswith(PNG_MAGIC):
        return "png"
    return None


def _jpeg_size(data: bytes) -> Optional[Tuple[int, int]]:
    """(width, height) from the first start-of-frame marker, without decoding."""
    pos = 2
    n = len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        # SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC) carry the frame size.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if pos + 9 > n:
                return None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    return None


def read_image_size(data: bytes) -> Optional[Tuple[int, int]]:
    """Returns (width, height) read from a JPEG or PNG header, or None when it has none."""
    fmt = image_format(data)
    if fmt == "png" and len(data) >= 24 and data[12:16] == b"IHDR":
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if fmt == "jpeg":
        return _jpeg_size(data)
    return None


def _check_complete(data: bytes, fmt: str, name: str) -> None:
    """Raises when the file stops before its end marker (a partly copied download, say).

    OpenCV decodes such files without an error and paints the missing part grey, which would
    silently poison a training set.
    """
    tail = data[-4096:]
    if fmt == "jpeg" and JPEG_END not in tail:
        raise ImageReadError(name, "truncated JPEG (no end-of-image marker); re-copy the file")
    if fmt == "png" and PNG_END_CHUNK not in tail:
        raise ImageReadError(name, "truncated PNG (no IEND chunk); re-copy the file")


def check_image_bytes(
    data: bytes, name: str = "<bytes>", config: PreprocessConfig = PREPROCESS
) -> Tuple[str, int, int]:
    """Validates an encoded photograph before any pixel is decoded.

    Args:
      data: the file's bytes.
      name: how to name the source in errors (usually its path).
      config: holds ``max_image_pixels``, the decompression-bomb limit.

    Returns:
      (format, width, height).

    Raises:
      ImageReadError: empty, not a JPEG/PNG, truncated, or larger than the pixel limit.
    """
    if len(data) == 0:
        raise ImageReadError(name, "file is empty (0 bytes)")
    fmt = image_format(data)
    if fmt is None:
        raise ImageReadError(
            name, f"not a JPEG or PNG image (file starts with {data[:8]!r}); expected a photograph"
        )
    size = read_image_size(data)
    if size is None:
        raise ImageReadError(name, f"{fmt.upper()} header is damaged: no image size found")
    width, height = size
    if width == 0 or height == 0:
        raise ImageReadError(name, f"{fmt.upper()} header says the image is {width}x{height}")
    if width * height > config.max_image_pixels:
        raise ImageReadError(
            name,
            f"image header claims {width}x{height} = {width * height:,} pixels, over the limit "
            f"of {config.max_image_pixels:,} (PreprocessConfig.max_image_pixels); refused before "
            "decoding",
        )
    _check_complete(data, fmt, name)
    return fmt, width, height


def decode_image(
    data: bytes,
    name: str = "<bytes>",
    reduction: int = 1,
    config: PreprocessConfig = PREPROCESS,
) -> np.ndarray:
    """Decodes a JPEG or PNG into an RGB uint8 array.

    Grayscale photographs become three equal channels, an alpha channel is dropped and 16-bit
    PNGs are scaled to 8 bits: each is a valid photograph.

    Args:
      data: encoded bytes.
      name: how to name the source in errors.
      reduction: 1, 2, 4 or 8; JPEGs are decoded at that fraction of their size straight from
        the DCT (much faster for camera photographs larger than needed); other formats are
        decoded whole and shrunk.
      config: preprocessing constants (the pixel limit).

    Returns:
      (H, W, 3) uint8 RGB.

    Raises:
      ImageReadError: the bytes are not a readable photograph.
    """
    if reduction not in JPEG_REDUCTION_FLAGS:
        raise ValueError(f"reduction must be one of {sorted(JPEG_REDUCTION_FLAGS)}, got {reduction}")
    fmt, _, _ = check_image_bytes(data, name, config)
    buffer = np.frombuffer(data, dtype=np.uint8)
    rgb_direct = fmt == "jpeg" and JPEG_RGB_FLAGS is not None
    if rgb_direct:  # libjpeg writes RGB itself
        decoded = cv2.imdecode(buffer, JPEG_RGB_FLAGS[reduction] | _DECODE_FLAGS)
    elif fmt == "jpeg":
        decoded = cv2.imdecode(buffer, JPEG_REDUCTION_FLAGS[reduction] | _DECODE_FLAGS)
    else:
        raw = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED | _DECODE_FLAGS)
        decoded = None if raw is None else _to_bgr8(raw)
        if decoded is not None and reduction > 1:
            h, w = decoded.shape[:2]
            decoded = cv2.resize(decoded, (max(1, w // reduction), max(1, h // reduction)),
                                 interpolation=cv2.INTER_AREA)
    if decoded is None or decoded.size == 0:
        raise ImageReadError(name, f"{fmt.upper()} data could not be decoded (corrupt file)")
    return decoded if rgb_direct else cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def _to_bgr8(raw: np.ndarray) -> np.ndarray:
    """Any PNG layout (gray, gray+alpha, BGR, BGRA; 8 or 16 bit) → BGR uint8."""
    if raw.dtype == np.uint16:
        raw = (raw >> 8).astype(np.uint8)
    elif raw.dtype != np.uint8:
        raw = cv2.normalize(raw, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if raw.ndim == 2:
        return cv2.cvtColor(raw, cv2.COLOR_GRAY2BGR)
    channels = raw.shape[2]
    if channels == 1:
        return cv2.cvtColor(raw, cv2.COLOR_GRAY2BGR)
    if channels == 2:
        return cv2.cvtColor(raw[:, :, 0], cv2.COLOR_GRAY2BGR)
    if channels == 4:
        return cv2.cvtColor(raw, cv2.COLOR_BGRA2BGR)
    return raw


def read_file_bytes(path: Union[str, os.PathLike]) -> bytes:
    """Reads a file, turning OS errors into an ImageReadError that names the file."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ImageReadError(os.fspath(path), "file not found") from None
    except IsADirectoryError:
        raise ImageReadError(os.fspath(path), "is a directory, expected an image file") from None
    except OSError as e:
        raise ImageReadError(os.fspath(path), f"cannot be read ({e.strerror})") from None


def read_image(source: ImageSource, reduction: int = 1) -> np.ndarray:
    """Reads a photograph from a path or bytes into RGB uint8 (see ``decode_image``)."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return decode_image(bytes(source), reduction=reduction)
    return decode_image(read_file_bytes(source), name=os.fspath(source), reduction=reduction)


def encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    """RGB uint8 → JPEG bytes, with full-resolution colour (4:4:4).

    Eq. 1 output carries fine colour detail (red microaneurysms, yellow exudates); the default
    4:2:0 chroma subsampling halves its resolution and costs ~40 % more error at 224 px.
    """
    ok, encoded = cv2.imencode(
        ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
        [cv2.IMWRITE_JPEG_QUALITY, int(quality),
         cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444],
    )
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return encoded.tobytes()


def write_png(path: Union[str, os.PathLike], image: np.ndarray) -> None:
    """Writes an RGB uint8 image as PNG through a temporary name, so no half file is left."""
    path = os.fspath(path)
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    atomic.write_bytes(path, encoded.tobytes())
