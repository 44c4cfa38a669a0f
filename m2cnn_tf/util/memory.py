"""Process-wide settings for image-heavy loops: keep freed image buffers in the heap, one
OpenCV thread; applied by the entry points (scripts, build workers), never by a library call.

glibc's malloc hands megabyte blocks back to the kernel as soon as they are freed (and moves its
mmap threshold about as it goes), so a loop that allocates and frees a few decoded images per
step page-faults its memory in again and again. Measured: the augmenting input pipeline at
720 px paid 2–12 ms of kernel time per image, more than the warp; the TFRecord builder's worker
≈ 2,700 page faults and 6 ms of kernel time per camera photograph (BENCHMARKS.md). Keeping freed
blocks in the heap removes both. TensorFlow-free, so the builder's workers can use it.
"""

from __future__ import annotations

import ctypes

import cv2

MALLOC_MMAP_THRESHOLD = 32 * 2**20  # bytes; blocks below this come from the heap (glibc's max)
MALLOC_TRIM_THRESHOLD = 64 * 2**20  # bytes of free heap kept before any is returned


def keep_freed_memory() -> bool:
    """Tells glibc's malloc to keep freed blocks for reuse (``MALLOC_*_THRESHOLD``).

    Process-wide and harmless: freed memory stays mapped for the next image instead of being
    returned and faulted in again. Returns False where it does not apply (not glibc).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, MALLOC_MMAP_THRESHOLD)
                and mallopt(m_trim_threshold, MALLOC_TRIM_THRESHOLD))


def configure_process_for_image_work() -> bool:
    """The process-wide settings of a process whose image work already runs one task per core:
    the TFRecord builder's workers (one process per core) and the training input pipeline
    (tf.data runs one augmentation per core). Called by the scripts and the build workers at
    start-up, since both settings hold for the whole process.

    - OpenCV on one thread: splitting each warp or resize over OpenCV's own threads as well only
      adds hand-offs (≈ 5 % fewer augmented images/s, bench/input_pipeline.py).
    - ``keep_freed_memory``: no page-faulting of freed image buffers in again.

    Returns:
      Whether the malloc setting applied (False where it does not: not glibc).
    """
    cv2.setNumThreads(1)
    return keep_freed_memory()
