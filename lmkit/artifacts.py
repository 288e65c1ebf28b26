"""Checks shared by every artifact reader: format versions and safetensors headers.

Readers refuse what they cannot read with one line naming the file; a file written by a newer lmkit
says which version it is and which version this lmkit reads, so the fix (upgrade) is obvious."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from . import __version__
from .errors import ModelError

# safetensors' own limit on the JSON header; a larger claim is damage, never a model
MAX_SAFETENSORS_HEADER = 100_000_000
SAFETENSORS_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                      "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def check_version(path: str | Path, what: str, found: Any, supported: int) -> None:
    """ModelError unless `found` is the format version `supported` that this lmkit reads."""
    if found == supported and isinstance(found, int) and not isinstance(found, bool):
        return
    if isinstance(found, int) and not isinstance(found, bool) and found > supported:
        raise ModelError(f"{path}: {what} format version {found} was written by a newer lmkit; lmkit "
                         f"{__version__} reads version {supported} (upgrade lmkit to read it)")
    shown = "none" if found is None else repr(found)
    raise ModelError(f"{path}: {what} has an unknown format version ({shown}); lmkit {__version__} reads "
                     f"version {supported}")


def pickle_refusal(exc: Exception, what: str) -> str:
    """The message for numpy's allow_pickle=False refusal: an object array inside the archive is a pickle
    payload; a file that is no .npy/.npz at all (truncated, or a bare pickle) is damage. Neither is run."""
    if "Object arrays" in str(exc):
        return ("refused: it holds pickled objects, which could run code when loaded (a damaged or tampered "
                "file); not loaded")
    return f"damaged or incompatible {what} (not an .npz archive; not unpickled)"


def read_safetensors_header(path: str | Path) -> dict:
    """The parsed JSON header of a .safetensors file, checked against the file's real size.

    Reads 8 bytes plus at most MAX_SAFETENSORS_HEADER: a header that claims an absurd length, or tensors
    whose offsets or shapes point past the end of the file, are refused before anything is allocated."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(0)
            head = fh.read(8)
            if len(head) < 8:
                raise ModelError(f"{path}: damaged or truncated weights file ({size} bytes, no header)")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_SAFETENSORS_HEADER or n > size - 8:
                raise ModelError(f"{path}: damaged or truncated weights file (header claims {n:,} bytes, "
                                 f"the file has {size:,})")
            raw = fh.read(n)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read weights file ({exc.strerror or exc})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
    except (UnicodeDecodeError, ValueError) as exc:
        raise ModelError(f"{path}: damaged weights file (unreadable header: {exc.__class__.__name__})") from None
    data_size = size - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict):
                raise ModelError(f"{path}: damaged weights file (metadata is not an object)")
            continue
        try:
            start, end = (int(x) for x in info["data_offsets"])
            numel = 1
            for d in info["shape"]:
                if int(d) < 0:
                    raise ValueError
                numel *= int(d)
            width = SAFETENSORS_DTYPES[info["dtype"]]
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"{path}: damaged weights file (tensor {name!r} has no valid dtype, shape and "
                             "offsets)") from None
        if not 0 <= start <= end <= data_size or end - start != numel * width:
            raise ModelError(f"{path}: damaged or truncated weights file (tensor {name!r} claims bytes "
                             f"{start:,}..{end:,}, the file holds {data_size:,})")
    return header


def check_npz(path: str | Path) -> None:
    """Refuse an .npz whose arrays claim more data than the archive holds, before numpy allocates them.

    np.load trusts each member's .npy header: a header claiming a terabyte-sized shape makes it allocate
    a terabyte. lmkit writes uncompressed members, so every array's bytes must fit in its member."""
    import zipfile

    import numpy as np

    path = Path(path)
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.file_size > max(size, 1) * 1000:
                    raise ModelError(f"{path}: damaged file (member {info.filename} claims {info.file_size:,} "
                                     f"bytes in a {size:,}-byte archive)")
                if not info.filename.endswith(".npy"):
                    continue
                with z.open(info) as fh:
                    version = np.lib.format.read_magic(fh)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
                need = dtype.itemsize * int(np.prod(shape, dtype=object)) if not dtype.hasobject else 0
                if need > info.file_size:
                    raise ModelError(f"{path}: damaged file (array {info.filename[:-4]!r} claims {need:,} bytes, "
                                     f"its member holds {info.file_size:,})")
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError):
        return  # other damage: the reader's own np.load fails and says so in its words
