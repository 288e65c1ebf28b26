"""Learning curves: valid perplexity against tokens seen and against training time, one line per run.

Curves come from each run's metrics.jsonl; runs are checked like `compare` (same protocol, vocabulary and
valid file) because curves side by side are a comparison too. matplotlib is an optional extra, imported
only here, and drawn with the non-interactive Agg canvas (no display, no global pyplot state)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from .atomic import atomic_open
from .compare import check_comparable, read_runs
from .errors import ModelError, UsageError
from .runs import METRICS_FILE
from .logs import Log

FORMATS = ("png", "svg", "pdf")


def read_curve(run_dir: str | Path) -> list[dict]:
    """The rows of metrics.jsonl that carry a finite valid perplexity."""
    path = Path(run_dir) / METRICS_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ModelError(f"{run_dir}: no {METRICS_FILE} (no learning curve recorded)") from None
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise ModelError(f"{path}:{n}: damaged line (not valid JSON)") from None
        if isinstance(row, dict) and "schema" in row:
            from .artifacts import check_version
            from .runs import SCHEMA

            check_version(f"{path}:{n}", "learning-curve row", row["schema"], SCHEMA)
        if isinstance(row, dict) and isinstance(row.get("valid_ppl"), (int, float)):
            rows.append(row)
    return rows


def image_format(output: str | Path) -> str:
    """png, svg or pdf from the file name (none, as '-' for stdout: png); checked before any work so a typo
    costs nothing."""
    fmt = Path(output).suffix.lstrip(".").lower() or "png"
    if fmt not in FORMATS:
        raise UsageError(f"{output}: the image format follows the file name; use .png, .svg or .pdf")
    return fmt


def require_matplotlib(command: str = "lmkit plot"):
    """(Figure, FigureCanvasAgg, LogFormatter), or one usage error naming the extra to install."""
    try:
        import matplotlib  # noqa: F401  (checked first: a submodule may be cached when the package is gone)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import LogFormatter
    except ImportError:
        raise UsageError(f"{command} needs matplotlib: pip install 'lmkit[plot]'") from None
    return Figure, FigureCanvasAgg, LogFormatter


def plain_log_ticks(axis, LogFormatter) -> None:
    """Plain numbers (150, 200) on a log axis rather than 1.5x10^2."""
    axis.set_major_formatter(LogFormatter(labelOnlyBase=False))
    axis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def save_figure(fig, output: str | Path) -> Path:
    """Write the figure atomically in the format its file name asks for; '-' writes a PNG to stdout."""
    if str(output) == "-":
        import io
        import sys

        buf = io.BytesIO()
        fig.savefig(buf, format="png")  # complete before the first byte goes out
        sys.stdout.buffer.write(buf.getvalue())
        sys.stdout.buffer.flush()
        return Path(output)
    output = Path(output)
    with atomic_open(output, "wb") as fh:
        fig.savefig(fh, format=image_format(output))
    return output


def plot_runs(paths: Sequence[str | Path], output_png: str | Path, log: Log = lambda _: None) -> Path:
    """Draw valid perplexity vs tokens seen and vs wall time for comparable runs; write the image atomically."""
    image_format(output_png)
    Figure, FigureCanvasAgg, LogFormatter = require_matplotlib()
    runs = read_runs(paths)
    check_comparable(runs, aspects=("protocol", "vocabulary", "valid"))
    labels = [record.label for _, record in runs]
    curves = []
    for path, record in runs:
        rows = read_curve(path)
        if rows:  # the folder name tells apart two runs of the same model
            curves.append((record.label if labels.count(record.label) == 1 else f"{record.label} ({path})", rows))
        else:
            log(f"{path}: no valid perplexity in {METRICS_FILE}; left out of the plot")
    if not curves:
        raise ModelError("none of the runs has a valid-perplexity curve to plot")

    fig = Figure(figsize=(11, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    by_tokens, by_time = fig.subplots(1, 2, sharey=True)
    for label, rows in curves:
        ppl = [r["valid_ppl"] for r in rows]
        style = {"marker": "o", "markersize": 3 if len(rows) > 1 else 6, "label": label}
        by_tokens.plot([r.get("tokens_seen", 0) for r in rows], ppl, **style)
        by_time.plot([r.get("seconds", 0.0) for r in rows], ppl, **style)
    by_tokens.set(xlabel="training tokens seen", ylabel="valid perplexity", yscale="log")
    by_time.set(xlabel="training time (s)")
    for ax in (by_tokens, by_time):
        ax.grid(True, which="both", alpha=0.3)
    plain_log_ticks(by_tokens.yaxis, LogFormatter)
    by_time.legend(fontsize="small")
    protocol = runs[0][1].protocol
    fig.suptitle(f"valid perplexity ({protocol.get('level')} level, {protocol.get('context')} context)")
    return save_figure(fig, output_png)
