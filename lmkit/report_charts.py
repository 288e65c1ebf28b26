"""The charts of `lmkit report` as inline SVG, drawn by matplotlib.

Why matplotlib: it is the field's well-kept plotting library (lmkit plot already uses it), and its SVG is
static: it renders with JavaScript off, prints, and needs nothing from the network. Each chart is one <svg>
element whose series carry ids `series-<chart>-<n>`, so a reader (or a browser test) can count them. Text stays
text (`svg.fonttype: none`), backgrounds are transparent and the greys are mid-tone, so one drawing reads on a
light page and a dark one; ids inside each drawing are salted with the chart's name, so several charts never
share an id on one page.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from typing import Sequence

from .plot import plain_log_ticks, require_matplotlib

INK = "#808080"  # axes, ticks and labels: readable on white and on near-black
STYLE = {"svg.fonttype": "none", "font.size": 10, "text.color": INK, "axes.labelcolor": INK, "axes.edgecolor": INK,
         "xtick.color": INK, "ytick.color": INK, "axes.facecolor": "none", "figure.facecolor": "none",
         "savefig.transparent": True, "legend.frameon": False}


@dataclass
class Chart:
    """One drawing: its name (an HTML id), title, the SVG text and how many series it holds."""

    name: str
    title: str
    svg: str
    series: int


@dataclass
class Curve:
    """One model's valid perplexity at each evaluation, against tokens seen and against seconds."""

    label: str
    tokens: list[float]
    seconds: list[float]
    ppl: list[float]


def _draw(name: str, title: str, draw, size: tuple[float, float] = (7.5, 3.6)) -> Chart:
    """Run `draw(fig)` (it returns how many series it drew) on a fresh figure and keep the SVG text."""
    import matplotlib

    Figure, FigureCanvasAgg, _ = require_matplotlib("lmkit report")
    with matplotlib.rc_context({**STYLE, "svg.hashsalt": name}):
        fig = Figure(figsize=size, layout="constrained")
        FigureCanvasAgg(fig)
        series = draw(fig)
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]  # inline: no XML declaration or DOCTYPE
    svg = re.sub(r'\s(width|height)="[\d.]+pt"', "", svg, count=2)  # scales with the page (viewBox kept)
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)  # the RDF block: addresses, no drawing
    return Chart(name, title, _own_ids(svg, name), series)


def _own_ids(svg: str, name: str) -> str:
    """matplotlib numbers its ids per drawing (figure_1, axes_1, clip paths, markers): prefix each with the chart's
    name, references included, so that several drawings on one page never share an id."""
    ids = {i for i in re.findall(r'\sid="([^"]+)"', svg) if not i.startswith("series-")}
    if not ids:
        return svg
    svg = re.sub(r'(\sid=")([^"]+)"', lambda m: f'{m[1]}{name}-{m[2]}"' if m[2] in ids else m[0], svg)
    return re.sub(r'(url\(#|href="#)([^)"]+)', lambda m: f"{m[1]}{name}-{m[2]}" if m[2] in ids else m[0], svg)


PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")  # matplotlib's tab10


def colours(names: Sequence[str]) -> dict[str, str]:
    """One colour per model for every chart of a page, in table order."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def _short(value: float, _position=None) -> str:
    """A tick label people read at a glance: 4, 30, 200k, 1.2M."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{suffix}"
    return f"{value:g}"


def _plain_x(ax) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.xaxis.set_major_formatter(FuncFormatter(_short))
    ax.xaxis.set_minor_locator(LogLocator(subs=(2, 5)))
    ax.xaxis.set_minor_formatter(FuncFormatter(_short))


def _series(artist, chart: str, n: int) -> None:
    """Mark series n of a chart: a line, or each bar of a bar series (ids series-<chart>-<n>[-<bar>])."""
    patches = getattr(artist, "patches", None)
    if patches is None:
        artist.set_gid(f"series-{chart}-{n}")
    for i, patch in enumerate(patches or []):
        patch.set_gid(f"series-{chart}-{n}-{i}")


