"""Lineups: several models trained here on one corpus under ONE protocol and ONE vocabulary, then compared.

`compare` is what `lmkit compare` runs: existing run folders, or a lineup trained first. A lineup builds
its runs through the pipeline's train request like `lmkit train` does; lmkit.compare makes the table.
Protocol and vocabulary defaults are every command's (lmkit.defaults); the sizes below are the lineup's recipe
(docs/guide.md, "The default lineup")."""

from __future__ import annotations

import math
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .defaults import LEVEL, SHORT_BUDGET_TRAIN, context_for, min_count_or_default
from .compare import (BOOTSTRAP_COLUMNS, COLUMNS, DEFAULT_CONFIDENCE, SEED_COLUMNS, LineupRuns, check_bootstrap,
                      check_comparable, check_seeds, check_sort_column, compare_runs, compare_trained, read_runs)
from .errors import UsageError
from .logs import Log, quiet
from .protocol import Protocol
from .runs import read_record

# Each family's part in the default lineup and the small model a lineup trains of it (sized for ~70 s on two
# CPU cores; the output layer over the vocabulary dominates the cost) are its descriptor's `lineup` preset
# (lmkit/models/family.py), declared in its model file.
NEURAL_SECONDS = 60.0  # default time budget per neural model (the whole run: training, validation, scoring)
# The same recipe for every neural model: `lmkit train`'s short-budget settings (lmkit.defaults), so a lineup
# run and `lmkit train --time-budget 60s` train the same model the same way (each family keeps its own lr).
LINEUP_TRAIN: dict = dict(SHORT_BUDGET_TRAIN)


def default_lineup() -> tuple[str, ...]:
    """`lmkit compare` without arguments: every registered family's lineup specs, in registry order."""
    from .models import families

    return tuple(spec for fam in families() for spec in fam.default_specs)


# -- compare: existing runs, or a lineup trained first ------------------------------------------------
def compare(runs: list[str | Path] | None = None, *, corpus: str | Path | None = None,
            models: list[str] | None = None, time_budget: str | float | None = None, max_tokens: int | None = None,
            context: str | None = None, min_count: int | None = None, sort: str | None = None,
            runs_dir: str | Path | None = None, device: str | None = None, seed: int = 0, task: str | None = None,
            src: str | None = None, tgt: str | None = None, log: Log = quiet, progress: bool = False,
            bleu: bool = False, bootstrap: int | None = None, confidence: float | None = None,
            seeds: int | None = None, beam: int | None = None, length_penalty: float = 0.0) -> list[dict]:
    """Rows comparing existing run folders, or (no runs) a lineup trained here on one corpus (lmkit.api.compare
    documents the options). Every option is checked before a lineup spends minutes training."""
    from .pipeline.use import record_bleu
    from .validate import check_seed

    check_seed(seed)
    if confidence is not None and bootstrap is None:
        raise UsageError("--confidence sets the level of --bootstrap intervals; give --bootstrap N too")
    confidence = DEFAULT_CONFIDENCE if confidence is None else confidence
    if bootstrap is not None:
        check_bootstrap(bootstrap, confidence)
    if not runs:
        check_lineup_options(models, time_budget, max_tokens, min_count, device)
    if seeds is not None and not runs:
        check_seeds(seeds)
    if beam is not None:
        check_beam(beam, length_penalty, runs, task)
    if sort:
        check_sort_column(sort, COLUMNS + (BOOTSTRAP_COLUMNS if bootstrap is not None else ())
                          + (SEED_COLUMNS if (seeds or 1) > 1 else ()))
    groups = None
    if runs:
        refuse_lineup_options({"--corpus": corpus, "--models": models, "--time-budget": time_budget,
                               "--max-tokens": max_tokens, "--context": context, "--min-count": min_count,
                               "-o": runs_dir,
                               "--device": None if (bleu or beam is not None) else device,  # BLEU decodes on it
                               "--task": task, "--src": src, "--tgt": tgt, "--seeds": seeds})
        paths = list(runs)
    else:
        groups = train_lineup(corpus, models, time_budget, max_tokens=max_tokens, context=context,
                              min_count=min_count, device=device, seed=seed, runs_dir=runs_dir,
                              task=task, src=src, tgt=tgt, seeds=seeds or 1, log=log, progress=progress)
        paths = [path for group in groups for path in group.runs]
    if bleu or beam is not None:
        if runs:
            check_comparable(read_runs(paths))  # refuse incomparable runs before spending time on decoding
        for path in paths:
            if bleu:
                record_bleu(path, device=device or "cpu", log=log)
            if beam is not None:
                record_bleu(path, device=device or "cpu", beam=beam, length_penalty=length_penalty, log=log)
    if groups is not None:  # several seeds of a model make one row
        return compare_trained(groups, sort=sort, bootstrap=bootstrap, seed=seed, confidence=confidence)
    return compare_runs(paths, sort=sort, bootstrap=bootstrap, seed=seed, confidence=confidence)


