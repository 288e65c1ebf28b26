"""Where each family wins: per-token NLL of comparable runs on one text, broken down by bucket.

Every run rescores the text through the one scoring path (evaluate.perplexity.score_encoded), so the
bucket numbers add up -- token-weighted -- to the run's perplexity on the whole file. Buckets:

- context-frequency: how often the n-1 tokens before the target occur in the train split, with the
  history taken exactly as the n-gram family takes it (models/ngram/counts.py: `flatten` units and
  `NgramIndex.chains`): in sentence context a history never crosses `<s>`, so near a line start it
  is `<s>` plus what is available (the same counts as padding with n-1 `<s>`); in stream context it
  runs across `</s>`. Buckets unseen / 1 / 2-9 / 10+.
- length: scored tokens (incl. `</s>`) of the target's line.
- oov: the target is `<unk>` or not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .compare import check_comparable, read_runs
from .data.corpus import Encoded, ParallelText, Text, encode, read_recorded, read_text
from .data.vocab import UNK
from .errors import DataError, UsageError
from .evaluate.perplexity import exp_or_inf
from .protocol import Protocol
from .runs import RunRecord
from .logs import Log

SCHEMA = 1
DIMENSIONS = ("context-frequency", "length", "oov")
DEFAULT_ORDER = 3  # the two-word history of a trigram model
# (label, lowest, highest or None): inclusive count ranges
FREQUENCY_BUCKETS = (("unseen", 0, 0), ("1", 1, 1), ("2-9", 2, 9), ("10+", 10, None))
LENGTH_BUCKETS = (("1-10", 1, 10), ("11-20", 11, 20), ("21-40", 21, 40), ("41+", 41, None))
OOV_BUCKETS = ("in vocabulary", "<unk>")
TOTAL = "total"


def parse_by(value: str | Sequence[str] | None) -> list[str]:
    """The --by dimensions, in the order given (default: all); an unknown one is a usage error."""
    if value is None:
        return list(DIMENSIONS)
    parts = value.split(",") if isinstance(value, str) else [p for v in value for p in str(v).split(",")]
    dims: list[str] = []
    for part in (p.strip().lower() for p in parts):
        if not part:
            continue
        if part not in DIMENSIONS:
            raise UsageError(f"unknown --by dimension {part!r}; choose from: {', '.join(DIMENSIONS)}")
        if part not in dims:
            dims.append(part)
    if not dims:
        raise UsageError(f"--by needs at least one of: {', '.join(DIMENSIONS)}")
    return dims


def check_order(order: int) -> int:
    from .models.ngram.model import MAX_ORDER  # the n-gram family's bound (imported late: it pulls numpy models)

    if not 2 <= order <= MAX_ORDER:
        raise UsageError(f"--order must be between 2 and {MAX_ORDER} (an n-gram's history is n-1 tokens), "
                         f"got {order}")
    return order


# -- per-token keys ---------------------------------------------------------------------------------
def history_counts(train: list[np.ndarray], test: list[np.ndarray], vocab_size: int, order: int,
                   context: str) -> np.ndarray:
    """Count in `train` of the (at most order-1)-token history of every scored token of `test`, in
    scoring order (each sequence's tokens, then its </s>), under the n-gram family's units."""
    from .models.ngram.counts import NgramIndex, count_ngrams, flatten

    counts = count_ngrams(train, vocab_size, order - 1, context)
    # chains() walks histories up to order-1 and also the order-n n-grams ending at each target; an
    # empty top order keeps that last walk free (every lookup misses) without counting n-grams.
    index = NgramIndex(vocab_size, [*counts.index.keys, np.zeros(0, dtype=np.int64)])
    toks, depth = flatten(test, context)
    pos = np.flatnonzero(depth > 0)  # every position but <s>: the scored targets, as the models score them
    _, ctx = index.chains(toks, depth, pos)
    hist = np.minimum(depth[pos], order - 1)  # >= 1: a target always has at least <s> before it
    ids = ctx[np.arange(pos.size), hist - 1]
    out = np.zeros(pos.size, dtype=np.int64)
    for n in range(1, order):
        at = (hist == n) & (ids >= 0)
        out[at] = counts.counts[n - 1][ids[at]]
    return out


def _bucket_of(values: np.ndarray, buckets: Sequence[tuple[str, int, int | None]]) -> np.ndarray:
    out = np.full(values.shape, -1, dtype=np.int64)
    for i, (_, lo, hi) in enumerate(buckets):
        out[(values >= lo) & ((values <= hi) if hi is not None else True)] = i
    return out


def _scored_mask(encoded: Encoded) -> np.ndarray:
    """Which tokens of the full sequences (incl. </s>) enter the metrics: all, or the target side."""
    lens = [len(s) + 1 for s in encoded.sequences]
    if encoded.score_from is None:
        return np.ones(sum(lens), dtype=bool)
    return np.concatenate([np.arange(n) >= f for n, f in zip(lens, encoded.score_from)]) if lens else \
        np.zeros(0, dtype=bool)


# -- result -----------------------------------------------------------------------------------------
@dataclass
class RunNll:
    """One run's per-token NLL (nats) on the analysed text, in scoring order."""

    name: str
    path: str
    record: RunRecord
    normalised: bool
    nll: np.ndarray = field(repr=False)

    @property
    def recorded_test_ppl(self) -> float | None:
        value = (self.record.metrics.get("test") or {}).get("perplexity")
        return float(value) if isinstance(value, (int, float)) else None


@dataclass
class Analysis:
    """Buckets per dimension; `to_dict()` is the JSON object, `rows(dim)` the flat table rows."""

    dimensions: list[str]
    order: int
    runs: list[RunNll]
    text: dict
    train: dict
    protocol: dict
    keys: dict[str, np.ndarray] = field(repr=False)  # dimension -> bucket index per token
    labels: dict[str, list[str]] = field(repr=False)
    is_test: bool = True

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.runs]

    def buckets(self, dim: str) -> list[dict]:
        """One entry per bucket, then the total: tokens, share, per run mean NLL and perplexity, winner."""
        key, labels = self.keys[dim], self.labels[dim]
        total = key.size
        out = []
        for i, label in enumerate([*labels, TOTAL]):
            mask = key == i if label != TOTAL else np.ones(total, dtype=bool)
            n = int(mask.sum())
            models = {}
            for run in self.runs:
                mean = float(run.nll[mask].mean()) if n else None
                models[run.name] = {"nll_nats": mean, "perplexity": exp_or_inf(mean) if mean is not None else None}
            out.append({"bucket": label, "tokens": n, "share": n / total if total else None,
                        "models": models, "winner": self._winner(models)})
        return out

    def _winner(self, models: dict[str, dict]) -> str | None:
        """Lowest finite mean NLL among normalised runs (an unnormalised score is not a probability)."""
        best = [(m["nll_nats"], r.name) for r in self.runs if r.normalised
                for m in [models[r.name]] if m["nll_nats"] is not None and math.isfinite(m["nll_nats"])]
        return min(best)[1] if best else None

    def rows(self, dim: str) -> list[dict]:
        """Flat rows for table/tsv/csv/markdown: bucket, tokens, share, '<run> nll', '<run> ppl', winner."""
        rows = []
        for b in self.buckets(dim):
            row = {"bucket": b["bucket"], "tokens": b["tokens"], "share": b["share"]}
            for name, m in b["models"].items():
                row[f"{name} nll"] = m["nll_nats"]
                row[f"{name} ppl"] = m["perplexity"]
            row["winner"] = b["winner"]
            rows.append(row)
        return rows

    def display_rows(self, dim: str) -> list[dict]:
        """rows() rounded for people: share in %, NLL to 3 decimals, perplexity to 2."""
        def fmt(value, spec: str) -> str | None:
            if value is None:
                return None
            return "inf" if math.isinf(value) else format(value, spec)

        out = []
        for row in self.rows(dim):
            shown = {}
            for col, value in row.items():
                if col == "share":
                    shown[col] = fmt(None if value is None else 100 * value, ".1f")
                    shown[col] = shown[col] and f"{shown[col]}%"
                elif col.endswith(" nll"):
                    shown[col] = fmt(value, ".3f")
                elif col.endswith(" ppl"):
                    shown[col] = fmt(value, ",.2f")
                elif col == "tokens":
                    shown[col] = f"{value:,}"
                else:
                    shown[col] = value
            out.append(shown)
        return out

    def title(self, dim: str) -> str:
        if dim == "context-frequency":
            return (f"by context frequency: train count of the {self.order - 1}-token history "
                    f"(order {self.order}, {self.protocol.get('context')} context)")
        if dim == "length":
            return "by line length in scored tokens (incl. </s>)"
        return "by OOV: target is <unk> or not"

    def to_dict(self) -> dict:
        runs = []
        for r in self.runs:
            mean = float(r.nll.mean()) if r.nll.size else None
            runs.append({"name": r.name, "run": r.path, "model": r.record.label, "kind": r.record.kind,
                         "normalised": r.normalised, "tokens": int(r.nll.size), "nll_nats": mean,
                         "perplexity": exp_or_inf(mean) if mean is not None else None,
                         "recorded_test_perplexity": r.recorded_test_ppl if self.is_test else None})
        return {"schema": SCHEMA, "order": self.order, "protocol": self.protocol, "text": self.text,
                "train": self.train, "runs": runs, "by": {d: self.buckets(d) for d in self.dimensions}}


