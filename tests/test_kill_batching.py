"""Batching edges mutation testing found unpinned (docs/testing.md, bench/mutation.py batching): scoring
windows, a data-parallel rank's rows of the stream layout, prefix (translation) examples. The shift of
stream and sentence batches is pinned in test_pins_batching.py."""

from __future__ import annotations

import numpy as np
import pytest

from lmkit.data.batching import (lengths_and_ids, pad_examples, prefix_examples, rank_stream_batches,
                                 sentence_batches, stream_batches, stream_ids, stream_layout, windows)
from lmkit.data.vocab import BOS, EOS, PAD


# -- sliding windows for scoring ------------------------------------------------------------------------
@pytest.mark.parametrize("length, size, overlap, want", [
    (5, 5, 2, [(0, 0)]),  # fits: one window
    (3, 5, 2, [(0, 0)]),
    (6, 5, 2, [(1, 5)]),  # the last window ends at the end: starts at 1, scores position 5 only
    (10, 4, 1, [(3, 4), (6, 7)]),
    (10, 4, 2, [(2, 4), (4, 6), (6, 8)]),
    (11, 4, 3, [(1, 4), (2, 5), (3, 6), (4, 7), (5, 8), (6, 9), (7, 10)]),
])
def test_windows_by_hand(length, size, overlap, want):
    assert windows(length, size, overlap) == [(0, 0), *want] if length > size else want


@pytest.mark.parametrize("length, size, overlap", [(50, 8, 3), (9, 8, 7), (100, 16, 0), (33, 10, 5)])
def test_windows_score_every_position_once_with_the_overlap_as_context(length, size, overlap):
    out = windows(length, size, overlap)
    scored = []
    for i, (start, first) in enumerate(out):
        end = min(start + size, length)
        assert end - start <= size and start <= first
        scored += range(first, end)
        if i:
            assert first - start >= overlap
    assert scored == list(range(length))


def test_windows_refuse_an_overlap_as_large_as_the_window():
    with pytest.raises(ValueError, match="^window overlap must be smaller than the window$"):
        windows(10, 4, 4)
    assert windows(4, 4, 4) == [(0, 0)]  # one window needs no stride


# -- a data-parallel rank's rows -------------------------------------------------------------------------
class Stream:
    """What rank_stream_batches reads of a token file view: its scored token count and stretches of its
    stream layout."""

    def __init__(self, sequences):
        self.ids = stream_ids(sequences)
        self.num_tokens = len(self.ids) - 1
        self.reads = []

    def stream_slice(self, lo, hi):
        self.reads.append((lo, hi))
        return self.ids[max(lo, 0):hi]


def lines(seed=0, count=17):
    rng = np.random.default_rng(seed)
    return [rng.integers(4, 30, int(rng.integers(0, 8))) for _ in range(count)]


@pytest.mark.parametrize("world, batch_size, seq_len", [(2, 4, 5), (3, 6, 4), (1, 3, 7)])
@pytest.mark.parametrize("seed", [None, 7])
def test_rank_rows_are_the_global_layouts_rows(world, batch_size, seq_len, seed):
    seqs = lines()
    full = stream_batches(stream_ids(seqs), batch_size, seq_len, None if seed is None else np.random.default_rng(seed))
    per = batch_size // world
    n = (len(stream_ids(seqs)) - 1) // batch_size
    for rank in range(world):
        src = Stream(seqs)
        mine = rank_stream_batches(src, batch_size, seq_len, rank, world,
                                   None if seed is None else np.random.default_rng(seed))
        assert src.reads == [(rank * per * n, (rank + 1) * per * n + 1)]
        assert len(mine) == len(full)
        for m, f in zip(mine, full):
            np.testing.assert_array_equal(m.x, f.x[rank * per:(rank + 1) * per])
            np.testing.assert_array_equal(m.y, f.y[rank * per:(rank + 1) * per])
            assert m.global_targets == f.num_targets == f.y.size


