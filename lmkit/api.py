"""The library facade the CLI and the tests call: every command as one function, nothing else.

Signatures and re-exports only: the work is done in the layers below (docs/architecture.md). No
printing here: progress goes through the `log` callable, results are returned as objects."""

from __future__ import annotations

from pathlib import Path

from .errors import DataError, UsageError
from .logs import Log, quiet
from .pipeline.fit import resume, train
from .pipeline.prepare import EncodedSplit, build_vocab, encode_corpus, vocab_report
from .pipeline.request import TrainRequest, check_request, counting_plan, list_models, resolve_model
from .pipeline.use import (BleuReport, GenerateResult, ScoreResult, bleu, export_arpa, generate, load_model,
                           record_bleu, score, score_many, split_models_texts)
from .pipeline.arpa_train import train_arpa
from .validate import check_output_file

__all__ = ["BleuReport", "EncodedSplit", "GenerateResult", "Log", "ScoreResult", "TrainRequest", "analyze", "bleu",
           "build_vocab", "check", "check_request", "compare", "corpus_download", "corpus_list", "corpus_path",
           "corpus_split", "counting_plan", "curve", "encode_corpus", "export_arpa", "generate", "list_models",
           "load_model", "mix", "plot", "record_bleu", "report", "resolve_model", "resume", "score", "score_many",
           "split_models_texts", "train", "train_arpa", "verify",
           "verify_cases", "vocab_report"]


def check(run: str | Path, text: str | Path | None = None, *, quick: bool = False, device: str = "cpu"):
    """lmkit.check.CheckReport for a run folder (or ARPA file): normalisation, causality, batch invariance,
    save -> load, measured on `text` (default: the run's test file), so its numbers can be trusted."""
    from .check import check_run

    return check_run(run, text, quick=quick, device=device)


def verify(*, quick: bool = False, corpus: str | Path | None = None, reference: str | Path | None = None,
           cases: list[str] | None = None, skip_neural: bool = False, keep: str | Path | None = None,
           log: Log = quiet, progress: bool = False):
    """lmkit.verify.VerifyReport: lmkit's numbers against references it does not compute (hand values,
    nltk.lm, sacrebleu, published and KenLM perplexities). Quick cases always; `corpus` (PTB) adds the
    full ones; `cases` are names or globs. Run folders go to a temporary folder unless `keep`."""
    from .verify import verify as run_verify

    return run_verify(quick=quick, corpus=corpus, reference=reference, names=cases, skip_neural=skip_neural,
                      keep=keep, log=log, progress=progress)


def verify_cases(*, corpus: str | Path | None = None, reference: str | Path | None = None,
                 cases: list[str] | None = None, skip_neural: bool = False) -> list[dict]:
    """The verify registry (every case, or those matching `cases`) as rows, without running anything."""
    from .verify import plan

    chosen = plan(corpus=corpus, reference=reference, names=cases, skip_neural=skip_neural, listing=True)
    return [c.describe() for c in chosen.cases]


def mix(runs: list[str | Path], output: str | Path, *, device: str = "cpu", force: bool = False,
        log: Log = quiet) -> Path:
    """Linear interpolation of comparable runs (any families), weights fitted by EM on their valid file;
    writes a run folder that score, generate and compare read like any other (see lmkit.mixing)."""
    from .mixing import build_mixture

    return build_mixture(runs, output, device=device, force=force, log=log)


# -- generation and BLEU ----------------------------------------------------------------------------


# -- comparing and plotting -------------------------------------------------------------------------
def compare_text(models: list[str | Path], text: str | Path, *, sort: str | None = None,
                 device: str = "auto") -> list[dict]:
    """Rows for run folders, ARPA files and hf:FOLDER pretrained models scored now on one text, ranked by bits
    per byte (their tokenisations may differ; lmkit.compare.rows_on_text)."""
    from .compare import rows_on_text
    from .pipeline.use import score_many

    if not models:
        raise UsageError("compare --text needs the models to score: run folders, ARPA files or hf:FOLDER")
    return rows_on_text(score_many(models, [text], device=device), sort)


