"""What the encoder-decoder families (seq2seq.py, transformer_seq2seq.py) share: the split of the one
encoded `<s> source <sep> target` row into an encoder input and a decoder input, the way back to the row's
positions, label smoothing, and the TorchLM adapter.

An encoder-decoder model takes exactly the input a prefix LM gets (lmkit.data.batching builds the same
batches for both), so the one training loop and the one scoring path serve it unchanged:

    row        x = <s> s1 .. sm <sep> t1 .. tn           y = s1 .. sm <sep> t1 .. tn </s>
    encoder    <s> s1 .. sm                              (bidirectional: sees the whole source)
    decoder    <sep> t1 .. tn                            (causal: <sep> plays the decoder's start symbol)
    output     position p >= sep predicts y[p] = t_{p-sep+1} (or </s>) from decoder step p - sep

Positions before <sep> predict source tokens, which an encoder-decoder does not model: they get the uniform
distribution over the predictable set (never scored: score_encoded keeps only target tokens and </s>, and
the loss is on the target side only). A row without <sep> is, for a translation model, all source (every
position uniform: a changed later token then never moves an earlier score, as `lmkit check` requires); for a
model trained on monolingual text (task lm) it is all target, with its first token (`<s>`, or a stream
window's first token) alone as the source.

Label smoothing (Szegedy et al. 2016; Vaswani et al. 2017 use eps = 0.1) changes the training loss only: in
training mode the returned "log-probability" of a target is (1 - eps) ln p(y) + eps * mean_v ln p(v) over
the predictable set, so the loop's loss -sum/targets is the smoothed cross-entropy; in eval mode (every
scoring pass) it is ln p(y) exactly, so reported perplexities never see eps."""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.vocab import BOS, PAD, SEP
from ..errors import ModelError
from .adaptive import start_at_unigram
from .torchlm import SCORE_TOKENS, TorchLM, masked_log_softmax, target_logprobs

LM_WINDOW = 256  # a monolingual (task lm) encoder-decoder is scored in windows of this many tokens


class Split(NamedTuple):
    """The encoder and decoder inputs of a batch of rows, and where decoder step j sits in the row."""

    src: torch.Tensor  # (B, S) encoder ids, PAD-padded on the right
    src_mask: torch.Tensor  # (B, S) True at real source tokens
    dec: torch.Tensor  # (B, D) decoder ids, PAD-padded on the right
    pos: torch.Tensor  # (B, D) row position of decoder step j (may run past the row: then invalid)
    valid: torch.Tensor  # (B, D) True where decoder step j lies inside the row


def split_rows(x: torch.Tensor, joint: bool) -> Split:
    """Split (B, T) rows at their first <sep> (see the module docstring)."""
    B, T = x.shape
    if joint:  # (id 4 is <sep> only in a joint vocabulary; a monolingual one gives it to a word)
        first = (x == SEP).int().argmax(dim=1)  # 0 where there is none
        sep = torch.where((x == SEP).any(dim=1), first, torch.full_like(first, T))  # (B,) first decoder position
    else:
        sep = torch.zeros(B, dtype=torch.long, device=x.device)
    src_len = sep.clamp(min=1)  # the source holds <s> at least
    S = int(src_len.max())
    cols = torch.arange(S, device=x.device)
    src_mask = cols[None, :] < src_len[:, None]  # (B, S)
    src = torch.where(src_mask, x[:, :S], torch.full_like(x[:, :S], PAD))
    D = max(1, T - int(sep.min()))
    pos = sep[:, None] + torch.arange(D, device=x.device)[None, :]  # (B, D)
    valid = pos < T
    dec = torch.where(valid, x.gather(1, pos.clamp(max=T - 1)), torch.full_like(pos, PAD))
    return Split(src, src_mask, dec, pos, valid)


def to_rows(values: torch.Tensor, split: Split, T: int, fill: float) -> torch.Tensor:
    """(B, D) per decoder step -> (B, T) per row position; positions before <sep> get `fill`."""
    out = torch.full((values.size(0), T), fill, dtype=values.dtype, device=values.device)
    B = values.size(0)
    rows = torch.arange(B, device=values.device)[:, None].expand_as(split.pos)
    out[rows[split.valid], split.pos[split.valid]] = values[split.valid]
    return out


def from_rows(y: torch.Tensor, split: Split) -> torch.Tensor:
    """(B, T) targets -> (B, D) targets of the decoder steps (PAD past the row)."""
    T = y.size(1)
    got = y.gather(1, split.pos.clamp(max=T - 1))
    return torch.where(split.valid, got, torch.full_like(got, PAD))


