"""How long a run is and when it validates, and the batches of each epoch."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..data.batching import (Batch, prefix_examples, rank_stream_batches, sentence_batches, sentence_examples,
                             stream_batches, stream_ids)
from ..data.corpus import Encoded
from ..models.torchlm import unwrap
from .config import TrainConfig
from .state import LoopState


def epoch_batches(model, train: Encoded, cfg: TrainConfig, epoch: int, ranks=None) -> list[Batch]:
    """The batches of one epoch; a function of (seed, epoch) only, so a resume rebuilds them exactly.

    Data-parallel, stream context, from a token file: each rank builds (and reads) only its own rows."""
    rng = np.random.default_rng([cfg.seed, epoch])
    net = unwrap(model.net)
    if model.protocol.context == "stream":
        seq_len = cfg.seq_len if model.max_len is None else min(cfg.seq_len, model.max_len)
        order = None if net.stateful else rng
        if ranks is not None and ranks.distributed and hasattr(train.sequences, "stream_slice"):
            return rank_stream_batches(train.sequences, cfg.batch_size, seq_len, ranks.rank, ranks.world_size,
                                       order)
        return stream_batches(stream_ids(train.sequences), cfg.batch_size, seq_len, order)
    if train.score_from is not None:  # source <sep> target: the loss is on the target side only
        examples, ignore = prefix_examples(train.sequences, train.score_from, model.max_len)
        return sentence_batches(examples, cfg.batch_size, rng, ignore)
    return sentence_batches(sentence_examples(train.sequences, model.max_len), cfg.batch_size, rng)


@dataclass
class Plan:
    """The budgets of a run in steps, tokens and seconds (whichever ends first), and when it validates."""

    steps_per_epoch: int
    total_steps: int | None  # from --epochs and --max-tokens; None: a time budget alone
    max_tokens: int | None
    time_budget: float | None
    eval_every: int | None  # steps between validations
    eval_seconds: float | None  # training seconds between validations (a time budget alone)
    # training seconds at which the time budget stops training: the budget at first, then what is left of the
    # command's budget after the final measurement's reserve (lmkit.training.budget), the same on every rank
    time_limit: float | None = None

    @classmethod
    def build(cls, cfg: TrainConfig, steps_per_epoch: int, tokens_per_epoch: int) -> Plan:
        total_steps = None
        if cfg.epochs is not None:
            total_steps = math.ceil(cfg.epochs * steps_per_epoch)
        if cfg.max_tokens is not None:
            by_tokens = math.ceil(cfg.max_tokens / max(1, tokens_per_epoch) * steps_per_epoch)
            total_steps = by_tokens if total_steps is None else min(total_steps, by_tokens)
        eval_every = cfg.eval_every or (max(1, total_steps // 10) if total_steps else None)
        # time budgets alone: ~10 validations per run, but never more often than every 30 s of training
        eval_seconds = max(cfg.time_budget / 10, min(30.0, cfg.time_budget / 2)) if (
            cfg.time_budget and not eval_every) else None
        return cls(steps_per_epoch, total_steps, cfg.max_tokens, cfg.time_budget, eval_every, eval_seconds,
                   cfg.time_budget)

    def exhausted(self, s: LoopState) -> str | None:
        """The budget `s` has used up ('steps', 'tokens', 'time'), or None."""
        if self.total_steps is not None and s.step >= self.total_steps:
            return "steps"
        if self.max_tokens is not None and s.tokens_seen >= self.max_tokens:
            return "tokens"
        if self.time_limit is not None and s.step > 0 and s.train_seconds >= self.time_limit:
            return "time"  # (at least one step: a budget too short for the final measurement still trains)
        return None

    def fraction_done(self, s: LoopState) -> float:
        """How far the run is through its step or time budget (drives the learning-rate decay)."""
        fr = 0.0
        if self.total_steps:
            fr = max(fr, s.step / self.total_steps)
        if self.time_limit:
            fr = max(fr, s.train_seconds / self.time_limit)
        return fr

    def validation_due(self, s: LoopState) -> bool:
        return bool((self.eval_every and s.step % self.eval_every == 0) or (
            self.eval_seconds and s.train_seconds - s.last_eval_seconds >= self.eval_seconds))
