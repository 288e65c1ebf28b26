"""Learning curves: the same model families trained on nested fractions of one training split.

Why prefixes of the file's own line order (and not of a shuffled order): in `stream` context, the
default, both the n-grams (counted across `</s>`) and the neural models (state carried across lines)
learn from the sentences *around* a sentence, and the valid and test splits keep their document order.
A line shuffle would train every fraction on text unlike the text it is scored on. Prefixes are nested
by construction (the 1% file is the first bytes of the 10% file, which is the first bytes of the train
file), need no seed, and the 100% point *is* the train file: the same sha256 as a plain `lmkit train`,
so it can be checked against earlier results. The price: a prefix is a contiguous slice, not a random
sample, so the smallest fractions cover fewer topics than a random sample of that size would.

Everything else is held fixed: one vocabulary built from the FULL train split (so perplexities at every
fraction predict the same set of ids), one protocol, the full valid and test splits. Each (model,
fraction) is an ordinary run folder written by api.train, comparable by `lmkit compare`."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .defaults import LEVEL
from .errors import DataError, UsageError
from .logs import Log


DEFAULT_MODELS = ("ngram:kn5", "lstm")
DEFAULT_FRACTIONS = (0.01, 0.1, 1.0)
DEFAULT_RUN_BUDGET = 60.0  # seconds per neural run when no budget is given: the default command finishes
BUDGET_KEYS = ("epochs", "max_tokens", "time_budget")
COLUMNS = ("model", "fraction", "train_lines", "train_tokens", "tokens_seen", "epochs", "parameters",
           "train_seconds", "valid_ppl", "test_ppl", "test_ppl_excl_oov", "note", "run")
CURVE_FILE = "curve.json"


# -- fractions --------------------------------------------------------------------------------------
def parse_fractions(fractions: str | Sequence[float] | None) -> list[float]:
    """Sorted fractions in (0, 1]; a duplicate or an unparsable value is a usage error."""
    if fractions is None:
        return list(DEFAULT_FRACTIONS)
    if isinstance(fractions, str):
        values = []
        for part in (p.strip() for p in fractions.split(",")):
            try:
                values.append(float(part))
            except ValueError:
                raise UsageError(f"--fractions expects comma-separated numbers such as 0.01,0.1,1; "
                                 f"got {part!r}") from None
    else:
        values = [float(v) for v in fractions]
    if not values:
        raise UsageError("--fractions needs at least one fraction, e.g. 0.01,0.1,1")
    bad = [v for v in values if not (0.0 < v <= 1.0)]  # also refuses nan
    if bad:
        raise UsageError(f"fractions must lie in (0, 1], got {bad[0]:g}")
    dupes = sorted({v for v in values if values.count(v) > 1})
    if dupes:
        raise UsageError(f"fraction {dupes[0]:g} is given twice; each fraction is one training set")
    return sorted(values)


@dataclass(frozen=True)
class Prefix:
    """The training set of one fraction: its first `lines` non-blank lines, `end` bytes of the file."""

    fraction: float
    lines: int
    end: int


def nested_prefixes(data: bytes, lines: Sequence[str], fractions: Sequence[float]) -> list[Prefix]:
    """Cut points of each fraction in a train file (raw bytes and its lines as read_text gives them).

    A fraction f keeps floor(f * N) of the N non-blank lines (blank lines are not sequences) and every
    byte up to the end of the last one, so each cut is a byte prefix of the file and of every larger cut."""
    from .data.tokenize import is_blank

    kept = [i for i, line in enumerate(lines) if not is_blank(line)]
    out: list[Prefix] = []
    for f in fractions:
        n = len(kept) if f == 1.0 else math.floor(f * len(kept) + 1e-9)
        if n == 0:
            raise UsageError(f"fraction {f:g} of {len(kept):,} training lines is zero lines; the smallest "
                             f"usable fraction here is {1 / len(kept):.3g}")
        if out and out[-1].lines == n:
            raise UsageError(f"fractions {out[-1].fraction:g} and {f:g} both give the first {n:,} of "
                             f"{len(kept):,} training lines (the same training set); drop one")
        out.append(Prefix(f, n, _line_end(data, kept[n - 1])))
    return out


def _line_end(data: bytes, index: int) -> int:
    """Byte offset just past line `index` (0-based; lines end at b'\\n', as read_text splits them)."""
    pos = -1
    for _ in range(index + 1):
        pos = data.find(b"\n", pos + 1)
        if pos < 0:
            return len(data)
    return pos + 1


# -- options ----------------------------------------------------------------------------------------
def split_sets(sets: Sequence[str], kinds: Sequence[str], neural: Sequence[str]) -> dict[str, list[str]]:
    """`--set KEY=VALUE` goes to every neural family of the curve, `--set FAMILY.KEY=VALUE` to one."""
    out: dict[str, list[str]] = {k: [] for k in kinds}
    for item in sets:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise UsageError(f"--set expects KEY=VALUE or FAMILY.KEY=VALUE, got {item!r}")
        prefix, dot, field = key.strip().partition(".")
        if dot:
            if prefix not in out:
                raise UsageError(f"--set {item}: {prefix!r} is not a family of this curve "
                                 f"(families: {', '.join(out)})")
            out[prefix].append(f"{field}={value}")
        elif neural:
            for kind in neural:
                out[kind].append(item)
        else:
            raise UsageError(f"--set {item}: without a family prefix it applies to neural models, and this curve "
                             "has none (write e.g. ngram.KEY=VALUE)")
    return out


def neural_budget(epochs: float | None = None, max_tokens: int | None = None,
                  time_budget: str | float | None = None, sets: Sequence[str] = ()) -> dict:
    """The budget of every neural run: as given (flags or --set), else DEFAULT_RUN_BUDGET seconds each."""
    from .train import parse_duration

    budget = {"epochs": epochs, "max_tokens": max_tokens, "time_budget": parse_duration(time_budget)}
    set_keys = {s.partition("=")[0].strip().rpartition(".")[2].replace("-", "_") for s in sets}
    if all(v is None for v in budget.values()) and not set_keys & set(BUDGET_KEYS):
        budget["time_budget"] = DEFAULT_RUN_BUDGET
    return budget


def _without(defaults: dict, sets: Sequence[str]) -> dict:
    """The lineup's defaults minus the fields a --set replaces (a --set must not contradict a default)."""
    keys = {s.partition("=")[0].strip().replace("-", "_") for s in sets}
    return {k: v for k, v in defaults.items() if k not in keys}


