"""Token files: a corpus file encoded once into memory-mapped ids that training and scoring stream from.

A token file is a folder in the cache, cache_dir("tokens")/<key>, where the key hashes everything that
decides the ids: the text's sha256 (as read_text hashes it), the vocabulary's vocab_id, the protocol
fields that change tokens or which lines are kept, and FORMAT. Its files:

    ids.bin      every kept line's ids, concatenated (uint16 for vocabularies of <= 65,536 ids, else uint32)
    offsets.bin  int64, sequences + 1 entries: sequence i is ids[offsets[i]:offsets[i + 1]]
    lines.bin    int64, the 1-based input line number of each sequence
    meta.json    format version, vocab_id, source file (name, sha256, size), protocol fields, dtype, counts
                 (everything `Encoded` and a run's data record need), the byte size and sha256 of each .bin
                 file, and a digest of the rest of meta.json

Encoding streams the text through LineReader (read_text's rules) and lmkit.data.corpus.encode one block
of lines at a time, so memory is bounded by the block, not the file. The folder is built under a temp
name and renamed into place; of two encoders of one key the first rename wins and the second keeps it.

Damage (a truncated, missing or edited .bin file, an edited meta.json, another format version) makes
TokenFile.open raise a one-line ModelError: every .bin file's sha256 is recorded in meta.json and checked
on use, because an edit that keeps the size and every id in range would otherwise change every score
silently. The cache is only a cache, so `lmkit encode`, train and score warn in one line and encode the
file again, replacing the folder (with a read-only cache, train and score read the text instead).
Nothing here unpickles: meta.json is JSON and the .bin files are raw arrays opened read-only."""

from __future__ import annotations

import errno
import hashlib
import json
import operator
import os
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .. import __version__
from ..artifacts import check_version
from ..atomic import DiskFullError, clean_stale_temps, is_disk_full, publish_mode, temp_path, write_json
from ..cache import cache_dir
from ..errors import DataError, LmkitError, ModelError, UsageError
from ..protocol import Protocol
from .corpus import Encoded, LineReader, Text, encode, file_sha256
from .sequences import SequenceView
from .vocab import Vocab
from ..logs import Log, quiet

FORMAT = 1
KIND = "lmkit-tokens"
IDS, OFFSETS, LINES, META = "ids.bin", "offsets.bin", "lines.bin", "meta.json"
# Protocol fields that change the ids or which lines become sequences; `context` is not one of them (it
# only decides how sequences are joined), so one token file serves sentence and stream runs alike.
TOKEN_FIELDS = ("level", "lowercase", "normalize", "tokenizer", "keep_blank_lines", "task")
BLOCK_BYTES = 1 << 20  # text read and encoded per step of encode_file
_SCAN = 1 << 22  # elements per step when a whole .bin file is checked
_COUNTS = ("sequences", "ids", "tokens", "lines", "skipped_blank_lines", "reserved_tokens", "characters")
# Counts added later (bits per byte, word perplexity): a token file written before them reads them as 0.
_MEASURES = ("text_bytes", "words", "unk_bytes")




