"""Every smoothing's probabilities pinned on a small corpus whose counts-of-counts are all non-zero, so no
estimator takes its fallback branch; the expected numbers come from the few-line formulas of docs/ngram.md
written out here with plain dicts (nothing of lmkit's counting or smoothing is used to compute them).

The corpus (12 lines over the letters a..k) was chosen so that, for the trigram model, every order has
  - KN adjusted counts (raw at order 3 and for <s>-initial n-grams, continuation counts otherwise) with
    n1, n2, n3, n4 all > 0 and modified-KN discounts inside [0, j]   (no discount fallback), and
  - raw counts with n1, n2, n3 > 0 and Good-Turing ratios inside (0, 1] for Katz with K = 2."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from lmkit import api

TRAIN = ["a a a b a", "b a a a e a a", "a a a a c i b", "c a h d", "b j k a", "f b a a", "c a c a a a",
         "a b a a a", "a b b c d", "a a b a a", "i e a a a g", "a e b a"]
TEST = ["a a b a", "b c a zz", "k a", "zz zz", "d a a c", "e g"]
N = 3
S, E, UNK = "<s>", "</s>", "<unk>"


# -- counting, by hand ------------------------------------------------------------------------------------
def count(lines: list[str]) -> Counter:
    """Raw counts of every n-gram (n <= N) inside `<s> w1 .. wn </s>`; the unigram <s> is never a target."""
    c: Counter = Counter()
    for line in lines:
        unit = [S] + line.split() + [E]
        for n in range(1, N + 1):
            for i in range(len(unit) - n + 1):
                c[tuple(unit[i:i + n])] += 1
    del c[(S,)]
    return c


RAW = count(TRAIN)
TOKENS = sum(k for g, k in RAW.items() if len(g) == 1)  # scored training tokens (words and </s>)


def followers(table: dict) -> dict:
    """context tuple -> {word: value of context+word} (the empty context holds the unigrams)."""
    out: dict = defaultdict(dict)
    for g, k in table.items():
        out[g[:-1]][g[-1]] = k
    return out


def kn_adjusted() -> dict:
    """a(g): the raw count at the highest order and for n-grams starting with <s>, else the number of
    distinct words seen right before g."""
    left: dict = defaultdict(set)
    for g in RAW:
        if len(g) >= 2:
            left[g[1:]].add(g[0])
    return {g: k if (len(g) == N or g[0] == S) else len(left[g]) for g, k in RAW.items()}


def counts_of_counts(values, upto: int) -> list[int]:
    """n[j] = how many values equal j exactly, j = 0..upto."""
    n = [0] * (upto + 1)
    for v in values:
        if 0 < v <= upto:
            n[v] += 1
    return n


def order_values(table: dict, n: int) -> list[int]:
    return [k for g, k in table.items() if len(g) == n]


def mkn_discounts_by_hand(n: list[int]) -> tuple[float, float, float]:
    y = n[1] / (n[1] + 2 * n[2])
    return 1 - 2 * y * n[2] / n[1], 2 - 3 * y * n[3] / n[2], 3 - 4 * y * n[4] / n[3]


# -- the estimators of docs/ngram.md, one recursive function each -------------------------------------------
class Reference:
    """P(w | h) for one smoothing; h is the tuple of previous tokens (at most N-1, <s> first at a line start)."""

    def __init__(self, smoothing: str, predictable: list[str], **opt):
        self.kind, self.P, self.opt = smoothing, len(predictable), opt
        self.raw = followers(RAW)
        self.adj = followers(kn_adjusted())
        self.prob = lru_cache(maxsize=None)(getattr(self, smoothing.replace("-", "_")))
        if smoothing == "katz":
            K = opt["K"]
            self.gt, self.absd = {}, {}
            for n in range(1, N + 1):
                cc = counts_of_counts(order_values(RAW, n), K + 1)
                assert all(cc[1:]), (n, cc)  # the Good-Turing branch, not the fallback
                common = (K + 1) * cc[K + 1] / cc[1]
                self.gt[n] = {r: ((r + 1) * cc[r + 1] / (r * cc[r]) - common) / (1 - common) for r in range(1, K + 1)}
                assert all(0 < d <= 1 for d in self.gt[n].values()), self.gt[n]
                self.absd[n] = cc[1] / (cc[1] + 2 * cc[2])
        if smoothing in ("kn", "kn-basic"):
            self.D = {}
            for n in range(1, N + 1):
                cc = counts_of_counts(order_values(kn_adjusted(), n), 4)
                assert all(cc[1:5]), (n, cc)  # n1..n4 all non-zero: no fallback
                if smoothing == "kn":
                    d = mkn_discounts_by_hand(cc)
                    assert all(0 <= d[j - 1] <= j for j in (1, 2, 3)), d
                else:
                    d = (cc[1] / (cc[1] + 2 * cc[2]),) * 3
                self.D[n] = d

    def ext(self, h: tuple) -> tuple[dict, int]:
        f = self.raw.get(h, {})
        return f, sum(f.values())

    def mle(self, w, h):
        f, den = self.ext(h)
        if h and den == 0:
            return self.prob(w, h[1:])
        return f.get(w, 0) / den

    def addk(self, w, h):
        k = self.opt["k"]
        f, den = self.ext(h)
        return (f.get(w, 0) + k) / (den + k * self.P)

    def laplace(self, w, h):
        f, den = self.ext(h)
        return (f.get(w, 0) + 1) / (den + self.P)

    def stupid(self, w, h):
        alpha = self.opt["alpha"]
        f, den = self.ext(h)
        if f.get(w, 0) > 0:
            return f[w] / den
        return alpha * self.prob(w, h[1:]) if h else alpha / self.P

    def jm(self, w, h):
        lam = self.opt["lambdas"][len(h)]
        f, den = self.ext(h)
        if not h:
            return lam * f.get(w, 0) / den + (1 - lam) / self.P
        if den == 0:
            return self.prob(w, h[1:])
        return lam * f.get(w, 0) / den + (1 - lam) * self.prob(w, h[1:])

    def wb(self, w, h):
        f, den = self.ext(h)
        t = len(f)
        if not h:
            return (f.get(w, 0) + t / self.P) / (den + t)
        if den == 0:
            return self.prob(w, h[1:])
        return (f.get(w, 0) + t * self.prob(w, h[1:])) / (den + t)

    def katz(self, w, h):
        K = self.opt["K"]
        f, den = self.ext(h)
        if h and den == 0:
            return self.prob(w, h[1:])
        n = len(h) + 1

        def lower(v):
            return self.prob(v, h[1:]) if h else 1 / self.P

        if all(r > K for r in f.values()):  # nothing to discount: absolute discounting by D of the order
            disc = {v: max(r - self.absd[n], 0) / den for v, r in f.items()}
        else:
            disc = {v: (self.gt[n][r] if r <= K else 1.0) * r / den for v, r in f.items()}
        if w in disc:
            return disc[w]
        assert len(f) < self.P  # never a context followed by every predictable word here
        alpha = (1 - sum(disc.values())) / (1 - sum(lower(v) for v in f))
        return alpha * lower(w)

    def kn(self, w, h):
        f = self.adj.get(h, {})
        den = sum(f.values())
        if h and den == 0:
            return self.prob(w, h[1:])
        D = self.D[len(h) + 1]

        def disc(a):
            return 0.0 if a == 0 else D[min(a, 3) - 1]

        gamma = sum(disc(a) for a in f.values()) / den
        a = f.get(w, 0)
        lower = self.prob(w, h[1:]) if h else 1 / self.P
        return max(a - disc(a), 0) / den + gamma * lower

    kn_basic = kn


# -- the runs -----------------------------------------------------------------------------------------------
OPTIONS = {"mle": ({}, []), "laplace": ({}, []), "addk": ({"k": 0.37}, []), "stupid": ({}, ["alpha=0.3"]),
           "jm": ({}, ["jm_lambdas=0.25,0.6,0.7"]), "wb": ({}, []), "katz": ({}, ["katz_k=2"]),
           "kn": ({}, []), "kn-basic": ({}, [])}
REF_OPTS = {"addk": {"k": 0.37}, "stupid": {"alpha": 0.3}, "jm": {"lambdas": (0.25, 0.6, 0.7)}, "katz": {"K": 2}}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pins-ngram")
    (d / "train.txt").write_text("\n".join(TRAIN) + "\n")
    (d / "valid.txt").write_text("a b a\nc a a\n")  # scored by the run; fixed options never tune on it
    (d / "test.txt").write_text("\n".join(TEST) + "\n")
    return d


@pytest.fixture(scope="module")
def run_for(corpus):
    """Trains each smoothing's run once per module (inside the module's temp folder, never a global cache)."""
    runs: dict[str, Path] = {}

    def get(smoothing: str) -> Path:
        if smoothing not in runs:
            options, sets = OPTIONS[smoothing]
            out = corpus.parent / f"run-{smoothing}"
            api.train(api.TrainRequest(model=f"ngram:{smoothing}{N}", corpus=corpus, output=out, min_count=1,
                                       context="sentence", options=options, sets=sets, progress=False))
            runs[smoothing] = out
        return runs[smoothing]

    return get


def contexts(words: list[str]) -> list[tuple]:
    """Every context a trigram can see in a line: <s>, <s> u, and u v, over the vocabulary and <unk>."""
    return [(S,)] + [(S, u) for u in words] + [(u, v) for u in words for v in words]


def test_the_smoothing_registry_is_what_this_file_pins():
    from lmkit.models.ngram.smoothing import SMOOTHINGS  # the one smoothing table (specs are parsed from it)

    assert set(SMOOTHINGS) == set(OPTIONS)  # a new smoothing needs a pin here


@pytest.mark.parametrize("smoothing", list(OPTIONS))
def test_probabilities_equal_the_formulas(smoothing, corpus, run_for):
    model, _ = api.load_model(run_for(smoothing))
    vocab = model.vocab
    predictable = [t for t in vocab.tokens if t not in ("<pad>", S)]
    assert sorted(predictable) == sorted([UNK, E] + sorted({w for line in TRAIN for w in line.split()}))
    ref = Reference(smoothing, predictable, **REF_OPTS.get(smoothing, {}))
    facts = model.fit_info()
    assert not facts.get("warnings"), facts.get("warnings")  # no fallback branch anywhere

    words = [t for t in predictable if t != E]
    ctxs = contexts(words)
    rows = model.next_logprobs([[vocab.index[t] for t in h] for h in ctxs])
    cols = [vocab.index[t] for t in predictable]
    want = np.array([[ref.prob(w, h) for w in predictable] for h in ctxs])
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(rows[:, cols], np.log(want), rtol=0, atol=1e-9)
    if smoothing != "stupid":
        np.testing.assert_allclose(want.sum(axis=1), 1.0, atol=1e-12)  # the formulas themselves normalise

    # the scoring path (targets looked up, not rows) on a test file with OOV words and unseen n-grams
    scored = api.score(run_for(smoothing), corpus / "test.txt").score
    expect = []
    for line in TEST:
        toks = [w if w in vocab.index else UNK for w in line.split()] + [E]
        hist = [S]
        for w in toks:
            expect.append(ref.prob(w, tuple(hist[-(N - 1):])))
            hist.append(w)
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(np.concatenate(scored.logprobs), np.log(expect), rtol=0, atol=1e-9)


def test_modified_kn_discounts_by_hand(corpus, run_for):
    """The three discounts of every order, from counts-of-counts of the adjusted counts computed here."""
    model, _ = api.load_model(run_for("kn"))
    got = model.fit_info()["discounts"]
    adjusted = kn_adjusted()
    want = []
    for n in range(1, N + 1):
        cc = counts_of_counts(order_values(adjusted, n), 4)
        assert all(cc[1:5])
        want.append(mkn_discounts_by_hand(cc))
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=0, atol=1e-12)
    # the cases a wrong formula would hit: Y = n1/(n1+n2), or one fixed discount
    for n in range(N):
        assert not np.allclose(want[n], 0.75)
    # the unigram order written out. Distinct left neighbours in TRAIN: a {<s> a b c e k} 6, b {<s> a b e f i} 6,
    # c {<s> a b} 3, d {c h} 2, e {a i} 2, i {<s> c} 2, f g h j k 1 each, </s> {a b d g} 4
    assert [adjusted[(w,)] for w in "abcdefghijk"] + [adjusted[(E,)]] == [6, 6, 3, 2, 2, 1, 1, 1, 2, 1, 1, 4]
    # n1 = 5, n2 = 3, n3 = 1, n4 = 1  ->  Y = 5/11,
    # D1 = 1 - 2Y 3/5 = 5/11,  D2 = 2 - 3Y 1/3 = 17/11,  D3+ = 3 - 4Y 1/1 = 13/11
    assert counts_of_counts(order_values(adjusted, 1), 4)[1:] == [5, 3, 1, 1]
    assert got[0] == pytest.approx([5 / 11, 17 / 11, 13 / 11], abs=1e-12)


def test_kn_basic_discount_by_hand(corpus, run_for):
    model, _ = api.load_model(run_for("kn-basic"))
    got = model.fit_info()["discounts"]
    adjusted = kn_adjusted()
    want = []
    for n in range(1, N + 1):
        cc = counts_of_counts(order_values(adjusted, n), 2)
        want.append(cc[1] / (cc[1] + 2 * cc[2]))
    np.testing.assert_allclose(np.array(got, dtype=float), want, rtol=0, atol=1e-12)


def test_katz_ratios_by_hand(corpus, run_for):
    model, _ = api.load_model(run_for("katz"))
    got = model.fit_info()["katz_ratios"]
    want = []
    for n in range(1, N + 1):
        cc = counts_of_counts(order_values(RAW, n), 3)
        common = 3 * cc[3] / cc[1]
        want.append([((r + 1) * cc[r + 1] / (r * cc[r]) - common) / (1 - common) for r in (1, 2)])
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=0, atol=1e-12)


def test_perplexity_of_the_test_file_is_the_hand_value(corpus, run_for):
    """The run's recorded test perplexity (run.json) from the hand probabilities, for modified KN."""
    import json

    run = run_for("kn")
    model, _ = api.load_model(run)
    predictable = [t for t in model.vocab.tokens if t not in ("<pad>", S)]
    ref = Reference("kn", predictable)
    nll, tokens, oov, nll_in = 0.0, 0, 0, 0.0
    for line in TEST:
        toks = [w if w in model.vocab.index else UNK for w in line.split()] + [E]
        hist = [S]
        for w in toks:
            lp = math.log(ref.prob(w, tuple(hist[-(N - 1):])))
            nll -= lp
            tokens += 1
            oov += w == UNK
            nll_in -= 0 if w == UNK else lp
            hist.append(w)
    test = json.loads((run / "run.json").read_text())["metrics"]["test"]
    assert (test["tokens"], test["oov"]) == (tokens, oov) == (24, 3)
    assert test["perplexity"] == pytest.approx(math.exp(nll / tokens), rel=1e-12)
    assert test["perplexity_excl_oov"] == pytest.approx(math.exp(nll_in / (tokens - oov)), rel=1e-12)
    assert test["cross_entropy_bits"] == pytest.approx(nll / tokens / math.log(2), rel=1e-12)
