"""ARPA back-off files: export for KenLM/SRILM interop, import as a scorable model.

An ARPA file stores, per order, `log10 P(w | c)  c w  log10 bo(c w)`; unseen events back off:
P(w | h) = bo(h) P(w | h[1:]). Models with a back-off or interpolated form export exactly (kn,
kn-basic, wb, jm, katz). mle/laplace/addk/stupid do not: add-k's unseen mass is uniform rather than
proportional to a lower order, MLE has zero back-off mass, and stupid backoff is not normalised.

Conventions (docs/protocol.md): `<s>` is written with KenLM's dummy log10 probability 0 (SRILM writes -99;
both are read) and is never predicted, only its back-off weight matters; log10 0 is written -99 and
values <= -99 are read as log 0. Word level only: a token containing whitespace cannot be written.
"""

from __future__ import annotations

import gc
import gzip
import math
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...atomic import atomic_open
from ...data.tokenize import is_blank, split_line
from ...data.vocab import BOS, PAD, SPECIALS, Vocab
from ...errors import ModelError, UsageError
from ...logs import current
from ...protocol import Protocol
from . import smoothing as sm
from .arpa_blocks import MAX_LINE_BYTES, ArpaArrays, read_arpa_blocks
from .counts import NgramIndex, find, sorted_and_positions
from .model import TableModel

LN10 = math.log(10.0)
LOG10_ZERO = -99.0
_READ_BLOCK = 1 << 20
CHUNK_LINES = 1 << 18  # n-gram lines split into Python lists at once while an ARPA file is read


def is_arpa_path(path: str | Path) -> bool:
    """True for names ending in .arpa / .arpa.gz, or a file whose text starts with \\data\\."""
    p = Path(path)
    if p.name.endswith((".arpa", ".arpa.gz")):
        return True
    if not p.is_file():
        return False
    try:
        with p.open("rb") as fh:
            head = fh.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(p, "rb") as fh:
            return fh.read(64).lstrip().startswith(b"\\data\\")
    except (OSError, EOFError, zlib.error):
        return False


# -- writing ---------------------------------------------------------------------------------------------
def _fmt(values: np.ndarray) -> list[str]:
    v = values / LN10
    v = np.where(np.isfinite(v), v, LOG10_ZERO)
    return ["%.7g" % x for x in v.tolist()]


def write_arpa(model: TableModel, path: str | Path) -> None:
    """Write `model` as an ARPA file (gzip if the name ends in .gz), atomically."""
    smoothing = getattr(model.config, "smoothing", "arpa")  # "arpa": a model read from an ARPA file
    entry = sm.SMOOTHINGS.get(smoothing)
    if not isinstance(model, TableModel) or not isinstance(model.est, sm.Estimate) or (
            smoothing != "arpa" and not (entry is not None and entry.arpa)):
        raise UsageError(f"{model.label}: {smoothing} has no back-off form, so it cannot be written as ARPA "
                         f"(exportable: {', '.join(sm.arpa_exportable())})")
    vocab = model.vocab
    bad = next((t for t in vocab.tokens[len(SPECIALS):] if not t or any(ch.isspace() for ch in t)), None)
    if bad is not None:
        raise UsageError(f"{model.label}: token {bad!r} contains whitespace (e.g. a char-level vocabulary); "
                         "ARPA separates words by whitespace, so this vocabulary cannot be written")
    N, est, index = model.order, model.est, model.index
    toks = np.array(vocab.tokens, dtype=object)
    uni = np.array([i for i in range(len(vocab)) if i != PAD], dtype=np.int64)
    with atomic_open(path, "w") as fh:
        fh.write("\\data\\\n")
        fh.write(f"ngram 1={uni.size}\n")
        for n in range(2, N + 1):
            fh.write(f"ngram {n}={index.size(n)}\n")
        for n in range(1, N + 1):
            fh.write(f"\n\\{n}-grams:\n")
            if n == 1:
                ids = uni
                names = toks[uni].tolist()
                probs = _fmt(est.logp[0][uni])
                probs[int(np.flatnonzero(uni == BOS)[0])] = "0"  # KenLM's dummy: <s> is never predicted
            else:
                ids = np.arange(index.size(n))
                words = index.words(n)
                names = [" ".join(row) for row in toks[words].tolist()]
                probs = _fmt(est.logp[n - 1])
            if n < N:
                bos = _fmt(est.logbo[n - 1][ids])
                fh.writelines(f"{p}\t{w}\t{b}\n" for p, w, b in zip(probs, names, bos))
            else:
                fh.writelines(f"{p}\t{w}\n" for p, w in zip(probs, names))
        fh.write("\n\\end\\\n")


