"""Batches for the torch families: sentence context (bucketed, padded, masked) and stream context
(contiguous BPTT windows). Pure numpy; the training loop moves batches to the device.

Stream layout, for B=2 rows over the token stream  <s> a b </s> c d e </s> ...:

    row 0:  <s> a  b  </s> c  d  | e  ...      window k takes columns [k*T, (k+1)*T) as inputs
    row 1:  f   g  </s> h  i  j  | k  ...      and the same columns shifted by one as targets

so row r of window k+1 continues exactly where row r of window k stopped (the RNN state carries over)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .sequences import lengths_and_ids, stream_layout
from .vocab import BOS, EOS, PAD

if TYPE_CHECKING:
    from .corpus import Encoded


@dataclass
class Batch:
    x: np.ndarray  # (B, T) input ids
    y: np.ndarray  # (B, T) target ids; PAD where there is nothing to predict (masked out of the loss)
    # Data-parallel stream batches built for one rank hold only its rows; this is the global batch's count
    global_targets: int | None = None

    @property
    def num_targets(self) -> int:
        return int((self.y != PAD).sum())


def stream_ids(sequences: list[np.ndarray]) -> np.ndarray:
    """One <s> at the very start, then every sequence followed by </s> (stream context), int64."""
    return stream_layout(*lengths_and_ids(sequences))


def target_counts(encoded: Encoded, size: int, chunk: int = 1 << 22) -> np.ndarray:
    """(size,) int64: how often each id is a training target, as the loss sees it in either context: every token
    of every sequence and one </s> per sequence; for `source <sep> target` rows (`score_from`) the target side
    only. Counted in chunks, so a memory-mapped token file is never copied whole."""
    lens, words = lengths_and_ids(encoded.sequences)
    score_from = encoded.score_from
    counts = np.zeros(size, dtype=np.int64)
    if score_from is not None:  # drop each sequence's leading source ids (a position before its score_from)
        starts = np.cumsum(lens) - lens
        pos = np.arange(len(words)) - np.repeat(starts, lens)
        words = np.asarray(words)[pos >= np.repeat(np.asarray(score_from, dtype=np.int64), lens)]
    for i in range(0, len(words), chunk):
        counts += np.bincount(np.asarray(words[i:i + chunk], dtype=np.int64), minlength=size)[:size]
    counts[EOS] += len(lens)
    return counts


def sentence_examples(sequences: list[np.ndarray], max_len: int | None) -> list[np.ndarray]:
    """<s> w1..wn </s> per sequence; longer than max_len+1 is cut into pieces that overlap by one
    token so every target is trained once (each piece restarts its context: a training shortcut
    only -- scoring uses sliding windows)."""
    return [piece for s in sequences for _, piece in _pieces(s, max_len)]


def _pieces(seq: np.ndarray, max_len: int | None):
    """(start, ids) pieces of `<s> seq </s>`, cut as sentence_examples describes."""
    full = np.concatenate(([BOS], np.asarray(seq, dtype=np.int64), [EOS]))
    if max_len is None or len(full) <= max_len + 1:
        yield 0, full
    else:
        for start in range(0, len(full) - 1, max_len):
            yield start, full[start:start + max_len + 1]


def prefix_examples(sequences: list[np.ndarray], score_from: list[int],
                    max_len: int | None) -> tuple[list[np.ndarray], list[int]]:
    """sentence_examples for `source <sep> target` sequences, plus per example how many leading targets
    are not trained (the source tokens and <sep>: the loss is on the target side only, as scored).

    Target k of a piece starting at `start` predicts token start+k of the sequence, so the first
    score_from - start targets are ignored; pieces holding no target-side prediction are dropped."""
    examples, ignore = [], []
    for s, first in zip(sequences, score_from):
        for start, piece in _pieces(s, max_len):
            skip = max(0, first - start)
            if skip < len(piece) - 1:
                examples.append(piece)
                ignore.append(skip)
    return examples, ignore


def pad_examples(examples: list[np.ndarray], ignore: list[int] | None = None) -> Batch:
    """Right-pad `<s> w1..wn </s>` examples into inputs (all but the last id) and targets (all but the
    first); PAD fills the rest of each row and is masked out of loss and scores. `ignore[row]` leading
    targets of a row become PAD too (context only, as the source side of a translation pair)."""
    width = max(len(e) for e in examples) - 1
    x = np.full((len(examples), width), PAD, dtype=np.int64)
    y = np.full((len(examples), width), PAD, dtype=np.int64)
    for row, e in enumerate(examples):
        x[row, :len(e) - 1] = e[:-1]
        y[row, :len(e) - 1] = e[1:]
        if ignore is not None:
            y[row, :ignore[row]] = PAD
    return Batch(x, y)


def sentence_batches(examples: list[np.ndarray], batch_size: int, rng: np.random.Generator | None,
                     ignore: list[int] | None = None) -> list[Batch]:
    """Bucket by length (sorted, then cut into batches) so padding stays low; shuffle batch order.

    `ignore` (parallel data): leading targets per example left out of the loss, see prefix_examples."""
    order = np.argsort([len(e) for e in examples], kind="stable")
    if rng is not None:
        # shuffle within equal lengths too, so batch composition varies between epochs
        lengths = np.array([len(e) for e in examples])
        order = np.lexsort((rng.random(len(examples)), lengths))
    batches = [pad_examples([examples[j] for j in order[i:i + batch_size]],
                            None if ignore is None else [ignore[j] for j in order[i:i + batch_size]])
               for i in range(0, len(order), batch_size)]
    if rng is not None:
        perm = rng.permutation(len(batches))
        batches = [batches[i] for i in perm]
    return batches


def stream_batches(stream: np.ndarray, batch_size: int, seq_len: int,
                   rng: np.random.Generator | None = None) -> list[Batch]:
    """Contiguous BPTT windows over `batch_size` parallel rows of the stream (see module docstring).

    With `rng` (stateless models only) the window order is shuffled; stateful models need order."""
    n = (len(stream) - 1) // batch_size
    if n < 1:
        raise ValueError("the training stream is shorter than one batch")
    xs = stream[: n * batch_size].reshape(batch_size, n)  # (B, n): row r is stream[r*n:(r+1)*n]
    ys = stream[1: n * batch_size + 1].reshape(batch_size, n)  # the same, one token later
    batches = [Batch(xs[:, i:i + seq_len], ys[:, i:i + seq_len]) for i in range(0, n, seq_len)]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def rank_stream_batches(sequences, batch_size: int, seq_len: int, rank: int, world_size: int,
                        rng: np.random.Generator | None = None) -> list[Batch]:
    """stream_batches(stream_ids(sequences), ...) restricted to rank `rank`'s rows, reading only the part of
    the stream those rows cover (a token file's `stream_slice`): the same windows as the global layout, in
    the same (seeded) order, each carrying the global batch's target count."""
    total = 1 + sequences.num_tokens  # <s> + every token and </s>
    n = (total - 1) // batch_size
    if n < 1:
        raise ValueError("the training stream is shorter than one batch")
    per = batch_size // world_size
    # this rank's rows are stream[rank*per*n : (rank+1)*per*n (+1 for the targets)], laid out as stream_batches
    # lays out its own `per` rows of the same length n: the same windows, in the same order
    batches = stream_batches(sequences.stream_slice(rank * per * n, (rank + 1) * per * n + 1), per, seq_len, rng)
    for b in batches:
        b.global_targets = b.y.size * world_size
    return batches


def windows(length: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """Sliding windows over `length` positions: (start, first_scored) pairs.

    Each window covers [start, start+size); positions before `first_scored` were scored by an
    earlier window and only give context. Every position is scored exactly once and, after the
    first window, with at least `overlap` tokens of left context."""
    if length <= size:
        return [(0, 0)]
    stride = size - overlap
    if stride < 1:
        raise ValueError("window overlap must be smaller than the window")
    out = [(0, 0)]
    end = size
    while end < length:
        start = min(end - overlap, length - size)
        out.append((start, end))
        end = start + size
    return out
