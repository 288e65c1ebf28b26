"""Find and read corpus files; turn text into id sequences under a protocol.

Every failure to read text (missing, empty, binary, bad UTF-8, a line too long) is a one-line DataError
naming the file (and the line, for encoding errors and long lines)."""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import chain
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import DataError, UsageError
from ..protocol import Protocol
from .subword import SUBWORD_LEVELS
from .columnar import Words, blank_lines, positions, split_words, token_lengths
from .sequences import ITEM_DTYPE, SequenceView
from .tokenize import is_blank, normalise_lines, tokenize_lines
from .vocab import SEP, UNK, Vocab

SPLIT_ALIASES = {"train": ("train",), "valid": ("valid", "val", "dev"), "test": ("test",)}


@dataclass
class Text:
    """The raw lines of one file (or stdin) and where they came from."""

    name: str
    lines: list[str]
    sha256: str
    # word level: the lines split once (protocol key, tokens, tokens per line), kept from counting the vocabulary
    # until the text is encoded, so the two share one split (words_of)
    words_memo: tuple | None = field(default=None, repr=False, compare=False)


@dataclass
class Encoded:
    """A text as id sequences: one array per scored line (without <s>/</s>).

    `sequences` and `line_numbers` are lists, or lazy list-like views over a memory-mapped token file
    (lmkit.data.tokenfile): only len, indexing, slicing and iteration may be relied on."""

    name: str
    sha256: str
    sequences: Sequence[np.ndarray]
    line_numbers: Sequence[int]  # 1-based line of each sequence in the input
    skipped_blank_lines: int = 0
    reserved_tokens: int = 0  # literal <s>, </s>, <pad> mapped to <unk>
    characters: int = 0  # char level: code points in scored sequences (for bits per char)
    # Parallel data (`source <sep> target` per sequence): index of the first target token of each
    # sequence; only positions from there on (and </s>) are scored and trained. None: plain LM data.
    score_from: list[int] | None = None
    # Tokenisation-independent denominators of the scored text (docs/protocol.md, "Bits per byte"): UTF-8
    # bytes of the scored lines plus one newline each, whitespace words plus one end of line each, and the
    # bytes of the tokens that became <unk>. 0: not measured (token files written before they existed).
    text_bytes: int = 0
    words: int = 0
    unk_bytes: int = 0

    @property
    def num_tokens(self) -> int:
        """Scored tokens: every token (target tokens only for parallel data) plus one </s> per sequence."""
        ids = getattr(self.sequences, "num_ids", None)  # a token file view knows it without a pass
        total = (int(ids) if ids is not None else int(sum(len(s) for s in self.sequences))) + len(self.sequences)
        return total - (int(sum(self.score_from)) if self.score_from is not None else 0)


# A line is one scored sequence, held in memory with its tokens; a longer line is almost surely not text
# (a dump, a minified file, a corpus without newlines) and would cost gigabytes before failing. Refused
# while reading, so the refusal itself takes bounded memory. LMKIT_MAX_LINE_BYTES raises (or lowers) it.
MAX_LINE_BYTES = 16 * 1024 * 1024
_READ_CHUNK = 1 << 20


def max_line_bytes() -> int:
    """The longest line read_text accepts, in bytes (LMKIT_MAX_LINE_BYTES, else MAX_LINE_BYTES)."""
    raw = os.environ.get("LMKIT_MAX_LINE_BYTES")
    if raw is None or not raw.strip():
        return MAX_LINE_BYTES
    try:
        value = int(raw)
    except ValueError:
        raise UsageError(f"LMKIT_MAX_LINE_BYTES must be a whole number of bytes, got {raw!r}") from None
    if value < 1:
        raise UsageError(f"LMKIT_MAX_LINE_BYTES must be at least 1, got {value}")
    return value


@contextmanager
def _open_bytes(path: str | Path, name: str) -> Iterator[BinaryIO]:
    """The bytes of a file, or of stdin for '-'; a missing or unreadable file is a DataError naming it."""
    if str(path) == "-":
        yield sys.stdin.buffer
        return
    p = Path(path)
    if p.is_dir():
        raise DataError(f"{name}: is a directory, expected a text file")
    try:
        fh = open(p, "rb")
    except FileNotFoundError:
        raise DataError(f"{name}: file not found") from None
    except OSError as exc:
        raise DataError(f"{name}: cannot read ({exc.strerror})") from None
    with fh:
        yield fh


def _text_name(path: str | Path) -> str:
    return "<stdin>" if str(path) == "-" else str(Path(path))


