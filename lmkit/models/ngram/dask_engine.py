"""Distributed n-gram counting on Dask: map = count a shard, reduce = merge sorted runs, index on the client.

`lmkit train --model ngram:kn5 --engine dask --scheduler tcp://host:8786` (or `--scheduler local:2`, a
LocalCluster of two single-threaded worker processes on this machine):

- **shards** are consecutive slices of the training sequences. When the sequences are a token file's lazy
  view (lmkit.data.tokenfile, `lmkit encode` then `lmkit train --vocab`), a shard travels as (the token
  file's ids.bin and offsets.bin paths, start, stop) and workers map the file themselves, so the paths
  must be readable on every worker (the same machine, or a shared file system); otherwise it travels as
  its ids (one flat int32 array plus lengths). In `stream` context a shard also carries the last N-1
  tokens of the text before it and counts only n-grams ending inside it, as out-of-core chunks do;
- **map** (`count_shard`, on a worker): sorted_runs.count_piece, i.e. the same counting as a chunk of the
  out-of-core path, giving per order sorted word-id rows and counts;
- **reduce** (`merge_shards`, on workers, a binary tree): union of sorted runs, counts summed;
- the **index** is built on the client from the one remaining run per order by sorted_runs.assemble,
  the code the out-of-core path uses, so the counts equal count_ngrams' array for array.

`--memory` caps the tokens of a shard (each map task's counting buffers); without it shards hold at most
DEFAULT_SHARD_TOKENS tokens and there are at least two per worker. The reduce holds merged runs in the
workers' memory, and the finished tables are in the client's. Dask is imported only here, when asked for.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np

from ...atomic import scratch_dir
from ...data.vocab import BOS, EOS
from ...errors import LmkitError, UsageError
from .counts import NgramCounts, flatten
from .external import bytes_per_token, iter_lengths, text_tokens
from .sorted_runs import assemble, ceil_div, count_piece_runs, merge_rows, peak_rss_bytes

DEFAULT_SHARD_TOKENS = 2_000_000
CONNECT_TIMEOUT = 10  # seconds to reach a scheduler, and to wait for its first worker
INSTALL_HINT = "pip install 'lmkit[dask]'"


def require_dask() -> None:
    """One-line refusal when Dask (with distributed) is not installed."""
    try:
        import dask  # noqa: F401
        import distributed  # noqa: F401
    except ImportError:
        raise UsageError(f"--engine dask needs Dask, which is not installed: {INSTALL_HINT}") from None


def check_scheduler(value: str | None) -> str:
    """'local', 'local:N', 'tcp://host:port' or 'host:port' -> the normalised address (checked, not dialled)."""
    require_dask()
    cores = os.cpu_count() or 1
    text = (value or "local").strip()
    m = re.fullmatch(r"local(?::(\d+))?", text)
    if m:
        n = int(m[1]) if m[1] else cores
        if not 1 <= n <= 1024:
            raise UsageError(f"--scheduler local:N needs 1 <= N <= 1024 worker processes, got {n}")
        return f"local:{n}"
    if re.fullmatch(r"[a-z][a-z0-9+]*://\S+", text) or re.fullmatch(r"[\w.-]+:\d+", text):
        return text
    raise UsageError(f"--scheduler expects tcp://host:port or local[:N] (a LocalCluster of N worker processes), "
                     f"got {value!r}")


# -- what travels to the workers ------------------------------------------------------------------------
@dataclass
class TokenFileSlice:
    """Sequences [start, stop) of a token file, named by its files: what a worker needs to map them."""

    ids_path: str
    ids_dtype: str
    offsets_path: str
    start: int
    stop: int

    def sequences(self):
        from ...data.sequences import SequenceView

        ids = np.memmap(self.ids_path, dtype=np.dtype(self.ids_dtype), mode="r")
        offsets = np.memmap(self.offsets_path, dtype=np.int64, mode="r")
        return list(SequenceView(ids, offsets, self.start, self.stop))


def _mapped_file(array) -> str | None:
    """The file behind a (view of a) np.memmap, or None."""
    while array is not None:
        if isinstance(array, np.memmap) and getattr(array, "filename", None) and not array.offset:
            return str(array.filename)
        array = getattr(array, "base", None)
    return None


def token_file_slice(sequences, start: int, stop: int) -> TokenFileSlice | None:
    """A by-reference shard of a token file's SequenceView, or None for anything else (sent by value)."""
    try:
        from ...data.sequences import SequenceView
    except ImportError:
        return None
    if not isinstance(sequences, SequenceView):
        return None
    ids, offsets = getattr(sequences, "_ids", None), getattr(sequences, "_offsets", None)
    ids_path, offsets_path = _mapped_file(ids), _mapped_file(offsets)
    if ids_path is None or offsets_path is None or offsets.dtype != np.int64:
        return None
    return TokenFileSlice(ids_path, ids.dtype.str, offsets_path, sequences.start + start, sequences.start + stop)


