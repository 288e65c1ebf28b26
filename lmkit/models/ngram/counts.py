"""n-gram counting and lookup with numpy: no Python loop per n-gram.

Layout (a reverse trie in sorted arrays, as KenLM's trie lays out contexts): unigram ids are word ids;
an n-gram w1..wn (n >= 2) is the int64 key `id(w2..wn) * V + w1`, where id(w2..wn) is the index of its
suffix in the sorted keys of order n-1. Keys never overflow int64 whatever the order (an id is below the
number of n-grams, so a key is below T * V), counting is one `np.unique` per order, and looking up
"h[-k:] w" for many targets walks right to left: one `searchsorted` per order for all targets at once.

Counted text (docs/protocol.md): `sentence` context makes every sequence a unit `<s> w1 .. wn </s>`
(no padding with n-1 `<s>`: contexts at the start are just `<s>` plus what is available, as KenLM);
`stream` context makes the whole text one unit `<s> w1 .. </s> w1' .. </s>`, counted across `</s>`.
Every n-gram inside a unit is counted, so the stored n-grams are closed under prefix and suffix.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ...data.sequences import lengths_and_ids, stream_layout
from ...data.vocab import BOS, EOS
from ...logs import current
from ...parallel import cuts, parts, run_parts


def flatten(sequences: list[np.ndarray], context: str, dtype=np.int64) -> tuple[np.ndarray, np.ndarray]:
    """The whole text as one token array plus `depth`: how many tokens of its unit precede each position (0 at
    `<s>`), both in `dtype` (counting asks for int32). An n-gram ending at j lies inside one unit iff
    depth[j] >= n-1.

        sentence:  <s> a b </s> <s> c </s>      stream:  <s> a b </s> c </s>
        depth:      0  1 2  3    0  1  2                  0  1 2  3   4  5
    """
    lens, words = lengths_and_ids(sequences)
    if context == "stream":
        toks = stream_layout(lens, words, dtype)
        return toks, np.arange(toks.size, dtype=dtype)
    unit = lens + 2
    starts = np.concatenate([[0], np.cumsum(unit)[:-1]]).astype(np.int64)
    total = int(unit.sum())
    toks = np.empty(total, dtype=dtype)
    body = np.ones(total, dtype=bool)
    body[starts] = False
    body[starts + lens + 1] = False
    toks[starts] = BOS
    toks[starts + lens + 1] = EOS
    toks[body] = words
    depth = np.arange(total, dtype=dtype)
    depth -= np.repeat(starts.astype(dtype), unit)
    return toks, depth


# Above this many queries into a table this large, binary searches in random order miss the cache on most steps:
# sorting the queries first and searching them in order is faster in all, 2x at a thousand queries and 7x at
# sixty thousand into a table of 800k keys (docs/benchmarks.md).
SORTED_SEARCH_MIN = 1 << 10


# A look-up this large is split across the CPUs (lmkit/parallel.py): 1.6M queries into 800k keys, 1.8x on two cores.
PARALLEL_MIN = 1 << 17
# Sorted queries are searched once per distinct value when at most this share of them is distinct: a text's
# n-grams repeat (most of its bigrams have been seen before in it), and the searches, not the passes that find
# the repeats, are what costs on a large table.
REPEATS_WORTH_SKIPPING = 0.8


def find(keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Index of each query in the sorted `keys`, -1 where absent (vectorised binary search).

    Above SORTED_SEARCH_MIN queries into a table as large, the queries are searched in sorted order and checked
    there (both reads walk `keys` forward), and the answers are scattered back to the queries' order once; above
    PARALLEL_MIN, parts of the queries are searched side by side."""
    if keys.size == 0 or query.size == 0:
        return np.full(query.shape, -1, dtype=np.int64)
    if query.size < SORTED_SEARCH_MIN or keys.size < SORTED_SEARCH_MIN or query.ndim != 1:
        pos = np.searchsorted(keys, query)
        pos[pos == keys.size] = 0
        return np.where(keys[pos] == query, pos, -1)
    count = parts(query.size, PARALLEL_MIN)
    if count < 2:
        return _find_in_order(keys, query)
    out = np.empty(query.size, dtype=np.int64)
    at = cuts(query.size, count)

    def part(i: int) -> None:
        out[at[i]:at[i + 1]] = _find_in_order(keys, query[at[i]:at[i + 1]])

    run_parts(part, count)
    return out


