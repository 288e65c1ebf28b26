"""Subword levels (`bpe`, `unigram`): a tokenizer trained on the training split with Hugging Face `tokenizers`.

Why `tokenizers` (not sentencepiece): one library trains both BPE and unigram models, saves them as plain
JSON (no pickle, no protobuf), encodes whole texts in Rust, and reads the tokenizer.json of pretrained models.
Both levels work on bytes (GPT-2's byte-level alphabet: every one of the 256 bytes is a piece), so any text
is encoded without `<unk>`, and decoding gives back the exact text. Spaces are part of the pieces (`Ġ`
marks a leading space), so the pieces of a line decode to the line.

Training is deterministic for a given text and size: BPE is by construction; the unigram trainer's piece set
is kept and its scores, which vary from run to run, are estimated again deterministically (_settle_unigram).
Pieces are numbered by their count in the training text, most frequent first, after the reserved ids.
"""

from __future__ import annotations

import json
from itertools import chain

import numpy as np
import pyarrow.compute as pc

from ..errors import ModelError, UsageError
from ..protocol import SUBWORD_LEVELS
from .columnar import POOL, single_spaced_shapes, split_words

DEFAULT_VOCAB_SIZE = 8000  # ids, the reserved ones included
_SCORE_DECIMALS = 6  # unigram log-probabilities kept to this many decimals
UNIGRAM_ROUNDS = 3  # rounds of hard EM that give the unigram pieces their (deterministic) scores
_SMOOTHING = 0.1  # added to every piece's count when it is scored: a piece never used keeps a finite score


def _library():
    try:
        import tokenizers
    except ImportError:  # a dependency: only a broken install lacks it
        raise UsageError("subword levels need the 'tokenizers' package: pip install tokenizers") from None
    return tokenizers


def check_vocab_size(size: int, reserved: int) -> None:
    """At least every byte, the reserved ids and one more piece."""
    if size < 256 + reserved + 1:
        raise UsageError(f"--vocab-size must be at least {256 + reserved + 1} (every byte, the reserved ids and "
                         f"one merge), got {size}")


def train_tokenizer(lines: list[str], level: str, size: int, reserved: list[str]) -> tuple[str, list[int]]:
    """A byte-level BPE or unigram tokenizer of `size` ids trained on the lines: (its JSON text, the count of
    every id in the lines).

    The `reserved` tokens take ids 0.. (lmkit's <pad> <unk> <s> </s>, and <sep>), so the tokenizer's ids are
    the vocabulary's and a literal `<unk>` in the text is read as <unk>, as at word level. The other pieces
    are numbered by their count in the lines, most frequent first, as a word vocabulary is (the adaptive
    softmax's head is a prefix of the ids)."""
    tk = _library()
    alphabet = tk.pre_tokenizers.ByteLevel.alphabet()
    if level == "bpe":
        tok = tk.Tokenizer(tk.models.BPE())
        trainer = tk.trainers.BpeTrainer(vocab_size=size, initial_alphabet=alphabet, special_tokens=reserved,
                                         show_progress=False)
    elif level == "unigram":
        tok = tk.Tokenizer(tk.models.Unigram())
        trainer = tk.trainers.UnigramTrainer(vocab_size=size, initial_alphabet=alphabet, special_tokens=reserved,
                                             unk_token=reserved[1], show_progress=False)
    else:
        raise UsageError(f"unknown subword level {level!r}; choose one of {', '.join(SUBWORD_LEVELS)}")
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk.decoders.ByteLevel()
    tok.train_from_iterator(lines, trainer)
    spec = json.loads(tok.to_str())
    if level == "unigram":
        _settle_unigram(spec, lines, len(reserved))
    return _by_frequency(spec, lines, len(reserved))


def _counts(spec: dict, lines: list[str]) -> np.ndarray:
    """How often each id of the tokenizer `spec` occurs in the lines."""
    ids, _ = Subword(json.dumps(spec)).encode(lines)
    return np.bincount(ids, minlength=_size(spec))


