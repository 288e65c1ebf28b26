"""The fast way through an ARPA file: each section streamed through Apache Arrow's CSV reader into arrays.

Splitting millions of lines into Python strings and lists cost ~2.6 µs a line (PTB's 92 MiB file: 6 s).
Arrow's C++ reader cuts a section into record batches of about BLOCK_BYTES, and its compute kernels split the
fields, parse the numbers (correctly rounded) and map words to unigram indices, a batch at a time, with no
Python object per line. This reader never explains a problem: on anything unusual (damage, a duplicate, a word
that is not a unigram) it returns None, and the line reader in arpa.py reads the file again and names the
line. Both split fields on ASCII whitespace only, as KenLM does (data/tokenize.py: split_line).
"""

from __future__ import annotations

import gzip
import mmap
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from ...data.columnar import POOL
from ...logs import current
from ...parallel import parts, run_parts

# An ARPA line is a probability, at most N words and a back-off weight; KenLM's longest lines are well under
# 100 bytes. A longer "line" is a file without line breaks or binary data, refused before it is held whole.
MAX_LINE_BYTES = 1 << 20
BLOCK_BYTES = 1 << 24  # bytes of a section parsed at once: bounds the reader's temporary arrays


# The whole line is one CSV "column": a line holding the delimiter (a control character no ARPA writer
# emits) becomes two columns, an error that sends the file to the line reader.
_DELIMITER = "\x1f"


@dataclass
class ArpaArrays:
    """An ARPA file's content in file order: unigram words and log10 values, then per order >= 2 the
    (M, n) word matrix (indices of unigram lines), log10 probabilities and log10 back-offs (0 if absent)."""

    words: list[str]
    log10p: np.ndarray
    log10bo: np.ndarray
    higher: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)


def read_arpa_blocks(path: Path) -> ArpaArrays | None:
    """The file's arrays, or None when it is damaged or unusual (the line reader then takes over)."""
    raw = _map(path)
    if raw is None:
        return None
    progress = current()
    progress.phase("loading", total=len(raw), label=path.name)
    heads = _headers(raw)
    declared = _declared(raw, heads)
    if declared is None:
        return None
    N = len(declared)
    names = [_line(raw, h) for h in heads]
    if len(heads) != N + 2 or names[-1] != "\\end\\" or names[1:-1] != [f"\\{n}-grams:" for n in range(1, N + 1)]:
        return None
    data = pa.py_buffer(raw)
    bounds = [(raw.find(b"\n", heads[n]) + 1, heads[n + 1]) for n in range(1, N + 1)]
    # whitespace other than spaces, tabs and line breaks (memchr over the sections, ~0.01 s per 100 MB): the
    # tab-separated reader would take it for part of a word, so only the split reader may read such a file
    tabbed = all(raw.find(c, bounds[0][0], bounds[-1][1]) < 0 for c in _NOT_PLAIN_WORDS)

    read = [bounds[0][0]]  # bytes read so far: sections finish out of order when read side by side
    lock = threading.Lock()

    def section(n: int, unigrams: pa.Array | None):
        start, stop = bounds[n - 1]
        try:
            parsed = _section(data.slice(start, stop - start), n, N, unigrams, tabbed)
        except (pa.ArrowException, ValueError):
            return None
        with lock:
            read[0] += stop - start
            progress.update(read[0])
        return parsed if parsed is not None and len(parsed[1]) == declared[n - 1] else None

    first = section(1, None)
    if first is None:
        return None
    # the higher orders side by side, one group of sections per CPU (lmkit/parallel.py): PTB's 92 MiB file in 0.6
    # instead of 0.87 s on two cores, holding the sections being parsed at once
    orders = list(range(2, N + 1))
    count = parts(len(orders), 1)
    groups = [orders[i::count] for i in range(count)]
    done = run_parts(lambda i: [section(n, first[0]) for n in groups[i]], count)
    by_order = dict(zip((n for g in groups for n in g), (h for d in done for h in d)))
    higher = [by_order[n] for n in orders]
    if any(h is None for h in higher):
        return None
    progress.update(len(raw))
    return ArpaArrays(first[0].to_pylist(), first[1], first[2],
                      [(words.reshape(-1, n), logp, logbo) for n, (words, logp, logbo) in enumerate(higher, 2)])


def _map(path: Path):
    """The file's bytes: memory-mapped when plain, inflated when gzipped; None if unreadable or empty."""
    try:
        with path.open("rb") as fh:
            if fh.read(2) == b"\x1f\x8b":
                fh.seek(0)
                with gzip.GzipFile(fileobj=fh, mode="rb") as gz:
                    return _inflate(gz)
            if path.stat().st_size == 0:
                return None
            return mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, EOFError, zlib.error, ValueError):
        return None


