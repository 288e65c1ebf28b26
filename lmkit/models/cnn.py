"""A gated convolutional language model (causal 1-D convolutions with gated linear units).

    Y. Dauphin, A. Fan, M. Auli, D. Grangier. "Language Modeling with Gated Convolutional Networks".
    ICML 2017 (GLU, residual blocks, a finite context instead of recurrence).
    A. van den Oord et al. "WaveNet: A Generative Model for Raw Audio". 2016 (dilated causal convolutions).

    x_0 = C[w]                                          token embedding                         (B, T, C)
    [a; b] = W_l * pad_left(N(x_{l-1}), (k-1) d_l)      causal conv, kernel k, dilation d_l     (B, T, 2C)
    x_l = x_{l-1} + (a ⊗ σ(b))                          gated linear unit, residual             (B, T, C)
    logits = N_f(x_L) C^T                               (B, T, V), tied to the token embedding

N is a pre-LayerNorm (norm="layer", the default) or nothing, with weight normalisation of the convolutions
instead (norm="weight", Salimans & Kingma 2016, as Dauphin et al.). Only the left side is padded (with
zeros, at every block), so position t sees positions t-(k-1)d_l .. t of the layer below and never t+1. The
history is the receptive field

    R = 1 + (k - 1) * sum_l d_l

tokens (the current input token included): 31 at the defaults (k = 3, dilations 1,2,4,8). Block l uses
dilations[l mod len(dilations)], so `--layers 8` repeats 1,2,4,8 (as WaveNet's stacks). The model has no
state: like the MLP it takes inputs of any length, and the adapter scores a long stream in overlapping
chunks whose overlap is R, so every scored token sees its full receptive field (see docs/neural.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UsageError
from .family import Family, Lineup
from .torchlm import TorchLM
from .windowed import WindowedNet

NORMS = ("layer", "weight", "none")
MAX_RECEPTIVE_FIELD = 1_048_576  # 2**20 tokens: far beyond any model lmkit trains, refuses a typo at once


class ConfigError(UsageError, ValueError):
    """A bad hyperparameter: a ValueError for library callers, a one-line usage error for the CLI."""


def receptive_field(kernel: int, dilations: tuple[int, ...], layers: int) -> int:
    """Tokens a prediction sees (the current one included): 1 + (kernel-1) * sum of the blocks' dilations."""
    cycle = [int(d) for d in dilations] or [1]
    rounds, rest = divmod(int(layers), len(cycle))  # closed form: any --layers is checked without a loop
    return 1 + (int(kernel) - 1) * (rounds * sum(cycle) + sum(cycle[:rest]))


def block_dilations(dilations: tuple[int, ...], layers: int) -> list[int]:
    """Block l's dilation: dilations[l mod len], cycled over the layers; () = no dilation (all 1)."""
    cycle = [int(d) for d in dilations] or [1]
    return [cycle[i % len(cycle)] for i in range(int(layers))]


