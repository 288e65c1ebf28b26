"""The evaluation protocol: everything besides the model that changes a perplexity.

Two numbers are comparable only when their protocols hash the same (docs/protocol.md)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields

from .errors import UsageError

LEVELS = ("word", "char", "bpe", "unigram")
SUBWORD_LEVELS = ("bpe", "unigram")  # levels whose tokens come from a tokenizer trained on the text (data/subword.py)
CONTEXTS = ("sentence", "stream")
BLANK_CHARACTERS = " \t\r\x0b\x0c"  # a line of only these is formatting, not a sequence (skipped or kept empty)
NORMALIZATIONS = (None, "NFC", "NFD", "NFKC", "NFKD")
TASKS = ("lm", "translate")


@dataclass(frozen=True)
class Protocol:
    level: str = "word"  # word: ASCII-whitespace split; char: every code point; bpe/unigram: trained subwords
    lowercase: bool = False
    context: str = "sentence"  # sentence: each line from <s>; stream: context carried across </s>
    keep_blank_lines: bool = False  # True: blank lines are empty sequences whose </s> is scored
    normalize: str | None = None  # optional Unicode normalisation form
    tokenizer: str = "whitespace"
    task: str = "lm"  # lm: every token scored; translate: `source <sep> target`, target side scored

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise UsageError(f"unknown level {self.level!r}; choose one of {', '.join(LEVELS)}")
        if self.level in SUBWORD_LEVELS and self.tokenizer == "whitespace":  # the default names the word level's split
            object.__setattr__(self, "tokenizer", "bytelevel")
        if self.context not in CONTEXTS:
            raise UsageError(f"unknown context {self.context!r}; choose one of {', '.join(CONTEXTS)}")
        if self.normalize not in NORMALIZATIONS:
            raise UsageError(f"unknown normalisation {self.normalize!r}; choose NFC, NFD, NFKC or NFKD")
        if self.task not in TASKS:
            raise UsageError(f"unknown task {self.task!r}; choose one of {', '.join(TASKS)}")
        if self.task == "translate" and self.context != "sentence":
            raise UsageError("--task translate needs --context sentence: each pair is scored on its own, "
                             "from <s> through its source and <sep>")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Protocol":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def hash(self) -> str:
        """Stable short hash of the protocol (key order independent).

        `task` joined the protocol later: at its default ("lm") it is left out, so runs recorded
        before it existed keep their hash; a translate protocol never hashes like an LM one."""
        data = self.to_dict()
        if data["task"] == "lm":
            del data["task"]
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
