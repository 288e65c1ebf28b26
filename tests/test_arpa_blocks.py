"""The block reader (models/ngram/arpa_blocks.py) against the line reader: the same model from every file it
takes, and every damaged or unusual file handed back to the line reader, which names the line."""

from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import lmkit.models.ngram.arpa as arpa
from lmkit.data.vocab import Vocab
from lmkit.errors import ModelError
from lmkit.models.ngram import NgramConfig, NgramModel, load_arpa, write_arpa
from lmkit.models.ngram.arpa_blocks import read_arpa_blocks
from lmkit.protocol import Protocol
from test_arpa import HAND, TRAIN, enc

MORE = TRAIN + ["the cat sat on a mat", "a bird saw the cat", "the log sat on the dog", "caf\u00e9 au lait"]


@pytest.fixture
def written(tmp_path) -> str:
    vocab = Vocab.build(Counter(w for s in MORE for w in s.split()))
    m = NgramModel(NgramConfig(order=4, smoothing="kn"), vocab, Protocol())
    m.fit(enc(MORE, vocab), None)
    write_arpa(m, tmp_path / "m.arpa")
    return (tmp_path / "m.arpa").read_text(encoding="utf-8")


def by_lines(path: Path, monkeypatch) -> arpa.ArpaModel:
    with monkeypatch.context() as mp:
        mp.setattr(arpa, "read_arpa_blocks", lambda p: None)
        return load_arpa(path)


def assert_same(a, b) -> None:
    assert a.vocab.tokens == b.vocab.tokens and a.order == b.order
    for n in range(1, a.order + 1):
        np.testing.assert_array_equal(a.index.keys[n - 1], b.index.keys[n - 1])
        np.testing.assert_array_equal(a.est.logp[n - 1], b.est.logp[n - 1])
    for x, y in zip(a.est.logbo, b.est.logbo):
        np.testing.assert_array_equal(x, y)


def _section_lines(text: str, n: int) -> list[int]:
    lines = text.split("\n")
    start = lines.index(f"\\{n}-grams:") + 1
    stop = next(i for i in range(start, len(lines)) if lines[i].startswith("\\"))
    return [i for i in range(start, stop) if lines[i].strip()]


def crlf(t):
    return t.replace("\n", "\r\n")


def spaced(t):  # blank and space-only lines inside sections, trailing blanks, spaces for tabs
    lines = t.split("\n")
    i = lines.index("\\2-grams:")
    lines[i + 2:i + 2] = ["", "   \t "]
    return "\n".join(ln.replace("\t", "  ") + (" " if ln and ln[0] == "-" else "") for ln in lines)


def sparse_backoffs(t):  # SRILM leaves out back-offs of 0 (and some files leave out others)
    lines = t.split("\n")
    for i in _section_lines(t, 2)[::2]:
        if lines[i].count("\t") == 2:
            lines[i] = lines[i].rsplit("\t", 1)[0]
    return "\n".join(lines)


def exponents(t):  # other number spellings: an exponent, no digit before the point
    lines = t.split("\n")
    i = _section_lines(t, 3)[0]
    p, rest = lines[i].split("\t", 1)
    lines[i] = f"{float(p):.6e}\t{rest}"
    j = _section_lines(t, 2)[1]
    p, rest = lines[j].split("\t", 1)
    lines[j] = ("-." + p[3:] if p.startswith("-0.") else p) + "\t" + rest
    return "\n".join(lines)


def wide_words(t):  # tabs kept, but the words two spaces apart and a blank before them
    out = []
    for ln in t.split("\n"):
        parts = ln.split("\t")
        if len(parts) >= 2:
            parts[1] = " " + parts[1].replace(" ", "  ")
        out.append("\t".join(parts))
    return "\n".join(out)


def nbsp_word(t):  # Unicode spaces stay inside a word (KenLM splits on ASCII whitespace only)
    return t.replace("\tcat", "\tc\u00a0at").replace(" cat", " c\u00a0at")