def _size(spec: dict) -> int:
    return len(spec["model"]["vocab"])


def _settle_unigram(spec: dict, lines: list[str], reserved: int) -> None:
    """The unigram trainer's piece set with scores made deterministic.

    The trainer picks the same pieces on every run, but its EM sums in hash-map order, so its scores, and the
    order of its pieces, differ from run to run. The pieces are put in string order and scored again by
    UNIGRAM_ROUNDS rounds of hard EM from equal scores: segment the lines (Viterbi), score each piece by its
    smoothed relative frequency, rounded. Every step is deterministic."""
    model = spec["model"]
    head, rest = model["vocab"][:reserved], sorted(p for p, _ in model["vocab"][reserved:])
    scores = np.full(len(rest), -1.0)
    for _ in range(UNIGRAM_ROUNDS):
        model["vocab"] = head + [[p, float(x)] for p, x in zip(rest, scores)]
        counts = _counts(spec, lines)[reserved:] + _SMOOTHING
        scores = np.round(np.log(counts / counts.sum()), _SCORE_DECIMALS)
    model["vocab"] = head + [[p, float(x)] for p, x in zip(rest, scores)]


def _by_frequency(spec: dict, lines: list[str], reserved: int) -> tuple[str, list[int]]:
    """The tokenizer with its pieces renumbered by count (reserved ids kept), and those counts."""
    counts = _counts(spec, lines)
    model = spec["model"]
    if model["type"] == "BPE":
        pieces = sorted(model["vocab"], key=model["vocab"].get)
    else:
        pieces = [p for p, _ in model["vocab"]]
    order = list(range(reserved)) + sorted(range(reserved, len(pieces)), key=lambda i: (-int(counts[i]), pieces[i]))
    if model["type"] == "BPE":
        model["vocab"] = {pieces[old]: new for new, old in enumerate(order)}
    else:
        model["vocab"] = [model["vocab"][old] for old in order]
    return json.dumps(spec, ensure_ascii=False, sort_keys=True), [int(counts[old]) for old in order]


