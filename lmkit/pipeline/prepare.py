"""Data preparation: vocabularies, token files, locating and reading a corpus's splits, encoding them
under one protocol, and the data records run.json keeps of each split."""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.corpus import (Encoded, ParallelText, Text, count_tokens, encode, is_parallel, locate,
                          locate_pairs, read_pair, read_text)
from ..datasets.store import resolve_corpus
from ..data.subword import DEFAULT_VOCAB_SIZE, SUBWORD_LEVELS
from ..data.tokenize import is_blank, normalise_lines
from ..data.vocab import UNK, Vocab
from ..defaults import CONTEXT, LEVEL, MIN_COUNT
from ..errors import DataError, UsageError
from ..protocol import Protocol
from ..validate import (check_output_file)
from ..logs import Log, quiet
from .request import TrainRequest, protocol_for


def build_vocab(
    paths: list[str | Path | Text] | str | Path | Text,
    *,
    level: str = LEVEL,
    lowercase: bool = False,
    normalize: str | None = None,
    min_count: int = MIN_COUNT,
    max_size: int | None = None,
    output: str | Path | None = None,
    with_sep: bool = False,
) -> Vocab:
    """Count tokens of the given training text(s) and keep the frequent ones; optionally save.

    `with_sep`: a joint vocabulary for a parallel corpus (both sides' files given), <sep> as id 4. A text
    already read (a Text) is counted as it is, not read again."""
    protocol = Protocol(level=level, lowercase=lowercase, normalize=normalize)
    Vocab.check_options(min_count, max_size)
    paths = [paths] if isinstance(paths, (str, Path, Text)) else list(paths)
    if output is not None:
        check_output_file(output, inputs=[p for p in paths if not isinstance(p, Text)])
    if sum(str(p) == "-" for p in paths) > 1:
        raise UsageError("'-' (stdin) is given more than once; stdin can be read once")
    texts = [p if isinstance(p, Text) else read_text(p) for p in paths]
    vocab = vocab_from(texts, protocol, min_count, max_size, with_sep)
    if output is not None:
        vocab.save(output)
    return vocab


def vocab_from(texts: list[Text | ParallelText], protocol: Protocol, min_count: int | None = MIN_COUNT,
               max_size: int | None = None, with_sep: bool = False) -> Vocab:
    """The vocabulary of training text(s) under `protocol`: frequent words or characters, or for a subword level
    a tokenizer trained on the text with `max_size` ids (--vocab-size; DEFAULT_VOCAB_SIZE if not given)."""
    if protocol.level not in SUBWORD_LEVELS:
        counts: Counter = Counter()
        for text in texts:
            counts.update(count_tokens(text, protocol))
        return Vocab.build(counts, level=protocol.level, lowercase=protocol.lowercase, normalize=protocol.normalize,
                           min_count=min_count, max_size=max_size, with_sep=with_sep)
    if min_count not in (None, MIN_COUNT):
        raise UsageError(f"--min-count keeps frequent words or characters; a {protocol.level} vocabulary has a "
                         "size instead (--vocab-size)")
    sides = [t for text in texts for t in ((text.source, text.target) if isinstance(text, ParallelText) else (text,))]
    lines = normalise_lines([ln for t in sides for ln in t.lines if not is_blank(ln)], protocol)
    return Vocab.build_subword(lines, level=protocol.level, vocab_size=max_size or DEFAULT_VOCAB_SIZE,
                               lowercase=protocol.lowercase, normalize=protocol.normalize, with_sep=with_sep)


