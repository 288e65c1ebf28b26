"""Sorted runs of n-gram counts: count a piece of text, spill it, k-way merge runs, build the final index.

The out-of-core path (external.py) and the Dask path (dask_engine.py) both produce, per order n >= 2,
*runs*: the distinct n-grams of some piece of the text as word-id rows (w1..wn) with their counts, sorted
in **reverse lexicographic order** (by wn, then w(n-1), ..., then w1). That order is exactly the key order
of counts.NgramIndex (key = id(w2..wn) * V + w1, ids being ranks in the order below), so:

- a piece counted with the in-memory algorithm comes out already sorted (`count_piece`);
- once the final keys of orders 1..n-1 exist, every row of order n maps to its final int64 key with
  n-2 binary searches (`RowsToKeys`), and the mapping keeps the run sorted;
- runs of keys merge with a vectorised k-way merge that holds one bounded block per run (`Merger`);
- the prefix ids (`ctx`) follow from the final keys alone (`prefix_ids`), equal to count_ngrams' ones.

On disk (`RunFile`) the runs of one order are row ranges of one plain .npy table, appended chunk by chunk
and read back with positional reads: never unpickled, never memory-mapped (so a merge's resident memory
is its read buffers, not the page cache of every run it touches), one file per order and merge pass.
"""

from __future__ import annotations

import io
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .counts import NgramCounts, NgramIndex, find

# Word ids are stored as int32 in runs (half the bytes of int64); vocabularies are far below 2**31.
WORD = np.int32

Blocks = Iterator[tuple[np.ndarray, np.ndarray]]


# -- counting a piece ---------------------------------------------------------------------------------
def count_piece(toks: np.ndarray, depth: np.ndarray, start: int, vocab_size: int,
                order: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Count the n-grams of orders 1..order that end at a position >= `start` of `toks`.

    Yields (1, arange(V), unigram counts), then (n, rows, counts) for n = 2..order: the distinct n-grams as
    (m, n) int32 word rows in key (reverse-lexicographic) order with their int64 counts. A generator, so a
    caller can spill each order before the next is built. `depth` is counts.flatten()'s: tokens of the
    same unit before each position, so an n-gram ending at j lies inside one unit iff depth[j] >= n-1.
    Positions before `start` are context carried over from the previous piece (stream context): they
    complete n-grams but are not counted again. Same algorithm as count_ngrams (one np.unique per order
    over n-gram end positions), with piece-local ids."""
    V = int(vocab_size)
    toks = np.asarray(toks, dtype=np.int64)
    if toks.size and (toks.min() < 0 or toks.max() >= V):
        raise ValueError("token id outside the vocabulary")
    yield 1, np.arange(V, dtype=np.int64), np.bincount(toks[start:], minlength=V).astype(np.int64)
    rid = toks  # local id of the (n-1)-gram ending at each position (order 1: the word)
    words = None  # (m, n-1) rows of the local (n-1)-grams, in local id order
    ends = np.flatnonzero(depth[start:] >= 1) + start
    for n in range(2, order + 1):
        ends = ends[depth[ends] >= n - 1]
        key = rid[ends] * V + toks[ends - (n - 1)]
        uniq, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
        del key
        rest = (uniq // V).astype(WORD)[:, None] if words is None else words[uniq // V]
        words = np.column_stack([(uniq % V).astype(WORD), rest])
        del rest, uniq
        yield n, words, cnt.astype(np.int64)
        if n < order:
            rid = np.full(toks.size, -1, dtype=np.int64)
            rid[ends] = inv.reshape(-1)
        del inv, cnt


def count_piece_runs(toks: np.ndarray, depth: np.ndarray, start: int, vocab_size: int,
                     order: int) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """count_piece collected: (unigram counts, [(rows, counts) for orders 2..order])."""
    pieces = list(count_piece(toks, depth, start, vocab_size, order))
    return pieces[0][2], [(rows, counts) for _, rows, counts in pieces[1:]]


def merge_rows(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Union of two sorted runs of word rows, counts summed, still in key (reverse-lexicographic) order.

    Used where no final keys exist yet (a Dask reduce on a worker): rows are packed into as few int64
    sort keys as their ids' bits allow (`pack_rows`) and sorted stably (timsort sees the two runs)."""
    rows = np.concatenate([a[0], b[0]])
    counts = np.concatenate([a[1], b[1]])
    if rows.shape[0] == 0:
        return rows, counts
    keys = pack_rows(rows)
    perm = np.argsort(keys[0], kind="stable") if len(keys) == 1 else np.lexsort(keys[::-1])
    same = np.ones(rows.shape[0] - 1, dtype=bool)  # row i+1 equals row i (in sorted order)
    for key in keys:
        key = key[perm]
        same &= key[1:] == key[:-1]
    starts = np.flatnonzero(np.concatenate([[True], ~same]))
    return rows[perm[starts]], np.add.reduceat(counts[perm], starts)


def pack_rows(rows: np.ndarray) -> list[np.ndarray]:
    """int64 sort keys, most significant first, whose lexicographic order is the rows' key order.

    Key order compares wn first, then w(n-1), ..., w1; as many ids as fit in 63 bits go into one key."""
    bits = max(int(rows.max()).bit_length(), 1) if rows.size else 1
    per = max(63 // bits, 1)
    columns = [rows[:, j].astype(np.int64) for j in range(rows.shape[1] - 1, -1, -1)]  # wn .. w1
    keys = []
    for i in range(0, len(columns), per):
        key = np.zeros(rows.shape[0], dtype=np.int64)
        for col in columns[i:i + per]:
            key = (key << bits) | col
        keys.append(key)
    return keys


# -- runs on disk ---------------------------------------------------------------------------------------
def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(dtype),
                                               "fortran_order": False, "shape": shape})
    return buf.getvalue()


