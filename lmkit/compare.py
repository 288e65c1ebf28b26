"""Side-by-side tables of runs, refused unless every number in them was measured the same way.

`compare_runs` reads run.json files only (no weights, no torch) and checks the contract of
docs/protocol.md -- same protocol hash, vocabulary id and evaluated files -- before it builds a single
row. A lineup trained here (lmkit.lineup) is compared the same way; with several seeds per neural model,
`compare_seeded` makes one row per model (mean and sd over seeds)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .errors import IncomparableError, ModelError, UsageError
from .protocol import Protocol
from .runs import RunRecord, read_record, run_folders


DEFAULT_CONFIDENCE = 0.95  # level of the paired-bootstrap intervals

COLUMNS = ("rank", "model", "kind", "level", "vocab_size", "status", "normalised", "parameters", "train_seconds",
           "tokens_seen", "valid_ppl", "test_ppl", "test_ppl_excl_oov", "test_bits_per_token", "bits_per_char",
           "bits_per_byte", "word_ppl", "unk_bytes", "bleu", "bleu_beam", "beam", "bleu_signature",
           "tokens_per_second", "note", "run")
LOWER_IS_BETTER = ("valid_ppl", "test_ppl", "test_ppl_excl_oov", "test_bits_per_token", "bits_per_char",
                   "bits_per_byte", "word_ppl")
# Across levels or vocabularies only the tokenisation-independent columns are comparable (docs/protocol.md):
# the per-token ones are left out, the shown level and vocabulary size tell the rows apart.
PER_TOKEN_COLUMNS = ("valid_ppl", "test_ppl", "test_ppl_excl_oov", "test_bits_per_token", "bits_per_char")
ACROSS_COLUMNS = ("level", "vocab_size")
TOKENISATION_FIELDS = ("level", "tokenizer")  # protocol fields that may differ across levels
HIGHER_IS_BETTER = ("bleu", "bleu_beam")
# With --bootstrap N, placed after test_ppl: paired-bootstrap percentile intervals (evaluate/bootstrap.py)
BOOTSTRAP_COLUMNS = ("test_ppl_lo", "test_ppl_hi", "diff_to_best_lo", "diff_to_best_hi", "p_worse_than_best")
NO_SCORES_NOTE = "no per-sequence scores (retrain or rescore: lmkit score RUN TEST --save)"
# With --seeds K > 1 (a lineup only): one row per model whose MEAN_COLUMNS are means over its seed runs,
# plus how many runs it had and the sample sd (ddof=1) of its perplexities (None: trained once, no sd)
SEED_COLUMNS = ("seeds", "valid_ppl_sd", "test_ppl_sd")
MEAN_COLUMNS = ("train_seconds", "tokens_seen", "valid_ppl", "test_ppl", "test_ppl_excl_oov", "test_bits_per_token",
                "bits_per_char", "bits_per_byte", "word_ppl", "bleu", "bleu_beam", "tokens_per_second")
SD_OF = {"valid_ppl": "valid_ppl_sd", "test_ppl": "test_ppl_sd"}



# -- reading and checking ---------------------------------------------------------------------------
def read_runs(paths: Sequence[str | Path]) -> list[tuple[str, RunRecord]]:
    """(path as given, record) per run folder; a run still being written is refused."""
    if not paths:
        raise UsageError("give at least one run folder to compare")
    runs = []
    for p in run_folders(paths):  # a lineup folder stands for its run folders
        record = read_record(p)
        if record.status == "training":
            raise ModelError(f"{p}: this run is still training or never finished writing (status 'training'); "
                             "wait for it, or resume it with lmkit train --resume")
        runs.append((str(p), record))
    return runs


def _file(record: RunRecord, split: str) -> dict | None:
    info = record.data.get(split)
    return info if isinstance(info, dict) else None


def _sha(record: RunRecord, split: str) -> str | None:
    info = _file(record, split)
    return info.get("sha256") if info else None


def _protocol(record: RunRecord) -> Protocol:
    return Protocol.from_dict(record.protocol)


def protocol_differences(pa: dict, pb: dict) -> str:
    """`protocol differs (field a vs b, ...)` for two protocol dicts, fields in the first one's order."""
    fields = [f"{k} {pa.get(k)} vs {pb.get(k)}" for k in dict.fromkeys([*pa, *pb]) if pa.get(k) != pb.get(k)]
    return f"protocol differs ({', '.join(fields)})"


