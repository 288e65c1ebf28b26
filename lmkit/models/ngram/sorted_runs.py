"""Sorted runs of n-gram counts: count a piece of text, spill it, k-way merge runs.

The out-of-core path (external.py, chunk_merge.py) and the Dask path (dask_engine.py) both count pieces
of the text with `count_piece`, whose n-grams of each order n >= 2 come out in **reverse lexicographic
order** (by wn, then w(n-1), ..., then w1). That order is exactly the key order of counts.NgramIndex
(key = id(w2..wn) * V + w1, ids being ranks in that order), so a piece's n-grams are a *sorted run*:

- out of core, a run keeps piece-local ids (suffix and prefix as row numbers one order down) and
  chunk_merge maps them to final ids through id maps (`IdMap`) that the merge of the order below wrote;
- on Dask, runs are word rows, merged on workers with `merge_rows`; the client maps them to final keys
  with binary searches (`RowsToKeys`, `prefix_ids`) in `assemble`;
- runs of keys merge with a vectorised k-way merge that holds one bounded block per run (`Merger`), and
  can record where each input row lands (`PositionSink`).

On disk (`RunFile`, `IdMap`) runs are row ranges of plain files, appended or written at known rows and
read back with positional reads: never unpickled, never memory-mapped (so a merge's resident memory is
its read buffers, not the page cache of every run it touches).
"""

from __future__ import annotations

import io
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import numpy as np

from .counts import NgramCounts, NgramIndex, find, sorted_and_positions, unique_counts

# Word ids are stored as int32 in runs (half the bytes of int64); vocabularies are far below 2**31.
WORD = np.int32

Blocks = Iterator[tuple[np.ndarray, np.ndarray]]


# -- counting a piece ---------------------------------------------------------------------------------
class Piece(NamedTuple):
    """A piece's distinct n-grams of one order n >= 2 in key order, with *piece-local* ids.

    Row i is the piece's i-th n-gram w1..wn in key order: `first` = w1, `suffix` = local id (row number at
    order n-1) of w2..wn, `prefix` = local id of w1..w(n-1) (at n = 2 both are word ids, as order-1 ids
    are), `counts` = its count. `suffix` never decreases down the rows (the key is suffix * V + first)."""

    n: int
    first: np.ndarray
    suffix: np.ndarray
    prefix: np.ndarray
    counts: np.ndarray


def count_piece(toks: np.ndarray, depth: np.ndarray, start: int, vocab_size: int,
                order: int) -> Iterator[np.ndarray | Piece]:
    """Count the n-grams of orders 1..order that end at a position >= `start` of `toks`.

    Yields the (V,) unigram counts, then a Piece per order n = 2..order. A generator, so a caller can
    spill each order before the next is built. `depth` is counts.flatten()'s: tokens of the same unit
    before each position, so an n-gram ending at j lies inside one unit iff depth[j] >= n-1. Positions
    before `start` are context carried over from the previous piece (stream context): n-grams ending there
    get local ids (so every prefix has one) with count 0; they were counted by an earlier piece, so they
    exist in the whole text. Same algorithm as count_ngrams (one sort per order over n-gram end
    positions), with piece-local ids."""
    V = int(vocab_size)
    toks = np.asarray(toks, dtype=np.int64)
    if toks.size and (toks.min() < 0 or toks.max() >= V):
        raise ValueError("token id outside the vocabulary")
    yield np.bincount(toks[start:], minlength=V).astype(np.int64)
    rid = toks  # local id of the (n-1)-gram ending at each position (order 1: the word)
    ends = np.flatnonzero(depth >= 1)
    for n in range(2, order + 1):
        ends = ends[depth[ends] >= n - 1]
        key = rid[ends] * V + toks[ends - (n - 1)]
        uniq, inv, cnt = unique_counts(key)
        del key
        if start:  # only n-grams ending at or after `start` count
            cnt = np.bincount(inv[ends >= start], minlength=uniq.size)
        prefix = np.empty(uniq.size, dtype=np.int64)
        prefix[inv] = rid[ends - 1]  # every occurrence of a type writes the same prefix id
        yield Piece(n, uniq % V, uniq // V, prefix, cnt.astype(np.int64))
        del uniq, prefix
        if n < order:
            rid = np.full(toks.size, -1, dtype=np.int64)
            rid[ends] = inv
        del inv, cnt


def count_piece_runs(toks: np.ndarray, depth: np.ndarray, start: int, vocab_size: int,
                     order: int) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """count_piece as word rows: (unigram counts, [(rows, counts) for orders 2..order]), where rows are the
    (m, n) int32 word ids w1..wn of the counted n-grams in key order (what a Dask reduce merges)."""
    pieces = count_piece(toks, depth, start, vocab_size, order)
    unigrams = next(pieces)
    runs = []
    words = None  # (m, n-1) word rows of every local (n-1)-gram, count 0 ones included: suffixes index them
    for piece in pieces:
        rest = piece.suffix.astype(WORD)[:, None] if words is None else words[piece.suffix]
        words = np.column_stack([piece.first.astype(WORD), rest])
        kept = piece.counts > 0
        runs.append((words[kept], piece.counts[kept]))
    return unigrams, runs


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

    Chunk files (counted pieces) are int32 (rows, 4): chunk_merge's (w1, local suffix id, local prefix
    id, count), all below 2**31 since a chunk is. Key files (merge passes) are int64 (rows, 2): key, count.
    Rows are appended, then `finish` writes the true shape into the header (numpy pads .npy headers so the
    first dimension can grow in place), so the file is a valid .npy that np.load(allow_pickle=False)
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
        if table.size:  # (a view with a zero in its shape cannot be cast to bytes)
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
        return _pread(self.fh.fileno(), np.empty((count, self.width), dtype=self.dtype),
                      self.header + start * self.row_bytes, self.path)

    @property
    def nbytes(self) -> int:
        return self.header + self.rows * self.row_bytes

    def remove(self) -> None:
        self.fh.close()
        self.path.unlink(missing_ok=True)


