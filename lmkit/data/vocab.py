"""Vocabulary: token <-> id with reserved ids, built from the training split only.

Ids 0..3 are <pad> <unk> <s> </s> (docs/protocol.md); a parallel corpus adds <sep> as id 4.
The JSON file records level, options, counts and a content hash (`vocab_id`) that runs carry, so a
model is never scored with a vocabulary it was not trained with."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from ..atomic import write_json
from ..errors import DataError, ModelError, UsageError
from .subword import DEFAULT_VOCAB_SIZE, SUBWORD_LEVELS, Subword, check_vocab_size, train_tokenizer

PAD, UNK, BOS, EOS, SEP = 0, 1, 2, 3, 4
SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")
SEP_TOKEN = "<sep>"
SCHEMA = 1


@dataclass
class Vocab:
    tokens: list[str]  # id -> token; tokens[:4] are SPECIALS
    counts: list[int]  # training count per id (0 for specials other than <unk>)
    level: str = "word"
    lowercase: bool = False
    normalize: str | None = None
    min_count: int = 1
    max_size: int | None = None
    tokenizer: str | None = None  # subword levels: the trained tokenizer's JSON text (data/subword.py)
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if tuple(self.tokens[:4]) != SPECIALS:
            raise ModelError("vocabulary does not start with the reserved tokens <pad> <unk> <s> </s>")
        self.index = {t: i for i, t in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise ModelError("vocabulary lists a token twice")

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def has_sep(self) -> bool:
        return len(self.tokens) > SEP and self.tokens[SEP] == SEP_TOKEN

    @property
    def vocab_id(self) -> str:
        """Content hash: same tokens in the same order under the same options -> same id."""
        content = [self.level, self.lowercase, self.normalize, self.tokens]
        if self.tokenizer is not None:  # the merges and scores decide the pieces as much as the pieces do
            content.append(self.tokenizer)
        return hashlib.sha256(json.dumps(content, ensure_ascii=False).encode()).hexdigest()[:16]

    @property
    def subword(self) -> Subword:
        """The tokenizer of a subword vocabulary (built once)."""
        if self.tokenizer is None:
            raise UsageError(f"a {self.level}-level vocabulary has no subword tokenizer")
        cached = self.__dict__.get("_subword")
        if cached is None:
            cached = self.__dict__["_subword"] = Subword(self.tokenizer)
        return cached

    def predictable_mask(self) -> np.ndarray:
        """Boolean (V,) mask of tokens a model may predict: all but <pad> and <s>."""
        mask = np.ones(len(self), dtype=bool)
        mask[PAD] = False
        mask[BOS] = False
        return mask

    @property
    def num_predictable(self) -> int:
        return len(self) - 2

    def encode(self, tokens: Iterable[str]) -> tuple[np.ndarray, int]:
        """Ids of `tokens` (unknown -> <unk>) and how many were literal reserved tokens.

        A literal <unk> is the <unk> id; literal <s>, </s>, <pad> (and <sep> in a vocabulary that has
        it) cannot be text and become <unk>: only the encoder places the separator."""
        get = self.index.get
        return self.encode_found(np.array([get(t, -1) for t in tokens], dtype=np.int64))

    def encode_found(self, found: np.ndarray) -> tuple[np.ndarray, int]:
        """encode() from token positions already looked up in `tokens` (-1 where a token is not there)."""
        arr = np.where(found < 0, UNK, found).astype(np.int32)
        bad = (arr == PAD) | (arr == BOS) | (arr == EOS)
        if self.has_sep:
            bad |= arr == SEP
        reserved = int(bad.sum())
        if reserved:
            arr[bad] = UNK
        return arr, reserved

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.tokens[i] for i in ids]

    def most_frequent(self, limit: int | None = None) -> list[int]:
        """Ids of the `limit` most frequent tokens (all without a limit) by training count, most frequent
        first, ties in id order; the reserved ids (and <sep>) are not tokens of the text and never listed."""
        first = SEP + 1 if self.has_sep else len(SPECIALS)
        ids = sorted(range(first, len(self)), key=lambda i: (-self.counts[i], i))
        return ids if limit is None else ids[:limit]

    # -- building ---------------------------------------------------------------------------------
    @staticmethod
    def check_options(min_count: int, max_size: int | None) -> None:
        """--min-count and --max-size, checked before any text is read."""
        if min_count < 1:
            raise UsageError(f"--min-count must be at least 1, got {min_count}")
        if max_size is not None and max_size < len(SPECIALS) + 1:
            raise UsageError(f"--max-size must be at least {len(SPECIALS) + 1}, got {max_size}")

    @classmethod
    def build(
        cls,
        counts: Counter,
        *,
        level: str = "word",
        lowercase: bool = False,
        normalize: str | None = None,
        min_count: int = 1,
        max_size: int | None = None,
        with_sep: bool = False,
    ) -> "Vocab":
        """Most frequent first (ties by token), keeping tokens seen >= min_count, at most max_size ids."""
        cls.check_options(min_count, max_size)
        specials = list(SPECIALS) + ([SEP_TOKEN] if with_sep else [])
        unk_count = counts.get("<unk>", 0)
        items = [(t, c) for t, c in counts.items() if t not in specials and t != SEP_TOKEN and c >= min_count]
        items.sort(key=lambda tc: (-tc[1], tc[0]))
        if max_size is not None:
            items = items[: max(0, max_size - len(specials))]
        kept = {t for t, _ in items}
        unk_count += sum(c for t, c in counts.items() if t not in kept and t not in specials)
        tokens = specials + [t for t, _ in items]
        tok_counts = [0, unk_count, 0, 0] + ([0] if with_sep else []) + [c for _, c in items]
        if len(tokens) == len(specials):
            raise DataError("the training text yields an empty vocabulary (no token reaches --min-count)")
        return cls(tokens, tok_counts, level, lowercase, normalize, min_count, max_size)

    @classmethod
    def build_subword(cls, lines: list[str], *, level: str, vocab_size: int = DEFAULT_VOCAB_SIZE,
                      lowercase: bool = False, normalize: str | None = None, with_sep: bool = False) -> "Vocab":
        """A byte-level BPE or unigram vocabulary of `vocab_size` ids (the reserved ones first) trained on the
        lines (already lower-cased / normalised as the protocol says); counts are its pieces in those lines."""
        specials = list(SPECIALS) + ([SEP_TOKEN] if with_sep else [])
        check_vocab_size(vocab_size, len(specials))
        spec, counts = train_tokenizer(lines, level, vocab_size, specials)
        pieces = Subword(spec).pieces()
        for i in range(len(specials)):
            counts[i] = counts[i] if i == UNK else 0
        return cls(pieces, counts, level, lowercase, normalize, 1, vocab_size, spec)

    # -- files ------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "kind": "lmkit-vocab",
            "vocab_id": self.vocab_id,
            "level": self.level,
            "lowercase": self.lowercase,
            "normalize": self.normalize,
            "min_count": self.min_count,
            "max_size": self.max_size,
            "size": len(self),
            "tokens": self.tokens,
            "counts": self.counts,
            **({"tokenizer": json.loads(self.tokenizer)} if self.tokenizer is not None else {}),
        }

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> "Vocab":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelError(f"{path}: vocabulary file not found") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"{path}: not a readable vocabulary file ({exc.__class__.__name__})") from None
        if not isinstance(data, dict) or data.get("kind") != "lmkit-vocab":
            raise ModelError(f"{path}: not an lmkit vocabulary file")
        from ..artifacts import check_version

        check_version(path, "vocabulary", data.get("schema"), SCHEMA)
        if not isinstance(data.get("tokens"), list) or not all(isinstance(t, str) for t in data["tokens"]):
            raise ModelError(f"{path}: vocabulary file is damaged (tokens must be a list of strings)")
        try:
            vocab = cls(
                list(data["tokens"]),
                [int(c) for c in data["counts"]],
                data["level"],
                bool(data["lowercase"]),
                data.get("normalize"),
                int(data["min_count"]),
                data.get("max_size"),
                _tokenizer_text(data.get("tokenizer")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{path}: vocabulary file is incomplete or edited ({exc})") from None
        except ModelError as exc:
            raise ModelError(f"{path}: {exc.message}") from None
        if vocab.level not in ("word", "char", *SUBWORD_LEVELS) or (vocab.normalize is not None
                                                                    and not isinstance(vocab.normalize, str)):
            raise ModelError(f"{path}: vocabulary file is damaged (level {vocab.level!r})")
        if (vocab.level in SUBWORD_LEVELS) != (vocab.tokenizer is not None):
            raise ModelError(f"{path}: vocabulary file is damaged (a {vocab.level}-level vocabulary "
                             f"{'needs' if vocab.tokenizer is None else 'cannot have'} a tokenizer)")
        if vocab.tokenizer is not None:
            try:
                pieces = vocab.subword.pieces()
            except ModelError as exc:
                raise ModelError(f"{path}: {exc.message}") from None
            if pieces != vocab.tokens:
                raise ModelError(f"{path}: vocabulary file is damaged (its tokenizer's pieces are not its tokens)")
        if len(vocab.counts) != len(vocab.tokens):
            raise ModelError(f"{path}: vocabulary file is inconsistent (tokens and counts differ in length)")
        if data.get("vocab_id") != vocab.vocab_id:
            raise ModelError(f"{path}: vocabulary content does not match its vocab_id (file was edited?)")
        return vocab


def _tokenizer_text(spec) -> str | None:
    """The tokenizer object of a vocabulary file as the canonical JSON text its vocab_id hashes."""
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise TypeError("tokenizer must be a JSON object")
    return json.dumps(spec, ensure_ascii=False, sort_keys=True)