class LineReader:
    """The lines of a UTF-8 text file (or stdin for '-'), read and checked one block at a time.

    Iterating yields lists of lines, each block holding whole lines from about `block_bytes` of input, so
    memory is bounded by the block (and the longest line), not the file. The rules are read_text's (which
    is built on this): a leading BOM is dropped, CRLF and a final CR become LF, and a DataError refuses a
    missing or empty file, NUL bytes, invalid UTF-8 (line named) and a line over max_line_bytes(). Checks
    run block by block, so in a file with several defects the first block's defect is the one reported.
    `sha256` (of the bytes after the BOM) is set once the last line has been read."""

    def __init__(self, path: str | Path, block_bytes: int = _READ_CHUNK):
        self.path = path
        self.name = _text_name(path)
        self.block_bytes = block_bytes
        self.sha256: str | None = None

    def __iter__(self) -> Iterator[list[str]]:
        limit = max_line_bytes()
        with _open_bytes(self.path, self.name) as stream:
            try:
                yield from self._blocks(stream, limit)
            except OSError as exc:
                raise DataError(f"{self.name}: cannot read ({exc.strerror})") from None

    def _blocks(self, stream: BinaryIO, limit: int) -> Iterator[list[str]]:
        # Raw chunks are at most `limit` bytes, so only the line running on from earlier chunks can be too
        # long; a line that starts inside a chunk is shorter than the chunk. Refusals keep read_text's order
        # of precedence for a file with several defects (a too-long line anywhere, then NUL bytes anywhere,
        # then the first invalid UTF-8): after the first NUL or bad byte nothing more is decoded or yielded,
        # the rest is only scanned.
        chunk_size = max(1, min(limit, self.block_bytes))
        hasher = hashlib.sha256()
        newlines_read = 0  # newlines in every chunk read so far (for the line numbers of refusals)
        run = 0  # bytes of the unfinished last line read so far
        tail = bytearray()  # the unfinished last line, carried into the next block (grows in place)
        first, content = True, False
        binary = f"{self.name}: looks like a binary file (contains NUL bytes), expected UTF-8 text"
        defect: str | None = None  # the refusal to raise at the end, once the whole input was scanned
        while True:
            chunk = stream.read(chunk_size)
            if chunk:
                nl = chunk.find(b"\n")
                length = run + (nl if nl >= 0 else len(chunk))
                if length > limit:
                    raise DataError(f"{self.name}: line {newlines_read + 1}: longer than {limit:,} bytes; lmkit "
                                    "scores each line as one sequence and keeps it in memory (split the text into "
                                    "lines, or raise the limit with LMKIT_MAX_LINE_BYTES)")
                last = chunk.rfind(b"\n") if nl >= 0 else -1
                if nl >= 0:
                    newlines_read += chunk.count(b"\n")
                    run = len(chunk) - last - 1
                else:
                    run = length
                if b"\x00" in chunk:
                    defect = binary
                if defect is not None:
                    continue
                if nl < 0:
                    tail += chunk
                    continue
                block, tail = bytes(tail) + chunk[:last + 1], bytearray(chunk[last + 1:])
            elif defect is not None:
                raise DataError(defect)
            else:
                block, tail = bytes(tail), bytearray()
            if first and block.startswith(b"\xef\xbb\xbf"):
                block = block[3:]
            first = False
            hasher.update(block)
            content = content or bool(block.strip())
            try:
                text = block.decode("utf-8")
            except UnicodeDecodeError as exc:
                # a block ends at the last newline read so far (or is the file's end)
                line = newlines_read - block.count(b"\n", exc.start) + 1
                defect = (f"{self.name}: line {line}: invalid UTF-8 (byte 0x{block[exc.start]:02x}); "
                          "lmkit reads UTF-8 text only")
                if not chunk:
                    raise DataError(defect) from None
                continue
            lines = text.split("\n")
            if lines[-1] == "":
                lines.pop()
            if lines:
                yield [ln[:-1] if ln.endswith("\r") else ln for ln in lines] if "\r" in text else lines
            if not chunk:
                break
        if not content:
            raise DataError(f"{self.name}: file is empty")
        self.sha256 = hasher.hexdigest()