def vocab_report(vocab_path: str | Path, coverage: str | Path | None = None, top: int = 20) -> dict:
    """Size, options, most frequent tokens and (optionally) OOV rate on a text."""
    if top < 0:
        raise UsageError(f"--top must be at least 0, got {top}")
    vocab = Vocab.load(vocab_path)
    order = vocab.most_frequent(top)
    total = sum(vocab.counts)
    report: dict[str, Any] = {
        "vocab_id": vocab.vocab_id,
        "size": len(vocab),
        "level": vocab.level,
        "lowercase": vocab.lowercase,
        "min_count": vocab.min_count,
        "max_size": vocab.max_size,
        "train_tokens": total,
        "train_unk_tokens": vocab.counts[1],
        "top": [{"id": i, "token": vocab.tokens[i], "count": vocab.counts[i],
                 "share": vocab.counts[i] / total if total else 0.0} for i in order],
    }
    if coverage is not None:
        protocol = Protocol(level=vocab.level, lowercase=vocab.lowercase, normalize=vocab.normalize)
        text = read_text(coverage)
        if vocab.level in SUBWORD_LEVELS:  # every byte has a piece: only literal reserved tokens are <unk>
            enc = encode(text, vocab, protocol)
            flat = np.concatenate(list(enc.sequences)) if len(enc.sequences) else np.zeros(0, dtype=np.int64)
            n, types, oov = int(flat.size), int(np.unique(flat).size), int((flat == UNK).sum())
            oov_types = int(oov > 0)
        else:
            counts = count_tokens(text, protocol)
            n, types = sum(counts.values()), len(counts)
            unknown = [t for t in counts if t not in vocab.index or t in ("<pad>", "<s>", "</s>")]
            oov, oov_types = sum(counts[t] for t in unknown) + counts.get("<unk>", 0), len(unknown)
        report["coverage"] = {
            "file": text.name,
            "tokens": n,
            "types": types,
            "oov_tokens": oov,
            "oov_types": oov_types,
            "oov_rate": oov / n if n else 0.0,
        }
    return report


@dataclass
class EncodedSplit:
    """One split's token file, as `lmkit encode` reports it."""

    split: str
    file: str
    sequences: int
    tokens: int  # scored tokens: ids plus one </s> per sequence
    dtype: str
    bytes: int  # of ids.bin, offsets.bin and lines.bin
    path: Path
    reused: bool

    def row(self) -> dict:
        return {**asdict(self), "path": str(self.path)}


def encode_corpus(corpus: str | Path | None = None, vocab: str | Path | None = None, *,
                  train: str | Path | None = None, valid: str | Path | None = None, test: str | Path | None = None,
                  splits: list[str] | str | None = None, context: str = CONTEXT, keep_blank_lines: bool = False,
                  log: Log = quiet) -> list[EncodedSplit]:
    """Encode each split once into a memory-mapped token file in the cache, or find the one already there;
    `lmkit train --vocab` and `lmkit score` then read ids from it instead of the text (lmkit.data.tokenfile).

    The protocol is built as `train` builds it (level, case and normalisation come from the vocabulary).
    `splits` (default: every split found) must all exist; plain language-model corpora only."""
    from ..data.tokenfile import encode_file

    if vocab is None:
        raise UsageError("lmkit encode needs --vocab: token ids index one vocabulary (build one with "
                         "`lmkit vocab build TRAIN_FILE -o vocab.json`)")
    if isinstance(splits, str):
        splits = [s.strip() for s in splits.split(",") if s.strip()]
    unknown = [s for s in splits or () if s not in ("train", "valid", "test")]
    if unknown or splits == []:
        raise UsageError(f"--splits takes train, valid and/or test, comma-separated; got {','.join(splits or [])!r}")
    if corpus is None and train is None and valid is None and test is None:
        raise UsageError("give --corpus DIR, or the files with --train/--valid/--test FILE")
    corpus = resolve_corpus(corpus)  # a downloaded corpus given by name
    if corpus is not None and train is None and is_parallel(corpus):
        raise UsageError(f"{corpus} is a parallel corpus; token files hold plain language-model text, so "
                         "translation runs read their pairs from the text files")
    files = locate(corpus, train, valid, test, need=tuple(splits or ()))
    names = list(splits or [s for s in ("train", "valid", "test") if files.get(s) is not None])
    if not names:
        raise DataError(f"{corpus}: no train, valid or test file found (expected files such as train.txt)")
    v = Vocab.load(vocab)
    protocol = protocol_for(TrainRequest(vocab=vocab, context=context, keep_blank_lines=keep_blank_lines), v)
    results = []
    for split in names:
        path = files.get(split)
        found, reused = encode_file(path, v, protocol, log=log)
        if reused:
            log(f"tokens: reusing {found.path}")
        results.append(EncodedSplit(split, str(Path(path)), found.counts["sequences"], found.counts["tokens"],
                                    found.dtype, found.nbytes, found.path, reused))
    return results


