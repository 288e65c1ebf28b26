"""The n-gram family: count once with numpy, smooth per order, score targets by vectorised lookup.

Smoothings (docs/protocol.md): mle, laplace, addk (Lidstone), katz (Katz 1987), stupid (Brants et
al. 2007), jm (Jelinek & Mercer 1980), wb (Witten & Bell 1991), kn-basic and kn (interpolated
Kneser-Ney, one or three discounts per order; Chen & Goodman 1998; `kn` reproduces KenLM's lmplz).
The math lives in smoothing.py, the counting and lookup layout in counts.py (the same counts out of
core: external.py, on Dask: dask_engine.py; chosen by a CountingPlan, resources.py); this file holds the
config, fit, scoring and the model.npz format. `ArpaModel` (arpa.py) reuses the scoring half.
"""

from __future__ import annotations

import json
import zipfile
import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from ...atomic import atomic_open
from ...data.corpus import Encoded
from ...data.vocab import BOS, PAD, Vocab
from ...errors import DataError, ModelError, UsageError
from ...protocol import Protocol
from ...logs import Log, current, quiet
from ...parallel import cuts, parts, run_parts
from ..base import LanguageModel
from ..family import Family, Lineup
from . import smoothing as sm
from .counts import NgramIndex, count_ngrams, flatten
from .resources import CountingPlan

FAMILY = Family(
    kind="ngram",
    model="lmkit.models.ngram.model:NgramModel",
    neural=False,
    options=("order", "smoothing", "k"),  # the other smoothings' options are reached with --set
    limits={"order": 10},
    defaults={},
    # Laplace shows why smoothing matters; modified Kneser-Ney is the n-gram to beat.
    lineup=Lineup(specs=("ngram:laplace3", "ngram:kn5")),
    tiny={"order": 3},
    variant="lmkit.models.ngram.model:parse_variant",
    variant_hint="n-grams as ngram:<smoothing><order>, e.g. ngram:kn5",
    examples=("ngram:kn5", "ngram:laplace3", "ngram (= ngram:kn3)"),
)
MAX_ORDER = FAMILY.limits["order"]
FORMAT = "lmkit-ngram"
FORMAT_VERSION = 1
_VARIANT = re.compile(r"^(?P<smoothing>[a-z]+(?:-[a-z]+)*)(?P<order>\d+)$")


def parse_variant(spec: str, variant: str) -> dict:
    """'kn5' of the spec 'ngram:kn5' -> {'smoothing': 'kn', 'order': 5} (the registry's parse_spec asks)."""
    m = _VARIANT.match(variant)
    if not m or m.group("smoothing") not in sm.SMOOTHINGS:
        raise UsageError(f"bad n-gram spec {spec!r}; expected ngram:<smoothing><order> with smoothing one of "
                         f"{', '.join(sm.SMOOTHINGS)}, e.g. ngram:kn5")
    return {"smoothing": m.group("smoothing"), "order": int(m.group("order"))}


