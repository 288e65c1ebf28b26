"""Handing freed heap memory back to the system between the phases of a job.

glibc's allocator keeps many freed blocks of its heap for reuse instead of returning them: after counting PTB's
5-grams about 50 MB of temporaries stayed resident, and the next phase's arrays (scoring, the save-load check's
second copy of the tables) came on top of them, which set the whole command's peak. One `malloc_trim(0)` at a
phase boundary returns them (a few milliseconds). Elsewhere (macOS, musl, Windows) this does nothing."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import cache


@cache
def _trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


def release_free_memory() -> bool:
    """Return the heap's free blocks to the system where the C library allows it; True when it could."""
    trim = _trim()
    if trim is None:
        return False
    trim(0)
    return True
