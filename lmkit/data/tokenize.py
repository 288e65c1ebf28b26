"""Turn a line of text into tokens under a protocol (word, char, or subword through the vocabulary's tokenizer)."""

from __future__ import annotations

import re
import unicodedata

from ..errors import UsageError
from ..protocol import BLANK_CHARACTERS, Protocol
from .subword import SUBWORD_LEVELS

# KenLM splits on ASCII whitespace only; NBSP and other Unicode spaces stay inside tokens.
_ASCII_WS = re.compile(r"[ \t\r\x0b\x0c]+")


def is_blank(line: str) -> bool:
    """A whitespace-only line is formatting, not a sequence."""
    return not line.strip(BLANK_CHARACTERS)


def normalise(line: str, protocol: Protocol) -> str:
    if protocol.normalize:
        line = unicodedata.normalize(protocol.normalize, line)
    if protocol.lowercase:
        line = line.lower()
    return line


def normalise_lines(lines: list[str], protocol: Protocol) -> list[str]:
    """normalise() for many lines (the lines themselves when the protocol changes nothing)."""
    if not (protocol.normalize or protocol.lowercase):
        return lines
    return [normalise(line, protocol) for line in lines]


def split_line(line: str) -> list[str]:
    """The fields of one line split on ASCII whitespace only, KenLM's rule (an ARPA line, a word-level line);
    data/columnar.split_words does the same for many lines at once."""
    return [t for t in _ASCII_WS.split(line) if t]


def tokenize(line: str, protocol: Protocol, vocab=None) -> list[str]:
    """Tokens of one line (no <s>/</s>); the line must not contain its newline. Subword levels need the
    vocabulary whose tokenizer cuts them."""
    line = normalise(line, protocol)
    if protocol.level == "char":
        return list(line.rstrip("\r"))
    if protocol.level in SUBWORD_LEVELS:
        if vocab is None:
            raise UsageError(f"{protocol.level}-level text is tokenised by its vocabulary's tokenizer")
        return vocab.subword.tokens(line)
    return split_line(line)


def tokenize_lines(lines: list[str], protocol: Protocol) -> list[list[str]]:
    """tokenize() for many lines (char level; word-level texts go through data/columnar.split_words)."""
    return [tokenize(line, protocol) for line in lines]


def detokenize(tokens: list[str], level: str, vocab=None) -> str:
    """Text from tokens: characters joined, words joined by spaces, subword pieces decoded by the vocabulary's
    tokenizer (their spaces are part of the pieces)."""
    if level in SUBWORD_LEVELS:
        if vocab is None:
            raise UsageError(f"{level}-level pieces are decoded by their vocabulary's tokenizer")
        return vocab.subword.decode(tokens)
    return "".join(tokens) if level == "char" else " ".join(tokens)