def _pread(fd: int, out: np.ndarray, offset: int, path: Path) -> np.ndarray:
    """Fill `out` from byte `offset` of an open spill file (a positional read: no memory map)."""
    if out.size and os.preadv(fd, [memoryview(out).cast("B")], offset) != out.nbytes:
        raise ValueError(f"{path}: truncated spill file")
    return out


class IdMap:
    """The final id of every row of a spill table: row i -> int64 at byte 8*i of a raw private file.

    A merge writes it as it places rows (per run in row order, so each run's writes are sequential);
    readers take ranges of it (`gather_sorted`). Never memory-mapped, for the reason RunFile is not."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        self.rows = 0

    def write(self, row: int, ids: np.ndarray) -> None:
        data = memoryview(np.ascontiguousarray(ids, dtype=np.int64)).cast("B")
        at = row * 8
        while data:
            done = os.pwrite(self.fd, data, at)
            data, at = data[done:], at + done
        self.rows = max(self.rows, row + int(ids.size))

    def read(self, row: int, count: int) -> np.ndarray:
        return _pread(self.fd, np.empty(count, dtype=np.int64), row * 8, self.path)

    @property
    def nbytes(self) -> int:
        return self.rows * 8

    def remove(self) -> None:
        os.close(self.fd)
        self.path.unlink(missing_ok=True)


def gather_sorted(ids: IdMap, rows: np.ndarray, window: int) -> np.ndarray:
    """ids[rows] for non-decreasing `rows`, reading the map in ranges of at most `window` entries."""
    out = np.empty(rows.size, dtype=np.int64)
    i = 0
    while i < rows.size:
        lo = int(rows[i])
        j = int(rows.searchsorted(lo + max(window, 1), side="left"))
        out[i:j] = ids.read(lo, int(rows[j - 1]) - lo + 1)[rows[i:j] - lo]
        i = j
    return out


class PositionSink:
    """Records where a merge puts each row of one run: positions arrive in row order, a few per merge
    step, and are written to the run's IdMap in batches of `batch` rows."""

    def __init__(self, ids: IdMap, row: int, batch: int):
        self.ids, self.row, self.batch = ids, int(row), int(batch)
        self.parts: list[np.ndarray] = []
        self.held = 0

    def __call__(self, positions: np.ndarray) -> None:
        self.parts.append(positions)
        self.held += positions.size
        if self.held >= self.batch:
            self.flush()

    def flush(self) -> None:
        if self.parts:
            data = np.concatenate(self.parts)
            self.ids.write(self.row, data)
            self.row += int(data.size)
            self.parts, self.held = [], 0


