"""What the feed-forward token networks (Transformer, gated CNN) share: no recurrent state, and an output
layer that is the token embedding when tied (plus a bias), or an adaptive softmax that scores targets directly."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from .adaptive import AdaptiveHead, start_at_unigram


class WindowedNet:
    """Mixin for an nn.Module with `tok_emb`, `lm_head` (None when tied) and `adaptive` (None: full softmax).
    Its history is a fixed window, so the state the training loop and the scoring path carry is None."""

    stateful: ClassVar[bool] = False
    # weights files written before the full softmax had a bias lack it: they load with a zero bias
    zero_if_missing: ClassVar[tuple[str, ...]] = ("out_bias",)

    def init_output_head(self, width: int, vocab_size: int, config) -> None:
        """The output layer from `config` (tie_weights, adaptive_cutoffs, adaptive_div). Tied: the logits use
        tok_emb.weight directly (F.linear), so the state dict holds the matrix once; the adaptive head's
        shortlist rows are then the token embedding's first rows. The full softmax has a bias, tied or not, so
        that it can start at the unigram distribution (init_output_bias)."""
        self.lm_head = None
        self.adaptive = None
        self.out_bias = None
        if config.adaptive_cutoffs:
            self.adaptive = AdaptiveHead(width, vocab_size, tuple(config.adaptive_cutoffs), float(config.adaptive_div),
                                         shortlist_weight=self.tok_emb.weight if config.tie_weights else None)
            return
        if not config.tie_weights:
            self.lm_head = nn.Linear(width, vocab_size, bias=False)
        self.out_bias = nn.Parameter(torch.zeros(vocab_size))

    @torch.no_grad()
    def init_output_bias(self, logp: torch.Tensor) -> None:
        """Output bias = `logp` (V,), a unigram ln P: with small output weights step 0 predicts the unigram."""
        start_at_unigram(self.adaptive, self.out_bias, logp)

    def output_logits(self, x: torch.Tensor, targets: torch.Tensor | None = None):
        """(logits (B, T, V), None) from the final hidden states; with the adaptive softmax the "logits" are
        already ln P, and with `targets` (B, T) it returns ln P(targets)."""
        if self.adaptive is not None:
            return (self.adaptive(x) if targets is None else self.adaptive.target_logprobs(x, targets)), None
        return F.linear(x, self.output_weight, self.out_bias), None

    def init_state(self, batch_size: int, device) -> None:
        return None

    def detach_state(self, state) -> None:
        return None

    @property
    def output_weight(self) -> torch.Tensor:
        """The (V, C) output matrix: the token embedding itself when tied."""
        return self.tok_emb.weight if self.lm_head is None else self.lm_head.weight

    @property
    def scores_targets(self) -> bool:
        """True when forward(..., targets=) is cheaper than full logits (the adaptive softmax)."""
        return self.adaptive is not None
