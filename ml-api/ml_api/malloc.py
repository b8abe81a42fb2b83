"""Keep an upload's large buffers in glibc's heap instead of fresh memory maps.

glibc serves an allocation over its mmap threshold (128 KiB at first) with a new memory map,
whose every page the kernel faults in and zeroes, and hands it back on free; it also trims the
heap's free top past 128 KiB. An upload passes through several buffers of its size (the HTTP
body's pieces, the form part, the bytes the route reads), so most of the API's CPU on a large
photo went to page faults: receiving a 3.2 MB body cost 4.7 CPU-ms, 1.1 with the heap reused
(docs/performance.md, issue 16). The price: up to `TRIM_THRESHOLD` of freed memory stays
mapped in the process.
"""

from __future__ import annotations

import ctypes
import logging
import sys

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest: any upload under it comes from the heap
TRIM_THRESHOLD = 64 * 1024 * 1024


def keep_large_buffers() -> bool:
    """Raise this process's mmap and trim thresholds (glibc on Linux); False where it cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # pragma: no cover - a C library without mallopt
        return False
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1)
    done = bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1) and done
    if not done:  # pragma: no cover - musl's mallopt refuses everything
        logger.info("malloc thresholds unchanged (not glibc)")
    return done


def release_free_memory() -> None:
    """Hand the free pages of every malloc arena back to the system (glibc's malloc_trim).

    A pixel decode of hundreds of MB frees its blocks into the arena of the thread it ran on;
    without this, each threadpool thread's arena would keep its own decode's worth resident.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # pragma: no cover - a C library without malloc_trim
        return