def _inflate(gz) -> bytearray | None:
    """A gzipped file's text, given up (None) as soon as a line runs past MAX_LINE_BYTES: a file without
    line breaks is never inflated whole."""
    out = bytearray()
    run = 0  # bytes since the last line break
    while block := gz.read(MAX_LINE_BYTES):
        first, last = block.find(b"\n"), block.rfind(b"\n")
        if (run + len(block) if first < 0 else run + first) > MAX_LINE_BYTES:
            return None
        run = run + len(block) if last < 0 else len(block) - last - 1
        out += block
    return out or None


def _headers(raw) -> list[int]:
    """Offsets of every line that starts with a backslash (found with memchr: a backslash is rare)."""
    heads = []
    at = raw.find(b"\\")
    while at >= 0:
        if at == 0 or raw[at - 1] == 10:
            heads.append(at)
        at = raw.find(b"\\", at + 1)
    return heads


def _line(raw, at: int) -> str:
    end = raw.find(b"\n", at)
    return bytes(raw[at:end if end >= 0 else len(raw)]).decode("utf-8", "replace").strip()


def _declared(raw, heads: list[int]) -> list[int] | None:
    """The \\data\\ counts [ngram 1, ngram 2, ...], or None unless they are plain and complete."""
    if len(heads) < 2 or _line(raw, heads[0]) != "\\data\\":
        return None
    try:
        body = bytes(raw[raw.find(b"\n", heads[0]) + 1:heads[1]]).decode("utf-8")
    except UnicodeDecodeError:
        return None
    counts: dict[int, int] = {}
    for ln in filter(str.strip, body.split("\n")):
        key, _, val = ln.strip().partition("=")
        parts = key.split()
        if len(parts) != 2 or parts[0] != "ngram" or not parts[1].isdigit() or not val.strip().isdigit():
            return None
        if int(parts[1]) in counts:
            return None
        counts[int(parts[1])] = int(val)
    if not counts or sorted(counts) != list(range(1, len(counts) + 1)):
        return None
    return [counts[n] for n in range(1, len(counts) + 1)]


def _batches(section: pa.Buffer):
    """The section's lines, a record batch of about BLOCK_BYTES at a time."""
    reader = pcsv.open_csv(
        pa.BufferReader(section),
        read_options=pcsv.ReadOptions(column_names=["line"], block_size=BLOCK_BYTES),
        parse_options=pcsv.ParseOptions(delimiter=_DELIMITER, quote_char=False, escape_char=False,
                                        double_quote=False, ignore_empty_lines=True),
        convert_options=pcsv.ConvertOptions(column_types={"line": pa.string()}, strings_can_be_null=False,
                                            quoted_strings_can_be_null=False),
        memory_pool=POOL)
    for batch in reader:
        yield batch.column(0)


def _short(lines: pa.Array) -> bool:
    """No line longer than MAX_LINE_BYTES (the line reader refuses those)."""
    return not len(lines) or pc.max(pc.binary_length(lines)).as_py() <= MAX_LINE_BYTES


def _floats(fields: pa.Array, at: np.ndarray) -> np.ndarray | None:
    """The fields at `at` as finite float64 values (Arrow's parser rounds correctly, as float() does)."""
    values = pc.cast(pc.take(fields, pa.array(at), memory_pool=POOL), pa.float64(),
                     memory_pool=POOL).to_numpy(zero_copy_only=False)
    return values if np.isfinite(values).all() else None


def _section(section: pa.Buffer, n: int, N: int, unigrams: pa.Array | None, tabbed: bool = True):
    """(words, log10 p, log10 bo) of one section: the unigram words as an Arrow array, or above them the
    flat unigram-line index of every word (n per entry); None on anything the line reader must see.
    `tabbed`: the tab-separated reader may try first (no whitespace in the file it would misread)."""
    parsed = None
    if tabbed:
        try:
            parsed = _tabbed_section(section, n, N, unigrams)
        except (pa.ArrowException, ValueError):
            parsed = None
    return parsed if parsed is not None else _split_section(section, n, N, unigrams)


# ASCII whitespace other than the space inside a words field: the split reader would split there. (Words not
# single-spaced show up as a word count other than n, or as an empty word no unigram can be.)
_NOT_PLAIN_WORDS = (b"\v", b"\f", b"\r")