@dataclass
class DiskRange:
    """A sorted run on disk: rows [start, stop) of a RunFile."""

    file: RunFile
    start: int
    stop: int

    @property
    def length(self) -> int:
        return self.stop - self.start

    def tables(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, table) for each block of at most `rows` rows, in order."""
        for i in range(self.start, self.stop, rows):
            yield i, self.file.read(i, min(rows, self.stop - i))


@dataclass
class KeyRun(DiskRange):
    """A merge pass's output run: int64 (key, count) rows. `ids`, when set, is the IdMap (same rows as the
    file) where the next merge records each row's position."""

    ids: IdMap | None = None

    def key_blocks(self, rows: int) -> Blocks:
        for _, table in self.tables(rows):
            yield np.ascontiguousarray(table[:, 0]), np.ascontiguousarray(table[:, 1])


class SpillDir:
    """The private spill folder: creates RunFiles in it and counts what went to disk."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.files = 0
        self.bytes = 0

    def new_file(self, name: str, width: int, dtype) -> RunFile:
        self.files += 1
        return RunFile(self.root / f"{name}.npy", width, dtype)

    def new_idmap(self, name: str) -> IdMap:
        self.files += 1
        return IdMap(self.root / f"{name}-ids.bin")

    def finish(self, file: RunFile) -> None:
        file.finish()
        self.bytes += file.nbytes

    def release(self, ids: IdMap) -> None:
        """Delete an id map, counting what it wrote."""
        self.bytes += ids.nbytes
        ids.remove()


# -- merging --------------------------------------------------------------------------------------------
class RowsToKeys:
    """Map word rows of order n to their final int64 keys, given the final keys of orders 1..n-1.

    key(w1..wn) = id(w2..wn) * V + w1 and id(w2..wn) is found right to left: id(wn) = wn, then
    id(wk..wn) = position of id(w(k+1)..wn) * V + wk in the keys of order n-k+1. Monotone, so a sorted run
    stays sorted. Every suffix exists: it was counted at the same position as the n-gram. (The Dask path's
    mapping: its rows carry words, not chunk-local ids.)"""

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


Sink = Callable[[np.ndarray], None]


def merge_blocks(sources: list[Blocks], base: int = 0, sinks: list[Sink | None] | None = None) -> Blocks:
    """Vectorised k-way merge of sorted (keys, counts) block streams, equal keys summed.

    Each step emits every key <= the smallest *last key* of the current heads: nothing <= that bound can
    come later (keys within a stream are unique and increasing). A stream's head is the rest of its
    block, topped up to at least half a block (`_top_up`), so at most 1.5 blocks per stream are held and
    the stream holding the bound gives half a block or more to every step. With `sinks`,
    sinks[i] receives, in order, the output position (counted from `base`) of every key stream i gave."""
    heads = [next(src, None) for src in sources]
    full = [0 if h is None else h[0].size for h in heads]  # each stream's block size
    emitted = int(base)
    while any(h is not None for h in heads):
        live = [i for i, h in enumerate(heads) if h is not None]
        lasts = [heads[i][0][-1] for i in live if heads[i][0].size]
        bound = min(lasts) if lasts else None
        keys, counts, taken = [], [], []
        for i in live:
            k, c = heads[i]
            cut = k.size if bound is None else int(k.searchsorted(bound, side="right"))
            keys.append(k[:cut])
            counts.append(c[:cut])
            taken.append((i, cut))
            heads[i] = _top_up((k[cut:], c[cut:]), sources[i], full[i])
        k = np.concatenate(keys)
        c = np.concatenate(counts)
        if k.size == 0:
            continue
        k, perm = sorted_and_positions(k)  # k is this block's own concatenation: sorted in place, ties in order
        c = c[perm]
        new = np.ones(k.size, dtype=bool)
        new[1:] = k[1:] != k[:-1]
        starts = np.flatnonzero(new)
        if sinks is not None:
            where = np.empty(k.size, dtype=np.int64)
            where[perm] = np.cumsum(new) - 1 + emitted
            at = 0
            for i, cut in taken:
                if cut and sinks[i] is not None:
                    sinks[i](where[at:at + cut])
                at += cut
        emitted += int(starts.size)
        yield k[starts], np.add.reduceat(c, starts)


def _top_up(head: tuple[np.ndarray, np.ndarray], source: Blocks, block: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The rest of a stream's block, topped up with its next block while under half a block (None when the
    stream is used up). Every stream then holds at least half a block beyond each bound, so a merge step
    moves about half a block per stream; refilling only the block that ran out would move one block per
    step in all, and with hundreds of runs the merge would be all per-step overhead."""
    while head[0].size * 2 < block:
        more = next(source, None)
        if more is None:
            return head if head[0].size else None
        head = (np.concatenate([head[0], more[0]]), np.concatenate([head[1], more[1]]))
    return head


