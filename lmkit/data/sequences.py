"""Sequences of ids stored back to back with their offsets: how an encoded text and a token file hold their lines.

One flat array and one offsets array, instead of a Python list of small arrays: a text of 40,000 lines is two
allocations, not 40,000, and everything that needs the whole (counting, scoring, batching) takes it without
joining the pieces again."""

from __future__ import annotations

import operator
from bisect import bisect_left, bisect_right
from collections.abc import Iterator, Sequence

import numpy as np

from ..errors import UsageError
from .vocab import BOS, EOS

ITEM_DTYPE = np.int32  # the dtype of one sequence, as lmkit.data.corpus.encode gives it


def lengths_and_ids(sequences) -> tuple[np.ndarray, np.ndarray]:
    """(ids per sequence, every id back to back); a token file's view gives its mapped ids without a copy (any
    integer dtype: the layouts built from them convert on assignment)."""
    if callable(getattr(sequences, "flat", None)):
        return np.asarray(sequences.lengths(), dtype=np.int64), sequences.flat()
    lens = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    words = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences]) if len(sequences) else \
        np.zeros(0, np.int64)
    return lens, words


def stream_layout(lens: np.ndarray, words: np.ndarray, dtype=np.int64) -> np.ndarray:
    """`<s> s1 </s> s2 </s> ..` from lengths_and_ids' arrays, in one vectorised pass."""
    toks = np.empty(int(lens.sum() + len(lens)) + 1, dtype=dtype)
    toks[0] = BOS
    ends = np.cumsum(lens + 1)  # position of each </s>
    body = np.ones(toks.size, dtype=bool)
    body[0] = False
    body[ends] = False
    toks[ends] = EOS
    toks[body] = words
    return toks


class SequenceView(Sequence):
    """Sequences [start, stop) of ids stored back to back (a token file's memory-mapped ids, or a text just
    encoded), list-like: len, int index, slice (step 1 gives another view), iteration. An item is a fresh 1-D
    int32 array of ids, so a view stands wherever a list of sequences did; nothing is read or copied until an
    item is asked for, and lengths()/flat() give the whole at once (lengths_and_ids, above)."""

    def __init__(self, ids: np.ndarray, offsets: np.ndarray, start: int = 0, stop: int | None = None):
        self._ids = ids
        self._offsets = offsets
        self.start = start
        self.stop = len(offsets) - 1 if stop is None else stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __repr__(self) -> str:
        return f"SequenceView(sequences {self.start}:{self.stop}, {self.num_ids:,} ids)"

    def __getitem__(self, index):
        if isinstance(index, slice):
            lo, hi, step = index.indices(len(self))
            if step == 1:
                return SequenceView(self._ids, self._offsets, self.start + lo, self.start + max(lo, hi))
            return [self[i] for i in range(lo, hi, step)]
        i = operator.index(index)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"sequence index {index} out of range for {len(self)} sequences")
        a, b = self._offsets[self.start + i], self._offsets[self.start + i + 1]
        return self._ids[a:b].astype(ITEM_DTYPE)

    def __iter__(self) -> Iterator[np.ndarray]:
        """Reads about a million ids at a time and splits them, instead of one read per sequence."""
        off = self._offsets
        i = self.start
        while i < self.stop:
            j = int(np.searchsorted(off, off[i] + (1 << 20), side="right")) - 1
            j = min(max(j, i + 1), self.stop)
            base = off[i]
            flat = self._ids[base:off[j]].astype(ITEM_DTYPE)
            yield from np.split(flat, off[i + 1:j] - base)
            i = j

    @property
    def num_ids(self) -> int:
        """Ids in these sequences (without </s>)."""
        return int(self._offsets[self.stop] - self._offsets[self.start])

    @property
    def num_tokens(self) -> int:
        """Scored tokens: the ids plus one </s> per sequence."""
        return self.num_ids + len(self)

    def lengths(self) -> np.ndarray:
        """Ids per sequence (int64)."""
        return np.diff(self._offsets[self.start:self.stop + 1])

    def flat(self) -> np.ndarray:
        """Every id of these sequences back to back: a slice of the mapped file (its uint16/uint32), not a copy."""
        return self._ids[self._offsets[self.start]:self._offsets[self.stop]]

    def stream(self) -> np.ndarray:
        """The stream-context layout of these sequences, equal to batching.stream_ids(view): one <s>, then
        every sequence followed by </s> (int64), built in one vectorised pass."""
        return stream_layout(self.lengths(), self.flat())

    def stream_slice(self, lo: int, hi: int) -> np.ndarray:
        """Positions [lo, hi) of stream(), reading only the sequences they cover: a data-parallel rank's
        rows of the stream-context batch layout are one contiguous stretch, so it reads just that."""
        total = 1 + self.num_tokens
        lo, hi = max(0, lo), min(hi, total)
        if hi <= lo:
            return np.zeros(0, dtype=np.int64)
        # stream position of sequence k's first id is 1 + (scored tokens before k within this view)
        first = self._position(self.start)
        starts = range(self.start, self.stop + 1)
        a = self.start + max(bisect_right(starts, first + lo - 1, key=self._position) - 1, 0)
        b = self.start + bisect_left(starts, first + hi - 1, key=self._position)
        part = SequenceView(self._ids, self._offsets, a, min(max(b, a + 1), self.stop)).stream()
        if a == self.start:
            return part[lo:hi]
        p0 = 1 + self._position(a) - first  # stream position of sequence a's first id (part[1])
        return part[1:][lo - p0:hi - p0]

    def _position(self, j: int) -> int:
        """Scored tokens (ids and </s>) before sequence j of the file."""
        return int(self._offsets[j]) + j

    def shard(self, rank: int, world: int) -> "SequenceView":
        """Rank `rank` of `world`'s contiguous part: each cut falls at the sequence boundary nearest to an
        equal share of scored tokens, so parts differ by at most the longest sequence (a part may be empty
        when there are fewer sequences than ranks). Together the parts are the view, in order."""
        if world < 1 or not 0 <= rank < world:
            raise UsageError(f"shard {rank} of {world}: need world >= 1 and 0 <= rank < world")
        return self[self._cut(rank, world) - self.start:self._cut(rank + 1, world) - self.start]

    def _cut(self, r: int, world: int) -> int:
        first = self._position(self.start)
        target = first + (self._position(self.stop) - first) * r // world
        bounds = range(self.start, self.stop + 1)
        j = self.start + bisect_left(bounds, target, key=self._position)  # first boundary at or after target
        if j > self.start and target - self._position(j - 1) <= self._position(j) - target:
            j -= 1
        return j

    def chunks(self, max_tokens: int) -> Iterator["SequenceView"]:
        """Consecutive views of at most `max_tokens` scored tokens each (a longer sequence is a chunk of its
        own), covering the view in order: bounded-memory passes over a corpus."""
        if max_tokens < 1:
            raise UsageError(f"chunks need max_tokens >= 1, got {max_tokens}")
        i = self.start
        while i < self.stop:
            bounds = range(i, self.stop + 1)
            j = i + bisect_right(bounds, self._position(i) + max_tokens, key=self._position) - 1
            j = max(j, i + 1)
            yield SequenceView(self._ids, self._offsets, i, j)
            i = j
