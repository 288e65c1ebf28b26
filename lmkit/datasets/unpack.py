"""Extract the wanted members of a downloaded zip, tar(.gz/.bz2/.xz) or .gz file, refusing anything unsafe.

An archive from the network is hostile until shown otherwise. Every member is checked before any byte is
written: absolute paths, `..` components, symbolic and hard links, device files and FIFOs, duplicate and
encrypted members are refused with one line. While writing, the bytes actually produced are counted
(declared sizes are not trusted) against a total cap and a cap on the compression ratio, which stops zip
bombs after at most `max_bytes`. The caller extracts into a temp folder it publishes only on success."""

from __future__ import annotations

import gzip
import os
import re
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import IO

from ..atomic import DiskFullError, is_disk_full
from ..errors import DataError, UsageError

DEFAULT_MAX_RATIO = 100.0  # text compresses 3-10x; a bomb compresses 1000x
RATIO_FLOOR = 1 << 20  # outputs smaller than this are never judged by their ratio
ABSOLUTE_MAX_BYTES = 64 << 30  # no corpus lmkit knows unpacks to more; LMKIT_MAX_UNPACK_BYTES changes it
SLACK = 1.5  # allowed growth over a manifest's approximate unpacked size
_CHUNK = 1 << 20


class UnsafeArchive(DataError):
    """An archive that would write outside its folder, create links or devices, or explode in size."""


def absolute_cap() -> int:
    """Bytes one extraction may write at most, whatever the manifest says (env LMKIT_MAX_UNPACK_BYTES)."""
    raw = os.environ.get("LMKIT_MAX_UNPACK_BYTES", "").strip()
    if not raw:
        return ABSOLUTE_MAX_BYTES
    if not raw.isdigit() or int(raw) < 1:
        raise UsageError(f"LMKIT_MAX_UNPACK_BYTES must be a positive whole number of bytes, got {raw!r}")
    return int(raw)


def cap_for(expected: int | None, absolute: int | None = None) -> int:
    """The byte cap for an archive expected to unpack to about `expected` bytes (None: unknown)."""
    absolute = absolute_cap() if absolute is None else absolute
    if expected is None:
        return absolute
    return min(absolute, int(expected * SLACK) + RATIO_FLOOR)


def safe_name(name: str, archive: str) -> str:
    """The member's relative path with '/' separators; UnsafeArchive for anything that could escape."""
    if "\x00" in name:
        raise UnsafeArchive(f"{archive}: member name contains a NUL byte; refused, nothing extracted")
    path = name.replace("\\", "/")
    if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
        raise UnsafeArchive(f"{archive}: member {name!r} has an absolute path; refused, nothing extracted")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchive(f"{archive}: member {name!r} points outside the archive folder ('..'); "
                            "refused, nothing extracted")
    return "/".join(parts)


class _Budget:
    """Counts bytes written against the total cap and the compression-ratio cap."""

    def __init__(self, archive: str, compressed: int, max_bytes: int, max_ratio: float):
        self.archive, self.compressed = archive, max(compressed, 1)
        self.max_bytes, self.max_ratio = max_bytes, max_ratio
        self.written = 0

    def add(self, n: int, member: str) -> None:
        self.written += n
        if self.written > self.max_bytes:
            raise UnsafeArchive(f"{self.archive}: unpacks to more than {self.max_bytes:,} bytes (at {member}); "
                                "refused as a possible decompression bomb, nothing extracted")
        if self.written > RATIO_FLOOR and self.written > self.max_ratio * self.compressed:
            raise UnsafeArchive(f"{self.archive}: expands more than {self.max_ratio:g}x ({self.compressed:,} bytes "
                                f"-> over {self.written:,} at {member}); refused as a possible decompression bomb, "
                                "nothing extracted")


