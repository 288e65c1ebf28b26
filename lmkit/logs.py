"""Where progress messages go: every layer takes a `log` callable and never prints itself.

The CLI passes one that writes to stderr (lmkit.render.Messages); library callers pass their own or
nothing (`quiet`). One definition, so that a message function means the same everywhere.

Long work (reading, counting, training, validating, scoring, writing, loading an ARPA file) also reports
how far it is to a `Progress` reporter: the one of the current command, installed by the CLI with
`reporting(...)` and found by `current()`. The library default reports nothing. Reporters: a live bar on a
terminal (`TerminalProgress`), plain lines for a log file (`LineProgress`), JSON lines for scripts
(`JsonProgress`, `--log-format json`); each one throttles itself, so callers may report every step."""

from __future__ import annotations

import contextlib
import contextvars
import json
import math
import sys
import time
from typing import Callable, Iterator

Log = Callable[[str], None]

PHASES = ("reading", "counting", "merging", "smoothing", "loading", "training", "validating", "scoring", "checking",
          "writing")
LOG_FORMATS = ("text", "json")
JSON_EVERY = 1.0  # seconds between two JSON progress lines (phases and events are always written)
BAR_EVERY = 0.1  # seconds between two updates pushed to the live bar (it redraws itself 4 times a second)


def quiet(_: str) -> None:
    """The log that says nothing (the library default)."""


class Progress:
    """How far long work is; this base class reports nothing (the library default).

    phase(name, total, label): a new phase (one of PHASES); `total` makes `update(done)` a fraction.
    update(done, **fields): the position in the phase and the numbers worth showing (step, tokens_per_second,
    loss, valid_ppl, eta_seconds, ...); cheap to call often. event(kind, **fields): a one-off record (a
    validation, an estimate). Every reporter is also a context manager that closes it."""

    live = False  # draws a bar that log lines must not break (the CLI routes its messages through it)

    def phase(self, name: str, total: float | None = None, label: str = "") -> None:
        pass

    def update(self, done: float | None = None, **fields) -> None:
        pass

    def event(self, kind: str, **fields) -> None:
        pass

    def close(self) -> None:
        pass


NOTHING = Progress()
_CURRENT: contextvars.ContextVar[Progress | None] = contextvars.ContextVar("lmkit_progress", default=None)


def current() -> Progress:
    """The reporter of the current command (NOTHING when none is installed)."""
    return _CURRENT.get() or NOTHING


def installed() -> bool:
    return _CURRENT.get() is not None


@contextlib.contextmanager
def reporting(progress: Progress) -> Iterator[Progress]:
    """Install `progress` as the current reporter while the block runs; closed at its end."""
    token = _CURRENT.set(progress)
    try:
        yield progress
    finally:
        _CURRENT.reset(token)
        progress.close()


def describe(fields: dict, short: bool = False) -> str:
    """The numbers of an update as people read them: `step 120/1,400  1,234 tok/s  loss 5.810  valid ppl 312.40
    0:12 left`; `short` (the bar, which shows the steps) leaves out the step and says `ppl`."""
    parts = []
    if fields.get("step") is not None and not short:
        steps = fields.get("steps")
        parts.append(f"step {fields['step']:,}" + (f"/{steps:,}" if steps else ""))
    if fields.get("tokens_per_second"):
        parts.append(f"{fields['tokens_per_second']:,.0f} tok/s")
    if fields.get("loss") is not None:
        parts.append(f"loss {fields['loss']:.3f}")
    if fields.get("valid_ppl") is not None:
        parts.append(f"{'' if short else 'valid '}ppl {fields['valid_ppl']:.2f}")
    if fields.get("eta_seconds") is not None:
        budget = fields.get("budget_seconds")
        parts.append(f"{clock(fields['eta_seconds'])} left" + (f" of {clock(budget)}" if budget and not short else ""))
    return "  ".join(parts)


