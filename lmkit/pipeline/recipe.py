"""Recipes: `lmkit train` options as a TOML file (`lmkit train --config recipe.toml`), and the recipe.toml every
trained run folder holds, which trains the same model again (docs/guide.md, "Recipes").

A recipe is one flat table: each key is a long flag of `lmkit train` without its dashes (`min-count` or
`min_count`, `warmup`, `set`), each value what the flag takes: a string, integer, float, boolean (for on/off
flags) or, for the repeatable `--set`, a list of strings. Paths are read as on the command line (relative to
the current folder). Flags given on the command line override the file. The standard library reads TOML
(tomllib; tomli on Python 3.10); `dumps` writes the flat tables recipes need."""

from __future__ import annotations

import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Iterable

from ..errors import UsageError
from ..runwriter import RECIPE_FILE
from .request import TrainRequest

__all__ = ["RECIPE_FILE", "dumps", "recipe_defaults", "recipe_text", "request_recipe"]
# request fields -> train flags (resources such as --memory/--tmp/--engine never change the model: not recorded)
REQUEST_FLAGS = {"model": "model", "corpus": "corpus", "train": "train", "valid": "valid", "test": "test",
                 "vocab": "vocab", "level": "level", "lowercase": "lowercase", "normalize": "normalize",
                 "min_count": "min-count", "max_size": "max-size", "context": "context",
                 "keep_blank_lines": "keep-blank-lines", "task": "task", "src": "src", "tgt": "tgt", "seed": "seed"}
# training options (TrainConfig fields) that `lmkit train` takes as flags, and the flag of each
TRAIN_FLAGS = {"epochs": "epochs", "max_tokens": "max-tokens", "time_budget": "time-budget", "optimizer": "optimizer",
               "lr": "lr", "batch_size": "batch-size", "seq_len": "seq-len", "warmup_steps": "warmup",
               "schedule": "schedule", "clip": "clip", "weight_decay": "weight-decay", "eval_every": "eval-every",
               "patience": "patience", "device": "device", "precision": "precision", "compile": "compile",
               "threads": "threads"}
NOT_IN_RECIPES = {"config": "a recipe cannot name another recipe",
                  "resume": "a recipe describes a new run; continue one with `lmkit train --resume RUN`",
                  "help": "not an option"}
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


# -- writing: a small TOML serializer for flat tables ---------------------------------------------------------
def toml_value(value: Any) -> str:
    """One TOML value: str, int, float (inf/nan included), bool, or a list of those."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # the shortest form that reads back as the same float: 3.0, 0.1, 1e-05, 2.5e+16
    if isinstance(value, str):
        return '"' + "".join(_escape(c) for c in value) + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"a recipe value must be a string, number, boolean or list, not {type(value).__name__}")


def _escape(c: str) -> str:
    named = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
    if c in named:
        return named[c]
    return f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c


def toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else toml_value(key)


def dumps(table: dict[str, Any], comment: str = "") -> str:
    """A flat table as TOML text (None values left out), after `comment` lines (each prefixed with '# ')."""
    lines = [f"# {line}".rstrip() for line in comment.splitlines()]
    lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items() if v is not None]
    return "\n".join(lines) + "\n"


# -- reading --------------------------------------------------------------------------------------------------
def read_toml(path: str | Path) -> dict[str, Any]:
    """The file's top-level table; a missing file or bad TOML is one usage-error line."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(f"--config {path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"--config {path}: is a folder, not a TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"--config {path}: not valid TOML ({exc})") from None
    except UnicodeDecodeError:
        raise UsageError(f"--config {path}: not valid TOML (not UTF-8 text)") from None


def flag_index(params: Iterable) -> dict[str, Any]:
    """Long flag name without dashes -> the option it belongs to (click parameters: `opts`, `name`)."""
    index = {}
    for param in params:
        for opt in getattr(param, "opts", ()):
            if opt.startswith("--"):
                index[opt[2:]] = param
    return index


