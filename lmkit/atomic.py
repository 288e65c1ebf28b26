"""Atomic file and directory writes: a reader never sees half of an artifact."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
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
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: dict) -> None:
    with atomic_open(path) as fh:
        json.dump(data, fh, indent=1, ensure_ascii=False, allow_nan=False)
        fh.write("\n")


@contextmanager
def atomic_dir(path: str | Path, *, replace: bool = False) -> Iterator[Path]:
    """Build a directory under a temp name and move it into place when the block succeeds.

    With replace=True an existing directory at `path` is replaced (only after success)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    publish_mode(tmp, directory=True)
    try:
        yield tmp
        if path.exists():
            if not replace and any(path.iterdir()):
                raise FileExistsError(path)
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
