"""The one training loop for every torch family (MLP, RNN, Transformer).

AdamW or SGD, warmup then cosine/linear decay, gradient clipping, budgets (epochs, tokens, wall
time; whichever ends first), exact validation perplexity through the one scoring path, early
stopping with best-checkpoint keeping, checkpoints that resume bit-for-bit for step-based budgets,
SIGINT -> checkpoint and a clean exit. Nothing here knows which family it trains.

Under torchrun the same loop runs in every process: `ranks` (lmkit.distributed) shards each global batch,
wraps the module in DDP, and keeps the ranks in step; with one process its calls do nothing."""

from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .atomic import write_json
from .data.batching import (Batch, prefix_examples, rank_stream_batches, sentence_batches, sentence_examples,
                            stream_batches, stream_ids)
from .data.corpus import Encoded
from .errors import LmkitError, ModelError, UsageError
from .evaluate.perplexity import score_encoded
from .models.torchlm import WEIGHTS, forward_target_logprobs, load_weights, save_weights, unwrap

CHECKPOINT_DIR = "checkpoint"
OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "linear", "constant")


@dataclass
class TrainConfig:
    """Training settings shared by every torch family (None: the family's `train_defaults`)."""

    optimizer: str | None = None  # adamw | sgd (plain SGD is the classic LSTM recipe)
    lr: float | None = None  # peak learning rate
    weight_decay: float | None = None  # decoupled weight decay (AdamW) on matrices, not biases/norms
    betas: tuple[float, float] | None = None  # AdamW (beta1, beta2)
    batch_size: int | None = None  # sequences (sentence context) or parallel rows (stream context)
    seq_len: int | None = None  # stream context: tokens per BPTT/training window
    epochs: float | None = None  # budget: passes over the training data (fractions allowed)
    max_tokens: int | None = None  # budget: training target tokens
    time_budget: float | None = None  # budget: seconds of training wall time (evaluation excluded)
    warmup_steps: int | None = None  # linear warmup steps
    schedule: str = "cosine"  # cosine | linear | constant decay after warmup
    min_lr_ratio: float = 0.1  # decay ends at lr * min_lr_ratio
    clip: float | None = None  # max global gradient norm (None: family default; 0 disables)
    eval_every: int | None = None  # steps between validations (None: ~10 per run, by step or time)
    patience: int | None = None  # validations without improvement before stopping (None: never)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto | fp32 | bf16 | fp16 (autocast; fp16 uses a gradient scaler)
    compile: bool = False  # torch.compile the module
    threads: int | None = None  # CPU threads (torch.set_num_threads)

    def validate(self) -> None:
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise UsageError(f"unknown --optimizer {self.optimizer!r}; use {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise UsageError(f"unknown --schedule {self.schedule!r}; use {', '.join(SCHEDULES)}")
        for name in ("lr", "epochs", "time_budget"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise UsageError(f"--{name.replace('_', '-')} must be positive, got {v}")
        for name in ("batch_size", "seq_len", "max_tokens", "eval_every", "patience"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {v}")


def parse_duration(text: str | float | None) -> float | None:
    """'90' / '90s' / '10m' / '1.5h' -> seconds."""
    if text is None or isinstance(text, (int, float)):
        return None if text is None else float(text)
    s = str(text).strip().lower()
    scale = {"s": 1, "m": 60, "h": 3600}.get(s[-1:], None)
    try:
        value = float(s[:-1]) * scale if scale else float(s)
    except ValueError:
        raise UsageError(f"--time-budget expects a duration such as 90s, 10m or 1.5h, got {text!r}") from None
    if value <= 0:
        raise UsageError(f"--time-budget must be positive, got {text!r}")
    return value


class Interrupted(LmkitError):
    exit_code = 130
    same_on_every_rank = True  # a collective stop: rank 0 reports it for the job


# -- helpers ----------------------------------------------------------------------------------------
def _resolved(cfg: TrainConfig, defaults: dict) -> TrainConfig:
    """Fill None fields from the family's defaults (and generic fallbacks)."""
    generic = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.01, "betas": (0.9, 0.95), "batch_size": 32,
               "seq_len": 64, "warmup_steps": 100, "clip": 1.0}
    out = TrainConfig(**asdict(cfg))
    for key, fallback in generic.items():
        if getattr(out, key) is None:
            setattr(out, key, defaults.get(key, fallback))
    if out.epochs is None and out.max_tokens is None and out.time_budget is None:
        out.epochs = float(defaults.get("epochs", 1))
    out.validate()
    return out


def _make_optimizer(net: torch.nn.Module, cfg: TrainConfig, is_cuda: bool) -> torch.optim.Optimizer:
    groups = unwrap(net).optim_groups(cfg.weight_decay)  # each family says what is decayed
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr)
    extra = {"fused": True} if is_cuda else {}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), **extra)


