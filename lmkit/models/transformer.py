"""A GPT-style decoder-only Transformer language model.

    A. Vaswani et al. "Attention Is All You Need". NeurIPS 2017 (attention, sinusoidal positions).
    A. Radford et al. "Language Models are Unsupervised Multitask Learners". OpenAI 2019 (GPT-2:
    decoder-only, pre-LayerNorm blocks, learned positions, residual-scaled initialisation).
    O. Press, L. Wolf. "Using the Output Embedding to Improve Language Models". EACL 2017 (tying).

    x_0 = C[w] + P[t]                                   token + position embedding   (B, T, C)
    x_l' = x_{l-1} + Attn(LN1(x_{l-1}))                 causal multi-head self-attention
    x_l  = x_l' + MLP(LN2(x_l'))                        MLP = W2 GELU(W1 x), width mlp_ratio*C
    logits = LN_f(x_L) C^T                              (B, T, V), tied to the token embedding

Attention is causal (position t attends to positions <= t), computed by
torch.nn.functional.scaled_dot_product_attention(is_causal=True), which dispatches to a fused
(flash / memory-efficient) kernel where one exists. The model sees at most `block_size` tokens:
`forward` refuses longer inputs, and the adapter scores long texts with overlapping windows (see
docs/neural.md). It has no state between calls.

The structure follows nanoGPT (Karpathy) closely; the names differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UsageError
from .family import Family, Lineup, Recipe
from .windowed import WindowedNet

POSITIONS = ("learned", "sinusoidal")


class ConfigError(UsageError, ValueError):
    """A bad hyperparameter: a ValueError for library callers, a one-line usage error for the CLI."""


@dataclass
class TransformerConfig:
    layers: int = 2  # transformer blocks (GPT-2 small has 12); 2 as the 12-minute PTB recipe (docs/results.md)
    d_model: int = 256  # residual stream width C
    heads: int = 4  # attention heads; head size = d_model / heads = 64, as in GPT-2
    block_size: int = 64  # longest context in tokens (= `history`); attention cost grows as block_size^2
    dropout: float = 0.15  # on embeddings, attention weights, and each residual branch's output (PTB recipe)
    positions: str = "learned"  # learned (GPT-2) | sinusoidal (Vaswani et al., no parameters)
    tie_weights: bool = True  # output matrix = token embedding (Press & Wolf 2017; GPT-2 does it)
    mlp_ratio: int = 4  # MLP hidden width = mlp_ratio * d_model (4 in both papers)
    bias: bool = True  # biases in Linear and LayerNorm layers (GPT-2 has them; False is a bit faster)
    # Adaptive softmax (Grave et al. 2017, see adaptive.py): vocabulary cutoffs such as (2000, 5000) make the
    # output layer over a large word vocabulary several times cheaper; () (--set adaptive_cutoffs=none) =
    # the plain full softmax. Not set: derived from the vocabulary by the pipeline (adaptive.derived_cutoffs).
    adaptive_cutoffs: tuple[int, ...] = ()
    adaptive_div: float = 4.0  # each tail cluster's projection is this many times narrower than the last
    unigram_init: bool = True  # a fresh run's output bias starts at the log unigram frequencies of the train split

    def __post_init__(self) -> None:
        for name in ("layers", "d_model", "heads", "block_size", "mlp_ratio"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"transformer {name} must be at least 1, got {getattr(self, name)}")
        if self.d_model % self.heads != 0:
            raise ConfigError(f"transformer d_model ({self.d_model}) must be divisible by heads ({self.heads}); "
                              f"each head gets d_model / heads dimensions")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"transformer dropout must be in [0, 1), got {self.dropout}")
        if float(self.adaptive_div) < 1.0:
            raise ConfigError(f"transformer adaptive_div must be at least 1, got {self.adaptive_div}")
        self.positions = str(self.positions).lower()
        if self.positions not in POSITIONS:
            raise ConfigError(f"unknown positions {self.positions!r}; choose one of {', '.join(POSITIONS)}")


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    """(length, dim) table of Vaswani et al. 3.5: PE[t, 2i] = sin(t / 10000^(2i/dim)), PE[t, 2i+1] = cos(...)."""
    pos = torch.arange(length, dtype=torch.float32).unsqueeze(1)  # (T, 1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))  # (ceil(C/2),)
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq)[:, : dim // 2]  # an odd dim has one cosine column fewer
    return table


class CausalSelfAttention(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.heads = config.heads
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)  # q, k, v for all heads at once
        self.proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)  # back into the residual stream
        self.resid_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)  # 3 x (B, T, C)
        # Split the channels into heads and move heads next to batch: (B, nh, T, hs).
        q = q.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        k = k.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        v = v.view(B, T, self.heads, C // self.heads).transpose(1, 2)
        # softmax(q k^T / sqrt(hs) + causal mask) v; attention dropout only while training.
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=True)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble the heads: (B, T, C)
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        width = config.mlp_ratio * config.d_model
        self.fc = nn.Linear(config.d_model, width, bias=config.bias)
        self.proj = nn.Linear(width, config.d_model, bias=config.bias)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))  # (B, T, C) -> (B, T, 4C) -> (B, T, C)


class Block(nn.Module):
    """Pre-LayerNorm block (GPT-2): the residual stream is never normalised, only the branch inputs."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.ln1 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))  # (B, T, C)
        x = x + self.mlp(self.ln2(x))  # (B, T, C)
        return x


