"""Smoothing estimators: counts -> log-probabilities, vectorised per order with bincount.

Every estimator except add-k produces the *back-off form* an ARPA file stores: for each stored n-gram
"c w" a log-probability log P(w | c), and for each stored context c a log back-off weight, so that

    P(w | h) = P(h w)                     if "h w" is stored
             = bo(h) * P(w | h[1:])       otherwise (bo = 1 for a context that is not stored)

Interpolated models (JM, WB, KN) fit this form exactly: bo(c) is the interpolation weight of the lower
order and the stored probability already includes the interpolated lower-order term. Add-k cannot be
written this way (its unseen mass is uniform, not proportional to a lower order), so it keeps counts.

`SMOOTHINGS` at the end of this file is the one table of smoothings: name -> estimator, the NgramConfig
options only it reads, whether its scores normalise and whether ARPA can hold it.

Conventions shared by all (docs/protocol.md): the predictable set P is the vocabulary minus <pad> and <s>;
<s> is context only (its unigram count is never a target count); the unigram level backs off to (or is
interpolated with) the uniform distribution 1/|P|, so <unk> gets mass even if it was never seen --
except MLE, whose unseen events are log 0 by design.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from ...data.vocab import BOS, PAD
from .counts import NgramCounts

@dataclass
class Estimate:
    """Back-off form of a fitted model (natural logs)."""

    logp: list[np.ndarray]  # logp[n-1]: log P(last | prefix) per stored n-gram of order n; order 1 is (V,)
    logbo: list[np.ndarray]  # logbo[n-1]: log back-off weight of each n-gram of order n < N as a context
    missing_bo: float = 0.0  # log back-off weight of a context that is not stored (stupid: log alpha)
    facts: dict = field(default_factory=dict)


@dataclass
class Additive:
    """Add-k needs counts, not a back-off form: P(w | h) = (c(h w) + k) / (c(h) + k |P|)."""

    counts: list[np.ndarray]  # counts[n-1]: raw count of each stored n-gram (order 1: <s> zeroed)
    den: list[np.ndarray]  # den[n-1]: sum of extension counts of each order-n n-gram as a context
    total: float  # unigram denominator: scored training tokens
    k: float
    facts: dict = field(default_factory=dict)


def _log(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(x)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a / b with 0 where b == 0 (contexts without extensions never use the value)."""
    out = np.zeros(np.broadcast(a, b).shape)
    np.divide(a, b, out=out, where=b != 0)
    return out


def predictable_mask(V: int) -> np.ndarray:
    mask = np.ones(V, dtype=bool)
    mask[[PAD, BOS]] = False
    return mask


def target_counts(c: NgramCounts, n: int) -> np.ndarray:
    """Raw counts as targets: at order 1 <s> is context only, so its count is not a target count."""
    r = c.counts[n - 1].astype(np.float64)
    if n == 1:
        r = r.copy()
        r[[PAD, BOS]] = 0.0
    return r


def context_sum(c: NgramCounts, n: int, values: np.ndarray) -> np.ndarray:
    """Sum `values` (one per n-gram of order n) over n-grams sharing a context -> one per (n-1)-gram."""
    if n == 1:
        return np.array([values.sum()])
    return np.bincount(c.ctx[n - 1], weights=values, minlength=c.index.size(n - 1))


# -- discounts -------------------------------------------------------------------------------------------
def counts_of_counts(a: np.ndarray, upto: int, block: int | None = None) -> np.ndarray:
    """n[j] = how many entries have count exactly j, for j = 0..upto (counted `block` entries at a time)."""
    a = np.asarray(a, dtype=np.int64)
    n = np.zeros(upto + 2, dtype=np.int64)
    for lo, hi in blocks(a.size, block):
        part = a[lo:hi]
        n += np.bincount(np.minimum(part[part > 0], upto + 1), minlength=upto + 2)
    return n[: upto + 1]