def lr_factor(step: int, progress: float, cfg: TrainConfig) -> float:
    """Warmup over `warmup_steps`, then decay from 1 to min_lr_ratio as `progress` goes 0 -> 1."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    p = min(max(progress, 0.0), 1.0)
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "linear":
        return 1.0 - (1.0 - cfg.min_lr_ratio) * p
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))


def _epoch_batches(model, train: Encoded, cfg: TrainConfig, epoch: int, ranks=None) -> list[Batch]:
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


class _Progress:
    """A rich progress bar on stderr (loss, valid ppl, tokens/s, ETA); silent when quiet."""

    def __init__(self, enabled: bool, total: float, label: str):
        self.bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                console=Console(stderr=True), transient=False)
            self.task = self.bar.add_task(label, total=total, info="")
            self.bar.start()

    def update(self, completed: float, info: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=completed, info=info)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


# -- checkpoints ------------------------------------------------------------------------------------
# A checkpoint is a folder (weights, trainer.pt, state.json written last) built as checkpoint.new and
# swapped in whole, so a kill at any moment leaves one complete checkpoint: `checkpoint`, or, inside the
# swap, checkpoint.new (complete) or checkpoint.old (the previous one). _settle_checkpoint picks it up.
CHECKPOINT_SCHEMA = 1
# state.json field -> (type, may be None); older checkpoints may lack the last four (defaults apply)
STATE_FIELDS = {"step": ("int", False), "epoch": ("int", False), "batch": ("int", False),
                "tokens_seen": ("int", False), "train_seconds": ("num", False), "best_valid_ppl": ("num", True),
                "best_step": ("int", True), "evals_since_best": ("int", False), "last_eval_seconds": ("num", False),
                "stopped": ("str", True)}
OPTIONAL_STATE = ("best_step", "evals_since_best", "last_eval_seconds", "stopped")


def _settle_checkpoint(run_dir: Path) -> Path:
    """The folder of the last complete checkpoint, finishing a swap that a kill interrupted."""
    ck = run_dir / CHECKPOINT_DIR
    if (ck / "state.json").exists():
        return ck
    for side in (run_dir / f"{CHECKPOINT_DIR}.new", run_dir / f"{CHECKPOINT_DIR}.old"):
        if (side / "state.json").exists():
            if ck.exists():
                import shutil

                shutil.rmtree(ck)
            side.replace(ck)
            return ck
    return ck


def _save_checkpoint(run_dir: Path, net, optimizer, scaler, state: dict, rnn_state, rank_rng=None) -> None:
    import io
    import shutil

    from .atomic import DiskFullError, is_disk_full

    _settle_checkpoint(run_dir)
    ck, new, old = (run_dir / f"{CHECKPOINT_DIR}{s}" for s in ("", ".new", ".old"))
    shutil.rmtree(new, ignore_errors=True)
    tensors = {"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state(),
               "scaler": scaler.state_dict() if scaler is not None else {}}
    if rnn_state is not None:
        tensors["rnn_state"] = [t.detach().cpu() for t in (rnn_state if isinstance(rnn_state, tuple)
                                                             else (rnn_state,))]
    if torch.cuda.is_available():
        tensors["cuda_rng"] = torch.cuda.get_rng_state_all()
    if rank_rng is not None:  # data-parallel: every rank's RNG, (world, n)
        tensors["rank_rng"] = rank_rng
    buf = io.BytesIO()
    torch.save(tensors, buf)  # into memory: torch's own file errors do not say "disk full"
    try:
        new.mkdir(parents=True)
        save_weights(unwrap(net), new / WEIGHTS)
        (new / "trainer.pt").write_bytes(buf.getbuffer())
        write_json(new / "state.json", {"schema": CHECKPOINT_SCHEMA, **state})  # last: marks it complete
    except BaseException as exc:
        shutil.rmtree(new, ignore_errors=True)
        if is_disk_full(exc) or isinstance(exc, DiskFullError):
            raise DiskFullError(ck) from None
        raise
    shutil.rmtree(old, ignore_errors=True)
    if ck.exists():
        ck.replace(old)
    new.replace(ck)
    shutil.rmtree(old, ignore_errors=True)


def _checked_state(path: Path, state) -> dict:
    """state.json as read, refused when it is not what _save_checkpoint writes (hand-edited, damaged)."""
    from .artifacts import check_version

    if not isinstance(state, dict):
        raise ModelError(f"{path}: damaged checkpoint state (not an object)")
    check_version(path, "checkpoint", state.get("schema"), CHECKPOINT_SCHEMA)
    for key, (kind, nullable) in STATE_FIELDS.items():
        if key not in state and key in OPTIONAL_STATE:
            continue
        value = state.get(key)
        if value is None and nullable and key in state:
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = {"int": number and isinstance(value, int), "num": number and math.isfinite(value),
              "str": isinstance(value, str)}[kind]
        if not ok or (number and value < 0):
            raise ModelError(f"{path}: damaged checkpoint state ({key} = {value!r})")
    return state


def has_checkpoint(run_dir: Path) -> bool:
    return (_settle_checkpoint(run_dir) / "state.json").exists()


def _read_state(ck: Path, run_dir: Path) -> dict:
    try:
        state = json.loads((ck / "state.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{run_dir}: no checkpoint to resume from ({CHECKPOINT_DIR}/state.json missing)") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ModelError(f"{ck / 'state.json'}: damaged checkpoint state (not valid JSON)") from None
    return _checked_state(ck / "state.json", state)


def _read_trainer(path: Path, device: str, mmap: bool = False) -> dict:
    """trainer.pt through torch.load(weights_only=True): tensors and plain containers only. A file holding
    any other pickled object (which could run code) is refused, never executed."""
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr; the error says it all
            warnings.simplefilter("ignore")
            tensors = torch.load(path, map_location=device, weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise ModelError(f"{path}: checkpoint file is missing") from None
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            raise ModelError(f"{path}: refused: it holds pickled objects other than tensors, which could run "
                             "code when loaded (a damaged or tampered file); not loaded") from None
        raise ModelError(f"{path}: damaged checkpoint (UnpicklingError)") from None
    except RuntimeError as exc:
        if mmap and "mmap" in str(exc):  # not torch's zip format (a legacy pickle): read it the plain way
            return _read_trainer(path, device, mmap=False)
        raise ModelError(f"{path}: damaged checkpoint (RuntimeError)") from None
    except Exception as exc:  # torch raises many types for a damaged file
        raise ModelError(f"{path}: damaged checkpoint ({exc.__class__.__name__})") from None
    if not isinstance(tensors, dict) or not isinstance(tensors.get("optimizer"), dict) or not isinstance(
            tensors.get("torch_rng"), torch.Tensor):
        raise ModelError(f"{path}: damaged checkpoint (no optimizer state or RNG state)")
    return tensors


def check_checkpoint(run_dir: Path) -> None:
    """Refuse a damaged, newer or unsafe checkpoint before a resume touches the run folder.

    Cheap: state.json, the weights' header, and trainer.pt memory-mapped (its pickle is still checked)."""
    from .artifacts import read_safetensors_header

    ck = _settle_checkpoint(run_dir)
    _read_state(ck, run_dir)
    if not (ck / WEIGHTS).exists():
        raise ModelError(f"{ck / WEIGHTS}: weights file is missing")
    read_safetensors_header(ck / WEIGHTS)
    _read_trainer(ck / "trainer.pt", "cpu", mmap=True)