def _describe_protocol(a: RunRecord, b: RunRecord) -> str:
    return protocol_differences(_protocol(a).to_dict(), _protocol(b).to_dict())


def _describe_file(split: str) -> Callable[[RunRecord, RunRecord], str]:
    def describe(a: RunRecord, b: RunRecord) -> str:
        def name(r: RunRecord) -> str:
            info = _file(r, split)
            return f"{info.get('path')} sha256 {str(info.get('sha256'))[:12]}" if info else "none"

        return f"{split} file differs ({name(a)} vs {name(b)})"

    return describe


# aspect -> (value that must be equal, how to say that it is not)
def text_fields(protocol: dict) -> dict:
    """A protocol less its tokenisation: what must match for bits per byte to be comparable."""
    return {k: v for k, v in protocol.items() if k not in TOKENISATION_FIELDS}


def _text_protocol(record: RunRecord) -> dict:
    return text_fields(_protocol(record).to_dict())


def _describe_text_protocol(a: RunRecord, b: RunRecord) -> str:
    return protocol_differences(_text_protocol(a), _text_protocol(b))


ASPECTS: dict[str, tuple[Callable[[RunRecord], Any], Callable[[RunRecord, RunRecord], str]]] = {
    "protocol": (lambda r: _protocol(r).hash, _describe_protocol),
    "text protocol": (_text_protocol, _describe_text_protocol),
    "vocabulary": (lambda r: r.vocab_id, lambda a, b: f"vocabulary differs (vocab_id {a.vocab_id} vs {b.vocab_id})"),
    "test": (lambda r: _sha(r, "test"), _describe_file("test")),
    "valid": (lambda r: _sha(r, "valid"), _describe_file("valid")),
}


SAME_WAY = ("protocol", "vocabulary", "test", "valid")  # every column comparable
ACROSS_LEVELS = ("text protocol", "test", "valid")  # bits per byte and word perplexity comparable


def check_comparable(runs: list[tuple[str, RunRecord]], aspects: Iterable[str] = SAME_WAY) -> None:
    """Raise one IncomparableError naming what differs, unless every run matches the first one."""
    aspects = list(aspects)
    first_path, first = runs[0]
    offenders = []
    for path, record in runs[1:]:
        diffs = [ASPECTS[a][1](first, record) for a in aspects if ASPECTS[a][0](first) != ASPECTS[a][0](record)]
        if diffs:
            offenders.append((path, diffs))
    if not offenders:
        return
    path, diffs = offenders[0]
    more = f" ({len(offenders) - 1} more run(s) differ from {first_path} too)" if len(offenders) > 1 else ""
    rule = ("runs of different levels or vocabularies meet only on the same files read the same way (bits per "
            "byte)" if "text protocol" in aspects else
            "only runs with the same protocol, vocabulary and evaluation files can be compared")
    raise IncomparableError(f"{first_path} and {path} were not measured the same way: {'; '.join(diffs)}{more}; "
                            f"{rule}")


def check_same_beam(runs: list[tuple[str, RunRecord]]) -> None:
    """Beam-search BLEU is one column: refused when runs were decoded with different widths or penalties."""
    settings = {}
    for path, record in runs:
        beam = record.metrics.get("bleu_beam")
        if beam:
            settings.setdefault((beam.get("beam"), beam.get("length_penalty")), path)
    if len(settings) > 1:
        shown = "; ".join(f"{path}: beam {b}, length penalty {lp}" for (b, lp), path in settings.items())
        raise IncomparableError(f"beam-search BLEU was decoded differently ({shown}); decode them alike with "
                                "lmkit compare RUNS --beam N")


# -- rows -------------------------------------------------------------------------------------------
def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def across_levels(runs: list[tuple[str, RunRecord]]) -> bool:
    """Do the runs differ in level, tokenizer or vocabulary (so only per-byte and per-word figures compare)?"""
    first = runs[0][1]
    return any(r.vocab_id != first.vocab_id
               or (_protocol(r).hash != _protocol(first).hash and _text_protocol(r) == _text_protocol(first))
               for _, r in runs[1:])


