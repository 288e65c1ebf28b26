"""Where lmkit keeps what it can rebuild: downloaded corpora and encoded token files.

XDG base directories: $LMKIT_CACHE if set, else $XDG_CACHE_HOME/lmkit, else ~/.cache/lmkit. Nothing in
the cache is needed for correctness: deleting it only costs a download or an encode."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """The cache folder (not created here: callers create the subfolder they write)."""
    if os.environ.get("LMKIT_CACHE"):
        return Path(os.environ["LMKIT_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "lmkit"


def cache_dir(kind: str) -> Path:
    """A subfolder of the cache for one kind of artifact ('corpora', 'tokens')."""
    return cache_root() / kind
