"""Recurrent language models: LSTM (default), GRU or a plain tanh RNN, in the recipe of Zaremba et al.

    W. Zaremba, I. Sutskever, O. Vinyals. "Recurrent Neural Network Regularization". arXiv:1409.2329,
    2014 (multi-layer LSTM LM with dropout on the non-recurrent connections only).
    S. Hochreiter, J. Schmidhuber. "Long Short-Term Memory". Neural Computation 9(8), 1997.
    K. Cho et al. "Learning Phrase Representations using RNN Encoder-Decoder ...". EMNLP 2014 (GRU).
    T. Mikolov et al. "Recurrent neural network based language model". Interspeech 2010 (tanh RNN).
    O. Press, L. Wolf. "Using the Output Embedding to Improve Language Models". EACL 2017 (tying).

    e_t = dropout_e(C w_t)                                 token embedding            (E,)
    h_t^1..L = Cell(e_t, h_{t-1}^1..L)                     L stacked cells, dropout between layers
    y_t = b + U dropout(h_t^L)                             logits of the token after w_t   (V,)

The model is stateful: `forward(idx, state)` continues from the hidden state of the previous chunk
and returns the new one, so a long stream is read in chunks (truncated back-propagation through
time: the training loop calls `detach_state` between chunks so gradients stop at the chunk edge).
Its history is unbounded (`history` is None). torch.nn.LSTM/GRU/RNN with batch_first=True run the
fused cuDNN kernels on CUDA.

Dropout follows Zaremba et al.: only on non-recurrent connections (embeddings, between layers, on
the top layer's output); the recurrent h_{t-1} -> h_t path is left intact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UsageError
from .adaptive import AdaptiveHead, start_at_unigram
from .family import Family, Lineup, Recipe

CELLS = ("lstm", "gru", "rnn")


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """The autocast dtype in force on this device type, or None outside autocast."""
    if device_type not in ("cpu", "cuda") or not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


class ConfigError(UsageError, ValueError):
    """A bad hyperparameter: a ValueError for library callers, a one-line usage error for the CLI."""


@dataclass
class RNNConfig:
    cell: str = "lstm"  # lstm | gru | rnn (tanh, Elman/Mikolov); LSTM is the strongest of the three
    layers: int = 2  # stacked recurrent layers (Zaremba et al. use 2)
    embed: int | None = None  # embedding size; None = hidden (needed for tie_weights)
    hidden: int = 256  # units per layer (Zaremba's "small" model has 200, "medium" 650)
    dropout: float = 0.1  # between layers and on the top layer's output; 0.1 beat 0.2 and 0.3 on PTB in 12 minutes
    embed_dropout: float = 0.1  # on the embeddings fed to the first layer
    # output matrix = embedding matrix (Press & Wolf 2017): fewer parameters, as the PTB recipe that reached 113.7
    # (docs/results.md "PTB LSTM"); needs embed == hidden. None: tied whenever the sizes allow
    tie_weights: bool | None = None
    # Adaptive softmax (Grave et al. 2017, see adaptive.py): vocabulary cutoffs such as (2000, 6000) split the
    # output layer into a frequent-word head and cheaper tail clusters; () (--set adaptive_cutoffs=none) =
    # the plain full softmax. Not set: derived from the vocabulary by the pipeline (adaptive.derived_cutoffs).
    adaptive_cutoffs: tuple[int, ...] = ()
    adaptive_div: float = 4.0  # each tail cluster's projection is this many times narrower than the last
    unigram_init: bool = True  # a fresh run's output bias starts at the log unigram frequencies of the train split

    def __post_init__(self) -> None:
        self.cell = str(self.cell).lower()
        if self.cell not in CELLS:
            raise ConfigError(f"unknown rnn cell {self.cell!r}; choose one of {', '.join(CELLS)}")
        for name in ("layers", "hidden"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"rnn {name} must be at least 1, got {getattr(self, name)}")
        if self.embed is not None and int(self.embed) < 1:
            raise ConfigError(f"rnn embed must be at least 1 (or None for = hidden), got {self.embed}")
        for name in ("dropout", "embed_dropout"):
            if not 0.0 <= float(getattr(self, name)) < 1.0:
                raise ConfigError(f"rnn {name} must be in [0, 1), got {getattr(self, name)}")
        # Tying needs the output layer's input (the top hidden state) to have the embedding's width.
        # We refuse rather than silently add a projection layer: the user asked for a specific shape.
        if float(self.adaptive_div) < 1.0:
            raise ConfigError(f"rnn adaptive_div must be at least 1, got {self.adaptive_div}")
        if self.tie_weights is None:
            self.tie_weights = self.embed_size == self.hidden
        if self.tie_weights and self.embed_size != self.hidden:
            raise ConfigError(f"tie_weights needs embed == hidden, got embed={self.embed} and hidden={self.hidden}; "
                              "set embed to None (= hidden) or to the hidden size, or turn tie_weights off")

    @property
    def embed_size(self) -> int:
        return self.hidden if self.embed is None else int(self.embed)


FAMILY = Family(
    kind="lstm",
    model="lmkit.models.torchlm:RNNModel",
    neural=True,
    options=("cell", "layers", "embed", "hidden", "dropout", "tie_weights"),
    limits={"layers": 1024, "embed": 65536, "hidden": 65536},  # far beyond any model lmkit trains; typos fail
    # Not the classic recipe (SGD lr 20, clip 0.25, lr/4 on plateaus: Zaremba et al. and the PyTorch
    # word_language_model example), which needs many epochs and a hand-run schedule. AdamW with gradient
    # clipping at 1.0 reaches a good perplexity in a fraction of the steps on a CPU. On a short run (char-
    # level tinyshakespeare, ~370 steps of the default model) valid perplexity was 6.7 / 6.0 / 5.8 at lr
    # 2e-3 / 5e-3 / 1e-2; we take 3e-3 because word-level models, with their large sparse embedding and
    # output matrices, are usually less tolerant of high Adam rates. 32 rows x 64 BPTT steps keep the
    # sequential LSTM kernel busy without long truncated-BPTT chains.
    defaults={
        "optimizer": "adamw",  # decoupled weight decay (Loshchilov & Hutter 2019)
        "lr": 3e-3,  # peak learning rate
        "betas": (0.9, 0.99),  # beta2 0.99: small data, noisy gradients, as nanoGPT's char example
        "weight_decay": 0.01,  # light: dropout does most of the regularising for LSTMs
        "batch_size": 32,  # parallel streams (rows); each carries its own state across chunks
        "seq_len": 35,  # BPTT length: gradients flow back at most this many steps (35: Zaremba, the PTB recipe)
        "clip": 1.0,  # max global gradient norm; essential for RNNs (exploding gradients)
        "warmup_steps": 100,  # linear warm-up, then cosine decay
    },
    # small enough for ~1 min on two cores; the adaptive softmax pays off on a large word vocabulary
    lineup=Lineup(options={"layers": 1, "hidden": 128, "tie_weights": True}),
    tiny={"layers": 1, "hidden": 16},
    # docs/results.md "PTB LSTM", with the token budget its 12-minute run reached instead of the time budget,
    # so the result does not depend on machine speed
    recipe=Recipe(
        expected=113.7,
        command="lmkit train --model lstm --layers 2 --hidden 256 --dropout 0.1 --set embed_dropout=0.1 "
                "--tie-weights --set adaptive_cutoffs=2000,5000 --context stream --min-count 1 --corpus PTB "
                "--batch-size 32 --seq-len 35 --lr 3e-3 --warmup 100 --max-tokens 5340000 --device cpu --seed 0",
        citation="docs/results.md, 'PTB LSTM' recipe: test 113.7 after 12 minutes (5.34 M tokens), 2026-11-23",
        request={"model": "lstm", "context": "stream", "min_count": 1, "seed": 0,
                 "options": {"layers": 2, "hidden": 256, "dropout": 0.1, "tie_weights": True},
                 "sets": ["embed_dropout=0.1", "adaptive_cutoffs=2000,5000"],
                 "train_options": {"batch_size": 32, "seq_len": 35, "lr": 3e-3, "warmup_steps": 100,
                                   "max_tokens": 5_340_000, "device": "cpu"}},
    ),
)


class RNNLM(nn.Module):
    Config = RNNConfig
    stateful: ClassVar[bool] = True
    train_defaults: ClassVar[Mapping] = FAMILY.defaults  # what train.py uses unless the user overrides it

    def __init__(self, config: RNNConfig, vocab_size: int):
        super().__init__()
        if vocab_size < 1:
            raise ConfigError(f"vocab_size must be at least 1, got {vocab_size}")
        self.config = config
        self.vocab_size = vocab_size
        E, H, L = config.embed_size, config.hidden, config.layers
        self.embed = nn.Embedding(vocab_size, E)
        self.embed_drop = nn.Dropout(config.embed_dropout)
        # torch applies `dropout` to the outputs of every layer but the last; we add the last one below.
        between = config.dropout if L > 1 else 0.0
        if config.cell == "lstm":
            self.rnn = nn.LSTM(E, H, L, dropout=between, batch_first=True)
        elif config.cell == "gru":
            self.rnn = nn.GRU(E, H, L, dropout=between, batch_first=True)
        else:
            self.rnn = nn.RNN(E, H, L, nonlinearity="tanh", dropout=between, batch_first=True)
        self.out_drop = nn.Dropout(config.dropout)
        self.adaptive = None
        self.head = None
        if config.adaptive_cutoffs:  # tied: the head's shortlist rows are the embedding's first rows
            shortlist = self.embed.weight if config.tie_weights else None
            self.adaptive = AdaptiveHead(H, vocab_size, tuple(config.adaptive_cutoffs), float(config.adaptive_div),
                                         shortlist_weight=shortlist)
        else:
            # Tied: the logits use self.embed.weight directly (F.linear below), so the state dict holds
            # the matrix once and safetensors never sees two names for one tensor.
            self.head = None if config.tie_weights else nn.Linear(H, vocab_size, bias=False)  # U
            self.head_bias = nn.Parameter(torch.zeros(vocab_size))  # b, kept when tied (as the PyTorch example)
        self._init_weights()

    def _init_weights(self) -> None:
        # Zaremba et al. (small model): every weight uniform(-0.1, 0.1), recurrent ones included;
        # the output bias starts at 0 (a fresh training run then sets it to the unigram: init_output_bias).
        for name, p in self.named_parameters():
            if name.endswith("head_bias"):
                nn.init.zeros_(p)
            else:
                nn.init.uniform_(p, -0.1, 0.1)

    @torch.no_grad()
    def init_output_bias(self, logp: torch.Tensor) -> None:
        """b = `logp` (V,), a unigram ln P (the adaptive head's biases likewise): step 0 predicts the unigram."""
        start_at_unigram(self.adaptive, getattr(self, "head_bias", None), logp)

    @property
    def history(self) -> int | None:
        """Unbounded: the state carries everything read so far."""
        return None

    def init_state(self, batch_size: int, device):
        """Zero state: (h, c) for LSTM, h for GRU/RNN, each (layers, B, hidden)."""
        h = torch.zeros(self.config.layers, batch_size, self.config.hidden, device=device)
        if self.config.cell == "lstm":
            return (h, torch.zeros_like(h))
        return h

    def detach_state(self, state):
        """Cut the graph at the chunk boundary (truncated BPTT); values are kept."""
        if state is None:
            return None
        if isinstance(state, tuple):
            return tuple(s.detach() for s in state)
        return state.detach()

    @property
    def scores_targets(self) -> bool:
        """True when forward(..., targets=) is cheaper than full logits (the adaptive softmax)."""
        return self.adaptive is not None

    def forward(self, idx: torch.Tensor, state=None, targets: torch.Tensor | None = None, last_only: bool = False):
        """idx (B, T) token ids, state from init_state / a previous call (None = zeros).

        Returns raw logits (B, T, V), logits[:, t] predicting the token after idx[:, t], and the
        state after reading idx[:, T-1]. With the adaptive softmax the "logits" are already ln P
        (normalised), and with `targets` (B, T) it returns ln P(targets) (B, T) instead, computing
        each tail cluster only where a target falls in it. `last_only` gives the last position's
        output only (B, 1, V): what decoding needs."""
        x = self.embed_drop(self.embed(idx))  # (B, T, E)
        dtype = _autocast_dtype(idx.device.type)
        if dtype is not None:
            # On CPU, autocast's nn.LSTM fails ("could not create a primitive descriptor" from oneDNN)
            # unless the input and the state already have the autocast dtype, so cast them here. On
            # CUDA this is what autocast's cuDNN path does anyway.
            x = x.to(dtype)
            if state is not None:
                state = tuple(s.to(dtype) for s in state) if isinstance(state, tuple) else state.to(dtype)
        y, state = self.rnn(x, state)  # y (B, T, H); state (L, B, H) or a tuple of two
        y = self.out_drop(y)
        if last_only:
            y = y[:, -1:]
        if self.adaptive is not None:
            if targets is not None:
                return self.adaptive.target_logprobs(y, targets), state
            return self.adaptive(y), state
        weight = self.embed.weight if self.head is None else self.head.weight  # (V, H)
        logits = F.linear(y, weight, self.head_bias)  # (B, T, V)
        return logits, state

    # -- accounting and optimiser helpers ---------------------------------------------------------
    def num_parameters(self) -> int:
        """Unique trainable parameters (the tied matrix counts once)."""
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, seq_len: int | None = None) -> int:
        """Approximate training FLOPs (forward + backward) per predicted token: 6 * N_matmul.

        N_matmul = the parameters used in a matrix multiply at every step: the recurrent layers'
        input and hidden weights (g*(E+H)*H for the first layer, g*2H*H after, g = 4 LSTM, 3 GRU,
        1 RNN), the output matrix H*V and the biases. The embedding lookup costs nothing unless the
        matrix is tied, in which case it is the output matrix and counted once. Gate non-linearities
        are ignored. With the adaptive softmax every tail is counted as if used at every position (an
        upper bound). `seq_len` is accepted for a uniform signature and ignored."""
        lookup_only = 0 if self.head is None and self.adaptive is None else self.embed.weight.numel()
        if self.adaptive is not None and self.adaptive.tied:  # the shortlist rows are used, the rest looked up
            lookup_only -= self.adaptive.shortlist * self.config.hidden
        return 6 * (self.num_parameters() - lookup_only)

    def optim_groups(self, weight_decay: float) -> list[dict]:
        """AdamW parameter groups: decay matrices (incl. embeddings), not biases."""
        decay = [p for p in self.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.dim() < 2]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
