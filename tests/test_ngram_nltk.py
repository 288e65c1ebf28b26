"""Cross-check against nltk.lm: Laplace and Lidstone agree to 1e-9 for every n-gram of a test set.

Conventions differ, so the setup is aligned to compare the *math*:
- nltk pads a sentence with n-1 `<s>` (and n-1 `</s>`); lmkit uses one `<s>` and a shorter context at
  the start, as KenLM. For add-k the numbers still coincide: c(<s> <s> w) = c(<s> w) and
  c(<s> <s> .) = c(<s> .) = number of sentences. Only the n-grams lmkit scores are compared (each word
  and the first `</s>`); nltk's extra `</s> </s>` is ignored.
- nltk's vocabulary counts `<s>` (it is in the padded text) plus its own `<UNK>`; lmkit's predictable
  set excludes `<s>` (docs/protocol.md). One extra lmkit vocabulary word that never occurs makes the two
  |V| equal, so the denominators c(h) + k|V| are the same.
- OOV words are `<UNK>` / `<unk>` in both, never seen in training.
- For unigrams nltk pads nothing (no `</s>` at all), so there each training sentence gets an explicit
  `</s>` and no extra word is needed (neither vocabulary has `<s>`).
Witten-Bell and Kneser-Ney differ by design and are checked against hand computations in
test_ngram_model.py instead: nltk's WittenBell bottoms out at the MLE unigram (OOV -> 0, infinite
perplexity) where lmkit interpolates with the uniform distribution; nltk's KneserNeyInterpolated uses a
fixed discount 0.1 and its own lower-order handling, where lmkit estimates discounts from
counts-of-counts as Chen & Goodman / KenLM do."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

nltk_lm = pytest.importorskip("nltk.lm")
from nltk.lm.preprocessing import pad_both_ends, padded_everygram_pipeline  # noqa: E402
from nltk.util import everygrams, ngrams  # noqa: E402

from lmkit.data.corpus import Encoded  # noqa: E402
from lmkit.data.vocab import Vocab  # noqa: E402
from lmkit.models.ngram import NgramConfig, NgramModel  # noqa: E402
from lmkit.protocol import Protocol  # noqa: E402

TRAIN = [
    "the cat sat on the mat", "the dog sat on the log", "a cat saw a dog", "the cat ate the fish",
    "a dog ate", "the mat sat on a dog", "on the log the cat sat",
]
TEST = ["the cat sat on the log", "the bird sat on a cat", "a dog saw the fish", "zebra", "the the the"]


@pytest.mark.parametrize("order", [1, 2, 3])
@pytest.mark.parametrize("smoothing,k", [("laplace", 1.0), ("addk", 0.1), ("addk", 0.73)])
def test_additive_smoothing_matches_nltk(order, smoothing, k):
    train = [s.split() for s in TRAIN]
    test = [s.split() for s in TEST]
    # nltk
    if order > 1:
        data, vocab_text = padded_everygram_pipeline(order, train)
    else:
        data = [everygrams(s + ["</s>"], max_len=1) for s in train]
        vocab_text = [w for s in train for w in s + ["</s>"]]
    lm = nltk_lm.Laplace(order) if smoothing == "laplace" else nltk_lm.Lidstone(k, order)
    lm.fit(data, vocab_text)
    # lmkit, with one never-seen word so |predictable| == len(nltk vocab) (nltk counts <s>)
    counts = Counter(w for s in train for w in s)
    vocab = Vocab.build(counts + (Counter({"~never-seen~": 1}) if order > 1 else Counter()))
    assert vocab.num_predictable == len(lm.vocab)
    m = NgramModel(NgramConfig(order=order, smoothing=smoothing, k=k), vocab, Protocol())
    enc = lambda sents: Encoded("x", "", [vocab.encode(s)[0] for s in sents], list(range(len(sents))))  # noqa
    m.fit(enc(train), None)
    ours = m.sequence_logprobs(enc(test).sequences)
    compared = 0
    for sent, lp in zip(test, ours):
        grams = list(ngrams(pad_both_ends(sent, n=order), order)) if order > 1 else \
            [(w,) for w in sent + ["</s>"]]
        for pos, gram in enumerate(grams[: len(sent) + 1]):  # each word, then the first </s>
            theirs = lm.score(gram[-1], list(gram[:-1]))
            assert math.log(theirs) == pytest.approx(lp[pos], abs=1e-9), (gram, pos)
            compared += 1
    assert compared == sum(len(s) + 1 for s in test)


def test_alignment_is_needed():
    """Without the extra word the |V| differ by one (nltk's vocabulary contains <s>), and so would the
    probabilities: the convention difference is real, not a coincidence of the data."""
    train = [s.split() for s in TRAIN]
    data, vocab_text = padded_everygram_pipeline(2, train)
    lm = nltk_lm.Laplace(2)
    lm.fit(data, vocab_text)
    vocab = Vocab.build(Counter(w for s in train for w in s))
    assert "<s>" in lm.vocab and len(lm.vocab) == vocab.num_predictable + 1
    m = NgramModel(NgramConfig(order=2, smoothing="laplace"), vocab, Protocol())
    m.fit(Encoded("x", "", [vocab.encode(s)[0] for s in train], list(range(len(train)))), None)
    ours = float(np.exp(m.next_logprobs([[vocab.index["the"]]])[0, vocab.index["cat"]]))
    assert ours != pytest.approx(lm.score("cat", ["the"]), abs=1e-9)