@dataclass
class _Job:
    """One model of the curve with everything it is trained with, checked before any training."""

    spec: str
    options: dict
    train_options: dict
    sets: list[str]


# -- the curve --------------------------------------------------------------------------------------
def learning_curve(
    corpus: str | Path | None = None,
    models: Sequence[str] | None = None,
    fractions: str | Sequence[float] | None = None,
    *,
    time_budget: str | float | None = None,
    max_tokens: int | None = None,
    epochs: float | None = None,
    context: str | None = None,
    level: str = LEVEL,
    min_count: int | None = None,
    sets: Sequence[str] = (),
    device: str | None = None,
    seed: int = 0,
    runs_dir: str | Path | None = None,
    image: str | Path | None = None,
    log: Log = lambda _: None,
    progress: bool = False,
) -> list[dict]:
    """Train every model on every fraction (nested prefixes of the train split) under one protocol and
    one vocabulary from the full train split; score each on the full valid and test splits.

    Neural budgets apply to each run: `epochs` (each run sees its own fraction that many times: the
    natural learning-curve budget), `max_tokens`, `time_budget` (seconds or '90s'); with none of them,
    DEFAULT_RUN_BUDGET seconds per run. Rows follow COLUMNS, one per (model, fraction), models in the
    given order; `image` also draws test perplexity against training tokens."""
    from .atomic import write_json
    from .render import clean

    plan = plan_curve(corpus, models, fractions, image=image, context=context, level=level, min_count=min_count,
                      sets=sets, epochs=epochs, max_tokens=max_tokens, time_budget=time_budget, runs_dir=runs_dir,
                      log=log)
    _, data, prefixes, vocab = _read_train(plan)
    jobs = curve_jobs(plan, len(vocab), device, seed)
    log(f"learning curve on {plan.corpus}: fractions {', '.join(f'{f:g}' for f in plan.fractions)} of the train "
        f"split ({', '.join(f'{p.lines:,}' for p in prefixes)} lines); {len(vocab):,} ids (min-count "
        f"{plan.min_count}, from the full train split), {level} level, {plan.protocol.context} context; runs in "
        f"{plan.out}")
    plan.out.mkdir(parents=True, exist_ok=True)
    vocab.save(plan.out / "vocab.json")
    train_files = write_prefixes(plan.out / "data", Path(plan.files.train), data, prefixes)
    runs = train_curve(plan, jobs, prefixes, train_files, seed=seed, progress=progress, log=log)
    rows = curve_rows(runs, [j.spec for j in jobs])
    write_json(plan.out / CURVE_FILE, clean({
        "schema": 1, "corpus": str(plan.corpus), "protocol": plan.protocol.to_dict(), "vocab_id": vocab.vocab_id,
        "vocab_size": len(vocab), "min_count": plan.min_count, "fractions": plan.fractions,
        "neural_budget": {k: v for k, v in plan.budget.items() if v is not None}, "rows": rows}))
    if image is not None:
        plot_curve(rows, image, title=curve_title(plan.corpus, plan.protocol, len(vocab)))
        log(f"wrote {image}")
    return rows