def check_beam(beam: int, length_penalty: float, runs, task: str | None) -> None:
    """--beam N: a width of at least 1 and translation runs (or a translation lineup), before any decoding."""
    if isinstance(beam, bool) or not isinstance(beam, int) or beam < 1:
        raise UsageError(f"--beam must be a width of at least 1, got {beam}")
    if not (isinstance(length_penalty, (int, float)) and math.isfinite(length_penalty) and length_penalty >= 0):
        raise UsageError(f"--length-penalty must be a finite number >= 0, got {length_penalty}")
    if runs:
        for path in runs:
            if read_record(Path(path)).protocol.get("task", "lm") != "translate":
                raise UsageError(f"{path}: --beam adds beam-search translation BLEU; this run is a language model "
                                 "(continuation BLEU is greedy: --bleu)")
    elif task != "translate":
        raise UsageError("--beam adds beam-search translation BLEU: give a translation lineup (--task translate)")


def refuse_lineup_options(given: dict) -> None:
    """Options that train a lineup make no sense beside existing run folders: refused, named as flags."""
    named = [flag for flag, value in given.items() if value is not None]
    if named:
        raise UsageError(f"{', '.join(named)} train a lineup; they do not apply to existing run folders "
                         "(give either RUNS or a lineup)")


def check_lineup_options(models: list[str] | None, time_budget, max_tokens: int | None, min_count: int | None,
                         device: str | None) -> None:
    """A lineup's own options, before its first model trains (each model's options are checked by train)."""
    from .data.vocab import Vocab
    from .pipeline.request import resolve_model
    from .train import parse_duration
    from .validate import check_device_name

    if models is not None and not models:
        raise UsageError("--models lists no model; give a comma-separated lineup such as ngram:kn5,lstm")
    for spec in models or ():  # a bad spec late in the lineup must not cost the training of the first ones
        resolve_model(spec, {}, [])
    if max_tokens is not None and max_tokens < 1:
        raise UsageError(f"--max-tokens must be at least 1, got {max_tokens}")
    if min_count is not None:
        Vocab.check_options(min_count, None)
    check_device_name(device)
    if time_budget is not None and not isinstance(time_budget, (int, float)):
        time_budget = parse_duration(time_budget)
    if time_budget is not None and not (time_budget > 0 and math.isfinite(time_budget)):
        raise UsageError(f"--time-budget must be a finite positive duration, got {time_budget}")


# -- the pieces a lineup (and a learning curve) is made of ---------------------------------------------
def folder_name(spec: str) -> str:
    """A model spec as a folder name (ngram:kn5 -> ngram-kn5)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", spec).strip("-")


def lineup_dir(runs_dir: str | Path | None, prefix: str = "compare") -> Path:
    """Where a lineup's runs go: -o, else runs/<prefix>-<timestamp> (env LMKIT_RUNS for runs/)."""
    if runs_dir is not None:
        return Path(runs_dir)
    return Path(os.environ.get("LMKIT_RUNS", "runs")) / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"


