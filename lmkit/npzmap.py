"""An uncompressed .npz (what np.savez writes) read once and then used in place, memory-mapped.

np.load copies every array into memory. For an n-gram model that is the whole model a second time: the save-load
check of `lmkit train` held two copies of the tables at once (the command's peak memory), and `lmkit score` read
all of a large model before scoring a line. Here the file is read once, a block at a time into one reused
buffer, to check each member's CRC-32 and to let the caller check the values block by block; the arrays handed
back are read-only views of the memory-mapped file, so only the pages scoring touches are ever resident.
Nothing is unpickled: a member whose dtype holds Python objects is refused."""

from __future__ import annotations

import mmap
import os
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

BLOCK_BYTES = 1 << 20  # read, checked and dropped at a time: the reader never holds more of the file
_LOCAL_HEADER = 30  # bytes of a zip local file header before its name and extra field
_NAMES_AT = struct.Struct("<HH")  # file name length, extra field length (offset 26 of the local header)

# check(array name, a block of its values, index of the block's first value); the block is only valid during the
# call (its buffer is reused for the next block)
BlockCheck = Callable[[str, np.ndarray, int], None]


class PickledMember(ValueError):
    """A member holds Python objects: reading it would unpickle."""


def map_npz(path: str | Path, check: BlockCheck | None = None,
            block_bytes: int = BLOCK_BYTES) -> dict[str, np.ndarray] | None:
    """Every array of `path` by name (without .npy), read-only and memory-mapped; None when a member is
    compressed (np.savez_compressed: np.load reads those). ValueError names what is damaged (a member past the
    end of the file, a header that does not match its member's size, a failed CRC); PickledMember for objects."""
    path = Path(path)
    with path.open("rb") as fh:
        with zipfile.ZipFile(fh) as archive:
            members = archive.infolist()
        if any(m.compress_type != zipfile.ZIP_STORED for m in members):
            return None
        size = os.fstat(fh.fileno()).st_size
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        buffer = bytearray(max(block_bytes, 1))
        out = {}
        for member in members:
            if not member.filename.endswith(".npy"):
                continue
            name = member.filename[:-4]
            out[name] = _member(fh, mapped, member, name, size, buffer, check)
    return out


def _member(fh, mapped, member: zipfile.ZipInfo, name: str, size: int, buffer: bytearray,
            check: BlockCheck | None) -> np.ndarray:
    fh.seek(member.header_offset)
    head = fh.read(_LOCAL_HEADER)
    if len(head) != _LOCAL_HEADER or head[:4] != b"PK\x03\x04":
        raise ValueError(f"member {name}: no local header where the directory says")
    name_len, extra_len = _NAMES_AT.unpack(head[26:30])
    start = member.header_offset + _LOCAL_HEADER + name_len + extra_len
    end = start + member.compress_size
    if end > size or member.compress_size != member.file_size:
        raise ValueError(f"member {name} runs past the end of the file")
    fh.seek(start)
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    if dtype.hasobject:
        raise PickledMember(f"member {name} holds Python objects")
    at = fh.tell()
    count = int(np.prod(shape, dtype=np.int64))
    if at + count * dtype.itemsize != end:
        raise ValueError(f"array {name} claims {count * dtype.itemsize:,} bytes, its member holds {end - at:,}")
    fh.seek(start)
    crc = zlib.crc32(fh.read(at - start))
    if dtype.itemsize > len(buffer):  # a block holds at least one value
        buffer = bytearray(dtype.itemsize)
    view = memoryview(buffer)
    step = max(len(buffer) // dtype.itemsize, 1) * dtype.itemsize
    done, remaining = 0, count * dtype.itemsize
    while remaining:
        got = fh.readinto(view[:min(step, remaining)])
        if not got or got % dtype.itemsize:
            raise ValueError(f"member {name} ends early")
        crc = zlib.crc32(view[:got], crc)
        if check is not None:
            check(name, np.frombuffer(buffer, dtype=dtype, count=got // dtype.itemsize), done)
        done += got // dtype.itemsize
        remaining -= got
    if crc != member.CRC:
        raise ValueError(f"member {name} fails its CRC check")
    if count == 0:
        return np.zeros(shape, dtype=dtype)
    return np.frombuffer(mapped, dtype=dtype, count=count, offset=at).reshape(shape, order="F" if fortran else "C")
