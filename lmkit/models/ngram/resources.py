"""How n-gram counts are computed: in memory, out of core (--memory, --tmp) or on Dask (--engine, --scheduler).

These are resources, not model settings: they change where and how fast counts are made, never the
counts themselves, so they stay out of NgramConfig (and out of a run's config identity) and go into
fit_info instead. Everything here is checked before any data is read."""

from __future__ import annotations

import math
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ...errors import UsageError

ENGINES = ("local", "dask")
# The smallest budget that still makes progress: a merge needs two runs' read buffers of MIN_BLOCK rows
# plus the rows of a counting chunk (see external.BYTES_PER_TOKEN and sorted_runs.Merger.for_budget).
MIN_MEMORY = 64 * 1024
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"^\s*(?P<num>[0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(?P<unit>[kmgt]?)(?:i?b)?\s*$", re.I)


def parse_memory(value: str | int | float) -> int:
    """'512K', '64M', '4G', '1.5G' (binary units; a bare number is bytes) -> bytes, or one-line UsageError."""
    if isinstance(value, bool):
        raise UsageError(f"--memory expects a size such as 512M or 4G, got {value!r}")
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    else:
        m = _SIZE.match(str(value))
        if m is None:
            raise UsageError(f"--memory expects a size such as 512K, 64M, 4G or 1.5G, got {value!r}")
        number, unit = float(m["num"]), m["unit"].lower()
    if not math.isfinite(number) or number <= 0:
        raise UsageError(f"--memory must be a positive size, got {value!r}")
    size = int(number * _UNITS[unit])
    if size < MIN_MEMORY:
        raise UsageError(f"--memory {value} is too small to make progress; give at least {MIN_MEMORY // 1024}K")
    return size


def check_tmp(value: str | Path) -> Path:
    """--tmp must be an existing folder this process can create files in."""
    path = Path(value).expanduser()
    if not path.is_dir():
        raise UsageError(f"--tmp {value}: not a folder (spill files go into a private folder inside it)")
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"--tmp {value}: the folder is not writable")
    return path


@dataclass
class CountingPlan:
    """Where and how n-grams are counted. memory=None with engine 'local' is the plain in-memory path."""

    memory: int | None = None  # bytes for counting and smoothing buffers (--memory); None: unbounded
    tmp: Path | None = None  # folder for spill files (--tmp); None: the system temp folder
    engine: str = "local"  # local (this process) or dask
    scheduler: str | None = None  # dask: tcp://host:port or local[:N]; None: local with one worker per core

    @classmethod
    def from_options(cls, memory=None, tmp=None, engine=None, scheduler=None) -> "CountingPlan":
        engine = (engine or "local").strip().lower()
        if engine not in ENGINES:
            raise UsageError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        if scheduler is not None and engine != "dask":
            raise UsageError("--scheduler chooses the Dask cluster; it needs --engine dask")
        if tmp is not None and engine == "dask":
            raise UsageError("--tmp applies to the local engine's spill files; Dask workers count their "
                             "shards in memory (drop --tmp)")
        if tmp is not None and memory is None:
            raise UsageError("--tmp is where --memory spills counts to disk; give --memory too")
        plan = cls(memory=None if memory is None else parse_memory(memory),
                   tmp=None if tmp is None else check_tmp(tmp), engine=engine, scheduler=scheduler)
        if engine == "dask":
            from .dask_engine import check_scheduler

            plan.scheduler = check_scheduler(scheduler)
        return plan

    @property
    def in_memory(self) -> bool:
        return self.engine == "local" and self.memory is None

    def spill_root(self) -> Path:
        return self.tmp if self.tmp is not None else Path(tempfile.gettempdir())

    def describe(self) -> dict:
        """What fit_info records about the plan (not part of the config identity)."""
        out: dict = {"engine": "external" if self.engine == "local" and self.memory else self.engine}
        if self.memory is not None:
            out["memory_bytes"] = self.memory
        if self.scheduler is not None:
            out["scheduler"] = self.scheduler
        return out