def read_text(path: str | Path) -> Text:
    """Read a UTF-8 text file, or stdin for '-', into lines.

    Normalised here, for every command alike: a leading UTF-8 BOM is dropped, CRLF and a final CR become
    LF (a lone CR inside a line stays, and is whitespace between words). Refused with a DataError: a
    missing, unreadable or empty file (only whitespace and/or a BOM), NUL bytes (binary data, UTF-16),
    invalid UTF-8 (file and line named) and a line longer than max_line_bytes(). (LineReader reads it.)"""
    reader = LineReader(path)
    lines: list[str] = []
    for block in reader:
        lines += block
    return Text(reader.name, lines, reader.sha256 or "")


def file_sha256(path: str | Path) -> str:
    """The sha256 read_text gives a file (of its bytes after a leading BOM), computed in chunks without
    decoding: looking up a cached token file costs one pass over the bytes and no memory."""
    name = _text_name(path)
    hasher = hashlib.sha256()
    step = 1 << 18
    with _open_bytes(path, name) as stream:
        try:
            head = stream.read(step)
            hasher.update(memoryview(head)[3:] if head.startswith(b"\xef\xbb\xbf") else head)
            del head
            while chunk := stream.read(step):
                hasher.update(chunk)
        except OSError as exc:
            raise DataError(f"{name}: cannot read ({exc.strerror})") from None
    return hasher.hexdigest()


@dataclass
class ParallelText:
    """A source and a target file whose line i is one translation pair (docs/protocol.md)."""

    source: Text
    target: Text

    def __post_init__(self) -> None:
        ns, nt = len(self.source.lines), len(self.target.lines)
        if ns != nt:
            raise DataError(f"{self.source.name} has {ns} lines but {self.target.name} has {nt}: "
                            "line i of the source must pair with line i of the target")

    @property
    def name(self) -> str:
        return f"{self.source.name} + {self.target.name}"

    @property
    def sha256(self) -> str:
        """One hash for the pair: sha256 over both files' sha256 (source first), so either file
        changing changes it and swapping the direction does too."""
        return hashlib.sha256(f"{self.source.sha256}\n{self.target.sha256}".encode()).hexdigest()


def read_pair(source: str | Path, target: str | Path) -> ParallelText:
    """Read a source and a target file as one parallel text (same number of lines, else DataError)."""
    return ParallelText(read_text(source), read_text(target))


def read_recorded(info: dict, run: str | Path, split: str, hint: str = "") -> Text | ParallelText:
    """The file (or source/target pair) run `run` recorded for `split` in run.json, read again and verified.

    A run's numbers hold for the bytes it was measured on, and a recorded path may since hold other ones:
    every command that re-reads a recorded file (check, score, resume, mix, analyze, compare --bleu) reads
    it here, so a missing or changed file is one DataError naming the file and the run (and `hint`, what
    to do instead), never data silently different from what the run's numbers describe."""
    if not isinstance(info, dict) or not (info.get("path") or info.get("source")):
        raise DataError(f"{run}: run.json records no {split} file{_then(hint)}")
    try:
        text = read_pair(info["source"], info["target"]) if "source" in info else read_text(info["path"])
    except (DataError, KeyError) as exc:
        why = exc.message if isinstance(exc, DataError) else f"no {exc.args[0]} recorded"
        raise DataError(f"{run}: its {split} file is not available ({why}){_then(hint)}") from None
    check_recorded(text.sha256, text.name, info, run, split, hint)
    return text


def check_recorded(sha256: str, name: str, info: dict, run: str | Path, split: str, hint: str = "") -> None:
    """DataError unless `sha256` (of the file `name`, however it was read: text or token file) is the one
    run `run` recorded for `split`; read_recorded's check, for callers that did not read the text."""
    if sha256 != info.get("sha256"):
        raise DataError(f"{name}: changed since {run} recorded its {split} file (sha256 differs){_then(hint)}")


def _then(hint: str) -> str:
    return f"; {hint}" if hint else ""


def count_tokens(text: Text | ParallelText, protocol: Protocol) -> Counter:
    """Token counts of a text; of both sides for a parallel text (one joint vocabulary)."""
    if isinstance(text, ParallelText):
        return count_tokens(text.source, protocol) + count_tokens(text.target, protocol)
    if protocol.level in SUBWORD_LEVELS:
        raise UsageError(f"{protocol.level}-level tokens are counted by the vocabulary that trains them "
                         "(Vocab.build_subword)")
    if protocol.level == "word":
        return words_of(text, protocol).counter()
    lines = [ln for ln in text.lines if not is_blank(ln)]
    return Counter(chain.from_iterable(tokenize_lines(lines, protocol)))


