"""Keep freed tensor memory in the process instead of handing it back to the system (glibc only).

Why: an encoder forward frees activations of ~20 MB each. glibc's default (a dynamic mmap
threshold and a trim threshold of twice it) returns that memory to the system after every free
and the next forward faults every page in again: about 100,000 minor page faults per RPT filter
batch of Instruments (issue 34 counted 48 million in one Instruments SPT epoch; docs/speed_filter.md
measures what the setting saves: 1.3x on the filter). :func:`keep_freed_memory` fixes both thresholds, as
``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=...`` in the environment would, so the
freed blocks are reused from the heap: the same numbers, less CPU time, a resident size that stays
near the peak it reached anyway.

It only changes where memory comes from, never a value computed, so it is set once by the entry
points (``lares-rl``'s ``main`` and the benchmark scripts that time things). Outside glibc (macOS,
Windows, musl) it does nothing. ``LARES_RL_MALLOC=system`` in the environment keeps the C
library's defaults (e.g. under a preloaded jemalloc/tcmalloc, or to compare).
"""

from __future__ import annotations

import ctypes
import os
import platform

# mallopt(3) parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks below 32 MiB (glibc's largest mmap threshold on 64-bit) come from the heap and are reused
# there; larger ones are still mapped and unmapped on their own.
MMAP_THRESHOLD = 32 * 1024 * 1024
# Free memory at the top of the heap is returned to the system only beyond this: the largest value
# mallopt's int takes (2 GiB), far above what a forward frees, below what a peak could strand.
TRIM_THRESHOLD = 2**31 - 1
OPT_OUT_VARIABLE = "LARES_RL_MALLOC"


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (above) for this process; True when both were set.

    Idempotent and harmless: calling it again sets the same values; without glibc, or with
    ``LARES_RL_MALLOC=system``, it returns False and changes nothing. It never raises."""
    if os.environ.get(OPT_OUT_VARIABLE, "").strip().lower() == "system" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    mmap_set = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)  # mallopt returns 1 on success, 0 on error
    trim_set = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return bool(mmap_set and trim_set)
