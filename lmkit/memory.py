"""Handing freed heap memory back to the system between the phases of a job, and asking it for plain pages.

glibc's allocator keeps many freed blocks of its heap for reuse instead of returning them: after counting PTB's
5-grams about 50 MB of temporaries stayed resident, and the next phase's arrays (scoring, the save-load check's
second copy of the tables) came on top of them, which set the whole command's peak. One `malloc_trim(0)` at a
phase boundary returns them (a few milliseconds). Elsewhere (macOS, musl, Windows) this does nothing."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from functools import cache


@cache
def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def _trim():
    return getattr(_libc(), "malloc_trim", None)  # None: not glibc


M_ARENA_MAX = -8  # glibc's mallopt parameter: how many heaps threads may allocate from


def one_heap_for_threads() -> bool:
    """Let threads started from now on allocate from the main heap, unless the user chose with MALLOC_ARENA_MAX.
    glibc gives each new thread a heap of its own, which keeps what the thread freed: splitting PTB's training text
    in two threads raised `lmkit train --model ngram:kn5`'s peak from 229 to 265 MB, with the same speed. Called
    before lmkit starts its worker threads (lmkit/parallel.py); True when the setting was changed."""
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None or "MALLOC_ARENA_MAX" in os.environ:
        return False
    return bool(mallopt(M_ARENA_MAX, 1))


def release_free_memory() -> bool:
    """Return the heap's free blocks to the system where the C library allows it; True when it could."""
    trim = _trim()
    if trim is None:
        return False
    trim(0)
    return True


def prefer_small_pages() -> bool:
    """Stop numpy from asking for transparent huge pages for its large arrays (it does by default on Linux), unless
    the user chose with NUMPY_MADVISE_HUGEPAGE. Where the kernel compacts memory to find a huge page on each fault
    (`defrag=madvise`, the usual default) and memory is fragmented by the page cache, that stall dominated: counting
    a 10M-token text spent 4.5 s of system time with huge pages and 1.3 s without (docs/benchmarks.md). For the
    command line only: a program that imports lmkit keeps numpy's setting. True when the setting was changed."""
    if "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        return False
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:  # another numpy layout: leave its default
        return False
    _set_madvise_hugepage(False)
    return True