def words_of(text: Text, protocol: Protocol, keep: bool = True) -> Words:
    """The word-level tokens of every line (normalised as the protocol says; none on a blank line). Kept on the
    Text when `keep`, so that encoding after counting does not split again; encoding takes it back (keep=False),
    so a Text holds it only in between. A text split only to be encoded (one to score) is split in parts side by
    side; one split for counting is not, as it is held while the counts are made (Words.split says why)."""
    key = (protocol.lowercase, protocol.normalize)
    memo, text.words_memo = text.words_memo, None
    if memo is None or memo[0] != key:
        memo = (key, Words.split(normalise_lines(text.lines, protocol), side_by_side=not keep))
    if keep:
        text.words_memo = memo
    return memo[1]


@dataclass
class _Mapped:
    """A list of lines as ids, with the counts an Encoded records."""

    sequences: SequenceView
    reserved: int  # literal reserved tokens mapped to <unk>
    tokens: int  # tokens, without </s>
    text_bytes: int  # UTF-8 bytes plus one newline per line
    words: int  # ASCII-whitespace words plus one end of line per line
    unk_bytes: int  # UTF-8 bytes of the tokens mapped to <unk>


def _ids_per_line(lines: list[str], vocab: Vocab, protocol: Protocol, words: Words | None = None) -> _Mapped:
    """The lines mapped to ids in one pass over the whole text (word level: by Arrow's kernels,
    data/columnar.py), and measured in bytes and words. `words`: the lines' tokens, when already split."""
    if protocol.level == "word":
        words = words if words is not None else Words.split(normalise_lines(lines, protocol), side_by_side=True)
        lengths = words.lengths
        flat, reserved, unk_bytes = _word_ids(words, vocab)
    elif protocol.level in SUBWORD_LEVELS:  # every byte has a piece: only a literal reserved token is <unk>
        found, lengths = vocab.subword.encode(normalise_lines(lines, protocol))
        flat, reserved = vocab.encode_found(found)
        unk_bytes = 0
    else:
        token_lists = tokenize_lines(lines, protocol)
        lengths = np.fromiter((len(t) for t in token_lists), dtype=np.int64, count=len(token_lists))
        flat_tokens = list(chain.from_iterable(token_lists))
        flat, reserved = vocab.encode(flat_tokens)
        unk_bytes = sum(len(flat_tokens[i].encode("utf-8")) for i in np.flatnonzero(flat == UNK).tolist())
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    sequences = SequenceView(np.asarray(flat, dtype=ITEM_DTYPE), offsets)
    same_words = protocol.level == "word" and not (protocol.lowercase or protocol.normalize)
    text_bytes, words = text_measures(lines, int(lengths.sum()) if same_words else None)
    return _Mapped(sequences, reserved, int(lengths.sum()), text_bytes, words, unk_bytes)


def _word_ids(words: Words, vocab: Vocab) -> tuple[np.ndarray, int, int]:
    """(each token's id, how many were literal reserved tokens, UTF-8 bytes of the tokens mapped to <unk>), each
    distinct word looked up once."""
    found = positions(words.distinct, vocab.tokens)
    ids, _ = vocab.encode_found(found)
    counts = words.counts()
    reserved = int(counts[(ids == UNK) & (found >= 0) & (found != UNK)].sum())
    unk_bytes = int((token_lengths(words.distinct) * counts)[ids == UNK].sum())
    return ids[words.index], reserved, unk_bytes


def text_measures(lines: list[str], words: int | None = None) -> tuple[int, int]:
    """(UTF-8 bytes plus one newline per line, ASCII-whitespace words plus one end of line per line): the
    denominators of bits per byte and word perplexity (docs/protocol.md). `words`: the count, when known."""
    if words is None:
        words = int(split_words(lines)[1].sum())
    if all(map(str.isascii, lines)):  # a byte per character (Python knows it of every string without a scan)
        size = sum(map(len, lines))
    else:
        size = sum(len(line.encode("utf-8")) for line in lines)
    return size + len(lines), words + len(lines)