# -- reading ---------------------------------------------------------------------------------------------
@dataclass
class ArpaConfig:
    path: str = ""  # the ARPA file this model was read from
    order: int = 0  # highest order in the file


class ArpaModel(TableModel):
    """A back-off model read from an ARPA file (KenLM, SRILM, or lmkit's export), scored vectorised."""

    kind = "arpa"
    Config = ArpaConfig

    @property
    def label(self) -> str:
        return f"arpa:{Path(self.config.path).name}"

    def fit(self, train, valid, log=None) -> dict:
        raise UsageError(f"{self.label}: an ARPA model is already estimated and cannot be trained")

    def fit_info(self) -> dict:
        return {"source": self.config.path, "ngrams": [self.index.vocab_size - 1] +
                [self.index.size(n) for n in range(2, self.order + 1)]}

    def save(self, run_dir: Path) -> None:
        self._save_tables(Path(run_dir) / "model.npz", {"smoothing": "arpa", "source": self.config.path})

    @classmethod
    def load(cls, run_dir: Path, config: ArpaConfig, vocab: Vocab, protocol: Protocol, device: str = "cpu"):
        index, est, _ = cls._load_tables(Path(run_dir) / "model.npz", len(vocab))
        model = cls(config, vocab, protocol)
        model._set_tables(index, est)
        return model


class _Reader:
    """Line-numbered access to an ARPA file's text for one-line errors.

    The file (plain or gzip) is read in blocks and cut into lines as it streams, so no line longer than
    MAX_LINE_BYTES is ever held whole, however long it runs on."""

    def __init__(self, path: Path):
        self.path = path
        self.lines: list[str] = []
        try:
            raw = path.open("rb")  # its position is the progress (also under gzip)
            packed = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            size = path.stat().st_size
        except FileNotFoundError:
            raise ModelError(f"{path}: ARPA file not found") from None
        except OSError as exc:
            raise ModelError(f"{path}: cannot read ARPA file ({exc.__class__.__name__}: {exc})") from None
        self.progress = current()
        self.progress.phase("loading", total=size, label=path.name)
        with raw, (gzip.GzipFile(fileobj=raw, mode="rb") if packed else raw) as fh:
            try:
                self._read(fh, raw)
            except (OSError, EOFError, zlib.error) as exc:
                raise self.fail(len(self.lines) + 1, f"cannot read ARPA file ({exc.__class__.__name__}: "
                                                     f"{exc})") from None

    def _read(self, fh, raw) -> None:
        tail = b""  # the unfinished last line, at most MAX_LINE_BYTES
        while True:
            block = fh.read(_READ_BLOCK)
            self.progress.update(raw.tell())
            data = tail + block
            cut = data.rfind(b"\n") if block else len(data)
            body, tail = data[:max(cut, 0)], data[cut + 1:]
            # Only the first line of `data` can be too long: it carries the tail on; every later one lies
            # inside `block`, which is no longer than the limit.
            first = body.find(b"\n")
            too_long = None  # 1-based within this step: lines of `body`, then `tail`
            if cut >= 0 and (len(body) if first < 0 else first) > MAX_LINE_BYTES:
                too_long = 1
            elif len(tail) > MAX_LINE_BYTES:
                too_long = (body.count(b"\n") + 1 if cut >= 0 else 0) + 1
            if too_long is not None:
                raise self.fail(len(self.lines) + too_long, f"longer than {MAX_LINE_BYTES:,} bytes; not an ARPA "
                                                            "line (binary data, or no line breaks?)")
            try:
                self.lines += body.decode("utf-8").split("\n") if cut >= 0 else []
            except UnicodeDecodeError as exc:
                line = len(self.lines) + body.count(b"\n", 0, exc.start) + 1
                raise self.fail(line, "invalid UTF-8 in ARPA file") from None
            if not block:
                return

    def fail(self, lineno: int, msg: str) -> ModelError:
        return ModelError(f"{self.path}: line {lineno}: {msg}")