@dataclass
class MergeStats:
    passes: int = 0  # merge passes that wrote intermediate runs (0: every order merged in one pass)


MIN_BLOCK = 256  # rows per read buffer below which a merge step is all overhead
MAX_FAN_IN = 256  # runs merged at once: more means smaller read buffers and more Python work per merge step


@dataclass
class Merger:
    """Merges sorted runs of one order into final sorted keys and counts within a budget of rows in memory.

    A run has `length`, `key_blocks(rows)` (its sorted keys and counts, a block at a time), and `ids` and
    `start`: when `ids` is an IdMap, the merge records there, at rows start.., the final position of each
    of the run's rows (the out-of-core path maps later orders' chunk-local ids through it). With k runs,
    each gets a read buffer of budget/k rows; when that would be under MIN_BLOCK, groups of runs are first
    merged into longer runs on disk (the multi-pass merge of an external sort), and positions recorded in
    a pass are composed with the next pass's afterwards."""

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

    def _merge(self, runs: list, base: int) -> Blocks:
        block = self.block(len(runs))
        sinks = [PositionSink(r.ids, r.start, block) if getattr(r, "ids", None) is not None else None for r in runs]
        yield from merge_blocks([r.key_blocks(block) for r in runs], base, sinks)
        for sink in sinks:
            if sink is not None:
                sink.flush()

    def merge(self, runs: list, name: str) -> tuple[np.ndarray, np.ndarray]:
        levels = [list(runs)]
        while len(levels[-1]) > self.fan_in and self.spill is not None:  # an extra pass through the disk
            self.stats.passes += 1
            out = self.spill.new_file(f"{name}-pass{self.stats.passes}", 2, np.int64)
            ids = self.spill.new_idmap(f"{name}-pass{self.stats.passes}")
            merged = []
            for g in range(0, len(levels[-1]), self.fan_in):
                group = levels[-1][g:g + self.fan_in]
                start = out.rows
                for k, c in self._merge(group, base=start):
                    out.append(np.column_stack([k, c]))
                merged.append(KeyRun(out, start, out.rows, ids))
            self.spill.finish(out)
            _remove_pass_files(levels[-1])
            levels.append(merged)
        result = _fill(self._merge(levels[-1], base=0), sum(r.length for r in levels[-1]))
        _remove_pass_files(levels[-1])
        for lower, upper in zip(levels[-2::-1], levels[:0:-1]):  # pass-file rows -> final positions, top down
            for run in lower:
                if getattr(run, "ids", None) is not None:
                    _compose(run.ids, run.start, run.length, upper[0].ids, self.block(1))
        for level in levels[1:]:
            self.spill.release(level[0].ids)
        return result


def _compose(ids: IdMap, start: int, length: int, upper: IdMap, block: int) -> None:
    """ids[start:start+length] = upper[ids[...]]: a run's positions in a pass file become final positions
    (positions within a run increase, so the upper map is read in ranges)."""
    for i in range(start, start + length, block):
        ids.write(i, gather_sorted(upper, ids.read(i, min(block, start + length - i)), block))


def _remove_pass_files(runs: list) -> None:
    for file in {id(r.file): r.file for r in runs if isinstance(r, KeyRun)}.values():
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
def assemble(vocab_size: int, order: int, unigrams: np.ndarray, runs: list[tuple[np.ndarray, np.ndarray]],
             tokens: int, units: int, block: int = 1 << 20) -> NgramCounts:
    """NgramCounts equal to count_ngrams' from unigram counts and one sorted run of word rows per order
    2..order (the Dask path's reduced result). Orders are mapped bottom up: order n's keys need the final
    keys below it (RowsToKeys)."""
    V = int(vocab_size)
    keys = [np.arange(V, dtype=np.int64)]
    counts = [np.asarray(unigrams, dtype=np.int64)]
    for rows, c in runs:
        keys.append(RowsToKeys(keys, V)(rows))
        counts.append(np.asarray(c, dtype=np.int64))
    ctx = [np.zeros(V, dtype=np.int64)]
    for n in range(2, order + 1):
        ctx.append(prefix_ids(keys, ctx, n, V, block))
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
        out[i:i + part.size] = find(keys[n - 2], query)  # find sorts large query sets itself
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
