"""lmkit.memory: freed heap handed back, numpy's huge-page requests turned off for the command line only."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from lmkit.memory import release_free_memory

_GET = "from numpy._core.multiarray import _get_madvise_hugepage as g; "


def in_child(code: str, **env) -> str:
    import os

    full_env = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env,
                          check=True).stdout.strip()


def test_huge_pages_are_turned_off_unless_the_user_chose():
    pytest.importorskip("numpy._core.multiarray")
    code = _GET + "from lmkit.memory import prefer_small_pages as p; b = g(); changed = p(); print(b, changed, g())"
    if in_child(_GET + "print(g())") != "True":
        pytest.skip("this numpy or kernel never asks for huge pages")
    assert in_child(code) == "True True False"
    assert in_child(code, NUMPY_MADVISE_HUGEPAGE="1") == "True False True"  # the user's choice stands


def test_the_command_line_turns_them_off_and_importing_lmkit_does_not():
    pytest.importorskip("numpy._core.multiarray")
    if in_child(_GET + "print(g())") != "True":
        pytest.skip("this numpy or kernel never asks for huge pages")
    assert in_child(_GET + "import lmkit.cli, lmkit.api; print(g())") == "True"
    probe = ("import sys; import lmkit.cli as c; "
             "from numpy._core.multiarray import _get_madvise_hugepage as g; "
             "sys.argv = ['lmkit', '--help']\n"
             "try:\n    c.main()\nexcept SystemExit:\n    pass\nprint(g())")
    assert in_child(probe).splitlines()[-1] == "False"


def test_release_free_memory_runs_on_glibc_and_keeps_arrays_intact():
    a = np.arange(1_000_000)
    del a
    b = np.arange(10)
    if sys.platform.startswith("linux") and "glibc" in " ".join(__import__("platform").libc_ver()):
        assert release_free_memory() is True
    else:
        assert release_free_memory() in (True, False)
    assert b.sum() == 45


def test_threads_share_one_heap_once_lmkit_starts_its_workers_unless_the_user_chose():
    """lmkit's worker threads (lmkit/parallel.py) allocate from the main heap; MALLOC_ARENA_MAX, when set, stands."""
    import ctypes
    import ctypes.util

    try:
        glibc = hasattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), "mallopt")
    except OSError:
        glibc = False
    if not sys.platform.startswith("linux") or not glibc:
        pytest.skip("not glibc")
    code = "from lmkit.memory import one_heap_for_threads as o; print(o())"
    assert in_child("import os; os.environ.pop('MALLOC_ARENA_MAX', None); " + code) == "True"
    assert in_child(code, MALLOC_ARENA_MAX="4") == "False"
    starts = "import lmkit.memory as m; calls = []; m.one_heap_for_threads = lambda: calls.append(1); " \
             "import lmkit.parallel as p; p.one_heap_for_threads = m.one_heap_for_threads; " \
             "p.cpus = lambda: 2; p.run_parts(lambda i: i, 2); p.run_parts(lambda i: i, 2); print(len(calls))"
    assert in_child(starts) == "1"  # once, when the workers start


def test_worker_parts_follow_the_cpus_and_omp_num_threads(monkeypatch):
    """lmkit/parallel.py cuts a job into at most as many parts as CPUs it may use, fewer under OMP_NUM_THREADS, and
    never splits again inside a part."""
    from lmkit import parallel

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert parallel.cpus() == 3
    assert parallel.parts(10_000, 1_000) == 3 and parallel.parts(2_500, 1_000) == 2 and parallel.parts(999, 1_000) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert parallel.cpus() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")
    assert parallel.cpus() == 3
    inner = parallel.run_parts(lambda i: parallel.parts(10_000, 1_000), 3)
    assert inner == [1, 1, 1]
    assert parallel.cuts(10, 3) == [0, 3, 6, 10]


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no fork on this platform")
def test_a_forked_child_runs_parts_on_threads_of_its_own():
    """After fork the parent's worker threads do not exist in the child: the child starts its own pool instead of
    waiting forever on the parent's."""
    code = ("import os, time; from lmkit import parallel as p; "
            "p.run_parts(lambda i: time.sleep(0.2), p.MAX_WORKERS); pid = os.fork(); "  # every worker thread started
            "code = 0 if pid else (0 if p.run_parts(lambda i: i * 2, 2) == [0, 2] else 3); "
            "os._exit(code) if not pid else None; "
            "print(os.waitpid(pid, 0)[1])")
    try:
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("the forked child waited on its parent's worker threads")
    assert result.stdout.strip() == "0", result.stderr