@dataclass
class NgramConfig:
    order: int = 3  # n: condition on the previous n-1 tokens (1..10); `ngram:kn5` sets 5
    smoothing: str = "kn"  # mle laplace addk katz stupid jm wb kn kn-basic; kn = modified KN, as KenLM
    k: float | str = 1.0  # addk's k (>= 0) or "auto": tuned on the valid split (golden section on log k)
    alpha: float = 0.4  # stupid backoff's back-off factor (Brants et al. 2007 use 0.4)
    katz_k: int = 5  # Katz: counts <= katz_k get Good-Turing discounts, larger counts are trusted
    jm_lambdas: tuple[float, ...] | None = None  # JM lambda per order 1..n; None: EM on the valid split
    discount_fallback: tuple[float, float, float] = (0.5, 1.0, 1.5)  # KN D1 D2 D3+ when counts-of-counts
    # make them undefined (tiny corpora), as KenLM's --discount_fallback

    def __post_init__(self) -> None:
        try:
            self.order = int(self.order)
        except (TypeError, ValueError):
            raise UsageError(f"n-gram order must be an integer, got {self.order!r}") from None
        if not 1 <= self.order <= MAX_ORDER:
            raise UsageError(f"n-gram order must be between 1 and {MAX_ORDER}, got {self.order}")
        if self.smoothing not in sm.SMOOTHINGS:
            raise UsageError(f"unknown smoothing {self.smoothing!r}; "
                             f"choose one of {', '.join(sm.SMOOTHINGS)}")
        if isinstance(self.k, str) and self.k.strip().lower() == "auto":
            self.k = "auto"
        else:
            try:
                self.k = float(self.k)
            except (TypeError, ValueError):
                raise UsageError(f"k must be a number >= 0 or 'auto', got {self.k!r}") from None
            if not self.k >= 0 or math.isinf(self.k):
                raise UsageError(f"k must be a finite number >= 0 or 'auto', got {self.k}")
        self.alpha = float(self.alpha)
        if not 0 < self.alpha <= 1:
            raise UsageError(f"stupid backoff alpha must be in (0, 1], got {self.alpha}")
        self.katz_k = int(self.katz_k)
        if self.katz_k < 1:
            raise UsageError(f"katz_k must be at least 1, got {self.katz_k}")
        if self.jm_lambdas is not None:
            lams = _floats(self.jm_lambdas, "jm_lambdas")
            if len(lams) != self.order or not all(0 <= x <= 1 for x in lams):
                raise UsageError(f"jm_lambdas needs {self.order} values in [0, 1] (one per order), "
                                 f"got {lams}")
            self.jm_lambdas = tuple(lams)
        fb = _floats(self.discount_fallback, "discount_fallback")
        if len(fb) != 3 or not all(0 <= d <= j for j, d in zip((1, 2, 3), fb)):
            raise UsageError(f"discount_fallback needs D1 D2 D3 with 0 <= Dj <= j, got {fb}")
        self.discount_fallback = tuple(fb)

    def check_given(self, given: Iterable[str]) -> None:
        """Refuse an option that only other smoothings read: with this one it would be silently ignored.

        `given`: the fields the user set (resolve_model calls this after building the config)."""
        given = set(given)
        for name in (f.name for f in fields(self)):  # field order: which of two misplaced options is named
            users = sm.readers(name)
            if name in given and users and self.smoothing not in users:
                flag = f"--{name}" if name in FAMILY.options else f"--set {name}"
                raise UsageError(f"{flag} applies to {' and '.join(users)} smoothing, not {self.smoothing}")


def _floats(value, name: str) -> list[float]:
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    try:
        return [float(x) for x in value]
    except (TypeError, ValueError):
        raise UsageError(f"{name} must be a list of numbers, got {value!r}") from None


def _take(values: np.ndarray, ids: np.ndarray, default: float) -> np.ndarray:
    """values[ids] where ids >= 0, else `default` (an absent context)."""
    out = np.full(ids.shape, default, dtype=np.float64)
    ok = ids >= 0
    out[ok] = values[ids[ok]]
    return out


# A text with this many positions is scored in parts side by side (TableModel._score).
SCORE_PARALLEL_MIN = 1 << 17