# -- reading the inputs -----------------------------------------------------------------------------
def _test_text(runs: list[tuple[str, RunRecord]]) -> Text | ParallelText:
    path, record = runs[0]
    info = record.data.get("test")
    if not isinstance(info, dict):
        raise UsageError(f"{path}: run.json records no test file; give the text to analyse with --text FILE")
    return read_recorded(info, path, "test", "give the text to analyse with --text FILE")


def _train_text(runs: list[tuple[str, RunRecord]], train: str | Path | None, log: Log) -> tuple[Text | ParallelText,
                                                                                                   bool]:
    """(train text, whether it is the file the runs recorded). A recorded file that is missing or
    changed is refused; --train FILE overrides it (with a warning when it is not the recorded file)."""
    path, record = runs[0]
    info = record.data.get("train")
    recorded = info.get("sha256") if isinstance(info, dict) else None
    others = {(r.data.get("train") or {}).get("sha256") for _, r in runs} - {recorded}
    if others:
        log(f"warning: the runs were trained on different files; context frequencies are counted in "
            f"{train or (info or {}).get('path')}")
    if train is not None:
        text = read_text(train)
        if recorded is not None and text.sha256 != recorded:
            log(f"warning: {text.name} is not the train file {path} recorded ({(info or {}).get('path')}); "
                "context frequencies are counted in it anyway")
        return text, text.sha256 == recorded
    if recorded is None:
        raise UsageError(f"{path}: run.json records no train file; give it with --train FILE")
    return read_recorded(info, path, "train", "give the original with --train FILE"), True


