"""Output writers: stdout carries data (table/tsv/csv/json/jsonl/markdown), stderr carries people-talk."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import sys
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Sequence

FORMATS = ("table", "tsv", "csv", "json", "jsonl", "markdown")


def default_format(fmt: str | None) -> str:
    """`table` on a terminal, `tsv` in a pipe (never a rich table into a pipe)."""
    if fmt:
        return fmt
    return "table" if sys.stdout.isatty() else "tsv"


def clean(value: Any) -> Any:
    """JSON has no Infinity/NaN: non-finite floats become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def _has_nonfinite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_nonfinite(v) for v in value.values())
    return False


def json_record(row: dict) -> dict:
    """A record with non-finite numbers nulled and flagged `finite: false`."""
    out = clean(row)
    if _has_nonfinite(row):
        out["finite"] = False
    return out


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.6g}" if abs(value) < 1e6 else f"{value:.1f}"
    if isinstance(value, (dict, list)):
        return json.dumps(clean(value), ensure_ascii=False)
    return str(value)


def _columns(rows: list[dict], columns: list[str] | None) -> list[str]:
    if columns:
        return columns
    cols: list[str] = []
    for row in rows:
        for k in row:
            if k not in cols:
                cols.append(k)
    return cols


def _reader_gone() -> None:
    raise BrokenPipeError("stdout's reader closed the pipe")


def write_rows(rows: list[dict], fmt: str | None = None, *, columns: list[str] | None = None,
               title: str | None = None, out=None, highlight: dict[str, int] | None = None,
               wide: bool | None = None, keep: Sequence[str] | None = None) -> None:
    """Write a list of records in `fmt`; `highlight` maps column -> row index to emphasise (table only).

    `wide` (table only): True shows every column however wide; False (the command has --wide) or None
    (it has not) fit the table to the terminal, leaving out numeric columns from the right, those in `keep`
    (default: the highlighted ones) last (see fit_columns)."""
    out = out or sys.stdout
    fmt = default_format(fmt)
    cols = _columns(rows, columns)
    if fmt == "json":
        out.write(json.dumps([json_record(r) for r in rows], ensure_ascii=False, indent=1) + "\n")
    elif fmt == "jsonl":
        for r in rows:
            out.write(json.dumps(json_record(r), ensure_ascii=False) + "\n")
    elif fmt in ("tsv", "csv"):
        buf = io.StringIO()
        w = csv.writer(buf, delimiter="\t" if fmt == "tsv" else ",", lineterminator="\n",
                       quoting=csv.QUOTE_MINIMAL if fmt == "csv" else csv.QUOTE_NONE,
                       escapechar="\\" if fmt == "tsv" else None)
        w.writerow(cols)
        for r in rows:
            w.writerow([_cell(r.get(c)) for c in cols])
        out.write(buf.getvalue())
    elif fmt == "markdown":
        out.write("| " + " | ".join(cols) + " |\n")
        out.write("|" + "|".join(" --- " for _ in cols) + "|\n")
        for r in rows:
            out.write("| " + " | ".join(_cell(r.get(c)).replace("|", "\\|") for c in cols) + " |\n")
    elif fmt == "table":
        write_table(rows, cols, title=title, out=out, highlight=highlight, wide=wide,
                    keep=list(highlight or ()) if keep is None else keep)
    else:
        raise ValueError(f"unknown format {fmt!r}")


# -- tables for people: fitted to the terminal, numbers never split across lines ----------------------
NUMBER = re.compile(r"[-+]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?%?|[-+]?(?:nan|inf)", re.I)
NUMBER_MARKS = ("±", "-", "–", "/")  # between the numbers of one cell: `131.77 ± 1.20`, `[118.2, 120.9]`


def is_number(text: str) -> bool:
    """A cell made of numbers (`2,594,998`, `1.3e-12`, `131.77 ± 1.20`, `[1.5, 2]`): never wrapped."""
    words = [w.strip("[](),;") for w in text.split()]
    return any(NUMBER.fullmatch(w) for w in words) and all(
        NUMBER.fullmatch(w) or w in NUMBER_MARKS or not w for w in words)


def header_pieces(header: str) -> list[str]:
    """Where a header may break: at spaces and after '/' (`bits/token` -> `bits/` `token`)."""
    return re.findall(r"[^ /]+/?|/", header)


def wrap_header(header: str, width: int) -> str:
    """The header on as few lines of `width` as its pieces allow (rich itself breaks only at spaces)."""
    lines: list[str] = []
    for piece in header_pieces(header):
        joined = lines[-1] + ("" if lines[-1].endswith("/") else " ") + piece if lines else piece
        if lines and len(joined) <= width:
            lines[-1] = joined
        else:
            lines.append(piece)
    return "\n".join(lines)


