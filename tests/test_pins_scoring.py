"""The Score columns pinned on hand-computed cases: known per-token log-probabilities in, exact perplexity,
excl.-OOV perplexity, cross-entropy (nats and bits), OOV count, bits per char and per-line records out.

Probabilities are powers of two, so every expected number is written as an exact power of two."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from lmkit import api
from lmkit.data.corpus import Text, encode
from lmkit.data.vocab import EOS, UNK, Vocab
from lmkit.evaluate.perplexity import score_encoded
from lmkit.models.base import LanguageModel
from lmkit.protocol import Protocol

from clitools import cli

LN2 = math.log(2)


class FixedModel(LanguageModel):
    """Gives each scored token (words and </s>) the probability 2**-bits(token); nothing else."""

    kind = "fixed"
    Config = dict

    def __init__(self, vocab: Vocab, protocol: Protocol, bits: dict[int, float]):
        super().__init__({}, vocab, protocol)
        self.bits = bits

    def sequence_logprobs(self, sequences, batch_size: int = 256):
        return [np.array([-self.bits[int(t)] * LN2 for t in list(s) + [EOS]]) for s in sequences]

    def fit(self, train, valid, log=None):
        return {}

    def next_logprobs(self, contexts):
        raise NotImplementedError

    def save(self, run_dir):
        raise NotImplementedError

    @classmethod
    def load(cls, run_dir, config, vocab, protocol, device="cpu"):
        raise NotImplementedError

    def num_parameters(self):
        return 0


def word_vocab() -> Vocab:
    return Vocab(["<pad>", "<unk>", "<s>", "</s>", "a", "b"], [0, 0, 0, 0, 2, 1])


def test_word_level_columns_from_known_logprobs():
    vocab = word_vocab()
    protocol = Protocol()
    a, b = vocab.index["a"], vocab.index["b"]
    # bits per target: a 1, b 2, <unk> 4, </s> 1
    model = FixedModel(vocab, protocol, {a: 1, b: 2, UNK: 4, EOS: 1})
    text = Text("mem", ["a b zz", "zz", "   ", "b"], "0" * 64)
    score = score_encoded(model, encode(text, vocab, protocol))
    # line 1: a b <unk> </s> = 1+2+4+1 = 8 bits; line 2: <unk> </s> = 5 bits; line 3 blank (skipped);
    # line 4: b </s> = 3 bits.  16 bits over 8 tokens, 2 of them OOV (8 bits of it)
    summary = score.summary()
    assert (summary["tokens"], summary["oov"], summary["sequences"], summary["skipped_blank_lines"]) == (8, 2, 3, 1)
    assert summary["nll_nats"] == pytest.approx(16 * LN2, rel=1e-12)
    assert summary["cross_entropy_nats"] == pytest.approx(2 * LN2, rel=1e-12)
    assert summary["cross_entropy_bits"] == pytest.approx(2.0, rel=1e-12)
    assert summary["perplexity"] == pytest.approx(4.0, rel=1e-12)  # 2 ** (16 / 8)
    assert summary["perplexity_excl_oov"] == pytest.approx(2 ** (8 / 6), rel=1e-12)  # 8 bits over 6 tokens
    assert "bits_per_char" not in summary
    assert summary["normalised"] is True

    rows = score.per_line()
    assert [r["line"] for r in rows] == [1, 2, 4]
    assert [(r["tokens"], r["oov"]) for r in rows] == [(4, 1), (2, 1), (2, 0)]
    np.testing.assert_allclose([r["logprob"] for r in rows], [-8 * LN2, -5 * LN2, -3 * LN2], rtol=1e-12)
    np.testing.assert_allclose([r["log10prob"] for r in rows], [-8 * math.log10(2), -5 * math.log10(2),
                                                                -3 * math.log10(2)], rtol=1e-12)
    np.testing.assert_allclose([r["perplexity"] for r in rows], [4.0, 2 ** 2.5, 2 ** 1.5], rtol=1e-12)
    tokens = score.per_token([["a", "b", "zz"], ["zz"], ["b"]])
    assert [(t["line"], t["position"], t["token"], t["oov"]) for t in tokens] == [
        (1, 1, "a", False), (1, 2, "b", False), (1, 3, "zz", True), (1, 4, "</s>", False),
        (2, 1, "zz", True), (2, 2, "</s>", False), (4, 1, "b", False), (4, 2, "</s>", False)]
    np.testing.assert_allclose([t["logprob"] for t in tokens], np.array([1, 2, 4, 1, 4, 1, 2, 1]) * -LN2, rtol=1e-12)
    # per sequence, as compare --bootstrap resamples them
    np.testing.assert_allclose(score.sequence_nll, [8 * LN2, 5 * LN2, 3 * LN2], rtol=1e-12)
    assert score.sequence_tokens.tolist() == [4, 2, 2] and score.sequence_oov.tolist() == [1, 1, 0]


def test_every_token_oov_has_no_excl_oov_perplexity():
    vocab = word_vocab()
    model = FixedModel(vocab, Protocol(), {UNK: 3, EOS: 1})
    score = score_encoded(model, encode(Text("mem", ["zz yy"], "0" * 64), vocab, Protocol()))
    # <unk> <unk> </s>: 7 bits over 3 tokens, 2 OOV; without OOV: </s> alone, 1 bit
    assert (score.tokens, score.oov) == (3, 2)
    assert score.perplexity == pytest.approx(2 ** (7 / 3), rel=1e-12)
    assert score.perplexity_excl_oov == pytest.approx(2.0, rel=1e-12)


def test_char_level_bits_per_char():
    protocol = Protocol(level="char")
    vocab = Vocab(["<pad>", "<unk>", "<s>", "</s>", "a", "b", " "], [0, 0, 0, 0, 3, 2, 1])
    a, b, sp = vocab.index["a"], vocab.index["b"], vocab.index[" "]
    model = FixedModel(vocab, protocol, {a: 1, b: 3, sp: 2, UNK: 5, EOS: 2})
    score = score_encoded(model, encode(Text("mem", ["ab a", "bz"], "0" * 64), protocol=protocol, vocab=vocab))
    # "ab a": a b ' ' a </s> = 1+3+2+1+2 = 9 bits; "bz": b <unk> </s> = 3+5+2 = 10 bits
    # characters 4 + 2 = 6, plus one line break per sequence: 8 -> 19/8 bits per char
    summary = score.summary()
    assert (summary["tokens"], summary["oov"]) == (8, 1)
    assert summary["bits_per_char"] == pytest.approx(19 / 8, rel=1e-12)
    assert summary["cross_entropy_bits"] == pytest.approx(19 / 8, rel=1e-12)
    assert summary["perplexity_excl_oov"] == pytest.approx(2 ** (14 / 7), rel=1e-12)


def test_cli_score_columns_of_a_laplace_unigram(tmp_path: Path):
    """`lmkit score --format json` of an add-one unigram, every column from the hand probabilities.

    train "a a b": targets a 2, b 1, </s> 1 -> N = 4; predictable {<unk>, </s>, a, b}, |P| = 4;
    P(w) = (c(w) + 1) / (N + |P|): a 3/8, b 2/8, </s> 2/8, <unk> 1/8."""
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "train.txt").write_text("a a b\n")
    (corpus / "valid.txt").write_text("a\n")
    run = tmp_path / "run"
    api.train(api.TrainRequest(model="ngram:laplace1", corpus=corpus, output=run, min_count=1, context="sentence",
                               progress=False))
    test = tmp_path / "test.txt"
    test.write_text("a b zz\nzz\n\nb\n")
    r = cli("score", run, test, "--format", "json")
    assert r.exit_code == 0, r.stderr
    got = json.loads(r.stdout)
    p = {"a": 3 / 8, "b": 2 / 8, "</s>": 2 / 8, "<unk>": 1 / 8}
    targets = ["a", "b", "<unk>", "</s>", "<unk>", "</s>", "b", "</s>"]
    nll = -sum(math.log(p[t]) for t in targets)
    nll_in = -sum(math.log(p[t]) for t in targets if t != "<unk>")
    assert (got["tokens"], got["oov"], got["sequences"], got["skipped_blank_lines"]) == (8, 2, 3, 1)
    assert got["nll_nats"] == pytest.approx(nll, rel=1e-12)
    assert got["perplexity"] == pytest.approx(math.exp(nll / 8), rel=1e-12)
    assert got["perplexity_excl_oov"] == pytest.approx(math.exp(nll_in / 6), rel=1e-12)
    assert got["cross_entropy_bits"] == pytest.approx(nll / 8 / LN2, rel=1e-12)
    assert got["cross_entropy_nats"] == pytest.approx(nll / 8, rel=1e-12)

    r = cli("score", run, test, "--per-line", "--format", "jsonl")
    assert r.exit_code == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    assert [(x["line"], x["tokens"], x["oov"]) for x in lines] == [(1, 4, 1), (2, 2, 1), (4, 2, 0)]
    assert lines[0]["logprob"] == pytest.approx(math.log(3 / 8 * 2 / 8 * 1 / 8 * 2 / 8), rel=1e-12)
    assert lines[2]["perplexity"] == pytest.approx(4.0, rel=1e-12)
