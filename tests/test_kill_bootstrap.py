"""Paired bootstrap: the edges mutation testing found unpinned (docs/testing.md, bench/mutation.py bootstrap).

Intervals are checked against an independent recomputation from the same resamples (resample_counts with
the same seed), so a changed percentile, a changed tie rule or a changed chunking shows up as a number."""

from __future__ import annotations

import numpy as np
import pytest

from lmkit.evaluate import bootstrap
from lmkit.evaluate.bootstrap import paired_bootstrap, resample_counts


def two_models(sequences: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, 20, sequences)
    a = tokens * rng.uniform(4.0, 6.0, sequences)  # ~5 nats per token: perplexity ~150
    b = a + tokens * rng.uniform(-0.2, 0.4, sequences)
    return np.stack([a, b]), tokens


def reference(nll, tokens, n, seed, confidence, best):
    """The same statistics, written out plainly from one block of resamples."""
    counts = resample_counts(np.random.default_rng(seed), n, nll.shape[1])
    ppl = np.exp((counts @ nll.T) / (counts @ tokens)[:, None])
    diff = ppl - ppl[:, [best]]
    alpha = (1 - confidence) / 2
    return ppl, diff, np.quantile(ppl, [alpha, 1 - alpha], axis=0), np.quantile(diff, [alpha, 1 - alpha], axis=0)


@pytest.mark.parametrize("confidence", [0.5, 0.9])
def test_intervals_are_the_percentiles_of_the_paired_resamples(confidence):
    nll, tokens = two_models()
    res = paired_bootstrap(nll, tokens, 200, seed=3, confidence=confidence)
    ppl, diff, (lo, hi), (dlo, dhi) = reference(nll, tokens.astype(float), 200, 3, confidence, res.best)
    np.testing.assert_allclose(res.ppl_lo, lo, rtol=1e-12)
    np.testing.assert_allclose(res.ppl_hi, hi, rtol=1e-12)
    np.testing.assert_allclose(res.diff_lo, dlo, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(res.diff_hi, dhi, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(res.p_worse, (diff > 1e-9).mean(axis=0))
    np.testing.assert_allclose(res.perplexity, np.exp(nll.sum(axis=1) / tokens.sum()), rtol=1e-14)


def test_result_records_what_was_asked():
    nll, tokens = two_models()
    res = paired_bootstrap(nll, tokens, 50, seed=9, confidence=0.8)
    assert (res.n, res.seed, res.confidence) == (50, 9, 0.8)


def test_defaults_are_a_thousand_resamples_seed_zero():
    nll, tokens = two_models()
    res = paired_bootstrap(nll, tokens)
    assert (res.n, res.seed, res.confidence) == (1000, 0, 0.95)
    explicit = paired_bootstrap(nll, tokens, 1000, seed=0)
    np.testing.assert_array_equal(res.ppl_lo, explicit.ppl_lo)
    np.testing.assert_array_equal(res.diff_hi, explicit.diff_hi)


def test_an_explicit_reference_model_is_used_even_if_not_the_best():
    nll, tokens = two_models()
    auto = paired_bootstrap(nll, tokens, 100, seed=1)
    other = 1 - auto.best
    res = paired_bootstrap(nll, tokens, 100, seed=1, best=other)
    assert res.best == other
    assert res.diff_lo[other] == res.diff_hi[other] == 0.0
    assert res.diff_hi[auto.best] <= 0.0  # the better model is below the chosen reference


def test_chunking_the_resamples_changes_nothing(monkeypatch):
    nll, tokens = two_models(sequences=4)
    whole = paired_bootstrap(nll, tokens, 7, seed=2)
    monkeypatch.setattr(bootstrap, "CHUNK_CELLS", 10)  # 2 resamples of 4 sequences per chunk: 2+2+2+1
    chunked = paired_bootstrap(nll, tokens, 7, seed=2)
    for name in ("ppl_lo", "ppl_hi", "diff_lo", "diff_hi", "p_worse"):
        np.testing.assert_array_equal(getattr(chunked, name), getattr(whole, name))


def test_float32_scores_are_summed_in_float64():
    rng = np.random.default_rng(5)
    tokens = rng.integers(1, 50, 3000)
    nll32 = (tokens * rng.uniform(3, 7, 3000)).astype(np.float32)
    res = paired_bootstrap(nll32[None, :], tokens, 5, seed=0)
    exact = np.exp(nll32.astype(np.float64).sum() / tokens.sum())
    assert res.perplexity[0] == exact


def test_differences_within_rounding_are_ties():
    nll, tokens = two_models()
    a = nll[0]
    b = a * (1 + 1e-14)  # perplexities differ by ~1e-13 relatively: below TIE (1e-12), above rounding
    res = paired_bootstrap(np.stack([a, b]), tokens, 100, seed=0)
    assert res.perplexity[0] != res.perplexity[1]
    np.testing.assert_array_equal(res.p_worse, [0.0, 0.0])
    assert res.diff_lo[1] == res.diff_hi[1] == 0.0


def test_one_resample_and_one_sequence_are_enough():
    res = paired_bootstrap(np.array([[10.0]]), np.array([5]), 1, seed=0)
    assert res.ppl_lo[0] == res.ppl_hi[0] == pytest.approx(np.exp(2.0))


@pytest.mark.parametrize("nll, tokens", [(np.zeros((1, 0)), np.zeros(0)), (np.zeros((0, 3)), np.ones(3))])
def test_nothing_to_resample_is_refused(nll, tokens):
    with pytest.raises(ValueError, match="^nothing to resample: no models or no sequences$"):
        paired_bootstrap(nll, tokens, 10)


def test_bad_arguments_are_refused_with_their_reason():
    nll, tokens = two_models()
    with pytest.raises(ValueError, match=r"^per-sequence NLL must be finite \(an infinite perplexity has no "
                                         r"interval\)$"):
        paired_bootstrap(np.where(np.arange(30) == 3, np.inf, nll), tokens, 10)
    with pytest.raises(ValueError, match="must be at least 1, got 0"):
        paired_bootstrap(nll, tokens, 0)
    for confidence in (0.0, 1.0):
        with pytest.raises(ValueError, match="confidence must be between 0 and 1"):
            paired_bootstrap(nll, tokens, 10, confidence=confidence)