def mkn_discounts(a: np.ndarray, fallback: tuple[float, float, float],
                  block: int | None = None) -> tuple[np.ndarray, str | None]:
    """Modified-KN discounts D1, D2, D3+ (Chen & Goodman 1998, eq. 26), as KenLM's lmplz computes them:
    Y = n1 / (n1 + 2 n2),  D_j = j - (j+1) Y n_{j+1} / n_j.  Undefined (some n_j = 0 for j <= 3) or out of
    range (D_j not in [0, j]) -> the fallback, as `lmplz --discount_fallback`. Returns [0, D1, D2, D3]."""
    n = counts_of_counts(a, 4, block).astype(np.float64)
    if (n[1:4] == 0).any():
        return np.array([0.0, *fallback]), "counts-of-counts n1..n3 include a zero"
    y = n[1] / (n[1] + 2 * n[2])
    d = np.array([0.0] + [j - (j + 1) * y * n[j + 1] / n[j] for j in (1, 2, 3)])
    if any(d[j] < 0 or d[j] > j for j in (1, 2, 3)):
        return np.array([0.0, *fallback]), f"discounts out of range ({', '.join(f'{x:.3g}' for x in d[1:])})"
    return d, None


def kn_discount(a: np.ndarray, fallback: float, block: int | None = None) -> tuple[float, str | None]:
    """One absolute discount per order (Ney, Essen & Kneser 1994): D = n1 / (n1 + 2 n2)."""
    n = counts_of_counts(a, 2, block)
    if n[1] == 0 or n[2] == 0:
        return float(fallback), "counts-of-counts n1 or n2 is zero"
    return float(n[1] / (n[1] + 2 * n[2])), None


def gt_ratios(r: np.ndarray, K: int, block: int | None = None) -> tuple[np.ndarray, float, str | None]:
    """Katz's (1987) Good-Turing discount ratios d_c for counts c = 0..K (d_c = 1 above K):
    c* = (c+1) n_{c+1} / n_c,  d_c = (c*/c - (K+1) n_{K+1}/n_1) / (1 - (K+1) n_{K+1}/n_1).
    When counts-of-counts make them undefined or not in (0, 1], fall back to absolute discounting
    d_c = (c - D)/c. Also returns that D = n1/(n1 + 2 n2) (0.5 if undefined)."""
    n = counts_of_counts(r, K + 1, block).astype(np.float64)
    c = np.arange(1, K + 1, dtype=np.float64)
    D = n[1] / (n[1] + 2 * n[2]) if n[1] > 0 and n[2] > 0 else 0.5
    if (n[1:] == 0).any():
        reason = f"counts-of-counts n1..n{K + 1} include a zero"
    else:
        common = (K + 1) * n[K + 1] / n[1]
        d = ((c + 1) * n[2:] / (c * n[1:K + 1]) - common) / (1 - common) if common < 1 else np.zeros(K)
        if common < 1 and ((d > 0) & (d <= 1)).all():
            return np.concatenate([[1.0], d]), D, None
        reason = "Good-Turing ratios out of (0, 1]"
    return np.concatenate([[1.0], (c - D) / c]), D, reason


# -- visiting an order block by block -----------------------------------------------------------------------
SMOOTH_BLOCK = 1 << 20  # n-grams per block of an estimator's temporaries (~100 bytes each) without a budget
SMOOTH_ROW_BYTES = 128  # bytes per n-gram of a block's temporaries: sets the block from --memory


def blocks(m: int, block: int | None) -> list[tuple[int, int]]:
    """[lo, hi) ranges covering 0..m in blocks of at most `block` (one range if block is None)."""
    step = max(int(block or m or 1), 1)
    return [(lo, min(lo + step, m)) for lo in range(0, m, step)] or [(0, 0)]


Block = Callable[[int, int], np.ndarray]  # (lo, hi) -> one value per n-gram lo..hi-1 of the order


