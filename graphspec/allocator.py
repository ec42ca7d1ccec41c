"""Keep freed memory for reuse: glibc's allocator settings for training and inference on the CPU.

glibc's ``malloc`` serves blocks over its mmap threshold (128 KiB, rising to at most 32 MiB) with fresh ``mmap``
calls and gives them back to the kernel when freed. A training step of NN4.Small2 at batch 64 allocates and frees
activations of 10–40 MB hundreds of times, so every step faulted ~56,000 fresh pages into memory (~220 MB of
zero-filled pages): 714 ms a step instead of 580 (BENCHMARKS.md). With mmap off and the heap never trimmed, freed
blocks stay in the heap and the next step reuses them: ~5,000 faults a step, the same peak memory (the process
held that memory at its peak anyway; it is not given back between steps).

The command line applies this at start (``graphspec train``, ``embed``, ...); Python programs call
:func:`reuse_freed_memory` once, early. ``GRAPHSPEC_MALLOC=default`` leaves the allocator as it is. Only glibc has
these settings (``mallopt``); elsewhere nothing changes.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# mallopt's parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
NEVER_TRIM = 2 ** 31 - 1  # the largest value mallopt takes: the heap's top is never given back


def reuse_freed_memory() -> bool:
    """Tell glibc to serve every block from its heap and keep freed memory for reuse; True when it took effect
    (False: not glibc, or ``GRAPHSPEC_MALLOC=default``). Process-wide and not undone; call it before the work."""
    if os.environ.get("GRAPHSPEC_MALLOC", "").lower() == "default" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # mallopt returns 1 on success; a block too large for the heap is still mapped (glibc falls back to mmap)
    no_mmap = mallopt(M_MMAP_MAX, 0) == 1
    no_trim = mallopt(M_TRIM_THRESHOLD, NEVER_TRIM) == 1
    return no_mmap and no_trim
