"""`--time-budget` bounds the whole command, and how long a run without one will take.

The command's clock starts when `lmkit train` starts its work (reading the data counts). What follows
training costs time too: the final validation, scoring the test split, the quick checks and writing the
folder. Their cost is estimated from the seconds one scored token takes (a short probe before training,
then each validation's measured time) times the tokens they score, and reserved: training stops when the
time left is the reserve. The stop is expressed in training seconds (`limit`), which every rank of a
data-parallel run counts alike, so all ranks stop at the same step."""

from __future__ import annotations

import time
from dataclasses import dataclass

CHECK_PASSES = 20  # `lmkit check --quick` scores its sample (<= CHECK_SAMPLE tokens) about 5-19 times (measured)
CHECK_SAMPLE = 1024
PROBE_TOKENS = 1024  # tokens scored before training to estimate the scoring speed
WRITE_SECONDS = 1.0  # reloading the best weights, writing the folder
LONG_RUN_SECONDS = 180.0  # a run without --time-budget estimated longer than this is announced
TOLERANCE = 0.10  # the checks still run when they end within the budget + 10 % (the goal's tolerance)
VALIDATION_SHARE = 0.25  # under a time budget, validations take at most about this share of the training time


@dataclass
class Clock:
    """One command's wall clock: when it started (time.monotonic()) and the tokens its final measurement scores."""

    started: float
    valid_tokens: int = 0
    test_tokens: int = 0

    def elapsed(self) -> float:
        return time.monotonic() - self.started


@dataclass
class Reserve:
    """What the end of a run costs, from the seconds per scored token (`rate`)."""

    rate: float  # seconds per scored token
    valid_tokens: int
    test_tokens: int
    checks: bool = True  # the quick checks run (else they are skipped for lack of time)

    def validation(self) -> float:
        """One validation: a pass over the valid split."""
        return self.rate * self.valid_tokens

    def checking(self) -> float:
        """The quick checks, on a sample of the test split (else valid)."""
        return self.rate * CHECK_PASSES * min(CHECK_SAMPLE, self.test_tokens or self.valid_tokens)

    def final(self) -> float:
        """The last validation (its score is the run's valid number), the test split, the checks, writing."""
        checks = self.checking() if self.checks else 0.0
        return self.rate * (self.valid_tokens + self.test_tokens) + checks + WRITE_SECONDS


def training_limit(budget: float, elapsed: float, train_seconds: float, reserve: Reserve) -> float:
    """The training seconds at which training must stop so that the command ends within `budget`: the time
    left now, less the final reserve, added to the training seconds counted so far (never beyond `budget`,
    which also caps the run's total training time across resumes)."""
    left = budget - elapsed - reserve.final()
    return min(budget, train_seconds + max(0.0, left))


def validation_interval(limit: float, train_seconds: float, reserve: Reserve, previous: float | None = None) -> float:
    """Training seconds between two validations under a time budget: about ten per run, never more often than
    every 30 s of training, and validations never more than VALIDATION_SHARE of the time; set at the start
    (`previous` None), then only widened when validations turn out slower than estimated."""
    slow = reserve.validation() * (1 - VALIDATION_SHARE) / VALIDATION_SHARE
    if previous is not None:
        return max(previous, slow)
    share = max(0.0, limit - train_seconds)
    return max(share / 10, min(30.0, share / 2), slow)


def run_estimate(steps_left: int, step_seconds: float, validations_left: int, reserve: Reserve) -> float:
    """Seconds until a step-bounded run ends: its steps, its validations, the final measurement."""
    return steps_left * step_seconds + validations_left * reserve.validation() + reserve.final()


def too_short(budget: float, elapsed: float, reserve: Reserve) -> bool:
    """True when the final measurement alone does not fit in what is left of the budget."""
    return elapsed + reserve.final() > budget


def long_run_warning(seconds: float, steps: int, step_seconds: float, reserve: Reserve) -> str:
    """The line a run without --time-budget prints when it will take longer than LONG_RUN_SECONDS."""
    from ..logs import clock

    return (f"warning: this run will take about {clock(seconds)} ({steps:,} steps at {step_seconds:.2f} s, "
            f"validations of ~{reserve.validation():.0f} s, final scoring ~{reserve.final():.0f} s); bound it with "
            "--time-budget (e.g. --time-budget 5m: the whole command), --max-tokens or --epochs")


def checks_skipped(budget: dict | None, clock: Clock) -> str | None:
    """Why the quick checks do not run at the end of a run under a time budget (None: they run): the reserve
    left them out, or what is left of the budget (and of its 10 % tolerance) is shorter than they take."""
    if not budget:
        return None
    left = budget["seconds"] * (1 + TOLERANCE) - clock.elapsed()
    need = Reserve(budget["seconds_per_token"], clock.valid_tokens, clock.test_tokens).checking() + WRITE_SECONDS
    if budget.get("checks", True) and left >= need:
        return None
    return "not run: --time-budget left no time for it; `lmkit check RUN` runs it"
