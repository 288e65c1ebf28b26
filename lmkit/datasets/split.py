"""Cut one raw text file into train/valid/test files, deterministically and in bounded memory.

`contiguous` (default, the PTB/WikiText convention): the first share of lines is train, the next valid,
the last test; two streaming passes (count, then write). `line`: each line goes where a keyed hash of
(seed, line text) sends it, in one pass: reproducible without storing anything, and identical lines always
land in the same split (a duplicated sentence never straddles train and test).

Input is read by lmkit.data.corpus.LineReader, under read_text's rules (leading BOM dropped, CRLF -> LF, NUL
bytes, invalid UTF-8 and over-long lines refused naming the line), one block of lines at a time."""

from __future__ import annotations

import hashlib
import re
from contextlib import ExitStack
from fractions import Fraction
from pathlib import Path

from ..atomic import atomic_dir
from ..outputs import check_output_dir, write_marker
from ..data.corpus import LineReader
from ..data.columnar import split_words
from ..errors import DataError, UsageError
from ..validate import check_seed

SPLITS = ("train", "valid", "test")
METHODS = ("contiguous", "line")
_HASH_RANGE = 1 << 64


def parse_ratios(ratios: str | tuple | list) -> tuple[Fraction, Fraction, Fraction]:
    """'98/1/1', '0.8/0.1/0.1' or '90,5,5' -> shares of train/valid/test summing to exactly 1.

    The three numbers must sum to 100 or to 1, each at least 0, train above 0."""
    text = ratios if isinstance(ratios, str) else "/".join(str(r) for r in ratios)
    parts = [p.strip() for p in re.split(r"[/,:]", text)]
    try:
        values = [Fraction(p) for p in parts]
    except (ValueError, ZeroDivisionError):
        values = []
    if len(parts) != 3 or len(values) != 3:
        raise UsageError(f"--ratios {text!r}: give three numbers train/valid/test, e.g. 98/1/1 or 0.8/0.1/0.1")
    if any(v < 0 for v in values):
        raise UsageError(f"--ratios {text!r}: shares must not be negative")
    if values[0] <= 0:
        raise UsageError(f"--ratios {text!r}: the train share must be above 0")
    total = sum(values)
    if total not in (1, 100):
        raise UsageError(f"--ratios {text!r}: shares sum to {float(total):g}; they must sum to 100 (or 1)")
    return tuple(v / total for v in values)  # type: ignore[return-value]


def line_thresholds(shares: tuple[Fraction, Fraction, Fraction]) -> tuple[int, int]:
    """--by line: a line whose 64-bit hash is below the first value is train, below the second valid."""
    return int(shares[0] * _HASH_RANGE), int((shares[0] + shares[1]) * _HASH_RANGE)


def line_split(line: str, key: bytes, thresholds: tuple[int, int]) -> int:
    """0/1/2 (train/valid/test) for one line under --by line: a keyed hash of its text."""
    h = int.from_bytes(hashlib.blake2b(line.encode("utf-8"), key=key, digest_size=8).digest(), "big")
    return 0 if h < thresholds[0] else 1 if h < thresholds[1] else 2


def contiguous_bounds(n: int, shares: tuple[Fraction, Fraction, Fraction]) -> tuple[int, int]:
    """Line indices where valid and test start: n times the cumulative shares, rounded half up."""
    def half_up(x: Fraction) -> int:
        return int(x + Fraction(1, 2))
    return half_up(n * shares[0]), half_up(n * (shares[0] + shares[1]))


class _Writers:
    """The split files of one output folder, with line and whitespace-token counts."""

    def __init__(self, folder: Path, shares, stack: ExitStack):
        self.paths = {s: folder / f"{s}.txt" for s, share in zip(SPLITS, shares) if share > 0}
        self.files = {s: stack.enter_context(open(p, "w", encoding="utf-8", newline="\n"))
                      for s, p in self.paths.items()}
        self.lines = [0, 0, 0]
        self.tokens = [0, 0, 0]

    def write(self, split: int, lines: list[str]) -> None:
        """Append whole lines to split 0/1/2 (train/valid/test)."""
        if not lines:
            return
        self.files[SPLITS[split]].write("\n".join(lines) + "\n")
        self.lines[split] += len(lines)
        self.tokens[split] += int(split_words(lines)[1].sum())

    def rows(self) -> list[dict]:
        total = sum(self.lines) or 1
        return [{"split": s, "file": str(self.paths.get(s, "")), "lines": self.lines[i], "tokens": self.tokens[i],
                 "share": round(self.lines[i] / total, 6)} for i, s in enumerate(SPLITS)]


def split_into(source: str | Path, folder: Path, ratios, *, by: str = "contiguous", seed: int = 0) -> list[dict]:
    """Write train/valid/test .txt files for `source` into the existing `folder`; one row per split.

    A split whose share is 0 gets no file. DataError when the train split would be empty."""
    shares = parse_ratios(ratios)
    if by not in METHODS:
        raise UsageError(f"--by {by!r}: use one of {', '.join(METHODS)}")
    check_seed(seed)
    if by == "contiguous" and str(source) == "-":
        raise UsageError("--by contiguous reads the input twice (count, then write): give a file, not stdin "
                         "(or use --by line)")
    with ExitStack() as stack:
        out = _Writers(folder, shares, stack)
        if by == "contiguous":
            n = sum(len(block) for block in LineReader(source))  # the first pass also checks the whole input
            b1, b2 = contiguous_bounds(n, shares)
            start = 0
            for block in LineReader(source):
                end = start + len(block)
                for split, (lo, hi) in enumerate(((0, b1), (b1, b2), (b2, n))):
                    out.write(split, block[max(lo, start) - start:max(min(hi, end) - start, 0)])
                start = end
        else:
            key = hashlib.sha256(f"lmkit-split:{seed}".encode()).digest()
            thresholds = line_thresholds(shares)
            for block in LineReader(source):
                buckets: tuple[list[str], list[str], list[str]] = ([], [], [])
                for line in block:
                    buckets[line_split(line, key, thresholds)].append(line)
                for split, lines in enumerate(buckets):
                    out.write(split, lines)
    rows = out.rows()
    if rows[0]["lines"] == 0:
        raise DataError(f"{source}: too few lines for these ratios: the train split would be empty")
    return rows


def split_file(source: str | Path, output: str | Path, ratios, *, by: str = "contiguous", seed: int = 0,
               force: bool = False) -> list[dict]:
    """Split `source` into a new corpus folder `output` (train.txt, valid.txt, test.txt), written atomically.

    An existing non-empty folder is refused unless `force`, which replaces it only once the new one is
    complete; a folder holding the input itself is never replaced."""
    out = Path(output)
    parse_ratios(ratios)  # bad options fail before the input is read
    check_seed(seed)
    if by not in METHODS:
        raise UsageError(f"--by {by!r}: use one of {', '.join(METHODS)}")
    out = check_output_dir(out, force, inputs=[source])
    with atomic_dir(out, replace=force) as tmp:
        rows = split_into(source, tmp, ratios, by=by, seed=seed)
        write_marker(tmp, "corpus split")  # lmkit made this folder: a later --force may replace it
    for row in rows:
        if row["file"]:
            row["file"] = str(out / Path(row["file"]).name)
    return rows