def locate_splits(req: TrainRequest, task: str, need_valid: bool = True):
    """CorpusFiles (one path per split) or, for translate, ParallelFiles ((source, target) per split).
    `need_valid` False (n-grams: valid only reports a perplexity or tunes --k auto): the valid split is optional."""
    need = ("train", "valid") if need_valid else ("train",)
    if task != "translate":
        if req.src is not None or req.tgt is not None:
            raise UsageError("--src/--tgt choose the two sides of a parallel corpus; they apply to --task translate")
        return locate(req.corpus, req.train, req.valid, req.test, need=need)
    given = [flag for flag, v in (("--train", req.train), ("--valid", req.valid), ("--test", req.test)) if v]
    if given:
        raise UsageError(f"{', '.join(given)} name single files; --task translate reads pairs from --corpus "
                         "(train.src + train.tgt, or train.de + train.en with --src de --tgt en)")
    if req.corpus is None:
        raise UsageError("--task translate needs --corpus: a folder with train and valid pairs "
                         "(train.src + train.tgt, or train.de + train.en with --src de --tgt en)")
    Protocol(context=req.context, task=task)  # translate in stream context fails before any file is read
    return locate_pairs(req.corpus, req.src, req.tgt, need=need)


def input_paths(req: TrainRequest, files) -> list:
    """Every path `train` reads: the corpus folder, each split file (both sides of a pair), --vocab."""
    paths = [req.corpus if req.corpus is not None and Path(req.corpus).exists() else None, req.vocab]
    for split in ("train", "valid", "test"):
        found = getattr(files, split, None)
        paths.extend(found if isinstance(found, tuple) else [found])
    return paths


def read_split(path) -> Text | ParallelText:
    return read_pair(*path) if isinstance(path, tuple) else read_text(path)


def cached_split(path, vocab: Vocab | None, protocol: Protocol, log: Log) -> Encoded | None:
    """The split from its cached token file (`lmkit encode`), or None: then the text is read as always.

    Only a plain file under a known vocabulary can have one; finding it hashes the file, nothing more."""
    if vocab is None or path is None or isinstance(path, tuple) or str(path) == "-":
        return None
    from ..data.tokenfile import lookup

    found = lookup(path, vocab, protocol, log)
    if found is None:
        return None
    log(f"tokens: reusing {found.path}")
    return found.encoded(name=str(Path(path)))


def split_info(text: Text | ParallelText | None, enc: Encoded) -> dict:
    """The run.json data record of a split; `text` is None when it came from a token file."""
    info = {"path": enc.name, "sha256": enc.sha256, "sequences": len(enc.sequences),
            "tokens": enc.num_tokens, "skipped_blank_lines": enc.skipped_blank_lines}
    if isinstance(text, ParallelText):  # both files, each with its own hash; sha256 covers the pair
        info.update(source=text.source.name, target=text.target.name, source_sha256=text.source.sha256,
                    target_sha256=text.target.sha256)
    return info


def default_run_dir(runs_dir: str | Path, label: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-")
    return Path(runs_dir) / f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}"


def encode_splits(texts: dict[str, Text], vocab: Vocab, protocol: Protocol, log: Log,
                   cached: dict[str, Encoded] | None = None) -> dict[str, Encoded]:
    """Encode the texts read; splits found as token files (`cached`) are checked the same way."""
    encoded = {**(cached or {}), **{s: encode(t, vocab, protocol) for s, t in texts.items()}}
    for s, enc in encoded.items():
        if not enc.sequences:
            raise DataError(f"{enc.name}: has no non-blank lines to {'train on' if s == 'train' else 'score'}")
        if enc.reserved_tokens:
            log(f"warning: {enc.name}: {enc.reserved_tokens} literal <s>/</s>/<pad> tokens read as <unk>")
    return encoded
