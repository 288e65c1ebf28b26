"""Scoring edges mutation testing found unpinned (docs/testing.md, bench/mutation.py perplexity): empty
files, keep=False, records without words, a model returning the wrong shape, degenerate log-probabilities.

The hand-computed columns themselves are pinned in test_pins_scoring.py."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from lmkit.data.corpus import Text, encode
from lmkit.data.vocab import EOS, UNK, Vocab
from lmkit.evaluate.perplexity import score_encoded
from lmkit.protocol import Protocol

LN2 = math.log(2)


class Fixed:
    """What score_encoded needs of a model: every target (words and </s>) costs `bits[id]` bits."""

    label = "fixed"
    normalised = True

    def __init__(self, protocol: Protocol, bits: dict[int, float], drop_last: bool = False):
        self.protocol, self.bits, self.drop_last = protocol, bits, drop_last

    def sequence_logprobs(self, sequences):
        out = [np.array([-self.bits[int(t)] * LN2 for t in [*s, EOS]]) for s in sequences]
        return [lp[:-1] for lp in out] if self.drop_last else out


def vocab() -> Vocab:
    return Vocab(["<pad>", "<unk>", "<s>", "</s>", "a", "b"], [0, 0, 0, 0, 2, 1])


def score(lines, bits=None, protocol=None, **kw):
    protocol = protocol or Protocol()
    v = vocab() if protocol.level == "word" else Vocab(["<pad>", "<unk>", "<s>", "</s>", "a"], [0, 0, 0, 0, 1])
    model = Fixed(protocol, bits or {4: 1, 5: 2, UNK: 4, EOS: 1})
    return score_encoded(model, encode(Text("mem", lines, "0" * 64), v, protocol), **kw)


@pytest.mark.parametrize("lines", [[], ["", "  "]])
def test_a_file_with_nothing_to_score(lines):
    s = score(lines)
    assert (s.tokens, s.oov, s.sequences, s.nll_nats, s.nll_nats_excl_oov) == (0, 0, 0, 0.0, 0.0)
    assert s.skipped_blank_lines == len(lines)
    assert math.isnan(s.cross_entropy_nats) and math.isnan(s.perplexity)
    assert s.perplexity_excl_oov is None
    assert s.sequence_nll.size == s.sequence_tokens.size == s.sequence_oov.size == 0
    assert s.per_line() == [] and s.per_token() == []
    summary = s.summary()
    assert summary["tokens"] == 0 and math.isnan(summary["perplexity"])


def test_char_level_file_with_nothing_to_score_has_no_bits_per_char():
    s = score(["", ""], protocol=Protocol(level="char"))
    assert s.summary()["bits_per_char"] is None


def test_keep_false_keeps_only_the_totals_and_the_per_sequence_arrays():
    full, lean = score(["a b", "b zz"]), score(["a b", "b zz"], keep=False)
    assert lean.logprobs == [] and lean.targets == [] and lean.line_numbers == []
    assert lean.per_line() == [] and lean.per_token() == []
    assert lean.summary() == full.summary()
    np.testing.assert_array_equal(lean.sequence_nll, full.sequence_nll)
    np.testing.assert_array_equal(lean.sequence_oov, full.sequence_oov)
    assert len(full.logprobs) == len(full.targets) == 2 and full.line_numbers == [1, 2]


def test_per_token_without_words_names_only_the_end_of_sentence():
    rows = score(["a b"]).per_token()
    assert [r["token"] for r in rows] == [None, None, "</s>"]
    assert [r["position"] for r in rows] == [1, 2, 3]


def test_per_line_perplexity_and_log10():
    (row,) = score(["a b"]).per_line()  # 1 + 2 + 1 bits over 3 tokens
    assert row["perplexity"] == pytest.approx(2 ** (4 / 3), rel=1e-12)
    assert row["log10prob"] == pytest.approx(-4 * math.log10(2), rel=1e-12)


def test_a_model_returning_the_wrong_shape_is_caught():
    protocol = Protocol()
    enc = encode(Text("mem", ["a b", "b"], "0" * 64), vocab(), protocol)
    with pytest.raises(AssertionError, match="fixed: sequence_logprobs returned the wrong shape"):
        score_encoded(Fixed(protocol, {4: 1, 5: 1, EOS: 1}, drop_last=True), enc)


def test_targets_and_counts_are_integers_per_sequence():
    s = score(["a zz", "zz zz b"])
    assert [t.tolist() for t in s.targets] == [[4, UNK, EOS], [UNK, UNK, 5, EOS]]
    assert s.sequence_tokens.tolist() == [3, 4] and s.sequence_oov.tolist() == [1, 2]
    assert s.sequence_tokens.dtype == s.sequence_oov.dtype == np.int64  # counts, as the Score fields declare


def test_degenerate_logprobs_give_nan_without_numpy_warnings():
    class PlusMinusInf(Fixed):
        def sequence_logprobs(self, sequences):
            return [np.array([np.inf, -np.inf])]

    protocol = Protocol()
    enc = encode(Text("mem", ["a"], "0" * 64), vocab(), protocol)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = score_encoded(PlusMinusInf(protocol, {}), enc)
    assert math.isnan(s.nll_nats) and math.isnan(s.perplexity) and math.isnan(s.sequence_nll[0])
