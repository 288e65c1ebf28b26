"""What the training loop shows while it runs: a time-based refresh of the command's reporter (lmkit.logs).

Every step asks `due()` (one clock read); at most every TICK seconds the loop reads its numbers (one host
sync of the loss) and reports them: step, tokens/s, the mean loss since the last validation, the latest
validation perplexity and the time left (against --time-budget, else estimated from the plan)."""

from __future__ import annotations

import sys
import time

from ..logs import NOTHING, Progress, TerminalProgress, current, installed

TICK = 0.25  # seconds between two refreshes (the bar redraws itself in between)


def training_reporter(enabled: bool) -> tuple[Progress, bool]:
    """(the reporter training uses, whether training owns it and must close it). The command's reporter when
    one is installed; else (a library call asking for progress) a live bar when stderr is a terminal."""
    if not enabled:
        return NOTHING, False
    if installed():
        return current(), False
    if sys.stderr.isatty():
        return TerminalProgress(), True
    return NOTHING, False


class Ticker:
    """When the next refresh is due: one clock read per step, no device work."""

    def __init__(self, every: float = TICK):
        self.every = every
        self.next = 0.0

    def due(self) -> bool:
        now = time.perf_counter()
        if now < self.next:
            return False
        self.next = now + self.every
        return True