def _read(src: IO[bytes], budget: _Budget, member: str) -> bytes:
    try:
        return src.read(_CHUNK)
    except (zlib.error, EOFError, zipfile.BadZipFile, tarfile.TarError, OSError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else " ".join(str(exc).split())
        raise DataError(f"{budget.archive}: corrupt, truncated or unreadable data in {member} ({why}); "
                        "nothing extracted") from None


def _copy(src: IO[bytes], out: Path, budget: _Budget, member: str) -> None:
    """Stream one member into `out`, counting every byte against the budget before writing it."""
    try:
        fh = open(out, "xb")
    except FileExistsError:
        raise UnsafeArchive(f"{budget.archive}: two members map to {out.name}; refused, nothing extracted") from None
    with fh:
        while block := _read(src, budget, member):
            budget.add(len(block), member)
            try:
                fh.write(block)
            except OSError as exc:
                if is_disk_full(exc):
                    raise DiskFullError(out) from None
                raise DataError(f"cannot write {out}: {exc.strerror or exc}") from None


def _missing(wanted: dict[str, str], found: set[str], archive: str) -> None:
    lacking = [m for m in wanted if m not in found]
    if lacking:
        raise DataError(f"{archive}: has no member {lacking[0]!r} (a different archive than the manifest "
                        "describes?); nothing extracted")


def _zip_members(zf: zipfile.ZipFile, archive: str) -> dict[str, zipfile.ZipInfo]:
    members: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        name = safe_name(info.filename, archive)
        kind = stat.S_IFMT(info.external_attr >> 16)
        if kind == stat.S_IFLNK:
            raise UnsafeArchive(f"{archive}: member {info.filename!r} is a symbolic link; refused, nothing extracted")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise UnsafeArchive(f"{archive}: member {info.filename!r} is a device or special file; refused, "
                                "nothing extracted")
        if info.flag_bits & 0x1:
            raise UnsafeArchive(f"{archive}: member {info.filename!r} is encrypted; refused, nothing extracted")
        if info.is_dir():
            continue
        if name in members:
            raise UnsafeArchive(f"{archive}: member {name!r} appears twice; refused, nothing extracted")
        members[name] = info
    return members


def _extract_zip(path: Path, dest: Path, wanted: dict[str, str], budget: _Budget) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            members = _zip_members(zf, path.name)
            _missing(wanted, set(members), path.name)
            for member, output in wanted.items():
                with zf.open(members[member]) as src:
                    _copy(src, dest / output, budget, member)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise DataError(f"{path.name}: not a readable zip archive ({exc}); nothing extracted") from None


def _tar_members(tf: tarfile.TarFile, archive: str) -> dict[str, tarfile.TarInfo]:
    members: dict[str, tarfile.TarInfo] = {}
    for info in tf.getmembers():
        name = safe_name(info.name, archive)
        if info.issym() or info.islnk():
            what = "symbolic" if info.issym() else "hard"
            raise UnsafeArchive(f"{archive}: member {info.name!r} is a {what} link; refused, nothing extracted")
        if info.ischr() or info.isblk() or info.isfifo():
            raise UnsafeArchive(f"{archive}: member {info.name!r} is a device file or FIFO; refused, "
                                "nothing extracted")
        if info.isdir():
            continue
        if not info.isreg():
            raise UnsafeArchive(f"{archive}: member {info.name!r} has an unsupported type; refused, nothing extracted")
        if name in members:
            raise UnsafeArchive(f"{archive}: member {name!r} appears twice; refused, nothing extracted")
        members[name] = info
    return members


def _extract_tar(path: Path, dest: Path, wanted: dict[str, str], budget: _Budget) -> None:
    try:
        with tarfile.open(path, "r:*") as tf:
            members = _tar_members(tf, path.name)
            _missing(wanted, set(members), path.name)
            for member, output in wanted.items():
                src = tf.extractfile(members[member])
                assert src is not None  # a regular file, checked above
                with src:
                    _copy(src, dest / output, budget, member)
    except (tarfile.TarError, zlib.error, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path.name}: not a readable tar archive ({exc}); nothing extracted") from None


def _extract_gz(path: Path, dest: Path, wanted: dict[str, str], budget: _Budget) -> None:
    (output,) = wanted.values()
    with gzip.open(path, "rb") as src:
        _copy(src, dest / output, budget, path.name)


def _copy_plain(path: Path, dest: Path, wanted: dict[str, str], budget: _Budget) -> None:
    (output,) = wanted.values()
    with open(path, "rb") as src:
        _copy(src, dest / output, budget, path.name)


_EXTRACTORS = {"zip": _extract_zip, "tar": _extract_tar, "gz": _extract_gz, "none": _copy_plain}


def extract(path: Path, fmt: str, dest: Path, wanted: dict[str, str], *, max_bytes: int,
            max_ratio: float = DEFAULT_MAX_RATIO) -> list[Path]:
    """Write each wanted member (archive path -> output file name) into the existing folder `dest`.

    `fmt`: zip, tar (any compression tarfile reads), gz (one gzip-compressed file; its one key is the
    download's own name) or none (a plain copy). Every member is checked first (see the module doc);
    outputs are created exclusively, so a name cannot be written twice. The caller discards `dest` on error."""
    if fmt not in _EXTRACTORS:
        raise DataError(f"{path.name}: unknown archive format {fmt!r}")
    for output in wanted.values():
        if safe_name(output, "manifest") != output or "/" in output:
            raise DataError(f"manifest output name {output!r} must be a plain file name")
    # a plain copy is never a bomb: only its size is capped
    ratio = float("inf") if fmt == "none" else max_ratio
    budget = _Budget(path.name, path.stat().st_size, max_bytes, ratio)
    _EXTRACTORS[fmt](path, dest, wanted, budget)
    return [dest / output for output in wanted.values()]
