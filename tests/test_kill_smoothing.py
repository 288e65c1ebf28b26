"""Smoothing edges mutation testing found unpinned (docs/testing.md, bench/mutation.py smoothing): the
discount fallbacks and their messages, Katz's two corner cases (a context followed by every predictable
word; a context whose extensions all have counts above K), the EM and golden-section tuners, and the
helpers' contracts. The formulas on a corpus without fallbacks are pinned in test_pins_ngram.py."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from lmkit import api
from lmkit.data.vocab import BOS, EOS, PAD, UNK
from lmkit.models.ngram import smoothing as sm
from lmkit.models.ngram.counts import count_ngrams

A, B, C = 4, 5, 6  # word ids after the four specials


def counts(order: int = 3, V: int = 7):
    seqs = [[A, B, A], [B, A, A, C], [A, UNK], [C, B, A], [A, B, A, B]]
    return count_ngrams([np.array(s) for s in seqs], V, order, "sentence")


# -- discounts -----------------------------------------------------------------------------------------------
def test_counts_of_counts_ignores_zeros_and_lumps_the_tail():
    a = np.array([0, 0, 1, 2, 2, 3, 7, 9])
    np.testing.assert_array_equal(sm.counts_of_counts(a, 3), [0, 1, 2, 1])
    np.testing.assert_array_equal(sm.counts_of_counts(a, 3, block=3), [0, 1, 2, 1])


def hand_mkn(n1, n2, n3, n4):
    y = n1 / (n1 + 2 * n2)
    return [1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3]


def with_counts(*n):
    """An array of counts whose counts-of-counts are n[0] ones, n[1] twos, ..."""
    return np.array([j + 1 for j, k in enumerate(n) for _ in range(k)] + [0, 0])


def test_modified_kn_discounts_by_hand():
    d, why = sm.mkn_discounts(with_counts(5, 3, 2, 1), (0.5, 1.0, 1.5))
    assert why is None
    np.testing.assert_allclose(d, [0.0, *hand_mkn(5, 3, 2, 1)], rtol=1e-15)


def test_modified_kn_without_fours_has_d3_equal_to_three():
    d, why = sm.mkn_discounts(with_counts(3, 2, 1), (0.5, 1.0, 1.5))  # n4 = 0: D3+ = 3, still in range
    assert why is None
    np.testing.assert_allclose(d, [0.0, 3 / 7, 19 / 14, 3.0], rtol=1e-15)


def test_modified_kn_discount_of_exactly_zero_is_in_range():
    d, why = sm.mkn_discounts(with_counts(4, 1, 1, 1), (0.5, 1.0, 1.5))  # D2 = 2 - 3 (4/6) 1/1 = 0
    assert why is None and d[2] == 0.0


def test_modified_kn_fallbacks_say_why():
    d, why = sm.mkn_discounts(with_counts(2, 1, 0, 3), (0.5, 1.0, 1.5))
    assert d.tolist() == [0.0, 0.5, 1.0, 1.5] and why == "counts-of-counts n1..n3 include a zero"
    d, why = sm.mkn_discounts(with_counts(0, 2, 2, 2), (0.5, 1.0, 1.5))
    assert d.tolist() == [0.0, 0.5, 1.0, 1.5] and why == "counts-of-counts n1..n3 include a zero"
    d, why = sm.mkn_discounts(with_counts(10, 1, 10, 1), (0.5, 1.0, 1.5))  # D2 = 2 - 3 (10/12) 10 < 0
    got = hand_mkn(10, 1, 10, 1)
    assert d.tolist() == [0.0, 0.5, 1.0, 1.5]
    assert why == f"discounts out of range ({got[0]:.3g}, {got[1]:.3g}, {got[2]:.3g})"


def test_kn_discount_and_its_fallbacks():
    assert sm.kn_discount(with_counts(3, 1), 0.7) == (3 / 5, None)
    assert sm.kn_discount(with_counts(4, 2, 1), 0.7, block=2) == (4 / 8, None)
    for n in [(0, 3), (3, 0), (0, 0, 2)]:
        assert sm.kn_discount(with_counts(*n), 0.7) == (0.7, "counts-of-counts n1 or n2 is zero")


def hand_gt(n, K):
    common = (K + 1) * n[K + 1] / n[1]
    return [((r + 1) * n[r + 1] / (r * n[r]) - common) / (1 - common) for r in range(1, K + 1)]


def test_good_turing_ratios_by_hand():
    r = with_counts(10, 4, 2, 1)  # n1..n4 = 10, 4, 2, 1
    d, D, why = sm.gt_ratios(r, 2)
    n = [0, 10, 4, 2, 1]
    assert why is None and D == 10 / 18
    np.testing.assert_allclose(d, [1.0, *hand_gt(n, 2)], rtol=1e-15)


@pytest.mark.parametrize("n, reason", [
    ((10, 4, 0), "counts-of-counts n1..n3 include a zero"),
    ((3, 4, 2), "Good-Turing ratios out of (0, 1]"),  # common = 3 n3 / n1 = 2 >= 1
    ((10, 1, 5), "Good-Turing ratios out of (0, 1]"),  # d1 = (2/10 - 1.5) / (1 - 1.5) > 1
    ((1, 2, 0), "counts-of-counts n1..n3 include a zero"),  # a single singleton still defines D = 1/5
    ((3, 1, 1), "Good-Turing ratios out of (0, 1]"),  # common = 3 n3 / n1 = 1 exactly
])
def test_good_turing_falls_back_to_absolute_discounting(n, reason):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # common = 1 must not divide by zero on the way
        d, D, why = sm.gt_ratios(with_counts(*n), 2)
    assert why == reason
    assert D == n[0] / (n[0] + 2 * n[1])
    np.testing.assert_allclose(d, [1.0, 1 - D, (2 - D) / 2], rtol=1e-15)


def test_good_turing_ratio_above_one_is_refused_even_if_the_others_are_fine():
    # n1..n4 = 7, 4, 2, 1 with K = 3: d = 1.33, 0.42, 0.22 -> out of (0, 1]: absolute discounting
    d, D, why = sm.gt_ratios(with_counts(7, 4, 2, 1), 3)
    assert why == "Good-Turing ratios out of (0, 1]" and D == 7 / 15
    np.testing.assert_allclose(d, [1.0, 1 - D, (2 - D) / 2, (3 - D) / 3], rtol=1e-15)


@pytest.mark.parametrize("n", [(0, 4, 2), (4, 0, 2), (1, 0, 0)])
def test_good_turing_absolute_discount_is_one_half_when_undefined(n):
    d, D, why = sm.gt_ratios(with_counts(*n), 2)
    assert D == 0.5 and why.startswith("counts-of-counts")
    np.testing.assert_allclose(d, [1.0, 0.5, 0.75], rtol=1e-15)


# -- helpers ---------------------------------------------------------------------------------------------
def test_blocks_cover_the_range():
    assert sm.blocks(5, 2) == [(0, 2), (2, 4), (4, 5)]
    assert sm.blocks(5, None) == [(0, 5)]
    assert sm.blocks(5, 0) == [(0, 5)]
    assert sm.blocks(0, None) == [(0, 0)] and sm.blocks(0, 3) == [(0, 0)]
    assert sm.blocks(1, None) == [(0, 1)]
    assert sm.blocks(3, 1) == [(0, 1), (1, 2), (2, 3)]


def test_predictable_set_is_everything_but_pad_and_bos():
    assert sm.predictable_mask(6).tolist() == [i not in (PAD, BOS) for i in range(6)]


def test_unigram_order_is_one_block_with_one_empty_context():
    c = counts()
    o = sm.Order(c, 1, 2)
    assert o.contexts == 1 and o.ranges == [(0, c.vocab_size)]
    assert o.ctx(2, 5).tolist() == [0, 0, 0]
    assert sm.Order(c, 2, 2).ranges == sm.blocks(c.index.size(2), 2)


def test_context_sum_per_context():
    c = counts()
    assert sm.context_sum(c, 1, np.arange(7.0)).tolist() == [21.0]
    sums = sm.context_sum(c, 3, np.ones(c.index.size(3)))
    assert sums.size == c.index.size(2) and sums.sum() == c.index.size(3)


ESTIMATORS = {
    "mle": lambda c, **kw: sm.estimate_mle(c, **kw),
    "stupid": lambda c, **kw: sm.estimate_stupid(c, 0.4, **kw),
    "katz": lambda c, **kw: sm.estimate_katz(c, 1, **kw),
    "jm": lambda c, **kw: sm.estimate_jm(c, [0.3, 0.5, 0.7], **kw),
    "wb": lambda c, **kw: sm.estimate_wb(c, **kw),
    "kn": lambda c, **kw: sm.estimate_kn(c, True, (0.5, 1.0, 1.5), **kw),
}


@pytest.mark.parametrize("name", ESTIMATORS)
def test_estimators_keep_the_counts_unless_told_to_consume_them(name):
    c = counts()
    ESTIMATORS[name](c)
    assert all(x is not None for x in c.counts) and all(x is not None for x in c.ctx)
    ESTIMATORS[name](c, consume=True)
    assert all(x is None for x in c.counts) and all(x is None for x in c.ctx)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_estimators_never_predict_pad_or_bos_and_warn_about_nothing(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no divide-by-zero or invalid-value noise from numpy
        est = ESTIMATORS[name](counts())
    assert est.logp[0][PAD] == -np.inf and est.logp[0][BOS] == -np.inf


def test_additive_logprob_edges():
    num, den = np.array([1.0, 0.0, 2.0]), np.array([0.0, 0.0, 4.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = sm.additive_logprob(num, den, 0.1, 5)  # d = 0.5, 0.5, 4.5
        zero = sm.additive_logprob(np.array([0.0]), np.array([0.0]), 0.0, 5)  # d = 0: uniform
    np.testing.assert_allclose(got, np.log([1.1 / 0.5, 0.1 / 0.5, 2.1 / 4.5]), rtol=1e-14)
    assert zero.tolist() == [-math.log(5)]


def test_estimate_additive_totals():
    c = counts()
    add = sm.estimate_additive(c, 0.5)
    assert add.k == 0.5 and add.total == c.tokens and add.facts == {}
    assert add.counts[0][BOS] == 0 and len(add.den) == 2


# -- tuners ----------------------------------------------------------------------------------------------
def jm_loglik(lam, num, den, P):
    """Held-out log-likelihood of recursive JM interpolation (the highest seen context first)."""
    total = 0.0
    for t in range(num.shape[0]):
        p, rest = 0.0, 1.0
        for n in range(num.shape[1] - 1, -1, -1):
            if den[t, n] > 0:
                p += rest * lam[n] * num[t, n] / den[t, n]
                rest *= 1 - lam[n]
        total += math.log(p + rest / P)
    return total


def heldout(seed=0, T=300):
    rng = np.random.default_rng(seed)
    den = np.stack([np.full(T, 50.0), rng.integers(0, 6, T).astype(float), rng.integers(0, 3, T).astype(float)], 1)
    num = np.floor(den * rng.uniform(0, 1, den.shape) ** 2)
    return num, den


def test_jm_lambdas_maximise_the_heldout_likelihood():
    num, den = heldout()
    lam = sm.fit_jm_lambdas(num, den, 20)
    assert all(0.0 <= x < 1.0 for x in lam)
    best = jm_loglik(lam, num, den, 20)
    assert best > jm_loglik([0.5, 0.5, 0.5], num, den, 20)
    for n in range(3):
        for step in (-0.02, 0.02):
            other = list(lam)
            other[n] = min(max(other[n] + step, 0.0), 1 - 1e-6)
            assert jm_loglik(other, num, den, 20) <= best + 1e-9


def test_jm_lambda_of_a_level_never_reached_stays_at_one_half():
    num, den = heldout()
    den[:, 2] = num[:, 2] = 0  # no held-out token has a seen trigram context
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no 0/0 on the way (numpy would print a RuntimeWarning)
        lam = sm.fit_jm_lambdas(num, den, 20)
    assert lam[2] == 0.5


def test_jm_lambda_that_would_leave_nothing_is_clipped():
    num = np.array([[4.0], [4.0], [4.0]])
    den = np.array([[4.0], [4.0], [4.0]])  # every token certain at level 0: EM drives lambda to 1
    (lam,) = sm.fit_jm_lambdas(num, den, 10)
    assert lam == 1 - 1e-6


def test_tune_k_finds_the_heldout_optimum():
    num, den = heldout()
    num, den = num[:, 1], den[:, 1]
    k = sm.tune_k(num, den, 20)

    def ll(k):
        return float(sm.additive_logprob(num, den, k, 20).sum())

    assert 1e-5 < k < 10
    assert ll(k) >= ll(k * 1.01) and ll(k) >= ll(k / 1.01)


# -- Katz's corner cases, through a trained model -------------------------------------------------------
def test_katz_rows_normalise_when_a_context_is_followed_by_everything_or_only_by_frequent_words(tmp_path):
    corpus = tmp_path / "c"
    corpus.mkdir()
    # vocabulary (min count 2): a b; predictable: <unk> </s> a b.  "a" is followed by a, b, </s> and <unk>
    # (every predictable word); "b" only by "a", 3 times (every count above K = 1: nothing discounted)
    (corpus / "train.txt").write_text("a a\na b a\na zz\nb a\na b a b a\nqq a a\n")
    (corpus / "valid.txt").write_text("a b\n")
    run = tmp_path / "run"
    api.train(api.TrainRequest(model="ngram:katz3", corpus=corpus, output=run, sets=["katz_k=1"], min_count=2,
                               context="sentence", progress=False))
    model, _ = api.load_model(run)
    a, b = model.vocab.index["a"], model.vocab.index["b"]
    contexts = [[BOS], [a], [b], [BOS, a], [a, a], [a, b], [b, a], [UNK], [UNK, a]]
    rows = np.exp(model.next_logprobs(contexts))
    np.testing.assert_allclose(rows.sum(axis=1), 1.0, atol=1e-12)
    assert (rows[:, [UNK, EOS, a, b]] > 0).all()  # no predictable word loses all its mass


SETTINGS = {"addk": {"k": 0.5}, "katz": {"katz_k": 1}, "stupid": {"alpha": 0.4}, "jm": {"jm_lambdas": [0.3, 0.5, 0.7]},
            "kn": {"discount_fallback": (0.5, 1.0, 1.5)}, "kn-basic": {"discount_fallback": (0.5, 1.0, 1.5)}}


@pytest.mark.parametrize("name", list(sm.SMOOTHINGS))
def test_the_table_estimators_free_the_count_tables_as_they_go(name):
    """What the model fits through: back-off estimators drop each order's counts once used (so a big model's
    count tables shrink while its probabilities grow); add-k keeps them, they are its model."""
    c = counts()
    est = sm.SMOOTHINGS[name].estimate(c, SETTINGS.get(name, {}), 2)
    if isinstance(est, sm.Additive):
        assert all(x is not None for x in c.counts)
        assert est.k == (1.0 if name == "laplace" else 0.5)
    else:
        assert all(x is None for x in c.counts) and all(x is None for x in c.ctx)
    if name in ("kn", "kn-basic"):
        assert isinstance(est.facts["discounts"][0], list) == (name == "kn")


def test_fallback_warnings_and_discounts_are_recorded_per_order():
    c = count_ngrams([np.array([A]), np.array([B])], 7, 5, "sentence")  # one-word lines: no 4- or 5-grams
    kn = sm.estimate_kn(c, True, (0.5, 1.0, 1.5))
    assert kn.facts["discounts"] == [[0.5, 1.0, 1.5]] * 5
    assert kn.facts["warnings"] == [f"order {n}: counts-of-counts n1..n3 include a zero; using discount fallback "
                                    "0.5 1 1.5" for n in range(1, 6)]
    basic = sm.estimate_kn(count_ngrams([np.array([A]), np.array([B])], 7, 5, "sentence"), False, (0.3, 0.9, 1.2))
    assert basic.facts["discounts"][1:] == [0.3] * 4  # orders 2..5 have no n2: the first fallback value
    assert basic.facts["warnings"][0] == ("order 2: counts-of-counts n1 or n2 is zero; using discount fallback "
                                          "0.3 0.3 0.3")


def test_katz_records_the_ratios_it_used_per_order():
    c = counts()
    want = []
    for n in (1, 2, 3):
        d, _, why = sm.gt_ratios(sm.target_counts(c, n).astype(np.int64), 5)
        want.append((d[1:].tolist(), why))
    est = sm.estimate_katz(counts(), 5)
    assert est.facts["katz_ratios"] == [w[0] for w in want]
    assert est.facts["warnings"] == [f"katz order {n}: {why}; used absolute discounting instead"
                                     for n, (_, why) in enumerate(want, 1) if why]


def test_heldout_levels_count_every_context_including_the_first_one():
    from lmkit.models.ngram.counts import flatten

    c = counts()  # the only bigram ending in <unk> is "a <unk>": context id 0 of the trigrams
    toks, depth = flatten([np.array([A, UNK, B])], "sentence")
    num, den = sm.heldout_levels(c, toks, depth)
    # targets a, <unk>, b, </s>; row 2 is b after "a <unk>": c(a <unk> .) = 1 ("a <unk> </s>"), c(a <unk> b) = 0
    assert den[2].tolist() == [c.tokens, 1.0, 1.0] and num[2].tolist() == [float(c.counts[0][B]), 0.0, 0.0]


def test_jm_lambda_of_a_level_reached_by_less_than_one_token():
    num, den = heldout()
    den[:, 2] = num[:, 2] = 0
    den[0, 2], num[0, 2] = 2.0, 1.0  # one held-out token has a seen trigram context
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lam = sm.fit_jm_lambdas(num, den, 20)
    best = jm_loglik(lam, num, den, 20)
    for step in (-0.05, 0.05):
        other = list(lam)
        other[2] = min(max(other[2] + step, 0.0), 1 - 1e-6)
        assert jm_loglik(other, num, den, 20) <= best + 1e-6  # EM creeps towards a boundary optimum


# -- Katz against a plain reference on a corpus that hits both corner cases ------------------------------------
KATZ_TRAIN = ["a a", "a b a", "a zz", "b a", "a b a b a", "qq a a"]  # zz, qq: singletons, <unk> at min count 2


def katz_reference(lines: list[str], K: int, N: int = 3):
    """P(w | h) of Katz back-off as docs/ngram.md states it, from plain dicts (see estimate_katz's docstring)."""
    from collections import Counter

    raw: Counter = Counter()
    for line in lines:
        unit = ["<s>"] + line.split() + ["</s>"]
        for n in range(1, N + 1):
            for i in range(len(unit) - n + 1):
                raw[tuple(unit[i:i + n])] += 1
    del raw[("<s>",)]
    predictable = sorted({g[-1] for g in raw} | {"<unk>", "</s>"})
    P = len(predictable)
    ratios, absd = {}, {}
    for n in range(1, N + 1):
        values = [k for g, k in raw.items() if len(g) == n]
        cc = [sum(1 for v in values if v == j) for j in range(K + 2)]
        D = cc[1] / (cc[1] + 2 * cc[2]) if cc[1] > 0 and cc[2] > 0 else 0.5
        absd[n] = D
        gt = None
        if all(cc[1:]):
            common = (K + 1) * cc[K + 1] / cc[1]
            if common < 1:
                gt = {r: ((r + 1) * cc[r + 1] / (r * cc[r]) - common) / (1 - common) for r in range(1, K + 1)}
                gt = gt if all(0 < x <= 1 for x in gt.values()) else None
        ratios[n] = gt or {r: (r - D) / r for r in range(1, K + 1)}

    def prob(w, h):
        f = {g[-1]: k for g, k in raw.items() if len(g) == len(h) + 1 and g[:-1] == h}
        den = sum(f.values())
        if h and den == 0:
            return prob(w, h[1:])
        n = len(h) + 1

        def lower(v):
            return prob(v, h[1:]) if h else 1 / P

        if all(r > K for r in f.values()) and len(f) < P:  # nothing discounted: absolute discounting by D
            disc = {v: max(r - absd[n], 0) / den for v, r in f.items()}
        else:
            disc = {v: (ratios[n][r] if r <= K else 1.0) * r / den for v, r in f.items()}
        if len(f) >= P or 1 - sum(lower(v) for v in f) <= 1e-12:  # followed by everything: renormalise
            return disc.get(w, 0.0) / sum(disc.values())
        if w in disc:
            return disc[w]
        return (1 - sum(disc.values())) / (1 - sum(lower(v) for v in f)) * lower(w)

    return prob, predictable


@pytest.mark.parametrize("K", [1, 2])
def test_katz_equals_the_reference_where_contexts_are_full_or_frequent(tmp_path, K):
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "train.txt").write_text("\n".join(KATZ_TRAIN) + "\n")
    (corpus / "valid.txt").write_text("a b\n")
    run = api.train(api.TrainRequest(model="ngram:katz3", corpus=corpus, output=tmp_path / "run",
                                     sets=[f"katz_k={K}"], min_count=2, context="sentence",
                                     progress=False))
    model, _ = api.load_model(run)
    vocab = model.vocab
    mapped = [" ".join(w if w in vocab.index else "<unk>" for w in line.split()) for line in KATZ_TRAIN]
    prob, predictable = katz_reference(mapped, K)
    contexts = [("<s>",), ("a",), ("b",), ("<unk>",), ("<s>", "a"), ("a", "a"), ("a", "b"), ("b", "a"),
                ("<unk>", "a"), ("<s>", "<unk>")]
    rows = model.next_logprobs([[vocab.index[t] for t in h] for h in contexts])
    for row, h in zip(rows, contexts):
        want = [prob(w, h) for w in predictable]
        np.testing.assert_allclose(np.exp(row[[vocab.index[w] for w in predictable]]), want, rtol=1e-9,
                                   atol=1e-12, err_msg=str(h))


