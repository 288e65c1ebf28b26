"""Subword levels (bpe, unigram): deterministic byte-level tokenizers, no <unk>, every family through them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from clitools import bundled_prefix, cli, one_error_line
from lmkit import api
from lmkit.compare import compare_runs
from lmkit.data.corpus import Text, encode, read_text
from lmkit.data.tokenfile import encode_file
from lmkit.data.tokenize import detokenize, tokenize
from lmkit.data.vocab import SPECIALS, UNK, Vocab
from lmkit.errors import ModelError
from lmkit.pipeline.prepare import build_vocab
from lmkit.protocol import Protocol

ODD = ["to be, or not  to be:\tthat is", "caf\u00e9 \u00a0na\u00efve \u65e5\u672c\u8a9e \u2603 <unk> x", "   z"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A few thousand lines of the bundled corpus: enough text for real merges, small enough to be quick."""
    return bundled_prefix(tmp_path_factory.mktemp("sw") / "c", {"train": 3000, "valid": 200, "test": 200})


@pytest.mark.parametrize("level", ["bpe", "unigram"])
def test_tokenizers_are_deterministic_and_round_trip(corpus, tmp_path, level):
    a = build_vocab(corpus / "train.txt", level=level, max_size=600, output=tmp_path / "a.json")
    b = build_vocab(corpus / "train.txt", level=level, max_size=600)
    assert a.vocab_id == b.vocab_id and a.tokens == b.tokens and len(a) == 600
    assert a.tokens[:4] == list(SPECIALS) and max(a.counts) > 0
    assert a.counts[4:] == sorted(a.counts[4:], reverse=True)  # most frequent first, like a word vocabulary
    loaded = Vocab.load(tmp_path / "a.json")
    assert loaded.vocab_id == a.vocab_id and loaded.level == level
    p = Protocol(level=level)
    for line in ODD:
        pieces = tokenize(line, p, loaded)
        assert detokenize(pieces, level, loaded) == line  # bytes in, the same bytes out
    enc = encode(Text("odd", ODD, ""), loaded, p)
    flat = [int(i) for s in enc.sequences for i in s]
    assert flat.count(UNK) == 1 and enc.reserved_tokens == 0  # only the literal <unk>; no byte is unknown
    assert enc.unk_bytes == 0 and enc.text_bytes == sum(len(ln.encode()) + 1 for ln in ODD)


def test_other_sizes_give_other_vocabularies_and_too_small_is_refused(corpus):
    assert build_vocab(corpus / "train.txt", level="bpe", max_size=500).vocab_id != \
        build_vocab(corpus / "train.txt", level="bpe", max_size=600).vocab_id
    one_error_line(cli("vocab", "build", corpus / "train.txt", "--level", "bpe", "--vocab-size", "100"), 2,
                   "--vocab-size must be at least 261")
    one_error_line(cli("vocab", "build", corpus / "train.txt", "--level", "bpe", "--min-count", "3"), 2,
                   "--vocab-size")


def test_a_damaged_subword_vocabulary_is_refused(corpus, tmp_path):
    build_vocab(corpus / "train.txt", level="bpe", max_size=400, output=tmp_path / "v.json")
    data = json.loads((tmp_path / "v.json").read_text())
    for edit, needle in ((lambda d: d["tokens"].__setitem__(10, "zzz"), "pieces are not its tokens"),
                         (lambda d: d.pop("tokenizer"), "needs a tokenizer"),
                         (lambda d: d["tokenizer"]["model"].__setitem__("type", "Nonsense"), "cannot be read")):
        bad = json.loads(json.dumps(data))
        edit(bad)
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(ModelError, match=needle):
            Vocab.load(tmp_path / "bad.json")