@dataclass
class CurvePlan:
    """A learning curve resolved before any training: every option checked, the folder chosen."""

    corpus: Path
    lineup: list[tuple[str, str, bool]]
    fractions: list[float]
    protocol: Any
    min_count: int
    out: Path
    files: Any  # CorpusFiles
    per_kind: dict[str, list[str]]  # --set pairs per family
    budget: dict  # neural budget options for every neural run


def plan_curve(corpus, models, fractions, *, image, context, level, min_count, sets, epochs, max_tokens,
               time_budget, runs_dir, log: Log) -> CurvePlan:
    """Every option checked before anything is trained; nothing written yet."""
    from .data.corpus import bundled_corpus, is_parallel, locate
    from .datasets.store import resolve_corpus
    from .defaults import context_for, min_count_or_default
    from .lineup import classify, lineup_dir
    from .outputs import check_output_dir
    from .protocol import Protocol

    fractions = parse_fractions(fractions)
    lineup = classify(list(models) if models else DEFAULT_MODELS)
    if image is not None:
        from .plot import image_format, require_matplotlib

        image_format(image)
        require_matplotlib("lmkit curve -o")
    corpus = Path(resolve_corpus(corpus)) if corpus is not None else bundled_corpus()
    if is_parallel(corpus):
        raise UsageError(f"{corpus}: a parallel corpus; lmkit curve trains language models on one "
                         "monolingual train/valid/test corpus")
    protocol = Protocol(level=level, context=context_for("lm", context))  # a bad --context or --level fails here
    out = check_output_dir(lineup_dir(runs_dir, prefix="curve"), force=False, inputs=[corpus])
    files = locate(corpus, need=("train", "valid", "test"))
    neural_kinds = list(dict.fromkeys(kind for _, kind, is_neural in lineup if is_neural))
    per_kind = split_sets(list(sets), list(dict.fromkeys(k for _, k, _ in lineup)), neural_kinds)
    budget = neural_budget(epochs, max_tokens, time_budget, sets) if neural_kinds else {}
    if not neural_kinds and any(v is not None for v in (epochs, max_tokens, time_budget)):
        log("note: neural budgets ignored: n-gram models count their whole training set")
    return CurvePlan(corpus, lineup, fractions, protocol, min_count_or_default(min_count),
                     out, files, per_kind, budget)


def _read_train(plan: CurvePlan):
    """(train text, its bytes, the nested prefixes, the vocabulary of the full train split)."""
    from .data.corpus import read_text
    from .pipeline.prepare import build_vocab

    train_text = read_text(plan.files.train)
    data = Path(plan.files.train).read_bytes()
    prefixes = nested_prefixes(data, train_text.lines, plan.fractions)
    vocab = build_vocab(train_text, level=plan.protocol.level, min_count=plan.min_count)  # not read again
    return train_text, data, prefixes, vocab


def curve_jobs(plan: CurvePlan, vocab_size: int, device: str | None, seed: int) -> list[_Job]:
    """One job per model, its options checked (adaptive cutoffs against this vocabulary) before training."""
    from .lineup import LINEUP_TRAIN, lineup_model_options
    from .pipeline.request import TrainRequest, check_request

    jobs = []
    for spec, kind, is_neural in plan.lineup:
        opts = _without(lineup_model_options(kind), plan.per_kind[kind]) if is_neural else {}
        topts = {**_without(LINEUP_TRAIN, plan.per_kind[kind]), **plan.budget, "device": device} if is_neural else {}
        job = _Job(spec, opts, topts, plan.per_kind[kind])
        _, config, _ = check_request(TrainRequest(model=spec, options=dict(opts), train_options=dict(topts),
                                                  sets=list(job.sets), seed=seed))
        if getattr(config, "adaptive_cutoffs", None):
            from .models.adaptive import check_cutoffs

            check_cutoffs(tuple(config.adaptive_cutoffs), vocab_size)
        jobs.append(job)
    return jobs


def train_curve(plan: CurvePlan, jobs: list[_Job], prefixes, train_files: dict, *, seed: int, progress: bool,
                log: Log) -> list[tuple[_Job, Prefix, Path]]:
    """Every job on every prefix, through the pipeline's train request like `lmkit train`."""
    from .lineup import folder_name
    from .pipeline.fit import train
    from .pipeline.request import TrainRequest

    runs: list[tuple[_Job, Prefix, Path]] = []
    n, i = len(prefixes) * len(jobs), 0
    for p in prefixes:
        for job in jobs:
            i += 1
            log(f"[{i}/{n}] training {job.spec} on {p.fraction:g} of train ({p.lines:,} lines)")
            start = time.perf_counter()
            req = TrainRequest(model=job.spec, train=train_files[p.fraction], valid=plan.files.valid,
                               test=plan.files.test, vocab=plan.out / "vocab.json", context=plan.protocol.context,
                               options=dict(job.options), train_options=dict(job.train_options),
                               sets=list(job.sets), output=plan.out / f"{folder_name(job.spec)}-f{p.fraction:g}",
                               seed=seed, progress=progress)
            runs.append((job, p, train(req, log=lambda msg: log(f"  {msg}"))))
            log(f"[{i}/{n}] {job.spec} on {p.fraction:g} done in {time.perf_counter() - start:.0f} s")
    return runs