def load_checkpoint(run_dir: Path, net, device: str):
    """(state dict, tensors) of the last checkpoint; ModelError when it is missing or damaged."""
    ck = _settle_checkpoint(run_dir)
    state = _read_state(ck, run_dir)
    load_weights(unwrap(net), ck / WEIGHTS)
    return state, _read_trainer(ck / "trainer.pt", device)


# -- the loop ---------------------------------------------------------------------------------------
def fit(model, train: Encoded, valid: Encoded | None, cfg: TrainConfig, *, log=print,
        run_dir: Path | None = None, progress: bool = True, resume: bool = False,
        on_eval=None, ranks=None) -> dict:
    """Train `model` (a TorchLM) in place; returns facts for run.json. Writes checkpoints to run_dir.

    `ranks` (lmkit.distributed.Ranks, from api's session) makes this one process of a data-parallel run:
    every rank reads run_dir, rank 0 alone writes it."""
    from .distributed import SINGLE, check_global_batch, rank_seed

    ranks = ranks or SINGLE
    cfg = _resolved(cfg, getattr(unwrap(model.net), "train_defaults", {}))
    check_global_batch(cfg.batch_size, ranks.world_size)
    writes = run_dir is not None and ranks.is_main
    device = model.device
    is_cuda = device.startswith("cuda")
    placement = model.placement
    precision = placement.precision if placement is not None else "fp32"
    net = model.net
    optimizer = _make_optimizer(net, cfg, is_cuda)
    step_net = ranks.wrap(net)  # the training forward (DDP under torchrun); evaluation uses `net`
    scaler = torch.amp.GradScaler("cuda") if (is_cuda and precision == "fp16") else None

    stateful_stream = unwrap(net).stateful and model.protocol.context == "stream"
    first_epoch = _epoch_batches(model, train, cfg, 0, ranks)  # built once: counted here, trained on below
    steps_per_epoch = len(first_epoch)
    tokens_per_epoch = train.num_tokens
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

    state = {"step": 0, "epoch": 0, "batch": 0, "tokens_seen": 0, "train_seconds": 0.0,
             "best_valid_ppl": None, "best_step": None, "evals_since_best": 0, "last_eval_seconds": 0.0,
             "stopped": None}
    rnn_state = None
    if resume and run_dir is not None and not has_checkpoint(run_dir):
        # killed before its first checkpoint: the same seed replays the same run from the start
        log("no checkpoint yet (the run stopped before its first evaluation); starting from the beginning")
        resume = False
    if resume and run_dir is not None:
        saved, tensors = load_checkpoint(run_dir, net, device)
        state.update({k: v for k, v in saved.items() if k in state})
        try:
            optimizer.load_state_dict(tensors["optimizer"])
            ranks.restore_rng(tensors, cfg.seed, state["step"])
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise ModelError(f"{run_dir / CHECKPOINT_DIR / 'trainer.pt'}: checkpoint does not match this model "
                             f"({exc.__class__.__name__})") from None
        if scaler is not None and tensors.get("scaler"):
            scaler.load_state_dict(tensors["scaler"])
        if "rnn_state" in tensors and stateful_stream:  # saved for the global batch: this rank's rows
            parts = tuple(t.to(device) for t in ranks.take_rows(tuple(tensors["rnn_state"]), cfg.batch_size))
            rnn_state = parts if len(parts) > 1 else parts[0]
        log(f"resuming at step {state['step']} (epoch {state['epoch'] + 1}, "
            f"{state['tokens_seen']:,} tokens seen)")
    else:
        torch.manual_seed(rank_seed(cfg.seed, ranks.rank))
    if ranks.distributed:
        log(f"data parallel: {ranks.describe()}, global batch {cfg.batch_size} = {ranks.world_size} x "
            f"{cfg.batch_size // ranks.world_size} rows; budgets count the tokens of all processes")

    interrupted = {"flag": False, "agreed": False, "signal": signal.SIGINT}

    def on_stop_signal(signum, frame):
        """Ctrl-C or SIGTERM (a scheduler, `timeout`, `kill`): stop at the next step boundary and
        checkpoint; the same signal twice stops at once."""
        if interrupted["flag"]:
            raise KeyboardInterrupt
        interrupted["flag"], interrupted["signal"] = True, signum

    stop_signals = (signal.SIGINT, signal.SIGTERM)
    old_handlers = {s: signal.signal(s, on_stop_signal) for s in stop_signals} if _main_thread() else {}
    bar = _Progress(progress and ranks.is_main, float(total_steps or cfg.time_budget or 1), model.label)
    metrics_rows: list[dict] = _read_metrics(run_dir, state["step"]) if (resume and run_dir) else []

    def budget_left() -> bool:
        if total_steps is not None and state["step"] >= total_steps:
            state["stopped"] = "steps"
            return False
        if cfg.max_tokens is not None and state["tokens_seen"] >= cfg.max_tokens:
            state["stopped"] = "tokens"
            return False
        if cfg.time_budget is not None and state["train_seconds"] >= cfg.time_budget:
            state["stopped"] = "time"
            return False
        return True

    def progress_fraction() -> float:
        fr = 0.0
        if total_steps:
            fr = max(fr, state["step"] / total_steps)
        if cfg.time_budget:
            fr = max(fr, state["train_seconds"] / cfg.time_budget)
        return fr

    def evaluate(train_loss: float | None) -> bool:
        """Exact valid perplexity; keeps the best weights; returns False when patience ran out.

        Data-parallel: rank 0 scores alone (the one scoring path, exact in every context) and every rank
        takes its number, so all ranks keep the same state and stop at the same step."""
        if train_loss is not None and not math.isfinite(train_loss):
            train_loss = None  # a diverged loss is not a number JSON can hold; the stop below reports it
        row = {"step": state["step"], "epoch": state["step"] / max(1, steps_per_epoch),
               "tokens_seen": state["tokens_seen"], "seconds": state["train_seconds"],
               "lr": optimizer.param_groups[0]["lr"], "train_loss": train_loss}
        # collectives first, on every rank: the whole batch's recurrent state and every rank's RNG
        saved_rnn = ranks.gather_rows(rnn_state) if run_dir is not None else None
        rank_rng = ranks.gather_rng() if run_dir is not None else None
        if valid is not None:
            ppl = ranks.from_main(score_encoded(model, valid, keep=False).perplexity if ranks.is_main else None)
            if not math.isfinite(ppl):  # diverged weights: never kept, never written as the best
                state["stopped"] = "diverged"
                return False
            row["valid_ppl"] = ppl
            best = state["best_valid_ppl"]
            if best is None or ppl < best:
                state.update(best_valid_ppl=ppl, best_step=state["step"], evals_since_best=0)
                if writes:
                    save_weights(unwrap(net), run_dir / WEIGHTS)
            else:
                state["evals_since_best"] += 1
        elif writes:
            save_weights(unwrap(net), run_dir / WEIGHTS)
        metrics_rows.append(row)
        state["last_eval_seconds"] = state["train_seconds"]
        if writes:
            from .runs import append_metrics

            append_metrics(run_dir, metrics_rows)
            _save_checkpoint(run_dir, net, optimizer, scaler, state, saved_rnn, rank_rng)
        if on_eval is not None:
            on_eval(row)
        if cfg.patience is not None and state["evals_since_best"] >= cfg.patience:
            state["stopped"] = "early-stopping"
            return False
        return True

    loss_sum = torch.zeros((), device=device)
    loss_count = 0
    last_loss: float | None = None
    net.train()
    try:
        while budget_left():
            # a stateful stream model's epochs are all the same batches in the same order: build them once
            reuse = first_epoch is not None and (state["epoch"] == 0 or stateful_stream)
            batches = first_epoch if reuse else _epoch_batches(model, train, cfg, state["epoch"], ranks)
            if not stateful_stream:
                first_epoch = None  # later epochs are shuffled afresh; let this one go
            if state["batch"] == 0 and stateful_stream:
                rnn_state = unwrap(net).init_state(cfg.batch_size // ranks.world_size, device)
            while state["batch"] < len(batches) and budget_left():
                t0 = time.perf_counter()
                b = batches[state["batch"]]
                if b.global_targets is None:  # every rank holds the global plan and takes its rows
                    targets = b.num_targets
                    bx, by = ranks.shard(b.x, b.y, cfg.batch_size)  # this rank's rows (all in one process)
                else:  # built for this rank alone (rank_stream_batches)
                    targets, bx, by = b.global_targets, b.x, b.y
                x, y = _to_device(bx, device), _to_device(by, device)
                if stateful_stream:
                    in_state = rnn_state
                elif unwrap(net).stateful:
                    in_state = unwrap(net).init_state(bx.shape[0], device)
                else:
                    in_state = None
                for g in optimizer.param_groups:
                    g["lr"] = cfg.lr * lr_factor(state["step"], progress_fraction(), cfg)
                with placement.autocast() if placement is not None else _null():
                    # (B, T) ln P over the predictable set; padded positions give 0 and never count
                    logprobs, out_state = forward_target_logprobs(step_net, x, y, in_state)
                # this rank's share of the global mean loss (all of it in one process); DDP sums the gradients
                loss = -logprobs.sum() / targets
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                else:
                    loss.backward()
                if cfg.clip:
                    torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.clip)
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                if stateful_stream:
                    rnn_state = unwrap(net).detach_state(out_state)
                loss_sum += loss.detach()  # stays on the device: no host sync per step
                loss_count += 1
                state["step"] += 1
                state["batch"] += 1
                state["tokens_seen"] += targets
                stop, seconds = ranks.agree(interrupted["flag"], time.perf_counter() - t0)
                state["train_seconds"] += seconds
                if state["step"] % 20 == 0 or state["step"] == 1:
                    last_loss = float(ranks.sum_(loss_sum)) / loss_count  # host sync, every 20 steps only
                    loss_sum.zero_()
                    loss_count = 0
                    if not math.isfinite(last_loss):  # every rank sees the same all-reduced loss
                        state["stopped"] = "diverged"
                        break
                    tps = state["tokens_seen"] / max(state["train_seconds"], 1e-9)
                    best = state["best_valid_ppl"]
                    bar.update(state["step"] if total_steps else state["train_seconds"],
                               f"loss {last_loss:.3f}  valid ppl {'-' if best is None else f'{best:.2f}'}"
                               f"  {tps:,.0f} tok/s")
                due = (eval_every and state["step"] % eval_every == 0) or (
                    eval_seconds and state["train_seconds"] - state["last_eval_seconds"] >= eval_seconds)
                if due and not evaluate(last_loss):
                    break
                if stop or (interrupted["flag"] and not ranks.distributed):  # one process: also during evaluation
                    interrupted["agreed"] = True
                    raise KeyboardInterrupt
            if state["stopped"] in ("early-stopping", "diverged"):
                break
            if state["batch"] >= len(batches):
                state["epoch"] += 1
                state["batch"] = 0
        if state["stopped"] != "diverged" and (not metrics_rows or metrics_rows[-1]["step"] != state["step"]):
            evaluate(last_loss)
    except KeyboardInterrupt:
        state["stopped"] = "interrupted"
        model.train_state = _train_state(state, ranks, cfg)  # for run.json
        # data-parallel: only a stop all ranks agreed on can gather their state (a second Ctrl-C cannot)
        collective = interrupted["agreed"] or not ranks.distributed
        if run_dir is not None and collective:
            saved_rnn, rank_rng = ranks.gather_rows(rnn_state), ranks.gather_rng()
            if writes:
                _save_checkpoint(run_dir, net, optimizer, scaler, state, saved_rnn, rank_rng)
        written = run_dir is not None and collective
        signum = interrupted["signal"]
        name = "" if signum == signal.SIGINT else f" by {signal.Signals(signum).name}"
        raise Interrupted(f"interrupted{name} at step {state['step']}; "
                          + ("checkpoint written" if written else "the last checkpoint is kept")
                          + (f" — resume with: lmkit train --resume {run_dir}" if run_dir else ""),
                          exit_code=128 + int(signum)) from None
    finally:
        bar.close()
        for s, handler in old_handlers.items():
            signal.signal(s, handler)
    if state["stopped"] == "diverged":
        _report_divergence(state, run_dir, log if ranks.is_main else None)
    if writes and (run_dir / WEIGHTS).exists():  # rank 0 scores the final numbers; the others are done
        load_weights(unwrap(net), run_dir / WEIGHTS)  # final numbers come from the best checkpoint
    net.eval()
    model.train_state = {**_train_state(state, ranks, cfg), "train_config": asdict(cfg)}
    return dict(model.train_state)