@dataclass
class Shard:
    """Consecutive training sequences for one map task: by value (ids) or by reference (a token file)."""

    first: bool  # the shard starts the text (stream context: it holds the one <s>)
    carry: np.ndarray  # stream context: the last N-1 tokens of the text before the shard (else empty)
    ids: np.ndarray | None = None  # the sequences' ids back to back (int32)
    lengths: np.ndarray | None = None
    source: TokenFileSlice | None = None

    def sequences(self) -> list[np.ndarray]:
        if self.source is not None:
            return self.source.sequences()
        ids = self.ids.astype(np.int64)
        return np.split(ids, np.cumsum(self.lengths)[:-1]) if self.lengths.size else []


@dataclass
class ShardCounts:
    """A map or reduce result: unigram counts, per order n >= 2 a sorted run (rows, counts), totals."""

    unigrams: np.ndarray
    runs: list[tuple[np.ndarray, np.ndarray]]
    tokens: int
    units: int


def count_shard(shard: Shard, vocab_size: int, order: int, context: str) -> ShardCounts:
    """Map: the shard's n-grams (those ending inside it) as sorted runs, by sorted_runs.count_piece."""
    seqs = shard.sequences()
    if context == "stream":
        body, _ = flatten(seqs, "stream")
        if not shard.first:
            body = body[1:]  # the <s> of the text belongs to the first shard only
        toks = np.concatenate([shard.carry.astype(np.int64), body])
        depth = np.arange(toks.size, dtype=np.int64)
        start, units, tokens = int(shard.carry.size), int(shard.first), int(body.size - shard.first)
    else:
        toks, depth = flatten(seqs, "sentence")
        start, units, tokens = 0, len(seqs), int(toks.size - len(seqs))
    unigrams, runs = count_piece_runs(toks, depth, start, vocab_size, order)
    return ShardCounts(unigrams, runs, tokens, units)


def merge_shards(a: ShardCounts, b: ShardCounts) -> ShardCounts:
    """Reduce: two shards' counts as one (sorted runs merged, counts and totals summed)."""
    return ShardCounts(a.unigrams + b.unigrams, [merge_rows(x, y) for x, y in zip(a.runs, b.runs)],
                       a.tokens + b.tokens, a.units + b.units)


# -- planning shards on the client --------------------------------------------------------------------
def plan_shards(sequences: Sequence, target_tokens: int) -> list[tuple[int, int]]:
    """(start, stop) sequence ranges of about `target_tokens` tokens each (whole sequences)."""
    bounds = [0]
    used = 0
    at = 0
    for lengths in iter_lengths(sequences):
        for length in (lengths + 1).tolist():
            if used and used + length > target_tokens:
                bounds.append(at)
                used = 0
            used += length
            at += 1
    if bounds[-1] != at:
        bounds.append(at)
    return list(zip(bounds[:-1], bounds[1:]))


def stream_carry(sequences: Sequence, start: int, keep: int) -> np.ndarray:
    """The last `keep` tokens of the stream `<s> s1 </s> s2 </s> ..` before sequence `start`."""
    parts: list[np.ndarray] = []
    have = 0
    i = start - 1
    while have < keep and i >= 0:
        piece = np.append(np.asarray(sequences[i], dtype=np.int64), EOS)
        parts.append(piece)
        have += piece.size
        i -= 1
    if have < keep:  # reached the start of the text: its <s> comes first
        parts.append(np.array([BOS], dtype=np.int64))
    tail = np.concatenate(parts[::-1]) if parts else np.zeros(0, np.int64)
    return tail[max(tail.size - keep, 0):]


def make_shards(sequences: Sequence, ranges: list[tuple[int, int]], context: str, order: int) -> Iterator[Shard]:
    for a, b in ranges:
        carry = stream_carry(sequences, a, order - 1) if context == "stream" and a > 0 else np.zeros(0, np.int64)
        source = token_file_slice(sequences, a, b)
        if source is not None:
            yield Shard(first=a == 0, carry=carry, source=source)
            continue
        seqs = list(sequences[a:b])
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        ids = np.concatenate([np.asarray(s) for s in seqs]) if seqs else np.zeros(0)
        dtype = np.int32 if not ids.size or ids.max() <= np.iinfo(np.int32).max else np.int64
        yield Shard(first=a == 0, carry=carry, ids=ids.astype(dtype), lengths=lengths)


