"""The encoder-decoder Transformer of "Attention Is All You Need".

    A. Vaswani et al. "Attention Is All You Need". NeurIPS 2017.
    R. Xiong et al. "On Layer Normalization in the Transformer Architecture". ICML 2020 (pre-LN).
    C. Szegedy et al. "Rethinking the Inception Architecture". CVPR 2016 (label smoothing).

    e_0 = sqrt(C) E[x] + PE                             shared embedding E over the joint vocabulary
    encoder layer:  e' = e + SelfAttn(LN(e); source <pad> keys masked)
                    e  = e' + FFN(LN(e'))
    decoder layer:  d' = d + SelfAttn(LN(d); causal)
                    d'' = d' + CrossAttn(LN(d'), LN_enc(e_L); source <pad> keys masked)
                    d  = d'' + FFN(LN(d''))
    logits = LN(d_L) E^T                                output tied to the shared embedding (Vaswani 3.4)

FFN(x) = W2 ReLU(W1 x), width mlp_ratio * C. Positions are sinusoidal (Vaswani 3.5; any length) or
learned (up to max_positions). One difference from the paper: LayerNorm before each sub-layer (pre-LN),
which trains without the long warmup the post-LN original needs; the paper's schedule is still available
as `--schedule inverse_sqrt`. Label smoothing 0.1 is this family's default (training loss only, encdec.py).
Attention is torch's scaled_dot_product_attention with boolean masks (True = may attend)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UsageError
from .encdec import EncoderDecoderLM, OutputLayer, rows_forward
from .family import Family, Lineup
from .transformer import sinusoidal_table

POSITIONS = ("sinusoidal", "learned")


class ConfigError(UsageError, ValueError):
    """A bad hyperparameter: a ValueError for library callers, a one-line usage error for the CLI."""


@dataclass
class TransformerSeq2SeqConfig:
    layers: int = 3  # encoder layers, and as many decoder layers (the paper's base model has 6)
    d_model: int = 256  # model width C (base: 512)
    heads: int = 4  # attention heads (base: 8)
    dropout: float = 0.1  # on embeddings, attention weights and every sub-layer output (base: 0.1)
    positions: str = "sinusoidal"  # sinusoidal (the paper) | learned (up to max_positions)
    tie_weights: bool = True  # output matrix = the shared source/target embedding (Vaswani 3.4)
    mlp_ratio: int = 4  # FFN width = mlp_ratio * d_model (base: 2048 = 4 x 512)
    max_positions: int = 1024  # longest source or target with learned positions
    label_smoothing: float = 0.1  # training loss only (encdec.py); the paper's eps_ls = 0.1
    unigram_init: bool = True  # a fresh run's output bias starts at the log unigram frequencies of the targets

    def __post_init__(self) -> None:
        for name in ("layers", "d_model", "heads", "mlp_ratio", "max_positions"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"transformer-seq2seq {name} must be at least 1, got {getattr(self, name)}")
        if self.d_model % self.heads != 0:
            raise ConfigError(f"transformer-seq2seq d_model ({self.d_model}) must be divisible by heads "
                              f"({self.heads})")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"transformer-seq2seq dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= float(self.label_smoothing) < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        self.positions = str(self.positions).lower()
        if self.positions not in POSITIONS:
            raise ConfigError(f"unknown positions {self.positions!r}; choose one of {', '.join(POSITIONS)}")


FAMILY = Family(
    kind="transformer-seq2seq",
    model="lmkit.models.transformer_seq2seq:TransformerSeq2SeqModel",
    neural=True,
    options=("layers", "d_model", "heads", "dropout", "positions", "tie_weights"),
    limits={"layers": 1024, "heads": 1024, "d_model": 65536},
    # Adam with beta2 0.98 as the paper; a higher peak rate than its schedule reaches, usual for small pre-LN
    # models; `--schedule inverse_sqrt` gives the paper's warmup-then-1/sqrt(step) decay
    defaults={
        "optimizer": "adamw",
        "lr": 1e-3,
        "betas": (0.9, 0.98),
        "weight_decay": 0.01,
        "batch_size": 64,  # sentence pairs per step
        "seq_len": 64,  # task lm only (stream windows); a translation pair is never cut
        "clip": 1.0,
        "warmup_steps": 200,
    },
    lineup=Lineup(specs=(), options={"layers": 2, "d_model": 128, "heads": 4}),
    tiny={"layers": 1, "d_model": 16, "heads": 2},
)


class Attention(nn.Module):
    """Multi-head attention of queries x over keys/values m; `allowed` (B or 1, 1, Tq or 1, Tk) True = attend."""

    def __init__(self, config: TransformerSeq2SeqConfig):
        super().__init__()
        C = config.d_model
        self.heads, self.dropout = config.heads, config.dropout
        self.q = nn.Linear(C, C)
        self.kv = nn.Linear(C, 2 * C)
        self.proj = nn.Linear(C, C)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, m: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        h = self.heads
        q = self.q(x).view(B, T, h, C // h).transpose(1, 2)  # (B, h, T, hs)
        k, v = self.kv(m).split(C, dim=2)
        k = k.view(B, m.size(1), h, C // h).transpose(1, 2)  # (B, h, S, hs)
        v = v.view(B, m.size(1), h, C // h).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.drop(self.proj(y.transpose(1, 2).reshape(B, T, C)))


class FeedForward(nn.Module):
    def __init__(self, config: TransformerSeq2SeqConfig):
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.mlp_ratio * config.d_model)
        self.proj = nn.Linear(config.mlp_ratio * config.d_model, config.d_model)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.relu(self.fc(x))))


class EncoderLayer(nn.Module):
    def __init__(self, config: TransformerSeq2SeqConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(config.d_model), nn.LayerNorm(config.d_model)
        self.attn, self.ffn = Attention(config), FeedForward(config)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, allowed)
        return x + self.ffn(self.ln2(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: TransformerSeq2SeqConfig):
        super().__init__()
        self.ln1, self.ln2, self.ln3 = (nn.LayerNorm(config.d_model) for _ in range(3))
        self.self_attn, self.cross, self.ffn = Attention(config), Attention(config), FeedForward(config)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, causal: torch.Tensor, cross: torch.Tensor):
        h = self.ln1(x)
        x = x + self.self_attn(h, h, causal)
        x = x + self.cross(self.ln2(x), memory, cross)
        return x + self.ffn(self.ln3(x))


class TransformerSeq2SeqNet(OutputLayer, nn.Module):
    Config = TransformerSeq2SeqConfig
    stateful: ClassVar[bool] = False
    history: ClassVar[None] = None
    train_defaults: ClassVar[Mapping] = FAMILY.defaults

    def __init__(self, config: TransformerSeq2SeqConfig, vocab_size: int):
        super().__init__()
        self.config, self.vocab_size, self.joint = config, vocab_size, False
        C = config.d_model
        self.emb = nn.Embedding(vocab_size, C)
        self.pos_emb = nn.Embedding(config.max_positions, C) if config.positions == "learned" else None
        self.drop = nn.Dropout(config.dropout)
        self.enc_layers = nn.ModuleList([EncoderLayer(config) for _ in range(config.layers)])
        self.dec_layers = nn.ModuleList([DecoderLayer(config) for _ in range(config.layers)])
        self.ln_enc, self.ln_dec = nn.LayerNorm(C), nn.LayerNorm(C)
        self.init_output_layer(C, vocab_size, config.tie_weights)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.emb.weight, mean=0.0, std=0.02)  # small tied output: first loss ~ ln V (as GPT-2)

    def init_state(self, batch_size: int, device) -> None:
        return None

    def detach_state(self, state) -> None:
        return None

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def optim_groups(self, weight_decay: float) -> list[dict]:
        decay = [p for p in self.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.dim() < 2]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    @property
    def scores_targets(self) -> bool:
        return True

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        T, C = ids.size(1), self.config.d_model
        x = self.emb(ids) * math.sqrt(C)
        if self.pos_emb is not None:
            if T > self.config.max_positions:
                raise ValueError(f"{T} tokens exceed max_positions={self.config.max_positions} (learned positions)")
            x = x + self.pos_emb(torch.arange(T, device=ids.device))
        else:
            x = x + sinusoidal_table(T, C).to(ids.device)
        return self.drop(x)

    def encode(self, src: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """(B, S) source ids -> (B, S, C) memory; <pad> keys masked in every layer."""
        allowed = src_mask[:, None, None, :]  # (B, 1, 1, S)
        x = self.embed(src)
        for layer in self.enc_layers:
            x = layer(x, allowed)
        return self.ln_enc(x)

    def decode(self, dec: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: (B, D) decoder inputs -> (B, D, C) outputs (`project`: logits); step j sees steps <= j
        and all the source."""
        D = dec.size(1)
        causal = torch.ones(D, D, dtype=torch.bool, device=dec.device).tril()[None, None]  # (1, 1, D, D)
        cross = src_mask[:, None, None, :]
        x = self.embed(dec)
        for layer in self.dec_layers:
            x = layer(x, memory, causal, cross)
        return self.ln_dec(x)

    def step(self, tokens: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor, state=None):
        """Incremental decoding: (B,) next decoder input -> ((B, V) logits, the prefix so far)."""
        prefix = tokens[:, None] if state is None else torch.cat([state, tokens[:, None]], dim=1)
        return self.project(self.decode(prefix, memory, src_mask)[:, -1]), prefix

    def forward(self, idx: torch.Tensor, state=None, targets: torch.Tensor | None = None, last_only: bool = False):
        """`<s> source <sep> target` rows -> logits or ln P(targets) per row position (encdec.py), and None."""
        return rows_forward(self, idx, targets, last_only), None


class TransformerSeq2SeqModel(EncoderDecoderLM):
    """Encoder-decoder Transformer (Vaswani et al. 2017); see transformer_seq2seq.py."""

    kind = "transformer-seq2seq"
    module = TransformerSeq2SeqNet
    Config = TransformerSeq2SeqConfig
