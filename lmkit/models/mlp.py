"""The feed-forward neural language model of Bengio et al. (2003).

    Y. Bengio, R. Ducharme, P. Vincent, C. Jauvin. "A Neural Probabilistic Language Model".
    Journal of Machine Learning Research 3:1137-1155, 2003.

The model sees a fixed window of the n-1 previous tokens, exactly like an n-gram, but shares
statistical strength between similar words through learned embeddings:

    x_t = [C(w_{t-n+2}); ...; C(w_t)]          concatenated embeddings of the window   (window*E,)
    h_t = tanh(d + H x_t)                      hidden layer                            (hidden,)
    y_t = b + U h_t (+ W x_t if direct)        logits of the token after w_t           (V,)

With `adaptive_cutoffs` (the default on a large vocabulary, derived by the pipeline) U and b are an adaptive
softmax instead (Grave et al. 2017, adaptive.py): the same model, a cheaper output layer.

Here the window ends at the *current* input token: logits[:, t] predict idx[:, t+1] from
idx[:, t-window+1 : t+1]. Positions before the start of `idx` are filled with id 0 (<pad>), whose
embedding is learned like any other and so means "nothing before this" (the adapter prepends real
history tokens when there is any). The whole sequence is processed at once: the (B, T, window)
context index tensor is built with F.pad + unfold, no Python loop over positions.

This file is the module contract shared by every torch family (see docs/neural.md); the adapter in
torchlm.py turns it into a LanguageModel and train.py trains it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UsageError
from .adaptive import AdaptiveHead, start_at_unigram
from .family import Family, Lineup


class ConfigError(UsageError, ValueError):
    """A bad hyperparameter: a ValueError for library callers, a one-line usage error for the CLI."""


@dataclass
class MLPConfig:
    window: int = 5  # tokens of history (n-1 of an n-gram); Bengio et al.'s best PTB-size models use n=5-6
    embed: int = 64  # embedding size per token (E); the paper used 30-100
    hidden: int = 512  # tanh hidden units (paper: 50-100; more helps on larger corpora and is cheap)
    direct: bool = False  # add the paper's direct embeddings->output connections (W x_t); costs window*E*V
    dropout: float = 0.1  # on the concatenated embeddings and on the hidden layer (the paper had none)
    unigram_init: bool = True  # a fresh run's output bias starts at the log unigram frequencies of the train split
    # Adaptive softmax (Grave et al. 2017, adaptive.py) for U and b; () (--set adaptive_cutoffs=none) = the full
    # softmax. Not set: derived from the vocabulary by the pipeline (adaptive.derived_cutoffs), unless direct.
    adaptive_cutoffs: tuple[int, ...] = ()
    adaptive_div: float = 4.0  # each tail cluster's projection is this many times narrower than the last

    def __post_init__(self) -> None:
        for name in ("window", "embed", "hidden"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"mlp {name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"mlp dropout must be in [0, 1), got {self.dropout}")
        if float(self.adaptive_div) < 1.0:
            raise ConfigError(f"mlp adaptive_div must be at least 1, got {self.adaptive_div}")
        if self.direct and self.adaptive_cutoffs:
            raise ConfigError("mlp direct connections add W x_t to full logits: they need the full softmax "
                              "(--set adaptive_cutoffs=none)")

    @property
    def full_softmax_only(self) -> bool:
        """The direct connections need every logit: no derived adaptive cutoffs (pipeline.with_vocab_defaults)."""
        return bool(self.direct)


FAMILY = Family(
    kind="mlp",
    model="lmkit.models.torchlm:MLPModel",
    neural=True,
    options=("window", "embed", "hidden", "dropout"),
    # far beyond any model lmkit trains, small enough that a typo (an extra zero or three) is refused at once
    limits={"window": 65536, "embed": 65536, "hidden": 65536},
    # What train.py uses unless the user overrides it. AdamW at 3e-3 trains this shallow net fast
    # (the paper's SGD needed weeks); the weight decay keeps the large output layer in check on
    # small corpora; 64 positions per row reuse each row's embeddings for many windows.
    defaults={
        "optimizer": "adamw",  # decoupled weight decay (Loshchilov & Hutter 2019)
        "lr": 3e-3,  # peak learning rate
        "betas": (0.9, 0.99),  # beta2 0.99: small models on small data, as nanoGPT's char example
        "weight_decay": 0.1,  # on matmul weights and embeddings only (see optim_groups)
        "batch_size": 64,  # rows per step
        "seq_len": 64,  # positions per row (each is its own window; no carried state)
        "clip": 1.0,  # max global gradient norm
        "warmup_steps": 100,  # linear warm-up, then cosine decay
    },
    # the full softmax over the vocabulary dominates; a narrow hidden layer keeps a lineup minute useful
    lineup=Lineup(options={"window": 5, "embed": 64, "hidden": 128}),
    tiny={"window": 3, "embed": 8, "hidden": 16},
)


class MLPLM(nn.Module):
    Config = MLPConfig
    stateful: ClassVar[bool] = False
    train_defaults: ClassVar[Mapping] = FAMILY.defaults  # what train.py uses unless the user overrides it

    def __init__(self, config: MLPConfig, vocab_size: int):
        super().__init__()
        if vocab_size < 1:
            raise ConfigError(f"vocab_size must be at least 1, got {vocab_size}")
        self.config = config
        self.vocab_size = vocab_size
        k = config.window * config.embed  # width of the concatenated context x_t
        self.embed = nn.Embedding(vocab_size, config.embed)  # C
        self.hidden = nn.Linear(k, config.hidden)  # H, d
        self.adaptive = (AdaptiveHead(config.hidden, vocab_size, tuple(config.adaptive_cutoffs),
                                      float(config.adaptive_div))
                         if config.adaptive_cutoffs else None)
        self.out = nn.Linear(config.hidden, vocab_size) if self.adaptive is None else None  # U, b
        self.direct = nn.Linear(k, vocab_size, bias=False) if config.direct else None  # W
        self.drop = nn.Dropout(config.dropout)
        self._init_weights()

    def _init_weights(self) -> None:
        # Embeddings N(0, 1) (torch's default, as makemore): with H at its default uniform(+-1/sqrt(k))
        # the tanh pre-activations start with std ~0.6, in tanh's linear range, not saturated.
        # Output (and direct) weights N(0, 0.02) with zero bias make the first predictions nearly
        # uniform, so the initial loss is ~ln V instead of a confident random guess; a fresh training run then
        # sets the bias to the unigram (init_output_bias), and the loss starts near the unigram's.
        nn.init.normal_(self.embed.weight, mean=0.0, std=1.0)
        if self.out is not None:  # the adaptive head initialises itself (small weights, zero biases)
            nn.init.normal_(self.out.weight, mean=0.0, std=0.02)
            nn.init.zeros_(self.out.bias)
        if self.direct is not None:
            nn.init.normal_(self.direct.weight, mean=0.0, std=0.02)

    @torch.no_grad()
    def init_output_bias(self, logp: torch.Tensor) -> None:
        """b = `logp` (V,), a unigram ln P (the adaptive head's biases likewise): with U small at the start,
        step 0 predicts the unigram."""
        start_at_unigram(self.adaptive, None if self.out is None else self.out.bias, logp)

    @property
    def scores_targets(self) -> bool:
        """True when forward(..., targets=) is cheaper than full logits (the adaptive softmax)."""
        return self.adaptive is not None

    @property
    def history(self) -> int | None:
        """Tokens a prediction sees, the current input token included."""
        return self.config.window

    def init_state(self, batch_size: int, device) -> None:
        return None

    def detach_state(self, state) -> None:
        return None

    def forward(self, idx: torch.Tensor, state=None, targets: torch.Tensor | None = None,
                last_only: bool = False) -> tuple[torch.Tensor, None]:
        """idx (B, T) token ids -> raw logits (B, T, V); logits[:, t] predict the token after idx[:, t].

        With the adaptive softmax the "logits" are already ln P, and with `targets` (B, T) it returns
        ln P(targets) (B, T) instead. `last_only` computes the last position only (B, 1, V): what decoding
        needs."""
        B, T = idx.shape
        w = self.config.window
        # Left-pad with <pad> (id 0) so every position has a full window, then take the sliding
        # windows: ctx[b, t] = idx_padded[b, t : t+w] = idx[b, t-w+1 : t+1] (oldest token first).
        #
        #   idx          a b c d            (w = 3)
        #   padded   0 0 a b c d
        #   ctx[0] = 0 0 a   ctx[1] = 0 a b   ctx[2] = a b c   ctx[3] = b c d
        padded = F.pad(idx, (w - 1, 0), value=0)  # (B, T+w-1)
        ctx = padded.unfold(1, w, 1)  # (B, T, w), a view: no copy
        if last_only:
            ctx, T = ctx[:, -1:], 1
        x = self.embed(ctx).reshape(B, T, w * self.config.embed)  # (B, T, w*E)
        x = self.drop(x)
        h = self.drop(torch.tanh(self.hidden(x)))  # (B, T, hidden)
        if self.adaptive is not None:
            return (self.adaptive(h) if targets is None else self.adaptive.target_logprobs(h, targets)), None
        logits = self.out(h)  # (B, T, V)
        if self.direct is not None:
            logits = logits + self.direct(x)  # (B, T, V)
        return logits, None

    # -- accounting and optimiser helpers ---------------------------------------------------------
    def num_parameters(self) -> int:
        """Unique trainable parameters (a tied tensor counts once)."""
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Approximate training FLOPs (forward + backward) per predicted token: 6 * N_matmul.

        N_matmul = every parameter that takes part in a matrix multiply for each token, i.e. all of
        them except the embedding table (a lookup): window*E*hidden + hidden*V (+ window*E*V if
        direct) plus biases. 2 FLOPs per weight forward, 4 backward (Kaplan et al. 2020).
        `seq_len` is accepted for a uniform signature and ignored."""
        return 6 * (self.num_parameters() - self.embed.weight.numel())

    def optim_groups(self, weight_decay: float) -> list[dict]:
        """AdamW parameter groups: decay matrices (incl. embeddings), not biases."""
        decay = [p for p in self.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.dim() < 2]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