def uniform_logprob(vocab_size: int) -> float:
    """ln of the uniform probability over the predictable set (every id but <pad> and <s>)."""
    return -math.log(max(1, vocab_size - 2))


class SmoothedTargetLogprob(torch.autograd.Function):
    """Label-smoothed ln P of (N,) targets from (N, V) float32 logits, forward and backward in one pass each.

    With z the logits, lse their log-sum-exp over the predictable set P (every id but <pad> and <s>) and
    p = softmax over P: value = (1 - eps) (z_y - lse) + eps (mean_{v in P} z_v - lse), and its gradient is
    (1 - eps) onehot(y) + eps / |P| on P - p. Written out so that autograd does not build the (N, V) zero
    tensors a gather, two selects and a second log-softmax would each allocate (about a quarter of a small
    translation model's training step). <pad> targets give 0 and no gradient."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, eps: float) -> torch.Tensor:
        V = logits.size(-1)
        size = max(1, V - 2)
        total = logits.sum(dim=-1) - logits[:, PAD] - logits[:, BOS]
        blocked = logits.clone()
        blocked[:, PAD] = float("-inf")
        blocked[:, BOS] = float("-inf")
        logp = torch.log_softmax(blocked, dim=-1)
        safe = targets.clamp(min=0)[:, None]
        exact = logp.gather(1, safe).squeeze(1)
        lse = blocked.gather(1, safe).squeeze(1) - exact
        value = (1 - eps) * exact + eps * (total / size - lse)
        live = targets != PAD
        ctx.save_for_backward(logp, safe, live)
        ctx.eps, ctx.size = eps, size
        return torch.where(live, value, torch.zeros_like(value))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logp, safe, live = ctx.saved_tensors
        out = torch.exp(logp).neg_().add_(ctx.eps / ctx.size)
        out[:, PAD] = 0.0
        out[:, BOS] = 0.0
        out.scatter_add_(1, safe, torch.full_like(logp[:, :1], 1 - ctx.eps))
        out.mul_((grad * live)[:, None])
        return out, None, None


def smoothed_logprobs(logits: torch.Tensor, targets: torch.Tensor, eps: float) -> torch.Tensor:
    """(1 - eps) ln p(y) + eps * mean over the predictable set of ln p(v) for (N, V) logits and (N,) targets;
    <pad> targets give 0. eps = 0: exactly ln p(y) (the scoring path)."""
    if eps <= 0:
        return target_logprobs(logits, targets)
    return SmoothedTargetLogprob.apply(logits.float(), targets, float(eps))


class OutputLayer:
    """Mixin for both encoder-decoder modules (each has `emb`, the shared embedding): the decoder's output layer,
    that embedding (tied) or a matrix of its own, plus a bias that a fresh run starts at the unigram of the
    training targets (init_output_bias, as every language-model family: docs/neural.md "Defaults")."""

    # weights files written before the bias existed load with a zero bias: their outputs, unchanged
    zero_if_missing = ("out_bias",)

    def init_output_layer(self, width: int, vocab_size: int, tie: bool) -> None:
        self.out = None if tie else nn.Linear(width, vocab_size, bias=False)
        self.out_bias = nn.Parameter(torch.zeros(vocab_size))

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """Decoder outputs (..., width) -> logits (..., V)."""
        return F.linear(h, self.emb.weight if self.out is None else self.out.weight, self.out_bias)

    @torch.no_grad()
    def init_output_bias(self, logp: torch.Tensor) -> None:
        """Output bias = `logp` (V,), a unigram ln P: with small output weights step 0 predicts the unigram."""
        start_at_unigram(None, self.out_bias, logp)


def rows_forward(net, x: torch.Tensor, targets: torch.Tensor | None, last_only: bool):
    """The nn.Module contract for an encoder-decoder `net` (net.encode, net.decode, net.project, net.joint):
    full-row logits (B, T, V) (last_only: (B, 1, V)), or with `targets` ln P(targets) (B, T)."""
    B, T = x.shape
    split = split_rows(x, net.joint)
    memory = net.encode(split.src, split.src_mask)
    hidden = net.decode(split.dec, memory, split.src_mask)  # (B, D, H)
    V = net.vocab_size
    if last_only:
        last = (T - 1 - (split.pos[:, 0])).clamp(min=0)  # the decoder step at the row's last position
        picked = net.project(hidden[torch.arange(B, device=x.device), last][:, None])  # (B, 1, V)
        before = split.pos[:, 0] > T - 1  # the last position is still on the source side
        return torch.where(before[:, None, None], torch.zeros_like(picked), picked)
    if targets is not None:  # project only the decoder steps that have a target (no padding)
        eps = float(net.config.label_smoothing) if net.training else 0.0
        wanted = from_rows(targets, split)  # (B, D)
        keep = wanted != PAD
        lp = torch.zeros(wanted.shape, dtype=torch.float32, device=x.device)
        lp[keep] = smoothed_logprobs(net.project(hidden[keep]), wanted[keep], eps)
        out = to_rows(lp, split, T, uniform_logprob(V))
        return torch.where(targets == PAD, torch.zeros_like(out), out)
    logits = net.project(hidden)  # (B, D, V)
    full = torch.zeros(B, T, V, dtype=logits.dtype, device=logits.device)
    rows = torch.arange(B, device=x.device)[:, None].expand_as(split.pos)
    full[rows[split.valid], split.pos[split.valid]] = logits[split.valid]
    return full


class EncoderDecoderLM(TorchLM):
    """TorchLM adapter of an encoder-decoder module: tells it whether rows are `source <sep> target`."""

    def __init__(self, config, vocab, protocol, device: str = "cpu"):
        super().__init__(config, vocab, protocol, device)
        self.net.joint = protocol.task == "translate"
        if self.net.joint and protocol.context != "sentence":
            raise ModelError("an encoder-decoder translates sentence by sentence: use --context sentence")

    @property
    def max_len(self) -> int | None:
        """None for translation (a pair is never cut); task lm: windows of LM_WINDOW tokens."""
        return None if self.protocol.task == "translate" else LM_WINDOW

    @property
    def history(self) -> int | None:
        return None if self.protocol.task == "translate" else LM_WINDOW

    def next_logprobs(self, contexts: Sequence[Sequence[int]]) -> np.ndarray:
        """(B, V) next-token rows; translation contexts of any lengths share one pass (chunks of SCORE_TOKENS
        tokens): sources and decoder prefixes are padded apart, so decoding a test file costs one encoder and
        decoder pass per step, not one per context length."""
        if not self.net.joint:
            return super().next_logprobs(contexts)
        was_training = self.net.training
        self.net.eval()
        try:
            out = np.empty((len(contexts), len(self.vocab)), dtype=np.float64)
            longest = max((len(c) for c in contexts), default=1)
            per_pass = max(1, SCORE_TOKENS // max(1, longest))
            for start in range(0, len(contexts), per_pass):
                out[start:start + per_pass] = self._next_rows([list(c) for c in contexts[start:start + per_pass]])
            return out
        finally:
            self.net.train(was_training)

    @torch.no_grad()
    def _next_rows(self, contexts: list[list[int]]) -> np.ndarray:
        """next_logprobs of one pass: encode every source, decode every prefix, project each row's last step."""
        cut = [c.index(SEP) if SEP in c else len(c) for c in contexts]  # a context without <sep>: source side
        srcs = [c[:k] or [BOS] for c, k in zip(contexts, cut)]
        decs = [c[k:] or [SEP] for c, k in zip(contexts, cut)]
        src = torch.full((len(srcs), max(map(len, srcs))), PAD, dtype=torch.long)
        dec = torch.full((len(decs), max(map(len, decs))), PAD, dtype=torch.long)
        for row, (a, b) in enumerate(zip(srcs, decs)):
            src[row, :len(a)] = torch.as_tensor(a)
            dec[row, :len(b)] = torch.as_tensor(b)
        src, dec = src.to(self.device), dec.to(self.device)
        src_mask = torch.arange(src.size(1), device=self.device)[None, :] < torch.as_tensor(
            [len(a) for a in srcs], device=self.device)[:, None]
        net = self.net
        hidden = net.decode(dec, net.encode(src, src_mask), src_mask)  # (B, D, H)
        last = torch.as_tensor([len(b) - 1 for b in decs], device=self.device)
        logits = net.project(hidden[torch.arange(len(decs), device=self.device), last])  # (B, V)
        source_side = torch.as_tensor([k == len(c) for c, k in zip(contexts, cut)], device=self.device)
        logits = torch.where(source_side[:, None], torch.zeros_like(logits), logits)  # uniform, as in rows_forward
        return masked_log_softmax(logits).double().cpu().numpy()