def compare(
    runs: list[str | Path] | None = None,
    *,
    corpus: str | Path | None = None,
    models: list[str] | None = None,
    time_budget: str | float | None = None,
    max_tokens: int | None = None,
    context: str | None = None,
    min_count: int | None = None,
    sort: str | None = None,
    runs_dir: str | Path | None = None,
    device: str | None = None,
    seed: int = 0,
    task: str | None = None,
    src: str | None = None,
    tgt: str | None = None,
    log: Log = quiet,
    progress: bool = False,
    bleu: bool = False,
    bootstrap: int | None = None,
    confidence: float | None = None,
    seeds: int | None = None,
    beam: int | None = None,
    length_penalty: float = 0.0,
) -> list[dict]:
    """Rows comparing existing run folders, or (no runs) a lineup trained here on one corpus.

    No runs and no corpus means the default lineup on the bundled corpus (see lmkit.lineup).
    `bleu` adds continuation BLEU on each run's own test file (translation runs already have BLEU),
    stored in the run records so that it is computed once.
    `bootstrap` N adds paired-bootstrap intervals at `confidence` (default 0.95) from each run's stored
    per-sequence test scores (resampling seeded by `seed`; no model is rescored).
    `seeds` K (lineup only) trains each neural model K times, seeds seed..seed+K-1, within the same total
    time budget, and gives one row per model: means over seeds plus sd columns (lmkit.compare.compare_seeded).
    `beam` N (translation runs) adds beam-search BLEU of that width (`length_penalty` as `lmkit bleu`), decoded
    once and stored in each run record."""
    from .lineup import compare as compare_or_train

    return compare_or_train(runs, corpus=corpus, models=models, time_budget=time_budget, max_tokens=max_tokens,
                            context=context, min_count=min_count, sort=sort, runs_dir=runs_dir, device=device,
                            seed=seed, task=task, src=src, tgt=tgt, log=log, progress=progress, bleu=bleu,
                            bootstrap=bootstrap, confidence=confidence, seeds=seeds, beam=beam,
                            length_penalty=length_penalty)


def plot(runs: list[str | Path], output: str | Path, log: Log = quiet) -> Path:
    """Learning curves (valid perplexity vs tokens seen and vs time) of comparable runs as an image."""
    from .plot import plot_runs

    check_output_file(output, inputs=runs, run_folders=[r for r in runs if Path(r).is_dir()])
    return plot_runs(runs, output, log=log)


def report(runs: list[str | Path], output: str | Path, *, bootstrap: int | None = None,
           confidence: float | None = None, seed: int = 0, samples: int = 3, analysis: bool = True,
           device: str = "cpu", rows: list[dict] | None = None, command: list[str] | None = None,
           log: Log = quiet) -> Path:
    """One self-contained HTML page of comparable runs (lmkit.report): the compare table (same rows and refusals),
    protocol, curves, intervals (`bootstrap` N), where each model wins, samples, costs, checks and provenance.
    `rows`: a comparison already made (compare --report), else made here."""
    from .report import ReportOptions, write_report

    options = ReportOptions(bootstrap=bootstrap, confidence=confidence, seed=seed, samples=samples,
                            analysis=analysis, device=device)
    return write_report(runs, output, options, rows=rows, command=command, log=log)


def analyze(runs: list[str | Path], by: str | list[str] | None = None, *, order: int = 3,
            text: str | Path | None = None, train: str | Path | None = None, device: str = "cpu",
            log: Log = quiet):
    """Where each family wins: per-token NLL of comparable runs on their test file (or `text`), bucketed by
    train frequency of the (order-1)-token history, line length and OOV (lmkit.analyze.Analysis).

    Refused unless the runs share protocol, vocabulary and test file; the frequencies are counted in
    the recorded train file (refused if missing or changed) or in `train`."""
    from .analyze import analyze_runs

    return analyze_runs(runs, by, order=order, text=text, train=train, device=device, log=log)