VARIANTS = {"as written": lambda t: t, "crlf": crlf, "spaced": spaced, "sparse back-offs": sparse_backoffs,
            "exponents": exponents, "nbsp in a word": nbsp_word, "wide words": wide_words,
            "pruned (hand)": lambda t: HAND}


@pytest.mark.parametrize("packed", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_block_reader_takes_the_file_and_gives_the_line_readers_model(tmp_path, monkeypatch, written, variant,
                                                                       packed):
    text = VARIANTS[variant](written)
    path = tmp_path / ("v.arpa.gz" if packed else "v.arpa")
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if packed else data)
    assert read_arpa_blocks(path) is not None  # the fast path really is taken
    assert_same(load_arpa(path), by_lines(path, monkeypatch))


def test_a_word_with_a_unicode_space_is_one_word(tmp_path, written):
    path = tmp_path / "v.arpa"
    path.write_text(nbsp_word(written), encoding="utf-8")
    m = load_arpa(path)
    assert "c\u00a0at" in m.vocab.tokens and "cat" not in m.vocab.tokens and "caf\u00e9" in m.vocab.tokens


DAMAGE = {
    "unknown word": (lambda t: t.replace("\tthe cat\t", "\tthe zebra\t", 1), "'zebra' is not among the unigrams"),
    "not a number": (lambda t: _edit(t, 2, 3, lambda p, w, b: f"x{p}\t{w}\t{b}"), "not a number"),
    "NaN back-off": (lambda t: _edit(t, 1, 4, lambda p, w, b: f"{p}\t{w}\tNaN"), "not a finite number"),
    "probability above 0": (lambda t: _edit(t, 2, 0, lambda p, w, b: f"0.5\t{w}\t{b}"), "above 0"),
    "listed twice": (lambda t: _edit(t, 3, 1, lambda p, w, b: f"{p}\t{w}\t{b}\n{p}\t{w}\t{b}",
                                     count=+1), "listed twice"),
    "a field too many": (lambda t: _edit(t, 4, 0, lambda p, w, *b: f"{p}\t{w}\t-0.1\t-0.2"), "fields"),
    "wrong count": (lambda t: t.replace("ngram 2=", "ngram 2=9", 1), "ngram 2="),
    "no \\end\\": (lambda t: t.replace("\\end\\", ""), "\\end\\"),
    "unigram twice": (lambda t: _edit(t, 1, 5, lambda p, w, b: f"{p}\t{w}\t{b}\n{p}\t{w}\t{b}", count=+1),
                      "listed twice"),
}


def _edit(text: str, n: int, k: int, fn, count: int = 0) -> str:
    lines = text.split("\n")
    i = _section_lines(text, n)[k]
    p, w, *b = lines[i].split("\t")
    lines[i] = fn(p, w, *(b or [""]))
    out = "\n".join(lines)
    if count:
        before = int(text.split(f"ngram {n}=")[1].split("\n")[0])
        out = out.replace(f"ngram {n}={before}\n", f"ngram {n}={before + count}\n", 1)
    return out


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damage_goes_to_the_line_reader_which_names_the_line(tmp_path, written, damage):
    edit, needle = DAMAGE[damage]
    path = tmp_path / "bad.arpa"
    path.write_text(edit(written), encoding="utf-8")
    with pytest.raises(ModelError) as err:
        load_arpa(path)
    msg = str(err.value)
    assert needle in msg and "line " in msg and str(path) in msg and "\n" not in msg


def test_control_characters_in_words_are_read_alike(tmp_path, monkeypatch, written):
    """\x1f (the split reader's CSV delimiter) and \x0b inside words: neither reader splits on \x1f, both on
    \x0b (ASCII whitespace), whichever path of the block reader takes the file."""
    path = tmp_path / "v.arpa"
    path.write_text(written.replace("\tcat", "\tc\x1fat").replace(" cat", " c\x1fat"), encoding="utf-8")
    assert "c\x1fat" in load_arpa(path).vocab.tokens
    assert_same(load_arpa(path), by_lines(path, monkeypatch))
    lines = written.split("\n")
    i = _section_lines(written, 1)[-1]
    p, w, b = lines[i].split("\t")
    lines[i] = f"{p}\t\x0b{w}\t{b}"  # a leading vertical tab: whitespace, so the same word
    path.write_text("\n".join(lines), encoding="utf-8")
    assert read_arpa_blocks(path) is not None
    assert_same(load_arpa(path), by_lines(path, monkeypatch))