def check_across_levels(runs: list[tuple[str, RunRecord]]) -> None:
    """Runs of different tokenisations meet on bits per byte: each needs it, measured on the same text."""
    check_comparable(runs, ACROSS_LEVELS)
    for path, record in runs:
        if not (record.metrics.get("test") or {}).get("bits_per_byte"):
            raise IncomparableError(f"{path} has no bits-per-byte figure for its test file (scored before lmkit "
                                    "counted bytes), so it cannot meet runs of another level or vocabulary; "
                                    f"rescore it: lmkit score {path} TEST_FILE --save")


def _vocab_size(path: str) -> int | None:
    """Ids in the run's vocabulary (vocab.json), None if it cannot be read."""
    from .data.vocab import Vocab

    try:
        return len(Vocab.load(Path(path) / "vocab.json"))
    except ModelError:
        return None


def _row(path: str, record: RunRecord, char_level: bool) -> dict:
    valid = record.metrics.get("valid") or {}
    test = record.metrics.get("test") or {}
    bleu = record.metrics.get("bleu") or {}
    beam = record.metrics.get("bleu_beam") or {}
    fit = record.fit_info or {}
    normalised = bool((test or valid).get("normalised", True))
    valid_ppl = _finite(valid.get("perplexity"))
    if valid_ppl is None and record.status != "complete":  # an interrupted run's best checkpoint so far
        valid_ppl = _finite(fit.get("best_valid_ppl"))
    notes = []
    if not normalised:
        notes.append("not normalised, not ranked")
    if record.status != "complete":
        notes.append("partly trained")
    if test and test.get("perplexity") is None:
        notes.append("infinite test perplexity")
    if not record.checks:  # `lmkit check` never ran on it (older runs): its numbers are unverified
        notes.append("unchecked")
    elif not record.checks.get("ok", False):
        notes.append("check failed")
    row = {
        "rank": None,
        "model": record.label,
        "kind": record.kind,
        "level": _protocol(record).level,
        "vocab_size": None,
        "status": record.status,
        "normalised": normalised,
        "parameters": record.parameters,
        "train_seconds": _finite(record.train_seconds or fit.get("train_seconds")),
        "tokens_seen": int(record.tokens_seen or fit.get("tokens_seen") or 0),
        "valid_ppl": valid_ppl,
        "test_ppl": _finite(test.get("perplexity")),
        "test_ppl_excl_oov": _finite(test.get("perplexity_excl_oov")),
        "test_bits_per_token": _finite(test.get("cross_entropy_bits")),
        "bits_per_char": _finite(test.get("bits_per_char")) if char_level else None,
        "bits_per_byte": _finite(test.get("bits_per_byte")),
        "word_ppl": _finite(test.get("word_perplexity")),
        "unk_bytes": _finite(test.get("unk_byte_share")),
        "bleu": _finite(bleu.get("score")),
        "bleu_beam": _finite(beam.get("score")),
        "beam": beam.get("beam"),
        "bleu_signature": bleu.get("signature") or beam.get("signature"),
        "tokens_per_second": _finite(test.get("tokens_per_second")),
        "note": "; ".join(notes) or None,
        "run": path,
    }
    return row


def _rank(rows: list[dict], key: str) -> None:
    """Rank normalised models by `key` (ascending); the rest keep rank None."""
    ranked = sorted((r for r in rows if r["normalised"] and r[key] is not None), key=lambda r: r[key])
    for i, r in enumerate(ranked, 1):
        r["rank"] = i


def _default_order(row: dict, key: str) -> tuple:
    value = row[key]
    return (not row["normalised"], value is None, value if value is not None else 0.0)


def check_sort_column(column: str, columns: Iterable[str] = COLUMNS) -> str:
    name = column.lstrip("-").replace("-", "_")
    if name not in columns:
        raise UsageError(f"cannot sort by {column!r}; choose one of: {', '.join(columns)} (prefix - for descending)")
    return name


def sort_rows(rows: list[dict], column: str) -> list[dict]:
    """Sort by one column ('-col' for descending); empty cells always go last."""
    descending = column.startswith("-")
    name = check_sort_column(column, list(rows[0]) if rows else COLUMNS)
    present = [r for r in rows if r[name] is not None]
    empty = [r for r in rows if r[name] is None]
    return sorted(present, key=lambda r: r[name], reverse=descending) + empty


