"""Adapter that gives any torch family (MLP, RNN, Transformer) the LanguageModel interface.

The nn.Module contract (see mlp.py): forward(idx (B, T), state, last_only=False) -> (raw logits (B, T, V),
state) (last_only: the last position only, for decoding),
`history` (tokens of context a prediction can see; None = unbounded), `stateful`, init_state,
detach_state. Everything protocol-related lives here, once for all families: masking <pad>/<s> out
of the softmax, sentence vs stream context, sliding windows for bounded-context models, and the
safetensors weight files."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..data.batching import pad_examples, stream_ids, target_counts, windows
from ..data.corpus import Encoded
from ..data.vocab import BOS, EOS, PAD, Vocab
from ..errors import ModelError
from ..protocol import Protocol
from .base import LanguageModel
from .mlp import MLPLM
from .rnn import RNNLM
from .transformer import TransformerLM

WEIGHTS = "model.safetensors"
SCORE_TOKENS = 16384  # tokens per scoring forward pass (memory bound, not a protocol choice)


def masked_log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """ln P over the predictable set: <pad> and <s> get -inf, computed in float32."""
    blocked = torch.zeros(logits.size(-1), dtype=torch.bool, device=logits.device)
    blocked[PAD] = True
    blocked[BOS] = True
    return F.log_softmax(logits.float().masked_fill(blocked, float("-inf")), dim=-1)


UNIGRAM_PRIOR = 0.5  # add-k of the unigram the output bias starts from: no id without training targets gets -inf


def unigram_logprobs(counts: np.ndarray, k: float = UNIGRAM_PRIOR) -> np.ndarray:
    """(V,) ln P(w) = ln((c(w) + k) / (N + k |P|)) over the predictable set P (all but <pad> and <s>, which
    get 0: they are masked out of every softmax, and a -inf parameter would poison the optimiser)."""
    counts = np.asarray(counts, dtype=np.float64)
    predictable = np.ones(len(counts), dtype=bool)
    predictable[[PAD, BOS]] = False
    smoothed = np.where(predictable, counts + k, 0.0)
    out = np.zeros(len(counts))
    out[predictable] = np.log(smoothed[predictable] / smoothed.sum())
    return out


class _BlockSpecials(torch.autograd.Function):
    """Set the <pad> and <s> logits to -inf in place, with an identity backward.

    Plain slice assignment would make autograd clone the whole (B, T, V) gradient once per
    assignment (CopySlices), ~10 % of a small LSTM's step on a 10k vocabulary. The clone is not
    needed: the softmax gives a -inf logit exactly zero mass, so the gradient that reaches those
    entries from the loss is already exactly zero."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor) -> torch.Tensor:
        ctx.mark_dirty(logits)
        logits[..., PAD] = float("-inf")
        logits[..., BOS] = float("-inf")
        return logits

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


def target_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """ln P(target) over the predictable set, (B, T, V) logits -> (B, T); <pad> targets give 0.

    <pad> and <s> logits are set to -inf in place (only B*T elements; the linear layer that made the
    logits does not need them for its backward pass), then torch's fused cross-entropy does the rest
    without materialising a (B, T, V) log-softmax."""
    logits = logits.float()
    if logits.requires_grad and logits.is_leaf:  # a leaf cannot be modified in place under autograd
        logits = logits.clone()
    logits = _BlockSpecials.apply(logits)
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=PAD,
                          reduction="none")
    return -nll.view(targets.shape)


def forward_target_logprobs(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, state=None):
    """(ln P(y | x) (B, T), new state): the one forward used by training and scoring.

    Modules whose output layer can score just the targets (the adaptive softmax) do so; the others
    give full logits and target_logprobs picks the targets."""
    if getattr(unwrap(net), "scores_targets", False):
        return net(x, state, targets=y)
    logits, state = net(x, state)
    return target_logprobs(logits, y), state


def unwrap(net: torch.nn.Module) -> torch.nn.Module:
    """The plain module behind DDP and torch.compile (so weight names never carry `module.` or `_orig_mod.`,
    and attributes such as `scores_targets` are the module's own)."""
    if isinstance(net, torch.nn.parallel.DistributedDataParallel):
        net = net.module
    return getattr(net, "_orig_mod", net)


