"""Vocabulary building, reserved ids, hashing and file validation."""

from collections import Counter

import pytest

from lmkit.data.corpus import count_tokens, encode, read_text
from lmkit.data.tokenize import tokenize
from lmkit.data.vocab import BOS, EOS, PAD, UNK, Vocab
from lmkit.errors import ModelError, UsageError
from lmkit.protocol import Protocol


def test_reserved_ids_and_order():
    v = Vocab.build(Counter({"b": 2, "a": 2, "c": 5, "d": 1}), min_count=2)
    # most frequent first, ties broken alphabetically; 'd' (count 1) is below min-count
    assert v.tokens == ["<pad>", "<unk>", "<s>", "</s>", "c", "a", "b"]
    assert (PAD, UNK, BOS, EOS) == (0, 1, 2, 3)
    assert v.counts[UNK] == 1  # the dropped 'd' is counted as <unk>


def test_max_size_counts_reserved_ids():
    v = Vocab.build(Counter({"a": 3, "b": 2, "c": 1}), max_size=6)
    assert len(v) == 6 and v.tokens[4:] == ["a", "b"]


def test_literal_unk_and_reserved_tokens():
    v = Vocab.build(Counter({"x": 1}))
    ids, reserved = v.encode(["x", "<unk>", "<s>", "</s>", "<pad>", "y"])
    assert ids.tolist() == [4, UNK, UNK, UNK, UNK, UNK]
    assert reserved == 3  # <s>, </s>, <pad> cannot be text


def test_hash_is_content_based(tmp_path):
    a = Vocab.build(Counter({"a": 1, "b": 2}))
    b = Vocab.build(Counter({"b": 2, "a": 1}))
    c = Vocab.build(Counter({"a": 1, "b": 2}), lowercase=True)
    assert a.vocab_id == b.vocab_id != c.vocab_id
    a.save(tmp_path / "v.json")
    assert Vocab.load(tmp_path / "v.json").vocab_id == a.vocab_id


def test_edited_vocab_file_is_refused(tmp_path):
    v = Vocab.build(Counter({"a": 1, "b": 2}))
    p = tmp_path / "v.json"
    v.save(p)
    p.write_text(p.read_text().replace('"a"', '"z"'))
    with pytest.raises(ModelError, match="vocab_id"):
        Vocab.load(p)
    p.write_text(p.read_text()[:40])
    with pytest.raises(ModelError, match="not a readable vocabulary"):
        Vocab.load(p)


def test_bad_options():
    with pytest.raises(UsageError):
        Vocab.build(Counter({"a": 1}), min_count=0)
    with pytest.raises(UsageError):
        Vocab.build(Counter({"a": 1}), max_size=2)


def test_word_split_is_ascii_whitespace_only():
    p = Protocol()
    # NBSP (U+00A0) stays inside the token, as KenLM does; tabs and CR split
    assert tokenize("a\u00a0b c\td\r", p) == ["a\u00a0b", "c", "d"]
    assert tokenize("Ab", Protocol(lowercase=True)) == ["ab"]
    assert tokenize("a b", Protocol(level="char")) == ["a", " ", "b"]


def test_char_level_counts_and_encoding(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("ab\n\nba a\n")
    p = Protocol(level="char")
    t = read_text(f)
    counts = count_tokens(t, p)
    assert counts == Counter({"a": 3, "b": 2, " ": 1})
    v = Vocab.build(counts, level="char")
    enc = encode(t, v, p)
    assert enc.skipped_blank_lines == 1 and enc.line_numbers == [1, 3]
    assert enc.characters == 6 and enc.num_tokens == 8  # 6 chars + 2 line ends