class RunFile:
    """One plain .npy table on disk holding sorted runs back to back; a run is a range of its rows.

    Rows files (counted pieces) are int32 (rows, n+1): word ids w1..wn, then the count (a piece's counts
    fit int32: a piece is far below 2**31 tokens). Key files (merge outputs) are int64 (rows, 2): final key,
    count. Rows are appended, then `finish` writes the true shape into the header (numpy pads .npy headers
    so the first dimension can grow in place), so the file is a valid .npy that np.load(allow_pickle=False)
    opens. Reads are positional (os.preadv into a fresh buffer): no memory map, so a merge's resident
    memory is its read buffers, not the page cache of every run it touches."""

    def __init__(self, path: Path, width: int, dtype):
        self.path, self.width, self.dtype = Path(path), int(width), np.dtype(dtype)
        self.row_bytes = self.width * self.dtype.itemsize
        self.fh = open(self.path, "w+b")
        self.header = len(_npy_header(self.dtype, (0, self.width)))
        self.fh.write(_npy_header(self.dtype, (0, self.width)))
        self.rows = 0
        self.finished = False

    def append(self, table: np.ndarray) -> tuple[int, int]:
        """Write rows at the end; their (start, stop) row range."""
        table = np.ascontiguousarray(table)
        if table.dtype != self.dtype:
            if table.size and (table.min() < np.iinfo(self.dtype).min or table.max() > np.iinfo(self.dtype).max):
                raise ValueError(f"{self.path.name}: values do not fit {self.dtype}")
            table = table.astype(self.dtype)
        start = self.rows
        self.fh.write(memoryview(table).cast("B"))
        self.rows += int(table.shape[0])
        return start, self.rows

    def finish(self) -> None:
        self.fh.flush()
        head = _npy_header(self.dtype, (self.rows, self.width))
        if len(head) != self.header:  # cannot happen with numpy's padded headers; refuse rather than corrupt
            raise RuntimeError(f"{self.path.name}: .npy header changed size")
        os.pwrite(self.fh.fileno(), head, 0)
        self.finished = True

    def read(self, start: int, count: int) -> np.ndarray:
        out = np.empty((count, self.width), dtype=self.dtype)
        if count and os.preadv(self.fh.fileno(), [memoryview(out).cast("B")],
                               self.header + start * self.row_bytes) != out.nbytes:
            raise ValueError(f"{self.path}: truncated spill file")
        return out

    @property
    def nbytes(self) -> int:
        return self.header + self.rows * self.row_bytes

    def remove(self) -> None:
        self.fh.close()
        self.path.unlink(missing_ok=True)


@dataclass
class DiskRun:
    """One sorted run: rows [start, stop) of a RunFile."""

    file: RunFile
    start: int
    stop: int

    @property
    def is_rows(self) -> bool:  # word rows (a counted piece) or final keys (a merge's output)
        return self.file.dtype != np.int64 or self.file.width != 2

    @property
    def length(self) -> int:
        return self.stop - self.start

    def blocks(self, rows: int) -> Blocks:
        for i in range(self.start, self.stop, rows):
            table = self.file.read(i, min(rows, self.stop - i))
            head = table[:, :-1] if self.is_rows else np.ascontiguousarray(table[:, 0])
            yield head, table[:, -1].astype(np.int64)


@dataclass
class MemoryRun:
    """A sorted run held in memory (a Dask result)."""

    array: np.ndarray  # (m, n) rows or (m,) keys
    counts: np.ndarray
    is_rows: bool = True

    @property
    def length(self) -> int:
        return int(self.counts.size)

    def blocks(self, rows: int) -> Blocks:
        for i in range(0, self.length, rows):
            yield self.array[i:i + rows], self.counts[i:i + rows]