class TorchLM(LanguageModel):
    """A LanguageModel backed by an nn.Module; subclasses name the module class."""

    module: ClassVar[type]  # the nn.Module class, e.g. MLPLM
    checkpoints: ClassVar[bool] = True  # trained by lmkit.train, which writes checkpoints as it goes

    def __init__(self, config, vocab: Vocab, protocol: Protocol, device: str = "cpu"):
        super().__init__(config, vocab, protocol)
        self.device = device
        self.net = self.module(config, len(vocab)).to(device)
        self.train_state: dict = {}
        self.placement = None  # lmkit.device.Placement, set by api.train / api.score
        self.stride: int | None = None  # sliding-window stride for bounded-context scoring (None: half)

    @property
    def history(self) -> int | None:
        return unwrap(self.net).history

    @property
    def max_len(self) -> int | None:
        """Longest input the module accepts (Transformer: block_size); None = any length."""
        return getattr(unwrap(self.net).config, "block_size", None)

    def num_parameters(self) -> int:
        return int(unwrap(self.net).num_parameters())

    def init_unigram(self, train: Encoded) -> bool:
        """Start the output bias at the add-k unigram of the training targets (data.batching.target_counts), so
        step 0 scores about the unigram perplexity. For a fresh start only (the training loop decides), when
        the config's unigram_init is on; False when it does not apply (off, or a module without the hook)."""
        hook = getattr(unwrap(self.net), "init_output_bias", None)
        if hook is None or not getattr(self.config, "unigram_init", False):
            return False
        logp = unigram_logprobs(target_counts(train, len(self.vocab)))
        hook(torch.as_tensor(logp, dtype=torch.float32, device=self.device))
        return True

    # -- scoring ------------------------------------------------------------------------------------
    @torch.no_grad()
    def _logprobs_of(self, x: np.ndarray, y: np.ndarray, state=None):
        """ln P(y | x) for (B, T) arrays; returns ((B, T) float64 numpy, new state)."""
        net = self.net
        xt = torch.as_tensor(x, device=self.device)
        yt = torch.as_tensor(y, device=self.device)
        with self.placement.autocast() if self.placement is not None else contextlib.nullcontext():
            lp, state = forward_target_logprobs(net, xt, yt, state)
        return lp.double().cpu().numpy(), state  # one device->host copy per scoring pass

    def _score_stream_stateless(self, x: np.ndarray, y: np.ndarray, rows: int | None = None) -> np.ndarray:
        """Bounded-context scoring of one long input with sliding windows (batched, at most `rows` per pass)."""
        max_len, hist = self.max_len, self.history
        if max_len is not None:  # Transformer: windows of block_size moving by `stride`
            size = max_len
            stride = self.stride or max(1, size // 2)
            overlap = size - min(stride, size)
        else:  # MLP: any length works; chunks only bound memory, overlap gives the window
            size = max(SCORE_TOKENS, 2 * (hist or 1))
            overlap = hist or 0
        spans = windows(len(x), size, overlap)
        out = np.empty(len(x), dtype=np.float64)
        per_batch = max(1, SCORE_TOKENS // size if rows is None else min(rows, SCORE_TOKENS // size))
        for i in range(0, len(spans), per_batch):
            group = spans[i:i + per_batch]
            width = min(size, len(x))
            xb = np.full((len(group), width), PAD, dtype=np.int64)
            yb = np.full((len(group), width), PAD, dtype=np.int64)
            for r, (start, _) in enumerate(group):
                seg = slice(start, start + width)
                xb[r, :len(x[seg])] = x[seg]
                yb[r, :len(y[seg])] = y[seg]
            lp, _ = self._logprobs_of(xb, yb)
            for r, (start, first) in enumerate(group):
                end = min(start + width, len(x))
                out[first:end] = lp[r, first - start:end - start]
        return out

    def _score_stream(self, sequences: list[np.ndarray], rows: int | None = None) -> np.ndarray:
        stream = stream_ids(sequences)
        x, y = stream[:-1], stream[1:]
        if unwrap(self.net).stateful:
            out = np.empty(len(x), dtype=np.float64)
            state = unwrap(self.net).init_state(1, self.device)
            step = 2048
            for i in range(0, len(x), step):
                lp, state = self._logprobs_of(x[None, i:i + step], y[None, i:i + step], state)
                out[i:i + step] = lp[0]
            return out
        return self._score_stream_stateless(x, y, rows)

    def _score_sentences(self, sequences: list[np.ndarray], rows: int | None = None) -> list[np.ndarray]:
        out: list[np.ndarray] = [np.empty(0)] * len(sequences)
        fulls = [np.concatenate(([BOS], np.asarray(s, dtype=np.int64), [EOS])) for s in sequences]
        max_len = self.max_len
        short = [i for i, f in enumerate(fulls) if max_len is None or len(f) - 1 <= max_len]
        for i in (i for i, f in enumerate(fulls) if max_len is not None and len(f) - 1 > max_len):
            out[i] = self._score_stream_stateless(fulls[i][:-1], fulls[i][1:], rows)
        short.sort(key=lambda i: len(fulls[i]))
        start = 0
        while start < len(short):
            end = start
            while (end < len(short) and (end - start + 1) * (len(fulls[short[end]]) - 1) <= SCORE_TOKENS
                   and (rows is None or end - start < rows)):
                end += 1
            end = max(end, start + 1)
            group = short[start:end]
            batch = pad_examples([fulls[i] for i in group])
            state = unwrap(self.net).init_state(len(group), self.device)
            lp, _ = self._logprobs_of(batch.x, batch.y, state)
            for r, i in enumerate(group):
                out[i] = lp[r, :len(fulls[i]) - 1]
            start = end
        return out

    def sequence_logprobs(self, sequences: list[np.ndarray], batch_size: int | None = None) -> list[np.ndarray]:
        """One batched pass: padded sentence batches, or the whole stream (state carried / windows).

        Passes are bounded by SCORE_TOKENS; `batch_size` also caps the rows per pass (sentences or stream
        windows; a carried-state stream is one row anyway), so `lmkit check` can show that grouping never
        changes a score. None keeps the token bound alone."""
        was_training = self.net.training
        self.net.eval()
        try:
            if self.protocol.context == "stream":
                flat = self._score_stream(sequences, batch_size)
                bounds = np.cumsum([len(s) + 1 for s in sequences])[:-1]
                return list(np.split(flat, bounds))
            return self._score_sentences(sequences, batch_size)
        finally:
            self.net.train(was_training)

    @torch.no_grad()
    def next_logprobs(self, contexts: Sequence[Sequence[int]]) -> np.ndarray:
        """(B, V) rows for arbitrary contexts (generation and the contract tests).

        Contexts of equal length share one forward pass (generation asks for many at once), in
        groups of at most SCORE_TOKENS input tokens. A stateless module only sees its last `history`
        ids (Transformer: block_size, MLP: window), so longer contexts are cut to that: the result is
        the same and equal-length groups get larger."""
        was_training = self.net.training
        self.net.eval()
        try:
            keep = self.max_len
            if not unwrap(self.net).stateful and self.history is not None:
                keep = min(keep or self.history, self.history)
            ids = [list(ctx)[-keep:] if keep else list(ctx) for ctx in contexts]
            by_len: dict[int, list[int]] = {}
            for i, ctx in enumerate(ids):
                by_len.setdefault(len(ctx), []).append(i)
            out = torch.empty(len(ids), len(self.vocab), dtype=torch.float64)
            for length, members in by_len.items():
                per_pass = max(1, SCORE_TOKENS // max(1, length))
                for start in range(0, len(members), per_pass):
                    rows = members[start:start + per_pass]
                    x = torch.as_tensor([ids[i] for i in rows], dtype=torch.long, device=self.device)  # (b, T)
                    state = unwrap(self.net).init_state(len(rows), self.device)
                    logits, _ = self.net(x, state, last_only=True)  # (b, 1, V)
                    out[rows] = masked_log_softmax(logits[:, -1]).double().cpu()
            return out.numpy()
        finally:
            self.net.train(was_training)

    # -- files --------------------------------------------------------------------------------------
    def save(self, run_dir: Path) -> None:
        save_weights(unwrap(self.net), Path(run_dir) / WEIGHTS)

    @classmethod
    def load(cls, run_dir: Path, config, vocab: Vocab, protocol: Protocol, device: str = "cpu"):
        from ..device import place

        placement = place(device, "fp32")
        device = placement.device
        try:
            model = cls(config, vocab, protocol, device="cpu")
        except (ValueError, TypeError) as exc:
            raise ModelError(f"{run_dir}: run.json holds an invalid configuration ({exc})") from None
        load_weights(unwrap(model.net), Path(run_dir) / WEIGHTS)
        model.net.to(device)
        model.device = device
        model.placement = placement
        model.net.eval()
        return model

    def fit_info(self) -> dict:
        return dict(self.train_state)


WEIGHTS_FORMAT = "lmkit-torch"
WEIGHTS_VERSION = 1


def save_weights(net: torch.nn.Module, path: Path) -> None:
    """safetensors (no pickle); tied weights are stored once. Written to a temp name, then renamed."""
    import os

    from safetensors.torch import save_model

    from ..atomic import DiskFullError, clean_stale_temps, is_disk_full, publish_mode, temp_path

    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path.parent, path.name)
    tmp = temp_path(path)
    try:
        save_model(net, str(tmp), metadata={"format": WEIGHTS_FORMAT, "version": str(WEIGHTS_VERSION),
                                            "class": type(net).__name__})
        publish_mode(tmp)  # safetensors recreates the file, so its mode is set after writing
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise DiskFullError(path) from None
        raise


def load_weights(net: torch.nn.Module, path: Path) -> None:
    """Load a safetensors file into `net`; refused (one line) when damaged, foreign, newer or mismatched."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    from ..artifacts import check_version, read_safetensors_header

    if not path.exists():
        raise ModelError(f"{path}: weights file is missing")
    meta = read_safetensors_header(path).get("__metadata__") or {}
    if "format" in meta and meta["format"] != WEIGHTS_FORMAT:
        raise ModelError(f"{path}: not an lmkit weights file (format {meta['format']!r})")
    if "version" in meta:
        version = meta["version"]
        check_version(path, "weights", int(version) if str(version).isdigit() else version, WEIGHTS_VERSION)
    try:
        missing, unexpected = load_model(net, str(path), strict=False, device="cpu")
    except RuntimeError as exc:  # tensors of the wrong shape: another configuration or vocabulary
        first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        if "size mismatch" in str(exc) or "shape" in str(exc).lower():
            raise ModelError(f"{path}: weights do not match the model in run.json (tensor shapes differ)") from None
        raise ModelError(f"{path}: damaged or truncated weights file ({first})") from None
    except (SafetensorError, OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise ModelError(f"{path}: damaged or truncated weights file ({first})") from None
    # tensors a module gained after older files were written (the windowed families' output bias): they keep
    # the zeros the module was built with, which is what the older model computed
    missing = [name for name in missing if name not in getattr(net, "zero_if_missing", ())]
    if missing or unexpected:
        raise ModelError(f"{path}: weights do not match the model in run.json "
                         f"(missing {len(missing)}, unexpected {len(unexpected)} tensors)")


class MLPModel(TorchLM):
    """Bengio et al. (2003) feed-forward LM; see mlp.py."""

    kind = "mlp"
    module = MLPLM
    Config = MLPLM.Config


class RNNModel(TorchLM):
    """LSTM (default), GRU or tanh RNN; see rnn.py."""

    kind = "lstm"
    module = RNNLM
    Config = RNNLM.Config

    @property
    def label(self) -> str:
        cell = getattr(self.config, "cell", "lstm")
        return "lstm" if cell == "lstm" else f"lstm:{cell}"


class TransformerModel(TorchLM):
    """GPT-style decoder-only Transformer; see transformer.py."""

    kind = "transformer"
    module = TransformerLM
    Config = TransformerLM.Config
