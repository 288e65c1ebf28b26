"""The ONLY code that turns model log-probabilities into metrics (docs/protocol.md).

Perplexity is exp(total NLL / total scored tokens) over the whole file -- never a mean of batch
means -- with </s> scored, <s> not, OOV (<unk>) positions counted, and the excl.-OOV variant dropping
OOV positions from both the sum and the count, as KenLM does."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..data.sequences import lengths_and_ids, stream_layout
from ..data.corpus import Encoded
from ..data.vocab import EOS, UNK
from ..models.base import joined_logprobs

LN2 = math.log(2.0)
LN10 = math.log(10.0)


@dataclass
class Score:
    """Everything a scoring run measured; `summary()` gives the docs/protocol.md keys."""

    tokens: int
    oov: int
    sequences: int
    skipped_blank_lines: int
    nll_nats: float
    nll_nats_excl_oov: float
    characters: int
    level: str
    normalised: bool = True
    text_bytes: int = 0  # the Encoded's tokenisation-independent denominators (0: not measured)
    words: int = 0
    unk_bytes: int = 0
    line_numbers: list[int] = field(default_factory=list, repr=False)  # empty unless scored with keep=True
    # Per scored sequence, kept even when keep=False (three small arrays): what compare --bootstrap
    # resamples, so intervals need no rescoring. NLL in nats (float64), scored tokens, OOV positions.
    sequence_nll: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)
    sequence_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False, compare=False)
    sequence_oov: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False, compare=False)
    # Per scored token, in scoring order, also kept when keep=False: its NLL in nats, so lmkit analyze and lmkit
    # report bucket a run's test tokens without rescoring (evaluate/per_sequence.py)
    token_nll: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)
    token_targets: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False, compare=False)

    @property
    def logprobs(self) -> list[np.ndarray]:
        """ln P of each scored token, one array per sequence (empty unless scored with keep=True)."""
        return self._per_sequence(-self.token_nll)

    @property
    def targets(self) -> list[np.ndarray]:
        """The scored ids (</s> included), one array per sequence (empty unless scored with keep=True)."""
        return self._per_sequence(self.token_targets)

    def _per_sequence(self, flat: np.ndarray) -> list[np.ndarray]:
        if len(self.line_numbers) == 0:
            return []
        return np.split(flat, np.cumsum(self.sequence_tokens)[:-1])

    @property
    def cross_entropy_nats(self) -> float:
        return self.nll_nats / self.tokens if self.tokens else math.nan

    @property
    def perplexity(self) -> float:
        return exp_or_inf(self.cross_entropy_nats)

    @property
    def perplexity_excl_oov(self) -> float | None:
        n = self.tokens - self.oov
        return exp_or_inf(self.nll_nats_excl_oov / n) if n > 0 else None

    def summary(self) -> dict:
        out = {
            "tokens": self.tokens,
            "oov": self.oov,
            "sequences": self.sequences,
            "skipped_blank_lines": self.skipped_blank_lines,
            "nll_nats": self.nll_nats,
            "cross_entropy_nats": self.cross_entropy_nats,
            "cross_entropy_bits": self.cross_entropy_nats / LN2,
            "perplexity": self.perplexity,
            "perplexity_excl_oov": self.perplexity_excl_oov,
        }
        if self.level == "char":
            # the line break counts as a character: chars + one per sequence (docs/protocol.md)
            denom = self.characters + self.sequences
            out["bits_per_char"] = self.nll_nats / LN2 / denom if denom else None
        if self.text_bytes:  # the same NLL over denominators every tokenisation shares (docs/protocol.md)
            out["bytes"] = self.text_bytes
            out["bits_per_byte"] = self.nll_nats / LN2 / self.text_bytes
            out["words"] = self.words
            out["word_perplexity"] = exp_or_inf(self.nll_nats / self.words) if self.words else None
            out["unk_byte_share"] = self.unk_bytes / self.text_bytes
        out["normalised"] = self.normalised
        return out

    def per_line(self) -> list[dict]:
        rows = []
        for ln, lp, tg in zip(self.line_numbers, self.logprobs, self.targets):
            total = float(lp.sum())
            rows.append({
                "line": ln,
                "tokens": int(len(tg)),
                "oov": int((tg == UNK).sum()),
                "logprob": total,
                "log10prob": total / LN10,
                "perplexity": exp_or_inf(-total / len(tg)),
            })
        return rows

    def per_token(self, words: list[list[str]] | None = None) -> list[dict]:
        """One record per scored token; `words` are the original tokens per sequence, if known."""
        rows = []
        for si, (ln, lp, tg) in enumerate(zip(self.line_numbers, self.logprobs, self.targets)):
            for pos, (p, t) in enumerate(zip(lp.tolist(), tg.tolist())):
                if t == EOS:
                    tok = "</s>"
                elif words is not None:
                    tok = words[si][pos]
                else:
                    tok = None
                rows.append({"line": ln, "position": pos + 1, "token": tok, "logprob": p, "oov": t == UNK})
        return rows


def exp_or_inf(x: float) -> float:
    """exp(x), inf on overflow and nan for nan: a perplexity from a mean log-loss."""
    if math.isnan(x):
        return math.nan
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def scored_tokens(encoded: Encoded) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """What enters the metrics of `encoded`: (the scored target ids back to back, scored tokens per sequence, and
    which of all targets -- every sequence's ids and its </s> -- are scored; None: all of them). A parallel text
    scores only the target side and its </s> (`score_from`)."""
    lens, words = lengths_and_ids(encoded.sequences)
    targets = stream_layout(lens, words)[1:]
    lengths = lens + 1
    if encoded.score_from is None:
        return targets, lengths, None
    first = np.asarray(encoded.score_from, dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    scored = np.arange(targets.size) - np.repeat(starts, lengths) >= np.repeat(first, lengths)
    return targets[scored], lengths - first, scored


def score_encoded(model, encoded: Encoded, *, keep: bool = True) -> Score:
    """Score every sequence of `encoded` with `model` under the model's protocol.

    Parallel data (`encoded.score_from`): the model scores the whole `source <sep> target` sequence
    as usual, and only the target tokens and </s> enter the metrics and per-line/per-token records."""
    seqs = encoded.sequences
    if hasattr(model, "flat_logprobs"):  # every LanguageModel; other objects need only sequence_logprobs
        lp_all = np.asarray(model.flat_logprobs(seqs), dtype=np.float64)
    else:
        lp_all = joined_logprobs(model.sequence_logprobs(seqs), seqs, model.label)
    tg_all, lengths, scored = scored_tokens(encoded)
    if lp_all.shape != (int(lengths.sum()) if scored is None else scored.size,):
        raise AssertionError(f"{model.label}: flat_logprobs returned the wrong shape")
    if scored is not None:
        lp_all = lp_all[scored]
    oov_mask = tg_all == UNK
    with np.errstate(invalid="ignore"):
        nll = float(-lp_all.sum())
        nll_excl = float(-lp_all[~oov_mask].sum())
    seq_of = np.repeat(np.arange(len(lengths)), lengths)  # sequence index of every scored token
    with np.errstate(invalid="ignore"):
        seq_nll = np.bincount(seq_of, weights=-lp_all, minlength=len(lengths)).astype(np.float64)
    seq_oov = np.bincount(seq_of, weights=oov_mask, minlength=len(lengths)).astype(np.int64)
    return Score(
        tokens=int(tg_all.size),
        oov=int(oov_mask.sum()),
        sequences=len(encoded.sequences),
        skipped_blank_lines=encoded.skipped_blank_lines,
        nll_nats=nll,
        nll_nats_excl_oov=nll_excl,
        characters=encoded.characters,
        level=model.protocol.level,
        normalised=model.normalised,
        text_bytes=encoded.text_bytes,
        words=encoded.words,
        unk_bytes=encoded.unk_bytes,
        line_numbers=encoded.line_numbers if keep else [],
        sequence_nll=seq_nll,
        sequence_tokens=lengths,
        sequence_oov=seq_oov,
        token_nll=-lp_all,
        token_targets=tg_all if keep else np.zeros(0, np.int64),
    )
