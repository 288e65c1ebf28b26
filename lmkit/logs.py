"""Where progress messages go: every layer takes a `log` callable and never prints itself.

The CLI passes one that writes to stderr (lmkit.render.Messages); library callers pass their own or
nothing (`quiet`). One definition, so that a message function means the same everywhere."""

from __future__ import annotations

from typing import Callable

Log = Callable[[str], None]


def quiet(_: str) -> None:
    """The log that says nothing (the library default)."""