# -- the cluster ----------------------------------------------------------------------------------------
@contextmanager
def connect(scheduler: str, log: Callable[[str], None]):
    """A distributed Client for `scheduler`; a LocalCluster for local:N. Closed however the block ends."""
    import logging

    import dask
    from distributed import Client, LocalCluster

    if scheduler.startswith("local:"):
        n = int(scheduler.split(":", 1)[1])
        log(f"dask: starting a LocalCluster of {n} worker process{'es' if n > 1 else ''} (1 thread each)")
        scratch = str(scratch_dir(tempfile.gettempdir(), "lmkit-dask-", log))  # Dask's scratch (not dask-scratch-space)
        try:
            try:
                with dask.config.set({"temporary-directory": scratch}):
                    cluster = LocalCluster(n_workers=n, processes=True, threads_per_worker=1,
                                           dashboard_address=None, silence_logs=logging.ERROR,
                                           local_directory=scratch)
            except Exception as exc:  # ports, process limits, a __main__ that cannot be re-imported by spawn
                raise LmkitError(f"could not start a local Dask cluster of {n} workers: "
                                 f"{_first_line(exc)}") from None
            try:
                with Client(cluster) as client:
                    yield client
            finally:
                cluster.close()
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as exc:
        raise LmkitError(f"cannot reach the Dask scheduler at {scheduler}: {_first_line(exc)}") from None
    try:
        try:
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise LmkitError(f"the Dask scheduler at {scheduler} has no workers ({_first_line(exc)})") from None
        yield client
    finally:
        client.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def count_dask(sequences: Sequence, vocab_size: int, order: int, context: str, scheduler: str,
               memory: int | None = None, log: Callable[[str], None] = lambda _: None) -> tuple[NgramCounts, dict]:
    """count_ngrams' result computed on a Dask cluster; (counts, fit_info part)."""
    require_dask()
    total = text_tokens(sequences, context)
    started = time.perf_counter()
    with connect(scheduler, log) as client:
        workers = max(len(client.scheduler_info().get("workers", {})), 1)
        cap = DEFAULT_SHARD_TOKENS if memory is None else max(memory // bytes_per_token(order), 1)
        target = max(min(cap, ceil_div(total, 2 * workers)), 1)
        ranges = plan_shards(sequences, target)
        log(f"dask: {len(ranges):,} shards of about {target:,} tokens on {workers} worker"
            f"{'s' if workers > 1 else ''} at {scheduler}")
        try:
            result = _map_reduce(client, make_shards(sequences, ranges, context, order), vocab_size, order, context)
        except LmkitError:
            raise
        except Exception as exc:  # a worker's error or a lost cluster: one line, not a remote traceback
            raise LmkitError(f"Dask counting failed at {scheduler}: {type(exc).__name__}: "
                             f"{_first_line(exc)}") from None
    counted = time.perf_counter() - started
    start = time.perf_counter()
    counts = assemble(vocab_size, order, result.unigrams, result.runs, result.tokens, result.units)
    info = {"engine": "dask", "scheduler": scheduler, "workers": workers, "shards": len(ranges),
            "shard_tokens": target, "count_seconds": round(counted, 3),
            "index_seconds": round(time.perf_counter() - start, 3), "peak_rss_bytes": peak_rss_bytes()}
    if memory is not None:
        info["memory_bytes"] = memory
    return counts, info


def _map_reduce(client, shards: Iterator[Shard], vocab_size: int, order: int, context: str) -> ShardCounts:
    """Submit one map task per shard (scattered first, so the task graph stays small), then merge the
    results pairwise until one is left (a binary tree: log2(shards) rounds, all on the workers)."""
    futures = []
    for shard in shards:
        data = client.scatter(shard, hash=False)
        futures.append(client.submit(count_shard, data, vocab_size, order, context, pure=False))
    if not futures:
        futures.append(client.submit(count_shard, Shard(True, np.zeros(0, np.int64), np.zeros(0, np.int32),
                                                        np.zeros(0, np.int64)), vocab_size, order, context))
    while len(futures) > 1:
        paired = [client.submit(merge_shards, futures[i], futures[i + 1], pure=False)
                  for i in range(0, len(futures) - 1, 2)]
        if len(futures) % 2:
            paired.append(futures[-1])
        futures = paired
    return futures[0].result()
