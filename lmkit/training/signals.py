"""Ctrl-C and SIGTERM during training: stop at the next step boundary, checkpoint, raise Interrupted."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from ..errors import LmkitError

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(LmkitError):
    exit_code = 130
    same_on_every_rank = True  # a collective stop: rank 0 reports it for the job


class StopSignals:
    """While entered (in the main thread), SIGINT or SIGTERM (a scheduler, `timeout`, `kill`) only raises
    `requested`: the loop stops at the next step boundary and checkpoints. The same signal twice stops at
    once (KeyboardInterrupt). `agreed` is set by the loop when every rank stopped at the same step."""

    def __init__(self) -> None:
        self.requested = False
        self.agreed = False
        self.signum: int = signal.SIGINT
        self._previous: dict = {}

    def _on_signal(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested, self.signum = True, signum

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._on_signal) for s in STOP_SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def error(self, step: int, written: bool, run_dir: Path | None) -> Interrupted:
        """The error that ends an interrupted run: exit code 128 + the signal, which is named unless SIGINT."""
        name = "" if self.signum == signal.SIGINT else f" by {signal.Signals(self.signum).name}"
        return Interrupted(f"interrupted{name} at step {step}; "
                           + ("checkpoint written" if written else "the last checkpoint is kept")
                           + (f" — resume with: lmkit train --resume {run_dir}" if run_dir else ""),
                           exit_code=128 + int(self.signum))