def _find_in_order(keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    """find() by searching the queries in sorted order."""
    values, came_from = sorted_and_positions(query.astype(np.int64, copy=True))
    first = np.empty(values.size, dtype=bool)  # the first of each run of equal queries
    first[:1] = True
    np.not_equal(values[1:], values[:-1], out=first[1:])
    distinct = values[first] if np.count_nonzero(first) < values.size * REPEATS_WORTH_SKIPPING else None
    pos = np.searchsorted(keys, values if distinct is None else distinct)
    np.minimum(pos, keys.size - 1, out=pos)
    pos[keys[pos] != (values if distinct is None else distinct)] = -1
    if distinct is not None:  # each query takes the answer of the first of its run
        run = np.cumsum(first, dtype=np.int64)
        run -= 1
        pos = pos[run]
    out = np.empty(query.size, dtype=np.int64)
    out[came_from] = pos
    return out


def sorted_and_positions(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(values sorted, where each came from), equal values in their original order: sort_with_positions where the
    values pack with their positions, else a stable argsort. `values` (int64) may be overwritten."""
    ordered = sort_with_positions(values)
    if ordered is not None:
        return ordered
    came_from = np.argsort(values, kind="stable")
    return values[came_from], came_from


def sort_with_positions(values: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(values sorted, where each came from) by one in-place sort of `value << bits | position` -- a plain sort
    of values, ~1.6-1.8x faster than argsort -- or None when some value is negative or a value and its position do
    not fit in 63 bits together (then argsort or np.unique). `values` (int64) is overwritten: callers pass a
    temporary; the sorted values are returned in it."""
    bits = max(int(values.size - 1).bit_length(), 1)
    if values.size < 2 or values.min() < 0 or int(values.max()) >= 1 << (63 - bits):
        return None
    packed = values
    packed <<= bits
    packed |= np.arange(values.size, dtype=np.int64)
    packed.sort()
    came_from = packed & ((1 << bits) - 1)
    packed >>= bits
    return packed, came_from


@dataclass
class NgramIndex:
    """The stored n-grams of orders 1..N as sorted keys; order-1 ids are word ids (all V of them)."""

    vocab_size: int
    keys: list[np.ndarray]  # keys[n-1]: sorted int64 keys of order n (keys[0] = arange(V))
    _prefix: dict = field(default_factory=dict, repr=False)

    @property
    def order(self) -> int:
        return len(self.keys)

    def size(self, n: int) -> int:
        return int(self.keys[n - 1].size)

    def suffix(self, n: int) -> np.ndarray:
        """Id (order n-1) of w2..wn for every n-gram of order n >= 2."""
        return self.keys[n - 1] // self.vocab_size

    def first(self, n: int) -> np.ndarray:
        return self.keys[n - 1] % self.vocab_size

    def prefix(self, n: int) -> np.ndarray:
        """Id (order n-1) of the context w1..w(n-1) of every n-gram of order n >= 2, -1 if not stored.

        prefix(w1..wn) = (w1, prefix(w2..wn)): one lookup per order, reusing the order below."""
        if n not in self._prefix:
            first = self.first(n)
            if n == 2:
                out = first
            else:
                inner = self.prefix(n - 1)[self.suffix(n)].astype(np.int64)  # id of w2..w(n-1), order n-2
                ok = inner >= 0
                out = np.full(first.shape, -1, dtype=np.int64)
                out[ok] = find(self.keys[n - 2], inner[ok] * self.vocab_size + first[ok])
            self._prefix[n] = out
        return self._prefix[n]

    def keep_prefixes(self, ctx: list[np.ndarray]) -> None:
        """Take NgramCounts.ctx (the prefix ids counting found) as prefix()'s answers."""
        for n in range(2, self.order + 1):
            self._prefix[n] = ctx[n - 1]

    def words(self, n: int) -> np.ndarray:
        """(size_n, n) word ids of every n-gram of order n, in key order."""
        if n == 1:
            return self.keys[0][:, None]
        return np.column_stack([self.first(n), self.words(n - 1)[self.suffix(n)]])

    def chains(self, toks: np.ndarray, depth: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Ids of everything backoff scoring needs for the targets toks[pos], as matrices (the quick checks,
        held-out tuning and analyze read them; scoring itself consumes `walk` order by order).

        With h = the (at most N-1) tokens before a target w inside its unit:
          tgt[:, k] = id of "h[-k:] w" at order k+1   (k = 0..N-1; -1 if absent or k > len(h))
          ctx[:, j-1] = id of h[-j:] at order j        (j = 1..N-1; -1 if absent or j > len(h))
        The contexts of a target are the n-grams ending at the token before it: one walk gives both."""
        N = self.order
        row = np.full(toks.size + 1, -1, dtype=np.int64)  # row of each target position; one spare for at + 1
        row[pos] = np.arange(pos.size)
        tgt = np.full((pos.size, N), -1, dtype=np.int64)
        ctx = np.full((pos.size, max(N - 1, 1)), -1, dtype=np.int64)
        for k, (at, ids) in enumerate(self.walk(toks, depth)):
            r = row[at]
            tgt[r[r >= 0], k] = ids[r >= 0]
            if k < N - 1:
                r = row[at + 1]
                r[depth[np.minimum(at + 1, toks.size - 1)] == 0] = -1  # the next unit's <s>
                ctx[r[r >= 0], k] = ids[r >= 0]
        return tgt, ctx

    def walk(self, toks: np.ndarray, depth: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """For k = 1..N in turn: (the positions of the text where a stored k-gram ends inside its unit, ascending;
        that k-gram's id). A k-gram is searched only where the (k-1)-gram ending at the same position is stored
        (the stored n-grams are suffix-closed), so each order costs one search over fewer positions than the
        last, and nothing of size (tokens x N) is ever held."""
        V = self.vocab_size
        at = np.arange(toks.size, dtype=np.int64)
        ids = np.asarray(toks, dtype=np.int64)
        yield at, ids
        for k in range(1, self.order):
            fits = depth[at] >= k
            at, ids = at[fits], ids[fits]
            ids *= V
            ids += toks[at - k]
            ids = find(self.keys[k], ids)
            stored = ids >= 0
            at, ids = at[stored], ids[stored]
            yield at, ids


@dataclass
class NgramCounts:
    """Raw counts of every n-gram of orders 1..N in a text, on an NgramIndex.

    counts[0] is the (V,) unigram count including `<s>` (one per unit; context only, never a target).
    ctx[n-1] is the prefix id of each n-gram (order n-1), found during counting at no extra cost."""

    index: NgramIndex
    counts: list[np.ndarray]
    ctx: list[np.ndarray]
    tokens: int  # scored tokens in the counted text (everything but <s>)
    units: int  # sequences (sentence context) or 1 (stream)

    @property
    def order(self) -> int:
        return self.index.order

    @property
    def vocab_size(self) -> int:
        return self.index.vocab_size


def unique_counts(key: np.ndarray, id_dtype=np.int64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """np.unique(key, return_inverse=True, return_counts=True) for non-negative int64 keys, ~1.8x faster when each
    key and its position fit in 63 bits together (sort_with_positions); the inverse (ids below len(key)) in
    `id_dtype`. `key` may be overwritten: callers pass a temporary. The steps work in place, so the peak is about
    three arrays of len(key), not six."""
    key = np.asarray(key, dtype=np.int64)
    ordered = sort_with_positions(key)
    if ordered is None:
        uniq, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
        return uniq, inv.reshape(-1).astype(id_dtype, copy=False), cnt
    packed, came_from = ordered  # the sorted keys, and where each came from
    first = np.empty(key.size, dtype=bool)
    first[0] = True
    np.not_equal(packed[1:], packed[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    ids = np.cumsum(first, dtype=id_dtype)
    del first
    ids -= 1
    inv = np.empty(key.size, dtype=id_dtype)
    inv[came_from] = ids
    del came_from, ids
    cnt = np.empty(starts.size, dtype=np.int64)
    np.subtract(starts[1:], starts[:-1], out=cnt[:-1])
    cnt[-1:] = key.size - starts[-1:]
    return packed[starts], inv, cnt


def count_ngrams(sequences: list[np.ndarray], vocab_size: int, order: int, context: str) -> NgramCounts:
    """Count every n-gram of orders 1..order with one sort per order.

    Works on n-gram *end* positions: the n-gram ending at j has suffix = the (n-1)-gram ending at j
    and prefix = the (n-1)-gram ending at j-1, so both ids come from the previous order's array. Below 2^31
    tokens every per-position array and every count is int32 (only the keys need 64 bits): the peak of counting is
    about half what it is with int64 throughout."""
    V = int(vocab_size)
    progress = current()
    progress.phase("counting", total=order, label=f"1..{order}-grams")
    id_dtype = np.int32 if V < 1 << 31 else np.int64
    toks, depth = flatten(sequences, context, id_dtype)
    if toks.size >= 1 << 31:
        id_dtype = np.int64  # ids and positions below the token count
        toks, depth = toks.astype(np.int64), depth.astype(np.int64)
    if toks.size and (toks.min() < 0 or toks.max() >= V):
        raise ValueError("token id outside the vocabulary")
    keys = [np.arange(V, dtype=np.int64)]
    counts = [np.bincount(toks, minlength=V).astype(np.int64)]
    ctx = [np.zeros(V, dtype=np.int64)]
    rid = toks  # id of the (n-1)-gram ending at each position (order 1: the word)
    for n in range(2, order + 1):
        inside = depth >= n - 1  # the n-grams ending here lie inside their unit (never at position 0)
        key = rid[inside].astype(np.int64)
        key *= V
        key += toks[:toks.size - (n - 1)][inside[n - 1:]]  # the n-gram's first word
        uniq, inv, cnt = unique_counts(key, id_dtype)
        del key
        prefix = np.empty(uniq.size, dtype=id_dtype)
        prefix[inv] = rid[:-1][inside[1:]]  # the (n-1)-gram ending just before: every occurrence writes the same id
        keys.append(uniq)
        counts.append(cnt.astype(id_dtype, copy=False))  # a count is at most the token count: int32 below 2^31
        ctx.append(prefix)
        if n < order:  # the next order's suffix ids
            rid = np.full(toks.size, -1, dtype=id_dtype)
            rid[inside] = inv
        del inside, inv
        progress.update(n)
    index = NgramIndex(V, keys)
    units = int((depth == 0).sum())
    return NgramCounts(index, counts, ctx, int(toks.size - units), units)
