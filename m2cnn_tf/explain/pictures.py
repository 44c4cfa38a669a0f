"""Pictures of Grad-CAM maps: heat-map overlays, one explanation panel, contact sheets.

Images of photographs, drawn with OpenCV (RGB uint8 arrays in, RGB uint8 arrays out).
"""

from __future__ import annotations

import math
from typing import Dict, Sequence

import cv2
import numpy as np


# Rendering.
CAM_ALPHA = 0.5  # weight of the heat map over the photograph


COLORMAP = cv2.COLORMAP_JET


TITLE_HEIGHT = 30  # px: the bar above the panels naming file, grade and score


LABEL_HEIGHT = 24  # px: the bar above each panel


LEGEND_HEIGHT = 34  # px: the colour bar below the panels


LEGEND_MARGIN = 10  # px: its inset from the panel edges


FONT = cv2.FONT_HERSHEY_SIMPLEX


FONT_SCALE = 0.5


TEXT_INSET = 6  # px from the left edge of a bar


BACKGROUND = 255  # white bars


TEXT_COLOUR = (0, 0, 0)


CONTACT_COLUMNS = 4  # explanations per row of the contact sheet


CONTACT_TILE_WIDTH = 480  # px: each explanation is shrunk to this width on the sheet


CONTACT_PER_SHEET = 64  # more photographs than this go onto several sheets


# A photograph the quality assessor calls ungradable is framed in this colour (RGB), this wide,
# and its title says so: on the contact sheet it stands out at a glance.
UNGRADABLE_COLOUR = (220, 0, 0)


UNGRADABLE_FRAME = 12  # px