def _tabbed_section(section: pa.Buffer, n: int, N: int, unigrams: pa.Array | None):
    """_section for the layout KenLM, SRILM and lmkit write, `log10 p<TAB>w1 ... wn<TAB>log10 bo` with every
    back-off present: the CSV reader parses the numbers itself. None when the section is laid out otherwise
    (the split reader below then reads it)."""
    names = ["p", "w"] + (["b"] if n < N else [])
    reader = pcsv.open_csv(
        pa.BufferReader(section),
        read_options=pcsv.ReadOptions(column_names=names, block_size=BLOCK_BYTES),
        parse_options=pcsv.ParseOptions(delimiter="\t", quote_char=False, escape_char=False, double_quote=False,
                                        ignore_empty_lines=True),
        convert_options=pcsv.ConvertOptions(column_types={k: pa.string() if k == "w" else pa.float64() for k in names},
                                            strings_can_be_null=False, quoted_strings_can_be_null=False),
        memory_pool=POOL)
    return _collect(n, (_tabbed_batch(batch, n, N, unigrams) for batch in reader))


def _tabbed_batch(batch: pa.RecordBatch, n: int, N: int, unigrams: pa.Array | None):
    """(words, log10 p, log10 bo) of one batch of tab-separated lines, or None."""
    w = batch.column(1)
    if not _short(w):
        return None
    split = pc.split_pattern(w, " ", memory_pool=POOL)
    if not (pc.list_value_length(split).to_numpy(zero_copy_only=False) == n).all():
        return None
    p = batch.column(0).to_numpy(zero_copy_only=False)
    bo = batch.column(2).to_numpy(zero_copy_only=False) if n < N else np.zeros(len(p))
    if not (np.isfinite(p).all() and np.isfinite(bo).all()) or (p > 0).any():
        return None
    found = _words_of(split.values, n, unigrams)
    return None if found is None else (found, p, bo)


def _words_of(fields: pa.Array, n: int, unigrams: pa.Array | None):
    """The unigram words themselves (n == 1), else every word's unigram-line index; None for a word that is
    not a unigram."""
    if n == 1:
        return fields
    ids = pc.index_in(fields, value_set=unigrams, memory_pool=POOL)
    return None if ids.null_count else ids.to_numpy(zero_copy_only=False)  # int32: a unigram line's index


def _collect(n: int, parts):
    """A section's batches, each (words, log10 p, log10 bo), as one; None as soon as a batch is None."""
    words, logp, logbo = [], [], []
    for part in parts:
        if part is None:
            return None
        words.append(part[0])
        logp.append(part[1])
        logbo.append(part[2])
    logp = np.concatenate(logp) if logp else np.zeros(0)
    logbo = np.concatenate(logbo) if logbo else np.zeros(0)
    if n == 1:
        return (pa.concat_arrays(words) if words else pa.array([], pa.string())), logp, logbo
    return (np.concatenate(words) if words else np.zeros(0, dtype=np.int64)), logp, logbo


def _split_section(section: pa.Buffer, n: int, N: int, unigrams: pa.Array | None):
    """_section for any whitespace layout: each line trimmed and split on ASCII whitespace."""
    return _collect(n, (_split_batch(lines, n, N, unigrams) for lines in _batches(section)))


def _split_batch(lines: pa.Array, n: int, N: int, unigrams: pa.Array | None):
    """(words, log10 p, log10 bo) of one batch of lines split on whitespace, or None."""
    allowed = [n + 1] if n == N else [n + 1, n + 2]
    if not _short(lines):
        return None
    # trimmed first: Arrow's split, unlike str.split(), gives an empty field for a leading or trailing blank
    lines = pc.ascii_trim_whitespace(lines, memory_pool=POOL)
    blank = pc.equal(pc.binary_length(lines), 0)  # a line of spaces is formatting
    if pc.any(blank).as_py():
        lines = pc.filter(lines, pc.invert(blank), memory_pool=POOL)
    split = pc.ascii_split_whitespace(lines, memory_pool=POOL)
    counts = pc.list_value_length(split).to_numpy(zero_copy_only=False)
    starts = split.offsets.to_numpy()[:-1].astype(np.int64)
    if not np.isin(counts, allowed).all():
        return None
    fields = split.values
    p = _floats(fields, starts)
    has_bo = np.flatnonzero(counts == n + 2)
    bo = np.zeros(len(starts))
    if has_bo.size:
        values = _floats(fields, starts[has_bo] + n + 1)
        if values is None:
            return None
        bo[has_bo] = values
    if p is None or (p > 0).any():
        return None
    at = pa.array((starts[:, None] + np.arange(1, n + 1)).ravel())
    found = _words_of(pc.take(fields, at, memory_pool=POOL), n, unigrams)
    return None if found is None else (found, p, bo)