def _names(runs: list[tuple[str, RunRecord]]) -> list[str]:
    """Column names: the model labels, made unique with the folder name where two runs share one."""
    labels = [r.label for _, r in runs]
    names = [lab if labels.count(lab) == 1 else f"{lab} ({Path(p).name})" for lab, (p, _) in zip(labels, runs)]
    return [n if names.count(n) == 1 else f"{n} #{i + 1}" for i, n in enumerate(names)]


# -- the analysis -----------------------------------------------------------------------------------
def analyze_runs(paths: Sequence[str | Path], by: str | Sequence[str] | None = None, *,
                 order: int = DEFAULT_ORDER, text: str | Path | None = None, train: str | Path | None = None,
                 device: str = "cpu", log: Log = lambda _: None) -> Analysis:
    """Rescore `text` (default: the runs' own test file) with every run and bucket the per-token NLLs.

    Refused unless the runs share protocol and vocabulary (and, without --text, the test file)."""
    from .evaluate.perplexity import score_encoded
    from .models.pretrained import is_pretrained
    from .runs import load_run

    dims = parse_by(by)
    check_order(order)
    if not paths:
        raise UsageError("give at least one run folder to analyse")
    for p in paths:
        if is_pretrained(p):
            raise UsageError(f"{p}: lmkit analyze buckets per-token scores of runs that share one vocabulary; a "
                             "pretrained model has tokens of its own (set it beside runs with compare --text)")
        if Path(p).is_file():
            raise UsageError(f"{p}: lmkit analyze needs run folders (their run.json records the train file)")
    runs = read_runs(paths)
    check_comparable(runs, ("protocol", "vocabulary") if text is not None else ("protocol", "vocabulary", "test"))
    if Protocol.from_dict(runs[0][1].protocol).task == "translate" and (text is not None or train is not None):
        raise UsageError("--text/--train name single files; a translation run is analysed on its own recorded "
                         "test and train pairs")
    evaluated = read_text(text) if text is not None else _test_text(runs)  # missing files fail before loading
    train_text, train_recorded = _train_text(runs, train, log)
    first, _ = load_run(runs[0][0], device=device)
    vocab, protocol = first.vocab, first.protocol
    enc = encode(evaluated, vocab, protocol)
    if not enc.sequences:
        raise DataError(f"{evaluated.name}: has no non-blank lines to score")
    is_test = text is None or evaluated.sha256 == (runs[0][1].data.get("test") or {}).get("sha256")

    scored = _scored_mask(enc)
    freq = history_counts(encode(train_text, vocab, protocol).sequences, enc.sequences, len(vocab), order,
                          protocol.context)[scored]
    lines = np.fromiter((len(s) + 1 - (enc.score_from[i] if enc.score_from else 0)
                         for i, s in enumerate(enc.sequences)), dtype=np.int64, count=len(enc.sequences))
    targets = None
    results = []
    for i, ((path, record), name) in enumerate(zip(runs, _names(runs))):
        model = first if i == 0 else load_run(path, device=device)[0]
        first = None  # one model in memory at a time
        log(f"scoring {evaluated.name} with {name}")
        score = score_encoded(model, enc, keep=True)
        tg = np.concatenate(score.targets) if score.targets else np.zeros(0, dtype=np.int64)
        if targets is None:
            targets = tg
        nll = -np.concatenate(score.logprobs).astype(np.float64) if score.logprobs else np.zeros(0)
        results.append(RunNll(name, path, record, bool(score.normalised), nll))
        recorded = (record.metrics.get("test") or {}).get("nll_nats")
        if is_test and isinstance(recorded, (int, float)) and not math.isclose(score.nll_nats, recorded,
                                                                               rel_tol=1e-6):
            log(f"warning: {name}: rescored test NLL {score.nll_nats:.6g} differs from run.json's {recorded:.6g}")
        del model
    assert targets is not None and targets.size == freq.size == int(lines.sum())
    keys = {"context-frequency": _bucket_of(freq, FREQUENCY_BUCKETS),
            "length": np.repeat(_bucket_of(lines, LENGTH_BUCKETS), lines),
            "oov": (targets == UNK).astype(np.int64)}
    labels = {"context-frequency": [b[0] for b in FREQUENCY_BUCKETS],
              "length": [b[0] for b in LENGTH_BUCKETS], "oov": list(OOV_BUCKETS)}
    text_info = {"path": evaluated.name, "sha256": evaluated.sha256, "sequences": len(enc.sequences),
                 "tokens": int(targets.size), "oov": int((targets == UNK).sum()), "is_test_file": is_test}
    train_info = {"path": train_text.name, "sha256": train_text.sha256, "recorded": train_recorded}
    return Analysis(dims, order, results, text_info, train_info, protocol.to_dict(),
                    {d: keys[d] for d in dims}, {d: labels[d] for d in dims}, is_test)