@pytest.mark.parametrize("model", ["ngram:kn3", "mlp", "lstm", "transformer"])
def test_every_family_trains_and_scores_at_bpe_level(corpus, tmp_path, model):
    opts = {} if model.startswith("ngram") else {"train_options": {"max_tokens": 3000, "batch_size": 8,
                                                                    "device": "cpu"}}
    run = api.train(api.TrainRequest(model=model, corpus=corpus, output=tmp_path / "r", level="bpe",
                                     max_size=500, progress=False, **opts))
    record = json.loads((run / "run.json").read_text())
    assert record["protocol"]["level"] == "bpe"
    test = record["metrics"]["test"]
    assert math.isfinite(test["perplexity"]) and test["oov"] == 0 and test["unk_byte_share"] == 0
    assert test["bits_per_byte"] * test["bytes"] * math.log(2) == pytest.approx(test["nll_nats"], rel=1e-9)
    again = api.score(run, corpus / "test.txt").summary()
    assert again["nll_nats"] == pytest.approx(test["nll_nats"], rel=1e-6)


def test_levels_meet_in_one_table_and_generate_decodes(corpus, tmp_path):
    runs = [api.train(api.TrainRequest(model="ngram:kn3", corpus=corpus, output=tmp_path / lv, level=lv,
                                       **({"max_size": 500} if lv in ("bpe", "unigram") else {}), progress=False))
            for lv in ("word", "char", "bpe", "unigram")]
    rows = compare_runs(runs)
    assert sorted(r["level"] for r in rows) == ["bpe", "char", "unigram", "word"]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4] and all(r["bits_per_byte"] > 0 for r in rows)
    out = cli("generate", runs[2], "--prompt", "to be", "--max-tokens", "8", "--seed", "1", "--format", "json")
    assert out.exit_code == 0
    text = json.loads(out.stdout)[0]["text"]
    assert text.startswith("to be") and "\u0120" not in text  # pieces decoded, no byte-level marks


def test_token_files_encode_subwords_like_the_text(corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("LMKIT_CACHE", str(tmp_path / "cache"))
    vocab = build_vocab(corpus / "train.txt", level="unigram", max_size=400)
    p = Protocol(level="unigram")
    direct = encode(read_text(corpus / "test.txt"), vocab, p)
    mapped = encode_file(corpus / "test.txt", vocab, p, block_bytes=4096)[0].encoded()
    assert [list(s) for s in mapped.sequences] == [list(s) for s in direct.sequences]
    assert mapped.text_bytes == direct.text_bytes


def test_coverage_of_a_subword_vocabulary_has_no_unknown_bytes(corpus, tmp_path):
    from lmkit.pipeline.prepare import vocab_report

    build_vocab(corpus / "train.txt", level="bpe", max_size=400, output=tmp_path / "v.json")
    odd = tmp_path / "odd.txt"
    odd.write_text("\n".join(ODD) + "\n", encoding="utf-8")
    cov = vocab_report(tmp_path / "v.json", coverage=odd)["coverage"]
    assert cov["tokens"] > sum(len(ln.split()) for ln in ODD) and cov["oov_tokens"] == 1  # the literal <unk>


PIECES = ["the", "king", "caf\u00e9", "<unk>", "<s>", "'s", "--", "42", " ", " ", "  ", "\t", "\u00a0", "\u2003",
          "\x1c", "\x85", "\u3000", "x"]


@pytest.mark.parametrize("level", ["bpe", "unigram"])
def test_encoding_a_distinct_word_at_a_time_gives_the_libraries_pieces(corpus, level):
    """Subword.encode runs lines of single-spaced words a distinct word at a time: the same ids as the library
    encoding each whole line, whatever the spacing."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    vocab = build_vocab(corpus / "train.txt", level=level, max_size=500)
    sw = vocab.subword
    assert sw.by_words

    @settings(max_examples=150, deadline=None)
    @given(st.lists(st.lists(st.sampled_from(PIECES), max_size=7).map("".join), min_size=1, max_size=8))
    def same(lines):
        flat, lengths = sw.encode(lines)
        expected = [e.ids for e in sw.tokenizer.encode_batch(lines, add_special_tokens=False)]
        assert lengths.tolist() == [len(e) for e in expected]
        assert flat.tolist() == [i for e in expected for i in e]

    same()
    text = (corpus / "test.txt").read_text(encoding="utf-8").splitlines() + [" a b ", " lead", "trail "]
    flat, _ = sw.encode(text)
    assert flat.tolist() == [i for e in sw.tokenizer.encode_batch(text, add_special_tokens=False) for i in e.ids]