# -- confidence intervals ---------------------------------------------------------------------------
MAX_BOOTSTRAP = 1_000_000  # resamples: the interval of a percentile settles long before (1000 is the usual)
MAX_SEEDS = 1000  # training runs per neural model: each one shares the lineup's time budget


def check_bootstrap(n: int, confidence: float) -> None:
    """Refuse bad --bootstrap/--confidence values before anything is read or trained."""
    if n < 1:
        raise UsageError(f"--bootstrap needs at least 1 resample, got {n} (1000 is a good choice)")
    if n > MAX_BOOTSTRAP:
        raise UsageError(f"--bootstrap {n} is beyond lmkit's limit of {MAX_BOOTSTRAP:,} resamples "
                         "(1000 is a good choice)")
    if not 0.0 < confidence < 1.0:
        raise UsageError(f"--confidence must be between 0 and 1, e.g. 0.95; got {confidence}")


def _add_note(row: dict, text: str) -> None:
    row["note"] = f"{row['note']}; {text}" if row.get("note") else text


def _bootstrap_input(row: dict, path: str, record: RunRecord):
    """(per-sequence scores, None) when this run can be resampled, else (None, why not)."""
    from .evaluate.per_sequence import load_test_scores

    if not row["normalised"]:
        return None, "no confidence interval"
    if _sha(record, "test") is None or not record.metrics.get("test"):
        return None, "no test score, no confidence interval"
    try:
        scores = load_test_scores(path, record)
    except ModelError as exc:
        return None, f"per-sequence scores unusable: {exc.message} (retrain or rescore)"
    if scores is None:
        return None, NO_SCORES_NOTE
    if not scores.finite or row["test_ppl"] is None:
        return None, "no confidence interval"
    return scores, None


def add_intervals(rows: list[dict], runs: list[tuple[str, RunRecord]], n: int, seed: int = 0,
                  confidence: float = DEFAULT_CONFIDENCE) -> None:
    """Fill BOOTSTRAP_COLUMNS of `rows` (one per run, same order) from each run's stored per-sequence
    test scores, with one set of resampled sequences for every model (paired).

    A run that cannot be resampled keeps None there and its note says why. The reference for the
    differences is the best-ranked model with per-sequence scores (rank 1 whenever it has them)."""
    import numpy as np

    from .evaluate.bootstrap import paired_bootstrap

    check_bootstrap(n, confidence)
    usable = []
    for row, (path, record) in zip(rows, runs):
        row.update(dict.fromkeys(BOOTSTRAP_COLUMNS))
        scores, why_not = _bootstrap_input(row, path, record)
        if why_not:
            _add_note(row, why_not)
        else:
            usable.append((row, scores))
    if not usable:
        return
    first, tokens = usable[0][0], usable[0][1].tokens
    for row, scores in usable[1:]:
        if not np.array_equal(scores.tokens, tokens):
            raise IncomparableError(f"{first['run']} and {row['run']} stored per-sequence scores of different "
                                    "sequences (token counts differ); they cannot be resampled together")
    best = min(range(len(usable)), key=lambda i: usable[i][0]["rank"])
    result = paired_bootstrap(np.stack([s.nll for _, s in usable]), tokens, n, seed, confidence, best=best)
    for i, (row, _) in enumerate(usable):
        row.update(test_ppl_lo=float(result.ppl_lo[i]), test_ppl_hi=float(result.ppl_hi[i]),
                   diff_to_best_lo=float(result.diff_lo[i]), diff_to_best_hi=float(result.diff_hi[i]),
                   p_worse_than_best=float(result.p_worse[i]))
    if usable[best][0]["rank"] != 1:
        _add_note(usable[best][0], "bootstrap reference: the best model with per-sequence scores")


