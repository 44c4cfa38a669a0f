"""The per-photograph work of the TFRecord builder, run in worker processes.

Kept apart from ``builder`` so that worker processes import NumPy and OpenCV only, not
TensorFlow: each photograph is read, decoded once, normalised at every resolution and
JPEG-encoded here.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple

from m2cnn_tf.util import faults, memory
from m2cnn_tf.preprocess import fundus, image_io


@dataclasses.dataclass(frozen=True)
class Task:
    index: int  # position in the build order
    kind: str  # "file", "synthetic" or "tfds"
    location: str
    grade: int
    sizes: Tuple[int, ...]
    jpeg_quality: int
    payload: Optional[bytes] = None  # encoded photograph for "tfds"


@dataclasses.dataclass(frozen=True)
class Result:
    index: int
    encoded: Optional[Dict[int, bytes]]  # {size: JPEG bytes}, None on error
    error: Optional[str] = None


def init_worker() -> None:
    """Start-up of a worker process (and of the main process when it builds alone).

    One OpenCV thread, since the builder already runs one process per core; freed buffers kept,
    since each photograph allocates and frees several camera-sized ones, which glibc would
    otherwise return to the kernel and fault in again (≈ 2,700 faults, 6 ms per photograph).
    """
    memory.configure_process_for_image_work()


def ready() -> bool:
    """Does nothing. The builder's one-by-one retry runs it before the photograph, so that a
    worker which cannot even start is told apart from a photograph that kills its worker."""
    return True


def _synthetic_photograph(location: str, grade: int):
    from m2cnn_tf.data import synthetic  # only synthetic builds pay for importing it

    _, seed, width, eye = location.split(":")
    return synthetic.make_fundus(grade, seed=int(seed), width=int(width) or None, eye=eye).image


def normalise(task: Task):
    """The NormalizedPhotograph images of one task (raises on a bad input)."""
    if task.kind == "synthetic":
        return fundus.normalize_fundus_multi(_synthetic_photograph(task.location, task.grade),
                                             task.sizes)
    source = task.payload if task.kind == "tfds" else task.location
    return fundus.load_normalized(source, task.sizes, name=task.location).images


def process(task: Task) -> Result:
    """Decodes, normalises and encodes one photograph; every failure becomes a reason."""
    faults.point("build.decode")
    try:
        images = normalise(task)
    except (image_io.ImageReadError, fundus.NoFundusError) as e:
        return Result(task.index, None, str(e).replace(f"{task.location}: ", "", 1))
    except MemoryError:
        return Result(task.index, None, "out of memory while decoding")
    except Exception as e:  # one odd file must not stop a build of 35,000
        return Result(task.index, None, f"unexpected {type(e).__name__}: {e}")
    return Result(task.index,
                  {s: image_io.encode_jpeg(images[s], task.jpeg_quality) for s in task.sizes})
