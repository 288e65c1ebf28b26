"""Word-level tokenising and id mapping of many lines at once with Apache Arrow's kernels.

Splitting and mapping in Python costs ~100 ns a token (`str.split`, a dict look-up, a list); Arrow splits a
whole text's lines and maps every token in C++, ~10x faster, with the same result: fields are split on ASCII
whitespace only (KenLM's rule, data/tokenize.py), so NBSP and other Unicode spaces stay inside tokens.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..parallel import cuts, parts, run_parts
from ..protocol import BLANK_CHARACTERS

# Every Arrow buffer lmkit makes comes from the system allocator. Arrow's default pool (mimalloc) gives freed pages
# back and faults them in again: PTB's `lmkit train --model ngram:kn5` spent 0.5-0.9 s in the kernel with it and
# 0.18 s without (1.8-2.1 s -> 1.43 s wall, 385 -> 320 MB peak; docs/benchmarks.md). Passed explicitly, not set as
# the process default, so a program that imports lmkit keeps its own choice.
POOL = pa.system_memory_pool()


def split_words(lines: list[str]) -> tuple[pa.Array, np.ndarray]:
    """(every token of every line, back to back; the number of tokens on each line)."""
    if not lines:
        return pa.array([], pa.large_string(), memory_pool=POOL), np.zeros(0, dtype=np.int64)
    split = pc.ascii_split_whitespace(pa.array(lines, pa.large_string(), memory_pool=POOL), memory_pool=POOL)
    tokens = split.values
    # Arrow, unlike str.split(), gives an empty field for a leading or trailing blank (and one for "")
    real = pc.greater(pc.binary_length(tokens, memory_pool=POOL), 0, memory_pool=POOL)
    starts = split.offsets.to_numpy()[:-1]
    lengths = np.add.reduceat(real.to_numpy(zero_copy_only=False).astype(np.int64), starts) if len(tokens) else \
        np.zeros(len(lines), dtype=np.int64)
    if int(lengths.sum()) != len(tokens):
        tokens = pc.filter(tokens, real, memory_pool=POOL)
    return tokens, lengths


def blank_lines(lines: list[str]) -> np.ndarray:
    """Per line, True when it holds nothing but spaces, tabs, CR, VT and FF (data/tokenize.is_blank's rule)."""
    if not lines:
        return np.zeros(0, dtype=bool)
    text = pa.array(lines, pa.large_string(), memory_pool=POOL)
    trimmed = pc.utf8_trim(text, characters=BLANK_CHARACTERS, memory_pool=POOL)
    return pc.binary_length(trimmed, memory_pool=POOL).to_numpy(zero_copy_only=False) == 0


# every character Python's str.isspace() accepts, which includes every Unicode White_Space character
_ANY_SPACE = r"\t\n\x0b\x0c\r\x1c-\x1f \x85\xa0\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}"
_SINGLE_SPACED = f"^ ?[^{_ANY_SPACE}]+( [^{_ANY_SPACE}]+)* ?$"


def single_spaced_shapes(lines: list[str]) -> np.ndarray:
    """Per line, -1 unless it is words separated by single spaces with at most one space before and after them
    and no other whitespace of any kind (Unicode's included); else bit 1 for the leading space, bit 2 for the
    trailing one."""
    if not lines:
        return np.zeros(0, dtype=np.int8)
    text = pa.array(lines, pa.large_string(), memory_pool=POOL)
    fits = pc.match_substring_regex(text, _SINGLE_SPACED, memory_pool=POOL).to_numpy(zero_copy_only=False)
    lead = pc.starts_with(text, " ", memory_pool=POOL).to_numpy(zero_copy_only=False)
    trail = pc.ends_with(text, " ", memory_pool=POOL).to_numpy(zero_copy_only=False)
    trail &= pc.utf8_length(text, memory_pool=POOL).to_numpy() > 1
    return np.where(fits, lead.astype(np.int8) | (trail.astype(np.int8) << 1), -1).astype(np.int8)


SPLIT_PARALLEL_MIN_LINES = 16384  # lines per part below which splitting in parts does not pay


@dataclass
class _Coded:
    """One part's tokens as Arrow's dictionary array, and the tokens on each of its lines."""

    coded: pa.DictionaryArray
    lengths: np.ndarray

    @property
    def dictionary(self) -> pa.Array:
        return self.coded.dictionary

    @property
    def indices(self) -> pa.Array:
        return self.coded.indices


@dataclass
class Words:
    """A text's word-level tokens as its distinct words and, per token, its index among them (Arrow's dictionary
    encoding): counting is a bincount and mapping to a vocabulary looks up each distinct word once."""

    distinct: pa.Array
    index: np.ndarray  # (tokens,) int32: position of each token in `distinct`
    lengths: np.ndarray  # tokens on each line

    @classmethod
    def split(cls, lines: list[str], side_by_side: bool = False) -> "Words":
        """`side_by_side`: a long text in parts on the CPUs (lmkit/parallel.py; Arrow lets go of the GIL), ~40 %
        faster on two cores for twice the transient memory: for texts to score, not for a training text whose
        split is held while counting."""
        count = parts(len(lines), SPLIT_PARALLEL_MIN_LINES) if side_by_side else 1
        if count < 2:
            coded = cls._coded(lines)
            return cls(coded.dictionary, coded.indices.to_numpy(zero_copy_only=False), coded.lengths)
        at = cuts(len(lines), count)
        pieces = run_parts(lambda i: cls._coded(lines[at[i]:at[i + 1]]), count)
        # one dictionary for all parts, in the order of first occurrence, as one pass would have made it
        chunks = pa.chunked_array([piece.coded for piece in pieces]).unify_dictionaries(memory_pool=POOL).chunks
        index = np.concatenate([chunk.indices.to_numpy(zero_copy_only=False) for chunk in chunks])
        return cls(chunks[0].dictionary, index, np.concatenate([piece.lengths for piece in pieces]))

    @staticmethod
    def _coded(lines: list[str]) -> "_Coded":
        tokens, lengths = split_words(lines)
        return _Coded(pc.dictionary_encode(tokens, memory_pool=POOL), lengths)

    def counts(self) -> np.ndarray:
        """Occurrences of each distinct word."""
        return np.bincount(self.index, minlength=len(self.distinct))

    def counter(self) -> Counter:
        """The same Counter as counting the tokens one at a time."""
        return Counter(dict(zip(self.distinct.to_pylist(), self.counts().tolist())))

    def lines(self, rows: np.ndarray) -> "Words":
        """The tokens of some lines only, given as rows in ascending order (the others hold none: blank lines)."""
        return Words(self.distinct, self.index, self.lengths[rows])


def positions(tokens: pa.Array, words: list[str]) -> np.ndarray:
    """Index of each token in `words` (distinct), -1 where it is not among them."""
    found = pc.index_in(tokens, value_set=pa.array(words, pa.large_string(), memory_pool=POOL), memory_pool=POOL)
    found = pc.coalesce(found, pa.scalar(-1, found.type), memory_pool=POOL)
    return found.to_numpy(zero_copy_only=False).astype(np.int64)


def token_lengths(tokens: pa.Array) -> np.ndarray:
    """UTF-8 bytes of each token."""
    return pc.binary_length(tokens, memory_pool=POOL).to_numpy(zero_copy_only=False).astype(np.int64)