def test_rank_rows_of_a_stream_shorter_than_a_batch_are_refused():
    with pytest.raises(ValueError, match="^the training stream is shorter than one batch$"):
        rank_stream_batches(Stream([np.array([5])]), 3, 4, 0, 1)  # <s> 5 </s>: 2 targets for 3 rows
    assert len(rank_stream_batches(Stream([np.array([5, 6])]), 3, 4, 0, 1)) == 1  # 3 targets: one column


def test_stream_batches_refuse_a_stream_shorter_than_a_batch():
    with pytest.raises(ValueError, match="^the training stream is shorter than one batch$"):
        stream_batches(np.arange(3), 3, 2)
    assert len(stream_batches(np.arange(4), 3, 2)) == 1


# -- layouts -------------------------------------------------------------------------------------------
def test_stream_layout_of_nothing_is_a_lone_bos():
    lens, words = lengths_and_ids([])
    assert lens.tolist() == [] and words.tolist() == [] and words.dtype == np.int64
    assert stream_layout(lens, words).tolist() == [BOS]
    assert stream_layout(*lengths_and_ids([np.array([], dtype=np.int64), np.array([9])])).tolist() == \
        [BOS, EOS, 9, EOS]


def test_prefix_examples_train_the_target_side_only():
    seq = np.array([7, 8, 6, 9, 10])  # source 7 8, <sep> (6 here), target 9 10: score_from 3
    examples, ignore = prefix_examples([seq], [3], None)
    assert [e.tolist() for e in examples] == [[BOS, 7, 8, 6, 9, 10, EOS]] and ignore == [3]
    assert pad_examples(examples, ignore).y.tolist() == [[PAD, PAD, PAD, 9, 10, EOS]]
    # pieces of 2 targets: [<s> 7 8] predicts source only (dropped); [8 <sep> 9] trains 9 alone (<sep>
    # ignored); [9 10 </s>] trains both
    examples, ignore = prefix_examples([seq], [3], 2)
    assert [e.tolist() for e in examples] == [[8, 6, 9], [9, 10, EOS]] and ignore == [1, 0]


def test_sentence_batches_without_rng_are_sorted_by_length_in_order():
    examples = [np.array([BOS, *range(4, 4 + k), EOS]) for k in (3, 1, 2, 1)]
    batches = sentence_batches(examples, 2, None)
    assert [b.x.shape for b in batches] == [(2, 2), (2, 4)]
    assert batches[0].x[:, 1].tolist() == [4, 4] and batches[1].y[:, -1].tolist() == [PAD, EOS]


def test_sentence_batches_without_rng_keep_the_order_of_equal_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 4, 60)
    examples = [np.array([BOS, *[4 + i % 20] * int(k), EOS]) for i, k in enumerate(lengths)]
    for i, e in enumerate(examples):
        e[1] = 4 + i  # the first word numbers the example
    batches = sentence_batches(examples, 7, None)
    order = [int(x) - 4 for b in batches for x in b.x[:, 1]]
    assert order == sorted(range(60), key=lambda i: lengths[i])  # stable: equal lengths keep their order


@pytest.mark.parametrize("words, max_len", [(8, 4), (9, 4), (7, 3), (3, 3), (1, 1), (5, 2)])
def test_long_sentences_are_cut_so_every_target_is_trained_exactly_once(words, max_len):
    from lmkit.data.batching import sentence_examples

    s = np.arange(4, 4 + words)
    pieces = sentence_examples([s], max_len)
    assert all(2 <= len(p) <= max_len + 1 for p in pieces)
    assert [t for p in pieces for t in p[1:].tolist()] == [*s.tolist(), EOS]


def test_rank_rows_when_the_stream_fills_the_batch_exactly():
    seqs = [np.arange(4, 14)]  # <s> + 10 ids + </s>: 12 positions, 11 targets; 4 rows of 2
    full = stream_batches(stream_ids(seqs), 4, 3)
    for rank in range(2):
        src = Stream(seqs)
        mine = rank_stream_batches(src, 4, 3, rank, 2)
        assert src.reads == [(rank * 2 * 2, (rank + 1) * 2 * 2 + 1)]
        np.testing.assert_array_equal(mine[0].x, full[0].x[rank * 2:(rank + 1) * 2])