def test_kenlm_reference_files_take_the_block_reader(monkeypatch):
    from conftest import shared_path

    path = shared_path("reference", "kenlm", "tinyshakespeare", "kn3.arpa.gz")
    assert read_arpa_blocks(path) is not None
    assert_same(load_arpa(path), by_lines(path, monkeypatch))


@pytest.mark.parametrize("shuffled,top", [(False, 40), (True, 40), (True, 60)],
                         ids=["sorted queries", "random queries (packed sort)", "random queries (argsort)"])
def test_find_searches_large_query_sets_in_sorted_order_with_the_same_answers(shuffled, top):
    """Above SORTED_SEARCH_MIN, find() sorts the queries first (2-3x faster on large tables): same answers, whether
    each query and its position fit in 63 bits together (sorted as packed values) or not (argsort)."""
    from lmkit.models.ngram.counts import SORTED_SEARCH_MIN, find

    rng = np.random.default_rng(0)
    keys = np.unique(rng.integers(0, 1 << top, 3 * SORTED_SEARCH_MIN))
    query = np.concatenate([rng.choice(keys, 2 * SORTED_SEARCH_MIN), rng.integers(0, 1 << top, 1000)])
    query = rng.permutation(query) if shuffled else np.sort(query)
    expect = np.searchsorted(keys, query)
    expect = np.where((expect < keys.size) & (keys[np.minimum(expect, keys.size - 1)] == query), expect, -1)
    got = find(keys, query)
    np.testing.assert_array_equal(got, expect)
    assert (got >= 0).sum() >= 2 * SORTED_SEARCH_MIN


@pytest.mark.parametrize("copies", [1, 3, 50])
def test_find_answers_repeated_queries_each_in_its_place(copies):
    """Sorted queries that repeat (a text's n-grams do) are searched once per distinct value when few are distinct
    (REPEATS_WORTH_SKIPPING); every copy gets its own answer, hits and misses alike, in its query's place."""
    from lmkit.models.ngram.counts import REPEATS_WORTH_SKIPPING, SORTED_SEARCH_MIN, find

    rng = np.random.default_rng(2)
    keys = np.unique(rng.integers(0, 1 << 40, 4 * SORTED_SEARCH_MIN))
    distinct = np.concatenate([rng.choice(keys, SORTED_SEARCH_MIN, replace=False),
                               rng.integers(keys[0] + 1, 1 << 40, 500), [keys[0], keys[-1], keys[-1] + 1]])
    query = rng.permutation(np.repeat(distinct, copies))
    expect = np.searchsorted(keys, query)
    expect = np.where((expect < keys.size) & (keys[np.minimum(expect, keys.size - 1)] == query), expect, -1)
    np.testing.assert_array_equal(find(keys, query), expect)
    assert (np.unique(query).size < query.size * REPEATS_WORTH_SKIPPING) == (copies > 1)  # both paths are taken


def test_find_splits_very_large_query_sets_across_cpus_with_the_same_answers(monkeypatch):
    """Above PARALLEL_MIN queries, find() searches parts of them side by side in threads: the same answers, each in
    its query's place (four parts here, on any machine)."""
    from lmkit import parallel
    from lmkit.models.ngram import counts

    monkeypatch.setattr(counts, "PARALLEL_MIN", 1000)
    monkeypatch.setattr(parallel, "cpus", lambda: 4)
    rng = np.random.default_rng(1)
    keys = np.unique(rng.integers(0, 1 << 40, 5000))
    query = rng.permutation(np.concatenate([rng.choice(keys, 3000), rng.integers(0, 1 << 40, 1100)]))
    expect = np.searchsorted(keys, query)
    expect = np.where((expect < keys.size) & (keys[np.minimum(expect, keys.size - 1)] == query), expect, -1)
    np.testing.assert_array_equal(counts.find(keys, query), expect)
