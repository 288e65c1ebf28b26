"""Typed configuration: build a family's Config dataclass from flags and `--set key=value` strings.

Each family keeps its own Config dataclass next to its model (so a family is one file); this module
holds the shared machinery that types raw strings from the dataclass fields (no exec, no eval)."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from .errors import UsageError


def _field_types(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, str) for f in dataclasses.fields(cls)}


def _coerce(name: str, raw: str, hint: Any) -> Any:
    """Turn `raw` into the field's type; unions are tried in order (e.g. float | str for k)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if raw.lower() in ("none", "null") and type(None) in options:
            return None
        errors = []
        for opt in options:
            if opt is type(None):
                continue
            try:
                return _coerce(name, raw, opt)
            except UsageError as exc:
                errors.append(str(exc))
        raise UsageError(errors[0] if errors else f"bad value for {name}: {raw!r}")
    if origin in (tuple, list):
        args = typing.get_args(hint)
        inner = args[0] if args else str
        if raw.strip().lower() in ("none", "off"):  # an explicit empty tuple (adaptive_cutoffs=none: no adaptive head)
            return ()
        parts = [p for p in raw.split(",") if p.strip()]
        return tuple(_coerce(name, p.strip(), inner) for p in parts)
    if hint is bool:
        low = raw.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"{name} expects true or false, got {raw!r}")
    if hint in (int, float):
        try:
            return hint(raw)
        except ValueError:
            raise UsageError(f"{name} expects {hint.__name__}, got {raw!r}") from None
    if hint is str or hint is Any:
        return raw
    return raw


def parse_sets(cls, pairs: list[str] | None) -> dict[str, Any]:
    """['order=4', 'k=auto'] -> {'order': 4, 'k': 'auto'} typed from `cls`'s fields."""
    types_ = _field_types(cls)
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise UsageError(f"--set expects key=value, got {pair!r}")
        if key not in types_:
            raise UsageError(f"unknown setting {key!r} for {cls.__name__}; valid keys: {', '.join(types_)}")
        out[key] = _coerce(key, raw.strip(), types_[key])
    return out


def build_config(cls, values: dict[str, Any]):
    """Instantiate `cls` from known keys (None values mean 'use the default')."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = [k for k, v in values.items() if v is not None and k not in names]
    if unknown:
        raise UsageError(f"option(s) {', '.join(unknown)} do not apply to {cls.__name__}; "
                         f"valid keys: {', '.join(sorted(names))}")
    return cls(**{k: v for k, v in values.items() if v is not None})


def config_from_dict(cls, data: dict[str, Any]):
    """Rebuild a stored config; lists from JSON become tuples where the field says tuple."""
    types_ = _field_types(cls)
    fixed = {}
    for k, v in data.items():
        if k not in types_:
            continue
        if isinstance(v, list) and typing.get_origin(types_[k]) is tuple:
            v = tuple(v)
        fixed[k] = v
    return cls(**fixed)


def describe(cls) -> list[dict[str, Any]]:
    """Fields, types and defaults of a Config (for `lmkit models`)."""
    hints = _field_types(cls)
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        rows.append({"name": f.name, "type": getattr(hints[f.name], "__name__", str(hints[f.name])),
                     "default": default})
    return rows
