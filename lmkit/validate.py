"""Option checks the library calls share: refuse values that cannot work before any data is read.

Lower bounds live with each config (a family's __post_init__, TrainConfig.validate, Decoding); this module
adds what those leave open: non-finite numbers, sizes beyond a family's declared limits (so large that torch
overflows or a machine cannot hold the model), seeds that numpy or torch refuse, device names, and output
paths that are not regular files. Each failure is a UsageError naming the option (exit code 2). No torch
import here, and no model import: this is the core layer, so callers pass a family's limits in."""

from __future__ import annotations

import math
import re
import stat
from pathlib import Path
from typing import Any, Iterable, Mapping

from .errors import UsageError

MAX_SEED = 2**63 - 1  # numpy takes any seed >= 0, torch.manual_seed at most 2**64 - 1
MAX_THREADS = 1024
MAX_LR = 1000.0  # far above any working rate (SGD on LSTMs uses 1-40); a typo such as 1e30 diverges at once
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def check_seed(seed: int | None, flag: str = "--seed") -> None:
    """A seed both numpy and torch accept (None: not given)."""
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise UsageError(f"{flag} must be a whole number from 0 to 2**63-1, got {seed}")


def check_device_name(device: str | None) -> None:
    """The device spelling, for commands that may never resolve it (an n-gram ignores --device)."""
    if device is not None and not _DEVICE.match(str(device)):
        raise UsageError(f"unknown --device {device!r}; use auto, cpu, cuda, cuda:N or mps")


def check_model_config(label: str, config: Any, limits: Mapping[str, int]) -> None:
    """Upper bounds on a model config's size fields: `limits` is the family's own (Family.limits, declared in
    its model file; lower bounds are its Config's checks). Far beyond any model lmkit trains, they refuse a
    typo (an extra zero or three) here instead of hanging while torch builds a million layers."""
    for name, limit in limits.items():
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > limit:
            raise UsageError(f"{label}: {name} {value} is beyond lmkit's limit of {limit:,}")


def _finite(flag: str, value: float | None, low: float, high: float = math.inf, *, open_low: bool = False) -> None:
    if value is None:
        return
    ok = math.isfinite(value) and (value > low if open_low else value >= low) and value <= high
    if not ok:
        bound = ("> " if open_low else ">= ") + f"{low:g}" + (f" and <= {high:g}" if high < math.inf else "")
        raise UsageError(f"{flag} must be a finite number {bound}, got {value}")


def check_train_config(cfg: Any) -> None:
    """What TrainConfig.validate leaves open: infinities and NaN, negative warmup/clip, absurd sizes."""
    _finite("--lr", cfg.lr, 0.0, MAX_LR, open_low=True)
    _finite("--epochs", cfg.epochs, 0.0, open_low=True)  # budgets: any finite upper bound
    _finite("--time-budget", cfg.time_budget, 0.0, open_low=True)
    _finite("--weight-decay", cfg.weight_decay, 0.0, 1.0)
    _finite("--clip", cfg.clip, 0.0)  # 0: no clipping
    _finite("--set min_lr_ratio", cfg.min_lr_ratio, 0.0, 1.0)
    if cfg.warmup_steps is not None and cfg.warmup_steps < 0:
        raise UsageError(f"--warmup must be at least 0, got {cfg.warmup_steps}")
    if cfg.betas is not None:
        betas = tuple(cfg.betas)
        if len(betas) != 2 or not all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in betas):
            raise UsageError(f"betas needs two numbers in [0, 1), e.g. --set betas=0.9,0.95; got {cfg.betas}")
    if cfg.threads is not None and not 1 <= cfg.threads <= MAX_THREADS:
        raise UsageError(f"--threads must be between 1 and {MAX_THREADS}, got {cfg.threads}")
    check_seed(cfg.seed)
    check_device_name(cfg.device)


def check_output_file(path: str | Path, flag: str = "-o", *, inputs: Iterable = (),
                      run_folders: Iterable = ()) -> None:
    """An output file must be a regular file or not exist yet, and never one of the command's inputs
    (nor inside an input run folder: lmkit.outputs.check_distinct).

    lmkit publishes outputs by renaming a finished temp file over the target: over a directory that
    fails, and over a device or a pipe (run as root: /dev/null) it would replace the special file."""
    from .outputs import check_distinct

    p = Path(path)
    check_distinct(p, inputs, flag=flag, run_folders=run_folders)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise UsageError(f"{flag} {p}: cannot be written ({exc.strerror})") from None
    if stat.S_ISDIR(mode):
        raise UsageError(f"{flag} {p}: is a directory; give a file name")
    if not stat.S_ISREG(mode):
        raise UsageError(f"{flag} {p}: is not a regular file (a device, pipe or socket); lmkit writes outputs "
                         "atomically, by renaming a finished file over the target, so give a file name")