@dataclass
class CNNConfig:
    layers: int = 4  # residual blocks, one gated causal convolution each
    embed: int = 128  # channels C: embedding size = residual width (convolutions map C -> 2C, the GLU back to C)
    kernel: int = 3  # convolution width k (3 measured better than 4 with these dilations, docs/neural.md)
    dilations: tuple[int, ...] = (1, 2, 4, 8)  # per block, cycled over the layers; () = 1 everywhere
    dropout: float = 0.1  # on the embeddings and on each block's output
    norm: str = "layer"  # layer (pre-LayerNorm) | weight (weight-normalised convolutions, as the paper) | none
    tie_weights: bool = True  # output matrix = token embedding (Press & Wolf 2017)
    # Adaptive softmax (Grave et al. 2017, see adaptive.py): vocabulary cutoffs such as (2000, 5000) make the
    # output layer over a large word vocabulary several times cheaper; () (--set adaptive_cutoffs=none) =
    # the plain full softmax. Not set: derived from the vocabulary by the pipeline (adaptive.derived_cutoffs).
    adaptive_cutoffs: tuple[int, ...] = ()
    adaptive_div: float = 4.0  # each tail cluster's projection is this many times narrower than the last
    unigram_init: bool = True  # a fresh run's output bias starts at the log unigram frequencies of the train split
    # Derived, not chosen: the history (see receptive_field above), filled in here so that run.json records it.
    # Given (a run.json read back), it must agree with kernel, dilations and layers.
    receptive_field: int | None = None

    def __post_init__(self) -> None:
        for name in ("layers", "embed", "kernel"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"cnn {name} must be at least 1, got {getattr(self, name)}")
        self.dilations = tuple(int(d) for d in self.dilations)
        if any(d < 1 for d in self.dilations):
            raise ConfigError(f"cnn dilations must be at least 1, got {','.join(map(str, self.dilations))}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"cnn dropout must be in [0, 1), got {self.dropout}")
        if float(self.adaptive_div) < 1.0:
            raise ConfigError(f"cnn adaptive_div must be at least 1, got {self.adaptive_div}")
        self.norm = str(self.norm).lower()
        if self.norm not in NORMS:
            raise ConfigError(f"unknown cnn norm {self.norm!r}; choose one of {', '.join(NORMS)}")
        field = receptive_field(self.kernel, self.dilations, self.layers)
        if field > MAX_RECEPTIVE_FIELD:
            raise ConfigError(f"cnn receptive field {field:,} is beyond lmkit's limit of {MAX_RECEPTIVE_FIELD:,} "
                              "tokens; choose a smaller kernel, fewer layers or smaller dilations")
        if self.receptive_field is not None and int(self.receptive_field) != field:
            raise ConfigError(f"cnn receptive_field is derived (1 + (kernel-1) * sum of dilations = {field}), "
                              f"got {self.receptive_field}; set kernel, dilations and layers instead")
        self.receptive_field = field


FAMILY = Family(
    kind="cnn",
    model="lmkit.models.cnn:CNNModel",
    neural=True,
    options=("layers", "embed", "dropout", "tie_weights"),
    # far beyond any model lmkit trains, small enough that a typo is refused before torch builds it
    limits={"layers": 1024, "embed": 65536, "kernel": 1024},
    defaults={
        "optimizer": "adamw",  # decoupled weight decay (Loshchilov & Hutter 2019)
        "lr": 2e-3,  # peak learning rate
        "betas": (0.9, 0.99),  # beta2 0.99: small models on small data, as nanoGPT's char example
        "weight_decay": 0.1,  # on matmul weights and embeddings only (see optim_groups)
        "batch_size": 32,  # rows per step
        "seq_len": 128,  # positions per row (stream); ~3/4 of them see a full receptive field of 31
        "clip": 1.0,  # max global gradient norm (Dauphin et al. clip too)
        "warmup_steps": 100,  # linear warm-up, then cosine decay
    },
    # the defaults train in about a minute on two cores; the adaptive softmax pays off on a large word vocabulary
    lineup=Lineup(options={"layers": 4, "embed": 128}),
    tiny={"layers": 2, "embed": 8},
)


class GLUBlock(nn.Module):
    """x + dropout(GLU(causal_conv(N(x)))): one residual block, kernel k, dilation d."""

    def __init__(self, config: CNNConfig, dilation: int):
        super().__init__()
        C = config.embed
        self.left = (config.kernel - 1) * dilation  # left padding only: position t never sees t+1
        conv = nn.Conv1d(C, 2 * C, config.kernel, dilation=dilation)
        if config.norm == "weight":
            conv = nn.utils.parametrizations.weight_norm(conv)
        self.conv = conv
        self.norm = nn.LayerNorm(C) if config.norm == "layer" else nn.Identity()
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x).transpose(1, 2)  # (B, C, T): Conv1d's layout
        h = self.conv(F.pad(h, (self.left, 0)))  # (B, 2C, T): pad (left, right=0)
        h = F.glu(h, dim=1)  # a * sigmoid(b), (B, C, T)
        return x + self.drop(h.transpose(1, 2))  # (B, T, C)