def clock(seconds: float) -> str:
    """0:07, 3:05, 1:02:03."""
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = max(0, int(round(seconds)))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class JsonProgress(Progress):
    """`--log-format json`: one JSON object per line on `out` (stderr): {"event": "phase" | "progress" |
    "validation" | "estimate" | "message", "elapsed": seconds since the command began, ...}."""

    def __init__(self, out=None, *, chatty: bool = True):
        self.out, self.chatty = out, chatty  # not chatty (--quiet): messages only
        self.started = time.monotonic()
        self.name: str | None = None
        self.last = -math.inf

    def write(self, event: str, **fields) -> None:
        if not self.chatty and event != "message":
            return
        record = {"event": event, "elapsed": round(time.monotonic() - self.started, 3), **fields}
        # JSON has no NaN/Infinity: such a number (a diverged loss) is written as null
        record = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
        print(json.dumps(record, ensure_ascii=False, default=str), file=self.out or sys.stderr, flush=True)

    def phase(self, name: str, total: float | None = None, label: str = "") -> None:
        self.name, self.last = name, -math.inf
        self.write("phase", phase=name, total=total, label=label or None)

    def update(self, done: float | None = None, **fields) -> None:
        now = time.monotonic()
        if now - self.last >= JSON_EVERY:
            self.last = now
            self.write("progress", phase=self.name, done=done, **fields)

    def event(self, kind: str, **fields) -> None:
        self.write(kind, **fields)

    def message(self, text: str) -> None:
        """A log line as an event: `warning: ...` lines are level warning."""
        warning = text.startswith("warning: ")
        self.write("message", level="warning" if warning else "info", text=text[9:] if warning else text)


class LineProgress(Progress):
    """stderr is a file (or not a terminal): no bar; one line per validation, so a log shows the curve."""

    def __init__(self, out=None):
        self.out = out

    def event(self, kind: str, **fields) -> None:
        if kind == "validation" and fields.get("valid_ppl") is not None:
            print(f"validation: {describe(fields)}", file=self.out or sys.stderr, flush=True)


class TerminalProgress(Progress):
    """A live rich bar on stderr, within 80 columns: the phase, a bar, the numbers of `describe` (the phase's
    label outside training), the elapsed time. It redraws itself 4 times a second, so it never looks frozen
    however long a step takes; it is gone when the command ends (its messages stay)."""

    live = True

    def __init__(self):
        from rich.console import Console
        from rich.progress import BarColumn, Progress as Bar, TextColumn, TimeElapsedColumn

        self.bar = Bar(TextColumn("[bold]{task.description:<10}"), BarColumn(bar_width=12),
                       TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=Console(stderr=True),
                       transient=True, refresh_per_second=4, redirect_stdout=False, redirect_stderr=True)
        self.task = self.bar.add_task("", total=None, info="")
        self.name = ""
        self.fields: dict = {}
        self.last = -math.inf
        self.closed = False
        self.bar.start()

    def info(self, label: str = "") -> str:
        return describe(self.fields, short=True) if self.name in ("training", "validating") else label

    def phase(self, name: str, total: float | None = None, label: str = "") -> None:
        """A new task for each phase: a bar when it has a total, a pulse when not; its own elapsed time."""
        self.name = name
        self.bar.remove_task(self.task)
        self.task = self.bar.add_task(name, total=total, info=self.info(label))
        self.bar.refresh()
        self.last = -math.inf

    def update(self, done: float | None = None, **fields) -> None:
        self.fields.update(fields)
        now = time.monotonic()
        if now - self.last >= BAR_EVERY:
            self.last = now
            self.bar.update(self.task, completed=done, **({"info": self.info()} if fields else {}))

    def event(self, kind: str, **fields) -> None:
        if kind == "validation":
            self.fields["valid_ppl"] = fields.get("valid_ppl")

    def message(self, text: str) -> None:
        if self.closed:
            print(text, file=sys.stderr, flush=True)
        else:
            self.bar.console.print(text, markup=False, highlight=False)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.bar.stop()


def say(text: str) -> None:
    """A message line on stderr: through the current reporter when it writes JSON or draws a bar."""
    progress = current()
    if hasattr(progress, "message"):
        progress.message(text)
    else:
        print(text, file=sys.stderr, flush=True)


def reporter(quiet_: bool = False, log_format: str = "text", *, terminal: bool | None = None) -> Progress:
    """The reporter a command uses: nothing with --quiet; JSON lines with --log-format json (with --quiet:
    messages only); a live bar when stderr and stdout are terminals; else a line per validation. `terminal`
    overrides the detection."""
    if log_format == "json":
        return JsonProgress(chatty=not quiet_)
    if quiet_:
        return NOTHING
    if terminal is None:
        terminal = sys.stderr.isatty() and sys.stdout.isatty()
    return TerminalProgress() if terminal else LineProgress()
