"""Out-of-core n-gram counting: bounded counting buffers, sorted runs spilled to disk, a k-way merge.

The plan of KenLM's lmplz, in numpy (`lmkit train --model ngram:kn5 --memory 4G --tmp /scratch`):

1. Walk the training sequences in slices of consecutive sequences and cut the text into *chunks* whose
   counting buffers fit the budget (about BYTES_PER_TOKEN(order) bytes per token, measured with
   tracemalloc on Zipfian text). Unit boundaries are respected exactly as counts.flatten() draws them:
   in `sentence` context a chunk holds whole sequences (`<s> w1 .. wn </s>`), so no n-gram spans two
   chunks; in `stream` context the text is one unit `<s> w1 .. </s> w1' .. </s>`, cut anywhere, and each
   chunk is preceded by the last N-1 tokens of the text before it and counts only the n-grams that *end*
   inside it (so every n-gram is counted exactly once, whichever chunk it crosses into).
2. Count each chunk with the in-memory algorithm (sorted_runs.count_piece); per order n >= 2 the
   chunk's distinct n-grams come out in key order with chunk-local ids (a *sorted run*), written at once
   to a private spill folder as rows (w1, local suffix id, local prefix id, count) and dropped from memory.
   Unigram counts (V numbers) are summed in memory.
3. Merge, order by order from 2 up (chunk_merge.py): each run's local suffix ids become final ids through
   the id map the order below's merge wrote, which keeps the run sorted; a vectorised k-way merge with one
   bounded read buffer per run sums equal keys into the final sorted keys and counts and writes this
   order's id map. When there are more runs than the budget has read buffers for, groups of runs are
   first merged into longer runs on disk.
4. The prefix ids (`ctx`) follow from each chunk's local prefix ids through the same maps, and the
   token and unit totals from the chunks; the result equals count_ngrams' array for array.

What --memory bounds: the counting buffers of step 1-2 and the read buffers of step 3, as lmplz's -S
bounds its sort (and, in smoothing.py, the estimators' blocks). It does not bound the finished count
tables (keys, counts, ctx of every order: 24 bytes per stored n-gram) nor the model estimated from them,
which are in memory because scoring needs them there, nor the encoded training text when it is held in
memory rather than read from a token file.

When the whole text fits the budget it is counted in one piece by count_ngrams itself: no spill.
The spill folder (`lmkit-ngram-*` inside --tmp, else the system temp folder) is removed on success, on
error and on Ctrl-C; only a hard kill leaves it behind.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ...atomic import is_disk_full, remove_stale_scratch, scratch_dir
from ...data.vocab import BOS, EOS
from ...errors import LmkitError, UsageError
from ...logs import current
from .counts import NgramCounts, count_ngrams, flatten
from .chunk_merge import ChunkRuns, assemble_spilled
from .sorted_runs import Merger, SpillDir, count_piece, current_rss_bytes, human_bytes, peak_rss_bytes, table_bytes

SLICE = 4096  # sequences pulled from the training set at a time (never all of them)
MERGE_ROW_BYTES = 128  # bytes per row held by a merge step: read buffer, key mapping, sort temporaries


def bytes_per_token(order: int) -> int:
    """Counting-buffer bytes per token of a chunk (peak measured at ~90 + 8n, plus the chunk's own ids)."""
    return 104 + 8 * int(order)


@dataclass
class ExternalStats:
    """What an out-of-core count did, for fit_info."""

    chunks: int = 0
    spilled_runs: int = 0
    spilled_bytes: int = 0
    spill_files: int = 0
    merge_passes: int = 0
    chunk_tokens: int = 0  # the budget's chunk size
    largest_chunk_tokens: int = 0
    count_seconds: float = 0.0
    merge_seconds: float = 0.0
    rss_before: int | None = None  # resident bytes when counting started

    def to_dict(self, memory: int, order: int, counts: NgramCounts) -> dict:
        return {"engine": "external", "memory_bytes": memory, "chunks": self.chunks,
                "spilled_runs": self.spilled_runs, "spilled_bytes": self.spilled_bytes,
                "spill_files": self.spill_files, "merge_passes": self.merge_passes,
                "chunk_tokens": self.chunk_tokens,
                "peak_buffer_bytes": self.largest_chunk_tokens * bytes_per_token(order),
                "count_seconds": round(self.count_seconds, 3), "merge_seconds": round(self.merge_seconds, 3),
                # the process's peak RSS so far (counting's, not smoothing's), its RSS before counting and
                # the finished tables' bytes: peak - before - tables is what the counting buffers took
                "peak_rss_bytes": peak_rss_bytes(), "rss_before_bytes": self.rss_before,
                "table_bytes": table_bytes(counts)}


def iter_slices(sequences: Sequence, size: int = SLICE) -> Iterator[list]:
    """Consecutive slices of a (possibly lazy, memory-mapped) sequence list; never all of it at once."""
    for i in range(0, len(sequences), size):
        yield list(sequences[i:i + size])


def iter_lengths(sequences: Sequence, size: int = 1 << 16) -> Iterator[np.ndarray]:
    """Sequence lengths, a slice at a time (a token file's view gives them without reading its ids)."""
    for i in range(0, len(sequences), size):
        part = sequences[i:i + size]
        lengths = getattr(part, "lengths", None)
        yield np.asarray(lengths() if callable(lengths) else [len(s) for s in part], dtype=np.int64)


def text_tokens(sequences: Sequence, context: str) -> int:
    """Tokens of the flattened text (what counts.flatten would build), from lengths alone."""
    ids = getattr(sequences, "num_ids", None)  # a token file's view knows it without a pass
    total = int(ids) if ids is not None else sum(int(lengths.sum()) for lengths in iter_lengths(sequences))
    n = len(sequences)
    return total + (2 * n if context == "sentence" else n + 1)


def sentence_chunks(sequences: Sequence, capacity: int, bytes_per_tok: int) -> Iterator[Sequence]:
    """Slices of whole sequences, at most `capacity` flattened tokens (<s> w.. </s>) per chunk; planned
    from lengths alone, so a token file's view is sliced (another view), never read here."""
    start = at = used = 0
    for lengths in iter_lengths(sequences):
        for need in (lengths + 2).tolist():
            if need > capacity:
                raise UsageError(f"--memory is too small for a training sequence of {need - 2:,} tokens: "
                                 f"sentence context counts each line in one piece, which needs about "
                                 f"{human_bytes(need * bytes_per_tok)}; raise --memory")
            if used + need > capacity:
                yield sequences[start:at]
                start, used = at, 0
            used += need
            at += 1
    if at > start:
        yield sequences[start:at]


def stream_pieces(sequences: Sequence, capacity: int) -> Iterator[np.ndarray]:
    """The stream `<s> s1 </s> s2 </s> ..` cut into consecutive pieces of exactly `capacity` tokens
    (the last one shorter); long sequences are cut too. A token file's view reads each piece's stretch."""
    if hasattr(sequences, "stream_slice"):
        total = 1 + sequences.num_tokens
        for lo in range(0, total, capacity):
            yield sequences.stream_slice(lo, lo + capacity)
        return
    yield from _stream_pieces_of_list(sequences, capacity)


def _stream_pieces_of_list(sequences: Sequence, capacity: int) -> Iterator[np.ndarray]:
    buf = np.empty(capacity, dtype=np.int64)
    buf[0] = BOS
    used = 1
    for part in iter_slices(sequences):
        for seq in part:
            seq = np.asarray(seq, dtype=np.int64)
            at = 0
            while True:
                take = min(seq.size - at, capacity - used)
                buf[used:used + take] = seq[at:at + take]
                used += take
                at += take
                if used == capacity:
                    yield buf
                    buf = np.empty(capacity, dtype=np.int64)
                    used = 0
                if at == seq.size:
                    break
            buf[used] = EOS
            used += 1
            if used == capacity:
                yield buf
                buf = np.empty(capacity, dtype=np.int64)
                used = 0
    if used:
        yield buf[:used]


def _pieces(sequences: Sequence, context: str, order: int, capacity: int):
    """(toks, depth, start, units) per chunk, as count_piece takes them."""
    if context == "stream":
        keep = order - 1
        carry = np.zeros(0, dtype=np.int64)
        for piece in stream_pieces(sequences, max(capacity - keep, 1)):
            toks = np.concatenate([carry, piece])
            yield toks, np.arange(toks.size, dtype=np.int64), carry.size, 0
            carry = toks[toks.size - min(keep, toks.size):].copy() if keep else carry
    else:
        for chunk in sentence_chunks(sequences, capacity, bytes_per_token(order)):
            toks, depth = flatten(chunk, "sentence")
            yield toks, depth, 0, len(chunk)


SPILL_PREFIX = "lmkit-ngram-"  # + host + pid: remove_stale_scratch finds what a killed run left


def make_spill_folder(root: Path) -> Path:
    """This process's spill folder in `root` (named after host and pid, so a killed run's is found later)."""
    try:
        return scratch_dir(root, SPILL_PREFIX)
    except OSError as exc:
        raise UsageError(f"--tmp {root}: cannot create a spill folder there ({exc.strerror or exc})") from None


def count_external(sequences: Sequence, vocab_size: int, order: int, context: str, memory: int,
                   tmp: Path | None = None, log: Callable[[str], None] = lambda _: None,
                   ) -> tuple[NgramCounts, dict]:
    """count_ngrams' result with counting buffers bounded by `memory` bytes; (counts, fit_info part)."""
    capacity = max(memory // bytes_per_token(order), 1)
    total = text_tokens(sequences, context)
    stats = ExternalStats(chunk_tokens=capacity, rss_before=current_rss_bytes())
    root = Path(tmp) if tmp is not None else Path(tempfile.gettempdir())
    remove_stale_scratch(root, SPILL_PREFIX, log)  # also when this text needs no spill
    if total <= capacity:
        start = time.perf_counter()
        counts = count_ngrams(sequences, vocab_size, order, context)
        stats.chunks, stats.largest_chunk_tokens = 1, total
        stats.count_seconds = time.perf_counter() - start
        log(f"counting: the text ({total:,} tokens) fits --memory {human_bytes(memory)}; no spill")
        return counts, stats.to_dict(memory, order, counts)
    folder = make_spill_folder(root)
    try:
        counts = _count_spilled(sequences, vocab_size, order, context, memory, capacity, total,
                                SpillDir(folder), stats, log)
    except OSError as exc:
        if is_disk_full(exc):
            raise LmkitError(f"disk full while spilling n-gram counts into {root} ({human_bytes(stats.spilled_bytes)}"
                             " written); give --tmp a folder on a larger disk") from None
        raise LmkitError(f"cannot write n-gram spill files in {root}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return counts, stats.to_dict(memory, order, counts)


def _count_spilled(sequences, V: int, order: int, context: str, memory: int, capacity: int, total: int,
                   spill: SpillDir, stats: ExternalStats, log) -> NgramCounts:
    expected = -(-total // max(capacity - (order - 1 if context == "stream" else 0), 1))
    log(f"counting {total:,} tokens in about {expected:,} chunks of at most {capacity:,} "
        f"(--memory {human_bytes(memory)}), spilling sorted runs to {spill.root}")
    start = time.perf_counter()
    unigrams = np.zeros(V, dtype=np.int64)
    chunks = ChunkRuns(spill, order)
    tokens = units = 0
    every = max(-(-expected // 10), 1)  # about ten progress lines
    progress = current()
    progress.phase("counting", total=expected, label="chunks")
    for toks, depth, first, seqs in _pieces(sequences, context, order, capacity):
        stats.chunks += 1
        stats.largest_chunk_tokens = max(stats.largest_chunk_tokens, int(toks.size))
        tokens += int(toks.size - first) - seqs  # sentence: every <s> is context; stream: the first one
        units += seqs
        pieces = count_piece(toks, depth, first, V, order)
        unigrams += next(pieces)
        for piece in pieces:
            stats.spilled_runs += chunks.add(piece) > 0
        progress.update(min(stats.chunks, expected))
        if stats.chunks % every == 0:
            log(f"counted chunk {stats.chunks:,}/{expected:,} ({human_bytes(chunks.spilled_bytes())} spilled)")
    if context == "stream":
        tokens, units = tokens - 1, 1
    chunks.finish()
    stats.count_seconds = time.perf_counter() - start
    start = time.perf_counter()
    merger = Merger.for_budget(memory, spill, MERGE_ROW_BYTES)
    progress.phase("merging", label=f"{stats.spilled_runs:,} sorted runs")
    log(f"merging {stats.spilled_runs:,} sorted runs, order by order (up to {merger.fan_in} at a time)")
    counts = assemble_spilled(V, order, unigrams, chunks, merger, tokens, units)
    stats.merge_seconds = time.perf_counter() - start
    stats.spilled_bytes, stats.spill_files = spill.bytes, spill.files
    stats.merge_passes = merger.stats.passes
    return counts