class GatedCNNLM(WindowedNet, nn.Module):
    Config = CNNConfig
    train_defaults: ClassVar[Mapping] = FAMILY.defaults  # what train.py uses unless the user overrides it

    def __init__(self, config: CNNConfig, vocab_size: int):
        super().__init__()
        if vocab_size < 1:
            raise ConfigError(f"vocab_size must be at least 1, got {vocab_size}")
        self.config = config
        self.vocab_size = vocab_size
        C = config.embed
        self.tok_emb = nn.Embedding(vocab_size, C)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([GLUBlock(config, d) for d in block_dilations(config.dilations, config.layers)])
        self.ln_f = nn.LayerNorm(C) if config.norm == "layer" else nn.Identity()
        self.init_output_head(C, vocab_size, config)
        self.init_weights()

    def init_weights(self) -> None:
        # Embedding and output N(0, 0.02) (as the Transformer): the first predictions are nearly uniform.
        # Convolutions keep torch's default (Kaiming-uniform), which keeps the GLU's input at unit scale.
        nn.init.normal_(self.tok_emb.weight, mean=0.0, std=0.02)
        if self.lm_head is not None:
            nn.init.normal_(self.lm_head.weight, mean=0.0, std=0.02)

    @property
    def history(self) -> int | None:
        """Tokens a prediction sees, the current input token included: the receptive field."""
        return self.config.receptive_field

    def forward(self, idx: torch.Tensor, state=None, targets: torch.Tensor | None = None, last_only: bool = False):
        """idx (B, T) token ids, any T -> raw logits (B, T, V), and None (no state).

        logits[:, t] predict the token after idx[:, t] from idx[:, t-R+1 : t+1] only (R = receptive field;
        before idx[:, 0] the blocks see zeros). With the adaptive softmax the "logits" are already ln P, and
        with `targets` (B, T) it returns ln P(targets). `last_only`: the last position only (B, 1, V)."""
        x = self.drop(self.tok_emb(idx))  # (B, T, C)
        for block in self.blocks:
            x = block(x)  # (B, T, C)
        if last_only:
            x = x[:, -1:]
        return self.output_logits(self.ln_f(x), targets)  # (B, T, V)

    # -- accounting and optimiser helpers ---------------------------------------------------------
    def num_parameters(self) -> int:
        """Unique trainable parameters (the tied matrix counts once)."""
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Approximate training FLOPs (forward + backward) per token: 6 * N_matmul (Kaplan et al. 2020).

        N_matmul = every parameter but the lookup-only embedding (counted when tied: it is then the output
        matrix); each convolution weight is used once per position. `seq_len` is accepted and ignored."""
        lookup_only = 0 if self.lm_head is None and self.adaptive is None else self.tok_emb.weight.numel()
        if self.adaptive is not None and self.adaptive.tied:  # its shortlist rows are an output matrix too
            lookup_only -= self.adaptive.shortlist * self.config.embed
        return 6 * (self.num_parameters() - lookup_only)

    def optim_groups(self, weight_decay: float) -> list[dict]:
        """AdamW parameter groups: decay matrices and kernels (incl. embeddings), not biases or norm gains."""
        # weight norm's gain g (parametrizations.weight.original0, shape (2C, 1, 1)) is a scale, not a matrix
        scale = lambda name, p: p.dim() < 2 or name.endswith("original0")  # noqa: E731
        decay = [p for n, p in self.named_parameters() if not scale(n, p)]
        no_decay = [p for n, p in self.named_parameters() if scale(n, p)]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class CNNModel(TorchLM):
    __doc__ = (f"Gated convolutional LM (Dauphin et al. 2017); history = receptive field "
               f"{CNNConfig().receptive_field} tokens at the defaults; see cnn.py.")

    kind = "cnn"
    module = GatedCNNLM
    Config = GatedCNNLM.Config