def curves_chart(name: str, curves: Sequence[Curve], by: str, colour: dict[str, str]) -> Chart:
    """Valid perplexity against tokens seen (`by` 'tokens') or training seconds ('seconds'), log axes."""
    from matplotlib.ticker import LogFormatter

    def draw(fig) -> int:
        ax = fig.subplots()
        for n, c in enumerate(curves):
            xs = c.tokens if by == "tokens" else c.seconds
            (line,) = ax.plot(xs, c.ppl, marker="o", markersize=3 if len(xs) > 1 else 6, label=c.label,
                              color=colour.get(c.label))
            _series(line, name, n)
        ax.set(xscale="log", yscale="log", ylabel="valid perplexity",
               xlabel="training tokens seen" if by == "tokens" else "training time (s)")
        ax.grid(True, which="both", alpha=0.25)
        plain_log_ticks(ax.yaxis, LogFormatter)
        _plain_x(ax)
        ax.legend(fontsize="small", loc="upper right")
        return len(curves)

    title = "valid perplexity against tokens seen" if by == "tokens" else "valid perplexity against training time"
    return _draw(name, title, draw)


def learning_curve_chart(name: str, rows: Sequence[dict]) -> Chart:
    """Test perplexity against training tokens (log-log), one line per model (the rows of lmkit curve)."""
    from matplotlib.ticker import LogFormatter

    models = list(dict.fromkeys(r["model"] for r in rows))

    def draw(fig) -> int:
        ax = fig.subplots()
        for n, model in enumerate(models):
            points = sorted((r["train_tokens"], r["test_ppl"]) for r in rows
                            if r["model"] == model and r.get("test_ppl") is not None)
            (line,) = ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=model)
            _series(line, name, n)
        ax.set(xscale="log", yscale="log", xlabel="training tokens", ylabel="test perplexity")
        ax.grid(True, which="both", alpha=0.25)
        plain_log_ticks(ax.yaxis, LogFormatter)
        _plain_x(ax)
        ax.legend(fontsize="small")
        return len(models)

    return _draw(name, "learning curve: test perplexity against training tokens", draw)


def intervals_chart(name: str, rows: Sequence[dict], confidence: float, colour: dict[str, str]) -> Chart:
    """Test perplexity per model with its paired-bootstrap interval as an error bar."""
    shown = [r for r in rows if r.get("test_ppl") is not None and r.get("test_ppl_lo") is not None]

    def draw(fig) -> int:
        ax = fig.subplots()
        ys = list(range(len(shown)))[::-1]
        for n, (y, r) in enumerate(zip(ys, shown)):
            # the interval from its ends (with few resamples it need not contain the estimate), then the estimate
            (interval,) = ax.plot([r["test_ppl_lo"], r["test_ppl_hi"]], [y, y], marker="|", markersize=12,
                                  color=colour.get(r["model"]), label=r["model"])
            ax.plot([r["test_ppl"]], [y], "o", color=colour.get(r["model"]))
            _series(interval, name, n)
        ax.set_yticks(ys, [r["model"] for r in shown])
        ax.set(xlabel=f"test perplexity ({confidence:.0%} paired-bootstrap interval)")
        ax.grid(True, axis="x", alpha=0.25)
        return len(shown)

    return _draw(name, "test perplexity with bootstrap intervals", draw, size=(7.5, 0.5 + 0.45 * max(len(shown), 2)))


def buckets_chart(name: str, title: str, buckets: Sequence[dict], models: Sequence[str],
                  colour: dict[str, str]) -> Chart:
    """Grouped bars: per bucket of one analyze breakdown, each model's perplexity (log axis); empty buckets
    and the total are left out."""
    shown = [b for b in buckets if b["bucket"] != "total" and b["tokens"]]

    def draw(fig) -> int:
        ax = fig.subplots()
        width = 0.8 / max(len(models), 1)
        for n, model in enumerate(models):
            values = [b["models"][model]["perplexity"] for b in shown]
            values = [v if v is not None and math.isfinite(v) else float("nan") for v in values]
            bars = ax.bar([i + (n - (len(models) - 1) / 2) * width for i in range(len(shown))], values, width,
                          label=model, color=colour.get(model))
            _series(bars, name, n)
        ax.set_xticks(range(len(shown)), [f"{b['bucket']}\n{b['share']:.0%} of tokens" for b in shown])
        ax.set(yscale="log", ylabel="perplexity in the bucket")
        ax.grid(True, axis="y", which="both", alpha=0.25)
        ax.legend(fontsize="small", ncols=min(len(models), 6), loc="lower left", bbox_to_anchor=(0, 1.0))  # above
        return len(models)

    return _draw(name, title, draw)