def compare_runs(paths: Sequence[str | Path], sort: str | None = None, *, bootstrap: int | None = None,
                 seed: int = 0, confidence: float = DEFAULT_CONFIDENCE) -> list[dict]:
    """One row per run folder, refused (IncomparableError) unless all were measured the same way.

    `bootstrap` N adds paired-bootstrap intervals (BOOTSTRAP_COLUMNS, see add_intervals), seeded by `seed`."""
    if bootstrap is not None:
        check_bootstrap(bootstrap, confidence)
    runs = read_runs(paths)
    across = across_levels(runs)
    if across:
        check_across_levels(runs)
        if bootstrap is not None:
            raise UsageError("--bootstrap resamples per-token perplexities, which runs of different levels or "
                             "vocabularies do not share; compare them without it (ranked by bits per byte)")
    else:
        check_comparable(runs)
    char_level = _protocol(runs[0][1]).level == "char"
    check_same_beam(runs)
    rows = [_row(path, record, char_level) for path, record in runs]
    if across:
        for row in rows:
            row["vocab_size"] = _vocab_size(row["run"])
        _note_unk_bytes(rows)
        key = "bits_per_byte"
    else:
        key = "test_ppl" if _sha(runs[0][1], "test") is not None else "valid_ppl"
    _rank(rows, key)
    if bootstrap is not None:
        add_intervals(rows, runs, bootstrap, seed, confidence)
    rows.sort(key=lambda r: _default_order(r, key))
    if sort:
        rows = sort_rows(rows, sort)
    keep = [c for c in COLUMNS
            if not (c == "bits_per_char" and not char_level)
            and not (c in ("bleu_signature", "bleu_beam", "beam") and all(r[c] is None for r in rows))
            and not (c in ("bits_per_byte", "word_ppl", "unk_bytes") and all(r[c] is None for r in rows))
            and not (across and c in PER_TOKEN_COLUMNS) and (across or c not in ACROSS_COLUMNS)]
    if bootstrap is not None:
        keep[keep.index("test_ppl") + 1:keep.index("test_ppl") + 1] = BOOTSTRAP_COLUMNS
    return [{c: r[c] for c in keep} for r in rows]


def _note_unk_bytes(rows: list[dict]) -> None:
    """Bytes a model mapped to <unk> cost it one <unk> each, not their spelling: its bits per byte is then
    optimistic next to a row with fewer such bytes (a smaller vocabulary looks better). Said on the row
    (docs/protocol.md)."""
    for r in rows:
        if r["unk_bytes"]:
            _add_note(r, f"{r['unk_bytes']:.1%} of bytes in <unk>: bits/byte optimistic")


# -- models scored now on one text (compare --text) ---------------------------------------------------------
TEXT_COLUMNS = ("rank", "model", "kind", "level", "vocab_size", "parameters", "bits_per_byte", "word_ppl",
                "unk_bytes", "tokens", "note", "run")


def rows_on_text(results: Sequence[Any], sort: str | None = None) -> list[dict]:
    """One row per model scored on the same text just now (pipeline.use.ScoreResult), ranked by bits per byte:
    their tokenisations may differ, the text and the way it was read (context, blank lines, lower-casing,
    normalisation, task) may not (IncomparableError naming the two models)."""
    first = results[0]
    base = text_fields(first.protocol)
    for r in results[1:]:
        other = text_fields(r.protocol)
        if other != base:
            raise IncomparableError(f"{first.run} and {r.run} did not read {first.file} the same way: "
                                    f"{protocol_differences(base, other)}; bits per byte compares models only "
                                    "on the same text read the same way")
    rows = []
    for r in results:
        s = r.summary()
        rows.append({"rank": None, "model": r.model, "kind": r.kind, "level": r.protocol.get("level"),
                     "vocab_size": r.vocab_size, "parameters": r.parameters, "normalised": s["normalised"],
                     "bits_per_byte": _finite(s.get("bits_per_byte")), "word_ppl": _finite(s.get("word_perplexity")),
                     "unk_bytes": _finite(s.get("unk_byte_share")), "tokens": s["tokens"], "note": None,
                     "run": r.run})
    _note_unk_bytes(rows)
    _rank(rows, "bits_per_byte")
    rows.sort(key=lambda r: _default_order(r, "bits_per_byte"))
    if sort:
        rows = sort_rows(rows, sort)
    return [{c: r[c] for c in TEXT_COLUMNS} for r in rows]


# -- several seeds per model (compare --seeds) ------------------------------------------------------
@dataclass(frozen=True)
class LineupRuns:
    """The run folders a lineup trained for one model: one per seed, or one for a deterministic family."""

    spec: str
    runs: tuple[Path, ...]
    seeds: tuple[int, ...] | None  # None: deterministic (n-grams), trained once whatever --seeds says