class SpillDir:
    """The private spill folder: creates RunFiles in it and counts what went to disk."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.files = 0
        self.bytes = 0

    def new_file(self, name: str, width: int, dtype) -> RunFile:
        self.files += 1
        return RunFile(self.root / f"{name}.npy", width, dtype)

    def finish(self, file: RunFile) -> None:
        file.finish()
        self.bytes += file.nbytes


# -- merging --------------------------------------------------------------------------------------------
class RowsToKeys:
    """Map word rows of order n to their final int64 keys, given the final keys of orders 1..n-1.

    key(w1..wn) = id(w2..wn) * V + w1 and id(w2..wn) is found right to left: id(wn) = wn, then
    id(wk..wn) = position of id(w(k+1)..wn) * V + wk in the keys of order n-k+1. Monotone, so a sorted run
    stays sorted. Every suffix exists: it was counted at the same position as the n-gram."""

    def __init__(self, keys: list[np.ndarray], vocab_size: int):
        self.keys, self.V = keys, int(vocab_size)

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        n = rows.shape[1]
        ids = rows[:, n - 1].astype(np.int64)
        for k in range(2, n):  # ids of the last k words, order k
            ids = find(self.keys[k - 1], ids * self.V + rows[:, n - k])
        if ids.size and ids.min() < 0:
            raise RuntimeError(f"n-gram suffix missing from order {n - 1}: runs and index disagree")
        return ids * self.V + rows[:, 0]


def _key_blocks(run, rows: int, to_keys: RowsToKeys) -> Blocks:
    for array, counts in run.blocks(rows):
        yield (to_keys(array) if run.is_rows else array), counts


def _merge_blocks(sources: list[Blocks]) -> Blocks:
    """Vectorised k-way merge of sorted (keys, counts) block streams, equal keys summed.

    Each step emits every key <= the smallest *last key* of the current blocks: nothing <= that bound can
    come later (keys within a stream are unique and increasing), and the block holding the bound is used
    up, so every step frees at least one block and at most one block per stream is held."""
    heads = [next(src, None) for src in sources]
    while any(h is not None for h in heads):
        live = [i for i, h in enumerate(heads) if h is not None]
        lasts = [heads[i][0][-1] for i in live if heads[i][0].size]
        bound = min(lasts) if lasts else None
        keys, counts = [], []
        for i in live:
            k, c = heads[i]
            cut = k.size if bound is None else int(k.searchsorted(bound, side="right"))
            keys.append(k[:cut])
            counts.append(c[:cut])
            heads[i] = (k[cut:], c[cut:]) if cut < k.size else next(sources[i], None)
        k = np.concatenate(keys)
        c = np.concatenate(counts)
        if k.size == 0:
            continue
        perm = np.argsort(k, kind="stable")
        k, c = k[perm], c[perm]
        new = np.ones(k.size, dtype=bool)
        new[1:] = k[1:] != k[:-1]
        starts = np.flatnonzero(new)
        yield k[starts], np.add.reduceat(c, starts)


@dataclass
class MergeStats:
    passes: int = 0  # merge passes that wrote intermediate runs (0: every order merged in one pass)


MIN_BLOCK = 256  # rows per read buffer below which a merge step is all overhead
MAX_FAN_IN = 256  # runs merged at once: more means smaller read buffers and more Python work per merge step


@dataclass
class Merger:
    """Merges the runs of one order into final sorted keys and counts within a budget of rows in memory.

    With k runs, each gets a read buffer of budget/k rows; when that would be under MIN_BLOCK, groups of
    runs are first merged into longer runs on disk (the multi-pass merge of an external sort)."""

    rows: int | None = None  # rows of read buffers the budget allows; None: unbounded (one pass, big blocks)
    spill: SpillDir | None = None
    stats: MergeStats = field(default_factory=MergeStats)

    @classmethod
    def for_budget(cls, memory: int | None, spill: SpillDir | None, row_bytes: int) -> "Merger":
        return cls(rows=None if memory is None else max(memory // row_bytes, 2 * MIN_BLOCK), spill=spill)

    @property
    def fan_in(self) -> int:
        return MAX_FAN_IN if self.rows is None else max(2, min(self.rows // MIN_BLOCK, MAX_FAN_IN))

    def block(self, runs: int) -> int:
        return 1 << 20 if self.rows is None else max(MIN_BLOCK, self.rows // max(runs, 1))

    def merge(self, runs: list, to_keys: RowsToKeys, name: str) -> tuple[np.ndarray, np.ndarray]:
        runs = list(runs)
        while len(runs) > self.fan_in and self.spill is not None:  # an extra pass through the disk
            self.stats.passes += 1
            out = self.spill.new_file(f"{name}-pass{self.stats.passes}", 2, np.int64)
            merged = []
            for g in range(0, len(runs), self.fan_in):
                group = runs[g:g + self.fan_in]
                start = out.rows
                for k, c in _merge_blocks([_key_blocks(r, self.block(len(group)), to_keys) for r in group]):
                    out.append(np.column_stack([k, c]))
                merged.append(DiskRun(out, start, out.rows))
            self.spill.finish(out)
            _remove_files(runs)
            runs = merged
        blocks = _merge_blocks([_key_blocks(r, self.block(len(runs)), to_keys) for r in runs])
        result = _fill(blocks, sum(r.length for r in runs))
        _remove_files(runs)
        return result


def _remove_files(runs: list) -> None:
    for file in {id(r.file): r.file for r in runs if isinstance(r, DiskRun)}.values():
        file.remove()


def _fill(blocks: Blocks, upper: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate merged blocks into arrays allocated once at an upper bound of their length and shrunk
    in place at the end: the pages past the true length are never touched, so they never become resident
    (the final tables cost their size once, not twice as a list of blocks plus np.concatenate would)."""
    keys = np.empty(upper, dtype=np.int64)
    counts = np.empty(upper, dtype=np.int64)
    at = 0
    for k, c in blocks:
        keys[at:at + k.size] = k
        counts[at:at + k.size] = c
        at += k.size
    keys.resize(at, refcheck=False)
    counts.resize(at, refcheck=False)
    return keys, counts


