"""Fetch one file over HTTP(S) into a `.part` file, resume it with a Range request, verify it, publish it.

Nothing here trusts the network: the body is hashed while it streams, its size and sha256 are checked
against the manifest before the file gets its final name, a checksum mismatch deletes the bad bytes, and
every failure (refused connection, timeout, HTTP error, truncated body, full disk) is one DataError line
that names the URL. Nor is a length trusted: every download is bounded (download_bound), whatever the
server announces or leaves unsaid, so a body without an end cannot fill the disk. Nor the disk: a file kept
from an earlier attempt is hashed again before it is reused. The standard library's urllib does the HTTP:
no new dependency."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__
from ..atomic import DiskFullError, is_disk_full
from ..errors import DataError
from .unpack import cap_for
from ..logs import Log, quiet

if TYPE_CHECKING:  # the HTTP modules are imported where used: every lmkit command imports this module
    import urllib.request

CHUNK = 1 << 16
DEFAULT_TIMEOUT = 30.0  # seconds without progress (connect, or between two reads) before giving up
# The most bytes one download may have when the registry records neither its size nor its unpacked size
# (no entry today): 1 GiB, over 5x the largest download lmkit knows (WikiText-103 raw, 192 MB).
MAX_DOWNLOAD_BYTES = 1 << 30
ALREADY = "(already downloaded)"  # Fetched.url of a file kept from an earlier attempt
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")




class FetchFailed(Exception):
    """One URL failed; the caller tries the next mirror and reports every reason in one line."""


@dataclass
class Fetched:
    """A complete, verified download."""

    path: Path
    url: str
    size: int
    sha256: str
    verified: bool  # the sha256 matched a known value (False: trust on first use)
    reused: bool = False  # kept from an earlier attempt (url is ALREADY), not fetched now


def sha256_file(path: Path) -> str:
    return _hash_into(hashlib.sha256(), path).hexdigest()


def download_bound(size: int | None, unpacked_size: int | None = None) -> tuple[int, str]:
    """The most bytes a download may have, and where that number comes from (for the refusal line).

    A server may send no Content-Length, or a false one, and keep sending: without a bound it fills the
    disk. The registry's size is exact; a compressed file is no larger than what it unpacks to, so the
    unpack cap for the registry's unpacked size bounds it next; MAX_DOWNLOAD_BYTES when neither is known."""
    if size is not None:
        return size, "the size the registry records"
    if unpacked_size is not None:
        return cap_for(unpacked_size, MAX_DOWNLOAD_BYTES), "1.5x the unpacked size the registry records + 1 MiB"
    return MAX_DOWNLOAD_BYTES, "MAX_DOWNLOAD_BYTES, for a file of unknown size"


def _hash_into(digest, path: Path):
    """`digest` updated with the bytes of `path`, read a MiB at a time."""
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest


def part_path(dest: Path) -> Path:
    """Where the bytes of `dest` accumulate until they are complete and verified."""
    return dest.with_name(dest.name + ".part")


def fetch(urls: list[str] | tuple[str, ...], dest: Path, *, size: int | None = None, sha256: str | None = None,
          unpacked_size: int | None = None, timeout: float = DEFAULT_TIMEOUT, progress: bool = False,
          log: Log = quiet) -> Fetched:
    """Download the first URL that yields the right bytes into `dest` (mirrors tried in order).

    A complete `dest` from an earlier run is reused when it still verifies. A `.part` left by an
    interrupted or truncated attempt is continued with a Range request. No URL may send more than
    download_bound(size, unpacked_size) bytes. DataError when every URL fails."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        kept = _reuse(dest, size, sha256, log)
        if kept is not None:
            return kept
    part = part_path(dest)
    bound = download_bound(size, unpacked_size)
    reasons = []
    for url in urls:
        while True:
            try:
                digest, got, resumed = _fetch_one(url, part, size, bound, timeout, progress, log)
            except FetchFailed as exc:
                reasons.append(f"{url}: {exc}")
                break
            problem = _mismatch(got, digest, size, sha256)
            if problem is None:
                os.replace(part, dest)
                return Fetched(dest, url, got, digest, sha256 is not None)
            part.unlink(missing_ok=True)
            if not resumed:
                reasons.append(f"{url}: {problem}; the bad file was deleted")
                break
            log(f"{url}: the resumed download fails verification ({problem}); downloading it from the start")
    raise DataError(f"cannot download {dest.name}: {'; '.join(reasons)}")


def _mismatch(got: int, digest: str | None, size: int | None, sha256: str | None) -> str | None:
    """Why `got` bytes hashing to `digest` are not the registry's file (None: they are, as far as it knows)."""
    if size is not None and got != size:
        return f"got {got:,} bytes, expected {size:,}"
    if sha256 is not None and digest != sha256:
        return f"checksum mismatch (sha256 {digest}, expected {sha256})"
    return None


def _reuse(dest: Path, size: int | None, sha256: str | None, log: Log) -> Fetched | None:
    """`dest` kept from an earlier attempt, hashed again before it is trusted (bytes on disk can change after
    they were verified); a mismatch deletes it, says so in one line and returns None: download it again."""
    have = dest.stat().st_size
    digest = sha256_file(dest) if size is None or have == size else None
    problem = _mismatch(have, digest, size, sha256)
    if problem is None:
        return Fetched(dest, ALREADY, have, digest or "", sha256 is not None, reused=True)
    log(f"{dest.name}: the copy kept from an earlier attempt fails verification: {problem}; "
        "deleted, downloading it again")
    dest.unlink()
    return None