def classify(models: Sequence[str]) -> list[tuple[str, str, bool]]:
    """(spec, kind, is_neural) per model; every spec is checked before anything is trained (no torch import)."""
    from .models import is_neural, parse_spec

    out, seen = [], set()
    for spec in models:
        kind, _ = parse_spec(spec)
        if spec in seen:
            raise UsageError(f"model {spec!r} is listed twice in the lineup")
        seen.add(spec)
        out.append((spec, kind, is_neural(kind)))
    return out


def lineup_model_options(kind: str, options: dict[str, dict] | None = None) -> dict:
    """Model options a lineup gives a neural family (`lmkit compare` and `lmkit curve` alike): the caller's
    for that family, else its descriptor's lineup preset. The adaptive softmax is `lmkit train`'s default,
    cutoffs derived from the vocabulary (pipeline.request.with_vocab_defaults), unless the options set them."""
    from .models import descriptor

    if kind in (options or {}):
        return dict(options[kind])
    return dict(descriptor(kind).lineup.options)


# -- training a lineup ----------------------------------------------------------------------------------
@dataclass
class LineupPlan:
    """A lineup resolved before any training: corpus, protocol, output folder and the files to read."""

    corpus: Path
    lineup: list[tuple[str, str, bool]]
    task: str
    context: str
    level: str
    min_count: int
    out: Path
    vocab_files: list[Path]
    splits: dict  # TrainRequest fields naming the data (train/valid/test, or corpus/task/src/tgt)


def plan_lineup(corpus, models, *, context, level, min_count, runs_dir, task, src, tgt) -> LineupPlan:
    """Resolve and check a lineup's corpus, task, context and folder; nothing is trained or written."""
    from .data.corpus import bundled_corpus, is_parallel, locate, locate_pairs
    from .datasets.store import resolve_corpus
    from .outputs import check_output_dir

    corpus = Path(resolve_corpus(corpus)) if corpus is not None else bundled_corpus()
    lineup = classify(list(models) if models else default_lineup())
    if task is None:
        task = "translate" if src is not None or tgt is not None or is_parallel(corpus) else "lm"
    context = context_for(task, context)  # lmkit.defaults, as for `lmkit train`: pairs are scored one by one
    min_count = min_count_or_default(min_count)
    Protocol(level=level, context=context, task=task)  # a bad --context or --task fails here, before any work
    out = check_output_dir(lineup_dir(runs_dir), force=False, inputs=[corpus])
    if task == "translate":
        pairs = locate_pairs(corpus, src, tgt, need=("train", "valid"))
        vocab_files, splits = list(pairs.train), {"corpus": corpus, "task": task, "src": pairs.src, "tgt": pairs.tgt}
    else:
        if src is not None or tgt is not None:
            raise UsageError("--src/--tgt choose the two sides of a parallel corpus; they apply to --task translate")
        files = locate(corpus, need=("train", "valid"))
        vocab_files, splits = [files.train], {"train": files.train, "valid": files.valid, "test": files.test}
    return LineupPlan(corpus, lineup, task, context, level, min_count, out, vocab_files, splits)


def neural_share(plan: LineupPlan, time_budget, seeds: int, seed: int, log: Log) -> tuple[float | None, str]:
    """Seconds of training per neural run (the total budget split evenly) and how to say it."""
    from .train import parse_duration

    neural = [spec for spec, _, is_neural in plan.lineup if is_neural]
    if seeds > 1:
        log(f"note: {seeds} seeds per neural model ({seed}..{seed + seeds - 1}); n-grams are deterministic and "
            "train once")
    if not neural:
        if time_budget is not None:
            log("note: --time-budget ignored: n-gram models train on the whole corpus and need no budget")
        return None, "n-grams only"
    total = parse_duration(time_budget) if time_budget is not None else NEURAL_SECONDS * len(neural)
    per_run = total / (len(neural) * seeds)
    return per_run, (f"{per_run:.0f} s per neural model" if seeds == 1 else
                     f"{per_run:.0f} s per neural seed run ({total:.0f} s split over {len(neural)} neural model(s) "
                     f"x {seeds} seeds)")


