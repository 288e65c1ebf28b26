"""Arrow's word-level tokenising (data/columnar.py) gives exactly what the one-line tokenizer gives."""

from __future__ import annotations

from collections import Counter
from itertools import chain

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from lmkit.data.columnar import Words, positions, split_words
from lmkit.data.corpus import Text, count_tokens, encode
from lmkit.data.tokenize import tokenize
from lmkit.data.vocab import UNK, Vocab
from lmkit.protocol import Protocol

# ASCII whitespace (split on), Unicode spaces and separators (kept inside tokens), reserved tokens as text
PIECES = ["a", "b", "cat", "é", "日本", " ", "  ", "\t", "\r", "\x0b", "\x0c", "\u00a0", "\u2003", "\x1c", "\x85",
          "<s>", "</s>", "<unk>", "<pad>", ""]
LINES = st.lists(st.lists(st.sampled_from(PIECES), max_size=8).map("".join), max_size=12)


@settings(max_examples=200, deadline=None)
@given(LINES)
def test_split_and_count_match_the_tokenizer(lines):
    expected = [tokenize(line, Protocol()) for line in lines]
    tokens, lengths = split_words(lines)
    assert lengths.tolist() == [len(t) for t in expected]
    assert tokens.to_pylist() == list(chain.from_iterable(expected))
    assert Words.split(lines).counter() == Counter(chain.from_iterable(expected))


@settings(max_examples=100, deadline=None)
@given(LINES, LINES)
def test_encoding_matches_the_vocabularys_own(train, test):
    vocab = Vocab.build(Counter(chain.from_iterable(tokenize(ln, Protocol()) for ln in train + ["x"])))
    tokens, _ = split_words(test)
    got = vocab.encode_found(positions(tokens, vocab.tokens))
    want = vocab.encode(list(chain.from_iterable(tokenize(ln, Protocol()) for ln in test)))
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1] == want[1]


def test_corpus_encoding_keeps_lines_blanks_and_reserved_tokens():
    p = Protocol()
    text = Text("t", ["the cat  sat ", "", "  ", "<s> cat\u00a0x </s>", "dog"], "")
    vocab = Vocab.build(count_tokens(text, p))
    assert vocab.counts[vocab.index["cat"]] == 1 and "cat\u00a0x" in vocab.index
    enc = encode(text, vocab, p)
    assert enc.line_numbers == [1, 4, 5] and enc.skipped_blank_lines == 2 and enc.reserved_tokens == 2
    assert [s.tolist() for s in enc.sequences] == [[vocab.index["the"], vocab.index["cat"], vocab.index["sat"]],
                                                   [UNK, vocab.index["cat\u00a0x"], UNK], [vocab.index["dog"]]]


def test_lowercase_and_normalisation_apply_before_splitting():
    p = Protocol(lowercase=True, normalize="NFKC")
    text = Text("t", ["The CAT", "ﬁsh THE"], "")  # the ligature ﬁ becomes 'fi' under NFKC
    counts = count_tokens(text, p)
    assert counts == Counter({"the": 2, "cat": 1, "fish": 1})


@settings(max_examples=150, deadline=None)
@given(LINES, st.booleans(), st.sampled_from([None, "NFKC"]))
def test_encoding_skips_exactly_the_lines_the_one_line_rule_calls_blank(lines, keep_blank, normalize):
    """encode finds blank lines from the split (a line without words) or, when normalising can turn characters into
    spaces, line by line: either way the lines data/tokenize.is_blank calls blank, and the same sequences."""
    from lmkit.data.tokenize import is_blank

    p = Protocol(keep_blank_lines=keep_blank, normalize=normalize)
    text = Text("t", lines, "")
    vocab = Vocab.build(count_tokens(text, p) + Counter({"x": 1}))
    enc = encode(text, vocab, p)
    kept = [i + 1 for i, ln in enumerate(lines) if keep_blank or not is_blank(ln)]
    assert list(enc.line_numbers) == kept
    assert enc.skipped_blank_lines == (0 if keep_blank else len(lines) - len(kept))
    expect = [vocab.encode(tokenize("" if is_blank(lines[i - 1]) else lines[i - 1], p))[0].tolist() for i in kept]
    assert [s.tolist() for s in enc.sequences] == expect



@settings(max_examples=60, deadline=None)
@given(LINES)
def test_splitting_in_parts_gives_what_one_pass_gives(lines):
    """Words.split(side_by_side=True) cuts a long text into parts split on several threads; their dictionaries are
    unified in the order of first occurrence, so distinct words, per-token indices and line lengths are those of
    one pass (lines repeated and shuffled so that later parts both reuse and add words)."""
    import pytest

    from lmkit import parallel
    from lmkit.data import columnar

    text = (lines + ["z y", " w", ""]) * 5 + list(reversed(lines)) + ["only-in-the-last-part"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(columnar, "SPLIT_PARALLEL_MIN_LINES", 4)
        mp.setattr(parallel, "cpus", lambda: 3)
        assert parallel.parts(len(text), columnar.SPLIT_PARALLEL_MIN_LINES) == 3
        together = Words.split(text, side_by_side=True)
    alone = Words.split(text)
    assert together.distinct.to_pylist() == alone.distinct.to_pylist()
    assert together.index.tolist() == alone.index.tolist()
    assert together.lengths.tolist() == alone.lengths.tolist()
