"""Explaining photograph files: one PNG each, contact sheets and ``explanations.csv``."""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from typing import Dict, List, Optional, Sequence

import numpy as np

from m2cnn_tf.explain.pictures import CONTACT_PER_SHEET, contact_sheet, explanation_image
from m2cnn_tf.preprocess import fundus, image_io
from m2cnn_tf.quality import assessor as quality_assessor, measures as quality_measures
from m2cnn_tf.util import atomic, progress


CONTACT_SHEET = "contact_sheet"


PNG_SUFFIX = "_gradcam.png"


CSV_NAME = "explanations.csv"


CSV_COLUMNS = ("image", "png", "grade", "score", "predicted_class", "class_probability",
               "p_reject", "gradable", "error")


@dataclasses.dataclass
class FileExplanation:
    """One photograph's result: the PNG written and the outputs, or the error."""

    path: str
    png: Optional[str] = None
    outputs: Optional[Dict[str, np.ndarray]] = None
    error: Optional[str] = None


def _png_name(path: str, taken: set) -> str:
    """``<stem>_gradcam.png``, with a counter when two photographs share a stem."""
    stem = os.path.splitext(os.path.basename(path))[0] or "image"
    name, n = f"{stem}{PNG_SUFFIX}", 1
    while name in taken:
        n += 1
        name = f"{stem}-{n}{PNG_SUFFIX}"
    taken.add(name)
    return name


def _load(path: str, resolution: int):
    """(normalised image, None) or (None, the reason it failed)."""
    try:
        return fundus.load_normalized(path, (resolution,)).images[resolution], None
    except image_io.ImageReadError as e:
        return None, e.problem
    except fundus.NoFundusError as e:
        return None, str(e).replace(f"{path}: ", "", 1)


def _quality(explainer, paths: Sequence[str]) -> Dict[str, np.ndarray]:
    """The photographs' quality outputs by the explainer's assessor (``gradable`` −1 and NaN
    without one): measured on the photographs, not on the normalised discs."""
    assessor = getattr(explainer, "assessor", None)
    found = np.ones(len(paths), bool)
    if assessor is None or not len(paths):
        return quality_assessor.assess(None, None, found)
    values, measured = quality_measures.measure_encoded(
        [image_io.read_file_bytes(p) for p in paths])
    return assessor.assess(values, measured)


def _explain_chunks(explainer, paths: Sequence[str], batch_size: int):
    """Yields (path, normalised image or None, one image's outputs or None, error or None)."""
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        loaded = [(path, *_load(path, explainer.resolution)) for path in chunk]
        good = [image for _, image, _ in loaded if image is not None]
        outputs = explainer.explain_normalized(np.stack(good)) if good else {}
        outputs.update(_quality(explainer, [p for p, image, _ in loaded if image is not None]))
        i = 0
        for path, image, error in loaded:
            if image is None:
                yield path, None, None, error
            else:
                yield path, image, {k: v[i] for k, v in outputs.items()}, None
                i += 1


def sheet_names(count: int) -> List[str]:
    """File names of the contact sheets for ``count`` explanations (none for 0)."""
    sheets = math.ceil(count / CONTACT_PER_SHEET)
    if sheets <= 1:
        return [f"{CONTACT_SHEET}.png"] * sheets
    return [f"{CONTACT_SHEET}_{i + 1}.png" for i in range(sheets)]


def explain_files(explainer, paths: Sequence[str], output_dir: str,
                  batch_size: int = 8, quiet: bool = False) -> List[FileExplanation]:
    """Explains photographs: one PNG each, contact sheets and ``explanations.csv``.

    Photographs are normalised offline (``fundus.load_normalized``, the builder's path). A file
    that cannot be read, or shows no fundus, gets its reason in the result and the CSV and
    never stops the others. With the explainer's quality assessor (``explainer.assessor``) an
    ungradable photograph is framed in red on its PNG and the contact sheet, and the CSV has
    its P(Reject) and ``gradable``. Every file is written under a temporary name and renamed.

    Args:
        explainer: from ``open_explainer``.
        paths: photograph files.
        output_dir: created if needed.
        batch_size: photographs explained at once.
        quiet: no progress bar.

    Returns:
        One ``FileExplanation`` per path, in order.
    """
    os.makedirs(output_dir, exist_ok=True)
    results, thumbnails, taken = [], [], set()
    chunks = progress.progress(_explain_chunks(explainer, list(paths), batch_size),
                               total=len(paths), desc="explaining", unit="img", quiet=quiet)
    for path, image, outputs, error in chunks:
        if outputs is None:
            results.append(FileExplanation(path, error=error))
            continue
        png = os.path.join(output_dir, _png_name(path, taken))
        picture = explanation_image(image, outputs, os.path.basename(path))
        image_io.write_png(png, picture)
        thumbnails.append(picture)
        results.append(FileExplanation(path, png=png, outputs=outputs))
    for i, name in enumerate(sheet_names(len(thumbnails))):
        page = thumbnails[i * CONTACT_PER_SHEET:(i + 1) * CONTACT_PER_SHEET]
        image_io.write_png(os.path.join(output_dir, name), contact_sheet(page))
    _write_csv(os.path.join(output_dir, CSV_NAME), results)
    return results


def _write_csv(path: str, results: Sequence[FileExplanation]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in results:
        row = {"image": r.path, "png": r.png or "", "error": r.error or ""}
        if r.outputs is not None:
            predicted = int(r.outputs["predicted_class"])
            p_reject = float(r.outputs[quality_assessor.PROBABILITIES_OUTPUT][-1])
            row.update(grade=int(r.outputs["grade"]), score=f"{float(r.outputs['score']):.4f}",
                       predicted_class=predicted,
                       class_probability=f"{float(r.outputs['probabilities'][predicted]):.4f}",
                       p_reject="" if np.isnan(p_reject) else f"{p_reject:.4f}",
                       gradable=int(r.outputs[quality_assessor.GRADABLE_OUTPUT]))
        writer.writerow(row)
    atomic.write_text(path, buffer.getvalue())