FAMILY = Family(
    kind="transformer",
    model="lmkit.models.torchlm:TransformerModel",
    neural=True,
    options=("layers", "d_model", "heads", "block_size", "dropout", "positions", "tie_weights"),
    # far beyond any model lmkit trains (GPT-3 has 96 layers of width 12288), small enough that a typo is
    # refused instead of hanging while torch builds a million layers or overflowing a shape
    limits={"layers": 1024, "heads": 1024, "d_model": 65536, "block_size": 1_048_576},  # 2**20
    # nanoGPT's recipe for small models on small data (its shakespeare-char config): AdamW 1e-3,
    # beta2 0.99, weight decay 0.1 on matrices, warm-up then cosine decay, clip 1.0.
    defaults={
        "optimizer": "adamw",  # decoupled weight decay (Loshchilov & Hutter 2019)
        "lr": 1.5e-3,  # peak learning rate; small transformers tolerate more than GPT-2's 6e-4 (PTB recipe)
        "betas": (0.9, 0.99),  # beta2 0.99: few tokens per step, as nanoGPT's char example
        "weight_decay": 0.1,  # on matmul weights and embeddings only (see optim_groups)
        "batch_size": 32,  # rows per step
        "seq_len": 64,  # tokens per row; must not exceed block_size (the loop uses min(seq_len, history))
        "clip": 1.0,  # max global gradient norm
        "warmup_steps": 100,  # linear warm-up (Adam's early steps are noisy), then cosine decay
    },
    # small enough for ~1 min on two cores; the adaptive softmax pays off on a large word vocabulary
    lineup=Lineup(options={"layers": 2, "d_model": 128, "heads": 4, "block_size": 64}),
    tiny={"layers": 1, "d_model": 16, "heads": 2, "block_size": 16},
    # docs/results.md "PTB Transformer", with the token budget its 12-minute run reached instead of the time
    # budget, so the result does not depend on machine speed
    recipe=Recipe(
        expected=111.8,
        command="lmkit train --model transformer --layers 2 --d-model 256 --heads 4 --block-size 64 --dropout 0.15 "
                "--set adaptive_cutoffs=2000,5000 --context stream --min-count 1 --corpus PTB --batch-size 32 "
                "--lr 1.5e-3 --warmup 100 --max-tokens 4100000 --device cpu --seed 0",
        citation="docs/results.md, 'PTB Transformer' recipe: test 111.8 after 12 minutes (4.10 M tokens), "
                 "2026-11-23",
        request={"model": "transformer", "context": "stream", "min_count": 1, "seed": 0,
                 "options": {"layers": 2, "d_model": 256, "heads": 4, "block_size": 64, "dropout": 0.15},
                 "sets": ["adaptive_cutoffs=2000,5000"],
                 "train_options": {"batch_size": 32, "lr": 1.5e-3, "warmup_steps": 100, "max_tokens": 4_100_000,
                                   "device": "cpu"}},
    ),
)