class Order:
    """Order n of the counts, visited `step` n-grams at a time, so an estimator's temporaries are a few
    arrays of one block whatever the model's size (order 1, V entries, is one block). Per-context sums
    accumulate with np.add.at, which adds in the same order as one np.bincount over the whole order: the
    results do not depend on the block size, bit for bit."""

    def __init__(self, c: NgramCounts, n: int, step: int | None):
        self.c, self.n = c, n
        self.size = c.index.size(n)
        self.contexts = 1 if n == 1 else c.index.size(n - 1)
        self.ranges = blocks(self.size, None if n == 1 else step)

    def ctx(self, lo: int, hi: int) -> np.ndarray:
        """Context id (order n-1) of each n-gram; all 0 at order 1 (the empty context)."""
        return np.zeros(hi - lo, dtype=np.int64) if self.n == 1 else self.c.ctx[self.n - 1][lo:hi]

    def r(self, lo: int, hi: int) -> np.ndarray:
        """Target counts (target_counts, a block of it)."""
        if self.n == 1:
            return target_counts(self.c, 1)[lo:hi]
        return self.c.counts[self.n - 1][lo:hi].astype(np.float64)

    def target_ints(self) -> np.ndarray:
        """The target counts as integers, for counts of counts."""
        return self.c.counts[0] * predictable_mask(self.c.vocab_size) if self.n == 1 else self.c.counts[self.n - 1]

    def lower(self, lo: int, hi: int, logp: list[np.ndarray], P: int) -> np.ndarray:
        """P(w | c[1:]) for the n-grams "c w" lo..hi-1: the stored probability of the suffix (order 1:
        the uniform distribution over the predictable set)."""
        if self.n == 1:
            return np.where(predictable_mask(self.c.vocab_size), 1.0 / P, 0.0)[lo:hi]
        return np.exp(logp[self.n - 2][self.c.index.keys[self.n - 1][lo:hi] // self.c.vocab_size])

    def sums(self, *values: Block) -> list[np.ndarray]:
        """Per-context sums of each per-n-gram value (context_sum, block by block)."""
        if self.n == 1:  # exactly context_sum's order-1 sum (a pairwise sum of the whole array)
            return [np.array([value(0, self.size).sum()]) for value in values]
        out = [np.zeros(self.contexts) for _ in values]
        for lo, hi in self.ranges:
            ctx = self.ctx(lo, hi)
            for total, value in zip(out, values):
                np.add.at(total, ctx, value(lo, hi))
        return out

    def fill(self, value: Block) -> np.ndarray:
        """One float64 per n-gram of the order, computed block by block."""
        out = np.empty(self.size)
        for lo, hi in self.ranges:
            out[lo:hi] = value(lo, hi)
        return out

    def per_context(self, value: Block, out: np.ndarray | None = None) -> np.ndarray:
        """One float64 per context (order n-1), block by block: value(lo, hi) over contexts lo..hi-1 (into `out`
        when given)."""
        out = np.empty(self.contexts) if out is None else out
        for lo, hi in blocks(self.contexts, self.ranges[0][1] - self.ranges[0][0] or None):
            out[lo:hi] = value(lo, hi)
        return out


def _backoff_weights(order: Order, den: np.ndarray, weight: Block, out: np.ndarray | None = None) -> np.ndarray:
    """log back-off weights of the (n-1)-grams: `weight` where the context has extensions, else log 1. `out`: a
    per-context float64 array to write them into, block by block (the weights' own array, when a block of the
    weights is only read before its block of `out` is written: one array of the largest order's contexts less at
    the peak of smoothing)."""
    def block(lo: int, hi: int) -> np.ndarray:
        seen = den[lo:hi] > 0
        return np.where(seen, _log(np.where(seen, weight(lo, hi), 1.0)), 0.0)

    return order.per_context(block, out)


# -- estimators ------------------------------------------------------------------------------------------
# Each estimator walks the orders bottom up; one order's work is a function of its own (`_*_order`), which
# returns that order's logp and the back-off weights of its contexts (None at order 1).
Orders = tuple[np.ndarray, np.ndarray | None]


def estimate_mle(c: NgramCounts, step: int | None = SMOOTH_BLOCK, consume: bool = False) -> Estimate:
    """P(w | c) = c(c w) / c(c .); unseen events get log 0 (infinite perplexity by design). A context
    never seen in training backs off with weight 1 (its MLE is undefined)."""
    return _backoff_form(c, step, _mle_order, 0.0, {}, consume)


def _mle_order(o: Order, logp: list) -> Orders:
    den, = o.sums(o.r)
    probs = o.fill(lambda lo, hi: _log(_div(o.r(lo, hi), den[o.ctx(lo, hi)])))
    return probs, o.per_context(lambda lo, hi: np.where(den[lo:hi] > 0, -np.inf, 0.0))


def estimate_stupid(c: NgramCounts, alpha: float, step: int | None = SMOOTH_BLOCK,
                    consume: bool = False) -> Estimate:
    """Stupid backoff (Brants et al. 2007): S(w | c) = c(c w)/c(c) if seen, else alpha * S(w | c[1:]);
    S(w) = c(w)/N, and alpha/|P| for a word never seen. Scores, not probabilities: rows do not sum to 1."""
    return _backoff_form(c, step, lambda o, logp: _stupid_order(o, alpha), math.log(alpha), {"alpha": alpha},
                         consume)


def _stupid_order(o: Order, alpha: float) -> Orders:
    P = o.c.vocab_size - 2
    mask = predictable_mask(o.c.vocab_size)
    den, = o.sums(o.r)

    def score(lo: int, hi: int) -> np.ndarray:
        r = o.r(lo, hi)
        p = _div(r, den[o.ctx(lo, hi)])
        return _log(np.where((r == 0) & mask[lo:hi], alpha / P, p) if o.n == 1 else p)

    return o.fill(score), np.full(den.size, math.log(alpha))


def estimate_katz(c: NgramCounts, K: int, step: int | None = SMOOTH_BLOCK, consume: bool = False) -> Estimate:
    """Katz (1987) back-off with Good-Turing discounts for counts <= K:
    P(w | c) = d_r r / c(c)  if r = c(c w) > 0,  else alpha(c) P(w | c[1:]),
    alpha(c) = (1 - sum_seen P(w | c)) / (1 - sum_seen P(w | c[1:])). Unigrams back off to uniform.
    Two corner cases Katz leaves open, handled so that no row loses mass or gives <unk> zero: a context
    followed by every predictable word has nowhere to put the freed mass (its discounted probabilities
    are renormalised); a context whose extensions all have counts > K frees no mass at all (its counts
    are discounted absolutely by D = n1/(n1 + 2 n2) of the order instead)."""
    facts: dict = {"katz_ratios": [], "warnings": []}
    return _backoff_form(c, step, lambda o, logp: _katz_order(o, logp, K, step, facts), 0.0, facts, consume)


def _katz_order(o: Order, logp: list, K: int, step: int | None, facts: dict) -> Orders:
    P = o.c.vocab_size - 2
    d, D, why = gt_ratios(o.target_ints(), K, step)
    if why:
        facts["warnings"].append(f"katz order {o.n}: {why}; used absolute discounting instead")
    facts["katz_ratios"].append([float(x) for x in d[1:]])
    den, = o.sums(o.r)

    def discounted(lo: int, hi: int) -> np.ndarray:  # d_r r / c(c)
        r = o.r(lo, hi)
        ratio = np.where(r > K, 1.0, d[np.minimum(r, K).astype(np.int64)])
        return _div(ratio * r, den[o.ctx(lo, hi)])

    types, S = o.sums(lambda lo, hi: (o.r(lo, hi) > 0).astype(np.float64),
                      lambda lo, hi: np.where(o.r(lo, hi) > 0, discounted(lo, hi), 0.0))
    stuck = (S >= 1.0 - 1e-12) & (types < P)  # nothing discounted in this context

    def unstuck(lo: int, hi: int) -> np.ndarray:
        r, ctx = o.r(lo, hi), o.ctx(lo, hi)
        return np.where(stuck[ctx] & (r > 0), _div(np.maximum(r - D, 0.0), den[ctx]), discounted(lo, hi))

    S, L = o.sums(lambda lo, hi: np.where(o.r(lo, hi) > 0, unstuck(lo, hi), 0.0),
                  lambda lo, hi: np.where(o.r(lo, hi) > 0, o.lower(lo, hi, logp, P), 0.0))
    full = (types >= P) | (1.0 - L <= 1e-12)
    alpha = np.where(full, 0.0, _div(np.maximum(1.0 - S, 0.0), np.where(full, 1.0, 1.0 - L)))

    def prob(lo: int, hi: int) -> np.ndarray:
        ctx, p = o.ctx(lo, hi), unstuck(lo, hi)
        p = np.where(full[ctx], _div(p, S[ctx]), p)
        if o.n == 1:  # unseen predictable words get the uniform share of the freed mass
            p = np.where(o.r(lo, hi) > 0, p, alpha[0] * o.lower(lo, hi, logp, P))
        return _log(p)

    logp_n = o.fill(prob)
    return logp_n, _backoff_weights(o, den, lambda lo, hi: alpha[lo:hi], out=alpha)


def estimate_jm(c: NgramCounts, lambdas: list[float], step: int | None = SMOOTH_BLOCK,
                consume: bool = False) -> Estimate:
    """Jelinek-Mercer (1980) interpolation, one lambda per order:
    P(w | c) = l_n c(c w)/c(c) + (1 - l_n) P(w | c[1:]), bottoming out at the uniform distribution.
    A context without extensions passes straight to the lower order."""
    return _backoff_form(c, step, lambda o, logp: _jm_order(o, logp, lambdas[o.n - 1]), 0.0,
                         {"lambdas": [float(x) for x in lambdas]}, consume)


def _jm_order(o: Order, logp: list, lam: float) -> Orders:
    P = o.c.vocab_size - 2
    den, = o.sums(o.r)
    probs = o.fill(lambda lo, hi: _log(lam * _div(o.r(lo, hi), den[o.ctx(lo, hi)])
                                       + (1 - lam) * o.lower(lo, hi, logp, P)))
    return probs, _backoff_weights(o, den, lambda lo, hi: np.full(hi - lo, 1 - lam))


def estimate_wb(c: NgramCounts, step: int | None = SMOOTH_BLOCK, consume: bool = False) -> Estimate:
    """Witten-Bell (1991) interpolation: with t(c) = N1+(c .) distinct followers of c,
    P(w | c) = (c(c w) + t(c) P(w | c[1:])) / (c(c) + t(c)); unigrams interpolate with uniform."""
    return _backoff_form(c, step, _wb_order, 0.0, {}, consume)


def _wb_order(o: Order, logp: list) -> Orders:
    P = o.c.vocab_size - 2
    den, t = o.sums(o.r, lambda lo, hi: (o.r(lo, hi) > 0).astype(np.float64))

    def prob(lo: int, hi: int) -> np.ndarray:
        ctx = o.ctx(lo, hi)
        return _log(_div(o.r(lo, hi) + t[ctx] * o.lower(lo, hi, logp, P), den[ctx] + t[ctx]))

    return o.fill(prob), _backoff_weights(o, den, lambda lo, hi: _div(t[lo:hi], den[lo:hi] + t[lo:hi]))


def _backoff_form(c: NgramCounts, step: int | None, one_order: Callable[[Order, list], Orders],
                  missing_bo: float, facts: dict, consume: bool = False) -> Estimate:
    """Orders 1..N bottom up; `consume` drops each order's counts and context ids from `c` once used."""
    logp, logbo = [], []
    for n in range(1, c.order + 1):
        probs, weights = one_order(Order(c, n, step), logp)
        logp.append(probs)
        if n > 1:
            logbo.append(weights)
        if consume:  # order n's counts and contexts are not needed again (order n-1's keys still are)
            c.counts[n - 1] = c.ctx[n - 1] = None
    return Estimate(logp, logbo, missing_bo, facts)


def kn_counts(c: NgramCounts, n: int, block: int | None = None) -> np.ndarray:
    """The counts Kneser-Ney discounts at order n, as KenLM's adjust_counts: raw counts at the highest
    order and for n-grams starting with <s> (nothing can precede <s>), continuation counts N1+(. g)
    for other lower-order n-grams; the unigram <s> gets 0 (it is never predicted). The highest order's
    are the raw counts themselves (not a copy). Continuation counts are summed a block of order n+1 at a
    time: its keys are sorted, so a block's suffixes are one contiguous range of order n."""
    if n == c.order:
        return c.counts[n - 1] if n > 1 else _no_specials(c.counts[0].copy())
    a = np.zeros(c.index.size(n), dtype=c.counts[n - 1].dtype)  # each at most a raw count: the counts' width
    keys = c.index.keys[n]
    V = c.vocab_size
    for lo, hi in blocks(keys.size, block):
        if hi > lo:
            suffix = keys[lo:hi] // V
            first = int(suffix[0])
            a[first:int(suffix[-1]) + 1] += np.bincount(suffix - first)
    for lo, hi in blocks(a.size, block):
        bos = c.index.keys[n - 1][lo:hi] % V == BOS  # n-grams starting with <s> (order 1: <s> itself)
        a[lo:hi][bos] = c.counts[n - 1][lo:hi][bos]
    return _no_specials(a) if n == 1 else a


def _no_specials(a: np.ndarray) -> np.ndarray:
    a[[PAD, BOS]] = 0
    return a


def estimate_kn(c: NgramCounts, modified: bool, fallback: tuple[float, float, float],
                step: int | None = SMOOTH_BLOCK, consume: bool = False) -> Estimate:
    """Interpolated Kneser-Ney (Chen & Goodman 1998 §3.5; KenLM lmplz for the modified variant):
    P(w | c) = (a(c w) - D(a)) / sum_w a(c w) + gamma(c) P(w | c[1:]),
    gamma(c) = sum_j D_j N_j(c .) / sum_w a(c w),  a = kn_counts,  the unigram level interpolated with
    the uniform distribution over the predictable set. `modified`: D1, D2, D3+ per order (KenLM's
    default); otherwise one D per order. `consume`: drop each order's counts and context ids from `c`
    once they are used (keys stay), so a big model's count tables shrink while its probabilities grow."""
    facts: dict = {"discounts": [], "warnings": []}
    return _backoff_form(c, step, lambda o, logp: _kn_order(o, logp, modified, fallback, step, facts), 0.0,
                         facts, consume)


def _kn_order(o: Order, logp: list, modified: bool, fallback: tuple[float, float, float], step: int | None,
              facts: dict) -> Orders:
    P = o.c.vocab_size - 2
    a = kn_counts(o.c, o.n, None if o.n == 1 else step)
    if modified:
        D, why = mkn_discounts(a, fallback, step)
    else:
        d1, why = kn_discount(a, fallback[0], step)
        D = np.array([0.0, d1, d1, d1])
    if why:
        facts["warnings"].append(f"order {o.n}: {why}; using discount fallback {' '.join(f'{x:g}' for x in D[1:])}")
    facts["discounts"].append([float(x) for x in D[1:]] if modified else float(D[1]))
    den, gamma = o.sums(lambda lo, hi: a[lo:hi].astype(np.float64), lambda lo, hi: D[np.minimum(a[lo:hi], 3)])
    np.divide(gamma, den, out=gamma, where=den != 0)  # sum_j D_j N_j(c .) / sum_w a(c w); 0 if no extension

    def prob(lo: int, hi: int) -> np.ndarray:
        ctx = o.ctx(lo, hi)
        return _log(_div(a[lo:hi] - D[np.minimum(a[lo:hi], 3)], den[ctx]) + gamma[ctx] * o.lower(lo, hi, logp, P))

    logp_n = o.fill(prob)
    return logp_n, _backoff_weights(o, den, lambda lo, hi: gamma[lo:hi], out=gamma)


def estimate_additive(c: NgramCounts, k: float, step: int | None = SMOOTH_BLOCK) -> Additive:
    """Lidstone / add-k (Laplace: k = 1): P(w | h) = (c(h w) + k) / (c(h) + k |P|), with h the full
    available context; an unseen context gives the uniform distribution."""
    orders = [Order(c, n, step) for n in range(1, c.order + 1)]
    counts = [o.fill(o.r) for o in orders]
    den = [o.sums(lambda lo, hi, n=o.n: counts[n - 1][lo:hi])[0] for o in orders[1:]]
    return Additive(counts, den, float(counts[0].sum()), float(k), {})


# -- held-out statistics for tuning (add-k's k, JM's lambdas) --------------------------------------------
def heldout_levels(c: NgramCounts, toks: np.ndarray, depth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every target of a held-out text, counts at each level k = 0..N-1 (context h[-k:]):
    num[:, k] = c(h[-k:] w), den[:, k] = c(h[-k:] .); den is 0 where the context is unseen or longer
    than the available history."""
    pos = np.flatnonzero(depth > 0)
    tgt, ctx = c.index.chains(toks, depth, pos)
    N = c.order
    num = np.zeros((pos.size, N))
    den = np.zeros((pos.size, N))
    num[:, 0] = target_counts(c, 1)[tgt[:, 0]]
    den[:, 0] = target_counts(c, 1).sum()
    for k in range(1, N):
        hit = tgt[:, k] >= 0
        num[hit, k] = c.counts[k][tgt[hit, k]]
        sums = context_sum(c, k + 1, c.counts[k].astype(np.float64))
        have = ctx[:, k - 1] >= 0
        den[have, k] = sums[ctx[have, k - 1]]
    return num, den


def additive_logprob(num: np.ndarray, den: np.ndarray, k: float, P: int) -> np.ndarray:
    d = den + k * P
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log(num + k) - np.log(d)
    return np.where(d > 0, out, -math.log(P))


def tune_k(num: np.ndarray, den: np.ndarray, P: int, lo: float = 1e-5, hi: float = 10.0) -> float:
    """k maximising held-out log-likelihood: golden-section search on log k (the likelihood is
    unimodal in k for add-k)."""
    def ll(logk: float) -> float:
        return float(additive_logprob(num, den, math.exp(logk), P).sum())

    a, b = math.log(lo), math.log(hi)
    g = (math.sqrt(5) - 1) / 2
    x1, x2 = b - g * (b - a), a + g * (b - a)
    f1, f2 = ll(x1), ll(x2)
    for _ in range(60):
        if f1 < f2:
            a, x1, f1 = x1, x2, f2
            x2 = a + g * (b - a)
            f2 = ll(x2)
        else:
            b, x2, f2 = x2, x1, f1
            x1 = b - g * (b - a)
            f1 = ll(x1)
    return math.exp((a + b) / 2)


def fit_jm_lambdas(num: np.ndarray, den: np.ndarray, P: int, iters: int = 200,
                   tol: float = 1e-7) -> list[float]:
    """EM for the per-order lambdas of recursive JM interpolation on held-out tokens.

    The model is a stick-breaking mixture: from the highest order with a seen context down, level n
    takes the token with probability l_n (emitting c(h w)/c(h)), otherwise passes it down; the uniform
    distribution takes what is left. E-step: responsibilities r_n; M-step: l_n = sum r_n / sum of the
    responsibility of levels <= n (the tokens that reached level n)."""
    T, N = num.shape
    active = den > 0
    ml = np.where(active, num / np.where(active, den, 1.0), 0.0)
    lam = np.full(N, 0.5)
    for _ in range(iters):
        w = np.zeros((T, N))
        rest = np.ones(T)
        for n in range(N - 1, -1, -1):
            w[:, n] = np.where(active[:, n], rest * lam[n], 0.0)
            rest = np.where(active[:, n], rest * (1 - lam[n]), rest)
        joint = w * ml
        total = joint.sum(axis=1) + rest / P
        resp = joint / total[:, None]
        below = np.cumsum(resp, axis=1) + (rest / P / total)[:, None]  # responsibility of levels <= n
        reached = np.where(active, below, 0.0).sum(axis=0)
        new = np.where(reached > 0, resp.sum(axis=0) / np.where(reached > 0, reached, 1.0), lam)
        new = np.clip(new, 0.0, 1 - 1e-6)
        done = np.abs(new - lam).max() < tol
        lam = new
        if done:
            break
    return [float(x) for x in lam]


# -- the smoothing table ---------------------------------------------------------------------------------
# Every estimator is called as estimate(counts, settings, step): `settings` holds the smoothing's own options
# (Smoothing.options) with anything fitted on the valid split already resolved (addk's k=auto, jm's lambdas).
Settings = Mapping[str, Any]


@dataclass(frozen=True)
class Smoothing:
    """One smoothing: its estimator and what it supports (the model, the option checks and ARPA read these)."""

    estimate: Callable[[NgramCounts, Settings, int | None], Estimate | Additive]
    options: tuple[str, ...] = ()  # NgramConfig fields only this smoothing reads; refused with any other
    normalised: bool = True  # rows sum to one (stupid backoff gives scores, not probabilities)
    arpa: bool = False  # a back-off form ARPA can hold (add-k's uniform unseen mass has none)


def _mle(c: NgramCounts, s: Settings, step: int | None) -> Estimate:
    return estimate_mle(c, step, consume=True)


def _laplace(c: NgramCounts, s: Settings, step: int | None) -> Additive:
    return estimate_additive(c, 1.0, step)


def _addk(c: NgramCounts, s: Settings, step: int | None) -> Additive:
    return estimate_additive(c, float(s["k"]), step)


def _katz(c: NgramCounts, s: Settings, step: int | None) -> Estimate:
    return estimate_katz(c, s["katz_k"], step, consume=True)


def _stupid(c: NgramCounts, s: Settings, step: int | None) -> Estimate:
    return estimate_stupid(c, s["alpha"], step, consume=True)


def _jm(c: NgramCounts, s: Settings, step: int | None) -> Estimate:
    return estimate_jm(c, list(s["jm_lambdas"]), step, consume=True)


def _wb(c: NgramCounts, s: Settings, step: int | None) -> Estimate:
    return estimate_wb(c, step, consume=True)


def _kn(c: NgramCounts, s: Settings, step: int | None) -> Estimate:
    return estimate_kn(c, True, s["discount_fallback"], step, consume=True)


def _kn_basic(c: NgramCounts, s: Settings, step: int | None) -> Estimate:
    return estimate_kn(c, False, s["discount_fallback"], step, consume=True)


# name -> Smoothing; the order is the order every message and help text lists them in.
SMOOTHINGS: dict[str, Smoothing] = {
    "mle": Smoothing(_mle),
    "laplace": Smoothing(_laplace),
    "addk": Smoothing(_addk, options=("k",)),
    "katz": Smoothing(_katz, options=("katz_k",), arpa=True),
    "stupid": Smoothing(_stupid, options=("alpha",), normalised=False),
    "jm": Smoothing(_jm, options=("jm_lambdas",), arpa=True),
    "wb": Smoothing(_wb, arpa=True),
    "kn": Smoothing(_kn, options=("discount_fallback",), arpa=True),
    "kn-basic": Smoothing(_kn_basic, options=("discount_fallback",), arpa=True),
}


def arpa_exportable() -> list[str]:
    """Smoothings `lmkit export-arpa` can write."""
    return [name for name, entry in SMOOTHINGS.items() if entry.arpa]


def readers(option: str) -> list[str]:
    """Smoothings that read an NgramConfig option (empty: every smoothing, or none, reads it)."""
    return [name for name, entry in SMOOTHINGS.items() if option in entry.options]
