"""One writer per run folder: an exclusive lock held while `lmkit train` (or `--resume`) writes it.

The lock is fcntl.flock on a hidden file beside the folder (`.<name>.lock`, so a half-written folder
never has to exist to be locked, and `runs/*` does not list it). A second writer is refused at once
with one line naming the holder's pid. The kernel releases a flock when its process dies, even by
SIGKILL, so a stale lock file never blocks: the next writer simply takes it."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .atomic import missing_parents, remove_if_empty
from .errors import LmkitError

try:
    import fcntl
except ImportError:  # not POSIX: no lock (documented), everything else still atomic
    fcntl = None


class LockedError(LmkitError):
    """Another live process is writing the same run folder."""


def lock_path(target: str | Path) -> Path:
    target = Path(os.path.abspath(target))
    return target.parent / f".{target.name}.lock"


def holder(target: str | Path) -> int | None:
    """The pid recorded by the process holding `target`'s lock (None when unknown)."""
    try:
        text = lock_path(target).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


@contextmanager
def run_lock(target: str | Path) -> Iterator[Path]:
    """Hold the exclusive lock of run folder `target` for the block; LockedError if another process has it."""
    path = lock_path(target)
    if fcntl is None:
        yield path
        return
    created = missing_parents(path.parent)
    try:
        yield from _hold(target, path)
    finally:
        remove_if_empty(created)


def _hold(target: str | Path, path: Path) -> Iterator[Path]:
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise LmkitError(f"{target}: cannot create its lock file {path} ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = holder(target)
            who = f"pid {pid}" if pid is not None else "another process"
            raise LockedError(f"{target}: another lmkit process ({who}) is writing this run folder; "
                              "wait for it to finish (a killed process releases it at once)") from None
        # the holder we waited on may have removed the file as it released it: lock the file that is there
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        try:
            path.unlink(missing_ok=True)  # removed while still held, so no one can lock a stale inode
        finally:
            os.close(fd)