@contextmanager
def cyclic_gc_paused():
    """Python's cycle collector off for a while (reference counting still frees everything). Reading an ARPA file
    makes millions of small lists that hold no cycles, and each collection would walk every one of them again:
    with it paused PTB's 92 MiB file loads in 5.0 s instead of 10.5 s."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


def load_arpa(path: str | Path, protocol: Protocol | None = None) -> ArpaModel:
    """Read an ARPA file (plain or gzip) into an ArpaModel with a vocabulary built from its unigrams.

    Specials map to lmkit's reserved ids, other words keep the file's order. Damage (truncation,
    wrong \\data\\ counts, non-numeric or non-finite fields, a log10 probability above 0, a line over
    MAX_LINE_BYTES, missing \\end\\) -> ModelError naming file and line: the model is reported as normalised,
    so a file that cannot be one is refused rather than scored.

    The block reader (arpa_blocks.py) reads well-formed files; anything it does not take is read again line
    by line, which names the damaged line."""
    path = Path(path)
    with cyclic_gc_paused():
        arrays = read_arpa_blocks(path)
        if arrays is not None:
            try:
                return _from_arrays(path, arrays, protocol or Protocol())
            except _Unexplained:
                pass
        return _load_arpa(path, protocol)


class _Unexplained(Exception):
    """The block reader met a problem (a duplicate, <pad>) that only the line reader can place."""


class _NoLines:
    """The reader stand-in for arrays: a failure is handed back to the line reader to explain."""

    def fail(self, lineno: int, msg: str) -> Exception:
        return _Unexplained(msg)


def _from_arrays(path: Path, arrays: ArpaArrays, protocol: Protocol) -> ArpaModel:
    rd = _NoLines()
    lines1 = list(range(len(arrays.words)))
    tokens, ids = _unigram_ids(rd, lines1, arrays.words)
    sections = [(rd, lines1, arrays.words, _ln(arrays.log10p), _ln(arrays.log10bo))]
    vocab_id = np.fromiter(map(ids.__getitem__, arrays.words), dtype=np.int32, count=len(arrays.words))
    no_lines = np.zeros(0, dtype=np.int64)  # a failure here is explained by the line reader, which has them
    while arrays.higher:  # each order's file-order matrix freed once mapped to vocabulary ids
        W, log10p, log10bo = arrays.higher.pop(0)
        sections.append((rd, no_lines, vocab_id[W], _ln(log10p), _ln(log10bo)))
        del W
    return _build(path, sections, tokens, ids, protocol)


def _load_arpa(path: Path, protocol: Protocol | None) -> ArpaModel:
    rd = _Reader(path)
    lines = rd.lines
    heads = [i for i, ln in enumerate(lines) if ln[:1] == "\\"]
    if not heads or lines[heads[0]].strip() != "\\data\\":
        raise rd.fail(1, "not an ARPA file (no \\data\\ header)")
    declared: dict[int, tuple[int, int]] = {}  # order -> (count, line number)
    for i in range(heads[0] + 1, heads[1] if len(heads) > 1 else len(lines)):
        ln = lines[i].strip()
        if not ln:
            continue
        key, _, val = ln.partition("=")
        parts = key.split()
        try:
            if len(parts) != 2 or parts[0] != "ngram":
                raise ValueError
            n, count = int(parts[1]), int(val)
        except ValueError:
            raise rd.fail(i + 1, f"expected 'ngram N=count' in \\data\\, got {ln[:60]!r}") from None
        if n in declared:
            raise rd.fail(i + 1, f"\\data\\ lists ngram {n} twice (also on line {declared[n][1]})")
        if count < 0:
            raise rd.fail(i + 1, f"\\data\\ says ngram {n}={count}: a count cannot be negative")
        declared[n] = (count, i + 1)
    N = len(declared)
    if N == 0 or sorted(declared) != list(range(1, N + 1)):
        raise rd.fail(heads[0] + 1, "\\data\\ must list ngram 1=..., 2=..., ... without gaps")
    if lines[heads[-1]].strip() != "\\end\\":
        raise rd.fail(len(lines), "file ends before \\end\\ (truncated?)")
    if len(heads) != N + 2:
        raise rd.fail(heads[-1] + 1, f"expected {N} n-gram sections between \\data\\ and \\end\\, "
                                     f"found {len(heads) - 2}")
    sections, ids = [], None
    for n in range(1, N + 1):
        h = heads[n]
        if lines[h].strip() != f"\\{n}-grams:":
            raise rd.fail(h + 1, f"expected \\{n}-grams:, got {lines[h].strip()[:40]!r}")
        linenos = [i for i in range(h + 1, heads[n + 1]) if not is_blank(lines[i])]
        if len(linenos) != declared[n][0]:
            raise rd.fail(declared[n][1], f"\\data\\ says ngram {n}={declared[n][0]} but the {n}-grams "
                                          f"section has {len(linenos)} entries")
        if n == 1:
            sections.append(_parse_section(rd, n, N, linenos))
            tokens, ids = _unigram_ids(rd, sections[0][1], sections[0][2])
        else:
            sections.append(_parse_ids(rd, n, N, np.asarray(linenos, dtype=np.int64), ids))
        del linenos
    return _build(path, sections, tokens, ids, protocol or Protocol())


def _log10s(rd: _Reader, values: list[str], linenos: list[int], what: str) -> np.ndarray:
    """The log10 values of one column, each a finite number (inf, nan and 1e999 are damage, not values)."""
    try:
        out = np.array(values, dtype=np.float64)
    except ValueError:
        out = None
    if out is None or not np.isfinite(out).all():
        for v, i in zip(values, linenos):
            try:
                x = float(v)
            except ValueError:
                raise rd.fail(i + 1, f"{what} {v[:30]!r} is not a number") from None
            if not math.isfinite(x):
                raise rd.fail(i + 1, f"{what} {v[:30]!r} is not a finite number") from None
        raise rd.fail(linenos[0] + 1, f"unreadable {what}s in this section") from None
    return out


def _ln(log10: np.ndarray) -> np.ndarray:
    """Natural logs, in place (the log10 array is the reader's own); values <= LOG10_ZERO (-99, SRILM's log 0)
    are log 0."""
    zero = log10 <= LOG10_ZERO
    log10 *= LN10
    log10[zero] = -np.inf
    return log10


def _parse_section(rd: _Reader, n: int, N: int, linenos: list[int]) -> tuple:
    """Fields of one n-gram section: (line indices, flat word list, ln prob, ln backoff)."""
    parts = [split_line(rd.lines[i]) for i in linenos]
    lens = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts))
    allowed = (n + 1,) if n == N else (n + 1, n + 2)
    bad = np.flatnonzero(~np.isin(lens, allowed))
    if bad.size:
        k = int(bad[0])
        raise rd.fail(linenos[k] + 1, f"a {n}-gram entry needs {' or '.join(map(str, allowed))} fields, "
                                      f"got {lens[k]}")
    log10p = _log10s(rd, [p[0] for p in parts], linenos, "probability")
    above = np.flatnonzero(log10p > 0)  # KenLM and SRILM write at most 0 (<s>'s dummy): no rounding slack
    if above.size:
        k = int(above[0])
        raise rd.fail(linenos[k] + 1, f"log10 probability {parts[k][0][:30]} is above 0 (a probability above 1), "
                                      "so this is not a normalised model")
    words = [w for p in parts for w in p[1:n + 1]]
    bo_idx = np.flatnonzero(lens == n + 2)
    logbo = np.zeros(len(parts))
    if bo_idx.size:
        logbo[bo_idx] = _ln(_log10s(rd, [parts[k][n + 1] for k in bo_idx.tolist()],
                                    [linenos[k] for k in bo_idx.tolist()], "back-off weight"))
    return rd, linenos, words, _ln(log10p), logbo


def _unigram_ids(rd: _Reader, lines1: list[int], words1: list[str]) -> tuple[list[str], dict[str, int]]:
    """The vocabulary's tokens and word -> id map: specials first, then the unigrams in the file's order."""
    tokens = list(SPECIALS)
    ids: dict[str, int] = {t: i for i, t in enumerate(SPECIALS)}
    for ln, w in zip(lines1, words1):
        if w == "<pad>":
            raise rd.fail(ln + 1, "<pad> is reserved and cannot be an ARPA word")
        if w not in ids:
            ids[w] = len(tokens)
            tokens.append(w)
    return tokens, ids


def _parse_ids(rd: _Reader, n: int, N: int, linenos: np.ndarray, ids: dict[str, int]) -> tuple:
    """An n-gram section (n >= 2) as (reader, line indices, (M, n) word ids, ln prob, ln backoff), parsed
    CHUNK_LINES lines at a time: only a chunk's lines are ever split into Python lists, so memory stays near
    the arrays' size instead of growing with the file's text many times over."""
    W = np.empty((len(linenos), n), dtype=np.int64)
    lp = np.empty(len(linenos))
    lb = np.zeros(len(linenos))
    for start in range(0, len(linenos), CHUNK_LINES):
        chunk = linenos[start:start + CHUNK_LINES].tolist()
        _, _, words, lp[start:start + len(chunk)], lb[start:start + len(chunk)] = _parse_section(rd, n, N, chunk)
        try:
            W[start:start + len(chunk)] = np.fromiter(map(ids.__getitem__, words), dtype=np.int64,
                                                      count=len(words)).reshape(-1, n)
        except KeyError as exc:
            k = next(k for k, w in enumerate(words) if w not in ids) // n
            raise rd.fail(chunk[k] + 1, f"word {exc.args[0]!r} is not among the unigrams") from None
    return rd, linenos, W, lp, lb


def _build(path: Path, sections: list, tokens: list[str], ids: dict[str, int], protocol: Protocol) -> ArpaModel:
    rd, lines1, words1, logp1, logbo1 = sections[0]
    uni_rows = [ids[w] for w in words1]
    V = len(tokens)
    uni = np.array(uni_rows, dtype=np.int64)
    if np.unique(uni).size != uni.size:
        dup = int(np.flatnonzero(np.bincount(uni) > 1)[0])
        raise rd.fail(lines1[[k for k, u in enumerate(uni_rows) if u == dup][1]] + 1,
                      f"unigram {tokens[dup]!r} is listed twice")
    lp1 = np.full(V, -np.inf)
    lb1 = np.zeros(V)
    lp1[uni], lb1[uni] = logp1, logbo1
    lp1[BOS] = -np.inf  # <s> is context only (KenLM writes 0, SRILM -99)
    logp, logbo = [lp1], [lb1]
    word_mats = [None]
    for n in range(2, len(sections) + 1):
        rd, lns, W, lp, lb = sections[n - 1]
        word_mats.append((W, lp, lb, lns))
    sections.clear()  # word_mats holds the only references: _assemble frees each order's inputs once used
    index, logp, logbo = _assemble(rd, V, word_mats, logp, logbo)
    vocab = Vocab(tokens, [0] * V, level=protocol.level, lowercase=protocol.lowercase,
                  normalize=protocol.normalize)
    model = ArpaModel(ArpaConfig(str(path), index.order), vocab, protocol)
    model._set_tables(index, sm.Estimate(logp, logbo[: index.order - 1], 0.0, {}))
    return model


def _keys_for(keys: list[np.ndarray], V: int, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Key of each row of W (M, n) and the id of its suffix (-1 if the suffix is not stored)."""
    n = W.shape[1]
    sid = W[:, n - 1].astype(np.int64)  # W may be int32: keys are int64
    for L in range(2, n):
        ok = sid >= 0
        if ok.all():  # the usual case: no masks to build
            sid = find(keys[L - 1], sid * V + W[:, n - L])
            continue
        nxt = np.full(sid.shape, -1, dtype=np.int64)
        nxt[ok] = find(keys[L - 1], sid[ok] * V + W[ok, n - L])
        sid = nxt
    return np.where(sid >= 0, sid * V + W[:, 0], -1), sid


