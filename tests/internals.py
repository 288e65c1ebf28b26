"""The one place tests reach inside lmkit: private names the public API does not expose.

Everything else in the suite speaks to the library API and the CLI, so the package can move code
without repointing tests; when a private name here moves, this file is the only one to change."""

from __future__ import annotations

from typing import Callable


def epoch_batches(model, encoded, config, epoch: int):
    """The batches the one training loop builds for one epoch (lmkit.training.plan)."""
    from lmkit.training.plan import epoch_batches as build

    return build(model, encoded, config, epoch)


def count_forward_rows(model, rows: list[int]) -> Callable[[], None]:
    """Record the number of rows of every scoring forward pass of a torch model; returns the undo."""
    inner = model._logprobs_of
    model._logprobs_of = lambda x, y, state=None: (rows.append(len(x)), inner(x, y, state))[1]
    return lambda: setattr(model, "_logprobs_of", inner)