def test_katz_unigram_discounts_leave_out_the_sentence_starts():
    # two sentences: <s> is counted twice as a context, but it is never a target and must not add to n2
    c = count_ngrams([np.array(s) for s in ([A, B, A], [B, A, A, C])], 7, 2, "sentence")
    est = sm.estimate_katz(c, 5)
    # targets A 4, B 2, C 1, </s> 2: n1..n6 = 1, 2, 0, 1, 0, 0 -> absolute discounting with D = 1 / (1 + 2 * 2)
    assert est.facts["katz_ratios"][0] == pytest.approx([(r - 0.2) / r for r in range(1, 6)], rel=1e-15)
    assert est.facts["warnings"][0] == ("katz order 1: counts-of-counts n1..n6 include a zero; used absolute "
                                        "discounting instead")


def test_jm_lambda_of_a_level_reached_by_less_than_one_token_in_all():
    # 12 held-out tokens (20 words): every one has a seen unigram context, 7 a trigram context, 2 a bigram
    # context; the trigram level takes most of those two tokens, so less than one token's worth reaches the
    # bigram level, and its lambda is that level's share of what reaches it (an interior optimum here)
    num = np.array([[10, 2, 2], [7, 4, 1], [3, 0, 3], [5, 0, 4], [6, 0, 1], [0, 0, 4], [0, 0, 3], [5, 0, 0],
                    [6, 0, 0], [2, 0, 0], [2, 0, 0], [1, 0, 0]], dtype=float)
    den = np.array([[10, 4, 4]] * 2 + [[10, 0, 4]] * 5 + [[10, 0, 0]] * 5, dtype=float)
    lam = sm.fit_jm_lambdas(num, den, 20)
    assert 0.3 < lam[1] < 0.5
    best = jm_loglik(lam, num, den, 20)
    for n in range(3):
        for step in (-0.05, 0.05):
            other = list(lam)
            other[n] = min(max(other[n] + step, 0.0), 1 - 1e-6)
            assert jm_loglik(other, num, den, 20) <= best + 1e-9


def test_katz_context_followed_by_every_word_keeps_no_back_off_mass():
    # A is followed by <unk>, </s>, A, B and C: every predictable word, so nothing is left to back off with
    c = count_ngrams([np.array(s) for s in ([A, UNK], [A, A], [A, B], [A, C, B], [A])], 7, 2, "sentence")
    est = sm.estimate_katz(c, 1)
    assert est.logbo[0][A] == -np.inf  # written as -99 (log10 0) in an ARPA export
    assert np.isfinite(est.logbo[0][[B, C]]).all() and est.logbo[0][B] < 0  # B and C back off
    np.testing.assert_allclose(np.exp(est.logp[1][c.index.prefix(2) == A]).sum(), 1.0, rtol=1e-12)
