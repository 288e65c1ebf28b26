"""The next-token shift of the torch families' batches (lmkit.data.batching), asserted directly:
stream batches (y[t] == x[t+1] in every row, consecutive windows continue each row, the rows rebuild the
stream) and sentence batches (targets = the sentence shifted by one with </s> last, padding masked)."""

from __future__ import annotations

import numpy as np
import pytest

from lmkit.data.batching import (Batch, pad_examples, sentence_batches, sentence_examples, stream_batches,
                                 stream_ids)
from lmkit.data.vocab import BOS, EOS, PAD, UNK


def sequences(seed: int, count: int = 23) -> list[np.ndarray]:
    """Token ids of `count` lines (words are ids 4..29, some <unk>); a few empty lines."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        ids = rng.integers(4, 30, size=int(rng.integers(0, 9)))
        ids[rng.random(ids.size) < 0.1] = UNK
        out.append(ids.astype(np.int64))
    return out


def test_stream_ids_is_bos_then_every_line_and_eos():
    seqs = sequences(1)
    want = [BOS]
    for s in seqs:
        want += s.tolist() + [EOS]
    assert stream_ids(seqs).tolist() == want


@pytest.mark.parametrize("batch_size,seq_len", [(3, 5), (4, 7), (1, 16), (5, 1)])
def test_stream_batches_shift_by_one_and_continue_each_row(batch_size, seq_len):
    stream = stream_ids(sequences(2))
    batches = stream_batches(stream, batch_size, seq_len)
    n = (len(stream) - 1) // batch_size  # tokens per row
    assert len(batches) == -(-n // seq_len)
    for b in batches:
        assert b.x.shape == b.y.shape and b.x.shape[0] == batch_size and 1 <= b.x.shape[1] <= seq_len
        np.testing.assert_array_equal(b.y[:, :-1], b.x[:, 1:])  # y[t] == x[t+1] inside a window
        assert b.num_targets == b.y.size  # a stream has no padding
    for prev, nxt in zip(batches, batches[1:]):
        np.testing.assert_array_equal(prev.y[:, -1], nxt.x[:, 0])  # the window after continues each row
    rows_x = np.concatenate([b.x for b in batches], axis=1)
    rows_y = np.concatenate([b.y for b in batches], axis=1)
    # row r is the r-th contiguous piece of the stream; its targets are the same piece one token later
    np.testing.assert_array_equal(rows_x.reshape(-1), stream[:n * batch_size])
    np.testing.assert_array_equal(rows_y.reshape(-1), stream[1:n * batch_size + 1])
    for r in range(batch_size):
        assert rows_y[r, -1] == stream[(r + 1) * n]  # the last target is the token after the row


def test_shuffled_stream_windows_keep_the_shift():
    stream = stream_ids(sequences(3))
    plain = stream_batches(stream, 3, 4)
    shuffled = stream_batches(stream, 3, 4, np.random.default_rng(0))
    key = lambda b: b.x.tobytes() + b.y.tobytes()  # noqa: E731
    assert sorted(map(key, plain)) == sorted(map(key, shuffled))  # the same windows, another order
    for b in shuffled:
        np.testing.assert_array_equal(b.y[:, :-1], b.x[:, 1:])


def check_sentence_row(x: np.ndarray, y: np.ndarray, sentence: np.ndarray) -> None:
    """Inputs `<s> w1 .. wn` then <pad>; targets `w1 .. wn </s>` then <pad> (masked from the loss)."""
    n = len(sentence)
    assert x[0] == BOS
    np.testing.assert_array_equal(x[1:n + 1], sentence)
    np.testing.assert_array_equal(y[:n], sentence)
    assert y[n] == EOS
    np.testing.assert_array_equal(y[:n], x[1:n + 1])  # the shift: y[t] == x[t+1]
    assert np.all(x[n + 1:] == PAD) and np.all(y[n + 1:] == PAD)


def test_pad_examples_shift_and_mask():
    seqs = [np.array([7, 8, 9]), np.array([], dtype=np.int64), np.array([UNK, 5])]
    batch = pad_examples([np.concatenate(([BOS], s, [EOS])) for s in seqs])
    assert isinstance(batch, Batch) and batch.x.shape == (3, 4) == batch.y.shape
    for row, s in enumerate(seqs):
        check_sentence_row(batch.x[row], batch.y[row], s)
    assert batch.num_targets == sum(len(s) + 1 for s in seqs)  # </s> counted, padding not
    assert batch.y.tolist() == [[7, 8, 9, EOS], [EOS, PAD, PAD, PAD], [UNK, 5, EOS, PAD]]
    assert batch.x.tolist() == [[BOS, 7, 8, 9], [BOS, PAD, PAD, PAD], [BOS, UNK, 5, PAD]]


def test_sentence_batches_hold_every_sentence_shifted_once():
    seqs = sequences(4, 40)
    batches = sentence_batches(sentence_examples(seqs, None), 6, np.random.default_rng(1))
    found = []
    for b in batches:
        for x, y in zip(b.x, b.y):
            n = int((y != PAD).sum()) - 1  # words in this row (targets minus </s>)
            check_sentence_row(x, y, x[1:n + 1])
            found.append(tuple(x[1:n + 1].tolist()))
    assert sorted(found) == sorted(tuple(s.tolist()) for s in seqs)  # each sentence exactly once
    assert sum(b.num_targets for b in batches) == sum(len(s) + 1 for s in seqs)


def test_long_sentences_are_cut_so_every_target_is_trained_once():
    """max_len: pieces overlap by one token, so the pieces' targets are the sentence's targets once each."""
    s = np.arange(4, 4 + 11)
    pieces = sentence_examples([s], 4)
    assert all(len(p) <= 5 for p in pieces)
    batch = pad_examples(pieces)
    targets = [t for row in batch.y for t in row.tolist() if t != PAD]
    assert targets == s.tolist() + [EOS]
    for x, y in zip(batch.x, batch.y):
        k = int((y != PAD).sum())
        np.testing.assert_array_equal(y[:k - 1], x[1:k])
