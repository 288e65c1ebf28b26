"""What tests that cover every family share: the registry's families and their options as `lmkit train` flags.

Tests iterate `lmkit.models.families()` instead of naming families, so a family added to the registry is
tested without editing them."""

from __future__ import annotations

import functools
from typing import Any, Mapping

from lmkit.models import families

# The budget that makes a family's `tiny` model train in about a second on tiny corpora.
TINY_BUDGET = {"epochs": 1.0, "batch_size": 2, "warmup_steps": 1, "device": "cpu"}


def neural_families():
    return [f for f in families() if f.neural]


@functools.cache
def train_params() -> dict:
    """`lmkit train`'s options by field name (d_model -> its --d-model option)."""
    import typer

    from lmkit.cli import app

    return {p.name: p for p in typer.main.get_command(app).commands["train"].params}


def as_flags(options: Mapping[str, Any]) -> list[str]:
    """{'d_model': 16, 'tie_weights': True, 'warmup_steps': 1} -> ['--d-model', '16', '--tie-weights', '--warmup',
    '1'], spelled as `lmkit train` spells them."""
    out: list[str] = []
    for name, value in options.items():
        param = train_params()[name]
        if isinstance(value, bool):
            out.append(param.opts[0] if value else param.secondary_opts[0])
        else:
            out += [param.opts[0], ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)]
    return out