def dtype_for(vocab_size: int) -> np.dtype:
    """uint16 while every id fits in it (vocabularies of up to 65,536 ids), else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def token_protocol(protocol: Protocol) -> dict:
    """The protocol fields a token file depends on (see TOKEN_FIELDS)."""
    data = protocol.to_dict()
    return {k: data[k] for k in TOKEN_FIELDS}


def cache_key(sha256: str, vocab_id: str, protocol_fields: dict) -> str:
    """The folder name of a token file: a hash of source text, vocabulary, protocol fields and FORMAT."""
    blob = json.dumps({"format": FORMAT, "sha256": sha256, "vocab_id": vocab_id, "protocol": protocol_fields},
                      sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def cache_path(sha256: str, vocab: Vocab, protocol: Protocol) -> Path:
    return cache_dir("tokens") / cache_key(sha256, vocab.vocab_id, token_protocol(protocol))


class LineNumbers(Sequence):
    """The input line number of each sequence, list-like over lines.bin; items are Python ints."""

    def __init__(self, lines: np.ndarray):
        self._lines = lines

    def __len__(self) -> int:
        return len(self._lines)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return LineNumbers(self._lines[index])
        return int(self._lines[operator.index(index)])

    def __iter__(self) -> Iterator[int]:
        for i in range(0, len(self._lines), _SCAN):
            yield from self._lines[i:i + _SCAN].tolist()


# -- the token file -----------------------------------------------------------------------------------
class TokenFile:
    """An opened token file: its meta and lazy views of its sequences and line numbers."""

    def __init__(self, path: Path, meta: dict, ids: np.ndarray, offsets: np.ndarray, lines: np.ndarray):
        self.path = path
        self.meta = meta
        self.sequences = SequenceView(ids, offsets)
        self.line_numbers = LineNumbers(lines)

    @property
    def counts(self) -> dict:
        return self.meta["counts"]

    @property
    def dtype(self) -> str:
        return self.meta["dtype"]

    @property
    def nbytes(self) -> int:
        """Bytes of the three .bin files."""
        return int(sum(self.meta["bytes"].values()))

    def encoded(self, name: str | None = None) -> Encoded:
        """The text as `Encoded`, sequences and line numbers lazy; `name` is the path the caller was given
        (a run records that path, not the name the file had when it was encoded)."""
        c, source = self.counts, self.meta["source"]
        return Encoded(name if name is not None else source["name"], source["sha256"], self.sequences,
                       self.line_numbers, c["skipped_blank_lines"], c["reserved_tokens"], c["characters"],
                       **{k: c.get(k, 0) for k in _MEASURES})

    def stream(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Sequences [start, stop) in the stream-context layout (see SequenceView.stream)."""
        return self.sequences[start:stop].stream()

    def shard(self, rank: int, world: int) -> SequenceView:
        """A contiguous range of sequences with a balanced share of tokens (see SequenceView.shard)."""
        return self.sequences.shard(rank, world)

    def chunks(self, max_tokens: int) -> Iterator[SequenceView]:
        """Consecutive slices of at most `max_tokens` scored tokens (see SequenceView.chunks)."""
        return self.sequences.chunks(max_tokens)

    @classmethod
    def open(cls, folder: str | Path, vocab: Vocab | None = None, *, verify: bool = True) -> "TokenFile":
        """Open a token file read-only; a ModelError (one line naming the folder) when it is damaged.

        Always checked: meta.json (format version, digest, fields; key and vocabulary when given) and the
        size of every .bin file against it. `verify` also reads the .bin files once, in bounded steps:
        offsets and line numbers increasing, every id inside the vocabulary, and each file's sha256
        against meta.json (the hash of a 1M-token file's 2.8 MB of .bin files: 1.5 ms, 5 ms median on a
        busy 2-core VM; less than lookup's hash of the 5.6 MB text itself)."""
        folder = Path(folder)
        meta = _read_meta(folder)
        if vocab is not None and (meta["vocab_id"] != vocab.vocab_id or meta["vocab_size"] != len(vocab)):
            raise ModelError(f"{folder}: token file was encoded with vocabulary {meta['vocab_id']}, "
                             f"not {vocab.vocab_id}")
        counts = meta["counts"]
        try:
            ids = _map(folder, IDS, meta["dtype"], counts["ids"], meta)
            offsets = _map(folder, OFFSETS, "int64", counts["sequences"] + 1, meta)
            lines = _map(folder, LINES, "int64", counts["sequences"], meta)
        except OSError as exc:
            raise ModelError(f"{folder}: token file cannot be read ({exc.strerror or exc})") from None
        if offsets[0] != 0 or offsets[-1] != counts["ids"]:
            _damaged(folder, f"{OFFSETS} does not span {IDS}")
        if verify:
            _scan(folder, ids, offsets, lines, meta)
            _check_hashes(folder, meta, {IDS: ids, OFFSETS: offsets, LINES: lines})
        return cls(folder, meta, ids, offsets, lines)


def _damaged(folder: Path, why: str):
    raise ModelError(f"{folder}: token file is damaged ({why})")