class TransformerLM(WindowedNet, nn.Module):
    Config = TransformerConfig
    train_defaults: ClassVar[Mapping] = FAMILY.defaults  # what train.py uses unless the user overrides it

    def __init__(self, config: TransformerConfig, vocab_size: int):
        super().__init__()
        if vocab_size < 1:
            raise ConfigError(f"vocab_size must be at least 1, got {vocab_size}")
        self.config = config
        self.vocab_size = vocab_size
        C = config.d_model
        self.tok_emb = nn.Embedding(vocab_size, C)
        if config.positions == "learned":
            self.pos_emb = nn.Embedding(config.block_size, C)
        else:
            self.pos_emb = None
            # Not a parameter and not saved (persistent=False): it is a pure function of the config.
            self.register_buffer("pos_table", sinusoidal_table(config.block_size, C), persistent=False)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.layers)])
        self.ln_f = nn.LayerNorm(C, bias=config.bias)
        self.init_output_head(C, vocab_size, config)  # tied: safetensors never sees two names for one tensor
        self._init_weights()

    def _init_weights(self) -> None:
        # GPT-2: every Linear and Embedding N(0, 0.02), biases 0, LayerNorm (1, 0); the projections
        # that write into the residual stream (attn.proj, mlp.proj) get std 0.02 / sqrt(2 * layers),
        # because each block adds two of them and the stream's variance would otherwise grow with depth.
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        if self.adaptive is not None:  # its own matrices are plain Parameters, not Linear layers
            for p in self.adaptive.parameters():
                if p.dim() >= 2:
                    nn.init.normal_(p, mean=0.0, std=0.02)
        for name, p in self.named_parameters():
            if name.endswith("attn.proj.weight") or name.endswith("mlp.proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * self.config.layers))

    @property
    def history(self) -> int | None:
        """Tokens a prediction sees, the current input token included."""
        return self.config.block_size

    def forward(self, idx: torch.Tensor, state=None, targets: torch.Tensor | None = None, last_only: bool = False):
        """idx (B, T) token ids with T <= block_size -> raw logits (B, T, V), and None (no state).

        logits[:, t] predict the token after idx[:, t] from idx[:, :t+1] only. With the adaptive
        softmax the "logits" are already ln P, and with `targets` (B, T) it returns ln P(targets).
        `last_only` gives the last position's output only (B, 1, V): what decoding needs."""
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence of {T} tokens is longer than block_size={self.config.block_size}; "
                             "score long inputs in windows of at most block_size tokens")
        tok = self.tok_emb(idx)  # (B, T, C)
        if self.pos_emb is not None:
            pos = torch.arange(T, device=idx.device)  # (T,)
            x = tok + self.pos_emb(pos)  # (B, T, C) + (T, C)
        else:
            # Vaswani et al. 3.4 scale the embeddings by sqrt(C): our token vectors start at std 0.02
            # and would otherwise be drowned by the unit-amplitude sinusoids.
            x = tok * math.sqrt(self.config.d_model) + self.pos_table[:T]  # (B, T, C)
        x = self.drop(x)
        for block in self.blocks:
            x = block(x)  # (B, T, C)
        if last_only:
            x = x[:, -1:]
        return self.output_logits(self.ln_f(x), targets)  # (B, T, V)

    # -- accounting and optimiser helpers ---------------------------------------------------------
    def num_parameters(self) -> int:
        """Unique trainable parameters (the tied matrix counts once; the sinusoid table is no parameter)."""
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Approximate training FLOPs (forward + backward) per token, as PaLM (Chowdhery et al. 2022,
        appendix B) and nanoGPT's MFU estimate:

            6 * N_matmul + 12 * layers * d_model * T

        N_matmul = parameters except the lookup-only embeddings (position table, and the token table
        when untied; when tied it is the output matrix and counted). 6 = 2 FLOPs per weight forward +
        4 backward. The second term is attention's q k^T and (attn) v products, which have no weights:
        2 * 2 * T * d_model FLOPs per token and layer forward, times 3 for the backward. T = seq_len,
        default block_size; the causal mask is ignored (as in PaLM), so this overcounts by up to 2x
        what a flash kernel that skips masked blocks actually does."""
        T = self.config.block_size if seq_len is None else int(seq_len)
        lookup_only = 0 if self.pos_emb is None else self.pos_emb.weight.numel()
        if self.lm_head is not None or self.adaptive is not None:
            lookup_only += self.tok_emb.weight.numel()
        if self.adaptive is not None and self.adaptive.tied:  # its shortlist rows are an output matrix too
            lookup_only -= self.adaptive.shortlist * self.config.d_model
        n_matmul = self.num_parameters() - lookup_only
        return 6 * n_matmul + 12 * self.config.layers * self.config.d_model * T

    def optim_groups(self, weight_decay: float) -> list[dict]:
        """AdamW parameter groups: decay matrices (incl. embeddings), not biases or LayerNorm gains (nanoGPT)."""
        decay = [p for p in self.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.dim() < 2]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
