"""Training settings shared by every torch family, and how missing ones are filled in."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import UsageError

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "linear", "constant", "inverse_sqrt")
# what a family's `train_defaults` does not say
GENERIC_DEFAULTS = {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.01, "betas": (0.9, 0.95), "batch_size": 32,
                    "seq_len": 64, "warmup_steps": 100, "clip": 1.0}


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
    time_budget: float | None = None  # budget: seconds of the whole command (lmkit.training.budget)
    warmup_steps: int | None = None  # linear warmup steps
    schedule: str = "cosine"  # cosine | linear | constant decay after warmup | inverse_sqrt (Vaswani et al.)
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


def resolve_train_config(cfg: TrainConfig, defaults: dict) -> TrainConfig:
    """A copy of `cfg` with None fields filled from a family's `train_defaults` (then generic fallbacks),
    one epoch when no budget is given, and validated."""
    out = TrainConfig(**asdict(cfg))
    for key, fallback in GENERIC_DEFAULTS.items():
        if getattr(out, key) is None:
            setattr(out, key, defaults.get(key, fallback))
    if out.epochs is None and out.max_tokens is None and out.time_budget is None:
        out.epochs = float(defaults.get("epochs", 1))
    out.validate()
    return out


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
