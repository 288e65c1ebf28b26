"""Output writers: stdout carries data (table/tsv/csv/json/jsonl/markdown), stderr carries people-talk."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from typing import Any

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


def write_rows(rows: list[dict], fmt: str | None = None, *, columns: list[str] | None = None,
               title: str | None = None, out=None, highlight: dict[str, int] | None = None) -> None:
    """Write a list of records in `fmt`; `highlight` maps column -> row index to emphasise (table only)."""
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
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for c in cols:
            table.add_column(c, overflow="fold")
        for i, r in enumerate(rows):
            cells = []
            for c in cols:
                text = _cell(r.get(c))
                if highlight and highlight.get(c) == i:
                    text = f"[bold green]{text}[/]"
                cells.append(text)
            table.add_row(*cells)
        Console(file=out, no_color="NO_COLOR" in os.environ).print(table)
    else:
        raise ValueError(f"unknown format {fmt!r}")


def write_record(record: dict, fmt: str | None = None, *, title: str | None = None, out=None) -> None:
    """One object: JSON object for json/jsonl, a key/value table for `table`, one header+row otherwise."""
    out = out or sys.stdout
    fmt = default_format(fmt)
    if fmt in ("json", "jsonl"):
        indent = 1 if fmt == "json" else None
        out.write(json.dumps(json_record(record), ensure_ascii=False, indent=indent) + "\n")
    elif fmt == "table":
        rows = [{"key": k, "value": v} for k, v in record.items()]
        write_rows(rows, "table", title=title, out=out)
    else:
        write_rows([record], fmt, out=out)


class Messages:
    """People-talk on stderr: progress, warnings, hints. `-q` silences all but warnings."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet

    def info(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    def warn(self, text: str) -> None:
        print(f"warning: {text}", file=sys.stderr, flush=True)

