"""Find and read corpus files; turn text into id sequences under a protocol.

Every failure to read text (missing, empty, binary, bad UTF-8) is a one-line DataError naming the
file (and line, for encoding errors)."""

from __future__ import annotations

import hashlib
import re
import sys
from collections import Counter
from itertools import chain
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError, UsageError
from ..protocol import Protocol
from .tokenize import is_blank, tokenize_lines
from .vocab import Vocab

SPLIT_ALIASES = {"train": ("train",), "valid": ("valid", "val", "dev"), "test": ("test",)}


@dataclass
class Text:
    """The raw lines of one file (or stdin) and where they came from."""

    name: str
    lines: list[str]
    sha256: str


@dataclass
class Encoded:
    """A text as id sequences: one array per scored line (without <s>/</s>)."""

    name: str
    sha256: str
    sequences: list[np.ndarray]
    line_numbers: list[int]  # 1-based line of each sequence in the input
    skipped_blank_lines: int = 0
    reserved_tokens: int = 0  # literal <s>, </s>, <pad> mapped to <unk>
    characters: int = 0  # char level: code points in scored sequences (for bits per char)

    @property
    def num_tokens(self) -> int:
        """Scored tokens: every token plus one </s> per sequence."""
        return int(sum(len(s) for s in self.sequences)) + len(self.sequences)


def read_text(path: str | Path) -> Text:
    """Read a UTF-8 text file, or stdin for '-', into lines (newline and a trailing CR removed)."""
    if str(path) == "-":
        data = sys.stdin.buffer.read()
        name = "<stdin>"
    else:
        p = Path(path)
        name = str(p)
        if p.is_dir():
            raise DataError(f"{name}: is a directory, expected a text file")
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise DataError(f"{name}: file not found") from None
        except OSError as exc:
            raise DataError(f"{name}: cannot read ({exc.strerror})") from None
    if not data.strip():
        raise DataError(f"{name}: file is empty")
    if b"\x00" in data:
        raise DataError(f"{name}: looks like a binary file (contains NUL bytes), expected UTF-8 text")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{name}: line {line}: invalid UTF-8 (byte 0x{data[exc.start]:02x}); "
                        "lmkit reads UTF-8 text only") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [ln[:-1] if ln.endswith("\r") else ln for ln in lines]
    return Text(name, lines, hashlib.sha256(data).hexdigest())


def count_tokens(text: Text, protocol: Protocol) -> Counter:
    lines = [ln for ln in text.lines if not is_blank(ln)]
    return Counter(chain.from_iterable(tokenize_lines(lines, protocol)))


def encode(text: Text, vocab: Vocab, protocol: Protocol) -> Encoded:
    """Map every non-blank line to ids; blank lines are skipped and counted (unless kept).

    Tokens of the whole text are mapped in one pass and split back into lines (no per-line numpy)."""
    kept: list[str] = []
    line_numbers: list[int] = []
    skipped = 0
    for i, line in enumerate(text.lines, start=1):
        if is_blank(line):
            if not protocol.keep_blank_lines:
                skipped += 1
                continue
            line = ""
        kept.append(line)
        line_numbers.append(i)
    token_lists = tokenize_lines(kept, protocol)
    lengths = np.fromiter((len(t) for t in token_lists), dtype=np.int64, count=len(token_lists))
    flat, reserved = vocab.encode(list(chain.from_iterable(token_lists)))
    chars = int(lengths.sum()) if protocol.level == "char" else 0  # only bits-per-char needs it
    sequences = np.split(flat, np.cumsum(lengths)[:-1]) if len(token_lists) else []
    return Encoded(text.name, text.sha256, sequences, line_numbers, skipped, reserved, chars)


# -- corpus directories -------------------------------------------------------------------------------
def _split_pattern(alias: str) -> re.Pattern:
    # train.txt, *.train.txt, train.*, *.train.*  (e.g. ptb.train.txt, wiki.train.tokens)
    return re.compile(rf"^(?:.*\.)?{alias}(?:\..+)?$")


@dataclass
class CorpusFiles:
    train: Path | None = None
    valid: Path | None = None
    test: Path | None = None
    extra: dict = field(default_factory=dict)

    def get(self, split: str) -> Path | None:
        return getattr(self, split)


def find_split(directory: Path, split: str) -> Path | None:
    """The single file in `directory` that holds `split`, by the naming rules of DESIGN.md §5."""
    candidates = []
    for alias in SPLIT_ALIASES[split]:
        pat = _split_pattern(alias)
        candidates += [p for p in sorted(directory.iterdir()) if p.is_file() and pat.match(p.name)]
        if candidates:
            break
    candidates = [p for p in candidates if not p.name.startswith(".")]
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates)
        raise UsageError(f"{directory}: several files could be the {split} split ({names}); "
                         f"name one with --{split}")
    return candidates[0] if candidates else None


def locate(corpus: str | Path | None, train=None, valid=None, test=None, *, need=("train",)) -> CorpusFiles:
    """Resolve a corpus directory and/or explicit split files; check that the needed splits exist."""
    files = CorpusFiles()
    if corpus is not None:
        d = Path(corpus)
        if not d.exists():
            raise DataError(f"{d}: corpus directory not found")
        if not d.is_dir():
            raise DataError(f"{d}: --corpus expects a directory with train/valid/test files")
        for split in ("train", "valid", "test"):
            setattr(files, split, find_split(d, split))
    for split, value in (("train", train), ("valid", valid), ("test", test)):
        if value is not None:
            setattr(files, split, Path(value) if str(value) != "-" else value)
    missing = [s for s in need if files.get(s) is None]
    if missing:
        where = f"{corpus}" if corpus is not None else "the given files"
        raise DataError(f"{where}: no {' or '.join(missing)} split found "
                        f"(expected files such as {missing[0]}.txt; or pass --{missing[0]} FILE)")
    return files


def bundled_corpus() -> Path:
    """The Shakespeare corpus shipped with lmkit (package data in a wheel, corpora/ in a checkout)."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "corpora" / "shakespeare", here.parent / "corpora" / "shakespeare"):
        if (candidate / "train.txt").exists():
            return candidate
    raise DataError("the bundled corpus is missing from this installation (corpora/shakespeare)")
