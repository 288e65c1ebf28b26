"""An RNN encoder-decoder with attention: bidirectional encoder, Luong et al. 2015 global attention.

    D. Bahdanau, K. Cho, Y. Bengio. "Neural Machine Translation by Jointly Learning to Align and Translate".
    ICLR 2015 (bidirectional encoder, attention over its states).
    M.-T. Luong, H. Pham, C. D. Manning. "Effective Approaches to Attention-based Neural Machine
    Translation". EMNLP 2015 (global attention, "general" and "dot" scores: the ones used here).

    h^src_1..S = BiLSTM(C x_1..S)                       forward and backward states concatenated   (S, 2H)
    s_0 = tanh(W_0 [h->_S ; h<-_1])                      decoder start state (each decoder layer)
    s_t = LSTM(C y_{t-1}, s_{t-1})                       teacher forcing in training               (H,)
    a_t = softmax_j(s_t^T W_a h^src_j)                  general score (dot: W_a = projection only); <pad> masked
    c_t = sum_j a_tj h^src_j
    h~_t = tanh(W_c [c_t ; s_t])                         attentional state
    logits_t = U h~_t                                    U = C when tie_weights (one joint vocabulary)

One embedding matrix C serves source and target (the joint vocabulary of --task translate). Source
padding is handled by packed sequences in the encoder and a key mask in the attention, so a sentence scores
the same in any batch. No input feeding (Luong 3.3), so training runs the decoder LSTM over the whole target
in one call; decoding steps it one token at a time with the carried state (`step`), which gives the same
numbers (tests/test_seq2seq.py). The cell is an LSTM or a GRU. How rows are split into source and target,
label smoothing and the adapter: encdec.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from ..errors import UsageError
from .encdec import EncoderDecoderLM, OutputLayer, rows_forward
from .family import Family, Lineup

CELLS = ("lstm", "gru")
ATTENTIONS = ("general", "dot")


class ConfigError(UsageError, ValueError):
    """A bad hyperparameter: a ValueError for library callers, a one-line usage error for the CLI."""


@dataclass
class Seq2SeqConfig:
    cell: str = "lstm"  # lstm | gru, in the encoder and the decoder
    layers: int = 1  # stacked layers in the encoder and in the decoder
    embed: int = 256  # shared source/target embedding size
    hidden: int = 256  # decoder units; each encoder direction has hidden // 2, so h^src is hidden wide
    dropout: float = 0.2  # on embeddings, between layers and on the attentional state
    tie_weights: bool = True  # output matrix = the shared embedding (needs embed == hidden)
    attention: str = "general"  # Luong score: general (s^T W_a h) or dot (s^T h)
    label_smoothing: float = 0.0  # training loss only (encdec.py); --set label_smoothing=0.1
    unigram_init: bool = True  # a fresh run's output bias starts at the log unigram frequencies of the targets

    def __post_init__(self) -> None:
        for name in ("layers", "embed", "hidden"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"seq2seq {name} must be at least 1, got {getattr(self, name)}")
        self.cell, self.attention = str(self.cell).lower(), str(self.attention).lower()
        if self.cell not in CELLS:
            raise ConfigError(f"unknown seq2seq cell {self.cell!r}; choose one of {', '.join(CELLS)}")
        if self.attention not in ATTENTIONS:
            raise ConfigError(f"unknown attention {self.attention!r}; choose one of {', '.join(ATTENTIONS)}")
        if self.hidden % 2:
            raise ConfigError(f"seq2seq hidden must be even (two encoder directions), got {self.hidden}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"seq2seq dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= float(self.label_smoothing) < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.tie_weights and self.embed != self.hidden:
            raise ConfigError(f"tie_weights needs embed == hidden (got {self.embed} and {self.hidden})")


FAMILY = Family(
    kind="seq2seq",
    model="lmkit.models.seq2seq:Seq2SeqModel",
    neural=True,
    options=("cell", "layers", "embed", "hidden", "dropout", "tie_weights"),
    limits={"layers": 1024, "embed": 65536, "hidden": 65536},
    # Adam as in Luong et al.'s later recipes (they used SGD 1.0 with halving); clipping as theirs (5 -> 1)
    defaults={
        "optimizer": "adamw",
        "lr": 2e-3,
        "betas": (0.9, 0.98),
        "weight_decay": 0.0,
        "batch_size": 64,  # sentence pairs per step
        "seq_len": 64,  # task lm only (stream windows); a translation pair is never cut
        "clip": 1.0,
        "warmup_steps": 100,
    },
    lineup=Lineup(specs=(), options={"layers": 1, "hidden": 256, "embed": 256}),
    tiny={"layers": 1, "hidden": 16, "embed": 16},
)


class Seq2SeqNet(OutputLayer, nn.Module):
    Config = Seq2SeqConfig
    stateful: ClassVar[bool] = False
    history: ClassVar[None] = None
    train_defaults: ClassVar[Mapping] = FAMILY.defaults

    def __init__(self, config: Seq2SeqConfig, vocab_size: int):
        super().__init__()
        self.config, self.vocab_size, self.joint = config, vocab_size, False
        H, E, L = config.hidden, config.embed, config.layers
        rnn = nn.LSTM if config.cell == "lstm" else nn.GRU
        between = config.dropout if L > 1 else 0.0
        self.emb = nn.Embedding(vocab_size, E)
        self.drop = nn.Dropout(config.dropout)
        self.encoder = rnn(E, H // 2, L, batch_first=True, bidirectional=True, dropout=between)
        self.bridge = nn.Linear(H, H)  # W_0: encoder ends -> decoder start state
        self.decoder = rnn(E, H, L, batch_first=True, dropout=between)
        self.w_a = nn.Linear(H, H, bias=False) if config.attention == "general" else None
        self.w_c = nn.Linear(2 * H, H, bias=False)
        self.init_output_layer(H, vocab_size, config.tie_weights)
        # Luong et al. (2015): every parameter uniform(-0.1, 0.1). Small tied output rows also let a fresh run's
        # first prediction be the unigram its output bias starts at (init_output_bias).
        for name, p in self.named_parameters():
            if name != "out_bias":
                nn.init.uniform_(p, -0.1, 0.1)

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

    # -- the encoder and the decoder ------------------------------------------------------------------
    def encode(self, src: torch.Tensor, src_mask: torch.Tensor):
        """(B, S) source ids -> (encoder states (B, S, H), decoder start state); packed: <pad> never read."""
        lengths = src_mask.sum(dim=1).cpu()
        packed = pack_padded_sequence(self.drop(self.emb(src)), lengths, batch_first=True, enforce_sorted=False)
        states, last = self.encoder(packed)
        states, _ = pad_packed_sequence(states, batch_first=True, total_length=src.size(1))  # (B, S, H)
        h = last[0] if isinstance(last, tuple) else last  # (2L, B, H/2): [layer0 fwd, layer0 bwd, ...]
        ends = torch.cat([h[-2], h[-1]], dim=-1)  # top layer's forward end and backward end (B, H)
        s0 = torch.tanh(self.bridge(ends)).unsqueeze(0).repeat(self.config.layers, 1, 1).contiguous()
        start = (s0, torch.zeros_like(s0)) if self.config.cell == "lstm" else s0
        return states, start

    def attend(self, s: torch.Tensor, memory, src_mask: torch.Tensor) -> torch.Tensor:
        """Decoder outputs s (B, D, H) -> attentional states h~ (B, D, H) through Luong global attention."""
        states = memory[0]  # (B, S, H)
        keys = states if self.w_a is None else self.w_a(states)
        scores = torch.bmm(s, keys.transpose(1, 2))  # (B, D, S)
        scores = scores.masked_fill(~src_mask[:, None, :], float("-inf"))  # source <pad> never attended
        context = torch.bmm(torch.softmax(scores, dim=-1), states)  # (B, D, H)
        return self.drop(torch.tanh(self.w_c(torch.cat([context, s], dim=-1))))

    def decode(self, dec: torch.Tensor, memory, src_mask: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: (B, D) decoder inputs -> (B, D, H) attentional states (`project`: logits), in one
        decoder call."""
        s, _ = self.decoder(self.drop(self.emb(dec)), memory[1])
        return self.attend(s, memory, src_mask)

    def step(self, tokens: torch.Tensor, memory, src_mask: torch.Tensor, state=None):
        """Incremental decoding: (B,) previous tokens -> ((B, V) logits, new state); state None: the start."""
        s, state = self.decoder(self.drop(self.emb(tokens)[:, None]), memory[1] if state is None else state)
        return self.project(self.attend(s, memory, src_mask)[:, 0]), state

    def forward(self, idx: torch.Tensor, state=None, targets: torch.Tensor | None = None, last_only: bool = False):
        """`<s> source <sep> target` rows -> logits or ln P(targets) per row position (encdec.py), and None."""
        return rows_forward(self, idx, targets, last_only), None


class Seq2SeqModel(EncoderDecoderLM):
    """RNN encoder-decoder with Luong attention; see seq2seq.py."""

    kind = "seq2seq"
    module = Seq2SeqNet
    Config = Seq2SeqConfig
