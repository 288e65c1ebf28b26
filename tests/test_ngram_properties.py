"""Property test (as nltk.lm's): every distribution sums to 1 over the predictable set.

For every smoothing but stupid backoff (scores, not probabilities), orders 1-4, both context modes,
random tiny corpora (where counts-of-counts are degenerate and every fallback path runs) and random
contexts (seen, unseen, with <unk>, shorter and longer than the order)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmkit.data.corpus import Encoded
from lmkit.data.vocab import BOS, PAD, SPECIALS, UNK, Vocab
from lmkit.models.base import LanguageModel
from lmkit.models.ngram import NgramConfig, NgramModel
from lmkit.protocol import Protocol

NORMALISED = ("mle", "laplace", "addk", "katz", "jm", "wb", "kn", "kn-basic")


def corpus(n_words: int):
    word = st.integers(min_value=4, max_value=3 + n_words)
    sentence = st.lists(word, min_size=0, max_size=7)
    return st.lists(sentence, min_size=1, max_size=6)


@st.composite
def setups(draw):
    n_words = draw(st.integers(min_value=1, max_value=5))
    train = draw(corpus(n_words))
    valid = draw(corpus(n_words))
    extra = draw(st.integers(min_value=0, max_value=2))  # vocabulary words never seen in training
    tokens = list(SPECIALS) + [f"w{i}" for i in range(n_words + extra)]
    any_id = st.integers(min_value=0, max_value=len(tokens) - 1).filter(lambda i: i not in (PAD, BOS))
    contexts = draw(st.lists(st.lists(any_id, max_size=5), min_size=1, max_size=4))
    contexts = [[BOS] + c if draw(st.booleans()) else c for c in contexts]
    return dict(
        tokens=tokens, train=train, valid=valid, contexts=contexts,
        smoothing=draw(st.sampled_from(NORMALISED)), order=draw(st.integers(min_value=1, max_value=4)),
        context=draw(st.sampled_from(["sentence", "stream"])),
        k=draw(st.sampled_from([1.0, 0.05, 0.0, "auto"])),
    )


def enc(seqs):
    arrs = [np.array(s, dtype=np.int32) for s in seqs]
    return Encoded("gen", "", arrs, list(range(1, len(arrs) + 1)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(setups())
def test_rows_sum_to_one_over_the_predictable_set(s):
    vocab = Vocab(s["tokens"], [0] * len(s["tokens"]))
    protocol = Protocol(context=s["context"])
    m = NgramModel(NgramConfig(order=s["order"], smoothing=s["smoothing"], k=s["k"]), vocab, protocol)
    m.fit(enc(s["train"]), enc(s["valid"]))
    rows = m.next_logprobs(s["contexts"])
    assert rows.shape == (len(s["contexts"]), len(vocab))
    assert (rows[:, [PAD, BOS]] == -np.inf).all()
    assert not np.isnan(rows).any()
    np.testing.assert_allclose(np.exp(rows).sum(axis=1), 1.0, rtol=0, atol=1e-9)
    # smoothed models give <unk> mass even when it was never seen (not MLE or add-0, by design; not
    # Katz when no count is <= K, since only those are discounted)
    if s["smoothing"] not in ("mle", "katz") and not (s["smoothing"] == "addk" and s["k"] == 0.0):
        assert (rows[:, UNK] > -np.inf).all()
    # and the vectorised scorer agrees with the reference loop on the same text
    seqs = enc(s["valid"]).sequences
    for a, b in zip(m.sequence_logprobs(seqs), LanguageModel.sequence_logprobs(m, seqs)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


def test_unique_counts_is_np_unique():
    """The packed sort behind n-gram counting gives np.unique's sorted keys, inverse and counts, on both of its
    paths (keys that fit beside their positions in 63 bits, and keys that do not)."""
    from lmkit.models.ngram.counts import unique_counts

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.integers(0, 2**63 - 1) | st.integers(0, 50), max_size=300))
    def same(values):
        key = np.array(values, dtype=np.int64)
        want = np.unique(key, return_inverse=True, return_counts=True)
        got = unique_counts(key)
        assert all(np.array_equal(w.reshape(-1), g) for w, g in zip(want, got))

    same()