def recipe_defaults(path: str | Path, params: Iterable) -> dict[str, Any]:
    """A recipe read and checked against the command's options: {parameter name: value}, to be the command's
    defaults (click's default_map), so flags given on the command line still win. An unknown key, a value of
    the wrong type or one option given twice is one usage-error line naming the key."""
    index = flag_index(params)
    values: dict[str, Any] = {}
    given: dict[str, str] = {}
    for raw_key, value in read_toml(path).items():
        key = raw_key.replace("_", "-")
        if key in NOT_IN_RECIPES:
            raise UsageError(f"--config {path}: key {raw_key!r} is not allowed in a recipe ({NOT_IN_RECIPES[key]})")
        param = index.get(key)
        if param is None:
            raise UsageError(f"--config {path}: unknown key {raw_key!r} (not an option of lmkit train; keys are "
                             "the long flag names, e.g. min-count = 2)")
        if param.name in given:
            raise UsageError(f"--config {path}: {given[param.name]!r} and {raw_key!r} are the same option")
        given[param.name] = raw_key
        values[param.name] = checked_value(path, raw_key, value, param)
    return values


def checked_value(path, key: str, value: Any, param) -> Any:
    """The value if it fits the option's type (the TOML type, not a string to be parsed), else a usage error."""
    kind = option_type(param)
    if getattr(param, "multiple", False):
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in items):
            raise UsageError(f"--config {path}: {key} expects a list of strings such as [\"bias=false\"], "
                             f"got {value!r}")
        return items
    if getattr(param, "is_flag", False) or kind is bool:
        ok, what = isinstance(value, bool), "true or false"
    elif kind is int:
        ok, what = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif kind is float:
        ok, what = _plain_number(value), "a number"
    else:  # a string; a number where the flag reads text (k = 0.5, time-budget = 90), not where it names a file
        ok, what = isinstance(value, str) or (kind is str and _plain_number(value)), "a string"
        value = str(value) if ok else value
    if not ok:
        raise UsageError(f"--config {path}: {key} expects {what}, got {value!r}")
    return value


def option_type(param) -> type:
    """int, float, bool, str or Path: what an option takes, from typer's annotation (typer 0.29) or click's
    parameter type (older typer; its own copy of click, from 0.22, names the integer type 'int')."""
    descriptor = getattr(param, "type_descriptor", None)
    if descriptor is None:
        name = getattr(getattr(param, "type", None), "name", "")
        return {"integer": int, "int": int, "float": float, "boolean": bool, "path": Path}.get(name, str)
    hint = descriptor.annotation
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        hint = args[0]
    return hint if hint in (int, float, bool, Path) else str


def _plain_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# -- the recipe of a run -----------------------------------------------------------------------------------
def request_recipe(req: TrainRequest, out: str | Path | None = None) -> dict[str, Any]:
    """The train flags that reproduce a request, as {flag: value}: data paths made absolute ('-' stays stdin),
    shared defaults written out (the request has them filled in: with_defaults), model and
    training options as flags where they have one and as `set` entries where they do not. With a vocabulary
    given, the run's own copy (OUT/vocab.json) is named, so the recipe needs no file beside the run folder."""
    from ..models import flag_options

    table: dict[str, Any] = {}
    for field, flag in REQUEST_FLAGS.items():
        value = getattr(req, field)
        if field in ("corpus", "train", "valid", "test") and value is not None:
            value = _absolute(value)
        elif field == "vocab" and value is not None:
            value = str((Path(out) / "vocab.json").resolve()) if out is not None else _absolute(value)
        table[flag] = value
    sets = list(req.sets)
    flags = set(flag_options())
    for key, value in req.options.items():
        if value is None:
            continue
        if key in flags:
            table[key.replace("_", "-")] = value if isinstance(value, (str, int, float, bool)) else str(value)
        else:
            sets.append(f"{key}={set_text(value)}")
    for key, value in req.train_options.items():
        if value is None:
            continue
        if key not in TRAIN_FLAGS:
            sets.append(f"{key}={set_text(value)}")
        else:
            table[TRAIN_FLAGS[key]] = f"{value!r}s" if key == "time_budget" and not isinstance(value, str) else value
    table["set"] = sets or None
    return table


def _absolute(value) -> str:
    if str(value) == "-" or not Path(value).exists():
        return str(value)  # stdin, or a corpus given by name
    return str(Path(value).resolve())


def set_text(value: Any) -> str:
    """A config value as `--set key=VALUE` text (lmkit.config parses it back into the field's type)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(set_text(v) for v in value)
    return "none" if value is None else repr(value) if isinstance(value, float) else str(value)


def recipe_text(req: TrainRequest, out: str | Path | None = None) -> str:
    """recipe.toml of a run trained from `req` (defaults filled in) into `out`."""
    from .. import __version__

    return dumps(request_recipe(req, out),
                 comment=f"lmkit {__version__}: trains this run again (`lmkit train --config recipe.toml -o DIR`);\n"
                         "flags given beside --config override these values.")
