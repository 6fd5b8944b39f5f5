"""Keep freed memory in the process heap while training on CPU.

A training step allocates and frees the same large activations every step. glibc's malloc serves blocks above
its mmap threshold with fresh ``mmap`` pages and returns them with ``munmap`` when freed, so every step pays page
faults and zeroing on each large tensor's first touch; at batch sizes of thousands the models whose activations
are many times their parameters (attention, CIN, bilinear) spend much of a step there (docs/benchmarks.md,
"Allocator"). ``mallopt(M_MMAP_MAX, 0)`` serves every block from the heap and ``M_TRIM_THRESHOLD`` keeps freed
heap memory for reuse: the process's resident memory stays at its peak instead of shrinking between steps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_MAX = -4
_applied = False


def keep_freed_memory() -> bool:
    """Apply the heap settings above to this process (idempotent); False where the C library is not glibc."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _applied