# -- the final counts -------------------------------------------------------------------------------------
def assemble(vocab_size: int, order: int, unigrams: np.ndarray, runs: Callable[[int], list], merger: Merger,
             tokens: int, units: int) -> NgramCounts:
    """NgramCounts equal to count_ngrams' from unigram counts and the sorted runs of each order.

    `runs(n)` gives the runs of order n (asked for one order at a time, so a caller can drop them as
    soon as they are merged). Orders are merged bottom up: order n's keys need the final keys below it."""
    V = int(vocab_size)
    keys = [np.arange(V, dtype=np.int64)]
    counts = [np.asarray(unigrams, dtype=np.int64)]
    for n in range(2, order + 1):
        k, c = merger.merge(runs(n), RowsToKeys(keys, V), f"o{n}")
        keys.append(k)
        counts.append(c)
    ctx = [np.zeros(V, dtype=np.int64)]
    for n in range(2, order + 1):
        ctx.append(prefix_ids(keys, ctx, n, V, merger.block(1)))
    return NgramCounts(NgramIndex(V, keys), counts, ctx, int(tokens), int(units))


def prefix_ids(keys: list[np.ndarray], ctx: list[np.ndarray], n: int, V: int, block: int) -> np.ndarray:
    """Id (order n-1) of w1..w(n-1) for every n-gram of order n: NgramIndex.prefix, a block at a time so
    its temporaries stay within the merge budget. prefix(w1..wn) = (w1, prefix(w2..wn)): the id of
    w2..w(n-1) is ctx of the suffix, one order down; every prefix is stored (n-grams are closed under it)."""
    k = keys[n - 1]
    out = np.empty(k.size, dtype=np.int64)
    for i in range(0, k.size, block):
        part = k[i:i + block]
        first = part % V
        if n == 2:
            out[i:i + part.size] = first
            continue
        query = ctx[n - 2][part // V] * V + first  # id of w2..w(n-1) (order n-2), then w1
        perm = np.argsort(query)  # sorted queries sweep the keys in order: several times faster than random
        found = np.empty(query.size, dtype=np.int64)
        found[perm] = find(keys[n - 2], query[perm])
        out[i:i + part.size] = found
    if out.size and out.min() < 0:
        raise RuntimeError(f"an n-gram prefix is missing from order {n - 1}: runs and index disagree")
    return out


def peak_rss_bytes() -> int | None:
    """This process's peak resident set size so far (None where the OS does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS reports bytes, Linux KiB


def current_rss_bytes() -> int | None:
    """This process's resident set size now (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def table_bytes(counts: NgramCounts) -> int:
    """Bytes of the finished count tables (keys, counts and ctx of every order)."""
    return int(sum(a.nbytes for a in counts.index.keys + counts.counts + counts.ctx))


def ceil_div(a: int, b: int) -> int:
    return -(-a // b) if b else 0


def human_bytes(n: float) -> str:
    """1536 -> '1.5K' (binary units, as --memory takes them)."""
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit == "" or n == math.floor(n) else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}T"
