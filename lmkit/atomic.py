"""Atomic file and directory writes: a reader never sees half of an artifact.

Every artifact is written under a temp name beside its target and renamed over it only when complete,
so a crash, a kill or a full disk leaves the previous version (or nothing) in place. Temp names are
hidden and recognisable, `.<name>.<pid>.<random>.tmp`: no loader opens them, a shell glob such as
`runs/*` skips them, and the next write of the same artifact removes those left by a killed writer."""

from __future__ import annotations

import errno
import gzip
import json
import os
import re
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator

from .errors import LmkitError

# errno values meaning "no room to write": a full disk, a file-size limit, a quota
DISK_FULL = frozenset(e for e in (getattr(errno, n, None) for n in ("ENOSPC", "EFBIG", "EDQUOT")) if e is not None)
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]*\.tmp$")


class DiskFullError(LmkitError):
    """A write failed for lack of space (ENOSPC, EFBIG from a file-size limit, EDQUOT); nothing was published."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        super().__init__(f"disk full or file too large while writing {path}; nothing was written there "
                         "(the previous version, if any, is intact)")


def is_disk_full(exc: BaseException) -> bool:
    """An OSError for a full disk / file-size limit / quota; also libraries that only say 'os error N'."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL:
        return True
    m = re.search(r"os error (\d+)|\[Errno (\d+)\]", str(exc))
    return bool(m) and int(m.group(1) or m.group(2)) in DISK_FULL


def temp_path(path: Path, directory: bool = False) -> Path:
    """A fresh hidden temp file (or folder) beside `path`, named after it and this process."""
    prefix = f".{path.name}.{os.getpid()}."
    if directory:
        return Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=path.parent))
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def clean_stale_temps(folder: str | Path, name: str | None = None, log: Callable[[str], None] | None = None
                      ) -> list[Path]:
    """Remove temp files/folders in `folder` (for target `name`, or any) whose writer process is gone.

    A write in progress in another live process is never touched (its pid is in the name). Folders
    removed are reported through `log` in one line (they are what a killed run left behind)."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _TEMP.match(p.name)
        if not m or (name is not None and m["name"] != name) or _alive(int(m["pid"])):
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    if log is not None and removed:
        log(f"removed {len(removed)} temporary item(s) left in {folder} by a killed lmkit process: "
            f"{', '.join(sorted(p.name for p in removed))}")
    return removed


def _host_tag() -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:40] or "host"


def scratch_dir(root: str | Path, prefix: str, log: Callable[[str], None] | None = None) -> Path:
    """A private scratch folder in `root` named after this host and process (`<prefix><host>-<pid>-...`);
    the stale ones of `prefix` are removed first (remove_stale_scratch)."""
    remove_stale_scratch(root, prefix, log)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{_host_tag()}-{os.getpid()}-", dir=root))


def remove_stale_scratch(root: str | Path, prefix: str, log: Callable[[str], None] | None = None) -> list[str]:
    """Remove scratch folders of `prefix` left in `root` by a killed process of this host (pid gone), with
    one line through `log`: spill files never accumulate. Folders of live processes, or of other hosts
    sharing `root`, are never touched."""
    root, host = Path(root), _host_tag()
    pattern = re.compile(re.escape(prefix) + r"(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-")
    stale = []
    try:
        entries = list(root.iterdir())
    except OSError:
        entries = []
    for p in entries:
        m = pattern.match(p.name)
        if m and m["host"] == host and not _alive(int(m["pid"])) and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
            stale.append(p.name)
    if stale and log is not None:
        log(f"removed {len(stale)} scratch folder(s) left in {root} by a killed lmkit process: {', '.join(stale)}")
    return stale


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def publish_mode(path: str | Path, directory: bool = False) -> None:
    """Give a temp file or folder the permissions a plain open()/mkdir() would have.

    mkstemp/mkdtemp create them private (0600/0700) and a rename keeps that, which would leave run
    folders unreadable to the group and to others even with a permissive umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", *, encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temp file next to `path`; rename it over `path` only if the block succeeds.

    A name ending in .gz is gzip-compressed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path.parent, path.name)
    tmp = temp_path(path)
    publish_mode(tmp)
    binary = "b" in mode
    try:
        if path.suffix == ".gz":
            fh = gzip.open(tmp, mode if binary else mode + "t", encoding=None if binary else encoding)
        else:
            fh = open(tmp, mode, encoding=None if binary else encoding)
        with fh:
            yield fh
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise DiskFullError(path) from None
        raise


def write_json(path: str | Path, data: dict) -> None:
    with atomic_open(path) as fh:
        json.dump(data, fh, indent=1, ensure_ascii=False, allow_nan=False)
        fh.write("\n")


@contextmanager
def atomic_dir(path: str | Path, *, replace: bool = False, log: Callable[[str], None] | None = None
               ) -> Iterator[Path]:
    """Build a directory under a temp name and move it into place when the block succeeds.

    With replace=True an existing directory at `path` is replaced (only after success)."""
    path = Path(path)
    created = missing_parents(path.parent)
    tmp = staging_dir(path, log)
    try:
        yield tmp
        publish_dir(tmp, path, replace=replace)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_if_empty(created)
        if isinstance(exc, DiskFullError) and tmp in exc.path.parents:
            raise DiskFullError(path / exc.path.relative_to(tmp)) from None
        if is_disk_full(exc):
            raise DiskFullError(path) from None
        raise


def staging_dir(path: Path, log: Callable[[str], None] | None = None) -> Path:
    """A fresh hidden temp folder beside `path` to build its next version in (the parent is created,
    and temp folders of `path` left by killed processes are removed first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path.parent, path.name, log)
    tmp = temp_path(path, directory=True)
    publish_mode(tmp, directory=True)
    return tmp


def publish_dir(tmp: Path, path: Path, *, replace: bool = False) -> None:
    """Move the finished folder `tmp` to `path`; an existing `path` is swapped out in one step where the
    system allows (renameat2), so a reader sees the old folder or the new one, never neither."""
    if not path.exists():
        os.replace(tmp, path)
        return
    if not replace and any(path.iterdir()):
        raise LmkitError(f"{path}: folder appeared while this run was being written (another process?); "
                         "nothing replaced, use --force to replace it")
    if _exchange(tmp, path):  # one atomic step: the old folder now sits under the temp name
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        old = temp_path(path, directory=True)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)


def missing_parents(folder: Path) -> list[Path]:
    """The folders (deepest first) that creating `folder` will create, to remove again if left empty."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def remove_if_empty(folders: list[Path]) -> None:
    """A write that failed leaves no empty folders it made behind (a non-empty one stays)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where that is not available."""
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0
