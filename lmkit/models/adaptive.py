"""Adaptive softmax output layer (Grave et al. 2017), exact and normalised.

    E. Grave, A. Joulin, M. Cissé, D. Grangier, H. Jégou. "Efficient softmax approximation for GPUs".
    ICML 2017.

Why: with a 10k-word vocabulary the output layer costs more than a small LSTM itself. The vocabulary
(ids sorted by training frequency, as lmkit's vocabularies are) is split at `cutoffs` c_1 < c_2 < ...:
the head scores the c_1 most frequent ids plus one entry per tail cluster; cluster k scores ids
[c_k, c_{k+1}) from a projection of width in_features / div**k. Then

    ln P(w) = head(w)                                  for w < c_1
    ln P(w) = head(cluster k) + tail_k(w)              for c_k <= w < c_{k+1}

so P sums to exactly one over the vocabulary (it is a real distribution, scored like any other
model), while training pays for a tail only at the positions whose target lies in it. <pad> and <s>
(ids 0 and 2, always in the head) get probability 0, as the protocol requires of every model.
Optional tying: the head's shortlist rows can be the first c_1 rows of the embedding matrix.

The default cutoffs come from the vocabulary's counts (`derived_cutoffs`; the training pipeline applies them
when adaptive_cutoffs is not set), and `init_output_bias` starts the head at the unigram distribution."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.vocab import BOS, PAD
from ..errors import UsageError


class AdaptiveConfigError(UsageError, ValueError):
    """Unusable cutoffs: a ValueError for library callers, a one-line usage error for the CLI."""


def check_cutoffs(cutoffs: tuple[int, ...], vocab_size: int) -> list[int]:
    """Strictly increasing cutoffs inside (4, vocab_size); returns them with vocab_size appended."""
    cuts = [int(c) for c in cutoffs]
    if not cuts:
        raise AdaptiveConfigError("adaptive softmax needs at least one cutoff")
    if cuts != sorted(set(cuts)) or cuts[0] <= BOS + 1 or cuts[-1] >= vocab_size:
        raise AdaptiveConfigError(f"adaptive cutoffs must increase strictly and lie between 4 and the vocabulary "
                                  f"size {vocab_size}, got {','.join(map(str, cuts))}")
    return cuts + [vocab_size]


# Cutoffs derived from the vocabulary's training counts (ids are sorted by frequency after the specials):
HEAD_SHARE = 0.90  # the shortlist: the fewest most frequent ids that cover this share of the training tokens
TAIL_SHARE = 0.97  # a second cutoff where the ids so far cover this share (rare ids get the narrowest tail)
CUTOFF_MULTIPLE = 64  # cutoffs rounded up to this multiple: whole matmul tiles for the head and the first tail
MIN_ADAPTIVE_VOCAB = 4096  # below this a full softmax is cheap (char level, small word vocabularies): no cutoffs
MIN_TAIL = 1024  # a second tail only when both tails keep at least this many ids


def derived_cutoffs(counts: Sequence[int]) -> tuple[int, ...]:
    """Adaptive-softmax cutoffs for a vocabulary's training counts (Vocab.counts), () for a full softmax.

    c_1 = the smallest prefix of ids covering HEAD_SHARE of the counted tokens, rounded up to CUTOFF_MULTIPLE;
    c_2 likewise for TAIL_SHARE, kept when both tails hold MIN_TAIL ids. Derived rather than fixed so that
    the head fits the corpus: on a Zipfian vocabulary a few thousand ids cover 90% of the text."""
    counts = np.asarray(counts, dtype=np.float64)
    size = len(counts)
    total = float(counts.sum())
    if size < MIN_ADAPTIVE_VOCAB or total <= 0:
        return ()
    cum = np.cumsum(counts)

    def prefix(share: float) -> int:
        n = int(np.searchsorted(cum, share * total)) + 1  # the first prefix whose mass reaches the share
        return -(-n // CUTOFF_MULTIPLE) * CUTOFF_MULTIPLE

    head = prefix(HEAD_SHARE)
    if head * 2 > size:  # the head would be most of the vocabulary: nothing saved
        return ()
    tail = prefix(TAIL_SHARE)
    if tail - head >= MIN_TAIL and size - tail >= MIN_TAIL:
        return (head, tail)
    return (head,)


class PickedLogSoftmax(torch.autograd.Function):
    """ln softmax(logits)[r, index[r]] for every row r of (N, C) logits, (N,) out.

    The same as log_softmax + gather, with a backward that makes one (N, C) tensor (softmax times the
    incoming gradient, minus it at the picked entries) where autograd's makes three (gather's zeros,
    log_softmax's gradient, and the scatter into them): a tenth of a small LSTM's step on PTB's head."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits, dim=-1)
        ctx.save_for_backward(logp, index)
        return logp.gather(1, index.unsqueeze(1)).squeeze(1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logp, index = ctx.saved_tensors
        column = grad.unsqueeze(1)
        out = torch.exp(logp)
        out.mul_(-column)
        out.scatter_add_(1, index.unsqueeze(1), column)
        return out, None


class AdaptiveHead(nn.Module):
    """hidden (..., H) -> ln P over the vocabulary, or ln P of given targets only (the fast path)."""

    def __init__(self, in_features: int, vocab_size: int, cutoffs: tuple[int, ...], div: float = 4.0,
                 shortlist_weight: nn.Parameter | None = None):
        super().__init__()
        self.bounds = check_cutoffs(cutoffs, vocab_size)
        self.shortlist = self.bounds[0]
        self.n_clusters = len(self.bounds) - 1
        self.vocab_size = vocab_size
        # Tied: the shortlist rows come from the embedding (a view taken at every call, so the
        # embedding stays the only owner of those weights and safetensors sees them once).
        self.tied = shortlist_weight is not None
        self._embedding = [shortlist_weight] if self.tied else []  # not registered twice
        if not self.tied:
            self.shortlist_weight = nn.Parameter(torch.empty(self.shortlist, in_features))
        self.cluster_weight = nn.Parameter(torch.empty(self.n_clusters, in_features))
        self.head_bias = nn.Parameter(torch.zeros(self.shortlist + self.n_clusters))
        blocked = torch.zeros(self.shortlist + self.n_clusters)
        blocked[[PAD, BOS]] = float("-inf")  # <pad> and <s> are never predicted
        self.register_buffer("blocked", blocked, persistent=False)
        self.tails = nn.ModuleList()
        for k in range(self.n_clusters):
            width = max(1, int(in_features // (div ** (k + 1))))
            size = self.bounds[k + 1] - self.bounds[k]
            self.tails.append(nn.Sequential(nn.Linear(in_features, width, bias=False),
                                            nn.Linear(width, size, bias=True)))
        self.reset_parameters()

    def reset_parameters(self, bound: float = 0.1) -> None:
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.uniform_(p, -bound, bound)
            else:
                nn.init.zeros_(p)

    @torch.no_grad()
    def init_output_bias(self, logp: torch.Tensor) -> None:
        """Biases that make the head reproduce a unigram distribution `logp` (V,) (ln P, 0 at <pad>/<s>):
        shortlist ids get ln P(w), cluster k the log of its total mass, tail k ln P(w | cluster k)."""
        logp = logp.to(self.head_bias)
        self.head_bias[:self.shortlist] = logp[:self.shortlist]
        for k, tail in enumerate(self.tails):
            within = logp[self.bounds[k]:self.bounds[k + 1]]
            mass = torch.logsumexp(within, dim=0)
            self.head_bias[self.shortlist + k] = mass
            tail[1].bias.copy_(within - mass)

    def _head_weight(self) -> torch.Tensor:
        short = self._embedding[0][:self.shortlist] if self.tied else self.shortlist_weight
        return torch.cat([short, self.cluster_weight], dim=0)  # (c_1 + clusters, H)

    def _head_logits(self, h: torch.Tensor) -> torch.Tensor:
        """The head's logits in fp32, -inf for <pad> and <s>: the mask is added to the bias (C values) rather
        than written into the (N, C) logits, whose in-place update would make autograd copy their gradient."""
        return F.linear(h, self._head_weight(), self.head_bias + self.blocked.to(self.head_bias.dtype)).float()

    def _head_logprobs(self, h: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self._head_logits(h), dim=-1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """Full ln P (..., V): used for generation and per-row distributions."""
        head = self._head_logprobs(h)
        parts = [head[..., :self.shortlist]]
        for k, tail in enumerate(self.tails):
            parts.append(head[..., self.shortlist + k:self.shortlist + k + 1]
                         + F.log_softmax(tail(h).float(), dim=-1))
        return torch.cat(parts, dim=-1)

    def target_logprobs(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """ln P(target) (...,) computing each tail only where a target falls in it; <pad> targets give 0."""
        shape = targets.shape
        h = h.reshape(-1, h.size(-1))
        t = targets.reshape(-1)
        # the head entry each target goes through: itself in the shortlist, else its cluster (<pad>: any
        # finite entry, its result is replaced by 0 below)
        cluster = torch.zeros_like(t)
        for lo in self.bounds[1:-1]:
            cluster += t >= lo
        entry = torch.where(t < self.shortlist, t, self.shortlist + cluster)
        entry = torch.where(t == PAD, torch.full_like(t, self.shortlist), entry)
        out = PickedLogSoftmax.apply(self._head_logits(h), entry)
        for k, tail in enumerate(self.tails):
            lo, hi = self.bounds[k], self.bounds[k + 1]
            rows = ((t >= lo) & (t < hi)).nonzero().squeeze(1)
            if rows.numel() == 0:  # a data-dependent branch; on CUDA the nonzero above is one sync per tail
                continue
            tail_lp = F.log_softmax(tail(h.index_select(0, rows)).float(), dim=-1)
            within = tail_lp.gather(1, (t.index_select(0, rows) - lo).unsqueeze(1)).squeeze(1)
            out = out.index_add(0, rows, within)
        out = torch.where(t == PAD, torch.zeros_like(out), out)
        return out.view(shape)


@torch.no_grad()
def start_at_unigram(adaptive: AdaptiveHead | None, bias: torch.Tensor | None, logp: torch.Tensor) -> None:
    """Set an output layer's biases so that, with small output weights, it predicts the unigram `logp` (V,): the
    adaptive head's own biases when there is one, else the full softmax's bias vector. One rule for every
    family's `init_output_bias` (the hook TorchLM.init_unigram calls on a fresh start)."""
    if adaptive is not None:
        adaptive.init_output_bias(logp)
    else:
        bias.copy_(logp)