def _request(url: str, start: int) -> urllib.request.Request:
    import urllib.request

    headers = {"User-Agent": f"lmkit/{__version__}", "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.Request(url, headers=headers)


def _network_reason(exc: BaseException, timeout: float) -> str:
    """A short phrase for why a connection or a read failed."""
    import urllib.error

    reason = exc.reason if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError) \
        else exc
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"timed out (no data for {timeout:g} s)"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, ConnectionResetError):
        return "connection reset by the server"
    if isinstance(reason, socket.gaierror):
        return "cannot resolve the host name (offline?)"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return " ".join(str(reason).split()) or type(reason).__name__


def _open(url: str, start: int, timeout: float):
    import http.client
    import urllib.error
    import urllib.request

    try:
        return urllib.request.urlopen(_request(url, start), timeout=timeout)  # noqa: S310 (http/https/file only)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:
            return None  # the part already holds everything the server has
        raise FetchFailed(f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise FetchFailed(_network_reason(exc, timeout)) from None


def _resume_offset(resp, start: int) -> int:
    """Where the body continues the part: `start` for a matching 206, 0 when the server sent it all."""
    status = getattr(resp, "status", None) or 200
    if not start or status == 200:
        return 0
    match = _CONTENT_RANGE.match(resp.headers.get("Content-Range", "").strip())
    if status != 206 or not match or int(match.group(1)) != start:
        raise FetchFailed(f"unexpected answer to a range request (HTTP {status}, "
                          f"Content-Range {resp.headers.get('Content-Range')!r})")
    return start


def _fetch_one(url: str, part: Path, size: int | None, bound: tuple[int, str], timeout: float, progress: bool,
               log: Log) -> tuple[str, int, bool]:
    """Append the rest of `url` to `part`: (sha256, bytes) of the whole part and whether earlier bytes were
    kept (a resumed download). FetchFailed on any failure, and past `bound` (bytes, why)."""
    limit, why = bound
    start = part.stat().st_size if part.exists() else 0
    if start > limit:  # not a prefix of the file we want
        part.unlink()
        start = 0
    if size is not None and start == size and start:
        return sha256_file(part), start, True
    resp = _open(url, start, timeout)
    if resp is None:  # 416: nothing beyond the part; it is complete, or wrong (size/sha256 will tell)
        return sha256_file(part), start, True
    with resp:
        offset = _resume_offset(resp, start)
        if start and not offset:
            log(f"{url}: the server ignored the range request; downloading from the start")
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        total = offset + length if length is not None else size
        if size is not None and length is not None and offset + length != size:
            raise FetchFailed(f"the server announces {offset + length:,} bytes, expected {size:,} (a different "
                              "file?); refused before reading the body")
        if length is not None and offset + length > limit:
            raise FetchFailed(f"the server announces {offset + length:,} bytes, more than {limit:,} ({why}); "
                              "refused before reading the body")
        digest = _hash_into(hashlib.sha256(), part) if offset else hashlib.sha256()  # resuming: hash what is kept
        received = _stream(resp, part, offset, digest, total, bound, progress, url, timeout)
    if length is not None and received < length:
        raise FetchFailed(f"truncated: the connection closed after {offset + received:,} of {offset + length:,} "
                          "bytes (kept; the next attempt resumes from there)")
    return digest.hexdigest(), offset + received, offset > 0


def _stream(resp, part: Path, offset: int, digest, total: int | None, bound: tuple[int, str], progress: bool,
            url: str, timeout: float) -> int:
    """Copy the body into the part (appending at `offset`), hashing as it goes; bytes received.

    Reads at most one byte past `bound`: a body that goes on (no Content-Length, or a false one) stops
    there, and the part, which cannot be the file, is deleted (FetchFailed)."""
    import http.client

    limit, why = bound
    bar = _Bar(progress, part.name[:-len(".part")], total, offset)
    received = 0
    over = False
    try:
        with open(part, "r+b" if offset else "wb") as fh:
            fh.seek(offset)
            fh.truncate()
            while True:
                try:
                    block = resp.read(min(CHUNK, limit - offset - received + 1))
                except (OSError, http.client.HTTPException) as exc:
                    raise FetchFailed(f"{_network_reason(exc, timeout)} after {offset + received:,} bytes "
                                      "(kept; the next attempt resumes from there)") from None
                if not block:
                    break
                if offset + received + len(block) > limit:
                    received += len(block)
                    over = True
                    break
                fh.write(block)
                digest.update(block)
                received += len(block)
                bar.advance(len(block))
    except OSError as exc:  # writing the part: disk full, permissions
        if is_disk_full(exc):
            raise DiskFullError(part) from None
        raise DataError(f"cannot write {part}: {exc.strerror or exc}") from None
    finally:
        bar.close()
    if over:
        part.unlink(missing_ok=True)
        raise FetchFailed(f"sent more than {limit:,} bytes ({why}), received {offset + received:,}; stopped and "
                          "deleted the partial file")
    return received


class _Bar:
    """A rich download bar on stderr, only when asked for and stderr is a terminal."""

    def __init__(self, enabled: bool, label: str, total: int | None, done: int):
        self.bar = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                       TransferSpeedColumn)

            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                                TransferSpeedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                                transient=True)
            self.task = self.bar.add_task(label, total=total, completed=done)
            self.bar.start()

    def advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
