"""The evaluation protocol: everything besides the model that changes a perplexity.

Two numbers are comparable only when their protocols hash the same (DESIGN.md §1)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields

from .errors import UsageError

LEVELS = ("word", "char")
CONTEXTS = ("sentence", "stream")
NORMALIZATIONS = (None, "NFC", "NFD", "NFKC", "NFKD")


@dataclass(frozen=True)
class Protocol:
    level: str = "word"  # word: ASCII-whitespace split; char: every code point
    lowercase: bool = False
    context: str = "sentence"  # sentence: each line from <s>; stream: context carried across </s>
    keep_blank_lines: bool = False  # True: blank lines are empty sequences whose </s> is scored
    normalize: str | None = None  # optional Unicode normalisation form
    tokenizer: str = "whitespace"

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise UsageError(f"unknown level {self.level!r}; choose one of {', '.join(LEVELS)}")
        if self.context not in CONTEXTS:
            raise UsageError(f"unknown context {self.context!r}; choose one of {', '.join(CONTEXTS)}")
        if self.normalize not in NORMALIZATIONS:
            raise UsageError(f"unknown normalisation {self.normalize!r}; choose NFC, NFD, NFKC or NFKD")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Protocol":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def hash(self) -> str:
        """Stable short hash of the protocol (key order independent)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
