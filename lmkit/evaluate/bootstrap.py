"""Paired bootstrap confidence intervals for corpus perplexity.

A test file's perplexity is one number measured on one sample of sentences; another sample of the same
size would give another number. The bootstrap redraws the test sequences with replacement and recomputes
the corpus perplexity exp(sum NLL / sum tokens) each time -- the same formula as evaluate.perplexity,
applied to resampled per-sequence totals. Every model is scored on the SAME resampled sequences (paired):
the difference between two models then varies far less than either perplexity alone, because a hard
sentence is hard for every model.

Numbers are percentile intervals. A resample is a row of counts (how often each sequence was drawn),
so all totals are one (N x S) @ (S x M) matrix product."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Resamples are processed in chunks so that the (chunk x sequences) count matrix stays near this size.
CHUNK_CELLS = 4_000_000
# Relative perplexity differences up to this size are rounding, not a difference between models.
TIE = 1e-12


@dataclass
class BootstrapResult:
    """Per model (arrays of length M): full-data perplexity, its interval, and the paired difference to
    the reference model `best` (this model's perplexity minus the best's; positive = worse)."""

    n: int
    seed: int
    confidence: float
    best: int
    perplexity: np.ndarray
    ppl_lo: np.ndarray
    ppl_hi: np.ndarray
    diff_lo: np.ndarray
    diff_hi: np.ndarray
    p_worse: np.ndarray  # fraction of resamples in which this model's perplexity is above the best's


def resample_counts(rng: np.random.Generator, rows: int, sequences: int) -> np.ndarray:
    """(rows, sequences) float64 counts: each row draws `sequences` indices with replacement."""
    idx = rng.integers(0, sequences, size=(rows, sequences))
    flat = (np.arange(rows)[:, None] * sequences + idx).ravel()
    return np.bincount(flat, minlength=rows * sequences).reshape(rows, sequences).astype(np.float64)


def paired_bootstrap(nll: np.ndarray, tokens: np.ndarray, n: int = 1000, seed: int = 0,
                     confidence: float = 0.95, best: int | None = None) -> BootstrapResult:
    """Percentile intervals of each model's perplexity and of its difference to the best model's.

    `nll` is (models, sequences) total NLL in nats per sequence, `tokens` the scored tokens per sequence
    (identical for every model under one protocol). `best` defaults to the model with the lowest
    full-data perplexity. Reproducible: the same seed gives the same resamples and intervals."""
    nll = np.atleast_2d(np.asarray(nll, dtype=np.float64))
    tokens = np.asarray(tokens, dtype=np.float64)
    models, sequences = nll.shape
    if tokens.shape != (sequences,):
        raise ValueError(f"tokens has shape {tokens.shape}; expected ({sequences},) to match nll {nll.shape}")
    if sequences == 0 or models == 0:
        raise ValueError("nothing to resample: no models or no sequences")
    if not np.all(np.isfinite(nll)):
        raise ValueError("per-sequence NLL must be finite (an infinite perplexity has no interval)")
    if n < 1:
        raise ValueError(f"the number of resamples must be at least 1, got {n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")
    full = np.exp(nll.sum(axis=1) / tokens.sum())
    best = int(np.argmin(full)) if best is None else int(best)

    rng = np.random.default_rng(seed)
    chunk = max(1, CHUNK_CELLS // sequences)
    ppl = np.empty((n, models))
    for start in range(0, n, chunk):
        rows = min(chunk, n - start)
        counts = resample_counts(rng, rows, sequences)  # (rows, S)
        sums = counts @ nll.T  # (rows, M) total NLL of each resample
        toks = counts @ tokens  # (rows,) scored tokens of each resample (every sequence has >= 1)
        ppl[start:start + rows] = np.exp(sums / toks[:, None])

    diff = ppl - ppl[:, best:best + 1]  # (N, M), paired: same resample in every column
    # equal models must tie exactly, whatever rounding the matrix product did per column
    diff[np.abs(diff) <= TIE * ppl[:, best:best + 1]] = 0.0
    alpha = (1.0 - confidence) / 2.0
    ppl_lo, ppl_hi = np.quantile(ppl, [alpha, 1.0 - alpha], axis=0)
    diff_lo, diff_hi = np.quantile(diff, [alpha, 1.0 - alpha], axis=0)
    return BootstrapResult(n=n, seed=seed, confidence=confidence, best=best, perplexity=full,
                           ppl_lo=ppl_lo, ppl_hi=ppl_hi, diff_lo=diff_lo, diff_hi=diff_hi,
                           p_worse=(diff > 0).mean(axis=0))
