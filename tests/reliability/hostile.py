"""Hostile photographs, drawn here so that no file needs to be downloaded or committed.

Each maker returns the bytes of one file; ``HOSTILE_FILES`` names them with the file name the
suite writes them under, the outcome every component must give and a text its message holds.
"""

import struct
import zlib

import cv2
import numpy as np

from m2cnn_tf.preprocess import image_io
from m2cnn_tf.data import synthetic

FUNDUS_WIDTH = 480  # small synthetic photographs keep the suite fast


def fundus_rgb(seed=1, grade=2, width=FUNDUS_WIDTH):
    return synthetic.make_fundus(grade, seed=seed, width=width).image


def fundus_jpeg(seed=1, grade=2, width=FUNDUS_WIDTH):
    return image_io.encode_jpeg(fundus_rgb(seed, grade, width), 92)


def _segments(jpeg):
    """(marker, start, length) of the JPEG's marker segments up to the first SOS."""
    pos, out = 2, []
    while pos + 4 <= len(jpeg):
        marker = jpeg[pos + 1]
        (length,) = struct.unpack(">H", jpeg[pos + 2:pos + 4])
        out.append((marker, pos, length))
        if marker == 0xDA:
            break
        pos += 2 + length
    return out


def truncated_jpeg():
    data = fundus_jpeg()
    return data[: len(data) * 2 // 3]


def corrupt_huffman_jpeg():
    """A DHT segment whose 16 code-length counts claim far more than 256 codes (libjpeg:
    "Bogus Huffman table definition")."""
    data = bytearray(fundus_jpeg())
    _, start, _ = next(s for s in _segments(data) if s[0] == 0xC4)
    data[start + 5:start + 21] = b"\xff" * 16  # after FF C4, length (2) and class/id (1)
    return bytes(data)


def cmyk_jpeg():
    """A 4-component (CMYK, Adobe) baseline JPEG, assembled from a grayscale JPEG's scan.

    OpenCV cannot write CMYK; a baseline JPEG may carry one non-interleaved scan per component,
    and a one-component scan is exactly what a grayscale JPEG holds, so the grayscale file's
    tables and entropy-coded data are reused for each of the four components.
    """
    gray = cv2.cvtColor(fundus_rgb(), cv2.COLOR_RGB2GRAY)
    ok, encoded = cv2.imencode(".jpg", gray, [cv2.IMWRITE_JPEG_QUALITY, 92])
    data = encoded.tobytes()
    segments = _segments(data)
    tables = b"".join(data[s:s + 2 + n] for m, s, n in segments if m in (0xDB, 0xC4))
    sof_marker, sof_start, _ = next(s for s in segments if s[0] in (0xC0, 0xC1))
    precision, height, width = struct.unpack(">BHH", data[sof_start + 4:sof_start + 9])
    _, sos_start, sos_length = segments[-1]
    scan = data[sos_start + 2 + sos_length: data.rindex(image_io.JPEG_END)]
    components = b"".join(struct.pack(">BBB", c, 0x11, 0) for c in (1, 2, 3, 4))
    sof = struct.pack(">BBHBHHB", 0xFF, sof_marker, 8 + 3 * 4, precision, height, width, 4)
    adobe = b"Adobe" + struct.pack(">HHHB", 100, 0, 0, 0)  # transform 0: CMYK as stored
    out = [image_io.JPEG_MAGIC[:2], b"\xff\xee" + struct.pack(">H", 2 + len(adobe)) + adobe,
           tables, sof + components]
    for c in (1, 2, 3, 4):
        out.append(b"\xff\xda" + struct.pack(">HBBBBBB", 8, 1, c, 0x00, 0, 63, 0) + scan)
    out.append(image_io.JPEG_END)
    return b"".join(out)


def png(image, flags=()):
    ok, encoded = cv2.imencode(".png", image, list(flags))
    assert ok
    return encoded.tobytes()


def png16():
    bgr = cv2.cvtColor(fundus_rgb(), cv2.COLOR_RGB2BGR)
    return png(bgr.astype(np.uint16) * 257)


def png_alpha():
    bgra = cv2.cvtColor(fundus_rgb(), cv2.COLOR_RGB2BGRA)
    bgra[:, :, 3] = np.linspace(0, 255, bgra.shape[1], dtype=np.uint8)[None, :]
    return png(bgra)


def one_pixel():
    return png(np.full((1, 1, 3), 200, np.uint8))


def bomb_png(width=60000, height=60000):
    """A PNG whose IHDR claims width × height: a 3.6-gigapixel decompression bomb, whose
    deflate stream (one compressed row of zeros, repeated) is small on disk."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit gray
    chunks = [(b"IHDR", ihdr)]
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    body = b"".join(compressor.compress(row) for _ in range(64)) + compressor.flush()
    chunks += [(b"IDAT", body), (b"IEND", b"")]
    return image_io.PNG_MAGIC + b"".join(
        struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d)) for t, d in chunks)


def bomb_jpeg(width=60000, height=60000):
    data = bytearray(fundus_jpeg())
    _, start, _ = next(s for s in _segments(data) if s[0] in (0xC0, 0xC1, 0xC2))
    data[start + 5:start + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def flat_jpeg(value, shape=(360, 480)):
    return image_io.encode_jpeg(np.full(shape + (3,), value, np.uint8), 92)


def landscape_jpeg(seed=0, shape=(360, 480)):
    """A natural-looking photograph that is no fundus: sky, sun, hills, grass texture, filling
    the whole frame (no black field-of-view border)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    sky = np.stack([110 + 80 * y / h, 160 + 50 * y / h, 235 - 20 * y / h], axis=-1)
    image = sky.copy()
    sun = (x - 0.75 * w) ** 2 + (y - 0.22 * h) ** 2 < (0.07 * w) ** 2
    image[sun] = (255, 240, 200)
    horizon = 0.55 * h + 0.08 * h * np.sin(x / w * 2 * np.pi * 1.5 + seed)
    ground = y > horizon
    grass = np.stack([60 + 0 * x, 120 + 0 * x, 50 + 0 * x], axis=-1)
    grass += rng.normal(0, 18, grass.shape)
    image[ground] = grass[ground] * (0.7 + 0.3 * ((y[ground] - horizon[ground]) / h))[:, None]
    image += rng.normal(0, 4, image.shape)
    image = cv2.GaussianBlur(np.clip(image, 0, 255).astype(np.uint8), (3, 3), 0.8)
    return image_io.encode_jpeg(image, 90)


def text_as_jpeg():
    return b"Patient notes, not a photograph.\nGrade: 2\n"


# name → (file name, maker, expected outcome kind, expected text in the error)
# Outcome kinds: "graded" (processed: a fundus found, a grade 0–4), "no_fundus" (read, but no
# field of view: a per-file error in the builder and predict.py, fundus_found=False in
# serving), "error" (refused with a per-file error naming the problem).
HOSTILE_FILES = {
    "zero_bytes": ("zero_bytes.jpg", lambda: b"", "error", "empty"),
    "text_named_jpg": ("notes.jpg", text_as_jpeg, "error", "not a JPEG or PNG"),
    "truncated_jpeg": ("truncated.jpg", truncated_jpeg, "error", "truncated"),
    "corrupt_huffman": ("huffman.jpg", corrupt_huffman_jpeg, "error", "decoded"),
    "cmyk_jpeg": ("cmyk.jpg", cmyk_jpeg, "graded", ""),
    "png_16bit": ("sixteen.png", png16, "graded", ""),
    "png_alpha": ("alpha.png", png_alpha, "graded", ""),
    "one_pixel": ("one_pixel.png", one_pixel, "no_fundus", "too small"),
    "bomb_png": ("bomb.png", bomb_png, "error", "max_image_pixels"),
    "bomb_jpeg": ("bomb.jpg", bomb_jpeg, "error", "max_image_pixels"),
    "all_black": ("black.jpg", lambda: flat_jpeg(0), "no_fundus", "no fundus"),
    "all_white": ("white.jpg", lambda: flat_jpeg(255), "no_fundus", "no fundus"),
    "landscape": ("landscape.jpg", landscape_jpeg, "no_fundus", "no fundus"),
}