def check_seeds(seeds: int) -> None:
    """Refuse a bad --seeds before anything is trained."""
    if seeds < 1:
        raise UsageError(f"--seeds needs at least 1 training run per neural model, got {seeds} (3 is a good choice)")
    if seeds > MAX_SEEDS:
        raise UsageError(f"--seeds {seeds} is beyond lmkit's limit of {MAX_SEEDS:,} training runs per neural model")


def _seed_row(rows: list[dict], seeds: tuple[int, ...] | None) -> dict:
    """One model's row from its per-seed rows: MEAN_COLUMNS averaged (the mean of per-seed perplexities, as
    papers report), SD_OF's sample sd (ddof=1); a column empty in any seed run stays empty."""
    import numpy as np

    out = dict(rows[0], rank=None, seeds=len(rows), valid_ppl_sd=None, test_ppl_sd=None)
    for col in MEAN_COLUMNS:
        values = [r.get(col) for r in rows]
        if col in out and all(v is not None for v in values):
            out[col] = float(np.mean(values))
            if col in SD_OF and len(values) > 1:
                out[SD_OF[col]] = float(np.std(values, ddof=1))
        elif col in out:
            out[col] = None
    out["tokens_seen"] = int(round(out["tokens_seen"] or 0))
    out["status"] = next((r["status"] for r in rows if r["status"] != "complete"), "complete")
    out["normalised"] = all(r["normalised"] for r in rows)
    notes = [n for r in rows if r.get("note") for n in r["note"].split("; ")]
    notes.append(f"mean ± sd of seeds {', '.join(map(str, seeds))}" if seeds
                 else "deterministic: trained once, no sd")
    out["note"] = "; ".join(dict.fromkeys(notes))
    return out


def compare_seeded(groups: Sequence[LineupRuns], sort: str | None = None, *, bootstrap: int | None = None,
                   seed: int = 0, confidence: float = DEFAULT_CONFIDENCE) -> list[dict]:
    """One row per model of a lineup trained with several seeds (SEED_COLUMNS added), ranked by the mean.

    Every run of every seed must be comparable with every other. `bootstrap` N resamples each model's
    first run (the first seed's; the only one of a deterministic model), paired as in add_intervals."""
    if bootstrap is not None:
        check_bootstrap(bootstrap, confidence)
    per_run = {r["run"]: r for r in compare_runs([p for g in groups for p in g.runs])}  # checks them all
    rows = [_seed_row([per_run[str(p)] for p in g.runs], g.seeds) for g in groups]
    firsts = read_runs([g.runs[0] for g in groups])
    key = "test_ppl" if _sha(firsts[0][1], "test") is not None else "valid_ppl"
    _rank(rows, key)
    if bootstrap is not None:
        add_intervals(rows, firsts, bootstrap, seed, confidence)
        for row, g in zip(rows, groups):
            if g.seeds and len(g.seeds) > 1 and row["test_ppl_lo"] is not None:
                _add_note(row, f"bootstrap interval of the seed-{g.seeds[0]} run only")
    rows.sort(key=lambda r: _default_order(r, key))
    if sort:
        rows = sort_rows(rows, sort)
    keep = [c for c in next(iter(per_run.values())) if c not in SEED_COLUMNS]
    keep.insert(keep.index("normalised") + 1, "seeds")
    for col, sd in SD_OF.items():
        keep.insert(keep.index(col) + 1, sd)
    if bootstrap is not None:
        keep[keep.index("test_ppl_sd") + 1:keep.index("test_ppl_sd") + 1] = BOOTSTRAP_COLUMNS
    return [{c: r[c] for c in keep} for r in rows]


def compare_trained(groups: Sequence[LineupRuns], sort: str | None = None, *, bootstrap: int | None = None,
                    seed: int = 0, confidence: float = DEFAULT_CONFIDENCE) -> list[dict]:
    """The table of a trained lineup: per model one row, aggregated over seeds only when there are several."""
    if any(g.seeds and len(g.seeds) > 1 for g in groups):
        return compare_seeded(groups, sort, bootstrap=bootstrap, seed=seed, confidence=confidence)
    return compare_runs([p for g in groups for p in g.runs], sort=sort, bootstrap=bootstrap, seed=seed,
                        confidence=confidence)


