"""The one training loop for every torch family (MLP, RNN, Transformer).

AdamW or SGD, warmup then cosine/linear decay, gradient clipping, budgets (epochs, tokens, wall
time of the whole command with the final measurement reserved (lmkit.training.budget); whichever ends
first), exact validation perplexity through the one scoring path, early
stopping with best-checkpoint keeping, checkpoints that resume bit-for-bit for step-based budgets,
SIGINT/SIGTERM -> checkpoint and a clean exit. Nothing here knows which family it trains.

The loop is a `Trainer` over one `LoopState` (lmkit.training.state), in named parts: make_plan,
restore, step, validate, checkpoint; `run` drives them. Its building blocks live in lmkit.training
(config, optimizer, plan and batches, budget, state schema, checkpoint files, signals, progress); this
module also re-exports the names other code imports from it.

Under torchrun the same loop runs in every process: `ranks` (lmkit.distributed) shards each global batch,
wraps the module in DDP, and keeps the ranks in step; with one process its calls do nothing."""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from .data.batching import Batch
from .data.corpus import Encoded
from .distributed import SINGLE, Ranks, check_global_batch, rank_seed
from .errors import ModelError
from .evaluate.perplexity import score_encoded
from .logs import NOTHING, Log, Progress
from .models.torchlm import WEIGHTS, forward_target_logprobs, load_weights, save_weights, unwrap
from .runs import append_metrics
from .training.checkpoint import (CHECKPOINT_DIR, check_checkpoint, has_checkpoint, load_checkpoint, read_metrics,
                                  save_checkpoint)
from .training.config import OPTIMIZERS, SCHEDULES, TrainConfig, parse_duration, resolve_train_config
from .training.optim import lr_factor, make_optimizer
from .training.plan import Plan, epoch_batches
from .training.budget import (LONG_RUN_SECONDS, PROBE_TOKENS, Clock, Reserve, long_run_warning, run_estimate,
                              too_short, training_limit, validation_interval)
from .training.progress import Ticker, training_reporter
from .training.signals import Interrupted, StopSignals
from .training.state import LoopState

__all__ = ["CHECKPOINT_DIR", "OPTIMIZERS", "SCHEDULES", "Interrupted", "LoopState", "TrainConfig", "Trainer",
           "check_checkpoint", "fit", "has_checkpoint", "load_checkpoint", "lr_factor", "parse_duration",
           "resolve_train_config"]



def fit(model, train: Encoded, valid: Encoded | None, cfg: TrainConfig, *, log: Log = print,
        run_dir: Path | None = None, progress: bool = True, resume: bool = False,
        on_eval=None, ranks: Ranks | None = None, clock: Clock | None = None, scored: dict | None = None) -> dict:
    """Train `model` (a TorchLM) in place; returns facts for run.json. Writes checkpoints to run_dir.

    `ranks` (lmkit.distributed.Ranks, from api's session) makes this one process of a data-parallel run:
    every rank reads run_dir, rank 0 alone writes it. `clock` is the command's (--time-budget bounds it
    all; default: it starts now). `scored` (if given) receives {"valid": (Score, seconds)} when this process
    scored the weights the run ends with, so the final measurement need not score valid again."""
    trainer = Trainer(model, train, valid, cfg, log=log, run_dir=run_dir, on_eval=on_eval, ranks=ranks, clock=clock)
    info = trainer.run(resume=resume, progress=progress)
    if scored is not None:
        scored.update(trainer.final_scored())
    return info