@dataclass(eq=False)
class TableColumn:
    """One column's text and the widths it can take: `natural` on one line, `minimum` without breaking a
    number (a numeric column's whole cells) or a word (other columns wrap at spaces)."""

    header: str
    cells: list[str]

    @cached_property
    def numeric(self) -> bool:
        filled = [c for c in self.cells if c]
        return bool(filled) and all(is_number(c) for c in filled)

    @cached_property
    def natural(self) -> int:
        from rich.cells import cell_len

        return max([cell_len(self.header)] + [cell_len(c) for c in self.cells])

    @cached_property
    def minimum(self) -> int:
        """No word folds (a numeric column: no cell wraps)."""
        from rich.cells import cell_len

        pieces = [p.rstrip() for p in header_pieces(self.header)] or [""]
        words = self.cells if self.numeric else [w for c in self.cells for w in c.split()]
        return max(cell_len(w) for w in pieces + words)

    @cached_property
    def number_width(self) -> int:
        """The longest number in the column's text: never folded."""
        return max([0] + [len(w) for c in self.cells for w in c.split() if is_number(w)])

    def squeezed(self, longest_word: int) -> int:
        """Narrower: words longer than `longest_word` (paths, hashes) fold; a number never does."""
        return self.minimum if self.numeric else max(min(self.minimum, longest_word), self.number_width)


def water_fill(floor: list[int], target: list[int], budget: int) -> list[int]:
    """Widths from `floor` towards `target` sharing `budget` fairly: the smallest needs are met first."""
    widths, spare = list(floor), budget - sum(floor)
    needs = sorted(range(len(widths)), key=lambda i: target[i] - floor[i])
    for left, i in zip(range(len(needs), 0, -1), needs):
        give = max(0, min(target[i] - floor[i], spare // left))
        widths[i] += give
        spare -= give
    return widths


LONG_WORD = 16  # a word longer than this (a path, a hash) folds before a column of numbers is left out


def fit_columns(columns: list[TableColumn], width: int, drop: bool = True,
                keep: Sequence[str] = ()) -> tuple[list[TableColumn], list[int]]:
    """The columns shown in `width` terminal cells and their content widths.

    Each column gets its minimum (no word folded) and a fair share of the rest, up to one line per cell;
    if the minimums do not fit, words longer than LONG_WORD fold. If that does not fit either, a numeric
    column is left out (`drop`) and the fit tried again: the rightmost one after the first, those named in
    `keep` (a table's most telling columns, the most telling first) last. A table that still does not fit
    folds any word of its text columns; a number is never folded."""
    shown = list(columns)
    while True:
        budget = width - 3 * len(shown) - 1  # a border per column and one more, one space of padding each side
        natural = [c.natural for c in shown]
        for floor in ([c.minimum for c in shown], [c.squeezed(LONG_WORD) for c in shown]):
            if sum(floor) <= budget:
                return shown, water_fill(floor, natural, budget)
        victims = [c for c in shown[1:] if c.numeric]
        if not drop or not victims:
            return shown, water_fill([c.squeezed(4) for c in shown], natural, budget)
        unnamed = [c for c in victims if c.header not in keep]
        shown.remove(unnamed[-1] if unnamed else max(victims, key=lambda c: list(keep).index(c.header)))


def write_table(rows: list[dict], cols: list[str], *, title: str | None = None, out=None,
                highlight: dict[str, int] | None = None, wide: bool | None = None, drop: bool = True,
                keep: Sequence[str] = ()) -> None:
    """A rich table of `rows` fitted to the terminal width (COLUMNS in a pipe, else 80) unless `wide`."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    out = out or sys.stdout
    console = Console(file=out, no_color="NO_COLOR" in os.environ)
    console.on_broken_pipe = _reader_gone  # rich would exit 1 itself; the CLI's one handler ends quietly
    columns = [TableColumn(c, [_cell(r.get(c)) for r in rows]) for c in cols]
    if wide:
        shown, widths = columns, [c.natural for c in columns]
        console.width = max(console.width, sum(widths) + 3 * len(widths) + 1)
    else:
        shown, widths = fit_columns(columns, console.width, drop=drop, keep=keep)
    hidden = [c.header for c in columns if c not in shown]
    caption = None
    if hidden:
        how = "--wide shows them" if wide is False else "--format tsv shows them"
        caption = f"{len(hidden)} more column{'s' if len(hidden) > 1 else ''}: {', '.join(hidden)} ({how})"
    table = Table(title=title, caption=caption)
    for column, w in zip(shown, widths):
        table.add_column(wrap_header(column.header, w), width=w, no_wrap=column.numeric, overflow="fold")
    for i in range(len(rows)):
        marked = {c.header: "bold green" for c in shown if highlight and highlight.get(c.header) == i}
        table.add_row(*(Text(c.cells[i], style=marked.get(c.header, "")) for c in shown))
    console.print(table)


def write_record(record: dict, fmt: str | None = None, *, title: str | None = None, out=None) -> None:
    """One object: JSON object for json/jsonl, a key/value table for `table`, one header+row otherwise."""
    out = out or sys.stdout
    fmt = default_format(fmt)
    if fmt in ("json", "jsonl"):
        indent = 1 if fmt == "json" else None
        out.write(json.dumps(json_record(record), ensure_ascii=False, indent=indent) + "\n")
    elif fmt == "table":
        rows = [{"key": k, "value": v} for k, v in record.items()]
        write_table(rows, ["key", "value"], title=title, out=out, drop=False)
    else:
        write_rows([record], fmt, out=out)


class Messages:
    """People-talk on stderr: progress, warnings, hints. `-q` silences all but warnings."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet

    def info(self, text: str) -> None:
        from .logs import say  # through the command's progress reporter: a live bar, or JSON lines

        if not self.quiet:
            say(text)

    def warn(self, text: str) -> None:
        from .logs import say

        say(f"warning: {text}")

