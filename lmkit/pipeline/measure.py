"""The final numbers of a run, measured the same way for every family: valid/test scores through the one
scoring path, per-sequence test scores for the bootstrap, translation BLEU, the quick checks."""

from __future__ import annotations

import time
from pathlib import Path

from ..data.corpus import (Encoded, read_recorded)
from ..evaluate.perplexity import Score, score_encoded
from ..logs import Log, current

QUICK_CHECKS = ("normalisation", "causality", "batch-invariance", "save-load")  # lmkit.check's four


def final_metrics(model, encoded: dict[str, Encoded], log: Log, data: dict | None = None,
                  scores: dict[str, Score] | None = None, known: dict | None = None) -> dict[str, dict]:
    """Summaries per split; `scores` (if given) receives the Score objects, e.g. for test_scores.npz.

    `known` maps a split to (Score, seconds) already measured for these weights through the same scoring path
    (a neural run's last validation): it is not scored again."""
    metrics: dict[str, dict] = {}
    for split in ("valid", "test"):
        if split in encoded:
            current().phase("scoring", label=split)
            start = time.perf_counter()
            result, seconds = (known or {}).get(split) or (score_encoded(model, encoded[split], keep=False), None)
            metrics[split] = result.summary()
            if scores is not None:
                scores[split] = result
            if seconds is None:
                seconds = time.perf_counter() - start  # scoring speed: a column of `lmkit compare`
            metrics[split]["score_seconds"] = seconds
            metrics[split]["tokens_per_second"] = metrics[split]["tokens"] / seconds if seconds > 0 else None
            log(f"{split} perplexity: {metrics[split]['perplexity']:.3f}")
    test = (data or {}).get("test")
    if model.protocol.task == "translate" and test and "source" in test:
        metrics["bleu"] = _test_bleu(model, test, log)
    return metrics


def _test_bleu(model, test: dict, log: Log) -> dict:
    """Greedy translation BLEU on the run's test pair, the number `compare` shows."""
    from ..evaluate.bleu import translation_bleu

    start = time.perf_counter()
    result = translation_bleu(model, read_recorded(test, model.label, "test"))  # unchanged since it was scored
    log(f"test BLEU: {result.score:.2f} (greedy, {result.lines} pairs, {time.perf_counter() - start:.0f} s)")
    return {"score": result.score, "signature": result.signature, "decoding": "greedy", "lines": result.lines}


def quick_checks(model, encoded: dict[str, Encoded], log: Log, skip_all: str | None = None,
                 saved: Path | None = None) -> dict:
    """`lmkit check --quick` on the test split (else valid, else train: an n-gram trained on train alone) for
    run.json. Never fatal: a failed or crashed check is recorded and shown by `compare`, and the model is kept.
    `saved`: a folder the model is saved in already, which the save-load check reads back."""
    from ..check import check_model

    split = next(s for s in ("test", "valid", "train") if s in encoded)
    skip = {}
    if getattr(model, "memory", None) is not None:  # n-gram --memory: no model-sized extras
        skip = {"normalisation": "not run under --memory: full rows need every n-gram's context id, which bounded "
                                 "counting does not keep (as big as the model); `lmkit check RUN` runs it",
                "save-load": "not run under --memory (bounded runs keep training-time extras off); "
                             "`lmkit check RUN` runs it"}
    if skip_all is not None:  # `skip_all`: why none of them runs this time (a time budget used up)
        skip = {name: skip_all for name in QUICK_CHECKS}
        log(f"note: quick checks {skip_all}")
    current().phase("checking", label=model.label)
    try:
        report = check_model(model, encoded[split], quick=True, skip=skip, saved=saved)
    except Exception as exc:  # a bug in a check must not throw away a finished training run
        log(f"warning: checks could not run ({exc.__class__.__name__}: {exc})")
        return {"ok": False, "quick": True, "error": f"{exc.__class__.__name__}: {exc}"}
    for r in report.failed:
        log(f"warning: check failed: {r.name}: {r.evidence}")
    if report.ok and skip_all is None:
        log(f"checks passed ({len(report.results)} quick checks, {report.seconds:.1f} s)")
    return report.to_dict()