class Trainer:
    """One training run of a TorchLM: make_plan, restore, then step / validate / checkpoint until a budget,
    early stopping, divergence or a signal ends it. All progress is in `state` (a LoopState)."""

    def __init__(self, model, train: Encoded, valid: Encoded | None, cfg: TrainConfig, *, log: Log,
                 run_dir: Path | None, on_eval=None, ranks: Ranks | None = None, clock: Clock | None = None):
        self.model, self.train_data, self.valid, self.log, self.on_eval = model, train, valid, log, on_eval
        self.ranks = ranks or SINGLE
        self.cfg = resolve_train_config(cfg, getattr(unwrap(model.net), "train_defaults", {}))
        check_global_batch(self.cfg.batch_size, self.ranks.world_size)
        self.run_dir = run_dir
        self.writes = run_dir is not None and self.ranks.is_main  # rank 0 alone writes the run folder
        self.device, self.net = model.device, model.net
        is_cuda = self.device.startswith("cuda")
        precision = model.placement.precision if model.placement is not None else "fp32"
        self.optimizer = make_optimizer(self.net, self.cfg, is_cuda)
        self.step_net = self.ranks.wrap(self.net)  # the training forward (DDP under torchrun); validation uses `net`
        self.scaler = torch.amp.GradScaler("cuda") if (is_cuda and precision == "fp16") else None
        self.stateful_stream = unwrap(self.net).stateful and model.protocol.context == "stream"
        self.plan = self.make_plan()
        self.state = LoopState()
        self.rnn_state = None  # a stateful stream's (detached) state, carried from batch to batch
        self.metrics_rows: list[dict] = []  # the validation curve (metrics.jsonl)
        self.signals = StopSignals()
        self.progress: Progress = NOTHING
        self.ticker = Ticker()
        self.loss_sum: torch.Tensor | None = None  # training loss since the last report, on the device
        self.loss_count = 0
        self.record_sum: torch.Tensor | None = None  # training loss since the last metrics record, on the device
        self.record_count = 0
        self.last_loss: float | None = None
        self.clock = clock or Clock(time.monotonic(), valid.num_tokens if valid is not None else 0)
        self.reserve: Reserve | None = None  # the final measurement's cost (estimate() sets it)
        self.started_at: tuple[int, float] = (0, 0.0)  # (step, train_seconds) when this process started training
        self.warned = False
        self.reloaded = False  # the best weights were reloaded at the end
        self.scored: dict = {}  # "best" / "last": (Score, seconds, step) of validations this process ran

    # -- the parts ------------------------------------------------------------------------------------
    def make_plan(self) -> Plan:
        """Budgets in steps and when to validate, counted on epoch 0's batches (kept: trained on first)."""
        self.first_epoch: list[Batch] | None = epoch_batches(self.model, self.train_data, self.cfg, 0, self.ranks)
        return Plan.build(self.cfg, len(self.first_epoch), self.train_data.num_tokens)

    def restore(self, resume: bool) -> None:
        """Continue from the run folder's checkpoint (state, weights, optimizer, RNGs, gradient scaler, the
        carried recurrent state, the validation curve so far), or start afresh from the seed."""
        if resume and self.run_dir is not None and not has_checkpoint(self.run_dir):
            # killed before its first checkpoint: the same seed replays the same run from the start
            self.log("no checkpoint yet (the run stopped before its first evaluation); starting from the beginning")
            resume = False
        if not (resume and self.run_dir is not None):
            torch.manual_seed(rank_seed(self.cfg.seed, self.ranks.rank))
            # a fresh start only: a resumed run keeps its trained bias, a loaded run its saved one
            self.model.init_unigram(self.train_data)
            return
        self.state, tensors = load_checkpoint(self.run_dir, self.net, self.device)
        try:
            self.optimizer.load_state_dict(tensors["optimizer"])
            self.ranks.restore_rng(tensors, self.cfg.seed, self.state.step)
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise ModelError(f"{self.run_dir / CHECKPOINT_DIR / 'trainer.pt'}: checkpoint does not match this "
                             f"model ({exc.__class__.__name__})") from None
        if self.scaler is not None and tensors.get("scaler"):
            self.scaler.load_state_dict(tensors["scaler"])
        if "rnn_state" in tensors and self.stateful_stream:  # saved for the global batch: this rank's rows
            rows = self.ranks.take_rows(tuple(tensors["rnn_state"]), self.cfg.batch_size)
            parts = tuple(t.to(self.device) for t in rows)
            self.rnn_state = parts if len(parts) > 1 else parts[0]
        self.metrics_rows = read_metrics(self.run_dir, self.state.step)
        self.log(f"resuming at step {self.state.step} (epoch {self.state.epoch + 1}, "
                 f"{self.state.tokens_seen:,} tokens seen)")

    def step(self, b: Batch) -> bool:
        """One optimizer step on this rank's rows of global batch `b`, counted in the state. True when the
        ranks agreed to stop (a signal reached one of them)."""
        t0 = time.perf_counter()
        s, cfg = self.state, self.cfg
        if b.global_targets is None:  # every rank holds the global plan and takes its rows
            targets = b.num_targets
            bx, by = self.ranks.shard(b.x, b.y, cfg.batch_size)  # this rank's rows (all in one process)
        else:  # built for this rank alone (rank_stream_batches)
            targets, bx, by = b.global_targets, b.x, b.y
        x, y = _to_device(bx, self.device), _to_device(by, self.device)
        in_state = self._input_state(bx.shape[0])
        for g in self.optimizer.param_groups:
            g["lr"] = cfg.lr * lr_factor(s.step, self.plan.fraction_done(s), cfg)
        placement = self.model.placement
        with placement.autocast() if placement is not None else contextlib.nullcontext():
            # (B, T) ln P over the predictable set; padded positions give 0 and never count
            logprobs, out_state = forward_target_logprobs(self.step_net, x, y, in_state)
        # this rank's share of the global mean loss (all of it in one process); DDP sums the gradients
        loss = -logprobs.sum() / targets
        self._update(loss)
        if self.stateful_stream:
            self.rnn_state = unwrap(self.net).detach_state(out_state)
        self.loss_sum += loss.detach()  # stays on the device: no host sync per step
        self.loss_count += 1
        self.record_sum += loss.detach()
        self.record_count += 1
        s.step += 1
        s.batch += 1
        s.tokens_seen += targets
        stop, seconds = self.ranks.agree(self.signals.requested, time.perf_counter() - t0)
        s.train_seconds += seconds
        return stop

    def validate(self) -> bool:
        """Exact valid perplexity; keeps the best weights, extends the curve and checkpoints. False when
        training must stop (a diverged perplexity, patience run out).

        Data-parallel: rank 0 scores alone (the one scoring path, exact in every context) and every rank
        takes its number, so all ranks keep the same state and stop at the same step."""
        s = self.state
        row = {"step": s.step, "epoch": s.step / max(1, self.plan.steps_per_epoch), "tokens_seen": s.tokens_seen,
               "seconds": s.train_seconds, "lr": self.optimizer.param_groups[0]["lr"],
               "train_loss": self._record_loss()}
        carried = self.gather()  # collectives first, on every rank
        if self.valid is not None:
            self.progress.phase("validating", label=self.model.label)
            ppl = self.ranks.from_main(self._score_valid() if self.ranks.is_main else None)
            if not math.isfinite(ppl):  # diverged weights: never kept, never written as the best
                s.stopped = "diverged"
                return False
            row["valid_ppl"] = ppl
            if s.count_validation(ppl):
                self._save_best()
                self.scored["best"] = self.scored.get("last")
            self._set_limit()
        else:
            self._save_best()
        self.metrics_rows.append(row)
        self.progress.event("validation", **row, loss=row["train_loss"], steps=self.plan.total_steps,
                            tokens_per_second=s.tokens_seen / max(s.train_seconds, 1e-9), eta_seconds=self._eta(),
                            budget_seconds=self.cfg.time_budget)
        self.progress.phase("training", **self._bar())
        s.last_eval_seconds = s.train_seconds
        if self.writes:
            append_metrics(self.run_dir, self.metrics_rows)
        self.checkpoint(carried)
        if self.on_eval is not None:
            self.on_eval(row)
        if self.cfg.patience is not None and s.evals_since_best >= self.cfg.patience:
            s.stopped = "early-stopping"
            return False
        return True

    def gather(self) -> tuple:
        """(the recurrent state of the whole global batch, every rank's RNG) for a checkpoint; collectives,
        so every rank calls it. (None, None) without a run folder."""
        if self.run_dir is None:
            return None, None
        return self.ranks.gather_rows(self.rnn_state), self.ranks.gather_rng()

    def checkpoint(self, carried: tuple) -> None:
        """Write the checkpoint of the current state (rank 0); `carried` is what gather() returned."""
        if self.writes:
            save_checkpoint(self.run_dir, self.net, self.optimizer, self.scaler, self.state, *carried)

    # -- the loop -------------------------------------------------------------------------------------
    def run(self, *, resume: bool = False, progress: bool = True) -> dict:
        """Train until the run ends; returns fit_info for run.json. A stop signal checkpoints and raises
        Interrupted; the final weights are the best validated ones."""
        self.restore(resume)
        if self.ranks.distributed:
            cfg, ranks = self.cfg, self.ranks
            self.log(f"data parallel: {ranks.describe()}, global batch {cfg.batch_size} = {ranks.world_size} x "
                     f"{cfg.batch_size // ranks.world_size} rows; budgets count the tokens of all processes")
        self.progress, owned = training_reporter(progress and self.ranks.is_main)
        with self.signals:
            self.loss_sum = torch.zeros((), device=self.device)
            self.record_sum = torch.zeros((), device=self.device)
            self.started_at = (self.state.step, self.state.train_seconds)
            try:
                self.estimate()
                self.progress.phase("training", **self._bar())
                self.net.train()
                self._train()
            except KeyboardInterrupt:
                raise self._interrupted() from None
            finally:
                if owned:
                    self.progress.close()
        return self._finish()

    # -- the budget -----------------------------------------------------------------------------------
    def estimate(self) -> None:
        """The final measurement's cost from a short scoring probe (rank 0's, on every rank); under a time budget,
        the training limit it leaves, and a warning when the budget cannot hold it."""
        rate = self.ranks.from_main(self._probe() if self.ranks.is_main else None)
        self.reserve = Reserve(rate, self.clock.valid_tokens, self.clock.test_tokens)
        budget = self.cfg.time_budget
        if budget is None:
            return
        if too_short(budget, self.clock.elapsed(), self.reserve):
            self.reserve.checks = False  # the quick checks give way first
            if self.ranks.is_main and not too_short(budget, self.clock.elapsed(), self.reserve):
                self.log("note: the quick checks are skipped to fit --time-budget (`lmkit check RUN` runs them)")
        if self.ranks.is_main and too_short(budget, self.clock.elapsed(), self.reserve):
            need = self.clock.elapsed() + self.reserve.final()
            self.log(f"warning: --time-budget {budget:g}s is too short for {self.model.label} here: reading the data "
                     f"and the final scoring alone take about {need:.0f} s; training stops after its first step "
                     f"(give --time-budget {need * 1.5 + 10:.0f}s or more, or a smaller model)")
        self._set_limit(first=True)

    def _probe(self) -> float:
        """Seconds per scored token: the start of valid (else of train), PROBE_TOKENS tokens, scored once."""
        text = self.valid if self.valid is not None and self.valid.sequences else self.train_data
        seqs, tokens = [], 0
        for seq in text.sequences:
            seqs.append(np.asarray(seq)[:PROBE_TOKENS - tokens])
            tokens += len(seqs[-1]) + 1
            if tokens >= PROBE_TOKENS:
                break
        start = time.perf_counter()
        self.model.sequence_logprobs(seqs)
        return (time.perf_counter() - start) / max(1, tokens)

    def _set_limit(self, first: bool = False) -> None:
        """Under a time budget: the training seconds left after the final reserve, from rank 0's clock and
        speed; the validation interval (a time budget alone) set at the start, widened if validations are slow."""
        if self.cfg.time_budget is None or self.reserve is None:
            return
        s, main = self.state, self.ranks.is_main
        self.reserve.rate = self.ranks.from_main(self.reserve.rate)
        limit = training_limit(self.cfg.time_budget, self.clock.elapsed(), s.train_seconds, self.reserve)
        self.plan.time_limit = self.ranks.from_main(limit if main else None)
        if self.plan.eval_seconds is not None:
            previous = None if first else self.plan.eval_seconds
            self.plan.eval_seconds = validation_interval(self.plan.time_limit, s.train_seconds, self.reserve, previous)

    def _validation_fits(self) -> bool:
        """Under a time budget, a validation runs only when training continues after it (the last one is reserved)."""
        if self.cfg.time_budget is None or self.reserve is None or self.plan.time_limit is None:
            return True
        return self.plan.time_limit - self.state.train_seconds > self.reserve.validation()

    def _score_valid(self) -> float:
        """Rank 0: the valid perplexity, timed; its speed replaces the probe's estimate."""
        start = time.perf_counter()
        score = score_encoded(self.model, self.valid, keep=False)
        seconds = time.perf_counter() - start
        self.scored["last"] = (score, seconds, self.state.step)
        if self.reserve is not None and score.tokens:
            self.reserve.rate = seconds / score.tokens
        return score.perplexity

    def final_scored(self) -> dict:
        """{"valid": (Score, seconds)} of the weights the run ends with, when this process scored them: the best
        validation's when its weights were reloaded, else the last validation's if it was at the last step."""
        got = self.scored.get("best" if self.reloaded else "last")
        if got is None or (not self.reloaded and got[2] != self.state.step):
            return {}
        return {"valid": got[:2]}

    # -- what it shows ----------------------------------------------------------------------------------
    def _bar(self) -> dict:
        """The training phase's bar: the command's time against --time-budget, else the steps."""
        return {"total": self.cfg.time_budget or self.plan.total_steps, "label": self.model.label}

    def _refresh(self) -> None:
        """The numbers on the bar (rank 0; one host sync of the loss, at most every TICK seconds)."""
        s = self.state
        loss = float(self.record_sum) / self.record_count * self.ranks.world_size if self.record_count else None
        rows = self.metrics_rows
        self.progress.update(self.clock.elapsed() if self.cfg.time_budget else s.step, step=s.step,
                             steps=self.plan.total_steps, tokens_per_second=s.tokens_seen / max(s.train_seconds, 1e-9),
                             loss=loss, valid_ppl=rows[-1].get("valid_ppl") if rows else None,
                             eta_seconds=self._eta(), budget_seconds=self.cfg.time_budget)

    def _eta(self) -> float | None:
        """Seconds until the command ends: what is left of --time-budget, else estimated from the steps so far."""
        if self.cfg.time_budget is not None:
            return max(0.0, self.cfg.time_budget - self.clock.elapsed())
        s, plan = self.state, self.plan
        steps = s.step - self.started_at[0]
        if not plan.total_steps or self.reserve is None or steps <= 0:
            return None
        left = max(0, plan.total_steps - s.step)
        validations = left // plan.eval_every if plan.eval_every else 0
        return run_estimate(left, (s.train_seconds - self.started_at[1]) / steps, validations, self.reserve)

    def _maybe_warn(self) -> None:
        """Once, after the first steps: a run without --time-budget that will take longer than LONG_RUN_SECONDS
        says so, with the estimate and how to bound it."""
        s = self.state
        steps, seconds = s.step - self.started_at[0], s.train_seconds - self.started_at[1]
        if steps < 3 and seconds < 5:
            return
        self.warned = True
        eta = self._eta()
        if self.cfg.time_budget is None and self.ranks.is_main and eta is not None:
            total = self.clock.elapsed() + eta
            if total > LONG_RUN_SECONDS:
                self.log(long_run_warning(total, self.plan.total_steps, seconds / steps, self.reserve))

    def _train(self) -> None:
        """Epochs of steps until a budget ends them, then a last validation if the last step had none."""
        s = self.state
        while self._budget_left():
            batches = self._epoch()
            while s.batch < len(batches) and self._budget_left():
                if not self._advance(batches[s.batch]):
                    break
            if s.stopped in ("early-stopping", "diverged"):
                break
            if s.batch >= len(batches):
                s.epoch += 1
                s.batch = 0
        if s.stopped != "diverged" and (not self.metrics_rows or self.metrics_rows[-1]["step"] != s.step):
            self.validate()

    def _epoch(self) -> list[Batch]:
        """The current epoch's batches; a stateful stream starts each epoch from a zero state."""
        s = self.state
        # a stateful stream model's epochs are all the same batches in the same order: build them once
        reuse = self.first_epoch is not None and (s.epoch == 0 or self.stateful_stream)
        batches = self.first_epoch if reuse else epoch_batches(self.model, self.train_data, self.cfg, s.epoch,
                                                               self.ranks)
        if not self.stateful_stream:
            self.first_epoch = None  # later epochs are shuffled afresh; let this one go
        if s.batch == 0 and self.stateful_stream:
            self.rnn_state = unwrap(self.net).init_state(self.cfg.batch_size // self.ranks.world_size, self.device)
        return batches

    def _advance(self, b: Batch) -> bool:
        """One step and what follows it: the loss report, a validation when due, the stop on a signal (raised
        as KeyboardInterrupt at this step boundary). False when training must stop."""
        stop = self.step(b)
        if not self._report_loss():
            return False
        if not self.warned:
            self._maybe_warn()
        if self.progress is not NOTHING and self.ticker.due():
            self._refresh()
        if self.plan.validation_due(self.state) and self._validation_fits() and not self.validate():
            return False
        if stop or (self.signals.requested and not self.ranks.distributed):  # one process: also during validation
            self.signals.agreed = True
            raise KeyboardInterrupt
        return True

    def _budget_left(self) -> bool:
        reason = self.plan.exhausted(self.state)
        if reason is not None:
            self.state.stopped = reason
        return reason is None

    def _input_state(self, rows: int):
        """The recurrent state a training forward starts from: carried along a stream, else zeros (RNN) or None."""
        net = unwrap(self.net)
        if self.stateful_stream:
            return self.rnn_state
        return net.init_state(rows, self.device) if net.stateful else None

    def _update(self, loss: torch.Tensor) -> None:
        """Backward, gradient clipping and the optimizer step (through the fp16 gradient scaler if any)."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        if self.cfg.clip:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()

    def _report_loss(self) -> bool:
        """At the first step and every 20th: the mean training loss since the last report, on the progress bar
        (the only host sync of the loss). False when it is NaN or infinite (every rank sees the same sum)."""
        s = self.state
        if s.step % 20 != 0 and s.step != 1:
            return True
        self.last_loss = float(self.ranks.sum_(self.loss_sum)) / self.loss_count
        self.loss_sum.zero_()
        self.loss_count = 0
        if not math.isfinite(self.last_loss):
            s.stopped = "diverged"
            return False
        return True

    def _record_loss(self) -> float | None:
        """The mean training loss over the steps since the last metrics record (or since this process started);
        None without any. Every rank calls it (the sum is over the ranks)."""
        if not self.record_count:
            return None
        loss = float(self.ranks.sum_(self.record_sum)) / self.record_count
        self.record_sum.zero_()
        self.record_count = 0
        return loss if math.isfinite(loss) else None

    def _save_best(self) -> None:
        if self.writes:
            save_weights(unwrap(self.net), self.run_dir / WEIGHTS)

    def _interrupted(self) -> Interrupted:
        """After a stop signal: checkpoint the state at this step boundary; the error that ends the run."""
        self.state.stopped = "interrupted"
        self.model.train_state = self.fit_info()  # for run.json
        # data-parallel: only a stop all ranks agreed on can gather their state (a second Ctrl-C cannot)
        written = self.run_dir is not None and (self.signals.agreed or not self.ranks.distributed)
        if written:
            self.checkpoint(self.gather())
        return self.signals.error(self.state.step, written, self.run_dir)

    def _finish(self) -> dict:
        """A diverged run reports it; rank 0 reloads the best weights for the final scores."""
        s = self.state
        if s.stopped == "diverged":
            _report_divergence(s, self.run_dir, self.log if self.ranks.is_main else None)
        self.reloaded = self.writes and (self.run_dir / WEIGHTS).exists()
        if self.reloaded:  # rank 0 scores the final numbers; the others are done
            load_weights(unwrap(self.net), self.run_dir / WEIGHTS)  # final numbers come from the best checkpoint
        self.net.eval()
        self.model.train_state = {**self.fit_info(), "train_config": asdict(self.cfg)}
        return dict(self.model.train_state)

    def fit_info(self) -> dict:
        """What run.json records of the loop's progress (also when interrupted); under a time budget, what was
        reserved for the final measurement and the training limit it left."""
        info = {**self.state.recorded(), "parallel": self.ranks.info(self.cfg.batch_size)}
        if self.cfg.time_budget is not None and self.reserve is not None:
            info["budget"] = {"seconds": self.cfg.time_budget, "reserve_seconds": self.reserve.final(),
                              "seconds_per_token": self.reserve.rate, "training_limit": self.plan.time_limit,
                              "checks": self.reserve.checks}
        return info


def _report_divergence(state: LoopState, run_dir: Path | None, log: Log | None) -> None:
    """A NaN/inf loss or valid perplexity stops training: the best weights before it are the result, with a
    warning; with none kept yet there is no result, and the error says what to change."""
    hint = "lower --lr, or set --clip (gradient clipping)"
    if state.best_valid_ppl is None:
        where = f"; {run_dir} is incomplete: delete it and train again" if run_dir is not None else ""
        raise ModelError(f"training diverged at step {state.step} (the loss became NaN or infinite) before any "
                         f"validation kept weights: {hint}{where}")
    if log is not None:
        log(f"warning: training diverged at step {state.step} (NaN or infinite loss); stopped and kept the best "
            f"weights (step {state.best_step}, valid perplexity {state.best_valid_ppl:.2f}); {hint}")


def _to_device(a: np.ndarray, device: str) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a))
    if device.startswith("cuda"):
        return t.pin_memory().to(device, non_blocking=True)  # async host->device copy
    return t.to(device)