def _digest(meta: dict) -> str:
    body = {k: v for k, v in meta.items() if k != "digest"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _read_meta(folder: Path) -> dict:
    path = folder / META
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        _damaged(folder, f"no {META}")
    except OSError as exc:
        raise ModelError(f"{path}: cannot read ({exc.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        _damaged(folder, f"{META} is not JSON")
    if not isinstance(meta, dict) or meta.get("kind") != KIND:
        _damaged(folder, f"{META} is not an lmkit token file's")
    check_version(path, "token file", meta.get("schema"), FORMAT)
    if meta.get("digest") != _digest(meta):
        _damaged(folder, f"{META} was edited: its digest does not match")
    try:
        counts, source = meta["counts"], meta["source"]
        fields = ([counts[k] for k in _COUNTS] + [counts.get(k, 0) for k in _MEASURES]
                  + [meta["vocab_size"], source["size"]]
                  + [meta["bytes"][k] for k in (IDS, OFFSETS, LINES)])
        ok = (all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in fields)
              and isinstance(source["name"], str) and isinstance(source["sha256"], str)
              and isinstance(meta["vocab_id"], str) and isinstance(meta["protocol"], dict)
              and meta["dtype"] in ("uint16", "uint32") and np.dtype(meta["dtype"]) == dtype_for(meta["vocab_size"])
              and counts["tokens"] == counts["ids"] + counts["sequences"])
    except (KeyError, TypeError):
        ok = False
    if not ok:
        _damaged(folder, f"{META} is incomplete or inconsistent")
    hashes = meta.get("sha256")
    if not (isinstance(hashes, dict) and all(_is_sha256(hashes.get(k)) for k in (IDS, OFFSETS, LINES))):
        _damaged(folder, f"{META} records no sha256 of its .bin files (an older lmkit wrote it)")
    if folder.name != cache_key(source["sha256"], meta["vocab_id"], meta["protocol"]):
        _damaged(folder, f"{META} does not describe the file this folder is named for")
    return meta


def _map(folder: Path, name: str, dtype: str, count: int, meta: dict) -> np.ndarray:
    """A read-only memory map of `count` items, after checking the file's size against meta.json."""
    path = folder / name
    dt = np.dtype(dtype)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        _damaged(folder, f"{name} is missing")
    if size != count * dt.itemsize or size != meta["bytes"][name]:
        _damaged(folder, f"{name} is {size:,} bytes, {META} says {count * dt.itemsize:,}")
    if count == 0:
        return np.zeros(0, dtype=dt)
    return np.asarray(np.memmap(path, dtype=dt, mode="r", shape=(count,)))


def _is_sha256(value) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _check_hashes(folder: Path, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    """The content check: an edit of a .bin file that keeps its size and every id in range (which _scan
    cannot see) would change every score made from it, so the bytes must be the ones that were written.
    The mapped arrays are hashed in slices (views of the map, nothing copied): the file's bytes, in order."""
    for name, array in arrays.items():
        hasher = hashlib.sha256()
        for i in range(0, len(array), _SCAN):
            hasher.update(memoryview(array[i:i + _SCAN]))
        if hasher.hexdigest() != meta["sha256"][name]:
            _damaged(folder, f"{name} does not match the sha256 recorded in {META}: edited or corrupted")


def _scan(folder: Path, ids: np.ndarray, offsets: np.ndarray, lines: np.ndarray, meta: dict) -> None:
    for i in range(0, len(offsets) - 1, _SCAN):
        if (np.diff(offsets[i:i + _SCAN + 1]) < 0).any():
            _damaged(folder, f"{OFFSETS} is not increasing")
    if len(lines) and (lines[0] < 1 or lines[-1] > meta["counts"]["lines"]):
        _damaged(folder, f"{LINES} holds line numbers outside the source file")
    for i in range(0, len(lines), _SCAN):
        if (np.diff(lines[i:i + _SCAN + 1]) <= 0).any():
            _damaged(folder, f"{LINES} is not increasing")
    for i in range(0, len(ids), _SCAN):
        if int(ids[i:i + _SCAN].max()) >= meta["vocab_size"]:
            _damaged(folder, f"{IDS} holds ids outside the vocabulary")


# -- encoding and lookup ------------------------------------------------------------------------------
def _check_encodable(path: str | Path, protocol: Protocol) -> None:
    if protocol.task != "lm":
        raise UsageError("token files hold plain language-model text; a parallel (translate) corpus is read "
                         "from its text files")
    if str(path) == "-":
        raise UsageError("a token file is encoded from a file, not stdin ('-'): its cache key is the file's hash")


def encode_file(path: str | Path, vocab: Vocab, protocol: Protocol, *, log: Log = quiet,
                block_bytes: int = BLOCK_BYTES) -> tuple[TokenFile, bool]:
    """(token file, reused): the cached token file of `path` under `vocab` and `protocol`, written now unless
    a sound one exists. A damaged one is encoded again and replaced (with a warning through `log`)."""
    _check_encodable(path, protocol)
    sha256 = file_sha256(path)
    folder = cache_path(sha256, vocab, protocol)
    damaged = False
    if folder.exists():
        try:
            return TokenFile.open(folder, vocab), True
        except LmkitError as exc:
            log(f"warning: {exc.message}; encoding it again")
            damaged = True
    log(f"tokens: encoding {path} into {folder}")
    return _build(folder, path, sha256, vocab, protocol, block_bytes, replace=damaged), False


def _build(folder: Path, path: str | Path, sha256: str, vocab: Vocab, protocol: Protocol, block_bytes: int, *,
           replace: bool) -> TokenFile:
    """Encode `path` into the cache folder `folder` (built under a temp name, then renamed into place);
    `replace`: a damaged folder is there and goes."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temps(folder.parent, folder.name)
        tmp = temp_path(folder, directory=True)
        publish_mode(tmp, directory=True)
    except OSError as exc:
        raise DataError(f"{folder.parent}: cannot write token files there ({exc.strerror or exc})") from None
    try:
        _write(tmp, path, sha256, vocab, protocol, block_bytes)
        if replace:
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.rename(tmp, folder)
        except OSError as exc:  # another encoder of the same key renamed first: its folder holds the same ids
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(exc):
            raise DiskFullError(folder) from None
        if isinstance(exc, OSError):
            raise DataError(f"{folder}: cannot write the token file ({exc.strerror or exc})") from None
        raise
    return TokenFile.open(folder, vocab, verify=False)


def _write(folder: Path, path: str | Path, sha256: str, vocab: Vocab, protocol: Protocol, block_bytes: int) -> None:
    """ids.bin, offsets.bin, lines.bin and meta.json of `path` into `folder`, one block of lines at a time."""
    dtype = dtype_for(len(vocab))
    reader = LineReader(path, block_bytes)
    counts = dict.fromkeys(_COUNTS + _MEASURES, 0)
    hashers = {name: hashlib.sha256() for name in (IDS, OFFSETS, LINES)}  # of the bytes as they are written

    def put(fh, name: str, array: np.ndarray) -> None:
        fh.write(array.data)
        hashers[name].update(array.data)

    with open(folder / IDS, "wb") as f_ids, open(folder / OFFSETS, "wb") as f_offsets, \
            open(folder / LINES, "wb") as f_lines:
        put(f_offsets, OFFSETS, np.zeros(1, dtype=np.int64))
        for block in reader:
            enc = encode(Text(reader.name, block, ""), vocab, protocol)  # the text path's rules, per block
            first_line = counts["lines"]
            counts["lines"] += len(block)
            counts["skipped_blank_lines"] += enc.skipped_blank_lines
            counts["reserved_tokens"] += enc.reserved_tokens
            counts["characters"] += enc.characters
            for k in _MEASURES:
                counts[k] += getattr(enc, k)
            if not len(enc.sequences):
                continue
            lengths = np.fromiter(map(len, enc.sequences), dtype=np.int64, count=len(enc.sequences))
            put(f_ids, IDS, np.concatenate(enc.sequences).astype(dtype))
            put(f_offsets, OFFSETS, counts["ids"] + np.cumsum(lengths))
            put(f_lines, LINES, np.asarray(enc.line_numbers, dtype=np.int64) + first_line)
            counts["ids"] += int(lengths.sum())
            counts["sequences"] += len(lengths)
    if reader.sha256 != sha256:
        raise DataError(f"{reader.name}: changed while it was being encoded (sha256 differs); encode it again")
    counts["tokens"] = counts["ids"] + counts["sequences"]
    fields = token_protocol(protocol)
    meta = {
        "schema": FORMAT,
        "kind": KIND,
        "vocab_id": vocab.vocab_id,
        "vocab_size": len(vocab),
        "protocol": fields,
        "source": {"name": reader.name, "sha256": sha256, "size": os.stat(path).st_size},
        "dtype": dtype.name,
        "counts": counts,
        "bytes": {name: (folder / name).stat().st_size for name in (IDS, OFFSETS, LINES)},
        "sha256": {name: hasher.hexdigest() for name, hasher in hashers.items()},
        "lmkit": __version__,
    }
    meta["digest"] = _digest(meta)
    write_json(folder / META, meta)


def lookup(path: str | Path, vocab: Vocab, protocol: Protocol, log: Log = quiet) -> TokenFile | None:
    """The cached token file for this file's content, vocabulary and protocol, or None.

    Nothing is hashed while the cache holds no token file at all. A damaged entry (an edited ids.bin
    included) is never used: it is reported in one warning line through `log` and encoded again from the
    text, which gives the ids the text path would. If the cache cannot be written, None is returned after
    the warning and the caller reads the text."""
    if protocol.task != "lm" or str(path) == "-":
        return None
    try:
        if not any(not p.name.startswith(".") for p in cache_dir("tokens").iterdir()):
            return None
    except OSError:
        return None
    sha256 = file_sha256(path)
    folder = cache_path(sha256, vocab, protocol)
    if not folder.is_dir():
        return None
    try:
        return TokenFile.open(folder, vocab)
    except LmkitError as exc:
        if not os.access(folder.parent, os.W_OK):
            log(f"warning: {exc.message}; reading the text instead (the cache is read-only)")
            return None
        log(f"warning: {exc.message}; encoding it again")
    return _build(folder, path, sha256, vocab, protocol, BLOCK_BYTES, replace=True)