class TableModel(LanguageModel):
    """Scoring over an NgramIndex: back-off form (logp/logbo) or add-k counts. Shared by NgramModel
    and ArpaModel; subclasses set `index` and `est`."""

    index: NgramIndex | None = None
    est: sm.Estimate | sm.Additive | None = None

    @property
    def order(self) -> int:
        return self.index.order if self.index is not None else int(getattr(self.config, "order", 1))

    @property
    def history(self) -> int | None:
        return self.order - 1

    def _set_tables(self, index: NgramIndex, est) -> None:
        self.index, self.est = index, est
        for cache in ("_ext_cache", "_last_cache", "_children_calls"):  # row-building state of the old tables
            self.__dict__.pop(cache, None)

    def _ready(self) -> None:
        if self.index is None or self.est is None:
            raise UsageError(f"{self.label}: the model is not fitted yet")

    def num_parameters(self) -> int:
        if self.index is None:
            return 0
        return (self.index.vocab_size - 1) + sum(self.index.size(n) for n in range(2, self.order + 1))

    # -- scoring ----------------------------------------------------------------------------------------
    def _score(self, toks: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """ln P of every token of a flattened text given the tokens before it in its unit (positions at depth 0,
        the `<s>`, are not predictions: callers drop them). One walk over the orders, no per-token Python; a long
        text in parts side by side (lmkit/parallel.py), each part read from N-1 tokens before it so that its first
        token has its whole history (their depth capped at what the part holds, so no walk reaches past it)."""
        count = parts(toks.size, SCORE_PARALLEL_MIN)
        if count < 2:
            return self._score_part(toks, depth)
        at, lead = cuts(toks.size, count), self.order - 1
        out = np.empty(toks.size)

        def part(i: int) -> None:
            start = max(at[i] - lead, 0)
            held = depth[start:at[i + 1]].copy()
            head = min(lead, held.size)
            np.minimum(held[:head], np.arange(head, dtype=held.dtype), out=held[:head])
            out[at[i]:at[i + 1]] = self._score_part(toks[start:at[i + 1]], held)[at[i] - start:]

        run_parts(part, count)
        return out

    def _score_part(self, toks: np.ndarray, depth: np.ndarray) -> np.ndarray:
        walk = self.index.walk(toks, depth)
        if isinstance(self.est, sm.Additive):
            return self._additive_scores(walk, depth)
        return self._backoff_scores(walk, depth)

    def _backoff_scores(self, walk: Iterator[tuple[np.ndarray, np.ndarray]], depth: np.ndarray) -> np.ndarray:
        """The back-off recursion, one order at a time for every position at once: at order k, a position whose
        k-gram is stored takes its log-probability; the others with k-1 tokens of context in their unit keep the
        order below's value plus the back-off weight of that context (the (k-1)-gram ending just before). So each
        ends on its longest stored n-gram plus the weights of every longer context, as ARPA defines."""
        est = self.est
        _, words = next(walk)
        out = est.logp[0][words]
        before, before_ids = None, None
        for k, (at, ids) in enumerate(walk, start=2):
            if est.missing_bo:  # an unstored context has a weight too (stupid back-off's alpha)
                out[depth >= k - 1] += est.missing_bo
            # the positions whose context, the (k-1)-gram ending just before, is stored; one that starts the next
            # unit gets a weight too, harmlessly: a unit's <s> is never scored
            if before is None:  # order 2: every word's context is the word before it
                nxt, weight = slice(1, None), est.logbo[0][words[:-1]]
            else:
                keep = before < out.size - 1
                nxt, weight = before[keep] + 1, est.logbo[k - 2][before_ids[keep]]
            if est.missing_bo:
                weight -= est.missing_bo
            out[nxt] += weight
            out[at] = est.logp[k - 1][ids]  # a stored k-gram: no back-off at this order (overwrites the weight)
            before, before_ids = at, ids
        return out

    def _additive_scores(self, walk: Iterator[tuple[np.ndarray, np.ndarray]], depth: np.ndarray) -> np.ndarray:
        """Add-k over the whole available history h (up to N-1 tokens): (c(h w) + k) / (c(h) + k |P|), with
        c(h w) the count of the n-gram ending at the position and c(h) its context's, ending just before it."""
        est, N = self.est, self.order
        hist = np.minimum(depth, N - 1)
        before, before_ids = next(walk)
        num = est.counts[0][before_ids].astype(np.float64)
        den = np.where(hist == 0, est.total, 0.0)
        num[hist > 0] = 0
        for k, (at, ids) in enumerate(walk, start=2):
            full = hist[at] == k - 1  # the n-gram over the whole history is stored here
            num[at[full]] = est.counts[k - 1][ids[full]]
            nxt = before + 1
            inside = nxt < depth.size
            inside[inside] = hist[nxt[inside]] == k - 1
            den[nxt[inside]] = est.den[k - 2][before_ids[inside]]
            before, before_ids = at, ids
        return sm.additive_logprob(num, den, est.k, self.index.vocab_size - 2)

    def sequence_logprobs(self, sequences: list[np.ndarray], batch_size: int = 256) -> list[np.ndarray]:
        """Vectorised over every target of every sequence (batch_size is irrelevant here)."""
        if not len(sequences):
            return []
        lens = np.fromiter((len(s) + 1 for s in sequences), dtype=np.int64, count=len(sequences))
        return np.split(self.flat_logprobs(sequences), np.cumsum(lens)[:-1])

    def flat_logprobs(self, sequences: list[np.ndarray]) -> np.ndarray:
        self._ready()
        if not len(sequences):
            return np.zeros(0)
        toks, depth = flatten(sequences, self.protocol.context)
        return self._score(toks, depth)[depth > 0]

    def _children(self, n: int, cids: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """For each context id in `cids` (order n-1, all >= 0): (its order-n extensions' entries, their last words).

        A first call scans the table for just these contexts (one pass, no lasting memory: the quick checks of
        every `lmkit train`); calls after it, as generation makes, build and keep an index by context once."""
        calls = self.__dict__.setdefault("_children_calls", {})
        calls[n] = calls.get(n, 0) + 1
        if calls[n] > 1 or n in self.__dict__.get("_ext_cache", {}):
            order, starts, last = self._extensions(n)
            return [(e, last[e]) for e in (order[starts[c]:starts[c + 1]] for c in cids)]
        prefix = self.index.prefix(n)
        hit = np.flatnonzero(np.isin(prefix, cids))
        hit = hit[np.argsort(prefix[hit], kind="stable")]
        bounds = np.searchsorted(prefix[hit], np.stack([cids, cids + 1]))
        words = self._last_words(n, hit)
        return [(hit[a:b], words[a:b]) for a, b in zip(*bounds)]

    def _last_words(self, n: int, entries: np.ndarray | None = None) -> np.ndarray:
        """The last word of some order-n entries (None: of all), following each suffix id down to the unigram."""
        ids = entries
        for m in range(n, 1, -1):
            keys = self.index.keys[m - 1]
            ids = (keys if ids is None else keys[ids]) // self.index.vocab_size
        return self.index.keys[0] if ids is None else ids

    def _extensions(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """CSR view of order n >= 2 grouped by context: (entry order, start offsets, last word)."""
        cache = self.__dict__.setdefault("_ext_cache", {})
        if n not in cache:
            prefix = self.index.prefix(n)
            order = np.argsort(prefix, kind="stable")
            starts = np.searchsorted(prefix[order], np.arange(self.index.size(n - 1) + 1))
            last = self._last(n)
            cache[n] = (order, starts, last)
        return cache[n]

    def _last(self, n: int) -> np.ndarray:
        cache = self.__dict__.setdefault("_last_cache", {})
        if n not in cache:
            cache[n] = self._last_words(n)
        return cache[n]

    def next_logprobs(self, contexts: Sequence[Sequence[int]]) -> np.ndarray:
        """(B, V) full rows: start from the unigram row and walk up the context, adding the back-off
        weight and overwriting the stored extensions at each order (the back-off recursion)."""
        self._ready()
        N, V = self.order, self.index.vocab_size
        hs = [list(c)[max(len(c) - (N - 1), 0):] if N > 1 else [] for c in contexts]
        B = len(hs)
        if B == 0:
            return np.zeros((0, V))
        units = [np.asarray(h + [PAD], dtype=np.int64) for h in hs]
        toks = np.concatenate(units)
        depth = np.concatenate([np.arange(u.size) for u in units]).astype(np.int64)
        pos = np.cumsum([u.size for u in units]) - 1
        _, ctx = self.index.chains(toks, depth, pos)
        hist = np.array([len(h) for h in hs])
        est = self.est
        if isinstance(est, sm.Additive):
            rows = np.empty((B, V))
            P = V - 2
            found = {}  # (order, context id) -> its extensions and their last words
            for m in range(1, N):
                cids = np.unique(ctx[(hist == m) & (ctx[:, m - 1] >= 0), m - 1])
                if cids.size:
                    found.update(zip(((m, int(c)) for c in cids), self._children(m + 1, cids)))
            for b in range(B):
                m = int(hist[b])
                cid = -1 if m == 0 else int(ctx[b, m - 1])
                cnt = np.zeros(V)
                if m == 0:
                    cnt, den = est.counts[0], est.total
                elif cid >= 0:
                    ext, last = found[(m, cid)]
                    cnt[last] = est.counts[m][ext]
                    den = est.den[m - 1][cid]
                else:
                    den = 0.0
                rows[b] = sm.additive_logprob(cnt, np.full(V, den), est.k, P)
        else:
            rows = np.tile(est.logp[0], (B, 1))
            for j in range(1, N):
                active = hist >= j
                cid = ctx[:, j - 1]
                bo = _take(est.logbo[j - 1], cid, est.missing_bo)
                rows[active] += bo[active][:, None]
                which = np.flatnonzero(active & (cid >= 0))
                if not which.size:
                    continue
                cids, back = np.unique(cid[which], return_inverse=True)
                children = self._children(j + 1, cids)
                for b, k in zip(which, back.reshape(-1)):
                    ext, last = children[k]
                    rows[b, last] = est.logp[j][ext]
        rows[:, PAD] = -np.inf
        rows[:, BOS] = -np.inf
        return rows

    # -- model.npz ------------------------------------------------------------------------------------
    def _save_tables(self, path: Path, meta: dict) -> None:
        self._ready()
        arrays = {}
        for n in range(2, self.order + 1):
            arrays[f"keys_{n}"] = self.index.keys[n - 1]
        est = self.est
        if isinstance(est, sm.Additive):
            meta = {**meta, "form": "additive", "k": est.k, "total": est.total}
            for n in range(1, self.order + 1):
                arrays[f"count_{n}"] = est.counts[n - 1]
            for n in range(1, self.order):
                arrays[f"den_{n}"] = est.den[n - 1]
        else:
            meta = {**meta, "form": "backoff", "missing_bo": est.missing_bo}
            for n in range(1, self.order + 1):
                arrays[f"logp_{n}"] = est.logp[n - 1]
            for n in range(1, self.order):
                arrays[f"logbo_{n}"] = est.logbo[n - 1]
        meta = {**meta, "format": FORMAT, "version": FORMAT_VERSION, "order": self.order,
                "vocab_size": self.index.vocab_size}
        arrays["meta"] = np.array(json.dumps(meta))
        with atomic_open(path, "wb") as fh:
            np.savez(fh, **arrays)

    @staticmethod
    def _load_tables(path: Path, vocab_size: int) -> tuple[NgramIndex, sm.Estimate | sm.Additive, dict]:
        """Read model.npz (no pickles); any damage -> one-line ModelError naming the file.

        The tables are memory-mapped, not copied (lmkit.npzmap): the file is read once to check every member's
        CRC and every value (keys sorted, no NaN) a block at a time, and scoring then touches only the pages it
        needs. A compressed archive (not what lmkit writes) is read by np.load and checked the same way."""
        if not path.exists():
            raise ModelError(f"{path}: model file not found")
        from ...artifacts import check_npz
        from ...npzmap import PickledMember, map_npz

        checks = TableChecks()
        try:
            data = map_npz(path, checks)
            if data is None:
                check_npz(path)
                with np.load(path, allow_pickle=False) as z:
                    data = {name: z[name] for name in z.files}
                for name, values in data.items():
                    checks(name, np.asarray(values).reshape(-1), 0)
            meta = json.loads(str(data["meta"]))
            if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                raise ValueError("not an lmkit n-gram model")
            from ...artifacts import check_version

            check_version(path, "n-gram model", meta.get("version"), FORMAT_VERSION)
            N, V = int(meta["order"]), int(meta["vocab_size"])
            if V != vocab_size:
                raise ValueError(f"model has {V} vocabulary ids, the vocabulary has {vocab_size}")
            keys = [np.arange(V, dtype=np.int64)]
            for n in range(2, N + 1):
                k = data[f"keys_{n}"]
                if k.dtype != np.int64 or k.ndim != 1:
                    raise ValueError(f"keys_{n} are not sorted int64 keys")
                if k.size and k[-1] // V >= keys[-1].size:
                    raise ValueError(f"keys_{n} refer to missing {n - 1}-grams")
                keys.append(k)
            sizes = [k.size for k in keys]

            def arr(name: str, size: int) -> np.ndarray:
                a = data[name]
                if a.dtype != np.float64 or a.shape != (size,):
                    raise ValueError(f"{name} has the wrong shape or type")
                return a

            if meta["form"] == "additive":
                est = sm.Additive([arr(f"count_{n}", sizes[n - 1]) for n in range(1, N + 1)],
                                  [arr(f"den_{n}", sizes[n - 1]) for n in range(1, N)],
                                  float(meta["total"]), float(meta["k"]))
            elif meta["form"] == "backoff":
                est = sm.Estimate([arr(f"logp_{n}", sizes[n - 1]) for n in range(1, N + 1)],
                                  [arr(f"logbo_{n}", sizes[n - 1]) for n in range(1, N)],
                                  float(meta["missing_bo"]))
            else:
                raise ValueError(f"unknown table form {meta['form']!r}")
        except ModelError:
            raise
        except Exception as exc:  # zip/CRC/EOF/JSON/key errors all mean the same thing to the user
            if isinstance(exc, (PickledMember, zipfile.BadZipFile)) or "allow_pickle" in str(exc):  # never unpickled
                from ...artifacts import pickle_refusal

                seen = ValueError("Object arrays") if isinstance(exc, PickledMember) else exc
                raise ModelError(f"{path}: {pickle_refusal(seen, 'n-gram model file')}") from None
            detail = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
            raise ModelError(f"{path}: damaged or incompatible n-gram model file ({detail})") from None
        return NgramIndex(V, keys), est, meta


class TableChecks:
    """The values of model.npz checked as they are read, one block at a time (lmkit.npzmap.BlockCheck): keys of
    every order strictly increasing and not negative, no NaN among the floats."""

    def __init__(self):
        self.last: dict[str, int] = {}

    def __call__(self, name: str, block: np.ndarray, first: int) -> None:
        if not block.size:
            return
        if name.startswith("keys_"):
            previous = self.last.get(name, -1)
            if block.dtype.kind not in "iu" or block[0] <= previous or (np.diff(block) <= 0).any():
                raise ValueError(f"{name} are not sorted int64 keys")
            self.last[name] = int(block[-1])
        elif block.dtype.kind == "f" and np.isnan(block).any():
            raise ValueError(f"{name} has NaNs")


class NgramModel(TableModel):
    """n-gram language model with the smoothing named in its config (see module docstring)."""

    kind = FAMILY.kind
    Config = NgramConfig

    def __init__(self, config: NgramConfig, vocab: Vocab, protocol: Protocol):
        super().__init__(config, vocab, protocol)
        self.normalised = sm.SMOOTHINGS[config.smoothing].normalised  # stupid backoff: scores, not probabilities
        self.index = None
        self.est = None
        self.facts: dict = {}
        self.counting: CountingPlan | None = None  # --memory/--engine: how to count, not what (not config)

    @property
    def label(self) -> str:
        return f"ngram:{self.config.smoothing}{self.config.order}"

    def fit(self, train: Encoded, valid: Encoded | None, log: Log = quiet) -> dict:
        cfg, V = self.config, len(self.vocab)
        if not train.sequences:
            raise DataError(f"{train.name}: no sequences to train on")
        log(f"counting 1..{cfg.order}-grams of {train.name} ({self.protocol.context} context)")
        c, counting = self._count(train, log)
        if self.memory is None:  # unbounded: keep the prefix ids counting found, for generation and checks
            c.index.keep_prefixes(c.ctx)  # (else found again by a binary search per n-gram)
        facts: dict = {"smoothing": cfg.smoothing, "order": cfg.order}
        settings = self._settings(c, valid, log, facts)
        current().phase("smoothing", label=cfg.smoothing)
        est = sm.SMOOTHINGS[cfg.smoothing].estimate(c, settings, self._smoothing_block())
        if isinstance(est, sm.Additive):
            facts["k"] = est.k
        self._set_tables(c.index, est)
        facts.update({key: val for key, val in est.facts.items() if key != "warnings"})
        warnings = facts.setdefault("warnings", []) + list(est.facts.get("warnings", []))
        facts["warnings"] = warnings
        for w in warnings:
            log(f"warning: {w}")
        facts["ngrams"] = [V - 1] + [c.index.size(n) for n in range(2, cfg.order + 1)]
        facts["train_tokens"] = c.tokens
        if counting:
            facts["counting"] = counting
        self.facts = facts
        return facts

    def _count(self, train: Encoded, log: Log):
        """count_ngrams in memory, out of core (--memory) or on Dask (--engine dask): equal counts, and
        what the chosen path did for fit_info (None for the plain in-memory path)."""
        V, N, context = len(self.vocab), self.config.order, self.protocol.context
        plan = self.counting
        if plan is None or plan.in_memory:
            return count_ngrams(train.sequences, V, N, context), None
        if plan.engine == "dask":
            from .dask_engine import count_dask

            current().phase("counting", label="on dask")

            return count_dask(train.sequences, V, N, context, plan.scheduler, plan.memory, log)
        from .external import count_external

        return count_external(train.sequences, V, N, context, plan.memory, plan.tmp, log)

    @property
    def memory(self) -> int | None:
        """The --memory budget of this fit (None: unbounded)."""
        return None if self.counting is None else self.counting.memory

    def _smoothing_block(self) -> int:
        """n-grams per block of the smoothing's temporaries: --memory bounds them as it bounds counting."""
        return sm.SMOOTH_BLOCK if self.memory is None else max(self.memory // sm.SMOOTH_ROW_BYTES, 1024)

    def _settings(self, c, valid: Encoded | None, log: Log, facts: dict) -> dict:
        """The chosen smoothing's options, with those fitted on the valid split resolved (k=auto, JM lambdas)."""
        settings = {name: getattr(self.config, name) for name in sm.SMOOTHINGS[self.config.smoothing].options}
        if settings.get("k") == "auto":
            if valid is None or not valid.sequences:
                raise UsageError("addk with k=auto tunes k on the valid split, but none was given")
            settings["k"] = self._tune_k(c, valid)
            facts["k_tuned_on"] = valid.name
            log(f"addk: tuned k = {settings['k']:.4g} on {valid.name}")
        if "jm_lambdas" in settings:
            settings["jm_lambdas"] = self._jm_lambdas(c, valid, log, facts)
        return settings

    def _tune_k(self, c, valid: Encoded) -> float:
        toks, depth = flatten(valid.sequences, self.protocol.context)
        num, den = sm.heldout_levels(c, toks, depth)
        hist = np.minimum(depth[depth > 0], c.order - 1)
        rows = np.arange(hist.size)
        return sm.tune_k(num[rows, hist], den[rows, hist], len(self.vocab) - 2)

    def _jm_lambdas(self, c, valid: Encoded | None, log: Log, facts: dict) -> list[float]:
        if self.config.jm_lambdas is not None:
            return list(self.config.jm_lambdas)
        if valid is None or not valid.sequences:
            facts.setdefault("warnings", []).append(
                "jm: no valid split to fit lambdas by EM; using 0.5 per order")
            return [0.5] * c.order
        num, den = sm.heldout_levels(c, *flatten(valid.sequences, self.protocol.context))
        lambdas = sm.fit_jm_lambdas(num, den, len(self.vocab) - 2)
        facts["lambdas_fitted_on"] = valid.name
        log(f"jm: EM lambdas {' '.join(f'{x:.3f}' for x in lambdas)} on {valid.name}")
        return lambdas

    def fit_info(self) -> dict:
        return dict(self.facts)

    def save(self, run_dir: Path) -> None:
        self._save_tables(Path(run_dir) / "model.npz", {"smoothing": self.config.smoothing,
                                                         "facts": self.facts})

    @classmethod
    def load(cls, run_dir: Path, config: NgramConfig, vocab: Vocab, protocol: Protocol, device: str = "cpu"):
        path = Path(run_dir) / "model.npz"
        index, est, meta = cls._load_tables(path, len(vocab))
        if meta.get("smoothing") != config.smoothing or index.order != config.order:
            raise ModelError(f"{path}: holds an ngram:{meta.get('smoothing')}{index.order} model, "
                             f"the run config says {config.smoothing}{config.order}")
        model = cls(config, vocab, protocol)
        model._set_tables(index, est)
        model.facts = dict(meta.get("facts") or {})
        return model
