"""Process memory policy for image-heavy loops: keep freed image buffers in the heap.

glibc's malloc hands megabyte blocks back to the kernel as soon as they are freed (and moves its
mmap threshold about as it goes), so a loop that allocates and frees a few decoded images per
step page-faults its memory in again and again. Measured: the augmenting input pipeline at
720 px paid 2–12 ms of kernel time per image, more than the warp; the TFRecord builder's worker
≈ 2,700 page faults and 6 ms of kernel time per camera photograph (BENCHMARKS.md). Keeping freed
blocks in the heap removes both. TensorFlow-free, so the builder's workers can use it.
"""

from __future__ import annotations

import ctypes

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
