"""The out-of-core merge: chunk-local ids become final ids through per-chunk id maps, never by searching.

Each counted chunk spills, per order n >= 2, its distinct n-grams in key order as int32 rows
(w1, local id of the suffix w2..wn, local id of the prefix w1..w(n-1), count); a local id is a row number
of the same chunk's run one order down (sorted_runs.count_piece). Orders are merged bottom up, as lmplz
does it, with an *id map* per order: the final id of every spilled row.

- Keys of order n: a row's key is final_id(suffix) * V + w1, final_id being order n-1's id map over the
  chunk's rows. Local suffix ids never decrease down a run and the map increases, so a block of rows
  reads one range of the map, and the mapped keys come out sorted.
- The k-way merge (sorted_runs.Merger) records each row's final position: order n's id map.
- Prefix ids (ctx) of order n: ctx[final position of a row] = final_id(its local prefix), one chunk at a
  time (a chunk's map one order down has at most as many entries as the chunk has tokens).

So the merge is sequential reads, range reads and one gather and scatter per spilled row. The former way,
n-2 binary searches per row into the final tables, slowed down as those tables outgrew the CPU caches:
1.15 s per million tokens at 1M, 4.6 s at 100M.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .counts import NgramCounts, NgramIndex
from .sorted_runs import WORD, Blocks, DiskRange, IdMap, Merger, Piece, RunFile, SpillDir, gather_sorted

FIRST, SUFFIX, PREFIX, COUNT = range(4)  # columns of a spilled row


@dataclass
class ChunkRuns:
    """What the counting phase spilled: one int32 table per order, and each chunk's row range in it."""

    spill: SpillDir
    order: int
    files: dict[int, RunFile] = field(default_factory=dict)
    ranges: dict[int, list[tuple[int, int]]] = field(default_factory=dict)  # ranges[n][chunk] = (start, stop)

    def __post_init__(self) -> None:
        for n in range(2, self.order + 1):
            self.files[n] = self.spill.new_file(f"o{n}-runs", 4, WORD)
            self.ranges[n] = []

    def add(self, piece: Piece) -> int:
        """Spill one chunk's n-grams of one order (every chunk adds every order); rows written."""
        table = np.empty((piece.counts.size, 4), dtype=WORD)
        for column, values in ((FIRST, piece.first), (SUFFIX, piece.suffix), (PREFIX, piece.prefix),
                               (COUNT, piece.counts)):
            table[:, column] = values  # all below 2**31: word ids, row numbers and counts of one chunk
        self.ranges[piece.n].append(self.files[piece.n].append(table))
        return int(table.shape[0])

    def finish(self) -> None:
        for file in self.files.values():
            self.spill.finish(file)

    def spilled_bytes(self) -> int:
        return sum(file.nbytes for file in self.files.values())


@dataclass
class ChunkRun(DiskRange):
    """One chunk's n-grams of order n as a merge input: rows [start, stop) of the order's table."""

    vocab_size: int
    ids: IdMap  # order n's id map: the merge records here where each row goes
    lower: IdMap | None  # order n-1's id map (None at n = 2: suffixes and prefixes are word ids)
    lower_start: int = 0  # this chunk's first row in order n-1's table (and map)
    lower_rows: int = 0

    def key_blocks(self, rows: int) -> Blocks:
        for _, table in self.tables(rows):
            suffix = table[:, SUFFIX].astype(np.int64)
            if self.lower is not None:
                suffix = gather_sorted(self.lower, suffix + self.lower_start, rows)
            keys = suffix * self.vocab_size + table[:, FIRST]
            counts = table[:, COUNT].astype(np.int64)
            del table, suffix  # a generator keeps its locals alive across the yield
            yield keys, counts

    def write_prefix_ids(self, ctx: np.ndarray, rows: int) -> None:
        """ctx[final position of each row] = final id of its prefix (order n >= 3)."""
        final = self.lower.read(self.lower_start, self.lower_rows)  # the chunk's (n-1)-grams' final ids
        for i, table in self.tables(rows):
            ctx[self.ids.read(i, table.shape[0])] = final[table[:, PREFIX]]


def assemble_spilled(vocab_size: int, order: int, unigrams: np.ndarray, chunks: ChunkRuns, merger: Merger,
                     tokens: int, units: int) -> NgramCounts:
    """NgramCounts equal to count_ngrams' from the unigram counts and every chunk's spilled runs."""
    V = int(vocab_size)
    spill = chunks.spill
    keys = [np.arange(V, dtype=np.int64)]
    counts = [np.asarray(unigrams, dtype=np.int64)]
    ctx = [np.zeros(V, dtype=np.int64)]
    lower: IdMap | None = None
    for n in range(2, order + 1):
        ids = spill.new_idmap(f"o{n}")
        runs = []
        for chunk, (start, stop) in enumerate(chunks.ranges[n]):
            if stop > start:
                below = (0, 0) if n == 2 else chunks.ranges[n - 1][chunk]
                runs.append(ChunkRun(chunks.files[n], start, stop, V, ids, lower, below[0], below[1] - below[0]))
        k, c = merger.merge(runs, f"o{n}")
        keys.append(k)
        counts.append(c)
        if n == 2:
            ctx.append(k % V)  # the prefix of w1 w2 is the word w1
        else:
            prefix = np.empty(k.size, dtype=np.int64)
            for run in runs:
                run.write_prefix_ids(prefix, merger.block(1))
            ctx.append(prefix)
            spill.release(lower)
        chunks.files[n].remove()
        lower = ids
    if lower is not None:
        spill.release(lower)
    return NgramCounts(NgramIndex(V, keys), counts, ctx, int(tokens), int(units))
