"""The paper's Fig. 3 for any photograph: the found field of view, the crop, Eq. 1 at each size.

    python -m m2cnn_tf.preprocess.preview photo.jpeg [more.jpeg ...] --output=preview.png

One row per photograph: the original with the detected circle and its centre, the centred crop,
and the normalised picture at every --sizes (nearest-neighbour enlarged, so each size shows its
own pixels). Drawn with OpenCV, like every picture of a photograph here.
"""

from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

import cv2
import numpy as np
from absl import app, flags

from m2cnn_tf.config import BUILDER, PREPROCESS, PreprocessConfig
from m2cnn_tf.preprocess import fundus, image_io

FLAGS = flags.FLAGS


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((28, tile.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, tile], axis=0)


def _fit_height(image: np.ndarray, height: int) -> np.ndarray:
    h, w = image.shape[:2]
    width = max(1, round(w * height / h))
    interpolation = cv2.INTER_AREA if h > height else cv2.INTER_LINEAR
    return cv2.resize(image, (width, height), interpolation=interpolation)


def preview_panel(
    image: np.ndarray,
    sizes: Sequence[int] = BUILDER.resolutions,
    title: str = "",
    tile_height: int = 300,
    config: PreprocessConfig = PREPROCESS,
) -> np.ndarray:
    """One row of the paper's Fig. 3: original with the found circle, crop, Eq. 1 at each size.

    Args:
      image: (H, W, 3) RGB uint8 photograph.
      sizes: normalised sizes to show.
      title: text over the original (e.g. the file name).
      tile_height: height in pixels of every tile.
      config: preprocessing constants.

    Returns:
      (H', W', 3) RGB uint8 panel.
    """
    circle = fundus.find_fundus(image, config)
    outlined = image.copy()
    thickness = max(2, int(round(image.shape[0] / 300)))
    cv2.circle(outlined, (int(round(circle.cx)), int(round(circle.cy))), int(round(circle.radius)),
               (0, 255, 0), thickness)
    cv2.drawMarker(outlined, (int(round(circle.cx)), int(round(circle.cy))), (0, 255, 0),
                   cv2.MARKER_CROSS, 8 * thickness, thickness)
    canvas, _ = fundus.crop_to_disc(image, circle, fundus.normalization_size(sizes, config),
                                   config)
    normalized = fundus.normalize_fundus_multi(image, sizes, circle, config)
    tiles = [
        _label(_fit_height(outlined, tile_height), f"{title} {image.shape[1]}x{image.shape[0]}"),
        _label(_fit_height(canvas, tile_height), "disc cropped, centred"),
    ]
    for s in sizes:
        # Nearest-neighbour so each size shows its own pixels at the same display size.
        shown = cv2.resize(normalized[s], (tile_height, tile_height),
                           interpolation=cv2.INTER_NEAREST)
        tiles.append(_label(shown, f"Eq. 1 at {s}x{s}"))
    gap = np.full((tile_height + 28, 6, 3), 255, np.uint8)
    row = [tiles[0]]
    for tile in tiles[1:]:
        row += [gap, tile]
    return np.concatenate(row, axis=1)


def write_preview(
    sources: Sequence[image_io.ImageSource],
    output: str,
    sizes: Sequence[int] = BUILDER.resolutions,
    titles: Optional[Sequence[str]] = None,
    config: PreprocessConfig = PREPROCESS,
) -> str:
    """Writes a PNG with one preview row per photograph (``preview_panel``).

    Args:
      sources: the photographs: paths, encoded bytes or RGB uint8 arrays.
      output: the PNG to write (through a temporary name).
      sizes: normalised sizes to show.
      titles: one per photograph (default: the file name, else its index).
      config: preprocessing constants.

    Returns:
      The output path.

    Raises:
      image_io.ImageReadError: a file that cannot be read as an image.
      fundus.NoFundusError: a photograph without a fundus; the message names it.
    """
    rows = []
    for i, source in enumerate(sources):
        image = source if isinstance(source, np.ndarray) else image_io.read_image(source)
        if titles is not None:
            title = titles[i]
        elif isinstance(source, (str, os.PathLike)):
            title = os.path.basename(os.fspath(source))
        else:
            title = f"#{i}"
        try:
            rows.append(preview_panel(image, sizes, title, config=config))
        except fundus.NoFundusError as e:
            raise fundus.NoFundusError(f"{title}: {e}") from None
    width = max(r.shape[1] for r in rows)
    padded = [cv2.copyMakeBorder(r, 0, 6, 0, width - r.shape[1], cv2.BORDER_CONSTANT,
                                 value=(255, 255, 255)) for r in rows]
    image_io.write_png(output, np.concatenate(padded, axis=0))
    return output


def define_flags() -> None:
    """The command line's flags; defined by the command only, so importing this module for
    ``preview_panel`` adds no flag to another program."""
    flags.DEFINE_string("output", "preview.png", "PNG to write.")
    flags.DEFINE_list("sizes", [str(s) for s in BUILDER.resolutions],
                      "Normalised sizes to show.")


def main(argv: Sequence[str]) -> int:
    """``python -m m2cnn_tf.preprocess.preview IMAGE... --output=preview.png``; the photographs
    are the positional arguments."""
    photographs = list(argv[1:])
    if not photographs:
        raise app.UsageError("give one or more JPEG or PNG fundus photographs, e.g. "
                             "python -m m2cnn_tf.preprocess.preview photo.jpeg "
                             "--output=preview.png")
    try:
        sizes = [int(s) for s in FLAGS.sizes]
    except ValueError:
        raise app.UsageError(f"--sizes must be comma-separated integers, got "
                             f"{','.join(FLAGS.sizes)}")
    try:
        write_preview(photographs, FLAGS.output, sizes)
    except (image_io.ImageReadError, fundus.NoFundusError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {FLAGS.output} ({len(photographs)} photograph(s), sizes {sizes})")
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(lambda argv: sys.exit(main(argv)))
