"""What the feed-forward token networks (Transformer, gated CNN) share: no recurrent state, and an output
layer that is the token embedding when tied, or an adaptive softmax that scores targets directly."""

from __future__ import annotations

import torch


class WindowedNet:
    """Mixin for an nn.Module with `tok_emb`, `lm_head` (None when tied) and `adaptive` (None: full softmax).
    Its history is a fixed window, so the state the training loop and the scoring path carry is None."""

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
