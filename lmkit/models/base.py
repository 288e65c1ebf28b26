"""The one interface every model family implements (docs/protocol.md).

The base class owns what must be identical across families: how contexts are formed under the
protocol (sentence vs stream), which ids are predictable, and the reference scoring loop. Families
implement `fit`, `next_logprobs`, `save`/`load`; fast families override `sequence_logprobs` with a
batched pass that a contract test checks against the reference loop. What the rest of lmkit knows about a
family besides this interface (its flags, limits, defaults, lineup, verify recipe) is its `FAMILY`
declaration (family.py), listed by the registry (lmkit/models/__init__.py)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar, Sequence

import numpy as np

from ..data.corpus import Encoded
from ..data.vocab import BOS, EOS, Vocab
from ..protocol import Protocol
from ..logs import Log, quiet


class LanguageModel(ABC):
    kind: ClassVar[str]  # registry key: its FAMILY.kind (lmkit/models/family.py)
    Config: ClassVar[type]  # dataclass of hyperparameters
    normalised: ClassVar[bool] = True  # False only for scores that are not probabilities (stupid backoff)

    def __init__(self, config, vocab: Vocab, protocol: Protocol):
        self.config = config
        self.vocab = vocab
        self.protocol = protocol

    # -- what a family must provide ---------------------------------------------------------------
    @property
    def label(self) -> str:
        """Short name shown in tables, e.g. 'ngram:kn5'."""
        return self.kind

    @property
    def history(self) -> int | None:
        """How many previous tokens the model looks at (None: unbounded)."""
        return None

    def fit(self, train: Encoded, valid: Encoded | None, log: Log = quiet) -> dict:
        """Estimate a counted model (n-grams); returns facts worth recording in run.json (tuned k,
        discounts...). Neural families are not fitted here: lmkit.train trains them."""
        raise NotImplementedError(f"{type(self).__name__} is trained by lmkit.train, not by fit()")

    @abstractmethod
    def next_logprobs(self, contexts: Sequence[Sequence[int]]) -> np.ndarray:
        """(B, V) natural-log P(next | context); <pad> and <s> get -inf, rows normalise over the rest.

        A context is the full list of previous ids, starting with <s> (BOS)."""

    @abstractmethod
    def save(self, run_dir: Path) -> None:
        """Write the model's files into run_dir (config and vocab are written by the run store)."""

    @classmethod
    @abstractmethod
    def load(cls, run_dir: Path, config, vocab: Vocab, protocol: Protocol, device: str = "cpu"):
        """Rebuild a model saved by `save`; raise ModelError on missing or damaged files."""

    @abstractmethod
    def num_parameters(self) -> int:
        """Trainable parameters (neural) or stored n-gram entries."""

    def fit_info(self) -> dict:
        """Facts about the fitted model for run.json and `compare` (overridable)."""
        return {}

    # -- shared behaviour -------------------------------------------------------------------------
    def contexts_for(self, sequences: list[np.ndarray]):
        """Yield (seq_index, position, context) for every scored token under the protocol.

        sentence: each sequence starts from <s>; stream: one <s> at the start of the text and the
        context carries across </s>. Contexts are cut to `history` tokens when it is bounded."""
        h = self.history
        if self.protocol.context == "stream":
            stream = [BOS]
            for si, seq in enumerate(sequences):
                for pos, tok in enumerate(list(seq) + [EOS]):
                    yield si, pos, (stream[-h:] if h else list(stream))
                    stream.append(int(tok))
        else:
            for si, seq in enumerate(sequences):
                ctx = [BOS]
                for pos, tok in enumerate(list(seq) + [EOS]):
                    yield si, pos, (ctx[-h:] if h else list(ctx))
                    ctx.append(int(tok))

    def flat_logprobs(self, sequences: list[np.ndarray]) -> np.ndarray:
        """sequence_logprobs back to back (float64): what scoring a file needs, checked for shape here so no family
        can return the wrong number of scores. Families that score everything at once override it and skip the
        split into sequences."""
        return joined_logprobs(self.sequence_logprobs(sequences), sequences, self.label)

    def sequence_logprobs(self, sequences: list[np.ndarray], batch_size: int = 256) -> list[np.ndarray]:
        """ln P of every scored token (w_1..w_n and </s>) of each sequence, under the protocol.

        Reference implementation: one next_logprobs row per token. Families override it with a
        vectorised version; tests check both agree."""
        out = [np.empty(len(s) + 1, dtype=np.float64) for s in sequences]
        targets = [np.append(np.asarray(s, dtype=np.int64), EOS) for s in sequences]
        pending: list[tuple[int, int, list[int]]] = []

        def flush() -> None:
            rows = self.next_logprobs([c for _, _, c in pending])
            for (si, pos, _), row in zip(pending, rows):
                out[si][pos] = row[targets[si][pos]]
            pending.clear()

        for item in self.contexts_for(sequences):
            pending.append(item)
            if len(pending) >= batch_size:
                flush()
        if pending:
            flush()
        return out


def joined_logprobs(parts: list[np.ndarray], sequences, label: str) -> np.ndarray:
    """Per-sequence log-probabilities back to back (float64), refused unless there is one array per sequence
    with one score per token and </s>: a family that returns the wrong number of scores is a bug caught here."""
    if len(parts) != len(sequences) or any(len(p) != len(s) + 1 for p, s in zip(parts, sequences)):
        raise AssertionError(f"{label}: sequence_logprobs returned the wrong shape")
    return np.concatenate(parts).astype(np.float64, copy=False) if len(parts) else np.zeros(0)