def overlay(image: np.ndarray, cam: np.ndarray) -> np.ndarray:
    """A 0–1 map as a colour heat map over an RGB uint8 image of the same size."""
    heat = cv2.applyColorMap(np.round(np.clip(cam, 0, 1) * 255).astype(np.uint8), COLORMAP)
    heat = cv2.cvtColor(heat, cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(image, 1.0 - CAM_ALPHA, heat, CAM_ALPHA, 0.0)


def _bar(width: int, height: int, text: str = "") -> np.ndarray:
    bar = np.full((height, width, 3), BACKGROUND, np.uint8)
    if text:
        (_, text_height), _ = cv2.getTextSize(text, FONT, FONT_SCALE, 1)
        cv2.putText(bar, text, (TEXT_INSET, (height + text_height) // 2), FONT, FONT_SCALE,
                    TEXT_COLOUR, 1, cv2.LINE_AA)
    return bar


def _legend(width: int) -> np.ndarray:
    """A colour bar from 0 (left) to 1 (right) with its meaning."""
    bar = _bar(width, LEGEND_HEIGHT)
    low, high = "0", "1: strongest evidence for the target (Grad-CAM, relative)"
    (low_width, text_height), _ = cv2.getTextSize(low, FONT, FONT_SCALE, 1)
    (high_width, _), _ = cv2.getTextSize(high, FONT, FONT_SCALE, 1)
    x0 = LEGEND_MARGIN + low_width + TEXT_INSET
    x1 = width - LEGEND_MARGIN - high_width - TEXT_INSET
    if x1 > x0:
        ramp = np.linspace(0, 255, x1 - x0).astype(np.uint8)[None, :]
        colours = cv2.cvtColor(cv2.applyColorMap(ramp, COLORMAP), cv2.COLOR_BGR2RGB)
        bar[LEGEND_MARGIN:LEGEND_HEIGHT - LEGEND_MARGIN, x0:x1] = colours
    baseline = (LEGEND_HEIGHT + text_height) // 2
    cv2.putText(bar, low, (LEGEND_MARGIN, baseline), FONT, FONT_SCALE, TEXT_COLOUR, 1,
                cv2.LINE_AA)
    cv2.putText(bar, high, (width - LEGEND_MARGIN - high_width, baseline), FONT, FONT_SCALE,
                TEXT_COLOUR, 1, cv2.LINE_AA)
    return bar


# Panel order after the photograph: (map, label); {c} is the predicted class.
PANELS = (("cam_score", "Grad-CAM: score"), ("cam_class", "Grad-CAM: class {c}"),
          ("pixels_score", "x grad*input: score"), ("pixels_class", "x grad*input: class {c}"))


# The pixel maps are sparse (lesions are a few pixels): for display only they are smoothed by
# this σ (px) and scaled so that this percentile of the map is full scale.
PIXEL_DISPLAY_SIGMA = 1.0


PIXEL_DISPLAY_PERCENTILE = 99.5


def panel_size(resolution: int) -> tuple:
    """(width, height) in pixels of one explanation PNG at ``resolution``."""
    panels = 1 + len(PANELS)
    return panels * resolution, TITLE_HEIGHT + LABEL_HEIGHT + resolution + LEGEND_HEIGHT


def _display(name: str, cam: np.ndarray) -> np.ndarray:
    if not name.startswith("pixels"):
        return cam
    cam = cv2.GaussianBlur(np.asarray(cam, np.float32), (0, 0), PIXEL_DISPLAY_SIGMA)
    top = np.percentile(cam, PIXEL_DISPLAY_PERCENTILE)
    return np.clip(cam / top, 0, 1) if top > 0 else cam


def explanation_image(image: np.ndarray, outputs: Dict[str, np.ndarray], name: str
                      ) -> np.ndarray:
    """photograph | Grad-CAM score | Grad-CAM class | × gradient×input score | … class.

    Args:
        image: (r, r, 3) uint8, the normalised photograph.
        outputs: one image's ``GradCam`` outputs (unbatched), with its quality outputs
            (``gradable``, ``quality_probabilities``) when assessed: an ungradable photograph
            is framed in red and its title says so.
        name: shown in the title (usually the file name).

    Returns:
        (height, width, 3) uint8 RGB, of size ``panel_size(r)``, with a colour legend below.
    """
    predicted = int(outputs["predicted_class"])
    probability = float(outputs["probabilities"][predicted])
    tiles = [(image, "normalised photograph")] + [
        (overlay(image, _display(key, outputs[key])), label.format(c=predicted))
        for key, label in PANELS]
    row = np.concatenate([np.concatenate([_bar(t.shape[1], LABEL_HEIGHT, label), t], axis=0)
                          for t, label in tiles], axis=1)
    title = (f"{name}: grade {int(outputs['grade'])} (score {float(outputs['score']):.2f}); "
             f"predicted class {predicted} (p = {probability:.2f})")
    ungradable = int(outputs.get("gradable", 1)) == 0
    if ungradable:
        title += (f" - UNGRADABLE (P(Reject) "
                  f"{float(outputs['quality_probabilities'][-1]):.2f}): retake it")
    width = row.shape[1]
    picture = np.concatenate([_bar(width, TITLE_HEIGHT, title), row, _legend(width)], axis=0)
    return mark_ungradable(picture) if ungradable else picture


def mark_ungradable(picture: np.ndarray) -> np.ndarray:
    """The picture framed in ``UNGRADABLE_COLOUR`` (a copy)."""
    framed = picture.copy()
    h, w = framed.shape[:2]
    cv2.rectangle(framed, (0, 0), (w - 1, h - 1), UNGRADABLE_COLOUR, UNGRADABLE_FRAME)
    return framed


def contact_sheet(images: Sequence[np.ndarray]) -> np.ndarray:
    """Explanations side by side, ``CONTACT_COLUMNS`` a row, each shrunk to one width."""
    tiles = []
    for image in images:
        h, w = image.shape[:2]
        height = max(1, round(h * CONTACT_TILE_WIDTH / w))
        tiles.append(cv2.resize(image, (CONTACT_TILE_WIDTH, height),
                                interpolation=cv2.INTER_AREA))
    tile_height = max(t.shape[0] for t in tiles)
    columns = min(CONTACT_COLUMNS, len(tiles))
    rows = math.ceil(len(tiles) / columns)
    sheet = np.full((rows * tile_height, columns * CONTACT_TILE_WIDTH, 3), BACKGROUND, np.uint8)
    for i, tile in enumerate(tiles):
        y, x = (i // columns) * tile_height, (i % columns) * CONTACT_TILE_WIDTH
        sheet[y:y + tile.shape[0], x:x + CONTACT_TILE_WIDTH] = tile
    return sheet
