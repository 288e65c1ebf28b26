"""The training loop's state, defined once.

Each field of LoopState says here, and nowhere else, how a checkpoint's state.json is checked (its
kind, whether it may be null, whether checkpoints of older lmkit versions may lack it) and whether
run.json's `fit_info` records it. Saving, resuming and the run record all read this one schema."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import ModelError


def _field(default: Any, kind: str, *, nullable: bool = False, optional: bool = False, recorded: bool = False):
    """kind: int | num (finite) | str, never negative; optional: older checkpoints lack it (the default
    applies); recorded: part of run.json's fit_info."""
    return field(default=default, metadata={"kind": kind, "nullable": nullable, "optional": optional,
                                            "recorded": recorded})


@dataclass
class LoopState:
    """Where a run is; what a checkpoint saves and a resume restores (the rest is derived from it)."""

    step: int = _field(0, "int", recorded=True)  # optimizer steps taken
    epoch: int = _field(0, "int", recorded=True)  # the current epoch (0-based)
    batch: int = _field(0, "int")  # the next batch of the current epoch
    tokens_seen: int = _field(0, "int", recorded=True)  # training target tokens of all processes
    train_seconds: float = _field(0.0, "num", recorded=True)  # training wall time (validation excluded)
    best_valid_ppl: float | None = _field(None, "num", nullable=True, recorded=True)
    best_step: int | None = _field(None, "int", nullable=True, optional=True, recorded=True)
    evals_since_best: int = _field(0, "int", optional=True)  # validations without improvement (patience)
    last_eval_seconds: float = _field(0.0, "num", optional=True)  # train_seconds at the last validation
    stopped: str | None = _field(None, "str", nullable=True, optional=True, recorded=True)  # why it stopped

    def to_json(self) -> dict:
        """Every field, in schema order (state.json)."""
        return asdict(self)

    def recorded(self) -> dict:
        """The fields run.json's fit_info records."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata["recorded"]}

    @classmethod
    def from_json(cls, path: Path, raw: dict) -> LoopState:
        """The state a checkpoint's state.json holds; refused when a field is not what the schema says
        (a hand-edited or damaged file)."""
        for f in fields(cls):
            kind, nullable, optional = f.metadata["kind"], f.metadata["nullable"], f.metadata["optional"]
            if f.name not in raw and optional:
                continue
            value = raw.get(f.name)
            if value is None and nullable and f.name in raw:
                continue
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok = {"int": number and isinstance(value, int), "num": number and math.isfinite(value),
                  "str": isinstance(value, str)}[kind]
            if not ok or (number and value < 0):
                raise ModelError(f"{path}: damaged checkpoint state ({f.name} = {value!r})")
        return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})

    def count_validation(self, ppl: float) -> bool:
        """Count a finite validation perplexity; True when it is the best so far (it then becomes the best)."""
        if self.best_valid_ppl is None or ppl < self.best_valid_ppl:
            self.best_valid_ppl, self.best_step, self.evals_since_best = ppl, self.step, 0
            return True
        self.evals_since_best += 1
        return False
