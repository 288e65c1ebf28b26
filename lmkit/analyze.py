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
from typing import Callable, Sequence

import numpy as np

from .compare import check_comparable, read_runs
from .data.corpus import Encoded, ParallelText, Text, encode, read_recorded, read_text
from .data.vocab import UNK
from .errors import DataError, IncomparableError, ModelError, UsageError
from .evaluate.perplexity import exp_or_inf, scored_tokens
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


# -- result -----------------------------------------------------------------------------------------
@dataclass
class RunNll:
    """One model's per-token NLL (nats) on the analysed text, in scoring order."""

    name: str
    path: str
    label: str
    kind: str | None
    normalised: bool
    nll: np.ndarray = field(repr=False)
    recorded_test_ppl: float | None = None  # run.json's test perplexity (None for a pretrained model)


@dataclass
class Analysis:
    """Buckets per dimension; `to_dict()` is the JSON object, `rows(dim)` the flat table rows."""

    dimensions: list[str]
    order: int
    runs: list[RunNll]
    text: dict
    train: dict | None  # the file context frequencies were counted in (None: not counted)
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
            runs.append({"name": r.name, "run": r.path, "model": r.label, "kind": r.kind,
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


def _names(labels: list[str], paths: list[str]) -> list[str]:
    """Column names: the model labels, made unique with the folder name where two models share one."""
    names = [lab if labels.count(lab) == 1 else f"{lab} ({Path(p).name})" for lab, p in zip(labels, paths)]
    return [n if names.count(n) == 1 else f"{n} #{i + 1}" for i, n in enumerate(names)]


# -- the analysis -----------------------------------------------------------------------------------
@dataclass
class _Model:
    """One model to rescore: its column name, how it was given, a loader (one model in memory at a time) and,
    for a run folder analysed on its own test file, its record (its stored per-token scores spare rescoring)."""

    name: str
    path: str
    load: Callable[[], object]
    record: RunRecord | None = None  # set only when the analysed text is the run's recorded test file

    @property
    def recorded(self) -> dict:
        """run.json's test metrics (empty for a pretrained model or another text)."""
        return (self.record.metrics.get("test") or {}) if self.record is not None else {}


def analyze_runs(paths: Sequence[str | Path], by: str | Sequence[str] | None = None, *,
                 order: int = DEFAULT_ORDER, text: str | Path | None = None, train: str | Path | None = None,
                 device: str = "cpu", log: Log = lambda _: None) -> Analysis:
    """Rescore `text` (default: the runs' own test file) with every run and bucket the per-token NLLs.

    Refused unless the models share protocol and tokens (and, without --text, the test file). Pretrained
    models (hf:FOLDER) are analysed among themselves, on --text, with --train for context frequencies."""
    from .models.pretrained import is_pretrained

    dims = parse_by(by)
    check_order(order)
    if not paths:
        raise UsageError("give at least one run folder to analyse")
    for p in paths:
        if not is_pretrained(p) and Path(p).is_file():
            raise UsageError(f"{p}: lmkit analyze needs run folders (their run.json records the train file)")
    if any(is_pretrained(p) for p in paths):
        return _analyze_pretrained(paths, dims, by is None, order, text, train, device, log)
    return _analyze_folders(paths, dims, order, text, train, device, log)


def _analyze_folders(paths: Sequence[str | Path], dims: list[str], order: int, text, train, device: str,
                     log: Log) -> Analysis:
    from .runs import load_run, run_vocab

    runs = read_runs(paths)
    check_comparable(runs, ("protocol", "vocabulary") if text is not None else ("protocol", "vocabulary", "test"))
    if Protocol.from_dict(runs[0][1].protocol).task == "translate" and (text is not None or train is not None):
        raise UsageError("--text/--train name single files; a translation run is analysed on its own recorded "
                         "test and train pairs")
    evaluated = read_text(text) if text is not None else _test_text(runs)  # missing files fail before loading
    train_text, train_recorded = _train_text(runs, train, log)
    vocab, protocol = run_vocab(*runs[0])
    is_test = text is None or evaluated.sha256 == (runs[0][1].data.get("test") or {}).get("sha256")
    models = [_Model(name, path, (lambda path=path: load_run(path, device=device)[0]), record if is_test else None)
              for (path, record), name in zip(runs, _names([r.label for _, r in runs], [p for p, _ in runs]))]
    train_info = {"path": train_text.name, "sha256": train_text.sha256, "recorded": train_recorded}
    return _bucketed(models, vocab, protocol, evaluated, train_text, train_info, dims, order, is_test, log)


def _analyze_pretrained(paths: Sequence[str | Path], dims: list[str], default_dims: bool, order: int, text,
                        train, device: str, log: Log) -> Analysis:
    """hf:FOLDER models analysed on --text: they record no test or train file, and their tokens are their own,
    so they meet only models with the same tokenizer (run folders: compare --text, by bits per byte)."""
    from .models.pretrained import is_pretrained, pretrained_label
    from .pipeline.use import load_model

    folders = [str(p) for p in paths if not is_pretrained(p)]
    if folders:
        raise UsageError(f"{folders[0]}: lmkit analyze buckets per-token scores, so every model must share one "
                         "tokenisation, and a pretrained model has tokens of its own; analyze them apart, or set "
                         "them side by side by bits per byte with compare --text")
    if text is None:
        raise UsageError(f"{paths[0]}: a pretrained model records no test file; give the text to analyse with "
                         "--text FILE")
    _check_same_tokenizer(paths)
    if "context-frequency" in dims and train is None:
        if not default_dims:
            raise UsageError("--by context-frequency counts histories in a train file, and a pretrained model "
                             "records none: give it with --train FILE, or analyse --by length,oov")
        dims = [d for d in dims if d != "context-frequency"]
        log("note: no --train FILE, so no context-frequency buckets (a pretrained model records no train file)")
    evaluated = read_text(text)
    train_text = read_text(train) if train is not None else None
    first, _ = load_model(paths[0], device=device)
    names = _names([pretrained_label(p) for p in paths], [str(p) for p in paths])
    models = [_Model(name, str(path), lambda path=path: load_model(path, device=device)[0])
              for path, name in zip(paths, names)]
    vocab, protocol = first.vocab, first.protocol
    models[0].load = [first].pop  # handed over once: one model in memory at a time
    del first
    train_info = {"path": train_text.name, "sha256": train_text.sha256, "recorded": False} if train_text else None
    return _bucketed(models, vocab, protocol, evaluated, train_text, train_info, dims, order, False, log)


def _check_same_tokenizer(paths: Sequence[str | Path]) -> None:
    """Pretrained models share tokens only if their tokenizer files are the same (before any is loaded)."""
    from .models.pretrained import tokenizer_file

    first = tokenizer_file(paths[0]).read_bytes()
    for p in paths[1:]:
        if tokenizer_file(p).read_bytes() != first:
            raise IncomparableError(f"{paths[0]} and {p} do not share one tokenizer; lmkit analyze buckets "
                                    "per-token scores of models with the same tokens (set them side by side by "
                                    "bits per byte with compare --text)")


def _stored_nll(m: _Model, tokens: int, log: Log) -> np.ndarray | None:
    """The per-token test NLLs a run stored when it was measured (evaluate/per_sequence.py), when the analysed
    text is that test file and they cover its `tokens` scored tokens; None: rescore."""
    from .evaluate.per_sequence import load_test_scores

    if m.record is None:
        return None
    try:
        scores = load_test_scores(m.path, m.record)  # refused if it disagrees with run.json
    except ModelError as exc:
        log(f"warning: {m.path}: {exc.message}; rescoring instead")
        return None
    if scores is None or scores.token_nll is None or scores.token_nll.size != tokens:
        return None
    return scores.token_nll


def _scored_nll(models: list[_Model], enc: Encoded, tokens: int, log: Log) -> list[RunNll]:
    """Every model's per-token NLL on `enc` (`tokens` scored tokens): stored by the run when `enc` is its test
    file, else rescored (one model loaded at a time)."""
    from .evaluate.perplexity import score_encoded

    results = []
    for m in models:
        recorded_ppl = m.recorded.get("perplexity")
        recorded_ppl = float(recorded_ppl) if isinstance(recorded_ppl, (int, float)) else None
        nll = _stored_nll(m, tokens, log)
        if nll is not None:
            results.append(RunNll(m.name, m.path, m.record.label, m.record.kind,
                                  bool(m.recorded.get("normalised", True)), nll, recorded_ppl))
            continue
        model = m.load()
        log(f"scoring the text with {m.name}")
        score = score_encoded(model, enc, keep=False)  # its token_nll is all this needs
        results.append(RunNll(m.name, m.path, model.label, model.kind, bool(score.normalised), score.token_nll,
                              recorded_ppl))
        recorded = m.recorded.get("nll_nats")
        if isinstance(recorded, (int, float)) and not math.isclose(score.nll_nats, recorded, rel_tol=1e-6):
            log(f"warning: {m.name}: rescored test NLL {score.nll_nats:.6g} differs from run.json's {recorded:.6g}")
        del model
        m.load = lambda: None  # drop the loader's hold on a model already scored
    return results


def _bucketed(models: list[_Model], vocab, protocol: Protocol, evaluated: Text | ParallelText,
              train_text: Text | ParallelText | None, train_info: dict | None, dims: list[str], order: int,
              is_test: bool, log: Log) -> Analysis:
    """Score the text with every model and key each scored token by bucket, per dimension."""
    enc = encode(evaluated, vocab, protocol)
    if not enc.sequences:
        raise DataError(f"{evaluated.name}: has no non-blank lines to score")
    targets, lines, scored = scored_tokens(enc)
    results = _scored_nll(models, enc, targets.size, log)
    assert all(r.nll.size == targets.size for r in results) and targets.size == int(lines.sum())
    keys = {"length": np.repeat(_bucket_of(lines, LENGTH_BUCKETS), lines),
            "oov": (targets == UNK).astype(np.int64)}
    if "context-frequency" in dims:
        assert train_text is not None
        freq = history_counts(encode(train_text, vocab, protocol).sequences, enc.sequences, len(vocab), order,
                              protocol.context)
        freq = freq if scored is None else freq[scored]
        keys["context-frequency"] = _bucket_of(freq, FREQUENCY_BUCKETS)
    labels = {"context-frequency": [b[0] for b in FREQUENCY_BUCKETS],
              "length": [b[0] for b in LENGTH_BUCKETS], "oov": list(OOV_BUCKETS)}
    text_info = {"path": evaluated.name, "sha256": evaluated.sha256, "sequences": len(enc.sequences),
                 "tokens": int(targets.size), "oov": int((targets == UNK).sum()), "is_test_file": is_test}
    return Analysis(dims, order, results, text_info, train_info, protocol.to_dict(),
                    {d: keys[d] for d in dims}, {d: labels[d] for d in dims}, is_test)