def curve(corpus: str | Path | None = None, models: list[str] | None = None,
          fractions: str | list[float] | None = None, *, time_budget: str | float | None = None,
          max_tokens: int | None = None, epochs: float | None = None, context: str | None = None,
          level: str = "word", min_count: int | None = None, sets: list[str] | None = None,
          device: str | None = None, seed: int = 0, runs_dir: str | Path | None = None,
          image: str | Path | None = None, log: Log = quiet, progress: bool = False) -> list[dict]:
    """Learning curves: each model trained on nested fractions of the train split (one vocabulary from the
    full split, one protocol), scored on the full test split; one row per (model, fraction), optionally
    drawn into `image` (test perplexity vs training tokens). See lmkit.curve."""
    from .curve import learning_curve

    if image is not None:
        check_output_file(image)
    return learning_curve(corpus, models, fractions, time_budget=time_budget, max_tokens=max_tokens,
                          epochs=epochs, context=context, level=level, min_count=min_count, sets=list(sets or ()),
                          device=device, seed=seed, runs_dir=runs_dir, image=image, log=log, progress=progress)


# -- corpora: registry, downloads, splitting (lmkit.datasets) ---------------------------------------
def corpus_list() -> list[dict]:
    """One row per known corpus: name, sizes, how downloads are checked, licence, source, cached folder."""
    from .datasets.registry import CORPORA
    from .datasets.store import DamagedCorpus, cached_path

    rows = []
    for corpus in CORPORA.values():
        try:
            cached, damaged = cached_path(corpus.name), False
        except DamagedCorpus:  # listed as not cached: `lmkit corpus download NAME` fetches it again
            cached, damaged = None, True
        rows.append({"damaged": damaged, "name": corpus.name, "layout": corpus.layout,
                     "download_bytes": corpus.download_size,
                     "size_bytes": corpus.unpacked_size, "size_exact": corpus.size_exact,
                     "checksum": corpus.verified, "licence": corpus.licence, "origin": corpus.origin,
                     "source": corpus.source, "cached": cached is not None,
                     "path": str(cached) if cached else None, "description": corpus.description})
    return rows


def corpus_download(name: str, *, offline: bool | None = None, force: bool = False, mirror: str | None = None,
                    timeout: float | None = None, log: Log = quiet, progress: bool = False) -> Path:
    """Download, verify and unpack a known corpus into the cache (lmkit.cache.cache_dir('corpora'));
    its folder. Offline (`offline` or env LMKIT_OFFLINE=1) never connects: fine when cached, else
    DataError. `mirror` (or env LMKIT_CORPUS_MIRROR) fetches `<mirror>/<name>/<file>` instead of upstream."""
    from .datasets.download import DEFAULT_TIMEOUT
    from .datasets.registry import get
    from .datasets.store import install

    if timeout is not None and not timeout > 0:
        raise UsageError(f"--timeout must be a positive number of seconds, got {timeout}")
    return install(get(name), offline=offline, force=force, mirror=mirror, timeout=timeout or DEFAULT_TIMEOUT,
                   log=log, progress=progress)


def corpus_path(name: str) -> Path:
    """The cached folder of a known corpus; DataError (with the download command) when not downloaded."""
    from .datasets.registry import get
    from .datasets.store import cached_path

    corpus = get(name)
    folder = cached_path(corpus.name)
    if folder is None:
        raise DataError(f"corpus {name} is not downloaded yet; run `lmkit corpus download {name}`")
    return folder


def corpus_split(source: str | Path, output: str | Path, ratios: str = "98/1/1", *, by: str = "contiguous",
                 seed: int = 0, force: bool = False) -> list[dict]:
    """Split one raw text file into `output`/train.txt, valid.txt, test.txt (lmkit.datasets.split); one row
    per split with its lines and whitespace tokens. Deterministic; the folder is written atomically."""
    from .datasets.split import split_file

    return split_file(source, output, ratios, by=by, seed=seed, force=force)
