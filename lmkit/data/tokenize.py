"""Turn a line of text into tokens under a protocol (word or char level)."""

from __future__ import annotations

import re
import unicodedata

from ..protocol import Protocol

# KenLM splits on ASCII whitespace only; NBSP and other Unicode spaces stay inside tokens.
_ASCII_WS = re.compile(r"[ \t\r\x0b\x0c]+")


def is_blank(line: str) -> bool:
    """A whitespace-only line is formatting, not a sequence."""
    return _ASCII_WS.sub("", line) == ""


def normalise(line: str, protocol: Protocol) -> str:
    if protocol.normalize:
        line = unicodedata.normalize(protocol.normalize, line)
    if protocol.lowercase:
        line = line.lower()
    return line


def tokenize(line: str, protocol: Protocol) -> list[str]:
    """Tokens of one line (no <s>/</s>); the line must not contain its newline."""
    line = normalise(line, protocol)
    if protocol.level == "char":
        return list(line.rstrip("\r"))
    return [t for t in _ASCII_WS.split(line) if t]


def detokenize(tokens: list[str], level: str) -> str:
    return "".join(tokens) if level == "char" else " ".join(tokens)
