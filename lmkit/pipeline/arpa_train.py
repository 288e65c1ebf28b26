"""`lmkit train --arpa`: train an n-gram model and write it as an ARPA file, or to stdout like KenLM's
`lmplz -o N < text > m.arpa`. Apart from use.py (which fit -> measure -> check reach) so no import circles."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from ..errors import UsageError
from ..logs import Log, quiet
from ..validate import check_output_file
from .fit import train
from .request import TrainRequest, resolve_model
from .use import export_arpa


def check_arpa_request(req: TrainRequest, arpa: str | Path) -> None:
    """`train --arpa`: an n-gram model with a back-off form, and a file (or '-') that may be written;
    checked before any data is read."""
    from ..models import parse_spec
    from ..models.ngram.smoothing import arpa_exportable

    if parse_spec(req.model)[0] != "ngram":
        raise UsageError(f"--arpa writes an n-gram model; {req.model} is not one (export-arpa: n-gram runs only)")
    _, config = resolve_model(req.model, req.options, req.sets)
    if config.smoothing not in arpa_exportable():
        raise UsageError(f"--arpa: {config.smoothing} has no back-off form, so it cannot be written as ARPA "
                         f"(exportable: {', '.join(arpa_exportable())})")
    if str(arpa) != "-":
        check_output_file(arpa, "--arpa", inputs=[req.corpus, req.train, req.valid, req.test, req.vocab],
                          run_folders=[req.output] if req.output is not None else [])


def lmplz_protocol(req: TrainRequest, log: Log = quiet) -> TrainRequest:
    """What an ARPA file means, unless asked otherwise: sentence context (every ARPA reader scores each line on
    its own from <s>) and every training word kept (min-count 1, as lmplz), instead of lmkit's shared defaults."""
    changed = {}
    if req.context is None and req.task != "translate":
        changed["context"] = "sentence"
    if req.min_count is None and req.vocab is None:
        changed["min_count"] = 1
    if changed:
        log("--arpa: " + ", ".join(f"{k.replace('_', '-')} {v}" for k, v in changed.items())
            + " (as lmplz; give --context/--min-count to choose)")
    return replace(req, **changed)


def train_arpa(req: TrainRequest, arpa: str | Path, log: Log = quiet) -> Path | None:
    """Train an n-gram model and write it as ARPA (`arpa` '-': stdout), like KenLM's `lmplz -o N < text`.

    The run folder goes to `req.output` when it is given (returned); without it, to a temporary folder
    that is removed once the ARPA file is written (returns None): the ARPA file is the product."""
    check_arpa_request(req, arpa)
    req = lmplz_protocol(req, log)
    if req.output is not None:
        run = train(req, log=log)
        export_arpa(run, arpa)
        return run
    with tempfile.TemporaryDirectory(prefix="lmkit-train-arpa-") as tmp:
        run = train(replace(req, output=Path(tmp) / "run"), log=log)
        export_arpa(run, arpa)
    return None