def best_cells(rows: list[dict]) -> dict[str, int]:
    """Column -> index of the row holding the best quality value (perplexities: normalised models only)."""
    best: dict[str, int] = {}
    for col in LOWER_IS_BETTER + HIGHER_IS_BETTER:
        candidates = [(r[col], i) for i, r in enumerate(rows) if r.get(col) is not None
                      and (col in HIGHER_IS_BETTER or r.get("normalised", True))]
        if candidates:
            pick = min(candidates) if col in LOWER_IS_BETTER else max(candidates, key=lambda c: (c[0], -c[1]))
            best[col] = pick[1]
    return best


def _fixed(digits: int) -> Callable[[Any], str]:
    return lambda v: f"{v:,.{digits}f}"


# column -> (header, cell text) for the rich table: what a person reads in a terminal, rounded
TABLE_VIEW: dict[str, tuple[str, Callable[[Any], str]]] = {
    "rank": ("#", str),
    "model": ("model", str),
    "level": ("level", str),
    "vocab_size": ("vocab", _fixed(0)),
    "seeds": ("seeds", str),
    "status": ("status", str),
    "parameters": ("params", _fixed(0)),
    "train_seconds": ("train s", _fixed(1)),
    "tokens_seen": ("tokens seen", _fixed(0)),
    "valid_ppl": ("valid ppl", _fixed(2)),
    "test_ppl": ("test ppl", _fixed(2)),
    "test_ppl_lo": ("ppl lo", _fixed(2)),
    "test_ppl_hi": ("ppl hi", _fixed(2)),
    "diff_to_best_lo": ("diff lo", _fixed(2)),
    "diff_to_best_hi": ("diff hi", _fixed(2)),
    "p_worse_than_best": ("p worse", _fixed(3)),
    "test_ppl_excl_oov": ("excl. OOV", _fixed(2)),
    "test_bits_per_token": ("bits/token", _fixed(3)),
    "bits_per_char": ("bits/char", _fixed(3)),
    "bits_per_byte": ("bits/byte", _fixed(4)),
    "tokens": ("tokens", _fixed(0)),
    "word_ppl": ("word ppl", _fixed(2)),
    "unk_bytes": ("<unk> bytes", lambda v: f"{v:.2%}"),
    "bleu": ("BLEU", _fixed(2)),
    "bleu_beam": ("BLEU beam", _fixed(2)),
    "beam": ("beam", str),
    "tokens_per_second": ("score tok/s", _fixed(0)),
    "note": ("note", str),
}


def shown_column(rows: list[dict], col: str) -> bool:
    """Does a table of `rows` show `col`: not when every row leaves it empty, nor the status when every run is
    complete (the terminal table and the report page alike)."""
    if col == "status":
        return any(r["status"] != "complete" for r in rows)
    return any(r.get(col) is not None for r in rows)


def cell_text(row: dict, col: str) -> str | None:
    """A cell as people read it: TABLE_VIEW's rounding, "mean ± sd" over several seeds; other columns as they
    are (yes/no for a flag); None when empty."""
    value = row[col]
    if value is None:
        return None
    if col not in TABLE_VIEW:
        return ("yes" if value else "no") if isinstance(value, bool) else str(value)
    text = TABLE_VIEW[col][1](value)
    sd = row.get(SD_OF.get(col, ""))  # several seeds: "mean ± sd"
    return f"{text} ± {TABLE_VIEW[col][1](sd)}" if sd is not None else text


def table_view(rows: list[dict]) -> tuple[list[dict], list[str], dict[str, int]]:
    """(display rows, headers, highlight) for the rich table: rounded cells, empty columns and the
    always-complete status left out, the best quality value per column marked."""
    cols = [c for c in TABLE_VIEW if rows and c in rows[0] and shown_column(rows, c)]
    display = [{TABLE_VIEW[c][0]: cell_text(r, c) for c in cols} for r in rows]
    highlight = {TABLE_VIEW[c][0]: i for c, i in best_cells(rows).items() if c in cols}
    return display, [TABLE_VIEW[c][0] for c in cols], highlight