def _train_state(state: dict, ranks, cfg: TrainConfig) -> dict:
    """What run.json records of the loop's progress (also when interrupted)."""
    return {**{k: state[k] for k in ("step", "epoch", "tokens_seen", "train_seconds", "best_valid_ppl",
                                     "best_step", "stopped")}, "parallel": ranks.info(cfg.batch_size)}


def _report_divergence(state: dict, run_dir: Path | None, log) -> None:
    """A NaN/inf loss or valid perplexity stops training: the best weights before it are the result, with a
    warning; with none kept yet there is no result, and the error says what to change."""
    hint = "lower --lr, or set --clip (gradient clipping)"
    if state["best_valid_ppl"] is None:
        where = f"; {run_dir} is incomplete: delete it and train again" if run_dir is not None else ""
        raise ModelError(f"training diverged at step {state['step']} (the loss became NaN or infinite) before any "
                         f"validation kept weights: {hint}{where}")
    if log is not None:
        log(f"warning: training diverged at step {state['step']} (NaN or infinite loss); stopped and kept the best "
            f"weights (step {state['best_step']}, valid perplexity {state['best_valid_ppl']:.2f}); {hint}")


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _null():
    import contextlib

    return contextlib.nullcontext()


def _to_device(a: np.ndarray, device: str) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a))
    if device.startswith("cuda"):
        return t.pin_memory().to(device, non_blocking=True)  # async host->device copy
    return t.to(device)


def _read_metrics(run_dir: Path, upto_step: int) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a damaged line of the curve is dropped; the checkpoint holds what training needs
        if isinstance(row, dict) and isinstance(row.get("step", 0), int) and row.get("step", 0) <= upto_step:
            row.pop("schema", None)
            rows.append(row)
    return rows