def encode_pair(text: ParallelText, vocab: Vocab, protocol: Protocol) -> Encoded:
    """`source <sep> target` ids per pair, with `score_from` at the first target token.

    A pair with a blank side is skipped and counted (with keep_blank_lines the blank side is empty)."""
    if not vocab.has_sep:
        raise UsageError("a parallel corpus needs a vocabulary with <sep> as id 4 (built for --task translate)")
    kept: list[tuple[str, str]] = []
    line_numbers: list[int] = []
    skipped = 0
    for i, (src, tgt) in enumerate(zip(text.source.lines, text.target.lines), start=1):
        if is_blank(src) or is_blank(tgt):
            if not protocol.keep_blank_lines:
                skipped += 1
                continue
            src, tgt = ("" if is_blank(src) else src), ("" if is_blank(tgt) else tgt)
        kept.append((src, tgt))
        line_numbers.append(i)
    src = _ids_per_line([s for s, _ in kept], vocab, protocol)
    tgt = _ids_per_line([t for _, t in kept], vocab, protocol)
    sep = np.array([SEP], dtype=np.int32)
    sequences = [np.concatenate((s, sep, t)) for s, t in zip(src.sequences, tgt.sequences)]
    score_from = [len(s) + 1 for s in src.sequences]
    chars = tgt.tokens if protocol.level == "char" else 0  # per char, per byte, per word: the scored side only
    return Encoded(text.name, text.sha256, sequences, line_numbers, skipped, src.reserved + tgt.reserved, chars,
                   score_from, text_bytes=tgt.text_bytes, words=tgt.words, unk_bytes=tgt.unk_bytes)


def scored_lines(text: Text, protocol: Protocol, blank: np.ndarray | None = None) -> tuple[list[str], list[int], int]:
    """(the lines scored, their 1-based numbers, blank lines skipped): blank lines are skipped and counted,
    or kept as empty lines under keep_blank_lines. `blank`: which lines are blank, when known."""
    blank = blank_lines(text.lines) if blank is None else blank
    skipped = int(blank.sum())
    if not skipped:  # the common case: every line is scored as it is
        return text.lines, list(range(1, len(text.lines) + 1)), 0
    if protocol.keep_blank_lines:
        return ["" if b else ln for ln, b in zip(text.lines, blank.tolist())], \
            list(range(1, len(text.lines) + 1)), 0
    kept_at = np.flatnonzero(~blank)
    return [text.lines[i] for i in kept_at.tolist()], (kept_at + 1).tolist(), skipped


def encode(text: Text | ParallelText, vocab: Vocab, protocol: Protocol) -> Encoded:
    """Map every non-blank line to ids; blank lines are skipped and counted (unless kept).

    Tokens of the whole text are mapped in one pass and split back into lines (no per-line numpy).
    A parallel text gives `source <sep> target` sequences (encode_pair)."""
    if isinstance(text, ParallelText):
        return encode_pair(text, vocab, protocol)
    words = blank = None
    if protocol.level == "word":
        words = words_of(text, protocol, keep=False)
        if not protocol.normalize:  # a line is blank iff it has no word (both split on ASCII whitespace)
            blank = words.lengths == 0
    kept, line_numbers, skipped = scored_lines(text, protocol, blank)
    if words is not None:
        if len(kept) != len(words.lengths):  # blank lines skipped
            words = words.lines(np.asarray(line_numbers, dtype=np.int64) - 1)
    mapped = _ids_per_line(kept, vocab, protocol, words)
    chars = mapped.tokens if protocol.level == "char" else 0  # only bits-per-char needs it
    return Encoded(text.name, text.sha256, mapped.sequences, line_numbers, skipped, mapped.reserved, chars,
                   text_bytes=mapped.text_bytes, words=mapped.words, unk_bytes=mapped.unk_bytes)


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
    """The single file in `directory` that holds `split`, by the naming rules of docs/guide.md."""
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


def _corpus_dir(corpus: str | Path) -> Path:
    """A corpus folder (a downloaded corpus given by name is resolved above this layer, by
    lmkit.datasets.store.resolve_corpus, before it reaches here)."""
    d = Path(corpus)
    if not d.exists():
        raise DataError(f"{d}: corpus directory not found")
    if not d.is_dir():
        raise DataError(f"{d}: --corpus expects a directory with train/valid/test files")
    return d


def locate(corpus: str | Path | None, train=None, valid=None, test=None, *, need=("train",)) -> CorpusFiles:
    """Resolve a corpus directory and/or explicit split files; check that the needed splits exist."""
    files = CorpusFiles()
    if corpus is not None:
        d = _corpus_dir(corpus)
        for split in ("train", "valid", "test"):
            setattr(files, split, find_split(d, split))
    stdin = [f"--{split}" for split, value in (("train", train), ("valid", valid), ("test", test))
             if value is not None and str(value) == "-"]
    if len(stdin) > 1:
        raise UsageError(f"{' and '.join(stdin)} both read stdin ('-'); stdin can be read once, give files")
    for split, value in (("train", train), ("valid", valid), ("test", test)):
        if value is not None:
            setattr(files, split, Path(value) if str(value) != "-" else value)
    missing = [s for s in need if files.get(s) is None]
    if missing:
        where = f"{corpus}" if corpus is not None else "the given files"
        raise DataError(f"{where}: no {' or '.join(missing)} split found "
                        f"(expected files such as {missing[0]}.txt; or pass --{missing[0]} FILE)")
    return files


