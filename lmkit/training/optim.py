"""The optimizer (AdamW or SGD over each family's parameter groups) and the learning-rate schedule."""

from __future__ import annotations

import math

import torch

from ..models.torchlm import unwrap
from .config import TrainConfig


def make_optimizer(net: torch.nn.Module, cfg: TrainConfig, is_cuda: bool) -> torch.optim.Optimizer:
    groups = unwrap(net).optim_groups(cfg.weight_decay)  # each family says what is decayed
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr)
    # The fused kernel does the whole update in one pass per tensor: on CUDA, and on the CPU too, where the
    # default per-parameter loop took 14 ms per step against 2 ms fused for the LSTM's tensors (the same
    # numbers; docs/benchmarks.md, "Where a training step's time goes").
    on_cpu = all(p.device.type == "cpu" for p in net.parameters())
    extra = {"fused": True} if is_cuda or on_cpu else {}
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), **extra)


def lr_factor(step: int, progress: float, cfg: TrainConfig) -> float:
    """Warmup over `warmup_steps`, then decay from 1 to min_lr_ratio as `progress` goes 0 -> 1.

    inverse_sqrt (Vaswani et al. 2017, 5.3): the same linear warmup, then sqrt(warmup / step), so the peak is lr
    at the end of warmup; it follows the step count, not the budget."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "inverse_sqrt":
        return math.sqrt(max(1, cfg.warmup_steps or 1) / (step + 1))
    p = min(max(progress, 0.0), 1.0)
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "linear":
        return 1.0 - (1.0 - cfg.min_lr_ratio) * p
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))