def write_prefixes(folder: Path, train: Path, data: bytes, prefixes: Sequence[Prefix]) -> dict[float, Path]:
    """fraction -> its train file: data/train-f<f>.txt (atomic), or the train file itself for fraction 1
    (same path, same sha256 as any plain run on this corpus)."""
    from .atomic import atomic_open

    files = {}
    for p in prefixes:
        if p.fraction == 1.0:
            files[p.fraction] = train
            continue
        files[p.fraction] = folder / f"train-f{p.fraction:g}.txt"
        with atomic_open(files[p.fraction], "wb") as fh:
            fh.write(data[:p.end])
    return files


def curve_rows(runs: Sequence[tuple[_Job, Prefix, Path]], specs: Sequence[str]) -> list[dict]:
    """One row per run, models in the given order then by fraction; compare_runs refuses the lot unless
    every run shares protocol, vocabulary, valid and test file (a learning curve is a comparison)."""
    from .compare import compare_runs
    from .runs import read_record

    by_run = {r["run"]: r for r in compare_runs([path for _, _, path in runs])}
    rows = []
    for job, prefix, path in sorted(runs, key=lambda r: (specs.index(r[0].spec), r[1].fraction)):
        row = by_run[str(path)]
        train_info = read_record(path).data.get("train") or {}
        tokens = int(train_info.get("tokens") or 0)
        rows.append({
            "model": job.spec, "fraction": prefix.fraction, "train_lines": int(train_info.get("sequences") or 0),
            "train_tokens": tokens, "tokens_seen": row["tokens_seen"],
            "epochs": row["tokens_seen"] / tokens if tokens else None, "parameters": row["parameters"],
            "train_seconds": row["train_seconds"], "valid_ppl": row["valid_ppl"], "test_ppl": row["test_ppl"],
            "test_ppl_excl_oov": row["test_ppl_excl_oov"], "note": row["note"], "run": str(path),
        })
    return rows


# -- presentation -----------------------------------------------------------------------------------
def curve_title(corpus: str | Path, protocol, vocab_size: int) -> str:
    return (f"test perplexity vs training data: {Path(corpus).name}\n{protocol.level} level, "
            f"{protocol.context} context, one vocabulary of {vocab_size:,} ids from the full train split")


def table_view(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """(rounded display rows, headers) for the terminal table; other formats get the raw rows."""
    from .compare import TABLE_VIEW

    view = {
        "model": TABLE_VIEW["model"],
        "fraction": ("fraction", lambda v: f"{v:g}"),
        "train_tokens": ("train tokens", lambda v: f"{v:,}"),
        "epochs": ("epochs", lambda v: f"{v:.2f}"),
        **{c: TABLE_VIEW[c] for c in ("parameters", "train_seconds", "valid_ppl", "test_ppl")},
        "note": TABLE_VIEW["note"],
    }  # run folders: in every other format, and under --runs-dir
    cols = [c for c in view if any(r.get(c) is not None for r in rows)]
    display = [{view[c][0]: None if r.get(c) is None else view[c][1](r[c]) for c in cols} for r in rows]
    return display, [view[c][0] for c in cols]


def plot_curve(rows: list[dict], output: str | Path, title: str) -> Path:
    """Test perplexity against training tokens (log-log), one line with markers per model; atomic write."""
    from .plot import plain_log_ticks, require_matplotlib, save_figure

    Figure, FigureCanvasAgg, LogFormatter = require_matplotlib("lmkit curve -o")
    fig = Figure(figsize=(7.5, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for model in dict.fromkeys(r["model"] for r in rows):
        points = [(r["train_tokens"], r["test_ppl"]) for r in rows if r["model"] == model and r["test_ppl"]]
        if points:
            ax.plot(*zip(*points), marker="o", label=model)
    if not ax.lines:
        raise DataError("no run has a finite test perplexity to plot")
    ax.set(xscale="log", yscale="log", xlabel="training tokens (nested prefixes of the train split)",
           ylabel="test perplexity")
    plain_log_ticks(ax.yaxis, LogFormatter)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize="medium")
    return save_figure(fig, output)