# -- parallel corpora: two suffixes of one stem (train.de + train.en, train.src + train.tgt) --------------
@dataclass
class ParallelFiles:
    """(source, target) paths per split and the suffixes that chose the direction."""

    src: str
    tgt: str
    train: tuple[Path, Path] | None = None
    valid: tuple[Path, Path] | None = None
    test: tuple[Path, Path] | None = None

    def get(self, split: str) -> tuple[Path, Path] | None:
        return getattr(self, split)


def split_sides(directory: Path, split: str) -> dict[str, Path]:
    """suffix -> file for the files of `split` named `<split>.<suffix>` or `<stem>.<split>.<suffix>`."""
    for alias in SPLIT_ALIASES[split]:
        pat = re.compile(rf"^(?:.*\.)?{alias}\.([^.]+)$")
        found: dict[str, list[Path]] = {}
        for p in sorted(directory.iterdir()):
            m = pat.match(p.name)
            if m and p.is_file() and not p.name.startswith("."):
                found.setdefault(m.group(1), []).append(p)
        for suffix, paths in found.items():
            if len(paths) > 1:
                names = ", ".join(p.name for p in paths)
                raise UsageError(f"{directory}: several files could be the {split}.{suffix} side ({names})")
        if found:
            return {suffix: paths[0] for suffix, paths in found.items()}
    return {}


def is_parallel(corpus: str | Path) -> bool:
    """True when the folder's train split is a pair: train.src + train.tgt, or exactly two suffixes of
    one stem other than .txt (train.de + train.en). Used to infer --task translate."""
    try:
        d = _corpus_dir(corpus)  # also a downloaded corpus given by name
    except DataError:
        return False
    sides = split_sides(d, "train")
    return {"src", "tgt"} <= set(sides) or (len(sides) == 2 and "txt" not in sides)


def locate_pairs(corpus: str | Path, src: str | None = None, tgt: str | None = None, *,
                 need=("train",)) -> ParallelFiles:
    """The (source, target) files of every split of a parallel corpus folder, direction src -> tgt.

    Without src/tgt the direction is .src -> .tgt; a folder with two other suffixes is ambiguous."""
    d = _corpus_dir(corpus)
    train = split_sides(d, "train")
    if (src is None) != (tgt is None):
        raise UsageError("give both --src and --tgt: the file suffixes of the two sides, e.g. --src de --tgt en")
    if src is None:
        if {"src", "tgt"} <= set(train):
            src, tgt = "src", "tgt"
        elif len(train) == 2 and "txt" not in train:
            a, b = sorted(train)
            raise UsageError(f"{d} is a parallel corpus ({train[a].name}, {train[b].name}): choose the direction "
                             f"with --src {a} --tgt {b} or --src {b} --tgt {a}")
        else:
            raise DataError(f"{d}: no parallel train split found (expected train.src + train.tgt, or two files "
                            "such as train.de + train.en chosen with --src de --tgt en)")
    if src == tgt:
        raise UsageError(f"--src and --tgt are both {src!r}; a pair needs two different files")
    files = ParallelFiles(src, tgt)
    for split in ("train", "valid", "test"):
        sides = train if split == "train" else split_sides(d, split)
        if src in sides and tgt in sides:
            setattr(files, split, (sides[src], sides[tgt]))
        elif src in sides or tgt in sides:
            have, lack = (src, tgt) if src in sides else (tgt, src)
            raise DataError(f"{d}: {sides[have].name} has no partner file ending in .{lack}")
    missing = [s for s in need if files.get(s) is None]
    if missing:
        raise DataError(f"{d}: no {missing[0]} pair found (expected {missing[0]}.{src} and {missing[0]}.{tgt})")
    return files


def bundled_corpus() -> Path:
    """The Shakespeare corpus shipped with lmkit (package data in a wheel, corpora/ in a checkout)."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "corpora" / "shakespeare", here.parent / "corpora" / "shakespeare"):
        if (candidate / "train.txt").exists():
            return candidate
    raise DataError("the bundled corpus is missing from this installation (corpora/shakespeare)")
