"""n-gram family: config validation, hand-computed probabilities for every smoothing, the vectorised
scorer against the base-class reference loop, save/load, and the failure modes users meet."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from lmkit.data.corpus import Encoded, encode, read_text
from lmkit.data.vocab import BOS, EOS, PAD, UNK, Vocab
from lmkit.errors import DataError, LmkitError, ModelError, UsageError
from lmkit.evaluate.perplexity import score_encoded
from lmkit.models import family, parse_spec
from lmkit.models.base import LanguageModel
from lmkit.models.ngram import NgramConfig, NgramModel
from lmkit.protocol import Protocol

SMOOTHINGS = ("mle", "laplace", "addk", "katz", "stupid", "jm", "wb", "kn", "kn-basic")

# The hand-computation corpus. Vocabulary (most frequent first): b=4 (3x), a=5 (2x); V = 6 ids,
# predictable set P = {<unk>, </s>, b, a}, |P| = 4. Units: "<s> a b </s>", "<s> b a b </s>".
#   target unigram counts: a 2, b 3, </s> 2          -> N = 7
#   bigrams: <s> a 1, a b 2, b </s> 2, <s> b 1, b a 1
#   continuation counts N1+(. w): a {<s>, b} = 2, b {a, <s>} = 2, </s> {b} = 1, <unk> 0
HAND = ["a b", "b a b"]
A, B = 5, 4


def encoded(lines: list[str], vocab: Vocab, protocol: Protocol | None = None, name: str = "mem") -> Encoded:
    seqs = [vocab.encode(line.split())[0] for line in lines if line.strip()]
    return Encoded(name, "0" * 64, seqs, list(range(1, len(seqs) + 1)))


def hand_vocab() -> Vocab:
    v = Vocab.build(Counter(w for line in HAND for w in line.split()))
    assert v.tokens[A] == "a" and v.tokens[B] == "b"
    return v


def fitted(smoothing: str, order: int = 2, context: str = "sentence", lines=HAND, valid=None, **kw):
    v = hand_vocab() if lines is HAND else Vocab.build(Counter(w for s in lines for w in s.split()))
    p = Protocol(context=context)
    m = NgramModel(NgramConfig(order=order, smoothing=smoothing, **kw), v, p)
    facts = m.fit(encoded(lines, v, p), encoded(valid, v, p, "valid") if valid else None)
    return m, facts


def prob(m: NgramModel, context: list[int], word: int) -> float:
    return float(np.exp(m.next_logprobs([context])[0, word]))


# -- config ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [{"order": 0}, {"order": 99}, {"k": -1}, {"smoothing": "good-turing"},
                                {"k": "lots"}, {"alpha": 0}, {"jm_lambdas": (0.5,)},
                                {"discount_fallback": (0.5, 3, 1)}])
def test_bad_config_is_a_one_line_usage_error(kw):
    with pytest.raises(UsageError) as err:
        NgramConfig(**kw)
    assert "\n" not in str(err.value) and err.value.exit_code == 2


def test_config_defaults_spec_and_label():
    cfg = NgramConfig()
    assert (cfg.order, cfg.smoothing, cfg.k, cfg.discount_fallback) == (3, "kn", 1.0, (0.5, 1.0, 1.5))
    assert NgramConfig(k="auto").k == "auto" and NgramConfig(k="0.5").k == 0.5
    kind, kw = parse_spec("ngram:kn5")
    m = family(kind)(NgramConfig(**kw), hand_vocab(), Protocol())
    assert m.label == "ngram:kn5" and m.kind == "ngram" and m.history == 4
    assert NgramModel(NgramConfig(smoothing="stupid"), hand_vocab(), Protocol()).normalised is False
    assert NgramModel(NgramConfig(smoothing="kn-basic", order=2), hand_vocab(), Protocol()).label == \
        "ngram:kn-basic2"


# -- hand computations (bigram models on HAND) -------------------------------------------------------
def test_mle_hand():
    m, _ = fitted("mle")
    assert prob(m, [BOS], A) == pytest.approx(1 / 2)  # c(<s> a) / c(<s> .) = 1/2
    assert prob(m, [BOS, A], B) == pytest.approx(1.0)  # c(a b) / c(a .) = 2/2
    assert prob(m, [B], EOS) == pytest.approx(2 / 3)  # c(b </s>) / c(b .) = 2/3
    assert m.next_logprobs([[A]])[0, EOS] == -np.inf  # unseen event: log 0, no crash
    # sentence "a b": 1/2 * 1 * 2/3 = 1/3
    lp = m.sequence_logprobs([np.array([A, B])])[0]
    assert lp.sum() == pytest.approx(math.log(1 / 3))


def test_laplace_and_addk_hand():
    m, facts = fitted("laplace")
    assert facts["k"] == 1.0
    assert prob(m, [A], B) == pytest.approx(3 / 6)  # (c(a b) + 1) / (c(a .) + |P|) = 3/6
    assert prob(m, [A], EOS) == pytest.approx(1 / 6)  # (0 + 1) / 6
    assert prob(m, [UNK], A) == pytest.approx(1 / 4)  # unseen context: uniform over |P| = 4
    m, _ = fitted("addk", k=0.5)
    assert prob(m, [A], B) == pytest.approx(2.5 / 4)  # (2 + .5) / (2 + .5 * 4)
    m, _ = fitted("laplace", order=1)
    assert prob(m, [], A) == pytest.approx(3 / 11)  # (2 + 1) / (N + |P|) = 3 / (7 + 4)


def test_addk_auto_tunes_k_on_valid():
    m, facts = fitted("addk", k="auto", valid=["a b", "b b a b"])
    k = facts["k"]
    assert 1e-5 <= k <= 10
    valid = encoded(["a b", "b b a b"], m.vocab)

    def ll(kk):
        mm, _ = fitted("addk", k=kk)
        return score_encoded(mm, valid).nll_nats

    assert ll(k) <= min(ll(k * 1.5), ll(k / 1.5)) + 1e-9  # a (local) optimum
    with pytest.raises(UsageError):
        fitted("addk", k="auto")


def test_witten_bell_hand():
    m, _ = fitted("wb")
    # unigrams: t0 = 3 distinct seen words, N = 7, P(w) = (c(w) + t0/|P|) / (N + t0)
    assert prob(m, [], B) == pytest.approx((3 + 3 / 4) / 10)  # 0.375
    assert prob(m, [], UNK) == pytest.approx((0 + 3 / 4) / 10)  # 0.075: <unk> gets mass
    # context a: c(a .) = 2, t(a) = 1 -> (2 + 1 * 0.375) / (2 + 1)
    assert prob(m, [A], B) == pytest.approx(2.375 / 3)
    assert prob(m, [A], EOS) == pytest.approx((0 + 1 * 0.275) / 3)


def test_kneser_ney_basic_hand():
    m, facts = fitted("kn-basic")
    # bigram counts-of-counts n1 = 3, n2 = 2 -> D = 3/(3 + 2*2) = 3/7
    # unigram continuation counts 2, 2, 1 -> n1 = 1, n2 = 2 -> D = 1/(1 + 4) = 0.2
    assert facts["discounts"] == pytest.approx([0.2, 3 / 7])
    # unigrams: (a - D)/5 + gamma/|P|, gamma = 3 * 0.2 / 5 = 0.12 -> a: 0.36 + 0.03 = 0.39
    assert prob(m, [], A) == pytest.approx(0.39)
    assert prob(m, [], EOS) == pytest.approx(0.16 + 0.03)
    assert prob(m, [], UNK) == pytest.approx(0.03)
    # context a: (2 - 3/7)/2 + (3/7)/2 * P(b) = 11/14 + 3/14 * 0.39
    assert prob(m, [A], B) == pytest.approx(11 / 14 + 3 / 14 * 0.39)


def test_modified_kneser_ney_falls_back_on_tiny_data():
    m, facts = fitted("kn")
    # n3 = 0 at both orders: discounts undefined -> 0.5 / 1.0 / 1.5 with a warning (lmplz --discount_fallback)
    assert facts["discounts"] == [[0.5, 1.0, 1.5], [0.5, 1.0, 1.5]]
    assert len(facts["warnings"]) == 2 and "fallback" in facts["warnings"][0]
    # unigrams: a (2 - 1)/5 = 0.2, </s> (1 - .5)/5 = 0.1, gamma = (1 + 1 + .5)/5 = 0.5 -> + 0.125
    assert prob(m, [], A) == pytest.approx(0.325)
    assert prob(m, [], UNK) == pytest.approx(0.125)
    # context a: (2 - D2)/2 + (D2 * 1)/2 * P(b) = 0.5 + 0.5 * 0.325
    assert prob(m, [A], B) == pytest.approx(0.6625)
    m, facts = fitted("kn", discount_fallback=(0.25, 0.5, 0.75))
    assert facts["discounts"][1] == [0.25, 0.5, 0.75]


def test_jelinek_mercer_hand_and_em():
    m, facts = fitted("jm", jm_lambdas=(0.5, 0.8))
    # P(b) = .5 * 3/7 + .5 / 4;  P(b | a) = .8 * 2/2 + .2 * P(b)
    pb = 0.5 * 3 / 7 + 0.5 / 4
    assert prob(m, [], B) == pytest.approx(pb)
    assert prob(m, [A], B) == pytest.approx(0.8 + 0.2 * pb)
    _, facts = fitted("jm", valid=["a b", "b a", "a a b"])
    assert len(facts["lambdas"]) == 2 and all(0 <= x < 1 for x in facts["lambdas"])
    _, facts = fitted("jm")  # no valid split: fixed 0.5 with a warning
    assert facts["lambdas"] == [0.5, 0.5] and facts["warnings"]


def test_jm_em_increases_valid_likelihood():
    lines = ["a b c a b", "b c a", "c a b c", "a b c c a b"]
    valid = ["a b c", "c a b a", "b c c"]
    m, facts = fitted("jm", lines=lines, valid=valid, order=3)
    v = m.vocab
    ve = encoded(valid, v)
    best = score_encoded(m, ve).nll_nats
    for lams in [(0.5, 0.5, 0.5), (0.9, 0.5, 0.2), (0.3, 0.7, 0.7)]:
        other = NgramModel(NgramConfig(order=3, smoothing="jm", jm_lambdas=lams), v, Protocol())
        other.fit(encoded(lines, v), None)
        assert best <= score_encoded(other, ve).nll_nats + 1e-9


def test_katz_hand():
    m, facts = fitted("katz")
    # unigram counts 2, 3, 2: n1 = 0 -> Good-Turing undefined -> absolute discount D = 0.5
    # P(a) = 1.5/7, P(b) = 2.5/7; freed mass 1.5/7 goes to the one unseen word of |P| = 4
    assert prob(m, [], B) == pytest.approx(2.5 / 7)
    assert prob(m, [], UNK) == pytest.approx(1.5 / 7)
    # bigram counts 1,1,1,2,2: n3 = 0 -> D = 3/7; P(b | a) = (2 - 3/7)/2 = 11/14
    assert prob(m, [A], B) == pytest.approx(11 / 14)
    # alpha(a) = (1 - 11/14) / (1 - P(b)) = (3/14) / (4.5/7) = 1/3;  P(</s> | a) = 1/3 * 1.5/7
    assert prob(m, [A], EOS) == pytest.approx(1 / 3 * 1.5 / 7)
    assert facts["warnings"]


def test_katz_context_with_only_large_counts_still_backs_off():
    # "b" is followed by "a" 6 times (> K = 5: not discounted by Good-Turing) -> absolute discount
    m, _ = fitted("katz", lines=["b a"] * 6 + ["c d"] * 2 + ["d c e"])
    v = m.vocab
    row = np.exp(m.next_logprobs([[v.index["b"]]])[0])
    assert 0 < row[v.index["c"]] and row[v.index["a"]] < 1
    assert row.sum() == pytest.approx(1.0)


def test_katz_good_turing_ratios():
    from lmkit.models.ngram.smoothing import gt_ratios
    # counts-of-counts n1..n3 = 4, 2, 1 (K = 2): c*1 = 2*2/4 = 1, c*2 = 3*1/2 = 1.5, common = 3*1/4 = .75
    # d1 = (1/1 - .75)/(1 - .75) = 1.0, d2 = (1.5/2 - .75)/.25 = 0 -> out of (0, 1] -> absolute fallback
    d, _, why = gt_ratios(np.array([1, 1, 1, 1, 2, 2, 3]), 2)
    assert why and d[1] == pytest.approx(1 - 4 / 8)  # D = n1/(n1 + 2 n2) = 4/8
    # n1..n4 = 10, 4, 2, 1 with K = 3: common = 4 * 1/10 = .4
    # d1 = (2*4/10 - .4)/.6 = 2/3, d2 = (3*2/(2*4) - .4)/.6 = .58333, d3 = (4*1/(3*2) - .4)/.6 = .44444
    r = np.array([1] * 10 + [2] * 4 + [3] * 2 + [4])
    d, _, why = gt_ratios(r, 3)
    assert why is None and d[1:] == pytest.approx([2 / 3, 0.35 / 0.6, (4 / 6 - 0.4) / 0.6])


def test_stupid_backoff_hand():
    m, facts = fitted("stupid")
    assert prob(m, [A], B) == pytest.approx(1.0)  # c(a b)/c(a .) = 2/2
    assert prob(m, [A], EOS) == pytest.approx(0.4 * 2 / 7)  # alpha * c(</s>)/N
    assert prob(m, [A], UNK) == pytest.approx(0.4 * 0.4 / 4)  # alpha * alpha/|P| (never seen)
    assert facts["alpha"] == 0.4


def test_no_padding_with_n_minus_1_bos():
    # trigram types: <s> a b, a b </s>, <s> b a, b a b -- no "<s> <s> a" (KenLM: context is just <s>)
    _, facts = fitted("kn", order=3)
    assert facts["ngrams"] == [5, 5, 4]
    m, _ = fitted("mle", order=3)
    assert prob(m, [BOS], A) == pytest.approx(1 / 2)  # first token: the bigram <s> a


def test_stream_context_counts_across_sentence_ends():
    # stream: <s> a b </s> b a b </s> -> bigram types <s> a, a b, b </s>, </s> b, b a (no "<s> b");
    # trigram types <s> a b, a b </s> (twice), b </s> b, </s> b a, b a b
    m, facts = fitted("mle", order=3, context="stream")
    assert facts["ngrams"] == [5, 5, 5]
    assert prob(m, [B, EOS], B) == pytest.approx(1.0)  # c(b </s> b) / c(b </s> .) = 1/1
    assert prob(m, [EOS], B) == pytest.approx(1.0)
    sentence, _ = fitted("mle", order=3)
    assert prob(sentence, [B, EOS], B) == pytest.approx(prob(sentence, [], B))  # unseen context


# -- the contract ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    lines = ["the cat sat on the mat", "the dog sat on the log", "a cat saw a dog", "the cat ate"]
    test = ["the cat sat on the log", "the bird sat", "a dog sat on a cat", "mat"]
    v = Vocab.build(Counter(w for s in lines for w in s.split()))
    return lines, test, v


@pytest.mark.parametrize("context", ["sentence", "stream"])
@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_vectorised_scoring_equals_reference_loop(tiny, smoothing, context):
    lines, test, v = tiny
    p = Protocol(context=context)
    for order in (1, 3):
        k = "auto" if smoothing == "addk" else 1.0
        m = NgramModel(NgramConfig(order=order, smoothing=smoothing, k=k), v, p)
        m.fit(encoded(lines, v, p), encoded(test[:2], v, p))
        seqs = encoded(test, v, p).sequences
        fast = m.sequence_logprobs(seqs)
        slow = LanguageModel.sequence_logprobs(m, seqs, batch_size=3)
        for a, b in zip(fast, slow):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("smoothing", SMOOTHINGS)
def test_rows_normalise_and_save_load_round_trip(tiny, tmp_path, smoothing):
    lines, test, v = tiny
    p = Protocol()
    m = NgramModel(NgramConfig(order=3, smoothing=smoothing), v, p)
    m.fit(encoded(lines, v, p), encoded(test, v, p))
    rows = m.next_logprobs([[BOS], [BOS, 4, 5], [7, 4], [UNK, UNK, UNK, UNK]])
    assert (rows[:, [PAD, BOS]] == -np.inf).all()
    if smoothing != "stupid":
        np.testing.assert_allclose(np.exp(rows).sum(axis=1), 1.0, atol=1e-12)
    m.save(tmp_path)
    back = NgramModel.load(tmp_path, m.config, v, p)
    seqs = encoded(test, v, p).sequences
    for a, b in zip(m.sequence_logprobs(seqs), back.sequence_logprobs(seqs)):
        assert np.array_equal(a, b)
    assert back.num_parameters() == m.num_parameters() == sum(m.fit_info()["ngrams"])
    assert back.fit_info()["ngrams"] == m.fit_info()["ngrams"]


@pytest.mark.parametrize("smoothing", ["kn", "laplace", "katz"])
def test_first_call_scan_and_later_index_give_the_same_rows(tiny, smoothing):
    """next_logprobs finds a context's extensions by scanning on its first call and from a kept index after it
    (model._children): both ways must give the same rows, for back-off and add-k tables alike."""
    lines, test, v = tiny
    p = Protocol()
    m = NgramModel(NgramConfig(order=3, smoothing=smoothing), v, p)
    m.fit(encoded(lines, v, p), None)
    contexts = [[BOS], [BOS, 4, 5], [7, 4], [4], [UNK, UNK, UNK, UNK], [v.index["the"], v.index["cat"]],
                [v.index["the"], v.index["cat"]], [v.index["sat"], v.index["on"]]]
    scanned = m.next_logprobs(contexts)
    assert "_ext_cache" not in m.__dict__  # the one-off call kept no index
    indexed = m.next_logprobs(contexts)
    assert "_ext_cache" in m.__dict__
    assert np.array_equal(scanned, indexed)
    seqs = encoded(test, v, p).sequences  # and both agree with scoring the same tokens
    lp = m.sequence_logprobs(seqs)[0]
    toks = list(seqs[0]) + [EOS]
    rows = m.next_logprobs([[BOS] + toks[:i] for i in range(len(toks))])
    np.testing.assert_allclose(rows[np.arange(len(toks)), toks], lp, rtol=0, atol=1e-12)


# -- failure modes -----------------------------------------------------------------------------------
def test_mle_reports_infinite_perplexity(tiny):
    lines, test, v = tiny
    m = NgramModel(NgramConfig(order=2, smoothing="mle"), v, Protocol())
    m.fit(encoded(lines, v), None)
    s = score_encoded(m, encoded(test, v))
    assert s.perplexity == math.inf and s.summary()["perplexity"] == math.inf


def test_all_oov_test_file(tmp_path, tiny):
    lines, _, v = tiny
    (tmp_path / "oov.txt").write_text("zebra quagga\nokapi\n")
    enc = encode(read_text(tmp_path / "oov.txt"), v, Protocol())
    for smoothing in ("kn", "mle", "wb"):
        m = NgramModel(NgramConfig(order=3, smoothing=smoothing), v, Protocol())
        m.fit(encoded(lines, v), None)
        s = score_encoded(m, enc)
        assert s.tokens == 5 and s.oov == 3
        assert math.isfinite(s.perplexity) == (smoothing != "mle")


def test_empty_training_text_is_a_data_error():
    v = hand_vocab()
    with pytest.raises(DataError):
        NgramModel(NgramConfig(), v, Protocol()).fit(Encoded("empty", "", [], []), None)


def _saved(tmp_path, tiny):
    lines, _, v = tiny
    m = NgramModel(NgramConfig(order=3), v, Protocol())
    m.fit(encoded(lines, v), None)
    m.save(tmp_path)
    return m, tmp_path / "model.npz"


def test_truncated_model_file(tmp_path, tiny):
    m, path = _saved(tmp_path, tiny)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError) as err:
        NgramModel.load(tmp_path, m.config, m.vocab, m.protocol)
    assert "\n" not in str(err.value) and "model.npz" in str(err.value)


def test_edited_model_file(tmp_path, tiny):
    m, path = _saved(tmp_path, tiny)
    data = bytearray(path.read_bytes())
    mid = len(data) // 3
    data[mid:mid + 8] = b"\xff" * 8
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError) as err:
        NgramModel.load(tmp_path, m.config, m.vocab, m.protocol)
    assert "\n" not in str(err.value)


def test_model_file_missing_or_for_another_config(tmp_path, tiny):
    m, path = _saved(tmp_path, tiny)
    with pytest.raises(ModelError):
        NgramModel.load(tmp_path, NgramConfig(order=2), m.vocab, m.protocol)
    path.unlink()
    with pytest.raises(ModelError) as err:
        NgramModel.load(tmp_path, m.config, m.vocab, m.protocol)
    assert isinstance(err.value, LmkitError) and "not found" in str(err.value)


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path, tiny):
    _saved(tmp_path, tiny)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]
    with np.load(tmp_path / "model.npz", allow_pickle=False) as z:
        assert "keys_3" in z.files and "logp_1" in z.files


def test_refit_replaces_the_tables():
    m, _ = fitted("kn", lines=HAND)
    before = m.next_logprobs([[A]])
    m.fit(encoded(["a a a b"] * 3, m.vocab), None)
    after = m.next_logprobs([[A]])
    assert not np.allclose(before, after)
    ref = LanguageModel.sequence_logprobs(m, [np.array([A, A])])[0]
    np.testing.assert_allclose(m.sequence_logprobs([np.array([A, A])])[0], ref, atol=1e-12)


@pytest.mark.parametrize("context", ["sentence", "stream"])
def test_chains_give_every_position_its_stored_ngrams_and_contexts_within_its_unit(context):
    """NgramIndex.chains against a brute-force reading of the stored n-grams, at every position of a text of several
    units (a unit's <s> included): the (k+1)-gram ending at a position and the j-gram ending just before it, -1 when
    not stored or when its unit has fewer tokens before the position."""
    from lmkit.models.ngram.counts import count_ngrams, flatten

    rng = np.random.default_rng(3)
    V, N = 9, 4
    train = [rng.integers(4, V, rng.integers(1, 7)).astype(np.int32) for _ in range(40)]
    test = [rng.integers(4, V, rng.integers(0, 6)).astype(np.int32) for _ in range(12)]
    index = count_ngrams(train, V, N, context).index
    stored = {n: {tuple(w): i for i, w in enumerate(index.words(n).tolist())} for n in range(1, N + 1)}
    toks, depth = flatten(test, context)
    pos = np.arange(toks.size)
    tgt, ctx = index.chains(toks, depth, pos)
    for p in range(toks.size):
        for k in range(N):
            gram = tuple(toks[p - k:p + 1].tolist()) if depth[p] >= k else None
            assert tgt[p, k] == stored[k + 1].get(gram, -1), (p, k)
        for j in range(1, N):
            gram = tuple(toks[p - j:p].tolist()) if depth[p] >= j else None
            assert ctx[p, j - 1] == stored[j].get(gram, -1), (p, j)
    assert (tgt[:, 1:] >= 0).sum() > toks.size // 2  # the text reuses the training n-grams: hits are checked too


@pytest.mark.parametrize("context", ["sentence", "stream"])
@pytest.mark.parametrize("smoothing", ["kn", "laplace", "stupid"])
def test_a_text_scored_in_parts_side_by_side_scores_as_in_one(monkeypatch, context, smoothing):
    """Past SCORE_PARALLEL_MIN positions a text is scored in parts on several threads, each read from N-1 tokens
    early: every token keeps its whole history across the cuts, so the scores are the ones of one pass."""
    from lmkit import parallel
    from lmkit.models.ngram import model as ngram_model

    rng = np.random.default_rng(5)
    words = [f"w{i}" for i in range(12)]
    lines = [" ".join(rng.choice(words, rng.integers(1, 9))) for _ in range(300)]
    m, _ = fitted(smoothing, order=4, context=context, lines=lines)
    test = [rng.integers(5, len(m.vocab), rng.integers(0, 9)).astype(np.int32) for _ in range(200)]
    whole = m.flat_logprobs(test)
    monkeypatch.setattr(ngram_model, "SCORE_PARALLEL_MIN", 97)
    monkeypatch.setattr(parallel, "cpus", lambda: 4)
    assert parallel.parts(sum(len(s) + 2 for s in test), ngram_model.SCORE_PARALLEL_MIN) == 4
    np.testing.assert_allclose(m.flat_logprobs(test), whole, rtol=0, atol=1e-12)