def _assemble(rd, V: int, word_mats: list, logp: list, logbo: list):
    """Sort each order into keys; a file that is not closed under suffixes/prefixes (pruned models)
    gets blank entries for the missing ones, whose probability is what back-off gives them anyway."""
    N = len(word_mats)
    mats = {n: word_mats[n - 1][:3] for n in range(2, N + 1)}  # order -> (W, ln p, ln bo)
    lines = [None] + [word_mats[n - 1][3] for n in range(2, N + 1)]
    word_mats.clear()  # mats owns the arrays now
    ordered = _sorted_keys(V, mats)
    if ordered is None:
        mats = _close(V, mats)
        ordered = _sorted_keys(V, mats)
    keys, orders = ordered
    blank = [np.zeros(V, dtype=bool)]
    for n in range(2, N + 1):
        _, lp, lb = mats.pop(n)  # the word matrix is no longer needed once the keys are sorted
        key, order = keys[n - 1], orders[n - 1]
        if key.size > 1 and (np.diff(key) == 0).any():
            dup = int(order[int(np.flatnonzero(np.diff(key) == 0)[0]) + 1])
            lns = lines[n - 1]
            raise rd.fail(lns[dup] + 1 if dup < len(lns) else 0, f"{n}-gram listed twice")
        logp.append(lp[order])
        if n < N:
            logbo.append(lb[order])
        del lp, lb
        orders[n - 1] = None
        blank.append(np.isnan(logp[-1]))
    index = NgramIndex(V, keys)
    for n in range(2, N + 1):  # blanks: P(w | c) = bo(c) P(w | c[1:]), bottom-up
        b = np.flatnonzero(blank[n - 1])
        if b.size:
            logp[n - 1][b] = logbo[n - 2][index.prefix(n)[b]] + logp[n - 2][index.suffix(n)[b]]
    return index, logp, logbo


