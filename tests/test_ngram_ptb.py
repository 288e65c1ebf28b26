"""PTB check against KenLM's published-protocol numbers (slow: set LMKIT_SLOW=1 to run).

Protocol: ../shared/corpora/ptb, sentence context, min-count 1, the corpus's literal <unk> is lmkit's
<unk>; 82,430 scored test tokens (78,669 words + 3,761 </s>). KenLM lmplz: 5-gram 141.19, 3-gram 148.28."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lmkit.data.corpus import count_tokens, encode, read_text
from lmkit.data.vocab import Vocab
from lmkit.evaluate.perplexity import score_encoded
from lmkit.models.ngram import NgramConfig, NgramModel
from lmkit.protocol import Protocol

SHARED = Path(os.environ.get("LMKIT_SHARED", Path(__file__).resolve().parents[2] / "shared"))
PTB = SHARED / "corpora" / "ptb"

pytestmark = [
    pytest.mark.skipif(os.environ.get("LMKIT_SLOW") != "1", reason="slow: set LMKIT_SLOW=1"),
    pytest.mark.skipif(not (PTB / "train.txt").exists(), reason=f"PTB not present under {SHARED}"),
]


@pytest.mark.parametrize("order,kenlm_ppl", [(5, 141.19), (3, 148.28)])
def test_ptb_perplexity_matches_kenlm(order, kenlm_ppl):
    p = Protocol()
    train = read_text(PTB / "train.txt")
    vocab = Vocab.build(count_tokens(train, p), min_count=1)
    m = NgramModel(NgramConfig(order=order, smoothing="kn"), vocab, p)
    m.fit(encode(train, vocab, p), None)
    s = score_encoded(m, encode(read_text(PTB / "test.txt"), vocab, p))
    assert s.tokens == 82430
    assert s.perplexity == pytest.approx(kenlm_ppl, rel=1e-3)