class Subword:
    """A trained tokenizer read from its JSON text; its ids are the vocabulary's."""

    def __init__(self, spec: str):
        tk = _library()
        try:
            self.tokenizer = tk.Tokenizer.from_str(spec)
        except Exception as exc:  # the library raises its own exception types for bad JSON
            raise ModelError(f"the subword tokenizer cannot be read ({str(exc).splitlines()[0][:120]})") from None
        # lmkit's own tokenizers (byte-level, GPT-2's regex, no normaliser) can be run a distinct word at a time
        parsed = json.loads(spec)
        pre = parsed.get("pre_tokenizer") or {}
        self.by_words = (parsed.get("normalizer") is None and pre.get("type") == "ByteLevel"
                         and pre.get("use_regex", True) and not pre.get("add_prefix_space", False))

    def pieces(self) -> list[str]:
        """The pieces in id order."""
        vocab = self.tokenizer.get_vocab(with_added_tokens=True)
        out = [""] * len(vocab)
        for piece, i in vocab.items():
            if not 0 <= i < len(out) or out[i]:
                raise ModelError("the subword tokenizer's ids are not 0..N-1")
            out[i] = piece
        return out

    def encode(self, lines: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(vocabulary ids of every line's pieces back to back, pieces per line)."""
        if not lines:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        if not self.by_words:
            return self._encode_lines(lines)
        shape = single_spaced_shapes(lines)
        picked = np.flatnonzero(shape >= 0)
        flat_simple, len_simple = self._encode_words([lines[i] for i in picked.tolist()], shape[picked])
        rest = np.flatnonzero(shape < 0)
        if not rest.size:
            return flat_simple, len_simple
        flat_rest, len_rest = self._encode_lines([lines[i] for i in rest.tolist()])
        lengths = np.zeros(len(lines), dtype=np.int64)
        lengths[picked], lengths[rest] = len_simple, len_rest
        starts = np.cumsum(lengths) - lengths
        flat = np.empty(int(lengths.sum()), dtype=np.int64)
        flat[_spans(starts[picked], len_simple)] = flat_simple
        flat[_spans(starts[rest], len_rest)] = flat_rest
        return flat, lengths

    def _encode_lines(self, lines: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """encode() line by line in the library."""
        if not lines:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        encodings = self.tokenizer.encode_batch(lines, add_special_tokens=False)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(encodings))
        flat = np.fromiter(chain.from_iterable(e.ids for e in encodings), dtype=np.int64, count=int(lengths.sum()))
        return flat, lengths

    def _encode_words(self, lines: list[str], shape: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """encode() of lines of words separated by single spaces (`shape`: bit 1 a leading space, bit 2 a
        trailing one; columnar.single_spaced_shapes), each distinct word encoded once.

        With GPT-2's byte-level pre-tokenizer a pre-token never spans a space except the one space it may
        start with, and BPE or unigram cut each pre-token alone: a line's pieces are its first word's pieces
        (" word"'s after a leading space), those of " word" for every later word, then a trailing space's.
        A test checks this against whole lines."""
        tokens, per_line = split_words(lines)
        coded = pc.dictionary_encode(tokens, memory_pool=POOL)  # one hash pass: the distinct words, each token's index
        which = coded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        words = coded.dictionary.to_pylist()
        line_of = np.repeat(np.arange(len(lines)), per_line)
        first = np.zeros(len(which), dtype=bool)
        first[(np.cumsum(per_line) - per_line)[per_line > 0]] = True
        bare_word = first & ((shape[line_of] & 1) == 0)  # a line's first word, no space before it
        bare_words = np.unique(which[bare_word])  # only these are ever needed without their space
        bare, bare_len = self._encode_lines([words[i] for i in bare_words.tolist()])
        spaced, spaced_len = self._encode_lines([" " + w for w in words] + [" "])  # the last: a trailing space
        table = np.concatenate([bare, spaced])
        spaced_start = len(bare) + np.cumsum(spaced_len) - spaced_len
        bare_at = np.searchsorted(bare_words, which[bare_word])
        start, length = spaced_start[which], spaced_len[which]
        start[bare_word] = (np.cumsum(bare_len) - bare_len)[bare_at]
        length[bare_word] = bare_len[bare_at]
        # a line with a trailing space gets one more entry, " ", after its words
        trail = (shape & 2) > 0
        before = np.cumsum(trail) - trail  # trailing entries of the lines before each line
        word_at = np.arange(len(which)) + before[line_of]
        trail_at = (np.cumsum(per_line) + before)[trail]
        entries = len(which) + int(trail.sum())
        all_start, all_length = np.empty(entries, dtype=np.int64), np.empty(entries, dtype=np.int64)
        all_start[word_at], all_length[word_at] = start, length
        all_start[trail_at], all_length[trail_at] = spaced_start[-1], spaced_len[-1]
        pieces = np.bincount(line_of, weights=length, minlength=len(lines)).astype(np.int64)
        pieces[trail] += spaced_len[-1]
        return table[_spans(all_start, all_length)], pieces

    def tokens(self, line: str) -> list[str]:
        """The pieces of one line, as strings."""
        return self.tokenizer.encode(line, add_special_tokens=False).tokens

    def decode(self, pieces: list[str]) -> str:
        """The text of a list of pieces (the inverse of `tokens`)."""
        ids = [self.tokenizer.token_to_id(p) for p in pieces]
        return self.tokenizer.decode([i for i in ids if i is not None], skip_special_tokens=False)


def _spans(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Every position of the spans [start, start + length), span after span."""
    lengths = np.asarray(lengths, dtype=np.int64)
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(np.asarray(starts, dtype=np.int64) - offsets, lengths) + np.arange(int(lengths.sum()))
