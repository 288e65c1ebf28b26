"""`lmkit report`: one self-contained HTML page of a comparison, from the run folders alone (no retraining).

The page holds what `lmkit compare` prints (the same rows, columns and refusals: the rows come from
compare.compare_runs), the protocol and vocabulary the runs share, their learning curves, bootstrap intervals
when asked, where each family wins (`lmkit analyze`), a few generated samples (fixed seed, the same prompts for
every model) or, for translation runs, source / reference / hypothesis triples, the cost of each run, the
sacrebleu signature, each run's check status, and the versions, command lines and hardware behind the numbers.

The content is gathered here as plain data; the page is drawn by a Jinja2 template (templates/report.html.j2),
the charts by matplotlib as inline SVG (report_charts.py). Nothing in the page reaches the network.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from . import __version__
from .compare import DEFAULT_CONFIDENCE, TABLE_VIEW, best_cells, cell_text, compare_runs, read_runs, shown_column
from .curve import CURVE_FILE
from .errors import LmkitError, UsageError
from .logs import Log
from .plot import read_curve
from .report_charts import Chart, Curve, buckets_chart, colours, curves_chart, intervals_chart, learning_curve_chart
from .runs import RunRecord, run_folders

SAMPLE_WORDS = 3  # a sample's prompt: the first words of a test line
SAMPLE_TOKENS = 20  # tokens generated per sample
MAX_SAMPLES = 50  # prompts per model: a page, not a corpus
TRIPLES = 4  # translation runs: source / reference / hypothesis triples per model
HIDDEN_COLUMNS = ("run",)  # in the per-model sections instead (a path is long)


@dataclass
class ReportOptions:
    """What the page holds beyond the table: intervals, samples, the analysis, where models run."""

    bootstrap: int | None = None
    confidence: float | None = None
    seed: int = 0
    samples: int = 3  # prompts per model (0: none)
    analysis: bool = True
    device: str = "cpu"

    def check(self) -> None:
        """Refuse bad options before any work (the bootstrap's are checked with the comparison)."""
        from .validate import check_device_name, check_seed

        check_seed(self.seed)
        check_device_name(self.device)
        if not 0 <= self.samples <= MAX_SAMPLES:
            raise UsageError(f"--samples must be from 0 to {MAX_SAMPLES} prompts per model, got {self.samples}")


@dataclass
class Section:
    """A part of the page that may be missing for a stated reason (n-gram runs have no curves, ...)."""

    charts: list[Chart] = field(default_factory=list)
    note: str | None = None


# -- the table ------------------------------------------------------------------------------------------
def _slug(text: str, i: int) -> str:
    return f"model-{i + 1}-" + (re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "run")


def table(rows: list[dict]) -> dict:
    """Headers and cells of the comparison: the columns of `lmkit compare --format json` that hold a value (the
    run path goes to the model's section), each cell's exact value (for sorting and for tests) and its rounded
    text."""
    columns = [c for c in (rows[0] if rows else {}) if c not in HIDDEN_COLUMNS and shown_column(rows, c)]
    best = best_cells(rows)
    body = []
    for i, row in enumerate(rows):
        cells = [{"col": c, "text": cell_text(row, c) or "", "value": json.dumps(row[c]),
                  "numeric": isinstance(row[c], (int, float)) and not isinstance(row[c], bool),
                  "best": best.get(c) == i} for c in columns]
        body.append({"anchor": _slug(str(row.get("model")), i), "cells": cells})
    headers = [{"col": c, "label": TABLE_VIEW[c][0] if c in TABLE_VIEW else c.replace("_", " ")} for c in columns]
    return {"headers": headers, "rows": body}


# -- charts ---------------------------------------------------------------------------------------------
def _curves(runs: list[tuple[str, RunRecord]], names: list[str], colour: dict[str, str]) -> Section:
    curves = []
    without = []
    for (path, _), name in zip(runs, names):
        try:
            points = [r for r in read_curve(path) if r.get("step", 0) > 0]
        except LmkitError:
            points = []
        if points:
            curves.append(Curve(name, [r.get("tokens_seen", 0) for r in points],
                                [r.get("seconds", 0.0) for r in points], [r["valid_ppl"] for r in points]))
        else:
            without.append(name)
    note = (f"No learning curve for {', '.join(without)}: n-gram, mixture and ARPA runs are fitted in one pass "
            "and have no validation curve." if without else None)
    if not curves:
        return Section([], note or "No run has a validation curve.")
    return Section([curves_chart("curve-tokens", curves, "tokens", colour),
                    curves_chart("curve-time", curves, "seconds", colour)], note)


def _learning_curve(paths: Sequence[str | Path]) -> Section | None:
    """The learning curve of an `lmkit curve` folder given on the command line (or holding the runs given), if
    any."""
    folders = dict.fromkeys([Path(p) for p in paths] + [Path(p).parent for p in paths])
    for folder in folders:
        file = folder / CURVE_FILE
        if file.is_file():
            try:
                rows = json.loads(file.read_text(encoding="utf-8"))["rows"]
            except (OSError, ValueError, KeyError, TypeError):
                return Section([], f"{file}: damaged, so no learning curve is drawn")
            return Section([learning_curve_chart("learning-curve", rows)])
    return None


def _analysis(paths: list[str], device: str, colour: dict[str, str], log: Log) -> tuple[Section, dict | None]:
    from .analyze import analyze_runs

    try:
        result = analyze_runs(paths, device=device, log=log)
    except LmkitError as exc:
        return Section([], f"Not analysed: {exc.message}"), None
    colour = {name: colour.get(run.label, colour.get(name)) for name, run in zip(result.names, result.runs)}
    charts = [buckets_chart(f"buckets-{d}", result.title(d), result.buckets(d), result.names, colour)
              for d in result.dimensions if d != "oov" or result.text["oov"]]
    tables = [{"title": result.title(d), "rows": result.display_rows(d)} for d in result.dimensions]
    return Section(charts), {"tables": tables, "tokens": result.text["tokens"]}


# -- per model ------------------------------------------------------------------------------------------
@dataclass
class Prompts:
    """What every model is asked to continue: the first words of the first test lines, or, for translation runs,
    the first source sentences (with their references). Read once: every run shares the test file."""

    texts: list[str]
    references: list[str]
    translate: bool
    note: str | None = None  # why there are none


def _prompts(path: str, record: RunRecord, samples: int) -> Prompts:
    from .data.corpus import ParallelText, read_recorded

    translate = record.protocol.get("task") == "translate"
    count = TRIPLES if translate else samples
    if not count:
        return Prompts([], [], translate)
    try:
        text = read_recorded(record.data.get("test") or {}, path, "test")
    except LmkitError as exc:
        return Prompts([], [], translate, f"No samples: {exc.message}")
    if isinstance(text, ParallelText):
        pairs = [(s, t) for s, t in zip(text.source.lines, text.target.lines) if s.strip() and t.strip()][:count]
        return Prompts([s for s, _ in pairs], [t for _, t in pairs], translate)
    lines = [ln for ln in text.lines if ln.strip()][:count]
    return Prompts([" ".join(ln.split()[:SAMPLE_WORDS]) for ln in lines], [], translate)


def _samples(path: str, prompts: Prompts, options: ReportOptions) -> dict:
    """Generated text of one model: sampled continuations of the shared prompts (seeded), or greedy
    translations of the first test sources beside their references."""
    from .pipeline.use import generate

    if not prompts.texts:
        return {"entries": [], "note": prompts.note}
    try:
        if prompts.translate:
            out = generate(path, prompts.texts, max_tokens=4 * SAMPLE_TOKENS, device=options.device)
            return {"entries": [{"source": p, "reference": r, "hypothesis": o["continuation"]}
                                for p, r, o in zip(prompts.texts, prompts.references, out.outputs)],
                    "note": None, "translate": True}
        out = generate(path, prompts.texts, max_tokens=SAMPLE_TOKENS, strategy="sample", seed=options.seed,
                       device=options.device)
    except LmkitError as exc:
        return {"entries": [], "note": f"No samples: {exc.message}"}
    return {"entries": [{"prompt": o["prompt"], "text": o["text"]} for o in out.outputs], "note": None}


def _check_status(record: RunRecord) -> str:
    checks = record.checks or {}
    if not checks:
        return "not checked"
    return ("passed" if checks.get("ok") else "FAILED") + (" (quick)" if checks.get("quick") else "")


def _model(path: str, record: RunRecord, row: dict, anchor: str, prompts: Prompts, options: ReportOptions) -> dict:
    results = (record.checks or {}).get("results") or {}
    checks = [{"name": name, "status": (r or {}).get("status")} for name, r in results.items()] \
        if isinstance(results, dict) else []
    return {"anchor": anchor, "name": row.get("model"), "kind": record.kind, "run": path, "row": row,
            "check": _check_status(record), "checks": checks, "config": record.config,
            "train_config": record.train_config, "command": shlex.join(record.command) if record.command else "",
            "device": record.device, "versions": record.versions, "created": record.created, "seed": record.seed,
            "samples": _samples(path, prompts, options)}


# -- the whole page -------------------------------------------------------------------------------------
def _shared(runs: list[tuple[str, RunRecord]]) -> dict:
    """What every run shares: protocol, vocabulary, evaluation files."""
    first = runs[0][1]
    files = {split: {k: v for k, v in info.items() if k in ("path", "source", "target", "sha256", "sequences",
                                                              "tokens")}
             for split, info in first.data.items() if isinstance(info, dict)}
    return {"protocol": first.protocol, "vocab_id": first.vocab_id, "files": files}


def _machine() -> dict:
    return {"lmkit": __version__, "python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "made": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def build_report(paths: Sequence[str | Path], options: ReportOptions | None = None, *,
                 rows: list[dict] | None = None, command: list[str] | None = None,
                 log: Log = lambda _: None) -> dict:
    """Everything the page shows, as plain data (the template's context). `rows`: the comparison already made
    (compare --report passes its own); else it is made here, refused exactly as `lmkit compare` refuses."""
    options = options or ReportOptions()
    options.check()
    if not paths and not rows:
        raise UsageError("give the run folders to report on (a lineup folder stands for its runs)")
    confidence = DEFAULT_CONFIDENCE if options.confidence is None else options.confidence
    if rows is None:
        rows = compare_runs(run_folders(paths, log=log), bootstrap=options.bootstrap, seed=options.seed,
                            confidence=confidence)
    runs = read_runs([r["run"] for r in rows])
    names = [str(r["model"]) for r in rows]
    view = table(rows)
    log(f"report: {len(rows)} runs; drawing charts and generating samples")
    colour = colours(names)
    curves = _curves(runs, names, colour)
    learning = _learning_curve(paths)
    intervals = None
    if any(r.get("test_ppl_lo") is not None for r in rows):
        intervals = Section([intervals_chart("intervals", rows, confidence, colour)])
    analysis, analysis_tables = (_analysis([p for p, _ in runs], options.device, colour, log) if options.analysis
                                 else (Section([], "Not analysed (--no-analysis)."), None))
    prompts = _prompts(*runs[0], options.samples)
    models = [_model(path, record, row, body["anchor"], prompts, options)
              for (path, record), row, body in zip(runs, rows, view["rows"])]
    signatures = sorted({r.get("bleu_signature") for r in rows if r.get("bleu_signature")})
    return {"title": "lmkit report", "table": view, "rows": rows, "shared": _shared(runs), "curves": curves,
            "learning": learning, "intervals": intervals, "bootstrap": options.bootstrap,
            "confidence": confidence, "seed": options.seed, "analysis": analysis,
            "analysis_tables": analysis_tables, "models": models, "signatures": signatures,
            "machine": _machine(), "command": shlex.join(command) if command else None,
            "across_levels": "bits_per_byte" in (rows[0] if rows else {}) and "test_ppl" not in rows[0]}


def render(context: dict) -> str:
    """The page's HTML from its context (templates/report.html.j2; every value escaped except the SVG)."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("lmkit", "templates"), autoescape=select_autoescape(["html", "j2"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["pretty"] = lambda value: json.dumps(value, indent=1, sort_keys=True, default=str)
    return env.get_template("report.html.j2").render(**context)


def check_report_output(output: str | Path, inputs: Sequence[str | Path] = ()) -> Path:
    """Refuse an output the page cannot be written to before any work: a missing folder, a directory, an input."""
    from .validate import check_output_file

    out = Path(output)
    if not out.parent.is_dir():
        raise UsageError(f"-o {out}: the folder {out.parent} does not exist; create it or give another path")
    check_output_file(out, inputs=inputs, run_folders=[p for p in inputs if Path(p).is_dir()])
    return out


def write_report(paths: Sequence[str | Path], output: str | Path, options: ReportOptions | None = None, *,
                 rows: list[dict] | None = None, command: list[str] | None = None,
                 log: Log = lambda _: None) -> Path:
    """Build the page and write it atomically (a temp file renamed over `output`)."""
    from .atomic import atomic_open

    out = check_report_output(output, paths)
    page = render(build_report(paths, options, rows=rows, command=command, log=log))
    with atomic_open(out, "w") as fh:
        fh.write(page)
    return out