def _sorted_keys(V: int, mats: dict) -> tuple[list, list] | None:
    """Each order's sorted keys and the sort that gives them, or None when a stored n-gram's suffix or
    prefix is not stored (never so in KenLM's and lmkit's files; pruned SRILM files need _close).

    The prefix w1..w(n-1) is found as NgramIndex.prefix finds it, from the order below: its key is (id of
    w2..w(n-1), w1), and w2..w(n-1) is the prefix of the suffix w2..wn, already found one order down."""
    keys, orders = [np.arange(V, dtype=np.int64)], [None]
    prefix = None  # prefix id (order n-2) of every sorted (n-1)-gram
    for n in range(2, len(mats) + 2):
        key, sid = _keys_for(keys, V, mats[n][0])
        if (sid < 0).any():
            return None
        key, order = sorted_and_positions(key)  # key is this loop's own temporary: sorted in place
        first = key % V
        if n > 2:
            first = find(keys[n - 2], prefix[key // V] * V + first)
            if (first < 0).any():
                return None
        keys.append(key)
        orders.append(order)
        prefix = first
    return keys, orders


def _close(V: int, mats: dict) -> dict:
    """Add blank (NaN probability, log bo 0) entries for missing suffixes and prefixes, top-down."""
    out = dict(mats)
    for n in range(len(mats) + 1, 2, -1):
        W = out[n][0]
        lower = out[n - 1]
        have = set(map(tuple, lower[0].tolist()))
        need = set(map(tuple, W[:, 1:].tolist())) | set(map(tuple, W[:, :-1].tolist()))
        miss = sorted(need - have)
        if miss:
            M = np.array(miss, dtype=np.int64).reshape(len(miss), n - 1)
            out[n - 1] = (np.vstack([lower[0], M]), np.concatenate([lower[1], np.full(len(miss), np.nan)]),
                          np.concatenate([lower[2], np.zeros(len(miss))]))
    return out
