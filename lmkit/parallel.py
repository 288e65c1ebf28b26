"""Independent parts of one numpy job run side by side on the CPUs this process may use.

numpy lets go of the GIL while it sorts, searches, gathers and computes on large arrays, so a job cut into parts
that share nothing but read-only inputs runs on several cores from plain threads (no processes, no copies). A part
never splits again: asked from inside a part, `parts` answers 1, so nested jobs cannot wait on each other."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from .memory import one_heap_for_threads

MAX_WORKERS = 4  # beyond this, memory bandwidth, not cores, bounds these jobs

T = TypeVar("T")
_inside = threading.local()


def cpus() -> int:
    """CPUs this process may run on (its affinity mask where the platform has one), at most OMP_NUM_THREADS when
    that is set: the usual way to cap a process's threads, which numpy's BLAS and torch honour too."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    cap = os.environ.get("OMP_NUM_THREADS", "").strip()
    return max(1, min(count, int(cap))) if cap.isdigit() and int(cap) > 0 else count


def parts(items: int, min_items: int) -> int:
    """How many parts to cut `items` into so that each has at least `min_items`: 1 when that is not worth it,
    or when asked from inside a part."""
    if getattr(_inside, "part", False):
        return 1
    return max(1, min(cpus(), MAX_WORKERS, items // max(min_items, 1)))


def cuts(items: int, count: int) -> list[int]:
    """Boundaries of `count` near-equal parts of range(items): part i is [cuts[i], cuts[i + 1])."""
    return [items * i // count for i in range(count + 1)]


def run_parts(job: Callable[[int], T], count: int) -> list[T]:
    """[job(0), ..., job(count - 1)], side by side when count > 1; the first exception is raised here."""
    if count < 2:
        return [job(i) for i in range(count)]
    return list(_pool().map(job, range(count)))


def _mark_part() -> None:
    _inside.part = True


@functools.cache
def _pool() -> ThreadPoolExecutor:
    one_heap_for_threads()  # what a part frees goes back to the one heap every later phase allocates from
    return ThreadPoolExecutor(MAX_WORKERS, thread_name_prefix="lmkit-part", initializer=_mark_part)


if hasattr(os, "register_at_fork"):  # a forked child has none of the parent's threads: it starts its own pool
    os.register_at_fork(after_in_child=_pool.cache_clear)