def train_lineup(corpus: str | Path | None = None, models: Sequence[str] | None = None,
                 time_budget: str | float | None = None, *, max_tokens: int | None = None,
                 context: str | None = None, level: str = LEVEL, min_count: int | None = None,
                 options: dict[str, dict] | None = None, train_options: dict | None = None,
                 device: str | None = None, seed: int = 0, sort: str | None = None,
                 runs_dir: str | Path | None = None, task: str | None = None, src: str | None = None,
                 tgt: str | None = None, seeds: int = 1, log: Log = quiet, progress: bool = False) -> list[LineupRuns]:
    """Train every model on one corpus under ONE protocol and ONE vocabulary; the run folders per model.

    A parallel corpus (`task` translate, inferred from --src/--tgt or a train.src/train.tgt pair) gets a
    joint vocabulary with <sep>, sentence context by default, and every run records its test BLEU.
    `time_budget` is the total neural training time, split evenly between the neural training runs
    (n-grams need none); `options` maps a family to model options replacing its lineup preset;
    `train_options` (batch_size, lr, ...) replace LINEUP_TRAIN's and apply to every neural model alike.
    `seeds` K > 1 trains each neural model K times (seeds seed..seed+K-1, folders <model>-seed<s>), each
    run with 1/K of the model's share of the budget and `max_tokens` each; n-grams train once."""
    from .pipeline.fit import train
    from .pipeline.prepare import build_vocab
    from .pipeline.request import TrainRequest

    check_seeds(seeds)
    if sort:
        check_sort_column(sort, COLUMNS + (SEED_COLUMNS if seeds > 1 else ()))  # a typo must not cost a run
    plan = plan_lineup(corpus, models, context=context, level=level, min_count=min_count, runs_dir=runs_dir,
                       task=task, src=src, tgt=tgt)
    per_run, budget_text = neural_share(plan, time_budget, seeds, seed, log)
    jobs = [(spec, kind, is_neural, s if is_neural and seeds > 1 else None)
            for spec, kind, is_neural in plan.lineup for s in (range(seed, seed + seeds) if is_neural else (seed,))]
    with tempfile.TemporaryDirectory(prefix="lmkit-lineup-") as tmp:
        vocab_path = Path(tmp) / "vocab.json"
        vocab = build_vocab(plan.vocab_files, level=plan.level, min_count=plan.min_count, output=vocab_path,
                            with_sep=plan.task == "translate")
        log(f"lineup on {plan.corpus}: {len(vocab):,} ids (min-count {plan.min_count}), {plan.level} level, "
            f"{plan.context} context, {budget_text}; runs in {plan.out}")
        paths: dict[str, list[Path]] = {spec: [] for spec, _, _ in plan.lineup}
        for i, (spec, kind, is_neural, run_seed) in enumerate(jobs, 1):
            name = spec if run_seed is None else f"{spec} seed {run_seed}"
            log(f"[{i}/{len(jobs)}] training {name}" + (f", {per_run:.0f} s budget" if is_neural else ""))
            start = time.perf_counter()
            neural_opts = {**LINEUP_TRAIN, **(train_options or {}), "time_budget": per_run,
                           "max_tokens": max_tokens, "device": device} if is_neural else {}
            model_opts = lineup_model_options(kind, options) if is_neural else {}
            folder = folder_name(spec) + ("" if run_seed is None else f"-seed{run_seed}")
            req = TrainRequest(model=spec, **plan.splits, vocab=vocab_path, context=plan.context,
                               options=dict(model_opts), train_options=neural_opts, output=plan.out / folder,
                               seed=seed if run_seed is None else run_seed, progress=progress)
            paths[spec].append(train(req, log=lambda msg: log(f"  {msg}")))
            log(f"[{i}/{len(jobs)}] {name} done in {time.perf_counter() - start:.0f} s")
    return [LineupRuns(spec, tuple(paths[spec]), tuple(range(seed, seed + seeds)) if is_neural else None)
            for spec, _, is_neural in plan.lineup]
